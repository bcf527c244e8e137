"""Imports through the installed command, with files made by the real keepassxc-cli."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need, run

FIXTURES = Path(__file__).parent / "fixtures"
KDBX_PASSWORD = "kdbx test password"


def _kdbx_with_keepassxc(tmp: Path) -> Path:
    """A KDBX 4 database made by keepassxc-cli itself, with two entries."""
    cli = need("keepassxc-cli")
    db = tmp / "made-by-keepassxc.kdbx"
    pw = f"{KDBX_PASSWORD}\n"
    subprocess.run(
        [cli, "db-create", "-q", "-t", "100", "-p", str(db)],
        input=pw + pw,
        text=True,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [cli, "mkdir", "-q", str(db), "Network"], input=pw, text=True, check=True, capture_output=True
    )
    for path, user, secret, url in (
        ("Network/Core router", "netadmin", "R0uter-s3cret!", "https://10.0.0.254"),
        ("Mail admin", "postmaster", "M@il-s3cret-2", "https://mail.example"),
    ):
        subprocess.run(
            [cli, "add", "-q", "-u", user, "--url", url, "-p", str(db), path],
            input=pw + secret + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
    return db


def _cred_count(vault: Path) -> int:
    return len(json.loads(run(["cred", "list", "acme", "--json"], vault=vault).stdout))


@pytest.fixture
def client(v, vault_path: Path) -> Path:
    v.clients.add("acme", name="ACME Ltd")
    v.close()
    return vault_path


@pytest.mark.interop
def test_kdbx_made_by_keepassxc_imports_with_secrets_intact(client: Path, tmp_path: Path) -> None:
    db = _kdbx_with_keepassxc(tmp_path)
    env = {"HANDOVER_IMPORT_PASSPHRASE": KDBX_PASSWORD}
    dry = run(["import", "keepass", "acme", str(db), "--dry-run"], vault=client, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would add 2 credential(s)" in dry.stdout and "R0uter" not in dry.stdout
    assert _cred_count(client) == 0
    done = run(["import", "keepass", "acme", str(db)], vault=client, env=env)
    assert done.returncode == 0, done.stderr
    assert "Imported 2 credential(s)" in done.stdout
    shown = json.loads(
        run(["cred", "show", "acme", "Core router", "--reveal", "--json"], vault=client).stdout
    )
    assert shown["secret"] == "R0uter-s3cret!" and shown["username"] == "netadmin"
    assert "Network" in shown["tags"]
    again = run(["import", "keepass", "acme", str(db)], vault=client, env=env)
    assert "skipped 2 duplicate(s)" in again.stdout
    assert _cred_count(client) == 2
    events = json.loads(run(["audit", "list", "--json"], vault=client).stdout)
    imports = [e for e in events if e["action"] == "import.keepass"]
    assert [e["detail"]["added"] for e in imports] == [2, 0]
    assert "R0uter" not in json.dumps(events)


@pytest.mark.interop
def test_wrong_kdbx_password_is_refused_and_adds_nothing(client: Path, tmp_path: Path) -> None:
    db = _kdbx_with_keepassxc(tmp_path)
    done = run(
        ["import", "keepass", "acme", str(db)], vault=client, env={"HANDOVER_IMPORT_PASSPHRASE": "wrong"}
    )
    assert done.returncode == 3
    assert done.stderr.startswith(
        "Error: the KeePass database could not be opened: wrong password or key file"
    )
    assert "wrong" not in done.stderr.split("opened")[0]
    assert _cred_count(client) == 0


def test_committed_kdbx_fixtures_import(client: Path) -> None:
    for name, pw in (("keepassxc-kdbx31.kdbx", "fixture-kdbx31"), ("keepassxc-kdbx4.kdbx", "fixture-kdbx4")):
        done = run(
            ["import", "keepass", "acme", str(FIXTURES / name)],
            vault=client,
            env={"HANDOVER_IMPORT_PASSPHRASE": pw},
        )
        assert done.returncode == 0, done.stderr
    assert _cred_count(client) >= 4


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\xff garbage", b'{"encrypted": true, "items": []}', b"[1,2"],
    ids=["empty", "binary", "encrypted", "truncated"],
)
def test_malformed_bitwarden_file_is_refused_cleanly(client: Path, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    done = run(["import", "bitwarden", "acme", str(bad)], vault=client)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and "Traceback" not in done.stderr
    assert _cred_count(client) == 0


def test_csv_with_header_mapping(client: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("Title,Login,Pass,Site\nNAS admin,root,n4s-s3cret,https://nas.local\n")
    done = run(
        [
            "import",
            "csv",
            "acme",
            str(sheet),
            "--map",
            "Title=label",
            "--map",
            "Login=username",
            "--map",
            "Pass=password",
            "--map",
            "Site=url",
        ],
        vault=client,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(run(["cred", "show", "acme", "NAS admin", "--reveal", "--json"], vault=client).stdout)
    assert shown["secret"] == "n4s-s3cret" and shown["url"] == "https://nas.local"


def test_import_is_one_transaction(client: Path) -> None:
    """When the import's audit entry cannot be written, no credential of the file remains."""
    con = sqlite3.connect(client)
    con.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'refused'); END")
    con.commit()
    con.close()
    done = run(["import", "bitwarden", "acme", str(FIXTURES / "bitwarden-export.json")], vault=client)
    assert done.returncode == 1
    con = sqlite3.connect(client)
    con.execute("DROP TRIGGER no_audit")
    con.commit()
    assert con.execute("SELECT count(*) FROM records WHERE kind = 'cred'").fetchone()[0] == 0
    con.close()


@pytest.mark.interop
def test_bundle_keepass_xml_imports_into_keepassxc(client: Path, tmp_path: Path) -> None:
    """The successor's path: the bundle's credentials.keepass.xml into a new KeePassXC database."""
    cli = need("keepassxc-cli")
    age_keygen = need("age-keygen")
    run(
        [
            "cred",
            "add",
            "acme",
            "Firewall admin",
            "--username",
            "admin",
            "--category",
            "firewall",
            "--url",
            "https://fw.example",
        ],
        vault=client,
        input="Fw!x-s3cret 42\n",
    )
    key = tmp_path / "key.txt"
    subprocess.run([age_keygen, "-o", str(key)], check=True, capture_output=True)
    public = re.search(r"public key: (age1\w+)", key.read_text()).group(1)
    out = tmp_path / "b.tar.age"
    assert (
        run(["export", "acme", "--force", "--recipient", public, "--out", str(out)], vault=client).returncode
        == 0
    )
    target = tmp_path / "opened"
    assert (
        run(["bundle", "open", str(out), "--to", str(target), "-i", str(key)], passphrase=None).returncode
        == 0
    )
    (xml,) = target.rglob("credentials.keepass.xml")
    db = tmp_path / "successor.kdbx"
    subprocess.run(
        [cli, "import", "-q", "-t", "100", "-p", str(xml), str(db)],
        input="succ-pw\nsucc-pw\n",
        text=True,
        check=True,
        capture_output=True,
    )
    ls = subprocess.run(
        [cli, "ls", "-R", "-f", "-q", str(db)], input="succ-pw\n", text=True, capture_output=True, check=True
    ).stdout
    entry = next(line.strip() for line in ls.splitlines() if line.strip().endswith("Firewall admin"))
    shown = subprocess.run(
        [cli, "show", "-q", "-s", "-a", "Password", str(db), entry],
        input="succ-pw\n",
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    assert shown.strip() == "Fw!x-s3cret 42"
