"""The state commitment: one keyed value that fixes everything the vault says (DESIGN §3a).

An old envelope with its old version number still decrypts, and a deleted row leaves no trace, so
record envelopes alone cannot show that a record was rolled back, removed, put back or copied in.
The commitment covers every live record (id, kind, version, envelope hash), every client row, the
key slots and the signing key; each audit entry carries it as it stands after the entry's
transaction, under the entry's MAC. Changing the state therefore also means changing the audit
log, which the head record, the out-of-file head (``statehead.py``) and receipts pin down.

Layout (docs/spec.md, "State commitment", gives it byte by byte): every element has a MAC under an
HKDF sub-key of the VMK, read as a 256-bit number. A client's records fall into groups by the first
two characters of their id; a group's ``total`` is the sum of its elements' numbers (mod 2^256), a
client's ``records`` sum is the sum of the MACs of its groups' totals, and the vault's two sums are
V (key slots and signing key) and W (each client's row MAC plus the MAC of its ``records`` sum).
The commitment is ``HMAC(key, V || W)``. A write changes one group, one client and W: O(1) in the
vault's size. Reading one record checks its group (about n/256 rows of its client), the client's
group totals (at most 256 rows), and W and V over every client row (O(clients)), against the
newest audit entry: the cost does not grow with the other clients' records.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from ..errors import IntegrityError
from ..keys import crypto
from ..store.engine import driver_sql
from ..store.models import Client, KeySlot, Meta, StateBucket, StateClient

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..core import Vault
    from ..store.models import AuditEntry

MODULUS = 1 << 256
STATE_KEY = "state"  # meta row: V (32 bytes) || W (32 bytes), big-endian
BUCKET_CHARS = 2  # groups by the first two characters of a record id: 256 groups of UUIDs
COMMITTED_META = (
    "signing_public",
    "signing_private",
    "profile",  # the technician (vault/profile.py)
    "team_key_commitment",  # a team's: vault/team/keycheck.py
    "team_recovery",  # a team's offline recovery key: every new key is wrapped to it (vault/teams.py)
    "team_index_key",  # a team's whose key was rotated: vault/teamrotation.py
    "signing_history",  # the keys new-signing-key replaced: vault/signing_keys.py
)
TAG_RECORD = b"handover-vault/v1/state/record"
TAG_CLIENT = b"handover-vault/v1/state/client"
TAG_SLOT = b"handover-vault/v1/state/slot"
TAG_META = b"handover-vault/v1/state/meta"
TAG_BUCKET = b"handover-vault/v1/state/bucket"
TAG_CLIENT_SUM = b"handover-vault/v1/state/client-records"
TAG_ROOT = b"handover-vault/v1/state/root"
_TRACKER = "state_tracker"
_CHECKED = "state_checked"
_LENGTH = struct.Struct(">I").pack


def _raw(value: Any) -> bytes:
    """A stored value's bytes, whatever type SQLite hands back (a raw edit can store any)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if value is None:
        return b""
    return str(value).encode("utf-8", "surrogateescape")


def _num(value: Any) -> int:
    """A stored 32-byte sum as a number; anything else is -1 (never equal to a real sum)."""
    raw = _raw(value)
    return int.from_bytes(raw, "big") if len(raw) == 32 else -1


def _bytes32(n: int) -> bytes:
    return (n % MODULUS).to_bytes(32, "big")


def bucket_of(record_id: str) -> str:
    return record_id[:BUCKET_CHARS]


