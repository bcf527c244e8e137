"""asset, issue, attach and search commands."""

from __future__ import annotations

from typing import Any

import click

from .context import emit_json, fields, json_option, printable, short, state, table
from .params import DATE


@click.group()
def asset() -> None:
    """The network inventory: hosts, devices, subnets, licences and their expiry dates."""


@asset.command("add")
@click.argument("slug")
@click.argument("hostname")
@click.option("--kind", help="e.g. firewall, switch, server, nas, ap, subnet, domain, licence")
@click.option("--ip", help="IP address or subnet.")
@click.option("--location")
@click.option("--model")
@click.option("--serial")
@click.option(
    "--expires", type=DATE, metavar="DATE", help="Warranty/licence/domain/certificate expiry (YYYY-MM-DD)."
)
@click.option("--expiry-kind", type=click.Choice(["warranty", "licence", "domain", "certificate", "support"]))
@click.option("--notes")
def asset_add(slug: str, hostname: str, **kw: Any) -> None:
    """Add an asset."""
    v = state().open()
    rec = v.assets.add(slug, hostname=hostname, **kw)
    click.echo(printable(f"Added asset {rec.data['hostname']} ({short(rec.id)})."))


@asset.command("list")
@click.argument("slug")
@json_option
def asset_list(slug: str) -> None:
    """List a client's assets."""
    v = state().open()
    _, recs = v.assets.list(slug)
    if state().as_json:
        emit_json([r.to_json() for r in recs])
        return
    table(
        ["id", "hostname", "kind", "ip", "location", "expires"],
        [
            [
                short(r.id),
                r.data["hostname"],
                r.data.get("kind"),
                r.data.get("ip"),
                r.data.get("location"),
                f"{r.data['expires']} ({r.data.get('expiry_kind')})" if r.data.get("expires") else "",
            ]
            for r in recs
        ],
        "assets",
    )


@asset.command("show")
@click.argument("slug")
@click.argument("ref")
@json_option
def asset_show(slug: str, ref: str) -> None:
    """Show an asset (REF: id, id prefix or exact hostname)."""
    v = state().open()
    _, rec = v.assets.get(slug, ref)
    if state().as_json:
        emit_json(rec.to_json())
        return
    d = rec.data
    fields(
        [
            ("hostname", d["hostname"]),
            ("id", rec.id),
            ("kind", d.get("kind")),
            ("ip", d.get("ip")),
            ("location", d.get("location")),
            ("model", d.get("model")),
            ("serial", d.get("serial")),
            ("expires", f"{d['expires']} ({d.get('expiry_kind')})" if d.get("expires") else None),
            ("notes", d.get("notes")),
        ]
    )


@asset.command("edit")
@click.argument("slug")
@click.argument("ref")
@click.option("--hostname")
@click.option("--kind")
@click.option("--ip")
@click.option("--location")
@click.option("--model")
@click.option("--serial")
@click.option("--expires", type=DATE, metavar="DATE")
@click.option("--expiry-kind", type=click.Choice(["warranty", "licence", "domain", "certificate", "support"]))
@click.option("--notes")
def asset_edit(slug: str, ref: str, **kw: Any) -> None:
    """Change an asset; the previous version is kept."""
    v = state().open()
    rec = v.assets.edit(slug, ref, **kw)
    click.echo(printable(f"Updated asset {rec.data['hostname']}."))


@asset.command("rm")
@click.argument("slug")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def asset_rm(slug: str, ref: str, yes: bool) -> None:
    """Remove an asset."""
    from .context import confirm

    v = state().open()
    _, rec = v.assets.get(slug, ref)
    confirm(f"Remove asset {rec.data['hostname']!r}?", yes)
    v.assets.rm(slug, rec.id)
    click.echo(printable(f"Removed asset {rec.data['hostname']}."))


@click.group()
def issue() -> None:
    """Known issues, their severity, and the client's acknowledgement."""


