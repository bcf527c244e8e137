"""vault/formats*.py: reading KeePass, Bitwarden and CSV exports, writing the successor's copies.

Fixtures in tests/fixtures/ were made by keepassxc-cli 2.7.4 (see its README for every command);
the interop tests rerun that recipe and drive keepassxc-cli against our own output. Fuzz tests
prove that any byte string, JSON value or CSV table ends in a result or an InvalidInput, never in
a raw KeyError, UnicodeDecodeError or csv.Error.
"""

from __future__ import annotations

import base64
import copy
import csv
import functools
import gzip
import hashlib
import hmac
import io
import json
import os
import struct
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree
from pykeepass.kdbx_parsing.common import aes_kdf as pykeepass_aes_kdf

from handover_vault.errors import AuthenticationFailed, InvalidInput, NotFound, VaultError
from handover_vault.formats import common as formats
from handover_vault.formats import keepass as formats_keepass
from handover_vault.formats import keepass_write as formats_keepass_write
from handover_vault.formats.common import (
    ImportedCredential,
    merge_tags,
    new_credential,
    normalise_totp,
    parse_date,
    read_bitwarden,
    read_csv,
    read_keepass,
    read_keepass_xml,
    totp_uri,
    write_bitwarden_json,
    write_keepass_xml,
)
from tests.conftest import need

