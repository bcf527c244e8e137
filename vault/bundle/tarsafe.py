"""The bundle's tar layer: a deterministic streamed writer and a defensive reader (DESIGN §6).

Writer: :class:`TarStream` yields a POSIX.1-2001 (pax) archive of one top folder as a readable
stream, so that pyrage can encrypt it without the archive ever being held in memory. Entries are
sorted, directories explicit, owner 0/0 with empty names, modes 0700/0600, one fixed mtime. Plain
ustar headers are used for every entry whose name fits; a pax ``path`` record is added only for a
non-ASCII or over-long name. Each file's bytes are re-hashed as they stream and a source that does
not match its declared size and SHA-256 aborts the stream with :class:`IntegrityError`.

Reader: :func:`open_checked` refuses, before anything is extracted or even hashed, every member that
is not a regular file or directory, every unsafe or duplicate name, anything outside one top folder,
and archives over the caps in :class:`TarLimits`. It first walks the raw 512-byte headers itself,
because ``tarfile`` reads pax headers whole into memory and honours pax records (``size``, sparse
maps, ``hdrcharset``) that a hostile archive could use to make two readers disagree. Extraction
(:func:`extract_files`) never calls ``tarfile.extract``: each file is read with ``extractfile`` and
written through directory file descriptors opened with ``O_NOFOLLOW``, so a symlink planted in the
target cannot redirect a write.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import AlreadyExists, IntegrityError, InvalidInput, StorageError
from ..validate import TERMINAL_UNSAFE

BLOCK = tarfile.BLOCKSIZE  # 512: tar's unit
RECORD = tarfile.RECORDSIZE  # 10240: archives are padded to whole records, as tar(1) and tarfile do
_ZERO_BLOCK = bytes(BLOCK)
_CHUNK = 64 * 1024  # read/write granularity: large enough to be fast, small enough to stay flat
# The modes inside the archive are what `tar x` by hand applies (less the umask): 0600/0700, because
# the bundle holds every client secret and a successor extracting it must not leave them readable
# by other users of the machine. Our own extraction writes the same modes whatever the archive says.
FILE_MODE = 0o600
DIR_MODE = 0o700
EXTRACT_FILE_MODE = 0o600
EXTRACT_DIR_MODE = 0o700
# The top folder is a slug plus a date; restricting its alphabet keeps it safe on every file system.
_TOP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# pax keys we accept: only what describes a plain file. `size`, `linkpath`, `hdrcharset` and the
# GNU.sparse.* family change how the data that follows is read, so an archive carrying them could
# mean one thing to us and another to tar(1).
_PAX_ALLOWED = frozenset({"path", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname"})
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")  # the same pattern tarfile uses, so we see what it sees
_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.XGLTYPE: "a global pax header",
    tarfile.GNUTYPE_LONGNAME: "a GNU long name",
    tarfile.GNUTYPE_LONGLINK: "a GNU long link",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


@dataclass(frozen=True)
class TarLimits:
    """Caps applied to an archive before anything is written (all generous for real bundles)."""

    # A bundle holds tens to a few hundred files; 10 000 bounds the member table we keep in memory.
    max_members: int = 10_000
    # Vault attachments are size-capped far below this; a bigger member is not one of ours.
    max_member_size: int = 4 * 1024**3
    # Bounds the disk a hostile archive can make the successor fill.
    max_total_size: int = 16 * 1024**3
    # PATH_MAX is 4096 and NAME_MAX 255 on Linux; our own names are far shorter.
    max_name_bytes: int = 1024
    max_component_bytes: int = 255
    max_depth: int = 16
    # tarfile reads a pax header whole; ours carry one short `path` record.
    max_pax_bytes: int = 64 * 1024


DEFAULT_LIMITS = TarLimits()


def name_problem(name: str, limits: TarLimits = DEFAULT_LIMITS) -> str | None:
    """Why ``name`` is not a safe relative path inside an archive, or None when it is.

    Refused: empty, NUL, backslash, control and format characters (``validate.TERMINAL_UNSAFE``), a leading ``/``, empty, ``.`` or ``..``
    components, and names or components longer than the limits.
    """
    if not name:
        return "an empty name"
    if "\x00" in name:
        return "a NUL byte in the name"
    if "\\" in name:
        return "a backslash in the name"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "a control character in the name"
    if TERMINAL_UNSAFE.search(name):
        # C1 controls, bidi overrides (U+202E shows "gpj.exe" as "exe.jpg") and other format
        # characters: the same set printable() neutralises on a terminal.
        return "a control or format character (such as a bidi override) in the name"
    if name.startswith("/"):
        return "an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "a '..' component"
    if any(p in ("", ".") for p in parts):
        return "an empty or '.' component"
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_name_bytes or len(parts) > limits.max_depth:
        return "a name that is too long or too deep"
    if any(len(p.encode("utf-8", "surrogateescape")) > limits.max_component_bytes for p in parts):
        return "a path component longer than 255 bytes"
    return None


def _shown(name: str) -> str:
    """A member name made printable for messages (repr escapes NUL, newlines and the like)."""
    return repr(name[:200])


# --- Writer --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle: where it goes, what it must contain, and how to read it again.

    ``chunks`` is called once, while the archive streams; the bytes it yields must add up to
    ``size`` and hash to ``sha256`` or the stream fails. ``source_checked`` says that ``chunks``
    itself guarantees its bytes are those ``sha256`` was computed over (an attachment's chunks
    authenticate under their record and position, see :func:`vault.attachments.chunk_aad`), or
    raises :class:`IntegrityError`: the stream then still counts the bytes but does not hash them.
    """

    name: str
    size: int
    sha256: str
    chunks: Callable[[], Iterable[bytes]] = field(repr=False, compare=False)
    source_checked: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> BundleFile:
        """A file whose content is already in memory (reports, JSON, CSV)."""
        return cls(name, len(data), hashlib.sha256(data).hexdigest(), lambda: (data,))

    @classmethod
    def from_path(cls, name: str, path: Path) -> BundleFile:
        """A file on disk: hashed now, read again while streaming (a change in between is caught).

        Raises:
            StorageError: the file cannot be read.
        """
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise StorageError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        return cls(name, size, digest.hexdigest(), lambda: _read_chunks(path))


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def plan_entries(top: str, files: Sequence[BundleFile]) -> list[tuple[str, BundleFile | None]]:
    """The archive's entries in order: (path inside ``top``, file or None for a directory).

    ``""`` stands for the top folder itself. Sorting by path components puts every directory
    before its contents, and code-point order equals UTF-8 byte order, so the order is the same
    everywhere.

    Raises:
        InvalidInput: a bad top folder name, an unsafe, duplicate or clashing file name.
    """
    if not _TOP_NAME.fullmatch(top):
        raise InvalidInput(f"the bundle folder name {_shown(top)} is not a simple name")
    by_name: dict[str, BundleFile] = {}
    directories: set[str] = {""}
    for f in files:
        problem = name_problem(f.name)
        if problem:
            raise InvalidInput(f"cannot put {_shown(f.name)} in a bundle: {problem}")
        if f.name in by_name:
            raise InvalidInput(f"the bundle lists {_shown(f.name)} twice")
        if f.size < 0 or not re.fullmatch(r"[0-9a-f]{64}", f.sha256):
            raise InvalidInput(f"{_shown(f.name)} has an invalid declared size or SHA-256")
        by_name[f.name] = f
        parts = f.name.split("/")
        directories.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(directories & by_name.keys())
    if clash:
        raise InvalidInput(f"{_shown(clash[0])} is both a file and a folder in the bundle")
    entries: list[tuple[str, BundleFile | None]] = [(d, None) for d in directories]
    entries += list(by_name.items())
    entries.sort(key=lambda e: e[0].split("/") if e[0] else [])
    return entries


