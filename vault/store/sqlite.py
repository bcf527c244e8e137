"""The SQLite vault file: pragmas, ``BEGIN IMMEDIATE``, the online backup API, VACUUM, file modes.

The embedded default (DESIGN §3): one file, 0600, in WAL mode with ``synchronous = FULL`` and
``secure_delete``. Every write runs inside ``BEGIN IMMEDIATE`` so that two processes never
interleave a read-modify-write (the audit chain depends on it).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from ..errors import AlreadyExists, Busy, IntegrityError, NotFound, StorageError, VaultError
from .engine import SCHEMA_HEAD, Store, _text, busy_seconds, create_private_file, schema_revision, upgrade

SQLITE_MAGIC = b"SQLite format 3\x00"
BULK_CACHE_KIB = 16 * 1024
# How long forget's checkpoint waits for readers that hold the WAL (milliseconds).
CHECKPOINT_WAIT_MS = 3000


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
    dbapi_conn.isolation_level = None
    dbapi_conn.text_factory = _text
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(busy_seconds() * 1000)}")
    cur.execute("PRAGMA journal_mode = WAL")
    # FULL: a commit that returned is on disk even after power loss (the WAL is fsynced each commit).
    cur.execute("PRAGMA synchronous = FULL")
    cur.execute("PRAGMA foreign_keys = ON")
    # Deleted content is overwritten with zeros, so forgotten clients do not linger in free pages.
    cur.execute("PRAGMA secure_delete = ON")
    cur.close()


def _on_begin(conn: Any) -> None:
    options = conn.get_execution_options()
    cache_kib = options.get("sqlite_cache_kib")
    if cache_kib:
        conn.exec_driver_sql(f"PRAGMA cache_size = -{int(cache_kib)}")
    conn.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'DEFERRED')}")


def make_engine(path: Path) -> Engine:
    # NullPool: one short-lived CLI process, and no pooled connection may outlive close(), so the
    # -wal/-shm files are checkpointed and released when the vault is closed.
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def wrap_db_error(exc: BaseException, doing: str) -> VaultError:
    """Turn a SQLAlchemy/SQLite error into a VaultError a technician understands."""
    orig = getattr(exc, "orig", exc)
    text = str(orig).lower()
    if "locked" in text or "busy" in text:
        return Busy(
            f"the vault is busy: another handover process held it too long while {doing}",
            "try again; raise HANDOVER_BUSY_TIMEOUT (seconds) if this repeats",
        )
    if "disk is full" in text or "database or disk is full" in text:
        return StorageError(f"the disk is full while {doing}; nothing was changed")
    if "readonly" in text or "read-only" in text:
        return StorageError(f"the vault file is read-only while {doing}; nothing was changed")
    if "not a database" in text or "malformed" in text or "file is not" in text or "could not decode" in text:
        return IntegrityError(f"the vault file is corrupt or not a vault ({doing})")
    if "no such table" in text:
        return IntegrityError(f"the vault file is missing tables ({doing}); it is not a handover vault")
    if "unable to open" in text:
        return StorageError(
            f"cannot open the vault's files while {doing} (is its folder read-only or gone?); nothing was changed"
        )
    if "i/o" in text or "disk i/o" in text:
        return StorageError(f"an I/O error occurred while {doing}; nothing was changed")
    # Constraint text names tables/columns only, never values (values are bound parameters).
    return StorageError(f"the database refused the operation while {doing}: {orig.__class__.__name__}")


class SqliteStore(Store):
    """A vault file. Writes take ``BEGIN IMMEDIATE``; a bulk write a larger page cache."""

    kind: ClassVar[str] = "sqlite"
    db_errors: ClassVar[tuple[type[BaseException], ...]] = (SQLAlchemyError, sqlite3.Error)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path.resolve())
        self.engine = make_engine(path)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        # A bulk write (an import of thousands of entries) inserts into the search-token indexes at
        # thousands of places per statement: with SQLite's default 2 MiB page cache the same pages
        # are evicted and re-read over and over. The larger cache lives only as long as the
        # transaction's connection (NullPool), so reads such as an export stay small.
        self._bulk_writer = self.engine.execution_options(
            sqlite_begin="IMMEDIATE", sqlite_cache_kib=BULK_CACHE_KIB
        )

    @property
    def file(self) -> Path:
        assert self.path is not None
        return self.path

    def wrap_error(self, exc: BaseException, doing: str) -> VaultError:
        return wrap_db_error(exc, doing)

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and truncate it to zero bytes.

        Checkpoints and VACUUM cannot run inside a transaction, and every SQLAlchemy connection here
        opens one (the "begin" event), so this drives the driver connection directly.
        """
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise wrap_db_error(exc, "checkpointing the vault") from None

    def purge(self) -> bool:
        """VACUUM, then checkpoint the WAL and truncate it. True when the -wal file is empty afterwards.

        VACUUM cannot run inside a transaction, and every SQLAlchemy connection here opens one with
        BEGIN, so this drives the driver connection directly (its pragmas, secure_delete included,
        were set when it connected).
        """
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                raw.execute("VACUUM")
                raw.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_WAIT_MS)}")
                busy, _log, _done = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise wrap_db_error(exc, "vacuuming the vault") from None
        wal = self.file.with_name(self.file.name + "-wal")
        return bool(busy == 0 and (not wal.exists() or wal.stat().st_size == 0))

    def backup(self, dest: Path) -> None:
        online_backup(self.file, dest)

    def upgrade_older(self) -> None:
        upgrade_older(self)

    def upgrade_copies(self) -> list[Path]:
        """The copies a schema upgrade made next to the vault (``NAME.pre-NNNN[.n].bak``).

        Each is the whole vault as it was before that upgrade: a client that was in it then is in it
        still, under the same keys, whatever ``forget`` does to the vault itself.
        """
        path = self.file
        pattern = re.compile(re.escape(path.name) + r"\.pre-[0-9a-z_]+(\.[0-9]+)?\.bak")
        try:
            names = sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
        except OSError:
            return []
        return [p for p in names if p.is_file() and not p.is_symlink()]


