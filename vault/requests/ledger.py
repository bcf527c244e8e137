"""A client's requests as the audit log and the request records tell them, side by side.

Every logged request is two things written in one transaction: a ``request`` record and the
``request.log`` audit entry naming it (with the SHA-256 of its payload). A report built from the
records alone believes whoever edited the table: deleting request rows made it say "Requests 0
(none)" while the log still held their entries. So the report is built from both, and every
disagreement is one :class:`Linked` row with a ``problem``:

- an entry whose record is gone: the row is rebuilt from the entry's detail (who, channel, check,
  decision, items by id and version), marked as such;
- a record that no entry names: it was put in without being logged, or its entry was removed;
- a record that no longer matches the digest its entry pinned: changed after it was logged;
- an entry whose detail no longer decrypts (or lacks the digest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import NotFound

if TYPE_CHECKING:
    from ..clients import ClientRef
    from ..core import Vault
    from ..integrity.audit import Event
    from ..store.records import Rec
    from .service import Linked

LOG_ACTION = "request.log"
RECORD_MISSING = "its request record is missing (deleted after it was logged); shown from its audit entry"
ENTRY_MISSING = "no request.log audit entry names this request (its entry was removed, or the record was added without being logged)"
CHANGED = "the request record does not match its audit entry (changed after it was logged)"
UNREADABLE = "its audit entry's detail does not decrypt or lacks the request's digest (tampered)"


def reconcile(v: Vault, client: ClientRef) -> list[Linked]:
    """Every request of the client, from its records and its audit entries, oldest first."""
    from .service import KIND, Linked, digest

    with v.read() as s:
        # Not the state check: every request is matched against its log entry below, and the report
        # shows where they disagree; a state that fails otherwise is refused by build_report.
        recs = {r.id: r for r in v.records.list(s, client, KIND, check=False)}
    entries: dict[str, Event] = {}
    out: list[Linked] = []
    for e in v.audit.events(client.id):
        if e.action == LOG_ACTION and e.record_id:
            entries.setdefault(e.record_id, e)
    for rid, e in entries.items():
        rec = recs.pop(rid, None)
        pinned = str((e.detail or {}).get("sha256") or "")
        if rec is None:
            out.append(Linked(client, _from_entry(v, client, e), e.seq, False, RECORD_MISSING))
        elif e.detail is None:
            # A team member granted the client after a revoke: the entry is sealed under an earlier
            # key version they never held. Nothing disagrees; it is not checked by them (the chain
            # is, by every member; an admin who held the version reads it).
            out.append(Linked(client, rec, e.seq, False))
        elif not pinned or "error" in e.detail:
            out.append(Linked(client, rec, e.seq, False, UNREADABLE))
        elif pinned != digest(rec.data):
            out.append(Linked(client, rec, e.seq, False, CHANGED))
        else:
            out.append(Linked(client, rec, e.seq, True))
    out += [Linked(client, rec, 0, False, ENTRY_MISSING) for rec in recs.values()]
    return sorted(out, key=lambda x: str(x.request.data.get("logged_at")))


def _from_entry(v: Vault, client: ClientRef, e: Event) -> Rec:
    """A stand-in request record made of what its audit entry kept (no record is written)."""
    from ..store.records import Rec
    from .service import ENDED

    d: dict[str, Any] = dict(e.detail or {})
    items = [_item(v, client, i) for i in d.get("items") or [] if isinstance(i, dict)]
    decision = str(d.get("decision") or "unknown")
    requester = str(d.get("requester") or "unknown")
    data = {
        "requester": requester,
        "channel": str(d.get("channel") or "unknown"),
        "verified_by": str(d.get("verified_by") or "unknown"),
        "decision": decision,
        "override": d.get("override"),
        "note": None,
        "contact": None
        if not d.get("contact")
        else {"id": d["contact"], "name": requester, "role": None, "authorized": bool(d.get("authorized"))},
        "identity_checked": d.get("verified_by") != "none",
        "items": items,
        "policy": [],
        "agreement": {
            "status": str(d.get("agreement") or "unknown"),
            "ended": d.get("agreement") in ENDED,
        },
        "disclosed": items if decision == "granted" else [],
        "logged_at": e.at,
    }
    assert e.record_id is not None
    return Rec(e.record_id, client.id, "request", 0, e.at, e.at, data)


def _item(v: Vault, client: ClientRef, i: dict[str, Any]) -> dict[str, Any]:
    """An item the entry names, labelled from the live record when it still exists."""
    from .service import NAME_FIELD

    kind, rid = str(i.get("kind") or "item"), str(i.get("id") or "")
    label = f"{kind} {rid[:8]}"
    if kind in NAME_FIELD and rid:
        try:
            with v.read() as s:
                rec = v.records.get(s, client, kind, rid)
            label = str(rec.data.get(NAME_FIELD[kind]) or label)
        except NotFound:
            label += " (no longer in the vault)"
    return {"kind": kind, "id": rid, "version": i.get("version"), "label": label}


def problems(linked: list[Linked]) -> list[str]:
    """One line per disagreement, naming the request id and audit entry (never content)."""
    return [
        f"request {x.request.id}" + (f" (audit entry {x.seq})" if x.seq else "") + f": {x.problem}"
        for x in linked
        if x.problem
    ]