def _header(path: str, size: int, is_dir: bool, mtime: int) -> bytes:
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size = 0 if is_dir else size
    info.mode = DIR_MODE if is_dir else FILE_MODE
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _verified_chunks(f: BundleFile) -> Iterator[bytes]:
    digest, seen = hashlib.sha256(), 0
    update = None if f.source_checked else digest.update
    for chunk in f.chunks():
        seen += len(chunk)
        if seen > f.size:
            raise IntegrityError(f"{_shown(f.name)} is larger than its declared {f.size} bytes")
        if update is not None:
            update(chunk)
        yield bytes(chunk)
    if seen != f.size:
        raise IntegrityError(f"{_shown(f.name)} has {seen} bytes, not the declared {f.size}")
    if update is not None and digest.hexdigest() != f.sha256:
        raise IntegrityError(f"{_shown(f.name)} does not match its declared SHA-256")


def _archive_parts(top: str, files: Sequence[BundleFile], mtime: int) -> Iterator[bytes]:
    written = 0
    for rel, f in plan_entries(top, files):
        path = f"{top}/{rel}" if rel else top
        header = _header(path, f.size if f else 0, f is None, mtime)
        written += len(header)
        yield header
        if f is not None:
            yield from _verified_chunks(f)
            padding = -f.size % BLOCK
            written += f.size + padding
            yield bytes(padding)
    # End of archive: two zero blocks, then zeros up to a whole record.
    end = 2 * BLOCK
    end += -(written + end) % RECORD
    yield bytes(end)


