"""Helpers for the adversarial suites (tests/test_adversarial_*.py): real processes, real signals,
real SQLite files, a size-limited file system and fault hooks injected into a child ``handover``.

Fault hooks: :func:`fault_env` writes a ``sitecustomize.py`` into a private directory and puts it on
the child's ``PYTHONPATH``. When the child imports a named module, the hook wraps one function so
that, before or after it runs, the process SIGKILLs itself (a crash at an exact point), raises an
exception whose message carries the function's decrypted result (to prove ``--debug`` never prints
another library's message), or sleeps. Nothing in ``vault/`` or ``cli/`` knows about these hooks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import PASSPHRASE, cli_env, handover_cmd, unavailable

SECRET_ENV = (
    "HANDOVER_PASSPHRASE",
    "HANDOVER_NEW_PASSPHRASE",
    "HANDOVER_RECOVERY_CODE",
    "HANDOVER_BUNDLE_PASSPHRASE",
    "HANDOVER_IMPORT_PASSPHRASE",
    "HANDOVER_SESSION",
)

HOOK_SOURCE = r'''
"""Injected by tests/helpers_adversarial.py: HV_FAULT="module:qualname:before|after:action[;...]"."""
import importlib.abc
import os
import signal
import sys
import time

_SPECS = {}
for _item in filter(None, os.environ.get("HV_FAULT", "").split(";")):
    _mod, _qual, _when, _action = _item.split(":", 3)
    _SPECS.setdefault(_mod, []).append((_qual, _when, _action))


def _act(action, value=None):
    marker = os.environ.get("HV_FAULT_MARKER")
    if marker:
        with open(marker, "a") as fh:
            fh.write(action + "\n")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "leak":
        data = getattr(value, "data", value)
        raise RuntimeError("unexpected failure while holding " + repr(data))
    elif action.startswith("sleep"):
        time.sleep(float(action[5:] or "5"))
    elif action == "oserror":
        raise OSError(5, "Input/output error")


def _wrap(fn, when, action):
    def wrapper(*args, **kwargs):
        if when == "before":
            _act(action)
        result = fn(*args, **kwargs)
        if when == "after":
            _act(action, result)
        return result

    wrapper.__wrapped__ = fn
    return wrapper


def _patch(module):
    for qual, when, action in _SPECS.get(module.__name__, ()):
        owner, _, name = qual.rpartition(".")
        target = module
        for part in filter(None, owner.split(".")):
            target = getattr(target, part)
        setattr(target, name, _wrap(getattr(target, name), when, action))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _SPECS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = patched
        return spec


if _SPECS:
    sys.meta_path.insert(0, _Finder())
'''


def fault_env(tmp: Path, *specs: str, marker: Path | None = None) -> dict[str, str]:
    """Environment entries that make a child ``handover`` run the fault hooks ``specs``."""
    hooks = tmp / "hv-hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(HOOK_SOURCE)
    env = {"PYTHONPATH": str(hooks), "HV_FAULT": ";".join(specs)}
    if marker is not None:
        env["HV_FAULT_MARKER"] = str(marker)
    return env


def base_env(vault: Path | None, passphrase: str | None = PASSPHRASE, **extra: str) -> dict[str, str]:
    """The environment ``tests.conftest.run`` builds (:func:`tests.conftest.cli_env`), for
    Popen-style use, without a fault spec inherited from this process."""
    env = cli_env(vault, passphrase, None)
    env.pop("HV_FAULT", None)
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str], stdin: bytes | None = b"") -> subprocess.Popen[bytes]:
    """Start ``handover`` with pipes, no TTY, its own process group."""
    proc = subprocess.Popen(
        handover_cmd() + args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin or b"")
        proc.stdin.close()
        proc.stdin = None
    return proc


def run_env(
    args: list[str], env: dict[str, str], stdin: bytes = b"", timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run ``handover`` to the end with an explicit environment; bytes in, bytes out."""
    return subprocess.run(
        handover_cmd() + args, input=stdin, capture_output=True, env=env, timeout=timeout, check=False
    )


def kill_after(proc: subprocess.Popen[bytes], delay: float) -> tuple[bool, int, bytes, bytes]:
    """SIGKILL ``proc`` after ``delay`` seconds unless it finished first.

    Returns (killed, returncode, stdout, stderr). Output written before the kill is kept: it is what
    a user would have seen.
    """
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    killed = proc.poll() is None
    if killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    return killed, proc.returncode, out, err


