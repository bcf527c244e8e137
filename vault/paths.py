"""Where per-user runtime files live (sessions, the agent's socket). Standard library only.

Kept free of heavy imports: the command line's fast path (``cli/fast.py``) uses it before deciding
whether to load the rest of the program.

The runtime folder holds the session files and the agent's socket, so whoever controls it could
plant a socket and receive a command's session token and secrets. Every folder of ours on that path
(the base and its ``sessions`` folder) is therefore created with ``mkdir`` (no ``exist_ok``: an
existing one is never taken on trust) and checked with ``lstat`` on every use, the fast path
included: a directory, not a symbolic link, owned by this user, mode 0700. Anything else is a
:class:`~vault.errors.StorageError` naming the folder, never a silent use (DESIGN §4).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import StorageError

# AF_UNIX socket paths are limited to 108 bytes on Linux (sun_path); leave room for the NUL.
MAX_SOCKET_PATH = 100


def _user_runtime_dir() -> Path | None:
    """``$XDG_RUNTIME_DIR`` or ``/run/user/<uid>`` when it is a directory of ours we can write."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    for base in ([Path(xdg)] if xdg else []) + [Path(f"/run/user/{os.getuid()}")]:
        try:
            st = os.stat(base)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and os.access(base, os.W_OK):
            return base
    return None


def runtime_base() -> Path:
    """``HANDOVER_RUNTIME_DIR``, else the user runtime dir (RAM-backed on Linux), else ``/tmp``.

    The path only: :func:`checked_dir` makes and checks it.
    """
    override = os.environ.get("HANDOVER_RUNTIME_DIR")
    if override:
        return Path(override)
    user = _user_runtime_dir()
    if user is not None:
        return user / "handover-vault"
    import tempfile

    return Path(tempfile.gettempdir()) / f"handover-vault-{os.getuid()}"


def check_private_dir(path: Path) -> None:
    """Raise StorageError unless ``path`` is a real directory of ours with mode 0700 (``lstat``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise StorageError(f"the runtime folder {path} does not exist") from None
    except OSError as exc:
        raise StorageError(f"cannot inspect the runtime folder {path}: {exc.strerror}") from None
    hint = (
        "remove it (it is not one this tool made for you), or set HANDOVER_RUNTIME_DIR to a folder of yours"
    )
    if stat.S_ISLNK(st.st_mode):
        raise StorageError(f"the runtime folder {path} is a symbolic link; refusing to use it", hint)
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"the runtime folder {path} is not a directory; refusing to use it", hint)
    if st.st_uid != os.getuid():
        raise StorageError(
            f"the runtime folder {path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
            "refusing to use it",
            hint,
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise StorageError(
            f"the runtime folder {path} has mode {stat.S_IMODE(st.st_mode):04o}, not 0700; refusing to use it",
            f"if it is yours: chmod 700 {path}",
        )


def _make_private_dir(path: Path) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return  # made before (by us, or by someone else): the check decides
    except OSError as exc:
        raise StorageError(f"cannot create the runtime folder {path}: {exc.strerror}") from None
    # Ours, just made: the mode is 0700 whatever the umask.
    os.chmod(path, 0o700)


def checked_dir(create: bool = False) -> Path:
    """The ``sessions`` folder, each of its two folders checked (and first made, with ``create``).

    Raises:
        StorageError: a folder is missing (without ``create``), not a directory, a symbolic link,
            another user's, or not mode 0700.
    """
    base = runtime_base()
    folder = base / "sessions"
    for path in (base, folder):
        if create:
            if path is base and os.environ.get("HANDOVER_RUNTIME_DIR"):
                # A folder the user named may sit in folders not yet made; those are theirs to judge.
                try:
                    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                except OSError as exc:
                    raise StorageError(
                        f"cannot create the runtime folder {path.parent}: {exc.strerror}"
                    ) from None
            _make_private_dir(path)
        check_private_dir(path)
    return folder


def sessions_dir() -> Path:
    """The ``sessions`` folder's path, unchecked (for messages; use :func:`checked_dir` to use it)."""
    return runtime_base() / "sessions"


def session_id(token: str) -> str | None:
    """The session id inside a ``hvs1.<id>.<key>`` token, or None when it is not one."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != "hvs1" or len(parts[1]) != 32:
        return None
    return parts[1] if all(c in "0123456789abcdef" for c in parts[1]) else None


def agent_socket(token: str) -> Path | None:
    """The agent's socket for a session, or None when the token is malformed or the path too long.

    The folders are not checked here: :func:`checked_dir` must pass before the socket is used.
    """
    sid = session_id(token)
    if sid is None:
        return None
    path = sessions_dir() / f"{sid}.sock"
    return path if len(str(path).encode()) <= MAX_SOCKET_PATH else None
