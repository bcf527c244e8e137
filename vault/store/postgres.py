"""A team vault in a PostgreSQL database (DESIGN §12): the server stores only ciphertext.

The same models and Alembic migrations as the SQLite file. What differs is kept here:

- Reads run under REPEATABLE READ: one snapshot per read transaction, as SQLite's.
- Writes run under READ COMMITTED and take the audit chain's head row first
  (``SELECT … FOR UPDATE`` on ``meta.audit_head``), so writers follow one another as they do under
  SQLite's ``BEGIN IMMEDIATE``: the chain never forks. Before the row exists (creating the schema
  and the vault) a transaction-scoped advisory lock stands in for it.
- A lock that is not granted within ``HANDOVER_BUSY_TIMEOUT`` seconds, a serialisation failure or a
  deadlock (SQLSTATE 55P03, 40001, 40P01) is reported as busy (exit 1, "try again"); nothing was
  changed. With the head row taken first by every writer, handover's own writers cannot deadlock or
  collide on an entry's number; an audit append that stands alone (a reveal's entry) is retried
  on those states all the same (``AuditLog.append_now``). Errors are told apart by SQLSTATE (a
  refused connection, which has none, by libpq's words), and the server's message is never passed
  on (it can quote a value).
- The URL's password never appears in a message, a session file or the recorded head
  (:attr:`PostgresStore.location` leaves it out); prefer ``~/.pgpass`` or ``PGPASSWORD``.
- A backup is a consistent snapshot (REPEATABLE READ) copied into a new 0600 SQLite vault file.
- After a forget, ``VACUUM FULL`` rewrites the tables that held the client; what the server keeps
  beyond that (WAL, archives, base backups, replicas) is listed by :meth:`PostgresStore.retains`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import ClassVar

import psycopg
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..errors import (
    AlreadyExists,
    AuthenticationFailed,
    Busy,
    IntegrityError,
    NotFound,
    StorageError,
    VaultError,
)
from .engine import Store, busy_seconds, copy_tables, create_private_file, schema_revision, upgrade
from .models import AUDIT_HEAD_KEY
from .sqlite import standalone

# pg_advisory_xact_lock key while the head row does not exist yet: "hvlt" as a 32-bit number.
WRITE_LOCK = 0x68766C74
CONNECT_SECONDS = 10
BUSY_STATES = {"40001", "40P01", "55P03", "57014"}
# States after which a whole transaction that did nothing else can be run again.
RETRY_STATES = {"40001", "40P01", "23505"}
# Tables whose rows carry a client's data: rewritten by VACUUM FULL after a forget.
CLIENT_TABLES = (
    "records",
    "record_versions",
    "chunks",
    "search_postings",
    "state_buckets",
    "state_clients",
    "clients",
    "audit",
)


def normalise_url(url: str) -> URL:
    """``postgres://`` and ``postgresql://`` as ``postgresql+psycopg://`` (psycopg 3 is the driver)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise _invalid_url() from None
    if parsed.get_backend_name() != "postgresql":
        raise _invalid_url()
    return parsed.set(drivername="postgresql+psycopg")


def _invalid_url() -> VaultError:
    from ..errors import InvalidInput

    return InvalidInput(
        "the database URL is not a PostgreSQL URL",
        "write it as postgresql+psycopg://USER@HOST[:PORT]/DATABASE (the password in ~/.pgpass or PGPASSWORD)",
    )


def public_location(url: URL) -> str:
    """The URL without its password: what names the vault in messages and files."""
    # URL.set(password=None) would keep the password (None there means "unchanged").
    return url._replace(password=None).render_as_string(hide_password=False)


