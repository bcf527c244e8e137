"""On PostgreSQL the audit log is append-only, whoever connects (schema 0006, DESIGN §12).

Two layers, each tested on a real throwaway server (tests/pgserver.py): the schema's triggers
refuse UPDATE, DELETE and TRUNCATE even to the superuser the fixture connects as, except a
reseal of commitment and mac inside the transaction that inserted the entry; and
docs/team-setup.sql gives the application role no privilege to try them at all.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors

from tests.conftest import ROOT
from tests.pgserver import PgServer

pytestmark = [pytest.mark.postgres, pytest.mark.interop]

SETUP_SQL = ROOT / "docs" / "team-setup.sql"
REFUSED = "23001"  # restrict_violation: the trigger's SQLSTATE (migrations/versions/0006_team.py)
DENIED = "42501"  # insufficient_privilege
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


# -- docs/team-setup.sql: the least-privilege application role --------------------------------


def _psql(server: PgServer, database: str) -> None:
    done = subprocess.run(
        [
            str(server.bin_dir / "psql"),
            "-X",  # no ~/.psqlrc
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-f",
            str(SETUP_SQL),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def app(pg_server: PgServer, pg_url: str) -> Iterator[psycopg.Connection]:
    """The documented procedure on a fresh database; yields a connection as ``handover_app``.

    The roles are the cluster's: they are dropped again (with what they own here) afterwards.
    """
    database = sa.engine.make_url(pg_url).database
    assert database
    try:
        _psql(pg_server, database)  # 1. roles and schema privileges
        _migrate(sa.engine.make_url(pg_url).set(username="handover_owner").render_as_string())  # 2.
        _psql(pg_server, database)  # 3. again, now that audit exists
        with psycopg.connect(_conninfo(pg_url, "handover_app")) as conn:
            yield conn
    finally:
        with psycopg.connect(_conninfo(pg_url), autocommit=True) as su:
            su.execute(b"DROP OWNED BY handover_app, handover_owner")
            su.execute(b"DROP ROLE IF EXISTS handover_app")
            su.execute(b"DROP ROLE IF EXISTS handover_owner")


MEMBER = (
    "INSERT INTO members (id, name, x25519, ed25519, fingerprint, admin, endorsed_by, endorsement, "
    "created_at) VALUES ('m1', 'alice', 'age1example', '\\x00', 'hv:0000', true, 'm1', '\\x00', "
    "'2026-12-02T00:00:00Z')"
)


def test_the_app_role_owns_nothing_and_is_no_superuser(app: psycopg.Connection) -> None:
    row = app.execute(
        b"SELECT rolsuper, rolcreaterole, rolcreatedb, rolinherit FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row == (False, False, False, False)
    owner = app.execute(b"SELECT tableowner FROM pg_tables WHERE tablename = 'audit'").fetchone()
    assert owner == ("handover_owner",)


def test_the_app_role_appends_and_reseals(app: psycopg.Connection) -> None:
    app.execute(MEMBER.encode())
    app.execute(b"UPDATE members SET removed_at = '2026-12-03T00:00:00Z' WHERE id = 'm1'")
    app.execute(INSERT.encode(), (1,))
    app.execute(b"UPDATE audit SET commitment = '\\x03', mac = '\\x04' WHERE seq = 1")
    app.commit()
    assert app.execute(b"SELECT seq, commitment FROM audit").fetchall() == [(1, b"\x03")]
    assert app.execute(b"SELECT version_num FROM alembic_version").fetchone() is not None


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit SET action = 'vault.forged' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 1",
        "TRUNCATE audit",
        "TRUNCATE members",  # no table is the application's to empty in one statement
        "ALTER TABLE audit DISABLE TRIGGER audit_no_delete",  # only the owner may
        "DROP TABLE audit",
        "UPDATE alembic_version SET version_num = '0001'",
        "CREATE TABLE planted (x int)",
    ],
    ids=[
        "update-action",
        "delete",
        "truncate",
        "truncate-members",
        "disable-trigger",
        "drop",
        "schema-version",
        "create",
    ],
)
def test_the_app_role_is_denied(app: psycopg.Connection, sql: str) -> None:
    app.execute(INSERT.encode(), (1,))
    app.commit()
    denied = _refused(app, sql, DENIED)
    assert isinstance(denied, errors.InsufficientPrivilege)
    assert app.execute(b"SELECT seq, action FROM audit").fetchall() == [(1, "vault.init")]


def test_the_app_role_meets_the_trigger_behind_its_column_grant(app: psycopg.Connection) -> None:
    app.execute(INSERT.encode(), (1,))
    app.commit()
    _refused(app, "UPDATE audit SET mac = '\\x05' WHERE seq = 1", REFUSED)


def test_the_setup_sets_no_password() -> None:
    text = SETUP_SQL.read_text(encoding="utf-8")
    statements = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    assert not any("PASSWORD" in line.upper() for line in statements)
