"""Sealing and opening files in the age format (age-encryption.org/v1), streamed, through pyrage.

This is the bundle's outer layer (DESIGN §6). pyrage does the cryptography; this module adds what
pyrage lacks for files that come from outside:

- a strict parser of the age *header* that runs before pyrage sees the file, refusing an scrypt
  work factor above :data:`MAX_SCRYPT_WORK_FACTOR`, more than :data:`MAX_STANZAS` stanzas, a header
  longer than :data:`MAX_HEADER_BYTES`, and the malformed stanzas pyrage accepts against the spec;
- atomic output: the plaintext or ciphertext goes to a 0600 temp file in the target directory and is
  renamed into place only when pyrage has finished without error (pyrage raises ``OSError`` for a
  truncated or tampered payload *after* writing the chunks that verified);
- one error vocabulary: :class:`AuthenticationFailed` for "no identity / passphrase matches",
  :class:`IntegrityError` for a damaged or hostile file, :class:`InvalidInput` for a file that is
  not age at all or a key that cannot be parsed, :class:`StorageError` for the disk.

Recipient-sealed files stream with flat memory (``pyrage.encrypt_io``/``decrypt_io`` copy through
64 KiB STREAM chunks). pyrage's passphrase API only takes and returns ``bytes``, so passphrase mode
holds the whole file in memory and is capped at :data:`PASSPHRASE_MAX_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

import pyrage
from pyrage import passphrase as _pyrage_passphrase
from pyrage import ssh as _pyrage_ssh
from pyrage import x25519 as _pyrage_x25519

from .errors import (
    AuthenticationFailed,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
    VaultError,
)
from .files import atomic_output

# --- Limits on what we accept from files and users --------------------------------------------------

# A real header is a few hundred bytes per recipient (an ssh-rsa 4096 stanza is the largest, ~700 B).
# 64 KiB leaves room for ~90 such recipients while bounding what we buffer and parse before any
# cryptography runs.
MAX_HEADER_BYTES = 64 * 1024
# A bundle has a handful of recipients plus rage's one "grease" stanza. Each stanza costs every
# identity a trial decryption (RSA-OAEP is milliseconds), so an unbounded count is a CPU lever.
MAX_STANZAS = 32
# scrypt with r=8 needs 128 * r * 2^N bytes: N=18 (age's default) is 256 MiB, N=22 is 4 GiB. 22 is
# the ceiling Go age applies by default and the one DESIGN §6 asks for; pyrage has no cap at all.
MAX_SCRYPT_WORK_FACTOR = 22
# pyrage's passphrase API works on whole byte strings, so passphrase files are held in memory
# (about three copies at peak). 256 MiB keeps that under ~1 GiB; larger bundles must use keys.
PASSPHRASE_MAX_BYTES = 256 * 1024 * 1024
# The longest public key we parse: an ssh-rsa 16384-bit key line is ~2.8 KB.
MAX_RECIPIENT_CHARS = 8 * 1024
# Identity files are a few keys and comments; a 1 MiB cap stops us reading a wrong, huge file.
MAX_IDENTITY_FILE_BYTES = 1024 * 1024
# How much of a key we ever repeat in an error message: enough to recognise it, never a whole key.
_ECHO_CHARS = 12

_VERSION_LINE = b"age-encryption.org/v1"
_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
# Bytes of an armored file that can hold MAX_HEADER_BYTES of header: 64 base64 chars (+ CRLF) per
# 48 bytes, plus the BEGIN line. Read once, up front; the rest of the file is pyrage's.
_ARMORED_PREFIX_BYTES = len(_ARMOR_BEGIN) + 2 + (MAX_HEADER_BYTES // 48 + 2) * 66
_BODY_LINE_CHARS = 64  # spec: stanza bodies are wrapped at 64 columns, the last line shorter
_MAC_CHARS = 43  # unpadded base64 of the 32-byte HMAC-SHA256
_COPY_CHUNK = 64 * 1024
_MIB = 1024 * 1024

_B64_LINE = re.compile(rb"[A-Za-z0-9+/]*")
_VCHAR_ARG = re.compile(rb"[\x21-\x7e]+")
# The scrypt work factor is a decimal without leading zeros or sign (C2SP vectors pin each case).
_WORK_FACTOR = re.compile(r"[1-9][0-9]*")


# --- Recipients ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """A parsed public key that a file can be sealed to.

    ``text`` is the normalised key (``age1…`` lower-case, or ``ssh-… BASE64`` without comment);
    ``fingerprint`` is what audit entries record (see :func:`recipient_fingerprint`).
    """

    kind: str  # "x25519", "ssh-ed25519" or "ssh-rsa"
    text: str
    fingerprint: str
    native: Any = field(repr=False, compare=False)


@dataclass(frozen=True, eq=False)
class Identity:
    """A parsed private key. Its repr never shows the key."""

    kind: str  # "x25519" or "ssh"
    native: Any = field(repr=False)


def _size(n: int) -> str:
    return f"{n // _MIB} MiB" if n >= _MIB else f"{n} bytes"


def _echo(text: str) -> str:
    """A short, quoted prefix of user input for error messages."""
    return repr(text[:_ECHO_CHARS] + ("…" if len(text) > _ECHO_CHARS else ""))


def _looks_private(text: str) -> bool:
    upper = text.upper()
    return upper.startswith("AGE-SECRET-KEY-") or "PRIVATE KEY-----" in upper


def parse_recipient(text: str) -> Recipient:
    """Parse an ``age1…`` X25519 recipient or an ``ssh-ed25519``/``ssh-rsa`` public key line.

    Raises:
        InvalidInput: empty, multi-line, over-long, a private key, an unsupported key type, or a key
            that does not decode. The message quotes at most a short prefix of the input.
    """
    cleaned = text.strip()
    if not cleaned:
        raise InvalidInput("the recipient is empty", "give an age1… or ssh-ed25519/ssh-rsa public key")
    if _looks_private(cleaned):
        # Never echo any of it: this is someone's secret key pasted in the wrong place.
        raise InvalidInput(
            "a private key was given where a recipient (public key) is expected",
            "give the public half: `age-keygen -y KEYFILE`, or the line in the .pub file",
        )
    if len(cleaned) > MAX_RECIPIENT_CHARS or any(c in cleaned for c in "\r\n\x00"):
        raise InvalidInput(f"the recipient {_echo(cleaned)} is not a single-line public key")
    if cleaned[:4].lower() == "age1":
        return _parse_x25519_recipient(cleaned)
    parts = cleaned.split()
    if parts[0] in ("ssh-ed25519", "ssh-rsa"):
        return _parse_ssh_recipient(parts)
    raise InvalidInput(
        f"unsupported recipient {_echo(cleaned)}",
        "use an age1… key, or an ssh-ed25519 or ssh-rsa public key",
    )


def _parse_x25519_recipient(text: str) -> Recipient:
    try:
        native = _pyrage_x25519.Recipient.from_str(text)
    except pyrage.RecipientError:
        raise InvalidInput(
            f"the age recipient {_echo(text)} is malformed",
            "X25519 recipients are 62 characters starting with age1; plugin and post-quantum "
            "recipients are not supported",
        ) from None
    normal = text.lower()  # bech32 is case-insensitive; pyrage refused mixed case above
    digest = hashlib.sha256(normal.encode("ascii")).hexdigest()
    return Recipient("x25519", normal, f"age:sha256:{digest[:16]}", native)


def _parse_ssh_recipient(parts: list[str]) -> Recipient:
    kind = parts[0]
    if len(parts) < 2:
        raise InvalidInput(f"the {kind} public key has no key data")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise InvalidInput(f"the {kind} public key {_echo(parts[1])} is not valid base64") from None
    normal = f"{kind} {parts[1]}"  # the comment is not part of the key
    try:
        native = _pyrage_ssh.Recipient.from_str(normal)
    except pyrage.RecipientError:
        raise InvalidInput(f"the {kind} public key {_echo(parts[1])} is malformed or unsupported") from None
    # OpenSSH's own fingerprint format, so it can be compared with `ssh-keygen -lf key.pub`.
    openssh = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return Recipient(kind, normal, f"{kind}:SHA256:{openssh}", native)


def recipient_fingerprint(text: str) -> str:
    """A short, stable identifier of a public key for audit entries.

    ``age:sha256:<16 hex>`` (SHA-256 of the lower-case ``age1…`` string) for X25519 keys, and
    ``ssh-ed25519:SHA256:<base64>`` / ``ssh-rsa:SHA256:<base64>`` for SSH keys, the value that
    ``ssh-keygen -lf`` prints.

    Raises:
        InvalidInput: as :func:`parse_recipient`.
    """
    return parse_recipient(text).fingerprint


# --- Identities ------------------------------------------------------------------------------------


def load_identity_file(path: Path) -> list[Identity]:
    """Read identities from an age identity file or an unencrypted OpenSSH private key.

    Raises:
        NotFound: the file does not exist.
        StorageError: it cannot be read.
        InvalidInput: see :func:`parse_identities`.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IDENTITY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"identity file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise StorageError(f"cannot read identity file {str(path)!r}: {exc.strerror}") from None
    return parse_identities(data, source=f"identity file {Path(path).name!r}")