def _on_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    lock = options.get("pg_write_lock")
    if not lock:
        return
    ms = int(busy_seconds() * 1000)
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
    if lock == "head":
        row = conn.exec_driver_sql(
            "SELECT key FROM meta WHERE key = %s FOR UPDATE", (AUDIT_HEAD_KEY,)
        ).first()
        if row is not None:
            return
    # No head row yet (a vault being created): the advisory lock, then the row if it appeared
    # meanwhile, so that a writer that found the row and one that did not still follow each other.
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
    if lock == "head":
        conn.exec_driver_sql("SELECT key FROM meta WHERE key = %s FOR UPDATE", (AUDIT_HEAD_KEY,))


def make_engine(url: URL) -> Engine:
    engine = create_engine(
        url,
        isolation_level="READ COMMITTED",
        pool_size=2,
        max_overflow=4,
        connect_args={"connect_timeout": CONNECT_SECONDS, "application_name": "handover-vault"},
    )
    event.listen(engine, "begin", _on_begin)
    return engine


def sqlstate(exc: BaseException) -> str | None:
    """The error's SQLSTATE. A refused connection carries none (libpq reports it as text only):
    the two refusals a technician must tell apart are then read from libpq's English message."""
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None)
    if state:
        return str(state)
    if isinstance(orig, psycopg.OperationalError):
        text = str(orig)
        if "does not exist" in text and 'database "' in text:
            return "3D000"
        if "password authentication failed" in text or "no password supplied" in text:
            return "28P01"
    return None


class PostgresStore(Store):
    """A vault in a PostgreSQL database; writes serialised on the audit head row."""

    kind: ClassVar[str] = "postgresql"
    db_errors: ClassVar[tuple[type[BaseException], ...]] = (SQLAlchemyError, psycopg.Error)

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.location = public_location(self.url)
        engine = make_engine(self.url)
        # Reads see one snapshot from their first statement to their end, as an SQLite read
        # transaction does: the audit head, the entries and the state they vouch for are read
        # together (under READ COMMITTED each statement would see a newer commit of another writer).
        self.engine = engine.execution_options(isolation_level="REPEATABLE READ")
        self._writer = engine.execution_options(pg_write_lock="head")
        self._bulk_writer = self._writer
        self._advisory = engine.execution_options(pg_write_lock="advisory")
        self._base = engine

    def close(self) -> None:
        self._base.dispose()

    def wrap_error(self, exc: BaseException, doing: str) -> VaultError:
        return wrap_db_error(exc, doing, self.url)

    def is_retryable(self, exc: BaseException) -> bool:
        return sqlstate(exc) in RETRY_STATES

    def upgrade_connection(self) -> contextlib.AbstractContextManager[Connection]:
        return self._advisory.connect()

    def upgrade_older(self) -> None:
        """PostgreSQL runs DDL inside the transaction: a failed upgrade leaves the old schema whole.
        No copy is made on the server (take one with pg_dump before upgrading the program)."""
        upgrade(self)

    def is_empty(self) -> bool:
        """Whether the database holds no vault yet (no schema, or a schema with no vault in it)."""
        if schema_revision(self) is None:
            return True
        from .models import Meta

        with self.read() as s:
            return s.execute(select(Meta.key).limit(1)).first() is None

    def backup(self, dest: Path) -> None:
        """Copy a consistent snapshot of every table into a new SQLite vault file (0600).

        The copy holds the same ciphertexts under the same keys: it opens as a single-user vault
        with the team vault's passphrase (or its recovery code).
        """
        from .sqlite import SqliteStore, _unlink_quietly

        if dest.exists() or dest.is_symlink():
            raise AlreadyExists(f"{dest} already exists; choose another backup file name")
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            create_private_file(tmp)
            target = SqliteStore(tmp)
            try:
                upgrade(target)
                with self.engine.connect() as src, target.write(f"backing up to {dest}", bulk=True) as out:
                    copy_tables(src, out)
            finally:
                target.close()
            standalone(tmp)
            os.replace(tmp, dest)
        except (SQLAlchemyError, psycopg.Error) as exc:
            _unlink_quietly(tmp)
            raise self.wrap_error(exc, f"backing up to {dest}") from None
        except OSError as exc:
            _unlink_quietly(tmp)
            raise StorageError(f"cannot write the backup {dest}: {exc.strerror}") from None
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def purge(self) -> bool:
        """``VACUUM FULL`` of the tables that held the client: their files are rewritten without the
        deleted rows (dead tuples stay on disk until VACUUM). False when the role may not (only the
        tables' owner can), with :meth:`retains` saying what remains."""
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in CLIENT_TABLES:
                    conn.exec_driver_sql(f"VACUUM FULL {table}")
        except (SQLAlchemyError, psycopg.Error) as exc:
            if sqlstate(exc) == "42501":  # not the owner: VACUUM is skipped with a warning, not refused
                return False
            raise self.wrap_error(exc, "vacuuming the team database") from None
        return True

    def retains(self) -> list[str]:
        return [
            "the server's write-ahead log (pg_wal) and any WAL archive hold the deleted rows until they "
            "are recycled or expire",
            "every base backup, pg_dump or replica of the database made before now holds the client as it "
            "was, under keys the vault's passphrase still opens: delete or re-take them",
            "PostgreSQL keeps deleted rows as dead tuples until VACUUM; handover rewrote the tables that held "
            "the client (VACUUM FULL) if its database role owns them",
        ]


