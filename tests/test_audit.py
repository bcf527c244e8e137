"""The audit chain: every edit, deletion, reordering, insertion and truncation is caught (exit 4),
concurrent appends never fork it, and a disclosure whose entry cannot be written does not happen."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, ROOT, run

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

COLUMNS = ("seq", "at", "action", "client_id", "record_id", "scope", "detail", "mac", "commitment")


def sql(path: Path, *statements: str, params: tuple[Any, ...] = ()) -> None:
    con = sqlite3.connect(path)
    try:
        for st in statements:
            con.execute(st, params if "?" in st else ())
        con.commit()
    finally:
        con.close()


def rows(path: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    con.text_factory = bytes  # a tampered column may hold text that is not UTF-8
    try:
        return con.execute(f"SELECT {', '.join(COLUMNS)} FROM audit ORDER BY seq").fetchall()
    finally:
        con.close()


def reopen(path: Path):
    from handover_vault import open_vault

    return open_vault(path, passphrase=PASSPHRASE)


def verify_error(path: Path, checkpoint: dict[str, Any] | None = None) -> str:
    from handover_vault.errors import IntegrityError

    with reopen(path) as v, pytest.raises(IntegrityError) as exc:
        v.audit.verify(checkpoint)
    return str(exc.value)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per module (copied per test): vault, client and record entries, ids present and absent."""
    import os

    from handover_vault import init_vault

    path = tmp_path_factory.mktemp("audit") / "template.db"
    saved = os.environ.get("HANDOVER_KDF")
    os.environ["HANDOVER_KDF"] = "minimum"
    try:
        v, _ = init_vault(path, PASSPHRASE)
        with v:
            v.clients.add("acme", name="ACME Ltd")
            v.contacts.add("acme", name="Jane Doe", authorized=True)
            v.creds.add("acme", label="Firewall admin", username="admin", secret="Fw-s3cret-0001")
            v.creds.reveal("acme", "Firewall admin")
            v.new_recovery_code()
            v.creds.reveal("acme", "Firewall admin", purpose="totp")
            v.store.checkpoint()
    finally:
        if saved is None:
            os.environ.pop("HANDOVER_KDF", None)
        else:
            os.environ["HANDOVER_KDF"] = saved
    return path


@pytest.fixture
def logged(template: Path, vault_path: Path) -> Path:
    shutil.copy(template, vault_path)
    return vault_path


def _edit(column: str, seq: int, value: Any) -> str:
    return f"UPDATE audit SET {column} = {value} WHERE seq = {seq}"


def _changed_value(column: str, row: tuple[Any, ...]) -> str:
    """A different value of the same type for ``column`` of ``row``."""
    r = {
        c: v.decode() if isinstance(v, bytes) and c in ("action", "scope") else v
        for c, v in zip(COLUMNS, row, strict=True)
    }
    return {
        "seq": "seq + 1000",
        "at": "'2001-01-01T00:00:00Z'",
        "action": "'cred.add'" if r["action"] != "cred.add" else "'doc.add'",
        "client_id": "NULL" if r["client_id"] else "'" + "0" * 36 + "'",
        "record_id": "NULL" if r["record_id"] else "'" + "1" * 36 + "'",
        "scope": "'client'" if r["scope"] == "vault" else "'vault'",
        "detail": "CAST(substr(detail, 1, length(detail) - 1) || x'00' AS BLOB)",
        "mac": "randomblob(32)",
        "commitment": "randomblob(32)",
    }[column]