def parse_identities(data: bytes, *, source: str = "identity file") -> list[Identity]:
    """Parse ``AGE-SECRET-KEY-1…`` lines (``#`` comments and blank lines allowed) or one OpenSSH
    private key (ssh-ed25519 or ssh-rsa, unencrypted; PEM ``RSA PRIVATE KEY`` also works).

    Raises:
        InvalidInput: too large, not UTF-8, no identity, a malformed key (named by line number,
            never quoted), an encrypted SSH key, or a post-quantum / plugin identity that this
            version of pyrage cannot use.
    """
    if len(data) > MAX_IDENTITY_FILE_BYTES:
        raise InvalidInput(f"the {source} is larger than 1 MiB; it is not an identity file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the {source} is not a text file") from None
    if "PRIVATE KEY-----" in text.lstrip().split("\n", 1)[0]:
        return [_parse_ssh_identity(data, source)]
    identities = [_parse_age_identity(line.strip(), n, source) for n, line in enumerate(text.splitlines(), 1)]
    found = [i for i in identities if i is not None]
    if not found:
        raise InvalidInput(f"the {source} contains no identity", "expected AGE-SECRET-KEY-1… lines")
    return found


def _parse_age_identity(line: str, lineno: int, source: str) -> Identity | None:
    if not line or line.startswith("#"):
        return None
    upper = line.upper()
    if upper.startswith("AGE-SECRET-KEY-PQ-1") or upper.startswith("AGE-PLUGIN-"):
        raise InvalidInput(
            f"{source}, line {lineno}: post-quantum and plugin identities are not supported",
            "generate an X25519 identity with `age-keygen` or `handover keygen`",
        )
    if not upper.startswith("AGE-SECRET-KEY-1"):
        raise InvalidInput(
            f"{source}, line {lineno}: not an age identity",
            "expected AGE-SECRET-KEY-1… lines, or an OpenSSH private key file",
        )
    try:
        native = _pyrage_x25519.Identity.from_str(line)
    except pyrage.IdentityError:
        # pyrage's message is generic, but the line is a secret: say where, never what.
        raise InvalidInput(f"{source}, line {lineno}: malformed age identity") from None
    return Identity("x25519", native)


