"""Team vaults (DESIGN §12): members, grants, recovery wraps, client key versions, signed audit.

Tables for what vault/team/ already computes: ``members`` (endorsed public keys), ``grants`` (a
client key version wrapped to a member, signed by an admin) and ``recovery_wraps`` (the same key
wrapped to the team's offline recovery recipient). ``clients.key_version`` counts the rotations
a revoke makes; ``audit`` gains the signed chain's columns. A single-user vault leaves them all
empty (``key_version`` 1), so nothing it does changes.

On PostgreSQL only, triggers make ``audit`` append-only for whoever connects, the superuser
included: UPDATE, DELETE and TRUNCATE are refused, except that the transaction that inserted an
entry may write its ``commitment`` and ``mac`` again (``AuditLog.reseal``: an entry's MAC covers
the state after its own transaction). ``written_in`` is how the trigger knows: the inserting
transaction's id, stamped by the server. SQLite gets no triggers: its file's owner can rewrite
anything anyway, and the tamper tests alter SQLite files on purpose; the MAC chain and the state
commitment are what catch that there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The trigger's refusal: SQLSTATE 23001 restrict_violation (class 23, "integrity constraint
# violation", PostgreSQL manual Appendix A). The rule is a constraint of the table like a CHECK,
# psycopg raises it as an IntegrityError, and it is none of the codes an append retries on
# (40001, 40P01, 23505), so a refused write is never retried.
REFUSED = "23001"

# BEFORE INSERT: the server, not the writer, records which transaction wrote the entry.
# txid_current() is the top-level transaction's id (the same inside a savepoint), 64-bit with
# its epoch, so it never repeats within a cluster's life.
_STAMP = """
CREATE FUNCTION audit_stamp_written_in() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.written_in := txid_current();
    RETURN NEW;
END
$$
"""

# BEFORE UPDATE, per row: allowed only in the transaction that inserted the row, and only if
# nothing but commitment, mac and (a team member's) signature differs. Comparing the whole row as jsonb minus those two keys
# also covers any column a later migration adds. Any other outcome, NULL included (an entry
# from before this migration has no written_in), reaches the RAISE.
_UPDATE = f"""
CREATE FUNCTION audit_refuse_update() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.written_in = txid_current()
       AND NEW.written_in = OLD.written_in
       AND NEW.seq = OLD.seq
       AND (to_jsonb(NEW) - 'commitment' - 'mac' - 'signature')
           = (to_jsonb(OLD) - 'commitment' - 'mac' - 'signature') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: UPDATE of entry % refused', OLD.seq
        USING ERRCODE = '{REFUSED}',
              HINT = 'only the transaction that wrote an entry may reseal its commitment, mac and signature';
END
$$
"""

# BEFORE DELETE and BEFORE TRUNCATE, per statement: refused always, even when no row matches.
_REFUSE = f"""
CREATE FUNCTION audit_refuse_removal() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP
        USING ERRCODE = '{REFUSED}';
END
$$
"""

_TRIGGERS = (
    "CREATE TRIGGER audit_stamp BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_stamp_written_in()",
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_refuse_update()",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH STATEMENT "
    "EXECUTE FUNCTION audit_refuse_removal()",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT "
    "EXECUTE FUNCTION audit_refuse_removal()",
)
_TRIGGER_NAMES = ("audit_stamp", "audit_no_update", "audit_no_delete", "audit_no_truncate")
_FUNCTIONS = ("audit_stamp_written_in", "audit_refuse_update", "audit_refuse_removal")

# The signed chain's columns (docs/spec.md, "Signed audit chain"), and the trigger's stamp.
_AUDIT_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[object]], ...] = (
    ("member_id", sa.String(36)),
    ("prev_hash", sa.LargeBinary()),
    ("signature", sa.LargeBinary()),
    ("embedded_head", sa.LargeBinary()),
    ("written_in", sa.BigInteger()),
)


def _client_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["client_id"], ["clients.id"], name=f"fk_{table}_client_id_clients", ondelete="CASCADE"
    )


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("x25519", sa.Text(), nullable=False),
        sa.Column("ed25519", sa.LargeBinary(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("endorsed_by", sa.String(36), nullable=False),
        sa.Column("endorsement", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("removed_at", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_members"),
        sa.UniqueConstraint("name", name="uq_members_name"),
        sa.UniqueConstraint("fingerprint", name="uq_members_fingerprint"),
    )
    op.create_table(
        "grants",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("granted_by", sa.String(36), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        _client_fk("grants"),
        # No cascade: a member is removed by setting removed_at, and its grants are deleted (and
        # the client keys rotated) first, so a member row with grants left is never deleted.
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name="fk_grants_member_id_members"),
        sa.PrimaryKeyConstraint("client_id", "key_version", "member_id", name="pk_grants"),
    )
    # "Which clients may this member open": the primary key only serves lookups by client.
    op.create_index("ix_grants_member", "grants", ["member_id"])
    op.create_table(
        "recovery_wraps",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        _client_fk("recovery_wraps"),
        sa.PrimaryKeyConstraint("client_id", "key_version", name="pk_recovery_wraps"),
    )
    # Plain ADD COLUMN on both engines: batch mode would copy clients on SQLite, and dropping
    # the old copy with foreign keys on would cascade into every record.
    op.add_column("clients", sa.Column("key_version", sa.Integer(), nullable=False, server_default="1"))
    for name, type_ in _AUDIT_COLUMNS:
        op.add_column("audit", sa.Column(name, type_, nullable=True))
    if _postgresql():
        for sql in (_STAMP, _UPDATE, _REFUSE, *_TRIGGERS):
            op.execute(sa.text(sql))


def downgrade() -> None:
    if _postgresql():
        for name in _TRIGGER_NAMES:
            op.execute(sa.text(f"DROP TRIGGER {name} ON audit"))
        for name in _FUNCTIONS:
            op.execute(sa.text(f"DROP FUNCTION {name}()"))
    # SQLite (3.35+) drops a plain column in place, as PostgreSQL does; see upgrade() on batch mode.
    for name, _type in reversed(_AUDIT_COLUMNS):
        op.drop_column("audit", name)
    op.drop_column("clients", "key_version")
    op.drop_table("recovery_wraps")
    op.drop_index("ix_grants_member", table_name="grants")
    op.drop_table("grants")
    op.drop_table("members")
