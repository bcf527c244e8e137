"""OpenSSH signatures (PROTOCOL.sshsig) with the vault's Ed25519 key, checkable by ``ssh-keygen -Y``.

A successor who has only OpenSSH and coreutils verifies the bundle with
``ssh-keygen -Y verify -f allowed_signers -I handover -n handover-bundle -s SHA256SUMS.sig < SHA256SUMS``.
The format is a wire encoding around two primitives, both ``cryptography``'s (vault/keys/crypto.py):
SHA-512 of the message, and an Ed25519 signature over a fixed preamble, the namespace and that hash.
Nothing else is computed here; the private key never enters this module (signing is a callback).

    signed blob = "SSHSIG" || string(namespace) || string("") || string("sha512") || string(SHA-512(msg))
    signature   = "SSHSIG" || uint32(1) || string(publickey) || string(namespace) || string("")
                  || string("sha512") || string(string("ssh-ed25519") || string(raw 64-byte signature))

``string`` is RFC 4251's: a uint32 big-endian length, then the bytes. The armored form is base64 in
lines of 70 characters between ``-----BEGIN SSH SIGNATURE-----`` and ``-----END SSH SIGNATURE-----``,
as ``ssh-keygen -Y sign`` writes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Callable

from ..errors import IntegrityError
from . import crypto

__all__ = [
    "BUNDLE_NAMESPACE",
    "KEY_COMMENT",
    "SIGNER_IDENTITY",
    "allowed_signers_line",
    "armor",
    "public_key_line",
    "sign",
    "ssh_fingerprint",
    "verify",
]

MAGIC = b"SSHSIG"
VERSION = 1
KEY_TYPE = b"ssh-ed25519"
# sha512 rather than sha256: what ssh-keygen itself uses by default, and the stronger of the two.
HASH = b"sha512"
# The namespace binds a signature to its purpose: a bundle signature cannot pass for a git commit
# or file signature made with the same key, and vice versa (ssh-keygen -n).
BUNDLE_NAMESPACE = "handover-bundle"
# The principal the recipe's allowed_signers line names (ssh-keygen -I).
SIGNER_IDENTITY = "handover"
KEY_COMMENT = "handover-vault"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
LINE = 70  # ssh-keygen's armor width
# An Ed25519 SSHSIG is 298 bytes; 4 KiB of armor refuses anything else before decoding.
MAX_ARMOR = 4096


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def public_blob(public_raw: bytes) -> bytes:
    """The key in SSH wire form: string("ssh-ed25519") || string(32 raw bytes)."""
    return _string(KEY_TYPE) + _string(public_raw)


def public_key_line(public_raw: bytes, comment: str = KEY_COMMENT) -> str:
    """``ssh-ed25519 AAAA… handover-vault``: the line for authorized_keys/allowed_signers files."""
    return f"{KEY_TYPE.decode()} {base64.b64encode(public_blob(public_raw)).decode()} {comment}"


def allowed_signers_line(public_raw: bytes) -> str:
    """``handover ssh-ed25519 AAAA…``: the allowed_signers entry the verification recipe writes."""
    return f"{SIGNER_IDENTITY} {public_key_line(public_raw, '').rstrip()}"


def ssh_fingerprint(public_raw: bytes) -> str:
    """``SHA256:…`` exactly as ``ssh-keygen -lf`` prints it (unpadded base64 of SHA-256 of the blob)."""
    digest = hashlib.sha256(public_blob(public_raw)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _signed_data(message: bytes, namespace: str) -> bytes:
    return (
        MAGIC + _string(namespace.encode()) + _string(b"") + _string(HASH) + _string(crypto.sha512(message))
    )


def armor(blob: bytes) -> str:
    text = base64.b64encode(blob).decode()
    lines = [text[i : i + LINE] for i in range(0, len(text), LINE)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def sign(
    message: bytes, sign_raw: Callable[[bytes], bytes], public_raw: bytes, namespace: str = BUNDLE_NAMESPACE
) -> str:
    """The armored OpenSSH signature of ``message``. ``sign_raw`` is the vault's Ed25519 signer.

    Raises:
        IntegrityError: the callback's signature does not verify with ``public_raw``.
    """
    to_sign = _signed_data(message, namespace)
    raw = sign_raw(to_sign)
    if not crypto.verify_signature(public_raw, raw, to_sign):
        raise IntegrityError("the signing callback's signature does not verify with the signer key")
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_blob(public_raw))
        + _string(namespace.encode())
        + _string(b"")
        + _string(HASH)
        + _string(_string(KEY_TYPE) + _string(raw))
    )
    return armor(blob)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> bytes:
        (n,) = struct.unpack(">I", self.take(4))
        return self.take(n)


def _unarmor(text: bytes) -> bytes:
    if len(text) > MAX_ARMOR:
        raise ValueError("too large")
    lines = text.decode("ascii").strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != BEGIN or lines[-1].strip() != END:
        raise ValueError("not armored")
    return base64.b64decode("".join(line.strip() for line in lines[1:-1]), validate=True)


def verify(armored: bytes, message: bytes, public_raw: bytes, namespace: str = BUNDLE_NAMESPACE) -> None:
    """Check an armored OpenSSH signature of ``message`` by ``public_raw`` in ``namespace``.

    Raises:
        IntegrityError: malformed, another key, another namespace or hash, or a bad signature.
    """
    try:
        r = _Reader(_unarmor(armored))
        if r.take(6) != MAGIC or struct.unpack(">I", r.take(4))[0] != VERSION:
            raise ValueError("not an SSHSIG v1")
        key, ns, _reserved, hash_alg, sig = r.string(), r.string(), r.string(), r.string(), r.string()
        if r.pos != len(r.data):
            raise ValueError("trailing bytes")
        s = _Reader(sig)
        sig_type, raw = s.string(), s.string()
    except (ValueError, UnicodeDecodeError, binascii.Error, struct.error):
        raise IntegrityError("SHA256SUMS.sig is not a well-formed OpenSSH signature") from None
    if key != public_blob(public_raw) or sig_type != KEY_TYPE:
        raise IntegrityError("SHA256SUMS.sig is signed by another key than the bundle's signer")
    if ns != namespace.encode() or hash_alg != HASH:
        raise IntegrityError(f"SHA256SUMS.sig is not a {namespace!r} signature with sha512")
    if not crypto.verify_signature(public_raw, raw, _signed_data(message, namespace)):
        raise IntegrityError("SHA256SUMS.sig is not a valid signature of SHA256SUMS")
