"""The benchmark data sets, built once and cached under bench/data/ (git-ignored).

- ``kdbx(n)``: n credentials written as KeePass XML (``vault.formats.write_keepass_xml``) and turned
  into a KDBX by ``keepassxc-cli import``, as a technician's own database would be.
- ``imported(n)``: a fresh vault into which that KDBX was imported with ``handover import keepass``.
- ``records(n)``: a vault of 10 clients holding n records between them (credentials, documents,
  assets, contacts, issues), written through the library in one transaction per client and kind.
- ``attachments(mb)``: one client with ``mb`` MiB of incompressible attachments and a successor key.
- ``audit(n)``: a vault whose audit log holds n entries.

Every vault uses ``HANDOVER_KDF=minimum`` (Argon2id at OWASP's floor): commands are measured with
an unlocked session, so the KDF is not part of any timed run except where a row says so.
A data set is rebuilt when its parameters, the bench's data version or the schema revision change.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import DATA, HANDOVER, KDBX_PASSWORD, NEUTRAL_CWD, PASSPHRASE, base_env, need

DATA_VERSION = 1
CLIENTS = ["acme", *(f"client{i:02d}" for i in range(1, 10))]
# Records every records(n) vault holds in client acme, whatever n: what the flat-cost rows look up.
TARGET_CRED = "Core firewall admin"
TARGET_DOC = "Network overview"
NEEDLE = "zanzibar"  # a word in exactly three records of acme: the search query
KDBX_ENTRY = 5000  # the entry shown by the warm-show row ("Entry 05000")

WORDS = (
    "switch router firewall gateway vlan subnet backup restore server printer laptop desktop "
    "office branch tenant mailbox domain certificate licence renewal warranty storage array nas "
    "replica snapshot offsite cloud vpn tunnel wireless access point radius ldap directory policy "
    "patch update schedule monitoring alert uptime ticket vendor support contract invoice budget "
    "rack cabinet cable patchpanel fibre copper uplink trunk port mirror span dhcp dns ntp smtp "
    "imap webmail portal admin operator reception warehouse workshop kitchen meeting boardroom "
    "camera doorbell alarm badge reader keypad scanner copier phone handset voicemail extension"
).split()
CATEGORIES = ("firewall", "dns", "server", "network", "email", "wifi", "isp", "service", "other")


def stamp_ok(folder: Path, params: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / ".stamp").read_text()) == _stamp(params)
    except (OSError, ValueError):
        return False


def _stamp(params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "data_version": DATA_VERSION}


def _write_stamp(folder: Path, params: dict[str, Any], seconds: float) -> None:
    (folder / ".stamp").write_text(json.dumps(_stamp(params)))
    (folder / ".built").write_text(json.dumps({"seconds": seconds}))


@contextmanager
def _building(name: str, params: dict[str, Any], rebuild: bool) -> Iterator[tuple[Path, bool]]:
    """(folder, fresh): ``fresh`` False means the cached copy is good and nothing is to be done."""
    from handover_vault.store.engine import SCHEMA_HEAD

    # Vaults of each schema revision are kept apart, so runs against an older tree (--tag with
    # PYTHONPATH) and the current one each find theirs; a KDBX does not depend on our schema.
    if name.startswith("kdbx"):
        folder = DATA / name
    else:
        folder, params = DATA / f"{name}-s{SCHEMA_HEAD}", {**params, "schema": SCHEMA_HEAD}
    if not rebuild and stamp_ok(folder, params):
        yield folder, False
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    print(f"bench: building {name} ...", flush=True)
    yield folder, True
    seconds = time.perf_counter() - start
    _write_stamp(folder, params, seconds)
    print(f"bench: built {name} in {seconds:.1f} s", flush=True)


def built_seconds(folder: Path) -> float | None:
    try:
        return float(json.loads((folder / ".built").read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return None


def _run(argv: list[str], stdin: str | None = None, **env: str) -> str:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=base_env(**env), check=False, cwd=NEUTRAL_CWD
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:4])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


# --- KeePass ------------------------------------------------------------------------------------


def kdbx_title(i: int) -> str:
    return f"Entry {i:05d}"


def kdbx_category(i: int) -> str:
    return CATEGORIES[i % len(CATEGORIES)]


def kdbx_creds(n: int) -> list[Any]:
    from handover_vault.formats.common import new_credential

    rnd = random.Random(n)
    creds = []
    for i in range(n):
        c = new_credential(kdbx_title(i))
        c["username"] = f"admin{i}"
        c["secret"] = "".join(
            rnd.choice("abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY34679!#%") for _ in range(20)
        )
        c["url"] = f"https://host{i}.example.net/admin"
        c["notes"] = f"{rnd.choice(WORDS)} {rnd.choice(WORDS)} in rack {i % 40}, vlan {i % 200}"
        c["category"] = kdbx_category(i)
        creds.append(c)
    return creds


def kdbx(n: int, rebuild: bool = False) -> tuple[Path, Path]:
    """(KeePass XML, KDBX made from it by keepassxc-cli import) with n entries."""
    with _building(f"kdbx-{n}", {"n": n}, rebuild) as (folder, fresh):
        xml, db = folder / "entries.xml", folder / "entries.kdbx"
        if fresh:
            from handover_vault.formats.common import write_keepass_xml

            xml.write_bytes(
                write_keepass_xml(kdbx_creds(n), exported_at=datetime(2026, 1, 1, tzinfo=UTC), name="Bench")
            )
            _run(keepassxc_import_argv(xml, db), stdin=f"{KDBX_PASSWORD}\n{KDBX_PASSWORD}\n")
    return xml, db


def keepassxc_import_argv(xml: Path, db: Path) -> list[str]:
    # keepassxc-cli's own defaults for the new database (no -t): what a technician gets.
    return [need("keepassxc-cli"), "import", "-q", "-p", str(xml), str(db)]


def keepassxc_entry_path(i: int) -> str:
    """keepassxc-cli names an entry by its group path below the root group."""
    return f"{kdbx_category(i)}/{kdbx_title(i)}"


# --- Vaults through the command line ---------------------------------------------------------------


def new_vault_cli(path: Path, clients: list[str] = ["acme"]) -> None:  # noqa: B006 - read only
    env = {"HANDOVER_VAULT": str(path), "HANDOVER_NEW_PASSPHRASE": PASSPHRASE}
    _run([HANDOVER, "init"], **env)
    for slug in clients:
        _run([HANDOVER, "client", "add", slug, "--name", slug.upper()], HANDOVER_PASSPHRASE=PASSPHRASE, **env)


def import_template(rebuild: bool = False) -> Path:
    """A vault with client acme and nothing else: copied before every timed import."""
    with _building("import-template", {}, rebuild) as (folder, fresh):
        if fresh:
            new_vault_cli(folder / "vault.db")
    return folder / "vault.db"


def imported(n: int, rebuild: bool = False) -> Path:
    """A fresh vault with the n-entry KDBX imported by ``handover import keepass`` (as the check does)."""
    _xml, db = kdbx(n, rebuild)
    with _building(f"imported-{n}", {"n": n}, rebuild) as (folder, fresh):
        if fresh:
            path = folder / "vault.db"
            new_vault_cli(path)
            _run(
                [HANDOVER, "import", "keepass", "acme", str(db)],
                HANDOVER_VAULT=str(path),
                HANDOVER_PASSPHRASE=PASSPHRASE,
                HANDOVER_IMPORT_PASSPHRASE=KDBX_PASSWORD,
            )
    return folder / "vault.db"


# --- Vaults through the library ---------------------------------------------------------------------


def _open_new(path: Path) -> Any:
    os.environ["HANDOVER_KDF"] = "minimum"
    from handover_vault import init_vault

    v, _code = init_vault(path, PASSPHRASE)
    return v


def _sentence(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def _record(kind: str, j: int, rnd: random.Random) -> dict[str, Any]:
    w = rnd.choice(WORDS)
    if kind == "cred":
        return {
            "label": f"{w.title()} {j} admin",
            "username": f"admin{j}",
            "secret": f"S3cret-{rnd.getrandbits(64):016x}",
            "url": f"https://{w}{j}.example.net",
            "notes": _sentence(rnd, 6),
            "category": rnd.choice(CATEGORIES),
        }
    if kind == "doc":
        return {
            "title": f"{w.title()} runbook {j}",
            "body": f"# {w.title()}\n\n{_sentence(rnd, 12)}.\n\n- {_sentence(rnd, 6)}\n- {_sentence(rnd, 6)}\n",
            "tags": [rnd.choice(WORDS)],
        }
    if kind == "asset":
        return {
            "hostname": f"{w}-{j:05d}",
            "kind": rnd.choice(("switch", "server", "firewall", "ap", "nas")),
            "ip": f"10.{j % 250}.{j // 250 % 250}.{j % 200 + 1}",
            "location": f"rack {j % 40}",
            "serial": f"SN{rnd.getrandbits(40):010x}",
            "notes": _sentence(rnd, 5),
        }
    if kind == "contact":
        return {
            "name": f"{w.title()} Person {j}",
            "role": rnd.choice(("Office manager", "Director", "Accountant", "Reception")),
            "email": f"person{j}@example.com",
            "phone": f"+44 20 7946 {j % 10000:04d}",
        }
    return {
        "title": f"{w.title()} issue {j}",
        "severity": rnd.choice(("critical", "high", "medium", "low")),
        "description": _sentence(rnd, 15),
        "risk": _sentence(rnd, 5),
        "workaround": _sentence(rnd, 5),
    }


# Share of each kind in a records(n) vault.
MIX = (("cred", 4), ("doc", 2), ("asset", 2), ("contact", 1), ("issue", 1))


def _targets(kind: str) -> list[dict[str, Any]]:
    """acme's fixed records: looked up by the flat-cost rows, the same in every vault size."""
    if kind == "cred":
        return [
            {
                "label": TARGET_CRED,
                "username": "admin",
                "secret": "Fw-bench-s3cret",
                "url": "https://fw1.acme.example",
                "category": "firewall",
                "notes": f"the {NEEDLE} appliance",
            }
        ]
    if kind == "doc":
        return [
            {"title": TARGET_DOC, "body": "# LAN\n\n10.0.0.0/24 behind fw1\n", "overview": True},
            {"title": "Remote site", "body": f"The {NEEDLE} office links over a VPN tunnel.\n"},
        ]
    if kind == "asset":
        return [{"hostname": "fw1", "kind": "firewall", "ip": "10.0.0.1", "notes": f"{NEEDLE} uplink"}]
    return []


