"""Endorsements: an admin's Ed25519 signature over a member's name, public keys and role.

A member counts only with a chain of valid endorsements back to the team's first admin, who is
self-endorsed and whose fingerprint every member pinned at ``team join`` (DESIGN §12). The walk is
breadth-first from that root, so cycles and chains of any length end. docs/spec.md "Endorsement".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import IntegrityError
from ..keys import crypto
from .encoding import frame
from .memberkey import MemberKey, MemberPublic

_DOMAIN = b"handover-vault/v1 team endorsement"


@dataclass(frozen=True)
class Member:
    """A member row as the team database holds it (everything here is public)."""

    member_id: str
    name: str
    public: MemberPublic
    admin: bool
    endorsed_by: str
    signature: bytes


def message(team_id: str, m: Member) -> bytes:
    p = m.public
    return frame(_DOMAIN, team_id, m.member_id, m.name, p.x25519, p.ed25519, m.admin, m.endorsed_by)


def endorse(
    admin_key: MemberKey,
    admin_id: str,
    team_id: str,
    member_id: str,
    name: str,
    public: MemberPublic,
    admin: bool,
) -> Member:
    """A member row signed by ``admin_key`` (``admin_id == member_id`` for the first admin)."""
    unsigned = Member(member_id, name, public, admin, admin_id, b"")
    return Member(member_id, name, public, admin, admin_id, admin_key.sign(message(team_id, unsigned)))


def _walk(
    team_id: str, pinned: str, members: Iterable[Member]
) -> tuple[dict[str, Member], dict[str, Member]]:
    rows: dict[str, Member] = {}
    duplicated: set[str] = set()
    for m in members:
        if m.member_id in rows:
            duplicated.add(m.member_id)  # ambiguous: neither copy counts
        rows[m.member_id] = m
    for d in duplicated:
        rows.pop(d)
    children: dict[str, list[Member]] = {}
    valid: dict[str, Member] = {}
    queue: list[Member] = []
    for m in rows.values():
        if m.endorsed_by == m.member_id:
            if m.admin and m.public.fingerprint == pinned and _signed(team_id, m, m.public):
                valid[m.member_id] = m
                queue.append(m)
        else:
            children.setdefault(m.endorsed_by, []).append(m)
    while queue:
        admin = queue.pop()
        if not admin.admin:
            continue
        for m in children.get(admin.member_id, ()):
            if m.member_id not in valid and _signed(team_id, m, admin.public):
                valid[m.member_id] = m
                queue.append(m)
    return rows, valid


def _signed(team_id: str, m: Member, by: MemberPublic) -> bool:
    return crypto.verify_signature(by.ed25519, m.signature, message(team_id, m))


def verify_endorsements(
    team_id: str, pinned_admin_fingerprint: str, members: Iterable[Member]
) -> dict[str, MemberPublic]:
    """The members with a valid chain back to the pinned first admin, by member id."""
    _, valid = _walk(team_id, pinned_admin_fingerprint, members)
    return {k: m.public for k, m in valid.items()}


def endorsed_admins(
    team_id: str, pinned_admin_fingerprint: str, members: Iterable[Member]
) -> dict[str, MemberPublic]:
    """The endorsed members who are admins (the only valid grant signers)."""
    _, valid = _walk(team_id, pinned_admin_fingerprint, members)
    return {k: m.public for k, m in valid.items() if m.admin}


def why_not_endorsed(team_id: str, pinned: str, members: Iterable[Member], member_id: str) -> str | None:
    """None if ``member_id`` is endorsed, else a sentence (for an error message) saying why not."""
    rows, valid = _walk(team_id, pinned, list(members))
    if member_id in valid:
        return None
    m = rows.get(member_id)
    if m is None:
        return f"member {member_id} is not registered (or registered twice)"
    if m.endorsed_by == member_id:
        if m.public.fingerprint != pinned:
            return f"member {member_id} endorsed itself but is not the pinned first admin"
        return f"member {member_id}'s self-endorsement does not verify"
    by = rows.get(m.endorsed_by)
    if by is None:
        return f"member {member_id} was endorsed by unknown member {m.endorsed_by}"
    if not by.admin:
        return f"member {member_id} was endorsed by {m.endorsed_by}, who is not an admin"
    if m.endorsed_by not in valid:
        return f"member {member_id} was endorsed by {m.endorsed_by}, who has no valid endorsement chain"
    return f"member {member_id}'s endorsement signature does not verify (keys changed or forged)"


def require_endorsed(team_id: str, pinned: str, members: Iterable[Member], member_id: str) -> MemberPublic:
    """The member's public keys, or IntegrityError (exit 4) saying why they are not endorsed."""
    rows = list(members)
    reason = why_not_endorsed(team_id, pinned, rows, member_id)
    if reason is not None:
        raise IntegrityError(reason, "nothing was wrapped; an admin must endorse the member again")
    return next(m.public for m in rows if m.member_id == member_id)
