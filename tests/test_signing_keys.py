"""``handover new-signing-key`` (vault/signing_keys.py), through the installed command, on both engines.

Someone who copied the vault's signing key (a removed team member, whoever learnt the master key
before a rekey) could sign receipts and bundles in the vault's name. After the replacement, what the
old key signed before still verifies; what it signs for a later audit head is refused; the record
of earlier keys is in the state commitment.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import PASSPHRASE, run
from tests.helpers_security import sql
from tests.test_receipts import facts, grant

pytestmark = pytest.mark.engines

FP = re.compile(r"New signing key: (hv:[0-9a-f-]+)")


@pytest.fixture
def vault(acme, vault_target: Path | str) -> Path | str:
    acme.close()
    return vault_target


def _old_private(vault: Path | str) -> bytes:
    """The signing private key as someone who held the master key could unwrap and keep it."""
    from handover_vault import open_vault

    with open_vault(vault, passphrase=PASSPHRASE) as v:
        return v.keys.unwrap_signing_key(bytes(v.meta_value("signing_private") or b""))


def test_a_new_signing_key_keeps_what_the_old_one_signed_and_refuses_what_a_copy_signs_later(
    vault: Path | str, tmp_path: Path
) -> None:
    from handover_vault.forget import sign_certificate
    from handover_vault.keys import crypto
    from handover_vault.requests.receipts import RECEIPT_FORMAT

    before = tmp_path / "before.md"
    grant(vault, before)
    checkpoint = tmp_path / "cp.json"
    assert run(["audit", "checkpoint", "--out", str(checkpoint)], vault).returncode == 0
    old_fp = facts(before)["vault_fingerprint"]
    kept = _old_private(vault)  # the copy

    done = run(["new-signing-key", "--yes"], vault)
    assert done.returncode == 0, done.stderr
    m = FP.search(done.stdout)
    assert m and m.group(1) != old_fp and f"it replaced {old_fp}" in done.stdout
    new_fp = m.group(1)
    verified = run(["verify"], vault)
    assert verified.returncode == 0 and new_fp in verified.stdout, verified.stdout + verified.stderr
    # What the old key signed before the replacement still verifies, as receipt and as checkpoint.
    for pinned in (before, checkpoint):
        ok = run(["audit", "verify", "--checkpoint", str(pinned)], vault)
        assert ok.returncode == 0, ok.stderr
    # From now on the new key signs; the audit log says which replaced which.
    after = tmp_path / "after.md"
    grant(vault, after)
    assert facts(after)["vault_fingerprint"] == new_fp
    listed = json.loads(run(["--json", "audit", "list"], vault).stdout)
    [entry] = [e for e in listed if e["action"] == "vault.signing_key"]
    assert entry["detail"] == {"old": old_fp, "new": new_fp}
    # The kept copy signs a receipt of the later head: it verifies as that key's, but the vault
    # refuses it, naming the entry at which the key was replaced.
    copy = SimpleNamespace(
        sign=lambda data: crypto.sign(kept, data),
        signing_public=crypto.public_from_private(kept),
        fingerprint=old_fp,
    )
    body = after.read_text().split("```handover-signature\n")[0]
    forged = tmp_path / "forged.md"
    forged.write_text(sign_certificate(copy, body, RECEIPT_FORMAT))  # type: ignore[arg-type]
    refused = run(["audit", "verify", "--checkpoint", str(forged)], vault)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert f"signed by {old_fp} for audit entry" in refused.stderr and "replaced at entry" in refused.stderr


def test_the_record_of_earlier_keys_is_in_the_state_commitment(vault: Path | str, tmp_path: Path) -> None:
    before = tmp_path / "before.md"
    grant(vault, before)
    assert run(["new-signing-key", "--yes"], vault).returncode == 0
    assert run(["verify"], vault).returncode == 0
    # Dropped, the receipts the old key signed would no longer verify: the vault says it was altered.
    sql(vault, "DELETE FROM meta WHERE key = 'signing_history'")
    dropped = run(["verify"], vault)
    assert dropped.returncode == 4, dropped.stdout + dropped.stderr


def test_a_vault_rekeyed_after_a_leak_is_told_to_replace_its_signing_key_too(vault: Path | str) -> None:
    done = run(["rekey"], vault)
    assert done.returncode == 0, done.stderr
    assert "handover new-signing-key" in done.stdout + done.stderr
