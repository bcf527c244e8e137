"""The warm agent: a pre-imported ``handover`` that forks one process per command.

``handover unlock`` starts it next to the session file. Importing SQLAlchemy, cryptography, click
and rich costs several times more than the work of a typical command; the agent pays it once and
then ``fork()``s a copy for each request, so a command runs in a fresh process that already has
every module loaded.

Protocol (``cli/fast.py`` is the client): on a 0600 Unix socket in the 0700 session directory, the
client sends a JSON header (argv, cwd, the allow-listed environment variables of ``fast.command_env``)
together with its own stdin, stdout and stderr file descriptors (SCM_RIGHTS). The forked handler puts
those descriptors on 0, 1 and 2, takes the client's cwd and variables, runs the command exactly as the
console script would, and sends back its exit status (4 bytes). Closing the connection early (the
client got Ctrl-C) interrupts it.

Security (DESIGN §4, docs/security.md): every command that unlocks holds the master key in a fork of
this process, so the agent is started isolated: ``python -I`` (no script folder, current folder,
``PYTHON*`` variable or user site on ``sys.path``), in ``/``, with an environment of ``PATH`` alone, and
its socket and session file named on standard input, never in argv (``ps`` shows only the folder).
Core dumps are off (``vault.process``), inherited by every handler. It serves only peers with its own
uid (SO_PEERCRED; the client checks the agent's uid the same way before sending anything), and when
the session ends (lock, expiry or the file's removal) it exits and deletes the session file if expired.
"""

from __future__ import annotations

import array
import contextlib
import gc
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

from .fast import command_env, peer_uid

MAX_HEADER = 1 << 20
# Modules every command would import; loaded once here, shared copy-on-write by every fork.
PRELOAD = (
    "handover_vault.cli.main",
    "handover_vault.cli.context",
    "handover_vault.cli.vaultcmds",
    "handover_vault.cli.clients",
    "handover_vault.cli.docs",
    "handover_vault.cli.creds",
    "handover_vault.cli.inventory",
    "handover_vault.cli.audit",
    "handover_vault.cli.bundle",
    "handover_vault.cli.agreement",
    "handover_vault.cli.requests",
    "handover_vault.cli.imports",
    "handover_vault.cli.profile",
    "handover_vault.core",
    "handover_vault.store.records",
    "handover_vault.clients",
    "handover_vault.services",
    "handover_vault.creds",
    "handover_vault.integrity.audit",
    "handover_vault.store.index",
    "handover_vault.search",
    "handover_vault.attachments",
    "handover_vault.store.engine",
    "handover_vault.store.sqlite",
    "handover_vault.store.postgres",  # psycopg too: a team vault's handler connects after the fork
    "sqlalchemy.dialects.postgresql.psycopg",  # the dialect an engine loads on its first connect
    "platformdirs",  # the recorded head's and the team pin's folders, on every command
    "handover_vault.teams",  # a team member's unlock and grants (pyrage, the team library)
    "handover_vault.teamkeys",
    "handover_vault.readiness",
    "handover_vault.agreement",
    "handover_vault.profile",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.sqlite",
    "rich.console",
    "rich.table",
    "rich.box",
    "rich._emoji_codes",  # loaded by the first table's markup
    # What every handler or an unlocked command imports on first use:
    "getpass",
    "termios",
    "handover_vault.paths",
    "handover_vault.keys.session",
    "handover_vault.rekey",  # checks every session's key on open
)


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        # Any failure, not only a missing module: a preload is an optimisation, never a reason for
        # the agent not to start (its caller then runs every command cold, silently).
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # an optimisation only: never a reason not to serve
        _warm_up()


def _warm_up() -> None:
    """Run the vault's common queries once on an empty throwaway database (no keys, no data).

    SQLAlchemy prepares each mapped class and statement shape on first use; done here, before the
    fork, that work is shared by every handler instead of repeated by each (about 8 ms a command).
    """
    import tempfile

    from sqlalchemy import func, select

    from ..store.engine import schema_revision
    from ..store.models import AuditEntry, Base, Client, KeySlot, Meta, Record, SearchPosting
    from ..store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory(prefix="handover-agent-") as tmp:
        st = SqliteStore(Path(tmp) / "warm.db")
        try:
            Base.metadata.create_all(st.engine)
            schema_revision(st)
            with st.write("warming up") as s:
                s.execute(select(Meta)).scalars().all()
                s.execute(select(KeySlot).where(KeySlot.kind == "passphrase")).scalars().all()
                s.execute(select(Client).where(Client.lookup == "")).scalar()
                s.execute(select(Client)).scalars().all()
                s.execute(
                    select(Record).where(Record.client_id == "", Record.kind == "", Record.lookup == "")
                ).scalars().all()
                s.execute(select(Record).where(Record.client_id == "", Record.kind == "")).scalars().all()
                s.execute(select(func.count()).select_from(Record).where(Record.client_id == "")).scalar_one()
                s.execute(
                    select(SearchPosting.ids).where(SearchPosting.client_id == "", SearchPosting.token == b"")
                ).scalars().all()
                s.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
                s.get(Meta, "")
                s.add(Meta(key="warm", value=b""))
                s.flush()
        finally:
            st.close()


