"""The same Alembic migrations build the same schema on PostgreSQL as on SQLite (DESIGN §12).

Runs against a real throwaway PostgreSQL server (tests/pgserver.py, started as the postgres OS user).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

pytestmark = [pytest.mark.postgres, pytest.mark.interop]


def _upgrade(engine: sa.Engine) -> None:
    from alembic import command

    from handover_vault.migrations import alembic_config

    with engine.connect() as conn:
        command.upgrade(alembic_config(conn), "head")
        conn.commit()


def _schema(engine: sa.Engine) -> dict[str, Any]:
    """Tables, their columns (name, generic type, nullable), primary keys and indexed columns."""
    insp = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        columns = {
            c["name"]: (
                type(c["type"]._type_affinity()).__name__ if c["type"]._type_affinity else "?",
                c["nullable"],
            )
            for c in insp.get_columns(table)
        }
        pk = tuple(insp.get_pk_constraint(table)["constrained_columns"])
        # A unique constraint is an index on PostgreSQL and a constraint on SQLite: compare both as one set.
        indexes = sorted(
            {tuple(i["column_names"]) for i in insp.get_indexes(table)}
            | {tuple(u["column_names"]) for u in insp.get_unique_constraints(table)}
        )
        out[table] = (columns, pk, indexes)
    return out


def test_the_migrations_build_the_same_schema_on_both_engines(pg_url: str, tmp_path: Path) -> None:
    pg = sa.create_engine(pg_url)
    lite = sa.create_engine(f"sqlite:///{tmp_path / 'v.db'}")
    try:
        _upgrade(pg)
        _upgrade(lite)
        on_pg, on_lite = _schema(pg), _schema(lite)
        with pg.connect() as conn:
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    finally:
        pg.dispose()
        lite.dispose()
    from handover_vault.store.engine import SCHEMA_HEAD

    assert revision == SCHEMA_HEAD
    assert set(on_pg) == set(on_lite)
    for table in on_lite:
        assert on_pg[table] == on_lite[table], table


def test_the_server_runs_as_the_postgres_user_on_loopback_only(pg_server: Any) -> None:
    engine = sa.create_engine(pg_server.url("postgres"))
    try:
        with engine.connect() as conn:
            listen = conn.exec_driver_sql("SHOW listen_addresses").scalar_one()
            owner = conn.exec_driver_sql("SELECT current_setting('data_directory')").scalar_one()
    finally:
        engine.dispose()
    assert listen == "127.0.0.1"
    assert Path(owner).stat().st_uid != 0  # the data directory belongs to the postgres user, not root