def integrity_check(path: Path) -> str:
    """``PRAGMA integrity_check`` through plain sqlite3 (which also recovers a hot WAL)."""
    con = sqlite3.connect(path, timeout=30)
    try:
        return ";".join(str(r[0]) for r in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()


def which_opens(path: Path, candidates: Iterable[str]) -> list[str]:
    """The candidate passphrases that open the vault (each tried through the real library)."""
    from handover_vault import open_vault
    from handover_vault.errors import AuthenticationFailed

    opened = []
    for pw in candidates:
        try:
            with open_vault(path, passphrase=pw):
                opened.append(pw)
        except AuthenticationFailed:
            pass
    return opened


def contains_any(haystack: str | bytes, needles: Iterable[str]) -> list[str]:
    """The needles found in ``haystack`` (as UTF-8 text, and in raw bytes as UTF-8/UTF-16)."""
    found = []
    for n in needles:
        if isinstance(haystack, bytes):
            forms = {n.encode(), n.encode("utf-16-le")}
            if any(f in haystack for f in forms):
                found.append(n)
        elif n in haystack:
            found.append(n)
    return found


def tree(path: Path) -> set[str]:
    """Every file below ``path`` (relative names); empty when it does not exist."""
    if not path.exists():
        return set()
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() or p.is_symlink()}


@contextlib.contextmanager
def tmpfs(where: Path, size_kib: int) -> Iterator[Path]:
    """A size-limited tmpfs mounted at ``where``: writes past ``size_kib`` fail with ENOSPC.

    Root in CI: a mount failure there is a failure. Elsewhere (no privilege) the test is skipped.
    """
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _no_mount(f"cannot mount a tmpfs ({done.stderr.strip()})")
    try:
        yield where
    finally:
        _umount(where)


@contextlib.contextmanager
def read_only_bind(src: Path, where: Path) -> Iterator[Path]:
    """``src`` (a directory) bind-mounted read-only at ``where``: root cannot write through it."""
    where.mkdir(parents=True, exist_ok=True)
    first = subprocess.run(
        ["mount", "--bind", str(src), str(where)], capture_output=True, text=True, check=False
    )
    if first.returncode != 0:
        _no_mount(f"cannot bind-mount ({first.stderr.strip()})")
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(where)], capture_output=True, text=True, check=False
        )
        if ro.returncode != 0:
            _no_mount(f"cannot remount read-only ({ro.stderr.strip()})")
        yield where
    finally:
        _umount(where)


def _umount(where: Path) -> None:
    for _ in range(50):
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _no_mount(why: str) -> None:
    unavailable(why, "CI runs as root and must exercise real file-system faults")


def fill(directory: Path, leave_kib: int = 0) -> Path:
    """Fill the file system of ``directory`` until at most ``leave_kib`` KiB stay free."""
    filler = directory / "filler"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    want = max(0, free - leave_kib * 1024)
    with open(filler, "wb") as fh:
        block = b"\0" * 65536
        with contextlib.suppress(OSError):
            while want > 0:
                n = fh.write(block[: min(len(block), want)])
                want -= n
            fh.flush()
    return filler


def audit_refuses_inserts(path: Path) -> None:
    """Make the audit table refuse every insert, as a full or broken audit sink would."""
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TRIGGER hv_refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'x'); END")
        con.commit()
    finally:
        con.close()


def audit_allows_inserts(path: Path) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("DROP TRIGGER IF EXISTS hv_refuse")
        con.commit()
    finally:
        con.close()


def snapshot(path: Path) -> dict[str, Any]:
    """Everything the library can read: clients, every record of every kind, audit length."""
    from handover_vault import open_vault
    from handover_vault.store.records import KINDS

    out: dict[str, Any] = {}
    with open_vault(path, passphrase=PASSPHRASE) as v:
        for c in v.clients.list():
            with v.read() as s:
                for kind in KINDS:
                    for r in v.records.list(s, c, kind):
                        out[f"{c.slug}/{kind}/{r.id}/{r.version}"] = r.data
        out["_audit_seq"] = v.audit.verify().seq
    return out