def _parse_ssh_identity(data: bytes, source: str) -> Identity:
    try:
        native = _pyrage_ssh.Identity.from_buffer(data)
    except pyrage.IdentityError as exc:
        if "decrypted first" in str(exc):
            raise InvalidInput(
                f"the {source} is a passphrase-protected SSH key, which cannot be used here",
                "use an age identity, or an unencrypted ssh-ed25519/ssh-rsa key",
            ) from None
        raise InvalidInput(
            f"the {source} is not a supported SSH private key",
            "only unencrypted ssh-ed25519 and ssh-rsa keys work",
        ) from None
    return Identity("ssh", native)


# --- The age header ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: ``-> type args…`` and its decoded body."""

    type: str
    args: tuple[str, ...]
    body: bytes


@dataclass(frozen=True)
class AgeHeader:
    """The parsed header of an age file."""

    stanzas: tuple[Stanza, ...]
    armored: bool
    length: int  # bytes of the binary header, through the MAC line's newline

    @property
    def is_passphrase(self) -> bool:
        """True when the file is sealed with a passphrase (a lone scrypt stanza)."""
        return any(s.type == "scrypt" for s in self.stanzas)

    @property
    def scrypt_work_factor(self) -> int | None:
        return next((int(s.args[1]) for s in self.stanzas if s.type == "scrypt"), None)