@issue.command("add")
@click.argument("slug")
@click.argument("title")
@click.option("--severity", required=True, type=click.Choice(["critical", "high", "medium", "low"]))
@click.option("--risk", help="What happens if it is ignored.")
@click.option("--workaround")
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Markdown description from FILE.")
def issue_add(
    slug: str, title: str, severity: str, risk: str | None, workaround: str | None, file: str | None
) -> None:
    """Record a known issue."""
    from .docs import read_body

    v = state().open()
    v.clients.get(slug)
    description = read_body(file) if file else ""
    rec = v.issues.add(
        slug, title=title, severity=severity, risk=risk, workaround=workaround, description=description
    )
    click.echo(f"Added {severity} issue {rec.data['title']!r} ({short(rec.id)}).")


@issue.command("list")
@click.argument("slug")
@json_option
def issue_list(slug: str) -> None:
    """List issues by severity, with whether the client acknowledged each open one."""
    from ..agreement import client_ack_state
    from ..validate import SEVERITIES

    v = state().open()
    _, recs = v.issues.list(slug)
    _, acks = client_ack_state(v, slug)
    ack = {a["id"]: a for a in acks}
    recs.sort(key=lambda r: (r.data["status"] != "open", SEVERITIES.index(r.data["severity"])))
    if state().as_json:
        emit_json([{**r.to_json(), "acknowledgement": _ack_json(ack.get(r.id))} for r in recs])
        return
    table(
        ["id", "severity", "status", "title", "workaround", "acknowledged"],
        [
            [
                short(r.id),
                r.data["severity"],
                r.data["status"],
                r.data["title"],
                "yes" if r.data.get("workaround") else "no",
                _ack_text(ack.get(r.id)),
            ]
            for r in recs
        ],
        "issues",
    )


def _ack_text(a: dict[str, Any] | None) -> str:
    """An open issue's acknowledgement in a table cell; a resolved issue needs none."""
    if a is None:
        return "-"
    if a["acknowledged"]:
        return f"yes ({a['by']}, {a['date']})"
    return "no (changed since acknowledged)" if a["changed_since_ack"] else "no"


def _ack_json(a: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None:
        return None
    keys = ("acknowledged", "by", "role", "date", "method", "changed_since_ack")
    return {k: a[k] for k in keys}


@issue.command("show")
@click.argument("slug")
@click.argument("ref")
@json_option
def issue_show(slug: str, ref: str) -> None:
    """Show an issue."""
    v = state().open()
    _, rec = v.issues.get(slug, ref)
    if state().as_json:
        emit_json(rec.to_json())
        return
    d = rec.data
    fields(
        [
            ("title", d["title"]),
            ("id", rec.id),
            ("severity", d["severity"]),
            ("status", d["status"]),
            ("risk", d.get("risk")),
            ("workaround", d.get("workaround")),
            ("resolved", d.get("resolved_at")),
        ]
    )
    if d.get("description"):
        click.echo("")
        click.echo(printable(d["description"], multiline=True))


@issue.command("edit")
@click.argument("slug")
@click.argument("ref")
@click.option("--title")
@click.option("--severity", type=click.Choice(["critical", "high", "medium", "low"]))
@click.option("--risk")
@click.option("--workaround")
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Replace the description with FILE.")
def issue_edit(
    slug: str,
    ref: str,
    title: str | None,
    severity: str | None,
    risk: str | None,
    workaround: str | None,
    file: str | None,
) -> None:
    """Change an issue (a changed issue needs the client's acknowledgement again)."""
    from .docs import read_body

    v = state().open()
    description = read_body(file) if file else None
    rec = v.issues.edit(
        slug, ref, title=title, severity=severity, risk=risk, workaround=workaround, description=description
    )
    click.echo(f"Updated issue {rec.data['title']!r} (version {rec.version}).")


@issue.command("resolve")
@click.argument("slug")
@click.argument("ref")
def issue_resolve(slug: str, ref: str) -> None:
    """Mark an issue resolved."""
    v = state().open()
    rec = v.issues.resolve(slug, ref)
    click.echo(f"Resolved {rec.data['title']!r}.")


@click.group()
def attach() -> None:
    """Encrypted attachments: diagrams, config backups, signed scans."""


@attach.command("add")
@click.argument("slug")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--name", help="Name to store (default: the file's name).")
@click.option("--notes")
def attach_add(slug: str, file: str, name: str | None, notes: str | None) -> None:
    """Encrypt FILE into the vault (streamed in chunks)."""
    v = state().open()
    rec = v.attachments.add_file(slug, file, name=name, notes=notes)
    click.echo(printable(f"Attached {rec.data['name']} ({rec.data['size']} bytes, {short(rec.id)})."))


@attach.command("list")
@click.argument("slug")
@json_option
def attach_list(slug: str) -> None:
    """List attachments."""
    v = state().open()
    _, recs = v.attachments.list(slug)
    if state().as_json:
        emit_json([r.to_json() for r in recs])
        return
    table(
        ["id", "name", "size", "sha256"],
        [[short(r.id), r.data["name"], r.data["size"], r.data["sha256"][:16]] for r in recs],
        "attachments",
    )


@attach.command("get")
@click.argument("slug")
@click.argument("ref")
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False), help="Where to write it (0600)."
)
def attach_get(slug: str, ref: str, out: str) -> None:
    """Decrypt an attachment to a file (refuses to overwrite)."""
    v = state().open()
    rec = v.attachments.save_to(slug, ref, out)
    click.echo(printable(f"Wrote {out} ({rec.data['size']} bytes, SHA-256 verified)."))


