"""The sealed handover bundle: age layer, deterministic tar, signed manifest, verification, extraction.

Real files throughout; the interop tests drive the real ``age``, ``ssh-keygen``, ``tar``, ``sha256sum``
and ``openssl`` binaries (``need`` skips them only where a tool is absent and never in CI).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyrage
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handover_vault.bundle import agefile, tarsafe
from handover_vault.bundle import format as bundle_format
from handover_vault.bundle.format import BundleFile, TarLimits
from handover_vault.errors import (
    AlreadyExists,
    AuthenticationFailed,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
)
from handover_vault.keys import crypto, sshsig
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 26)
TOP = "acme-handover-2026-11-26"


# --- Fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer() -> tuple[bytes, bytes]:
    return crypto.new_signing_key()


@pytest.fixture(scope="module")
def x25519() -> tuple[str, str]:
    """(identity file text, recipient)."""
    ident = pyrage.x25519.Identity.generate()
    return f"# test key\n{ident}\n", str(ident.to_public())


@pytest.fixture(scope="module")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need("ssh-keygen")
    d = tmp_path_factory.mktemp("ssh")
    for kind, extra in (("ed25519", []), ("rsa", ["-b", "2048"])):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", "t@h", "-f", str(d / kind)], check=True
        )
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-f", str(d / "locked")], check=True)
    return {"ed25519": d / "ed25519", "rsa": d / "rsa", "locked": d / "locked"}


def content_files() -> list[BundleFile]:
    return [
        BundleFile.from_bytes("HANDOVER.md", b"# Acme\n\nRotate everything.\n"),
        BundleFile.from_bytes("credentials.csv", b"label,username,secret\nfw,admin,hunter2\n"),
        BundleFile.from_bytes("docs/01-network.md", "# Réseau\n".encode()),
        BundleFile.from_bytes("attachments/diagram.bin", bytes(range(256)) * 9),
    ]


def meta(pub: bytes) -> dict[str, str]:
    return {
        "client": "acme",
        "exported_at": "2026-11-26T09:30:00Z",
        "vault_fingerprint": crypto.fingerprint(pub),
    }


def bundle_tar(signer: tuple[bytes, bytes], files: list[BundleFile] | None = None) -> bytes:
    priv, pub = signer
    files = content_files() if files is None else files
    sign = lambda m: crypto.sign(priv, m)  # noqa: E731
    assembled = bundle_format.assemble_bundle(TOP, files, meta(pub), sign=sign, signer_public_key=pub)
    return tarsafe.tar_stream(TOP, assembled, mtime=bundle_format.export_mtime(DAY)).read()


def rebuild(
    tar_bytes: bytes,
    extra: list[tuple[tarfile.TarInfo, bytes | None]] = (),  # type: ignore[assignment]
    drop: set[str] = frozenset(),  # type: ignore[assignment]
    replace: dict[str, bytes] | None = None,
    fmt: int = tarfile.PAX_FORMAT,
) -> bytes:
    """A copy of an archive with members dropped, replaced or added (hostile archives)."""
    replace = replace or {}
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(tar_bytes)) as src,
        tarfile.open(fileobj=out, mode="w", format=fmt) as dst,
    ):
        for m in src.getmembers():
            if m.name in drop:
                continue
            data = replace.get(m.name, src.extractfile(m).read() if m.isreg() else None)  # type: ignore[union-attr]
            if data is not None:
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
        for info, data in extra:
            if data is not None:
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def snapshot(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def seal_bytes(data: bytes, out: Path, recipient: str, **kw: object) -> agefile.SealResult:
    return agefile.seal_stream(io.BytesIO(data), out, [recipient], **kw)  # type: ignore[arg-type]


# --- Recipients and identities -----------------------------------------------------------------------


def test_age_recipient_is_normalised_and_fingerprinted(x25519: tuple[str, str]) -> None:
    _, recipient = x25519
    parsed = agefile.parse_recipient(f"  {recipient.upper()}\n")
    assert parsed.kind == "x25519" and parsed.text == recipient
    digest = hashlib.sha256(recipient.encode()).hexdigest()[:16]
    assert parsed.fingerprint == agefile.recipient_fingerprint(recipient) == f"age:sha256:{digest}"


@pytest.mark.interop
def test_ssh_recipients_drop_the_comment_and_match_ssh_keygen_fingerprints(ssh_keys: dict[str, Path]) -> None:
    for kind in ("ed25519", "rsa"):
        line = ssh_keys[kind].with_suffix(".pub").read_text()
        parsed = agefile.parse_recipient(line)
        assert parsed.kind == f"ssh-{kind}" and parsed.text == " ".join(line.split()[:2])
        listed = subprocess.run(
            ["ssh-keygen", "-lf", str(ssh_keys[kind].with_suffix(".pub"))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[1]
        assert parsed.fingerprint == f"ssh-{kind}:{listed}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the recipient is empty"),
        (
            "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
            "the age recipient 'age1qqqqqqqq…' is malformed",
        ),
        ("age1yubikey1qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjklzx", "is malformed"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJunk!!", "is not valid base64"),
        ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==", "is malformed or unsupported"),
        ("ssh-ed25519", "has no key data"),
        ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI", "unsupported recipient 'ecdsa-sha2-n…'"),
        ("age1abc\nage1def", "is not a single-line public key"),
    ],
)
def test_malformed_recipients_are_refused_with_a_short_echo(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        agefile.parse_recipient(text)
    assert message in str(err.value)
    assert len(str(err.value)) < 120


def test_a_private_key_given_as_recipient_is_refused_without_echoing_it(x25519: tuple[str, str]) -> None:
    secret = x25519[0].splitlines()[1]
    for text in (secret, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"):
        with pytest.raises(InvalidInput) as err:
            agefile.parse_recipient(text)
        assert "private key" in str(err.value)
        assert secret[15:] not in str(err.value) and "b3Blbn" not in str(err.value)


@pytest.mark.interop
def test_age_keygen_identity_file_with_comments_is_read(tmp_path: Path) -> None:
    need("age-keygen")
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    identities = agefile.load_identity_file(key)
    assert [i.kind for i in identities] == ["x25519"]
    assert "AGE-SECRET-KEY" not in repr(identities) and "AGE-SECRET-KEY" not in str(identities)


@pytest.mark.interop
def test_ssh_identities_unencrypted_only(ssh_keys: dict[str, Path]) -> None:
    assert [i.kind for i in agefile.load_identity_file(ssh_keys["ed25519"])] == ["ssh"]
    assert [i.kind for i in agefile.load_identity_file(ssh_keys["rsa"])] == ["ssh"]
    with pytest.raises(InvalidInput, match="passphrase-protected SSH key"):
        agefile.load_identity_file(ssh_keys["locked"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"# only a comment\n\n", "contains no identity"),
        (b"# c\nAGE-SECRET-KEY-1QQQQQQQQQQQQQQQ\n", "line 2: malformed age identity"),
        (b"AGE-SECRET-KEY-PQ-1ABCDEF\n", "line 1: post-quantum and plugin identities are not supported"),
        (b"AGE-PLUGIN-YUBIKEY-1ABC\n", "line 1: post-quantum and plugin identities are not supported"),
        (b"age1notasecret\n", "line 1: not an age identity"),
        (b"\xff\xfe", "is not a text file"),
        (
            b"-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n",
            "not a supported SSH",
        ),
    ],
)
def test_bad_identity_files_say_where_never_what(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        agefile.parse_identities(data)
    assert message in str(err.value)
    assert "QQQQQQQQ" not in str(err.value) and "ABCDEF" not in str(err.value)


def test_missing_identity_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        agefile.load_identity_file(tmp_path / "nope.txt")


# --- Sealing and opening -------------------------------------------------------------------------------


@pytest.mark.interop
def test_round_trip_to_x25519_and_ssh_recipients(
    tmp_path: Path, x25519: tuple[str, str], ssh_keys: dict[str, Path]
) -> None:
    data = os.urandom(200_000)
    recipients = [
        x25519[1],
        *(p.with_suffix(".pub").read_text() for k, p in ssh_keys.items() if k != "locked"),
    ]
    result = agefile.seal_stream(io.BytesIO(data), tmp_path / "b.age", recipients)
    assert result.plaintext_size == len(data)
    assert result.sha256 == hashlib.sha256((tmp_path / "b.age").read_bytes()).hexdigest()
    assert (tmp_path / "b.age").stat().st_mode & 0o777 == 0o600
    keys = [
        agefile.parse_identities(x25519[0].encode()),
        *(agefile.load_identity_file(ssh_keys[k]) for k in ("ed25519", "rsa")),
    ]
    for n, identities in enumerate(keys):
        opened = agefile.open_stream(tmp_path / "b.age", tmp_path / f"out{n}", identities=identities)
        assert (tmp_path / f"out{n}").read_bytes() == data and opened.sha256 == hashlib.sha256(
            data
        ).hexdigest()
        assert (tmp_path / f"out{n}").stat().st_mode & 0o777 == 0o600


def test_armored_round_trip_and_header_check(tmp_path: Path, x25519: tuple[str, str]) -> None:
    seal_bytes(b"armored payload", tmp_path / "a.age", x25519[1], armored=True)
    assert (tmp_path / "a.age").read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    result = agefile.open_stream(
        tmp_path / "a.age", tmp_path / "a.out", identities=agefile.parse_identities(x25519[0].encode())
    )
    assert result.header.armored and (tmp_path / "a.out").read_bytes() == b"armored payload"


def test_open_into_a_writer_delivers_nothing_on_failure(tmp_path: Path, x25519: tuple[str, str]) -> None:
    ids = agefile.parse_identities(x25519[0].encode())
    seal_bytes(os.urandom(300_000), tmp_path / "b.age", x25519[1])
    sink = io.BytesIO()
    agefile.open_stream(tmp_path / "b.age", sink, identities=ids, spool_dir=tmp_path)
    assert len(sink.getvalue()) == 300_000
    (tmp_path / "b.age").write_bytes((tmp_path / "b.age").read_bytes()[:-20])  # cut the last chunk's tag
    sink = io.BytesIO()
    with pytest.raises(IntegrityError, match="payload is truncated or was modified"):
        agefile.open_stream(tmp_path / "b.age", sink, identities=ids, spool_dir=tmp_path)
    assert sink.getvalue() == b"" and snapshot(tmp_path) == ["b.age"]


class FailingReader(io.RawIOBase):
    """Yields ``good`` bytes, then raises ``error``: a source that breaks mid-stream."""

    def __init__(self, good: int, error: Exception) -> None:
        self.left, self.error = good, error

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise self.error
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


@pytest.mark.parametrize(
    "error", [IntegrityError("docs/x.md does not match"), OSError(5, "Input/output error")]
)
def test_seal_failure_leaves_nothing(tmp_path: Path, x25519: tuple[str, str], error: Exception) -> None:
    out = tmp_path / "out" / "b.tar.age"
    out.parent.mkdir()
    with pytest.raises((IntegrityError, StorageError)) as err:
        agefile.seal_stream(FailingReader(1_000_000, error), out, [x25519[1]])
    if isinstance(error, IntegrityError):
        assert err.value is error  # re-raised as itself, not as pyrage's EncryptError
    else:
        assert isinstance(err.value, StorageError) and "Input/output error" in str(err.value)
    assert list(out.parent.iterdir()) == []


def test_seal_refuses_to_clobber_and_can_overwrite(tmp_path: Path, x25519: tuple[str, str]) -> None:
    out = tmp_path / "b.age"
    out.write_bytes(b"precious")
    with pytest.raises(AlreadyExists, match="already exists"):
        seal_bytes(b"new", out, x25519[1])
    assert out.read_bytes() == b"precious" and snapshot(tmp_path) == ["b.age"]
    seal_bytes(b"new", out, x25519[1], overwrite=True)
    assert out.read_bytes().startswith(b"age-encryption.org/v1\n")
    with pytest.raises(NotFound, match="does not exist"):
        seal_bytes(b"new", tmp_path / "missing" / "b.age", x25519[1])


def test_seal_works_where_hard_links_do_not(
    tmp_path: Path, x25519: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """exFAT sticks and some shares refuse link(); the no-clobber publish falls back to rename."""

    def no_links(*_: object, **__: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    seal_bytes(b"data", tmp_path / "b.age", x25519[1])
    assert snapshot(tmp_path) == ["b.age"] and (tmp_path / "b.age").stat().st_mode & 0o777 == 0o600
    with pytest.raises(AlreadyExists):
        seal_bytes(b"data", tmp_path / "b.age", x25519[1])
    assert snapshot(tmp_path) == ["b.age"]


def test_open_into_a_writer_with_a_missing_spool_dir_is_a_storage_error(
    tmp_path: Path, x25519: tuple[str, str]
) -> None:
    seal_bytes(b"data", tmp_path / "b.age", x25519[1])
    with pytest.raises(StorageError, match="cannot create a temporary file"):
        agefile.open_stream(
            tmp_path / "b.age",
            io.BytesIO(),
            identities=agefile.parse_identities(x25519[0].encode()),
            spool_dir=tmp_path / "missing",
        )


@pytest.mark.parametrize(
    ("recipients", "passphrase", "message"),
    [
        ((), None, "no recipient and no passphrase"),
        (("age1x",), "pw", "not both"),
        ((), "", "the passphrase is empty"),
    ],
)
def test_seal_needs_exactly_one_way(
    tmp_path: Path, recipients: tuple[str, ...], passphrase: str | None, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        agefile.seal_stream(io.BytesIO(b"x"), tmp_path / "b.age", recipients, passphrase)
    assert snapshot(tmp_path) == []


def test_wrong_identity_is_authentication_failed(tmp_path: Path, x25519: tuple[str, str]) -> None:
    seal_bytes(b"data", tmp_path / "b.age", x25519[1])
    stranger = agefile.parse_identities(str(pyrage.x25519.Identity.generate()).encode())
    with pytest.raises(AuthenticationFailed, match="none of the given identities can open this file"):
        agefile.open_stream(tmp_path / "b.age", tmp_path / "out", identities=stranger)
    with pytest.raises(AuthenticationFailed, match="sealed to keys, not with a passphrase"):
        agefile.open_stream(tmp_path / "b.age", tmp_path / "out", passphrase="pw")
    assert snapshot(tmp_path) == ["b.age"]


def test_flipped_payload_byte_and_bad_header_mac_are_integrity_errors(
    tmp_path: Path, x25519: tuple[str, str]
) -> None:
    ids = agefile.parse_identities(x25519[0].encode())
    seal_bytes(os.urandom(100_000), tmp_path / "b.age", x25519[1])
    sealed = bytearray((tmp_path / "b.age").read_bytes())
    flipped = bytearray(sealed)
    flipped[-5000] ^= 1
    (tmp_path / "f.age").write_bytes(flipped)
    with pytest.raises(IntegrityError, match="payload"):
        agefile.open_stream(tmp_path / "f.age", tmp_path / "out", identities=ids)
    mac_at = sealed.index(b"\n--- ") + 6
    sealed[mac_at] = ord("A") if sealed[mac_at] != ord("A") else ord("B")
    (tmp_path / "m.age").write_bytes(sealed)
    with pytest.raises(IntegrityError, match="header is invalid or was modified"):
        agefile.open_stream(tmp_path / "m.age", tmp_path / "out", identities=ids)
    assert not (tmp_path / "out").exists()


def header(*stanzas: str, mac: str = "A" * 43) -> bytes:
    return ("age-encryption.org/v1\n" + "".join(stanzas) + f"--- {mac}\n").encode() + bytes(64)


def test_header_caps_are_enforced_before_any_crypto(tmp_path: Path, x25519: tuple[str, str]) -> None:
    ids = agefile.parse_identities(x25519[0].encode())
    body = base64.b64encode(bytes(32)).decode().rstrip("=")
    cases = {
        "work factor 30": (
            header(f"-> scrypt {'A' * 22} 30\n{body}\n"),
            "work factor 30 exceeds the limit of 22",
        ),
        "33 stanzas": (header(*[f"-> X25519 {'A' * 43}\n{body}\n"] * 33), "more than 32 stanzas"),
        "long header": (header("-> grease\n" + ("A" * 64 + "\n") * 1100 + "\n"), "longer than 64 KiB"),
        "scrypt not alone": (
            header(f"-> scrypt {'A' * 22} 10\n{body}\n", f"-> X25519 {'A' * 43}\n{body}\n"),
            "mixes",
        ),
    }
    for name, (data, message) in cases.items():
        (tmp_path / "h.age").write_bytes(data)
        start = time.monotonic()
        with pytest.raises(IntegrityError, match=message):
            agefile.open_stream(tmp_path / "h.age", tmp_path / "out", passphrase="pw")
        assert time.monotonic() - start < 1, name
    armored = base64.encodebytes(header(f"-> scrypt {'A' * 22} 23\n{body}\n")).decode().replace("\n", "")
    lines = "\n".join(armored[i : i + 64] for i in range(0, len(armored), 64))
    (tmp_path / "h.age").write_text(
        f"-----BEGIN AGE ENCRYPTED FILE-----\n{lines}\n-----END AGE ENCRYPTED FILE-----\n"
    )
    with pytest.raises(IntegrityError, match="work factor 23"):
        agefile.open_stream(tmp_path / "h.age", tmp_path / "out", passphrase="pw")
    (tmp_path / "h.age").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(InvalidInput, match="not age-encrypted"):
        agefile.open_stream(tmp_path / "h.age", tmp_path / "out", identities=ids)
    assert snapshot(tmp_path) == ["h.age"]


def test_passphrase_input_over_the_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agefile, "PASSPHRASE_MAX_BYTES", 1000)
    with pytest.raises(InvalidInput, match="passphrase sealing is limited to 1000 bytes"):
        agefile.seal_stream(io.BytesIO(bytes(1001)), tmp_path / "b.age", passphrase="pw")
    assert snapshot(tmp_path) == []


@pytest.fixture(scope="module")
def passphrase_sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """One real passphrase seal (pyrage calibrates scrypt to ~1 s here): reused by several tests."""
    data = os.urandom(70_000)
    path = tmp_path_factory.mktemp("pw") / "p.age"
    agefile.seal_stream(io.BytesIO(data), path, passphrase="tr0ub4dor&3")
    return path, data


def test_passphrase_round_trip(passphrase_sealed: tuple[Path, bytes], tmp_path: Path) -> None:
    path, data = passphrase_sealed
    result = agefile.open_stream(path, tmp_path / "out", passphrase="tr0ub4dor&3")
    assert (tmp_path / "out").read_bytes() == data
    assert result.header.is_passphrase and result.header.scrypt_work_factor <= agefile.MAX_SCRYPT_WORK_FACTOR  # type: ignore[operator]
    with pytest.raises(AuthenticationFailed, match="sealed with a passphrase, not to a key"):
        agefile.open_stream(
            path,
            tmp_path / "x",
            identities=agefile.parse_identities(str(pyrage.x25519.Identity.generate()).encode()),
        )


def test_wrong_passphrase_says_only_that(tmp_path: Path) -> None:
    # The C2SP vector's scrypt work factor is 10, so this costs milliseconds, not a second.
    vector = (Path(__file__).resolve().parent / "vectors/age/testdata/scrypt").read_bytes()
    (tmp_path / "v.age").write_bytes(vector.partition(b"\n\n")[2])
    with pytest.raises(AuthenticationFailed) as err:
        agefile.open_stream(tmp_path / "v.age", tmp_path / "out", passphrase="not it")
    assert str(err.value) == "wrong passphrase"
    assert not (tmp_path / "out").exists()


@pytest.mark.interop
def test_age_cli_opens_our_passphrase_file(passphrase_sealed: tuple[Path, bytes], tmp_path: Path) -> None:
    need("age")
    path, data = passphrase_sealed
    assert run_with_tty(["age", "-d", "-o", str(tmp_path / "out"), str(path)], "tr0ub4dor&3") == 0
    assert (tmp_path / "out").read_bytes() == data


def run_with_tty(argv: list[str], passphrase: str, timeout: float = 60) -> int:
    """Run a program that reads its passphrase from the terminal (age does), answering each prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvp(argv[0], argv)
    answered, seen, deadline = 0, b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and select.select([fd], [], [], 1)[0] is not None:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break  # EIO: the child closed the terminal
            if not chunk:
                break
            seen += chunk
            if seen.lower().count(b"passphrase") > answered:
                os.write(fd, passphrase.encode() + b"\n")
                answered += 1
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.interop
def test_files_sealed_by_age_cli_open_here(
    tmp_path: Path, x25519: tuple[str, str], ssh_keys: dict[str, Path]
) -> None:
    need("age")
    data = os.urandom(150_000)
    (tmp_path / "plain").write_bytes(data)
    (tmp_path / "key.txt").write_text(x25519[0])
    runs = {
        "x25519": (["-r", x25519[1]], agefile.load_identity_file(tmp_path / "key.txt")),
        "armored": (["-a", "-r", x25519[1]], agefile.load_identity_file(tmp_path / "key.txt")),
        "ssh": (
            ["-R", str(ssh_keys["ed25519"].with_suffix(".pub"))],
            agefile.load_identity_file(ssh_keys["ed25519"]),
        ),
    }
    for name, (args, identities) in runs.items():
        subprocess.run(
            ["age", *args, "-o", str(tmp_path / f"{name}.age"), str(tmp_path / "plain")], check=True
        )
        agefile.open_stream(tmp_path / f"{name}.age", tmp_path / f"{name}.out", identities=identities)
        assert (tmp_path / f"{name}.out").read_bytes() == data, name


