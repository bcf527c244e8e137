"""The ``handover`` console script: hand the command to the warm agent when there is one.

Standard library only until it knows it must run the command itself: with an unlocked session and
a live agent (``cli/agent.py``), a command costs one Python start-up plus a fork of an already
loaded process, instead of importing SQLAlchemy, cryptography and click again.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
import sys

# Commands that manage the session or the agent itself (rekey ends every session), or open an editor,
# always run here.
LOCAL = frozenset({"unlock", "lock", "demo", "rekey"})


def _needs_terminal(argv: list[str]) -> bool:
    """An $EDITOR needs the terminal as its controlling terminal, which a forked agent lacks."""
    if len(argv) >= 2 and argv[0] == "doc" and argv[1] in ("add", "edit"):
        return os.isatty(0) and "--file" not in argv and not any(a.startswith("--file=") for a in argv)
    return False


def _via_agent(argv: list[str]) -> int | None:
    """The command's exit status from the agent, or None when there is no agent to ask."""
    token = os.environ.get("HANDOVER_SESSION")
    if (
        not token
        or os.environ.get("HANDOVER_NO_AGENT")
        or not argv
        or argv[0] in LOCAL
        or _needs_terminal(argv)
    ):
        return None
    from ..paths import agent_socket

    path = agent_socket(token)
    if path is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    header = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    fds = array.array("i", [0, 1, 2])
    conn.sendmsg([struct.pack(">I", len(header))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    conn.sendall(header)
    return _wait(conn)


def _wait(conn: socket.socket) -> int:
    status = b""
    while len(status) < 4:
        try:
            chunk = conn.recv(4 - len(status))
        except KeyboardInterrupt:
            # Tell the handler to stop as a Ctrl-C would; it answers with its exit status. (A client
            # that dies without saying so has its command killed outright: cli/agent.py.)
            try:
                conn.sendall(b"\x03")
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                return 130
            continue
        if not chunk:
            return 1
        status += chunk
    conn.close()
    return int(struct.unpack(">i", status)[0])


def no_tls() -> None:
    """Keep the TLS module out of this process: handover never opens a network connection.

    SQLAlchemy imports asyncio whatever the driver, and asyncio imports ssl when it can (it works
    without it). Not loading it keeps OpenSSL's TLS half out of a process that holds the vault's
    keys, and saves 1.3 MiB of every command's memory (the 200 MiB export peaks at 65 MiB, not 66).
    An import of ssl then raises ImportError, which asyncio, urllib and http.client expect.
    """
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


def main() -> None:
    code = _via_agent(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    no_tls()
    from .main import main as run_here

    run_here()


if __name__ == "__main__":
    main()