def test_an_untouched_log_verifies_and_lists(logged: Path) -> None:
    with reopen(logged) as v:
        head = v.audit.verify()
        events = v.audit.events()
    assert head.seq == len(rows(logged)) == events[-1].seq
    assert [e.seq for e in events] == list(range(1, head.seq + 1))
    assert events[0].action == "vault.init"
    reveals = [e for e in events if e.action == "cred.reveal"]
    assert [e.detail["purpose"] for e in reveals] == ["show", "totp"]  # type: ignore[index]


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_editing_any_column_of_any_entry_breaks_the_chain(logged: Path, column: str, where: str) -> None:
    all_rows = rows(logged)
    row = {"first": all_rows[0], "middle": all_rows[len(all_rows) // 2], "last": all_rows[-1]}[where]
    sql(logged, _edit(column, row[0], _changed_value(column, row)))
    assert rows(logged) != all_rows
    message = verify_error(logged)
    assert "audit log" in message or "audit entry" in message


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("at", "CAST(at AS BLOB)"),
        ("action", "CAST(action AS BLOB)"),
        ("detail", "hex(detail)"),
        ("mac", "hex(mac)"),
        ("mac", "substr(mac, 1, 31)"),
        ("client_id", "''"),
        ("record_id", "''"),
        ("scope", "'other'"),
    ],
)
def test_same_bytes_in_another_type_or_form_is_caught_not_a_crash(
    logged: Path, column: str, value: str
) -> None:
    seq = next(r[0] for r in rows(logged) if r[COLUMNS.index(column)] is None) if value == "''" else 2
    sql(logged, _edit(column, seq, value))
    assert f"audit log broken at entry {seq}" in verify_error(logged)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_deleting_any_entry_is_caught(logged: Path, where: str) -> None:
    all_rows = rows(logged)
    seq = {"first": 1, "middle": len(all_rows) // 2, "last": len(all_rows)}[where]
    sql(logged, f"DELETE FROM audit WHERE seq = {seq}")
    message = verify_error(logged)
    if where == "last":
        assert message == (
            f"the audit log ends at entry {seq - 1} but the vault recorded entry {seq} as its "
            "newest: entries were removed"
        )
    else:
        assert message.startswith(f"audit log broken at entry {seq}: entry missing or reordered")


def test_reordering_two_entries_is_caught(logged: Path) -> None:
    sql(
        logged,
        "UPDATE audit SET seq = -1 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = 4",
        "UPDATE audit SET seq = 4 WHERE seq = -1",
    )
    assert verify_error(logged).startswith("audit log broken at entry 3: its MAC does not match")


def test_swapping_every_field_but_seq_between_entries_is_caught(logged: Path) -> None:
    cols = [c for c in COLUMNS if c != "seq"]
    a, b = rows(logged)[2], rows(logged)[3]
    con = sqlite3.connect(logged)
    for seq, src in ((3, b), (4, a)):
        con.execute(f"UPDATE audit SET {', '.join(c + ' = ?' for c in cols)} WHERE seq = ?", (*src[1:], seq))
    con.commit()
    con.close()
    assert verify_error(logged).startswith("audit log broken at entry 3")


def test_inserting_an_entry_is_caught(logged: Path) -> None:
    n = len(rows(logged))
    # In the middle: shift the later entries up by one and copy an old entry into the hole.
    sql(
        logged,
        "UPDATE audit SET seq = seq + 1000 WHERE seq > 2",
        "UPDATE audit SET seq = seq - 999 WHERE seq > 1000",
        "INSERT INTO audit (seq, at, action, client_id, record_id, scope, detail, mac, commitment) "
        "SELECT 3, at, action, client_id, record_id, scope, detail, mac, commitment FROM audit WHERE seq = 2",
    )
    assert len(rows(logged)) == n + 1
    assert verify_error(logged).startswith("audit log broken at entry 3: its MAC does not match")


def test_appending_a_forged_entry_at_the_end_is_caught(logged: Path) -> None:
    n = len(rows(logged))
    sql(
        logged,
        "INSERT INTO audit (seq, at, action, client_id, record_id, scope, detail, mac, commitment) "
        f"SELECT {n + 1}, at, action, client_id, record_id, scope, detail, mac, commitment "
        f"FROM audit WHERE seq = {n}",
    )
    assert verify_error(logged).startswith(f"audit log broken at entry {n + 1}: its MAC does not match")


def test_wiping_the_log_and_its_head_is_caught_and_blocks_audited_actions(logged: Path) -> None:
    from handover_vault.errors import IntegrityError

    sql(logged, "DELETE FROM audit", "DELETE FROM meta WHERE key = 'audit_head'")
    assert (
        verify_error(logged) == "audit log broken at entry 1: the log is empty (every vault's log starts "
        "with its creation)"
    )
    with reopen(logged) as v, pytest.raises(IntegrityError, match="the audit log is empty"):
        v.creds.reveal("acme", "Firewall admin")


def test_a_tampered_head_record_is_caught_and_blocks_audited_actions(logged: Path) -> None:
    from handover_vault.errors import IntegrityError

    sql(
        logged,
        "UPDATE meta SET value = CAST(substr(value, 1, 41) || randomblob(32) AS BLOB) WHERE key = 'audit_head'",
    )
    assert verify_error(logged) == "the audit log's head record does not verify (tampered)"
    with reopen(logged) as v, pytest.raises(IntegrityError, match="head record does not verify"):
        v.creds.reveal("acme", "Firewall admin")


def test_a_removed_head_record_is_caught_and_blocks_audited_actions(logged: Path) -> None:
    from handover_vault.errors import IntegrityError

    n = len(rows(logged))
    sql(logged, f"DELETE FROM audit WHERE seq = {n}", "DELETE FROM meta WHERE key = 'audit_head'")
    assert verify_error(logged).startswith("the audit log's head record is missing")
    with reopen(logged) as v, pytest.raises(IntegrityError, match="head record is missing"):
        v.creds.reveal("acme", "Firewall admin")


def test_an_append_after_removing_the_newest_entry_leaves_the_gap_visible(logged: Path) -> None:
    n = len(rows(logged))
    from handover_vault.errors import IntegrityError

    sql(logged, f"DELETE FROM audit WHERE seq = {n}")
    # The head record still names the removed entry: every read refuses before anything is shown
    # (DESIGN §3a), and nothing is appended over the gap.
    with reopen(logged) as v, pytest.raises(IntegrityError, match=f"names entry {n}: entries were removed"):
        v.creds.reveal("acme", "Firewall admin")
    assert [r[0] for r in rows(logged)][-1:] == [n - 1]
    assert verify_error(logged).startswith(
        f"the audit log ends at entry {n - 1} but the vault recorded entry {n}"
    )


def test_tampered_entries_are_listed_not_fatal(logged: Path) -> None:
    sql(logged, _edit("mac", 2, "hex(mac)"), _edit("detail", 3, "randomblob(40)"))
    with reopen(logged) as v:
        events = {e.seq: e for e in v.audit.events()}
    assert events[2].detail == {"error": "entry altered (tampered)"}
    assert events[3].detail == {"error": "detail does not decrypt (tampered)"}


# --- checkpoints: truncation, rollback, rewritten history ----------------------------------------


def test_checkpoint_is_signed_and_catches_a_rollback_to_an_older_copy(
    acme, vault_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme.store.checkpoint()
    older = tmp_path / "older.db"
    shutil.copy(vault_path, older)  # the file as it was: a consistent, older vault
    acme.creds.reveal("acme", "Firewall admin")
    cp = acme.audit.checkpoint()
    assert set(cp) == {"format", "vault", "seq", "mac", "at", "signature"}
    assert acme.audit.verify(cp).seq == cp["seq"]
    acme.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{vault_path}{suffix}").unlink(missing_ok=True)
    shutil.copy(older, vault_path)
    # On this machine the out-of-file head refuses the older copy (tests/test_integrity_head.py);
    # on one that never saw the vault, only a checkpoint kept elsewhere shows the rollback.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "another-machine"))
    with reopen(vault_path) as v:
        v.audit.verify()  # alone, a rolled-back copy is self-consistent...
    assert verify_error(vault_path, cp) == (  # ...but not against the checkpoint kept elsewhere
        f"the audit log ends at entry {cp['seq'] - 1} but the checkpoint saw entry {cp['seq']}: "
        "entries were removed (truncation or rollback)"
    )
    with reopen(vault_path) as v:  # new entries on the old copy: the checkpointed entry differs
        v.creds.reveal("acme", "Firewall admin")
        v.creds.reveal("acme", "Firewall admin")
    assert (
        verify_error(vault_path, cp)
        == f"audit entry {cp['seq']} differs from the checkpoint: history rewritten"
    )


def test_removing_the_newest_entry_is_caught_against_an_earlier_checkpoint(acme, vault_path: Path) -> None:
    cp = acme.audit.checkpoint()
    acme.creds.reveal("acme", "Firewall admin")
    acme.close()
    n = len(rows(vault_path))
    sql(vault_path, f"DELETE FROM audit WHERE seq = {n}")
    verify_error(vault_path, cp)
    sql(vault_path, f"DELETE FROM audit WHERE seq >= {cp['seq']}")
    assert "checkpoint saw entry" in verify_error(vault_path, cp)


def test_checkpoint_forms_other_vaults_and_signatures(acme, tmp_path: Path) -> None:
    from handover_vault import init_vault
    from handover_vault.errors import IntegrityError, InvalidInput

    cp = acme.audit.checkpoint()
    forged = {**cp, "seq": cp["seq"] - 1}
    with pytest.raises(IntegrityError, match="signature is not valid"):
        acme.audit.verify(forged)
    for bad in (
        {},
        {**cp, "seq": "3"},
        {**cp, "mac": "zz"},
        {**cp, "signature": "%%"},
        {**cp, "format": "x"},
    ):
        with pytest.raises(InvalidInput):
            acme.audit.verify(bad)
    other, _ = init_vault(tmp_path / "other.db", PASSPHRASE)
    with other, pytest.raises(IntegrityError, match="made by another vault"):
        other.audit.verify(cp)


# --- serialised appends ------------------------------------------------------------------------

WORKER = """
import sys
from handover_vault import open_vault

path, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open_vault(path, passphrase=sys.argv[3]) as v:
        v.audit.append_now("test.concurrent", detail={"i": i})
"""


def test_four_processes_appending_at_once_never_fork_the_chain(acme) -> None:
    import os

    before = acme.audit.verify().seq
    vault_path = acme.location  # the file, or the team database's URL
    acme.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(vault_path), "6", PASSPHRASE],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    with reopen(vault_path) as v:
        assert v.audit.verify().seq == before + 24
        assert sum(e.action == "test.concurrent" for e in v.audit.events()) == 24


# --- fail closed -------------------------------------------------------------------------------

BLOCK = "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no'); END"


def test_a_reveal_whose_entry_cannot_be_written_does_not_happen(acme, vault_path: Path) -> None:
    from handover_vault.errors import VaultError

    acme.close()
    sql(vault_path, BLOCK)
    with reopen(vault_path) as v:
        with pytest.raises(VaultError) as exc:
            v.creds.reveal("acme", "Firewall admin")
        assert "Fw-s3cret-0001" not in str(exc.value)
        with pytest.raises(VaultError):
            v.creds.history_revealed("acme", "Firewall admin")


# --- a vault of the first schema (v1 entries, no head record) -------------------------------------


def test_first_release_entries_verify_and_new_entries_continue_the_chain(tmp_path: Path) -> None:
    from handover_vault import open_vault

    path = tmp_path / "old.db"
    shutil.copy(ROOT / "tests" / "golden" / "vault-0001.db", path)
    with open_vault(path, passphrase="golden vault passphrase") as v:
        old = v.audit.verify().seq
        v.creds.reveal("acme", "Firewall admin")
        assert v.audit.verify().seq == old + 1
    # A v1 entry after a v2 one is refused: the old layout is accepted only for old entries.
    con = sqlite3.connect(path)
    last = con.execute("SELECT max(seq) FROM audit").fetchone()[0]
    con.execute("DELETE FROM meta WHERE key = 'audit_head'")
    con.commit()
    con.close()
    with open_vault(path, passphrase="golden vault passphrase") as v:
        from handover_vault.errors import IntegrityError

        with pytest.raises(IntegrityError, match="head record is missing"):
            v.audit.verify()
        with pytest.raises(IntegrityError, match="head record is missing"):
            v.creds.reveal("acme", "Firewall admin")
    assert last == old + 1


# --- through the installed command -------------------------------------------------------------


@pytest.mark.parametrize("column", ["at", "client_id", "detail", "mac", None])
def test_cli_verify_exits_4_for_an_edited_column_or_a_deleted_newest_entry(
    logged: Path, column: str | None
) -> None:
    row = rows(logged)[3]
    if column is None:
        sql(logged, "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
    else:
        sql(logged, _edit(column, row[0], _changed_value(column, row)))
    done = run(["audit", "verify"], vault=logged)
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith("Error: ")
    assert "Traceback" not in done.stderr


def test_cli_checkpoint_then_verify_then_truncation(logged: Path, tmp_path: Path) -> None:
    cp_file = tmp_path / "cp.json"
    done = run(["audit", "checkpoint", "--out", str(cp_file)], vault=logged)
    assert done.returncode == 0, done.stderr
    assert cp_file.stat().st_mode & 0o777 == 0o600
    cp = json.loads(cp_file.read_text())
    printed = run(["audit", "checkpoint"], vault=logged)
    assert json.loads(printed.stdout)["seq"] == cp["seq"]
    ok = run(["audit", "verify", "--checkpoint", str(cp_file)], vault=logged)
    assert ok.returncode == 0
    assert ok.stdout.startswith(f"Audit log intact: {cp['seq']} entries")
    assert f"checkpoint at entry {cp['seq']} matches" in ok.stdout
    sql(logged, f"DELETE FROM audit WHERE seq = {cp['seq']}")
    bad = run(["audit", "verify", "--checkpoint", str(cp_file)], vault=logged)
    assert bad.returncode == 4
    assert "entries were removed (truncation or rollback)" in bad.stderr
    junk = tmp_path / "junk.json"
    junk.write_text("[1]")
    assert run(["audit", "verify", "--checkpoint", str(junk)], vault=logged).returncode == 1


def test_cli_audit_list_filters_and_shows_no_secret(logged: Path) -> None:
    done = run(["audit", "list", "--client", "acme", "--action", "cred.", "--json"], vault=logged)
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)
    assert {e["action"] for e in events} == {"cred.add", "cred.reveal"}
    everything = run(["audit", "list", "--json"], vault=logged).stdout
    assert "Fw-s3cret-0001" not in everything
