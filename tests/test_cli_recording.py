"""Recording during service, through the command with no TTY: every recording command, its --json
output parsed, secrets only from standard input, TOTP, rotation and history, $EDITOR, attachments,
search, unknown clients and ambiguous references.

``run`` is the installed ``handover`` in a fresh interpreter (used for the issue's end-to-end
checks); ``fork_run`` is the same entry point in a forked child, for breadth at a tenth of the cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from handover_vault.creds import GEN_ALPHABET
from tests.conftest import run
from tests.helpers_security import fork_run, mode, rfc6238

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

SECRET = "Fw-s3cret-0001"  # the acme fixture's firewall secret
SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
OTPAUTH = f"otpauth://totp/ACME:admin?secret={SEED}&issuer=ACME"
NO_CLIENT = "Error: no client 'nope'\nhint: list clients with: handover client list\n"


def _json(args: list[str], vault: Path):
    done = fork_run([*args, "--json"], vault=vault)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _ok(done) -> str:
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


# --- clients and contacts ---------------------------------------------------------------------------


def test_client_commands(v, vault_path: Path) -> None:
    added = fork_run(
        [
            "client",
            "add",
            "acme",
            "--name",
            "ACME Ltd",
            "--contract-start",
            "2024-01-01",
            "--notice-months",
            "3",
            "--end-of-month",
        ],
        vault=vault_path,
    )
    assert (added.returncode, added.stdout) == (0, "Added client acme (ACME Ltd).\n")
    _ok(fork_run(["client", "add", "beta", "--name", "Beta GmbH"], vault=vault_path))
    listed = _json(["client", "list"], vault_path)
    assert [(c["slug"], c["name"], c["agreement"]["status"]) for c in listed] == [
        ("acme", "ACME Ltd", "active"),
        ("beta", "Beta GmbH", "active"),
    ]
    shown = _json(["client", "show", "acme"], vault_path)
    assert shown["agreement"]["notice"] == {"months": 3}
    assert shown["agreement"]["end_of_month"] is True
    assert shown["counts"] == {"contact": 0, "doc": 0, "asset": 0, "cred": 0, "issue": 0, "attachment": 0}
    edited = fork_run(
        ["client", "edit", "acme", "--name", "ACME Limited", "--notice-days", "30"], vault=vault_path
    )
    assert (edited.returncode, edited.stdout) == (0, "Updated client acme.\n")
    shown = _json(["client", "show", "acme"], vault_path)
    assert (shown["name"], shown["agreement"]["notice"]) == ("ACME Limited", {"days": 30})
    table = _ok(fork_run(["client", "show", "acme"], vault=vault_path))
    assert "client          acme (ACME Limited)" in table and "30 days to end of month" in table

    dup = fork_run(["client", "add", "acme", "--name", "Again"], vault=vault_path)
    assert (dup.returncode, dup.stderr) == (
        1,
        "Error: client 'acme' already exists\nhint: see it: handover client show acme\n",
    )
    bad = fork_run(["client", "add", "ACME Ltd", "--name", "x"], vault=vault_path)
    assert (bad.returncode, bad.stderr) == (
        1,
        "Error: 'ACME Ltd' is not a valid client slug\n"
        "hint: use 1-48 lowercase letters, digits and inner dashes, e.g. acme or acme-north\n",
    )
    both = fork_run(
        ["client", "add", "gamma", "--name", "G", "--notice-days", "3", "--notice-months", "1"],
        vault=vault_path,
    )
    assert (both.returncode, both.stderr) == (
        1,
        "Error: give the notice period in days or in months, not both\n",
    )
    date = fork_run(
        ["client", "add", "gamma", "--name", "G", "--contract-start", "2024-02-30"], vault=vault_path
    )
    # A malformed option value is a usage error (exit 2) naming the option, caught before the vault opens.
    assert date.returncode == 2
    assert date.stderr.endswith(
        "Error: Invalid value for '--contract-start': '2024-02-30' is not a real calendar date; "
        "write dates as YYYY-MM-DD (e.g. 2027-03-01)\n"
    )


def test_contact_commands(acme, vault_path: Path) -> None:
    added = fork_run(
        [
            "contact",
            "add",
            "acme",
            "--name",
            "Bob Smith",
            "--role",
            "IT lead",
            "--email",
            "bob@acme.example",
            "--phone",
            "+44 20 7946 0000",
            "--authorized",
        ],
        vault=vault_path,
    )
    assert added.returncode == 0 and added.stdout.startswith("Added contact Bob Smith (")
    contacts = _json(["contact", "list", "acme"], vault_path)
    # Listed by creation time (seconds): records made within one second may come in either order.
    by_name = {c["name"]: c for c in contacts}
    assert sorted(by_name) == ["Bob Smith", "Jane Doe"]
    assert by_name["Bob Smith"]["authorized"] is True and by_name["Bob Smith"]["role"] == "IT lead"
    assert by_name["Bob Smith"]["email"] == "bob@acme.example"
    assert by_name["Bob Smith"]["phone"] == "+44 20 7946 0000"
    bad = fork_run(["contact", "add", "acme", "--name", "X", "--email", "not-an-address"], vault=vault_path)
    assert (bad.returncode, bad.stderr) == (1, "Error: 'not-an-address' is not an email address\n")


# --- docs ---------------------------------------------------------------------------------------------


def test_doc_commands(acme, vault_path: Path, tmp_path: Path) -> None:
    body = "# Wi-Fi\n\nSSID acme-staff on VLAN 30.\n"
    added = fork_run(
        ["doc", "add", "acme", "Wi-Fi", "--tag", "wifi", "--tag", "lan"], vault=vault_path, input=body
    )
    assert added.returncode == 0 and added.stdout.startswith("Added doc 'Wi-Fi' (")
    page = tmp_path / "dns.md"
    page.write_text("DNS at the registrar.\n")
    _ok(fork_run(["doc", "add", "acme", "DNS", "--file", str(page)], vault=vault_path))

    docs = {d["title"]: d for d in _json(["doc", "list", "acme"], vault_path)}
    assert sorted(docs) == ["DNS", "Network overview", "Wi-Fi"]
    assert all("body" not in d for d in docs.values())  # the list is metadata only
    assert docs["Wi-Fi"]["tags"] == ["lan", "wifi"]
    assert _ok(fork_run(["doc", "show", "acme", "wi-fi"], vault=vault_path)) == body + "\n"
    assert (
        _ok(fork_run(["doc", "show", "acme", "DNS"], vault=vault_path))
        == "# DNS\n\nDNS at the registrar.\n\n"
    )
    assert _json(["doc", "show", "acme", docs["Wi-Fi"]["id"][:8]], vault_path)["body"] == body

    edited = fork_run(["doc", "edit", "acme", "Wi-Fi"], vault=vault_path, input=body + "\nGuest: VLAN 40.\n")
    assert (edited.returncode, edited.stdout) == (0, "Saved 'Wi-Fi' as version 2.\n")
    history = _json(["doc", "history", "acme", "Wi-Fi"], vault_path)
    assert [(h["version"], h["body"]) for h in history] == [(1, body), (2, body + "\nGuest: VLAN 40.\n")]
    table = _ok(fork_run(["doc", "history", "acme", "Wi-Fi"], vault=vault_path))
    assert table.splitlines()[0].split() == ["version", "saved", "title", "size"]

    no_yes = fork_run(["doc", "rm", "acme", "DNS"], vault=vault_path)
    assert (no_yes.returncode, no_yes.stderr) == (
        1,
        "Error: refusing without confirmation: no terminal to ask on\nhint: add --yes\n",
    )
    assert (
        fork_run(["doc", "rm", "acme", "DNS", "--yes"], vault=vault_path).stdout
    ) == "Deleted doc 'DNS'.\n"
    gone = fork_run(["doc", "show", "acme", "DNS"], vault=vault_path)
    assert (gone.returncode, gone.stderr) == (
        1,
        "Error: no doc 'DNS' for client acme\nhint: list them: handover doc list acme\n",
    )


def test_doc_edit_title_only_keeps_the_body(acme, vault_path: Path) -> None:
    """An empty standard input (a script, cron, < /dev/null) is not a new, empty body."""
    env = {"EDITOR": "", "VISUAL": ""}
    done = fork_run(
        ["doc", "edit", "acme", "Network overview", "--title", "LAN overview"], vault=vault_path, env=env
    )
    assert (done.returncode, done.stdout) == (0, "Saved 'LAN overview' as version 2.\n")
    assert (
        _json(["doc", "show", "acme", "LAN overview"], vault_path)["body"]
        == "# LAN\n\n10.0.0.0/24 behind fw1"
    )
    nothing = fork_run(["doc", "edit", "acme", "LAN overview"], vault=vault_path, env=env)
    assert (nothing.returncode, nothing.stderr) == (
        1,
        "Error: no $EDITOR is set and nothing came on standard input\nhint: use --file FILE or pipe the text in\n",
    )
    empty_add = fork_run(["doc", "add", "acme", "Empty"], vault=vault_path, env=env)
    assert empty_add.returncode == 1
    assert _json(["doc", "history", "acme", "LAN overview"], vault_path)[-1]["version"] == 2


EDITOR = """\
import json, os, stat, sys

