"""The store interface: one vault database, whatever engine holds it (DESIGN §12).

A vault lives in an SQLite file (the default, ``store/sqlite.py``) or in a PostgreSQL database of a
team (``store/postgres.py``). Everything above this folder talks to a :class:`Store`: read and
write transactions, the schema version and its upgrade, a backup, and purging deleted bytes after
a forget. What is particular to an engine (pragmas, ``BEGIN IMMEDIATE``, the online backup API,
``secure_delete``/VACUUM, file modes; row locks, SQLSTATEs, what a server keeps) stays in its own
module. Every write is serialised with every other (the audit chain depends on it). SQLAlchemy and
driver errors are wrapped into :class:`VaultError` subclasses by the engine's module; none leaves
``vault/``.

>>> st = open_store(Path("~/vault.db"))                          # or a postgresql+psycopg:// URL
>>> with st.write("adding a doc") as s: ...
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sqlalchemy import insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import IntegrityError, MigrationRequired, VaultError

# The Alembic revision this program writes. Checked with one cheap query on open, so Alembic is
# imported only when an upgrade is due. tests/test_migrations.py asserts it equals Alembic's head.
SCHEMA_HEAD = "0007"
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")
DEFAULT_BUSY_SECONDS = 30.0
MAX_BUSY_SECONDS = 86_400.0
URL_SCHEMES = ("postgresql+psycopg://", "postgresql://", "postgres://")
T = TypeVar("T")


def is_database_url(target: Path | str) -> bool:
    """Whether ``target`` names a database server (a URL) rather than a vault file."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def open_store(target: Path | str) -> Store:
    """The store for a vault file path or a ``postgresql+psycopg://`` URL (nothing is checked yet)."""
    if is_database_url(target):
        from .postgres import PostgresStore

        return PostgresStore(str(target))
    from .sqlite import SqliteStore

    return SqliteStore(Path(target))


def check_target(target: Path | str) -> None:
    """Fail early and clearly when there is no vault at ``target`` (before any passphrase is asked)."""
    if is_database_url(target):
        from .postgres import check_database

        check_database(str(target))
    else:
        from .sqlite import check_file

        check_file(Path(target))


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