def check_file(path: Path) -> None:
    """Fail early and clearly when ``path`` is missing or is not an SQLite file at all."""
    if not path.exists():
        raise NotFound(f"no vault at {path}", "create one with: handover init")
    if path.is_dir():
        raise NotFound(f"{path} is a directory, not a vault file")
    if not path.is_file():
        # A FIFO or device would block or stream forever on the read below.
        raise IntegrityError(f"{path} is not a regular file, so it is not a handover vault")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    if head != SQLITE_MAGIC:
        raise IntegrityError(f"{path} is not a handover vault (not an SQLite database, or corrupt)")
    # Even reading writes: the audit log of reveals, and SQLite's -wal/-shm files beside the vault.
    # access() also sees a read-only mount, which file modes do not show (root ignores them).
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise StorageError(
            f"the vault {path} is read-only (the file, its folder or the file system); handover needs "
            "to write there even to read, so nothing was done",
            "copy the vault to a writable folder, or remount it read-write",
        )


def upgrade_older(store: SqliteStore) -> None:
    """Back an older vault up next to it (SQLite online backup, 0600), then upgrade it in place.

    Several processes may open an older vault at once: each checks the revision again before it
    backs up, takes a backup name no other has taken, and upgrades under the write lock (see
    :func:`~vault.store.engine.upgrade`), where the second finds the work done.
    """
    if schema_revision(store) == SCHEMA_HEAD:
        return
    for n in range(1000):
        name = f"{store.file.name}.pre-{SCHEMA_HEAD}{f'.{n}' if n else ''}.bak"
        backup_to = store.file.with_name(name)
        if backup_to.exists():
            continue
        try:
            online_backup(store.file, backup_to)
            break
        except AlreadyExists:
            continue  # another process opening the vault took this name meanwhile
    upgrade(store)


def online_backup(src: Path, dest: Path) -> None:
    """Copy a live vault with SQLite's online backup API into a new 0600 file."""
    if dest.exists():
        raise AlreadyExists(f"{dest} already exists; choose another backup file name")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        create_private_file(tmp)
        source = sqlite3.connect(str(src), timeout=busy_seconds())
        target = sqlite3.connect(str(tmp))
        try:
            source.backup(target)
            # The backup is a standalone file: fold its journal into it before it is renamed.
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
            source.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except (sqlite3.Error, OSError) as exc:
        _unlink_quietly(tmp)
        raise wrap_db_error(exc, f"backing up to {dest}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def standalone(path: Path) -> None:
    """Fold a closed vault file's WAL into it, leave it in rollback-journal mode and fsync it: a
    copy that is one file and survives a power cut once renamed into place."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
