"""Search tokens in one compact B-tree: 16-byte tokens, WITHOUT ROWID, no second index by record.

Schema 0002 kept each token as 32 hex characters in a rowid table with two indexes (its primary
key and one by record), so every token was written into three B-trees, two of them in random order:
a 10,000-entry import spent most of its time there and the tokens were most of the file. Now the
primary key is the table, tokens are the raw first 16 bytes of the HMAC, and a record's tokens are
deleted by recomputing them (docs/performance.md gives the figures).

The tokens need the client keys, so this migration only recreates the table and clears the
``search_index`` flag; the first unlocked search rebuilds every record's tokens.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_search_tokens_record", table_name="search_tokens")
    op.drop_table("search_tokens")
    op.create_table(
        "search_tokens",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("token", sa.LargeBinary(16), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name="fk_search_tokens_client_id_clients", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", "token", "record_id", name="pk_search_tokens"),
        sqlite_with_rowid=False,
    )
    op.execute(sa.text("DELETE FROM meta WHERE key = 'search_index'"))


def downgrade() -> None:
    op.drop_table("search_tokens")
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
    op.execute(sa.text("DELETE FROM meta WHERE key = 'search_index'"))
