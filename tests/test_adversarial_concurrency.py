"""Concurrency: several processes writing at once lose no update and never fork the audit chain;
a writer kept waiting gives up after HANDOVER_BUSY_TIMEOUT with a clear error; a hot backup taken
while others write opens and verifies (DESIGN §3, §8).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.helpers_adversarial import base_env, integrity_check, run_env, start

SECRET = "Conc-s3cret-4242"

# A worker process using the library directly: many small write transactions, each a record and an
# audit entry, printing a line only after the write committed.
WORKER = r"""
import os, sys
from handover_vault import open_vault

path, wid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open_vault(path, passphrase=os.environ["HV_TEST_PASSPHRASE"]) as v:
    for i in range(n):
        v.creds.add("acme", label=f"w{wid}-{i}", secret=f"s{wid}-{i}")  # record + cred.add entry
        v.audit.append_now("test.ping", detail={"worker": wid, "i": i})
        with v.write("editing a doc") as s:  # read-modify-write of one shared record
            c = v.clients.get("acme", s)
            rec = v.records.get(s, c, "doc", "counter")
            v.records.update(s, c, rec, {**rec.data, "n": rec.data["n"] + 1})
        print(f"ok {wid} {i}", flush=True)
"""


@pytest.fixture
def conc_vault(tmp_path: Path) -> Path:
    from handover_vault import init_vault

    path = tmp_path / "vault.db"
    v, _ = init_vault(path, PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME Ltd")
        v.creds.add("acme", label="fw", secret=SECRET)
        with v.write("adding the counter") as s:
            c = v.clients.get("acme", s)
            v.records.add(s, c, "doc", {"title": "counter", "body": "", "n": 0}, name="counter")
    return path


def _workers(path: Path, count: int, n: int) -> list[subprocess.Popen[str]]:
    env = base_env(path, passphrase=None, HV_TEST_PASSPHRASE=PASSPHRASE, HANDOVER_BUSY_TIMEOUT="60")
    return [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(w), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(count)
    ]


def _check_all(path: Path, oks: int, cli_labels: set[str], reveals: int) -> None:
    from handover_vault import open_vault

    assert integrity_check(path) == "ok"
    with open_vault(path, passphrase=PASSPHRASE) as v:
        head = v.audit.verify()
        events = v.audit.events()
        assert [e.seq for e in events] == list(range(1, head.seq + 1)), "a gap or a fork in the chain"
        _, creds = v.creds.list("acme")
        labels = {c.data["label"] for c in creds}
        assert cli_labels <= labels
        _, counter = v.docs.get("acme", "counter")
    assert counter.data["n"] == oks, "a read-modify-write was lost"
    assert counter.version == oks + 1
    assert sum(1 for e in events if e.action == "test.ping") == oks
    assert sum(1 for e in events if e.action == "cred.add") == oks + len(cli_labels) + 1
    assert sum(1 for e in events if e.action == "cred.reveal") == reveals


def test_parallel_writers_lose_no_update_and_never_fork_the_chain(conc_vault: Path) -> None:
    procs = _workers(conc_vault, count=4, n=12)
    # Meanwhile the command line adds and reveals from more processes.
    cli = []
    for i in range(4):
        cli.append(
            start(["cred", "add", "acme", f"cli-{i}"], base_env(conc_vault), f"cli-secret-{i}\n".encode())
        )
        cli.append(start(["cred", "show", "acme", "fw", "--reveal"], base_env(conc_vault)))
    oks = 0
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        oks += out.count("ok ")
    reveals = 0
    for p in cli:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        reveals += SECRET.encode() in out
    assert oks == 4 * 12 and reveals == 4
    _check_all(conc_vault, oks, {f"cli-{i}" for i in range(4)}, reveals)


@pytest.mark.soak
def test_soak_many_writers(conc_vault: Path) -> None:
    procs = _workers(conc_vault, count=8, n=150)
    oks = 0
    for p in procs:
        out, err = p.communicate(timeout=3600)
        assert p.returncode == 0, err
        oks += out.count("ok ")
    _check_all(conc_vault, oks, set(), 0)


def test_passphrase_change_while_others_write(conc_vault: Path) -> None:
    procs = _workers(conc_vault, count=2, n=10)
    time.sleep(0.5)
    new = "changed while busy"
    done = run_env(["passwd"], base_env(conc_vault, HANDOVER_NEW_PASSPHRASE=new))
    assert done.returncode == 0, done.stderr
    oks = 0
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err  # a writer that unlocked before the change keeps working
        oks += out.count("ok ")
    from handover_vault import open_vault
    from handover_vault.errors import AuthenticationFailed

    with pytest.raises(AuthenticationFailed):
        open_vault(conc_vault, passphrase=PASSPHRASE)
    with open_vault(conc_vault, passphrase=new) as v:
        v.audit.verify()
        _, counter = v.docs.get("acme", "counter")
        assert counter.data["n"] == oks == 20


# --- a writer kept waiting ------------------------------------------------------------------------


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    con.execute("UPDATE meta SET value = value WHERE key = 'format'")
    return con


@pytest.mark.parametrize(
    "args,stdin",
    [
        (["doc", "add", "acme", "blocked"], b"body"),
        (["cred", "show", "acme", "fw", "--reveal"], b""),
        (["cred", "add", "acme", "blocked"], b"blocked secret\n"),
    ],
    ids=["doc-add", "reveal", "cred-add"],
)
def test_busy_wait_is_bounded_with_a_clear_error(conc_vault: Path, args: list[str], stdin: bytes) -> None:
    lock = _hold_write_lock(conc_vault)
    try:
        t0 = time.monotonic()
        done = run_env(args, base_env(conc_vault, HANDOVER_BUSY_TIMEOUT="1"), stdin)
        took = time.monotonic() - t0
    finally:
        lock.rollback()
        lock.close()
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert err.startswith("Error: the vault is busy"), err
    assert "HANDOVER_BUSY_TIMEOUT" in err and "Traceback" not in err
    assert SECRET.encode() not in done.stdout + done.stderr
    assert 1.0 <= took < 8, f"waited {took:.1f}s with HANDOVER_BUSY_TIMEOUT=1"
    # Once the lock is gone the same command works, and the refused one left no trace.
    again = run_env(args, base_env(conc_vault, HANDOVER_BUSY_TIMEOUT="1"), stdin)
    assert again.returncode == 0, again.stderr
    _check_all(
        conc_vault, 0, {"blocked"} if args[:2] == ["cred", "add"] else set(), 1 if "--reveal" in args else 0
    )


def test_readers_are_not_blocked_by_a_writer(conc_vault: Path) -> None:
    lock = _hold_write_lock(conc_vault)
    try:
        done = run_env(["cred", "list", "acme"], base_env(conc_vault, HANDOVER_BUSY_TIMEOUT="1"))
    finally:
        lock.rollback()
        lock.close()
    assert done.returncode == 0, done.stderr
    assert b"fw" in done.stdout


# --- hot backups ----------------------------------------------------------------------------------


def test_hot_backup_while_others_write_opens_and_verifies(conc_vault: Path, tmp_path: Path) -> None:
    from handover_vault import open_vault

    procs = _workers(conc_vault, count=2, n=15)
    backups = []
    for i in range(3):
        dest = tmp_path / f"backup-{i}.db"
        done = run_env(["backup", str(dest)], base_env(conc_vault))
        assert done.returncode == 0, done.stderr
        backups.append(dest)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for dest in backups:
        assert integrity_check(dest) == "ok"
        assert oct(dest.stat().st_mode & 0o777) == "0o600"
        assert not Path(f"{dest}-wal").exists() and not Path(f"{dest}-journal").exists()
        with open_vault(dest, passphrase=PASSPHRASE) as v:
            head = v.audit.verify()
            assert [e.seq for e in v.audit.events()] == list(range(1, head.seq + 1))
            _, counter = v.docs.get("acme", "counter")
            # A consistent snapshot: each worker pings, then bumps the counter; so at any instant the
            # counter trails the pings by at most one per worker (2 workers).
            pings = sum(1 for e in v.audit.events() if e.action == "test.ping")
            assert counter.data["n"] <= pings <= counter.data["n"] + 2
        done = run_env(["audit", "verify"], base_env(dest))
        assert done.returncode == 0, done.stderr


def test_concurrent_first_opens_of_an_older_vault_upgrade_it_once(tmp_path: Path) -> None:
    """Several commands opening a vault of the first schema at once: all succeed, one upgrade."""
    import shutil

    from tests.conftest import ROOT

    path = tmp_path / "old.db"
    shutil.copyfile(ROOT / "tests" / "golden" / "vault-0001.db", path)
    env = base_env(path, passphrase="golden vault passphrase")
    procs = [start(["client", "list"], env) for _ in range(5)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert integrity_check(path) == "ok"
    from handover_vault.store.engine import SCHEMA_HEAD

    with sqlite3.connect(path) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]
    con.close()
    backups = sorted(p.name for p in tmp_path.iterdir() if ".pre-" in p.name)
    assert backups and all(p.endswith(".bak") for p in backups), backups
    done = run_env(["audit", "verify"], env)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "1e12", "-5", "0", "abc", "", "1e-9"])
def test_hostile_busy_timeouts_still_give_a_bounded_wait(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    import math

    from handover_vault.store.engine import busy_seconds

    monkeypatch.setenv("HANDOVER_BUSY_TIMEOUT", raw)
    seconds = busy_seconds()
    assert math.isfinite(seconds) and 0.1 <= seconds <= 86_400
    assert int(seconds * 1000) < 2**31  # SQLite's busy_timeout is a 32-bit count of milliseconds


def test_an_infinite_busy_timeout_is_not_an_internal_error(conc_vault: Path) -> None:
    done = run_env(["cred", "list", "acme"], base_env(conc_vault, HANDOVER_BUSY_TIMEOUT="inf"))
    assert done.returncode == 0, done.stderr
