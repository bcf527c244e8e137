"""Checking the state commitment before data is used (DESIGN §3a): exit 4 naming kind and id.

Three depths, each cached for the rest of its session (a command's read or write transaction):

- :func:`check_top`: every client row and key slot, the signing key and each client's stored
  records sum, against the newest audit entry's commitment. O(clients). Before any client is used.
- :func:`check_record`: one record's group of its client (about n/256 rows) and the client's group
  totals (at most 256 rows). Before one record is shown, revealed or used.
- :func:`check_client`: every record of one client. Before a list, an export, a report, a letter
  or a policy decision (the authorised-contact check) uses the client's records as a whole.

Messages name what is wrong by kind and id, never content.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..errors import IntegrityError
from ..keys import crypto
from ..store.models import AuditEntry, Client, RecordVersion, StateBucket, StateClient
from .commitment import (
    _CHECKED,
    _TRACKER,
    MODULUS,
    _bucket_records,
    _client_records,
    _num,
    _raw,
    _stored_state,
    bucket_of,
    hasher,
    note_record,
    vault_sum,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..core import Vault

HINT = "run: handover verify (it names the first problem); restore the vault from a backup if it was tampered"


def _cache(s: Session) -> set[Any]:
    cache: set[Any] = s.info.setdefault(_CHECKED, set())
    return cache


def expected_root(v: Vault, s: Session) -> tuple[bytes, int]:
    """The commitment the rows must give: the newest audit entry's, or this transaction's own."""
    t = s.info.get(_TRACKER)
    if t is not None:
        t.flush(s)
        return t.root(), -1
    head, commitment = v.audit.newest(s)
    if commitment is None:
        raise IntegrityError(
            f"the newest audit entry ({head.seq}) carries no state commitment: tampered", HINT
        )
    return commitment, head.seq


def check_top(v: Vault, s: Session) -> None:
    """Client rows, key slots, signing key and every client's records sum. Raises IntegrityError."""
    cache = _cache(s)
    if "top" in cache:
        return
    h = hasher(v)
    expected, seq = expected_root(v, s)
    states = {
        _raw(r.client_id).decode("utf-8", "replace"): r for r in s.execute(select(StateClient)).scalars()
    }
    w_sum, wrong_row = 0, None
    rows = s.execute(select(Client)).scalars().all()
    for row in rows:
        value = h.client_row(row)
        state = states.pop(row.id, None)
        if state is None or _num(state.row_hash) != value:
            wrong_row = wrong_row or row.id
        w_sum += value + h.client_sum(row.id, _num(state.records) if state is not None else 0)
    v_sum = vault_sum(h, s)
    if crypto.mac_equal(h.root(v_sum, w_sum % MODULUS), expected):
        cache.add("top")
        return
    stored = _stored_state(s)
    if wrong_row is not None:
        raise IntegrityError(
            f"client {wrong_row} does not match the vault's state commitment: its row (profile, "
            "agreement, successor or data key) was replaced, rolled back or copied in",
            HINT,
        )
    if states:
        raise IntegrityError(
            f"client {next(iter(states))} was removed from the vault (its row is gone)", HINT
        )
    gone = _client_gone(s, {row.id for row in rows})
    if gone is not None:
        raise IntegrityError(
            f"client {gone[0]} was removed from the vault without being forgotten (audit entry {gone[1]} "
            "names it); nothing was shown",
            HINT,
        )
    if stored is not None and stored[0] != v_sum:
        raise IntegrityError(
            "the key slots, the signing key or the technician profile do not match the vault's state "
            "commitment: replaced or rolled back",
            HINT,
        )
    where = f" (audit entry {seq})" if seq > 0 else ""
    raise IntegrityError(
        f"the vault does not match the state its audit log recorded{where}: clients, records or "
        "their commitments were changed or rolled back together",
        HINT,
    )


def _client_sum(v: Vault, s: Session, cid: str) -> dict[str, int]:
    """The client's stored group totals, after checking that they give its stored records sum."""
    h = hasher(v)
    totals = {
        _raw(r.bucket).decode("utf-8", "replace"): _num(r.total)
        for r in s.execute(select(StateBucket).where(StateBucket.client_id == cid)).scalars()
    }
    state = s.get(StateClient, cid)
    got = sum(h.bucket(cid, b, t) for b, t in totals.items() if t) % MODULUS
    if state is None or _num(state.records) != got:
        raise IntegrityError(
            f"the records of client {cid} do not match the vault's state commitment: records were "
            "rolled back, removed or copied in together with their commitments",
            HINT,
        )
    return totals


def check_record(v: Vault, s: Session, cid: str, rid: str, kind: str) -> None:
    """The group of one record of client ``cid``. Raises IntegrityError naming ``kind`` and ``rid``."""
    cache = _cache(s)
    b = bucket_of(rid)
    if ("client", cid) in cache or ("bucket", cid, b) in cache:
        return
    check_top(v, s)
    if ("sum", cid) not in cache:
        s.info.setdefault("state_totals", {})[cid] = _client_sum(v, s, cid)
        cache.add(("sum", cid))
    stored = s.info["state_totals"][cid].get(b, 0)
    h = hasher(v)
    rows = _bucket_records(s, cid, b)
    got = sum(h.record(cid, r[0], r[1], r[2], r[3]) for r in rows) % MODULUS
    if got != stored:
        raise _group_error(v, s, cid, b, rows, (kind, rid))
    cache.add(("bucket", cid, b))