FIXTURES = Path(__file__).parent / "fixtures"
KDBX31 = (FIXTURES / "keepassxc-kdbx31.kdbx", "fixture-kdbx31", None)
KDBX4 = (FIXTURES / "keepassxc-kdbx4.kdbx", "fixture-kdbx4", None)
ARGON2 = (FIXTURES / "keepassxc-argon2.kdbx", "fixture-argon2", FIXTURES / "keepassxc-argon2.keyx")
WRONG_KEY = "the KeePass database could not be opened: wrong password or key file"
WHEN = datetime(2025, 6, 30, 9, 15, tzinfo=UTC)
# HANDOVER_FUZZ_EXAMPLES=2000 runs the property and fuzz tests deeper than the quick default.
FUZZ = settings(
    max_examples=int(os.environ.get("HANDOVER_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def cred(label: str, **values: Any) -> ImportedCredential:
    """A credential with ``label`` and the given keys, the rest empty."""
    c = new_credential(label)
    c.update(values)  # type: ignore[typeddict-item]
    return c


# What keepassxc-source.xml holds, as every KeePass path must read it (Recycle Bin and history left out).
WIFI = cred("Office Wi-Fi", secret='pässwörd € <&> "quoted" ', notes="SSID acme-office")
M365 = cred(
    "Microsoft 365 admin",
    username="admin@acme.example",
    secret="M365-secret-1",
    url="https://admin.microsoft.com",
    totp="otpauth://totp/Microsoft%20365%20admin?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    "&issuer=Microsoft%20365%20admin&period=60&digits=8&algorithm=SHA256",
)
EDGE = cred(
    "Edge firewall",
    username="admin",
    secret="Fw!2024-edge",
    url="https://192.0.2.1:8443",
    notes="Console: 9600 8N1\nRack B, unit 12",
    category="Network",
    tags=["Network", "Firewalls", "edge", "wan"],
    totp="otpauth://totp/Edge%20firewall:admin?secret=JBSWY3DPEHPK3PXP&period=30&digits=6&issuer=Edge%20firewall",
    expires="2027-03-31",
    fields={"Serial": "FGT60F-0001"},
    secret_fields={"Enable password": "en-4bl3"},  # a protected string: a secret
    attachments=[{"name": "edge-fw1.conf", "data": b"hostname edge-fw1\ninterface wan0\n"}],
)
REGISTRAR = cred(
    "Domain registrar",
    username="acme-ops",
    secret="Reg1strar#pw",
    url="https://registrar.example",
    category="Registrar",
    tags=["Registrar"],
    totp="otpauth://totp/Domain%20registrar?secret=KRSXG5CTMVRXEZLU&issuer=Domain%20registrar&digits=8",
)
CORE_SWITCH = cred(  # added by `keepassxc-cli add` to the KDBX 3.1 fixture only
    "Core switch",
    username="netadmin",
    secret="Sw1tch-core!",
    url="https://192.0.2.2",
    notes="Added by keepassxc-cli",
    category="Network",
    tags=["Network"],
)
SOURCE = [WIFI, M365, EDGE, REGISTRAR]
NAS = cred(
    "Backup NAS",
    username="root",
    secret="NAS-r00t-pw",
    url="ssh://192.0.2.10",
    category="Servers",
    tags=["Servers"],
    attachments=[{"name": "layout.txt", "data": b"RAID 6, 8 x 4 TB\n"}],
)


@functools.cache
def _read_fixture(fixture: tuple[Path, str, Path | None]) -> list[ImportedCredential]:
    path, password, keyfile = fixture
    return read_keepass(path, password, keyfile)


def keepass(fixture: tuple[Path, str, Path | None]) -> list[ImportedCredential]:
    """A committed fixture, read once per session: each read runs ~5 million AES-KDF rounds."""
    return copy.deepcopy(_read_fixture(fixture))


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def refused(exc: pytest.ExceptionInfo[VaultError], *secrets: str) -> str:
    """The error's text, after checking that no secret leaked into message, hints or repr."""
    shown = " ".join([str(exc.value), *exc.value.hints, repr(exc.value)])
    for secret in secrets:
        assert secret not in shown
    return str(exc.value)


# --- KeePass: the committed keepassxc-cli fixtures -------------------------------------------------


def test_kdbx31_made_by_keepassxc_reads_completely() -> None:
    assert KDBX31[0].read_bytes()[8:12] == bytes([1, 0, 3, 0])  # minor 1, major 3: KDBX 3.1
    assert keepass(KDBX31) == [WIFI, M365, CORE_SWITCH, EDGE, REGISTRAR]


def test_kdbx4_made_by_keepassxc_reads_completely() -> None:
    assert KDBX4[0].read_bytes()[8:12] == bytes([0, 0, 4, 0])  # KDBX 4.0
    assert keepass(KDBX4) == SOURCE


def test_kdbx4_argon2_with_key_file_reads_completely() -> None:
    assert ARGON2[0].read_bytes()[8:12] == bytes([0, 0, 4, 0])
    assert keepass(ARGON2) == [NAS]


def test_recycle_bin_and_history_are_not_imported() -> None:
    text = repr(keepass(KDBX4))
    assert "Old VPN" not in text and "deleted-secret" not in text
    assert "old-wifi-password" not in text


def test_keepassxc_xml_export_reads_like_the_database() -> None:
    assert read_keepass_xml(FIXTURES / "keepassxc-export.xml") == keepass(KDBX31)
    assert read_keepass_xml(FIXTURES / "keepassxc-source.xml") == SOURCE


def test_group_option_imports_one_subtree_relative_to_it() -> None:
    creds = read_keepass_xml(FIXTURES / "keepassxc-source.xml", group="Network")
    assert [(c["label"], c["category"], c["tags"]) for c in creds] == [
        ("Edge firewall", "Firewalls", ["Firewalls", "edge", "wan"]),
    ]
    assert (
        read_keepass_xml(FIXTURES / "keepassxc-source.xml", group="/Network/Firewalls/")[0]["category"]
        is None
    )
    with pytest.raises(NotFound) as exc:
        read_keepass_xml(FIXTURES / "keepassxc-source.xml", group="Network/Switches")
    assert str(exc.value) == "the KeePass database has no group 'Network/Switches'"
    nas = read_keepass(*ARGON2, group="Servers")  # the same walk behind the KDBX reader
    assert [(c["label"], c["category"], c["tags"]) for c in nas] == [("Backup NAS", None, [])]


@pytest.mark.parametrize("fixture", [KDBX31, KDBX4, ARGON2], ids=["kdbx31", "kdbx4", "argon2"])
def test_wrong_password_is_authentication_failed_without_the_password(fixture: Any) -> None:
    path, _, keyfile = fixture
    with pytest.raises(AuthenticationFailed) as exc:
        read_keepass(path, "Wr0ng-Passw0rd!", keyfile)
    assert refused(exc, "Wr0ng-Passw0rd!") == WRONG_KEY
    assert exc.value.exit_code == 3


def test_missing_or_wrong_key_file_is_refused(tmp_path: Path) -> None:
    path, password, _ = ARGON2
    with pytest.raises(AuthenticationFailed) as exc:
        read_keepass(path, password)
    assert str(exc.value) == WRONG_KEY
    other = write(tmp_path, "other.key", os.urandom(64))
    with pytest.raises(AuthenticationFailed):
        read_keepass(path, password, other)
    with pytest.raises(AuthenticationFailed):  # an empty password means "no password", as in KeePassXC
        read_keepass(path, "", ARGON2[2])
    with pytest.raises(NotFound) as nf:
        read_keepass(path, password, tmp_path / "absent.keyx")
    assert str(nf.value) == f"the key file {tmp_path / 'absent.keyx'} does not exist"


def test_damaged_key_file_is_invalid_input(tmp_path: Path) -> None:
    keyx = ARGON2[2].read_text().replace('Hash="', 'Hash="0')  # the checksum no longer matches
    with pytest.raises(InvalidInput) as exc:
        read_keepass(ARGON2[0], ARGON2[1], write(tmp_path, "bad.keyx", keyx))
    assert str(exc.value) == "the key file is damaged or not a KeePass key file"


def test_not_a_kdbx_and_keepass1_are_explained(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_keepass(write(tmp_path, "x.kdbx", "name,password\n"), "pw")
    assert str(exc.value) == "the file is not a KeePass database (KDBX)"
    kdb = bytes.fromhex("03d9a29a65fb4bb5") + bytes(120)
    with pytest.raises(InvalidInput) as exc:
        read_keepass(write(tmp_path, "old.kdb", kdb), "pw")
    assert str(exc.value) == "this is a KeePass 1 database (.kdb), which is not supported"
    assert exc.value.hints == ("open it in KeePassXC or KeePass 2 and save it as a .kdbx database first",)
    with pytest.raises(NotFound):
        read_keepass(tmp_path / "absent.kdbx", "pw")


def test_truncated_and_damaged_databases_are_invalid_input(tmp_path: Path) -> None:
    data = ARGON2[0].read_bytes()
    with pytest.raises(InvalidInput) as exc:
        read_keepass(write(tmp_path, "t.kdbx", data[:100]), ARGON2[1], ARGON2[2])
    assert str(exc.value) == "the KeePass database is damaged: its header cannot be read"
    flipped = bytearray(data)
    flipped[-40] ^= 0x01  # inside the last HMAC-authenticated payload block
    with pytest.raises(InvalidInput) as exc:
        read_keepass(write(tmp_path, "f.kdbx", bytes(flipped)), ARGON2[1], ARGON2[2])
    assert str(exc.value) == "the KeePass database is damaged: a checksum does not match"


def test_kdbx31_damaged_header_is_caught_by_header_hash(tmp_path: Path) -> None:
    # Byte 150 lies in the inner stream key: the payload still decrypts, but every protected
    # value would come out as garbage. pykeepass does not check Meta/HeaderHash; we do.
    data = bytearray(KDBX31[0].read_bytes())
    data[150] ^= 0x10
    with pytest.raises(InvalidInput) as exc:
        read_keepass(write(tmp_path, "h.kdbx", bytes(data)), KDBX31[1])
    assert str(exc.value) == "the KeePass database is damaged: its header does not match its contents"


def _kdbx3_with_rounds(rounds: int) -> bytes:
    """The KDBX 3.1 fixture with its AES-KDF round count (header field 6) replaced."""
    data = bytearray(KDBX31[0].read_bytes())
    pos = 12
    while data[pos] != 0:  # fields: id (1 byte), length (uint16), value
        length = int.from_bytes(data[pos + 1 : pos + 3], "little")
        if data[pos] == 6:
            data[pos + 3 : pos + 11] = rounds.to_bytes(8, "little")
        pos += 3 + length
    return bytes(data)


def _kdbx4_with_kdf(path: Path, **changes: int) -> bytes:
    """A KDBX 4 file with KDF parameters changed and the header's SHA-256 recomputed (as an attacker
    would; the HMAC needs the key, so it is checked only after the KDF: hence our caps)."""
    data = bytearray(path.read_bytes())
    pos = 12
    while data[pos] != 0:  # fields: id (1 byte), length (uint32), value
        length = int.from_bytes(data[pos + 1 : pos + 5], "little")
        if data[pos] == 11:  # KdfParameters, a VariantMap: version (2), then type, key, value items
            item = pos + 5 + 2
            while data[item] != 0:
                klen = int.from_bytes(data[item + 1 : item + 5], "little")
                key = bytes(data[item + 5 : item + 5 + klen]).decode()
                vpos = item + 5 + klen
                vlen = int.from_bytes(data[vpos : vpos + 4], "little")
                if key in changes:
                    data[vpos + 4 : vpos + 4 + vlen] = changes[key].to_bytes(vlen, "little")
                item = vpos + 4 + vlen
        pos += 5 + length
    end = pos + 5 + int.from_bytes(data[pos + 1 : pos + 5], "little")
    data[end : end + 32] = hashlib.sha256(bytes(data[:end])).digest()
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("aes-rounds", lambda: _kdbx3_with_rounds(10**12)),
        ("aes-rounds-kdbx4", lambda: _kdbx4_with_kdf(KDBX4[0], R=10**12)),
        ("argon2-memory", lambda: _kdbx4_with_kdf(ARGON2[0], M=64 * 1024**3)),
        ("argon2-work", lambda: _kdbx4_with_kdf(ARGON2[0], M=1024**3, I=1000)),
        ("argon2-lanes", lambda: _kdbx4_with_kdf(ARGON2[0], P=100_000)),
    ],
)
def test_absurd_kdf_parameters_are_refused_before_deriving(tmp_path: Path, name: str, make: Any) -> None:
    start = time.monotonic()
    with pytest.raises(InvalidInput) as exc:
        read_keepass(write(tmp_path, f"{name}.kdbx", make()), "any", ARGON2[2])
    assert str(exc.value) == "the KeePass database asks for more key-derivation work than this tool accepts"
    assert time.monotonic() - start < 2


def test_cheap_kdf_changes_still_open_or_fail_as_wrong_key(tmp_path: Path) -> None:
    # The recomputed SHA-256 passes, the HMAC (keyed) does not: a tampered header is not silently used.
    data = _kdbx4_with_kdf(ARGON2[0], I=3)
    with pytest.raises(AuthenticationFailed):
        read_keepass(write(tmp_path, "i3.kdbx", data), ARGON2[1], ARGON2[2])


@settings(max_examples=30, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    composite=st.binary(min_size=32, max_size=32),
    rounds=st.integers(0, 300),
)
@example(seed=bytes(32), composite=bytes(range(32)), rounds=70_000)
def test_fast_aes_kdf_equals_pykeepass(seed: bytes, composite: bytes, rounds: int) -> None:
    assert formats_keepass.aes_kdf(seed, rounds, composite) == pykeepass_aes_kdf(seed, rounds, composite)


# --- KeePass XML: the reader's own checks ----------------------------------------------------------


def keepass_xml(entries: str, meta: str = "") -> str:
    return (
        "<?xml version='1.0' encoding='utf-8'?><KeePassFile><Meta>" + meta + "</Meta>"
        "<Root><Group><Name>Root</Name>" + entries + "</Group></Root></KeePassFile>"
    )


def entry_xml(title: str, *strings: tuple[str, str], extra: str = "") -> str:
    body = "".join(
        f"<String><Key>{k}</Key><Value>{v}</Value></String>" for k, v in (("Title", title), *strings)
    )
    return f"<Entry>{body}{extra}</Entry>"


def test_xml_totp_notations_become_otpauth_uris(tmp_path: Path) -> None:
    xml = keepass_xml(
        entry_xml("Steam", ("TOTP Seed", "JBSWY3DPEHPK3PXP"), ("TOTP Settings", "30;S"))
        + entry_xml("KeeOtp", ("otp", "key=JBSWY3DPEHPK3PXP&amp;size=8&amp;step=60"))
        + entry_xml("Hex", ("TimeOtp-Secret-Hex", "48656c6c6f21deadbeef"))
        + entry_xml("Text", ("TimeOtp-Secret", "12345678901234567890"))
        + entry_xml("B64", ("TimeOtp-Secret-Base64", "SGVsbG8h3q2+7w=="), ("TOTP Seed", "IGNOREDIGNORED22"))
    )
    creds = read_keepass_xml(write(tmp_path, "t.xml", xml))
    assert [c["totp"] for c in creds] == [
        "otpauth://totp/Steam?secret=JBSWY3DPEHPK3PXP&issuer=Steam&digits=5&encoder=steam",
        "otpauth://totp/KeeOtp?secret=JBSWY3DPEHPK3PXP&issuer=KeeOtp&period=60&digits=8",
        "otpauth://totp/Hex?secret=JBSWY3DPEHPK3PXP&issuer=Hex",
        "otpauth://totp/Text?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Text",
        "otpauth://totp/B64?secret=JBSWY3DPEHPK3PXP&issuer=B64",
    ]
    assert all(c["fields"] == {} for c in creds)  # the TOTP source fields are consumed


def test_xml_bad_totp_names_the_entry_never_the_value(tmp_path: Path) -> None:
    xml = keepass_xml(
        "<Group><Name>VPN</Name>" + entry_xml("Gateway", ("otp", "not-a-seed-0189!")) + "</Group>"
    )
    with pytest.raises(InvalidInput) as exc:
        read_keepass_xml(write(tmp_path, "t.xml", xml))
    assert refused(exc, "not-a-seed-0189!") == (
        "entry 'VPN/Gateway', field 'otp': the TOTP value is neither an otpauth:// URI nor a base32 seed"
    )


def test_xml_expiry_in_kdbx4_binary_form_and_tags(tmp_path: Path) -> None:
    seconds = int((datetime(2027, 3, 31, 12, tzinfo=UTC) - datetime(1, 1, 1, tzinfo=UTC)).total_seconds())
    stamp = base64.b64encode(seconds.to_bytes(8, "little")).decode()
    times = f"<Times><ExpiryTime>{stamp}</ExpiryTime><Expires>True</Expires></Times><Tags>a, b;a</Tags>"
    creds = read_keepass_xml(write(tmp_path, "t.xml", keepass_xml(entry_xml("X", extra=times))))
    assert (creds[0]["expires"], creds[0]["tags"]) == ("2027-03-31", ["a", "b"])
    bad = "<Times><ExpiryTime>next tuesday</ExpiryTime><Expires>True</Expires></Times>"
    with pytest.raises(InvalidInput) as exc:
        read_keepass_xml(write(tmp_path, "b.xml", keepass_xml(entry_xml("X", extra=bad))))
    assert str(exc.value) == "entry 'X': the expiry time cannot be read"


def test_xml_untitled_entries_and_duplicate_fields(tmp_path: Path) -> None:
    xml = keepass_xml(entry_xml("", ("Pin", "1"), ("Pin ", "2"), ("Empty", "")))
    [c] = read_keepass_xml(write(tmp_path, "t.xml", xml))
    assert (c["label"], c["fields"]) == ("(untitled)", {"Pin": "1", "Pin (2)": "2"})


def test_xml_compressed_attachment_bomb_is_refused(tmp_path: Path) -> None:
    bomb = base64.b64encode(gzip.compress(bytes(formats.MAX_ATTACHMENT_BYTES + 1))).decode()
    meta = f'<Binaries><Binary ID="0" Compressed="True">{bomb}</Binary></Binaries>'
    ref = '<Binary><Key>disk.img</Key><Value Ref="0"/></Binary>'
    with pytest.raises(InvalidInput) as exc:
        read_keepass_xml(write(tmp_path, "t.xml", keepass_xml(entry_xml("NAS", extra=ref), meta)))
    assert str(exc.value) == "entry 'NAS': attachment 'disk.img' is over the 16 MiB attachment limit"
    # An unreferenced bomb is never even decompressed.
    assert (
        read_keepass_xml(write(tmp_path, "u.xml", keepass_xml(entry_xml("NAS"), meta)))[0]["attachments"]
        == []
    )


@pytest.mark.parametrize(
    ("meta", "binary", "message"),
    [
        (
            "",
            '<Binary><Key>a.txt</Key><Value Ref="7"/></Binary>',
            "attachment 'a.txt' refers to data missing from the file",
        ),
        (
            '<Binaries><Binary ID="0" Compressed="True">bm90IGd6aXA=</Binary></Binaries>',
            '<Binary><Key>a.txt</Key><Value Ref="0"/></Binary>',
            "attachment 'a.txt' is damaged",
        ),
        ("", "<Binary><Key>inline.txt</Key><Value>aGVsbG8=</Value></Binary>", None),
    ],
)
def test_xml_attachment_references(tmp_path: Path, meta: str, binary: str, message: str | None) -> None:
    path = write(tmp_path, "t.xml", keepass_xml(entry_xml("E", extra=binary), meta))
    if message is None:
        assert read_keepass_xml(path)[0]["attachments"] == [{"name": "inline.txt", "data": b"hello"}]
        return
    with pytest.raises(InvalidInput) as exc:
        read_keepass_xml(path)
    assert str(exc.value) == f"entry 'E': {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<KeePassFile><Root>", "the file is not well-formed XML (line 1)"),
        ("<html/>", "the XML file is not a KeePass export (no <KeePassFile> root element)"),
        (
            '<!DOCTYPE KeePassFile [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><KeePassFile/>',
            "the XML file declares a DOCTYPE, which KeePass exports never do; refused",
        ),
        (
            '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><KeePassFile>&e;</KeePassFile>',
            "the XML file declares a DOCTYPE, which KeePass exports never do; refused",
        ),
        (
            keepass_xml(
                '<Entry><String><Key>Password</Key><Value Protected="True">bm9wZQ==</Value></String></Entry>'
            ),
            "the XML holds values encrypted with a database's inner key, which only the database can read",
        ),
        ("<KeePassFile><Root/></KeePassFile>", "the KeePass data has no root group"),
    ],
)
def test_xml_malformed_or_hostile_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_keepass_xml(write(tmp_path, "t.xml", text))
    assert str(exc.value) == message


