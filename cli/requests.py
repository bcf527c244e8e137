"""request commands: log an ex-client's request (interactively or by flags), list, show, report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .context import emit_json, fields, json_option, printable, short, state, table

CHANNELS = ("phone", "email", "in-person", "other")
DECISIONS = ("granted", "denied", "referred")


@click.group()
def request() -> None:
    """Requests from a client (usually after the agreement ended): who asked, how their identity was
    checked, what they asked for, the decision and what was disclosed. Every step is audited."""


def _stdin_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _pick_requester(contacts: list[Any]) -> str:
    for n, c in enumerate(contacts, 1):
        d = c.data
        extra = ", ".join(x for x in (d.get("role"), d.get("email")) if x)
        auth = "authorised" if d.get("authorized") else "NOT authorised"
        click.echo(
            printable(f"  {n}) {d['name']}" + (f" ({extra})" if extra else "") + f" — {auth}"), err=True
        )
    answer = click.prompt("Requester (a number above, or type a name or email)", err=True).strip()
    if answer.isdigit() and 1 <= int(answer) <= len(contacts):
        return str(contacts[int(answer) - 1].id)
    return answer


def _pick_items(reqs: Any, slug: str) -> list[str]:
    refs: list[str] = []
    while True:
        query = click.prompt(
            "Search for an item asked for (empty when done)", default="", show_default=False, err=True
        ).strip()
        if not query:
            return refs
        found = reqs.find_items(slug, query)
        if not found:
            click.echo("  nothing matches; try another word", err=True)
            continue
        for n, (kind, rec) in enumerate(found, 1):
            click.echo(printable(f"  {n}) {kind:<5} {reqs_name(kind, rec)} ({short(rec.id)})"), err=True)
        picks = click.prompt(
            "Numbers to add (comma-separated, empty for none)", default="", show_default=False, err=True
        )
        for part in picks.replace(" ", "").split(","):
            if part.isdigit() and 1 <= int(part) <= len(found):
                kind, rec = found[int(part) - 1]
                refs.append(f"{kind}:{rec.id}")


def reqs_name(kind: str, rec: Any) -> str:
    from ..requests.service import item_name

    return item_name(kind, rec)


def _ask(v: Any, slug: str, opts: dict[str, Any]) -> None:
    """Fill what the flags left out by prompting (only on a terminal)."""
    from ..requests.service import Requests

    reqs = Requests(v)
    if not opts["requester"]:
        _, contacts = v.contacts.list(slug)
        contacts.sort(key=lambda c: (not c.data.get("authorized"), str(c.data.get("name")).casefold()))
        opts["requester"] = _pick_requester(contacts)
    if not opts["channel"]:
        opts["channel"] = click.prompt("Channel", type=click.Choice(CHANNELS), err=True)
    if not opts["verified_by"]:
        opts["verified_by"] = click.prompt("How was their identity checked? ('none' if it was not)", err=True)
    if not opts["items"]:
        opts["items"] = tuple(_pick_items(reqs, slug))
    if not opts["decision"]:
        opts["decision"] = click.prompt("Decision", type=click.Choice(DECISIONS), err=True)
    if opts["decision"] == "granted" and not opts["override"]:
        _, problems = reqs.check(slug, opts["requester"], opts["verified_by"])
        if problems:
            click.echo("Policy: " + "; ".join(problems) + ".", err=True)
            opts["override"] = (
                click.prompt(
                    "Override reason (empty to refuse)", default="", show_default=False, err=True
                ).strip()
                or None
            )
    if opts["note"] is None:
        opts["note"] = click.prompt("Note (optional)", default="", show_default=False, err=True) or None
    if opts["decision"] == "granted":
        click.confirm(
            "Disclose now? Credentials are shown once and flagged for rotation", abort=True, err=True
        )


@request.command("log")
@click.argument("slug")
@click.option("--requester", help="Who asked: a contact's name, email or id (prefix), or any other name.")
@click.option("--channel", type=click.Choice(CHANNELS, case_sensitive=False), help="How the request came in.")
@click.option(
    "--verified-by",
    "verified_by",
    metavar="TEXT",
    help="How their identity was checked (e.g. 'called back on the number on file'), or none.",
)
@click.option(
    "--item",
    "items",
    multiple=True,
    metavar="REF",
    help="A credential, document or asset asked for (id, prefix or exact name; cred:/doc:/asset: "
    "to say which). Repeat for more.",
)
@click.option("--decision", type=click.Choice(DECISIONS, case_sensitive=False))
@click.option("--override", metavar="REASON", help="Disclose although the policy says no (reason is logged).")
@click.option("--note", help="Anything else worth keeping (never a secret).")
@click.option(
    "--receipt",
    "receipt",
    type=click.Path(dir_okay=False),
    help="Write a signed receipt for the requester to FILE (0600; no secrets): it verifies with "
    "`handover certificate verify` and serves as an audit checkpoint.",
)
@json_option
def request_log(slug: str, receipt: str | None, **opts: Any) -> None:
    """Record a request and its decision. Prompts for what is missing on a terminal.

    Granting to someone who is not an authorised contact, or with --verified-by none, is refused
    (exit 1, nothing shown) unless --override REASON. A granted credential is shown once, here, and
    flagged for rotation; the request and the audit log never hold the secret.
    """
    from ..requests.service import Requests

    missing = [
        f"--{k.replace('_', '-')}" for k in ("requester", "channel", "verified_by", "decision") if not opts[k]
    ]
    if missing and not _stdin_tty():
        raise click.UsageError(f"missing {', '.join(missing)} (no terminal to ask on)")
    if receipt:
        _check_receipt_path(Path(receipt))
    v = state().open()
    v.clients.get(slug)
    if missing:
        _ask(v, slug, opts)
    done = Requests(v).log(slug, **opts)
    _print_logged(done)
    if receipt:
        _write_receipt(v, done, Path(receipt))


def _check_receipt_path(path: Path) -> None:
    """Refuse a receipt file that could not be written before anything is logged."""
    import os

    from ..errors import AlreadyExists, NotFound

    if os.path.lexists(path):
        raise AlreadyExists(
            f"{path} already exists; refusing to overwrite it", "choose another --receipt FILE"
        )
    if not path.parent.is_dir():
        raise NotFound(f"the directory {str(path.parent)!r} does not exist")


def _write_receipt(v: Any, done: Any, path: Path) -> None:
    from ..errors import VaultError
    from ..files import write_private
    from ..requests.receipts import receipt

    try:
        write_private(path, receipt(v, done).encode("utf-8"))
    except VaultError as exc:
        exc.message = (
            f"the request was logged (audit entry {done.seq}), but the receipt was not written: {exc.message}"
        )
        raise
    click.echo(f"Wrote receipt {path} (signed by {v.fingerprint}; audit entry {done.head_seq}).", err=True)


def _print_logged(done: Any) -> None:
    d = done.request.data
    if state().as_json:
        emit_json(
            {
                "request": {"client": done.client.slug, **done.request.to_json()},
                "disclosed": [
                    {
                        "id": r.id,
                        "version": r.version,
                        "label": r.data.get("label"),
                        "username": r.data.get("username"),
                        "url": r.data.get("url"),
                        "secret": r.data.get("secret"),
                    }
                    for r in done.disclosed
                ],
            }
        )
        return
    who = d["contact"]["name"] if d.get("contact") else d["requester"]
    click.echo(
        printable(
            f"Logged request {short(done.request.id)} for {done.client.slug}: {d['decision']} "
            f"({who}, {d['channel']}; audit entry {done.seq})."
        )
    )
    if done.during_agreement:
        click.echo(
            f"Note: the agreement with {done.client.slug} is still in force ({d['agreement']['status']}); "
            "recorded as a request during the agreement.",
            err=True,
        )
    if d["agreement"]["status"] == "archived":
        click.echo(
            f"Note: the on-hand window for {done.client.slug} ended {d['agreement'].get('on_hand_until')}; "
            f"its data is due to be forgotten (handover forget {done.client.slug}).",
            err=True,
        )
    if d.get("override"):
        click.echo(
            printable(f"Policy overridden ({'; '.join(d['policy']) or 'no rule broken'}): {d['override']}"),
            err=True,
        )
    if not done.disclosed:
        return
    click.echo("\nDisclosed — shown this once; neither the request nor the audit log keeps it:")
    for r in done.disclosed:
        click.echo(printable(f"  {r.data.get('label')} (version {r.version})"))
        for key in ("username", "url"):
            if r.data.get(key):
                click.echo(f"    {key:<9}{printable(str(r.data[key]))}")
        secret = r.data.get("secret")
        click.echo(f"    secret   {secret}" if secret else "    secret   (none stored)")
    labels = ", ".join(str(r.data.get("label")) for r in done.disclosed)
    click.echo(
        f"\nFlagged for rotation: {printable(labels)} (handover cred list {done.client.slug} --needs-rotation)."
    )


def _row(x: Any) -> dict[str, Any]:
    return {
        "client": x.client.slug,
        **x.request.to_json(),
        "audit_seq": x.seq or None,
        "matches_audit": x.matches,
    }


@request.command("list")
@click.argument("slug", required=False)
@json_option
def request_list(slug: str | None) -> None:
    """List requests, of one client or of every client."""
    from ..requests.service import Requests, requester_name

    v = state().open()
    linked = Requests(v).list(slug)
    if state().as_json:
        emit_json([_row(x) for x in linked])
        return
    rows = []
    for x in linked:
        d = x.request.data
        c = d.get("contact")
        status = "unknown" if not c else "authorised" if c.get("authorized") else "not authorised"
        rows.append(
            [
                short(x.request.id),
                x.client.slug,
                d["logged_at"],
                requester_name(d),
                status,
                d["channel"],
                "none" if not d.get("identity_checked") else "yes",
                len(d.get("items") or []),
                d["decision"] + (" (override)" if d.get("override") else ""),
            ]
        )
    table(
        ["id", "client", "logged", "requester", "contact", "channel", "checked", "items", "decision"],
        rows,
        "requests",
    )


@request.command("show")
@click.argument("ref", metavar="ID")
@json_option
def request_show(ref: str) -> None:
    """Show one request (any client) by its id or a unique id prefix."""
    from ..requests.service import KIND_NAMES, Requests

    v = state().open()
    x = Requests(v).get(ref)
    if state().as_json:
        emit_json(_row(x))
        return
    d = x.request.data
    c = d.get("contact")
    contact = (
        "not a contact"
        if not c
        else f"{c['name']} ({'authorised' if c.get('authorized') else 'not authorised'}, {short(c['id'])})"
    )
    items = [
        f"{i['label']} ({KIND_NAMES.get(i['kind'], i['kind'])} v{i['version']}, {short(i['id'])})"
        for i in d.get("items") or []
    ]
    a = d.get("agreement") or {}
    audit = (
        f"entry {x.seq} ({'matches' if x.matches else 'DOES NOT MATCH: changed after it was logged'})"
        if x.seq
        else "no entry found (run handover audit verify)"
    )
    fields(
        [
            ("request", x.request.id),
            ("client", x.client.slug),
            ("logged", d["logged_at"]),
            ("requester", d["requester"]),
            ("contact", contact),
            ("channel", d["channel"]),
            ("identity", "not checked" if not d.get("identity_checked") else d["verified_by"]),
            ("asked for", items),
            ("decision", d["decision"]),
            ("override", d.get("override")),
            ("policy", d.get("policy")),
            ("disclosed", [i["label"] for i in d.get("disclosed") or []]),
            ("agreement", a.get("status") if a.get("ended") else f"{a.get('status')} (still in force)"),
            ("note", d.get("note")),
            ("audit", audit),
        ]
    )


@request.command("report")
@click.argument("slug")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="Write FILE (Markdown) and the same report as HTML beside it (FILE.html); "
    "a FILE ending in .html gets the Markdown beside it as .md.",
)
def request_report(slug: str, out: str | None) -> None:
    """A record of every request of a client, to send or file (Markdown and HTML; no secrets)."""
    from ..requests.service import Requests, disagreement

    v = state().open()
    built = Requests(v).build_report(slug)
    text, page = built.text, built.page
    if not out:
        click.echo(printable(text), nl=False)
        if built.problems:
            raise disagreement(built.problems)
        return
    path = Path(out)
    if path.suffix.lower() in (".html", ".htm"):
        html_path, md_path = path, path.with_suffix(".md")
    else:
        md_path, html_path = (
            path,
            path.with_name(path.stem + ".html" if path.suffix == ".md" else path.name + ".html"),
        )
    from ..files import write_private

    write_private(md_path, text.encode("utf-8"), overwrite=True)
    write_private(html_path, page.encode("utf-8"), overwrite=True)
    click.echo(f"Wrote {md_path} and {html_path}.")
    if built.problems:
        raise disagreement(built.problems)