class TarStream(io.RawIOBase):
    """A read-only stream of the archive, produced on demand (nothing is buffered beyond a chunk).

    Reading raises :class:`IntegrityError` if a file's source does not match its declaration and
    :class:`InvalidInput` for bad names (checked on the first read); the stream is unusable after.
    """

    def __init__(self, top: str, files: Sequence[BundleFile], *, mtime: int = 0) -> None:
        super().__init__()
        plan_entries(top, files)  # fail on bad names now, not halfway through a seal
        if mtime < 0:
            raise InvalidInput("the archive mtime must not be negative")
        self._parts = _archive_parts(top, list(files), mtime)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes. pyrage reads 8 KiB at a time, so the common case (the current
        part holds enough) is one slice, without RawIOBase's bytearray and copy loop."""
        if 0 < size <= len(self._pending):
            data = bytes(self._pending[:size])
            self._pending = self._pending[size:]
            return data
        return super().read(size)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._pending:
                part = next(self._parts, None)
                if part is None:
                    break
                self._pending = memoryview(part)
            take = min(len(view) - filled, len(self._pending))
            view[filled : filled + take] = self._pending[:take]
            self._pending = self._pending[take:]
            filled += take
        return filled


def tar_parts(top: str, files: Sequence[BundleFile], *, mtime: int = 0) -> Iterator[bytes]:
    """The archive of :func:`tar_stream` as the blocks it is made of (headers, file chunks, padding).

    No copy and no per-read call: what a writer to a pipe wants. Bad names raise
    :class:`InvalidInput` here, not at the first block; a source that does not match its
    declaration raises :class:`IntegrityError` from the iteration.
    """
    plan_entries(top, files)
    if mtime < 0:
        raise InvalidInput("the archive mtime must not be negative")
    return _archive_parts(top, list(files), mtime)


def tar_stream(top: str, files: Sequence[BundleFile], *, mtime: int = 0) -> TarStream:
    """The deterministic archive of ``files`` under the folder ``top`` (see :class:`TarStream`).

    ``mtime`` is stamped on every entry; the bundle uses the export date at 00:00 UTC.

    Raises:
        InvalidInput: bad names (see :func:`plan_entries`).
    """
    return TarStream(top, files, mtime=mtime)


# --- Reader: raw pre-scan ------------------------------------------------------------------------------


def _refuse(message: str) -> IntegrityError:
    return IntegrityError(message, "the archive is damaged or hostile; nothing was extracted")


def prescan(f: IO[bytes], limits: TarLimits = DEFAULT_LIMITS) -> None:
    """Walk the raw headers of a seekable archive and refuse anything we would not write.

    Raises:
        IntegrityError: a corrupt or truncated header, a member type other than file, directory or
            pax extended header, a pax record outside :data:`_PAX_ALLOWED`, or a cap exceeded.
    """
    end = f.seek(0, os.SEEK_END)
    f.seek(0)
    headers = total = 0
    while True:
        block = f.read(BLOCK)
        if len(block) < BLOCK:
            raise _refuse("the archive is truncated (no end-of-archive marker)")
        if block == _ZERO_BLOCK:
            if headers == 0:
                raise _refuse("the archive is empty")
            return
        headers += 1
        # Every member may carry a pax header, hence twice the member cap.
        if headers > 2 * limits.max_members:
            raise _refuse(f"the archive has more than {limits.max_members} members")
        info = _raw_header(block)
        total += _check_raw_member(f, info, limits)
        if total > limits.max_total_size:
            raise _refuse(f"the archive's files add up to more than {limits.max_total_size} bytes")
        if f.tell() > end:
            raise _refuse("the archive is truncated")


