"""Team vaults on PostgreSQL: member keys, team init and join, members, grants (DESIGN §12)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from .context import (
    chosen_passphrase,
    emit_json,
    printable,
    read_passphrase,
    refuse_password_in_argv,
    state,
    table,
)


def _db(db: str | None) -> str:
    from ..errors import InvalidInput

    if db:
        refuse_password_in_argv(db)
        return db
    url = state().db_url
    if not url:
        raise InvalidInput("no team database was named", "give --db URL or set HANDOVER_DB_URL")
    return url


def _member_key():  # type: ignore[no-untyped-def]
    from ..team.memberkey import default_path, load

    return load(default_path(), read_passphrase("Member key passphrase"))


def _default_name() -> str:
    import getpass

    return getpass.getuser()


@click.group()
def member() -> None:
    """Your member key, and the team's members (admins endorse them)."""


@member.command("key")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="Where to write it (default: HANDOVER_MEMBER_KEY or the user data dir).",
)
def member_key(out: str | None) -> None:
    """Make your member key (X25519 + Ed25519, under your passphrase) and print its fingerprint.

    The passphrase comes from HANDOVER_NEW_PASSPHRASE, the usual passphrase sources, or a prompt.
    Tell the fingerprint to your team's admin in person or by phone: it is what they endorse.
    """
    from ..process import forbid_core_dumps
    from ..team.memberkey import create, default_path

    forbid_core_dumps()
    path = out or str(default_path())
    passphrase = chosen_passphrase("New member key passphrase")
    key = create(path, passphrase)
    click.echo(f"Member key: {path}")
    click.echo(f"Fingerprint: {key.public.fingerprint}")


@member.command("list")
def member_list() -> None:
    """The team's members: fingerprint, admin, endorsement (checked from the pinned first admin)."""
    from ..teams import list_members

    rows = list_members(state().open())
    if state().as_json:
        emit_json([m.as_dict() for m in rows])
        return
    table(
        ["name", "fingerprint", "admin", "endorsed", "team key", "clients"],
        [
            [
                m.name,
                m.fingerprint,
                "yes" if m.admin else "",
                "yes" if m.endorsed else "NO",
                "yes" if m.has_team_key else "",
                m.clients,
            ]
            for m in rows
        ],
    )


@member.command("add")
@click.argument("name")
@click.option(
    "--fingerprint", required=True, metavar="FP", help="The member key's fingerprint, as they told it to you."
)
@click.option(
    "--admin", is_flag=True, help="Make them an admin (they can endorse members and grant clients)."
)
def member_add(name: str, fingerprint: str, admin: bool) -> None:
    """Endorse a technician who ran `team join`, and give them the team key (no client yet)."""
    from ..teams import add_member

    m = add_member(state().open(), name, fingerprint, admin)
    role = "admin" if m.admin else "member"
    click.echo(
        printable(
            f"Added {m.name} ({m.fingerprint}) as {role}. Grant clients with: handover grant SLUG {m.name}"
        )
    )


@member.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--new-signing-key",
    "new_key",
    is_flag=True,
    help="Also replace the vault's signing key, which they could copy (its fingerprint changes).",
)
def member_remove(name: str, yes: bool, new_key: bool) -> None:
    """Revoke every client the member holds (each re-keyed), then rotate the team key without them."""
    from ..teams import remove_member
    from .context import confirm

    v = state().open()
    confirm(printable(f"Remove {name} from the team, re-keying every client they hold?"), yes)
    done = remove_member(v, name)
    for r in done.revoked:
        _print_revoked(r)
    kept = ", ".join(done.kept) or "nobody"
    click.echo(
        printable(
            f"Removed {name}: {len(done.revoked)} clients re-keyed; the team key rotated "
            f"(epoch {done.epoch}), wrapped to: {kept} and the recovery key."
        )
    )
    if done.dropped:
        click.echo(
            printable(
                f"warning: {', '.join(done.dropped)} held the team key but their endorsement no longer "
                "leads to the first admin: the new key was not wrapped to them; an admin adds them again "
                "(handover member add NAME --fingerprint FP)"
            ),
            err=True,
        )
    if new_key:
        from ..signing_keys import new_signing_key
        from .vaultcmds import _print_replaced

        _print_replaced(new_signing_key(done.vault), done.vault)
    else:
        click.echo(
            printable(
                f"note: {name} could copy the vault's signing key ({done.vault.fingerprint}) while they held "
                "the team key; to replace it (its fingerprint changes): handover new-signing-key",
            ),
            err=True,
        )
    click.echo(
        printable(
            "note: every member unlocks again (sessions made before the rotation ended); change the "
            "database password they knew too (handover_app's: docs/team-setup.sql)."
        ),
        err=True,
    )


