"""Nothing a technician records reaches the disk, the help text or an error in clear.

A realistic client is recorded through the installed command; then every name, secret, note, email,
URL, document text and attachment byte pattern is searched for in the vault, its -wal and -shm (while
another process still holds the vault open, so the WAL is full, and again after), in every other file
the commands created, and in their output. Every file made is 0600.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import click
import pytest

from tests.conftest import PASSPHRASE, run
from tests.helpers_security import find_plaintext, fork_run, held_open, recovery_code, session_token

SLUG = "harbour-dental"
CLIENT_NAME = "Harbourside Dental Practice"
CONTACT = "Zephyrine Quackenbush"
EMAIL = "zephyrine.q@harbourside-dental.example"
PHONE = "+44 1632 960123"
DOC_TITLE = "Surgery network map"
DOC_BODY = "Reception VLAN uses subnet 172.31.77.0/24; the X-ray PC sits on VLAN 66."
DOC_EDIT = "Guest Wi-Fi isolated on VLAN 99 since the audit."
HOST = "hd-fortigate-60f"
SERIAL = "FGT60FTK2209XYZ"
ASSET_NOTES = "Rack behind the reception desk"
CRED_LABEL = "Practice management DB"
USERNAME = "pm_dbadmin_harbour"
SECRET = "Qx7!vT9#mLw2$Rk4-canary"
ROTATED = "Rotated-Secret-5550-canary"
URL = "https://pms.harbourside-dental.example/admin"
CRED_NOTES = "Vendor support PIN 884213"
SEED = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BAN5ZGK4Q"
ISSUE = "Unsupported Windows 7 X-ray PC"
RISK = "ransomware lateral movement into imaging"
ATTACH_NAME = "xray-pc-config-export.txt"
ATTACH_TEXT = "XRAYPC-CONFIG-CANARY hostname=xray01 admin=imaging"

PLANTED = [
    CLIENT_NAME,
    CONTACT,
    EMAIL,
    PHONE,
    DOC_TITLE,
    DOC_BODY,
    DOC_EDIT,
    HOST,
    SERIAL,
    ASSET_NOTES,
    CRED_LABEL,
    USERNAME,
    SECRET,
    ROTATED,
    URL,
    CRED_NOTES,
    SEED,
    ISSUE,
    RISK,
    ATTACH_NAME,
    ATTACH_TEXT,
    "harbourside-dental.example",
    "172.31.77.0/24",
    "Qx7!vT9#",
    PASSPHRASE,
]


def _record(vault: Path, tmp: Path) -> None:
    """The recording session of a real visit, every value through the command line."""
    attachment = tmp / "upload" / ATTACH_NAME
    attachment.parent.mkdir()
    attachment.write_text(ATTACH_TEXT * 50)
    steps: list[tuple[list[str], str]] = [
        (
            [
                "client",
                "add",
                SLUG,
                "--name",
                CLIENT_NAME,
                "--contract-start",
                "2023-04-01",
                "--notice-months",
                "3",
            ],
            "",
        ),
        (
            [
                "contact",
                "add",
                SLUG,
                "--name",
                CONTACT,
                "--role",
                "Practice manager",
                "--email",
                EMAIL,
                "--phone",
                PHONE,
                "--authorized",
            ],
            "",
        ),
        (["doc", "add", SLUG, DOC_TITLE, "--tag", "network"], DOC_BODY),
        (["doc", "edit", SLUG, DOC_TITLE], DOC_BODY + "\n" + DOC_EDIT),
        (
            [
                "asset",
                "add",
                SLUG,
                HOST,
                "--kind",
                "firewall",
                "--serial",
                SERIAL,
                "--notes",
                ASSET_NOTES,
                "--expires",
                "2027-06-30",
            ],
            "",
        ),
        (
            [
                "cred",
                "add",
                SLUG,
                CRED_LABEL,
                "--username",
                USERNAME,
                "--url",
                URL,
                "--notes",
                CRED_NOTES,
                "--category",
                "server",
                "--with-totp",
            ],
            f"{SECRET}\notpauth://totp/PMS:{USERNAME}?secret={SEED}\n",
        ),
        (["cred", "rotate", SLUG, CRED_LABEL], ROTATED + "\n"),
        (["issue", "add", SLUG, ISSUE, "--severity", "critical", "--risk", RISK], ""),
        (["attach", "add", SLUG, str(attachment)], ""),
        (["cred", "show", SLUG, CRED_LABEL, "--reveal"], ""),
        (["search", "VLAN"], ""),
    ]
    for args, stdin in steps:
        done = run(args, vault=vault, input=stdin)
        assert done.returncode == 0, (args, done.stderr)
    attachment.unlink()


def test_nothing_recorded_is_on_disk_in_clear(tmp_path: Path, vault_path: Path) -> None:
    init = run(["init"], vault=vault_path)
    assert init.returncode == 0, init.stderr
    code = recovery_code(init.stdout)
    needles = [*PLANTED, code, code.replace("-", "")]
    files = [vault_path, Path(f"{vault_path}-wal"), Path(f"{vault_path}-shm")]

    with held_open(vault_path):
        _record(vault_path, tmp_path)
        # The other process pins the WAL: every page written above is still in the -wal.
        assert all(p.exists() for p in files)
        assert files[1].stat().st_size > 64 * 1024
        assert find_plaintext(files, needles) == []
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    # Last one out: the WAL is folded into the vault and removed.
    assert run(["client", "list"], vault=vault_path).returncode == 0
    assert not files[1].exists()
    assert find_plaintext([vault_path], needles) == []
    # The search is not vacuous: the same needles are found in a file that holds them in clear.
    control = tmp_path / "control.txt"
    control.write_text(f"{SECRET} {CLIENT_NAME.casefold()}")
    assert find_plaintext([control], [SECRET, CLIENT_NAME]) == [
        ("control.txt", SECRET),
        ("control.txt", CLIENT_NAME),
    ]
    control.unlink()
    # Whatever else exists under the test's directory (runtime dir, sessions...) holds nothing either.
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert find_plaintext(everything, needles) == []


def test_every_file_made_is_private(tmp_path: Path, vault_path: Path) -> None:
    """Vault, -wal/-shm, backup, session file and decrypted attachment: 0600; directories 0700."""
    assert run(["init"], vault=vault_path).returncode == 0
    unlocked = run(["unlock"], vault=vault_path)
    token = session_token(unlocked.stdout)
    env = {"HANDOVER_SESSION": token}
    src = tmp_path / "in.txt"
    src.write_text("config")
    os.chmod(src, 0o644)
    with held_open(vault_path):
        for args in (
            ["client", "add", "acme", "--name", "ACME"],
            ["attach", "add", "acme", str(src)],
            ["attach", "get", "acme", "in.txt", "--out", str(tmp_path / "out" / "in.txt")],
            ["backup", str(tmp_path / "out" / "vault.bak")],
        ):
            if args[1] == "get":
                (tmp_path / "out").mkdir(mode=0o755)
            done = fork_run(args, vault=vault_path, passphrase=None, env=env)
            assert done.returncode == 0, (args, done.stderr)
        made = [p for p in tmp_path.rglob("*") if p.is_file() and p != src]
        modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in made}
    locked = fork_run(["lock"], vault=vault_path, passphrase=None, env=env)  # ends the warm agent too
    assert locked.returncode == 0, locked.stderr
    assert {"vault.db", "vault.db-wal", "vault.db-shm", "out/in.txt", "out/vault.bak"} <= set(modes)
    assert any(name.startswith("runtime/") for name in modes)  # the session file
    assert set(modes.values()) == {"0o600"}, modes
    sessions = next(p for p in tmp_path.rglob("sessions") if p.is_dir())
    assert stat.S_IMODE(sessions.stat().st_mode) == 0o700


def test_errors_and_debug_output_never_carry_a_secret(acme, vault_path: Path) -> None:
    canary = "Zz-secret-canary-7781"
    cases = [
        (["cred", "add", "nope", "X"], canary + "\n", None),  # unknown client, secret on stdin
        (["cred", "add", "acme", "X"], canary + "\x00tail\n", None),  # rejected secret
        (["cred", "rotate", "acme", "Firewall admin"], canary + "\x00\n", None),
        (["client", "list"], "", canary),  # wrong passphrase: the attempt is not echoed
        (
            ["--debug", "cred", "add", "acme", "Y", "--with-totp"],
            f"{canary}\notpauth://totp/x?secret=!!\n",
            None,
        ),
        (["--debug", "client", "list"], "", canary),
    ]
    for args, stdin, passphrase in cases:
        done = fork_run(args, vault=vault_path, input=stdin, passphrase=passphrase or PASSPHRASE)
        assert done.returncode in (1, 3), (args, done.stderr)
        assert canary not in done.stdout + done.stderr, args
        assert PASSPHRASE not in done.stdout + done.stderr, args
    # Nothing half-written either.
    assert "X" not in {c.data["label"] for c in acme.creds.list("acme")[1]}


# --- --help never offers to take a secret as an option value ------------------------------------------

SECRET_NAME = re.compile(r"pass(word|phrase|wd)?|secret|token|totp|otp|pin\b|recovery|session|private", re.I)


def _walk(cmd: click.Command, ctx: click.Context, path: list[str]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{' '.join(path)} {name} does not load"
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx), [*path, name])


def _commands() -> list[tuple[list[str], click.Command]]:
    from handover_vault.cli.main import cli

    root = click.Context(cli, info_name="handover")
    return list(_walk(cli, root, []))


def _offenders(commands: list[tuple[list[str], click.Command]]) -> list[str]:
    offenders = []
    for path, cmd in commands:
        for param in cmd.params:
            names = " ".join([*param.opts, *param.secondary_opts, param.name or ""])
            if not SECRET_NAME.search(names):
                continue
            takes_value = not (isinstance(param, click.Option) and (param.is_flag or param.count))
            if takes_value and not _writes_to(param):
                offenders.append(f"handover {' '.join(path)}: {names}")
    return offenders


def _writes_to(param: click.Parameter) -> bool:
    """``--recovery-out FILE`` (DESIGN §12): the value is where a secret is written, a file path."""
    return isinstance(param.type, click.Path) and all(o.endswith("-out") for o in param.opts)


def test_no_option_takes_a_secret_as_its_value() -> None:
    commands = _commands()
    assert len(commands) > 20
    assert _offenders(commands) == []


def test_the_walk_would_catch_a_secret_option() -> None:
    """The check above is not vacuous: a --password VALUE or a SECRET argument is reported."""

    @click.command()
    @click.option("--password")
    @click.option("--with-totp", is_flag=True)
    @click.argument("secret")
    def bad(password: str, with_totp: bool, secret: str) -> None:
        """A command that must never exist."""

    assert _offenders([(["bad"], bad)]) == [
        "handover bad: --password password",
        "handover bad: secret secret",
    ]
    planted = Path(os.devnull)
    assert find_plaintext([planted], [SECRET]) == []


def test_every_command_has_help_and_no_secret_shows_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from handover_vault.cli.main import cli

    canary = "Help-canary-secret-0042"
    env = {
        name: canary
        for name in (
            "HANDOVER_PASSPHRASE",
            "HANDOVER_NEW_PASSPHRASE",
            "HANDOVER_RECOVERY_CODE",
            "HANDOVER_BUNDLE_PASSPHRASE",
            "HANDOVER_IMPORT_PASSPHRASE",
            "HANDOVER_SESSION",
        )
    }
    runner = CliRunner()
    for path, cmd in _commands():
        if path:
            assert (cmd.help or cmd.short_help or "").strip(), f"handover {' '.join(path)} has no help text"
        result = runner.invoke(cli, [*path, "--help"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, (path, result.output)
        assert canary not in result.output, path
        # No "--secret TEXT"-style option line in the rendered help either.
        assert not re.search(
            r"--[\w-]*(" + SECRET_NAME.pattern + r")[\w-]*(?<!-out)[ =](?!FILE)[A-Z\[]", result.output, re.I
        ), (path, result.output)


def test_installed_help_through_a_subprocess() -> None:
    canary = "Help-canary-secret-0043"
    for args in (["--help"], ["cred", "add", "--help"], ["passwd", "--help"], ["unlock", "--help"]):
        done = run(
            args, passphrase=canary, env={"HANDOVER_NEW_PASSPHRASE": canary, "HANDOVER_SESSION": canary}
        )
        assert done.returncode == 0, done.stderr
        assert canary not in done.stdout + done.stderr
        assert done.stdout.startswith("Usage: handover")
