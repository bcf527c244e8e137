"""Vault lifecycle commands: init, unlock, lock, passwd, recover, backup."""

from __future__ import annotations

import click

from .context import new_secret, read_passphrase, secret_env, state
from .params import DURATION


@click.command()
def init() -> None:
    """Create a new vault and print its recovery code once.

    The passphrase comes from HANDOVER_NEW_PASSPHRASE, the usual passphrase sources, or a prompt
    (asked twice). Refuses to overwrite an existing vault.
    """
    from ..core import init_vault
    from ..errors import AlreadyExists

    path = state().path()
    if path.exists():
        raise AlreadyExists(f"a vault already exists at {path}; refusing to overwrite it")
    passphrase = secret_env("HANDOVER_NEW_PASSPHRASE") or _init_passphrase()
    v, code = init_vault(path, passphrase)
    with v:
        click.echo(f"Created vault {path}")
        click.echo(f"Vault fingerprint: {v.fingerprint}  {v.ssh_fingerprint}")
    click.echo("")
    click.echo("Recovery code (shown once; write it down and keep it offline):")
    click.echo(f"    {code}")
    click.echo("It sets a new passphrase with `handover recover` if the passphrase is lost.")
    click.echo("")
    click.echo("Next:")
    click.echo(
        '  handover profile set --name "Your Name" --company "Your Company" --email you@example.net \\'
    )
    click.echo('      --phone "+44 20 7946 0000"     # who signs letters, bundles and certificates')
    click.echo('  handover client add SLUG --name "Client Ltd"')


def _init_passphrase() -> str:
    import os

    if any(
        os.environ.get(n) for n in ("HANDOVER_PASSPHRASE_FILE", "HANDOVER_PASSPHRASE_COMMAND")
    ) or secret_env("HANDOVER_PASSPHRASE"):
        return read_passphrase()
    return new_secret("HANDOVER_NEW_PASSPHRASE", "New vault passphrase")


@click.command()
@click.option(
    "--for",
    "duration",
    type=DURATION,
    default="15m",
    show_default=True,
    help="How long the session lasts (e.g. 90s, 15m, 2h, 1d; at most 7 days).",
)
def unlock(duration: str) -> None:
    """Unlock for a while: prints `export HANDOVER_SESSION=...` to eval in your shell.

    Use as: eval "$(handover unlock --for 30m)". Commands with a valid session skip the passphrase.
    """
    from ..session import parse_duration

    seconds = parse_duration(duration)
    v = state().open()
    token = v.start_session(seconds)
    from .agent import start

    start(token, seconds)  # the warm agent: optional, commands work the same without it
    click.echo(f"export HANDOVER_SESSION={token}")
    click.echo(f"# unlocked {v.path} for {duration}; end it early with: handover lock", err=True)


@click.command()
def lock() -> None:
    """End the session named by HANDOVER_SESSION (deletes its key file)."""
    from .. import session

    token = secret_env("HANDOVER_SESSION")
    if not token:
        click.echo("No session to lock (HANDOVER_SESSION is not set).")
        return
    ended = session.end(token)
    click.echo("Locked." if ended else "The session had already ended.")
    click.echo("unset HANDOVER_SESSION", err=True)


@click.command()
def passwd() -> None:
    """Change the passphrase (re-wraps the master key; no record is re-encrypted).

    The new passphrase comes from HANDOVER_NEW_PASSPHRASE or a prompt (asked twice).
    """
    v = state().open()
    new = new_secret("HANDOVER_NEW_PASSPHRASE", "New passphrase")
    v.set_passphrase(new)
    click.echo("Passphrase changed. Sessions already open stay valid until they expire or `handover lock`.")


@click.command()
def recover() -> None:
    """Set a new passphrase using the recovery code.

    The code comes from HANDOVER_RECOVERY_CODE or a prompt; the new passphrase from
    HANDOVER_NEW_PASSPHRASE or a prompt (asked twice).
    """
    from ..core import recover_vault
    from ..store import check_file

    path = state().path()
    check_file(path)
    code = secret_env("HANDOVER_RECOVERY_CODE") or _prompt_code()
    new = new_secret("HANDOVER_NEW_PASSPHRASE", "New passphrase")
    with recover_vault(path, code, new):
        pass
    click.echo("New passphrase set. The recovery code stays valid; keep it safe.")


def _prompt_code() -> str:
    from ..errors import InvalidInput
    from .context import _tty

    if not _tty():
        raise InvalidInput("no terminal to prompt for the recovery code", "set HANDOVER_RECOVERY_CODE")
    return str(click.prompt("Recovery code", hide_input=True, err=True))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
def backup(file: str) -> None:
    """Copy the live vault to FILE with SQLite's online backup (0600, safe while in use)."""
    v = state().open()
    dest = v.backup(file)
    click.echo(f"Backed up to {dest}. It opens with the same passphrase; keep it as safe as the vault.")
