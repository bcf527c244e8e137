"""Unlock sessions: the VMK kept for a while, encrypted under a key that only the shell holds.

``handover unlock`` writes ``<runtime dir>/sessions/<id>`` (0600) holding AES-256-GCM(session key,
{vault id, vault path, expiry, VMK}) and prints ``HANDOVER_SESSION=hvs1.<id>.<session key>``. The file
alone is useless without the token; the token alone is useless without the file; ``lock`` deletes
the file. The expiry is inside the ciphertext, so it cannot be extended by editing the file.

The file is deleted at ``lock``, by the warm agent when the session expires, and by any command that
finds it expired: its modification time is set to the expiry, so a command can see that without the
token (a hint for deleting only: the expiry that counts is the one inside the ciphertext). The folder
is checked on every use (``vault.paths.checked_dir``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import time
from pathlib import Path

from ..errors import AuthenticationFailed, InvalidInput, StorageError
from .crypto import DecryptFailed, Sealer, random_key

TOKEN_PREFIX = "hvs1"  # noqa: S105 - a format tag, not a secret
MAX_SECONDS = 7 * 24 * 3600
_TOKEN_RE = re.compile(r"^hvs1\.([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$")
_ID_RE = re.compile(r"[0-9a-f]{32}")


def runtime_dir(sweep: bool = True) -> Path:
    """Where session files live (``vault.paths``): made 0700 if missing, checked on every call.

    Raises:
        StorageError: the folder or its base is another user's, a symbolic link or not 0700.
    """
    from ..paths import checked_dir

    folder = checked_dir(create=True)
    if sweep:
        _delete_expired(folder)
    return folder


def _delete_expired(folder: Path) -> None:
    """Delete the session files whose expiry (their mtime) has passed: a file left by an agent that
    was killed, or by a session nobody used again, would otherwise wait for the next reboot."""
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if _ID_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < now:
                        os.unlink(entry.path)


def parse_duration(text: str) -> int:
    """``15m``, ``2h``, ``1d``, ``90s`` or plain seconds -> seconds (1 s to 7 days)."""
    m = re.fullmatch(r"\s*(\d{1,7})\s*([smhd]?)\s*", text or "")
    if not m:
        raise InvalidInput(f"not a duration: {text!r}", "use e.g. 15m, 2h or 1d")
    seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not 1 <= seconds <= MAX_SECONDS:
        raise InvalidInput("a session lasts between 1 second and 7 days")
    return seconds


def _aad(session_id: str) -> bytes:
    return f"handover-vault/v1/session\x00{session_id}".encode()


def create(vault_id: str, location: str, vmk: bytes, seconds: int, member: bytes = b"") -> str:
    """Write a session file and return the token to export as ``HANDOVER_SESSION``.

    ``location`` names the vault (its resolved path, or its database URL without a password).
    ``member``: in a team vault, the member's private keys (vault/teamkeys.py), sealed with the
    VMK in the same file, so that a session opens the member's grants too.
    """
    session_id = secrets.token_hex(16)
    key = random_key()
    expires = time.time() + seconds
    payload = json.dumps(
        {
            "vault_id": vault_id,
            "vault_path": location,
            "expires": expires,
            "vmk": base64.b64encode(vmk).decode("ascii"),
            **({"member": base64.b64encode(member).decode("ascii")} if member else {}),
        }
    ).encode()
    blob = Sealer(key).seal(payload, _aad(session_id))
    path = runtime_dir() / session_id
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.utime(path, (expires, expires))  # for _delete_expired
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise StorageError(f"cannot write the session file: {exc.strerror}") from None
    token = base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")
    return f"{TOKEN_PREFIX}.{session_id}.{token}"


def _parse(token: str) -> tuple[str, bytes]:
    m = _TOKEN_RE.match(token.strip())
    if not m:
        raise AuthenticationFailed("HANDOVER_SESSION is not a valid session", "run: handover unlock")
    try:
        key = base64.urlsafe_b64decode(m.group(2) + "=")
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("HANDOVER_SESSION is not a valid session") from None
    return m.group(1), key


def load(token: str, vault_id: str) -> bytes:
    """The VMK held by a live session for this vault; AuthenticationFailed otherwise."""
    return load_with_member(token, vault_id)[0]


def load_with_member(token: str, vault_id: str) -> tuple[bytes, bytes]:
    """The VMK and (team vault) the member's keys held by a live session for this vault."""
    session_id, key = _parse(token)
    folder = runtime_dir(sweep=False)  # our own file first: an expired one is then said to be so
    path = folder / session_id
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise AuthenticationFailed(
            "the session has ended (locked, expired or from another machine)",
            "unlock again with: eval $(handover unlock)",
        ) from None
    finally:
        _delete_expired(folder)
    try:
        data = json.loads(Sealer(key).open(blob, _aad(session_id)))
    except (DecryptFailed, ValueError):
        raise AuthenticationFailed("HANDOVER_SESSION does not match its session file") from None
    if data.get("vault_id") != vault_id:
        raise AuthenticationFailed(
            "HANDOVER_SESSION belongs to another vault",
            "unset HANDOVER_SESSION, or unlock this vault",
        )
    if time.time() >= float(data["expires"]):
        with contextlib.suppress(OSError):
            path.unlink()
        raise AuthenticationFailed("the session has expired", "unlock again with: eval $(handover unlock)")
    return base64.b64decode(data["vmk"]), base64.b64decode(data.get("member", ""))


def end(token: str) -> bool:
    """Delete the session file of ``token``; True if there was one."""
    session_id, _ = _parse(token)
    try:
        (runtime_dir() / session_id).unlink()
    except FileNotFoundError:
        return False
    return True