def _raw_header(block: bytes) -> tarfile.TarInfo:
    try:
        return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        raise _refuse("the archive has a corrupt header") from None


def _check_raw_member(f: IO[bytes], info: tarfile.TarInfo, limits: TarLimits) -> int:
    """Check one raw header and skip its data; return the bytes it adds to the file total."""
    if info.size < 0:
        raise _refuse(f"{_shown(info.name)} has a negative size")
    if info.type == tarfile.XHDTYPE:
        if info.size > limits.max_pax_bytes:
            raise _refuse("the archive has an oversized pax header")
        _check_pax(f.read(_blocks(info.size)), info.size)
        return 0
    if info.type == tarfile.DIRTYPE:
        if info.size:
            raise _refuse(f"the directory {_shown(info.name)} claims to have content")
        return 0
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        kind = _TYPE_NAMES.get(info.type, f"an entry of unsupported type {info.type!r}")
        raise _refuse(f"{_shown(info.name)} is {kind}; only regular files and folders are allowed")
    if info.size > limits.max_member_size:
        raise _refuse(f"{_shown(info.name)} is larger than the limit of {limits.max_member_size} bytes")
    f.seek(_blocks(info.size), os.SEEK_CUR)
    return info.size


def _blocks(size: int) -> int:
    return size + (-size % BLOCK)


def _check_pax(buf: bytes, size: int) -> None:
    """Read pax records exactly as tarfile will (over the padded blocks) and allow-list the keys."""
    if len(buf) < size:
        raise _refuse("the archive is truncated inside a pax header")
    if b"hdrcharset=" in buf:  # tarfile searches for it anywhere in the block
        raise _refuse("the archive's pax header declares a character set")
    pos = 0
    while match := _PAX_RECORD.match(buf, pos):
        length, key = int(match.group(1)), match.group(2)
        if length <= 0:
            raise _refuse("the archive has a malformed pax record")
        if key.decode("utf-8", "replace") not in _PAX_ALLOWED:
            raise _refuse(f"the archive uses the pax key {_shown(key.decode('utf-8', 'replace'))}")
        pos += length


# --- Reader: member hashes while the archive is written -----------------------------------------------


class MemberHasher:
    """Hashes every regular file's data as the archive passes by, in the same pass as decryption.

    Fed the archive's bytes in order (:meth:`feed`), it walks the 512-byte headers the simple way
    (each header's size, padded to a block) and records ``(data offset, size) -> SHA-256`` for each
    regular file. It decides nothing and is trusted with nothing: :meth:`digest_of` answers only
    for the exact offset and size that ``tarfile``'s own reading reports later, after the file
    authenticated and its structure was checked; a member it did not follow the same way (pax size
    records, a corrupt header, an archive past its caps) is simply not known and is hashed again
    from the file. The bytes fed are those written to the file, in order, so a digest equals that of
    the same range read back.
    """

    def __init__(self, limits: TarLimits = DEFAULT_LIMITS) -> None:
        self._cap = 2 * limits.max_members  # headers walked at most (a pax header each)
        self._offset = 0  # archive offset of the next byte fed
        self._header = bytearray()
        self._skip = 0  # bytes still to pass without hashing (pax data, padding)
        self._left = 0  # bytes of the current member still to hash
        self._start = self._size = 0
        self._digest = hashlib.sha256()
        self._done = False
        self._digests: dict[tuple[int, int], str] = {}

    def feed(self, data: memoryview) -> None:
        pos, n = 0, len(data)
        while pos < n and not self._done:
            if self._left:
                take = min(self._left, n - pos)
                self._digest.update(data[pos : pos + take])
                self._left -= take
                pos += take
                if not self._left:
                    self._member_done()
            elif self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
            else:
                take = min(BLOCK - len(self._header), n - pos)
                self._header += data[pos : pos + take]
                pos += take
                if len(self._header) == BLOCK:
                    self._next_header(self._offset + pos)
        self._offset += n

    def digest_of(self, offset: int, size: int) -> str | None:
        """The SHA-256 of the ``size`` bytes at ``offset`` if they were a member walked here."""
        return self._digests.get((offset, size))

    def _next_header(self, data_offset: int) -> None:
        block = bytes(self._header)
        self._header.clear()
        if block == _ZERO_BLOCK or len(self._digests) >= self._cap:
            self._done = True
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            self._done = True
            return
        if info.size < 0:
            self._done = True
        elif info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            self._start, self._size, self._left = data_offset, info.size, info.size
            self._digest = hashlib.sha256()
            if not info.size:
                self._member_done()
        else:
            self._skip = _blocks(info.size)

    def _member_done(self) -> None:
        self._digests[(self._start, self._size)] = self._digest.hexdigest()
        self._skip = -self._size % BLOCK


