"""The whole job against a vault in PostgreSQL (DESIGN §12: every command works on either engine).

The steps are the demo's own (cli/demo.py: record, check, acknowledge, end, letter, export, verify
the bundle with the successor's key, answer a request, audit, forget), run one by one as real
subprocesses of the installed command with ``HANDOVER_DB_URL`` and an unlock session (the warm
agent serves them), then the vault's life-cycle commands: passphrase, recovery, rekey, backup.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from handover_vault.cli.demo import _fill, _steps
from tests.conftest import PASSPHRASE, run
from tests.helpers_security import recovery_code, session_token

pytestmark = [pytest.mark.postgres, pytest.mark.interop]

NEW_PASSPHRASE = "a new and longer passphrase"


def test_the_demo_job_runs_step_by_step_against_postgresql(pg_url: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    init = run(["init"], vault=pg_url)
    assert init.returncode == 0, init.stderr
    unlock = run(["unlock", "--for", "30m"], vault=pg_url)
    assert unlock.returncode == 0, unlock.stderr
    session = {"HANDOVER_SESSION": session_token(unlock.stdout)}
    ran = []
    for step in _steps(work, dt.datetime.now(dt.UTC).date()):
        args = [_fill(a, work) for a in step.args]
        done = run(args, vault=pg_url, input=step.stdin, env=session, passphrase=None)
        assert done.returncode == step.expect, (args, done.stdout[-2000:], done.stderr[-2000:])
        ran.append(args[0])
    assert {"export", "bundle", "request", "forget", "letter"} <= set(ran)
    listed = json.loads(run(["--json", "audit", "list"], vault=pg_url).stdout)
    actions = {e["action"] for e in listed}
    assert {"bundle.export", "request.log", "client.forget", "vault.unlock"} <= actions, actions
    assert "vault intact" in run(["verify"], vault=pg_url).stdout


def test_passphrase_recovery_and_rekey_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    init = run(["init"], vault=pg_url)
    assert init.returncode == 0, init.stderr
    code = recovery_code(init.stdout)
    assert run(["client", "add", "acme", "--name", "ACME Ltd"], vault=pg_url).returncode == 0
    added = run(["cred", "add", "acme", "fw", "--username", "admin"], vault=pg_url, input="Fw-s3cret\n")
    assert added.returncode == 0, added.stderr

    changed = run(["passwd"], vault=pg_url, env={"HANDOVER_NEW_PASSPHRASE": NEW_PASSPHRASE})
    assert changed.returncode == 0, changed.stderr
    assert run(["client", "list"], vault=pg_url).returncode == 3  # the old passphrase no longer opens it
    recovered = run(
        ["recover"],
        vault=pg_url,
        passphrase=None,
        env={"HANDOVER_RECOVERY_CODE": code, "HANDOVER_NEW_PASSPHRASE": PASSPHRASE},
    )
    assert recovered.returncode == 0, recovered.stderr
    rekeyed = run(["rekey"], vault=pg_url)
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert "Rekeyed postgresql+psycopg://" in rekeyed.stdout
    shown = run(["cred", "show", "acme", "fw", "--reveal"], vault=pg_url)
    assert shown.returncode == 0 and "Fw-s3cret" in shown.stdout
    assert run(["audit", "verify"], vault=pg_url).returncode == 0
    assert (
        run(
            ["recover"],
            vault=pg_url,
            passphrase=None,
            env={"HANDOVER_RECOVERY_CODE": code, "HANDOVER_NEW_PASSPHRASE": NEW_PASSPHRASE},
        ).returncode
        == 3
    )