# --- KeePass XML writer ------------------------------------------------------------------------------

HANDOVER = [
    cred(
        "Edge firewall",
        username="admin",
        secret="Fw!2024-edge <&> ",
        url="https://192.0.2.1:8443",
        notes="Line 1\nLine 2",
        category="firewall",
        tags=["firewall", "edge"],
        totp="otpauth://totp/Edge%20firewall?secret=JBSWY3DPEHPK3PXP&issuer=Edge%20firewall",
        expires="2027-03-31",
        fields={"Serial": "FGT60F-0001", "Password": "shadowed name"},
        attachments=[{"name": "fw.conf", "data": b"set hostname fw1\n"}, {"name": "fw.conf", "data": b"v2"}],
    ),
    cred("Registrar", username="ops", secret="Reg-pw", category="registrar"),
    cred("Wi-Fi", secret="wifi pässwörd"),
    cred(
        "Tenant admin",
        username="admin@acme.example",
        secret="T3nant!",
        category="tenant-admin",
        totp=totp_uri(
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "Tenant admin", period=60, digits=8, algorithm="SHA256"
        ),
    ),
]


def after_keepass_round_trip(c: ImportedCredential) -> ImportedCredential:
    """What reading our KeePass XML back gives: the group (category) leads the tags, and every
    custom field comes back as a secret field (the writers mask them all: a vault imported before
    secret fields existed holds hidden values among its plain fields)."""
    return {
        **c,
        "tags": merge_tags([c["category"]] if c["category"] else [], c["tags"]),
        "fields": {},
        "secret_fields": {**c["fields"], **c["secret_fields"]},
    }


