"""Recipe-level cryptography: the only module that imports ``cryptography.hazmat``.

Everything here composes primitives of the ``cryptography`` package as DESIGN §3 describes; nothing
is hand-rolled. Failures of authenticated decryption become :class:`IntegrityError` (or, for key
unwrapping, the caller turns them into :class:`AuthenticationFailed`).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import IntegrityError, InvalidInput

KEY_SIZE = 32  # AES-256 and HMAC-SHA256 keys: 256 bits.
# AES-GCM's nonce is 96 bits: the size for which GCM is specified without GHASH-derived counters, and
# random 96-bit nonces stay safe for far more than the 2^32 messages one key will ever seal here.
NONCE_SIZE = 12
TAG_SIZE = 16
# Envelope version byte, first in every sealed blob and checked before anything else.
ENVELOPE_V1 = 0x01


class DecryptFailed(Exception):
    """Internal: an AEAD open failed. Callers decide whether that means wrong key or tampering."""


def random_key() -> bytes:
    """A fresh random 256-bit key from the OS CSPRNG."""
    return os.urandom(KEY_SIZE)


class Sealer:
    """AES-256-GCM with a random 96-bit nonce, built once per key.

    Blob layout: ``version (1) || nonce (12) || ciphertext || tag (16)``.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return bytes([ENVELOPE_V1]) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes | bytearray | memoryview, aad: bytes) -> bytes:
        """Open a sealed blob; raise :class:`DecryptFailed` for any format or tag failure."""
        # Blobs are read from the vault file, where SQLite keeps whatever type was written: text or a
        # number in an envelope column is a malformed envelope (tampering), not a TypeError.
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise DecryptFailed("malformed envelope")
        blob = bytes(blob)
        # AESGCM accepts nonces of 8 to 128 bytes; our format fixes 12, so the layout is checked here
        # and a blob of any other shape is refused before the cipher sees it.
        if len(blob) < 1 + NONCE_SIZE + TAG_SIZE or blob[0] != ENVELOPE_V1:
            raise DecryptFailed("malformed envelope")
        nonce = blob[1 : 1 + NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, blob[1 + NONCE_SIZE :], aad)
        except InvalidTag as exc:
            raise DecryptFailed("authentication failed") from exc


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost, stored per key slot so that it can be raised later."""

    memory_kib: int
    iterations: int
    lanes: int

    def as_dict(self) -> dict[str, int]:
        return {"memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes}


# RFC 9106 §4, second recommended option: 64 MiB, t=3, p=4.
DEFAULT_KDF = KdfParams(memory_kib=64 * 1024, iterations=3, lanes=4)
# OWASP's floor for Argon2id (19 MiB, t=2, p=1): no slot is ever created below it.
MIN_KDF = KdfParams(memory_kib=19 * 1024, iterations=2, lanes=1)
# Parameters read from a file are capped before the KDF runs, so a hostile vault cannot make us
# allocate gigabytes or spin for hours.
MAX_MEMORY_KIB = 4 * 1024 * 1024
MAX_ITERATIONS = 10
MAX_LANES = 64


def kdf_params() -> KdfParams:
    """The cost for new slots. ``HANDOVER_KDF=minimum`` is the test hook: OWASP's floor, never lower."""
    if os.environ.get("HANDOVER_KDF") == "minimum":
        return MIN_KDF
    return DEFAULT_KDF


def check_kdf_for_create(p: KdfParams) -> None:
    if p.memory_kib < MIN_KDF.memory_kib or p.iterations < MIN_KDF.iterations or p.lanes < 1:
        raise InvalidInput(
            "Argon2id parameters below the floor (19 MiB, 2 iterations) are refused",
            "raise the memory or iteration count",
        )
    check_kdf_for_open(p)


def check_kdf_for_open(p: KdfParams) -> None:
    # The values come from the vault file, and SQLite returns whatever type was stored: a text or
    # real "memory_kib" must be refused here, not crash the comparison or the KDF (bool is no count).
    if not (
        all(type(x) is int for x in (p.memory_kib, p.iterations, p.lanes))
        and 1 <= p.lanes <= MAX_LANES
        and 1 <= p.iterations <= MAX_ITERATIONS
        and 8 * p.lanes <= p.memory_kib <= MAX_MEMORY_KIB
    ):
        raise IntegrityError(
            "the key slot's stored KDF parameters are out of bounds; refusing to run the KDF",
            "the vault file may be corrupt or hostile",
        )


