"""The key hierarchy: key slots, the vault master key (VMK), client keys and derived keys.

Passphrase or recovery code --Argon2id--> KEK --AES-256-GCM--> VMK (one random 256-bit key).
The VMK wraps every client's data key and the Ed25519 signing key; HKDF derives the audit MAC key,
the audit detail key and the slug index key from it. docs/spec.md gives the exact byte layouts.
"""

from __future__ import annotations

import os
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import AuthenticationFailed, IntegrityError, InvalidInput
from . import crypto
from .crypto import DecryptFailed, KdfParams, Sealer

SALT_SIZE = 16  # 128-bit salt per slot (RFC 9106 recommends 128 bits).
# Crockford's base32: no I, L, O or U, so a code read aloud or copied by hand is not misread.
RECOVERY_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# 28 symbols x 5 bits = 140 random bits (>= 128 required), shown as 7 groups of 4.
RECOVERY_SYMBOLS = 28
# Sub-key labels for HKDF. Distinct labels make the derived keys independent of each other.
INFO_AUDIT_MAC = b"handover-vault/v1 audit mac"
INFO_AUDIT_DETAIL = b"handover-vault/v1 audit detail"
INFO_CLIENT_INDEX = b"handover-vault/v1 client index"
INFO_RECORD_INDEX = b"handover-vault/v1 record index"
INFO_SEARCH_INDEX = b"handover-vault/v1 search index"
INFO_STATE = (
    b"handover-vault/v1 state commitment"  # the keyed state commitment (vault/integrity/commitment.py)
)


def _aad(*parts: str) -> bytes:
    """Associated data: NUL-joined fields. No field can contain NUL (ids, kinds, numbers)."""
    return "\x00".join(parts).encode("utf-8")


def normalise_passphrase(text: str) -> bytes:
    """NFC-normalise so that the same passphrase typed on another keyboard/OS gives the same bytes."""
    if not text:
        raise InvalidInput("the passphrase is empty")
    return unicodedata.normalize("NFC", text).encode("utf-8")


# OWASP ASVS 2.1.1 (and NIST SP 800-63B's floor for a user-chosen secret that guards everything):
# at least 12 characters. Counted after NFC, so the same passphrase counts the same on every keyboard.
MIN_PASSPHRASE_CHARS = 12


def new_passphrase(text: str) -> bytes:
    """A passphrase being set (``init``, ``passwd``, ``recover``), normalised; InvalidInput if too short.

    Only new passphrases are held to the floor: a vault made before it keeps opening.
    """
    secret = normalise_passphrase(text)
    if len(unicodedata.normalize("NFC", text)) < MIN_PASSPHRASE_CHARS:
        raise InvalidInput(
            f"the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; nothing was changed",
            "a few unrelated words make a passphrase that is long and still easy to type",
        )
    return secret


def new_recovery_code() -> str:
    symbols = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_SYMBOLS))
    return "-".join(symbols[i : i + 4] for i in range(0, RECOVERY_SYMBOLS, 4))


def normalise_recovery_code(text: str) -> bytes:
    """Accept the code in any case, with or without dashes/spaces, with O/I/L typed for 0/1/1."""
    cleaned = text.upper().replace("-", "").replace(" ", "").strip()
    cleaned = cleaned.translate(str.maketrans("OIL", "011"))
    if len(cleaned) != RECOVERY_SYMBOLS or any(c not in RECOVERY_ALPHABET for c in cleaned):
        # Same exit as a wrong code: the message does not help an attacker.
        raise AuthenticationFailed("the recovery code is not valid")
    return cleaned.encode("ascii")


@dataclass(frozen=True)
class SlotData:
    id: str
    kind: str
    salt: bytes
    params: KdfParams
    wrapped: bytes


def slot_aad(vault_id: str, slot_id: str, kind: str, params: KdfParams) -> bytes:
    # The KDF parameters are bound too: lowering them in the file makes the unwrap fail.
    return _aad(
        "handover-vault/v1/slot",
        vault_id,
        slot_id,
        kind,
        str(params.memory_kib),
        str(params.iterations),
        str(params.lanes),
    )


def make_slot(vault_id: str, kind: str, secret: bytes, vmk: bytes, params: KdfParams) -> SlotData:
    """Wrap the VMK under a KEK derived from ``secret``. Raises InvalidInput below the KDF floor."""
    crypto.check_kdf_for_create(params)
    slot_id = str(uuid.uuid4())
    salt = os.urandom(SALT_SIZE)
    kek = crypto.derive_kek(secret, salt, params)
    wrapped = Sealer(kek).seal(vmk, slot_aad(vault_id, slot_id, kind, params))
    return SlotData(slot_id, kind, salt, params, wrapped)


def vault_file_slots(
    vault_id: str, passphrase: bytes, recovery_code: str, vmk: bytes, params: KdfParams
) -> list[SlotData]:
    """A vault file's two key slots: the passphrase's and the recovery code's (shown once)."""
    return [
        make_slot(vault_id, "passphrase", passphrase, vmk, params),
        make_slot(vault_id, "recovery", normalise_recovery_code(recovery_code), vmk, params),
    ]


