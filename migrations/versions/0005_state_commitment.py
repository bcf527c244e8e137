"""The state commitment (DESIGN §3a): per-client sums, and the commitment in every audit entry.

The commitment is keyed (an HKDF sub-key of the vault master key), so this migration only makes
the tables and the column; the first unlocked open computes every commitment once from the live
rows and writes an audit entry ``vault.integrity.commitment`` that carries it (vault/integrity/commitment.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _client_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["client_id"], ["clients.id"], name=f"fk_{table}_client_id_clients", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.add_column("audit", sa.Column("commitment", sa.LargeBinary(), nullable=True))
    op.create_table(
        "state_buckets",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("bucket", sa.String(8), nullable=False),
        sa.Column("total", sa.LargeBinary(), nullable=False),
        _client_fk("state_buckets"),
        sa.PrimaryKeyConstraint("client_id", "bucket", name="pk_state_buckets"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "state_clients",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(), nullable=False),
        sa.Column("records", sa.LargeBinary(), nullable=False),
        _client_fk("state_clients"),
        sa.PrimaryKeyConstraint("client_id", name="pk_state_clients"),
    )


def downgrade() -> None:
    op.drop_table("state_clients")
    op.drop_table("state_buckets")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("commitment")
    op.execute(sa.text("DELETE FROM meta WHERE key = 'state'"))
