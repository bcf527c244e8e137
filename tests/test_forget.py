"""handover_vault.forget: crypto-shredding a client, the byte search of the files, and the signed certificate."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from handover_vault import agreement as ag
from handover_vault import forget as fg
from handover_vault.errors import IntegrityError, InvalidInput, NotFound, PolicyRefused
from handover_vault.store import sqlite as sqlite_store


def client_blobs(path: Path, client_id: str) -> dict[str, bytes]:
    """Every stored value that belongs to one client: its wrapped key, ciphertexts and keyed lookups."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[str, bytes] = {}
        row = db.execute(
            "SELECT wrapped_key, envelope, lookup FROM clients WHERE id = ?", (client_id,)
        ).fetchone()
        out["wrapped key"], out["profile"], out["client lookup"] = row[0], row[1], row[2].encode()
        for rid, env, lookup in db.execute(
            "SELECT id, envelope, lookup FROM records WHERE client_id = ?", (client_id,)
        ):
            out[f"record {rid}"] = env
            if lookup:
                out[f"lookup {rid}"] = lookup.encode()
        for rid, ver, env in db.execute(
            "SELECT v.record_id, v.version, v.envelope FROM record_versions v JOIN records r "
            "ON r.id = v.record_id WHERE r.client_id = ?",
            (client_id,),
        ):
            out[f"version {rid}/{ver}"] = env
        for rid, seq, env in db.execute(
            "SELECT c.record_id, c.seq, c.envelope FROM chunks c JOIN records r ON r.id = c.record_id "
            "WHERE r.client_id = ?",
            (client_id,),
        ):
            out[f"chunk {rid}/{seq}"] = env
        return out
    finally:
        db.close()


def vault_bytes(path: Path) -> bytes:
    """The raw bytes of the vault file and its -wal and -shm files (those that exist)."""
    data = b""
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            data += p.read_bytes()
    return data


def found(blobs: dict[str, bytes], raw: bytes) -> list[str]:
    # The whole value, and its first 24 bytes (nonce and start of the ciphertext) on their own.
    return [name for name, blob in blobs.items() if bytes(blob) in raw or bytes(blob)[:24] in raw]


def make_ended(v, tmp_path: Path) -> None:
    """acme (from conftest) with versions, an attachment, an acknowledgement, and an ended agreement."""
    v.docs.edit("acme", "Network overview", body="# LAN\n\nedited once")
    v.creds.rotate("acme", "Firewall admin", "Fw-s3cret-0002")
    blob = tmp_path / "diagram.bin"
    blob.write_bytes(bytes(range(256)) * 2000)  # two chunks
    v.attachments.add_file("acme", blob)
    ag.record_ack(v, "acme", "Jane Doe")
    ag.end_agreement(v, "acme", "2025-01-01", "Retiring")  # ended 2025-01-31, window over 2025-05-01


@pytest.fixture
def other(acme):
    acme.clients.add("beta", name="Beta GmbH", notice_months=3)
    acme.creds.add("beta", label="Beta router", secret="Beta-s3cret", category="firewall")
    return acme


def test_forget_leaves_no_byte_of_the_client_in_any_file(other, vault_path, tmp_path) -> None:
    v = other
    make_ended(v, tmp_path)
    client = v.clients.get("acme")
    blobs = client_blobs(vault_path, client.id)
    assert {k.split(" ")[0] for k in blobs} >= {"wrapped", "profile", "record", "version", "chunk"}
    assert found(blobs, vault_bytes(vault_path)) == list(blobs)  # the search does find them before
    beta = client_blobs(vault_path, v.clients.get("beta").id)
    # Another process with the vault open (idle): SQLite then keeps the -wal file, which still holds
    # every page written earlier. Without the checkpoint and truncation all 20 values stay in it.
    idle = sqlite3.connect(str(vault_path))
    idle.execute("SELECT count(*) FROM clients").fetchone()
    try:
        done = fg.forget_client(v, "acme")
        assert done.purged
        assert found(blobs, vault_bytes(vault_path)) == []
    finally:
        idle.close()
    v.close()
    assert found(blobs, vault_bytes(vault_path)) == []
    assert found(beta, vault_bytes(vault_path)) == list(beta)  # the other client is untouched


