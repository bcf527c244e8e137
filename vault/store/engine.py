"""The SQLite file: engine, pragmas, transactions, schema version and online backup.

Every write runs inside ``BEGIN IMMEDIATE`` so that two processes never interleave a read-modify-
write (the audit chain depends on it). SQLAlchemy and SQLite errors are wrapped here into
:class:`VaultError` subclasses; none leaves ``vault/``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import Busy, IntegrityError, MigrationRequired, NotFound, StorageError, VaultError

# The Alembic revision this program writes. Checked with one cheap query on open, so Alembic is
# imported only when an upgrade is due. tests/test_migrations.py asserts it equals Alembic's head.
SCHEMA_HEAD = "0006"
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_BUSY_SECONDS = 30.0
MAX_BUSY_SECONDS = 86_400.0
BULK_CACHE_KIB = 16 * 1024


def busy_seconds() -> float:
    """How long a writer waits for another process before giving up (``HANDOVER_BUSY_TIMEOUT``)."""
    raw = os.environ.get("HANDOVER_BUSY_TIMEOUT")
    try:
        seconds = float(raw) if raw else DEFAULT_BUSY_SECONDS
    except ValueError:
        return DEFAULT_BUSY_SECONDS
    if not math.isfinite(seconds):  # "inf" overflowed the milliseconds given to SQLite; "nan" is no time
        return DEFAULT_BUSY_SECONDS
    # SQLite takes a 32-bit count of milliseconds: a day is far beyond any real wait, and still bounded.
    return min(max(0.1, seconds), MAX_BUSY_SECONDS)


def create_private_file(path: Path) -> None:
    """Create an empty file that only the owner may read, failing if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def _text(raw: bytes) -> str:
    """Decode a TEXT value. A raw edit can store any bytes as TEXT (even in a blob column): invalid
    UTF-8 must reach our checks as an altered value (exit 4), not abort the read (pysqlite's
    default decoder raises OperationalError, which reads as a storage failure)."""
    return raw.decode("utf-8", "replace")


class TextNotUtf8(Exception):
    """Inside :func:`builtin_text`: a TEXT value is not valid UTF-8 (read it again without)."""


@contextlib.contextmanager
def builtin_text(s: Session) -> Iterator[None]:
    """For the block, decode TEXT with sqlite3's built-in UTF-8 decoder instead of :func:`_text`.

    The built-in one skips a Python call per value (``audit verify`` reads five per entry, half a
    million for a long log). A value that is not valid UTF-8 then raises :class:`TextNotUtf8`
    instead of decoding with replacement characters; the caller reads again without this block.
    """
    raw = s.connection().connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):
        yield
        return
    raw.text_factory = str
    try:
        yield
    except (DBAPIError, sqlite3.OperationalError) as exc:
        orig = getattr(exc, "orig", exc)  # wrapped by SQLAlchemy, or straight from scan()'s cursor
        if isinstance(orig, sqlite3.OperationalError) and "decode" in str(orig):
            raise TextNotUtf8 from None  # the message quotes the value: never passed on
        raise
    finally:
        raw.text_factory = _text


def scan(s: Session, statement: Any, batch: int = 2000) -> Iterator[tuple[Any, ...]]:
    """The rows of a SELECT without parameters as plain tuples, from the driver's own cursor.

    For long scans inside the session's transaction (``audit verify`` reads every entry), where
    SQLAlchemy's per-row result handling is a tenth of the time. Values come as the driver gives
    them, with no type processing: only for columns of plain types (str, bytes, int, None).
    """
    conn = s.connection()
    compiled = statement.compile(dialect=conn.dialect)
    if compiled.params:
        raise ValueError("scan() takes a statement without parameters")
    cursor = conn.connection.cursor()
    try:
        cursor.execute(compiled.string)
        while rows := cursor.fetchmany(batch):
            yield from rows
    finally:
        cursor.close()


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
    engine = create_engine(f"sqlite:///{path}", poolclass=_null_pool())
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    # One short-lived CLI process: no pooled connection may outlive close(), so the -wal/-shm files
    # are checkpointed and released when the vault is closed.
    return NullPool


