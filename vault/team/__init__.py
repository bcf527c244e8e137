"""The engine-independent cryptographic core of a team vault (DESIGN §12; docs/spec.md "Team vault").

Pure functions and small dataclasses: member keys (:mod:`.memberkey`), endorsements
(:mod:`.endorse`), client-key grants and the recovery wrap (:mod:`.grants`) and the signed audit
chain (:mod:`.chain`). No database, no click: the store layer persists what these return.
"""
