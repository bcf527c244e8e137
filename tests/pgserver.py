"""A throwaway PostgreSQL server for tests and benches: ``initdb`` + ``pg_ctl`` in a temp dir.

PostgreSQL refuses to run as root, and everything here may run as root, so when we are root the
cluster belongs to the ``postgres`` OS user and every server program runs through ``runuser``.
Authentication is ``trust`` for the Unix socket and 127.0.0.1 only (the server listens on nothing
else); fsync is off because a test cluster never has to survive a power cut.

Usage::

    with PgServer.start() as pg:
        url = pg.create_database("t1")      # postgresql+psycopg://postgres@127.0.0.1:PORT/t1

:func:`find_bin_dir` returns None when PostgreSQL is not installed; the caller decides what that
means (tests/conftest.py reports it through ``unavailable()``).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

SUPERUSER = "postgres"
OS_USER = "postgres"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb`` (or ``$PG_BIN``), else None."""
    explicit = os.environ.get("PG_BIN")
    candidates = [explicit] if explicit else []

    def major(p: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", p)
        return int(m.group(1)) if m else 0

    candidates += sorted(
        (str(Path(p).parent) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")), key=major, reverse=True
    )
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_name(name: str) -> str:
    """Database and role names are interpolated into SQL: only plain lower-case identifiers."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


class PgServer:
    """One running cluster. Use :meth:`start`; :meth:`stop` (or leaving the ``with``) removes it."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.port = port
        self._stopped = False

    # -- life cycle -------------------------------------------------------------------------
    @classmethod
    def start(cls, bin_dir: Path | None = None, timeout: float = 60.0) -> PgServer:
        """initdb a fresh cluster in a temp dir and start it; raises RuntimeError when it cannot."""
        bin_dir = bin_dir or find_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL's initdb/pg_ctl are not installed")
        # The port is free when picked, but another process (a second test worker starting its own
        # server) may take it before PostgreSQL binds it: then a fresh cluster on another port.
        for attempt in (1, 2, 3):
            server = cls(bin_dir, Path(tempfile.mkdtemp(prefix="hv-pg-")), _free_port())
            atexit.register(server.stop)
            try:
                server._init()
                server._run_ctl(timeout)
                return server
            except BaseException as exc:
                server.stop()
                if not isinstance(exc, RuntimeError) or attempt == 3:
                    raise
        raise AssertionError("not reached: the third attempt returns or raises")

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", OS_USER, "--", *argv]
        return argv

    def _run(self, argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._as_owner(argv), capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{Path(argv[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
        return proc

    def _init(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            pw = _passwd(OS_USER)
            for p in (self.root, self.socket_dir):
                os.chown(p, pw[0], pw[1])
        os.chmod(self.root, 0o700)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        # Only the socket and 127.0.0.1 are trusted: initdb's default also trusts ::1 and
        # replication; replace it with exactly what the tests use.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n", encoding="utf-8"
        )
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as fh:
            fh.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 100\nshared_buffers = 32MB\n"
                # Parallel queries' shared memory in the data dir, not /dev/shm: the hygiene tests
                # check that no file a run leaves in /dev/shm holds a secret.
                "dynamic_shared_memory_type = mmap\n"
            )
        if os.geteuid() == 0:
            pw = _passwd(OS_USER)
            os.chown(self.data / "pg_hba.conf", pw[0], pw[1])

    def _run_ctl(self, timeout: float) -> None:
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 10,
        )
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not become ready on port {self.port}: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(encoding="utf-8", errors="replace")[-n:]
        return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown, then immediate) and remove its directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if (self.data / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                with contextlib.suppress(Exception):
                    self._run(
                        [
                            str(self.bin_dir / "pg_ctl"),
                            "-D",
                            str(self.data),
                            "-m",
                            mode,
                            "-w",
                            "-t",
                            "30",
                            "stop",
                        ],
                        timeout=40,
                    )
                    break
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- URLs, databases, roles --------------------------------------------------------------
    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A SQLAlchemy URL for psycopg 3 over TCP on the loopback."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement as the superuser in autocommit (CREATE DATABASE cannot run in a
        transaction)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True
        ) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str, owner: str = SUPERUSER) -> str:
        """A new empty database (UTF8, from template0) and its URL.

        Text sorts by ICU's en-US collation, as on a server set up with an English locale (not the
        byte order of the C locale this cluster was made with): code that leans on an order of text
        (ranges of ids, prefixes) then fails here as it would there.
        """
        self.execute(
            f'CREATE DATABASE "{_check_name(name)}" OWNER "{_check_name(owner)}" '
            "TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
        )
        return self.url(name)

    def dump(self, url: str, out: Path, *options: str) -> bytes:
        """``pg_dump`` of the database at ``url`` (plain SQL) into ``out``; its bytes."""
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        subprocess.run(
            [str(self.bin_dir / "pg_dump"), *options, "-f", str(out), conninfo],
            check=True,
            capture_output=True,
        )
        return out.read_bytes()

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{_check_name(name)}" WITH (FORCE)')

    def create_role(self, name: str, login: bool = True, superuser: bool = False) -> str:
        """A new role (no password: trust auth) and a URL for it to the ``postgres`` database."""
        attrs = ["LOGIN" if login else "NOLOGIN", "SUPERUSER" if superuser else "NOSUPERUSER"]
        self.execute(f'CREATE ROLE "{_check_name(name)}" {" ".join(attrs)}')
        return self.url(user=name)


def _passwd(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