@click.group()
def team() -> None:
    """Create a team vault on PostgreSQL, or join one."""


@team.command("init")
@click.option("--db", "db", metavar="URL", help="The empty team database (else --db / HANDOVER_DB_URL).")
@click.option("--name", "name", help="Your name in the team (default: your login name).")
@click.option(
    "--from",
    "from_vault",
    type=click.Path(dir_okay=False, exists=True),
    help="A vault file to move in (its passphrase: HANDOVER_FROM_PASSPHRASE, else the usual sources).",
)
@click.option(
    "--recovery-out",
    "recovery_out",
    type=click.Path(dir_okay=False),
    help="Write the recovery identity 0600 to FILE instead of printing it.",
)
def team_init(db: str | None, name: str | None, from_vault: str | None, recovery_out: str | None) -> None:
    """Create the schema and the team in an empty database; you become its first admin.

    Your member key (`handover member key`) opens it. The team's offline recovery key is printed
    once (or written to --recovery-out): should the last admin leave, `handover team recover`
    writes the whole team into a vault file with it. Keep it offline.
    """
    from ..errors import VaultError
    from ..files import write_private
    from ..process import forbid_core_dumps
    from ..teams import init_team

    forbid_core_dumps()
    url = _db(db)
    key = _member_key()
    # The recovery identity exists only in this process: its file is claimed (0600, exclusively)
    # before the team is made, so that a file that cannot be written stops `init` instead of losing
    # the identity for good after the team exists.
    reserved = _reserve(recovery_out) if recovery_out else None
    try:
        if from_vault:
            from ..core import open_vault
            from ..teams import move_in
            from .context import secret_env as _env

            with open_vault(
                from_vault, passphrase=_env("HANDOVER_FROM_PASSPHRASE") or read_passphrase()
            ) as source:
                v, recovery, moved = move_in(url, key, name or _default_name(), source)
            click.echo(
                f"Moved {from_vault} in: {moved} audit entries verified and kept, the head embedded in "
                "the team's first entry."
            )
        else:
            v, recovery = init_team(url, key, name or _default_name())
    except BaseException:
        if reserved is not None:
            _release(reserved)
        raise
    with v:
        click.echo(f"Created team vault {v.location}")
        click.echo(
            f"First admin: {key.public.fingerprint} (members pin it: handover team join --admin {key.public.fingerprint})"
        )
        click.echo(f"Vault fingerprint: {v.fingerprint}  {v.ssh_fingerprint}")
    written = False
    if recovery_out:
        try:
            write_private(recovery_out, (recovery + "\n").encode(), overwrite=True)
            written = True
            click.echo(f"Recovery identity written to {recovery_out} (0600); keep it offline.")
        except VaultError as exc:
            click.echo(f"warning: {exc.message}; the recovery identity is shown here instead", err=True)
    if not written:
        click.echo("")
        click.echo("Recovery identity (shown once; keep it offline, e.g. printed in the safe):")
        click.echo(f"    {recovery}")


def _reserve(path: str) -> Path:
    """Create ``path`` empty and 0600, failing (AlreadyExists, StorageError) if it cannot be."""
    from ..errors import AlreadyExists, StorageError

    target = Path(path)
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise AlreadyExists(
            f"{path} already exists; refusing to overwrite it", "choose another --recovery-out file"
        ) from None
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None
    return target


