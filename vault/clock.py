"""The one clock of the vault: timestamps are UTC ISO-8601 with seconds precision (sortable as text)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> str:
    """Now, as every row and audit entry stores it: ``2026-12-02T10:40:00Z``."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
