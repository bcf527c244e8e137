"""The warm agent is the way in for nobody (DESIGN §4): each attack of the review, repeated.

A hostile package in the folder where `unlock` runs, a runtime folder planted by another user, a
socket served by another user, the token read from `ps`, core dumps and same-user reads of the
agent's memory, a session file left behind at expiry, and the whole environment crossing the socket.
Tests run as root in CI; another user is uid 65534 (nobody), reached with os.setuid in a fork.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, cli_env, handover_cmd, unavailable

NOBODY = 65534
HOSTILE_PACKAGES = ("handover_vault", "click", "pyrage", "markdown_it", "sqlalchemy", "rich", "cryptography")


def _need_root() -> None:
    if os.getuid() != 0:
        unavailable("needs root to act as another user", "CI runs as root: this test must run there")


def _h(
    args: list[str], env: dict[str, str], stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        handover_cmd() + args,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
        cwd=cwd,
    )


def _wait_for(path: Path, present: bool = True, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while path.exists() != present and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists() == present


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A short private runtime folder (an AF_UNIX path must fit in ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hv", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vault_env(acme, vault_path: Path, runtime: Path) -> dict[str, str]:
    acme.close()
    return cli_env(vault_path, None, {"HANDOVER_RUNTIME_DIR": str(runtime)})


def _unlock(env: dict[str, str], duration: str = "10m", cwd: Path | None = None, **kw: object) -> str:
    done = subprocess.run(
        [*handover_cmd(), "unlock", "--for", duration],
        env={**env, "HANDOVER_PASSPHRASE": PASSPHRASE},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=cwd,
        **kw,  # type: ignore[arg-type]
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split("=", 1)[1]


def _socket(runtime: Path, token: str) -> Path:
    return runtime / "sessions" / f"{token.split('.')[1]}.sock"


def _agent_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"handover_vault.cli.agent" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _agent_of(runtime: Path) -> int:
    for pid in _agent_pids():
        try:
            if str(runtime).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError("no agent is running for this runtime folder")


# --- code injection: nothing from the folder where unlock ran ------------------------------------


def _hostile_folder(root: Path, markers: Path) -> Path:
    """A client's repository holding packages named like ours and our dependencies."""
    for name in HOSTILE_PACKAGES:
        pkg = root / name
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(
            f"open({str(markers / name)!r}, 'w').write('imported from the working folder')\n"
        )
        for sub in ("cli", "vault"):
            (pkg / sub).mkdir()
            (pkg / sub / "__init__.py").write_text((pkg / "__init__.py").read_text())
    return root


def test_a_hostile_package_in_the_unlock_folder_is_never_imported(
    vault_env: dict[str, str], runtime: Path, tmp_path: Path
) -> None:
    from pyrage import x25519

    markers = tmp_path / "markers"
    markers.mkdir()
    repo = _hostile_folder(tmp_path / "client-repo", markers)
    token = _unlock(vault_env, cwd=repo)
    assert _wait_for(_socket(runtime, token)), "the agent did not start"
    env = {**vault_env, "HANDOVER_SESSION": token}
    recipient = str(x25519.Identity.generate().to_public())
    # Commands that load the lazily imported modules too (age and Markdown for the export).
    for args in (
        ["cred", "show", "acme", "Firewall admin", "--reveal"],
        ["doc", "show", "acme", "Network overview"],
        ["export", "acme", "--recipient", recipient, "--force", "--out", str(tmp_path / "b.tar.age")],
    ):
        done = _h(args, env, cwd=repo)
        assert done.returncode == 0, (args, done.stderr)
    assert _socket(runtime, token).exists(), "the commands did not go through the agent"
    assert sorted(p.name for p in markers.iterdir()) == []
    _h(["lock"], env)


def test_the_agent_runs_isolated_in_root_with_a_minimal_environment(
    vault_env: dict[str, str], runtime: Path
) -> None:
    token = _unlock({**vault_env, "SOME_CLOUD_TOKEN": "do-not-pass-me"})
    assert _wait_for(_socket(runtime, token))
    pid = _agent_of(runtime)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-I" in cmdline
    environ = [e for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if e]
    assert [e.split(b"=")[0] for e in environ] == [b"PATH"]
    _h(["lock"], {**vault_env, "HANDOVER_SESSION": token})


# --- another user's runtime folder or socket ---------------------------------------------------