# --- Reader: member checks -----------------------------------------------------------------------------


@dataclass
class CheckedTar:
    """An open archive whose structure passed every check; members are addressed relative to root."""

    tar: tarfile.TarFile
    root: str
    files: dict[str, tarfile.TarInfo]
    directories: set[str]

    def iter_member(self, rel: str) -> Iterator[bytes]:
        """The member's bytes in chunks."""
        reader = self.tar.extractfile(self.files[rel])
        if reader is None:  # pragma: no cover - impossible for a checked regular file
            raise _refuse(f"{_shown(rel)} cannot be read")
        with reader:
            while chunk := reader.read(_CHUNK):
                yield chunk

    def read_member(self, rel: str, max_bytes: int) -> bytes:
        """A small member's content.

        Raises:
            IntegrityError: the member is missing or larger than ``max_bytes``.
        """
        info = self.files.get(rel)
        if info is None:
            raise IntegrityError(f"the bundle has no {rel}", "it was not made by handover-vault")
        if info.size > max_bytes:
            raise IntegrityError(f"{rel} in the bundle is implausibly large ({info.size} bytes)")
        return b"".join(self.iter_member(rel))


@contextmanager
def open_checked(f: IO[bytes], limits: TarLimits = DEFAULT_LIMITS) -> Iterator[CheckedTar]:
    """Open a seekable, uncompressed archive and check its whole structure before yielding.

    Raises:
        IntegrityError: anything :func:`prescan` or the member checks refuse (the message names
            the member and the reason).
    """
    prescan(f, limits)
    f.seek(0)
    try:
        tar = tarfile.open(fileobj=f, mode="r:", encoding="utf-8", errors="strict")
    except (tarfile.TarError, UnicodeDecodeError) as exc:
        raise _refuse(f"the archive cannot be read ({exc})") from None
    with tar:
        try:
            members = _collect_members(tar, limits)
        except (tarfile.TarError, UnicodeDecodeError) as exc:
            raise _refuse(f"the archive cannot be read ({exc})") from None
        yield _index(tar, members)


def _collect_members(tar: tarfile.TarFile, limits: TarLimits) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    while (member := tar.next()) is not None:
        if len(members) == limits.max_members:
            raise _refuse(f"the archive has more than {limits.max_members} members")
        problem = _member_problem(member, limits)
        if problem:
            raise _refuse(f"refusing {_shown(member.name)}: {problem}")
        members.append(member)
    return members


def _member_problem(member: tarfile.TarInfo, limits: TarLimits) -> str | None:
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        return _TYPE_NAMES.get(member.type, "an unsupported member type")
    if member.sparse is not None:
        return "a sparse file"
    if member.isreg() and member.size > limits.max_member_size:
        return f"larger than the limit of {limits.max_member_size} bytes"
    return name_problem(member.name, limits)