def read_header(f: IO[bytes]) -> AgeHeader:
    """Read and check the age header at the current position of ``f`` (binary or armored).

    Only a bounded prefix is read. The checks follow the age spec strictly (canonical base64, 64
    column body lines ending in a short line, one ``---`` MAC line) plus our caps.

    Raises:
        InvalidInput: the file is not age-encrypted at all.
        IntegrityError: the header is malformed, truncated, too long, has too many stanzas, or an
            scrypt stanza that is malformed, not alone, or asks for more than work factor 22.
    """
    prefix = f.read(_ARMORED_PREFIX_BYTES)
    armored = prefix.startswith(_ARMOR_BEGIN)
    if not armored and not prefix.startswith(b"age-encryption.org/"):
        raise InvalidInput("the file is not age-encrypted", "a sealed bundle is a .tar.age file")
    data = _dearmor_prefix(prefix) if armored else prefix[: MAX_HEADER_BYTES + 1]
    stanzas, length = _parse_header(data)
    header = AgeHeader(tuple(stanzas), armored, length)
    _check_scrypt(header)
    return header


def _dearmor_prefix(prefix: bytes) -> bytes:
    """Decode the base64 lines after the BEGIN marker, enough to hold a maximal header.

    Loose on purpose where it does not matter: pyrage enforces the armor rules on the real read.
    """
    lines = prefix.split(b"\n")[1:]
    out = bytearray()
    for line in lines[:-1]:  # the last piece may be cut mid-line
        line = line.removesuffix(b"\r")
        if line.startswith(_ARMOR_END) or len(out) > MAX_HEADER_BYTES:
            break
        try:
            out += base64.b64decode(line, validate=True)
        except binascii.Error:
            raise IntegrityError("the armored age file is malformed (invalid base64)") from None
    return bytes(out)


