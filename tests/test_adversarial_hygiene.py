"""Secrets hygiene: with known secrets planted, none appears where it must not (DESIGN §3, §4, §9).

Scanned after every command of a realistic session: its stdout and stderr (a secret only where the
command's job is to show it), ``--debug`` tracebacks of an unexpected exception that carries
decrypted data, the audit table (raw and decrypted), every file left under the test's directories
(a private TMPDIR and XDG_RUNTIME_DIR, which must be empty again) and /dev/shm, the environment and
argv of every child process (``$EDITOR``, ``HANDOVER_PASSPHRASE_COMMAND``, the warm agent), and the
vault's own files at rest. Files that hold secrets are 0600 even when the caller's umask is 000.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, handover_cmd
from tests.helpers_adversarial import SECRET_ENV, base_env, contains_any, fault_env, run_env, start

CRED_SECRET = "Hyg-s3cret-Firewall-91"
OLD_SECRET = "Hyg-s3cret-Previous-17"
ROTATED = "Hyg-s3cret-Rotated-55"
ADDED = "Hyg-s3cret-Added-33"
TOTP_SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NEW_PASSPHRASE = "Hyg new passphrase 2026"
RECOVERED = "Hyg recovered passphrase"
BUNDLE_PASSPHRASE = "Hyg bundle passphrase 77"
IMPORT_SECRET = "Hyg-s3cret-Imported-08"
DOC_BODY = "Hyg doc body: core switch in rack B"

ALL = [
    PASSPHRASE,
    CRED_SECRET,
    OLD_SECRET,
    ROTATED,
    ADDED,
    TOTP_SEED,
    NEW_PASSPHRASE,
    RECOVERED,
    BUNDLE_PASSPHRASE,
    IMPORT_SECRET,
]


@pytest.fixture
def hv(tmp_path: Path) -> dict[str, Path | str]:
    from handover_vault import init_vault

    path = tmp_path / "vault" / "vault.db"
    v, code = init_vault(path, PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME Ltd", contract_start="2024-01-01", notice_days=30)
        v.contacts.add("acme", name="Jane Doe", email="jane@acme.example", authorized=True)
        v.docs.add("acme", title="Network overview", body=DOC_BODY, overview=True)
        v.creds.add(
            "acme",
            label="fw",
            username="admin",
            secret=OLD_SECRET,
            category="firewall",
            totp=f"otpauth://totp/ACME:admin?secret={TOTP_SEED}&issuer=ACME",
        )
        v.creds.rotate("acme", "fw", CRED_SECRET)
    dirs = {name: tmp_path / name for name in ("tmp", "xdg", "out", "scripts")}
    for d in dirs.values():
        d.mkdir(mode=0o700)
    return {"path": path, "recovery": code, **dirs}


def private_env(
    hv: dict[str, Path | str], passphrase: str | None = PASSPHRASE, **extra: str
) -> dict[str, str]:
    return base_env(
        Path(hv["path"]),
        passphrase=passphrase,
        TMPDIR=str(hv["tmp"]),
        XDG_RUNTIME_DIR=str(hv["xdg"]),
        **extra,
    )


def shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def plaintext_files(root: Path, secrets: list[str], skip: tuple[Path, ...] = ()) -> list[tuple[str, str]]:
    """(file, secret) for every secret found in clear in any file under ``root``."""
    hits = []
    for p in root.rglob("*"):
        if not p.is_file() or any(p.is_relative_to(s) for s in skip):
            continue
        data = p.read_bytes()
        hits += [(str(p.relative_to(root)), s) for s in contains_any(data, secrets)]
    return hits


# /dev/shm is the machine's, not the test's: under pytest-xdist, Chromium's shared memory in another
# worker would show as left behind here. The browser tests share this group (one worker runs them).
@pytest.mark.xdist_group("dev-shm")
def test_planted_secrets_appear_only_where_the_command_shows_them(hv: dict, tmp_path: Path) -> None:
    from handover_vault import open_vault

    out = Path(hv["out"])
    csv_file = Path(hv["scripts"]) / "import.csv"
    csv_file.write_text(f"label,username,password\nimported,root,{IMPORT_SECRET}\n")
    shm_before = shm()
    pw = PASSPHRASE
    # (argv, stdin, extra env, secrets this command may print, exit code)
    steps: list[tuple[list[str], bytes, dict[str, str], list[str], int]] = [
        (["client", "list"], b"", {}, [], 0),
        (["cred", "list", "acme", "--json"], b"", {}, [], 0),
        (["cred", "show", "acme", "fw"], b"", {}, [], 0),
        (["cred", "show", "acme", "fw", "--json"], b"", {}, [], 0),
        (["cred", "show", "acme", "fw", "--reveal"], b"", {}, [CRED_SECRET], 0),
        (["cred", "history", "acme", "fw", "--reveal", "--json"], b"", {}, [CRED_SECRET, OLD_SECRET], 0),
        (["cred", "history", "acme", "fw"], b"", {}, [], 0),
        (["cred", "totp", "acme", "fw"], b"", {}, [], 0),
        (["cred", "rotate", "acme", "fw"], f"{ROTATED}\n".encode(), {}, [], 0),
        (
            ["cred", "add", "acme", "added", "--with-totp"],
            f"{ADDED}\notpauth://totp/x?secret={TOTP_SEED}\n".encode(),
            {},
            [],
            0,
        ),
        (["cred", "show", "acme", "nope", "--reveal"], b"", {}, [], 1),
        (["doc", "list", "acme", "--json"], b"", {}, [], 0),
        (["search", "fw"], b"", {}, [], 0),
        (["import", "csv", "acme", str(csv_file), "--dry-run"], b"", {}, [], 0),
        (["import", "csv", "acme", str(csv_file)], b"", {}, [], 0),
        (
            [
                "request",
                "log",
                "acme",
                "--requester",
                "Jane Doe",
                "--channel",
                "phone",
                "--verified-by",
                "called back on the number on file",
                "--item",
                "fw",
                "--decision",
                "granted",
            ],
            b"",
            {},
            [ROTATED],
            0,
        ),
        (["request", "list", "acme", "--json"], b"", {}, [], 0),
        (["audit", "list", "--json"], b"", {}, [], 0),
        (["audit", "verify"], b"", {}, [], 0),
        (["audit", "checkpoint", "--out", str(out / "cp.json")], b"", {}, [], 0),
        (
            ["export", "acme", "--passphrase", "--force", "--out", str(out / "b.tar.age")],
            b"",
            {"HANDOVER_BUNDLE_PASSPHRASE": BUNDLE_PASSPHRASE},
            [],
            0,
        ),
        (
            ["bundle", "verify", str(out / "b.tar.age"), "--passphrase"],
            b"",
            {"HANDOVER_BUNDLE_PASSPHRASE": BUNDLE_PASSPHRASE},
            [],
            0,
        ),
        (["backup", str(out / "backup.db")], b"", {}, [], 0),
        (["end", "acme", "--notice-given", "2026-01-05", "--reason", "moving on"], b"", {}, [], 0),
        (["letter", "acme", "--out", str(out / "letter")], b"", {}, [], 0),
        (["passwd"], b"", {"HANDOVER_NEW_PASSPHRASE": NEW_PASSPHRASE}, [], 0),
        (
            ["recover"],
            b"",
            {"HANDOVER_RECOVERY_CODE": str(hv["recovery"]), "HANDOVER_NEW_PASSPHRASE": RECOVERED},
            [],
            0,
        ),
        (["cred", "show", "acme", "fw", "--reveal"], b"", {"HANDOVER_PASSPHRASE": "wrong passphrase"}, [], 3),
        (["request", "report", "acme", "--out", str(out / "report.md")], b"", {}, [], 0),
        (["check", "acme", "--json"], b"", {}, [], 1),  # blocking gaps: exit 1
        (["client", "show", "acme", "--json"], b"", {}, [], 0),
        (["forget", "acme", "--yes", "--certificate", str(out / "certificate.md")], b"", {}, [], 0),
        (["audit", "list", "--json"], b"", {}, [], 0),
    ]
    # Steps that change nothing another step reads run at once (a batch); the rest one by one.
    batches: list[list[tuple[list[str], bytes, dict[str, str], list[str], int]]] = [steps[:8], steps[10:14]]
    batches[1:1] = [[st] for st in steps[8:10]]
    batches += [[st] for st in steps[14:]]
    assert sum(len(b) for b in batches) == len(steps)
    for batch in batches:
        procs = []
        for args, stdin, extra, _, _ in batch:
            procs.append(start(args, private_env(hv, passphrase=pw, **extra), stdin))
        for (args, _, _, allowed, code), proc in zip(batch, procs, strict=True):
            stdout, stderr = proc.communicate(timeout=300)
            text = (stdout + stderr).decode(errors="replace")
            assert proc.returncode == code, (args, text)
            forbidden = [s for s in [*ALL, str(hv["recovery"])] if s not in allowed]
            assert contains_any(text, forbidden) == [], (args, text)
            for s in allowed:
                assert s in text, (args, "the command's job is to show it")
        assert list(Path(hv["tmp"]).iterdir()) == [], (batch, "left files in TMPDIR")
        assert list(Path(hv["xdg"]).iterdir()) == [], (batch, "left files in XDG_RUNTIME_DIR")
        assert shm() - shm_before == set(), (batch, "left files in /dev/shm")
        if batch[0][0] == ["passwd"]:
            pw = NEW_PASSPHRASE
        elif batch[0][0] == ["recover"]:
            pw = RECOVERED
    # Nothing in clear anywhere on disk: vault, WAL, backup, bundle, checkpoint, letter, sessions.
    leaks = plaintext_files(tmp_path, [*ALL, str(hv["recovery"]), DOC_BODY], skip=(Path(hv["scripts"]),))
    assert leaks == [], leaks
    # The audit table, raw and decrypted, names what was disclosed and never the value.
    with open_vault(Path(hv["path"]), passphrase=RECOVERED) as v:
        details = json.dumps([e.to_json() for e in v.audit.events()])
        assert contains_any(details, ALL) == []
        assert "cred.reveal" in details and "request" in details
    con = sqlite3.connect(hv["path"])
    try:
        raw = b"".join(bytes(r[0]) + bytes(r[1]) for r in con.execute("SELECT detail, mac FROM audit"))
        raw += " ".join(
            str(r) for r in con.execute("SELECT at, action, client_id, record_id FROM audit")
        ).encode()
    finally:
        con.close()
    assert contains_any(raw, ALL) == []


def test_debug_traceback_of_an_unexpected_exception_shows_no_secret(hv: dict, tmp_path: Path) -> None:
    """A bug raises while holding decrypted data: --debug shows the stack, never the message."""
    for hook, args in [
        ("handover_vault.store.records:Records.load:after:leak", ["cred", "show", "acme", "fw", "--reveal"]),
        ("handover_vault.store.records:Records.load:after:leak", ["cred", "list", "acme"]),
        ("handover_vault.keys.crypto:Sealer.open:after:leak", ["doc", "show", "acme", "Network overview"]),
        ("handover_vault.creds:Creds.reveal:after:leak", ["cred", "show", "acme", "fw", "--reveal"]),
    ]:
        for debug in (["--debug"], []):
            env = private_env(hv, **fault_env(tmp_path, hook))
            done = run_env([*debug, *args], env)
            err = done.stderr.decode(errors="replace")
            assert done.returncode == 1, (hook, err)
            assert "Error: internal error (RuntimeError)" in err, err
            assert ("Traceback" in err) == bool(debug), err
            if debug:
                assert "builtins.RuntimeError (message withheld)" in err, err
            assert (
                contains_any(
                    (done.stdout + done.stderr).decode(errors="replace"), [*ALL, DOC_BODY, "Hyg doc body"]
                )
                == []
            ), (hook, err)


DUMP = """#!{python}
import json, os, sys
with open({out!r}, "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv, "env": dict(os.environ)}}) + "\\n")
{action}
"""


def _script(d: Path, name: str, action: str) -> tuple[Path, Path]:
    out = d / f"{name}.jsonl"
    script = d / name
    script.write_text(DUMP.format(python=sys.executable, out=str(out), action=action))
    script.chmod(0o700)
    return script, out


def _assert_child_clean(dump: Path, must_not: list[str]) -> list[dict]:
    calls = [json.loads(line) for line in dump.read_text().splitlines()]
    assert calls, "the child was never run"
    for call in calls:
        blob = json.dumps(call)
        assert contains_any(blob, must_not) == [], f"a child saw a secret: {call['argv']}"
        assert not set(SECRET_ENV) & set(call["env"]), sorted(set(SECRET_ENV) & set(call["env"]))
    return calls


def test_passphrase_command_child_sees_no_secret(hv: dict) -> None:
    script, dump = _script(Path(hv["scripts"]), "passcmd", f"print({PASSPHRASE!r})")
    secrets = {
        "HANDOVER_PASSPHRASE": "decoy-env-passphrase",
        "HANDOVER_NEW_PASSPHRASE": NEW_PASSPHRASE,
        "HANDOVER_BUNDLE_PASSPHRASE": BUNDLE_PASSPHRASE,
        "HANDOVER_RECOVERY_CODE": str(hv["recovery"]),
        "HANDOVER_IMPORT_PASSPHRASE": "decoy-import",
        "HANDOVER_SESSION": "hvs1.decoy",
    }
    env = private_env(hv, passphrase=None, HANDOVER_PASSPHRASE_COMMAND=f"{script} --flag", **secrets)
    env.pop("HANDOVER_SESSION")  # a decoy session would be tried first and fail
    done = run_env(["cred", "show", "acme", "fw", "--reveal"], env)
    assert done.returncode == 0 and CRED_SECRET in done.stdout.decode(), done.stderr
    env["HANDOVER_NEW_PASSPHRASE"] = NEW_PASSPHRASE
    done = run_env(["passwd"], env)
    assert done.returncode == 0, done.stderr
    calls = _assert_child_clean(
        dump,
        [
            PASSPHRASE,
            NEW_PASSPHRASE,
            BUNDLE_PASSPHRASE,
            str(hv["recovery"]),
            "decoy-env-passphrase",
            "decoy-import",
            CRED_SECRET,
        ],
    )
    assert calls[0]["argv"][1:] == ["--flag"]


def test_editor_child_sees_no_secret_and_its_temp_file_is_private_and_gone(hv: dict) -> None:
    seen = Path(hv["scripts"]) / "mode.txt"
    action = (
        "import stat\n"
        f"open({str(seen)!r}, 'w').write(oct(stat.S_IMODE(os.stat(sys.argv[-1]).st_mode)) + ' ' + sys.argv[-1])\n"
        "open(sys.argv[-1], 'a').write('\\nwritten by the editor\\n')\n"
    )
    script, dump = _script(Path(hv["scripts"]), "editor", action)
    env = private_env(
        hv,
        EDITOR=str(script),
        HANDOVER_NEW_PASSPHRASE=NEW_PASSPHRASE,
        HANDOVER_BUNDLE_PASSPHRASE=BUNDLE_PASSPHRASE,
    )
    env.pop("VISUAL", None)
    primary, replica = pty.openpty()
    try:
        for args in (["doc", "add", "acme", "From the editor"], ["doc", "edit", "acme", "Network overview"]):
            proc = subprocess.run(
                [*handover_cmd(), *args],
                stdin=replica,
                capture_output=True,
                env=env,
                timeout=120,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
    finally:
        os.close(primary)
        os.close(replica)
    calls = _assert_child_clean(dump, [PASSPHRASE, NEW_PASSPHRASE, BUNDLE_PASSPHRASE, CRED_SECRET])
    mode, name = seen.read_text().split(" ", 1)
    assert mode == "0o600", mode
    assert Path(name).parent == Path(hv["xdg"]), "the editor's file must be in the RAM-backed runtime dir"
    assert not Path(name).exists() and list(Path(hv["xdg"]).iterdir()) == []
    assert len(calls) == 2
    from handover_vault import open_vault

    with open_vault(Path(hv["path"]), passphrase=PASSPHRASE) as v:
        _, rec = v.docs.get("acme", "Network overview")
        assert rec.data["body"].startswith(DOC_BODY) and "written by the editor" in rec.data["body"]


def _agents(sock_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"handover_vault.cli.agent" in cmd and str(sock_dir).encode() in cmd:
                pids.append(int(proc.name))
    return pids


def test_unlock_session_and_its_agent_hold_no_secret_in_environment_or_argv(
    hv: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    # A short runtime dir, so the agent's socket path fits in sun_path and the agent really starts.
    runtime = Path(tempfile.mkdtemp(prefix="hv-", dir="/tmp"))
    monkeypatch.setenv("HANDOVER_RUNTIME_DIR", str(runtime))
    env = private_env(hv, HANDOVER_NEW_PASSPHRASE=NEW_PASSPHRASE)
    done = run_env(["unlock", "--for", "120"], env)
    assert done.returncode == 0, done.stderr
    token = re.search(rb"HANDOVER_SESSION=(\S+)", done.stdout).group(1).decode()  # type: ignore[union-attr]
    key = token.rsplit(".", 1)[1]
    try:
        deadline = time.monotonic() + 10
        while not _agents(runtime) and time.monotonic() < deadline:
            time.sleep(0.1)
        agents = _agents(runtime)
        assert agents, "unlock started no agent"
        for pid in agents:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert contains_any(environ + argv, [PASSPHRASE, NEW_PASSPHRASE, key]) == []
            assert not any(e.split(b"=")[0].decode() in SECRET_ENV for e in environ.split(b"\0") if e)
        # Commands served through the session (and the agent, when one runs) behave the same.
        senv = private_env(hv, passphrase=None, HANDOVER_SESSION=token)
        shown = run_env(["cred", "show", "acme", "fw", "--reveal"], senv)
        assert shown.returncode == 0 and CRED_SECRET in shown.stdout.decode(), shown.stderr
        hidden = run_env(["cred", "show", "acme", "fw"], senv)
        assert CRED_SECRET not in hidden.stdout.decode() + hidden.stderr.decode()
        for f in (runtime / "sessions").iterdir() if (runtime / "sessions").exists() else []:
            if f.is_file():
                assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
                assert contains_any(f.read_bytes(), [PASSPHRASE, key]) == []
    finally:
        run_env(["lock"], private_env(hv, passphrase=None, HANDOVER_SESSION=token))
    deadline = time.monotonic() + 10
    while _agents(runtime) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _agents(runtime) == [], "the agent outlived its session"
    import shutil

    shutil.rmtree(runtime, ignore_errors=True)


def test_files_holding_secrets_are_private_even_with_umask_000(hv: dict, tmp_path: Path) -> None:
    """The command sets umask 077 before creating anything, whatever the caller's umask."""
    out = Path(hv["out"])
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    (out / "id.txt").write_text(f"{ident}\n")
    src = tmp_path / "diagram.bin"
    src.write_bytes(b"diagram")
    env = private_env(hv, HANDOVER_BUNDLE_PASSPHRASE=BUNDLE_PASSPHRASE)
    made: list[Path] = []

    def umask0(args: list[str], *expect: Path) -> None:
        done = subprocess.run(
            [*handover_cmd(), *args],
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
            preexec_fn=lambda: os.umask(0),
        )
        assert done.returncode == 0, (args, done.stderr)
        made.extend(expect)

    umask0(["attach", "add", "acme", str(src)])
    umask0(["attach", "get", "acme", "diagram.bin", "--out", str(out / "diagram.out")], out / "diagram.out")
    umask0(["backup", str(out / "backup.db")], out / "backup.db")
    umask0(
        ["export", "acme", "--recipient", str(ident.to_public()), "--force", "--out", str(out / "b.tar.age")],
        out / "b.tar.age",
    )
    umask0(["bundle", "open", str(out / "b.tar.age"), "--to", str(out / "opened"), "-i", str(out / "id.txt")])
    umask0(["audit", "checkpoint", "--out", str(out / "cp.json")], out / "cp.json")
    umask0(["keygen", "--out", str(out / "key.txt")], out / "key.txt")
    umask0(["end", "acme", "--notice-given", "2026-01-05", "--reason", "moving on"])
    umask0(["letter", "acme", "--out", str(out / "letter")])
    made += [p for p in (out / "opened").rglob("*") if p.is_file()]
    made += [p for p in (out / "letter").rglob("*") if p.is_file()]
    made.append(Path(hv["path"]))
    bad = {
        str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made if stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert bad == {}, bad
    dirs = [p for p in (out / "opened").rglob("*") if p.is_dir()]
    assert all(stat.S_IMODE(d.stat().st_mode) & 0o077 == 0 for d in dirs), dirs


def test_vault_companion_files_are_private_while_the_vault_is_open(hv: dict, tmp_path: Path) -> None:
    """-wal and -shm exist only while a command runs: pause one inside its write and look at them."""
    marker = tmp_path / "paused"
    env = private_env(
        hv,
        **fault_env(tmp_path, "handover_vault.integrity.audit:AuditLog.append:after:sleep2", marker=marker),
    )
    proc = start(["cred", "show", "acme", "fw", "--reveal"], env)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the command never reached the reveal"
        path = Path(hv["path"])
        companions = [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        assert companions, "no -wal/-shm while the vault is open"
        for p in companions:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p, oct(p.stat().st_mode))
        assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    finally:
        proc.communicate(timeout=60)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_killed_or_hung_up_during_editing_leaves_no_plaintext(hv: dict, sig: str) -> None:
    """Closing the terminal (SIGHUP) or a kill (SIGTERM) while $EDITOR is open: the page being
    edited must not stay in clear in the RAM-backed runtime dir."""
    import signal

    started = Path(hv["scripts"]) / "editing"
    editor = Path(hv["scripts"]) / "slow-editor"
    editor.write_text(f'#!/bin/sh\necho "$1" > {started}\nexec sleep 60\n')
    editor.chmod(0o700)
    env = private_env(hv, EDITOR=str(editor))
    env.pop("VISUAL", None)
    primary, replica = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*handover_cmd(), "doc", "edit", "acme", "Network overview"],
            stdin=replica,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        temp = Path(started.read_text().strip())
        assert temp.exists() and temp.parent == Path(hv["xdg"])
        assert DOC_BODY in temp.read_text()
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=30)
    finally:
        os.close(primary)
        os.close(replica)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the editor, if it outlived us
    assert proc.returncode != 0
    assert list(Path(hv["xdg"]).iterdir()) == [], "the page being edited was left in clear"
