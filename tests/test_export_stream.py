"""Export streams attachments once, and hashes none of them again.

Each chunk authenticates (AES-GCM) under an AAD naming its attachment and position and the count is
authenticated, so the streamed content can only be the one whose SHA-256 is stored
(docs/security.md, "Attachments in the bundle"). These tests attack that argument without the key:
every change to the stored chunks stops the export and nothing is published. A stored digest that
disagrees with the content (only a key holder can write one) is caught by the successor's
verification of the signed manifest.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest
from pyrage import x25519

from handover_vault.bundle.agefile import Identity
from handover_vault.bundle.export import export
from handover_vault.bundle.format import verify_sealed_bundle
from handover_vault.bundle.tarsafe import BundleFile, tar_stream
from handover_vault.errors import IntegrityError


def _identity():
    ident = x25519.Identity.generate()
    return ident, str(ident.to_public())


def test_exported_attachment_verifies_and_round_trips(acme, v, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # 1.2 MiB: several chunks
    f = tmp_path / "switch-config.bin"
    f.write_bytes(data)
    v.attachments.add_file("acme", f)
    ident, public = _identity()
    out = tmp_path / "b.tar.age"
    export(v, "acme", recipients=[public], out=out, force=True)
    verified = verify_sealed_bundle(out, identities=[Identity("x25519", ident)])
    listed = {e.path: e.sha256 for e in verified.files}
    assert listed["attachments/switch-config.bin"] == hashlib.sha256(data).hexdigest()


def _two_attachments(v, tmp_path: Path) -> tuple[str, str]:
    ids = []
    for name, fill in (("a.bin", b"a"), ("b.bin", b"b")):
        f = tmp_path / name
        f.write_bytes(fill * 600_000)  # three chunks each, the same sizes
        ids.append(v.attachments.add_file("acme", f).id)
    return ids[0], ids[1]


def _sql(v, statement: str, params: tuple) -> None:
    with sqlite3.connect(v.path) as db:
        db.execute(statement, params)


TAMPERING = {
    # An attacker with the file but not the key can only move, drop, duplicate or damage rows.
    "chunk swapped with the same chunk of another attachment": lambda v, a, b: [
        _sql(v, "UPDATE chunks SET record_id = 'x' WHERE record_id = ? AND seq = 1", (a,)),
        _sql(v, "UPDATE chunks SET record_id = ? WHERE record_id = ? AND seq = 1", (a, b)),
        _sql(v, "UPDATE chunks SET record_id = ? WHERE record_id = 'x'", (b,)),
    ],
    "chunks reordered": lambda v, a, b: [
        _sql(v, "UPDATE chunks SET seq = -1 WHERE record_id = ? AND seq = 0", (a,)),
        _sql(v, "UPDATE chunks SET seq = 0 WHERE record_id = ? AND seq = 1", (a,)),
        _sql(v, "UPDATE chunks SET seq = 1 WHERE record_id = ? AND seq = -1", (a,)),
    ],
    "last chunk dropped": lambda v, a, b: _sql(v, "DELETE FROM chunks WHERE record_id = ? AND seq = 2", (a,)),
    "first chunk dropped": lambda v, a, b: _sql(
        v, "DELETE FROM chunks WHERE record_id = ? AND seq = 0", (a,)
    ),
    "a chunk of another attachment appended": lambda v, a, b: _sql(
        v,
        "INSERT INTO chunks (record_id, seq, envelope) SELECT ?, 3, envelope FROM chunks "
        "WHERE record_id = ? AND seq = 2",
        (a, b),
    ),
    "one ciphertext byte flipped": lambda v, a, b: _sql(
        v,
        "UPDATE chunks SET envelope = substr(envelope, 1, 40) || x'00' || substr(envelope, 42) "
        "WHERE record_id = ? AND seq = 1",
        (a,),
    ),
}


@pytest.mark.parametrize("attack", list(TAMPERING))
def test_tampered_chunks_stop_the_export_and_nothing_is_published(
    acme, v, tmp_path: Path, attack: str
) -> None:
    a, b = _two_attachments(v, tmp_path)
    TAMPERING[attack](v, a, b)
    _ident, public = _identity()
    out = tmp_path / "b.tar.age"
    with pytest.raises(IntegrityError, match=f"attachment {a}"):
        export(v, "acme", recipients=[public], out=out, force=True)
    assert not out.exists()
    assert list(tmp_path.glob(".b.tar.age*")) == []


def test_a_stored_hash_that_disagrees_with_the_content_fails_the_successors_verification(
    acme, v, tmp_path: Path
) -> None:
    f = tmp_path / "diagram.bin"
    f.write_bytes(b"x" * 700_000)
    rec = v.attachments.add_file("acme", f)
    with v.write("altering the stored hash") as s:  # needs the client key: an owner's bug, not an attack
        client = v.clients.get("acme", s)
        v.records.update_in_place(s, client, rec, {**rec.data, "sha256": "0" * 64})
    ident, public = _identity()
    out = tmp_path / "b.tar.age"
    export(v, "acme", recipients=[public], out=out, force=True)
    with pytest.raises(IntegrityError, match=r"attachments/diagram\.bin does not match its SHA-256"):
        verify_sealed_bundle(out, identities=[Identity("x25519", ident)])


def test_chunks_are_sealed_only_where_an_attachment_is_created() -> None:
    """The export's reliance on chunk AADs holds only while no code re-seals a (record, position)."""
    vault_dir = Path(__file__).resolve().parents[1] / "vault"
    writers = {
        p.name
        for p in vault_dir.glob("*.py")
        if re.search(r"(?<!class )\bChunk\(|chunk_aad\(", p.read_text(encoding="utf-8"))
    }
    assert writers == {"attachments.py", "rekey.py"}
    # A rekey re-seals each chunk's own plaintext, just opened under the old key, at the same
    # position under the new key: the content of a (record, position) still never changes.
    rekey = (vault_dir / "rekey.py").read_text(encoding="utf-8")
    body = rekey[rekey.index("def _rekey_chunks") : rekey.index("def drop_sessions")]
    assert body.count("chunk_aad(") == 1 and body.count(".seal(") == 1
    assert "block = old.keys.sealer.open(blob, aad)" in body and "fresh.keys.sealer.seal(block, aad)" in body
    source = (vault_dir / "attachments.py").read_text(encoding="utf-8")
    assert source.count("Chunk(") == 1 and source.count("sealer.seal(") == 1
    add_stream = source[source.index("def add_stream") : source.index("def add_file")]
    assert "Chunk(" in add_stream and "self.v.records.add(" in add_stream


def test_a_file_not_checked_by_its_source_is_still_hashed_by_the_tar_writer() -> None:
    lying = BundleFile("a.txt", 3, "0" * 64, lambda: (b"abc",))
    with pytest.raises(IntegrityError, match="does not match its declared SHA-256"):
        tar_stream("top", [lying]).read()


def test_a_source_checked_file_still_has_its_size_checked() -> None:
    short = BundleFile("a.txt", 4, hashlib.sha256(b"abc").hexdigest(), lambda: (b"abc",), source_checked=True)
    with pytest.raises(IntegrityError, match="has 3 bytes, not the declared 4"):
        tar_stream("top", [short]).read()
