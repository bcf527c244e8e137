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

Files sealed to keys stream with flat memory (``pyrage.encrypt_io``/``decrypt_io`` copy through
64 KiB STREAM chunks) in a forked helper process, so that age and our side (producing or storing
the plaintext, hashing) use both cores: pyrage never releases the GIL (see "The helper process").
pyrage's passphrase API only takes and returns ``bytes``, so passphrase mode runs here, holds the
whole file in memory and is capped at :data:`PASSPHRASE_MAX_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, NoReturn

import pyrage
from pyrage import passphrase as _pyrage_passphrase
from pyrage import ssh as _pyrage_ssh
from pyrage import x25519 as _pyrage_x25519

from ..errors import (
    AuthenticationFailed,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
    VaultError,
)
from ..files import atomic_output

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


# --- The helper process --------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


# pyrage holds the GIL for the whole of a call (measured: a hashing thread ran at 1% of its speed
# beside it), so no thread of ours can compute while it works. With keys, sealing and opening
# therefore run age in a forked helper process joined to us by a pipe: on two cores one process
# produces (or stores and hashes) the tar while the other runs age. The helper calls pyrage's
# path-based encrypt_file/decrypt_file on /dev/fd/N (the pipe and the file), which run entirely in
# Rust: half the CPU of encrypt_io/decrypt_io, whose every 8 KiB read goes through Python. Being a
# fork, the helper already holds the recipients or identities: no key crosses a pipe, argv or the
# environment. It uses only the descriptors it is given (never the SQLite connection it inherits),
# reports its outcome as one small JSON object on a pipe of its own and leaves with os._exit (no
# atexit, no buffer flushing). Only the forking thread lives on in the helper, which runs nothing
# but pyrage and system calls: another thread of ours blocked in a system call meanwhile (the warm
# agent's watcher) does not matter. Sealing with a passphrase stays in this process: pyrage's
# passphrase API takes whole byte strings.
_PIPE_BYTES = 1024 * 1024  # pipe buffer: 1 MiB in flight rather than Linux's 64 KiB (kernel memory)
_BLOCK = 256 * 1024  # what we read or hash at a time on our side: few calls, a small fixed buffer
_HASH_EVERY = 1024 * 1024  # plaintext fed between catch-ups: small steps keep the helper fed
_REPORT_MAX = 64 * 1024


class _HelperFailed(Exception):
    """Raised inside the helper with the report that describes the failure to the parent."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(report.get("kind"))
        self.report = report


@dataclass
class _Helper:
    pid: int
    report_fd: int
    data_fd: int  # our end of the data pipe: the write end when sealing, the read end when opening

    def close_data(self) -> None:
        if self.data_fd >= 0:
            os.close(self.data_fd)
            self.data_fd = -1

    def finish(self) -> dict[str, Any]:
        """Wait for the helper; its report, or ``{"ok": False, "kind": "died"}``."""
        self.close_data()
        with open(self.report_fd, "rb") as f:
            raw = f.read(_REPORT_MAX)
        _, status = os.waitpid(self.pid, 0)
        try:
            report = json.loads(raw)
        except ValueError:
            report = None
        if not isinstance(report, dict) or (status != 0 and report.get("ok")):
            return {"ok": False, "kind": "died"}
        return report

    def kill(self) -> None:
        """Our side failed: stop the helper at once and reap it (its output is thrown away)."""
        self.close_data()
        os.close(self.report_fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it had already exited
            pass
        os.waitpid(self.pid, 0)


def _fork_helper(work: Callable[[int], dict[str, Any]], parent_writes: bool) -> _Helper:
    """Run ``work(fd)`` in a forked helper; ``fd`` is its end of a new data pipe."""
    data_r, data_w = os.pipe()
    report_r, report_w = os.pipe()
    with contextlib.suppress(AttributeError, OSError):  # Linux only; 64 KiB pipes work, slower
        fcntl.fcntl(data_w, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    ours, theirs = (data_w, data_r) if parent_writes else (data_r, data_w)
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in (data_r, data_w, report_r, report_w):
            os.close(fd)
        raise StorageError(f"cannot start the age helper process: {exc.strerror}") from None
    if pid == 0:  # pragma: no cover - the helper; tests see it through its report and its output
        _helper_main(work, theirs, report_w, (ours, report_r))
    os.close(theirs)
    os.close(report_w)
    return _Helper(pid, report_r, ours)


def _helper_main(
    work: Callable[[int], dict[str, Any]], data_fd: int, report_fd: int, inherited: Sequence[int]
) -> NoReturn:  # pragma: no cover - runs in the helper process
    code, report = 1, {"ok": False, "kind": "died"}
    try:
        for fd in inherited:
            os.close(fd)
        # Nothing to print, and a helper outliving a killed parent must not hold its terminal or
        # the pipes its caller reads the command's output from.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        report = {"ok": True, **work(data_fd)}
        code = 0
    except _HelperFailed as exc:
        report = {"ok": False, **exc.report}
    except BaseException as exc:
        report = {"ok": False, "kind": "other", "type": type(exc).__name__}
    finally:
        try:
            _write_all(report_fd, json.dumps(report).encode("utf-8"))
        finally:
            os._exit(code)


def _fd_paths(*fds: int) -> bool:
    """Whether ``/dev/fd/N`` names these descriptors (Linux, macOS), for pyrage's path-based API."""
    return all(os.path.exists(f"/dev/fd/{fd}") for fd in fds)


def _os_error(message: str) -> bool:
    """pyrage passes an operating-system error on as text: Rust's ``… (os error N)``, or Python's
    ``[Errno N] …`` raised by a file object it was given."""
    return "(os error " in message or "[Errno " in message


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _blocks(source: IO[bytes] | io.RawIOBase | Iterable[bytes]) -> Iterator[bytes]:
    """What a source yields, in blocks; an OSError while reading it becomes StorageError."""
    if hasattr(source, "read"):
        read = source.read
        it: Iterator[bytes] = iter(lambda: read(_BLOCK) or b"", b"")  # None (no data yet): end
    else:
        it = iter(source)
    while True:
        try:
            block = next(it, None)
        except OSError as exc:
            raise StorageError(f"input/output error: {exc.strerror or exc}") from None
        if block is None:
            return
        yield block


# --- Sealing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealResult:
    """What was written: the path, the sealed file's size and SHA-256 (for the audit entry)."""

    path: Path
    size: int
    sha256: str
    plaintext_size: int


def seal_stream(
    reader: IO[bytes] | io.RawIOBase | Iterable[bytes],
    out_path: Path,
    recipients: Sequence[Recipient | str] = (),
    passphrase: str | None = None,
    *,
    armored: bool = False,
    overwrite: bool = False,
) -> SealResult:
    """Encrypt everything ``reader`` yields into ``out_path``, atomically (see :func:`atomic_output`).

    ``reader`` is a binary reader or an iterable of byte blocks (the tar writer's parts). With
    recipients the data streams through a helper process running age (memory does not grow with
    the input; the bundle's SHA-256 is computed there as it is written). With a passphrase
    (scrypt; pyrage picks the work factor) the input is read into memory and must not exceed
    :data:`PASSPHRASE_MAX_BYTES`.

    Raises:
        InvalidInput: no recipient and no passphrase, both, an empty passphrase, an unparsable
            recipient string, or passphrase input over the cap.
        AlreadyExists, NotFound, StorageError: from the output file.
        VaultError: whatever the reader raised (e.g. :class:`IntegrityError` from a tar stream
            whose source did not match its declared hash) is re-raised as itself.
    """
    natives = _seal_plan(recipients, passphrase)
    with atomic_output(Path(out_path), overwrite=overwrite) as out:
        if passphrase is not None:
            size, digest, plain = _seal_passphrase(_blocks(reader), out, passphrase, armored)
        else:
            size, digest, plain = _seal_in_helper(_blocks(reader), out, natives, armored)
    return SealResult(Path(out_path), size, digest, plain)


def _seal_plan(recipients: Sequence[Recipient | str], passphrase: str | None) -> list[Any]:
    if passphrase is not None and recipients:
        raise InvalidInput("seal to recipients or with a passphrase, not both", "age allows only one")
    if passphrase is None and not recipients:
        raise InvalidInput("no recipient and no passphrase given", "add --recipient KEY or --passphrase")
    if passphrase is not None and not passphrase:
        raise InvalidInput("the passphrase is empty")
    parsed = [r if isinstance(r, Recipient) else parse_recipient(r) for r in recipients]
    return [r.native for r in parsed]


def _seal_in_helper(
    blocks: Iterator[bytes], out: BinaryIO, natives: list[Any], armored: bool
) -> tuple[int, str, int]:
    """Seal ``blocks`` into ``out``: (sealed size, sealed SHA-256, plaintext size).

    This process produces the plaintext into a pipe while the helper runs age on it and writes
    ``out``; between blocks, we hash what the helper has written so far (read back from the file:
    the SHA-256 is that of the bytes on disk). Both sides block only in the kernel or in hashlib.
    """
    out_fd = out.fileno()

    def work(data_fd: int) -> dict[str, Any]:  # pragma: no cover - runs in the helper process
        try:
            if _fd_paths(data_fd, out_fd):  # all in Rust: a third less CPU than encrypt_io
                pyrage.encrypt_file(f"/dev/fd/{data_fd}", f"/dev/fd/{out_fd}", natives, armored=armored)
            else:
                with open(data_fd, "rb", buffering=0) as source, open(out_fd, "wb", closefd=False) as sink:
                    pyrage.encrypt_io(source, sink, natives, armored=armored)
        except Exception as exc:
            message = _first_line(exc)
            raise _HelperFailed({"kind": "io" if _os_error(message) else "age", "message": message}) from None
        return {"size": os.fstat(out_fd).st_size}

    helper = _fork_helper(work, parent_writes=True)
    hasher = _WrittenHasher(out_fd)
    fed = due = 0
    try:
        for block in blocks:
            _write_all(helper.data_fd, block)
            fed += len(block)
            if fed >= due:  # every few MiB: hash what the helper wrote meanwhile
                hasher.catch_up()
                due = fed + _HASH_EVERY
    except BrokenPipeError:
        pass  # the helper stopped early: its report says why
    except BaseException:
        helper.kill()  # our side failed (a source that does not match, Ctrl-C): nothing is kept
        raise
    report = helper.finish()
    if not report.get("ok"):
        raise _seal_error(report)
    hasher.catch_up()
    if hasher.size != report.get("size"):
        raise StorageError("the sealed file does not have the size age wrote", "try again")
    return hasher.size, hasher.sha256.hexdigest(), fed


class _WrittenHasher:
    """The SHA-256 of a file another process appends to, as far as it has been written.

    The helper only appends (age never seeks back), so bytes below the current size are final.
    Once hashed, their write-back to disk is started (a hint to the kernel): the fsync before the
    bundle gets its name then waits for the last few MiB instead of all of it.
    """

    def __init__(self, fd: int) -> None:
        self.fd, self.size, self.sha256 = fd, 0, hashlib.sha256()
        self._buffer = memoryview(bytearray(_BLOCK))

    def catch_up(self) -> None:
        start = self.size
        try:
            while n := os.preadv(self.fd, [self._buffer], self.size):
                self.sha256.update(self._buffer[:n])
                self.size += n
        except OSError as exc:
            raise StorageError(f"input/output error: {exc.strerror or exc}") from None
        if self.size > start and hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fd, start, self.size - start, os.POSIX_FADV_DONTNEED)


def _seal_error(report: dict[str, Any]) -> StorageError:
    if report.get("kind") == "io":
        return StorageError(f"input/output error: {report.get('message')}")
    if report.get("kind") == "age":
        return StorageError(f"age encryption failed: {report.get('message')}")
    return StorageError("age encryption failed: the helper process stopped unexpectedly")


def _seal_passphrase(
    blocks: Iterator[bytes], out: BinaryIO, passphrase: str, armored: bool
) -> tuple[int, str, int]:
    chunks: list[bytes] = []
    total = 0
    for block in blocks:
        total += len(block)
        if total > PASSPHRASE_MAX_BYTES:
            raise InvalidInput(
                f"passphrase sealing is limited to {_size(PASSPHRASE_MAX_BYTES)}",
                "seal to the successor's age or SSH public key instead (it streams without a limit)",
            )
        chunks.append(bytes(block))
    try:
        sealed = _pyrage_passphrase.encrypt(b"".join(chunks), passphrase, armored=armored)
    except Exception as exc:
        raise StorageError(f"age encryption failed: {exc}") from exc
    # rage calibrates the work factor to the machine; never write a file our own reader would refuse.
    read_header(io.BytesIO(sealed))
    try:
        out.write(sealed)
    except OSError as exc:
        raise StorageError(f"input/output error: {exc.strerror or exc}") from None
    return len(sealed), hashlib.sha256(sealed).hexdigest(), total


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
    observe: Callable[[memoryview], None] | None = None,
) -> OpenResult:
    """Low level :func:`open_stream`: check the header, then decrypt straight into ``dst``.

    ``dst`` receives plaintext chunks as they verify, so after an exception its content must be
    discarded; use it with a file that is thrown away on failure (an anonymous temp file).
    ``hashed=False`` skips the plaintext's SHA-256 (the result's ``sha256`` is then empty).
    ``observe`` is called with every block right after it was written to ``dst``, in order (a
    view that is only valid during the call); like ``dst``, what it saw means nothing unless this
    function returns. Raises as :func:`open_stream`.
    """
    _check_credentials(identities, passphrase)
    sink = _PlainSink(dst, hashed, observe)
    with _open_input(in_path) as src:
        header = read_header(src)
        _check_header_matches(header, identities, passphrase)
        src.seek(0)
        if passphrase is not None:
            sink.write(memoryview(_open_passphrase(src, passphrase, header)))
        else:
            _open_in_helper(src, sink, identities, header)
    return OpenResult(header, sink.size, sink.sha256.hexdigest() if sink.sha256 else "")


class _PlainSink:
    """Where decrypted blocks go: ``dst``, the optional hash and the optional observer."""

    def __init__(self, dst: IO[bytes], hashed: bool, observe: Callable[[memoryview], None] | None) -> None:
        self.dst, self.observe, self.size = dst, observe, 0
        self.sha256 = hashlib.sha256() if hashed else None

    def write(self, block: memoryview) -> None:
        try:
            self.dst.write(block)
        except OSError as exc:
            raise StorageError(f"input/output error: {exc.strerror or exc}") from None
        self.size += len(block)
        if self.sha256 is not None:
            self.sha256.update(block)
        if self.observe is not None:
            self.observe(block)


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


def _open_in_helper(
    src: BinaryIO, sink: _PlainSink, identities: Sequence[Identity], header: AgeHeader
) -> None:
    """Decrypt ``src`` (at offset 0) in the helper; its plaintext comes back through the pipe."""
    natives = [i.native for i in identities]

    def work(data_fd: int) -> dict[str, Any]:  # pragma: no cover - runs in the helper process
        # /dev/fd/N opens the very file we checked the header of, from its start; without /dev/fd
        # the helper reads ``src`` through the description it shares with us (we do not touch it).
        try:
            if _fd_paths(src.fileno(), data_fd):  # all in Rust: half the CPU of decrypt_io
                pyrage.decrypt_file(f"/dev/fd/{src.fileno()}", f"/dev/fd/{data_fd}", natives)
            else:
                with open(data_fd, "wb", buffering=_BLOCK) as out:
                    pyrage.decrypt_io(src, out, natives)
        except (pyrage.DecryptError, OSError) as exc:
            message = _first_line(exc)
            if isinstance(exc, pyrage.DecryptError):
                kind = "header"
            else:  # STREAM failures ("decryption error") carry no OS error number
                kind = "io" if _os_error(message) else "payload"
            raise _HelperFailed({"kind": kind, "message": message}) from None
        return {}

    helper = _fork_helper(work, parent_writes=False)
    buffer = memoryview(bytearray(_BLOCK))
    try:
        with open(helper.data_fd, "rb", buffering=0, closefd=False) as pipe:
            while n := pipe.readinto(buffer):
                sink.write(buffer[:n])
    except BaseException:
        helper.kill()
        raise
    report = helper.finish()
    if not report.get("ok"):
        raise _open_error(report, header)


def _open_error(report: dict[str, Any], header: AgeHeader) -> VaultError:
    kind, message = report.get("kind"), str(report.get("message") or "")
    if kind in ("header", "payload"):
        return _decrypt_error(message, header, header_failure=kind == "header")
    if kind == "io":
        return StorageError(f"input/output error: {message}")
    return StorageError("age decryption failed: the helper process stopped unexpectedly")


def _open_passphrase(src: BinaryIO, passphrase: str, header: AgeHeader) -> bytes:
    # Ciphertext is the plaintext plus 16 bytes per 64 KiB chunk, a header, and armor's 4/3.
    limit = PASSPHRASE_MAX_BYTES * 4 // 3 + MAX_HEADER_BYTES * 2
    if os.fstat(src.fileno()).st_size > limit:
        raise InvalidInput(
            f"passphrase-sealed files over {_size(PASSPHRASE_MAX_BYTES)} cannot be opened",
            "pyrage can only decrypt passphrase files in memory; use `age -d` for this one",
        )
    try:
        sealed = src.read()
    except OSError as exc:
        raise StorageError(f"input/output error: {exc.strerror or exc}") from None
    try:
        return bytes(_pyrage_passphrase.decrypt(sealed, passphrase))
    except (pyrage.DecryptError, OSError) as exc:
        raise _decrypt_error(_first_line(exc), header, isinstance(exc, pyrage.DecryptError)) from exc


def _decrypt_error(message: str, header: AgeHeader, header_failure: bool) -> VaultError:
    """Map pyrage's errors. It has no error codes, so this matches rage's fixed messages.

    ``header_failure``: pyrage raised ``DecryptError`` (the header or the keys); otherwise it raised
    ``OSError``, which it does for STREAM failures after releasing every chunk that verified.
    """
    if header_failure:
        if "No matching keys" in message or message == "Decryption failed":
            if header.is_passphrase:
                return AuthenticationFailed("wrong passphrase")
            return AuthenticationFailed(
                "none of the given identities can open this file",
                "it was sealed to other recipients; check the key file",
            )
        return IntegrityError(f"the age header is invalid or was modified ({message})")
    return IntegrityError(
        f"the encrypted payload is truncated or was modified ({message})",
        "nothing was kept; ask the sender for a fresh copy",
    )
