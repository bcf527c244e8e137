"""``handover verify``: check the whole vault, or adopt a file restored on purpose (DESIGN §3a)."""

from __future__ import annotations

import click

from .context import confirm, state


@click.command()
@click.option(
    "--accept-rollback",
    is_flag=True,
    help="Adopt a vault file that is older than the last state seen on this machine (a restored backup).",
)
@click.option("--yes", is_flag=True, help="Adopt it without asking (with --accept-rollback).")
def verify(accept_rollback: bool, yes: bool) -> None:
    """Check every envelope, the state commitment, the audit chain and head, the last state seen
    on this machine and the signing key pair. Exit 0 with a summary, or 4 naming the first problem.

    With --accept-rollback: show what the last state seen on this machine had that the file lacks,
    ask, then adopt the file as it is (audited as vault.rollback-accepted).
    """
    from ..integrity.verify import accept_rollback as adopt
    from ..integrity.verify import rollback, verify_vault

    v = state().open(check_head=False)
    if not accept_rollback:
        click.echo(verify_vault(v).summary())
        return
    found = rollback(v)
    if found is None:
        click.echo("The vault is not older than the last state seen on this machine: nothing to accept.")
        click.echo(verify_vault(v).summary())
        return
    for line in found.describe():
        click.echo(line)
    confirm("Adopt this file as the vault's current state? What it lacks stays lost", yes)
    seq = adopt(v, found)
    click.echo(f"Adopted: audit entry {seq} (vault.rollback-accepted) records it.")
