"""Every published stock-tool recipe, run exactly as printed, against good and bad bundles.

The recipes come from docs/bundle-format.md (the blocks after ``<!-- verify-recipe ... -->``) and
from the VERIFY.txt inside a real exported bundle; nothing is added to them (no ``set -e``): they must
stop by themselves. Only the good bundle may print the success line and exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT, need

pytestmark = pytest.mark.interop

TOOLS = ("age", "age-keygen", "tar", "sha256sum", "ssh-keygen", "openssl", "bash", "diff", "find")


def docs_recipes() -> dict[str, str]:
    text = (ROOT / "docs" / "bundle-format.md").read_text(encoding="utf-8")
    found = dict(re.findall(r"<!-- verify-recipe ?(\w*) -->\s*```sh\n(.*?)```", text, re.S))
    assert set(found) == {"", "manifest"}, "docs/bundle-format.md lost a verification recipe"
    return found


def verify_txt_recipe(verify_txt: str) -> str:
    """The recipe block of VERIFY.txt, lines exactly as printed (indentation included)."""
    block = re.search(r"^( +)\( set -euo pipefail\n.*?^\1\)\n", verify_txt, re.S | re.M)
    assert block, "VERIFY.txt lost its recipe"
    return block.group(0)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A real export and its hostile variants, made with the stock tools an attacker has."""
    for tool in TOOLS:
        need(tool)
    os.environ["HANDOVER_KDF"] = "minimum"
    from handover_vault import init_vault
    from handover_vault.bundle.export import export, set_successor

    tmp = tmp_path_factory.mktemp("recipes")
    key = tmp / "successor.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = re.search(r"public key: (age1\w+)", key.read_text()).group(1)  # type: ignore[union-attr]
    made = {}
    for name in ("ours", "foreign"):
        v, _ = init_vault(tmp / f"{name}.db", PASSPHRASE)
        with v:
            v.clients.add("acme", name="ACME Ltd")
            v.creds.add(
                "acme", label="Firewall admin", username="admin", secret="p|q\\r`x`", category="firewall"
            )
            v.docs.add("acme", title="Network overview", body="# LAN\n", overview=True)
            set_successor(v, "acme", "Next IT", [public])
            (tmp / name).mkdir()
            result = export(v, "acme", out=tmp / name / "acme.tar.age", force=True)
            made[name] = (result.path, v.ssh_public_key, v.fingerprint)
    good, vault_key, fingerprint = made["ours"]

    def open_(path: Path, into: Path) -> Path:
        into.mkdir()
        subprocess.run(["age", "-d", "-i", str(key), "-o", str(into / "b.tar"), str(path)], check=True)
        subprocess.run(["tar", "-xf", "b.tar"], cwd=into, check=True)
        (into / "b.tar").unlink()
        (root,) = into.iterdir()
        return root

    def reseal(root: Path, out: Path) -> Path:
        subprocess.run(["tar", "-cf", str(out.with_suffix(".tar")), root.name], cwd=root.parent, check=True)
        subprocess.run(["age", "-r", public, "-o", str(out), str(out.with_suffix(".tar"))], check=True)
        return out

    variants: dict[str, Path] = {}
    root = open_(good, tmp / "t1")
    (root / "credentials.csv").write_text("label,secret\r\nFirewall admin,attacker\r\n")
    variants["tampered"] = reseal(root, tmp / "tampered.tar.age")
    root = open_(good, tmp / "t2")
    (root / "evil.html").write_text("<p>extra</p>")
    variants["extra file"] = reseal(root, tmp / "extra.tar.age")
    # Content changed, SHA256SUMS recomputed and re-signed, properly, by the attacker's own key.
    root = open_(good, tmp / "t3")
    (root / "credentials.json").write_text("[]\n")
    sums = subprocess.run(
        ["sha256sum", *[line[66:] for line in (root / "SHA256SUMS").read_text().splitlines()]],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (root / "SHA256SUMS").write_text(sums)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "evil")], check=True)
    (root / "SHA256SUMS.sig").unlink()
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(tmp / "evil"), "-n", "handover-bundle", "SHA256SUMS"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    variants["re-signed"] = reseal(root, tmp / "resigned.tar.age")
    variants["foreign vault"] = made["foreign"][0]
    flipped = bytearray(good.read_bytes())
    flipped[-1] ^= 1
    (tmp / "flipped.tar.age").write_bytes(bytes(flipped))
    variants["flipped last byte"] = tmp / "flipped.tar.age"
    verify_txt = (open_(good, tmp / "t4") / "VERIFY.txt").read_text()
    return {
        "good": good,
        "key": key,
        "vault_key": vault_key,
        "fingerprint": fingerprint,
        "variants": variants,
        "verify_txt": verify_txt,
    }


