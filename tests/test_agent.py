"""The warm agent started by `unlock`: same results as running in-process, and it ends with the session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, cli_env, handover_cmd, unavailable


@pytest.fixture
def short_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Unix socket paths are limited to ~100 bytes: a short runtime dir of our own."""
    path = Path(tempfile.mkdtemp(prefix="hv", dir="/tmp"))
    monkeypatch.setenv("HANDOVER_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(vault: Path, runtime: Path, **extra: str) -> dict[str, str]:
    return cli_env(vault, None, {"HANDOVER_RUNTIME_DIR": str(runtime), **extra})


def _h(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        handover_cmd() + args, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.fixture
def session(acme, vault_path: Path, short_runtime: Path) -> Iterator[dict[str, str]]:
    acme.close()
    unlocked = _h(["unlock", "--for", "10m"], _env(vault_path, short_runtime, HANDOVER_PASSPHRASE=PASSPHRASE))
    assert unlocked.returncode == 0, unlocked.stderr
    token = unlocked.stdout.strip().split("=", 1)[1]
    sid = token.split(".")[1]
    sock = short_runtime / "sessions" / f"{sid}.sock"
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.1)
    assert sock.exists(), "the agent did not start"
    env = _env(vault_path, short_runtime, HANDOVER_SESSION=token)
    yield env
    _h(["lock"], env)


def test_agent_socket_is_private(session: dict[str, str], short_runtime: Path) -> None:
    (sock,) = (short_runtime / "sessions").glob("*.sock")
    assert sock.stat().st_mode & 0o777 == 0o600
    assert (short_runtime / "sessions").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    "args",
    [
        ["cred", "show", "acme", "Firewall admin", "--reveal"],
        ["cred", "list", "acme", "--json"],
        ["client", "show", "acme"],
        ["cred", "show", "acme", "no such thing"],
        ["client", "show", "nobody"],
        ["cred", "show"],
        ["--help"],
        ["search", "firewall"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_agent_gives_the_same_output_and_exit_code(session: dict[str, str], args: list[str]) -> None:
    warm = _h(args, session)
    cold = _h(args, {**session, "HANDOVER_NO_AGENT": "1"})
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)


def test_secrets_on_stdin_go_through_the_agent(session: dict[str, str]) -> None:
    added = _h(["cred", "add", "acme", "VPN", "--username", "vpn"], session, stdin="vpn-s3cret\n")
    assert added.returncode == 0, added.stderr
    shown = _h(["cred", "show", "acme", "VPN", "--reveal"], {**session, "HANDOVER_NO_AGENT": "1"})
    assert "vpn-s3cret" in shown.stdout


def test_every_agent_reveal_is_audited(session: dict[str, str]) -> None:
    before = _h(["audit", "list", "--json"], session).stdout.count("cred.reveal")
    _h(["cred", "show", "acme", "Firewall admin", "--reveal"], session)
    after = _h(["audit", "list", "--json"], session).stdout.count("cred.reveal")
    assert after == before + 1


def test_lock_stops_the_agent(session: dict[str, str], short_runtime: Path) -> None:
    assert _h(["lock"], session).returncode == 0
    for _ in range(50):
        if not list((short_runtime / "sessions").glob("*.sock")):
            break
        time.sleep(0.1)
    assert not list((short_runtime / "sessions").glob("*.sock"))
    after = _h(["cred", "list", "acme"], session)
    assert after.returncode == 3
    assert "the session has ended" in after.stderr


def test_another_user_cannot_use_the_agent(session: dict[str, str], short_runtime: Path) -> None:
    if os.getuid() != 0:
        unavailable("needs root to become another user", "CI runs as root: this test must run there")
    (sock,) = (short_runtime / "sessions").glob("*.sock")
    pid = os.fork()
    if pid == 0:
        import socket

        code = 0
        try:
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(sock))
            code = 1 if s.recv(4) else 0  # connected: the agent must close without serving
        except OSError:
            code = 0
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_ctrl_c_interrupts_the_command(session: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [*handover_cmd(), "cred", "add", "acme", "Never", "--username", "x"],
        env=session,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # the handler is now blocked reading the secret from our stdin
    proc.send_signal(signal.SIGINT)
    # Keep our end of stdin open until the command is over: closing it at once races the interrupt
    # (the handler would read an empty secret and refuse it before the Ctrl-C reached it).
    proc.wait(timeout=20)
    _out, err = proc.communicate(timeout=20)
    # As without the agent: click turns the interrupt into "Aborted." and exit 1; nothing was added.
    assert proc.returncode == 1, err
    assert err.strip() == "Aborted."
    listed = _h(["cred", "list", "acme", "--json"], session).stdout
    assert "Never" not in listed
