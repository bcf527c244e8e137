"""`forget` and the copies schema upgrades leave next to the vault (`VAULT.pre-NNNN.bak`).

The review: `forget` neither mentioned nor removed them, while its certificate spoke of "the
vault's files". Each such copy is the whole vault as it was, the client included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handover_vault import agreement as ag
from handover_vault import forget as fg
from handover_vault.store.engine import SCHEMA_HEAD
from handover_vault.store.sqlite import online_backup
from tests.conftest import run
from tests.test_forget import client_blobs, found


@pytest.fixture
def ended_with_copies(acme, vault_path: Path) -> tuple[Path, list[Path], dict[str, bytes]]:
    ag.end_agreement(acme, "acme", "2025-01-01", "Retiring")
    blobs = client_blobs(vault_path, acme.clients.get("acme").id)
    acme.close()
    # What upgrade_older() makes before each upgrade (same function, same names).
    copies = [
        vault_path.with_name(f"{vault_path.name}.pre-{SCHEMA_HEAD}.bak"),
        vault_path.with_name(f"{vault_path.name}.pre-0003.bak"),
    ]
    for c in copies:
        online_backup(vault_path, c)
        assert found(blobs, c.read_bytes()) == list(blobs)  # each copy holds the client
    (vault_path.parent / "unrelated.pre-0004.bak").write_bytes(b"not ours")
    return vault_path, copies, blobs


def test_forget_yes_deletes_the_upgrade_copies_and_the_certificate_says_so(
    ended_with_copies, tmp_path: Path
) -> None:
    vault, copies, _ = ended_with_copies
    cert = tmp_path / "cert.md"
    done = run(["forget", "acme", "--yes", "--certificate", str(cert)], vault)
    assert done.returncode == 0, done.stderr
    assert [c.exists() for c in copies] == [False, False]
    assert (vault.parent / "unrelated.pre-0004.bak").exists()  # another vault's copy is left alone
    assert "Deleted the copies schema upgrades made:" in done.stdout
    assert "still holds this client's data" not in done.stderr
    facts = fg.verify_certificate(cert.read_bytes()).facts
    assert facts["upgrade_backups"] == {
        "deleted": sorted(c.name for c in copies),
        "still_holding_the_client": [],
    }
    text = cert.read_text()
    assert "were deleted as files after this destruction" in text
    assert "vault file or its write-ahead log" in text and "the vault's files" not in text


def test_forget_keep_backups_names_every_file_that_still_holds_the_client(
    ended_with_copies, tmp_path: Path
) -> None:
    vault, copies, blobs = ended_with_copies
    cert = tmp_path / "cert.md"
    done = run(["forget", "acme", "--yes", "--keep-backups", "--certificate", str(cert)], vault)
    assert done.returncode == 0, done.stderr
    for c in copies:
        assert c.exists() and found(blobs, c.read_bytes()) == list(blobs)
        assert f"note: {c} (made by a schema upgrade) still holds this client's data." in done.stderr
    facts = fg.verify_certificate(cert.read_bytes()).facts
    assert facts["upgrade_backups"] == {
        "deleted": [],
        "still_holding_the_client": sorted(c.name for c in copies),
    }
    assert "Copies this tool made before schema upgrades still hold the data" in cert.read_text()
    # Deleted later by hand: a certificate issued again then says so (checked on disk, never assumed).
    for c in copies:
        c.unlink()
    seq = facts["audit"]["seq"]
    again = run(["certificate", "issue", str(seq), "--out", str(tmp_path / "again.md")], vault)
    assert again.returncode == 0, again.stderr
    assert fg.verify_certificate((tmp_path / "again.md").read_bytes()).facts["upgrade_backups"][
        "deleted"
    ] == sorted(c.name for c in copies)
