"""profile commands: the outgoing technician's own identity, which signs every document."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .context import emit_json, fields, json_option, state

if TYPE_CHECKING:
    from ..profile import Profile


@click.group()
def profile() -> None:
    """Who is handing over: your name, company and how to reach you.

    The termination letter is signed with it, the bundle's report tells the successor whom to call
    about the fingerprint, and the certificate of destruction and the request report say who issued
    them. One profile per vault, stored encrypted like every other value.
    """


@profile.command("set")
@click.option("--name", help="Your name, as letters are signed.")
@click.option("--company", help="Your company or MSP.")
@click.option("--email", help="Your email address.")
@click.option("--phone", help="Your telephone number (the successor calls it to confirm the fingerprint).")
@click.option("--address", help="Your postal address.")
@click.option("--website", metavar="URL", help="Your website.")
def profile_set(
    name: str | None,
    company: str | None,
    email: str | None,
    phone: str | None,
    address: str | None,
    website: str | None,
) -> None:
    """Set the profile's given fields; the others stay as they are (an empty value clears one)."""
    from ..readiness import profile_gaps

    v = state().open()
    p = v.profile.set(name=name, company=company, email=email, phone=phone, address=address, website=website)
    click.echo("Technician profile saved:")
    _show(p)
    for gap in profile_gaps(p):
        click.echo(f"warning: {gap.message}", err=True)


@profile.command("show")
@json_option
def profile_show() -> None:
    """Show the technician profile."""
    v = state().open()
    p = v.profile.get()
    if state().as_json:
        emit_json(p.to_json() if p.is_set else None)
        return
    if not p.is_set:
        from ..profile import SET_COMMAND

        click.echo(f"No technician profile set. Set it: {SET_COMMAND}")
        return
    _show(p)


def _show(p: Profile) -> None:
    from ..profile import LABELS

    fields([(f"  {label.lower()}", getattr(p, key)) for key, label in LABELS.items()])