@pytest.mark.interop
def test_age_cli_opens_what_we_seal(
    tmp_path: Path, x25519: tuple[str, str], ssh_keys: dict[str, Path]
) -> None:
    need("age")
    data = os.urandom(150_000)
    (tmp_path / "key.txt").write_text(x25519[0])
    seal_bytes(data, tmp_path / "x.age", x25519[1])
    agefile.seal_stream(
        io.BytesIO(data), tmp_path / "s.age", [ssh_keys["rsa"].with_suffix(".pub").read_text()]
    )
    for sealed, key in (("x.age", tmp_path / "key.txt"), ("s.age", ssh_keys["rsa"])):
        out = subprocess.run(
            ["age", "-d", "-i", str(key), str(tmp_path / sealed)], capture_output=True, check=True
        )
        assert out.stdout == data


MEMORY_PROBE = r"""
import io, json, resource, sys, tracemalloc
from pathlib import Path
import pyrage
from handover_vault.bundle import agefile

class Zeros(io.RawIOBase):
    def __init__(self, n): self.left = n
    def readable(self): return True
    def readinto(self, b):
        n = min(len(b), self.left); b[:n] = bytes(n); self.left -= n; return n

tmp = Path(sys.argv[1])
ident = pyrage.x25519.Identity.generate()
ids = agefile.parse_identities(str(ident).encode())

def run(mib):
    agefile.seal_stream(Zeros(mib << 20), tmp / "z.age", [str(ident.to_public())], overwrite=True)
    agefile.open_stream(tmp / "z.age", tmp / "z.out", identities=ids, overwrite=True)
    assert (tmp / "z.out").stat().st_size == mib << 20
    # age runs in a forked helper: its peak counts as much as ours.
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) * 1024

small = run(8)
tracemalloc.start()
big = run(128)
print(json.dumps({"small": small, "big": big, "py_peak": tracemalloc.get_traced_memory()[1]}))
"""