def test_keepass_xml_is_deterministic_and_shaped_as_keepass_expects() -> None:
    xml = write_keepass_xml(HANDOVER, exported_at=WHEN, name="Handover Acme")
    assert xml == write_keepass_xml(HANDOVER, exported_at=WHEN, name="Handover Acme")
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n<KeePassFile>")
    root = etree.fromstring(xml)
    top = root.find("Root/Group")
    assert top.findtext("Name") == "Handover Acme"
    assert [e.findtext("String[Key='Title']/Value") for e in top.iterfind("Entry")] == ["Wi-Fi"]
    assert [g.findtext("Name") for g in top.iterfind("Group")] == ["firewall", "registrar", "tenant-admin"]
    edge = top.find("Group/Entry")
    values = {s.findtext("Key"): s.find("Value") for s in edge.iterfind("String")}
    assert values["Password"].get("ProtectInMemory") == "True" and values["Password"].get("Protected") is None
    assert values["otp"].text == HANDOVER[0]["totp"]
    assert values["Password (custom)"].text == "shadowed name"  # never a second "Password" key
    assert [b.findtext("Key") for b in edge.iterfind("Binary")] == ["fw.conf", "fw.conf (2)"]
    assert edge.findtext("Times/ExpiryTime") == "2027-03-31T12:00:00Z"
    assert edge.findtext("Times/CreationTime") == "2025-06-30T09:15:00Z"
    assert edge.findtext("Tags") == "edge"
    # Ids come from position and label: another export of the same list keeps them.
    later = etree.fromstring(write_keepass_xml(HANDOVER, exported_at=datetime(2030, 1, 1, tzinfo=UTC)))
    assert [u.text for u in later.iter("UUID")] == [u.text for u in root.iter("UUID")]


def handover_after_keepass() -> dict[str, ImportedCredential]:
    """HANDOVER as any KeePass reader gives it back from our XML, by label."""
    expected = [after_keepass_round_trip(c) for c in HANDOVER]
    expected[0] = {
        **expected[0],
        "secret_fields": {"Serial": "FGT60F-0001", "Password (custom)": "shadowed name"},
        "attachments": [
            {"name": "fw.conf", "data": b"set hostname fw1\n"},
            {"name": "fw.conf (2)", "data": b"v2"},
        ],
    }
    return {c["label"]: c for c in expected}


def test_keepass_xml_round_trips_through_our_reader(tmp_path: Path) -> None:
    path = write(tmp_path, "out.xml", write_keepass_xml(HANDOVER, exported_at=WHEN))
    assert {c["label"]: c for c in read_keepass_xml(path)} == handover_after_keepass()


def test_writers_rename_custom_fields_that_would_be_misread(tmp_path: Path) -> None:
    c = cred(
        "Odd",
        fields={"Password": "a", "Password (custom)": "b", "TOTP Seed": "c", "Tags": "d", "Expires": "soon"},
    )
    root = etree.fromstring(write_keepass_xml([c], exported_at=WHEN))
    keys = [s.findtext("Key") for s in root.iterfind(".//String")]
    assert keys[5:] == ["Password (custom)", "Password (custom) (2)", "TOTP Seed (custom)", "Tags", "Expires"]
    [back] = read_keepass_xml(write(tmp_path, "o.xml", write_keepass_xml([c], exported_at=WHEN)))
    assert back["totp"] is None and back["secret_fields"]["TOTP Seed (custom)"] == "c"
    [bw] = read_bitwarden(write(tmp_path, "o.json", write_bitwarden_json([c])))
    assert (bw["tags"], bw["expires"]) == ([], None)
    assert bw["secret_fields"] == {
        "Password": "a",
        "Password (custom)": "b",
        "TOTP Seed": "c",
        "Tags (custom)": "d",
        "Expires (custom)": "soon",
    }


def test_bitwarden_expires_field_that_is_not_a_date_stays_a_field(tmp_path: Path) -> None:
    item = {**LOGIN, "fields": [{"name": "Expires", "value": "with the contract", "type": 0}]}
    [c] = read_bitwarden(write(tmp_path, "e.json", json.dumps({"items": [item]})))
    assert (c["expires"], c["fields"]) == (None, {"Expires": "with the contract"})


def test_keepass_xml_refuses_what_xml_cannot_carry() -> None:
    with pytest.raises(InvalidInput) as exc:
        write_keepass_xml([cred("A"), cred("B", secret="nul\x00inside")], exported_at=WHEN)
    assert (
        refused(exc, "nul\x00inside")
        == "credential 2, secret: holds characters XML cannot carry (NUL or control codes)"
    )
    with pytest.raises(InvalidInput) as exc:
        write_keepass_xml([cred("A", expires="31/03/2027")], exported_at=WHEN)
    assert str(exc.value) == "credential 1: the expiry date must be written YYYY-MM-DD (e.g. 2027-03-31)"


# Strategies for round trips: values each reader gives back unchanged.
XML_CHAR = st.characters(
    min_codepoint=0x20, exclude_categories=("Cs",), exclude_characters="\ufffe\uffff"
) | st.sampled_from("\t\n\r")
TEXT = st.text(XML_CHAR, min_size=1, max_size=30).filter(lambda s: s.strip() != "")
NAME = st.text(XML_CHAR, min_size=1, max_size=20).map(str.strip).filter(bool)
TAG = NAME.filter(lambda s: ";" not in s and "," not in s).map(str.strip).filter(bool)
CATEGORY = NAME.filter(lambda s: "/" not in s)
RESERVED = {
    "title",
    "username",
    "password",
    "url",
    "notes",
    "otp",
    "totp seed",
    "totp settings",
    "tags",
    "expires",
}
FIELD_NAME = NAME.filter(lambda s: s.casefold() not in RESERVED and not s.startswith("TimeOtp-"))
SEED = st.binary(min_size=10, max_size=20).map(lambda b: base64.b32encode(b).decode().rstrip("="))


@st.composite
def credentials(draw: st.DrawFn, attachments: bool = True) -> ImportedCredential:
    c = new_credential(draw(NAME))
    c["username"] = draw(st.none() | TEXT)
    c["secret"] = draw(st.none() | st.text(XML_CHAR, min_size=1, max_size=40))
    c["url"] = draw(st.none() | TEXT)
    c["notes"] = draw(st.none() | TEXT)
    c["category"] = draw(st.none() | CATEGORY)
    c["tags"] = draw(st.lists(TAG, max_size=3, unique=True))
    c["totp"] = draw(
        st.none()
        | st.builds(totp_uri, SEED, NAME, period=st.sampled_from([30, 60]), digits=st.sampled_from([6, 8]))
    )
    c["expires"] = draw(
        st.none()
        | st.dates(min_value=datetime(1971, 1, 1).date(), max_value=datetime(2100, 1, 1).date()).map(str)
    )
    c["fields"] = draw(st.dictionaries(FIELD_NAME, TEXT, max_size=3))
    if attachments:
        names = draw(st.lists(NAME, max_size=2, unique=True))
        c["attachments"] = [{"name": n, "data": draw(st.binary(max_size=40))} for n in names]
    return c


@FUZZ
@given(creds=st.lists(credentials(), max_size=6))
def test_keepass_xml_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, creds: list[ImportedCredential]
) -> None:
    path = tmp_path_factory.mktemp("rt") / "out.xml"
    path.write_bytes(write_keepass_xml(creds, exported_at=WHEN))
    back = read_keepass_xml(path)
    # The writer groups by category; compare as the sets of (position-free) credentials.
    key = lambda c: json.dumps(c, sort_keys=True, default=repr)  # noqa: E731
    assert sorted(map(key, back)) == sorted(key(after_keepass_round_trip(c)) for c in creds)


# --- Bitwarden --------------------------------------------------------------------------------------

BW_EDGE = cred(
    "Edge firewall",
    username="admin",
    secret="Fw!2024-edge",
    url="https://192.0.2.1:8443",
    notes="Console: 9600 8N1\nRack B, unit 12",
    category="Network",
    tags=["Network", "Firewalls"],
    totp="otpauth://totp/Edge%20firewall:admin?secret=JBSWY3DPEHPK3PXP&issuer=Edge%20firewall",
    fields={
        "Serial": "FGT60F-0001",
        "HA pair": "true",
        "URL 2": "https://fw1.acme.example",
    },
    secret_fields={"Enable password": "en-4bl3"},  # a hidden field (type 1): a secret
)
BW_REGISTRAR = cred(
    "Domain registrar",
    username="acme-ops",
    secret="Reg1strar#pw",
    category="Registrar",
    tags=["Registrar"],
    totp="otpauth://totp/Domain%20registrar?secret=KRSXG5CTMVRXEZLU&issuer=Domain%20registrar",
)
BW_NOTE = cred("Backup encryption key", notes="Veeam recovery key: 3F7A-91C2-77D0-4B1E")


