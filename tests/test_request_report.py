"""`request report` is built from the audit entries and the request records together, through the
installed command: deleting request rows (or putting back an older audit table) no longer gives a
clean "Requests 0 (none)"; the report shows each disagreement and the command exits 4."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, run

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file


def log(vault: Path, requester: str, decision: str = "denied") -> None:
    done = run(
        [
            "request",
            "log",
            "acme",
            "--requester",
            requester,
            "--channel",
            "email",
            "--verified-by",
            "mail from the address on file",
            "--item",
            "Firewall admin",
            "--decision",
            decision,
        ],
        vault,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def vault(acme, vault_target: Path | str) -> Path | str:
    acme.close()
    return vault_target


def sql(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path)
    try:
        for st in statements:
            con.execute(st)
        con.commit()
    finally:
        con.close()


def test_a_clean_report_says_both_sources_agree(vault: Path) -> None:
    log(vault, "Jane Doe")
    log(vault, "Jane Doe", "referred")
    done = run(["request", "report", "acme"], vault)
    assert done.returncode == 0, done.stderr
    assert "| Requests | 2 (1 denied, 1 referred) |" in done.stdout
    assert "| Sources | 2 in the audit log, 2 request records |" in done.stdout
    assert "WARNING" not in done.stdout


@pytest.mark.sqlite_only  # edits the file with sqlite3
def test_deleted_request_records_are_shown_from_the_log_and_exit_4(vault: Path, tmp_path: Path) -> None:
    log(vault, "Jane Doe")
    log(vault, "Mallory Caller")
    sql(vault, "DELETE FROM records WHERE kind = 'request'")
    done = run(["request", "report", "acme"], vault)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "Requests 0 (none)" not in done.stdout and "| Requests | 0" not in done.stdout
    assert "| Requests | 2 (2 denied) |" in done.stdout
    assert "| Sources | 2 in the audit log, 0 request records — DISAGREE for 2" in done.stdout
    assert "## WARNING: the audit log and the request records disagree" in done.stdout
    assert "its request record is missing (deleted after it was logged)" in done.stdout
    # What the entries kept: who asked, how, and the item (labelled from the live credential).
    assert "Mallory Caller (not a contact)" in done.stdout
    assert "Firewall admin (credential v1)" in done.stdout
    assert "the audit log and the request records disagree (2 requests)" in done.stderr
    # Written to files as well, then exit 4.
    out = tmp_path / "report.md"
    again = run(["request", "report", "acme", "--out", str(out)], vault)
    assert again.returncode == 4
    assert "DISAGREE" in out.read_text() and "DISAGREE" in (tmp_path / "report.html").read_text()


@pytest.mark.sqlite_only  # edits the file with sqlite3
def test_records_whose_entries_were_cut_away_with_an_older_head_exit_4(vault: Path, tmp_path: Path) -> None:
    """The other way round: the audit table and its head record put back from an older copy of the
    file (the log then verifies on its own), the request records kept."""
    older = tmp_path / "older.db"
    shutil.copyfile(vault, older)
    log(vault, "Jane Doe")
    sql(
        vault,
        f"ATTACH DATABASE '{older}' AS old",
        "DELETE FROM audit",
        "INSERT INTO audit SELECT * FROM old.audit",
        "UPDATE meta SET value = (SELECT value FROM old.meta WHERE key = 'audit_head') WHERE key = 'audit_head'",
    )
    # On this machine the out-of-file head refuses the file at once (DESIGN §3a); on one that never
    # saw the vault, nothing inside the log tells, and the report's cross-check does.
    here = run(["audit", "verify"], vault)
    assert here.returncode == 4 and "older than the last state seen on this machine" in here.stderr
    elsewhere = {"XDG_STATE_HOME": str(tmp_path / "another-machine")}
    assert run(["audit", "verify"], vault, env=elsewhere).returncode == 0  # nothing inside the log tells
    done = run(["request", "report", "acme"], vault, env=elsewhere)
    assert done.returncode == 4, done.stdout + done.stderr
    # The state commitment of the log's newest entry is older than the records: refused before any
    # report is made (DESIGN §3a), so the report's own cross-check is not reached.
    assert done.stdout == ""
    assert "does not match the state its audit log recorded" in done.stderr


def test_a_request_changed_after_it_was_logged_is_reported_and_exit_4(vault: Path) -> None:
    log(vault, "Jane Doe")
    from handover_vault import open_vault

    with open_vault(vault, passphrase=PASSPHRASE) as v, v.write("test: rewrite") as s:
        client = v.clients.get("acme", s)
        rec = v.records.list(s, client, "request")[0]
        v.records.update_in_place(s, client, rec, {**rec.data, "verified_by": "passport"})
    done = run(["request", "report", "acme"], vault)
    assert done.returncode == 4
    assert "the request record does not match its audit entry" in done.stdout
