"""Where per-user runtime files live (sessions, the agent's socket). Standard library only.

Kept free of heavy imports: the command line's fast path (``cli/fast.py``) uses it before deciding
whether to load the rest of the program.
"""

from __future__ import annotations

import os
from pathlib import Path

# AF_UNIX socket paths are limited to 108 bytes on Linux (sun_path); leave room for the NUL.
MAX_SOCKET_PATH = 100


def runtime_base() -> Path:
    """``HANDOVER_RUNTIME_DIR``, else the user runtime dir (RAM-backed on Linux), else a private tmp dir."""
    override = os.environ.get("HANDOVER_RUNTIME_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    candidates = [Path(xdg)] if xdg else []
    candidates.append(Path(f"/run/user/{os.getuid()}"))
    for base in candidates:
        if base.is_dir() and os.access(base, os.W_OK):
            return base / "handover-vault"
    import tempfile

    return Path(tempfile.gettempdir()) / f"handover-vault-{os.getuid()}"


def sessions_dir() -> Path:
    return runtime_base() / "sessions"


def session_id(token: str) -> str | None:
    """The session id inside a ``hvs1.<id>.<key>`` token, or None when it is not one."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != "hvs1" or len(parts[1]) != 32:
        return None
    return parts[1] if all(c in "0123456789abcdef" for c in parts[1]) else None


def agent_socket(token: str) -> Path | None:
    """The agent's socket for a session, or None when the token is malformed or the path too long."""
    sid = session_id(token)
    if sid is None:
        return None
    path = sessions_dir() / f"{sid}.sock"
    return path if len(str(path).encode()) <= MAX_SOCKET_PATH else None
