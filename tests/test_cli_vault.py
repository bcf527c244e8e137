"""The vault lifecycle through the command with no TTY: init, passphrase sources, wrong passphrase,
passwd, recover and backup. Exit codes and the exact error text are asserted.

``run`` is the installed ``handover`` in a fresh interpreter (the issue's end-to-end checks);
``fork_run`` is the same entry point in a forked child, for breadth at a tenth of the cost.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import PASSPHRASE, run
from tests.helpers_security import digests, fork_run, held_open, mode, one, recovery_code, sql

WRONG = "Error: wrong passphrase\nhint: check the passphrase source (prompt, file or command)\n"
NO_SOURCE = (
    "Error: no passphrase: no terminal to prompt on and no passphrase source set\n"
    "hint: set HANDOVER_PASSPHRASE_FILE or HANDOVER_PASSPHRASE_COMMAND, or unlock a session first\n"
)


def _works(path: Path, passphrase: str | None = PASSPHRASE, env: dict[str, str] | None = None) -> None:
    done = fork_run(["client", "list", "--json"], vault=path, passphrase=passphrase, env=env)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)


def _refused(
    path: Path, passphrase: str | None, env: dict[str, str] | None = None, real: bool = False
) -> None:
    done = (run if real else fork_run)(["client", "list"], vault=path, passphrase=passphrase, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (3, "", WRONG)


# --- init -------------------------------------------------------------------------------------------


def test_init_prints_the_recovery_code_once_and_makes_a_private_file(vault_path: Path) -> None:
    done = run(["init"], vault=vault_path, passphrase=None, env={"HANDOVER_NEW_PASSPHRASE": PASSPHRASE})
    assert done.returncode == 0, done.stderr
    code = recovery_code(done.stdout)
    lines = done.stdout.splitlines()
    assert lines[0] == f"Created vault {vault_path}"
    assert lines[1].startswith("Vault fingerprint: hv:")
    assert lines[3:] == [
        "Recovery code (shown once; write it down and keep it offline):",
        f"    {code}",
        "It sets a new passphrase with `handover recover` if the passphrase is lost.",
        "",
        "Next:",
        '  handover profile set --name "Your Name" --company "Your Company" --email you@example.net \\',
        '      --phone "+44 20 7946 0000"     # who signs letters, bundles and certificates',
        '  handover client add SLUG --name "Client Ltd"',
    ]
    assert done.stderr == ""
    assert mode(vault_path) == 0o600
    # The code is shown once: nothing else prints it again.
    again = run(["client", "list"], vault=vault_path)
    assert again.returncode == 0, again.stderr
    assert code not in again.stdout + again.stderr


def test_init_refuses_to_overwrite(vault_path: Path) -> None:
    assert fork_run(["init"], vault=vault_path).returncode == 0
    before = digests(vault_path)
    done = fork_run(["init"], vault=vault_path, passphrase="another passphrase")
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        f"Error: a vault already exists at {vault_path}; refusing to overwrite it\n",
    )
    assert digests(vault_path) == before


def test_init_refuses_any_existing_file(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a vault")
    done = fork_run(["init"], vault=notes)
    assert (done.returncode, done.stderr) == (
        1,
        f"Error: a vault already exists at {notes}; refusing to overwrite it\n",
    )
    assert notes.read_text() == "not a vault"


def test_init_with_no_terminal_and_no_source_is_a_clear_error(vault_path: Path) -> None:
    done = fork_run(["init"], vault=vault_path, passphrase=None)
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        "Error: no terminal to prompt for the new vault passphrase\nhint: set HANDOVER_NEW_PASSPHRASE\n",
    )
    assert not vault_path.exists()


# --- unlocking --------------------------------------------------------------------------------------


def test_no_terminal_and_no_source_is_a_clear_error(v, vault_path: Path) -> None:
    done = fork_run(["client", "list"], vault=vault_path, passphrase=None)
    assert (done.returncode, done.stdout, done.stderr) == (3, "", NO_SOURCE)


def test_missing_vault_is_named_before_asking_for_a_passphrase(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vault.db"
    done = fork_run(["client", "list"], vault=missing, passphrase=None)
    assert (done.returncode, done.stderr) == (
        1,
        f"Error: no vault at {missing}\nhint: create one with: handover init\n",
    )
    assert not missing.parent.exists()


def test_wrong_passphrase_changes_no_byte(acme, vault_path: Path) -> None:
    acme.close()
    before = digests(vault_path)
    assert before["-wal"] == "absent"  # closed cleanly: the WAL was folded in and removed
    _refused(vault_path, "Correct horse battery staple", real=True)
    assert digests(vault_path) == before


def test_wrong_passphrase_changes_no_byte_while_another_process_has_the_vault_open(
    acme,
    vault_path: Path,
) -> None:
    acme.close()
    with held_open(vault_path):
        added = fork_run(["doc", "add", "acme", "Printers", "--file", os.devnull], vault=vault_path)
        assert added.returncode == 0, added.stderr
        before = digests(vault_path)
        assert before["-wal"] != "absent"  # the write sits in the WAL, pinned by the other reader
        _refused(vault_path, PASSPHRASE + " ", real=True)
        after = digests(vault_path)
    # The -shm is SQLite's shared-memory index: readers update their read marks there, by design.
    assert {k: after[k] for k in ("db", "-wal")} == {k: before[k] for k in ("db", "-wal")}


def test_passphrase_file_source(v, vault_path: Path, tmp_path: Path) -> None:
    good, bad = tmp_path / "pass", tmp_path / "wrong"
    good.write_text(PASSPHRASE + "\n")
    bad.write_text("wrong\n")
    _works(vault_path, passphrase=None, env={"HANDOVER_PASSPHRASE_FILE": str(good)})
    # First found wins: the file is used before HANDOVER_PASSPHRASE, whichever is right.
    _works(vault_path, passphrase="wrong", env={"HANDOVER_PASSPHRASE_FILE": str(good)})
    _refused(vault_path, PASSPHRASE, env={"HANDOVER_PASSPHRASE_FILE": str(bad)})
    missing = tmp_path / "missing"
    done = fork_run(["client", "list"], vault=vault_path, env={"HANDOVER_PASSPHRASE_FILE": str(missing)})
    assert (done.returncode, done.stderr) == (
        1,
        f"Error: cannot read HANDOVER_PASSPHRASE_FILE ({missing}): there is no such file\n"
        "hint: point HANDOVER_PASSPHRASE_FILE at the file that holds the passphrase (one line), or unset it\n",
    )


def test_passphrase_command_source(v, vault_path: Path, tmp_path: Path) -> None:
    seen_env = tmp_path / "env.json"
    script = tmp_path / "pass.py"
    script.write_text(
        "import json, os, sys\n"
        f"json.dump(dict(os.environ), open({str(seen_env)!r}, 'w'))\n"
        f"print({PASSPHRASE!r})\n"
        "sys.exit(int(os.environ.get('FAIL_WITH', '0')))\n"
    )
    command = f"{sys.executable} {script}"
    # Set next to HANDOVER_PASSPHRASE: the command comes first in the order, and is used.
    _works(vault_path, passphrase="wrong", env={"HANDOVER_PASSPHRASE_COMMAND": command})
    child_env = json.loads(seen_env.read_text())
    assert "HANDOVER_PASSPHRASE" not in child_env  # secrets are not passed down to child processes
    assert not any(value == "wrong" for value in child_env.values())
    done = fork_run(
        ["client", "list"], vault=vault_path, env={"HANDOVER_PASSPHRASE_COMMAND": command, "FAIL_WITH": "7"}
    )
    assert (done.returncode, done.stderr) == (3, "Error: HANDOVER_PASSPHRASE_COMMAND exited with status 7\n")
    done = fork_run(
        ["client", "list"],
        vault=vault_path,
        env={"HANDOVER_PASSPHRASE_COMMAND": str(tmp_path / "no-such-program")},
    )
    assert (done.returncode, done.stderr) == (
        3,
        "Error: HANDOVER_PASSPHRASE_COMMAND could not run: there is no such file\n"
        "hint: set it to a command that prints the passphrase, e.g. pass show handover\n",
    )


# --- passwd and recover -----------------------------------------------------------------------------


def test_passwd_then_the_old_passphrase_fails_and_the_new_works(acme, vault_path: Path) -> None:
    envelopes = sql(vault_path, "SELECT id, envelope FROM records ORDER BY id")
    done = run(["passwd"], vault=vault_path, env={"HANDOVER_NEW_PASSPHRASE": "tr0ub4dor & 3"})
    assert (done.returncode, done.stdout) == (
        0,
        "Passphrase changed. Sessions already open stay valid until they expire or `handover lock`.\n",
    )
    _refused(vault_path, PASSPHRASE, real=True)
    assert sql(vault_path, "SELECT id, envelope FROM records ORDER BY id") == envelopes  # re-wrap only
    listed = run(["audit", "list", "--json"], vault=vault_path, passphrase="tr0ub4dor & 3")
    assert listed.returncode == 0, listed.stderr
    assert [e["action"] for e in json.loads(listed.stdout)][-1] == "vault.passwd"
    assert "tr0ub4dor" not in listed.stdout


def test_passwd_without_a_new_passphrase_source_changes_nothing(v, vault_path: Path) -> None:
    slots = sql(vault_path, "SELECT * FROM key_slots")
    done = fork_run(["passwd"], vault=vault_path)
    assert (done.returncode, done.stderr) == (
        1,
        "Error: no terminal to prompt for the new passphrase\nhint: set HANDOVER_NEW_PASSPHRASE\n",
    )
    assert sql(vault_path, "SELECT * FROM key_slots") == slots
    wrong = fork_run(
        ["passwd"], vault=vault_path, passphrase="wrong", env={"HANDOVER_NEW_PASSPHRASE": "x y z"}
    )
    assert (wrong.returncode, wrong.stderr) == (3, WRONG)
    assert sql(vault_path, "SELECT * FROM key_slots") == slots


def test_recover_with_the_code_from_init(vault_path: Path) -> None:
    init = fork_run(["init"], vault=vault_path)
    assert init.returncode == 0, init.stderr
    code = recovery_code(init.stdout)
    typed = code.lower().replace("-", " ")
    done = run(
        ["recover"],
        vault=vault_path,
        passphrase=None,
        env={"HANDOVER_RECOVERY_CODE": typed, "HANDOVER_NEW_PASSPHRASE": "recovered passphrase"},
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "New passphrase set. The recovery code stays valid; keep it safe.\n",
        "",
    )
    _refused(vault_path, PASSPHRASE)
    _works(vault_path, "recovered passphrase")
    listed = fork_run(["audit", "list", "--json"], vault=vault_path, passphrase="recovered passphrase")
    assert [e["action"] for e in json.loads(listed.stdout)][-1] == "vault.recover"
    assert code not in listed.stdout and code.replace("-", "") not in listed.stdout


def test_recover_refusals(v, vault_path: Path) -> None:
    slots = sql(vault_path, "SELECT * FROM key_slots")
    wrong = fork_run(
        ["recover"],
        vault=vault_path,
        passphrase=None,
        env={
            "HANDOVER_RECOVERY_CODE": "0000-0000-0000-0000-0000-0000-0000",
            "HANDOVER_NEW_PASSPHRASE": "x y z",
        },
    )
    assert (wrong.returncode, wrong.stdout, wrong.stderr) == (
        3,
        "",
        "Error: the recovery code is not valid\n",
    )
    no_code = fork_run(
        ["recover"], vault=vault_path, passphrase=None, env={"HANDOVER_NEW_PASSPHRASE": "x y z"}
    )
    assert (no_code.returncode, no_code.stderr) == (
        1,
        "Error: no terminal to prompt for the recovery code\nhint: set HANDOVER_RECOVERY_CODE\n",
    )
    assert sql(vault_path, "SELECT * FROM key_slots") == slots


# --- backup -----------------------------------------------------------------------------------------


def test_backup_is_private_complete_and_verifiable(acme, vault_path: Path, tmp_path: Path) -> None:
    acme.close()
    dest = tmp_path / "backups" / "acme-vault.bak"
    dest.parent.mkdir(mode=0o755)
    with held_open(vault_path):  # the latest write is still in the WAL: the backup must include it
        assert (
            fork_run(["doc", "add", "acme", "Printers", "--file", os.devnull], vault=vault_path).returncode
            == 0
        )
        done = fork_run(["backup", str(dest)], vault=vault_path)
    assert (done.returncode, done.stdout) == (
        0,
        f"Backed up to {dest}. It opens with the same passphrase; keep it as safe as the vault.\n",
    )
    assert mode(dest) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["acme-vault.bak"]  # no temp file left
    # A standalone file in rollback-journal mode (header bytes 18-19 are 1, not WAL's 2): nothing of
    # it lives in a -wal that could be left behind when it is copied elsewhere.
    assert dest.read_bytes()[18:20] == b"\x01\x01"
    docs = fork_run(["doc", "list", "acme", "--json"], vault=dest)
    assert {d["title"] for d in json.loads(docs.stdout)} == {"Network overview", "Printers"}
    verified = fork_run(["audit", "verify"], vault=dest)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("Audit log intact: ")
    _refused(dest, "wrong")


def test_backup_refuses_to_overwrite_and_leaves_no_trace(v, vault_path: Path, tmp_path: Path) -> None:
    dest = tmp_path / "existing.bak"
    dest.write_text("keep me")
    audit_before = one(vault_path, "SELECT count(*) FROM audit")
    done = fork_run(["backup", str(dest)], vault=vault_path)
    assert (done.returncode, done.stderr) == (
        1,
        f"Error: {dest} already exists; choose another backup file name\n",
    )
    assert dest.read_text() == "keep me"
    # No backup happened, so the audit log must not claim one.
    assert one(vault_path, "SELECT count(*) FROM audit") == audit_before
    itself = fork_run(["backup", str(vault_path)], vault=vault_path)
    assert (itself.returncode, itself.stderr) == (1, "Error: the backup file must not be the vault itself\n")


def test_vault_files_are_private_while_in_use(acme, vault_path: Path) -> None:
    acme.close()
    with held_open(vault_path):
        added = fork_run(["doc", "add", "acme", "Printers", "--file", os.devnull], vault=vault_path)
        assert added.returncode == 0, added.stderr
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{vault_path}{suffix}")
            assert path.exists()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, suffix


def test_commands_run_without_the_tls_module() -> None:
    """handover never opens a network connection: the ssl module SQLAlchemy's asyncio would load is
    kept out (cli.fast.no_tls), and SQLAlchemy, asyncio and a vault still work without it."""
    code = (
        "import sys; from handover_vault.cli.fast import no_tls; no_tls(); "
        "import asyncio, sqlalchemy.orm, vault.core, vault.bundle.export; "
        "asyncio.run(asyncio.sleep(0)); "
        "print(sys.modules['ssl'] is None, 'sqlalchemy' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["True", "True"]
