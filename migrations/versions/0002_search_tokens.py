"""Search tokens: keyed word-prefix hashes so search stays fast at any vault size.

The tokens need the client keys, so the migration only creates the table; the first unlocked
search builds the index (meta key ``search_index``) for records written before it existed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_tokens",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name="fk_search_tokens_client_id_clients", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], name="fk_search_tokens_record_id_records", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", "token", "record_id", name="pk_search_tokens"),
    )
    op.create_index("ix_search_tokens_record", "search_tokens", ["record_id"])


def downgrade() -> None:
    op.drop_index("ix_search_tokens_record", table_name="search_tokens")
    op.drop_table("search_tokens")
