"""Search tokens as postings: one row per token and block of record ids, not per token and record.

Schema 0003 wrote a row per (token, record): about 58 per credential, 580,000 for a 10,000-entry
import, and inserting them took longer than keepassxc-cli's whole import. A postings row holds up to
256 sorted record ids (16 raw bytes each) for one token and a range of ids, so the same import
writes about 32,000 rows and the file is about a third of the size (70 MB to 22 MB for it).

The tokens need the client keys, so this migration only replaces the table and clears the
``search_index`` flag; the first unlocked search rebuilds every record's postings.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _client_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["client_id"], ["clients.id"], name=f"fk_{table}_client_id_clients", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.drop_table("search_tokens")
    op.create_table(
        "search_postings",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("token", sa.LargeBinary(16), nullable=False),
        sa.Column("low", sa.LargeBinary(16), nullable=False),
        sa.Column("ids", sa.LargeBinary(), nullable=False),
        _client_fk("search_postings"),
        sa.PrimaryKeyConstraint("client_id", "token", "low", name="pk_search_postings"),
        sqlite_with_rowid=False,
    )
    op.execute(sa.text("DELETE FROM meta WHERE key = 'search_index'"))


def downgrade() -> None:
    op.drop_table("search_postings")
    op.create_table(
        "search_tokens",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("token", sa.LargeBinary(16), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        _client_fk("search_tokens"),
        sa.PrimaryKeyConstraint("client_id", "token", "record_id", name="pk_search_tokens"),
        sqlite_with_rowid=False,
    )
    op.execute(sa.text("DELETE FROM meta WHERE key = 'search_index'"))
