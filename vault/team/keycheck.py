"""The team key vouched for by an admin: what a member checks before using the key their slot gave.

A team key slot is an age wrap to the member's X25519 public key, and anyone who knows that key
can make one: the server too, with a team key of its own choosing, or with an older team key put
back after a rotation (which the removed member also knows). A member who used such a key would
seal what they write (vault-wide audit details, the profile, commitments) to the server or to the
removed member. So every admin who makes a team key (``team init``, ``team init --from``, the
rotation at ``member remove``) signs a **key commitment**: an HMAC of the team id under a key
derived from the team key, signed with the admin's Ed25519 key, kept in ``meta``. At unlock, the
member recomputes it from the key their slot opened to and checks the signature under an admin
whose endorsement chain leads to the first admin pinned on their machine. A key the server chose,
an older key put back, or a commitment removed is refused (exit 4) before the key is used.

The commitment reveals nothing of the key (an HMAC under a sub-key) and no member can make one
without being an endorsed admin.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import IntegrityError
from ..keys import crypto
from .encoding import frame, unframe
from .memberkey import MemberKey, MemberPublic

META_KEY = "team_key_commitment"
_CHECK_INFO = b"handover-vault/v1 team key check"
_SIGNED = b"handover-vault/v1 team key commitment"
_VALUE = b"handover-vault/v1 team key commitment value"
_HINT = "check with your team's admin before using this database; nothing was opened or written"


def _message(team_id: str, team_key: bytes) -> bytes:
    check = crypto.mac(crypto.hkdf(team_key, _CHECK_INFO), frame(_SIGNED, team_id))
    return frame(_SIGNED, team_id, check)


def sign(admin: MemberKey, admin_id: str, team_id: str, team_key: bytes) -> bytes:
    """The ``meta`` value an admin writes for the team key they made."""
    return frame(_VALUE, admin_id, admin.sign(_message(team_id, team_key)))


def verify(value: bytes | None, team_id: str, team_key: bytes, admins: Mapping[str, MemberPublic]) -> None:
    """Raise IntegrityError unless ``value`` is an endorsed admin's commitment to ``team_key``.

    ``admins``: :func:`vault.team.endorse.endorsed_admins` (without the removed members).
    """
    if not value:
        raise IntegrityError(
            "the team key is vouched for by no admin: its key commitment was removed from the database",
            _HINT,
        )
    try:
        admin_id, signature = unframe(_VALUE, bytes(value))
    except IntegrityError:
        raise IntegrityError("the team key commitment is malformed (tampered)", _HINT) from None
    admin = admins.get(admin_id) if isinstance(admin_id, str) else None
    if (
        admin is None
        or not isinstance(signature, bytes)
        or not crypto.verify_signature(admin.ed25519, signature, _message(team_id, team_key))
    ):
        raise IntegrityError(
            "your team key slot does not hold the team key an admin made (a key the server wrapped to "
            "you, or an older team key put back after a rotation)",
            _HINT,
        )
