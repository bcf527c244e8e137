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
from .errors import IntegrityError, NoAccess, PolicyRefused
from .keys.crypto import DecryptFailed
from .keys.hierarchy import ClientKeys, VaultKeys
from .store.models import Grant, RecoveryWrap
from .team.encoding import frame, unframe
from .team.grants import Binding, sign_grant, unwrap, verify_grant, wrap_for, wrap_recovery
from .team.memberkey import MemberKey, MemberPublic

_SESSION_DOMAIN = b"handover-vault/v1 team session member"
INDEX_KEY = "team_index_key"  # meta: the client-index key once the team key was rotated


def index_key_aad(vault_id: str) -> bytes:
    return f"handover-vault/v1/team-index-key\x00{vault_id}".encode()


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

    # --- what outlives a rotation of the team key (vault/teamrotation.py) ------------------------

    def adopt_index_key(self, sealed: bytes | None) -> None:
        """The client-index key (the slugs' keyed lookups) of a team whose key was rotated.

        A rotation keeps it: recomputing a lookup takes the client's slug, which only the members
        granted that client can read, so an admin holding only some clients could not rotate. It is
        sealed under the current team key in ``meta.team_index_key`` (``sealed``; None: never
        rotated, the key derived from the team key). Raises IntegrityError if it was altered.
        """
        if sealed is None:
            return
        try:
            self.client_index_key = self.vmk_sealer.open(sealed, index_key_aad(self.vault_id))
        except (DecryptFailed, TypeError):
            raise IntegrityError(
                "the team's client-index key does not decrypt under the team key: tampered",
                "run: handover audit verify",
            ) from None

    def sealed_index_key(self) -> bytes:
        return self.vmk_sealer.seal(self.client_index_key, index_key_aad(self.vault_id))

    def still_current(self, s: Any) -> bool:
        """Whether this member's team key slot still opens to the key this process holds (False:
        another admin rotated the team key while this command ran; the slot is gone when removed)."""
        from .keys import crypto
        from .store.models import KeySlot
        from .teams import MEMBER_SLOT, unwrap_team_key

        slot = s.get(KeySlot, self.member_id)
        if slot is None or slot.kind != MEMBER_SLOT:
            return False
        try:
            vmk = unwrap_team_key(self.vault_id, self.member_id, self.member, bytes(slot.wrapped))
        except IntegrityError:
            return False
        return crypto.mac_equal(vmk, self.vmk)

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
