"""Alembic's environment: always online, on the connection the vault hands over."""

from __future__ import annotations

from alembic import context

from handover_vault.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead. PostgreSQL
    # alters in place (and runs the same migrations: DESIGN §12).
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