def _as_nobody(action: object) -> None:
    """Run ``action()`` in a fork as uid/gid 65534; fail the test if it raised."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A world-writable sticky folder, like /tmp, that the other user can plant things in."""
    path = Path(tempfile.mkdtemp(prefix="hvt", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_runtime_folder_made_by_another_user_is_refused_by_name(
    acme, vault_path: Path, shared_tmp: Path
) -> None:
    _need_root()
    acme.close()
    planted = shared_tmp / "rt"
    _as_nobody(lambda: (os.mkdir(planted, 0o777), os.chmod(planted, 0o777)))
    env = cli_env(vault_path, PASSPHRASE, {"HANDOVER_RUNTIME_DIR": str(planted)})
    done = _h(["unlock", "--for", "10m"], env)
    assert done.returncode == 1
    assert done.stdout == ""  # no token printed
    assert f"Error: the runtime folder {planted} belongs to uid {NOBODY}, not to you" in done.stderr
    assert list(planted.iterdir()) == []  # nothing of ours went into it


def test_the_tmp_fallback_planted_by_another_user_is_refused(
    acme, vault_path: Path, shared_tmp: Path
) -> None:
    """No XDG_RUNTIME_DIR, no /run/user/<uid>: the folder under TMPDIR must be ours, whoever made it."""
    _need_root()
    if Path(f"/run/user/{os.getuid()}").is_dir():
        unavailable(
            "this machine has a user runtime folder, so the fallback is never used",
            "CI must run without /run/user/<uid> so that the fallback is tested",
        )
    acme.close()
    fallback = shared_tmp / f"handover-vault-{os.getuid()}"
    _as_nobody(lambda: (os.mkdir(fallback, 0o700), os.mkdir(fallback / "sessions", 0o700)))
    env = cli_env(vault_path, PASSPHRASE, {"TMPDIR": str(shared_tmp)})
    for name in ("HANDOVER_RUNTIME_DIR", "XDG_RUNTIME_DIR"):
        env.pop(name, None)
    done = _h(["unlock", "--for", "10m"], env)
    assert done.returncode == 1, done.stderr
    assert f"the runtime folder {fallback} belongs to uid {NOBODY}" in done.stderr


@pytest.mark.parametrize("kind", ["symlink", "mode 0755"])
def test_a_runtime_folder_that_is_a_symlink_or_not_private_is_refused(
    acme, vault_path: Path, tmp_path: Path, kind: str
) -> None:
    acme.close()
    base = tmp_path / "rt"
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        base.symlink_to(tmp_path / "elsewhere")
    else:
        base.mkdir()
        base.chmod(0o755)
    done = _h(["unlock"], cli_env(vault_path, PASSPHRASE, {"HANDOVER_RUNTIME_DIR": str(base)}))
    assert done.returncode == 1
    expected = "is a symbolic link" if kind == "symlink" else "has mode 0755, not 0700"
    assert f"Error: the runtime folder {base} {expected}" in done.stderr


def test_a_planted_socket_receives_nothing(vault_env: dict[str, str], shared_tmp: Path) -> None:
    """The review's attack: another user pre-creates the folder and listens where the victim's agent
    would; the victim's command must send it nothing (no session, no passphrase, no secret)."""
    _need_root()
    sid = "0123456789abcdef0123456789abcdef"
    token = f"hvs1.{sid}.{'A' * 43}"
    base = shared_tmp / "rt"
    received = shared_tmp / "received"
    ready = shared_tmp / "ready"

    def plant() -> None:
        os.mkdir(base, 0o777)
        os.chmod(base, 0o777)
        os.mkdir(base / "sessions", 0o777)
        os.chmod(base / "sessions", 0o777)
        _listen_and_record(base / "sessions" / f"{sid}.sock", received, ready)

    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            plant()
        finally:
            os._exit(0)
    try:
        assert _wait_for(ready)
        env = {**vault_env, "HANDOVER_RUNTIME_DIR": str(base), "HANDOVER_SESSION": token}
        done = _h(
            ["cred", "add", "acme", "VPN"], {**env, "HANDOVER_PASSPHRASE": PASSPHRASE}, stdin="piped-s3cret\n"
        )
        assert done.returncode == 1
        assert f"the runtime folder {base} belongs to uid {NOBODY}" in done.stderr
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert not received.exists() or received.read_bytes() == b""


def _listen_and_record(path: Path, received: Path, ready: Path) -> None:
    """Serve one connection at ``path``; write what it sent to ``received``."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    ready.touch()
    srv.settimeout(30)
    conn, _ = srv.accept()
    conn.settimeout(5)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except OSError:
        pass
    received.write_bytes(data)


def test_the_client_checks_the_agents_uid_before_sending(vault_env: dict[str, str], runtime: Path) -> None:
    """Our folder, but a socket whose listener is another user (bound as root, then setuid before
    listen: SO_PEERCRED reports the uid at listen time): the client must send nothing."""
    _need_root()
    sid = "fedcba9876543210fedcba9876543210"
    token = f"hvs1.{sid}.{'B' * 43}"
    sessions = runtime / "sessions"
    sessions.mkdir(mode=0o700)
    runtime.chmod(0o700)
    sock_path = sessions / f"{sid}.sock"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(str(sock_path))
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            srv.listen(1)
            os.write(w, b"r")
            srv.settimeout(30)
            conn, _ = srv.accept()
            conn.settimeout(5)
            data = b""
            try:
                while chunk := conn.recv(65536):
                    data += chunk
            except OSError:
                pass
            os.write(w, data or b"-")
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"r"
        env = {**vault_env, "HANDOVER_SESSION": token, "HANDOVER_PASSPHRASE": PASSPHRASE}
        done = _h(["cred", "list", "acme"], env)
        assert done.returncode == 1
        assert f"Error: the agent socket {sock_path} is served by uid {NOBODY}, not by you" in done.stderr
        got = b""
        while chunk := os.read(r, 65536):
            got += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert got == b"-", got[:200]


# --- nothing secret in argv; core dumps; same-user reads of the agent -----------------------------


def test_no_process_shows_the_token_or_session_id_in_its_argv(
    vault_env: dict[str, str], runtime: Path
) -> None:
    token = _unlock(vault_env)
    sid, key = token.split(".")[1:]
    assert _wait_for(_socket(runtime, token))
    env = {**vault_env, "HANDOVER_SESSION": token}
    # A warm command in flight (its handler blocked reading the secret from our stdin) as well.
    proc = subprocess.Popen(
        [*handover_cmd(), "cred", "add", "acme", "Pending"], env=env, stdin=subprocess.PIPE
    )
    try:
        time.sleep(1.0)
        found = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes()
                except OSError:
                    continue
                if sid.encode() in cmd or key.encode() in cmd:
                    found.append((p.name, cmd))
        assert found == []
        assert _agent_of(runtime)
    finally:
        proc.kill()
        proc.wait()
        _h(["lock"], env)


def _limits_core(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return " ".join(line.split()[4:6])
    raise AssertionError("no core limit line")


def _unlimited_cores() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def test_the_agent_and_an_unlocked_command_write_no_core_dump(
    vault_env: dict[str, str], runtime: Path
) -> None:
    _need_root()  # raising the hard core limit (so that the test can fail) needs root
    token = _unlock(vault_env, preexec_fn=_unlimited_cores)
    assert _wait_for(_socket(runtime, token))
    env = {**vault_env, "HANDOVER_SESSION": token}
    try:
        assert _limits_core(_agent_of(runtime)) == "0 0"
        # A command run in its own process (no agent) that has unlocked and waits for a secret.
        proc = subprocess.Popen(
            [*handover_cmd(), "cred", "add", "acme", "Pending"],
            env={**env, "HANDOVER_NO_AGENT": "1"},
            stdin=subprocess.PIPE,
            preexec_fn=_unlimited_cores,
        )
        try:
            deadline = time.monotonic() + 20
            while _limits_core(proc.pid) != "0 0" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _limits_core(proc.pid) == "0 0"
        finally:
            proc.kill()
            proc.wait()
    finally:
        _h(["lock"], env)


def test_the_agent_is_not_dumpable(vault_env: dict[str, str], runtime: Path) -> None:
    """PR_SET_DUMPABLE=0: the kernel then gives /proc/PID/* to root:root, and refuses ptrace and
    /proc/PID/mem to other processes of the same user. Seen from here (root) through the group:
    started with gid 65534, a dumpable agent's /proc files have gid 65534, a non-dumpable one's 0."""
    _need_root()
    token = _unlock(vault_env, group=NOBODY, extra_groups=[])
    assert _wait_for(_socket(runtime, token))
    try:
        pid = _agent_of(runtime)
        assert Path(f"/proc/{pid}/status").read_text().split("Gid:")[1].split()[0] == str(NOBODY)
        assert os.stat(f"/proc/{pid}/environ").st_gid == 0
        assert os.stat(f"/proc/{pid}/mem").st_gid == 0
    finally:
        _h(["lock"], {**vault_env, "HANDOVER_SESSION": token})


# --- the session file does not outlive the session --------------------------------------------


def test_the_session_file_is_deleted_at_expiry_and_at_lock(vault_env: dict[str, str], runtime: Path) -> None:
    token = _unlock(vault_env, duration="2s")
    sid = token.split(".")[1]
    assert _wait_for(_socket(runtime, token))
    assert (runtime / "sessions" / sid).exists()
    # Nobody runs a command: the agent itself removes the file (the token would still open it).
    assert _wait_for(runtime / "sessions" / sid, present=False, seconds=10), (
        "the session file outlived its expiry"
    )
    assert _wait_for(_socket(runtime, token), present=False)

    token = _unlock(vault_env)
    sid = token.split(".")[1]
    assert _wait_for(_socket(runtime, token))
    assert _h(["lock"], {**vault_env, "HANDOVER_SESSION": token}).returncode == 0
    assert not (runtime / "sessions" / sid).exists()
    assert _wait_for(_socket(runtime, token), present=False)


def test_an_expired_session_file_is_deleted_by_the_command_that_finds_it(
    vault_env: dict[str, str], runtime: Path
) -> None:
    token = _unlock({**vault_env, "HANDOVER_NO_AGENT": "1"}, duration="1s")
    sid = token.split(".")[1]
    assert (runtime / "sessions" / sid).exists()
    time.sleep(1.5)
    done = _h(["cred", "list", "acme"], {**vault_env, "HANDOVER_SESSION": token, "HANDOVER_NO_AGENT": "1"})
    assert done.returncode == 3 and "the session has expired" in done.stderr
    assert not (runtime / "sessions" / sid).exists()


# --- only the variables a command needs cross the socket ----------------------------------------


def test_only_allow_listed_variables_reach_a_command_through_the_agent(
    vault_env: dict[str, str], runtime: Path, tmp_path: Path
) -> None:
    dump = tmp_path / "env-seen"
    editor = tmp_path / "editor.sh"
    editor.write_text(f'#!/bin/sh\nenv > {dump}\necho edited >> "$1"\n')
    editor.chmod(0o700)
    token = _unlock(vault_env)
    assert _wait_for(_socket(runtime, token))
    env = {
        **vault_env,
        "HANDOVER_SESSION": token,
        "VISUAL": str(editor),
        "AWS_SECRET_ACCESS_KEY": "cloud-k3y",
    }
    # No terminal: `doc edit` runs through the agent and opens $VISUAL there.
    done = _h(["doc", "edit", "acme", "Network overview"], env)
    assert done.returncode == 0, done.stderr
    assert _socket(runtime, token).exists()
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "AWS_SECRET_ACCESS_KEY" not in seen
    assert seen.get("VISUAL") == str(editor)  # what the command needs did cross
    assert "HANDOVER_SESSION" not in seen  # and a child never gets our secrets
    _h(["lock"], env)


def test_command_env_is_an_allow_list() -> None:
    from handover_vault.cli.fast import command_env

    env = {
        "PATH": "/bin",
        "HANDOVER_VAULT": "v",
        "LC_ALL": "C",
        "XDG_DATA_HOME": "/d",
        "GITHUB_TOKEN": "t",
        "SSH_AUTH_SOCK": "s",
    }
    assert command_env(env) == {"PATH": "/bin", "HANDOVER_VAULT": "v", "LC_ALL": "C", "XDG_DATA_HOME": "/d"}


def test_an_expired_session_file_nobody_uses_is_deleted_by_the_next_command(
    vault_env: dict[str, str], runtime: Path
) -> None:
    """No agent (killed, or disabled) and the token never used again: the next command of any
    session deletes the file, whose mtime is its expiry."""
    cold = {**vault_env, "HANDOVER_NO_AGENT": "1"}
    stale = _unlock(cold, duration="1s").split(".")[1]
    made = time.monotonic()
    assert (runtime / "sessions" / stale).exists()
    live = _unlock(cold)
    time.sleep(max(0.0, 1.5 - (time.monotonic() - made)))
    done = _h(["cred", "list", "acme"], {**cold, "HANDOVER_SESSION": live})
    assert done.returncode == 0, done.stderr
    assert not (runtime / "sessions" / stale).exists()
    assert (runtime / "sessions" / live.split(".")[1]).exists()
