"""Client data keys wrapped to members (and to the offline recovery key) with age, plus grant signatures.

age has no associated data, so the binding (team, client, key version, member) travels inside the
age payload and is compared after decryption; a blob copied to another grant row fails. The grant
signature by the granting admin covers the binding and the SHA-256 of the blob. docs/spec.md "Grant".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import pyrage
from pyrage import x25519

from ..errors import IntegrityError
from ..keys import crypto
from .encoding import frame, unframe
from .memberkey import MemberKey, MemberPublic

_KEY_DOMAIN = b"handover-vault/v1 team grant key"
_RECOVERY_DOMAIN = b"handover-vault/v1 team recovery key"
_SIG_DOMAIN = b"handover-vault/v1 team grant"
RECOVERY = "recovery"  # the member id field of a recovery wrap


@dataclass(frozen=True)
class Binding:
    team_id: str
    client_id: str
    key_version: int
    member_id: str

    def fields(self) -> tuple[str, str, int, str]:
        return (self.team_id, self.client_id, self.key_version, self.member_id)


def _wrap(recipient: str, domain: bytes, binding: Binding, key: bytes) -> bytes:
    if len(key) != crypto.KEY_SIZE:
        raise ValueError("a client data key is 32 bytes")
    blob: bytes = pyrage.encrypt(
        frame(domain, *binding.fields(), key), [x25519.Recipient.from_str(recipient)]
    )
    return blob


def _unwrap(identity: str, domain: bytes, binding: Binding, blob: bytes) -> bytes:
    where = f"the grant of client {binding.client_id} version {binding.key_version} for {binding.member_id}"
    try:
        plain = pyrage.decrypt(blob, [x25519.Identity.from_str(identity)])
        *fields, key = unframe(domain, plain)
    except (pyrage.DecryptError, IntegrityError, ValueError, TypeError):
        raise IntegrityError(f"{where} does not decrypt: tampered, or wrapped to another key") from None
    if tuple(fields) != binding.fields() or not isinstance(key, bytes) or len(key) != crypto.KEY_SIZE:
        raise IntegrityError(f"{where} is bound to another place: copied from another grant")
    return key


def wrap_for(member_public: MemberPublic, binding: Binding, key: bytes) -> bytes:
    """age-encrypt ``key`` and its binding to the member's X25519 recipient."""
    return _wrap(member_public.x25519, _KEY_DOMAIN, binding, key)


def unwrap(member_key: MemberKey, binding: Binding, blob: bytes) -> bytes:
    """The client key; IntegrityError for a damaged blob or any binding mismatch."""
    return _unwrap(member_key.identity, _KEY_DOMAIN, binding, blob)


def grant_message(binding: Binding, granted_by: str, blob: bytes) -> bytes:
    return frame(_SIG_DOMAIN, *binding.fields(), granted_by, hashlib.sha256(blob).digest())


def sign_grant(admin_key: MemberKey, granted_by: str, binding: Binding, blob: bytes) -> bytes:
    return admin_key.sign(grant_message(binding, granted_by, blob))


def verify_grant(
    admins: Mapping[str, MemberPublic], granted_by: str, binding: Binding, blob: bytes, signature: bytes
) -> None:
    """``admins``: :func:`vault.team.endorse.endorsed_admins`. IntegrityError unless it verifies."""
    admin = admins.get(granted_by)
    if admin is None:
        raise IntegrityError(
            f"the grant of client {binding.client_id} to {binding.member_id} was signed "
            f"by {granted_by}, who is not an endorsed admin"
        )
    if not crypto.verify_signature(admin.ed25519, signature, grant_message(binding, granted_by, blob)):
        raise IntegrityError(
            f"the grant signature of client {binding.client_id} to {binding.member_id} is bad"
        )


def new_recovery_identity() -> tuple[str, str]:
    """A fresh offline recovery key: (``AGE-SECRET-KEY-1…`` identity, ``age1…`` recipient)."""
    ident = x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def wrap_recovery(recipient: str, team_id: str, client_id: str, key_version: int, key: bytes) -> bytes:
    return _wrap(recipient, _RECOVERY_DOMAIN, Binding(team_id, client_id, key_version, RECOVERY), key)


def unwrap_recovery(identity: str, team_id: str, client_id: str, key_version: int, blob: bytes) -> bytes:
    return _unwrap(identity, _RECOVERY_DOMAIN, Binding(team_id, client_id, key_version, RECOVERY), blob)