def published() -> list[tuple[str, str]]:
    return [("docs/bundle-format.md", docs_recipes()[""])]


def _run(recipe: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("BUNDLE", "KEY", "VAULT_KEY", "FINGERPRINT")}
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["bash", "-c", recipe], cwd=cwd, env={**full, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("where", ["docs/bundle-format.md", "VERIFY.txt"])
def test_the_recipe_accepts_only_the_good_bundle(bundles, where: str, tmp_path: Path) -> None:
    recipe = (
        docs_recipes()[""] if where == "docs/bundle-format.md" else verify_txt_recipe(bundles["verify_txt"])
    )
    assert "set -e" not in recipe.split("( set -euo pipefail", 1)[0], "nothing before the subshell"
    env = {"KEY": str(bundles["key"]), "VAULT_KEY": bundles["vault_key"]}
    ok = _run(recipe, tmp_path / "good", BUNDLE=str(bundles["good"]), **env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "bundle verified: acme-handover-" in ok.stdout
    assert 'Good "handover-bundle" signature for handover' in ok.stderr + ok.stdout
    assert "credentials.csv: OK" in ok.stdout
    for name, bad in bundles["variants"].items():
        done = _run(recipe, tmp_path / name, BUNDLE=str(bad), **env)
        assert done.returncode != 0, f"{where} accepted the {name} bundle:\n{done.stdout}{done.stderr}"
        assert "bundle verified" not in done.stdout, name
    flipped = tmp_path / "flipped last byte" / "handover-check"
    assert not [p for p in flipped.rglob("*") if p.name != "bundle.tar"], "nothing extracted"
    # A key line that is not the vault's (taken from somewhere else than the letter) fails too.
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")])
    assert other.returncode == 0
    wrong = {**env, "VAULT_KEY": (tmp_path / "k.pub").read_text().strip()}
    done = _run(recipe, tmp_path / "wrong key", BUNDLE=str(bundles["good"]), **wrong)
    assert done.returncode != 0 and "bundle verified" not in done.stdout
    # And with no key line at all it stops before decrypting anything.
    done = _run(recipe, tmp_path / "no key", BUNDLE=str(bundles["good"]), KEY=str(bundles["key"]))
    assert done.returncode != 0 and "VAULT_KEY" in done.stderr
    assert not (tmp_path / "no key" / "handover-check").exists()


def test_both_copies_of_the_recipe_are_the_same(bundles) -> None:
    from handover_vault.bundle.verify_guide import RECIPE

    printed = verify_txt_recipe(bundles["verify_txt"])
    assert "\n".join(line[4:] for line in printed.splitlines()) + "\n" == RECIPE == docs_recipes()[""]


def test_verify_txt_names_the_fingerprints_and_says_where_the_key_must_come_from(bundles) -> None:
    text = bundles["verify_txt"]
    ssh_fp = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=bundles["vault_key"] + "\n", capture_output=True, text=True
    ).stdout.split()[1]
    assert bundles["fingerprint"] in text and ssh_fp in text and bundles["vault_key"] in text
    assert "from the termination letter, or have it read out to you on the phone" in text
    assert "proves nothing by itself" in text
    assert (
        'never "age -d ... | tar x"' in text
        and "age -d -i" in text
        and "-o handover-check/bundle.tar" in text
    )
    for command in ("ssh-keygen -Y verify", "sha256sum -c --strict", "diff ../expected ../present"):
        assert command in text


def test_the_manifest_recipe_checks_the_signer(bundles, tmp_path: Path) -> None:
    recipe = docs_recipes()["manifest"]
    env = {"KEY": str(bundles["key"]), "VAULT_KEY": bundles["vault_key"], "BUNDLE": str(bundles["good"])}
    assert _run(docs_recipes()[""], tmp_path, **env).returncode == 0
    (folder,) = [p for p in (tmp_path / "handover-check").iterdir() if p.is_dir()]
    ok = _run(recipe, folder, FINGERPRINT=bundles["fingerprint"])
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("manifest verified"), ok.stdout + ok.stderr
    wrong = _run(recipe, folder, FINGERPRINT="hv:0000-0000-0000-0000-0000-0000-0000-0000")
    assert wrong.returncode != 0 and "manifest verified" not in wrong.stdout
    assert _run(recipe, folder).returncode != 0
    manifest = folder / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"acme", b"acne"))
    changed = _run(recipe, folder, FINGERPRINT=bundles["fingerprint"])
    assert changed.returncode != 0 and "manifest verified" not in changed.stdout
    shutil.rmtree(tmp_path / "handover-check")
