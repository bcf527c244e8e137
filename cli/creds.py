"""cred commands. Secrets come from standard input or a hidden prompt, never from argv."""

from __future__ import annotations

from typing import Any

import click

from .context import confirm, emit_json, fields, json_option, read_secret_lines, short, state, table
from .params import DATE, SECRET_LENGTH


@click.group()
def cred() -> None:
    """Credentials: secrets, TOTP seeds, rotation and history. Every reveal is audited."""


@cred.command("add")
@click.argument("slug")
@click.argument("label")
@click.option("--username")
@click.option("--url")
@click.option(
    "--category", help="registrar, dns, tenant-admin, backup-key, mfa-recovery, firewall, wifi, isp, ..."
)
@click.option("--expires", type=DATE, metavar="DATE", help="Expiry date (YYYY-MM-DD).")
@click.option("--notes")
@click.option(
    "--generate",
    "generate",
    type=SECRET_LENGTH,
    is_flag=False,
    flag_value=24,
    default=None,
    metavar="[LEN]",
    help="Generate a random secret (default 24 characters) instead of reading one.",
)
@click.option(
    "--with-totp", is_flag=True, help="Also read an otpauth:// URI (second line of stdin, or a prompt)."
)
@click.option("--no-secret", is_flag=True, help="Store the credential without a secret (read none).")
@click.option(
    "--allow-duplicate", is_flag=True, help="Add it even if the client has a credential with this label."
)
def cred_add(
    slug: str,
    label: str,
    generate: int | None,
    with_totp: bool,
    no_secret: bool,
    allow_duplicate: bool,
    **kw: Any,
) -> None:
    """Add a credential. The secret comes from a hidden prompt (asked twice) or standard input (one line)."""
    from ..creds import generate_secret
    from ..errors import InvalidInput

    v = state().open()
    v.clients.get(slug)
    if not allow_duplicate:
        v.creds.refuse_duplicate(slug, label)  # before the secret is typed, not after
    totp = None
    if no_secret and generate is not None:
        raise click.UsageError("--no-secret and --generate exclude each other")
    if generate is not None or no_secret:
        secret = generate_secret(generate) if generate is not None else ""
        if with_totp:
            totp = read_secret_lines("otpauth:// URI")[0]
    else:
        lines = read_secret_lines("Secret", 2 if with_totp else 1, confirm=True)
        secret = lines[0]
        if not secret.strip():
            raise InvalidInput(
                "no secret was given (standard input or the prompt was empty); nothing was saved",
                "type or pipe the secret, use --generate for a random one, "
                "or --no-secret for a credential that has none",
            )
        if with_totp:
            totp = lines[1] if len(lines) > 1 and lines[1] else read_secret_lines("otpauth:// URI")[0]
    if with_totp and not totp:
        # Without this, a missing second line silently stored a credential with no TOTP seed.
        raise InvalidInput(
            "--with-totp was given but no otpauth:// URI came",
            "give it on the second line of standard input (the first with --generate)",
        )
    rec = v.creds.add(
        slug, label=label, secret=secret or None, totp=totp, allow_duplicate=allow_duplicate, **kw
    )
    note = " (generated; reveal it with cred show --reveal)" if generate is not None else ""
    click.echo(f"Added credential {rec.data['label']!r} ({short(rec.id)}){note}.")


@cred.command("list")
@click.argument("slug")
@click.option("--needs-rotation", is_flag=True, help="Only credentials flagged for rotation.")
@json_option
def cred_list(slug: str, needs_rotation: bool) -> None:
    """List credentials (never their secrets)."""
    from ..creds import public_view

    v = state().open()
    _, recs = v.creds.list(slug, needs_rotation=needs_rotation)
    if state().as_json:
        emit_json([{**public_view(r.to_json())} for r in recs])
        return
    table(
        ["id", "label", "username", "category", "url", "expires", "rotate"],
        [
            [
                short(r.id),
                r.data["label"],
                r.data.get("username"),
                r.data.get("category"),
                r.data.get("url"),
                r.data.get("expires"),
                "yes" if r.data.get("needs_rotation") else "",
            ]
            for r in recs
        ],
        "credentials",
    )