def test_sealing_and_opening_stream_with_flat_memory(tmp_path: Path) -> None:
    """128 MiB of lazily produced zeros through seal and open: peak RSS as for 8 MiB.

    Buffering the input anywhere would add >= 120 MiB; we allow 24 MiB of allocator noise.
    """
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    probe = json.loads(out.stdout)
    assert probe["big"] - probe["small"] < 24 << 20, probe  # RSS of the whole process, Rust included
    assert probe["py_peak"] < 4 << 20, probe  # Python-side allocations stay at a few chunks


# --- Deterministic tar writer --------------------------------------------------------------------------


def test_tar_is_deterministic_sorted_and_normalised() -> None:
    files = content_files()
    first = tarsafe.tar_stream(TOP, files, mtime=bundle_format.export_mtime(DAY)).read()
    again = tarsafe.tar_stream(TOP, list(reversed(files)), mtime=bundle_format.export_mtime(DAY)).read()
    assert first == again and len(first) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        TOP,
        f"{TOP}/HANDOVER.md",
        f"{TOP}/attachments",
        f"{TOP}/attachments/diagram.bin",
        f"{TOP}/credentials.csv",
        f"{TOP}/docs",
        f"{TOP}/docs/01-network.md",
    ]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 1795651200)
        assert m.mode == (0o700 if m.isdir() else 0o600) and (m.isdir() or m.isreg())
        assert m.pax_headers == {}  # plain ustar headers for ASCII names that fit
    assert bundle_format.export_mtime(DAY) == 1795651200  # 2026-11-26T00:00:00Z


