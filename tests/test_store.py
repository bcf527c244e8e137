"""vault/store/engine.py: pragmas, transactions, files that are not (or no longer) vaults, schema versions
and the upgrade of an older vault."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from handover_vault.errors import Busy, IntegrityError, MigrationRequired, StorageError
from handover_vault.store import engine as store
from handover_vault.store import sqlite as sqlite_store
from tests.conftest import PASSPHRASE, run
from tests.helpers_security import digests, fork_run, mode, one, sql

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

GOLDEN = Path(__file__).parent / "golden" / "vault-0001.db"
GOLDEN_PASSPHRASE = "golden vault passphrase"
NOT_SQLITE = "Error: {path} is not a handover vault (not an SQLite database, or corrupt)\n"


def _pragmas(conn) -> dict[str, object]:
    return {
        name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
        for name in ("journal_mode", "synchronous", "foreign_keys", "secure_delete", "busy_timeout")
    }


@pytest.mark.sqlite_only
def test_every_connection_has_the_pragmas(v) -> None:
    expected = {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "secure_delete": 1,
        "busy_timeout": 30000,
    }
    with v.read() as s:
        assert _pragmas(s.connection()) == expected
    with v.write("checking pragmas") as s:
        assert _pragmas(s.connection()) == expected
    assert v.path.read_bytes()[18:20] == b"\x02\x02"  # WAL mode is recorded in the file header


@pytest.mark.sqlite_only
def test_busy_timeout_follows_the_environment(v, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOVER_BUSY_TIMEOUT", "2.5")
    st = sqlite_store.SqliteStore(v.path)
    try:
        with st.read() as s:
            assert s.connection().exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
    finally:
        st.close()
    for raw, seconds in (("nonsense", 30.0), ("0", 0.1), ("", 30.0)):
        monkeypatch.setenv("HANDOVER_BUSY_TIMEOUT", raw)
        assert store.busy_seconds() == seconds


@pytest.mark.sqlite_only
def test_write_transactions_take_the_write_lock_at_begin(v) -> None:
    """BEGIN IMMEDIATE: a writer holds the lock from its first statement, even a read."""
    other = sqlite3.connect(v.path, timeout=0, isolation_level=None)
    try:
        with v.write("holding the lock") as s:
            s.execute(text("SELECT count(*) FROM clients")).scalar()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at the end of the block
        other.execute("ROLLBACK")
        with v.read() as s:  # a read transaction does not block writers
            s.execute(text("SELECT count(*) FROM clients")).scalar()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_writer_that_waits_too_long_is_told_the_vault_is_busy(acme, vault_path: Path) -> None:
    holder = sqlite3.connect(vault_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        done = fork_run(
            ["client", "add", "beta", "--name", "Beta"],
            vault=vault_path,
            env={"HANDOVER_BUSY_TIMEOUT": "0.2"},
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (done.returncode, done.stderr) == (
        1,
        "Error: the vault is busy: another handover process held it too long while adding a client\n"
        "hint: try again; raise HANDOVER_BUSY_TIMEOUT (seconds) if this repeats\n",
    )
    assert [c.slug for c in acme.clients.list()] == ["acme"]


def test_a_failed_write_rolls_back_everything(acme) -> None:
    before = one(acme.location, "SELECT count(*) FROM records")
    with pytest.raises(RuntimeError), acme.write("half a write") as s:
        client = acme.clients.get("acme", s)
        acme.records.add(s, client, "doc", {"title": "half"}, "half")
        raise RuntimeError("crash in the middle")
    assert one(acme.location, "SELECT count(*) FROM records") == before


def test_foreign_keys_cascade_from_a_client(acme, tmp_path: Path) -> None:
    acme.docs.edit("acme", "Network overview", body="v2")
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 10)
    acme.attachments.add_file("acme", src)
    with acme.write("removing a client") as s:
        s.execute(text("DELETE FROM clients"))
    for table in ("records", "record_versions", "chunks"):
        assert one(acme.location, f"SELECT count(*) FROM {table}") == 0, table
    refused = pytest.raises(StorageError, match="refused the operation while orphan: IntegrityError")
    with refused, acme.write("orphan") as s:
        s.execute(
            text(
                "INSERT INTO records (id, client_id, kind, version, created_at, updated_at, envelope) "
                "VALUES ('r', 'no-such-client', 'doc', 1, '', '', :envelope)"
            ),
            {"envelope": b"\x00"},
        )


@pytest.mark.parametrize(
    ("message", "kind", "expected"),
    [
        (
            "database is locked",
            Busy,
            "the vault is busy: another handover process held it too long while saving",
        ),
        ("database or disk is full", StorageError, "the disk is full while saving; nothing was changed"),
        (
            "attempt to write a readonly database",
            StorageError,
            "the vault file is read-only while saving; nothing was changed",
        ),
        ("file is not a database", IntegrityError, "the vault file is corrupt or not a vault (saving)"),
        (
            "database disk image is malformed",
            IntegrityError,
            "the vault file is corrupt or not a vault (saving)",
        ),
        ("disk I/O error", StorageError, "an I/O error occurred while saving; nothing was changed"),
        (
            "UNIQUE constraint failed: clients.lookup 'Fw-s3cret'",
            StorageError,
            "the database refused the operation while saving: OperationalError",
        ),
    ],
)
def test_database_errors_are_wrapped_without_their_text(message: str, kind: type, expected: str) -> None:
    err = sqlite_store.wrap_db_error(sqlite3.OperationalError(message), "saving")
    assert type(err) is kind and err.message == expected
    assert "Fw-s3cret" not in str(err)


# --- files that are not vaults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", NOT_SQLITE),
        (b"random", NOT_SQLITE),
        (
            b"SQLite format 3\x00random",
            "Error: the vault file is corrupt or not a vault (reading the schema version)\n",
        ),
    ],
    ids=["zero-byte", "random-bytes", "sqlite-header-then-garbage"],
)
def test_file_that_is_not_a_vault(content: bytes, expected: str, vault_path: Path) -> None:
    data = content.replace(b"random", os.urandom(64 * 1024))
    vault_path.write_bytes(data)
    runner = run if content == b"random" else fork_run  # the check on the installed command
    done = runner(["client", "list"], vault=vault_path)
    assert (done.returncode, done.stdout, done.stderr) == (4, "", expected.format(path=vault_path))
    assert vault_path.read_bytes() == data  # never "repaired" or overwritten
    assert not [p for p in vault_path.parent.iterdir() if p.name.startswith("vault.db-")]


def test_sqlite_database_of_another_program(vault_path: Path) -> None:
    sql(vault_path, "CREATE TABLE notes (body TEXT)")
    done = fork_run(["client", "list"], vault=vault_path)
    assert (done.returncode, done.stderr) == (
        4,
        f"Error: {vault_path} is not a handover vault (no schema version)\n",
    )


def test_vault_without_its_format_marker(v, vault_path: Path) -> None:
    sql(vault_path, "DELETE FROM meta WHERE key = 'format'")
    done = fork_run(["client", "list"], vault=vault_path)
    assert (done.returncode, done.stderr) == (
        4,
        f"Error: {vault_path} is not a handover vault (format marker missing or unknown)\n",
    )


def test_directory_and_missing_file() -> None:
    with pytest.raises(Exception, match="is a directory, not a vault file"):
        sqlite_store.check_file(Path(__file__).parent)
    from handover_vault.errors import NotFound

    with pytest.raises(NotFound, match=r"^no vault at /nonexistent/vault\.db$"):
        sqlite_store.check_file(Path("/nonexistent/vault.db"))


# --- schema versions ----------------------------------------------------------------------------------


def test_vault_of_a_newer_program_is_refused_and_left_alone(v, vault_path: Path) -> None:
    v.close()
    sql(vault_path, "UPDATE alembic_version SET version_num = 'ffff'")
    before = digests(vault_path)
    done = run(["client", "list"], vault=vault_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        f"Error: this vault was written by a newer handover (schema ffff); this program knows up to "
        f"{store.SCHEMA_HEAD}\nhint: upgrade handover-vault to open it\n",
    )
    assert digests(vault_path) == before
    from handover_vault import open_vault

    with pytest.raises(MigrationRequired, match="newer handover"):
        open_vault(vault_path, passphrase=PASSPHRASE)


def test_older_vault_is_upgraded_only_once_unlocked(tmp_path: Path) -> None:
    """The first released schema opens, after a private backup; a wrong passphrase changes nothing."""
    path = tmp_path / "old.db"
    shutil.copyfile(GOLDEN, path)
    old_rev = one(path, "SELECT version_num FROM alembic_version")
    assert old_rev == "0001" != store.SCHEMA_HEAD
    before = digests(path)

    wrong = run(["client", "list"], vault=path, passphrase="not the golden passphrase")
    assert wrong.returncode == 3
    assert digests(path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["old.db"]  # no backup either

    done = run(["cred", "list", "acme", "--json"], vault=path, passphrase=GOLDEN_PASSPHRASE)
    assert done.returncode == 0, done.stderr
    assert '"Firewall admin"' in done.stdout
    assert one(path, "SELECT version_num FROM alembic_version") == store.SCHEMA_HEAD
    backup = tmp_path / f"old.db.pre-{store.SCHEMA_HEAD}.bak"
    assert mode(backup) == 0o600
    assert one(backup, "SELECT version_num FROM alembic_version") == "0001"
    # The upgraded vault is fully usable: audit chain intact, records and search work.
    assert fork_run(["audit", "verify"], vault=path, passphrase=GOLDEN_PASSPHRASE).returncode == 0
    hits = fork_run(["search", "overview", "--json"], vault=path, passphrase=GOLDEN_PASSPHRASE)
    assert '"doc"' in hits.stdout


def test_older_vault_opened_with_a_session_or_recovery_code_is_upgraded(tmp_path: Path) -> None:
    from handover_vault import open_vault, recover_vault

    code = (GOLDEN.parent / "vault-0001.db.recovery").read_text().strip()
    path = tmp_path / "old.db"
    shutil.copyfile(GOLDEN, path)
    with pytest.raises(Exception, match="recovery code is not valid"):
        recover_vault(path, "0000-0000-0000-0000-0000-0000-0000", "new passphrase")
    assert one(path, "SELECT version_num FROM alembic_version") == "0001"
    with recover_vault(path, code, "new passphrase") as v:
        assert one(path, "SELECT version_num FROM alembic_version") == store.SCHEMA_HEAD
        token = v.start_session(60)
    with open_vault(path, session_token=token) as v:
        assert v.docs.get("acme", "Network overview")[1].version == 2


def test_init_failure_leaves_no_file_behind(vault_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from handover_vault import init_vault
    from handover_vault.keys import hierarchy as keys

    def broken(*_a: object, **_kw: object) -> None:
        raise RuntimeError("disk pulled out")

    monkeypatch.setattr(keys, "make_slot", broken)
    with pytest.raises(RuntimeError):
        init_vault(vault_path, PASSPHRASE)
    assert not [p for p in vault_path.parent.iterdir() if p.name.startswith("vault.db")]
