"""The first admin's fingerprint each member pinned at ``team join``, kept on their own machine.

The team database also names its first admin, but the database is the server's word: a member
trusts only the fingerprint told out of band and pinned here (one small JSON file per team vault,
0600, in the user state dir, keyed by the vault's id and location).

Beside it, the fingerprints of the members this machine has seen removed (by an admin's signed
``member.remove`` entry): a server that later deletes that entry does not bring them back here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..files import write_private


def _dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("handover-vault")) / "team-pins"


def path(location: str, vault_id: str) -> Path:
    key = f"{vault_id}\x00{location}".encode("utf-8", "surrogateescape")
    return _dir() / f"{hashlib.sha256(key).hexdigest()[:32]}.json"


def write(
    location: str, vault_id: str, root: str, member_id: str, removed: frozenset[str] = frozenset()
) -> Path:
    """Pin ``root`` (the first admin's fingerprint) for this team vault; the member's id beside it."""
    body = {
        "format": "handover-team-pin/1",
        "location": location,
        "vault_id": vault_id,
        "root": root,
        "member_id": member_id,
        "removed": sorted(removed),
    }
    target = path(location, vault_id)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return write_private(target, json.dumps(body, indent=2).encode(), overwrite=True)


def read(location: str, vault_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path(location, vault_id).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("vault_id") != vault_id:
        return None
    if not isinstance(data.get("root"), str) or not isinstance(data.get("member_id"), str):
        return None
    return data


def removed(pin: dict[str, Any]) -> frozenset[str]:
    """The removed members' fingerprints this machine has seen (none in a pin made before them)."""
    found = pin.get("removed")
    return frozenset(f for f in found if isinstance(f, str)) if isinstance(found, list) else frozenset()


def remember_removed(location: str, vault_id: str, fingerprints: frozenset[str]) -> None:
    """Add ``fingerprints`` to the removed members pinned for this team vault (never takes any away)."""
    pin = read(location, vault_id)
    if pin is None or fingerprints <= removed(pin):
        return
    write(location, vault_id, pin["root"], pin["member_id"], removed(pin) | fingerprints)
