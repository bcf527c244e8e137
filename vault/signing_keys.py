"""``handover new-signing-key``: the vault's Ed25519 identity replaced, its earlier keys remembered.

The signing key signs bundles, letters' fingerprints, receipts, checkpoints and certificates. It is
wrapped under the vault master key (the team key in a team), so whoever held that key could unwrap
and copy it: a member removed from a team (``member remove`` rotates the team key but cannot take
back a copy), or whoever learnt a vault file's master key before a ``rekey``. They could then sign
a bundle or a receipt in the vault's name. Replacing the key ends that for what is signed from now on:

1. a fresh Ed25519 key pair; the private key wrapped under the current master key, the public key
   in ``meta.signing_public`` (the fingerprint every letter, bundle and receipt shows from now on);
2. the key it replaces kept in ``meta.signing_history`` (public keys only, each with the audit
   entry that replaced it), so the receipts and checkpoints it signed still verify here, and one it
   signed for a later audit head (made with a copy after the replacement) is refused;
3. the audit entry ``vault.signing_key`` naming both fingerprints. All in one write transaction;
   ``signing_history`` is in the state commitment (a server or a copy that drops it is refused).

In a team only an admin replaces it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import IntegrityError
from .keys import crypto
from .store.models import Meta

if TYPE_CHECKING:
    from .core import Vault

HISTORY_KEY = "signing_history"
FORMAT = 1
ACTION = "vault.signing_key"


@dataclass(frozen=True)
class PastKey:
    """A signing key the vault used before: valid for audit heads before entry ``replaced_at``."""

    public: bytes
    replaced_at: int

    @property
    def fingerprint(self) -> str:
        return crypto.fingerprint(self.public)


def parse_history(value: Any) -> list[PastKey]:
    """The earlier signing keys (oldest first) from ``meta.signing_history``; [] when absent."""
    if value is None:
        return []
    try:
        data = json.loads(bytes(value))
        assert data["format"] == FORMAT
        keys = [PastKey(bytes.fromhex(k["public"]), int(k["replaced_at"])) for k in data["keys"]]
        assert all(len(k.public) == 32 and k.replaced_at > 0 for k in keys)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise IntegrityError(
            "the vault's record of its earlier signing keys is malformed (tampered)", "run: handover verify"
        ) from None
    return keys


def _history_value(keys: list[PastKey]) -> bytes:
    body = {
        "format": FORMAT,
        "keys": [{"public": k.public.hex(), "replaced_at": k.replaced_at} for k in keys],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signer_key(v: Vault, fingerprint: str, head_seq: int, what: str) -> bytes | None:
    """The public key of this vault named by ``fingerprint`` that may sign ``what`` (a receipt, a
    checkpoint) of audit head ``head_seq``: the current key, or an earlier one for a head before
    the entry that replaced it. None when no key of this vault has that fingerprint.

    Raises IntegrityError for an earlier key used for a head it could not have signed (made with a
    copy of it kept after the replacement).
    """
    if fingerprint == v.fingerprint:
        return v.signing_public
    for past in parse_history(v.meta_value(HISTORY_KEY)):
        if past.fingerprint == fingerprint:
            if head_seq >= past.replaced_at:
                raise IntegrityError(
                    f"the {what} was signed by {fingerprint} for audit entry {head_seq}, but that key was "
                    f"replaced at entry {past.replaced_at}: it was made with a copy of the replaced key",
                    "trust only what the vault's current key signs (see: handover new-signing-key --help)",
                )
            return past.public
    return None


@dataclass(frozen=True)
class Replaced:
    old: str
    new: str
    audit_seq: int


def new_signing_key(v: Vault) -> Replaced:
    """Replace the vault's signing key (in a team: an admin only). Returns both fingerprints."""
    from .integrity.commitment import set_committed_meta

    if v.keys.team:
        from .teams import _admin

        _admin(v)
    old_public = v.signing_public  # refuses a swapped public key before anything is replaced
    old = crypto.fingerprint(old_public)
    private, public = crypto.new_signing_key()
    with v.write("replacing the signing key") as s:
        row = s.get(Meta, "signing_public")
        assert row is not None
        if bytes(row.value) != old_public:
            raise IntegrityError(
                "the signing key changed while this ran; nothing was replaced", "run it again"
            )
        history = s.get(Meta, HISTORY_KEY)
        past = parse_history(None if history is None else history.value)
        seq = v.audit.append(s, ACTION, detail={"old": old, "new": crypto.fingerprint(public)})
        past.append(PastKey(old_public, seq))
        set_committed_meta(v, s, "signing_public", public)
        set_committed_meta(v, s, "signing_private", v.keys.wrap_signing_key(private))
        set_committed_meta(v, s, HISTORY_KEY, _history_value(past))
    v.forget_meta()
    return Replaced(old, crypto.fingerprint(public), seq)
