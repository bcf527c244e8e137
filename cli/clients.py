"""client and contact commands."""

from __future__ import annotations

from typing import Any

import click

from .context import emit_json, fields, json_option, printable, short, state, table
from .params import DATE, DAYS, MONTHS


def _terms(f: Any) -> Any:
    f = click.option("--on-hand-days", type=DAYS, help="Days after the end to answer requests (default 90).")(
        f
    )
    f = click.option(
        "--end-of-month/--no-end-of-month", default=None, help="Notice runs to the end of a calendar month."
    )(f)
    f = click.option("--notice-months", type=MONTHS, help="Notice period in months.")(f)
    f = click.option("--notice-days", type=DAYS, help="Notice period in days.")(f)
    f = click.option("--contract-start", type=DATE, metavar="DATE", help="Contract start date (YYYY-MM-DD).")(
        f
    )
    return f


@click.group()
def client() -> None:
    """Add, list, show and edit clients."""


@client.command("add")
@click.argument("slug")
@click.option("--name", required=True, help="Display name, e.g. 'ACME Ltd'.")
@_terms
def client_add(slug: str, name: str, **terms: Any) -> None:
    """Add a client named by a short SLUG (e.g. acme)."""
    v = state().open()
    c = v.clients.add(slug, name=name, **terms)
    click.echo(printable(f"Added client {c.slug} ({c.name})."))


def _notice(a: dict[str, Any]) -> str:
    n = a.get("notice") or {}
    text = f"{n['days']} days" if "days" in n else f"{n['months']} months" if "months" in n else ""
    return text + (" to end of month" if a.get("end_of_month") and text else "")


def client_row_status(c: Any) -> str:
    """Status with the on-hand reminder (filled in by the agreement module when present)."""
    try:
        from ..agreement import status_line
    except ImportError:
        return str(c.agreement.get("status", ""))
    return str(status_line(c))


@client.command("list")
@json_option
def client_list() -> None:
    """List clients with their agreement status."""
    v = state().open()
    clients = v.clients.list()
    if state().as_json:
        emit_json([c.to_json() for c in clients])
        return
    table(
        ["slug", "name", "status", "effective end"],
        [[c.slug, c.name, client_row_status(c), c.agreement.get("effective_end")] for c in clients],
        "clients",
    )


@client.command("show")
@click.argument("slug")
@json_option
def client_show(slug: str) -> None:
    """Show a client, its agreement and record counts."""
    v = state().open()
    c = v.clients.get(slug)
    counts = {}
    with v.read() as s:
        for kind in ("contact", "doc", "asset", "cred", "issue", "attachment"):
            counts[kind] = v.records.count(s, c, kind)
    if state().as_json:
        from ..agreement import describe

        # The stored agreement plus what follows from today's date (status, on-hand window).
        emit_json({**c.to_json(), "counts": counts, "agreement_state": describe(c)})
        return
    a = c.agreement
    fields(
        [
            ("client", f"{c.slug} ({c.name})"),
            ("id", c.id),
            ("status", client_row_status(c)),
            ("contract start", a.get("contract_start")),
            ("notice", _notice(a)),
            ("notice given", a.get("notice_given")),
            ("reason", a.get("reason")),
            ("effective end", a.get("effective_end")),
            ("on hand until", a.get("on_hand_until")),
            ("successor", (c.data.get("successor") or {}).get("name")),
            ("records", ", ".join(f"{n} {k}s" for k, n in counts.items())),
        ]
    )


@client.command("edit")
@click.argument("slug")
@click.option("--name", help="New display name.")
@_terms
def client_edit(slug: str, name: str | None, **terms: Any) -> None:
    """Change a client's name or agreement terms."""
    v = state().open()
    c = v.clients.edit(slug, name=name, **terms)
    click.echo(printable(f"Updated client {c.slug}."))


@click.group()
def contact() -> None:
    """Client contacts, and who is authorised to receive credentials."""


@contact.command("add")
@click.argument("slug")
@click.option("--name", required=True)
@click.option("--role")
@click.option("--email")
@click.option("--phone")
@click.option("--authorized", is_flag=True, help="May receive credentials after identity checks.")
@click.option(
    "--allow-duplicate", is_flag=True, help="Add it even if the client has a contact with this email."
)
def contact_add(slug: str, **kw: Any) -> None:
    """Add a contact to a client."""
    v = state().open()
    rec = v.contacts.add(slug, **kw)
    click.echo(printable(f"Added contact {rec.data['name']} ({short(rec.id)})."))


@contact.command("list")
@click.argument("slug")
@json_option
def contact_list(slug: str) -> None:
    """List a client's contacts."""
    v = state().open()
    _, recs = v.contacts.list(slug)
    if state().as_json:
        emit_json([r.to_json() for r in recs])
        return
    table(
        ["id", "name", "role", "email", "phone", "authorised"],
        [
            [
                short(r.id),
                r.data["name"],
                r.data.get("role"),
                r.data.get("email"),
                r.data.get("phone"),
                "yes" if r.data.get("authorized") else "no",
            ]
            for r in recs
        ],
        "contacts",
    )


@contact.command("edit")
@click.argument("slug")
@click.argument("ref")
@click.option("--name")
@click.option("--role")
@click.option("--email")
@click.option("--phone")
@click.option("--authorized/--not-authorized", default=None, help="Whether they may receive credentials.")
def contact_edit(slug: str, ref: str, **kw: Any) -> None:
    """Change a contact (REF: id, id prefix or exact name); the previous version is kept."""
    v = state().open()
    rec = v.contacts.edit(slug, ref, **kw)
    who = "authorised" if rec.data.get("authorized") else "not authorised"
    click.echo(printable(f"Updated contact {rec.data['name']} ({who} to receive credentials)."))


@contact.command("rm")
@click.argument("slug")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def contact_rm(slug: str, ref: str, yes: bool) -> None:
    """Remove a contact."""
    from .context import confirm

    v = state().open()
    _, rec = v.contacts.get(slug, ref)
    confirm(f"Remove contact {rec.data['name']!r}?", yes)
    v.contacts.rm(slug, rec.id)
    click.echo(printable(f"Removed contact {rec.data['name']}."))