def test_a_reader_delays_the_purge_and_says_so(acme, vault_path, monkeypatch) -> None:
    v = acme
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_WAIT_MS", 100)
    ag.end_agreement(v, "acme", "2025-01-01", "Retiring")
    blobs = client_blobs(vault_path, v.clients.get("acme").id)
    reader = sqlite3.connect(str(vault_path), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM records").fetchone()  # holds a snapshot: no full checkpoint
    try:
        assert fg.forget_client(v, "acme").purged is False
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert fg.purge(v) is True
    assert found(blobs, vault_bytes(vault_path)) == []


def test_forget_removes_the_client_from_every_listing(other, vault_path, tmp_path) -> None:
    from handover_vault import open_vault

    v = other
    make_ended(v, tmp_path)
    cid = v.clients.get("acme").id
    client_events = len(v.audit.events(cid))
    done = fg.forget_client(v, "acme")
    assert (done.slug, done.name, done.client_id) == ("acme", "ACME Ltd", cid)
    assert done.counts == {
        "contact": 1,
        "doc": 1,
        "cred": 1,
        "asset": 1,
        "issue": 1,
        "attachment": 1,
        "ack": 1,
        "previous versions": 2,
        "attachment chunks": 2,
        "audit details made unreadable": client_events,
    }
    assert fg.record_total(done.counts) == 7
    with open_vault(vault_path, passphrase="correct horse battery staple") as v2:
        assert [c.slug for c in v2.clients.list()] == ["beta"]
        with pytest.raises(NotFound, match="no client 'acme'"):
            v2.clients.get("acme")
        assert v2.search("acme") == [] and v2.search("fw1") == [] and v2.search("Jane") == []
        assert [h["client"] for h in v2.search("router")] == ["beta"]
        events = [e for e in v2.audit.events() if e.client_id == cid]
        assert all(e.detail is None for e in events[:-1])  # details sealed under the destroyed key
        last = events[-1]
        assert last.action == "client.forget" and last.seq == done.audit_seq
        assert last.detail is not None and last.detail["slug"] == "acme" and last.detail["name"] == "ACME Ltd"
        assert "Fw-s3cret" not in str(last.detail)
        head = v2.audit.verify()
        assert head.seq == done.audit_seq  # the chain still verifies, with the forget entry at its head
        assert v2.creds.reveal("beta", "Beta router").data["secret"] == "Beta-s3cret"


def test_forget_refuses_a_running_agreement(acme) -> None:
    v = acme
    with pytest.raises(PolicyRefused) as err:
        fg.forget_client(v, "acme")
    assert str(err.value) == (
        "acme has an active agreement; only a client whose agreement has ended can be forgotten"
    )
    assert err.value.hints == ("end it first: handover end acme --notice-given DATE --reason TEXT",)
    today = dt.date.today()
    ag.end_agreement(v, "acme", today.isoformat(), "Retiring")
    end = v.clients.get("acme").agreement["effective_end"]
    with pytest.raises(PolicyRefused) as err:
        fg.forget_client(v, "acme")
    assert str(err.value) == (
        f"the agreement with acme runs until {end}; a client can be forgotten only after its agreement has ended"
    )
    assert v.clients.get("acme").name == "ACME Ltd"
    # During the on-hand window (ended, not yet archived) forgetting is allowed.
    later = dt.date.fromisoformat(end) + dt.timedelta(days=1)
    assert fg.preview(v, "acme", today=later)[1] == "ended"
    assert fg.forget_client(v, "acme", today=later).slug == "acme"


def test_forget_fails_closed_when_the_audit_entry_cannot_be_written(acme, tmp_path, monkeypatch) -> None:
    v = acme
    ag.end_agreement(v, "acme", "2025-01-01", "Retiring")

    def broken(*_a, **_k):
        raise IntegrityError("audit log unavailable")

    monkeypatch.setattr(v.audit, "append", broken)
    with pytest.raises(IntegrityError, match="audit log unavailable"):
        fg.forget_client(v, "acme")
    monkeypatch.undo()
    assert v.creds.reveal("acme", "Firewall admin").data["secret"] == "Fw-s3cret-0001"


# --- the certificate -------------------------------------------------------------------------------------


@pytest.fixture
def cert(acme, tmp_path):
    ag.end_agreement(acme, "acme", "2025-01-01", "Retiring")
    done = fg.forget_client(acme, "acme")
    return acme, done, fg.certificate(acme, done.audit_seq, purged=done.purged)


def test_certificate_states_what_was_destroyed_and_verifies(cert) -> None:
    v, done, text = cert
    for expected in (
        "# Certificate of destruction",
        "ACME Ltd (`acme`)",
        v.fingerprint,
        f"number {done.audit_seq}",
        "credentials: 1",
        "documents: 1",
        "Backups of the vault made before this date still hold the data",
        "```handover-signature\n",
        "-----BEGIN PUBLIC KEY-----",
    ):
        assert expected in text, expected
    assert "Fw-s3cret" not in text
    ok = fg.verify_certificate(text.encode(), signer=v.fingerprint)
    assert ok.signer == v.fingerprint and ok.signer_checked
    facts = ok.facts
    assert facts["client"] == {"name": "ACME Ltd", "slug": "acme", "id": done.client_id}
    assert facts["audit"] == {"seq": done.audit_seq, "mac": v.audit.verify().mac.hex()}
    assert facts["counts"]["cred"] == 1 and facts["storage_purged"] is True
    assert fg.verify_certificate(text.replace("\n", "\r\n")).signer == v.fingerprint  # mail-mangled endings


def test_certificate_rejects_tampering_and_other_signers(cert) -> None:
    v, _done, text = cert
    with pytest.raises(IntegrityError, match="signature is not valid"):
        fg.verify_certificate(text.replace("ACME Ltd", "ACME Inc"))
    with pytest.raises(IntegrityError, match="signature is not valid"):
        fg.verify_certificate(text.replace('"cred": 1', '"cred": 0'))
    other = "hv:0000-0000-0000-0000-0000-0000-0000-0000"
    with pytest.raises(IntegrityError) as err:
        fg.verify_certificate(text, signer=other)
    assert str(err.value) == f"the certificate was signed by {v.fingerprint}, not by {other}"
    # A key swapped in must match the fingerprint claimed beside it.
    from handover_vault.keys import crypto

    _priv, pub = crypto.new_signing_key()
    pem = crypto.public_key_pem(v.signing_public).decode()
    swapped = text.replace(pem.strip(), crypto.public_key_pem(pub).decode().strip())
    with pytest.raises(IntegrityError, match="stated signer does not match its public key"):
        fg.verify_certificate(swapped)
    with pytest.raises(InvalidInput, match="no signature block found"):
        fg.verify_certificate(text.split("```handover-signature")[0])
    with pytest.raises(InvalidInput, match="text follows the signature block"):
        fg.verify_certificate(text + "\nappended\n")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        fg.verify_certificate(b"\xff\xfe" + text.encode())


def test_certificate_only_for_forget_entries(cert) -> None:
    v, done, text = cert
    assert (
        fg.certificate(v, done.audit_seq) == text
    )  # written again, byte for byte (Ed25519 is deterministic)
    with pytest.raises(InvalidInput, match=r"audit entry 1 is a vault\.init entry, not client\.forget"):
        fg.certificate(v, 1)
    with pytest.raises(NotFound, match="no audit entry 9999"):
        fg.certificate(v, 9999)