def _index(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> CheckedTar:
    if not members:
        raise _refuse("the archive is empty")
    root = members[0].name.split("/")[0]
    files: dict[str, tarfile.TarInfo] = {}
    directories: set[str] = set()
    seen: set[str] = set()
    for m in members:
        parts = m.name.split("/")
        if parts[0] != root or (m.isreg() and len(parts) < 2):
            raise _refuse(f"{_shown(m.name)} is outside the bundle's single top folder {_shown(root)}")
        # NFC + casefold: names that would land on the same file on macOS or Windows are duplicates.
        folded = unicodedata.normalize("NFC", m.name).casefold()
        if folded in seen:
            raise _refuse(f"{_shown(m.name)} appears more than once in the archive")
        seen.add(folded)
        rel = "/".join(parts[1:])
        if m.isdir():
            directories.add(rel)
        else:
            files[rel] = m
    _check_no_file_as_folder(files, directories)
    return CheckedTar(tar, root, files, directories)


def _check_no_file_as_folder(files: Mapping[str, tarfile.TarInfo], directories: set[str]) -> None:
    parents = {"/".join(p.split("/")[:i]) for p in [*files, *directories] for i in range(1, p.count("/") + 1)}
    clash = sorted((parents | directories) & files.keys())
    if clash:
        raise _refuse(f"{_shown(clash[0])} is both a file and a folder in the archive")


# --- Extraction ----------------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def extract_files(checked: CheckedTar, to_dir: Path, expected: Mapping[str, tuple[int, str]]) -> list[Path]:
    """Write every file of ``checked`` under ``to_dir/<root>/``; return the paths written.

    Only names in ``expected`` (rel path -> size, sha256) are written, each re-hashed as it is
    written (the archive could change between verification and extraction). Files are created
    0600 and directories 0700, never replacing anything. On any failure everything written so far
    is removed.

    Raises:
        AlreadyExists: a file of the bundle already exists in the target.
        IntegrityError: a member no longer matches its expected hash, or the target contains a
            symbolic link where a folder should be.
        StorageError: the file system refused.
    """
    try:
        os.makedirs(to_dir, mode=EXTRACT_DIR_MODE, exist_ok=True)
        base_fd = os.open(to_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(f"cannot use {str(to_dir)!r} as the target folder: {exc.strerror}") from None
    created: list[tuple[str, bool]] = []  # (path relative to to_dir, is_dir), in creation order
    try:
        for rel in sorted(expected, key=lambda p: p.split("/")):
            _extract_one(checked, base_fd, rel, expected[rel], created)
    except BaseException:
        _undo(base_fd, created)
        raise
    finally:
        os.close(base_fd)
    return [Path(to_dir, p) for p, is_dir in created if not is_dir]


def _extract_one(
    checked: CheckedTar, base_fd: int, rel: str, want: tuple[int, str], created: list[tuple[str, bool]]
) -> None:
    parts = [checked.root, *rel.split("/")]
    dir_fd = _walk_dirs(base_fd, parts[:-1], created)
    target = "/".join(parts)
    try:
        try:
            fd = os.open(parts[-1], _NEW_FILE_FLAGS, EXTRACT_FILE_MODE, dir_fd=dir_fd)
        except FileExistsError:
            raise AlreadyExists(
                f"{target} already exists in the target folder; refusing to overwrite"
            ) from None
        created.append((target, False))
        _write_member(checked, rel, fd, want)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        os.close(dir_fd)


def _write_member(checked: CheckedTar, rel: str, fd: int, want: tuple[int, str]) -> None:
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out:
        for chunk in checked.iter_member(rel):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if (size, digest.hexdigest()) != want:
        raise IntegrityError(f"{rel} changed after it was verified", "extraction was undone")


def _walk_dirs(base_fd: int, parts: Sequence[str], created: list[tuple[str, bool]]) -> int:
    """Open (creating 0700 where missing) each folder of ``parts`` without following symlinks."""
    fd = os.dup(base_fd)
    for i, part in enumerate(parts):
        try:
            os.mkdir(part, EXTRACT_DIR_MODE, dir_fd=fd)
            created.append(("/".join(parts[: i + 1]), True))
        except FileExistsError:
            pass
        except OSError as exc:
            os.close(fd)
            raise StorageError(
                f"cannot create the folder {'/'.join(parts[: i + 1])}: {exc.strerror}"
            ) from None
        try:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            raise IntegrityError(
                f"{'/'.join(parts[: i + 1])} in the target folder is not a plain folder (a symlink?)",
                "extract into an empty folder",
            ) from None
        finally:
            os.close(fd)
        fd = next_fd
    return fd


def _undo(base_fd: int, created: list[tuple[str, bool]]) -> None:
    """Remove what we created, newest first, again without following symlinks. Best effort."""
    for path, is_dir in reversed(created):
        parent, _, name = path.rpartition("/")
        try:
            dir_fd = _open_existing(base_fd, parent.split("/") if parent else [])
        except OSError:
            continue
        try:
            if is_dir:
                os.rmdir(name, dir_fd=dir_fd)
            elif stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


def _open_existing(base_fd: int, parts: Sequence[str]) -> int:
    fd = os.dup(base_fd)
    for part in parts:
        try:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = next_fd
    return fd