def insert_many(s: Session, table: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """INSERT ``rows`` (tuples in ``columns`` order) into ``table`` with one executemany.

    SQLAlchemy's Core executemany builds and processes a parameter dict per row, which costs more
    than SQLite's own insert when an import writes half a million search tokens. The statement is
    still compiled for the connection's dialect; only the per-row processing is skipped, so values
    must be ones the driver takes as they are (str, bytes, int, None).
    """
    if not rows:
        return
    conn = s.connection()
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
    if conn.dialect.positional:
        order = [columns.index(name) for name in compiled.positiontup or ()]
        params: Any = (
            rows if order == list(range(len(columns))) else [tuple(r[i] for i in order) for r in rows]
        )
    else:
        params = [dict(zip(columns, r, strict=True)) for r in rows]
    conn.exec_driver_sql(compiled.string, params)


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


class Store:
    """Owns the engine and hands out read and write (BEGIN IMMEDIATE) sessions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = make_engine(path)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        # A bulk write (an import of thousands of entries) inserts into the search-token indexes at
        # thousands of places per statement: with SQLite's default 2 MiB page cache the same pages
        # are evicted and re-read over and over. The larger cache lives only as long as the
        # transaction's connection (NullPool), so reads such as an export stay small.
        self._bulk_writer = self.engine.execution_options(
            sqlite_begin="IMMEDIATE", sqlite_cache_kib=BULK_CACHE_KIB
        )

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                yield s
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise wrap_db_error(exc, "reading") from None

    @contextlib.contextmanager
    def write(self, doing: str = "writing", bulk: bool = False) -> Iterator[Session]:
        """A write transaction: commits when the block ends, rolls back on any exception.

        ``bulk`` gives the transaction a larger page cache (imports of thousands of records).
        Callables in ``s.info["before_commit"]`` run (with the session) just before the commit,
        inside the transaction; those in ``s.info["after_commit"]`` run once it has committed
        (vault/integrity/commitment.py finishes the state commitment and records the head outside the file).
        """
        try:
            with Session(self._bulk_writer if bulk else self._writer, expire_on_commit=False) as s:
                with s.begin():
                    yield s
                    for hook in s.info.pop("before_commit", ()):
                        hook(s)
                for done in s.info.pop("after_commit", ()):
                    done()
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise wrap_db_error(exc, doing) from None

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

    def close(self) -> None:
        self.engine.dispose()


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


def schema_revision(store: Store) -> str | None:
    """The vault's Alembic revision, by one cheap query (no Alembic import)."""
    try:
        with store.engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    except DBAPIError as exc:
        if "no such table" in str(exc.orig):
            return None
        raise wrap_db_error(exc, "reading the schema version") from None
    return str(row[0]) if row else None


def ensure_schema(store: Store) -> None:
    """Upgrade an older vault (after a backup), refuse a newer one, pass a current one."""
    if check_schema(store):
        upgrade_older(store)


def check_schema(store: Store) -> bool:
    """Refuse a newer or unknown schema; True when an older one awaits :func:`upgrade_older`.

    Opening checks first and upgrades only once the vault is unlocked (core.open_vault), so that
    a wrong passphrase leaves an older vault byte for byte as it was.
    """
    rev = schema_revision(store)
    if rev == SCHEMA_HEAD:
        return False
    if rev is None:
        raise IntegrityError(f"{store.path} is not a handover vault (no schema version)")
    if rev not in KNOWN_REVISIONS:
        raise MigrationRequired(
            f"this vault was written by a newer handover (schema {rev}); this program knows up to "
            f"{SCHEMA_HEAD}",
            "upgrade handover-vault to open it",
        )
    return True


def upgrade_older(store: Store) -> None:
    """Back an older vault up next to it (SQLite online backup, 0600), then upgrade it in place.

    Several processes may open an older vault at once: each checks the revision again before it
    backs up, takes a backup name no other has taken, and upgrades under the write lock (see
    :func:`upgrade`), where the second finds the work done.
    """
    from ..errors import AlreadyExists

    if schema_revision(store) == SCHEMA_HEAD:
        return
    for n in range(1000):
        name = f"{store.path.name}.pre-{SCHEMA_HEAD}{f'.{n}' if n else ''}.bak"
        backup_to = store.path.with_name(name)
        if backup_to.exists():
            continue
        try:
            online_backup(store.path, backup_to)
            break
        except AlreadyExists:
            continue  # another process opening the vault took this name meanwhile
    upgrade(store)


def upgrade(store: Store, revision: str = "head") -> None:
    """Run Alembic's upgrade on the vault (imported here only: it is slow to import)."""
    from alembic import command

    from ..migrations import alembic_config

    try:
        with store._writer.connect() as conn:
            # BEGIN IMMEDIATE first: Alembic then reads the revision under the write lock, so two
            # processes opening an older vault at once upgrade it one after the other (the second
            # finds it done) instead of racing, and the whole upgrade commits or rolls back as one.
            conn.begin()
            cfg = alembic_config(conn)
            command.upgrade(cfg, revision)
            conn.commit()
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise MigrationRequired(f"upgrading the vault schema failed: {exc.__class__.__name__}") from None


def online_backup(src: Path, dest: Path) -> None:
    """Copy a live vault with SQLite's online backup API into a new 0600 file."""
    if dest.exists():
        from ..errors import AlreadyExists

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


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