def try_unwrap(vault_id: str, slot: SlotData, secret: bytes) -> bytes | None:
    """The VMK if ``secret`` opens this slot, else None. Absurd stored params raise IntegrityError."""
    crypto.check_kdf_for_open(slot.params)
    # The salt comes from the file as well: Argon2id raises ValueError/TypeError on one that is
    # shorter than 8 bytes or not bytes at all, so a malformed one is refused like absurd params.
    if not isinstance(slot.salt, bytes) or not 8 <= len(slot.salt) <= 64:
        raise IntegrityError(
            "a key slot's stored salt is malformed; refusing to run the KDF",
            "the vault file may be corrupt or hostile",
        )
    kek = crypto.derive_kek(secret, slot.salt, slot.params)
    try:
        vmk = Sealer(kek).open(slot.wrapped, slot_aad(vault_id, slot.id, slot.kind, slot.params))
    except DecryptFailed:
        return None
    if len(vmk) != crypto.KEY_SIZE:
        return None
    return vmk


class VaultKeys:
    """Keys available once the vault is unlocked. Built once; sealers are cached per key."""

    #: A team member's keys (vault/teamkeys.py), whose client keys come from grants.
    team = False

    def __init__(self, vault_id: str, vmk: bytes) -> None:
        self.vault_id = vault_id
        self.vmk = vmk
        self.vmk_sealer = Sealer(vmk)
        self.audit_mac_key = crypto.hkdf(vmk, INFO_AUDIT_MAC)
        self.audit_detail_key = crypto.hkdf(vmk, INFO_AUDIT_DETAIL)
        self.audit_detail = Sealer(self.audit_detail_key)
        self.client_index_key = crypto.hkdf(vmk, INFO_CLIENT_INDEX)
        self.state_key = crypto.hkdf(vmk, INFO_STATE)
        self._clients: dict[str, ClientKeys] = {}

    def client_lookup(self, slug: str) -> str:
        return crypto.mac(self.client_index_key, slug.encode("utf-8")).hex()

    # --- client data keys -------------------------------------------------------------------------

    def client_key_aad(self, client_id: str) -> bytes:
        return _aad("handover-vault/v1/client-key", self.vault_id, client_id)

    def wrap_client_key(self, client_id: str, key: bytes) -> bytes:
        return self.vmk_sealer.seal(key, self.client_key_aad(client_id))

    def client(self, client_id: str, wrapped: bytes, s: Any = None, key_version: int = 1) -> ClientKeys:
        """The client's keys from its wrapped data key (``s`` and ``key_version`` serve a team
        vault, whose client keys come from the member's grants: vault/teamkeys.py)."""
        cached = self._clients.get(client_id)
        if cached is not None:
            return cached
        try:
            key = self.vmk_sealer.open(wrapped, self.client_key_aad(client_id))
        except DecryptFailed:
            raise IntegrityError(
                f"the data key of client {client_id} does not decrypt: tampered or corrupt",
                "the other clients are unaffected; restore this client from a backup",
            ) from None
        keys = ClientKeys(key)
        self._clients[client_id] = keys
        return keys

    def forget_client(self, client_id: str) -> None:
        self._clients.pop(client_id, None)

    def client_added(self, s: Any, client_id: str, key: bytes) -> None:
        """A new client's key was made (a team vault grants it here; a vault file wraps it in the row)."""

    # --- signing key ------------------------------------------------------------------------------

    def signing_aad(self) -> bytes:
        return _aad("handover-vault/v1/signing-key", self.vault_id)

    def profile_aad(self) -> bytes:
        """The technician profile's place: one per vault (``meta.profile``)."""
        return _aad("handover-vault/v1/profile", self.vault_id)

    def wrap_signing_key(self, private_raw: bytes) -> bytes:
        return self.vmk_sealer.seal(private_raw, self.signing_aad())

    def unwrap_signing_key(self, wrapped: bytes) -> bytes:
        try:
            return self.vmk_sealer.open(wrapped, self.signing_aad())
        except DecryptFailed:
            raise IntegrityError("the vault's signing key does not decrypt: tampered or corrupt") from None


class ClientKeys:
    """A client's data key and the keys derived from it (all shredded with the wrapped key)."""

    __slots__ = ("key", "record_index_key", "sealer", "search_key", "search_mac")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.sealer = Sealer(key)
        self.record_index_key = crypto.hkdf(key, INFO_RECORD_INDEX)
        self.search_key = crypto.hkdf(key, INFO_SEARCH_INDEX)
        # Keyed once: a record contributes dozens of tokens, an import hundreds of thousands.
        self.search_mac = crypto.Mac(self.search_key)

    def record_lookup(self, kind: str, name: str) -> str:
        normal = unicodedata.normalize("NFC", name).casefold().strip()
        return crypto.mac(self.record_index_key, f"{kind}\x00{normal}".encode()).hex()


def record_aad(vault_id: str, client_id: str, kind: str, record_id: str, version: int) -> bytes:
    """Binds a record's ciphertext to its vault, client, kind, id and version (DESIGN §3)."""
    return _aad("handover-vault/v1/record", vault_id, client_id, kind, record_id, str(version))
