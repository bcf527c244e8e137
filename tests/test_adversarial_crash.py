"""Crashes: ``handover`` processes SIGKILLed during writes lose nothing that was reported saved.

Two kinds of crash. A loop kills real ``handover`` processes at random moments while they add
documents and credentials, reveal secrets (an audit append), grant a request, rotate, export and
change the passphrase. And a fault hook (tests/helpers_adversarial.py) makes a process SIGKILL itself at an
exact point between two steps that must not be separated: after the bundle is sealed but before its
audit entry, inside the passphrase swap, during a schema upgrade.

After every crash: ``PRAGMA integrity_check`` is ok, every write that printed success is there, the
audit chain verifies, exactly one passphrase (the old or the new, never neither) opens the vault,
every secret that reached stdout has its audit entry, and every bundle on disk is audited (DESIGN §3,
§6, §8).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.helpers_adversarial import (
    base_env,
    fault_env,
    integrity_check,
    kill_after,
    run_env,
    start,
    which_opens,
)

SEED_SECRET = "Seed-s3cret-7q2w"


@pytest.fixture
def crash_vault(tmp_path: Path) -> Path:
    from handover_vault import init_vault

    path = tmp_path / "vault.db"
    v, _ = init_vault(path, PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME Ltd", contract_start="2024-01-01", notice_days=30)
        v.creds.add("acme", label="seed", username="admin", secret=SEED_SECRET, category="firewall")
    return path


@pytest.fixture
def identity(tmp_path: Path) -> tuple[str, object]:
    """An age recipient and the parsed identity (through the library's own loader) that opens it."""
    import pyrage

    from handover_vault.bundle.agefile import load_identity_file

    ident = pyrage.x25519.Identity.generate()
    key = tmp_path / "successor.key"
    key.write_text(f"{ident}\n")
    return str(ident.to_public()), load_identity_file(key)[0]


@dataclass
class Ledger:
    """What the user was told: writes that printed success, secrets that reached stdout."""

    passphrase: str = PASSPHRASE
    pending: str | None = None
    docs: set[str] = field(default_factory=set)
    creds: set[str] = field(default_factory=set)
    rotated: dict[str, str] = field(default_factory=dict)  # label -> newest secret reported saved
    secrets_shown: int = 0
    bundles: list[Path] = field(default_factory=list)


def _op(kind: str, i: int, tmp: Path, recipient: str) -> tuple[list[str], bytes, dict[str, str]]:
    if kind == "doc":
        return ["doc", "add", "acme", f"doc-{i}"], f"# Page {i}\n\nbody {i}\n".encode(), {}
    if kind == "cred":
        return ["cred", "add", "acme", f"cred-{i}", "--username", "u"], f"secret-{i}\n".encode(), {}
    if kind == "reveal":
        return ["cred", "show", "acme", "seed", "--reveal"], b"", {}
    if kind == "request":
        args = [
            "request",
            "log",
            "acme",
            "--requester",
            f"caller {i}",
            "--channel",
            "phone",
            "--verified-by",
            "called back",
            "--item",
            "seed",
            "--decision",
            "granted",
            "--override",
            "crash test",
        ]
        return args, b"", {}
    if kind == "rotate":
        return ["cred", "rotate", "acme", "rot"], f"rotated-{i}\n".encode(), {}
    if kind == "export":
        out = tmp / "bundles" / f"b{i}.tar.age"
        return ["export", "acme", "--recipient", recipient, "--force", "--out", str(out)], b"", {}
    if kind == "passwd":
        return ["passwd"], b"", {"HANDOVER_NEW_PASSPHRASE": f"passphrase number {i}"}
    raise AssertionError(kind)


def _check(path: Path, led: Ledger, ident: object) -> None:
    """The guarantees after a crash, checked through plain SQLite and the real library."""
    from handover_vault import open_vault
    from handover_vault.bundle.format import verify_sealed_bundle

    assert integrity_check(path) == "ok"
    candidates = [led.passphrase] + ([led.pending] if led.pending else [])
    opened = which_opens(path, candidates)
    assert len(opened) == 1, f"passphrases that open the vault: {opened} of {candidates}"
    led.passphrase, led.pending = opened[0], None
    with open_vault(path, passphrase=led.passphrase) as v:
        v.audit.verify()
        _, docs = v.docs.list("acme")
        _, creds = v.creds.list("acme")
        assert led.docs <= {d.data["title"] for d in docs}
        assert led.creds <= {c.data["label"] for c in creds}
        for label, secret in led.rotated.items():
            current = next(c for c in creds if c.data["label"] == label)
            _, old = v.creds.history("acme", current.id)
            assert secret in [current.data["secret"]] + [o.data["secret"] for o in old]
        events = v.audit.events()
        seed = next(c for c in creds if c.data["label"] == "seed")
        reveals = [
            e for e in events if e.action in ("cred.reveal", "request.disclose") and e.record_id == seed.id
        ]
        assert len(reveals) >= led.secrets_shown, "a secret reached stdout without its audit entry"
        exported = {e.detail["sha256"] for e in events if e.action == "bundle.export" and e.detail}
    for bundle in sorted((path.parent / "bundles").glob("*.tar.age")):
        digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
        assert digest in exported, f"{bundle.name} is on disk but no audit entry records its export"
        verify_sealed_bundle(bundle, identities=[ident])


# What each command prints once its write has committed: seeing it counts as a reported success,
# even if the process was killed right after printing it.
SUCCESS = {
    "doc": "Added doc",
    "cred": "Added credential",
    "rotate": "Rotated",
    "passwd": "Passphrase changed",
}


def _crash_loop(
    path: Path, tmp: Path, recipient: str, ident: object, rounds: int, seed: int, session: str | None = None
) -> None:
    import time

    rng = random.Random(seed)
    (tmp / "bundles").mkdir()
    led = Ledger()
    # An un-killed first run of each operation measures how long it takes; kills land across it.
    base = run_env(["cred", "add", "acme", "rot"], base_env(path), b"rot-0\n")
    assert base.returncode == 0, base.stderr
    led.creds.add("rot")
    led.rotated["rot"] = "rot-0"
    kinds = ["doc", "cred", "reveal", "request", "rotate", "export", "passwd"]
    took: dict[str, float] = {}
    for i, kind in enumerate(kinds + [rng.choice(kinds) for _ in range(rounds)]):
        args, stdin, extra = _op(kind, i, tmp, recipient)
        if session is None:
            env = base_env(path, passphrase=led.passphrase, **extra)
        else:
            env = base_env(path, passphrase=None, HANDOVER_SESSION=session, **extra)
        if kind == "passwd":
            led.pending = extra["HANDOVER_NEW_PASSPHRASE"]
        t0 = time.monotonic()
        proc = start(args, env, stdin)
        delay = 60.0 if kind not in took else rng.uniform(0.25, 1.1) * took[kind]
        killed, rc, out, err = kill_after(proc, delay)
        took.setdefault(kind, time.monotonic() - t0)
        assert killed or rc == 0, (kind, rc, err.decode(errors="replace"))
        text = out.decode(errors="replace")
        if (not killed and rc == 0) or (kind in SUCCESS and SUCCESS[kind] in text):
            if kind == "doc":
                led.docs.add(f"doc-{i}")
            elif kind == "cred":
                led.creds.add(f"cred-{i}")
            elif kind == "rotate":
                led.rotated["rot"] = f"rotated-{i}"
            elif kind == "passwd":
                led.passphrase, led.pending = extra["HANDOVER_NEW_PASSPHRASE"], None
        if SEED_SECRET in text:
            led.secrets_shown += 1
        assert not err.count(b"Traceback"), err
        _check(path, led, ident)


def test_sigkill_at_random_points_loses_nothing_reported(
    crash_vault: Path, tmp_path: Path, identity: tuple[str, object]
) -> None:
    _crash_loop(crash_vault, tmp_path, identity[0], identity[1], rounds=16, seed=20261126)


def test_killing_clients_of_the_warm_agent_loses_nothing_reported(
    crash_vault: Path, tmp_path: Path, identity: tuple[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an unlocked session the command runs in a fork of the warm agent; killing the client
    interrupts it there (SIGINT at any point): the same guarantees hold."""
    import re
    import tempfile
    import time

    runtime = Path(tempfile.mkdtemp(prefix="hv-", dir="/tmp"))  # short: the socket path must fit
    monkeypatch.setenv("HANDOVER_RUNTIME_DIR", str(runtime))
    done = run_env(["unlock", "--for", "300"], base_env(crash_vault))
    assert done.returncode == 0, done.stderr
    token = re.search(rb"HANDOVER_SESSION=(\S+)", done.stdout).group(1).decode()  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + 10
        while not list((runtime / "sessions").glob("*.sock")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((runtime / "sessions").glob("*.sock")), "no agent"
        _crash_loop(crash_vault, tmp_path, identity[0], identity[1], rounds=10, seed=7, session=token)
    finally:
        run_env(["lock"], base_env(crash_vault, passphrase=None, HANDOVER_SESSION=token))
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(4))
def test_soak_sigkill_at_random_points(
    crash_vault: Path, tmp_path: Path, identity: tuple[str, object], seed: int
) -> None:
    _crash_loop(crash_vault, tmp_path, identity[0], identity[1], rounds=150, seed=seed)


# --- crashes at exact points ------------------------------------------------------------------------


def test_kill_after_sealing_before_audit_leaves_no_unaudited_bundle(
    crash_vault: Path, tmp_path: Path, identity: tuple[str, object]
) -> None:
    """An export is an audit event: a bundle that reached its final name must be in the log."""
    out = tmp_path / "out.tar.age"
    env = base_env(crash_vault, **fault_env(tmp_path, "handover_vault.bundle.format:seal_bundle:after:kill"))
    done = run_env(["export", "acme", "--recipient", identity[0], "--force", "--out", str(out)], env)
    assert done.returncode == -9, done.stderr
    leftovers = sorted(p.name for p in tmp_path.iterdir() if "out.tar.age" in p.name)
    assert not out.exists(), f"an unaudited bundle was left at its final name ({leftovers})"
    # SIGKILL allows no clean-up: at most a hidden staging file, never the bundle's name.
    assert all(name.startswith(".out.tar.age.") for name in leftovers), leftovers


def test_kill_before_audit_commit_of_export_leaves_nothing(
    crash_vault: Path, tmp_path: Path, identity: tuple[str, object]
) -> None:
    out = tmp_path / "out.tar.age"
    env = base_env(
        crash_vault, **fault_env(tmp_path, "handover_vault.integrity.audit:AuditLog.append:after:kill")
    )
    done = run_env(["export", "acme", "--recipient", identity[0], "--force", "--out", str(out)], env)
    assert done.returncode == -9
    assert not out.exists()
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if "out.tar.age" in p.name)
    assert integrity_check(crash_vault) == "ok"


def test_kill_after_export_audit_commit_then_the_bundle_is_audited(
    crash_vault: Path, tmp_path: Path, identity: tuple[str, object]
) -> None:
    from handover_vault import open_vault

    out = tmp_path / "out.tar.age"
    env = base_env(
        crash_vault, **fault_env(tmp_path, "handover_vault.integrity.audit:AuditLog.append_now:after:kill")
    )
    done = run_env(["export", "acme", "--recipient", identity[0], "--force", "--out", str(out)], env)
    assert done.returncode == -9
    with open_vault(crash_vault, passphrase=PASSPHRASE) as v:
        v.audit.verify()
        audited = {e.detail["sha256"] for e in v.audit.events() if e.action == "bundle.export"}
    assert len(audited) == 1
    if out.exists():
        assert hashlib.sha256(out.read_bytes()).hexdigest() in audited


@pytest.mark.parametrize(
    "point",
    [
        "handover_vault.keys.hierarchy:make_slot:after:kill",  # new slot derived, nothing written yet
        "handover_vault.integrity.audit:AuditLog.append:after:kill",  # old slots deleted, new one added, not committed
        "handover_vault.store.engine:Store.close:before:kill",  # committed, process dies before closing
    ],
)
def test_kill_inside_passphrase_change_keeps_exactly_one_passphrase(
    crash_vault: Path, tmp_path: Path, point: str
) -> None:
    new = "a brand new passphrase"
    env = base_env(crash_vault, HANDOVER_NEW_PASSPHRASE=new, **fault_env(tmp_path, point))
    done = run_env(["passwd"], env)
    assert done.returncode == -9, done.stderr
    assert integrity_check(crash_vault) == "ok"
    expected = [new] if point.startswith("handover_vault.store.engine") else [PASSPHRASE]
    assert which_opens(crash_vault, [PASSPHRASE, new]) == expected


def test_kill_inside_reveal_before_commit_shows_nothing(crash_vault: Path, tmp_path: Path) -> None:
    env = base_env(
        crash_vault, **fault_env(tmp_path, "handover_vault.integrity.audit:AuditLog.append:after:kill")
    )
    done = run_env(["cred", "show", "acme", "seed", "--reveal"], env)
    assert done.returncode == -9
    assert SEED_SECRET.encode() not in done.stdout + done.stderr
    from handover_vault import open_vault

    with open_vault(crash_vault, passphrase=PASSPHRASE) as v:
        assert [e.action for e in v.audit.events()][-1] == "cred.add"
        v.audit.verify()


@pytest.mark.parametrize(
    "point",
    [
        "handover_vault.store.sqlite:online_backup:after:kill",  # pre-upgrade backup written, schema not yet upgraded
        "alembic.command:upgrade:after:kill",  # migrations ran, not yet committed
    ],
)
def test_kill_during_schema_upgrade_leaves_an_openable_vault(tmp_path: Path, point: str) -> None:
    """Opening an old vault upgrades it; a crash in the middle must not brick it."""
    golden = ROOT / "tests" / "golden" / "vault-0001.db"
    path = tmp_path / "old.db"
    shutil.copyfile(golden, path)
    passphrase = _golden_passphrase()
    env = base_env(path, passphrase=passphrase, **fault_env(tmp_path, point))
    done = run_env(["client", "list"], env)
    assert done.returncode == -9, done.stderr
    assert integrity_check(path) == "ok"
    again = run_env(["audit", "verify"], base_env(path, passphrase=passphrase))
    assert again.returncode == 0, again.stderr
    from handover_vault.store.engine import SCHEMA_HEAD

    with sqlite3.connect(path) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]


def _golden_passphrase() -> str:
    import re

    src = (ROOT / "tests" / "golden" / "make_golden.py").read_text()
    m = re.search(r'PASSPHRASE\s*=\s*"([^"]+)"', src)
    assert m, "make_golden.py names the golden vault's passphrase"
    return m.group(1)


@pytest.mark.parametrize(
    "point",
    [
        "handover_vault.integrity.audit:AuditLog.append:after:kill",  # rows deleted, not committed: nothing is forgotten
        "handover_vault.forget:purge:before:kill",  # committed, the WAL not yet checkpointed and truncated
    ],
)
def test_kill_during_forget_is_all_or_nothing_and_leaves_no_key_behind(tmp_path: Path, point: str) -> None:
    """Forget crypto-shreds: after a crash it happened entirely or not at all, and once it happened
    the next command leaves neither the wrapped key nor the client's ciphertext in the files."""
    from handover_vault import init_vault, open_vault

    path = tmp_path / "vault.db"
    v, _ = init_vault(path, PASSPHRASE)
    with v:
        v.clients.add("gone", name="Gone Ltd", contract_start="2020-01-01", notice_days=30)
        v.creds.add("gone", label="fw", secret="Gone-s3cret")
        v.clients.add("kept", name="Kept Ltd")
        v.creds.add("kept", label="fw", secret="Kept-s3cret")
    with sqlite3.connect(path) as con:
        wrapped = con.execute("SELECT wrapped_key FROM clients ORDER BY created_at LIMIT 1").fetchone()[0]
        envelopes = [
            r[0]
            for r in con.execute(
                "SELECT envelope FROM records WHERE client_id = (SELECT id FROM clients ORDER BY created_at LIMIT 1)"
            )
        ]
    con.close()
    ended = run_env(["end", "gone", "--notice-given", "2020-06-01", "--reason", "moved"], base_env(path))
    assert ended.returncode == 0, ended.stderr
    env = base_env(path, **fault_env(tmp_path, point))
    done = run_env(["forget", "gone", "--yes", "--certificate", str(tmp_path / "cert.md")], env)
    assert done.returncode == -9, done.stderr
    assert integrity_check(path) == "ok"
    after = run_env(["client", "list"], base_env(path))
    assert after.returncode == 0, after.stderr
    with open_vault(path, passphrase=PASSPHRASE) as v:
        v.audit.verify()
        slugs = [c.slug for c in v.clients.list()]
        actions = [e.action for e in v.audit.events()]
        assert v.creds.reveal("kept", "fw").data["secret"] == "Kept-s3cret"
    if point.startswith("handover_vault.integrity.audit"):
        assert slugs == ["gone", "kept"] and "client.forget" not in actions
        return
    assert slugs == ["kept"] and actions[-1] == "client.forget"
    files = b"".join(
        Path(f"{path}{s}").read_bytes() for s in ("", "-wal", "-shm") if Path(f"{path}{s}").exists()
    )
    assert bytes(wrapped) not in files, "the forgotten client's wrapped key survived the crash"
    assert not any(bytes(e)[13:45] in files for e in envelopes), "the forgotten client's ciphertext survived"


@pytest.mark.parametrize(
    "point",
    [
        "handover_vault.store.engine:upgrade:after:kill",  # schema made, nothing else
        "handover_vault.keys.hierarchy:make_slot:after:kill",  # inside the first transaction
        "handover_vault.integrity.audit:AuditLog.append:after:kill",  # vault.init written, its transaction not committed
        "handover_vault.store.engine:Store.close:after:kill",  # closed, not yet published
    ],
)
def test_kill_during_init_leaves_no_half_made_vault(tmp_path: Path, point: str) -> None:
    """A crashed init leaves nothing at the vault path: the next init simply works."""
    path = tmp_path / "new" / "vault.db"
    env = base_env(path, **fault_env(tmp_path, point))
    done = run_env(["init"], env)
    assert done.returncode == -9, done.stderr
    assert not path.exists(), "a half-made vault blocks the next init"
    assert b"Recovery code" not in done.stdout
    again = run_env(["init"], base_env(path))
    assert again.returncode == 0, again.stderr
    assert which_opens(path, [PASSPHRASE]) == [PASSPHRASE]
    assert integrity_check(path) == "ok"