def _release(target: Path) -> None:
    with contextlib.suppress(OSError):
        if target.stat().st_size == 0:
            target.unlink()


@team.command("recover")
@click.option("--db", "db", metavar="URL", help="The team database (else --db / HANDOVER_DB_URL).")
@click.option(
    "--identity",
    "identity",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The file holding the team's recovery identity (AGE-SECRET-KEY-1…), as team init wrote it.",
)
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False), help="The new vault file (0600)."
)
def team_recover(db: str | None, identity: str, out: str) -> None:
    """Write the whole team vault into a new vault file, with the offline recovery identity.

    For when the last admin left or lost their member key. The file opens with a new passphrase
    (HANDOVER_NEW_PASSPHRASE, the usual sources, or a prompt) and holds every client, credential
    and audit entry; move it into a new team with `handover team init --from FILE`. A new recovery
    code is printed once. The team database itself is not changed.
    """
    from ..errors import InvalidInput
    from ..process import forbid_core_dumps
    from ..teamrecovery import recover_team

    forbid_core_dumps()
    url = _db(db)
    try:
        with open(identity, encoding="utf-8") as fh:
            secret = fh.read(4096).strip()
    except (OSError, UnicodeDecodeError):
        raise InvalidInput(f"cannot read the recovery identity {identity}") from None
    done = recover_team(url, secret, Path(out), chosen_passphrase("New vault passphrase"))
    click.echo(
        f"Recovered the team into {done.path}: {done.clients} clients, the audit log to entry {done.entries}."
    )
    click.echo("")
    click.echo("Recovery code of the new file (shown once; keep it offline):")
    click.echo(f"    {done.recovery_code}")
    click.echo(
        f"Next: handover --vault {done.path} verify; a new team: handover team init --from {done.path}"
    )


@team.command("join")
@click.option("--db", "db", metavar="URL", help="The team database (else --db / HANDOVER_DB_URL).")
@click.option(
    "--admin",
    "admin",
    required=True,
    metavar="FINGERPRINT",
    help="The first admin's fingerprint, told to you out of band.",
)
@click.option("--name", "name", help="Your name in the team (default: your login name).")
def team_join(db: str | None, admin: str, name: str | None) -> None:
    """Register your member key and pin the team's first admin (exit 4 if it is not ADMIN)."""
    from ..team.memberkey import default_path, load
    from ..teams import join_team

    url = _db(db)
    key = load(default_path(), read_passphrase("Member key passphrase"))
    join_team(url, key, name or _default_name(), admin)
    click.echo(f"Joined; your fingerprint is {key.public.fingerprint}.")
    click.echo("An admin now adds you: handover member add NAME --fingerprint " + key.public.fingerprint)


@click.command()
@click.argument("slug")
@click.argument("name")
def grant(slug: str, name: str) -> None:
    """Give member NAME the client SLUG (its key wrapped to them, signed by you, an admin)."""
    from ..teams import grant as do_grant

    version = do_grant(state().open(), slug, name)
    click.echo(printable(f"Granted {slug} to {name} (key version {version})."))


@click.command()
@click.argument("slug")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def revoke(slug: str, name: str, yes: bool) -> None:
    """Take SLUG from NAME: a new client key, every record re-encrypted, and the at-risk list."""
    from ..teams import revoke as do_revoke
    from .context import confirm

    v = state().open()
    confirm(printable(f"Revoke {name}'s access to {slug} and re-key the client?"), yes)
    _print_revoked(do_revoke(v, slug, name))


def _print_revoked(r) -> None:  # type: ignore[no-untyped-def]
    click.echo(
        printable(
            f"Revoked {r.member}'s access to {r.slug}: key version {r.key_version}, {r.records} records "
            f"re-encrypted; kept by: {', '.join(r.kept) or 'you alone'}."
        )
    )
    if r.at_risk:
        click.echo(printable(f"At risk (flagged for rotation: {r.member} could read them):"))
        for item in r.at_risk:
            click.echo(printable(f"  {item['id'][:8]}  {item['label']}"))
    else:
        click.echo("No credentials were at risk.")