def test_bitwarden_export_reads_every_item_type() -> None:
    creds = read_bitwarden(FIXTURES / "bitwarden-export.json")
    assert creds[:3] == [BW_EDGE, BW_REGISTRAR, BW_NOTE]
    card, identity, ssh = creds[3:]
    assert card == cred(
        "Company card",
        username="Acme Ltd",
        secret="4111111111111111",
        expires="2028-02-29",  # the last day of the card's expiry month
        fields={"Brand": "Visa", "Expiry": "2/2028"},
        secret_fields={"Security code": "123"},
    )
    assert identity["username"] == "jdoe" and identity["secret"] is None
    assert identity["fields"]["First name"] == "Jane" and identity["fields"]["Email"] == "jane@acme.example"
    assert "Middle name" not in identity["fields"]  # null values are left out
    assert ssh["secret"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ssh["fields"]["Public key"].startswith("ssh-ed25519 ")
    assert "deleted-secret" not in repr(creds) and "old-firewall-password" not in repr(creds)


def test_bitwarden_organisation_export_uses_collections() -> None:
    [c] = read_bitwarden(FIXTURES / "bitwarden-org-export.json")
    assert (c["category"], c["tags"], c["secret"]) == (
        "Clients",
        ["Clients", "Acme", "Firewalls"],
        "Shared-fw-pw",
    )


@pytest.mark.parametrize(
    "doc",
    [
        {"encrypted": True, "encKeyValidation_DO_NOT_EDIT": "2.abc", "folders": [], "items": []},
        {"encrypted": True, "passwordProtected": True, "salt": "x", "kdfIterations": 600000, "data": "2.abc"},
    ],
    ids=["account-restricted", "password-protected"],
)
def test_bitwarden_encrypted_export_is_explained(tmp_path: Path, doc: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_bitwarden(write(tmp_path, "bw.json", json.dumps(doc)))
    assert str(exc.value) == "this Bitwarden export is encrypted; it can only be read by Bitwarden"
    assert exc.value.hints == (
        "export again choosing File format '.json' (not '.json (Encrypted)'), or run: bw export --format json",
    )


LOGIN = {"type": 1, "name": "A", "login": {"username": "u", "password": "Sup3r-S3cret"}}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "the JSON is not a Bitwarden export: the top level is not an object"),
        ({"folders": []}, "the JSON is not a Bitwarden export: it has no 'items' list"),
        ({"items": [LOGIN, "x"]}, "items[1] is not an object"),
        (
            {"items": [{"name": "A"}]},
            "items[0].type must be a number (1 login, 2 note, 3 card, 4 identity, 5 SSH key)",
        ),
        ({"items": [{**LOGIN, "name": 7}]}, "items[0].name must be text"),
        (
            {"items": [LOGIN, {**LOGIN, "login": {"password": ["Sup3r-S3cret"]}}]},
            "items[1].login.password must be text",
        ),
        ({"items": [{**LOGIN, "login": "Sup3r-S3cret"}]}, "items[0].login must be an object"),
        ({"items": [{**LOGIN, "login": {"uris": [{"uri": 5}]}}]}, "items[0].login.uris[0].uri must be text"),
        (
            {"items": [{**LOGIN, "fields": [{"name": "n", "value": {"v": 1}}]}]},
            "items[0].fields[0].value must be text",
        ),
        (
            {"items": [{**LOGIN, "login": {"totp": "not base32!"}}]},
            "items[0].login.totp: the TOTP value is neither an otpauth:// URI nor a base32 seed",
        ),
        ({"folders": {"id": "x"}, "items": []}, "'folders' is not a list"),
        ({"items": [{**LOGIN, "collectionIds": [3]}]}, "items[0].collectionIds[0] must be text"),
    ],
)
def test_bitwarden_malformed_names_the_place_not_the_value(tmp_path: Path, doc: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_bitwarden(write(tmp_path, "bw.json", json.dumps(doc)))
    assert refused(exc, "Sup3r-S3cret") == message


def test_bitwarden_not_json_deep_nesting_and_bom(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_bitwarden(write(tmp_path, "a.json", '{"items": [\n  {"type": 1,}\n]}'))
    assert str(exc.value) == "the file is not valid JSON (line 2, column 14)"
    with pytest.raises(InvalidInput) as exc:
        read_bitwarden(write(tmp_path, "b.json", "[" * 100_000 + "]" * 100_000))
    assert (
        str(exc.value) == "the file is not JSON this tool can read (too deeply nested or too large a number)"
    )
    with pytest.raises(InvalidInput) as exc:
        read_bitwarden(write(tmp_path, "c.json", b'{"items": ["\xff"]}'))
    assert str(exc.value) == "the Bitwarden export is not UTF-8 text (first bad byte at offset 12)"
    bom = b"\xef\xbb\xbf" + json.dumps({"items": [LOGIN]}).encode()
    assert read_bitwarden(write(tmp_path, "d.json", bom))[0]["secret"] == "Sup3r-S3cret"


def test_bitwarden_json_writer_shape_and_determinism() -> None:
    out = write_bitwarden_json(HANDOVER)
    assert out == write_bitwarden_json(HANDOVER)
    doc = json.loads(out)
    assert doc["encrypted"] is False
    assert [f["name"] for f in doc["folders"]] == ["firewall", "registrar", "tenant-admin"]
    edge = doc["items"][0]
    assert edge["folderId"] == doc["folders"][0]["id"] and doc["items"][2]["folderId"] is None
    assert (edge["type"], edge["name"]) == (1, "Edge firewall")
    assert edge["login"] == {
        "uris": [{"match": None, "uri": "https://192.0.2.1:8443"}],
        "username": "admin",
        "password": "Fw!2024-edge <&> ",
        "totp": HANDOVER[0]["totp"],
    }
    assert edge["fields"] == [
        {"name": "Serial", "value": "FGT60F-0001", "type": 1, "linkedId": None},
        {"name": "Password", "value": "shadowed name", "type": 1, "linkedId": None},
        {"name": "Tags", "value": "edge", "type": 0, "linkedId": None},
        {"name": "Expires", "value": "2027-03-31", "type": 0, "linkedId": None},
    ]


def test_bitwarden_json_round_trips_through_our_reader(tmp_path: Path) -> None:
    back = read_bitwarden(write(tmp_path, "bw.json", write_bitwarden_json(HANDOVER)))
    assert back == [{**after_keepass_round_trip(c), "attachments": []} for c in HANDOVER]


def test_bitwarden_json_refuses_unencodable_text() -> None:
    with pytest.raises(InvalidInput) as exc:
        write_bitwarden_json([cred("A"), cred("B", notes="lone \ud800 surrogate")])
    assert str(exc.value) == "credential 2: holds text that is not valid Unicode (a lone surrogate)"


JSON_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)


@FUZZ
@given(creds=st.lists(credentials(attachments=False), max_size=6))
def test_bitwarden_json_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, creds: list[ImportedCredential]
) -> None:
    path = tmp_path_factory.mktemp("bw") / "out.json"
    path.write_bytes(write_bitwarden_json(creds))
    assert read_bitwarden(path) == [after_keepass_round_trip(c) for c in creds]


# --- CSV --------------------------------------------------------------------------------------------


def test_csv_our_column_set() -> None:
    assert read_csv(FIXTURES / "handover.csv") == [
        cred(
            "Edge firewall",
            username="admin",
            secret="Fw!2024-edge",
            url="https://192.0.2.1:8443",
            notes="Console: 9600 8N1\nRack B, unit 12",
            category="firewall",
            tags=["edge", "wan"],
            totp="otpauth://totp/Edge%20firewall:admin?secret=JBSWY3DPEHPK3PXP&issuer=Edge%20firewall",
            expires="2027-03-31",
            fields={"Serial": "FGT60F-0001"},
        ),
        cred(
            "Domain registrar",
            username="acme-ops",
            secret="Reg1strar#pw",
            url="https://registrar.example",
            category="registrar",
            totp="otpauth://totp/Domain%20registrar?secret=KRSXG5CTMVRXEZLU&issuer=Domain%20registrar",
        ),
        cred("Office Wi-Fi", secret=" spaces kept ", notes="SSID acme-office", category="wifi"),
    ]


