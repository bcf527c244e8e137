"""The C2SP age test vectors, run through our decrypt path (vault.agefile.open_stream).

Every vector is read from tests/vectors/age/testdata (copied into the project: see its README). A ``success`` vector must decrypt
to the plaintext whose SHA-256 the vector names; every failure vector must fail with the error class
its ``expect`` implies and leave nothing behind in the output folder. Where our stack cannot do what
the spec says, the vector is listed in EXPECTED_DIFFERENCES with the reason and the outcome we pin
instead: that list is the whole of our deviation from the spec, and a vector that starts passing
fails the test until the entry is removed.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from handover_vault.bundle import agefile
from handover_vault.errors import AuthenticationFailed, IntegrityError, InvalidInput, VaultError

VECTORS = Path(__file__).resolve().parent / "vectors" / "age" / "testdata"

# vector name -> why our outcome differs from the spec's. Each of these must fail with InvalidInput and
# leave nothing behind: we only ever deviate by refusing.
_HYBRID = (
    "post-quantum: pyrage 1.4 has no ML-KEM-768+X25519 identity type, so the AGE-SECRET-KEY-PQ-1 "
    "identity is refused before the file is read; no outcome of the file itself is tested"
)
EXPECTED_DIFFERENCES: dict[str, str] = {
    "armor_whitespace_outside": (
        "the spec allows whitespace before the armor's BEGIN line; rage refuses it and so does our "
        "header check, which recognises armor only at byte 0 (the file is 'not age-encrypted')"
    ),
    **dict.fromkeys(
        [
            "armor_hybrid",
            "hybrid",
            "hybrid_and_x25519",
            "hybrid_bad_tag",
            "hybrid_currupted_enc_mlkem",
            "hybrid_currupted_enc_x25519",
            "hybrid_extra_argument",
            "hybrid_grease",
            "hybrid_identity",
            "hybrid_long_file_key",
            "hybrid_long_share",
            "hybrid_low_order",
            "hybrid_multiple_recipients",
            "hybrid_no_match",
            "hybrid_not_canonical_body",
            "hybrid_not_canonical_enc",
            "hybrid_short_share",
            "hybrid_uppercase",
            "hybrid_x25519_arg",
        ],
        _HYBRID,
    ),
}

# Cases where pyrage alone accepts what the spec rejects; our header check must catch them. Listed
# so a reader sees why the pre-check exists (test_pre_check_catches_what_pyrage_accepts).
PYRAGE_ACCEPTS = {
    "scrypt_work_factor_23": "pyrage has no work-factor cap (would need 8 GiB and minutes)",
    "stanza_missing_body": "pyrage accepts a stanza without its final short body line",
    "stanza_missing_final_line": "pyrage accepts a body whose last line is a full 64 columns",
}


@dataclass(frozen=True)
class Vector:
    name: str
    expect: str
    payload: str | None
    identities: tuple[str, ...]
    passphrases: tuple[str, ...]
    body: bytes


def load(path: Path) -> Vector:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    meta: dict[str, list[str]] = {}
    for line in head.decode("utf-8").splitlines():
        key, _, value = line.partition(": ")
        meta.setdefault(key, []).append(value)
    if meta.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return Vector(
        name=path.name,
        expect=meta["expect"][0],
        payload=meta.get("payload", [None])[0],
        identities=tuple(meta.get("identity", [])),
        passphrases=tuple(meta.get("passphrase", [])),
        body=body,
    )


ALL = sorted(p.name for p in VECTORS.iterdir()) if VECTORS.is_dir() else []
# What each spec outcome must become in our error vocabulary. A header or armor failure is
# IntegrityError, or InvalidInput when the damage is in the very first bytes ("not an age file").
EXPECTED_ERRORS: dict[str, tuple[type[VaultError], ...]] = {
    "no match": (AuthenticationFailed,),
    "HMAC failure": (IntegrityError,),
    "header failure": (IntegrityError, InvalidInput),
    "armor failure": (IntegrityError, InvalidInput),
    "payload failure": (IntegrityError,),
}


def test_the_vectors_are_there() -> None:
    assert len(ALL) == 143, f"expected the 143 C2SP vectors in {VECTORS}"


def open_vector(v: Vector, tmp_path: Path) -> agefile.OpenResult:
    src = tmp_path / "in.age"
    src.write_bytes(v.body)
    if v.identities:
        identities = agefile.parse_identities("\n".join(v.identities).encode())
        return agefile.open_stream(src, tmp_path / "out" / "plain", identities=identities)
    if v.passphrases:
        return agefile.open_stream(src, tmp_path / "out" / "plain", passphrase=v.passphrases[0])
    # A few header vectors carry no credentials; any identity will do, the header fails first.
    stranger = agefile.parse_identities(
        b"AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"
    )
    return agefile.open_stream(src, tmp_path / "out" / "plain", identities=stranger)


@pytest.mark.parametrize("name", ALL)
def test_vector(name: str, tmp_path: Path) -> None:
    v = load(VECTORS / name)
    (tmp_path / "out").mkdir()
    if name in EXPECTED_DIFFERENCES:
        with pytest.raises(InvalidInput):
            open_vector(v, tmp_path)
        assert list((tmp_path / "out").iterdir()) == []
        return
    if v.expect == "success":
        result = open_vector(v, tmp_path)
        assert result.sha256 == v.payload
        assert (tmp_path / "out" / "plain").stat().st_mode & 0o777 == 0o600
        return
    with pytest.raises(EXPECTED_ERRORS[v.expect]):
        open_vector(v, tmp_path)
    # No partial plaintext, no temp file: the folder is as empty as before.
    assert list((tmp_path / "out").iterdir()) == []


def test_expected_differences_are_real_vectors() -> None:
    assert set(EXPECTED_DIFFERENCES) <= set(ALL)
    assert set(PYRAGE_ACCEPTS) <= set(ALL)
    assert not set(EXPECTED_DIFFERENCES) & set(PYRAGE_ACCEPTS)


HYBRID_SUCCESS = [
    n for n in sorted(EXPECTED_DIFFERENCES) if "hybrid" in n and load(VECTORS / n).expect == "success"
]


@pytest.mark.parametrize("name", HYBRID_SUCCESS)
def test_post_quantum_headers_pass_our_pre_check_when_the_spec_says_success(name: str) -> None:
    # Our header parser must not be what stands in the way once pyrage supports ML-KEM identities.
    v = load(VECTORS / name)
    header = agefile.read_header(io.BytesIO(v.body))
    assert any(s.type == "mlkem768x25519" for s in header.stanzas)


@pytest.mark.parametrize("name", sorted(PYRAGE_ACCEPTS))
def test_pre_check_catches_what_pyrage_accepts(name: str) -> None:
    v = load(VECTORS / name)
    assert v.expect == "header failure"
    with pytest.raises(IntegrityError):
        agefile.read_header(io.BytesIO(v.body))
