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
from collections.abc import Mapping

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
    from ..errors import StorageError
    from ..paths import agent_socket, checked_dir

    path = agent_socket(token)
    if path is None:
        return None
    try:
        checked_dir()
    except StorageError:
        return None  # run here: the session code then names the folder in a clear error
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    uid = peer_uid(conn)
    if uid != os.getuid():
        conn.close()
        # Nothing was sent: not the session token, not a variable, not our terminal.
        sys.stderr.write(
            f"Error: the agent socket {path} is served by uid {uid}, not by you (uid {os.getuid()}); "
            "refusing to use it\nhint: someone else controls your runtime folder: end the session "
            "(handover lock) and check who owns that folder\n"
        )
        return 1
    header = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": command_env(os.environ)}).encode()
    fds = array.array("i", [0, 1, 2])
    conn.sendmsg([struct.pack(">I", len(header))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    conn.sendall(header)
    return _wait(conn)


# What a command may read from its environment (DESIGN §4: never the whole environment). Our own
# variables, the locale, the terminal, the folders platformdirs and tempfile use, the editor, the
# shell completion's and libpq's; anything else (cloud keys, tokens of other tools) stays in the caller.
COMMAND_ENV = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "TERM", "COLORTERM", "NO_COLOR", "COLUMNS", "LINES", "EDITOR", "VISUAL",
        # libpq's own, for a team vault (its password in PGPASSWORD or the file PGPASSFILE names).
        "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
        "PGSERVICE", "PGSERVICEFILE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY",
        "PGSSLCRL", "PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS", "PGGSSENCMODE",
    }
)  # fmt: skip
COMMAND_ENV_PREFIXES = ("HANDOVER_", "_HANDOVER_", "LC_", "XDG_", "COMP_")


def command_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that cross the agent's socket (the allow-list above)."""
    return {
        str(k): str(v)
        for k, v in environ.items()
        if k in COMMAND_ENV or str(k).startswith(COMMAND_ENV_PREFIXES)
    }


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process listening on the other end (SO_PEERCRED, from the kernel)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


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
