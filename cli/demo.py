"""``handover demo``: a throwaway vault walked through the whole job, narrated.

Every step runs the real ``handover`` command in a subprocess, exactly as a technician would type it
(secrets arrive on standard input, never in argv), so the demo doubles as a smoke test of the
installed tool. It needs no configuration, no HOME and no terminal.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

SLUG = "harbour-dental"
OVERVIEW = """# Network overview

Harbour Dental Practice, 2 Quay Street. One site, 14 devices.

| Segment | Subnet | Notes |
|---|---|---|
| LAN | 10.20.0.0/24 | practice PCs, printers, X-ray workstation |
| Guest Wi-Fi | 10.20.50.0/24 | isolated, rate-limited |
| Management | 10.20.99.0/28 | firewall, switch, NAS, AP |

The firewall (`fw1`, 10.20.99.1) is the DHCP server and the VPN endpoint for the owner's laptop.
Backups: NAS `nas1` snapshots nightly; an encrypted copy goes offsite to the cloud bucket weekly.
"""
BACKUPS = """# Backups

1. Nightly snapshot on `nas1` (kept 30 days).
2. Weekly encrypted copy to the offsite bucket (key: credential *Backup encryption key*).
3. **Restore test**: none recorded since 2025 (see the known issue).
"""


@dataclass
class Step:
    narration: str
    args: list[str]
    stdin: str = ""
    expect: int = 0


def _steps(work: Path, today: dt.date) -> list[Step]:
    notice = (today - dt.timedelta(days=100)).isoformat()
    key = str(work / "successor.key")
    s = SLUG
    return [
        Step(
            "Record the client and its contract (1 month notice, to the end of a month).",
            [
                "client",
                "add",
                s,
                "--name",
                "Harbour Dental Practice",
                "--contract-start",
                "2023-03-01",
                "--notice-months",
                "1",
                "--end-of-month",
            ],
        ),
        Step(
            "Contacts: only authorised contacts may receive credentials later.",
            [
                "contact",
                "add",
                s,
                "--name",
                "Maria Lopez",
                "--role",
                "Practice manager",
                "--email",
                "maria@harbour-dental.example",
                "--phone",
                "+44 20 7946 0001",
                "--authorized",
            ],
        ),
        Step(
            "",
            [
                "contact",
                "add",
                s,
                "--name",
                "Dr Tom Reed",
                "--role",
                "Dentist",
                "--email",
                "tom@harbour-dental.example",
            ],
        ),
        Step(
            "Documentation pages are Markdown; every edit keeps the previous version.",
            ["doc", "add", s, "Network overview", "--overview", "--tag", "network"],
            stdin=OVERVIEW,
        ),
        Step("", ["doc", "add", s, "Backups", "--tag", "backup"], stdin=BACKUPS),
        Step(
            "The network inventory, with the dates that will bite the successor.",
            [
                "asset",
                "add",
                s,
                "fw1",
                "--kind",
                "firewall",
                "--ip",
                "10.20.99.1",
                "--location",
                "comms cabinet",
                "--model",
                "FortiGate 40F",
                "--expires",
                (today + dt.timedelta(days=40)).isoformat(),
                "--expiry-kind",
                "support",
            ],
        ),
        Step(
            "",
            ["asset", "add", s, "nas1", "--kind", "nas", "--ip", "10.20.99.5", "--model", "Synology DS920+"],
        ),
        Step(
            "",
            [
                "asset",
                "add",
                s,
                "harbour-dental.example",
                "--kind",
                "domain",
                "--expires",
                (today + dt.timedelta(days=120)).isoformat(),
                "--expiry-kind",
                "domain",
            ],
        ),
        Step(
            "Credentials: the secret comes on standard input (or a hidden prompt), never in argv.",
            [
                "cred",
                "add",
                s,
                "Firewall admin",
                "--username",
                "admin",
                "--category",
                "firewall",
                "--url",
                "https://10.20.99.1:8443",
            ],
            stdin="Fw!demo-4471-harbour\n",
        ),
        Step(
            "",
            [
                "cred",
                "add",
                s,
                "Domain registrar",
                "--username",
                "harbourdental",
                "--category",
                "registrar",
                "--url",
                "https://registrar.example",
            ],
            stdin="Reg-demo-9931\n",
        ),
        Step(
            "",
            [
                "cred",
                "add",
                s,
                "Microsoft 365 global admin",
                "--username",
                "admin@harbourdental.example",
                "--category",
                "tenant-admin",
                "--url",
                "https://admin.microsoft.com",
                "--with-totp",
            ],
            stdin="M365-demo-pass-2207\notpauth://totp/M365:admin?secret=JBSWY3DPEHPK3PXP&issuer=M365\n",
        ),
        Step(
            "",
            [
                "cred",
                "add",
                s,
                "Backup encryption key",
                "--category",
                "backup-key",
                "--username",
                "nas1",
                "--url",
                "https://10.20.99.5:5001",
                "--generate",
                "32",
            ],
        ),
        Step(
            "",
            [
                "cred",
                "add",
                s,
                "M365 MFA recovery codes",
                "--category",
                "mfa-recovery",
                "--username",
                "admin@harbourdental.example",
                "--url",
                "https://mysignins.microsoft.com",
            ],
            stdin="1111-2222 3333-4444 5555-6666\n",
        ),
        Step(
            "",
            [
                "cred",
                "add",
                s,
                "Office Wi-Fi",
                "--category",
                "wifi",
                "--username",
                "HarbourStaff",
                "--url",
                "https://10.20.99.3",
            ],
            stdin="wifi-demo-passphrase\n",
        ),
        Step("Listing credentials never shows a secret.", ["cred", "list", s]),
        Step(
            "Revealing one is written to the audit log first.",
            ["cred", "show", s, "Firewall admin", "--reveal"],
        ),
        Step(
            "Known issues, with the risk of ignoring them.",
            [
                "issue",
                "add",
                s,
                "Offsite backup never restore-tested",
                "--severity",
                "critical",
                "--risk",
                "backups may be unusable when needed",
                "--workaround",
                "test a restore every quarter",
            ],
        ),
        Step(
            "",
            [
                "issue",
                "add",
                s,
                "Reception PC runs Windows 10",
                "--severity",
                "high",
                "--risk",
                "no security updates since Oct 2025",
                "--workaround",
                "replace or isolate it",
            ],
        ),
        Step(
            "Readiness: what would a successor miss? (exit 1 while blocking gaps remain)",
            ["check", s],
            expect=1,
        ),
        Step(
            "The successor has no age key yet: make one for them (normally they run age-keygen).",
            ["keygen", "--out", key],
        ),
        Step(
            "Record the successor and the key the bundle will be sealed to.",
            [
                "successor",
                "set",
                s,
                "--name",
                "Kai Brennan",
                "--org",
                "Northside IT",
                "--email",
                "kai@northside-it.example",
                "--recipient",
                "{successor_pub}",
            ],
        ),
        Step(
            "Acknowledgement: the client signs that they know about the open issues.",
            [
                "issue",
                "ack",
                s,
                "--by",
                "Maria Lopez",
                "--role",
                "Practice manager",
                "--date",
                today.isoformat(),
                "--method",
                "signed-form",
            ],
        ),
        Step(
            "End the agreement: the effective date follows the contract's notice clause.",
            ["end", s, "--notice-given", notice, "--reason", "we are retiring our on-site support service"],
        ),
        Step(
            "A polite termination letter (Markdown and HTML).", ["letter", s, "--out", str(work / "letters")]
        ),
        Step("Readiness again.", ["check", s]),
        Step(
            "Seal the handover bundle to the successor's key (age format, signed manifest).",
            ["export", s, "--out", str(work / f"{s}-handover.tar.age")],
        ),
        Step(
            "The successor verifies it (with stock tools: `age -d -i KEY -o bundle.tar FILE`, then "
            "`tar xf bundle.tar` and the ssh-keygen check in VERIFY.txt).",
            ["bundle", "verify", str(work / f"{s}-handover.tar.age"), "--identity", key],
        ),
        Step(
            "After the end, the practice manager phones for the firewall password: identity checked by "
            "calling back the number on file. Granted, shown once, flagged for rotation.",
            [
                "request",
                "log",
                s,
                "--requester",
                "Maria Lopez",
                "--channel",
                "phone",
                "--verified-by",
                "called back +44 20 7946 0001 (number on file)",
                "--item",
                "Firewall admin",
                "--decision",
                "granted",
                "--note",
                "needed for the new provider's onboarding",
            ],
        ),
        Step(
            "Someone who is not an authorised contact asks too: refused, nothing disclosed.",
            [
                "request",
                "log",
                s,
                "--requester",
                "Dr Tom Reed",
                "--channel",
                "email",
                "--verified-by",
                "none",
                "--item",
                "Office Wi-Fi",
                "--decision",
                "granted",
            ],
            expect=1,
        ),
        Step("", ["cred", "list", s, "--needs-rotation"]),
        Step(
            "The audit log: every reveal, export and request, in a verifiable HMAC chain.", ["audit", "list"]
        ),
        Step("", ["audit", "verify"]),
        Step(
            "When the on-hand window is over, forget the client (crypto-shredding) with a signed certificate; the demo does it now.",
            ["forget", s, "--yes", "--certificate", str(work / f"{s}-destruction.md")],
        ),
        Step(
            "The chain still verifies; the forgotten client's entries stay, unreadable.", ["audit", "verify"]
        ),
        Step("", ["client", "list"]),
    ]


def _fill(arg: str, work: Path) -> str:
    """Values known only once earlier steps ran (the successor's public key from their key file)."""
    if arg != "{successor_pub}":
        return arg
    for line in (work / "successor.key").read_text().splitlines():
        if line.startswith("# public key: "):
            return line.removeprefix("# public key: ").strip()
    raise click.ClickException("the demo key file has no public key line")


def _handover() -> list[str]:
    exe = shutil.which("handover", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "handover_vault.cli.main"]


def _run(step: Step, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _handover() + step.args,
        input=step.stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _show(step: Step, done: subprocess.CompletedProcess[str]) -> None:
    if step.narration:
        click.secho(f"\n{step.narration}", bold=True)
    shown = " ".join(a if " " not in a else repr(a) for a in step.args)
    click.echo(f"$ handover {shown}" + ("   # secret on stdin" if step.stdin else ""))
    for line in (done.stdout + done.stderr).rstrip().splitlines():
        click.echo(f"    {line}")


@click.command()
@click.option(
    "--keep", "keep", type=click.Path(file_okay=False), help="Keep the demo vault and files in DIR."
)
def demo(keep: str | None) -> None:
    """Walk a throwaway vault through the whole job: record, check, acknowledge, end, letter, export,
    verify, answer a request, verify the audit log, forget. No prompts; nothing outside the demo dir."""
    from ..errors import InvalidInput, VaultError

    if keep and Path(keep).exists() and any(Path(keep).iterdir()):
        raise InvalidInput(f"{keep} is not empty; give a new or empty folder to --keep")
    work = Path(keep or tempfile.mkdtemp(prefix="handover-demo-"))
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env.update(
        {
            "HANDOVER_VAULT": str(work / "demo.vault"),
            "HANDOVER_RUNTIME_DIR": str(work / "runtime"),
            "NO_COLOR": "1",
        }
    )
    passphrase = secrets.token_urlsafe(18)
    try:
        click.secho("Handover Vault demo: one client, from first visit to forgotten.", bold=True)
        init = _run(Step("", ["init"]), {**env, "HANDOVER_NEW_PASSPHRASE": passphrase})
        _show(
            Step("Create the vault (Argon2id key slots; the recovery code is printed once).", ["init"]), init
        )
        unlock = _run(Step("", ["unlock", "--for", "30m"]), {**env, "HANDOVER_PASSPHRASE": passphrase})
        if init.returncode or unlock.returncode:
            raise VaultError("the demo could not create or unlock its vault")
        env["HANDOVER_SESSION"] = unlock.stdout.strip().split("=", 1)[1]
        click.secho("\nUnlock once for the session, so no step asks for the passphrase.", bold=True)
        click.echo('$ eval "$(handover unlock --for 30m)"')
        for step in _steps(work, dt.datetime.now(dt.UTC).date()):
            step.args = [_fill(a, work) for a in step.args]
            done = _run(step, env)
            _show(step, done)
            if done.returncode != step.expect:
                raise VaultError(
                    f"demo step `handover {' '.join(step.args[:2])}` exited {done.returncode}, "
                    f"expected {step.expect}"
                )
        click.secho("\nDone: every step above ran the real command.", bold=True)
        if keep:
            click.echo(f"The vault, key, letter, bundle and certificate are in {work}")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
