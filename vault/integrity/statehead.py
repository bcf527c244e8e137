"""The out-of-file head: the newest state this machine saw of each vault file (DESIGN §3a).

Nothing inside one file can tell an old copy from the current one. After every write the vault's
head (vault id, audit sequence, head MAC, commitment) goes into a small 0600 JSON file in the user
state dir (``platformdirs.user_state_dir``, moved by ``XDG_STATE_HOME``). Opening a file that is
older than its recorded head, or whose history differs from it, is refused (exit 4) until
``handover verify --accept-rollback`` adopts the file.

The record is keyed by the vault id *and* the file's resolved path: a backup (same vault id) opened
at another path is a vault of its own here, with a history of its own, and never trips the check;
an older copy put back at the vault's own path does. A vault never seen on this machine opens
normally (docs/security.md says what that leaves open).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError

if TYPE_CHECKING:
    from ..core import Vault

FORMAT = "handover-state-head/1"
RECENT = 50  # entries remembered, so that accepting a rollback can show what the file lacks
ROLLED_BACK_HINT = "handover verify --accept-rollback"


def state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("handover-vault")) / "heads"


def head_file(v: Vault) -> Path:
    key = f"{v.vault_id}\x00{v.location}".encode("utf-8", "surrogateescape")
    return state_dir() / f"{hashlib.sha256(key).hexdigest()[:32]}.json"


def read(v: Vault) -> dict[str, Any] | None:
    """The recorded head of this vault file, or None (never seen here, or unreadable)."""
    try:
        data = json.loads(head_file(v).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("vault_id") != v.vault_id:
        return None
    if not isinstance(data.get("seq"), int) or not isinstance(data.get("mac"), str):
        return None
    return data


def record(
    v: Vault,
    seq: int,
    mac: bytes,
    commitment: bytes,
    entries: list[dict[str, Any]] | None = None,
    force: bool = False,
) -> None:
    """Record the head after a write; never moves back unless ``force`` (an accepted rollback).

    Best effort: a state dir that cannot be written leaves the check weaker, never the write undone.
    """
    path = head_file(v)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_fd = os.open(path.parent / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            old = read(v)
            if old is not None and old["seq"] > seq and not force:
                return
            recent = [
                e for e in (old or {}).get("recent", []) if isinstance(e, dict) and e.get("seq", 0) < seq
            ]
            recent = (recent + (entries or []))[-RECENT:]
            body = {
                "format": FORMAT,
                "vault_id": v.vault_id,
                "path": v.location,
                "seq": seq,
                "mac": mac.hex(),
                "commitment": commitment.hex(),
                "recent": recent,
            }
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            os.close(lock_fd)


def compare(v: Vault, rec: dict[str, Any] | None) -> tuple[dict[str, Any], int] | None:
    """(recorded head ``rec``, the file's newest entry) when the file is behind or off the recorded
    history; None when it is on it, or nothing was recorded.

    Raises IntegrityError for an altered head record in the file.
    """
    if rec is None:
        return None
    from sqlalchemy import func, select

    from ..store.models import AuditEntry

    with v.read() as s:
        head = v.audit._read_head(s)
        # Without a head record (removed: every read refuses that) the log's own end is the file's.
        file_seq = (
            head.seq if head is not None else int(s.execute(select(func.max(AuditEntry.seq))).scalar() or 0)
        )
        if file_seq < rec["seq"]:
            return rec, file_seq
        if head is not None and head.seq == rec["seq"]:
            return None if head.mac.hex() == rec["mac"] else (rec, file_seq)
        mac = s.execute(select(AuditEntry.mac).where(AuditEntry.seq == rec["seq"])).scalar()
    if not isinstance(mac, bytes) or mac.hex() != rec["mac"]:
        return rec, file_seq
    return None


def rolled_back(rec: dict[str, Any], file_seq: int) -> IntegrityError:
    if file_seq < rec["seq"]:
        message = (
            f"the vault is older than the last state seen on this machine (entry {file_seq} of "
            f"{rec['seq']}): it was rolled back or restored from a backup"
        )
    else:
        message = (
            f"the vault's history differs from the last state seen on this machine (entry {rec['seq']}): "
            "it was replaced by another copy of the vault"
        )
    return IntegrityError(message, ROLLED_BACK_HINT)


def check_open(v: Vault) -> dict[str, Any] | None:
    """Refuse (IntegrityError) a file older than, or diverging from, its recorded head; return that
    record (None when this machine has recorded none)."""
    rec = read(v)
    found = compare(v, rec)
    if found is not None:
        raise rolled_back(*found)
    return rec
