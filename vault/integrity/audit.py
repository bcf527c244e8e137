"""The tamper-evident audit log: an append-only table with an HMAC chain and a MAC'd head record.

``mac[n] = HMAC-SHA256(audit_key, mac[n-1] || entry_bytes(n))`` with ``mac[0]`` a vault-specific
genesis value; ``entry_bytes`` covers every column but the MAC (docs/spec.md gives the layout). An
edit, deletion, insertion or reordering breaks the chain at the first affected entry.

The chain alone cannot show that its *newest* entries were cut off, so every append also rewrites
one ``meta`` row, the head record: the newest entry's sequence number and MAC under a tag that only
the audit key can make. Removing the newest entries without the key leaves a head record that
names an entry which is gone; the next append continues from the recorded head, so the gap stays
visible for good. Rolling the whole file back to an older copy (head record included) is caught
only against a signed checkpoint kept outside the vault, and a vault owner, who holds the key, can
rebuild any history that no outside checkpoint pins down (docs/requests.md says so).

Details are sealed: under the client's key for client events (unreadable once the client is
forgotten, while the chain still verifies) and under a VMK-derived key otherwise. No secret value is
ever put in a detail: a disclosure records which credential and which version, not the secret.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ..errors import (
    AuthenticationFailed,
    IntegrityError,
    InvalidInput,
    NoAccess,
    NotFound,
    StorageError,
    VaultError,
)
from ..keys import crypto
from ..keys.crypto import DecryptFailed
from ..store.engine import TextNotUtf8, builtin_text, scan
from ..store.models import AUDIT_HEAD_KEY, AuditEntry, Client, Meta

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..clients import ClientRef
    from ..core import Vault
    from ..rekey import Epoch
    from ..store.engine import Store

CHECKPOINT_FORMAT = "handover-audit-checkpoint/1"
# Entries written since the head record exists use the v2 layout. v1 (the first release) encoded an
# absent client or record id as an empty string, so NULL and "" had the same MAC; v2 marks presence.
# A verifier accepts v1 entries only before the first v2 entry (vaults upgraded from the first schema).
ENTRY_V1 = b"handover-vault/v1/audit"
ENTRY_V2 = b"handover-vault/v2/audit"
# v3 (schema 0005) adds the vault's state commitment after the entry's transaction (DESIGN §3a):
# rolling a record back then also means rolling the audit log back. A verifier accepts v2 entries
# only before the first v3 entry.
ENTRY_V3 = b"handover-vault/v3/audit"
HEAD_KEY = AUDIT_HEAD_KEY
HEAD_VERSION = 1
HEAD_SIZE = 1 + 8 + 32 + 32  # version, seq (u64), mac of the newest entry, tag
SCOPES = ("vault", "client")
FIRST_ACTION = "vault.init"  # every vault's log starts with its creation
MAC_SIZE = 32
_COLUMNS = ("seq", "at", "action", "client_id", "record_id", "scope", "detail", "mac", "commitment")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Row(NamedTuple):
    """An audit row whose columns have the types and forms the writer gives them.

    A named tuple rather than a frozen dataclass: ``audit verify`` makes one per entry, and a
    frozen dataclass's ``__init__`` costs more than the entry's HMAC.
    """

    seq: int
    at: str
    action: str
    client_id: str | None
    record_id: str | None
    scope: str
    detail: bytes
    mac: bytes
    commitment: bytes | None = None


_LENGTH = struct.Struct(">I").pack


def _field(value: bytes) -> bytes:
    return _LENGTH(len(value)) + value


def _optional(value: str | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + value.encode()


def entry_bytes(vault_id: str, e: Row | AuditEntry) -> bytes:
    """Every column except the MAC, each length-prefixed; optional ids carry a presence byte.

    v3 when the entry carries a state commitment (appended as the last field), else v2.
    """
    commitment = e.commitment
    return b"".join(
        (
            _field(ENTRY_V2 if commitment is None else ENTRY_V3),
            _field(vault_id.encode()),
            _field(str(e.seq).encode()),
            _field(e.at.encode()),
            _field(e.action.encode()),
            _field(_optional(e.client_id)),
            _field(_optional(e.record_id)),
            _field(e.scope.encode()),
            _field(bytes(e.detail)),
            b"" if commitment is None else _field(bytes(commitment)),
        )
    )


def _entry_encoder(vault_id: str) -> Callable[[tuple[Any, ...]], bytes]:
    """:func:`entry_bytes` for a walk over many entries of one vault (``audit verify``).

    The same bytes; the fields that repeat from entry to entry (vault id, action, ids, scope, and
    often the second) are encoded once and reused.
    """
    head = _field(ENTRY_V2) + _field(vault_id.encode())
    head3 = _field(ENTRY_V3) + _field(vault_id.encode())
    at_c: dict[str, bytes] = {}
    action_c: dict[str, bytes] = {}
    id_c: dict[str | None, bytes] = {}
    scope_c: dict[str, bytes] = {}
    join, field = b"".join, _field

    def encode(e: tuple[Any, ...]) -> bytes:
        seq, at, action, client_id, record_id, scope, detail, _mac, commitment = e
        return join(
            (
                head if commitment is None else head3,
                field(str(seq).encode()),
                at_c.get(at) or _memo(at_c, at, _text_field),
                action_c.get(action) or _memo(action_c, action, _text_field),
                id_c.get(client_id) or _memo(id_c, client_id, _id_field),
                id_c.get(record_id) or _memo(id_c, record_id, _id_field),
                scope_c.get(scope) or _memo(scope_c, scope, _text_field),
                field(detail),
                b"" if commitment is None else field(commitment),
            )
        )

    return encode


def _text_field(value: str) -> bytes:
    return _field(value.encode())


def _id_field(value: str | None) -> bytes:
    return _field(_optional(value))


def _memo(cache: dict[Any, bytes], key: Any, encode: Any) -> bytes:
    if len(cache) > 10_000:  # bounded: timestamps and record ids seldom repeat far apart
        cache.clear()
    value: bytes = encode(key)
    cache[key] = value
    return value


def entry_bytes_v1(vault_id: str, e: Row) -> bytes:
    """The first release's layout (absent ids as empty strings); verified for old entries only."""
    fields = [
        ENTRY_V1,
        vault_id.encode(),
        str(e.seq).encode(),
        e.at.encode(),
        e.action.encode(),
        (e.client_id or "").encode(),
        (e.record_id or "").encode(),
        e.scope.encode(),
        bytes(e.detail),
    ]
    return b"".join(_field(f) for f in fields)


