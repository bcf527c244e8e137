"""Vault lifecycle commands: init, unlock, lock, passwd, recover, backup, rekey, new-signing-key."""

from __future__ import annotations

from typing import Any

import click

from .context import chosen_passphrase, new_secret, read_passphrase, secret_env, state
from .params import DURATION


@click.command()
def init() -> None:
    """Create a new vault and print its recovery code once.

    The passphrase comes from HANDOVER_NEW_PASSPHRASE, the usual passphrase sources, or a prompt
    (asked twice). Refuses to overwrite an existing vault.
    """
    from ..core import init_vault
    from ..errors import AlreadyExists
    from ..process import forbid_core_dumps

    forbid_core_dumps()
    st = state()
    if st.db_url is None and st.path().exists():
        raise AlreadyExists(f"a vault already exists at {st.path()}; refusing to overwrite it")
    passphrase = chosen_passphrase("New vault passphrase")
    v, code = init_vault(st.target(), passphrase)
    with v:
        click.echo(f"Created vault {st.location()}")
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
    from ..keys.session import parse_duration

    seconds = parse_duration(duration)
    v = state().open()
    token = v.start_session(seconds)
    from .agent import start

    start(token, seconds)  # the warm agent: optional, commands work the same without it
    click.echo(f"export HANDOVER_SESSION={token}")
    click.echo(f"# unlocked {v.location} for {duration}; end it early with: handover lock", err=True)


AFTER_A_LEAK = (
    "after a leaked session file or passphrase, run `handover rekey` (new master key, every record "
    "re-encrypted): this alone does not end that exposure"
)


@click.command()
def lock() -> None:
    """End the session named by HANDOVER_SESSION (deletes its key file).

    Locking ends the session on this machine. A copy of the session file together with its token
    holds the vault's master key: after such a leak, `handover rekey` is what is needed.
    """
    from ..keys import session

    token = secret_env("HANDOVER_SESSION")
    if not token:
        click.echo("No session to lock (HANDOVER_SESSION is not set).")
        return
    ended = session.end(token)
    click.echo("Locked." if ended else "The session had already ended.")
    click.echo("unset HANDOVER_SESSION", err=True)
    click.echo(f"note: {AFTER_A_LEAK}.", err=True)


@click.command()
def passwd() -> None:
    """Change the passphrase (re-wraps the master key; no record is re-encrypted).

    The new passphrase comes from HANDOVER_NEW_PASSPHRASE or a prompt (asked twice). The master key
    stays the same: whoever learnt it (the old passphrase and a copy of the file, or a session file)
    can still decrypt the vault. After such a leak, run `handover rekey` (with the new passphrase).
    """
    v = state().open()
    new = new_secret("HANDOVER_NEW_PASSPHRASE", "New passphrase")
    v.set_passphrase(new)
    click.echo("Passphrase changed. Sessions already open stay valid until they expire or `handover lock`.")
    click.echo(
        "note: the master key is unchanged, so the old passphrase still opens older copies of the vault "
        f"file; {AFTER_A_LEAK}.",
        err=True,
    )


@click.command()
def recover() -> None:
    """Set a new passphrase using the recovery code.

    The code comes from HANDOVER_RECOVERY_CODE or a prompt; the new passphrase from
    HANDOVER_NEW_PASSPHRASE or a prompt (asked twice).
    """
    from ..core import recover_vault
    from ..process import forbid_core_dumps

    forbid_core_dumps()
    st = state()
    st.check()
    code = secret_env("HANDOVER_RECOVERY_CODE") or _prompt_code()
    new = new_secret("HANDOVER_NEW_PASSPHRASE", "New passphrase")
    with recover_vault(st.target(), code, new):
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
    """Copy the live vault to a new vault file FILE (0600, safe while in use).

    A vault file is copied with SQLite's online backup; a team database as one consistent snapshot
    of every table (the same ciphertexts: FILE opens with the same passphrase)."""
    v = state().open()
    dest = v.backup(file)
    click.echo(f"Backed up to {dest}. It opens with the same passphrase; keep it as safe as the vault.")


@click.command()
def rekey() -> None:
    """New master key and client keys; every record, version and attachment re-encrypted.

    What ends the exposure after a leaked session file or passphrase (`passwd` and `lock` alone do
    not). The passphrase comes from the usual sources (never from HANDOVER_SESSION) and stays the
    same: change it first with `handover passwd` if it leaked. A NEW recovery code is printed once;
    the old one stops working. Every unlock session of this user is ended. One transaction: an
    interruption leaves the vault as it was.
    """
    from ..core import open_vault
    from ..rekey import rekey as do_rekey

    st = state()
    st.check()
    passphrase = read_passphrase()
    v = open_vault(st.target(), passphrase=passphrase)
    try:
        done = do_rekey(v, passphrase)  # shares v's store: the new vault object closes it
    except BaseException:
        v.close()
        raise
    with done.vault:
        click.echo(
            f"Rekeyed {st.location()}: {done.clients} clients, {done.records} records, {done.versions} previous "
            f"versions and {done.chunks} attachment chunks re-encrypted under new keys (audit entry "
            f"{done.audit_seq})."
        )
        click.echo(f"Vault fingerprint: {done.vault.fingerprint} (unchanged: the signing key was re-wrapped)")
        click.echo(
            "note: whoever learnt the old master key could copy the signing key too; to replace it "
            "(its fingerprint changes): handover new-signing-key",
            err=True,
        )
    ended = "session was" if done.sessions_dropped == 1 else "sessions were"
    click.echo(f"{done.sessions_dropped} unlock {ended} ended; unlock again with: eval $(handover unlock)")
    click.echo("")
    click.echo("New recovery code (shown once; the old one no longer works; keep it offline):")
    click.echo(f"    {done.recovery_code}")
    click.echo(
        "note: copies of the vault made before now (backups, sync history) are still under the old keys.",
        err=True,
    )


@click.command("new-signing-key")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def new_signing_key(yes: bool) -> None:
    """Replace the vault's Ed25519 signing key: its fingerprint changes.

    For when someone may hold a copy of the key: a member removed from a team (they could unwrap
    it while they held the team key), or whoever learnt a vault file's master key before a
    `rekey`. Letters, receipts and bundles from now on carry the new fingerprint: tell your
    clients and successors. What the old key signed before still verifies here; a receipt or
    checkpoint it signs for a later audit entry is refused. In a team, an admin only.
    """
    from ..signing_keys import new_signing_key as replace_key
    from .context import confirm

    v = state().open()
    confirm(
        f"Replace the signing key {v.fingerprint}? Its fingerprint changes for everything signed from now on.",
        yes,
    )
    _print_replaced(replace_key(v), v)


def _print_replaced(done: Any, v: Any) -> None:
    click.echo(
        f"New signing key: {done.new} (ssh {v.ssh_fingerprint}); it replaced {done.old} at audit entry {done.audit_seq}."
    )
    click.echo(
        "Tell your clients and successors the new fingerprint: letters, receipts and bundles carry it from now on."
    )
    click.echo(
        "note: receipts and checkpoints the old key signed before still verify here; one it signs later is refused.",
        err=True,
    )