@cred.command("show")
@click.argument("slug")
@click.argument("ref")
@click.option("--reveal", is_flag=True, help="Show the secret (written to the audit log first).")
@json_option
def cred_show(slug: str, ref: str, reveal: bool) -> None:
    """Show a credential; the secret only with --reveal."""
    from ..creds import public_view

    v = state().open()
    if reveal:
        rec = v.creds.reveal(slug, ref)
    else:
        _, rec = v.creds.get(slug, ref)
    view = public_view(rec.to_json())
    hidden = rec.data.get("secret_fields") or {}
    if reveal:
        view["secret"] = rec.data.get("secret")
        view["secret_fields"] = hidden
    if state().as_json:
        emit_json(view)
        return
    d = rec.data
    fields(
        [
            ("label", d["label"]),
            ("id", rec.id),
            ("username", d.get("username")),
            ("url", d.get("url")),
            ("category", d.get("category")),
            ("expires", d.get("expires")),
            ("last rotated", d.get("last_rotated")),
            ("totp", "set (show the code with: cred totp)" if d.get("totp") else None),
            ("rotate", d.get("rotation_reason") if d.get("needs_rotation") else None),
            ("notes", d.get("notes")),
            ("version", rec.version),
            (
                "secret",
                d.get("secret")
                if reveal
                else ("(hidden; --reveal to show)" if d.get("secret") else "(none)"),
            ),
            *[(name, value if reveal else "(hidden; --reveal to show)") for name, value in hidden.items()],
        ]
    )


@cred.command("totp")
@click.argument("slug")
@click.argument("ref")
def cred_totp(slug: str, ref: str) -> None:
    """Print the current TOTP code (audited)."""
    v = state().open()
    _, code, left = v.creds.totp(slug, ref)
    click.echo(code)
    click.echo(f"valid for {left} more seconds", err=True)


@cred.command("rotate")
@click.argument("slug")
@click.argument("ref")
@click.option(
    "--generate",
    "generate",
    type=SECRET_LENGTH,
    is_flag=False,
    flag_value=24,
    default=None,
    metavar="[LEN]",
    help="Generate the new secret.",
)
def cred_rotate(slug: str, ref: str, generate: int | None) -> None:
    """Replace a secret (new one from stdin or a prompt); the old one stays in the history."""
    from ..creds import generate_secret

    v = state().open()
    v.creds.get(slug, ref)
    secret = (
        generate_secret(generate)
        if generate is not None
        else read_secret_lines("New secret", confirm=True)[0]
    )
    rec = v.creds.rotate(slug, ref, secret)
    click.echo(f"Rotated {rec.data['label']!r} (now version {rec.version}).")


@cred.command("history")
@click.argument("slug")
@click.argument("ref")
@click.option("--reveal", is_flag=True, help="Include the secrets of every version (audited).")
@json_option
def cred_history(slug: str, ref: str, reveal: bool) -> None:
    """List a credential's versions (secrets only with --reveal)."""
    v = state().open()
    if reveal:
        rec, old = v.creds.history_revealed(slug, ref)
    else:
        rec, old = v.creds.history(slug, ref)
    rows = []
    for r in [*old, rec]:
        row = {
            "version": r.version,
            "saved": r.updated_at,
            "username": r.data.get("username"),
            "last_rotated": r.data.get("last_rotated"),
        }
        if reveal:
            row["secret"] = r.data.get("secret")
        rows.append(row)
    if state().as_json:
        emit_json(rows)
        return
    cols = ["version", "saved", "username", "last_rotated"] + (["secret"] if reveal else [])
    table(cols, [[row.get(c) for c in cols] for row in rows], "versions")


@cred.command("rm")
@click.argument("slug")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cred_rm(slug: str, ref: str, yes: bool) -> None:
    """Delete a credential and its history."""
    v = state().open()
    _, rec = v.creds.get(slug, ref)
    confirm(f"Delete credential {rec.data['label']!r} and all its versions?", yes)
    v.creds.rm(slug, rec.id)
    click.echo(f"Deleted credential {rec.data['label']!r}.")
