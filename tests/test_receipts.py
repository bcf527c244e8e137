"""Signed receipts of requests (`request log --receipt`), through the installed command: they verify
with `certificate verify`, a flipped byte or another signer is exit 4, and `audit verify --checkpoint`
takes one as a checkpoint that catches a log cut back behind it (a whole file restored from an older
copy, which nothing inside the file can tell)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, run

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

SECRET = "Fw-s3cret-0001"


def grant(vault: Path, receipt: Path, requester: str = "Jane Doe", item: str = "Firewall admin") -> str:
    done = run(
        [
            "request",
            "log",
            "acme",
            "--requester",
            requester,
            "--channel",
            "phone",
            "--verified-by",
            "called back on the number on file",
            "--item",
            item,
            "--decision",
            "granted",
            *(["--override", "known caller"] if requester != "Jane Doe" else []),
            "--receipt",
            str(receipt),
        ],
        vault,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def vault(acme, vault_target: Path | str) -> Path | str:
    acme.close()
    return vault_target


def facts(receipt: Path) -> dict:
    text = receipt.read_text()
    return json.loads(re.findall(r"^```json\n(.*?)^```$", text, re.S | re.M)[-1])


def test_a_receipt_is_signed_private_and_names_the_request_but_no_secret(vault: Path, tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.md"
    said = grant(vault, receipt)
    assert "Wrote receipt" in said
    assert (receipt.stat().st_mode & 0o777) == 0o600
    text = receipt.read_text()
    assert SECRET not in text
    f = facts(receipt)
    assert f["format"] == "handover-receipt/1"
    assert f["decision"] == "granted" and f["channel"] == "phone"
    assert f["identity_check"] == "called back on the number on file"
    assert [i["label"] for i in f["items"]] == ["Firewall admin"]
    # The head after the request's entries: request.log then request.disclose, the newest.
    from handover_vault import open_vault

    with open_vault(vault, passphrase=PASSPHRASE) as v:
        head = v.audit.head()
        events = v.audit.events()
        assert f["vault_fingerprint"] == v.fingerprint
    assert (f["audit"]["seq"], f["audit"]["mac"]) == (head.seq, head.mac.hex())
    assert events[head.seq - 1].action == "request.disclose"
    assert f["request"] == events[head.seq - 2].record_id

    ok = run(["certificate", "verify", str(receipt), "--signer", f["vault_fingerprint"]], passphrase=None)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"Receipt valid: request {f['request']} of ACME Ltd (acme)")
    assert "decision        granted" in ok.stdout
    assert "items           Firewall admin (cred v1)" in ok.stdout
    assert f"audit entry     {head.seq}" in ok.stdout
    assert "(the signer you expected)" in ok.stdout


def test_a_flipped_byte_or_another_signer_is_refused(vault: Path, tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.md"
    grant(vault, receipt)
    data = receipt.read_bytes()
    at = data.index(b"phone")
    flipped = tmp_path / "flipped.md"
    flipped.write_bytes(data[:at] + b"Phone" + data[at + 5 :])
    bad = run(["certificate", "verify", str(flipped)], passphrase=None)
    assert bad.returncode == 4, bad.stdout + bad.stderr
    assert "the receipt's signature is not valid" in bad.stderr
    # In the facts block too (what a script reads): the same refusal.
    at = data.index(b'"decision": "granted"')
    flipped.write_bytes(data[:at] + b'"decision": "denied" ' + data[at + len(b'"decision": "granted"') :])
    assert run(["certificate", "verify", str(flipped)], passphrase=None).returncode == 4
    other = run(
        ["certificate", "verify", str(receipt), "--signer", "hv:0000-0000-0000-0000-0000-0000-0000-0000"]
    )
    assert other.returncode == 4 and "not by hv:0000" in other.stderr
    # Re-signed by another vault: it verifies as that vault's, and this vault refuses it as a checkpoint.
    from handover_vault import init_vault
    from handover_vault.forget import sign_certificate
    from handover_vault.requests.receipts import RECEIPT_FORMAT

    body = data.decode().split("```handover-signature\n")[0]
    stranger, _ = init_vault(tmp_path / "other.db", PASSPHRASE)
    with stranger:
        forged = tmp_path / "forged.md"
        forged.write_text(sign_certificate(stranger, body, RECEIPT_FORMAT))
        assert run(["certificate", "verify", str(forged)], passphrase=None).returncode == 0
        wrong = run(["certificate", "verify", str(forged), "--signer", facts(receipt)["vault_fingerprint"]])
        assert wrong.returncode == 4
        as_cp = run(["audit", "verify", "--checkpoint", str(forged)], vault)
        assert as_cp.returncode == 4
        assert f"signed by {stranger.fingerprint}, not by this vault" in as_cp.stderr


@pytest.mark.sqlite_only  # a copy of the file is put back
def test_a_receipt_as_checkpoint_catches_a_file_restored_from_before_it(vault: Path, tmp_path: Path) -> None:
    older = tmp_path / "older.db"
    shutil.copyfile(vault, older)  # closed vault: the WAL is folded in
    receipt = tmp_path / "receipt.md"
    grant(vault, receipt)
    assert run(["cred", "show", "acme", "Firewall admin", "--reveal"], vault).returncode == 0
    ok = run(["audit", "verify", "--checkpoint", str(receipt)], vault)
    assert ok.returncode == 0, ok.stderr
    seq = facts(receipt)["audit"]["seq"]
    assert f"receipt's entry {seq} matches" in ok.stdout
    # The attacker puts back the older copy: inside the file, nothing tells; the receipt does.
    for suffix in ("-wal", "-shm"):
        Path(f"{vault}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(older, vault)
    # This machine's out-of-file head refuses the older copy (tests/test_integrity.py); opened where
    # the vault was never seen, nothing inside the file tells: the receipt does.
    here = run(["audit", "verify"], vault)
    assert here.returncode == 4 and "older than the last state seen on this machine" in here.stderr
    elsewhere = {"XDG_STATE_HOME": str(tmp_path / "another-machine")}
    assert run(["audit", "verify"], vault, env=elsewhere).returncode == 0
    caught = run(["audit", "verify", "--checkpoint", str(receipt)], vault, env=elsewhere)
    assert caught.returncode == 4, caught.stdout + caught.stderr
    assert f"the checkpoint saw entry {seq}: entries were removed" in caught.stderr


def test_a_receipt_of_a_rewritten_history_is_caught(vault: Path, tmp_path: Path) -> None:
    """The entry the receipt names is there but is not the one it pinned (another MAC)."""
    receipt = tmp_path / "receipt.md"
    grant(vault, receipt)
    from handover_vault import open_vault
    from handover_vault.forget import sign_certificate
    from handover_vault.requests.receipts import RECEIPT_FORMAT

    text = receipt.read_text()
    mac = facts(receipt)["audit"]["mac"]
    body = text.split("```handover-signature\n")[0].replace(mac, "00" * 32)
    pinned = tmp_path / "pinned.md"
    with open_vault(vault, passphrase=PASSPHRASE) as v:
        pinned.write_text(sign_certificate(v, body, RECEIPT_FORMAT))
    done = run(["audit", "verify", "--checkpoint", str(pinned)], vault)
    assert done.returncode == 4
    assert "differs from the checkpoint: history rewritten" in done.stderr


def test_values_shown_from_a_receipt_cannot_drive_the_terminal(vault: Path, tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.md"
    grant(vault, receipt, requester="Eve\x1b[2J\x1b]0;owned\x07", item="Firewall admin")
    done = run(["certificate", "verify", str(receipt)], passphrase=None)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "Eve\\x1b[2J\\x1b]0;owned\\x07" in done.stdout


def test_no_receipt_file_is_left_when_it_cannot_be_written_and_nothing_is_logged(
    vault: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "taken.md"
    taken.write_text("mine")
    done = run(
        [
            "request",
            "log",
            "acme",
            "--requester",
            "Jane Doe",
            "--channel",
            "phone",
            "--verified-by",
            "x",
            "--decision",
            "denied",
            "--receipt",
            str(taken),
        ],
        vault,
    )
    assert done.returncode == 1 and "already exists" in done.stderr
    assert taken.read_text() == "mine"
    from handover_vault import open_vault

    with open_vault(vault, passphrase=PASSPHRASE) as v:
        assert not [e for e in v.audit.events() if e.action.startswith("request.")]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".taken")]