def add_bulk(v: Any, s: Any, client: Any, kind: str, items: list[dict[str, Any]]) -> None:
    """Add records through the service's validation and the record store, in the caller's transaction."""
    service = {"cred": v.creds, "doc": v.docs, "asset": v.assets, "contact": v.contacts, "issue": v.issues}[
        kind
    ]
    cleaned = [service.clean(item) for item in items]
    add_many = getattr(v.records, "add_many", None)
    if add_many is not None:
        add_many(s, client, kind, [(d, service._name(d)) for d in cleaned])
    else:  # the record store before add_many existed
        for d in cleaned:
            v.records.add(s, client, kind, d, service._name(d))


def records(n: int, rebuild: bool = False, progress: Callable[[str], None] = print) -> Path:
    """10 clients holding n records between them, plus acme's fixed targets."""
    with _building(f"records-{n}", {"n": n, "clients": len(CLIENTS)}, rebuild) as (folder, fresh):
        if fresh:
            rnd = random.Random(n)
            v = _open_new(folder / "vault.db")
            with v:
                per_client = n // len(CLIENTS)
                weight = sum(w for _, w in MIX)
                for slug in CLIENTS:
                    v.clients.add(
                        slug, name=f"{slug.upper()} Ltd", contract_start="2024-01-01", notice_days=30
                    )
                    for kind, w in MIX:
                        count = per_client * w // weight
                        with v.write(f"bench: {kind} records", bulk=True) as s:
                            client = v.clients.get(slug, s)
                            items = [_record(kind, j, rnd) for j in range(count)]
                            if slug == "acme":
                                items = _targets(kind) + items[len(_targets(kind)) :]
                            add_bulk(v, s, client, kind, items)
                            v.audit.append(s, "import.bench", client=client, detail={"added": len(items)})
                    progress(f"bench:   {slug}: {per_client} records")
    return folder / "vault.db"


