"""Sealed records: one generic store for every per-client kind (contact, doc, cred, …).

A record's payload is JSON sealed with the client's key under associated data binding vault, client,
kind, record id and version (``keys.record_aad``). Updating a record moves the current envelope to
``record_versions`` and writes the next version, so every edit keeps the previous one.
"""

from __future__ import annotations

import builtins
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, literal_column, select

from ..errors import IntegrityError, InvalidInput, NotFound
from ..keys.crypto import DecryptFailed
from ..keys.hierarchy import record_aad
from .engine import insert_many
from .index import drop_record_everywhere, drop_record_tokens, index_new_records, index_record
from .models import Record, RecordVersion

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .scope import ClientScope as ClientRef
    from .scope import StateGuard

KINDS = ("contact", "doc", "asset", "cred", "issue", "attachment", "ack", "request")
# The command group of a kind, where the two differ (the hint must name a command that exists).
_COMMAND = {"attachment": "attach"}
_ID_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")
_RECORD_COLUMNS = ("id", "client_id", "kind", "version", "lookup", "created_at", "updated_at", "envelope")


@dataclass
class Rec:
    """A decrypted record."""

    id: str
    client_id: str
    kind: str
    version: int
    created_at: str
    updated_at: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            **self.data,
        }


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _id_prefix(s: Session, client_id: str, kind: str, prefix: str) -> tuple[Any, ...]:
    """The conditions "a record of this client and kind whose id starts with ``prefix``"."""
    if s.get_bind().dialect.name == "sqlite":
        # A range, not LIKE: SQLite's LIKE is case-insensitive and cannot use the primary-key
        # index, so a prefix lookup would scan every record. The unary "+" keeps SQLite from
        # walking the (client, kind) index instead: that costs a row per record of the kind (32 ms
        # at 100,000 credentials).
        return (
            literal_column("+records.client_id") == client_id,
            literal_column("+records.kind") == kind,
            Record.id >= prefix,
            Record.id < prefix + "~",
        )
    # PostgreSQL orders text by the database's collation, where a range of strings need not be the
    # strings with a prefix: the client's kind index, then the prefix itself.
    return (Record.client_id == client_id, Record.kind == kind, func.starts_with(Record.id, prefix))