def detail_aad(vault_id: str, seq: int) -> bytes:
    return f"handover-vault/v1/audit-detail\x00{vault_id}\x00{seq}".encode()


def _refused(store: Store, exc: BaseException, action: str) -> VaultError:
    """The entry could not be written (full disk, a refusing table): say so; the caller's
    transaction rolls back, so the action it records does not happen (fail closed)."""
    err = store.wrap_error(exc, f"writing the audit entry for {action}")
    if type(err) is StorageError and "refused" in err.message:
        return StorageError(
            f"the audit log refused the entry for {action}, so nothing was done (fail closed)",
            "check the vault with: handover audit verify",
        )
    return err


def _select_entries() -> Any:
    """Every column of ``audit`` in :data:`_COLUMNS` order (what :func:`check_row` unpacks)."""
    table = AuditEntry.__table__
    return select(*(table.c[name] for name in _COLUMNS))


def _broken(seq: Any, why: str) -> IntegrityError:
    return IntegrityError(f"audit log broken at entry {seq}: {why}", "see what remains: handover audit list")


def check_row(raw: Any) -> Row:
    """The row's columns, refusing any that SQLite holds in a type or form the writer never uses.

    SQLite is dynamically typed: ``UPDATE audit SET mac = hex(mac)`` stores text in a blob column.
    Such an edit must be reported as a broken entry (exit 4), not crash the verifier.
    """
    if intact(raw):
        return Row._make(raw)
    return _check_row_slowly(raw if hasattr(raw, "seq") else Row._make(raw))


def intact(raw: Any) -> bool:
    """Whether a row is exactly as the writer leaves it (every row of an intact log).

    The fast path of :func:`check_row`; anything else goes through the checks that say which
    column is wrong.
    """
    seq, at, action, client_id, record_id, scope, detail, mac, commitment = raw  # _COLUMNS order
    return bool(
        type(seq) is int
        and type(at) is str
        and type(action) is str
        and action
        and scope in SCOPES
        and type(scope) is str
        and (client_id is None or (type(client_id) is str and client_id))
        and (record_id is None or (type(record_id) is str and record_id))
        and type(detail) is bytes
        and type(mac) is bytes
        and len(mac) == MAC_SIZE
        and (commitment is None or (type(commitment) is bytes and len(commitment) == MAC_SIZE))
        and _TIME.match(at)
    )