def test_pax_records_only_for_names_ustar_cannot_hold() -> None:
    files = [
        BundleFile.from_bytes("docs/01-réseau.md", b"x"),
        BundleFile.from_bytes("a/" + "n" * 120 + ".md", b"y"),
    ]
    with tarfile.open(fileobj=io.BytesIO(tarsafe.tar_stream(TOP, files).read())) as tar:
        paths = {m.name: m.pax_headers.get("path") for m in tar.getmembers() if m.isreg()}
    assert paths == {
        f"{TOP}/docs/01-réseau.md": f"{TOP}/docs/01-réseau.md",
        f"{TOP}/a/{'n' * 120}.md": f"{TOP}/a/{'n' * 120}.md",
    }


def test_tar_streams_lazily_in_small_reads() -> None:
    calls: list[str] = []

    def lazy(name: str, size: int) -> BundleFile:
        def chunks() -> Iterator[bytes]:
            calls.append(name)
            for _ in range(size // 65536):
                yield bytes(65536)

        return BundleFile(name, size, hashlib.sha256(bytes(size)).hexdigest(), chunks)

    stream = tarsafe.tar_stream(TOP, [lazy("a.bin", 4 << 20), lazy("b.bin", 4 << 20)])
    assert calls == []  # nothing read before the consumer asks
    first = stream.read(1000)
    assert len(first) == 1000 and calls == []
    rest = b"".join(iter(lambda: stream.read(7777), b""))
    assert calls == ["a.bin", "b.bin"]
    assert first + rest == tarsafe.tar_stream(TOP, [lazy("a.bin", 4 << 20), lazy("b.bin", 4 << 20)]).read()


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"sha256": "0" * 64}, "does not match its declared SHA-256"),
        ({"size": 3}, "is larger than its declared 3 bytes"),
        ({"size": 30}, "has 10 bytes, not the declared 30"),
    ],
)
def test_a_source_that_lies_aborts_the_stream(declared: dict[str, object], message: str) -> None:
    good = BundleFile.from_bytes("docs/x.md", b"0123456789")
    liar = BundleFile(
        **{"name": good.name, "size": good.size, "sha256": good.sha256, "chunks": good.chunks, **declared}
    )  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match=f"'docs/x.md' {message}"):
        tarsafe.tar_stream(TOP, [liar]).read()