def _after(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix`` (non-empty)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Hasher:
    """The MACs of docs/spec.md under one vault's commitment key."""

    def __init__(self, key: bytes, vault_id: str) -> None:
        self.mac = crypto.Mac(key)
        self.vid = _LENGTH(len(vault_id.encode())) + vault_id.encode()

    def _h(self, tag: bytes, *parts: bytes) -> int:
        msg = b"".join((_LENGTH(len(tag)), tag, self.vid, *(_LENGTH(len(p)) + p for p in parts)))
        return int.from_bytes(self.mac(msg), "big")

    def record(self, client_id: Any, rid: Any, kind: Any, version: Any, envelope: Any) -> int:
        digest = hashlib.sha256(_raw(envelope)).digest()
        return self._h(TAG_RECORD, _raw(client_id), _raw(rid), _raw(kind), _raw(version), digest)

    def client(self, cid: Any, version: Any, lookup: Any, wrapped_key: Any, envelope: Any) -> int:
        return self._h(
            TAG_CLIENT,
            _raw(cid),
            _raw(version),
            _raw(lookup),
            hashlib.sha256(_raw(wrapped_key)).digest(),
            hashlib.sha256(_raw(envelope)).digest(),
        )

    def client_row(self, row: Any) -> int:
        return self.client(row.id, row.version, row.lookup, row.wrapped_key, row.envelope)

    def slot(self, row: Any) -> int:
        return self._h(
            TAG_SLOT,
            _raw(row.id),
            _raw(row.kind),
            _raw(row.salt),
            _raw(row.memory_kib),
            _raw(row.iterations),
            _raw(row.lanes),
            hashlib.sha256(_raw(row.wrapped)).digest(),
        )

    def meta(self, key: str, value: Any) -> int:
        return self._h(TAG_META, key.encode(), hashlib.sha256(_raw(value)).digest())

    def bucket(self, cid: str, bucket: str, total: int) -> int:
        return self._h(TAG_BUCKET, cid.encode(), bucket.encode("utf-8", "surrogateescape"), _bytes32(total))

    def client_sum(self, cid: str, records: int) -> int:
        return self._h(TAG_CLIENT_SUM, cid.encode(), _bytes32(records))

    def root(self, v_sum: int, w_sum: int) -> bytes:
        msg = b"".join((_LENGTH(len(TAG_ROOT)), TAG_ROOT, self.vid, _bytes32(v_sum), _bytes32(w_sum)))
        return self.mac(msg)


def hasher(v: Vault) -> Hasher:
    cached = getattr(v.keys, "_state_hasher", None)
    if cached is None or cached[0] is not v.keys.state_key:
        cached = (v.keys.state_key, Hasher(v.keys.state_key, v.vault_id))
        v.keys._state_hasher = cached  # type: ignore[attr-defined]
    return cached[1]


# --- the live rows ---------------------------------------------------------------------------------


def set_committed_meta(v: Vault, s: Session, key: str, value: bytes) -> None:
    """Write the ``meta`` row ``key`` (one of :data:`COMMITTED_META`) in the write transaction
    ``s``: its old value out of the vault-wide sum V, the new one in."""
    assert key in COMMITTED_META
    from ..store.models import Meta

    h, state = hasher(v), tracker(v, s)
    row = s.get(Meta, key)
    if row is None:
        s.add(Meta(key=key, value=value))
    else:
        state.vault_element(h.meta(key, row.value), -1)
        row.value = value
    state.vault_element(h.meta(key, value), +1)


def vault_sum(h: Hasher, s: Session) -> int:
    """V: the key slots and the signing key as they are in the file."""
    total = sum(h.slot(row) for row in s.execute(select(KeySlot)).scalars())
    for key in COMMITTED_META:
        row = s.get(Meta, key)
        if row is not None:
            total += h.meta(key, row.value)
    return total % MODULUS


def _record_rows(s: Session, sql: str, params: tuple[Any, ...]) -> Iterable[tuple[Any, ...]]:
    conn = s.connection()
    return conn.exec_driver_sql(driver_sql(conn, sql), params).fetchall()


def _client_records(s: Session, cid: str) -> Iterable[tuple[Any, ...]]:
    return _record_rows(s, "SELECT id, kind, version, envelope FROM records WHERE client_id = ?", (cid,))


def _bucket_records(s: Session, cid: str, bucket: str) -> list[tuple[Any, ...]]:
    if s.connection().dialect.name == "sqlite":
        # A range on the primary key (the unary "+" keeps SQLite off the client's kind index): the
        # ids of every client that start with these two characters, about n/256 rows, filtered here.
        rows = _record_rows(
            s,
            "SELECT id, kind, version, envelope FROM records WHERE id >= ? AND id < ? AND +client_id = ?",
            (bucket, _after(bucket) if bucket else "\x00", cid),
        )
    else:
        # PostgreSQL compares text by the database's collation, where a range of ids need not be
        # the ids with a prefix (and text cannot hold the NUL of the empty bucket's range).
        rows = _record_rows(
            s,
            "SELECT id, kind, version, envelope FROM records WHERE client_id = ? AND starts_with(id, ?)",
            (cid, bucket),
        )
    return [r for r in rows if bucket_of(_raw(r[0]).decode("utf-8", "replace")) == bucket]


def _stored_state(s: Session) -> tuple[int, int] | None:
    row = s.get(Meta, STATE_KEY)
    if row is None:
        return None
    raw = _raw(row.value)
    if len(raw) != 64:
        raise IntegrityError("the vault's state record is malformed (tampered)", "run: handover verify")
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


def _write_state(s: Session, v_sum: int, w_sum: int) -> None:
    value = _bytes32(v_sum) + _bytes32(w_sum)
    row = s.get(Meta, STATE_KEY)
    if row is None:
        s.add(Meta(key=STATE_KEY, value=value))
    else:
        row.value = value


# --- writing: the transaction's tracker -----------------------------------------------------------


class Tracker:
    """What one write transaction changes in the commitment, applied in one go before it is used.

    Deltas are summed per group (an import of thousands of records touches each group once);
    :meth:`flush` applies them to the stored sums, starting from the state the newest audit entry
    vouches for (so a write never builds on a tampered state: it is refused instead).
    """

    def __init__(self, v: Vault) -> None:
        self.v = v
        self.h = hasher(v)
        self.loaded = False
        self.v_sum = self.w_sum = 0
        self.d_v = self.d_w = 0
        self.buckets: dict[str, dict[str, int]] = {}
        self.row_hash: dict[str, int] = {}
        self.new: set[str] = set()
        self.gone: set[str] = set()
        self.changed = False
        self.entry: AuditEntry | None = None
        self.prev = b""
        self.entries: list[dict[str, Any]] = []

    # notes, called by the writers (records, clients, forget, key slots)
    def record(self, cid: str, rid: str, kind: str, version: int, envelope: bytes, sign: int) -> None:
        group = self.buckets.setdefault(cid, {})
        b = bucket_of(rid)
        group[b] = group.get(b, 0) + sign * self.h.record(cid, rid, kind, version, envelope)
        self.changed = True

    def client(self, row: Any, sign: int, new: bool = False) -> None:
        value = self.h.client_row(row)
        self.d_w += sign * value
        if sign > 0:
            self.row_hash[row.id] = value
        if new:
            self.new.add(row.id)
            self.d_w += self.h.client_sum(row.id, 0)
        self.changed = True

    def client_removed(self, s: Session, row: Any) -> None:
        """Before a client's row is deleted (its records and sums go with it, ON DELETE CASCADE)."""
        self.buckets.pop(row.id, None)
        stored = s.get(StateClient, row.id)
        records = _num(stored.records) if stored is not None else 0
        self.d_w -= self.h.client_row(row) + self.h.client_sum(row.id, records)
        self.gone.add(row.id)
        self.new.discard(row.id)
        self.row_hash.pop(row.id, None)
        self.changed = True

    def vault_element(self, value: int, sign: int) -> None:
        self.d_v += sign * value
        self.changed = True

    # applying
    def load(self, s: Session) -> None:
        if self.loaded:
            return
        head, commitment = self.v.audit.newest(s)
        stored = _stored_state(s)
        if commitment is None or stored is None:
            raise IntegrityError(
                f"the vault's state commitment is missing (audit entry {head.seq}): tampered; nothing was changed",
                "run: handover verify",
            )
        if not crypto.mac_equal(self.h.root(*stored), commitment):
            raise IntegrityError(
                f"the vault's state record does not match its newest audit entry ({head.seq}): "
                "records or their commitments were changed; nothing was changed",
                "run: handover verify",
            )
        self.v_sum, self.w_sum = stored
        self.loaded = True

    def flush(self, s: Session) -> None:
        self.load(s)
        s.flush()  # pending rows first: a client's sums need its row (foreign key), checks read SQL
        if not (self.buckets or self.row_hash or self.new or self.d_v or self.d_w):
            return
        # Group totals a check cached in this transaction change now (by exactly our own deltas).
        s.info.pop("state_totals", None)
        s.info.get(_CHECKED, set()).difference_update({k for k in s.info.get(_CHECKED, ()) if k[0] == "sum"})
        for cid, groups in self.buckets.items():
            self._apply(s, cid, groups)
        for cid, value in self.row_hash.items():
            row = s.get(StateClient, cid)
            if row is None:
                s.add(StateClient(client_id=cid, row_hash=_bytes32(value), records=_bytes32(0)))
            else:
                row.row_hash = _bytes32(value)
        self.v_sum = (self.v_sum + self.d_v) % MODULUS
        self.w_sum = (self.w_sum + self.d_w) % MODULUS
        _write_state(s, self.v_sum, self.w_sum)
        self.buckets, self.row_hash, self.new, self.d_v, self.d_w = {}, {}, set(), 0, 0
        s.flush()

    def _apply(self, s: Session, cid: str, groups: dict[str, int]) -> None:
        h = self.h
        state = s.get(StateClient, cid)
        old_sum = _num(state.records) if state is not None else 0
        total = old_sum
        for b, delta in groups.items():
            row = s.get(StateBucket, (cid, b))
            old = _num(row.total) if row is not None else 0
            new = (old + delta) % MODULUS
            if old:
                total -= h.bucket(cid, b, old)
            if new:
                total += h.bucket(cid, b, new)
            if row is None and new:
                s.add(StateBucket(client_id=cid, bucket=b, total=_bytes32(new)))
            elif row is not None and new:
                row.total = _bytes32(new)
            elif row is not None:
                s.delete(row)
        total %= MODULUS
        self.d_w += h.client_sum(cid, total) - h.client_sum(cid, old_sum)
        if state is None:
            s.add(
                StateClient(
                    client_id=cid, row_hash=_bytes32(self.row_hash.get(cid, 0)), records=_bytes32(total)
                )
            )
        else:
            state.records = _bytes32(total)

    def root(self) -> bytes:
        return self.h.root(self.v_sum, self.w_sum)

    def root_for_append(self, s: Session) -> bytes:
        self.flush(s)
        self.changed = False
        return self.root()

    def appended(self, entry: AuditEntry, prev: bytes) -> None:
        self.entry, self.prev = entry, prev
        self.entries.append({"seq": entry.seq, "at": entry.at, "action": entry.action})


def tracker(v: Vault, s: Session) -> Tracker:
    """The write transaction's tracker (made on first use; it finishes the commitment at commit)."""
    t = s.info.get(_TRACKER)
    if t is None:
        t = Tracker(v)
        _install(s, t)
    return t


def _install(s: Session, t: Tracker) -> None:
    if _TRACKER not in s.info:
        s.info.setdefault("before_commit", []).append(_finish)
        s.info.setdefault("after_commit", []).append(lambda: _recorded(s))
    s.info[_TRACKER] = t


def _finish(s: Session) -> None:
    """Before the commit: the newest entry of the transaction must carry the final commitment."""
    t: Tracker = s.info[_TRACKER]
    if not t.changed:
        return
    if t.entry is None:
        # A write that wrote no audit entry of its own still changes what the vault says.
        t.v.audit.append(s, "vault.write")
        return
    t.v.audit.reseal(s, t.entry, t.prev, t.root_for_append(s))


def _recorded(s: Session) -> None:
    t: Tracker = s.info[_TRACKER]
    if t.entry is not None and t.entry.commitment is not None and t.v.record_head:
        from .statehead import record

        record(
            t.v,
            t.entry.seq,
            t.entry.mac,
            t.entry.commitment,
            t.entries,
            force=bool(s.info.get("state_head_force")),
        )


def note_record(
    v: Vault, s: Session, cid: str, rid: str, kind: str, version: int, envelope: bytes, sign: int
) -> None:
    tracker(v, s).record(cid, rid, kind, version, envelope, sign)


def recompute_commitments(v: Vault, s: Session) -> bytes:
    """Rebuild every commitment from the live rows under the vault's current keys; the root.

    For a vault that has none yet (upgraded from schema 0004 or older), and after ``rekey`` made new
    keys. It trusts the rows as they are: call it only where nothing else vouches for them. The
    transaction's next audit entry (or one written at its commit) carries the new commitment.
    """
    h = hasher(v)
    s.flush()
    s.execute(delete(StateBucket))
    s.execute(delete(StateClient))
    w_sum = 0
    clients = s.execute(select(Client)).scalars().all()
    for row in clients:
        groups: dict[str, int] = {}
        for rid, kind, version, envelope in _client_records(s, row.id):
            b = bucket_of(_raw(rid).decode("utf-8", "replace"))
            groups[b] = (groups.get(b, 0) + h.record(row.id, rid, kind, version, envelope)) % MODULUS
        records = 0
        for b, total in groups.items():
            if total:
                s.add(StateBucket(client_id=row.id, bucket=b, total=_bytes32(total)))
                records += h.bucket(row.id, b, total)
        row_hash = h.client_row(row)
        s.add(StateClient(client_id=row.id, row_hash=_bytes32(row_hash), records=_bytes32(records)))
        w_sum += row_hash + h.client_sum(row.id, records % MODULUS)
    v_sum = vault_sum(h, s)
    _write_state(s, v_sum, w_sum % MODULUS)
    s.flush()
    t = Tracker(v)
    t.v_sum, t.w_sum, t.loaded, t.changed = v_sum, w_sum % MODULUS, True, True
    old: Tracker | None = s.info.get(_TRACKER)
    if old is not None:
        t.entry, t.prev, t.entries = old.entry, old.prev, old.entries
    _install(s, t)
    s.info.pop(_CHECKED, None)
    return t.root()


def is_initialised(s: Session) -> bool:
    return s.get(Meta, STATE_KEY) is not None


INIT_ACTION = "vault.commitment"


def initialise(v: Vault) -> None:
    """Compute the commitments of a vault that has none (upgraded from schema 0004 or older), once.

    Only while the newest audit entry carries no commitment: a vault whose log already carries one
    and whose state record is gone was tampered with, and is refused by every read instead of
    having its rows vouched for again.
    """
    from ..store.models import AuditEntry

    with v.write("computing the vault's state commitment") as s:
        if is_initialised(s):
            return
        newest = s.execute(select(AuditEntry.commitment).order_by(AuditEntry.seq.desc()).limit(1)).first()
        if newest is not None and newest[0] is not None:
            raise IntegrityError(
                "the vault's state record is missing while its audit log carries commitments: tampered",
                "run: handover verify; restore the vault from a backup",
            )
        root = recompute_commitments(v, s)
        v.audit.append(s, INIT_ACTION, detail={"commitment": root.hex()[:16]})