def _check_row_slowly(raw: Any) -> Row:
    seq = raw.seq
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise _broken("?", "an entry's sequence number is not an integer")
    values = {c: getattr(raw, c) for c in _COLUMNS}
    for column in ("at", "action", "scope"):
        if not isinstance(values[column], str) or not values[column]:
            raise _broken(seq, f"its {column} column was altered")
    for column in ("client_id", "record_id"):
        if values[column] is not None and (not isinstance(values[column], str) or not values[column]):
            raise _broken(seq, f"its {column} column was altered")
    for column in ("detail", "mac", "commitment"):
        if isinstance(values[column], memoryview | bytearray):
            values[column] = bytes(values[column])
        if column == "commitment" and values[column] is None:
            continue
        if not isinstance(values[column], bytes):
            raise _broken(seq, f"its {column} column was altered")
    if values["commitment"] is not None and len(values["commitment"]) != MAC_SIZE:
        raise _broken(seq, "its commitment column was altered")
    if values["scope"] not in SCOPES or len(values["mac"]) != MAC_SIZE or not _TIME.match(values["at"]):
        raise _broken(seq, "a column holds a value the vault never writes")
    return Row(**values)


def head_tag(key: bytes, vault_id: str, seq: int, mac: bytes) -> bytes:
    """The head record's tag (docs/spec.md): only the audit key can make it."""
    msg = b"handover-vault/v2/audit-head\x00" + vault_id.encode() + b"\x00"
    return crypto.mac(key, msg + struct.pack(">Q", seq) + mac)


def head_verifies(key: bytes, vault_id: str, value: Any) -> bool:
    """Whether a stored head record carries a valid tag under ``key``."""
    value = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""
    if len(value) != HEAD_SIZE or value[0] != HEAD_VERSION:
        return False
    seq = struct.unpack(">Q", value[1:9])[0]
    return crypto.mac_equal(head_tag(key, vault_id, seq, value[9:41]), value[41:])


def key_version_at(seq: int, team_start: int, epochs: list[Epoch], revokes: list[int]) -> int:
    """A team client's key version when entry ``seq`` was sealed: one more than 1 for each of
    the client's ``team.revoke`` entries (``revokes``, ascending) up to it, each sealed under the
    version it made; for an entry before ``team_start`` (moved in from a vault file), the version
    of its file epoch, -(i + 1) for ``epochs[i]`` (teams.move_in), or 1 after the file's last rekey."""
    if seq < team_start:
        return next((-(i + 1) for i, e in enumerate(epochs) if seq <= e.until), 1)
    return 1 + bisect.bisect_right(revokes, seq)


def _epoch_sealer(epoch: Epoch, e: Row, cache: dict[str, Any]) -> Any:
    """The key that sealed the detail of an entry written before a rekey (None: shredded)."""
    name = f"{epoch.until}/{e.client_id if e.scope == 'client' and e.client_id else ''}"
    if name not in cache:
        if not name.endswith("/"):
            key = epoch.clients.get(str(e.client_id))
        else:
            key = epoch.detail_key
        cache[name] = None if key is None else crypto.Sealer(key)
    return cache[name]


@dataclass(frozen=True)
class Head:
    seq: int
    mac: bytes


@dataclass
class Event:
    """An audit entry as shown to the user (detail None when it can no longer be decrypted)."""

    seq: int
    at: str
    action: str
    client_id: str | None
    record_id: str | None
    detail: dict[str, Any] | None
    #: The team member who made the entry (a team vault only).
    member: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "seq": self.seq,
            "at": self.at,
            "action": self.action,
            "client_id": self.client_id,
            "record_id": self.record_id,
            "detail": self.detail,
        }
        if self.member is not None:
            out["member"] = self.member
        return out


