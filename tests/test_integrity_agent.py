"""The out-of-file head on the warm agent's path (DESIGN §3a, §4): a command the agent runs for the
client refuses a vault file put back from an older copy, as it would in a process of its own."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, cli_env, handover_cmd


@pytest.fixture
def short_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Unix socket paths are limited to ~100 bytes: a short runtime dir of our own."""
    path = Path(tempfile.mkdtemp(prefix="hv", dir="/tmp"))
    monkeypatch.setenv("HANDOVER_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _h(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        handover_cmd() + args, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_the_warm_agent_refuses_an_older_copy_of_the_file(
    acme, vault_path: Path, tmp_path: Path, short_runtime: Path
) -> None:
    acme.store.checkpoint()
    acme.close()
    older = tmp_path / "older.db"
    shutil.copy(vault_path, older)
    env = cli_env(vault_path, None, {"HANDOVER_RUNTIME_DIR": str(short_runtime)})
    unlocked = _h(["unlock", "--for", "5m"], {**env, "HANDOVER_PASSPHRASE": PASSPHRASE})
    assert unlocked.returncode == 0, unlocked.stderr
    token = unlocked.stdout.strip().split("=", 1)[1]
    sock = short_runtime / "sessions" / f"{token.split('.')[1]}.sock"
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.1)
    assert sock.exists(), "the agent did not start"
    warm = {**env, "HANDOVER_SESSION": token}
    try:
        shown = _h(["cred", "show", "acme", "Firewall admin", "--reveal"], warm)
        assert shown.returncode == 0, shown.stderr
        for suffix in ("-wal", "-shm"):
            Path(f"{vault_path}{suffix}").unlink(missing_ok=True)
        shutil.copy(older, vault_path)
        done = _h(["cred", "show", "acme", "Firewall admin", "--reveal"], warm)
        assert done.returncode == 4, done.stderr
        assert done.stdout == ""
        assert done.stderr.startswith(
            "Error: the vault is older than the last state seen on this machine (entry "
        )
        assert done.stderr.endswith("hint: handover verify --accept-rollback\n")
        assert sock.exists()  # it was the agent that answered
    finally:
        _h(["lock"], warm)
