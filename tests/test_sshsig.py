"""OpenSSH signatures (vault/keys/sshsig.py) against the real ``ssh-keygen -Y`` and ``ssh-keygen -lf``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from handover_vault.errors import IntegrityError
from handover_vault.keys import crypto, sshsig
from tests.conftest import need

MESSAGE = b"0" * 64 + b"  HANDOVER.md\n" + "caf\u00e9  docs/01-\u00e9.md\n".encode()


@pytest.fixture
def key() -> tuple[bytes, bytes]:
    return crypto.new_signing_key()


def _sign(key: tuple[bytes, bytes], message: bytes = MESSAGE, namespace: str = "handover-bundle") -> str:
    priv, pub = key
    return sshsig.sign(message, lambda data: crypto.sign(priv, data), pub, namespace)


def _keygen(tmp: Path, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([need("ssh-keygen"), "-Y", *args], cwd=tmp, input=stdin, capture_output=True)


def _verify(tmp: Path, pub: bytes, sig: str, message: bytes, namespace: str = "handover-bundle"):
    (tmp / "allowed_signers").write_text(sshsig.allowed_signers_line(pub) + "\n")
    (tmp / "SHA256SUMS.sig").write_text(sig)
    verify = ["verify", "-f", "allowed_signers", "-I", "handover", "-n", namespace, "-s", "SHA256SUMS.sig"]
    return _keygen(tmp, *verify, stdin=message)


def _check_novalidate(tmp: Path, sig: str, message: bytes, namespace: str = "handover-bundle"):
    (tmp / "SHA256SUMS.sig").write_text(sig)
    return _keygen(tmp, "check-novalidate", "-n", namespace, "-s", "SHA256SUMS.sig", stdin=message)


def test_the_armor_has_the_ssh_keygen_shape(key) -> None:
    sig = _sign(key)
    lines = sig.splitlines()
    assert lines[0] == "-----BEGIN SSH SIGNATURE-----" and lines[-1] == "-----END SSH SIGNATURE-----"
    assert all(len(line) <= 70 for line in lines[1:-1]) and sig.endswith("\n")
    # Ed25519 is deterministic: the same message and key give the same bytes (reproducible bundles).
    assert _sign(key) == sig


@pytest.mark.interop
def test_ssh_keygen_verifies_our_signature(key, tmp_path: Path) -> None:
    done = _verify(tmp_path, key[1], _sign(key), MESSAGE)
    assert done.returncode == 0, done.stderr
    assert b'Good "handover-bundle" signature for handover with ED25519 key SHA256:' in done.stdout
    nv = _check_novalidate(tmp_path, _sign(key), MESSAGE)
    assert nv.returncode == 0, nv.stderr


@pytest.mark.interop
def test_ssh_keygen_refuses_a_wrong_namespace_a_flipped_byte_and_another_key(key, tmp_path: Path) -> None:
    sig = _sign(key)
    assert _verify(tmp_path, key[1], sig, MESSAGE, namespace="file").returncode != 0
    assert _check_novalidate(tmp_path, sig, MESSAGE, namespace="file").returncode != 0
    signed_elsewhere = _sign(key, namespace="file")
    assert _verify(tmp_path, key[1], signed_elsewhere, MESSAGE).returncode != 0
    flipped = bytes([MESSAGE[0] ^ 1]) + MESSAGE[1:]
    assert _verify(tmp_path, key[1], sig, flipped).returncode != 0
    assert _check_novalidate(tmp_path, sig, flipped).returncode != 0
    assert _verify(tmp_path, key[1], sig, MESSAGE[:-1]).returncode != 0
    other = crypto.new_signing_key()
    assert _verify(tmp_path, other[1], sig, MESSAGE).returncode != 0
    # A flipped bit inside the signature value itself.
    body = sig.splitlines()
    middle = body[3]
    body[3] = middle[:10] + ("A" if middle[10] != "A" else "B") + middle[11:]
    assert _verify(tmp_path, key[1], "\n".join(body) + "\n", MESSAGE).returncode != 0


@pytest.mark.interop
def test_our_verifier_accepts_what_ssh_keygen_signs_and_refuses_the_same_tampering(
    key, tmp_path: Path
) -> None:
    priv, pub = key
    pem = Ed25519PrivateKey.from_private_bytes(priv).private_bytes(
        Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()
    )
    (tmp_path / "id").write_bytes(pem)
    (tmp_path / "id").chmod(0o600)
    (tmp_path / "msg").write_bytes(MESSAGE)
    subprocess.run(
        [need("ssh-keygen"), "-Y", "sign", "-f", "id", "-n", "handover-bundle", "msg"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    theirs = (tmp_path / "msg.sig").read_bytes()
    sshsig.verify(theirs, MESSAGE, pub)
    assert theirs.decode() == _sign(key), "byte-identical to ssh-keygen's own signature"
    with pytest.raises(IntegrityError, match="not a 'file' signature"):
        sshsig.verify(theirs, MESSAGE, pub, namespace="file")
    with pytest.raises(IntegrityError, match="not a valid signature"):
        sshsig.verify(theirs, MESSAGE + b"x", pub)
    with pytest.raises(IntegrityError, match="another key"):
        sshsig.verify(theirs, MESSAGE, crypto.new_signing_key()[1])
    with pytest.raises(IntegrityError, match="well-formed"):
        sshsig.verify(theirs.replace(b"-----END", b"-----NOT"), MESSAGE, pub)


@pytest.mark.interop
def test_the_fingerprint_is_the_one_ssh_keygen_prints(key, tmp_path: Path) -> None:
    line = sshsig.public_key_line(key[1])
    assert line.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI") and line.endswith(" handover-vault")
    (tmp_path / "k.pub").write_text(line + "\n")
    done = subprocess.run([need("ssh-keygen"), "-lf", "k.pub"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == sshsig.ssh_fingerprint(key[1])
    assert done.stdout.split()[1].startswith("SHA256:")


def test_bundle_verify_refuses_a_sums_signature_in_another_namespace(key, monkeypatch) -> None:
    """The manifest covers SHA256SUMS.sig's bytes, so only the signer could make a wrong one; even
    then ``bundle verify`` refuses what ``ssh-keygen -Y verify -n handover-bundle`` would."""
    import io

    from handover_vault.bundle import format as bundle_format
    from handover_vault.bundle import tarsafe
    from handover_vault.bundle.tarsafe import BundleFile

    priv, pub = key
    real = sshsig.sign
    monkeypatch.setattr(bundle_format.sshsig, "sign", lambda m, s, p: real(m, s, p, "file"))
    files = [BundleFile.from_bytes("HANDOVER.md", b"# Acme\n")]
    meta = {"client": "acme", "exported_at": "2026-11-26T09:30:00Z"}
    root = "acme-handover-2026-11-26"
    bundle = bundle_format.assemble_bundle(
        root, files, meta, sign=lambda m: crypto.sign(priv, m), signer_public_key=pub
    )
    tar = tarsafe.tar_stream(root, bundle, mtime=0).read()
    with pytest.raises(IntegrityError, match="not a 'handover-bundle' signature"):
        bundle_format.verify_bundle_tar(io.BytesIO(tar))
