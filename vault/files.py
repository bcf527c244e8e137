"""Writing files that hold secrets: 0600 from creation, complete or absent, never clobbering.

One implementation for every output of the program (bundles, identities, letters, reports,
checkpoints, attachments): a temp file made by ``mkstemp`` (0600) beside the target, fsynced,
renamed into place without replacing an existing file, and the directory fsynced; on any failure
the temp file is removed and the target is untouched.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import AlreadyExists, NotFound, StorageError

_NO_CLOBBER_HINT = "choose another name or remove it first"


@contextmanager
def atomic_output(final: Path, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Yield a file that becomes ``final`` only if the block completes.

    The temp file is created 0600 from the start (``mkstemp``) in ``final``'s directory, so the
    rename is atomic; it is fsynced before the rename and the directory after. On any exception the
    temp file is removed and ``final`` is untouched.

    Raises:
        AlreadyExists: ``final`` exists and ``overwrite`` is false.
        NotFound: the directory does not exist.
        StorageError: the file system refused.
    """
    final = Path(final)
    if not overwrite and os.path.lexists(final):
        raise AlreadyExists(f"{final} already exists; refusing to overwrite it", _NO_CLOBBER_HINT)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    except FileNotFoundError:
        raise NotFound(f"the directory {str(final.parent)!r} does not exist") from None
    except OSError as exc:
        raise StorageError(f"cannot create a file in {str(final.parent)!r}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        _publish(Path(tmp_name), final, overwrite)
    except BaseException:
        _remove_quietly(Path(tmp_name))
        raise


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    try:
        if overwrite:
            os.replace(tmp, final)
        else:
            _rename_no_clobber(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except FileExistsError:
        raise AlreadyExists(f"{final} already exists; refusing to overwrite it", _NO_CLOBBER_HINT) from None
    except OSError as exc:
        raise StorageError(f"cannot write {str(final)!r}: {exc.strerror}") from None


def _rename_no_clobber(tmp: Path, final: Path) -> None:
    # link() fails if final appeared meanwhile: a no-clobber rename without a race.
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError as exc:
        # exFAT/FAT USB sticks and some network shares have no hard links: fall back to a checked
        # rename (a race with another writer of the same name is then possible, and acceptable).
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
        os.rename(tmp, final)
        return
    os.unlink(tmp)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def write_private(final: Path | str, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``final`` atomically, 0600. Raises AlreadyExists, NotFound, StorageError."""
    final = Path(final)
    try:
        with atomic_output(final, overwrite=overwrite) as out:
            out.write(data)
    except OSError as exc:  # a write error (disk full, I/O error) inside the block
        raise StorageError(f"cannot write {str(final)!r}: {exc.strerror}") from None
    return final
