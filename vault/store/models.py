"""SQLAlchemy 2 typed models: the vault's tables.

Only ids (UUIDs), kinds, foreign keys, timestamps, version numbers, keyed lookup hashes and
ciphertext are stored. Every user-provided value lives inside an ``envelope`` (AES-256-GCM of a JSON
payload, see ``records.py`` and docs/spec.md). Timestamps are ISO-8601 UTC strings, which keeps the
SQL portable to PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so Alembic migrations (batch mode on SQLite) can address them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# The meta row that holds the audit log's head (vault/integrity/audit.py). On PostgreSQL every
# write locks it first (``SELECT … FOR UPDATE``): the row that serialises the chain's appends.
AUDIT_HEAD_KEY = "audit_head"


class Meta(Base):
    """Vault-wide facts: vault id, format, signing key (public in clear, private wrapped)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class KeySlot(Base):
    """One wrapping of the vault master key (VMK) under a KEK derived by Argon2id."""

    __tablename__ = "key_slots"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "passphrase" | "recovery"
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    memory_kib: Mapped[int] = mapped_column(Integer)
    iterations: Mapped[int] = mapped_column(Integer)
    lanes: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str] = mapped_column(String(32))


class Client(Base):
    """A client: its data key wrapped by the VMK, and its profile (slug, name, agreement) sealed."""

    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Keyed hash of the slug (HMAC under a VMK-derived key): finds a client without storing its slug.
    lookup: Mapped[str] = mapped_column(String(64), unique=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    # Which version of the client's data key seals its records: a team revoke makes a new one
    # (schema 0006). A single-user vault stays at 1. The Python default spares the ORM a fetch.
    key_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Record(Base):
    """Any per-client record: contact, doc, asset, cred, issue, attachment, ack, request."""

    __tablename__ = "records"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    # Keyed hash of the exact title/label under the client's index key: lookup by name without
    # decrypting every record of the client.
    lookup: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_records_client_kind", "client_id", "kind"),
        Index("ix_records_lookup", "client_id", "kind", "lookup"),
    )


class RecordVersion(Base):
    """A previous version of a record, kept sealed under the AAD of its own version number."""

    __tablename__ = "record_versions"
    record_id: Mapped[str] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[str] = mapped_column(String(32))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)


class Chunk(Base):
    """A chunk of an attachment's content, sealed with the chunk's index in its AAD."""

    __tablename__ = "chunks"
    record_id: Mapped[str] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEntry(Base):
    """One append-only audit entry; ``mac`` chains it to the previous one (docs/spec.md)."""

    __tablename__ = "audit"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(48))
    # No foreign key: entries outlive a forgotten client (their details become unreadable).
    client_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    record_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    scope: Mapped[str] = mapped_column(String(8))  # "vault" or "client": which key seals the detail
    detail: Mapped[bytes] = mapped_column(LargeBinary)
    mac: Mapped[bytes] = mapped_column(LargeBinary)
    # The vault's state commitment after this entry's transaction (schema 0005; NULL before it).
    commitment: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # A team vault's signed chain (schema 0006; NULL in a single-user vault): the member who wrote
    # the entry, the previous entry's hash, the member's Ed25519 signature, and on entry 1 of a
    # team moved in from a single-user vault that vault's verified head (docs/spec.md).
    member_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    prev_hash: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedded_head: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # On PostgreSQL the server stamps the inserting transaction's id here (a trigger), so that only
    # that transaction may reseal the entry; whatever the writer sends is replaced. NULL on SQLite.
    written_in: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_audit_client", "client_id"), Index("ix_audit_action", "action"))


class Member(Base):
    """A team member's public keys, endorsed by an admin (vault/team/endorse.py; schema 0006).

    Everything here is public. ``endorsement`` is the endorser's Ed25519 signature over the row
    (docs/spec.md, "Endorsement"); the first admin endorses itself (``endorsed_by == id``).
    A removed member keeps its row (``removed_at`` set) so that its audit entries still verify.
    """

    __tablename__ = "members"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    x25519: Mapped[str] = mapped_column(Text)  # age recipient text, "age1…"
    ed25519: Mapped[bytes] = mapped_column(LargeBinary(32))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean)
    endorsed_by: Mapped[str] = mapped_column(String(36))
    endorsement: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str] = mapped_column(String(32))
    removed_at: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Grant(Base):
    """A client's data key (one key version) wrapped to one member, signed by the granting admin.

    ``wrapped`` is age-encrypted to the member's X25519 recipient (vault/team/grants.py); the
    server can read none of it.
    """

    __tablename__ = "grants"
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    key_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No cascade: a member is never deleted while it holds grants (removal sets removed_at).
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    granted_by: Mapped[str] = mapped_column(String(36))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str] = mapped_column(String(32))

    __table_args__ = (Index("ix_grants_member", "member_id"),)


class RecoveryWrap(Base):
    """A client's data key (one key version) wrapped to the team's offline recovery recipient."""

    __tablename__ = "recovery_wraps"
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    key_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)


class SearchPosting(Base):
    """Which records hold a keyed word prefix: one row per token and block of record ids (schema 0004).

    ``token = HMAC(client search key, prefix)``: search finds candidate records without decrypting
    the client's every record, and the tokens die with the client's key. They reveal which records
    share a word prefix, never the word (docs/security.md).

    ``ids`` is up to :data:`vault.search.BLOCK_IDS` record ids, 16 raw bytes each, sorted. The
    blocks of a token split the id space into ranges: ``low`` is the lowest id a block may hold (the
    empty blob for the first), and the next block's ``low`` bounds it. A token shared by many
    records is one row per block instead of one row per record: a 10,000-entry import writes about
    32,000 rows instead of 580,000 (docs/performance.md). A WITHOUT ROWID table keyed by its primary
    key; a record's postings are found again from its payload's tokens by a seek per token, a
    client's go with it (``ON DELETE CASCADE`` on the key's first column).
    """

    __tablename__ = "search_postings"
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    token: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    low: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    ids: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = ({"sqlite_with_rowid": False},)


class StateBucket(Base):
    """One group of a client's records in the state commitment: the sum of their element MACs.

    ``bucket`` is the first two characters of the record ids it sums; ``total`` is 32 bytes,
    big-endian (docs/spec.md, "State commitment"). Only non-empty groups have a row.
    """

    __tablename__ = "state_buckets"
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(8), primary_key=True)
    total: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = ({"sqlite_with_rowid": False},)


class StateClient(Base):
    """A client's part of the state commitment: its row's element MAC and its records' sum."""

    __tablename__ = "state_clients"
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    row_hash: Mapped[bytes] = mapped_column(LargeBinary)
    records: Mapped[bytes] = mapped_column(LargeBinary)