def derive_kek(secret: bytes, salt: bytes, params: KdfParams) -> bytes:
    """Argon2id(secret, salt) -> 256-bit key-encryption key."""
    check_kdf_for_open(params)
    kdf = Argon2id(
        salt=salt,
        length=KEY_SIZE,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive(secret)


def hkdf(key: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256 with no salt: sub-keys of a uniformly random key, separated by ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (the standard library's HMAC, fed by our keys)."""
    return _hmac.new(key, data, hashlib.sha256).digest()


class Mac:
    """HMAC-SHA256 under one key that MACs many messages (search tokens, the audit chain).

    The key is absorbed once; each message then starts from a copy of that keyed state. With
    cryptography's HMAC that is about a third of the cost of ``hmac.new`` per short message (an
    import computes half a million search tokens). Same output as :func:`mac`.
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = HMAC(key, hashes.SHA256())

    def __call__(self, data: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(data)
        return h.finalize()

    @property
    def keyed(self) -> HMAC:
        """The keyed state itself, for a loop that copies it per message (``copy``, ``update``,
        ``finalize``): the audit walk, where this call's own overhead is a tenth of the time."""
        return self._keyed


def mac_equal(a: bytes, b: bytes) -> bool:
    return _hmac.compare_digest(a, b)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> bytes:
    """SHA-512 (``cryptography``'s): the message hash of OpenSSH signatures (vault/keys/sshsig.py)."""
    digest = hashes.Hash(hashes.SHA512())
    digest.update(data)
    return digest.finalize()


# --- Ed25519 signing -------------------------------------------------------------------------------


def new_signing_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (private 32 bytes, public 32 bytes)."""
    priv = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    raw_priv = priv.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_pub = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw_priv, raw_pub


def public_from_private(private_raw: bytes) -> bytes:
    """The raw Ed25519 public key of a raw private key."""
    key = Ed25519PrivateKey.from_private_bytes(private_raw).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private_raw: bytes, data: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private_raw).sign(data)


def verify_signature(public_raw: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class Verifier:
    """One Ed25519 public key, loaded once, for checking many signatures (a team's audit chain).

    :func:`verify_signature` parses the key on every call; a chain of 100,000 entries by a handful
    of members pays that once per member here.
    """

    __slots__ = ("_verify",)

    def __init__(self, public_raw: bytes) -> None:
        self._verify = Ed25519PublicKey.from_public_bytes(public_raw).verify  # ValueError: not a key

    def __call__(self, signature: bytes, data: bytes) -> bool:
        try:
            self._verify(signature, data)
        except InvalidSignature:
            return False
        return True


def fingerprint(public_raw: bytes) -> str:
    """A vault's identity: SHA-256 of its Ed25519 public key, shown as ``hv:`` + 8 groups of 4 hex
    (the digest's first 128 bits; docs/spec.md "Signing key")."""
    digest = hashlib.sha256(b"handover-vault signing key\x00" + public_raw).hexdigest()
    return "hv:" + "-".join(digest[i : i + 4] for i in range(0, 32, 4))


def public_key_pem(public_raw: bytes) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (readable by openssl and any Ed25519 library)."""
    return Ed25519PublicKey.from_public_bytes(public_raw).public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise IntegrityError("the signer's public key is not a valid PEM Ed25519 key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise IntegrityError("the signer's public key is not an Ed25519 key")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


# --- TOTP ------------------------------------------------------------------------------------------


def totp_now(secret: bytes, digits: int, period: int, algorithm: str, at: float) -> str:
    """RFC 6238 TOTP via ``cryptography``'s implementation."""
    from cryptography.hazmat.primitives.twofactor.totp import TOTP

    # SHA-1 is RFC 6238's default and what most otpauth URIs name; HMAC-SHA1 is not broken.
    algo: hashes.SHA1 | hashes.SHA256 | hashes.SHA512
    if algorithm == "SHA256":
        algo = hashes.SHA256()
    elif algorithm == "SHA512":
        algo = hashes.SHA512()
    else:
        algo = hashes.SHA1()  # noqa: S303
    # cryptography refuses keys under 128 bits unless told; some services still issue 80-bit seeds.
    totp = TOTP(secret, digits, algo, period, enforce_key_length=False)
    return totp.generate(int(at)).decode("ascii")


# --- KeePass AES-KDF (reading a foreign format) ----------------------------------------------------


def keepass_aes_kdf(seed: bytes, rounds: int, composite: bytes) -> bytes:
    """KeePass's AES-KDF: each 16-byte half of the composite key encrypted ``rounds`` times with
    AES-256-ECB under ``seed``, then SHA-256 of the two halves.

    Done as AES-CBC over zero blocks with the half as IV: each block is E(previous XOR 0), so the
    last ciphertext block is E^N(IV), and the chaining runs in C (pykeepass's Python loop takes
    about a minute for KeePassXC's default rounds). One encryptor per half keeps its chaining state
    across ``update`` calls, so memory stays at one 1 MiB buffer.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    chunk = 1 << 16  # blocks per update: 1 MiB of zeros
    zeros = bytes(16 * chunk)
    out = b""
    for half in (composite[:16], composite[16:32]):
        enc = Cipher(algorithms.AES(seed), modes.CBC(half)).encryptor()
        block, left = half, rounds
        while left:
            n = min(left, chunk)
            block = enc.update(zeros[: 16 * n])[-16:]
            left -= n
        out += block
    return hashlib.sha256(out).digest()