def attachments(mib: int, rebuild: bool = False) -> tuple[Path, Path, str]:
    """(vault, age identity file, recipient): client acme with ``mib`` MiB of random attachments."""
    files = 4
    with _building(f"attach-{mib}", {"mib": mib, "files": files}, rebuild) as (folder, fresh):
        key = folder / "successor.key"
        if fresh:
            _run([need("age-keygen"), "-o", str(key)])
            v = _open_new(folder / "vault.db")
            with v:
                v.clients.add("acme", name="ACME Ltd", contract_start="2024-01-01", notice_days=30)
                v.docs.add("acme", title=TARGET_DOC, body="# LAN\n\n10.0.0.0/24\n", overview=True)
                v.creds.add("acme", label=TARGET_CRED, username="admin", secret="x", category="firewall")
                size = mib * 1024 * 1024 // files
                for i in range(files):
                    with v.write("bench: attachment") as s:
                        client = v.clients.get("acme", s)
                        v.attachments.add_stream(s, client, f"config-backup-{i}.bin", _RandomStream(size, i))
        recipient = ""
        for line in key.read_text().splitlines():
            if line.startswith("# public key: "):
                recipient = line.split(": ", 1)[1].strip()
    return folder / "vault.db", key, recipient


class _RandomStream:
    """``size`` pseudo-random (incompressible) bytes, read in blocks."""

    def __init__(self, size: int, seed: int) -> None:
        self.left = size
        self.rnd = random.Random(seed)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return self.rnd.randbytes(n)


def audit(n: int, rebuild: bool = False) -> Path:
    """A vault whose audit log holds n entries (credential reveals, mostly)."""
    with _building(f"audit-{n}", {"n": n}, rebuild) as (folder, fresh):
        if fresh:
            v = _open_new(folder / "vault.db")
            with v:
                v.clients.add("acme", name="ACME Ltd")
                rec = v.creds.add("acme", label=TARGET_CRED, username="admin", secret="x")
                have = len(v.audit.events())
                batch = 5000
                while have < n:
                    with v.write("bench: audit entries") as s:
                        client = v.clients.get("acme", s)
                        for _ in range(min(batch, n - have)):
                            v.audit.append(
                                s,
                                "cred.reveal",
                                client=client,
                                record_id=rec.id,
                                detail={"version": 1, "field": "secret", "purpose": "show"},
                            )
                            have += 1
    return folder / "vault.db"