path = sys.argv[1]
st = os.stat(path)
json.dump({"path": path, "mode": stat.S_IMODE(st.st_mode), "initial": open(path).read(),
           "env": sorted(k for k in os.environ if k.startswith("HANDOVER_"))},
          open(os.environ["EDITOR_REPORT"], "w"))
with open(path, "a") as fh:
    fh.write("\\nAdded in the editor.\\n")
sys.exit(int(os.environ.get("EDITOR_EXIT", "0")))
"""


def test_doc_edit_with_editor(acme, vault_path: Path, tmp_path: Path) -> None:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    ram = tmp_path / "ram"
    ram.mkdir(mode=0o700)
    report = tmp_path / "report.json"
    env = {
        "EDITOR": f"{sys.executable} {script}",
        "VISUAL": "",
        "XDG_RUNTIME_DIR": str(ram),
        "EDITOR_REPORT": str(report),
    }
    done = run(["doc", "edit", "acme", "Network overview"], vault=vault_path, env=env)
    assert (done.returncode, done.stdout) == (0, "Saved 'Network overview' as version 2.\n"), done.stderr
    seen = json.loads(report.read_text())
    assert seen["mode"] == 0o600
    assert Path(seen["path"]).parent == ram  # the RAM-backed dir, not the disk's /tmp
    assert seen["initial"] == "# LAN\n\n10.0.0.0/24 behind fw1"
    assert seen["env"] == ["HANDOVER_KDF", "HANDOVER_RUNTIME_DIR", "HANDOVER_VAULT"]  # no passphrase
    assert not Path(seen["path"]).exists()
    assert list(ram.iterdir()) == []
    shown = _json(["doc", "show", "acme", "Network overview"], vault_path)
    assert shown["body"] == "# LAN\n\n10.0.0.0/24 behind fw1\nAdded in the editor.\n"

    # A failing editor saves nothing and still removes its file.
    failed = fork_run(
        ["doc", "edit", "acme", "Network overview"], vault=vault_path, env={**env, "EDITOR_EXIT": "3"}
    )
    assert (failed.returncode, failed.stderr) == (
        1,
        "Error: the editor exited with status 3; nothing was saved\n",
    )
    assert list(ram.iterdir()) == []
    assert _json(["doc", "show", "acme", "Network overview"], vault_path)["version"] == 2

    # doc add with nothing on standard input opens the editor on an empty page.
    added = fork_run(["doc", "add", "acme", "Printers"], vault=vault_path, env=env)
    assert added.returncode == 0, added.stderr
    assert _json(["doc", "show", "acme", "Printers"], vault_path)["body"] == "\nAdded in the editor.\n"
    assert list(ram.iterdir()) == []


# --- assets and issues --------------------------------------------------------------------------------


def test_asset_commands(acme, vault_path: Path) -> None:
    added = fork_run(
        [
            "asset",
            "add",
            "acme",
            "sw1",
            "--kind",
            "switch",
            "--ip",
            "10.0.0.2",
            "--location",
            "Comms room",
            "--model",
            "USW-24",
            "--serial",
            "SN-0042",
            "--expires",
            "2026-12-31",
            "--expiry-kind",
            "support",
            "--notes",
            "Core switch",
        ],
        vault=vault_path,
    )
    assert added.returncode == 0 and added.stdout.startswith("Added asset sw1 (")
    assets = _json(["asset", "list", "acme"], vault_path)
    assets = sorted(assets, key=lambda a: a["hostname"])
    assert [(a["hostname"], a["expiry_kind"]) for a in assets] == [("fw1", "warranty"), ("sw1", "support")]
    assert assets[1]["serial"] == "SN-0042"
    table = _ok(fork_run(["asset", "list", "acme"], vault=vault_path))
    assert "2026-12-31 (support)" in table
    bad = fork_run(["asset", "add", "acme", "x", "--expires", "31/12/2026"], vault=vault_path)
    assert bad.returncode == 2
    assert bad.stderr.endswith(
        "Error: Invalid value for '--expires': '31/12/2026' is not a date; "
        "write dates as YYYY-MM-DD (e.g. 2027-03-01)\n"
    )


def test_issue_commands(acme, vault_path: Path, tmp_path: Path) -> None:
    desc = tmp_path / "issue.md"
    desc.write_text("The UPS battery is **five years** old.\n")
    added = fork_run(
        [
            "issue",
            "add",
            "acme",
            "UPS battery",
            "--severity",
            "critical",
            "--risk",
            "outage",
            "--workaround",
            "none",
            "--file",
            str(desc),
        ],
        vault=vault_path,
    )
    assert added.returncode == 0 and added.stdout.startswith("Added critical issue 'UPS battery' (")
    issues = _json(["issue", "list", "acme"], vault_path)
    assert [(i["title"], i["severity"], i["status"]) for i in issues] == [
        ("UPS battery", "critical", "open"),
        ("Backups untested", "high", "open"),
    ]
    shown = _json(["issue", "show", "acme", "UPS battery"], vault_path)
    assert shown["description"] == "The UPS battery is **five years** old.\n"
    resolved = fork_run(["issue", "resolve", "acme", "UPS battery"], vault=vault_path)
    assert resolved.stdout == "Resolved 'UPS battery'.\n"
    issues = _json(["issue", "list", "acme"], vault_path)
    assert [(i["title"], i["status"]) for i in issues] == [
        ("Backups untested", "open"),
        ("UPS battery", "resolved"),
    ]
    assert issues[1]["resolved_at"]
    bad = fork_run(["issue", "add", "acme", "X", "--severity", "urgent"], vault=vault_path)
    assert bad.returncode == 2 and "'urgent' is not one of 'critical', 'high', 'medium', 'low'" in bad.stderr


# --- credentials ----------------------------------------------------------------------------------------


def test_cred_add_from_stdin_with_totp_and_the_code(acme, vault_path: Path) -> None:
    added = run(
        [
            "cred",
            "add",
            "acme",
            "M365 admin",
            "--username",
            "admin@acme.example",
            "--category",
            "tenant-admin",
            "--url",
            "https://portal.office.com",
            "--with-totp",
        ],
        vault=vault_path,
        input=f"Tenant-pa55-Word\n{OTPAUTH}\n",
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("Added credential 'M365 admin' (")
    assert "Tenant-pa55" not in added.stdout + added.stderr and SEED not in added.stdout + added.stderr
    shown = _json(["cred", "show", "acme", "M365 admin"], vault_path)
    assert (shown["has_secret"], shown["has_totp"]) == (True, True)
    assert "secret" not in shown and "totp" not in shown

    before = time.time()
    code = run(["cred", "totp", "acme", "M365 admin"], vault=vault_path)
    after = time.time()
    assert code.returncode == 0, code.stderr
    # The code of the 30-second window at the start or the end of the call (it may straddle one).
    assert code.stdout.strip() in {rfc6238(SEED, before), rfc6238(SEED, after)}
    assert code.stdout == code.stdout.strip() + "\n" and len(code.stdout.strip()) == 6
    assert code.stderr.startswith("valid for ") and code.stderr.endswith(" more seconds\n")
    events = _json(["audit", "list", "--client", "acme"], vault_path)
    assert events[-1]["action"] == "cred.reveal" and events[-1]["detail"]["field"] == "totp"


def test_cred_totp_options_and_refusals(acme, vault_path: Path) -> None:
    uri = f"otpauth://totp/x?secret={SEED}&digits=8&period=60&algorithm=SHA256"
    _ok(fork_run(["cred", "add", "acme", "VPN", "--with-totp"], vault=vault_path, input=f"vpn-pass\n{uri}\n"))
    before = time.time()
    code = fork_run(["cred", "totp", "acme", "VPN"], vault=vault_path).stdout.strip()
    assert code in {rfc6238(SEED, before, 8, 60, "sha256"), rfc6238(SEED, time.time(), 8, 60, "sha256")}

    no_uri = fork_run(
        ["cred", "add", "acme", "Router", "--with-totp"], vault=vault_path, input="router-pass\n"
    )
    assert (no_uri.returncode, no_uri.stderr) == (
        1,
        "Error: --with-totp was given but no otpauth:// URI came\n"
        "hint: give it on the second line of standard input (the first with --generate)\n",
    )
    bad_uri = fork_run(
        ["cred", "add", "acme", "Router", "--with-totp"],
        vault=vault_path,
        input="router-pass\nhttps://example.com/?secret=JBSWY3DP\n",
    )
    assert (bad_uri.returncode, bad_uri.stderr) == (
        1,
        "Error: the TOTP seed must be an otpauth://totp/... URI\n",
    )
    none = fork_run(["cred", "totp", "acme", "Firewall admin"], vault=vault_path)
    assert (none.returncode, none.stderr) == (1, "Error: credential 'Firewall admin' has no TOTP seed\n")
    assert sorted(c["label"] for c in _json(["cred", "list", "acme"], vault_path)) == [
        "Firewall admin",
        "VPN",
    ]


def test_cred_generate(acme, vault_path: Path) -> None:
    added = fork_run(["cred", "add", "acme", "NAS admin", "--generate", "40"], vault=vault_path)
    assert added.stdout.startswith("Added credential 'NAS admin' (")
    assert added.stdout.endswith(" (generated; reveal it with cred show --reveal).\n")
    default = fork_run(["cred", "add", "acme", "Wi-Fi", "--generate", "--category", "wifi"], vault=vault_path)
    assert default.returncode == 0, default.stderr
    secrets = {}
    for label in ("NAS admin", "Wi-Fi"):
        shown = _json(["cred", "show", "acme", label, "--reveal"], vault_path)
        secrets[label] = shown["secret"]
        assert secrets[label] not in added.stdout + default.stdout
        assert set(secrets[label]) <= set(GEN_ALPHABET)
    assert (len(secrets["NAS admin"]), len(secrets["Wi-Fi"])) == (40, 24)
    short = fork_run(["cred", "add", "acme", "Short", "--generate", "4"], vault=vault_path)
    assert short.returncode == 2
    assert short.stderr.endswith("Error: Invalid value for '--generate': 4 is not in the range 8<=x<=256.\n")


def test_cred_list_and_show_never_print_secrets(acme, vault_path: Path) -> None:
    _ok(
        fork_run(
            ["cred", "add", "acme", "M365 admin", "--with-totp", "--notes", "MFA on Jane's phone"],
            vault=vault_path,
            input=f"Tenant-pa55-Word\n{OTPAUTH}\n",
        )
    )
    _ok(fork_run(["cred", "rotate", "acme", "Firewall admin"], vault=vault_path, input="Fw-s3cret-0002\n"))
    secrets = [SECRET, "Fw-s3cret-0002", "Tenant-pa55-Word", SEED]
    outputs = [
        fork_run(args, vault=vault_path)
        for args in (
            ["cred", "list", "acme"],
            ["cred", "list", "acme", "--json"],
            ["--json", "cred", "list", "acme"],
            ["cred", "show", "acme", "Firewall admin"],
            ["cred", "show", "acme", "M365 admin", "--json"],
            ["cred", "history", "acme", "Firewall admin"],
            ["cred", "history", "acme", "Firewall admin", "--json"],
            ["cred", "list", "acme", "--needs-rotation"],
            ["search", "s3cret"],
            ["search", "Tenant", "--json"],
            ["audit", "list"],
            ["audit", "list", "--json"],
            ["client", "show", "acme", "--json"],
        )
    ]
    for done in outputs:
        assert done.returncode == 0, done.stderr
        for secret in secrets:
            assert secret not in done.stdout + done.stderr, (done.args, secret)
    listed = json.loads(outputs[1].stdout)
    assert sorted((c["label"], c["has_secret"], c["has_totp"]) for c in listed) == [
        ("Firewall admin", True, False),
        ("M365 admin", True, True),
    ]
    assert "(hidden; --reveal to show)" in outputs[3].stdout
    assert json.loads(outputs[9].stdout) == []  # secrets and seeds are never searched


def test_rotation_and_history(acme, vault_path: Path) -> None:
    rotated = run(["cred", "rotate", "acme", "Firewall admin"], vault=vault_path, input="Fw-s3cret-0002\n")
    assert (rotated.returncode, rotated.stdout) == (0, "Rotated 'Firewall admin' (now version 2).\n")
    assert "Fw-s3cret" not in rotated.stdout + rotated.stderr
    generated = fork_run(["cred", "rotate", "acme", "Firewall admin", "--generate", "32"], vault=vault_path)
    assert generated.stdout == "Rotated 'Firewall admin' (now version 3).\n"

    history = run(["cred", "history", "acme", "Firewall admin", "--json"], vault=vault_path)
    rows = json.loads(_ok(history))
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert all("secret" not in r for r in rows)
    assert rows[1]["last_rotated"] == time.strftime("%Y-%m-%d", time.gmtime())

    revealed = json.loads(
        _ok(fork_run(["cred", "history", "acme", "Firewall admin", "--reveal", "--json"], vault=vault_path))
    )
    assert [r["secret"] for r in revealed][:2] == [SECRET, "Fw-s3cret-0002"]
    assert len(revealed[2]["secret"]) == 32
    current = _json(["cred", "show", "acme", "Firewall admin", "--reveal"], vault_path)
    assert (current["version"], current["secret"]) == (3, revealed[2]["secret"])

    events = _json(["audit", "list", "--client", "acme"], vault_path)
    actions = [e["action"] for e in events]
    assert actions.count("cred.rotate") == 2
    assert {"versions": [1, 2, 3], "field": "secret", "purpose": "history"} in [e["detail"] for e in events]

    empty = fork_run(["cred", "rotate", "acme", "Firewall admin"], vault=vault_path, input="")
    assert (empty.returncode, empty.stderr) == (1, "Error: the new secret is empty\n")
    assert _json(["cred", "show", "acme", "Firewall admin"], vault_path)["version"] == 3

    assert fork_run(["cred", "rm", "acme", "Firewall admin", "--yes"], vault=vault_path).stdout == (
        "Deleted credential 'Firewall admin'.\n"
    )
    assert _json(["cred", "list", "acme"], vault_path) == []


# --- attachments ----------------------------------------------------------------------------------------


def test_attachment_round_trip_of_5_mb(acme, vault_path: Path, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024)
    src = tmp_path / "switch-config.tar"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    added = run(["attach", "add", "acme", str(src), "--notes", "config backup"], vault=vault_path)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("Attached switch-config.tar (5242880 bytes, ")
    listed = _json(["attach", "list", "acme"], vault_path)
    assert [(a["name"], a["size"], a["sha256"], a["chunks"]) for a in listed] == [
        ("switch-config.tar", 5242880, digest, 20)
    ]
    out = tmp_path / "restored" / "config.tar"
    out.parent.mkdir()
    got = run(["attach", "get", "acme", "switch-config.tar", "--out", str(out)], vault=vault_path)
    assert (got.returncode, got.stdout) == (0, f"Wrote {out} (5242880 bytes, SHA-256 verified).\n")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    assert mode(out) == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["config.tar"]

    again = fork_run(["attach", "get", "acme", listed[0]["id"][:8], "--out", str(out)], vault=vault_path)
    assert (again.returncode, again.stderr) == (
        1,
        f"Error: {out} already exists; refusing to overwrite it\nhint: choose another name or remove it first\n",
    )
    missing = fork_run(
        ["attach", "get", "acme", "nothing.bin", "--out", str(tmp_path / "x")], vault=vault_path
    )
    assert (missing.returncode, missing.stderr) == (
        1,
        "Error: no attachment 'nothing.bin' for client acme\nhint: list them: handover attach list acme\n",
    )
    no_file = fork_run(["attach", "add", "acme", str(tmp_path / "absent.bin")], vault=vault_path)
    assert no_file.returncode == 2 and "does not exist" in no_file.stderr


def test_attachment_size_cap(acme, vault_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(b"\0" * (1024 * 1024 + 1))
    done = fork_run(
        ["attach", "add", "acme", str(src)], vault=vault_path, env={"HANDOVER_MAX_ATTACHMENT_MB": "1"}
    )
    assert (done.returncode, done.stderr) == (
        1,
        "Error: big.bin is larger than the attachment limit of 1 MiB\n",
    )
    assert _json(["attach", "list", "acme"], vault_path) == []  # rolled back: no record, no chunks


# --- search -------------------------------------------------------------------------------------------


def test_search(acme, vault_path: Path) -> None:
    _ok(fork_run(["client", "add", "beta", "--name", "Beta GmbH"], vault=vault_path))
    _ok(
        fork_run(
            ["doc", "add", "beta", "Firewall rules"], vault=vault_path, input="Allow 443 to the web server.\n"
        )
    )
    hits = _json(["search", "firewall"], vault_path)
    assert {(h["client"], h["kind"], h["title"]) for h in hits} == {
        ("acme", "cred", "Firewall admin"),
        ("acme", "asset", "fw1"),
        ("beta", "doc", "Firewall rules"),
    }
    only = _json(["search", "firewall", "--client", "beta"], vault_path)
    assert [(h["client"], h["kind"]) for h in only] == [("beta", "doc")]
    assert [h["kind"] for h in _json(["search", "Beta"], vault_path)] == ["client"]
    table = _ok(fork_run(["search", "jane"], vault=vault_path))
    assert "contact" in table and "Jane Doe" in table
    assert _ok(fork_run(["search", "zzzzqqq"], vault=vault_path)) == "(no matches)\n"
    empty = fork_run(["search", "?"], vault=vault_path)
    assert (empty.returncode, empty.stderr) == (
        1,
        "Error: the search needs a word of at least two letters or digits\n",
    )


# --- naming clients and records ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["doc", "list", "nope"], ""),
        (["doc", "add", "nope", "Title"], "body\n"),
        (["cred", "add", "nope", "Label"], "a-secret-that-must-not-be-read\n"),
        (["cred", "show", "nope", "x", "--reveal"], ""),
        (["asset", "add", "nope", "fw1"], ""),
        (["issue", "add", "nope", "T", "--severity", "low"], ""),
        (["contact", "list", "nope"], ""),
        (["client", "show", "nope"], ""),
        (["search", "fw1", "--client", "nope"], ""),
    ],
    ids=lambda a: "-".join(a) if isinstance(a, list) else "",
)
def test_unknown_client(acme, vault_path: Path, args: list[str], stdin: str) -> None:
    done = fork_run(args, vault=vault_path, input=stdin)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", NO_CLIENT)


def test_unknown_client_through_the_installed_command(acme, vault_path: Path) -> None:
    done = run(["cred", "add", "nope", "Label"], vault=vault_path, input="a-secret\n")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", NO_CLIENT)


def test_ambiguous_id_prefix_and_title(acme, vault_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(
        [uuid.UUID("abcd1111-0000-4000-8000-000000000001"), uuid.UUID("abcd2222-0000-4000-8000-000000000002")]
    )
    with monkeypatch.context() as mp:
        mp.setattr("handover_vault.store.records.uuid.uuid4", lambda: next(ids))
        acme.docs.add("acme", title="Printers", body="HP in the hall")
        acme.docs.add("acme", title="Printers", body="Canon upstairs")
    by_prefix = fork_run(["doc", "show", "acme", "abcd"], vault=vault_path)
    assert (by_prefix.returncode, by_prefix.stderr) == (
        1,
        "Error: 'abcd' matches several doc records (abcd1111, abcd2222)\nhint: name one by its id\n",
    )
    by_title = fork_run(["doc", "show", "acme", "printers"], vault=vault_path)
    assert (by_title.returncode, by_title.stderr) == (
        1,
        "Error: 'printers' matches several doc records (abcd1111, abcd2222)\nhint: name one by its id\n",
    )
    unique = fork_run(["doc", "show", "acme", "ABCD2", "--json"], vault=vault_path)
    assert json.loads(_ok(unique))["body"] == "Canon upstairs"
    short = fork_run(
        ["doc", "show", "acme", "abc"], vault=vault_path
    )  # under 4 characters: a title, not a prefix
    assert (short.returncode, short.stderr) == (
        1,
        "Error: no doc 'abc' for client acme\nhint: list them: handover doc list acme\n",
    )
