"""Injected faults: a full disk, I/O errors, a read-only vault and an audit log that refuses entries.

Each must give a clear error (exit 1, one ``Error:`` line, no traceback), lose nothing already
stored, and never show a secret whose disclosure could not be audited (DESIGN §3, §8, §9). The disk
is a real size-limited tmpfs, the read-only vault a real read-only bind mount, the I/O errors come
from an LD_PRELOAD shim around the C library, and the refusing audit table is a real SQLite trigger.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, need
from tests.helpers_adversarial import (
    audit_allows_inserts,
    audit_refuses_inserts,
    base_env,
    fault_env,
    fill,
    integrity_check,
    read_only_bind,
    run_env,
    snapshot,
    start,
    tmpfs,
    tree,
    which_opens,
)

SECRET = "Fw-s3cret-FAULT-0001"
TOTP = "otpauth://totp/ACME:admin?secret=JBSWY3DPEHPK3PXPJBSWY3DP&issuer=ACME"


def make_vault(path: Path) -> None:
    from handover_vault import init_vault

    v, _ = init_vault(path, PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME Ltd", contract_start="2024-01-01", notice_days=30)
        v.docs.add("acme", title="Network overview", body="# LAN\n\n10.0.0.0/24", overview=True)
        v.creds.add("acme", label="fw", username="admin", secret=SECRET, totp=TOTP, category="firewall")
        v.creds.rotate("acme", "fw", SECRET + "-v2")
        v.creds.rotate("acme", "fw", SECRET)


def assert_clean_failure(done: subprocess.CompletedProcess[bytes], *phrases: str) -> str:
    """Exit 1, an ``Error:`` line naming the cause, no traceback, no secret anywhere."""
    err = done.stderr.decode(errors="replace")
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 1, (done.returncode, out, err)
    assert err.startswith("Error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for phrase in phrases:
        assert phrase in err, err
    for secret in (SECRET, SECRET + "-v2", "JBSWY3DPEHPK3PXP"):
        assert secret not in out + err
    return err


# Commands that disclose a secret: each must be refused when its audit entry cannot be written.
REVEALS = [
    ["cred", "show", "acme", "fw", "--reveal"],
    ["cred", "show", "acme", "fw", "--reveal", "--json"],
    ["cred", "totp", "acme", "fw"],
    ["cred", "history", "acme", "fw", "--reveal"],
    [
        "request",
        "log",
        "acme",
        "--requester",
        "Jane Doe",
        "--channel",
        "phone",
        "--verified-by",
        "called back",
        "--item",
        "fw",
        "--decision",
        "granted",
        "--override",
        "test",
    ],
]


# --- the disk fills up ------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path):
    with tmpfs(tmp_path / "disk", size_kib=6144) as disk:
        path = disk / "vault.db"
        make_vault(path)
        yield path


def test_disk_full_refuses_writes_and_reveals_and_loses_nothing(full_disk: Path, tmp_path: Path) -> None:
    before = snapshot(full_disk)
    env = base_env(full_disk)
    # Room to open and read (the -shm and a small WAL) but not for a 300 KB page.
    filler = fill(full_disk.parent, leave_kib=96)
    ok = run_env(["doc", "list", "acme"], env)
    assert ok.returncode == 0, ok.stderr
    big = ("# Big\n\n" + "lorem ipsum dolor sit amet " * 12000).encode()
    err = assert_clean_failure(run_env(["doc", "add", "acme", "Big page"], env, big), "disk is full")
    assert "nothing was changed" in err
    # No space at all: every write and every disclosure fails cleanly.
    filler.unlink()
    filler = fill(full_disk.parent, leave_kib=0)
    for args in REVEALS:
        assert_clean_failure(run_env(args, env))
    assert_clean_failure(run_env(["cred", "add", "acme", "new"], env, b"another secret\n"))
    assert_clean_failure(run_env(["passwd"], {**env, "HANDOVER_NEW_PASSPHRASE": "a new passphrase"}))
    out = full_disk.parent / "bundle.tar.age"
    assert_clean_failure(
        run_env(
            ["export", "acme", "--passphrase", "--force", "--out", str(out)],
            {**env, "HANDOVER_BUNDLE_PASSPHRASE": "bundle pass"},
        )
    )
    assert_clean_failure(run_env(["backup", str(full_disk.parent / "copy.db")], env))
    assert tree(full_disk.parent) <= {"filler", "vault.db", "vault.db-shm", "vault.db-wal"}
    filler.unlink()
    # Space is back: everything stored before is intact, the failed commands left nothing behind.
    assert integrity_check(full_disk) == "ok"
    assert which_opens(full_disk, [PASSPHRASE, "a new passphrase"]) == [PASSPHRASE]
    assert snapshot(full_disk) == before
    again = run_env(["cred", "show", "acme", "fw", "--reveal"], env)
    assert again.returncode == 0 and SECRET in again.stdout.decode()


@pytest.mark.parametrize("args", REVEALS[::2], ids=lambda a: " ".join(a[:2]))
def test_disk_fills_up_at_the_moment_of_the_audit_entry(
    full_disk: Path, tmp_path: Path, args: list[str]
) -> None:
    """The vault opened fine; the disk fills while the disclosure's audit entry is being written:
    the entry fails, so the secret is never shown."""
    marker = tmp_path / "at-append"
    env = base_env(
        full_disk,
        **fault_env(
            tmp_path, "handover_vault.integrity.audit:AuditLog.append:before:sleep1.5", marker=marker
        ),
    )
    proc = start(args, env)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the command never reached its audit entry"
    filler = fill(full_disk.parent, leave_kib=0)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        filler.unlink()
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    assert_clean_failure(done, "disk is full", "nothing was changed")
    assert integrity_check(full_disk) == "ok"


# --- I/O errors from the C library ------------------------------------------------------------------

EIO_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Fail with EIO every write/fsync to a file whose path ends with $HV_EIO_MATCH, once $HV_EIO_AFTER
   such writes have gone through (a disk that starts failing in the middle of a transaction). */
static long seen = 0;

static int hits(int fd) {
    const char *match = getenv("HV_EIO_MATCH");
    char link[64], path[4096];
    if (!match) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    size_t lp = strlen(path), lm = strlen(match);
    if (lp < lm || strcmp(path + lp - lm, match) != 0) return 0;
    const char *after = getenv("HV_EIO_AFTER");
    return ++seen > (after ? atol(after) : 0);
}

#define WRAP(ret, name, params, args)                                  \
    ret name params {                                                  \
        static ret (*real) params = 0;                                 \
        if (!real) real = (ret (*) params)dlsym(RTLD_NEXT, #name);     \
        if (hits(fd)) { errno = EIO; return -1; }                      \
        return real args;                                              \
    }

WRAP(ssize_t, write, (int fd, const void *b, size_t n), (fd, b, n))
WRAP(ssize_t, pwrite, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o))
WRAP(ssize_t, pwrite64, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o))
WRAP(int, fsync, (int fd), (fd))
WRAP(int, fdatasync, (int fd), (fd))
"""


