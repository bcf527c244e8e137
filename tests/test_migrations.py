"""Schema migrations: a golden vault of each released schema opens, is backed up and upgraded."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_PASSPHRASE = "golden vault passphrase"


def _revision(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        con.close()


def test_schema_head_matches_alembic() -> None:
    from alembic.script import ScriptDirectory

    from handover_vault.migrations import alembic_config
    from handover_vault.store.engine import KNOWN_REVISIONS, SCHEMA_HEAD

    script = ScriptDirectory.from_config(alembic_config(None))
    assert script.get_current_head() == SCHEMA_HEAD
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == list(KNOWN_REVISIONS)


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("vault-*.db")), ids=lambda p: p.name)
def test_golden_vault_upgrades_with_every_record_readable(golden: Path, tmp_path: Path) -> None:
    from handover_vault import open_vault
    from handover_vault.store.engine import SCHEMA_HEAD

    path = tmp_path / "old.db"
    shutil.copy(golden, path)
    old_rev = _revision(path)
    with open_vault(path, passphrase=GOLDEN_PASSPHRASE) as v:
        assert _revision(path) == SCHEMA_HEAD
        _, creds = v.creds.list("acme")
        assert creds[0].data["label"] == "Firewall admin"
        _, revealed = v.creds.history_revealed("acme", "Firewall admin")
        assert [r.data["secret"] for r in [*revealed]] == ["golden-secret-1"]
        assert v.creds.reveal("acme", "Firewall admin").data["secret"] == "golden-secret-2"
        _, docs = v.docs.list("acme")
        assert "fw1" in docs[0].data["body"]
        _rec, old = v.docs.history("acme", "Network overview")
        assert len(old) == 1
        _, atts = v.attachments.list("acme")
        with v.read() as s:
            client = v.clients.get("acme", s)
            assert b"".join(v.attachments.chunks(s, client, atts[0])) == b"golden attachment\n" * 1000
        # Records written before the search index existed are found after the upgrade.
        assert {h["kind"] for h in v.search("overview")} >= {"doc"}
        assert any(h["kind"] == "cred" for h in v.search("firew"))
        v.audit.verify()
    if old_rev != SCHEMA_HEAD:
        backups = list(tmp_path.glob("old.db.pre-*.bak"))
        assert len(backups) == 1
        assert backups[0].stat().st_mode & 0o777 == 0o600
        assert _revision(backups[0]) == old_rev


def test_vault_from_a_newer_program_is_refused(vault_path: Path, v) -> None:
    v.close()
    con = sqlite3.connect(vault_path)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
    done = run(["client", "list"], vault=vault_path)
    assert done.returncode == 1
    assert "written by a newer handover (schema 9999)" in done.stderr
    assert "hint: upgrade handover-vault to open it" in done.stderr


def test_schema_0006_goes_down_and_up_again_with_every_record_kept(acme, vault_path: Path) -> None:
    """0006 drops its columns in place: copying ``clients`` (batch mode) would cascade into records."""
    from alembic import command

    from handover_vault import open_vault
    from handover_vault.migrations import alembic_config
    from handover_vault.store.engine import SCHEMA_HEAD
    from handover_vault.store.sqlite import SqliteStore as Store
    from tests.conftest import PASSPHRASE

    acme.close()
    count = "SELECT (SELECT count(*) FROM clients), (SELECT count(*) FROM records)"
    con = sqlite3.connect(vault_path)
    before = con.execute(count).fetchone()
    con.close()
    store = Store(vault_path)
    try:
        with store._writer.connect() as conn:  # foreign keys on, as every vault connection
            conn.begin()
            command.downgrade(alembic_config(conn), "0005")
            conn.commit()
    finally:
        store.close()
    con = sqlite3.connect(vault_path)
    try:
        assert con.execute(count).fetchone() == before
        assert "key_version" not in {row[1] for row in con.execute("PRAGMA table_info(clients)")}
        assert not con.execute("SELECT name FROM sqlite_master WHERE name = 'members'").fetchall()
    finally:
        con.close()
    assert _revision(vault_path) == "0005"
    with open_vault(vault_path, passphrase=PASSPHRASE) as v:
        assert _revision(vault_path) == SCHEMA_HEAD
        assert v.creds.reveal("acme", "Firewall admin").data["secret"] == "Fw-s3cret-0001"
        v.audit.verify()