class _Lines:
    """Newline-terminated lines of a bounded buffer; running out is a header failure."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def next(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0 or end >= MAX_HEADER_BYTES:
            if len(self.data) > MAX_HEADER_BYTES:
                raise IntegrityError(f"the age header is longer than {MAX_HEADER_BYTES // 1024} KiB")
            raise IntegrityError("the age header is truncated")
        line, self.pos = self.data[self.pos : end], end + 1
        return line


def _parse_header(data: bytes) -> tuple[list[Stanza], int]:
    lines = _Lines(data)
    version = lines.next()
    if version != _VERSION_LINE:
        raise IntegrityError("the age version line is malformed or names an unsupported version")
    stanzas: list[Stanza] = []
    while True:
        line = lines.next()
        if line.startswith(b"--- "):
            _decode_canonical(line[4:], "header MAC", exact_chars=_MAC_CHARS)
            return stanzas, lines.pos
        if len(stanzas) == MAX_STANZAS:
            raise IntegrityError(f"the age header has more than {MAX_STANZAS} stanzas")
        stanza_type, args = _parse_stanza_line(line)
        stanzas.append(Stanza(stanza_type, args, _read_body(lines)))


def _parse_stanza_line(line: bytes) -> tuple[str, tuple[str, ...]]:
    if not line.startswith(b"-> "):
        raise IntegrityError("the age header is malformed (expected a stanza or the MAC line)")
    parts = line[3:].split(b" ")
    if not all(_VCHAR_ARG.fullmatch(p) for p in parts):
        raise IntegrityError("the age header has a malformed stanza line")
    decoded = tuple(p.decode("ascii") for p in parts)
    return decoded[0], decoded[1:]


def _read_body(lines: _Lines) -> bytes:
    chunks = []
    while True:
        line = lines.next()
        if len(line) > _BODY_LINE_CHARS or not _B64_LINE.fullmatch(line):
            raise IntegrityError("the age header has a malformed stanza body")
        chunks.append(_decode_canonical(line, "stanza body"))
        # The spec ends every body with a line shorter than 64 columns, possibly empty.
        if len(line) < _BODY_LINE_CHARS:
            return b"".join(chunks)


def _decode_canonical(text: bytes, what: str, exact_chars: int | None = None) -> bytes:
    """Decode unpadded base64 and insist it is the canonical encoding (no stray low bits)."""
    if (exact_chars is not None and len(text) != exact_chars) or len(text) % 4 == 1:
        raise IntegrityError(f"the age header has a malformed {what}")
    try:
        raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise IntegrityError(f"the age header has a malformed {what}") from None
    if base64.b64encode(raw).rstrip(b"=") != text:
        raise IntegrityError(f"the age header has a non-canonical {what}")
    return raw


def _check_scrypt(header: AgeHeader) -> None:
    scrypt = [s for s in header.stanzas if s.type == "scrypt"]
    if not scrypt:
        return
    if len(header.stanzas) != 1:
        # The spec: an scrypt stanza must be alone, or a passphrase file could be re-wrapped.
        raise IntegrityError("the age header mixes a passphrase stanza with other stanzas")
    args = scrypt[0].args
    if len(args) != 2 or not _WORK_FACTOR.fullmatch(args[1]) or len(args[1]) > 2:
        raise IntegrityError("the age header has a malformed scrypt stanza")
    if int(args[1]) > MAX_SCRYPT_WORK_FACTOR:
        raise IntegrityError(
            f"the passphrase's scrypt work factor {args[1]} exceeds the limit of {MAX_SCRYPT_WORK_FACTOR}",
            "such a file would take gigabytes of memory and minutes to open; it was not made by us",
        )


# --- Atomic output ---------------------------------------------------------------------------------


# --- Stream wrappers that remember Python-side failures ------------------------------------------------


class _Tap:
    """Wraps the reader or writer handed to pyrage.

    pyrage turns any exception raised by our reader or writer into a string inside its own
    ``EncryptError``/``OSError``; the tap keeps the original so that, for example, an
    :class:`IntegrityError` from the tar stream or a full disk is reported as itself. It also counts
    and hashes what passes through.
    """

    def __init__(self, stream: IO[bytes] | io.RawIOBase, hashed: bool = True) -> None:
        self.stream = stream
        self.error: BaseException | None = None
        self.size = 0
        self.sha256 = hashlib.sha256()
        # pyrage reads 8 KiB per call: an input tap whose hash nobody uses is not hashed.
        self._update = self.sha256.update if hashed else None

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.stream.read(n) or b""  # RawIOBase may return None: no data yet
        except BaseException as exc:
            self.error = exc
            raise
        self.size += len(data)
        if self._update is not None:
            self._update(data)
        return data

    def write(self, data: bytes) -> int:
        try:
            self.stream.write(data)
        except BaseException as exc:
            self.error = exc
            raise
        self.size += len(data)
        self.sha256.update(data)
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


def _tap_failure(*taps: _Tap) -> BaseException | None:
    """The exception one of our own streams raised (an OSError becomes StorageError), if any."""
    for tap in taps:
        if isinstance(tap.error, OSError):
            return StorageError(f"input/output error: {tap.error.strerror or tap.error}")
        if tap.error is not None:
            return tap.error
    return None


# --- Sealing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealResult:
    """What was written: the path, the sealed file's size and SHA-256 (for the audit entry)."""

    path: Path
    size: int
    sha256: str
    plaintext_size: int


def seal_stream(
    reader: IO[bytes] | io.RawIOBase,
    out_path: Path,
    recipients: Sequence[Recipient | str] = (),
    passphrase: str | None = None,
    *,
    armored: bool = False,
    overwrite: bool = False,
) -> SealResult:
    """Encrypt everything ``reader`` yields into ``out_path``, atomically (see :func:`atomic_output`).

    With recipients the data streams through pyrage in small chunks (memory does not grow with the
    input). With a passphrase (scrypt; pyrage picks the work factor) the input is read into memory
    and must not exceed :data:`PASSPHRASE_MAX_BYTES`.

    Raises:
        InvalidInput: no recipient and no passphrase, both, an empty passphrase, an unparsable
            recipient string, or passphrase input over the cap.
        AlreadyExists, NotFound, StorageError: from the output file.
        VaultError: whatever the reader raised (e.g. :class:`IntegrityError` from a tar stream
            whose source did not match its declared hash) is re-raised as itself.
    """
    natives = _seal_plan(recipients, passphrase)
    source = _Tap(reader, hashed=False)  # the sealed file's hash is the one the audit records
    with atomic_output(Path(out_path), overwrite=overwrite) as raw_out:
        sink = _Tap(raw_out)
        try:
            if passphrase is not None:
                _seal_passphrase(source, sink, passphrase, armored)
            else:
                pyrage.encrypt_io(source, sink, natives, armored=armored)
        except VaultError:
            raise  # ours, raised in Python before or after pyrage ran: already precise
        except Exception as exc:
            own = _tap_failure(source, sink)
            if own is not None:
                raise own from None
            raise StorageError(f"age encryption failed: {exc}") from exc
    return SealResult(Path(out_path), sink.size, sink.sha256.hexdigest(), source.size)


