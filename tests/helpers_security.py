"""Helpers for the security tests: raw edits of the vault file, byte searches, file modes, TOTP.

The raw helpers go around the library on purpose: they play the attacker (or the failing disk) who
edits the SQLite file directly, which the library must detect.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import os
import re
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import PASSPHRASE

RECOVERY_RE = re.compile(r"\b[0-9A-Z]{4}(?:-[0-9A-Z]{4}){6}\b")
SESSION_RE = re.compile(r"^export HANDOVER_SESSION=(hvs1\.\S+)$", re.MULTILINE)


def sql(path: Path | str, statement: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on the vault with the bare driver (no library, no keys):
    sqlite3 on a vault file, psycopg on a database URL (``Vault.location``), as its owner would."""
    if isinstance(path, str) and "://" in path:
        return _pg_sql(path, statement, tuple(params))
    con = sqlite3.connect(path)
    try:
        rows = con.execute(statement, tuple(params)).fetchall()
        con.commit()
        return rows
    finally:
        con.close()


def _pg_sql(url: str, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as con:
        cur = con.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
        rows = cur.fetchall() if cur.description else []
        con.commit()
    return [tuple(r) for r in rows]


def one(path: Path | str, statement: str, params: Iterable[Any] = ()) -> Any:
    rows = sql(path, statement, params)
    assert len(rows) == 1, rows
    return rows[0][0]


def flip(blob: bytes, index: int) -> bytes:
    """``blob`` with one bit of byte ``index`` flipped (negative index from the end)."""
    data = bytearray(blob)
    data[index] ^= 0x01
    return bytes(data)


def flip_column(
    path: Path | str, table: str, column: str, where: str, params: Iterable[Any], index: int
) -> None:
    """Flip one bit of a stored blob in place, as a bad sector or an attacker would."""
    params = tuple(params)
    blob = one(path, f"SELECT {column} FROM {table} WHERE {where}", params)
    sql(path, f"UPDATE {table} SET {column} = ? WHERE {where}", (flip(blob, index), *params))


def swap_column(path: Path, table: str, column: str, key: str, a: Any, b: Any) -> None:
    """Exchange ``column`` between the rows whose ``key`` is ``a`` and ``b``."""
    va = one(path, f"SELECT {column} FROM {table} WHERE {key} = ?", (a,))
    vb = one(path, f"SELECT {column} FROM {table} WHERE {key} = ?", (b,))
    # Through a placeholder, so that a UNIQUE column (a lookup) can be swapped too.
    sql(path, f"UPDATE {table} SET {column} = ? WHERE {key} = ?", ("swap-placeholder", a))
    sql(path, f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (va, b))
    sql(path, f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (vb, a))


def vault_files(path: Path) -> list[Path]:
    """The vault and whichever of its -wal/-shm/-journal files exist."""
    return [p for p in (Path(f"{path}{s}") for s in ("", "-wal", "-shm", "-journal")) if p.exists()]


def digests(path: Path) -> dict[str, str]:
    """SHA-256 of the vault and of each companion file (absent files map to "absent")."""
    out = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(f"{path}{suffix}")
        out[suffix or "db"] = hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "absent"
    return out


def encodings(text: str) -> list[bytes]:
    """The byte forms a plaintext could take on disk: UTF-8 (as typed and casefolded), UTF-16."""
    forms = {text.encode("utf-8"), text.casefold().encode("utf-8"), text.encode("utf-16-le")}
    return sorted(forms)


def _read_if_there(path: Path) -> bytes | None:
    """The file's bytes, or None when it is gone (a database server removes files as it runs)."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def find_plaintext(files: Iterable[Path], needles: Iterable[str]) -> list[tuple[str, str]]:
    """(file name, needle) for every needle found in any of ``files`` in any of its encodings."""
    hits = []
    blobs = {p.name: data for p in files if (data := _read_if_there(p)) is not None}
    for needle in needles:
        for form in encodings(needle):
            for name, data in blobs.items():
                if form in data:
                    hits.append((name, needle))
    return hits


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def rfc6238(seed_b32: str, at: float, digits: int = 6, period: int = 30, algo: str = "sha1") -> str:
    """TOTP computed from RFC 6238/4226 directly (independent of the code under test)."""
    key = base64.b32decode(seed_b32.upper() + "=" * (-len(seed_b32) % 8))
    counter = struct.pack(">Q", int(at) // period)
    mac = hmac.new(key, counter, getattr(hashlib, algo)).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**digits
    return str(code).zfill(digits)


def recovery_code(init_stdout: str) -> str:
    m = RECOVERY_RE.search(init_stdout)
    assert m, init_stdout
    return m.group(0)


def session_token(unlock_stdout: str) -> str:
    m = SESSION_RE.search(unlock_stdout)
    assert m, unlock_stdout
    return m.group(1)


HOLDER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN")
con.execute("SELECT count(*) FROM sqlite_master").fetchall()  # a read snapshot: pins the WAL
print("ready", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
con.close()
"""


@contextlib.contextmanager
def held_open(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process with the vault open in a read transaction, so the -wal cannot be folded away."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.write("\n")
            proc.stdin.close()
        proc.wait(timeout=30)


def _preload() -> Any:
    """Import every command module once, so that forked runs start with them loaded."""
    import importlib

    from handover_vault.cli import main as cli_main

    for target in cli_main.COMMANDS.values():
        importlib.import_module(target.split(":")[0])

    return cli_main


def fork_run(
    args: list[str],
    vault: Path | str | None = None,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    passphrase: str | None = PASSPHRASE,
) -> subprocess.CompletedProcess[str]:
    """``cli.main.main(args)`` in a forked child with no TTY: same contract as conftest's ``run``.

    The child is a separate process with its own environment, file descriptors and umask, exactly
    as the installed script would be, minus interpreter start-up and imports (about 0.4 s a run).
    The end-to-end checks of the issue use ``run``; this one gives breadth at a tenth of the cost.
    """
    cli_main = _preload()
    from tests.conftest import cli_env

    full_env = cli_env(vault, passphrase, env)
    data = input.encode() if isinstance(input, str) else (input or b"")
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        fin.write(data)
        fin.seek(0)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                for fd, f in ((0, fin), (1, fout), (2, ferr)):
                    os.dup2(f.fileno(), fd)
                sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
                sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
                sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
                os.environ.clear()
                os.environ.update(full_env)
                sys.argv = ["handover", *args]
                from handover_vault.cli import context

                context._secrets.clear()
                try:
                    cli_main.main(list(args))
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        fout.seek(0)
        ferr.seek(0)
        return subprocess.CompletedProcess(
            args, os.waitstatus_to_exitcode(status), fout.read().decode(), ferr.read().decode()
        )