@pytest.fixture(scope="module")
def eio_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = need("cc")
    d = tmp_path_factory.mktemp("shim")
    (d / "eio.c").write_text(EIO_SHIM)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-o", str(d / "eio.so"), str(d / "eio.c"), "-ldl"], check=True
    )
    return d / "eio.so"


def _eio_sweep(tmp_path: Path, shim: Path, target: str, step: int) -> list[int]:
    """Run ``cred add`` with the disk failing after 0, step, 2*step, ... writes until it succeeds."""
    outcomes = []
    for after in range(0, 400, step):
        path = tmp_path / f"{target}-{after}" / "vault.db"
        path.parent.mkdir()
        make_vault(path)
        before = {k: v for k, v in snapshot(path).items() if not k.startswith("_")}
        env = base_env(path, LD_PRELOAD=str(shim), HV_EIO_MATCH=target, HV_EIO_AFTER=str(after))
        done = run_env(["cred", "add", "acme", "io-test"], env, b"io secret\n")
        outcomes.append(done.returncode)
        if done.returncode != 0:
            assert_clean_failure(done, "I/O error")
        assert integrity_check(path) == "ok"
        now = {k: v for k, v in snapshot(path).items() if not k.startswith("_")}
        assert {k: v for k, v in now.items() if k in before} == before, "stored data changed"
        labels = {v.get("label") for k, v in now.items() if "/cred/" in k}
        # Success means saved; failure says "nothing was changed", which must then be true.
        assert ("io-test" in labels) == (done.returncode == 0), (after, done.stderr)
        if done.returncode == 0:
            break
    return outcomes


