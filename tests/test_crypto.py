"""vault/keys/crypto.py: the record envelope, the KDF bounds, signing and TOTP.

The envelope is ``version (1) || nonce (12) || AES-256-GCM ciphertext || tag (16)``; every test here
states one property of that layout or of the limits put on Argon2id parameters read from a file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handover_vault.errors import IntegrityError, InvalidInput
from handover_vault.keys import crypto
from handover_vault.keys.crypto import (
    DEFAULT_KDF,
    ENVELOPE_V1,
    MIN_KDF,
    NONCE_SIZE,
    TAG_SIZE,
    DecryptFailed,
    KdfParams,
    Sealer,
)
from tests.conftest import PASSPHRASE, run
from tests.helpers_security import fork_run, one, sql

KEY = bytes(range(32))
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
BOUNDS_MESSAGE = "the key slot's stored KDF parameters are out of bounds; refusing to run the KDF"
FLOOR_MESSAGE = "Argon2id parameters below the floor (19 MiB, 2 iterations) are refused"

SEALER = Sealer(KEY)

# --- the envelope: round trips ---------------------------------------------------------------------


@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=256))
def test_envelope_round_trip_and_layout(plaintext: bytes, aad: bytes) -> None:
    blob = SEALER.seal(plaintext, aad)
    assert blob[0] == ENVELOPE_V1
    assert len(blob) == OVERHEAD + len(plaintext)
    assert SEALER.open(blob, aad) == plaintext
    # The same Sealer (one AESGCM object per key) opens blobs of a fresh one and vice versa.
    assert Sealer(KEY).open(blob, aad) == plaintext


@given(plaintext=st.binary(max_size=512), aad=st.binary(max_size=64), data=st.data())
def test_envelope_any_flipped_bit_is_refused(plaintext: bytes, aad: bytes, data: st.DataObject) -> None:
    blob = bytearray(SEALER.seal(plaintext, aad))
    index = data.draw(st.integers(0, len(blob) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    blob[index] ^= 1 << bit
    with pytest.raises(DecryptFailed):
        SEALER.open(bytes(blob), aad)


@given(plaintext=st.binary(max_size=256), aad=st.binary(max_size=64), other=st.binary(max_size=64))
def test_envelope_is_bound_to_its_associated_data(plaintext: bytes, aad: bytes, other: bytes) -> None:
    blob = SEALER.seal(plaintext, aad)
    if other != aad:
        with pytest.raises(DecryptFailed):
            SEALER.open(blob, other)


@given(plaintext=st.binary(max_size=256), cut=st.integers(min_value=1, max_value=300))
def test_envelope_truncated_or_extended_is_refused(plaintext: bytes, cut: int) -> None:
    blob = SEALER.seal(plaintext, b"aad")
    with pytest.raises(DecryptFailed):
        SEALER.open(blob[: max(0, len(blob) - cut)], b"aad")
    with pytest.raises(DecryptFailed):
        SEALER.open(blob + b"\x00" * cut, b"aad")


def test_envelope_under_another_key_is_refused() -> None:
    blob = SEALER.seal(b"payload", b"aad")
    with pytest.raises(DecryptFailed, match="authentication failed"):
        Sealer(os.urandom(32)).open(blob, b"aad")


def test_nonces_are_fresh_for_every_seal() -> None:
    nonces = {SEALER.seal(b"same plaintext", b"aad")[1 : 1 + NONCE_SIZE] for _ in range(200)}
    assert len(nonces) == 200


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_sealer_needs_a_256_bit_key(size: int) -> None:
    with pytest.raises(ValueError, match="32-byte key"):
        Sealer(b"k" * size)


# --- the envelope: format checks made before the cipher runs ----------------------------------------


@pytest.mark.parametrize("nonce_size", [8, 11, 13, 16, 24, 64])
def test_blob_sealed_with_another_nonce_length_is_refused(nonce_size: int) -> None:
    """AESGCM itself accepts 8-128 byte nonces; our format fixes 12 and must refuse the rest."""
    nonce = os.urandom(nonce_size)
    foreign = bytes([ENVELOPE_V1]) + nonce + AESGCM(KEY).encrypt(nonce, b"planted payload", b"aad")
    with pytest.raises(DecryptFailed):
        SEALER.open(foreign, b"aad")


@pytest.mark.parametrize("version", [0x00, 0x02, 0x7F, 0xFF])
def test_unknown_version_byte_is_refused_before_decryption(
    version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = bytearray(SEALER.seal(b"payload", b"aad"))
    blob[0] = version
    calls: list[bytes] = []
    sealer = Sealer(KEY)
    real = sealer._aead.decrypt

    def spy(nonce: bytes, data: bytes, aad: bytes) -> bytes:
        calls.append(nonce)
        return real(nonce, data, aad)

    monkeypatch.setattr(sealer, "_aead", type("Spy", (), {"decrypt": staticmethod(spy)})())
    with pytest.raises(DecryptFailed, match="malformed envelope"):
        sealer.open(bytes(blob), b"aad")
    assert calls == []  # the version is checked first: the cipher never saw the blob


@pytest.mark.parametrize("length", [0, 1, 12, 13, OVERHEAD - 1])
def test_blob_too_short_for_the_layout_is_refused(length: int) -> None:
    blob = bytes([ENVELOPE_V1]) + os.urandom(max(0, length - 1)) if length else b""
    with pytest.raises(DecryptFailed, match="malformed envelope"):
        SEALER.open(blob, b"aad")


@pytest.mark.parametrize("stored", ["text in a blob column", 12345, 1.5, None], ids=repr)
def test_a_stored_value_that_is_not_bytes_is_a_malformed_envelope(stored: object) -> None:
    """SQLite returns whatever type a column holds; a tampered column must not raise TypeError."""
    with pytest.raises(DecryptFailed, match="malformed envelope"):
        SEALER.open(stored, b"aad")  # type: ignore[arg-type]
    blob = SEALER.seal(b"x", b"aad")
    assert SEALER.open(memoryview(blob), b"aad") == SEALER.open(bytearray(blob), b"aad") == b"x"


def test_empty_plaintext_seals_to_exactly_the_overhead() -> None:
    blob = SEALER.seal(b"", b"")
    assert len(blob) == OVERHEAD
    assert SEALER.open(blob, b"") == b""


# --- sealed records: JSON payloads round-trip through the record layer ------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture
def records_vault(acme):
    return acme


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(st.text(max_size=12), json_values, max_size=6), version=st.integers(1, 10**6))
def test_record_payload_round_trip(records_vault, data: dict, version: int) -> None:
    v = records_vault
    client = v.clients.get("acme")
    blob = v.records.seal(client, "doc", "00000000-0000-4000-8000-000000000001", version, data)
    assert v.records.unseal(client, "doc", "00000000-0000-4000-8000-000000000001", version, blob) == data
    # Any other place (kind, id, version) refuses it.
    for kind, rid, ver in (
        ("cred", "00000000-0000-4000-8000-000000000001", version),
        ("doc", "00000000-0000-4000-8000-000000000002", version),
        ("doc", "00000000-0000-4000-8000-000000000001", version + 1),
    ):
        with pytest.raises(IntegrityError, match=f"^{kind} {rid} \\(version {ver}\\) does not decrypt"):
            v.records.unseal(client, kind, rid, ver, blob)


def test_record_payload_is_json_inside_the_envelope(acme) -> None:
    """Documented in docs/spec.md: the plaintext of a record envelope is its JSON payload."""
    from handover_vault.keys.hierarchy import record_aad

    client = acme.clients.get("acme")
    blob = acme.records.seal(client, "doc", "r1", 3, {"title": "T", "n": 1})
    plain = client.keys.sealer.open(blob, record_aad(acme.vault_id, client.id, "doc", "r1", 3))
    assert json.loads(plain) == {"title": "T", "n": 1}


# --- Argon2id bounds --------------------------------------------------------------------------------


def test_defaults_are_rfc9106_second_option_and_owasp_floor() -> None:
    assert DEFAULT_KDF == KdfParams(memory_kib=65536, iterations=3, lanes=4)
    assert MIN_KDF == KdfParams(memory_kib=19456, iterations=2, lanes=1)
    crypto.check_kdf_for_create(DEFAULT_KDF)
    crypto.check_kdf_for_create(MIN_KDF)


@pytest.mark.parametrize(
    "params",
    [
        KdfParams(19 * 1024 - 1, 2, 1),
        KdfParams(19 * 1024, 1, 1),
        KdfParams(8 * 1024, 3, 1),
        KdfParams(64 * 1024, 3, 0),
    ],
    ids=["memory-below-floor", "one-iteration", "8MiB", "no-lanes"],
)
def test_kdf_below_the_floor_is_refused_at_create(params: KdfParams, vault_path: Path) -> None:
    from handover_vault import init_vault

    with pytest.raises(InvalidInput) as err:
        crypto.check_kdf_for_create(params)
    assert err.value.message == FLOOR_MESSAGE
    with pytest.raises(InvalidInput):
        init_vault(vault_path, PASSPHRASE, kdf=params)
    assert not vault_path.exists()  # refused before any file was made


@pytest.mark.parametrize(
    "params",
    [
        KdfParams(2**40, 3, 4),
        KdfParams(4 * 1024 * 1024 + 1, 3, 4),
        KdfParams(65536, 11, 4),
        KdfParams(65536, 0, 4),
        KdfParams(65536, 3, 0),
        KdfParams(65536, 3, 65),
        KdfParams(7, 3, 1),
        KdfParams(-1, 3, 4),
    ],
    ids=["1PiB", "over-4GiB", "t11", "t0", "p0", "p65", "under-8p", "negative"],
)
def test_absurd_kdf_parameters_are_refused_without_running_argon2(
    params: KdfParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(**_kw: object) -> None:
        raise AssertionError("Argon2id must not run on out-of-bounds parameters")

    monkeypatch.setattr(crypto, "Argon2id", never)
    with pytest.raises(IntegrityError) as err:
        crypto.derive_kek(b"secret", b"s" * 16, params)
    assert err.value.message == BOUNDS_MESSAGE
    assert err.value.hints == ("the vault file may be corrupt or hostile",)


@pytest.mark.parametrize("value", ["lots", "65536", 65536.5, 65536.0, True, None, b"\x00\x00"], ids=repr)
def test_kdf_parameters_of_the_wrong_type_are_refused(value: object) -> None:
    """SQLite stores whatever it is given: a text or float 'memory_kib' must not crash the check."""
    with pytest.raises(IntegrityError, match="out of bounds"):
        crypto.check_kdf_for_open(KdfParams(value, 3, 4))  # type: ignore[arg-type]


def test_vault_with_a_1_pib_slot_is_refused_at_open_before_the_kdf(
    new_vault: tuple, vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handover_vault import open_vault

    new_vault[0].close()
    sql(vault_path, "UPDATE key_slots SET memory_kib = ? WHERE kind = 'passphrase'", (2**40,))
    assert one(vault_path, "SELECT memory_kib FROM key_slots WHERE kind = 'passphrase'") == 2**40

    def never(**_kw: object) -> None:
        raise AssertionError("Argon2id must not run on out-of-bounds parameters")

    monkeypatch.setattr(crypto, "Argon2id", never)
    with pytest.raises(IntegrityError, match="out of bounds"):
        open_vault(vault_path, passphrase=PASSPHRASE)

    # Through the command: a 1 PiB allocation would be a MemoryError or an OOM kill, not exit 4.
    started = time.monotonic()
    done = run(["client", "list"], vault=vault_path)
    assert done.returncode == 4, done.stderr
    assert done.stderr == (f"Error: {BOUNDS_MESSAGE}\nhint: the vault file may be corrupt or hostile\n")
    assert time.monotonic() - started < 10


# --- the real cost ----------------------------------------------------------------------------------


def test_real_default_cost_creates_and_unlocks_a_vault(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one test at RFC 9106's cost (64 MiB, t=3, p=4): no test hook between create and open."""
    from handover_vault import init_vault, open_vault

    monkeypatch.delenv("HANDOVER_KDF")
    v, _code = init_vault(vault_path, PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME Ltd")
    slots = sql(
        vault_path, "SELECT kind, memory_kib, iterations, lanes, length(salt) FROM key_slots ORDER BY kind"
    )
    assert slots == [("passphrase", 65536, 3, 4, 16), ("recovery", 65536, 3, 4, 16)]
    with open_vault(vault_path, passphrase=PASSPHRASE) as again:
        assert again.clients.get("acme").name == "ACME Ltd"
    done = run(["client", "list", "--json"], vault=vault_path, env={"HANDOVER_KDF": "default"})
    assert done.returncode == 0, done.stderr
    assert [c["slug"] for c in json.loads(done.stdout)] == ["acme"]
    wrong = fork_run(["client", "list"], vault=vault_path, passphrase="not " + PASSPHRASE)
    assert wrong.returncode == 3
    assert wrong.stderr.startswith("Error: wrong passphrase\n")


# --- HKDF, signatures, fingerprints, TOTP -----------------------------------------------------------


def test_hkdf_labels_give_independent_keys() -> None:
    from handover_vault.keys import hierarchy as keys

    labels = [
        keys.INFO_AUDIT_MAC,
        keys.INFO_AUDIT_DETAIL,
        keys.INFO_CLIENT_INDEX,
        keys.INFO_RECORD_INDEX,
        keys.INFO_SEARCH_INDEX,
    ]
    derived = {crypto.hkdf(KEY, label) for label in labels}
    assert len(derived) == len(labels)
    assert KEY not in derived
    assert all(len(k) == 32 for k in derived)


def test_signature_verifies_only_the_signed_bytes_under_the_right_key() -> None:
    priv, pub = crypto.new_signing_key()
    sig = crypto.sign(priv, b"manifest")
    assert crypto.verify_signature(pub, sig, b"manifest")
    assert not crypto.verify_signature(pub, sig, b"manifesT")
    assert not crypto.verify_signature(crypto.new_signing_key()[1], sig, b"manifest")
    assert not crypto.verify_signature(pub[:-1], sig, b"manifest")  # malformed key: False, not a crash
    assert crypto.public_key_from_pem(crypto.public_key_pem(pub)) == pub
    with pytest.raises(IntegrityError):
        crypto.public_key_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_fingerprint_format() -> None:
    fp = crypto.fingerprint(bytes(32))
    assert fp.startswith("hv:")
    groups = fp[3:].split("-")
    assert len(groups) == 8 and all(len(g) == 4 and int(g, 16) >= 0 for g in groups)
    assert crypto.fingerprint(bytes(31) + b"\x01") != fp


@pytest.mark.parametrize(
    ("algorithm", "seed", "at", "expected"),
    [
        ("SHA1", b"12345678901234567890", 59, "94287082"),
        ("SHA1", b"12345678901234567890", 1111111109, "07081804"),
        ("SHA256", b"12345678901234567890123456789012", 59, "46119246"),
        ("SHA512", b"1234567890123456789012345678901234567890123456789012345678901234", 59, "90693936"),
        ("SHA1", b"12345678901234567890", 20000000000, "65353130"),
    ],
)
def test_totp_matches_rfc6238_appendix_b(algorithm: str, seed: bytes, at: int, expected: str) -> None:
    assert crypto.totp_now(seed, 8, 30, algorithm, at) == expected
