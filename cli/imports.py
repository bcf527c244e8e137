"""import commands: KeePass/KeePassXC, Bitwarden JSON, CSV. All with --dry-run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .context import emit_json, printable, secret_env, state, table


def _kdbx_password(keyfile: bool = False) -> str:
    from ..errors import InvalidInput
    from .context import _tty

    value = secret_env("HANDOVER_IMPORT_PASSPHRASE")
    if value is not None:
        return value
    if not _tty():
        raise InvalidInput("no terminal to prompt for the KeePass password", "set HANDOVER_IMPORT_PASSPHRASE")
    # A database protected by a key file alone has an empty password.
    label = (
        "KeePass database password (empty if the key file alone protects it)"
        if keyfile
        else "KeePass database password"
    )
    return str(
        click.prompt(label, hide_input=True, err=True, default="" if keyfile else None, show_default=False)
    )


def _run(source: str, slug: str, file: str, dry_run: bool, **read: Any) -> None:
    from ..formats import imports

    v = state().open()
    v.clients.get(slug)
    items = imports.read_source(source, Path(file), **read)
    p = imports.plan(v, slug, source, Path(file), items)
    if state().as_json:
        if not dry_run:
            imports.apply(v, slug, p, _progress(len(p.new)))
        emit_json({**p.to_json(), "dry_run": dry_run})
        return
    for w in p.warnings:
        click.echo(f"warning: {printable(w)}", err=True)
    if p.duplicates:
        click.echo(f"{len(p.duplicates)} duplicate(s) (same label and username) will not be added:")
        table(["label", "username"], [[c["label"], c.get("username")] for c in p.duplicates], "duplicates")
    if dry_run:
        click.echo(f"Dry run: would add {len(p.new)} credential(s) to {slug}:")
        table(
            ["label", "username", "category", "tags", "totp", "attachments"],
            [
                [
                    c["label"],
                    c.get("username"),
                    c.get("category"),
                    ", ".join(c.get("tags") or []),
                    "yes" if c.get("totp") else "",
                    len(c.get("attachments") or []),
                ]
                for c in p.new
            ],
            "new credentials",
        )
        return
    added = imports.apply(v, slug, p, _progress(len(p.new)))
    click.echo(
        f"Imported {added} credential(s) into {slug} from {Path(file).name}"
        f"{f'; skipped {len(p.duplicates)} duplicate(s)' if p.duplicates else ''}."
    )


def _progress(total: int) -> Any:
    """A progress bar on a terminal for large files; None otherwise."""
    if total < 200 or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("importing", total=total)
    bar.start()

    def advance(_total: int, done: int) -> None:
        bar.update(task, completed=done)
        if done >= total:
            bar.stop()

    return advance


_dry = click.option("--dry-run", is_flag=True, help="Show what would be added; change nothing.")


@click.group("import")
def import_() -> None:
    """Bring credentials in from KeePass/KeePassXC, Bitwarden or a spreadsheet (one transaction)."""


@import_.command("keepass")
@click.argument("slug")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--keyfile",
    type=click.Path(dir_okay=False, exists=True),
    help="KeePass key file, if the database uses one.",
)
@_dry
@click.option("--group", metavar="PATH", help="Import only this group's subtree, e.g. Clients/Acme.")
def import_keepass(slug: str, file: str, keyfile: str | None, group: str | None, dry_run: bool) -> None:
    """Import a KDBX 3.1/4 database (password: prompt or HANDOVER_IMPORT_PASSPHRASE)."""
    password = _kdbx_password(keyfile is not None)
    _run(
        "keepass",
        slug,
        file,
        dry_run,
        password=password,
        keyfile=Path(keyfile) if keyfile else None,
        group=group,
    )


@import_.command("bitwarden")
@click.argument("slug")
@click.argument("file", type=click.Path(dir_okay=False))
@_dry
def import_bitwarden(slug: str, file: str, dry_run: bool) -> None:
    """Import Bitwarden's unencrypted JSON export."""
    _run("bitwarden", slug, file, dry_run)


@import_.command("csv")
@click.argument("slug")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="THEIRS=OURS",
    help="Map a column header to ours (label, username, password, url, notes, category, tags, totp, "
    "expires, or ignore). Repeatable.",
)
@_dry
def import_csv(slug: str, file: str, maps: tuple[str, ...], dry_run: bool) -> None:
    """Import a spreadsheet (CSV with a header row; see docs/migrating.md for the columns)."""
    from ..errors import InvalidInput

    mapping = {}
    for m in maps:
        theirs, sep, ours = m.partition("=")
        if not sep or not theirs.strip() or not ours.strip():
            raise InvalidInput(f"--map {m!r} is not THEIRS=OURS")
        mapping[theirs.strip()] = ours.strip()
    _run("csv", slug, file, dry_run, mapping=mapping or None)
