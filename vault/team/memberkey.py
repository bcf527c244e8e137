"""A member's personal key: an age X25519 identity (for wrapping) and an Ed25519 key (for signing).

Kept in a small local file protected by the member's passphrase with the vault's own key-slot
construction (:func:`vault.keys.make_slot`): Argon2id -> KEK -> AES-256-GCM wrap of a random file
key, which seals the private halves. The slot's place string is the SHA-256 of the file's public
part, so a file whose public keys were swapped does not open. Layout: docs/spec.md "Member key file".
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import pyrage
from pyrage import x25519

from ..errors import AuthenticationFailed, IntegrityError
from ..files import write_private
from ..keys import crypto
from ..keys import hierarchy as keys
from ..keys.crypto import DecryptFailed, KdfParams, Sealer
from .encoding import frame, unframe

MAGIC = b"HVMEMBER"
VERSION = 0x01  # checked before anything else is parsed
_PUBLIC_DOMAIN = b"handover-vault/v1 member public"
_PRIVATE_DOMAIN = b"handover-vault/v1 member private"
_SLOT_KIND = "member-key"
_KDF = struct.Struct(">III")
MAX_FILE_BYTES = 4096  # a member key file is about 400 bytes


@dataclass(frozen=True)
class MemberPublic:
    """The public halves: the age recipient (``age1…``) and the raw 32-byte Ed25519 key."""

    x25519: str
    ed25519: bytes

    @property
    def encoding(self) -> bytes:
        """The canonical encoding of both public keys (what the fingerprint covers)."""
        return frame(_PUBLIC_DOMAIN, self.x25519, self.ed25519)

    @property
    def fingerprint(self) -> str:
        """``hv:`` + 8 groups of 4 hex, as a vault's, over :attr:`encoding`."""
        return crypto.fingerprint(self.encoding)


@dataclass(frozen=True)
class MemberKey:
    public: MemberPublic
    identity: str  # AGE-SECRET-KEY-1…
    ed25519_private: bytes

    def sign(self, data: bytes) -> bytes:
        return crypto.sign(self.ed25519_private, data)

    def __repr__(self) -> str:  # never the private halves
        return f"MemberKey({self.public.fingerprint})"


def default_path() -> Path:
    """``HANDOVER_MEMBER_KEY``, else ``member.key`` in the user data dir."""
    override = os.environ.get("HANDOVER_MEMBER_KEY")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir("handover-vault")) / "member.key"


def _place(public: bytes) -> str:
    return "member:" + hashlib.sha256(public).hexdigest()


def create(path: Path | str, passphrase: str, kdf: KdfParams | None = None) -> MemberKey:
    """Make a member key and write it 0600 to ``path``; never overwrites.

    Raises:
        InvalidInput: passphrase too short or KDF below the floor. AlreadyExists: ``path`` exists.
    """
    if kdf is None:
        kdf = crypto.kdf_params()
    secret = keys.new_passphrase(passphrase)
    ident = x25519.Identity.generate()
    ed_priv, ed_pub = crypto.new_signing_key()
    key = MemberKey(MemberPublic(str(ident.to_public()), ed_pub), str(ident), ed_priv)
    public = key.public.encoding
    file_key = crypto.random_key()
    slot = keys.make_slot(_place(public), _SLOT_KIND, secret, file_key, kdf)
    sealed = Sealer(file_key).seal(frame(_PRIVATE_DOMAIN, key.identity, ed_priv), public)
    body = b"".join(
        [
            MAGIC,
            bytes([VERSION]),
            frame(b"handover-vault/v1 member key file", public, slot.id, slot.salt, slot.wrapped, sealed),
            _KDF.pack(kdf.memory_kib, kdf.iterations, kdf.lanes),
        ]
    )
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, body + hashlib.sha256(body).digest())
    return key


def load(path: Path | str, passphrase: str) -> MemberKey:
    """Open a member key file.

    Raises:
        AuthenticationFailed: wrong passphrase. IntegrityError: the file is damaged (named, never
        quoted). NotFound/StorageError: cannot be read.
    """
    path = Path(path)
    damaged = IntegrityError(f"the member key file {path} is damaged", "restore it from a backup")
    try:
        data = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except FileNotFoundError:
        from ..errors import NotFound

        raise NotFound(
            f"the member key file {path} does not exist", "make one: handover member key"
        ) from None
    body, digest = data[:-32], data[-32:]
    if len(data) > MAX_FILE_BYTES or not body.startswith(MAGIC) or hashlib.sha256(body).digest() != digest:
        raise damaged
    if body[len(MAGIC)] != VERSION:
        raise IntegrityError(f"the member key file {path} has an unknown version")
    try:
        fields = unframe(b"handover-vault/v1 member key file", body[len(MAGIC) + 1 : -_KDF.size])
        public, slot_id, salt, wrapped, sealed = fields
        pub_x, pub_ed = unframe(_PUBLIC_DOMAIN, public)  # type: ignore[arg-type]
    except (IntegrityError, ValueError, TypeError):
        raise damaged from None
    params = KdfParams(*_KDF.unpack(body[-_KDF.size :]))
    slot = keys.SlotData(str(slot_id), _SLOT_KIND, salt, params, wrapped)  # type: ignore[arg-type]
    file_key = keys.try_unwrap(_place(public), slot, keys.normalise_passphrase(passphrase))  # type: ignore[arg-type]
    if file_key is None:
        raise AuthenticationFailed("wrong passphrase for the member key")
    try:
        ident_s, ed_priv = unframe(_PRIVATE_DOMAIN, Sealer(file_key).open(sealed, public))  # type: ignore[arg-type]
        ident = x25519.Identity.from_str(ident_s)
        ok = str(ident.to_public()) == pub_x and crypto.public_from_private(ed_priv) == pub_ed  # type: ignore[arg-type]
    except (DecryptFailed, IntegrityError, ValueError, TypeError, pyrage.IdentityError):
        raise damaged from None
    if not ok:
        raise damaged
    return MemberKey(MemberPublic(pub_x, pub_ed), ident_s, ed_priv)  # type: ignore[arg-type]