def test_csv_keepassxc_export_is_recognised() -> None:
    creds = read_csv(FIXTURES / "keepassxc-export.csv")
    from_db = keepass(KDBX31)
    # The CSV carries no custom fields, attachments, expiry or entry tags, and no TimeOtp TOTP.
    keys = ("label", "username", "secret", "url", "notes", "category")
    assert [{k: c[k] for k in keys} for c in creds] == [{k: c[k] for k in keys} for c in from_db]
    assert [c["totp"] is not None for c in creds] == [False, False, False, True, True]
    assert "Old VPN" not in repr(creds)  # the Recycle Bin row is skipped


def test_csv_bitwarden_export_is_recognised() -> None:
    creds = read_csv(FIXTURES / "bitwarden-export.csv")
    assert creds == [
        {
            **BW_EDGE,
            # Bitwarden's CSV does not say which fields are hidden.
            "fields": {
                "Serial": "FGT60F-0001",
                "Enable password": "en-4bl3",
                "URL 2": "https://fw1.acme.example",
            },
            "secret_fields": {},
        },
        BW_REGISTRAR,
        BW_NOTE,
    ]


def test_csv_mapping_case_and_semicolons(tmp_path: Path) -> None:
    path = write(
        tmp_path, "de.csv", "Titel;Benutzer;KENNWORT;Ablauf;Raum\nFirewall;admin;pw 1;2026-01-31;Keller\n"
    )
    creds = read_csv(
        path,
        {
            "titel": "label",
            "Benutzer": "username",
            "Kennwort": "PASSWORD",
            "ablauf": "expires",
            "Raum": "ignore",
        },
    )
    assert creds == [cred("Firewall", username="admin", secret="pw 1", expires="2026-01-31")]
    tabbed = write(tmp_path, "t.tsv", "LABEL\tSecret\tTags\nNAS\tx\ta, b\n")
    assert read_csv(tabbed) == [cred("NAS", secret="x", tags=["a", "b"])]


@pytest.mark.parametrize(
    ("text", "mapping", "message"),
    [
        ("Name,Password\nA,Sup3r-S3cret\n", None, "the CSV has no label column (columns: Name, Password)"),
        # No header row: the first credential stands where the names should be, and is not quoted.
        (
            "Core switch,admin,Sup3r-S3cret\nNAS,root,x\n",
            None,
            "the CSV has no label column (columns: none recognised; 3 others not shown)",
        ),
        # A damaged header that ran into the first row (as found by tests/test_adversarial_fuzz.py).
        (
            "lable,password,Core switch,Sup3r-S3cret\n",
            None,
            "the CSV has no label column (columns: password; 3 others not shown)",
        ),
        ("Name,Password\nA,x\n", {"Name": "title"}, "cannot map 'Name' to 'title'"),
        ("Name,Password\nA,x\n", {"Site": "label"}, "the CSV has no column 'Site' to map"),
        ("label,Title\nA,B\n", None, "the columns 'label' and 'Title' both give the label"),
        (
            "label,expires\nA,2027-03-31\nB,31/03/2027\n",
            None,
            "row 3: the expiry date must be written YYYY-MM-DD (e.g. 2027-03-31)",
        ),
        (
            "label,expires\nA,2027-02-30\n",
            None,
            "row 2: the expiry date must be written YYYY-MM-DD (e.g. 2027-03-31)",
        ),
        ("label,password\nA,x\n ,Sup3r-S3cret\n", None, "row 3: the label is empty"),
        ("label,password\nA,Sup3r-S3cret,extra\n", None, "row 2: has 3 cells but the header names 2 columns"),
        (
            'label,password\nA,"Sup3r-S3cret\n',
            None,
            "row 2: the CSV is malformed (an unbalanced quote, or a cell over 128 KiB)",
        ),
        (
            'label,password\nA,"x"y\n',
            None,
            "row 2: the CSV is malformed (an unbalanced quote, or a cell over 128 KiB)",
        ),
        (
            "label,totp\nA,Sup3r-S3cret!\n",
            None,
            "row 2, column 'totp': the TOTP value is neither an otpauth:// URI nor a base32 seed",
        ),
        ("", None, "the CSV file is empty: the first row must name the columns"),
    ],
)
def test_csv_errors_name_the_row_not_the_value(tmp_path: Path, text: str, mapping: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_csv(write(tmp_path, "x.csv", text), mapping)
    assert refused(exc, "Sup3r-S3cret", "31/03/2027") == message


def test_csv_missing_label_hint_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_csv(write(tmp_path, "x.csv", "Name,Password\n"))
    assert exc.value.hints == (
        "name the column that holds each credential's title, e.g. --map Title=label; "
        "check that the first line is the header row",
    )
    with pytest.raises(InvalidInput) as exc:
        read_csv(write(tmp_path, "w.csv", "label,password\nCaf\xe9,x\n".encode("cp1252")))
    assert str(exc.value) == "the CSV file is not UTF-8 text (first bad byte at offset 18)"
    assert "CSV UTF-8" in exc.value.hints[0]


def test_csv_blank_rows_are_skipped_and_bom_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "\ufefflabel,password\n,\nA,x\n\n")
    assert read_csv(path) == [cred("A", secret="x")]


# --- Files: size caps and odd paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reader", "what", "limit"),
    [
        (read_csv, "CSV file", formats.MAX_TEXT_FILE_BYTES),
        (read_bitwarden, "Bitwarden export", formats.MAX_TEXT_FILE_BYTES),
        (read_keepass_xml, "KeePass XML export", formats.MAX_TEXT_FILE_BYTES),
        (lambda p: read_keepass(p, "pw"), "KeePass database", formats.MAX_KDBX_BYTES),
    ],
    ids=["csv", "bitwarden", "keepass-xml", "kdbx"],
)
def test_oversized_files_are_refused_before_reading(
    tmp_path: Path, reader: Any, what: str, limit: int
) -> None:
    path = tmp_path / "big"
    with path.open("wb") as fh:
        fh.truncate(limit + 1)  # sparse: costs no disk, and is refused from its size alone
    with pytest.raises(InvalidInput) as exc:
        reader(path)
    assert str(exc.value) == f"the {what} {path} is 64.0 MiB, over the 64.0 MiB this tool accepts"
    assert exc.value.hints == ("export only the entries you need, or remove large attachments first",)


def test_directories_fifos_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_csv(tmp_path)
    assert str(exc.value) == f"the CSV file {tmp_path} is not a regular file"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput) as exc:
        read_bitwarden(fifo)  # must not block waiting for a writer
    assert str(exc.value) == f"the Bitwarden export {fifo} is not a regular file"
    with pytest.raises(NotFound) as nf:
        read_csv(tmp_path / "absent.csv")
    assert str(nf.value) == f"the CSV file {tmp_path / 'absent.csv'} does not exist"