def _seal_plan(recipients: Sequence[Recipient | str], passphrase: str | None) -> list[Any]:
    if passphrase is not None and recipients:
        raise InvalidInput("seal to recipients or with a passphrase, not both", "age allows only one")
    if passphrase is None and not recipients:
        raise InvalidInput("no recipient and no passphrase given", "add --recipient KEY or --passphrase")
    if passphrase is not None and not passphrase:
        raise InvalidInput("the passphrase is empty")
    parsed = [r if isinstance(r, Recipient) else parse_recipient(r) for r in recipients]
    return [r.native for r in parsed]


def _seal_passphrase(source: _Tap, sink: _Tap, passphrase: str, armored: bool) -> None:
    chunks: list[bytes] = []
    total = 0
    # A raw reader may return short reads, so loop; stop one byte past the cap to detect overflow.
    while chunk := source.read(min(1024 * 1024, PASSPHRASE_MAX_BYTES + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > PASSPHRASE_MAX_BYTES:
            raise InvalidInput(
                f"passphrase sealing is limited to {_size(PASSPHRASE_MAX_BYTES)}",
                "seal to the successor's age or SSH public key instead (it streams without a limit)",
            )
    sealed = _pyrage_passphrase.encrypt(b"".join(chunks), passphrase, armored=armored)
    # rage calibrates the work factor to the machine; never write a file our own reader would refuse.
    read_header(io.BytesIO(sealed))
    sink.write(sealed)


# --- Opening -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenResult:
    """What was decrypted: the header that was checked, plaintext size and SHA-256."""

    header: AgeHeader
    size: int
    sha256: str


def open_stream(
    in_path: Path,
    out: Path | IO[bytes],
    *,
    identities: Sequence[Identity] = (),
    passphrase: str | None = None,
    overwrite: bool = False,
    spool_dir: Path | None = None,
) -> OpenResult:
    """Decrypt the age file ``in_path`` (binary or armored) after checking its header.

    ``out`` is a path (written atomically, 0600, only on success) or a binary writer. A writer
    receives data only after the whole file decrypted: the plaintext is first spooled to an
    anonymous temp file in ``spool_dir`` (default: the system temp dir), which disappears even if
    the process dies.

    Raises:
        InvalidInput: neither or both of identities and passphrase; not an age file; a passphrase
            file over :data:`PASSPHRASE_MAX_BYTES`.
        AuthenticationFailed: no identity matches, the passphrase is wrong, or the file is sealed
            the other way (passphrase vs keys; the hint says which).
        IntegrityError: the header is malformed, hostile (see :func:`read_header`) or its MAC fails;
            the payload is truncated or was modified.
        NotFound, AlreadyExists, StorageError: from the files.
    """
    _check_credentials(identities, passphrase)
    if isinstance(out, (str, os.PathLike)):
        with atomic_output(Path(out), overwrite=overwrite) as dst:
            return decrypt_to(in_path, dst, identities=identities, passphrase=passphrase)
    try:
        spool = tempfile.TemporaryFile(dir=spool_dir)
    except OSError as exc:
        raise StorageError(f"cannot create a temporary file: {exc.strerror}") from None
    with spool:
        result = decrypt_to(in_path, spool, identities=identities, passphrase=passphrase)
        spool.seek(0)
        try:
            shutil.copyfileobj(spool, out, _COPY_CHUNK)
        except OSError as exc:
            raise StorageError(f"cannot write the decrypted output: {exc.strerror}") from None
    return result


def decrypt_to(
    in_path: Path,
    dst: IO[bytes],
    *,
    identities: Sequence[Identity] = (),
    passphrase: str | None = None,
    hashed: bool = True,
) -> OpenResult:
    """Low level :func:`open_stream`: check the header, then decrypt straight into ``dst``.

    ``dst`` receives plaintext chunks as they verify, so after an exception its content must be
    discarded; use it with a file that is thrown away on failure (an anonymous temp file).
    ``hashed=False`` skips the plaintext's SHA-256 (the result's ``sha256`` is then empty): a
    bundle verification hashes every member anyway. Raises as :func:`open_stream`.
    """
    _check_credentials(identities, passphrase)
    with _open_input(in_path) as src:
        header = read_header(src)
        _check_header_matches(header, identities, passphrase)
        src.seek(0)
        size, digest = _decrypt_into(src, dst, header, identities, passphrase, hashed)
    return OpenResult(header, size, digest)


@contextmanager
def _open_input(path: Path) -> Iterator[BinaryIO]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"{str(path)!r} does not exist") from None
    except OSError as exc:
        raise StorageError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    with f:
        yield f


def _check_credentials(identities: Sequence[Identity], passphrase: str | None) -> None:
    if passphrase is not None and identities:
        raise InvalidInput("give identities or a passphrase, not both")
    if passphrase is None and not identities:
        raise InvalidInput("no identity and no passphrase given", "add --identity KEYFILE or --passphrase")


def _check_header_matches(header: AgeHeader, identities: Sequence[Identity], passphrase: str | None) -> None:
    if header.is_passphrase and passphrase is None:
        raise AuthenticationFailed("the file is sealed with a passphrase, not to a key", "use --passphrase")
    if not header.is_passphrase and passphrase is not None:
        raise AuthenticationFailed(
            "the file is sealed to keys, not with a passphrase", "use --identity KEYFILE"
        )


def _decrypt_into(
    src: BinaryIO,
    dst: IO[bytes],
    header: AgeHeader,
    identities: Sequence[Identity],
    passphrase: str | None,
    hashed: bool = True,
) -> tuple[int, str]:
    source, sink = _Tap(src, hashed=False), _Tap(dst, hashed=hashed)
    try:
        if passphrase is not None:
            _open_passphrase(src, sink, passphrase)
        else:
            pyrage.decrypt_io(source, sink, [i.native for i in identities])
    except (pyrage.DecryptError, OSError) as exc:
        own = _tap_failure(source, sink)
        if own is not None:
            raise own from None
        raise _decrypt_error(exc, header) from exc
    return sink.size, sink.sha256.hexdigest() if hashed else ""


def _open_passphrase(src: BinaryIO, sink: _Tap, passphrase: str) -> None:
    # Ciphertext is the plaintext plus 16 bytes per 64 KiB chunk, a header, and armor's 4/3.
    limit = PASSPHRASE_MAX_BYTES * 4 // 3 + MAX_HEADER_BYTES * 2
    if os.fstat(src.fileno()).st_size > limit:
        raise InvalidInput(
            f"passphrase-sealed files over {_size(PASSPHRASE_MAX_BYTES)} cannot be opened",
            "pyrage can only decrypt passphrase files in memory; use `age -d` for this one",
        )
    sink.write(_pyrage_passphrase.decrypt(src.read(), passphrase))


def _decrypt_error(exc: BaseException, header: AgeHeader) -> VaultError:
    """Map pyrage's errors. It has no error codes, so this matches rage's fixed messages."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, pyrage.DecryptError):
        if "No matching keys" in message or message == "Decryption failed":
            if header.is_passphrase:
                return AuthenticationFailed("wrong passphrase")
            return AuthenticationFailed(
                "none of the given identities can open this file",
                "it was sealed to other recipients; check the key file",
            )
        return IntegrityError(f"the age header is invalid or was modified ({message})")
    # pyrage raises OSError for STREAM failures, after releasing every chunk that verified.
    return IntegrityError(
        f"the encrypted payload is truncated or was modified ({message})",
        "nothing was kept; ask the sender for a fresh copy",
    )
