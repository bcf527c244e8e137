"""The ``handover`` command: global options, lazy command loading and the one error handler.

Command modules are imported only when their command runs, so ``handover --help`` and shell
completion do not pay for SQLAlchemy, Alembic, markdown-it or rich.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from . import context

# name -> "module:attribute". Keep sorted by the order they appear in `handover --help`.
COMMANDS: dict[str, str] = {
    "init": "handover_vault.cli.vaultcmds:init",
    "unlock": "handover_vault.cli.vaultcmds:unlock",
    "lock": "handover_vault.cli.vaultcmds:lock",
    "passwd": "handover_vault.cli.vaultcmds:passwd",
    "recover": "handover_vault.cli.vaultcmds:recover",
    "backup": "handover_vault.cli.vaultcmds:backup",
    "rekey": "handover_vault.cli.vaultcmds:rekey",
    "new-signing-key": "handover_vault.cli.vaultcmds:new_signing_key",
    "profile": "handover_vault.cli.profile:profile",
    "verify": "handover_vault.cli.verify:verify",
    "client": "handover_vault.cli.clients:client",
    "contact": "handover_vault.cli.clients:contact",
    "doc": "handover_vault.cli.docs:doc",
    "asset": "handover_vault.cli.inventory:asset",
    "cred": "handover_vault.cli.creds:cred",
    "issue": "handover_vault.cli.inventory:issue",
    "attach": "handover_vault.cli.inventory:attach",
    "search": "handover_vault.cli.inventory:search",
    "audit": "handover_vault.cli.audit:audit",
    "end": "handover_vault.cli.agreement:end",
    "letter": "handover_vault.cli.agreement:letter",
    "forget": "handover_vault.cli.agreement:forget",
    "certificate": "handover_vault.cli.agreement:certificate",
    "check": "handover_vault.cli.bundle:check",
    "successor": "handover_vault.cli.bundle:successor",
    "keygen": "handover_vault.cli.bundle:keygen",
    "export": "handover_vault.cli.bundle:export",
    "bundle": "handover_vault.cli.bundle:bundle",
    "request": "handover_vault.cli.requests:request",
    "import": "handover_vault.cli.imports:import_",
    "demo": "handover_vault.cli.demo:demo",
    "member": "handover_vault.cli.team:member",
    "team": "handover_vault.cli.team:team",
    "grant": "handover_vault.cli.team:grant",
    "revoke": "handover_vault.cli.team:revoke",
}

# One-line help shown by `handover --help` without importing the command's module.
SHORT_HELP: dict[str, str] = {
    "init": "Create a vault; print the recovery code once.",
    "unlock": "Unlock for a while; prints export HANDOVER_SESSION=...",
    "lock": "End the current unlock session.",
    "passwd": "Change the passphrase (re-wraps the master key only).",
    "recover": "Set a new passphrase using the recovery code.",
    "backup": "Copy the live vault to a file (0600).",
    "rekey": "New master and client keys; every record re-encrypted.",
    "new-signing-key": "Replace the vault's signing key (its fingerprint changes).",
    "profile": "Who is handing over: your name, company, email and phone.",
    "verify": "Check the whole vault; adopt a deliberately restored file.",
    "client": "Add, list, show and edit clients.",
    "contact": "Client contacts (and who may receive credentials).",
    "doc": "Markdown documentation pages, with history.",
    "asset": "The network inventory.",
    "cred": "Credentials: secrets, TOTP, rotation, history.",
    "issue": "Known issues and the client's acknowledgement.",
    "attach": "Encrypted attachments (diagrams, config backups).",
    "search": "Search names, documents and notes (never secrets).",
    "audit": "The tamper-evident audit log.",
    "end": "Record notice: the effective end date and on-hand window.",
    "letter": "Write the termination letter (.md and .html).",
    "forget": "Crypto-shred an ended client; write a signed certificate.",
    "certificate": "Verify a certificate of destruction (or write it again).",
    "check": "Handover readiness: what a successor would miss.",
    "successor": "The successor and their public keys.",
    "keygen": "Make an age identity for a successor who has none.",
    "export": "Export the sealed handover bundle.",
    "bundle": "Verify or open a handover bundle (the successor's side).",
    "request": "Ex-client requests: log (identity check, decision), list, show, report.",
    "import": "Import from KeePass, Bitwarden or CSV (with --dry-run).",
    "demo": "A throwaway vault walked through the whole job.",
    "member": "Your member key, and the team's members.",
    "team": "Create a team vault on PostgreSQL, or join one.",
    "grant": "Give a team member a client (its key wrapped to them).",
    "revoke": "Take a client from a member: re-key it, list what is at risk.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--vault",
    "vault_path",
    envvar="HANDOVER_VAULT",
    type=click.Path(dir_okay=False),
    help="Vault file (env HANDOVER_VAULT; default: the user data dir).",
)
@click.option(
    "--db",
    "db_url",
    envvar="HANDOVER_DB_URL",
    metavar="URL",
    help="A team vault on PostgreSQL, postgresql+psycopg://USER@HOST/DB (env HANDOVER_DB_URL).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on list/show commands.")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.version_option("0.1.0", prog_name="handover")
@click.pass_context
def cli(ctx: click.Context, vault_path: str | None, db_url: str | None, as_json: bool, debug: bool) -> None:
    """Handover Vault: client network docs and credentials in one encrypted file, and a sealed,
    verifiable handover when a maintenance agreement ends.

    Unlock: HANDOVER_PASSPHRASE_FILE, HANDOVER_PASSPHRASE_COMMAND, HANDOVER_PASSPHRASE (least safe),
    HANDOVER_SESSION (from `handover unlock`), else a hidden prompt. Exit codes: 0 ok, 1 failed,
    2 usage, 3 authentication failed, 4 integrity failure.
    """
    given = click.core.ParameterSource.COMMANDLINE
    if db_url and ctx.get_parameter_source("db_url") is given:
        if vault_path and ctx.get_parameter_source("vault_path") is given:
            raise click.UsageError("give either --vault FILE or --db URL, not both")
        context.refuse_password_in_argv(db_url)
    elif vault_path and ctx.get_parameter_source("vault_path") is given:
        db_url = None  # --vault on the command line wins over HANDOVER_DB_URL in the environment
    ctx.obj = context.State(vault_path=vault_path, as_json=as_json, debug=debug, db_url=db_url or None)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the CLI and map errors to exit codes (DESIGN §9)."""
    os.umask(0o077)  # every file we create (vault, exports, temp files) is private from the start
    context.capture_secret_env()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv: Any = cli.main(args=argv, prog_name="handover", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing more was changed.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:
        sys.exit(context.report_error(exc, debug))
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