class Records:
    """The sealed records of one vault. ``guard`` keeps and checks the state commitment."""

    def __init__(self, vault_id: str, guard: StateGuard) -> None:
        self.vault_id = vault_id
        self.guard = guard

    # --- envelopes --------------------------------------------------------------------------------

    def seal(self, client: ClientRef, kind: str, rid: str, version: int, data: dict[str, Any]) -> bytes:
        aad = record_aad(self.vault_id, client.id, kind, rid, version)
        return client.keys.sealer.seal(_dump(data), aad)

    def unseal(self, client: ClientRef, kind: str, rid: str, version: int, blob: bytes) -> dict[str, Any]:
        """Decrypt one envelope; IntegrityError names the kind and id, never the content."""
        aad = record_aad(self.vault_id, client.id, kind, rid, version)
        try:
            data = json.loads(client.keys.sealer.open(blob, aad))
        except (DecryptFailed, ValueError):
            raise IntegrityError(
                f"{kind} {rid} (version {version}) does not decrypt: tampered or corrupt",
                "every other record is unaffected; restore this one from a backup",
            ) from None
        if not isinstance(data, dict):
            raise IntegrityError(f"{kind} {rid} has a malformed payload")
        return data

    def load(self, client: ClientRef, row: Record) -> Rec:
        if row.client_id != client.id:
            raise IntegrityError(f"{row.kind} {row.id} belongs to another client")
        data = self.unseal(client, row.kind, row.id, row.version, row.envelope)
        return Rec(row.id, row.client_id, row.kind, row.version, row.created_at, row.updated_at, data)

    # --- writing ----------------------------------------------------------------------------------

    def add(
        self, s: Session, client: ClientRef, kind: str, data: dict[str, Any], name: str | None = None
    ) -> Rec:
        from ..clock import utcnow

        rid, now = str(uuid.uuid4()), utcnow()
        row = Record(
            id=rid,
            client_id=client.id,
            kind=kind,
            version=1,
            lookup=client.keys.record_lookup(kind, name) if name else None,
            created_at=now,
            updated_at=now,
            envelope=self.seal(client, kind, rid, 1, data),
        )
        s.add(row)
        s.flush()
        self.guard.note(s, client.id, rid, kind, 1, row.envelope, +1)
        rec = Rec(rid, client.id, kind, 1, now, now, data)
        index_record(s, client, rec)
        return rec

    def add_many(
        self, s: Session, client: ClientRef, kind: str, items: Iterable[tuple[dict[str, Any], str | None]]
    ) -> builtins.list[Rec]:
        """Add many records of one kind (``(data, name)`` pairs) in the caller's transaction.

        The same rows as :meth:`add`, written with one multi-row INSERT for the records and one for
        their search tokens instead of an ORM flush per record (imports of thousands of entries).
        """
        from ..clock import utcnow

        now = utcnow()
        rows: builtins.list[tuple[Any, ...]] = []
        recs: builtins.list[Rec] = []
        for data, name in items:
            rid = str(uuid.uuid4())
            lookup = client.keys.record_lookup(kind, name) if name else None
            envelope = self.seal(client, kind, rid, 1, data)
            rows.append((rid, client.id, kind, 1, lookup, now, now, envelope))
            recs.append(Rec(rid, client.id, kind, 1, now, now, data))
        if rows:
            s.flush()  # pending ORM rows first: the records' client must exist before they do
            insert_many(s, Record.__table__, _RECORD_COLUMNS, rows)
            for rid, _cid, _kind, version, _lookup, _c, _u, envelope in rows:
                self.guard.note(s, client.id, rid, kind, version, envelope, +1)
            index_new_records(s, client, recs)
        return recs

    def update(
        self, s: Session, client: ClientRef, rec: Rec, data: dict[str, Any], name: str | None = None
    ) -> Rec:
        """Write version n+1 and keep version n in the history."""
        from ..clock import utcnow

        row = s.get(Record, rec.id)
        if row is None or row.client_id != client.id:
            raise NotFound(f"{rec.kind} {rec.id} no longer exists")
        if row.version != rec.version:
            raise InvalidInput(f"{rec.kind} {rec.id} was changed meanwhile; try again")
        now = utcnow()
        before = self.unseal(client, rec.kind, rec.id, row.version, row.envelope)
        self.guard.note(s, client.id, row.id, row.kind, row.version, row.envelope, -1)
        s.add(
            RecordVersion(
                record_id=row.id, version=row.version, created_at=row.updated_at, envelope=row.envelope
            )
        )
        row.version += 1
        row.updated_at = now
        row.envelope = self.seal(client, rec.kind, rec.id, row.version, data)
        if name is not None:
            row.lookup = client.keys.record_lookup(rec.kind, name)
        s.flush()
        self.guard.note(s, client.id, row.id, row.kind, row.version, row.envelope, +1)
        new = Rec(rec.id, client.id, rec.kind, row.version, rec.created_at, now, data)
        index_record(s, client, new, old=before)
        return new

    def update_in_place(self, s: Session, client: ClientRef, rec: Rec, data: dict[str, Any]) -> Rec:
        """Re-seal the same version (for metadata completed in the transaction that created it)."""
        row = s.get(Record, rec.id)
        if row is None:
            raise NotFound(f"{rec.kind} {rec.id} no longer exists")
        before = self.unseal(client, rec.kind, rec.id, row.version, row.envelope)
        self.guard.note(s, client.id, row.id, row.kind, row.version, row.envelope, -1)
        row.envelope = self.seal(client, rec.kind, rec.id, row.version, data)
        s.flush()
        self.guard.note(s, client.id, row.id, row.kind, row.version, row.envelope, +1)
        new = Rec(rec.id, client.id, rec.kind, row.version, rec.created_at, rec.updated_at, data)
        index_record(s, client, new, old=before)
        return new

    def delete(self, s: Session, client: ClientRef, rec: Rec) -> None:
        row = s.get(Record, rec.id)
        if row is not None and row.client_id == client.id:
            self.guard.note(s, client.id, row.id, row.kind, row.version, row.envelope, -1)
            # Postings have no index by record: they are found again from the stored payload.
            try:
                drop_record_tokens(s, client, self.load(client, row))
            except IntegrityError:  # a payload that no longer decrypts: look through the client's
                drop_record_everywhere(s, client, rec.id)
        s.execute(delete(Record).where(Record.id == rec.id, Record.client_id == client.id))

    # --- reading ----------------------------------------------------------------------------------

    def list(self, s: Session, client: ClientRef, kind: str, check: bool = True) -> builtins.list[Rec]:
        """Every record of the kind, once all the client's records are checked (statecheck.py).

        ``check=False`` only for a caller that checks the records another way and refuses itself
        (the request report cross-checks each request against the audit entry that logged it).
        """
        rows = s.execute(
            select(Record)
            .where(Record.client_id == client.id, Record.kind == kind)
            .order_by(Record.created_at)
        ).scalars()
        recs = [self.load(client, r) for r in rows]
        if check:
            self.guard.check_client(s, client.id)
        return recs

    def count(self, s: Session, client: ClientRef, kind: str) -> int:
        q = select(func.count()).select_from(Record).where(Record.client_id == client.id, Record.kind == kind)
        return int(s.execute(q).scalar_one())

    def get(self, s: Session, client: ClientRef, kind: str, ref: str) -> Rec:
        """Find by id, unique id prefix, or exact title/label (case-insensitive)."""
        ref = ref.strip()
        if not ref:
            raise InvalidInput(f"no {kind} was named")
        rows: builtins.list[Record] = []
        if _ID_PREFIX.match(ref.lower()):
            rows = list(
                s.execute(
                    select(Record).where(*_id_prefix(s, client.id, kind, ref.lower())).limit(10)
                ).scalars()
            )
        lookup = None
        if not rows:
            lookup = client.keys.record_lookup(kind, ref)
            rows = self._rows_named(s, client, kind, lookup)
        if not rows:
            # A record that is gone may have been removed behind the vault's back: say so instead.
            self.guard.check_client(s, client.id)
            raise NotFound(
                f"no {kind} {ref!r} for client {client.slug}",
                f"list them: handover {_COMMAND.get(kind, kind)} list {client.slug}",
            )
        if len(rows) > 1:
            ids = ", ".join(r.id[:8] for r in rows)
            raise InvalidInput(f"{ref!r} matches several {kind} records ({ids})", "name one by its id")
        rec = self.load(client, rows[0])
        self.guard.check_record(s, client.id, rec.id, rec.kind)
        # The lookup column is clear text that anyone with the file can swap between rows; the name
        # inside the ciphertext must match it, or asking for one record would quietly return another.
        if lookup is not None and not any(
            isinstance(value, str) and client.keys.record_lookup(kind, value) == lookup
            for value in rec.data.values()
        ):
            raise IntegrityError(f"{kind} {rec.id} does not match its lookup entry: tampered")
        return rec

    def named(self, s: Session, client: ClientRef, kind: str, name: str) -> builtins.list[Rec]:
        """The records of ``kind`` whose title/label is ``name`` (case-insensitive), at most 10."""
        lookup = client.keys.record_lookup(kind, name)
        return [self.load(client, r) for r in self._rows_named(s, client, kind, lookup)]

    def _rows_named(self, s: Session, client: ClientRef, kind: str, lookup: str) -> builtins.list[Record]:
        return list(
            s.execute(
                select(Record)
                .where(Record.client_id == client.id, Record.kind == kind, Record.lookup == lookup)
                .limit(10)
            ).scalars()
        )

    def history(self, s: Session, client: ClientRef, rec: Rec) -> builtins.list[Rec]:
        """Previous versions, oldest first (the current one is ``rec`` itself)."""
        rows = s.execute(
            select(RecordVersion).where(RecordVersion.record_id == rec.id).order_by(RecordVersion.version)
        ).scalars()
        out = []
        for r in rows:
            data = self.unseal(client, rec.kind, rec.id, r.version, r.envelope)
            out.append(Rec(rec.id, client.id, rec.kind, r.version, rec.created_at, r.created_at, data))
        return out