def test_a_file_changed_after_it_was_declared_aborts_the_seal(
    tmp_path: Path, x25519: tuple[str, str]
) -> None:
    (tmp_path / "scan.pdf").write_bytes(b"original scan")
    declared = BundleFile.from_path("attachments/scan.pdf", tmp_path / "scan.pdf")
    (tmp_path / "scan.pdf").write_bytes(b"swapped scan!")
    (tmp_path / "out").mkdir()
    with pytest.raises(IntegrityError, match=re.escape("attachments/scan.pdf")):
        agefile.seal_stream(tarsafe.tar_stream(TOP, [declared]), tmp_path / "out" / "b.tar.age", [x25519[1]])
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["../evil"], "a '..' component"),
        (["/etc/passwd"], "an absolute path"),
        (["a\\b"], "a backslash"),
        (["a\x00b"], "a NUL byte"),
        (["a\nb"], "a control character"),
        (["a//b"], "an empty or '.' component"),
        (["x.md", "x.md"], "twice"),
        (["docs", "docs/a.md"], "both a file and a folder"),
    ],
)
def test_the_writer_refuses_names_a_reader_would_refuse(names: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        tarsafe.tar_stream(TOP, [BundleFile.from_bytes(n, b"x") for n in names])


def test_the_top_folder_must_be_a_simple_name() -> None:
    for top in ("", "../x", "a/b", ".hidden", "x" * 200):
        with pytest.raises(InvalidInput, match="not a simple name"):
            tarsafe.tar_stream(top, [])


# --- Manifest and signature ----------------------------------------------------------------------------


def test_manifest_is_canonical_json(signer: tuple[bytes, bytes]) -> None:
    files = content_files()
    data = bundle_format.build_manifest(files, {**meta(signer[1]), "root": TOP, "note": "Réseau ✓"})
    assert data.endswith(b"}\n") and data.count(b"\n}\n") == 1
    parsed = json.loads(data)
    assert data == (json.dumps(parsed, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
    assert parsed["format"] == "handover-bundle/1" and parsed["note"] == "Réseau ✓"
    assert [f["path"] for f in parsed["files"]] == sorted(f.name for f in files)
    assert parsed["files"][0] == {"path": "HANDOVER.md", "size": files[0].size, "sha256": files[0].sha256}
    assert data == bundle_format.build_manifest(
        list(reversed(files)), {**meta(signer[1]), "root": TOP, "note": "Réseau ✓"}
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client": None}, "needs a non-empty string for: client"),
        ({"format": "x"}, "set by the bundle format"),
        ({"extra": float("nan")}, "not plain JSON"),
        ({"extra": object()}, "not plain JSON"),
    ],
)
def test_manifest_meta_is_checked(
    signer: tuple[bytes, bytes], change: dict[str, object], message: str
) -> None:
    full = {**meta(signer[1]), "root": TOP, **change}
    with pytest.raises(InvalidInput, match=message):
        bundle_format.build_manifest(content_files(), {k: v for k, v in full.items() if v is not None})


def test_assemble_adds_sums_manifest_signature_and_key(signer: tuple[bytes, bytes]) -> None:
    priv, pub = signer
    files = bundle_format.assemble_bundle(
        TOP, content_files(), meta(pub), sign=lambda m: crypto.sign(priv, m), signer_public_key=pub
    )
    by_name = {f.name: b"".join(f.chunks()) for f in files}
    assert list(by_name)[-5:] == [
        "SHA256SUMS",
        "SHA256SUMS.sig",
        "manifest.json",
        "manifest.sig",
        "signer.pub",
    ]
    sshsig.verify(by_name["SHA256SUMS.sig"], by_name["SHA256SUMS"], pub)
    assert len(by_name) == bundle_format.file_count(content_files())
    assert len(by_name["manifest.sig"]) == 64
    assert crypto.verify_signature(pub, by_name["manifest.sig"], by_name["manifest.json"])
    assert crypto.public_key_from_pem(by_name["signer.pub"]) == pub
    assert by_name["SHA256SUMS"].decode().splitlines()[0] == f"{content_files()[0].sha256}  HANDOVER.md"
    assert json.loads(by_name["manifest.json"])["root"] == TOP


def test_assemble_refuses_reserved_names_foreign_fingerprints_and_bad_signatures(
    signer: tuple[bytes, bytes],
) -> None:
    priv, pub = signer
    sign = lambda m: crypto.sign(priv, m)  # noqa: E731
    with pytest.raises(InvalidInput, match=re.escape("'manifest.json' is reserved")):
        bundle_format.assemble_bundle(
            TOP, [BundleFile.from_bytes("manifest.json", b"{}")], meta(pub), sign=sign, signer_public_key=pub
        )
    other = crypto.new_signing_key()
    with pytest.raises(InvalidInput, match="not the signer's fingerprint"):
        bundle_format.assemble_bundle(TOP, content_files(), meta(other[1]), sign=sign, signer_public_key=pub)
    with pytest.raises(IntegrityError, match="does not verify"):
        bundle_format.assemble_bundle(
            TOP, content_files(), meta(pub), sign=lambda m: crypto.sign(other[0], m), signer_public_key=pub
        )


# --- Verification --------------------------------------------------------------------------------------


def test_a_good_bundle_verifies(signer: tuple[bytes, bytes]) -> None:
    fingerprint = crypto.fingerprint(signer[1])
    verified = bundle_format.verify_bundle_tar(io.BytesIO(bundle_tar(signer)), fingerprint.upper())
    assert (verified.root, verified.client, verified.signer_fingerprint) == (TOP, "acme", fingerprint)
    assert [e.path for e in verified.files] == sorted(
        [f.name for f in content_files()] + ["SHA256SUMS", "SHA256SUMS.sig"]
    )
    assert [e.path for e in verified.format_files] == ["manifest.json", "manifest.sig", "signer.pub"]


def resign(tar_bytes: bytes, manifest: dict[str, object], key: tuple[bytes, bytes]) -> bytes:
    data = (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
    return rebuild(
        tar_bytes,
        replace={
            f"{TOP}/manifest.json": data,
            f"{TOP}/manifest.sig": crypto.sign(key[0], data),
            f"{TOP}/signer.pub": crypto.public_key_pem(key[1]),
        },
    )


def manifest_of(tar_bytes: bytes) -> dict[str, object]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return json.loads(tar.extractfile(f"{TOP}/manifest.json").read())  # type: ignore[union-attr, no-any-return]


def tampered_cases(signer: tuple[bytes, bytes]) -> dict[str, tuple[bytes, type[Exception], str]]:
    good = bundle_tar(signer)
    m = manifest_of(good)
    files: list[dict[str, object]] = m["files"]  # type: ignore[assignment]
    stranger = crypto.new_signing_key()
    return {
        "content changed": (
            rebuild(good, replace={f"{TOP}/credentials.csv": b"label,username,secret\nfw,admin,hunter3\n"}),
            IntegrityError,
            "credentials.csv does not match its SHA-256",
        ),
        "content resized": (
            rebuild(good, replace={f"{TOP}/HANDOVER.md": b"# short"}),
            IntegrityError,
            "HANDOVER.md has the wrong size",
        ),
        "manifest edited": (
            rebuild(good, replace={f"{TOP}/manifest.json": json.dumps(m).encode()}),
            IntegrityError,
            "manifest.sig is not a valid signature",
        ),
        "signature missing": (
            rebuild(good, drop={f"{TOP}/manifest.sig"}),
            IntegrityError,
            "the bundle has no manifest.sig",
        ),
        "signature garbage": (
            rebuild(good, replace={f"{TOP}/manifest.sig": bytes(64)}),
            IntegrityError,
            "not a valid signature",
        ),
        "signer key garbage": (
            rebuild(good, replace={f"{TOP}/signer.pub": b"nope"}),
            IntegrityError,
            "not a valid PEM",
        ),
        "re-signed by a stranger": (resign(good, m, stranger), IntegrityError, "names a different vault"),
        "extra file": (
            rebuild(good, extra=[(member(f"{TOP}/docs/02-extra.md"), b"sneaky")]),
            IntegrityError,
            "docs/02-extra.md is in the bundle but not in the manifest",
        ),
        "missing file": (
            rebuild(good, drop={f"{TOP}/docs/01-network.md"}),
            IntegrityError,
            "docs/01-network.md is listed in the manifest but missing",
        ),
        "sums disagree": (
            resign(
                good,
                {
                    **m,
                    "files": [f if f["path"] != "SHA256SUMS" else {**f, "sha256": "0" * 64} for f in files],
                    "vault_fingerprint": crypto.fingerprint(stranger[1]),
                },
                stranger,
            ),
            IntegrityError,
            "SHA256SUMS does not agree with the manifest",
        ),
        "unknown format": (
            resign(good, {**m, "format": "handover-bundle/9"}, signer),
            InvalidInput,
            "unsupported bundle format",
        ),
        "root renamed": (
            resign(good, {**m, "root": "other"}, signer),
            IntegrityError,
            "but the manifest says 'other'",
        ),
        "entry malformed": (
            resign(good, {**m, "files": [*files, {"path": "../x", "size": 1, "sha256": "0" * 64}]}, signer),
            IntegrityError,
            "lists an invalid path '../x'",
        ),
        "size is a bool": (
            resign(good, {**m, "files": [{**files[0], "size": True}, *files[1:]]}, signer),
            IntegrityError,
            "invalid size or SHA-256",
        ),
        "entry listed twice": (
            resign(good, {**m, "files": [*files, files[0]]}, signer),
            IntegrityError,
            "lists a file twice",
        ),
    }


def test_every_tampering_is_caught_and_named(signer: tuple[bytes, bytes], tmp_path: Path) -> None:
    for name, (data, error, message) in tampered_cases(signer).items():
        with pytest.raises(error) as err:
            bundle_format.verify_bundle_tar(io.BytesIO(data))
        assert message in str(err.value), name
        with pytest.raises(error):
            bundle_format.extract_bundle(io.BytesIO(data), tmp_path / "to")
        assert snapshot(tmp_path) == [], name


def test_expected_signer_is_enforced(signer: tuple[bytes, bytes]) -> None:
    other = crypto.fingerprint(crypto.new_signing_key()[1])
    with pytest.raises(IntegrityError, match=f"not by the expected {other}"):
        bundle_format.verify_bundle_tar(io.BytesIO(bundle_tar(signer)), other)


safe_names = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.é", min_size=1, max_size=12).filter(
        lambda s: s not in (".", "..")
    ),
    min_size=1,
    max_size=3,
).map("/".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(safe_names, st.binary(max_size=3000), min_size=1, max_size=6))
def test_any_bundle_round_trips_through_tar_and_verify(
    signer: tuple[bytes, bytes], contents: dict[str, bytes]
) -> None:
    names = set(contents)
    if (
        any(n.casefold() in {m.casefold() for m in names if m != n} for n in names)
        or any(n.startswith(m + "/") for n in names for m in names)
        or names & bundle_format.RESERVED_NAMES
        or any(n.startswith(r + "/") for n in names for r in bundle_format.RESERVED_NAMES)
    ):
        return  # clashing names are refused by the writer (tested above)
    files = [BundleFile.from_bytes(n, d) for n, d in contents.items()]
    verified = bundle_format.verify_bundle_tar(io.BytesIO(bundle_tar(signer, files)))
    assert {e.path: e.sha256 for e in verified.files if not e.path.startswith("SHA256SUMS")} == {
        n: hashlib.sha256(d).hexdigest() for n, d in contents.items()
    }


# --- Hostile archives ------------------------------------------------------------------------------------


def hostile_cases(signer: tuple[bytes, bytes]) -> dict[str, tuple[bytes, str, TarLimits | None]]:
    good = bundle_tar(signer)
    small = TarLimits(max_members=10, max_member_size=100, max_total_size=2000)
    gnu_long = rebuild(good, extra=[(member(f"{TOP}/" + "l" * 120), b"x")], fmt=tarfile.GNU_FORMAT)
    cases: dict[str, tuple[bytes, str, TarLimits | None]] = {
        "traversal": (
            rebuild(good, extra=[(member(f"{TOP}/../evil.sh"), b"rm -rf ~")]),
            "a '..' component",
            None,
        ),
        "absolute path": (rebuild(good, extra=[(member("/tmp/evil.sh"), b"x")]), "an absolute path", None),
        "symlink": (
            rebuild(good, extra=[(member(f"{TOP}/link", tarfile.SYMTYPE, linkname="/etc/passwd"), None)]),
            "is a symbolic link",
            None,
        ),
        "hard link": (
            rebuild(
                good, extra=[(member(f"{TOP}/hard", tarfile.LNKTYPE, linkname=f"{TOP}/HANDOVER.md"), None)]
            ),
            "is a hard link",
            None,
        ),
        "device": (
            rebuild(good, extra=[(member(f"{TOP}/sda", tarfile.BLKTYPE, devmajor=8), None)]),
            "is a block device",
            None,
        ),
        "char device": (
            rebuild(good, extra=[(member(f"{TOP}/null", tarfile.CHRTYPE), None)]),
            "is a character device",
            None,
        ),
        "fifo": (rebuild(good, extra=[(member(f"{TOP}/pipe", tarfile.FIFOTYPE), None)]), "is a FIFO", None),
        "duplicate": (
            rebuild(good, extra=[(member(f"{TOP}/HANDOVER.md"), b"second copy")]),
            "appears more than once",
            None,
        ),
        "case duplicate": (
            rebuild(good, extra=[(member(f"{TOP}/handover.md"), b"x")]),
            "appears more than once",
            None,
        ),
        "backslash": (rebuild(good, extra=[(member(f"{TOP}/..\\..\\evil"), b"x")]), "a backslash", None),
        "NUL via pax": (
            rebuild(good, extra=[(member(f"{TOP}/ok", pax_headers={"path": f"{TOP}/a\x00b"}), b"x")]),
            "a NUL byte",
            None,
        ),
        "outside top folder": (
            rebuild(good, extra=[(member("other/x.md"), b"x")]),
            "outside the bundle's single top folder",
            None,
        ),
        "file at the root": (
            rebuild(good, extra=[(member("README"), b"x")]),
            "outside the bundle's single top folder",
            None,
        ),
        "file as folder": (
            rebuild(good, extra=[(member(f"{TOP}/HANDOVER.md/x"), b"x")]),
            "both a file and a folder",
            None,
        ),
        "pax size record": (
            rebuild(good, extra=[(member(f"{TOP}/big", pax_headers={"size": "5"}), b"x")]),
            "uses the pax key 'size'",
            None,
        ),
        "pax linkpath": (
            rebuild(good, extra=[(member(f"{TOP}/l", pax_headers={"linkpath": "/etc"}), b"x")]),
            "uses the pax key 'linkpath'",
            None,
        ),
        "GNU long name": (gnu_long, "is a GNU long name", None),
        "oversize member": (good, "is larger than the limit of 100 bytes", small),
        "too many members": (good, "more than 10 members", TarLimits(max_members=10)),
        "total too large": (good, "add up to more than 2000 bytes", TarLimits(max_total_size=2000)),
        "truncated": (good[: len(good) // 3 // 512 * 512], "truncated", None),
        "empty": (bytes(10240), "the archive is empty", None),
        "compressed": (b"\x1f\x8b" + good[2:], "corrupt header", None),
    }
    return cases


def test_hostile_archives_are_refused_before_anything_is_written(
    signer: tuple[bytes, bytes], tmp_path: Path
) -> None:
    target = tmp_path / "to"
    for name, (data, message, limits) in hostile_cases(signer).items():
        kw = {"limits": limits} if limits else {}
        with pytest.raises(IntegrityError) as err:
            bundle_format.extract_bundle(io.BytesIO(data), target, **kw)  # type: ignore[arg-type]
        assert message in str(err.value), f"{name}: {err.value}"
        assert snapshot(tmp_path) == [], name  # nothing inside the target, nothing beside it


def test_a_pax_record_hidden_in_block_padding_is_seen(signer: tuple[bytes, bytes]) -> None:
    """tarfile parses pax records past the declared size, in the block's padding; so must our pre-scan."""
    honest = f"path={TOP}/x"
    data = bytearray(
        rebuild(bundle_tar(signer), extra=[(member(f"{TOP}/x", pax_headers={"path": f"{TOP}/x"}), b"x")])
    )
    record = f"{len(honest) + 4} {honest}\n".encode()
    at = data.index(record) + len(record)
    assert data[at : at + 13] == bytes(13)  # zero padding after the declared records
    data[at : at + 13] = b"13 size=9999\n"
    with pytest.raises(IntegrityError, match="uses the pax key 'size'"):
        bundle_format.verify_bundle_tar(io.BytesIO(bytes(data)))


# --- Extraction --------------------------------------------------------------------------------------


def test_extract_writes_private_files_inside_the_target(signer: tuple[bytes, bytes], tmp_path: Path) -> None:
    verified = bundle_format.extract_bundle(io.BytesIO(bundle_tar(signer)), tmp_path / "to")
    top = tmp_path / "to" / TOP
    assert (top / "credentials.csv").read_bytes() == b"label,username,secret\nfw,admin,hunter2\n"
    assert (top / "docs" / "01-network.md").read_text() == "# Réseau\n"
    for path in top.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    assert {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()} == {
        *(e.path for e in verified.files),
        "manifest.json",
        "manifest.sig",
        "signer.pub",
    }


def test_extract_never_overwrites_and_undoes_its_writes(signer: tuple[bytes, bytes], tmp_path: Path) -> None:
    top = tmp_path / "to" / TOP
    (top / "docs").mkdir(parents=True)
    (top / "docs" / "01-network.md").write_text("mine")
    with pytest.raises(AlreadyExists, match=re.escape("docs/01-network.md already exists")):
        bundle_format.extract_bundle(io.BytesIO(bundle_tar(signer)), tmp_path / "to")
    # Files sorting before it (HANDOVER.md, SHA256SUMS, attachments/...) were written, then removed.
    assert snapshot(tmp_path / "to") == [TOP, f"{TOP}/docs", f"{TOP}/docs/01-network.md"]
    assert (top / "docs" / "01-network.md").read_text() == "mine"


def test_extract_does_not_follow_a_planted_symlink(signer: tuple[bytes, bytes], tmp_path: Path) -> None:
    (tmp_path / "to").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "to" / TOP).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IntegrityError, match="not a plain folder"):
        bundle_format.extract_bundle(io.BytesIO(bundle_tar(signer)), tmp_path / "to")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_content_that_changes_after_verification_is_undone(
    signer: tuple[bytes, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tarsafe.CheckedTar.iter_member
    reads: dict[str, int] = {}

    def flaky(self: tarsafe.CheckedTar, rel: str) -> Iterator[bytes]:
        reads[rel] = reads.get(rel, 0) + 1
        if rel == "docs/01-network.md" and reads[rel] == 2:  # the second read is the extraction
            yield b"# Tampered\n"
            return
        yield from real(self, rel)

    monkeypatch.setattr(tarsafe.CheckedTar, "iter_member", flaky)
    with pytest.raises(IntegrityError, match="changed after it was verified"):
        bundle_format.extract_bundle(io.BytesIO(bundle_tar(signer)), tmp_path / "to")
    assert snapshot(tmp_path / "to") == []


# --- Sealed bundles, end to end ------------------------------------------------------------------------


def seal_sample(tmp_path: Path, signer: tuple[bytes, bytes], recipient: str) -> Path:
    priv, pub = signer
    out = tmp_path / f"{TOP}.tar.age"
    bundle_format.seal_bundle(
        out,
        TOP,
        content_files(),
        meta(pub),
        sign=lambda m: crypto.sign(priv, m),
        signer_public_key=pub,
        recipients=[recipient],
        mtime=bundle_format.export_mtime(DAY),
    )
    return out


def test_seal_verify_and_open_a_bundle(
    signer: tuple[bytes, bytes], x25519: tuple[str, str], tmp_path: Path
) -> None:
    sealed = seal_sample(tmp_path, signer, x25519[1])
    ids = agefile.parse_identities(x25519[0].encode())
    fingerprint = crypto.fingerprint(signer[1])
    verified = bundle_format.verify_sealed_bundle(
        sealed, identities=ids, expected_signer_fingerprint=fingerprint
    )
    assert verified.root == TOP
    opened = bundle_format.open_sealed_bundle(sealed, tmp_path / "to", identities=ids, spool_dir=tmp_path)
    assert opened == verified
    assert (tmp_path / "to" / TOP / "HANDOVER.md").read_bytes() == b"# Acme\n\nRotate everything.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TOP}.tar.age", "to"]  # no spool left behind


def test_a_sealed_bundle_is_byte_identical_inside(
    signer: tuple[bytes, bytes], x25519: tuple[str, str], tmp_path: Path
) -> None:
    ids = agefile.parse_identities(x25519[0].encode())
    plains = []
    for n in range(2):
        (tmp_path / str(n)).mkdir()
        sealed = seal_sample(tmp_path / str(n), signer, x25519[1])
        plains.append(agefile.open_stream(sealed, tmp_path / f"{n}.tar", identities=ids).sha256)
    assert plains[0] == plains[1]


def test_opening_with_the_wrong_key_or_a_damaged_file_writes_nothing(
    signer: tuple[bytes, bytes], x25519: tuple[str, str], tmp_path: Path
) -> None:
    sealed = seal_sample(tmp_path, signer, x25519[1])
    stranger = agefile.parse_identities(str(pyrage.x25519.Identity.generate()).encode())
    with pytest.raises(AuthenticationFailed):
        bundle_format.open_sealed_bundle(sealed, tmp_path / "to", identities=stranger)
    sealed.write_bytes(sealed.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="truncated or was modified"):
        bundle_format.open_sealed_bundle(
            sealed, tmp_path / "to", identities=agefile.parse_identities(x25519[0].encode())
        )
    assert not (tmp_path / "to").exists()


@pytest.mark.interop
def test_openssl_verifies_the_signature_and_rejects_a_changed_manifest(
    signer: tuple[bytes, bytes], tmp_path: Path
) -> None:
    need("openssl")
    with tarfile.open(fileobj=io.BytesIO(bundle_tar(signer))) as tar:
        for name in ("manifest.json", "manifest.sig", "signer.pub"):
            (tmp_path / name).write_bytes(tar.extractfile(f"{TOP}/{name}").read())  # type: ignore[union-attr]
    cmd = [
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "signer.pub",
        "-rawin",
        "-in",
        "manifest.json",
        "-sigfile",
        "manifest.sig",
    ]
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True).returncode == 0
    (tmp_path / "manifest.json").write_bytes(
        (tmp_path / "manifest.json").read_bytes().replace(b"acme", b"acne")
    )
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True).returncode != 0
