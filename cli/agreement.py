"""Ending an agreement: end, letter, forget and the certificate of destruction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .context import confirm, emit_json, fields, json_option, printable, profile_warnings, state
from .params import DATE, DAYS


@click.command()
@click.argument("slug")
@click.option(
    "--notice-given",
    "notice_given",
    required=True,
    type=DATE,
    metavar="DATE",
    help="The date notice was given (YYYY-MM-DD).",
)
@click.option(
    "--reason",
    "reasons",
    required=True,
    multiple=True,
    help="Why the agreement ends, as the letter should say it (repeat for several).",
)
@click.option(
    "--end-date",
    type=DATE,
    metavar="DATE",
    help="An agreed end date; earlier than the notice allows needs --by-agreement.",
)
@click.option("--by-agreement", is_flag=True, help="The client agreed to the earlier --end-date.")
@click.option(
    "--on-hand-days",
    type=DAYS,
    help="Days after the end to answer requests (default: the contract's, else 90).",
)
@click.option("--amend", is_flag=True, help="Correct notice already recorded (before the end date).")
@click.option("--dry-run", is_flag=True, help="Show the dates without recording anything.")
@json_option
def end(
    slug: str,
    notice_given: str,
    reasons: tuple[str, ...],
    end_date: str | None,
    by_agreement: bool,
    on_hand_days: int | None,
    amend: bool,
    dry_run: bool,
) -> None:
    """Record notice for SLUG: the effective end date and the on-hand window after it.

    The end is computed from the contract's notice terms (days or months, end-of-month rule); an
    end earlier than the notice allows is refused unless --by-agreement with --end-date.
    """
    from ..agreement import end_agreement, status_line

    v = state().open()
    client, plan = end_agreement(
        v,
        slug,
        notice_given,
        list(reasons),
        end_date=end_date,
        by_agreement=by_agreement,
        on_hand_days=on_hand_days,
        amend=amend,
        dry_run=dry_run,
    )
    if state().as_json:
        emit_json(
            {
                "client": client.slug,
                "recorded": not dry_run,
                **plan.to_json(),
                "status": status_line(client.agreement) if not dry_run else None,
            }
        )
        return
    verb = "Would record" if dry_run else "Amended" if amend else "Recorded"
    click.echo(f"{verb} notice for {client.slug} ({client.name}) given on {plan.notice_given}.")
    early = bool(plan.earliest_end) and plan.effective_end < (plan.earliest_end or "")
    if plan.by_agreement:
        basis = "agreed, earlier than the notice allows" if early else "agreed"
    else:
        basis = plan.terms if plan.earliest_end else "as given (no notice terms)"
    fields(
        [
            ("notice terms", plan.terms),
            ("earliest end", plan.earliest_end),
            ("effective end", f"{plan.effective_end} ({basis})"),
            ("on hand until", f"{plan.on_hand_until} ({plan.on_hand_days} days after the end)"),
            ("status", None if dry_run else status_line(client.agreement)),
        ]
    )
    if not dry_run:
        click.echo(f"Next: handover letter {client.slug}  (the termination letter)")


@click.command()
@click.argument("slug", required=False)
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for SLUG-termination-letter.md and .html.",
)
@click.option(
    "--template",
    type=click.Path(dir_okay=False),
    help="Your own Markdown template (start from --print-template).",
)
@click.option("--print-template", is_flag=True, help="Print the built-in template and exit.")
@click.option("--sender", help="Your name, as the letter is signed (default: the technician profile's).")
@click.option(
    "--sender-contact",
    help="How the client reaches you after the end (default: the profile's telephone and email).",
)
@click.option("--force", is_flag=True, help="Overwrite existing letter files.")
def letter(
    slug: str | None,
    out_dir: str,
    template: str | None,
    print_template: bool,
    sender: str | None,
    sender_contact: str | None,
    force: bool,
) -> None:
    """Write a polite termination letter for SLUG as Markdown and HTML.

    It states the reasons, the effective date and the clause it follows, the handover plan, the
    open issues to acknowledge, and how the client reaches you during the on-hand window and how
    their identity is checked. It is signed with your technician profile (`handover profile set`).
    It never contains a secret. Files are written 0600.
    """
    from .. import letter as letters

    if print_template:
        click.echo(letters.default_template(), nl=False)
        return
    if not slug:
        raise click.UsageError("missing argument SLUG (or use --print-template)")
    text = letters.read_template(template) if template else None
    v = state().open()
    Path(out_dir).mkdir(parents=True, exist_ok=True, mode=0o700)  # --out names a folder to write into
    paths = letters.write_letter(
        v, slug, out_dir, template=text, force=force, sender=sender, sender_contact=sender_contact
    )
    for path in paths:
        click.echo(f"Wrote {path}")
    warning = letters.notice_warning(v, slug)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    profile_warnings(v)


@click.command()
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--certificate",
    "cert_path",
    type=click.Path(dir_okay=False),
    help="Where to write the signed certificate (default: SLUG-certificate-of-destruction.md).",
)
@click.option(
    "--keep-backups",
    is_flag=True,
    help="Keep the copies schema upgrades made next to the vault (*.pre-NNNN.bak); they are listed.",
)
def forget(slug: str, yes: bool, cert_path: str | None, keep_backups: bool) -> None:
    """Crypto-shred a client whose agreement has ended; write a signed certificate of destruction.

    The client's data key and every record are deleted in one transaction, then the vault is
    vacuumed and its write-ahead log truncated. The copies schema upgrades made next to the vault
    (VAULT.pre-NNNN.bak) hold the client too: they are deleted as well, unless --keep-backups.
    Backups you made yourself still hold the data.
    """
    from .. import forget as forgetting
    from ..errors import AlreadyExists, StorageError, VaultError
    from ..letter import write_private_files

    v = state().open()
    client, status, counts = forgetting.preview(v, slug)
    target = Path(cert_path or f"{client.slug}-certificate-of-destruction.md")
    if target.exists() or target.is_symlink():
        raise AlreadyExists(
            f"{target} already exists; refusing to overwrite it",
            "choose another file with --certificate FILE",
        )
    if not target.parent.is_dir():
        raise StorageError(f"the folder {target.parent} does not exist")
    records = forgetting.record_total(counts)
    until = client.agreement.get("on_hand_until")
    window = "" if status == "archived" else f" Its on-hand window runs until {until}."
    copies = forgetting.upgrade_backups(v)
    also = (
        f" The {len(copies)} copies schema upgrades made ({', '.join(c.name for c in copies)}) are deleted too."
        if copies and not keep_backups
        else ""
    )
    confirm(
        printable(
            f"Forget {client.slug} ({client.name}) for good: {_records(records)} are destroyed.{window}{also} Continue?"
        ),
        yes,
    )
    profile_warnings(v)
    done = forgetting.forget_client(v, slug, delete_backups=not keep_backups)
    try:
        text = forgetting.certificate(v, done.audit_seq, purged=done.purged)
        write_private_files({target: text.encode("utf-8")})
    except VaultError as exc:
        exc.hints = (
            *exc.hints,
            f"{done.slug} is forgotten; write the certificate again with: "
            f"handover certificate issue {done.audit_seq} --out FILE",
        )
        raise
    click.echo(
        printable(
            f"Forgot {done.slug} ({done.name}): {_records(records)} and the client's key destroyed "
            f"(audit entry {done.audit_seq})."
        )
    )
    click.echo(f"Certificate of destruction: {target}")
    if not done.purged and v.path is None:
        click.echo(
            "warning: the database role may not rewrite the tables (VACUUM FULL needs their owner), so "
            "the deleted rows stay as dead tuples until the owner runs VACUUM FULL on them",
            err=True,
        )
    elif not done.purged:
        click.echo(
            "warning: another program was reading the vault, so its write-ahead log could not be "
            "truncated yet (SQLite overwrites it when that program closes the vault); then run "
            f"`handover certificate issue {done.audit_seq} --out FILE` for a certificate that says so",
            err=True,
        )
    for line in forgetting.retained(v):
        click.echo(f"note: on the database server, {line}.", err=True)
    for left in done.backups_left:
        click.echo(f"note: {left} (made by a schema upgrade) still holds this client's data.", err=True)
    gone = [b for b in done.backups if b not in done.backups_left]
    if gone:
        click.echo(f"Deleted the copies schema upgrades made: {', '.join(str(b) for b in gone)}.")
    click.echo("note: backups of the vault you made before now still hold this client's data.", err=True)


def _records(n: int) -> str:
    return "1 record" if n == 1 else f"{n} records"


@click.group()
def certificate() -> None:
    """Certificates of destruction: verify one, or write one again."""


@certificate.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--signer", metavar="FINGERPRINT", help="The vault fingerprint (hv:...) you expect.")
def certificate_verify(file: str, signer: str | None) -> None:
    """Check a certificate's or a request receipt's signature (exit 4 when altered or signed by
    another key)."""
    from ..errors import InvalidInput
    from ..forget import CERT_FORMAT, MAX_CERTIFICATE, verify_certificate

    try:
        with open(file, "rb") as fh:
            data = fh.read(MAX_CERTIFICATE + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror}") from None
    result = verify_certificate(data, signer)
    facts = result.facts
    who = facts.get("client") or {}
    seq = (facts.get("audit") or {}).get("seq")
    # Every fact comes from the file, whoever signed it: shown, never obeyed.
    if facts.get("format") == CERT_FORMAT:
        click.echo(
            printable(
                f"Certificate valid: {who.get('name')} ({who.get('slug')}) destroyed at "
                f"{facts.get('destroyed_at')}, audit entry {seq}."
            )
        )
    else:
        _receipt_summary(facts)
    issued_by(facts)
    signed_by = f"{printable(str(result.signer))}  {printable(result.signer_ssh_fingerprint)}"
    if result.signer_checked:
        click.echo(f"Signed by {signed_by} (the signer you expected).")
    else:
        click.echo(
            f"Signed by {signed_by}. Compare this fingerprint with the one the technician "
            "gave you, or pass --signer."
        )


def _receipt_summary(facts: dict[str, Any]) -> None:
    """What a verified receipt says; every value came from the file and passes printable()."""
    items = facts.get("items") or []
    labels = "; ".join(f"{i.get('label')} ({i.get('kind')} v{i.get('version')})" for i in items) or "none"
    audit = facts.get("audit") or {}
    client = facts.get("client") or {}
    lines = [
        f"Receipt valid: request {facts.get('request')} of {client.get('name')} ({client.get('slug')}), "
        f"logged {facts.get('logged_at')}.",
        f"  requester       {facts.get('requester')}",
        f"  channel         {facts.get('channel')}",
        f"  identity check  {facts.get('identity_check')}",
        f"  decision        {facts.get('decision')}",
        f"  items           {labels}",
        f"  audit entry     {audit.get('seq')} (MAC {str(audit.get('mac'))[:16]}…)",
    ]
    for line in lines:
        click.echo(printable(line))


def issued_by(facts: dict[str, Any]) -> None:
    """Who issued a certificate or receipt (the technician profile in its facts), when it says."""
    issuer = facts.get("issued_by")
    if isinstance(issuer, dict) and issuer.get("name"):
        from ..profile import Profile, call_to_confirm

        known = {k: str(x) for k, x in issuer.items() if k in ("name", "company", "phone") and x}
        click.echo(f"Issued by {printable(call_to_confirm(Profile(**known)))}.")


@certificate.command("issue")
@click.argument("seq", type=int)
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False), help="Where to write it (0600)."
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def certificate_issue(seq: int, out: str, force: bool) -> None:
    """Write the certificate for the client.forget audit entry SEQ again."""
    from ..forget import certificate as make
    from ..forget import purge
    from ..letter import write_private_files

    v = state().open()
    text = make(v, seq, purged=purge(v))
    write_private_files({Path(out): text.encode("utf-8")}, force=force)
    click.echo(f"Wrote {out}")
    profile_warnings(v)