class Store:
    """Owns one engine and hands out read and write sessions; an engine's module fills in the rest.

    Subclasses set ``engine`` (reads), ``_writer`` (writes: serialised with every other writer) and
    ``_bulk_writer`` (writes of thousands of rows), and implement :meth:`wrap_error`.
    """

    kind: ClassVar[str]
    engine: Engine
    _writer: Engine
    _bulk_writer: Engine
    #: A vault file's path; None for a database on a server.
    path: Path | None = None
    #: What names the vault in messages, session files and the recorded head: a resolved file path,
    #: or a database URL without its password.
    location: str
    #: The errors a database call can raise: SQLAlchemy's and the driver's own.
    db_errors: ClassVar[tuple[type[BaseException], ...]] = (SQLAlchemyError,)

    def wrap_error(self, exc: BaseException, doing: str) -> VaultError:
        raise NotImplementedError

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                yield s
        except self.db_errors as exc:
            raise self.wrap_error(exc, "reading") from None

    @contextlib.contextmanager
    def write(self, doing: str = "writing", bulk: bool = False) -> Iterator[Session]:
        """A write transaction: commits when the block ends, rolls back on any exception.

        No other writer runs until it ends (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the audit head
        row ``SELECT … FOR UPDATE``). ``bulk`` gives the transaction a larger page cache on SQLite
        (imports of thousands of records).
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
        except self.db_errors as exc:
            err = self.wrap_error(exc, doing)
            err.retryable = self.is_retryable(exc)
            raise err from None

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether a transaction that failed with ``exc`` may simply be run again (nothing of it
        was committed, and nothing outside the database was done)."""
        return False

    def run_write(self, doing: str, work: Callable[[Session], T], attempts: int = 5) -> T:
        """``work`` in a write transaction, run again when the engine says the failure was one of
        contention (PostgreSQL: serialisation failure, deadlock, a unique key taken meanwhile).

        Only for work that touches nothing but the database: it may run more than once.
        """
        for attempt in range(attempts):
            try:
                with self.write(doing) as s:
                    return work(s)
            except VaultError as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    def upgrade_connection(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection for Alembic whose transaction holds the write lock (see :func:`upgrade`)."""
        return self._writer.connect()

    def upgrade_older(self) -> None:
        """Bring an older schema to :data:`SCHEMA_HEAD` (the engine says what it keeps of the old one)."""
        raise NotImplementedError

    def upgrade_copies(self) -> list[Path]:
        """The copies of the whole vault an upgrade left behind (files next to a vault file)."""
        return []

    def backup(self, dest: Path) -> None:
        """A consistent copy of the live vault into the new 0600 vault file ``dest``."""
        raise NotImplementedError

    def purge(self) -> bool:
        """After a forget: remove what the engine keeps of deleted rows. True when nothing is left
        that this program can reach (:meth:`retains` says what it cannot)."""
        raise NotImplementedError

    def retains(self) -> list[str]:
        """What the storage may still hold of deleted rows, beyond this program's reach."""
        return []

    def checkpoint(self) -> None:
        """Make every committed write durable in the vault's main storage (a no-op on a server)."""

    def close(self) -> None:
        self.engine.dispose()


def copy_tables(source: Session | Connection, dest: Session) -> None:
    """Every row of every vault table from ``source`` into ``dest``'s transaction, parents first
    (a backup of a database into a vault file; a vault file moved into a team's database)."""
    from sqlalchemy import select

    from .models import Base

    for table in Base.metadata.sorted_tables:
        rows = [dict(r._mapping) for r in source.execute(select(table))]
        if rows:
            dest.execute(table.insert(), rows)


def page_cache(s: Session, kib: int) -> None:
    """Set the page cache of the session's connection to ``kib`` KiB (SQLite; a server has its own)."""
    conn = s.connection()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size = -{int(kib)}")


def driver_sql(conn: Connection, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, in the paramstyle of ``conn``'s driver.

    For the few hot queries that skip SQLAlchemy's statement building (the search index, the state
    commitment): SQLite's driver takes ``?``, psycopg takes ``%s``.
    """
    style = conn.dialect.paramstyle
    return sql if style == "qmark" else _format_style(sql)


@lru_cache(maxsize=256)
def _format_style(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def schema_revision(store: Store) -> str | None:
    """The vault's Alembic revision, by one cheap query (no Alembic import)."""
    try:
        with store.engine.connect() as conn:
            exists = conn.dialect.has_table(conn, "alembic_version")
            if not exists:
                return None
            row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    except store.db_errors as exc:
        raise store.wrap_error(exc, "reading the schema version") from None
    return str(row[0]) if row else None


def ensure_schema(store: Store) -> None:
    """Upgrade an older vault (after a backup), refuse a newer one, pass a current one."""
    if check_schema(store):
        store.upgrade_older()


def check_schema(store: Store) -> bool:
    """Refuse a newer or unknown schema; True when an older one awaits :meth:`Store.upgrade_older`.

    Opening checks first and upgrades only once the vault is unlocked (core.open_vault), so that
    a wrong passphrase leaves an older vault byte for byte as it was.
    """
    rev = schema_revision(store)
    if rev == SCHEMA_HEAD:
        return False
    if rev is None:
        raise IntegrityError(f"{store.location} is not a handover vault (no schema version)")
    if rev not in KNOWN_REVISIONS:
        raise MigrationRequired(
            f"this vault was written by a newer handover (schema {rev}); this program knows up to "
            f"{SCHEMA_HEAD}",
            "upgrade handover-vault to open it",
        )
    return True


def upgrade(store: Store, revision: str = "head") -> None:
    """Run Alembic's upgrade on the vault (imported here only: it is slow to import)."""
    from alembic import command

    from ..migrations import alembic_config

    try:
        with store.upgrade_connection() as conn:
            # The write lock first: Alembic then reads the revision under it, so two processes
            # opening an older vault at once upgrade it one after the other (the second finds it
            # done) instead of racing, and the whole upgrade commits or rolls back as one.
            conn.begin()
            cfg = alembic_config(conn)
            command.upgrade(cfg, revision)
            conn.commit()
    except store.db_errors as exc:
        raise MigrationRequired(f"upgrading the vault schema failed: {exc.__class__.__name__}") from None
