"""`handover rekey` through the installed command: every envelope, chunk, wrapped key and slot is new,
every read command works after it, the audit chain runs on across the key change, old sessions are
refused (exit 3) even when their file is put back, and a crash at any point leaves the old or the new
vault, never a mix (fault hooks of tests/helpers_adversarial.py)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, run
from tests.helpers_adversarial import base_env, fault_env, integrity_check, run_env

SECRET = "Fw-s3cret-0001"
ROTATED = "Fw-s3cret-0002"
BLOB = bytes(range(256)) * 2500  # 640,000 bytes: three chunks


@pytest.fixture
def vault(acme, vault_path: Path, tmp_path: Path) -> tuple[Path, str]:
    """acme with history (a rotated secret, an edited doc), an attachment, a request, a second
    client; closed. Returns (vault, recovery code)."""
    acme.creds.rotate("acme", "Firewall admin", ROTATED)
    doc = acme.docs.list("acme")[1][0]
    acme.docs.edit("acme", doc.id, body="# LAN\n\n10.0.0.0/24 behind fw1 and fw2")
    (tmp_path / "diagram.bin").write_bytes(BLOB)
    acme.attachments.add_file("acme", tmp_path / "diagram.bin")
    from handover_vault.requests.service import Requests

    Requests(acme).log(
        "acme",
        requester="Jane Doe",
        channel="phone",
        verified_by="called back",
        decision="denied",
        items=["Firewall admin"],
    )
    acme.clients.add("beta", name="Beta GmbH", contract_start="2019-01-01", notice_days=30)
    acme.creds.add("beta", label="Router", secret="beta-s3cret")
    code = acme.new_recovery_code()
    acme.close()
    return vault_path, code


def blobs(path: Path) -> dict[str, set[bytes]]:
    con = sqlite3.connect(path)
    try:
        return {
            "records": {r[0] for r in con.execute("SELECT envelope FROM records")},
            "versions": {r[0] for r in con.execute("SELECT envelope FROM record_versions")},
            "chunks": {r[0] for r in con.execute("SELECT envelope FROM chunks")},
            "clients": {
                r[0] for r in con.execute("SELECT CAST(wrapped_key || envelope AS BLOB) FROM clients")
            },
            "slots": {r[0] for r in con.execute("SELECT wrapped FROM key_slots")},
            "signing": {r[0] for r in con.execute("SELECT value FROM meta WHERE key = 'signing_private'")},
            "tokens": {r[0] for r in con.execute("SELECT token FROM search_postings")},
        }
    finally:
        con.close()


def unlock(vault: Path) -> str:
    done = run(["unlock", "--for", "600"], vault, env={"HANDOVER_NO_AGENT": "1"})
    assert done.returncode == 0, done.stderr
    return re.search(r"HANDOVER_SESSION=(\S+)", done.stdout).group(1)  # type: ignore[union-attr]


def rekey(vault: Path) -> str:
    done = run(["rekey"], vault)
    assert done.returncode == 0, done.stderr
    m = re.search(r"New recovery code.*\n\s+(\S+)", done.stdout)
    assert m, done.stdout
    return m.group(1)


def test_rekey_re_encrypts_everything_and_every_read_command_works_after(
    vault: tuple[Path, str], tmp_path: Path
) -> None:
    path, old_code = vault
    token = unlock(path)
    before = blobs(path)
    fingerprint = run(["audit", "checkpoint", "--out", str(tmp_path / "cp.json")], path)
    assert fingerprint.returncode == 0
    new_code = rekey(path)
    after = blobs(path)
    for what in before:
        assert before[what] and after[what], what
        assert not before[what] & after[what], f"{what}: some rows kept their old ciphertext"
    assert len(before["chunks"]) == len(after["chunks"]) == 3
    assert integrity_check(path) == "ok"

    def ok(*args: str) -> str:
        done = run(list(args), path)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    assert "acme" in ok("client", "list") and "beta" in ok("client", "list")
    assert "ACME Ltd" in ok("client", "show", "acme")
    assert "fw1 and fw2" in ok("doc", "show", "acme", "Network overview")
    assert ROTATED in ok("cred", "show", "acme", "Firewall admin", "--reveal")
    assert "beta-s3cret" in ok("cred", "show", "beta", "Router", "--reveal")
    assert len(json.loads(ok("cred", "history", "acme", "Firewall admin", "--json"))) >= 2
    assert "Firewall admin" in ok("search", "fire")
    assert "Router" in ok("search", "router", "--client", "beta")
    ok("attach", "get", "acme", "diagram.bin", "--out", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == BLOB
    assert "| Sources | 1 in the audit log, 1 request records |" in ok("request", "report", "acme")
    assert "Audit log intact" in ok("audit", "verify")
    # A checkpoint made before the rekey still pins the same history.
    assert "matches" in ok("audit", "verify", "--checkpoint", str(tmp_path / "cp.json"))
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    (tmp_path / "id.txt").write_text(f"{ident}\n")
    bundle = tmp_path / "acme.tar.age"
    ok("export", "acme", "--recipient", str(ident.to_public()), "--force", "--out", str(bundle))
    verified = run(["bundle", "verify", str(bundle), "--identity", str(tmp_path / "id.txt")], passphrase=None)
    assert verified.returncode == 0, verified.stderr

    # The old session is gone; the old recovery code no longer opens anything, the new one does.
    stale = run(["client", "list"], path, passphrase=None, env={"HANDOVER_SESSION": token})
    assert stale.returncode == 3, stale.stdout + stale.stderr
    new_pw = {"HANDOVER_NEW_PASSPHRASE": "another passphrase"}
    assert run(["recover"], path, env={"HANDOVER_RECOVERY_CODE": old_code, **new_pw}).returncode == 3
    assert run(["recover"], path, env={"HANDOVER_RECOVERY_CODE": new_code, **new_pw}).returncode == 0


def test_the_audit_chain_runs_on_across_the_rekey_and_still_catches_old_edits(
    vault: tuple[Path, str],
) -> None:
    path, _ = vault
    rekey(path)
    rekey(path)  # two key changes: three epochs
    assert run(["cred", "show", "acme", "Firewall admin", "--reveal"], path).returncode == 0
    listed = json.loads(run(["audit", "list", "--json"], path).stdout)
    rekeys = [e for e in listed if e["action"] == "vault.rekey"]
    assert [e["detail"]["epoch"] for e in rekeys] == [1, 2]
    # Details sealed under every earlier key still read (client and vault scope).
    assert [e for e in listed if e["detail"] is None or "error" in e["detail"]] == []
    assert run(["audit", "verify"], path).returncode == 0
    # An entry of the first epoch edited: the chain breaks there (MAC under the first key).
    shutil.copyfile(path, path.with_name("copy.db"))
    con = sqlite3.connect(path)
    con.execute("UPDATE audit SET at = '2020-01-01T00:00:00Z' WHERE seq = 2")
    con.commit()
    con.close()
    broken = run(["audit", "verify"], path)
    assert broken.returncode == 4 and "audit log broken at entry 2" in broken.stderr


def test_the_key_history_must_match_where_the_rekey_entries_are(vault: tuple[Path, str]) -> None:
    path, _ = vault
    rekey(path)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM meta WHERE key = 'key_history'")
    con.commit()
    con.close()
    broken = run(["audit", "verify"], path)
    assert broken.returncode == 4, broken.stdout + broken.stderr


def test_a_session_file_put_back_after_the_rekey_is_refused(vault: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = vault
    token = unlock(path)
    import os

    sessions = Path(os.environ["HANDOVER_RUNTIME_DIR"]) / "sessions"
    kept = {p.name: p.read_bytes() for p in sessions.iterdir()}
    assert kept
    rekey(path)
    assert not [p for p in sessions.iterdir() if p.name in kept]
    for name, data in kept.items():
        (sessions / name).write_bytes(data)
    stale = run(
        ["cred", "show", "acme", "Firewall admin", "--reveal"],
        path,
        passphrase=None,
        env={"HANDOVER_SESSION": token},
    )
    assert stale.returncode == 3, stale.stdout + stale.stderr
    assert "made before the vault was rekeyed" in stale.stderr
    assert ROTATED not in stale.stdout


def test_passwd_and_lock_say_that_rekey_ends_an_exposure(vault: tuple[Path, str]) -> None:
    path, _ = vault
    token = unlock(path)
    locked = run(["lock"], path, passphrase=None, env={"HANDOVER_SESSION": token})
    assert locked.returncode == 0 and "handover rekey" in locked.stderr
    changed = run(["passwd"], path, env={"HANDOVER_NEW_PASSPHRASE": "next passphrase"})
    assert changed.returncode == 0 and "handover rekey" in changed.stderr
    assert "does not end that exposure" in changed.stderr


def test_forget_after_rekey_drops_the_clients_old_keys_too(vault: tuple[Path, str]) -> None:
    path, _ = vault
    rekey(path)
    ended = run(["end", "beta", "--notice-given", "2020-01-01", "--reason", "moved"], path)
    assert ended.returncode == 0, ended.stderr
    from handover_vault import open_vault
    from handover_vault.rekey import load_epochs

    with open_vault(path, passphrase=PASSPHRASE) as v:
        beta = v.clients.get("beta").id
        assert beta in load_epochs(v)[0].clients
    gone = run(["forget", "beta", "--yes", "--certificate", str(path.with_name("cert.md"))], path)
    assert gone.returncode == 0, gone.stderr
    with open_vault(path, passphrase=PASSPHRASE) as v:
        assert beta not in load_epochs(v)[0].clients
        assert load_epochs(v)[0].clients  # acme's old key stays: its old details still read
        v.audit.verify()


def _state(path: Path, code: str) -> tuple[bool, bool]:
    """(the vault is the old one, the vault is the new one), checked through the real library."""
    from handover_vault import open_vault
    from handover_vault.core import recover_vault
    from handover_vault.errors import AuthenticationFailed

    with open_vault(path, passphrase=PASSPHRASE) as v:
        v.audit.verify()
        actions = [e.action for e in v.audit.events()]
        assert v.creds.reveal("acme", "Firewall admin").data["secret"] == ROTATED
        assert v.creds.reveal("beta", "Router").data["secret"] == "beta-s3cret"
        with v.read() as s:
            acme = v.clients.get("acme", s)
            att = v.records.get(s, acme, "attachment", "diagram.bin")
            assert b"".join(v.attachments.chunks(s, acme, att)) == BLOB
    rekeyed = "vault.rekey" in actions
    try:
        with recover_vault(path, code, PASSPHRASE):
            old_code_works = True
    except AuthenticationFailed:
        old_code_works = False
    return old_code_works and not rekeyed, rekeyed and not old_code_works


@pytest.mark.parametrize(
    ("point", "committed"),
    [
        ("handover_vault.keys.hierarchy:make_slot:after:kill", False),  # new slot made, nothing written
        ("handover_vault.rekey:_rekey_client:after:kill", False),  # one client re-sealed, not committed
        (
            "handover_vault.integrity.audit:AuditLog.adopt_head:after:kill",
            False,
        ),  # everything written, not committed
        ("handover_vault.rekey:drop_sessions:before:kill", True),  # committed, sessions not yet dropped
    ],
)
def test_a_crash_mid_rekey_leaves_the_old_or_the_new_vault(
    vault: tuple[Path, str], tmp_path: Path, point: str, committed: bool
) -> None:
    path, code = vault
    token = unlock(path)
    before = blobs(path)
    done = run_env(["rekey"], base_env(path, **fault_env(tmp_path, point)))
    assert done.returncode == -9, done.stderr
    assert integrity_check(path) == "ok"
    if not committed:
        assert blobs(path) == before  # byte for byte the old ciphertexts, slots and keys
    else:
        assert not blobs(path)["records"] & before["records"]
    old, new = _state(path, code)
    assert (old, new) == (not committed, committed)
    if not committed:
        still = run(["client", "list"], path, passphrase=None, env={"HANDOVER_SESSION": token})
        assert still.returncode == 0, still.stderr
    else:
        # The session file survived the crash, but its key is the old one: refused.
        stale = run(["client", "list"], path, passphrase=None, env={"HANDOVER_SESSION": token})
        assert stale.returncode == 3, stale.stdout + stale.stderr


def test_a_tampered_record_stops_the_rekey_and_changes_nothing(vault: tuple[Path, str]) -> None:
    path, _ = vault
    con = sqlite3.connect(path)
    rid, blob = con.execute("SELECT id, envelope FROM records WHERE kind = 'asset'").fetchone()
    con.execute(
        "UPDATE records SET envelope = ? WHERE id = ?", (blob[:40] + bytes([blob[40] ^ 1]) + blob[41:], rid)
    )
    con.commit()
    con.close()
    before = blobs(path)
    done = run(["rekey"], path)
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"asset {rid} (version 1) does not decrypt" in done.stderr
    assert "recovery code" not in done.stdout
    assert blobs(path) == before