def recv_request(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    """Read the length-prefixed JSON header and the three file descriptors sent with it."""
    fds = array.array("i")
    msg, anc, _flags, _addr = conn.recvmsg(4, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if len(msg) != 4 or len(fds) != 3:
        raise ValueError("bad request")
    (size,) = struct.unpack(">I", msg)
    if size > MAX_HEADER:
        raise ValueError("request too large")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    return json.loads(body), list(fds)


def _peer_is_us(conn: socket.socket) -> bool:
    return peer_uid(conn) == os.getuid()


INTERRUPT = b"\x03"  # sent by the client when it got Ctrl-C (cli/fast.py)
_finished = threading.Event()


def _watch_hangup(conn: socket.socket) -> None:
    """Follow the client: Ctrl-C in its terminal interrupts the command (KeyboardInterrupt, as in a
    process of its own); the client dying (killed, terminal closed) kills the command at once, as it
    would have killed a command running in the client's own process."""

    def watch() -> None:
        data = b""
        with contextlib.suppress(OSError):
            data = conn.recv(1)
        if _finished.is_set():
            return
        os.kill(os.getpid(), signal.SIGINT if data == INTERRUPT else signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def _hidden_prompt(prompt: str = "Password: ", stream: object = None) -> str:
    """getpass for a process without a controlling terminal: no echo on the client's own TTY (fd 0)."""
    import termios

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    new = old[:]
    new[3] &= ~termios.ECHO
    sys.stderr.write(prompt)
    sys.stderr.flush()
    try:
        termios.tcsetattr(fd, termios.TCSAFLUSH, new)
        line = sys.stdin.readline()
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, old)
        sys.stderr.write("\n")
    if not line:
        raise EOFError
    return line.rstrip("\n")


def handle(conn: socket.socket) -> None:
    """Runs in the forked child: become the client's command, then report its exit status."""
    gc.enable()  # the agent froze what it loaded (main): collections here leave those pages shared
    code = 1
    try:
        header, fds = recv_request(conn)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
        os.chdir(str(header["cwd"]))
        os.environ.clear()
        os.environ.update(command_env(dict(header["env"])))  # type: ignore[call-overload]
        import getpass

        getpass.getpass = _hidden_prompt  # type: ignore[assignment]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _watch_hangup(conn)
        from .main import main

        argv = [str(a) for a in header["argv"]]  # type: ignore[union-attr]
        sys.argv = ["handover", *argv]
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            code = 130
    except Exception:
        code = 1
    finally:
        # The command is over: the client closing the connection must no longer interrupt us.
        _finished.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(struct.pack(">i", code))
        os._exit(code & 0xFF)


def serve(sock_path: Path, session_file: Path, expires: float) -> None:
    """Accept until the session ends; fork a handler per connection."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    old = os.umask(0o177)
    try:
        server.bind(str(sock_path))
    finally:
        os.umask(old)
    server.listen(16)
    server.settimeout(1.0)
    try:
        while time.time() < expires and session_file.exists():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            if not _peer_is_us(conn):
                conn.close()
                continue
            if os.fork() == 0:
                server.close()
                conn.settimeout(None)
                handle(conn)
            conn.close()
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        if time.time() >= expires:
            # The token in the user's shell still decrypts the file: an expired one must not stay.
            with contextlib.suppress(FileNotFoundError):
                session_file.unlink()


def main() -> None:
    """``python -I -m handover_vault.cli.agent FOLDER`` with ``{"socket", "session_file", "expires"}``
    as JSON on standard input (started by ``handover unlock``; FOLDER is for ``ps`` only)."""
    from ..process import forbid_core_dumps

    forbid_core_dumps()
    os.chdir("/")
    conf = json.loads(sys.stdin.buffer.read(MAX_HEADER))
    sock_path, session_file = Path(conf["socket"]), Path(conf["session_file"])
    expires = float(conf["expires"])
    # The agent's own environment carries nothing: each request brings the client's.
    for name in list(os.environ):
        if name != "PATH":
            del os.environ[name]
    # Python's advice for fork without exec: no collections while loading (no freed holes in the
    # pages the handlers share), then freeze what was loaded so that a handler's collections do
    # not write to every shared object's GC header and copy its page (milliseconds per command).
    gc.disable()
    from .fast import no_tls

    no_tls()  # as in a command run without the agent: no ssl module in a process holding keys
    _preload()
    gc.freeze()
    serve(sock_path, session_file, expires)


def start(token: str, seconds: int) -> Path | None:
    """Start an agent for a fresh session (detached); return its socket path, or None if not possible."""
    import subprocess

    from ..paths import agent_socket, checked_dir, session_id

    sock = agent_socket(token)
    sid = session_id(token)
    if sock is None or sid is None or os.environ.get("HANDOVER_NO_AGENT"):
        return None
    folder = checked_dir()
    proc = subprocess.Popen(
        # -I: nothing from the folder where unlock ran (nor PYTHONPATH, nor the user site) can be
        # imported by a process that will hold the master key; cwd "/" for the same reason.
        [sys.executable, "-I", "-m", "handover_vault.cli.agent", str(folder)],
        cwd="/",
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        env={"PATH": os.defpath},
    )
    assert proc.stdin is not None
    conf = {"socket": str(sock), "session_file": str(folder / sid), "expires": time.time() + seconds}
    with proc.stdin:
        proc.stdin.write(json.dumps(conf).encode())
    return sock


if __name__ == "__main__":
    main()