def check_client(v: Vault, s: Session, cid: str) -> None:
    """Every record of client ``cid`` against its commitment. Raises IntegrityError."""
    cache = _cache(s)
    if ("client", cid) in cache:
        return
    check_top(v, s)
    totals = _client_sum(v, s, cid)
    h = hasher(v)
    got: dict[str, int] = {}
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for r in _client_records(s, cid):
        b = bucket_of(_raw(r[0]).decode("utf-8", "replace"))
        got[b] = (got.get(b, 0) + h.record(cid, r[0], r[1], r[2], r[3])) % MODULUS
        rows.setdefault(b, []).append(r)
    for b in sorted(set(got) | {k for k, t in totals.items() if t}):
        if got.get(b, 0) != totals.get(b, 0):
            raise _group_error(v, s, cid, b, rows.get(b, []), None)
    cache.add(("client", cid))


# --- saying what is wrong ---------------------------------------------------------------------------


def _group_error(
    v: Vault, s: Session, cid: str, b: str, rows: list[tuple[Any, ...]], named: tuple[str, str] | None
) -> IntegrityError:
    """The most precise message for a group whose records do not give its total."""
    for rid, kind, version, _envelope in rows:
        newest = s.execute(
            select(func.max(RecordVersion.version)).where(RecordVersion.record_id == rid)
        ).scalar()
        if isinstance(newest, int) and isinstance(version, int) and version <= newest:
            return IntegrityError(
                f"{kind} {rid} was rolled back: it is at version {version} but its history already "
                f"holds version {newest}; nothing was shown",
                HINT,
            )
    missing = _missing(s, cid, b, {_raw(r[0]).decode("utf-8", "replace") for r in rows})
    if missing:
        kind, rid, seq = missing
        return IntegrityError(
            f"{kind} {rid} was removed from client {cid} (audit entry {seq} names it); nothing was shown",
            HINT,
        )
    listed = ", ".join(f"{r[1]} {_raw(r[0]).decode('utf-8', 'replace')}" for r in rows[:5]) or "none left"
    if named is not None:
        kind, rid = named
        return IntegrityError(
            f"{kind} {rid} does not match the vault's state commitment: it, or a record stored beside "
            f"it ({listed}), was rolled back, removed, put back or copied in from elsewhere; nothing was shown",
            HINT,
        )
    return IntegrityError(
        f"the records of client {cid} whose ids begin {b!r} ({listed}) do not match the vault's state "
        "commitment: one was rolled back, removed, put back or copied in from elsewhere; nothing was shown",
        HINT,
    )


def _missing(s: Session, cid: str, b: str, present: set[str]) -> tuple[str, str, int] | None:
    """A record of this group that the audit log names and that is gone without a removal entry."""
    if not b:
        return None
    from .commitment import _after

    entries = s.execute(
        select(AuditEntry.seq, AuditEntry.action, AuditEntry.record_id)
        .where(AuditEntry.client_id == cid, AuditEntry.record_id >= b, AuditEntry.record_id < _after(b))
        .order_by(AuditEntry.seq)
    ).all()
    last: dict[str, tuple[int, str]] = {}
    for seq, action, rid in entries:
        if isinstance(rid, str) and bucket_of(rid) == b:
            last[rid] = (seq, str(action))
    for rid, (seq, action) in last.items():
        if rid not in present and not action.endswith(".rm"):
            kind = action.split(".")[0]
            return ("record" if action == "request.disclose" else kind), rid, seq
    return None


def _client_gone(s: Session, present: set[str]) -> tuple[str, int] | None:
    """A client the audit log names, whose row is gone, and that was never forgotten."""
    from ..forget import FORGET_ACTION

    last: dict[str, tuple[int, str]] = {}
    for seq, action, cid in s.execute(
        select(AuditEntry.seq, AuditEntry.action, AuditEntry.client_id)
        .where(AuditEntry.client_id.is_not(None))
        .order_by(AuditEntry.seq)
    ):
        last[str(cid)] = (seq, action)
    for cid, (seq, action) in last.items():
        if cid not in present and action != FORGET_ACTION:
            return str(cid), seq
    return None


class VaultGuard:
    """The state guard (``store.scope.StateGuard``) of an open vault: the store's records call it."""

    def __init__(self, vault: Vault) -> None:
        self.v = vault

    def note(
        self, s: Session, cid: str, rid: str, kind: str, version: int, envelope: bytes, sign: int
    ) -> None:
        note_record(self.v, s, cid, rid, kind, version, envelope, sign)

    def check_client(self, s: Session, cid: str) -> None:
        check_client(self.v, s, cid)

    def check_record(self, s: Session, cid: str, rid: str, kind: str) -> None:
        check_record(self.v, s, cid, rid, kind)
