"""A vault in PostgreSQL (DESIGN §12): what the server holds, how writers meet, what errors say.

Every test runs the installed command (a real subprocess) or the library against the session's
throwaway PostgreSQL server (tests/pgserver.py), and looks at the server's side with the bare
driver, ``pg_dump`` and the cluster's own files on disk.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PASSPHRASE, run
from tests.helpers_security import _read_if_there, find_plaintext, one, recovery_code, sql
from tests.pgserver import PgServer
from tests.test_leaks import PLANTED, SECRET, SLUG, _record

pytestmark = [pytest.mark.postgres, pytest.mark.interop]


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _cluster_files(pg: PgServer) -> list[Path]:
    """Every file of the cluster that can hold row data: table and index files, the WAL."""
    pg.execute("CHECKPOINT")  # what is in shared buffers is written to the table files
    return [p for p in pg.data.rglob("*") if p.is_file() and p.suffix not in (".conf", ".pid", ".opts")]


def test_the_server_holds_nothing_in_clear_not_in_a_dump_nor_its_files_nor_its_wal(
    pg_server: PgServer, pg_url: str, tmp_path: Path
) -> None:
    init = run(["init"], vault=pg_url)
    assert init.returncode == 0, init.stderr
    code = recovery_code(init.stdout)
    _record(pg_url, tmp_path)
    needles = [*PLANTED, code, code.replace("-", "")]
    dump = tmp_path / "team.sql"
    pg_server.dump(pg_url, dump, "--no-owner")
    assert dump.stat().st_size > 20_000  # the whole vault is in it
    assert find_plaintext([dump], needles) == []
    # The server's own files: every table, index and WAL segment of the cluster (the dump above
    # reads through SQL; these are the bytes an administrator or a stolen disk has).
    files = _cluster_files(pg_server)
    assert any("pg_wal" in p.parts for p in files)
    hits = find_plaintext(files, needles)
    assert hits == [], hits
    # Not vacuous: a value stored in clear in the same cluster is found by the same search.
    with psycopg.connect(_conninfo(pg_url), autocommit=True) as con:
        con.execute("CREATE TABLE control (v text)")
        con.execute("INSERT INTO control VALUES (%s)", (SECRET,))
    assert SECRET in {n for _f, n in find_plaintext(_cluster_files(pg_server), [SECRET])}


@pytest.fixture
def team(pg_url: str) -> str:
    """A vault in a database holding one client with a credential."""
    _ok(run(["init"], vault=pg_url))
    _ok(run(["client", "add", "acme", "--name", "ACME Ltd", "--contract-start", "2024-01-01"], vault=pg_url))
    _ok(
        run(
            ["cred", "add", "acme", "Firewall admin", "--username", "admin"],
            vault=pg_url,
            input="Fw-s3cret\n",
        )
    )
    return pg_url


def test_a_superusers_edit_of_an_audit_entry_is_named_by_audit_verify(team: str) -> None:
    assert "Audit log intact" in _ok(run(["audit", "verify"], vault=team))
    seq = one(team, "SELECT max(seq) FROM audit")
    # The trigger refuses the edit even to the superuser...
    with pytest.raises(psycopg.errors.RestrictViolation):
        sql(team, "UPDATE audit SET action = 'cred.add' WHERE seq = ?", (seq - 1,))
    # ...who can switch it off: what the log's own MACs must then catch.
    sql(team, "ALTER TABLE audit DISABLE TRIGGER USER")
    sql(team, "UPDATE audit SET at = '2020-01-01T00:00:00Z' WHERE seq = ?", (seq - 1,))
    sql(team, "ALTER TABLE audit ENABLE TRIGGER USER")
    done = run(["audit", "verify"], vault=team)
    assert done.returncode == 4
    assert f"entry {seq - 1}" in done.stderr


def test_a_writer_holds_the_head_row_from_its_first_statement(team: str) -> None:
    """The head row is locked before anything else: a second writer cannot start meanwhile."""
    from handover_vault import open_vault

    with open_vault(team, passphrase=PASSPHRASE) as v, v.write("holding the lock") as s:
        s.connection()
        with psycopg.connect(_conninfo(team)) as other:
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("SELECT key FROM meta WHERE key = 'audit_head' FOR UPDATE NOWAIT")
            other.rollback()
            # A reader is not blocked by the writer.
            assert other.execute("SELECT count(*) FROM audit").fetchone()[0] > 0


def test_a_writer_that_waits_too_long_is_told_the_database_is_busy(team: str) -> None:
    holder = psycopg.connect(_conninfo(team))
    holder.execute("SELECT key FROM meta WHERE key = 'audit_head' FOR UPDATE")
    try:
        done = run(
            ["client", "add", "beta", "--name", "Beta"], vault=team, env={"HANDOVER_BUSY_TIMEOUT": "0.5"}
        )
    finally:
        holder.rollback()
        holder.close()
    assert (done.returncode, done.stderr) == (
        1,
        "Error: the team database is busy: another writer held it too long while adding a client\n"
        "hint: try again; raise HANDOVER_BUSY_TIMEOUT (seconds) if this repeats\n",
    )
    assert "beta" not in _ok(run(["client", "list"], vault=team))
    _ok(run(["client", "add", "beta", "--name", "Beta"], vault=team))


def test_a_waiting_writer_goes_on_once_the_other_commits(team: str) -> None:
    holder = psycopg.connect(_conninfo(team))
    holder.execute("SELECT key FROM meta WHERE key = 'audit_head' FOR UPDATE")
    result: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(
        target=lambda: result.append(run(["client", "add", "beta", "--name", "Beta"], vault=team))
    )
    worker.start()
    time.sleep(1.5)
    assert worker.is_alive()  # waiting on the row, not failing
    holder.rollback()
    holder.close()
    worker.join(60)
    assert result and result[0].returncode == 0, result[0].stderr if result else "no result"


def test_what_the_errors_say_and_never_say(pg_server: PgServer, pg_url: str) -> None:
    empty = run(["client", "list"], vault=pg_url)
    assert (empty.returncode, empty.stderr) == (
        1,
        f"Error: no handover vault in the database {pg_url}\nhint: create one with: handover --db {pg_url} init\n",
    )
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_db"
    done = run(["client", "list"], vault=missing)
    assert done.returncode == 1 and "there is no database 'no_such_db'" in done.stderr
    closed = run(["client", "list"], vault=f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/x")
    assert closed.returncode == 1 and "cannot reach the database server 127.0.0.1:" in closed.stderr
    # A password on the command line is refused before anything connects, and never echoed.
    with_password = pg_url.replace("postgres@", "postgres:Hunter2-canary@")
    argv = run(["--db", with_password, "client", "list"], vault=None)
    assert argv.returncode == 1 and "holds a password" in argv.stderr
    assert "Hunter2-canary" not in argv.stderr + argv.stdout
    # From the environment it is used, and kept out of every message.
    pg_server.execute("ALTER ROLE postgres PASSWORD 'Hunter2-canary'")
    env_pw = run(["client", "list"], vault=with_password)
    assert "Hunter2-canary" not in env_pw.stderr + env_pw.stdout
    assert "no handover vault in the database postgresql+psycopg://postgres@" in env_pw.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_backup_of_the_database_is_a_vault_file_that_opens_alone(team: str, tmp_path: Path) -> None:
    dest = tmp_path / "team-copy.db"
    _ok(run(["backup", str(dest)], vault=team))
    assert dest.stat().st_mode & 0o777 == 0o600
    shown = _ok(run(["cred", "show", "acme", "Firewall admin", "--reveal"], vault=dest))
    assert "Fw-s3cret" in shown
    assert "vault intact" in _ok(run(["verify"], vault=dest))
    listed = json.loads(_ok(run(["--json", "audit", "list"], vault=dest)))
    assert any(e["action"] == "vault.backup" for e in listed)


def test_forget_rewrites_the_tables_and_says_what_the_server_keeps(
    pg_server: PgServer, team: str, tmp_path: Path
) -> None:
    _ok(
        run(
            [
                "client",
                "add",
                "old",
                "--name",
                "Old Co",
                "--contract-start",
                "2020-01-01",
                "--notice-days",
                "30",
            ],
            vault=team,
        )
    )
    _ok(run(["doc", "add", "old", "Old notes"], vault=team, input="old client's network\n"))
    _ok(run(["end", "old", "--notice-given", "2025-01-10", "--reason", "Retiring"], vault=team))
    old_id = one(
        team, "SELECT id FROM clients WHERE id NOT IN (SELECT client_id FROM records WHERE kind = 'cred')"
    )
    envelopes = [
        bytes(r[0])[-40:] for r in sql(team, "SELECT envelope FROM records WHERE client_id = ?", (old_id,))
    ]
    assert envelopes
    tables = [p for p in _cluster_files(pg_server) if "base" in p.parts]
    assert any(e in (_read_if_there(p) or b"") for p in tables for e in envelopes)  # on disk before
    cert = tmp_path / "cert.md"
    done = run(["forget", "old", "--yes", "--certificate", str(cert)], vault=team)
    assert done.returncode == 0, done.stderr
    assert "note: on the database server, the server's write-ahead log (pg_wal)" in done.stderr
    text = cert.read_text()
    assert "rewritten (VACUUM FULL)" in text and "On the database server, every base backup" in text
    tables = [p for p in _cluster_files(pg_server) if "base" in p.parts]
    assert not any(e in (_read_if_there(p) or b"") for p in tables for e in envelopes)  # gone from the tables
    assert "vault intact" in _ok(run(["verify"], vault=team))
    assert SLUG  # the leak test's client is not involved here
