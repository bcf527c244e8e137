"""The handover bundle end to end, as a successor would meet it: the real `age`, `tar`, `ssh-keygen`."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import need, run

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

SECRETS = {
    "Firewall admin": "Fw-s3cret-0001",
    "Registrar": "Reg-s3cret-0002",
    "M365 admin": "Ten-s3cret-0003",
    "Backup key": "Bk-s3cret-0004",
    "MFA recovery": "Mfa-s3cret-0005",
}
HOSTILE_DOC = (
    '# Evil\n\n<script>alert(1)</script>\n\n<img src="https://evil.example/x.png" onerror="alert(2)">\n\n'
    '[click](javascript:alert(3)) ![pixel](https://tracker.example/p.gif) <a href="https://x.example" '
    'onclick="steal()">x</a>\n'
)


def _age_keygen(tmp: Path) -> tuple[Path, str]:
    key = tmp / "successor.txt"
    subprocess.run([need("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    public = re.search(r"public key: (age1\w+)", key.read_text()).group(1)
    return key, public


@pytest.fixture
def ready(acme, vault_target: Path | str, tmp_path: Path):
    """A client with no blocking gap, sealed to a key made by the standard age-keygen."""
    v = acme
    for label, cat in (
        ("Registrar", "registrar"),
        ("M365 admin", "tenant-admin"),
        ("Backup key", "backup-key"),
        ("MFA recovery", "mfa-recovery"),
    ):
        v.creds.add(
            "acme",
            label=label,
            username="admin",
            secret=SECRETS[label],
            category=cat,
            url="https://example.com",
        )
    v.docs.add("acme", title="Hostile page", body=HOSTILE_DOC)
    v.issues.add(
        "acme", title="Core switch EOL", severity="critical", risk="outage", workaround="spare on shelf"
    )
    key, public = _age_keygen(tmp_path)
    from handover_vault.agreement import record_ack

    record_ack(v, "acme", by="Jane Doe", role="Office manager", date="2026-11-20", method="signed-form")
    from handover_vault.bundle.export import set_successor

    set_successor(v, "acme", "Next IT", [public])
    v.close()
    return vault_target, key


def _export(vault: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(["export", "acme", "--out", str(out), *extra], vault=vault)


def _extract_with_age(bundle: Path, key: Path, dest: Path) -> Path:
    dest.mkdir()
    age = subprocess.run([need("age"), "-d", "-i", str(key), str(bundle)], capture_output=True, check=True)
    subprocess.run(["tar", "x", "-C", str(dest)], input=age.stdout, check=True)
    (root,) = dest.iterdir()
    return root


def test_successor_opens_bundle_with_age_and_tar(ready, tmp_path: Path) -> None:
    vault, key = ready
    out = tmp_path / "acme.tar.age"
    done = _export(vault, out)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    root = _extract_with_age(out, key, tmp_path / "x")
    names = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert {
        "index.html",
        "HANDOVER.md",
        "client.json",
        "assets.csv",
        "credentials.csv",
        "credentials.json",
        "known-issues.md",
        "known-issues.json",
        "acknowledgement.html",
        "manifest.json",
        "manifest.sig",
        "signer.pub",
        "credentials.keepass.xml",
        "credentials.bitwarden.json",
    } <= names
    assert any(n.startswith("docs/") and "Network-overview" in n for n in names)
    creds = json.loads((root / "credentials.json").read_text())
    assert {c["label"]: c["secret"] for c in creds if c["label"] in SECRETS} == SECRETS
    client = json.loads((root / "client.json").read_text())
    assert client["contacts"][0]["email"] == "jane@acme.example"
    assert "fw1" in (root / "assets.csv").read_text()
    issues = json.loads((root / "known-issues.json").read_text())
    assert {i["title"] for i in issues} == {"Backups untested", "Core switch EOL"}
    report = (root / "HANDOVER.md").read_text()
    assert "Rotate on receipt" in report and "- [ ] Firewall admin" in report
    manifest = json.loads((root / "manifest.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    for name in names - {"manifest.json", "manifest.sig", "signer.pub"}:
        data = (root / name).read_bytes()
        assert listed[name]["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert listed[name]["size"] == len(data)
    assert set(listed) == names - {"manifest.json", "manifest.sig", "signer.pub"}


def test_index_html_runs_nothing_and_fetches_nothing(ready, tmp_path: Path) -> None:
    vault, key = ready
    out = tmp_path / "b.tar.age"
    assert _export(vault, out).returncode == 0
    root = _extract_with_age(out, key, tmp_path / "x")
    for page in ("index.html", "acknowledgement.html"):
        html = (root / page).read_text()
        tags = re.findall(r"<[a-zA-Z][^>]*>", html)
        assert not [
            t for t in tags if t.lower().startswith(("<script", "<img", "<iframe", "<link", "<object"))
        ]
        assert not [t for t in tags if re.search(r"\son\w+\s*=", t, re.I)], "event handler attribute"
        assert not [
            t
            for t in tags
            if re.search(r"\s(src|href|action|srcset)\s*=\s*[\"']?\s*([a-z][a-z0-9+.-]*:|//)", t, re.I)
            and not re.search(r"href\s*=\s*[\"']?mailto:", t, re.I)
        ], "external or scripted URL attribute"
    html = (root / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript' not in html.lower()


def test_bundle_verify_passes_then_names_an_altered_file(ready, tmp_path: Path) -> None:
    vault, key = ready
    out = tmp_path / "b.tar.age"
    assert _export(vault, out).returncode == 0
    ok = run(["bundle", "verify", str(out), "--identity", str(key)], passphrase=None)
    assert ok.returncode == 0, ok.stderr
    assert "Bundle OK" in ok.stdout
    # Re-seal with one altered file using the standard tools: age + tar.
    root = _extract_with_age(out, key, tmp_path / "x")
    (root / "credentials.csv").write_text("label,secret\r\nFirewall admin,attacker\r\n")
    tar_path = tmp_path / "altered.tar"
    subprocess.run(["tar", "c", "-C", str(root.parent), "-f", str(tar_path), root.name], check=True)
    public = re.search(r"public key: (age1\w+)", key.read_text()).group(1)
    altered = tmp_path / "altered.tar.age"
    subprocess.run([need("age"), "-r", public, "-o", str(altered), str(tar_path)], check=True)
    bad = run(["bundle", "verify", str(altered), "--identity", str(key)], passphrase=None)
    assert bad.returncode == 4
    assert "credentials.csv" in bad.stderr


def test_signer_fingerprint_is_checked(ready, tmp_path: Path) -> None:
    vault, key = ready
    out = tmp_path / "b.tar.age"
    done = _export(vault, out)
    fingerprint = re.search(r"Vault fingerprint: (hv:[0-9a-f-]+)", done.stdout).group(1)
    assert (
        run(
            ["bundle", "verify", str(out), "-i", str(key), "--signer", fingerprint], passphrase=None
        ).returncode
        == 0
    )
    wrong = run(
        [
            "bundle",
            "verify",
            str(out),
            "-i",
            str(key),
            "--signer",
            "hv:0000-0000-0000-0000-0000-0000-0000-0000",
        ],
        passphrase=None,
    )
    assert wrong.returncode == 4


def test_export_is_audited_with_the_bundle_hash(ready, tmp_path: Path) -> None:
    vault, _key = ready
    out = tmp_path / "b.tar.age"
    done = _export(vault, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"Bundle SHA-256:    {digest}" in done.stdout
    events = json.loads(run(["audit", "list", "--json"], vault=vault).stdout)
    exports = [e for e in events if e["action"] == "bundle.export"]
    assert len(exports) == 1 and exports[0]["detail"]["sha256"] == digest
    assert exports[0]["detail"]["recipients"]


def test_ssh_ed25519_recipient_opens_with_age(ready, tmp_path: Path) -> None:
    vault, _ = ready
    ssh_key = tmp_path / "id_ed25519"
    subprocess.run([need("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)], check=True)
    out = tmp_path / "ssh.tar.age"
    done = _export(vault, out, "--recipient", (tmp_path / "id_ed25519.pub").read_text().strip())
    assert done.returncode == 0, done.stderr
    root = _extract_with_age(out, ssh_key, tmp_path / "x")
    assert (root / "index.html").exists()
    assert run(["bundle", "verify", str(out), "-i", str(ssh_key)], passphrase=None).returncode == 0


def test_blocking_gaps_refuse_export_without_force(acme, vault_path: Path, tmp_path: Path) -> None:
    acme.close()
    out = tmp_path / "gaps.tar.age"
    _key, public = _age_keygen(tmp_path)
    refused = _export(vault_path, out, "--recipient", public)
    assert refused.returncode == 1
    assert "is not ready to hand over" in refused.stderr and "--force" in refused.stderr
    assert not out.exists()
    assert run(["check", "acme"], vault=vault_path).returncode == 1
    forced = _export(vault_path, out, "--recipient", public, "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.exists()


def test_failed_export_leaves_no_file(ready, tmp_path: Path) -> None:
    vault, _ = ready
    out = tmp_path / "bad.tar.age"
    bad = _export(vault, out, "--recipient", "age1notakey")
    assert bad.returncode == 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or "bad" in p.name] == []


def test_passphrase_bundle_round_trip(ready, tmp_path: Path) -> None:
    vault, _ = ready
    out = tmp_path / "pw.tar.age"
    env = {"HANDOVER_BUNDLE_PASSPHRASE": "bundle pass phrase"}
    assert run(["export", "acme", "--passphrase", "--out", str(out)], vault=vault, env=env).returncode == 0
    ok = run(["bundle", "verify", str(out), "--passphrase"], env=env, passphrase=None)
    assert ok.returncode == 0, ok.stderr
    wrong = run(
        ["bundle", "verify", str(out), "--passphrase"],
        env={"HANDOVER_BUNDLE_PASSPHRASE": "nope"},
        passphrase=None,
    )
    assert wrong.returncode == 3


def _hostile_tar(member: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ok = tarfile.TarInfo("bundle/index.html")
        ok.size = 2
        t.addfile(ok, io.BytesIO(b"ok"))
        if member.isreg():
            member.size = len(data)
            t.addfile(member, io.BytesIO(data))
        else:
            t.addfile(member)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = link
    return m


@pytest.mark.parametrize(
    "member",
    [
        _member("bundle/../../escaped.txt"),
        _member("/tmp/absolute-escape.txt"),
        _member("bundle/link", tarfile.SYMTYPE, "/etc/passwd"),
        _member("bundle/hard", tarfile.LNKTYPE, "/etc/passwd"),
    ],
    ids=["traversal", "absolute", "symlink", "hardlink"],
)
def test_hostile_archive_sealed_with_age_is_refused(member: tarfile.TarInfo, tmp_path: Path) -> None:
    key, public = _age_keygen(tmp_path)
    plain = tmp_path / "hostile.tar"
    plain.write_bytes(_hostile_tar(member))
    sealed = tmp_path / "hostile.tar.age"
    subprocess.run([need("age"), "-r", public, "-o", str(sealed), str(plain)], check=True)
    target = tmp_path / "target"
    done = run(["bundle", "open", str(sealed), "--to", str(target), "-i", str(key)], passphrase=None)
    assert done.returncode == 4, done.stderr
    assert not list(target.rglob("*")) if target.exists() else True
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/absolute-escape.txt").exists()


def test_bundle_open_extracts_verified_files_privately(ready, tmp_path: Path) -> None:
    vault, key = ready
    out = tmp_path / "b.tar.age"
    assert _export(vault, out).returncode == 0
    target = tmp_path / "opened"
    done = run(["bundle", "open", str(out), "--to", str(target), "-i", str(key)], passphrase=None)
    assert done.returncode == 0, done.stderr
    files = [p for p in target.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    again = run(["bundle", "open", str(out), "--to", str(target), "-i", str(key)], passphrase=None)
    assert again.returncode == 1 and "already exists" in again.stderr
