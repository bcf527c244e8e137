"""The bundle's two-process pipeline: age runs in a forked helper, the tar is made and checked here.

Sealing and opening with keys fork a helper process (``vault.bundle.agefile``); ``bundle verify`` hashes
every member while the decrypted archive is written (``vault.tarsafe.MemberHasher``). These tests
make each side fail in turn, with real processes and real files, and check that the result is
always a clear error, no file left behind, and no helper process left running.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from datetime import date
from pathlib import Path

import pyrage
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handover_vault.bundle import agefile, tarsafe
from handover_vault.bundle import format as bundle_format
from handover_vault.bundle.format import BundleFile
from handover_vault.errors import AuthenticationFailed, IntegrityError, StorageError
from handover_vault.keys import crypto
from tests.helpers_adversarial import fill, tmpfs

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

DAY = date(2026, 11, 26)
TOP = "acme-handover-2026-11-26"


@pytest.fixture(scope="module")
def keys() -> tuple[list[agefile.Identity], str]:
    ident = pyrage.x25519.Identity.generate()
    return agefile.parse_identities(str(ident).encode()), str(ident.to_public())


def no_children_left() -> bool:
    """True when this process has no child process at all (every helper was reaped)."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def files_of(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir())


def sealed(tmp: Path, recipient: str, data: bytes) -> Path:
    out = tmp / "b.age"
    agefile.seal_stream(io.BytesIO(data), out, [recipient])
    return out


# --- Sealing ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["dev-fd", "no-dev-fd"])
def fd_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The helper with pyrage's path-based calls on /dev/fd/N, and its fallback without /dev/fd."""
    if request.param == "no-dev-fd":
        monkeypatch.setattr(agefile, "_fd_paths", lambda *fds: False)
    return str(request.param)


def test_sealed_bytes_round_trip_and_the_reported_hash_is_the_files(tmp_path: Path, keys, fd_paths) -> None:
    ids, recipient = keys
    data = os.urandom(3 << 20)  # several pipe buffers
    parts = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    result = agefile.seal_stream(iter(parts), tmp_path / "b.age", [recipient])
    on_disk = (tmp_path / "b.age").read_bytes()
    assert (result.size, result.sha256) == (len(on_disk), hashlib.sha256(on_disk).hexdigest())
    assert result.plaintext_size == len(data)
    opened = agefile.open_stream(tmp_path / "b.age", tmp_path / "plain", identities=ids)
    assert (tmp_path / "plain").read_bytes() == data and opened.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "b.age").stat().st_mode & 0o777 == 0o600
    assert no_children_left()


def test_a_source_failing_midway_stops_the_helper_and_leaves_nothing(tmp_path: Path, keys) -> None:
    def parts():
        yield b"x" * (4 << 20)  # more than the pipe holds: the helper is busy when we fail
        raise IntegrityError("attachments/a.bin does not match its declared SHA-256")

    with pytest.raises(IntegrityError, match="does not match"):
        agefile.seal_stream(parts(), tmp_path / "b.age", [keys[1]])
    assert files_of(tmp_path) == [] and no_children_left()


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (lambda: (_ for _ in ()).throw(pyrage.EncryptError("boom")), "age encryption failed: boom"),
        (lambda: os._exit(7), "the helper process stopped unexpectedly"),
    ],
    ids=["age-error", "helper-dies"],
)
def test_a_failing_helper_is_a_storage_error_and_leaves_nothing(
    tmp_path: Path, keys, monkeypatch: pytest.MonkeyPatch, failure, message: str
) -> None:
    # The helper is a fork: it runs the patched pyrage of this process.
    monkeypatch.setattr(pyrage, "encrypt_file", lambda *a, **k: failure())
    with pytest.raises(StorageError, match=message):
        agefile.seal_stream(iter([b"y" * (3 << 20)]), tmp_path / "b.age", [keys[1]])
    assert files_of(tmp_path) == [] and no_children_left()


def test_sealing_onto_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path, keys, fd_paths) -> None:
    with tmpfs(tmp_path / "disk", size_kib=2048) as disk:
        fill(disk, leave_kib=512)
        with pytest.raises(StorageError, match="No space left on device"):
            agefile.seal_stream(iter([os.urandom(2 << 20)]), disk / "b.age", [keys[1]])
        assert files_of(disk) == ["filler"] and no_children_left()


# --- Opening ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error", "message"),
    [
        (pyrage.DecryptError("No matching keys found"), AuthenticationFailed, "none of the given identities"),
        (pyrage.DecryptError("Header is invalid"), IntegrityError, "age header is invalid"),
        (OSError("chunk 3 failed"), IntegrityError, "payload is truncated or was modified"),
        (SystemExit(3), StorageError, "the helper process stopped unexpectedly"),
    ],
)
def test_helper_failures_while_opening_map_to_the_same_errors_as_before(
    tmp_path: Path, keys, monkeypatch: pytest.MonkeyPatch, failure: BaseException, error, message: str
) -> None:
    ids, recipient = keys
    out = sealed(tmp_path, recipient, os.urandom(2 << 20))

    def fail(*_a: object, **_k: object) -> None:
        raise failure

    monkeypatch.setattr(pyrage, "decrypt_file", fail)
    with pytest.raises(error, match=message):
        agefile.open_stream(out, tmp_path / "plain", identities=ids)
    assert files_of(tmp_path) == ["b.age"] and no_children_left()


