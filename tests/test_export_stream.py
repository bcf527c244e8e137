"""Export streams attachments once: the attachment's own hash check is the bundle's check for them.

The tar writer does not hash an attachment a second time (``BundleFile.source_checked``), so these
tests make sure a mismatch is still caught by the attachment store and nothing is published.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pyrage import x25519

from vault.agefile import Identity
from vault.bundle_format import verify_sealed_bundle
from vault.errors import IntegrityError
from vault.export import export
from vault.tarsafe import BundleFile, tar_stream


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


def test_attachment_whose_content_no_longer_matches_its_hash_stops_the_export(
    acme, v, tmp_path: Path
) -> None:
    f = tmp_path / "diagram.bin"
    f.write_bytes(b"x" * 700_000)
    rec = v.attachments.add_file("acme", f)
    with v.write("altering the stored hash") as s:
        client = v.clients.get("acme", s)
        v.records.update_in_place(s, client, rec, {**rec.data, "sha256": "0" * 64})
    _ident, public = _identity()
    out = tmp_path / "b.tar.age"
    with pytest.raises(IntegrityError, match="incomplete or altered"):
        export(v, "acme", recipients=[public], out=out, force=True)
    assert not out.exists()
    assert list(tmp_path.glob(".b.tar.age*")) == []


def test_a_file_not_checked_by_its_source_is_still_hashed_by_the_tar_writer() -> None:
    lying = BundleFile("a.txt", 3, "0" * 64, lambda: (b"abc",))
    with pytest.raises(IntegrityError, match="does not match its declared SHA-256"):
        tar_stream("top", [lying]).read()


def test_a_source_checked_file_still_has_its_size_checked() -> None:
    short = BundleFile("a.txt", 4, hashlib.sha256(b"abc").hexdigest(), lambda: (b"abc",), source_checked=True)
    with pytest.raises(IntegrityError, match="has 3 bytes, not the declared 4"):
        tar_stream("top", [short]).read()
