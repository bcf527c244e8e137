"""The member key file (vault/team/memberkey.py): round trip, exit classes, damage, mode, no clobber."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from handover_vault.errors import AlreadyExists, AuthenticationFailed, IntegrityError
from handover_vault.team import memberkey

from .conftest import PASSPHRASE


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "member.key"


def test_round_trip_and_fingerprint(key_path: Path) -> None:
    key = memberkey.create(key_path, PASSPHRASE)
    loaded = memberkey.load(key_path, PASSPHRASE)
    assert loaded == key
    assert key.public.fingerprint.startswith("hv:") and len(key.public.fingerprint) == 3 + 8 * 4 + 7
    assert PASSPHRASE not in repr(key) and key.identity not in repr(key)


def test_wrong_passphrase_is_exit_3(key_path: Path) -> None:
    memberkey.create(key_path, PASSPHRASE)
    with pytest.raises(AuthenticationFailed) as exc:
        memberkey.load(key_path, "not the passphrase at all")
    assert exc.value.exit_code == 3


def test_file_is_0600_and_never_overwritten(key_path: Path) -> None:
    memberkey.create(key_path, PASSPHRASE)
    assert os.stat(key_path).st_mode & 0o777 == 0o600
    before = key_path.read_bytes()
    with pytest.raises(AlreadyExists):
        memberkey.create(key_path, PASSPHRASE)
    assert key_path.read_bytes() == before


@pytest.mark.parametrize("offset", [0, 9, 40, 120, 300, -40, -1])
def test_tampered_byte_is_integrity_error_naming_the_file(key_path: Path, offset: int) -> None:
    memberkey.create(key_path, PASSPHRASE)
    data = bytearray(key_path.read_bytes())
    data[offset] ^= 0x01
    key_path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as exc:
        memberkey.load(key_path, PASSPHRASE)
    assert str(key_path) in exc.value.message and exc.value.exit_code == 4


def test_swapped_public_key_with_fixed_checksum_does_not_open(key_path: Path, tmp_path: Path) -> None:
    a = memberkey.create(key_path, PASSPHRASE)
    b = memberkey.create(tmp_path / "b.key", PASSPHRASE)
    data = key_path.read_bytes()[:-32].replace(a.public.ed25519, b.public.ed25519)
    key_path.write_bytes(data + hashlib.sha256(data).digest())
    with pytest.raises((IntegrityError, AuthenticationFailed)):
        memberkey.load(key_path, PASSPHRASE)


def test_absurd_kdf_params_refused_before_the_kdf(key_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memberkey.create(key_path, PASSPHRASE)
    body = key_path.read_bytes()[:-32]
    body = body[:-12] + struct.pack(">III", 64 * 1024 * 1024, 3, 4)  # 64 GiB
    key_path.write_bytes(body + hashlib.sha256(body).digest())
    from handover_vault.keys import crypto

    def no_kdf(*_a: object) -> bytes:
        raise AssertionError("the KDF ran")

    monkeypatch.setattr(crypto, "derive_kek", no_kdf)
    with pytest.raises(IntegrityError, match="out of bounds"):
        memberkey.load(key_path, PASSPHRASE)


def test_no_secret_in_the_file_in_clear(key_path: Path) -> None:
    key = memberkey.create(key_path, PASSPHRASE)
    data = key_path.read_bytes()
    assert PASSPHRASE.encode() not in data
    assert key.identity.encode() not in data and key.identity.lower().encode() not in data
    assert key.ed25519_private not in data


def test_default_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOVER_MEMBER_KEY", str(tmp_path / "x.key"))
    assert memberkey.default_path() == tmp_path / "x.key"
    monkeypatch.delenv("HANDOVER_MEMBER_KEY")
    assert memberkey.default_path().name == "member.key"


def test_a_team_key_commitment_holds_only_for_its_key_and_an_endorsed_admin(tmp_path: Path) -> None:
    """vault/team/keycheck.py: the admin's commitment verifies for the key they made, under them;
    another key, another team, a signer who is no admin, a flipped byte or none at all is refused."""
    from handover_vault.team import keycheck

    ann = memberkey.create(tmp_path / "ann", PASSPHRASE)
    eve = memberkey.create(tmp_path / "eve", PASSPHRASE)
    key, other = os.urandom(32), os.urandom(32)
    value = keycheck.sign(ann, "ann-id", "team-1", key)
    admins = {"ann-id": ann.public}
    keycheck.verify(value, "team-1", key, admins)
    assert key not in value and hashlib.sha256(key).digest() not in value  # it says nothing of the key
    forged = keycheck.sign(eve, "ann-id", "team-1", other)  # eve claims to be ann
    flipped = value[:-1] + bytes([value[-1] ^ 1])
    for args in (
        (value, "team-1", other, admins),
        (value, "team-2", key, admins),
        (value, "team-1", key, {"eve-id": eve.public}),
        (forged, "team-1", other, admins),
        (flipped, "team-1", key, admins),
        (None, "team-1", key, admins),
        (b"not a commitment", "team-1", key, admins),
    ):
        with pytest.raises(IntegrityError) as exc:
            keycheck.verify(*args)
        assert exc.value.exit_code == 4
