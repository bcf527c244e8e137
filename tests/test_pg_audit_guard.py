"""On PostgreSQL the audit log is append-only, whoever connects (schema 0006, DESIGN §12).

On a real throwaway server (tests/pgserver.py): the schema's triggers refuse UPDATE, DELETE and
TRUNCATE even to the superuser the fixture connects as, except a reseal of commitment and mac
inside the transaction that inserted the entry.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

pytestmark = [pytest.mark.postgres, pytest.mark.interop]

REFUSED = "23001"  # restrict_violation: the trigger's SQLSTATE (migrations/versions/0006_team.py)
INSERT = (
    "INSERT INTO audit (seq, at, action, client_id, record_id, scope, detail, mac, written_in) "
    "VALUES (%s, '2026-12-02T00:00:00Z', 'vault.init', NULL, NULL, 'vault', '\\x01', '\\x02', 7)"
)


def _migrate(url: str, revision: str = "head", down: bool = False) -> None:
    from alembic import command

    from handover_vault.migrations import alembic_config

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            (command.downgrade if down else command.upgrade)(alembic_config(conn), revision)
            conn.commit()
    finally:
        engine.dispose()


def _conninfo(url: str, user: str | None = None) -> str:
    """psycopg's URI for a SQLAlchemy URL, as ``user`` when given."""
    u = sa.engine.make_url(url).set(drivername="postgresql")
    return (u.set(username=user) if user else u).render_as_string(hide_password=False)


def _refused(conn: psycopg.Connection, sql: str, sqlstate: str) -> psycopg.Error:
    """Run ``sql`` in ``conn``'s open transaction, expect it to fail with ``sqlstate``, roll back."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql.encode())
    conn.rollback()
    assert caught.value.sqlstate == sqlstate, caught.value
    return caught.value


@pytest.fixture
def guarded(pg_url: str) -> Iterator[psycopg.Connection]:
    """A superuser connection to a database at head holding audit entry 1 (committed)."""
    _migrate(pg_url)
    with psycopg.connect(_conninfo(pg_url)) as conn:
        conn.execute(INSERT.encode(), (1,))
        conn.commit()
        yield conn


def test_the_connection_is_a_superuser(guarded: psycopg.Connection) -> None:
    assert guarded.execute(b"SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
        True,
    )


def test_the_server_stamps_the_inserting_transaction(guarded: psycopg.Connection) -> None:
    guarded.execute(INSERT.encode(), (2,))  # the writer claims written_in = 7
    (txid,) = guarded.execute(b"SELECT txid_current()").fetchone() or (None,)
    guarded.commit()
    stamped = guarded.execute(b"SELECT seq, written_in FROM audit ORDER BY seq").fetchall()
    assert stamped[1] == (2, txid)
    assert stamped[0][1] not in (None, 7, txid)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit SET commitment = '\\x03', mac = '\\x04' WHERE seq = 1",
        "UPDATE audit SET action = 'vault.forged' WHERE seq = 1",
        "UPDATE audit SET written_in = txid_current() WHERE seq = 1",
    ],
    ids=["reseal", "action", "written_in"],
)
def test_an_update_in_a_later_transaction_is_refused(guarded: psycopg.Connection, sql: str) -> None:
    refused = _refused(guarded, sql, REFUSED)
    assert refused.diag.message_primary == "the audit log is append-only: UPDATE of entry 1 refused"
    assert guarded.execute(b"SELECT action, commitment, mac FROM audit").fetchall() == [
        ("vault.init", None, b"\x02")
    ]


@pytest.mark.parametrize(
    ("sql", "op"),
    [
        ("DELETE FROM audit WHERE seq = 1", "DELETE"),
        ("DELETE FROM audit WHERE false", "DELETE"),  # refused per statement, even matching nothing
        ("TRUNCATE audit", "TRUNCATE"),
    ],
)
def test_delete_and_truncate_are_refused(guarded: psycopg.Connection, sql: str, op: str) -> None:
    refused = _refused(guarded, sql, REFUSED)
    assert refused.diag.message_primary == f"the audit log is append-only: {op} refused"
    assert guarded.execute(b"SELECT count(*) FROM audit").fetchone() == (1,)


def test_delete_is_refused_in_the_inserting_transaction_too(guarded: psycopg.Connection) -> None:
    guarded.execute(INSERT.encode(), (2,))
    _refused(guarded, "DELETE FROM audit WHERE seq = 2", REFUSED)
    assert guarded.execute(b"SELECT count(*) FROM audit").fetchone() == (1,)


def test_the_inserting_transaction_may_reseal_commitment_and_mac(guarded: psycopg.Connection) -> None:
    guarded.execute(INSERT.encode(), (2,))
    guarded.execute(b"SAVEPOINT s")  # a savepoint is still the same transaction (SQLAlchemy nests)
    guarded.execute(b"UPDATE audit SET commitment = '\\x03', mac = '\\x04' WHERE seq = 2")
    guarded.execute(b"RELEASE SAVEPOINT s")
    guarded.commit()
    assert guarded.execute(b"SELECT commitment, mac FROM audit WHERE seq = 2").fetchone() == (
        b"\x03",
        b"\x04",
    )


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit SET seq = 3 WHERE seq = 2",
        "UPDATE audit SET action = 'vault.forged', mac = '\\x04' WHERE seq = 2",
        "UPDATE audit SET written_in = written_in + 1 WHERE seq = 2",
        "UPDATE audit SET commitment = '\\x03' WHERE seq = 1",  # an older entry, not this one's
    ],
    ids=["seq", "action", "written_in", "older-entry"],
)
def test_the_inserting_transaction_may_change_nothing_else(guarded: psycopg.Connection, sql: str) -> None:
    guarded.execute(INSERT.encode(), (2,))
    _refused(guarded, sql, REFUSED)
    assert guarded.execute(b"SELECT seq FROM audit").fetchall() == [(1,)]


def test_downgrading_removes_the_guard(pg_url: str, guarded: psycopg.Connection) -> None:
    _migrate(pg_url, "0005", down=True)
    guarded.execute(b"DELETE FROM audit")
    guarded.commit()
    names = guarded.execute(
        b"SELECT count(*) FROM pg_proc WHERE proname IN "
        b"('audit_stamp_written_in', 'audit_refuse_update', 'audit_refuse_removal')"
    ).fetchone()
    assert names == (0,)
    _migrate(pg_url)
    guarded.execute(INSERT.encode(), (1,))
    guarded.commit()
    _refused(guarded, "DELETE FROM audit", REFUSED)
