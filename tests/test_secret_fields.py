"""Fields a password manager marks hidden are secrets here too (DESIGN §5, §8).

The review: imported Bitwarden hidden fields, card codes, SSN/passport numbers and KeePass protected
strings went into plain ``fields``, which `cred show --json` and `cred list --json` printed without
`--reveal` and without an audit entry. Also here: a KDBX whose payload is a decompression bomb.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from tests.conftest import cli_env, handover_cmd, run

HIDDEN = {"Enable password": "en-h1dden-4bl3", "Security code": "c0de-917", "Social security number": "ssn-078-05-1120",
          "Passport number": "pp-X1234567", "Licence number": "lic-D123-456"}  # fmt: skip
PLAIN = "Serial FGT60F-0001"


def _bitwarden(path: Path) -> Path:
    items = [
        {
            "type": 1,
            "name": "Edge firewall",
            "login": {"username": "admin", "password": "Fw-main-s3cret"},
            "fields": [
                {"name": "Serial", "value": PLAIN, "type": 0},
                {"name": "Enable password", "value": HIDDEN["Enable password"], "type": 1},
            ],
        },
        {"type": 3, "name": "Company card", "card": {"cardholderName": "Acme", "number": "4111111111111111",
                                                    "code": HIDDEN["Security code"], "brand": "Visa"}},
        {"type": 4, "name": "Director", "identity": {"firstName": "Jane", "ssn": HIDDEN["Social security number"],
                                                     "passportNumber": HIDDEN["Passport number"],
                                                     "licenseNumber": HIDDEN["Licence number"]}},
    ]  # fmt: skip
    path.write_text(json.dumps({"encrypted": False, "items": items}))
    return path


def _reveals(vault: Path) -> list[dict]:
    listed = json.loads(run(["audit", "list", "--json"], vault).stdout)
    return [e for e in listed if e["action"] == "cred.reveal"]


def _assert_hidden(text: str) -> None:
    leaked = [name for name, value in HIDDEN.items() if value in text]
    assert leaked == [], f"hidden fields shown without --reveal: {leaked}"


def test_bitwarden_hidden_fields_are_secrets(acme, vault_path: Path, tmp_path: Path) -> None:
    acme.close()
    done = run(["import", "bitwarden", "acme", str(_bitwarden(tmp_path / "bw.json"))], vault_path)
    assert done.returncode == 0, done.stderr
    before = len(_reveals(vault_path))
    for args in (
        ["cred", "list", "acme", "--json"],
        ["cred", "list", "acme"],
        *[
            ["cred", "show", "acme", label, *j]
            for label in ("Edge firewall", "Company card", "Director")
            for j in ([], ["--json"])
        ],
        ["search", "edge"],
        ["search", "director", "--json"],
    ):
        shown = run(args, vault_path)
        assert shown.returncode == 0, (args, shown.stderr)
        _assert_hidden(shown.stdout + shown.stderr)
    assert len(_reveals(vault_path)) == before  # nothing was revealed, nothing audited
    shown = json.loads(run(["cred", "show", "acme", "Edge firewall", "--json"], vault_path).stdout)
    assert shown["fields"] == {"Serial": PLAIN} and shown["hidden_fields"] == ["Enable password"]
    human = run(["cred", "show", "acme", "Edge firewall"], vault_path).stdout
    assert "Enable password  (hidden; --reveal to show)" in human

    # Revealed: shown, and audited naming the hidden fields (never their values).
    revealed = json.loads(run(["cred", "show", "acme", "Director", "--reveal", "--json"], vault_path).stdout)
    assert revealed["secret_fields"] == {
        k: HIDDEN[k] for k in ("Social security number", "Passport number", "Licence number")
    }
    human = run(["cred", "show", "acme", "Company card", "--reveal"], vault_path).stdout
    assert HIDDEN["Security code"] in human
    entries = _reveals(vault_path)
    assert len(entries) == before + 2
    assert entries[-1]["detail"]["hidden_fields"] == ["Security code"]
    assert entries[-2]["detail"]["hidden_fields"] == [
        "Licence number",
        "Passport number",
        "Social security number",
    ]
    assert not any(v in json.dumps(entries) for v in HIDDEN.values())


def test_keepass_protected_strings_are_secrets(acme, vault_path: Path, tmp_path: Path) -> None:
    from pykeepass import create_database

    acme.close()
    db = create_database(str(tmp_path / "db.kdbx"), password="kp-pw")
    entry = db.add_entry(db.root_group, "Core switch", "admin", "Sw-main-s3cret")
    entry.set_custom_property("Enable password", HIDDEN["Enable password"], protect=True)
    entry.set_custom_property("Serial", PLAIN)
    db.save()
    done = run(
        ["import", "keepass", "acme", str(tmp_path / "db.kdbx")],
        vault_path,
        env={"HANDOVER_IMPORT_PASSPHRASE": "kp-pw"},
    )
    assert done.returncode == 0, done.stderr
    for args in (["cred", "show", "acme", "Core switch", "--json"], ["cred", "list", "acme", "--json"]):
        shown = run(args, vault_path)
        _assert_hidden(shown.stdout)
        assert PLAIN in shown.stdout  # the unprotected field is shown as before
    revealed = json.loads(
        run(["cred", "show", "acme", "Core switch", "--reveal", "--json"], vault_path).stdout
    )
    assert revealed["secret_fields"] == {"Enable password": HIDDEN["Enable password"]}
    assert _reveals(vault_path)[-1]["detail"]["hidden_fields"] == ["Enable password"]


def test_hidden_fields_reach_the_successor_like_the_secret(acme, vault_path: Path, tmp_path: Path) -> None:
    from pyrage import x25519

    acme.close()
    assert (
        run(["import", "bitwarden", "acme", str(_bitwarden(tmp_path / "bw.json"))], vault_path).returncode
        == 0
    )
    ident = x25519.Identity.generate()
    key = tmp_path / "k.txt"
    key.write_text(str(ident) + "\n")
    out = tmp_path / "b.tar.age"
    done = run(
        ["export", "acme", "--recipient", str(ident.to_public()), "--force", "--out", str(out)], vault_path
    )
    assert done.returncode == 0, done.stderr
    opened = run(
        ["bundle", "open", str(out), "--identity", str(key), "--to", str(tmp_path / "o")], passphrase=None
    )
    assert opened.returncode == 0, opened.stderr
    (root,) = (tmp_path / "o").iterdir()
    creds = {c["label"]: c for c in json.loads((root / "credentials.json").read_text())}
    assert creds["Edge firewall"]["secret_fields"] == {"Enable password": HIDDEN["Enable password"]}
    xml = (root / "credentials.keepass.xml").read_text()
    assert f'<Value ProtectInMemory="True">{HIDDEN["Enable password"]}</Value>' in xml
    bw = json.loads((root / "credentials.bitwarden.json").read_text())
    fields = {f["name"]: f for item in bw["items"] for f in item["fields"]}
    assert fields["Enable password"] == {
        "name": "Enable password",
        "value": HIDDEN["Enable password"],
        "type": 1,
        "linkedId": None,
    }
    assert fields["Security code"]["type"] == 1


# --- a KDBX decompression bomb -------------------------------------------------------------------

BOMB_MIB = 1024


def _gzip_of_zeros(mib: int) -> bytes:
    """A gzip stream of ``mib`` MiB of zeros, about 1 MiB long, made in a second or two: one
    full-flushed deflate block for 1 MiB of zeros, repeated (each block stands alone)."""
    chunk = b"\0" * (1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + block * mib + c.flush() + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)


def test_a_kdbx_bomb_is_refused_with_bounded_memory(acme, vault_path: Path, tmp_path: Path) -> None:
    from pykeepass import create_database
    from pykeepass.kdbx_parsing import common

    acme.close()
    bomb = _gzip_of_zeros(BOMB_MIB)
    db = create_database(str(tmp_path / "bomb.kdbx"), password="kp-pw")
    # pykeepass compresses the XML it writes; this once it writes the bomb instead (a real KDBX
    # around it: header, key derivation, encryption and HMAC blocks all valid).
    encode = common.Decompressed._encode
    common.Decompressed._encode = lambda self, obj, con, path: bomb  # type: ignore[method-assign]
    try:
        db.save()
    finally:
        common.Decompressed._encode = encode  # type: ignore[method-assign]
    assert (tmp_path / "bomb.kdbx").stat().st_size < 2 << 20
    env = cli_env(
        vault_path,
        "correct horse battery staple",
        {"HANDOVER_IMPORT_PASSPHRASE": "kp-pw", "HANDOVER_NO_AGENT": "1"},
    )
    # Linux carries ru_maxrss across fork and exec: a child forked by this (large) test process would
    # report this process's size. A small launcher forks the command and reports its child's peak.
    launcher = (
        "import json, os, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,"
        " stderr=subprocess.PIPE)\n"
        "err = p.stderr.read()\n"
        "_pid, status, usage = os.wait4(p.pid, 0)\n"
        "print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss, err.decode()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", launcher, *handover_cmd(), "import", "keepass", "acme", str(tmp_path / "bomb.kdbx")],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
    )  # fmt: skip
    code, maxrss, err = json.loads(done.stdout)
    assert code == 1, err
    assert err.startswith("Error: the KeePass database's contents expand to more than 128 MiB; refused"), err
    # ru_maxrss is in KiB: the 128 MiB cap plus the program, far below the bomb's 1 GiB.
    assert maxrss < 512 * 1024, f"peak {maxrss // 1024} MiB"
    assert (
        json.loads(run(["cred", "list", "acme", "--json"], vault_path).stdout)[0]["label"] == "Firewall admin"
    )