class AuditLog:
    def __init__(self, vault: Vault) -> None:
        self.v = vault
        self.key = vault.keys.audit_mac_key
        self.mac = crypto.Mac(self.key)  # keyed once: verify MACs every entry of the log

    # --- keys of earlier epochs (before a rekey: vault/rekey.py) -----------------------------------

    @cached_property
    def epochs(self) -> list[Epoch]:
        """The audit keys before each rekey, oldest first (empty for a vault never rekeyed)."""
        from ..rekey import load_epochs

        return load_epochs(self.v)

    @cached_property
    def genesis(self) -> bytes:
        first = self.epochs[0].mac_key if self.epochs else self.key  # the key the log began under
        return crypto.mac(first, b"handover-vault/v1/audit-genesis\x00" + self.v.vault_id.encode())

    def _epoch_of(self, seq: int) -> Epoch | None:
        """The earlier epoch an entry belongs to, or None for the current key's."""
        for epoch in self.epochs:
            if seq <= epoch.until:
                return epoch
        return None

    def _key_changes(self) -> dict[int, crypto.Mac]:
        """Entry ``vault.rekey`` number -> the MAC key the entries after it are chained under."""
        macs = [crypto.Mac(e.mac_key) for e in self.epochs[1:]] + [self.mac]
        return {e.until: m for e, m in zip(self.epochs, macs, strict=True)}

    # --- the head record --------------------------------------------------------------------------

    def _head_tag(self, seq: int, mac: bytes) -> bytes:
        return head_tag(self.key, self.v.vault_id, seq, mac)

    def _read_head(self, s: Session) -> Head | None:
        """The recorded newest entry, or None when there is no head record (first release vaults).

        Raises IntegrityError when the record exists but was altered.
        """
        row = s.get(Meta, HEAD_KEY)
        if row is None:
            return None
        value = row.value
        if isinstance(value, memoryview | bytearray):
            value = bytes(value)
        if not isinstance(value, bytes) or len(value) != HEAD_SIZE or value[0] != HEAD_VERSION:
            raise IntegrityError(
                "the audit log's head record is malformed (tampered)", "run: handover audit verify"
            )
        seq = struct.unpack(">Q", value[1:9])[0]
        mac, tag = value[9:41], value[41:]
        if not crypto.mac_equal(self._head_tag(seq, mac), tag):
            self._refuse_a_rotated_team_key(s)
            raise IntegrityError(
                "the audit log's head record does not verify (tampered)", "run: handover audit verify"
            )
        return Head(seq, mac)

    def _refuse_a_rotated_team_key(self, s: Session) -> None:
        """In a team, a head tagged under another key is first of all a rotation (``member remove``)
        that committed while this process held the old team key: said as such, nothing written."""
        keys = self.v.keys
        if keys.team and not keys.still_current(s):  # type: ignore[attr-defined]
            raise AuthenticationFailed(
                "the team key was rotated while this command ran (a member was removed), or your "
                "access ended; nothing was done",
                "run the command again (unlock again first if you use a session: eval $(handover unlock))",
            )

    def _write_head(self, s: Session, head: Head) -> None:
        value = (
            bytes([HEAD_VERSION])
            + struct.pack(">Q", head.seq)
            + head.mac
            + self._head_tag(head.seq, head.mac)
        )
        row = s.get(Meta, HEAD_KEY)
        if row is None:
            s.add(Meta(key=HEAD_KEY, value=value))
        else:
            row.value = value

    def adopt_head(self, s: Session, head: Head) -> None:
        """Write the head record under this log's key (a rekey's new key: vault/rekey.py)."""
        self._write_head(s, head)

    def _mac_of(self, prev: bytes, row: Row, v1: bool = False, mac: crypto.Mac | None = None) -> bytes:
        data = entry_bytes_v1(self.v.vault_id, row) if v1 else entry_bytes(self.v.vault_id, row)
        return (mac or self.mac)(prev + data)

    def _continue_legacy(self, s: Session, last_seq: int) -> Head:
        """Where to chain on in a vault without a head record: only after an intact v1 entry.

        A log whose newest entry is v2 had a head record, so its absence is tampering: fail closed.
        """
        rows = list(
            s.execute(_select_entries().where(AuditEntry.seq >= last_seq - 1).order_by(AuditEntry.seq))
        )
        last = check_row(rows[-1])
        prev = self.genesis
        if last.seq > 1:
            if len(rows) < 2 or rows[0].seq != last.seq - 1:
                raise _broken(last.seq - 1, "entry missing")
            prev = check_row(rows[0]).mac
        if crypto.mac_equal(self._mac_of(prev, last, v1=True), last.mac):
            return Head(last.seq, last.mac)
        if crypto.mac_equal(self._mac_of(prev, last), last.mac):
            raise IntegrityError(
                "the audit log's head record is missing (tampered); nothing was done",
                "run: handover audit verify",
            )
        raise IntegrityError(
            f"the newest audit entry ({last.seq}) does not verify; nothing was done",
            "run: handover audit verify",
        )

    # --- writing ----------------------------------------------------------------------------------

    def append(
        self,
        s: Session,
        action: str,
        client: ClientRef | None = None,
        record_id: str | None = None,
        detail: dict[str, Any] | None = None,
        vault_scope: bool = False,
    ) -> int:
        """Append one entry inside the caller's write transaction (BEGIN IMMEDIATE serialises it).

        If this raises, the caller's transaction rolls back: the action it records does not happen.
        Raises IntegrityError (nothing is written) when the head record was tampered with, when
        entries follow the recorded head, or when the log was emptied.
        """
        from ..clock import utcnow
        from .commitment import tracker

        state = tracker(self.v, s)
        commitment = state.root_for_append(s)
        head = self._read_head(s)
        last_seq = s.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
        if head is not None:
            if last_seq is not None and last_seq > head.seq:
                raise IntegrityError(
                    f"the audit log has entries after its recorded head (entry {head.seq}); nothing was done",
                    "run: handover audit verify",
                )
            # Chain on from the recorded head even when newer rows are missing: a deletion of the
            # newest entries then stays visible as a gap instead of being papered over.
            prev, seq = head.mac, head.seq + 1
        elif last_seq is not None:
            legacy = self._continue_legacy(s, last_seq)
            prev, seq = legacy.mac, legacy.seq + 1
        elif action != FIRST_ACTION:
            raise IntegrityError(
                "the audit log is empty: it was wiped (every vault's log starts with "
                "its creation); nothing was done",
                "restore the vault from a backup",
            )
        else:
            prev, seq = self.genesis, 1
        plain = json.dumps(detail or {}, sort_keys=True, separators=(",", ":")).encode()
        scope = "client" if client is not None and not vault_scope else "vault"
        sealer = client.keys.sealer if scope == "client" and client is not None else self.v.keys.audit_detail
        entry = AuditEntry(
            seq=seq,
            at=utcnow(),
            action=action,
            client_id=client.id if client is not None else None,
            record_id=record_id,
            scope=scope,
            detail=sealer.seal(plain, detail_aad(self.v.vault_id, seq)),
            mac=b"",
            commitment=commitment,
        )
        entry.mac = crypto.mac(self.key, prev + entry_bytes(self.v.vault_id, entry))
        if self.v.keys.team:  # each entry signed by its member and hash-chained (DESIGN §12)
            from ..teams import sign_entry

            sign_entry(self.v, s, entry)
        try:
            s.add(entry)
            self._write_head(s, Head(seq, entry.mac))  # its query autoflushes the entry
            s.flush()
        except SQLAlchemyError as exc:
            raise _refused(self.v.store, exc, action) from None
        state.appended(entry, prev)
        return seq

    def reseal(self, s: Session, entry: AuditEntry, prev: bytes, commitment: bytes) -> None:
        """Give the newest entry of this transaction the commitment as the transaction ends.

        The transaction changed the state after its last entry was appended (an entry's MAC
        covers the state after its transaction): the entry's commitment and MAC are written again.
        """
        entry.commitment = commitment
        entry.mac = crypto.mac(self.key, prev + entry_bytes(self.v.vault_id, entry))
        if self.v.keys.team:
            from ..teams import resign

            resign(self.v, entry)
        try:
            self._write_head(s, Head(entry.seq, entry.mac))
            s.flush()
        except SQLAlchemyError as exc:
            raise _refused(self.v.store, exc, entry.action) from None

    def newest(self, s: Session) -> tuple[Head, bytes | None]:
        """The newest entry, checked against the head record and its own MAC, with its commitment.

        Three short queries, no walk: what every read compares the vault's state with. Raises
        IntegrityError when the head record is missing or altered, entries follow it, it names an
        entry that is gone, or the newest entry does not verify.
        """
        head = self._read_head(s)
        last = s.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
        if head is None and last is None:
            raise IntegrityError(
                "the audit log is empty: it was wiped (every vault's log starts with its creation); "
                "nothing was done",
                "restore the vault from a backup",
            )
        if head is None:
            raise IntegrityError(
                "the audit log's head record is missing (tampered); nothing was done",
                "run: handover verify",
            )
        last = s.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
        if last is None or last != head.seq:
            raise IntegrityError(
                f"the audit log ends at entry {last or 0} but its head record names entry {head.seq}: "
                "entries were removed or added",
                "run: handover verify",
            )
        rows = list(
            s.execute(_select_entries().where(AuditEntry.seq >= head.seq - 1).order_by(AuditEntry.seq))
        )
        row = check_row(rows[-1])
        prev = self.genesis
        if head.seq > 1:
            if len(rows) < 2 or rows[0].seq != head.seq - 1:
                raise _broken(head.seq - 1, "entry missing")
            prev = check_row(rows[0]).mac
        epoch = self._epoch_of(head.seq) if self.epochs else None
        key = crypto.Mac(epoch.mac_key) if epoch is not None else None  # a rekey's bridge entry
        ok = crypto.mac_equal(self._mac_of(prev, row, mac=key), row.mac) or (
            row.commitment is None and crypto.mac_equal(self._mac_of(prev, row, v1=True, mac=key), row.mac)
        )
        if not crypto.mac_equal(row.mac, head.mac) or not ok:
            raise _broken(head.seq, "its MAC does not match (edited, or an older copy put back)")
        return head, row.commitment

    def append_now(self, action: str, client: ClientRef | None = None, **kw: Any) -> int:
        """Append one entry in a transaction of its own (run again on contention: it does nothing
        but write the entry, and the secret it records leaves the process only once it returns)."""
        return self.v.store.run_write(
            f"writing the audit entry for {action}", lambda s: self.append(s, action, client=client, **kw)
        )

    # --- reading ----------------------------------------------------------------------------------

    def _rows(self, s: Session, client_id: str | None = None) -> Iterator[Any]:
        q = _select_entries().order_by(AuditEntry.seq)
        if client_id is not None:
            q = q.where(AuditEntry.client_id == client_id)
        # Core on the session's connection: plain rows, without the ORM's per-row loading step.
        yield from s.connection().execute(q.execution_options(yield_per=2000))

    def _sealer_for(self, s: Session, e: Row, cache: dict[str, Any]) -> Any:
        epoch = self._epoch_of(e.seq) if self.epochs else None
        client_scope = e.scope == "client" and bool(e.client_id)
        if epoch is not None:  # sealed before a rekey, under that epoch's keys
            sealer = _epoch_sealer(epoch, e, cache)
            # A team's client keys are not in its key history: they are versions held by grants.
            if sealer is not None or not (client_scope and self.v.keys.team):
                return sealer
        if not client_scope:
            return self.v.keys.audit_detail
        version = self._key_version_at(s, str(e.client_id), e.seq, cache)
        name = f"{e.client_id}@{version}"
        if name not in cache:
            row = s.get(Client, e.client_id)
            try:
                keys = None if row is None else self.v.keys.client(row.id, row.wrapped_key, s, version)
            except NoAccess:
                keys = None  # a key version not granted to this team member: those details stay sealed
            cache[name] = None if keys is None else keys.sealer
        return cache[name]

    def _team_start(self, s: Session, cache: dict[str, Any]) -> int:
        """The first entry of a team's own chain (after those moved in from a vault file)."""
        if "team start" not in cache:
            from ..teams import chain_start

            cache["team start"] = chain_start(s)
        return int(cache["team start"])

    def _key_version_at(self, s: Session, client_id: str, seq: int, cache: dict[str, Any]) -> int:
        """The client's key version when entry ``seq`` was sealed: 1 in a vault file; in a team,
        :func:`key_version_at` (the entries' action and client are covered by the chain)."""
        if not self.v.keys.team:
            row = s.get(Client, client_id)
            return 1 if row is None else int(row.key_version or 1)
        name = f"revokes@{client_id}"
        if name not in cache:
            cache[name] = list(
                s.execute(
                    select(AuditEntry.seq)
                    .where(AuditEntry.client_id == client_id, AuditEntry.action == "team.revoke")
                    .order_by(AuditEntry.seq)
                ).scalars()
            )
        return key_version_at(seq, self._team_start(s, cache), self.epochs, cache[name])

    def _event(self, s: Session, raw: Any, cache: dict[str, Any]) -> Event:
        try:
            e = check_row(raw)
        except IntegrityError:
            # Listed, not hidden: `audit verify` names it; here it shows that something is wrong.
            return Event(
                raw.seq if isinstance(raw.seq, int) else -1,
                str(raw.at),
                str(raw.action),
                None,
                None,
                {"error": "entry altered (tampered)"},
            )
        sealer = self._sealer_for(s, e, cache)
        detail = None
        if sealer is not None:
            try:
                detail = json.loads(sealer.open(e.detail, detail_aad(self.v.vault_id, e.seq)))
            except (DecryptFailed, ValueError):
                detail = {"error": "detail does not decrypt (tampered)"}
        return Event(e.seq, e.at, e.action, e.client_id, e.record_id, detail)

    def events(self, client_id: str | None = None) -> list[Event]:
        """Every entry, oldest first, with its detail decrypted where the key still exists."""
        cache: dict[str, Any] = {}
        with self.v.read() as s:
            events = [self._event(s, raw, cache) for raw in self._rows(s, client_id)]
            if self.v.keys.team:
                from ..teams import member_names

                names = member_names(s)
                by_seq = dict(s.execute(select(AuditEntry.seq, AuditEntry.member_id)).tuples().all())
                for e in events:
                    e.member = names.get(by_seq.get(e.seq) or "", by_seq.get(e.seq) or "")
        return events

    def event(self, seq: int) -> Event:
        """One entry by its sequence number. Raises NotFound."""
        with self.v.read() as s:
            raw = s.execute(_select_entries().where(AuditEntry.seq == seq)).first()
            if raw is None:
                raise NotFound(f"no audit entry {seq}")
            return self._event(s, raw, {})

    def head(self) -> Head:
        """The newest entry as recorded (no chain walk). Raises IntegrityError for a bad head record."""
        with self.v.read() as s:
            head = self._read_head(s)
            if head is not None:
                return head
            last = s.execute(
                select(AuditEntry.seq, AuditEntry.mac).order_by(AuditEntry.seq.desc()).limit(1)
            ).first()
        return Head(0, self.genesis) if last is None else Head(last.seq, bytes(last.mac))

    def verify(self, checkpoint: dict[str, Any] | None = None, pinned: Head | None = None) -> Head:
        """Walk the chain; raise IntegrityError naming the first broken entry.

        Also refuses a log whose newest entries no longer match the head record, and, with a
        checkpoint (from ``checkpoint()``), a log that no longer contains the checkpointed head:
        truncation or rollback. ``pinned`` is a head whose signature the caller checked already
        (a receipt's: vault/requests/receipts.py). Raises InvalidInput for a malformed checkpoint.
        """
        cp = self.check_checkpoint_signature(checkpoint) if checkpoint is not None else pinned
        with self.v.read() as s:
            try:
                with builtin_text(s):
                    prev, expected, v2_seen = self._walk(s, cp)
            except TextNotUtf8:  # a text column holds bytes that are not UTF-8: read them as usual
                prev, expected, v2_seen = self._walk(s, cp)
            recorded = self._read_head(s)
            if self.v.keys.team:
                from ..teams import verify_signatures

                verify_signatures(self.v, s)
        head = Head(expected - 1, prev)
        if cp is not None and head.seq < cp.seq:
            raise IntegrityError(
                f"the audit log ends at entry {head.seq} but the checkpoint saw entry {cp.seq}: "
                "entries were removed (truncation or rollback)"
            )
        self._check_head(head, recorded, v2_seen)
        return head

    def _walk(self, s: Session, cp: Head | None) -> tuple[bytes, int, bool]:
        """Check every entry's form, sequence and MAC; (newest MAC, next seq, a v2 entry seen).

        The per-entry work is written out in one loop over the driver's row tuples (no object per
        row, the keyed MAC state copied directly): it is most of the time ``audit verify`` takes.
        """
        prev, expected, v2_seen, v3_seen = self.genesis, 1, False, False
        changes = self._key_changes() if self.epochs else {}
        current = crypto.Mac(self.epochs[0].mac_key) if self.epochs else self.mac
        encode, keyed, equal = _entry_encoder(self.v.vault_id), current.keyed, crypto.mac_equal
        cp_seq = cp.seq if cp is not None else -1
        for raw in scan(s, _select_entries().order_by(AuditEntry.seq)):
            row = raw if intact(raw) else check_row(raw)
            seq, _at, action, _client, _record, _scope, _detail, mac, commitment = row
            if seq != expected:
                raise _broken(expected, f"entry missing or reordered (found {seq} next)")
            h = keyed.copy()
            h.update(prev + encode(row))
            if equal(h.finalize(), mac):
                v2_seen = True
            elif v2_seen or not equal(self._mac_of(prev, Row._make(row), v1=True, mac=current), mac):
                raise _broken(
                    seq,
                    "its MAC does not match (edited, inserted, reordered or an earlier entry deleted)",
                )
            if commitment is not None:
                v3_seen = True
            elif v3_seen:
                raise _broken(seq, "its state commitment was removed (entries after schema 0005 carry one)")
            if seq == 1 and action != FIRST_ACTION:
                raise _broken(1, f"the log does not start with {FIRST_ACTION}")
            if seq == cp_seq and cp is not None and not equal(mac, cp.mac):
                raise IntegrityError(f"audit entry {seq} differs from the checkpoint: history rewritten")
            if changes and seq in changes:  # a rekey: the entries after it chain on under the new key
                current = changes[seq]
                keyed = current.keyed
            prev, expected = mac, expected + 1
        return prev, expected, v2_seen

    def _check_head(self, head: Head, recorded: Head | None, v2_seen: bool) -> None:
        if recorded is None:
            if head.seq == 0:
                raise _broken(1, "the log is empty (every vault's log starts with its creation)")
            if v2_seen:
                raise IntegrityError(
                    "the audit log's head record is missing: the newest entries may "
                    f"have been removed after entry {head.seq}"
                )
            return
        if recorded.seq > head.seq:
            raise IntegrityError(
                f"the audit log ends at entry {head.seq} but the vault recorded entry {recorded.seq} as its "
                "newest: entries were removed"
            )
        if recorded.seq < head.seq:
            raise _broken(recorded.seq + 1, f"entries follow the recorded head (entry {recorded.seq})")
        if not crypto.mac_equal(recorded.mac, head.mac):
            raise _broken(head.seq, "it is not the entry the vault recorded as its newest")

    # --- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """A signed statement of the current head, to keep outside the vault (verifies first)."""
        from ..clock import utcnow
        from .statecheck import check_top

        head = self.verify()
        with self.v.read() as s:
            check_top(self.v, s)  # the head it signs must be the state the vault is in
        self.v.forget_meta()  # the signing key as it is now (vault/signing_keys.py), not as first read
        body = {
            "format": CHECKPOINT_FORMAT,
            "vault": self.v.fingerprint,
            "seq": head.seq,
            "mac": head.mac.hex(),
            "at": utcnow(),
        }
        msg = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return {**body, "signature": base64.b64encode(self.v.sign(msg)).decode("ascii")}

    def check_checkpoint_signature(self, cp: dict[str, Any]) -> Head:
        """The head a checkpoint pins, after checking its form, vault and signature.

        Raises InvalidInput (malformed) or IntegrityError (another vault, bad signature).
        """
        try:
            body = {k: cp[k] for k in ("format", "vault", "seq", "mac", "at")}
            sig = base64.b64decode(cp["signature"], validate=True)
            seq, mac = body["seq"], bytes.fromhex(body["mac"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidInput("the checkpoint file is malformed") from None
        if body["format"] != CHECKPOINT_FORMAT:
            raise InvalidInput("the checkpoint file has an unknown format")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or len(mac) != MAC_SIZE:
            raise InvalidInput("the checkpoint file is malformed")
        from ..signing_keys import signer_key

        if not isinstance(body["vault"], str):
            raise InvalidInput("the checkpoint file is malformed")
        public = signer_key(self.v, body["vault"], seq, "checkpoint")
        if public is None:
            raise IntegrityError("the checkpoint was made by another vault")
        msg = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        if not crypto.verify_signature(public, sig, msg):
            raise IntegrityError("the checkpoint's signature is not valid")
        return Head(seq, mac)