def wrap_db_error(exc: BaseException, doing: str, url: URL) -> VaultError:
    """Turn a SQLAlchemy/psycopg error into a VaultError, by SQLSTATE (never by message text)."""
    state = sqlstate(exc) or ""
    where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    if state in BUSY_STATES:
        return Busy(
            f"the team database is busy: another writer held it too long while {doing}",
            "try again; raise HANDOVER_BUSY_TIMEOUT (seconds) if this repeats",
        )
    if state == "53100":
        return StorageError(f"the database server's disk is full while {doing}; nothing was changed")
    if state.startswith("53"):
        return StorageError(
            f"the database server is out of resources ({state}) while {doing}; nothing was changed"
        )
    if state in ("42P01", "42703"):
        return IntegrityError(
            f"the database {where} is missing tables or columns ({doing}): not a handover vault, or "
            "its schema was changed by hand"
        )
    if state == "42501":
        return StorageError(
            f"the database role may not do this while {doing} (permission denied); nothing was changed",
            "give the role the privileges of docs/team-setup.sql",
        )
    if state in ("28P01", "28000"):
        return AuthenticationFailed(
            f"the database server {where} refused the login",
            "check the user in the URL and the password in ~/.pgpass or PGPASSWORD",
        )
    if state == "3D000":
        return NotFound(
            f"there is no database {url.database!r} on {where}", "create it (see docs/team-setup.sql)"
        )
    if state == "23001":  # restrict_violation: the audit table's trigger (migration 0006)
        return IntegrityError(
            f"the database refused to change or delete an audit entry while {doing}: the audit log "
            "only grows; nothing was changed"
        )
    if state.startswith("23"):
        orig = getattr(exc, "orig", exc)
        diag = getattr(orig, "diag", None)
        name = getattr(diag, "constraint_name", None) or "a constraint"
        # The class name SQLite's driver gives, so that a refusal reads the same on both engines.
        return StorageError(f"the database refused the operation while {doing}: IntegrityError ({name})")
    if state.startswith(("08", "57P")) or not state:
        return StorageError(
            f"cannot reach the database server {where} while {doing}; nothing was changed",
            "check that the server runs and the URL (HANDOVER_DB_URL or --db) is right",
        )
    orig = getattr(exc, "orig", exc)
    return StorageError(
        f"the database refused the operation while {doing}: {orig.__class__.__name__} ({state})"
    )


def check_database(url: str) -> None:
    """Fail early and clearly when the server cannot be reached or holds no vault."""
    st = PostgresStore(url)
    try:
        if st.is_empty():
            raise NotFound(
                f"no handover vault in the database {st.location}",
                f"create one with: handover --db {st.location} init",
            )
    finally:
        st.close()
