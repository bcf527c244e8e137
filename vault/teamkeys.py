"""The keys of one member in a team vault: the team key, and each client's key only by a grant.

A team vault's master key (the *team key*: audit MACs, the commitment, the signing key, slug
lookups) is wrapped to every endorsed member. A client's data key is not wrapped under it: it is
held only in ``grants`` rows, age-wrapped to each member allowed to see the client and signed by
the admin who granted it (vault/team/grants.py). :class:`TeamKeys` is :class:`VaultKeys` with
those two differences, so every command works unchanged on the clients a member holds:

- :meth:`client` opens the member's grant for the client's current key version, after checking
  the grant's signature under an endorsed admin; no grant is :class:`NoAccess`.
- :meth:`wrap_client_key` puts nothing in the client row; :meth:`client_added` grants the new
  client to its creator (an admin) and wraps it to the team's offline recovery key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .clock import utcnow
from .errors import NoAccess, PolicyRefused
from .keys.hierarchy import ClientKeys, VaultKeys
from .store.models import Grant, RecoveryWrap
from .team.encoding import frame, unframe
from .team.grants import Binding, sign_grant, unwrap, verify_grant, wrap_for, wrap_recovery
from .team.memberkey import MemberKey, MemberPublic

_SESSION_DOMAIN = b"handover-vault/v1 team session member"


class TeamKeys(VaultKeys):
    """The team key plus this member's private keys and the team's endorsed admins."""

    team = True

    def __init__(
        self,
        vault_id: str,
        vmk: bytes,
        member: MemberKey,
        member_id: str,
        admins: Mapping[str, MemberPublic],
        recovery_recipient: str,
        removed: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(vault_id, vmk)
        self.member = member
        self.member_id = member_id
        self.admins = dict(admins)
        self.recovery_recipient = recovery_recipient
        # Fingerprints of removed members this machine has seen (team/pins.py), whatever the log says now.
        self.removed = removed
        self._versions: dict[tuple[str, int], ClientKeys] = {}

    @property
    def is_admin(self) -> bool:
        return self.member_id in self.admins

    def binding(self, client_id: str, key_version: int, member_id: str | None = None) -> Binding:
        return Binding(self.vault_id, client_id, key_version, member_id or self.member_id)

    # --- client keys by grant ---------------------------------------------------------------------

    def wrap_client_key(self, client_id: str, key: bytes) -> bytes:
        return b""  # the client row holds no wrap of its key: the grants do

    def client(self, client_id: str, wrapped: bytes, s: Any = None, key_version: int = 1) -> ClientKeys:
        cached = self._versions.get((client_id, key_version))
        if cached is not None:
            return cached
        if s is None:
            raise NoAccess(f"the key of client {client_id} is read from a grant, and no session was given")
        grant = s.get(Grant, (client_id, key_version, self.member_id))
        if grant is None:
            raise NoAccess(
                "this client is not granted to you in the team vault",
                "an admin can grant it: handover grant SLUG MEMBER",
            )
        binding = self.binding(client_id, key_version)
        wrapped_key = bytes(grant.wrapped)
        verify_grant(self.admins, grant.granted_by, binding, wrapped_key, bytes(grant.signature))
        keys = ClientKeys(unwrap(self.member, binding, wrapped_key))
        self._versions[(client_id, key_version)] = keys
        return keys

    def forget_client(self, client_id: str) -> None:
        super().forget_client(client_id)
        for k in [k for k in self._versions if k[0] == client_id]:
            del self._versions[k]

    def client_added(self, s: Any, client_id: str, key: bytes) -> None:
        if not self.is_admin:
            raise PolicyRefused(
                "only a team admin adds clients (the new client's key is granted by an admin's signature)",
                "ask an admin to add it, or to make you an admin",
            )
        self.put_grant(s, client_id, 1, self.member_id, self.member.public, key)
        s.add(RecoveryWrap(client_id=client_id, key_version=1, wrapped=self._recovery(client_id, 1, key)))
        self._versions[(client_id, 1)] = ClientKeys(key)

    def put_grant(
        self, s: Any, client_id: str, key_version: int, member_id: str, public: MemberPublic, key: bytes
    ) -> None:
        """Wrap ``key`` to a member (whose endorsement the caller checked) and sign the grant."""
        binding = self.binding(client_id, key_version, member_id)
        blob = wrap_for(public, binding, key)
        signature = sign_grant(self.member, self.member_id, binding, blob)
        s.add(
            Grant(
                client_id=client_id,
                key_version=key_version,
                member_id=member_id,
                wrapped=blob,
                granted_by=self.member_id,
                signature=signature,
                created_at=utcnow(),
            )
        )

    def _recovery(self, client_id: str, key_version: int, key: bytes) -> bytes:
        return wrap_recovery(self.recovery_recipient, self.vault_id, client_id, key_version, key)

    def recovery_wrap(self, client_id: str, key_version: int, key: bytes) -> RecoveryWrap:
        return RecoveryWrap(
            client_id=client_id, key_version=key_version, wrapped=self._recovery(client_id, key_version, key)
        )

    def renewed(self, client_id: str, key_version: int, key: bytes) -> ClientKeys:
        """Adopt a client's new key version (after a revoke) in this process's cache."""
        keys = ClientKeys(key)
        self._versions[(client_id, key_version)] = keys
        return keys

    # --- sessions ---------------------------------------------------------------------------------

    def session_blob(self) -> bytes:
        """What an unlock session keeps besides the team key: this member's private keys."""
        m = self.member
        return frame(
            _SESSION_DOMAIN, self.member_id, m.public.x25519, m.public.ed25519, m.identity, m.ed25519_private
        )


def member_from_session(blob: bytes) -> tuple[str, MemberKey]:
    """(member id, member key) from :meth:`TeamKeys.session_blob`."""
    member_id, x, ed_pub, identity, ed_priv = unframe(_SESSION_DOMAIN, blob)
    assert isinstance(member_id, str) and isinstance(x, str) and isinstance(identity, str)
    assert isinstance(ed_pub, bytes) and isinstance(ed_priv, bytes)
    return member_id, MemberKey(MemberPublic(x, ed_pub), identity, ed_priv)