def test_a_truncated_payload_keeps_nothing_even_though_chunks_verified(
    tmp_path: Path, keys, fd_paths
) -> None:
    ids, recipient = keys
    out = sealed(tmp_path, recipient, os.urandom(3 << 20))
    out.write_bytes(out.read_bytes()[: 2 << 20])
    with pytest.raises(IntegrityError, match="truncated or was modified"):
        agefile.open_stream(out, tmp_path / "plain", identities=ids)
    seen: list[int] = []
    spool = io.BytesIO()
    with pytest.raises(IntegrityError):
        agefile.decrypt_to(out, spool, identities=ids, observe=lambda b: seen.append(len(b)))
    assert sum(seen) == len(spool.getvalue()) > 0  # what the observer saw is exactly what was written
    assert files_of(tmp_path) == ["b.age"] and no_children_left()


def test_a_full_disk_while_opening_is_a_storage_error(tmp_path: Path, keys, fd_paths) -> None:
    ids, recipient = keys
    out = sealed(tmp_path, recipient, os.urandom(2 << 20))
    with tmpfs(tmp_path / "disk", size_kib=2048) as disk:
        fill(disk, leave_kib=512)
        with pytest.raises(StorageError, match="No space left on device"):
            agefile.open_stream(out, disk / "plain", identities=ids)
        assert files_of(disk) == ["filler"] and no_children_left()


# --- Member digests taken while the archive is written ---------------------------------------------------

names = st.text(st.sampled_from("az09-_.éÅßжλ日本"), min_size=1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6),
    long_name=names.map(lambda n: (n * 80)[:80]),  # non-ASCII or long: a pax `path` record
    cuts=st.lists(st.integers(1, 4096), min_size=1, max_size=30),
)
def test_member_hasher_agrees_with_tarfile_however_the_stream_is_cut(
    sizes: list[int], long_name: str, cuts: list[int]
) -> None:
    files = [BundleFile.from_bytes(f"f{n}.bin", os.urandom(size)) for n, size in enumerate(sizes)]
    files.append(BundleFile.from_bytes(f"docs/{long_name}", b"pax path record"))  # pax header first
    archive = tarsafe.tar_stream(TOP, files, mtime=0).read()
    hasher = tarsafe.MemberHasher()
    pos, i = 0, 0
    while pos < len(archive):
        step = cuts[i % len(cuts)]
        hasher.feed(memoryview(archive)[pos : pos + step])
        pos, i = pos + step, i + 1
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        regular = [m for m in tar.getmembers() if m.isreg()]
        assert len(regular) == len(files)
        for m in regular:
            data = archive[m.offset_data : m.offset_data + m.size]
            assert hasher.digest_of(m.offset_data, m.size) == hashlib.sha256(data).hexdigest()
            assert hasher.digest_of(m.offset_data + 1, m.size) is None


def _bundle(signer: tuple[bytes, bytes]) -> bytes:
    priv, pub = signer
    files = [BundleFile.from_bytes("HANDOVER.md", b"# Acme\n"), BundleFile.from_bytes("a.bin", b"A" * 5000)]
    meta = {
        "client": "acme",
        "exported_at": "2026-11-26T09:30:00Z",
        "vault_fingerprint": crypto.fingerprint(pub),
    }
    bundle = bundle_format.assemble_bundle(
        TOP, files, meta, sign=lambda m: crypto.sign(priv, m), signer_public_key=pub
    )
    return tarsafe.tar_stream(TOP, bundle, mtime=bundle_format.export_mtime(DAY)).read()


def test_verify_uses_digests_only_for_what_tarfile_locates_and_rehashes_the_rest() -> None:
    archive = _bundle(crypto.new_signing_key())
    altered = archive.replace(b"A" * 5000, b"B" * 5000)
    for fed, expect_ok in ((archive, True), (b"", True), (altered, False)):
        hashed = tarsafe.MemberHasher()
        hashed.feed(memoryview(fed))  # b"": a hasher that followed nothing, every member is re-read
        with tarsafe.open_checked(io.BytesIO(fed or archive)) as checked:
            if expect_ok:
                assert bundle_format._verify_checked(checked, None, hashed).client == "acme"
            else:
                with pytest.raises(IntegrityError, match=r"a\.bin does not match its SHA-256"):
                    bundle_format._verify_checked(checked, None, hashed)


def test_a_verified_sealed_bundle_was_hashed_in_the_decrypting_pass(
    tmp_path: Path, keys, monkeypatch
) -> None:
    ids, recipient = keys
    priv, pub = crypto.new_signing_key()
    files = [BundleFile.from_bytes("a.bin", os.urandom(3 << 20))]
    meta = {"client": "acme", "exported_at": "2026-11-26T09:30:00Z"}
    bundle_format.seal_bundle(
        tmp_path / "b.tar.age",
        TOP,
        files,
        meta,
        sign=lambda m: crypto.sign(priv, m),
        signer_public_key=pub,
        recipients=[recipient],
    )
    reread: list[str] = []
    real = tarsafe.CheckedTar.iter_member
    monkeypatch.setattr(
        tarsafe.CheckedTar, "iter_member", lambda self, rel: reread.append(rel) or real(self, rel)
    )
    verified = bundle_format.verify_sealed_bundle(tmp_path / "b.tar.age", identities=ids)
    assert {e.path for e in verified.files} == {"a.bin", "SHA256SUMS", "SHA256SUMS.sig"}
    # Only the five small format files are read back; no content file is hashed a second time.
    assert sorted(reread) == ["SHA256SUMS", "SHA256SUMS.sig", "manifest.json", "manifest.sig", "signer.pub"]
    assert no_children_left()