@pytest.mark.parametrize("target", ["vault.db-wal", "vault.db"])
def test_io_errors_at_every_point_of_a_write_give_a_clear_error_and_lose_nothing(
    tmp_path: Path, eio_shim: Path, target: str
) -> None:
    outcomes = _eio_sweep(tmp_path, eio_shim, target, step=9)
    # The WAL takes every commit: failing it fails the command. The main file is written only by
    # the checkpoint after the commit, so the command succeeds and its data stays in the WAL.
    assert outcomes[-1] == 0 and (outcomes[0] == 1) == target.endswith("-wal"), outcomes


@pytest.mark.soak
@pytest.mark.parametrize("target", ["vault.db-wal", "vault.db", "vault.db-shm"])
def test_soak_io_errors_at_every_single_write(tmp_path: Path, eio_shim: Path, target: str) -> None:
    outcomes = _eio_sweep(tmp_path, eio_shim, target, step=1)
    assert outcomes[-1] == 0, outcomes


# --- a read-only vault ------------------------------------------------------------------------------


def test_read_only_vault_gives_a_clear_error_and_shows_no_secret(tmp_path: Path) -> None:
    src = tmp_path / "rw"
    src.mkdir()
    make_vault(src / "vault.db")
    before = snapshot(src / "vault.db")
    with read_only_bind(src, tmp_path / "ro") as ro:
        env = base_env(ro / "vault.db")
        for args in [*REVEALS, ["doc", "list", "acme"]]:
            assert_clean_failure(run_env(args, env), "read-only")
        assert_clean_failure(run_env(["doc", "add", "acme", "x"], env, b"text"), "read-only")
        assert_clean_failure(
            run_env(["passwd"], {**env, "HANDOVER_NEW_PASSPHRASE": "another long passphrase"}), "read-only"
        )
    assert snapshot(src / "vault.db") == before


# --- an audit log that refuses entries --------------------------------------------------------------


@pytest.fixture
def refusing(tmp_path: Path) -> Path:
    path = tmp_path / "vault.db"
    make_vault(path)
    audit_refuses_inserts(path)
    return path


@pytest.mark.parametrize("args", REVEALS, ids=lambda a: " ".join(a[:2] + a[4:5]))
def test_audit_refusing_inserts_blocks_every_disclosure(refusing: Path, args: list[str]) -> None:
    err = assert_clean_failure(run_env(args, base_env(refusing)), "audit")
    assert "nothing was" in err


def test_audit_refusing_inserts_blocks_audited_changes_and_loses_nothing(
    refusing: Path, tmp_path: Path
) -> None:
    audit_allows_inserts(refusing)
    before = snapshot(refusing)
    audit_refuses_inserts(refusing)
    env = base_env(refusing)
    out = tmp_path / "b.tar.age"
    attempts = [
        (["cred", "add", "acme", "new"], b"new secret\n", {}),
        (["cred", "rotate", "acme", "fw"], b"rotated secret\n", {}),
        (["passwd"], b"", {"HANDOVER_NEW_PASSPHRASE": "a new passphrase"}),
        (
            ["export", "acme", "--passphrase", "--force", "--out", str(out)],
            b"",
            {"HANDOVER_BUNDLE_PASSPHRASE": "bundle pass"},
        ),
        (["backup", str(tmp_path / "copy.db")], b"", {}),
        (["client", "add", "beta", "--name", "Beta"], b"", {}),
    ]
    for args, stdin, extra in attempts:
        assert_clean_failure(run_env(args, {**env, **extra}, stdin), "audit")
    assert not out.exists() and not (tmp_path / "copy.db").exists()
    assert [p.name for p in tmp_path.iterdir() if "b.tar.age" in p.name or "copy.db" in p.name] == []
    audit_allows_inserts(refusing)
    assert which_opens(refusing, [PASSPHRASE, "a new passphrase"]) == [PASSPHRASE]
    assert snapshot(refusing) == before


def test_random_bytes_instead_of_a_vault_is_a_clear_integrity_error(tmp_path: Path) -> None:
    import os

    for name, data in [
        ("random.db", os.urandom(65536)),
        ("sqlite-head.db", b"SQLite format 3\x00" + os.urandom(8192)),
        ("empty.db", b""),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        done = run_env(["client", "list"], base_env(path))
        assert done.returncode == 4, (name, done.returncode, done.stderr)
        assert done.stderr.decode().startswith("Error: ") and b"Traceback" not in done.stderr
        assert path.read_bytes() == data, "a failed open must not change the file"
    # A real SQLite file that is not a vault.
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t (x)")
    done = run_env(["client", "list"], base_env(other))
    assert done.returncode == 4 and b"not a handover vault" in done.stderr, done.stderr
    shutil.rmtree(tmp_path / "runtime", ignore_errors=True)