# --- Shared helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("jbsw y3dp-ehpk 3pxp", "otpauth://totp/Site%20A?secret=JBSWY3DPEHPK3PXP&issuer=Site%20A"),
        ("JBSWY3DPEHPK3PXP====", "otpauth://totp/Site%20A?secret=JBSWY3DPEHPK3PXP&issuer=Site%20A"),
        (
            "steam://JBSWY3DPEHPK3PXP",
            "otpauth://totp/Site%20A?secret=JBSWY3DPEHPK3PXP&issuer=Site%20A&digits=5&encoder=steam",
        ),
        (
            "otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP&counter=3",
            "otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP&counter=3",
        ),
        (
            "key=JBSWY3DPEHPK3PXP&otpHashMode=SHA512",
            "otpauth://totp/Site%20A?secret=JBSWY3DPEHPK3PXP&issuer=Site%20A&algorithm=SHA512",
        ),
    ],
)
def test_totp_notations(value: str, expected: str) -> None:
    assert normalise_totp(value, "Site A", "here") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("otpauth://totp/x?issuer=y", "here: the otpauth:// URI has no valid base32 secret"),
        ("otpauth://totp/x?secret=0189", "here: the otpauth:// URI has no valid base32 secret"),
        (
            "otpauth://foo/x?secret=JBSWY3DPEHPK3PXP",
            "here: an otpauth:// URI must be otpauth://totp/… or otpauth://hotp/…",
        ),
        (
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=²",
            "here: the one-time password length must be a number from 4 to 10",
        ),
        (
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&period=0",
            "here: the one-time password period must be a number from 1 to 300",
        ),
        (
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&algorithm=MD5",
            "here: the one-time password algorithm must be SHA1, SHA256 or SHA512",
        ),
        ("JBSWY3", "here: the TOTP value is neither an otpauth:// URI nor a base32 seed"),
        ("steam://!!", "here: the steam:// one-time password seed is not base32"),
    ],
)
def test_totp_malformed(value: str, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        normalise_totp(value, "Site A", "here")
    assert str(exc.value) == message


@pytest.mark.parametrize("value", ["20270331", "2027-W13-3", "2027-3-31", "31.03.2027", "２０２７-03-31", ""])
def test_dates_only_as_yyyy_mm_dd(value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_date(value, "row 2")
    assert parse_date(" 2027-03-31 ", "row 2") == "2027-03-31"


# --- Fuzz: every input ends in a result or an InvalidInput -------------------------------------------

ACCEPTABLE = (InvalidInput, AuthenticationFailed)


def assert_well_formed(creds: Any) -> None:
    """Whatever a reader returns obeys ImportedCredential's contract."""
    assert isinstance(creds, list)
    for c in creds:
        assert set(c) == set(ImportedCredential.__annotations__)
        assert isinstance(c["label"], str) and c["label"].strip() == c["label"] != ""
        for key in ("username", "secret", "url", "notes", "category"):
            assert c[key] is None or (isinstance(c[key], str) and c[key] != "")
        assert c["totp"] is None or c["totp"].lower().startswith("otpauth://")
        assert c["expires"] is None or parse_date(c["expires"], "x") == c["expires"]
        assert all(isinstance(t, str) and t for t in c["tags"]) and len(set(c["tags"])) == len(c["tags"])
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in c["fields"].items())
        assert all(set(a) == {"name", "data"} and isinstance(a["data"], bytes) for a in c["attachments"])


def attempt(read: Any, *args: Any) -> None:
    try:
        result = read(*args)
    except ACCEPTABLE:
        return
    assert_well_formed(result)


KDBX_SIGNATURE = bytes.fromhex("03d9a29a67fb4bb5")
RANDOM_FILES = st.one_of(
    st.binary(max_size=1024),
    st.binary(max_size=512).map(lambda b: KDBX_SIGNATURE + bytes([1, 0, 3, 0]) + b),
    st.binary(max_size=512).map(lambda b: KDBX_SIGNATURE + bytes([0, 0, 4, 0]) + b),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
)
READERS = {
    "csv": read_csv,
    "bitwarden": read_bitwarden,
    "keepass-xml": read_keepass_xml,
    "kdbx": lambda p: read_keepass(p, "pw"),
}


@FUZZ
@given(data=RANDOM_FILES, reader=st.sampled_from(sorted(READERS)))
@example(data=b"\xef\xbb\xbf", reader="csv")
@example(data=b'"', reader="csv")
@example(data=b"label\n\x00", reader="csv")
@example(data=b"[" * 5000, reader="bitwarden")
@example(data=b"<KeePassFile>" * 3, reader="keepass-xml")
def test_fuzz_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes, reader: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "input"
    path.write_bytes(data)
    attempt(READERS[reader], path)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_kdbx(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    # The Argon2 fixture: its KDF costs milliseconds, so every mutation reaches decryption.
    raw = bytearray(ARGON2[0].read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "overwrite"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        raw[at] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        del raw[at:]
    else:
        junk = data.draw(st.binary(min_size=1, max_size=64))
        raw[at : at + len(junk)] = junk
    path = tmp_path_factory.mktemp("kdbx") / "m.kdbx"
    path.write_bytes(bytes(raw))
    try:
        result = read_keepass(path, ARGON2[1], ARGON2[2])
    except ACCEPTABLE:
        return
    assert result == [NAS]  # KDBX 4 authenticates everything: a change either fails or changed nothing


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
TOTPISH = st.sampled_from(
    ["JBSWY3DPEHPK3PXP", "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP", "steam://AB", "key=", "x"]
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | JSON


def objects(**keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return maybe(st.fixed_dictionaries({}, optional=keys))


BW_ITEM = objects(
    type=st.sampled_from([1, 2, 3, 4, 5, 6, 0, -1, True, "1", None]),
    name=JSON,
    notes=JSON,
    folderId=st.sampled_from(["f1", "f2", None]) | JSON,
    collectionIds=maybe(st.lists(st.sampled_from(["c1", "zz"]) | JSON, max_size=3)),
    deletedDate=st.none() | JSON,
    fields=maybe(
        st.lists(objects(name=JSON, value=JSON, type=st.sampled_from([0, 1, 2, 3, "x", None])), max_size=3)
    ),
    login=objects(
        username=JSON, password=JSON, totp=TOTPISH | JSON, uris=maybe(st.lists(objects(uri=JSON), max_size=3))
    ),
    card=objects(
        cardholderName=JSON,
        number=JSON,
        expMonth=st.sampled_from(["2", "13", "²", "02"]) | JSON,
        expYear=st.sampled_from(["2028", "28"]) | JSON,
    ),
    identity=objects(firstName=JSON, username=JSON, ssn=JSON),
    sshKey=objects(privateKey=JSON, publicKey=JSON),
    bankAccount=JSON,
)
BW_DOC = objects(
    encrypted=st.sampled_from([False, True, None, "false"]),
    folders=maybe(st.lists(objects(id=st.sampled_from(["f1", "f2"]) | JSON, name=JSON), max_size=3)),
    collections=maybe(st.lists(objects(id=st.sampled_from(["c1"]) | JSON, name=JSON), max_size=2)),
    items=maybe(st.lists(BW_ITEM, max_size=4)),
)


@FUZZ
@given(doc=BW_DOC)
def test_fuzz_bitwarden_json_shapes(tmp_path_factory: pytest.TempPathFactory, doc: Any) -> None:
    path = tmp_path_factory.mktemp("bw") / "bw.json"
    path.write_text(json.dumps(doc))
    attempt(read_bitwarden, path)


CELL = st.text(st.characters(exclude_categories=("Cs",)), max_size=16) | st.sampled_from(
    ["2027-03-31", "2027-02-30", "JBSWY3DPEHPK3PXP", "Root/Recycle Bin", "Root/A/B", "a: b\nc", "x,y", ""]
)
HEADER = st.lists(
    st.sampled_from(
        [
            "label",
            "Title",
            "name",
            "password",
            "login_password",
            "Group",
            "Username",
            "expires",
            "totp",
            "tags",
            "category",
            "fields",
            "login_uri",
            "folder",
            "collections",
            "url",
            "notes",
            "Extra",
            "",
        ]
    )
    | st.text(max_size=6),
    min_size=1,
    max_size=8,
)
MAPPING = st.none() | st.dictionaries(
    st.sampled_from(["label", "Title", "Extra", "nope"]) | st.text(max_size=5),
    st.sampled_from(["label", "password", "expires", "totp", "ignore", "bogus"]),
    max_size=3,
)


@FUZZ
@given(
    header=HEADER,
    rows=st.lists(st.lists(CELL, max_size=9), max_size=5),
    mapping=MAPPING,
    delimiter=st.sampled_from(",;\t"),
)
def test_fuzz_csv_tables(
    tmp_path_factory: pytest.TempPathFactory,
    header: list[str],
    rows: list[list[str]],
    mapping: Any,
    delimiter: str,
) -> None:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows([header, *rows])
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    attempt(read_csv, path, mapping)


XML_TAGS = [
    "Group",
    "Entry",
    "String",
    "Key",
    "Value",
    "Times",
    "Expires",
    "ExpiryTime",
    "Binary",
    "Tags",
    "Name",
    "UUID",
    "History",
]
XML_TEXT = st.text(XML_CHAR, max_size=12) | st.sampled_from(
    [
        "True",
        "Title",
        "Password",
        "otp",
        "TOTP Seed",
        "TimeOtp-Secret-Hex",
        "2027-03-31T12:00:00Z",
        "AAAAAAAAAAA=",
        "zz",
        "0",
    ]
)
XML_NODE = st.recursive(
    st.tuples(
        st.sampled_from(XML_TAGS),
        st.dictionaries(st.sampled_from(["Ref", "ID", "Compressed"]), XML_TEXT, max_size=2),
        XML_TEXT,
        st.just(()),
    ),
    lambda inner: st.tuples(
        st.sampled_from(XML_TAGS), st.just({}), XML_TEXT, st.lists(inner, max_size=4).map(tuple)
    ),
    max_leaves=25,
)


def render(parent: Any, node: tuple[str, dict[str, str], str, tuple[Any, ...]]) -> None:
    tag, attrib, text, children = node
    el = etree.SubElement(parent, tag, attrib)
    el.text = text
    for child in children:
        render(el, child)


@FUZZ
@given(
    nodes=st.lists(XML_NODE, max_size=4),
    binaries=st.lists(st.tuples(XML_TEXT, st.sampled_from(["True", "False"]), XML_TEXT), max_size=2),
)
def test_fuzz_keepass_xml_trees(
    tmp_path_factory: pytest.TempPathFactory, nodes: list[Any], binaries: list[Any]
) -> None:
    doc = etree.Element("KeePassFile")
    store = etree.SubElement(etree.SubElement(doc, "Meta"), "Binaries")
    for ident, compressed, text in binaries:
        etree.SubElement(store, "Binary", ID=ident, Compressed=compressed).text = text
    group = etree.SubElement(etree.SubElement(doc, "Root"), "Group")
    for node in nodes:
        render(group, node)
    path = tmp_path_factory.mktemp("xml") / "t.xml"
    path.write_bytes(etree.tostring(doc))
    attempt(read_keepass_xml, path)


# --- Interop: the real keepassxc-cli ----------------------------------------------------------------


def keepassxc(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("keepassxc-cli"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def totp_code(secret: str, at: float, *, digits: int = 6, period: int = 30, algorithm: str = "sha1") -> str:
    """RFC 6238, written out here so the test does not trust the code under test."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // period), algorithm).digest()
    offset = mac[-1] & 0x0F
    return str((int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF) % 10**digits).zfill(digits)


@pytest.mark.interop
def test_interop_regenerated_fixtures_read_like_the_committed_ones(tmp_path: Path) -> None:
    need("keepassxc-cli")
    script = FIXTURES / "make_keepass_fixtures.sh"
    done = subprocess.run(
        ["sh", str(script), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fresh = {
        name: (tmp_path / path.name, pw, kf and tmp_path / kf.name)
        for name, (path, pw, kf) in {"kdbx31": KDBX31, "kdbx4": KDBX4, "argon2": ARGON2}.items()
    }
    assert fresh["kdbx31"][0].read_bytes()[8:12] == bytes([1, 0, 3, 0])
    assert fresh["kdbx4"][0].read_bytes()[8:12] == bytes([0, 0, 4, 0])
    assert read_keepass(*fresh["kdbx31"]) == keepass(KDBX31)
    assert read_keepass(*fresh["kdbx4"]) == keepass(KDBX4)
    assert read_keepass(*fresh["argon2"]) == [NAS]
    assert read_keepass_xml(tmp_path / "keepassxc-export.xml") == keepass(KDBX31)
    assert read_csv(tmp_path / "keepassxc-export.csv") == read_csv(FIXTURES / "keepassxc-export.csv")


@pytest.mark.interop
def test_interop_keepassxc_imports_our_xml_with_secrets_intact(tmp_path: Path) -> None:
    xml = write(
        tmp_path,
        "credentials.keepass.xml",
        write_keepass_xml(HANDOVER, exported_at=WHEN, name="Handover Acme"),
    )
    db = tmp_path / "successor.kdbx"
    # `import` reads the new database's password twice from stdin; -p is required, -t keeps it fast.
    done = keepassxc("import", "-q", "-p", "-t", "100", str(xml), str(db), stdin="succ-pw\nsucc-pw\n")
    assert done.returncode == 0, done.stderr
    for c in HANDOVER:
        entry = f"{c['category']}/{c['label']}" if c["category"] else c["label"]
        wanted = {"Password": c["secret"], "UserName": c["username"], "URL": c["url"]}
        if c["totp"]:
            wanted["otp"] = c["totp"]  # asking for an attribute the entry lacks is an error
        args = [arg for name in wanted for arg in ("-a", name)]
        shown = keepassxc("show", "-q", "-s", *args, str(db), entry, stdin="succ-pw\n")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == "".join(f"{v or ''}\n" for v in wanted.values()), entry
    # KeePassXC computes the same one-time codes from our otpauth URIs (SHA-256, 8 digits, 60 s too).
    for c, params in ((HANDOVER[0], {}), (HANDOVER[3], {"digits": 8, "period": 60, "algorithm": "sha256"})):
        entry = f"{c['category']}/{c['label']}"
        shown = keepassxc("show", "-q", "-t", str(db), entry, stdin="succ-pw\n")
        secret = str(c["totp"]).split("secret=")[1].split("&")[0]
        now = time.time()
        codes = {totp_code(secret, now + delta, **params) for delta in (-30, 0, 30)}  # type: ignore[arg-type]
        assert shown.stdout.strip() in codes
    exported = keepassxc(
        "attachment-export",
        "-q",
        "--stdout",
        str(db),
        "firewall/Edge firewall",
        "fw.conf (2)",
        stdin="succ-pw\n",
    )
    assert exported.stdout == "v2"
    # And the database KeePassXC wrote reads back, through our reader, as what we wrote.
    assert {c["label"]: c for c in read_keepass(db, "succ-pw")} == handover_after_keepass()
    with pytest.raises(AuthenticationFailed) as exc:  # a wrong password on what KeePassXC wrote
        read_keepass(db, "succ-pw ")
    assert refused(exc, "succ-pw") == WRONG_KEY


@pytest.mark.interop
def test_interop_keepassxc_csv_export_of_our_import_reads_back(tmp_path: Path) -> None:
    xml = write(tmp_path, "c.xml", write_keepass_xml(HANDOVER, exported_at=WHEN))
    db = tmp_path / "c.kdbx"
    assert keepassxc("import", "-q", "-p", "-t", "100", str(xml), str(db), stdin="pw\npw\n").returncode == 0
    exported = keepassxc("export", "-q", "-f", "csv", str(db), stdin="pw\n")
    back = read_csv(write(tmp_path, "c.csv", exported.stdout))
    # KeePassXC rewrites otpauth URIs in its own form (account name, explicit defaults): compare
    # what the codes depend on.
    assert {(c["label"], c["secret"], c["category"], otp_params(c["totp"])) for c in back} == {
        (c["label"], c["secret"], c["category"], otp_params(c["totp"])) for c in HANDOVER
    }


def otp_params(uri: str | None) -> tuple[str, int, int, str] | None:
    if uri is None:
        return None
    query = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query).items()}
    return (
        query["secret"],
        int(query.get("period", 30)),
        int(query.get("digits", 6)),
        query.get("algorithm", "SHA1"),
    )


def _as_lxml(el: Any) -> Any:
    """The same tree as an lxml element (the writer builds it with the standard library)."""
    out = etree.Element(el.tag, dict(el.attrib))
    out.text = el.text
    for child in el:
        out.append(_as_lxml(child))
    return out


ESCAPED = st.lists(st.sampled_from([*"&<>\"'\r\n\t ;#]", "]]>", "é", "\u2028"]), min_size=1, max_size=12).map(
    "".join
)


@settings(max_examples=100, deadline=None)
@given(creds=st.lists(credentials(), max_size=4), odd=ESCAPED, name=ESCAPED)
def test_keepass_xml_writer_gives_exactly_lxmls_bytes(
    creds: list[ImportedCredential], odd: str, name: str
) -> None:
    """Our serializer against lxml's pretty printer on the same tree: not one byte differs, so every
    importer that read lxml's output reads ours (a carriage return stays a carriage return)."""
    creds = [*creds, cred(odd, username=odd, secret=odd, notes=odd, fields={odd: odd})]
    ours = write_keepass_xml(creds, exported_at=WHEN, name=name)
    doc = formats_keepass_write.document(creds, exported_at=WHEN, name=name)
    theirs = etree.tostring(
        _as_lxml(doc), xml_declaration=True, encoding="UTF-8", standalone=True, pretty_print=True
    )
    assert ours == bytes(theirs)


def test_an_export_does_not_load_lxml(tmp_path: Path) -> None:
    """The bundle's KeePass XML is written without lxml (about 4.5 MiB of the export's memory)."""
    code = (
        "import sys; from handover_vault.formats.common import write_keepass_xml; "
        "write_keepass_xml([]); print('lxml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