@click.command()
@click.argument("query")
@click.option("--client", "slug", help="Only this client.")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="Show at most this many matches (0: all).",
)
@json_option
def search(query: str, slug: str | None, limit: int) -> None:
    """Search clients, docs, credentials (not secrets), assets, contacts, issues."""
    v = state().open()
    hits = v.search(query, slug, limit + 1 if limit else None)
    more = bool(limit) and len(hits) > limit
    hits = hits[:limit] if limit else hits
    if state().as_json:
        emit_json(hits)
    else:
        table(
            ["client", "kind", "id", "title", "match"],
            [[h["client"], h["kind"], short(h["id"]), h["title"], h["snippet"]] for h in hits],
            "matches",
        )
    if more:
        click.echo(f"(more than {limit} matches: add words to narrow the search, or raise --limit)", err=True)


@issue.command("ack")
@click.argument("slug")
@click.option("--by", "by", required=True, help="Who acknowledged, for the client.")
@click.option("--role", help="Their role, e.g. Managing director.")
@click.option("--date", "date", type=DATE, metavar="DATE", help="When they acknowledged (default today).")
@click.option(
    "--method",
    type=click.Choice(["signed-form", "email", "in-person"]),
    default="signed-form",
    show_default=True,
    help="How the acknowledgement was given.",
)
@click.option(
    "--scan",
    type=click.Path(dir_okay=False, exists=True),
    help="The signed form, stored as an encrypted attachment.",
)
def issue_ack(slug: str, by: str, role: str | None, date: str | None, method: str, scan: str | None) -> None:
    """Record the client's acknowledgement of every open issue as it stands now.

    A later edit to an issue shows it as no longer acknowledged until it is acknowledged again.
    """
    from ..agreement import client_ack_state, record_ack

    v = state().open()
    rec = record_ack(v, slug, by, role=role, date=date, method=method, scan=scan)
    d = rec.data
    who = f"{d['by']} ({d['role']})" if d.get("role") else d["by"]
    click.echo(
        f"Recorded the acknowledgement by {who} on {d['date']} ({d['method']}) of "
        f"{len(d['issues'])} open issue(s) ({short(rec.id)})."
    )
    if d.get("scan"):
        click.echo(f"Signed scan stored as attachment {short(d['scan'])}.")
    _, rows = client_ack_state(v, slug)
    acked = [f"{r['by']}, {r['date']}" if r["acknowledged"] else "no" for r in rows]
    table(
        ["id", "severity", "title", "acknowledged"],
        [[short(r["id"]), r["severity"], r["title"], a] for r, a in zip(rows, acked, strict=True)],
        "open issues",
    )
