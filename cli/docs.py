"""doc commands: Markdown pages with every previous version kept."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from typing import IO

import click

from .context import child_env, confirm, emit_json, json_option, printable, short, state, table


def _ram_dir(room: int = 0) -> str | None:
    """A RAM-backed directory (with ``room`` bytes free) for temp files holding plaintext, so that
    it never reaches a disk where deleted blocks could survive."""
    import shutil

    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):  # noqa: S108 - mkstemp, 0600
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            if not room or shutil.disk_usage(candidate).free > room:
                return candidate
    return None


def edit_in_editor(initial: str, suffix: str = ".md") -> str:
    """Open $EDITOR on a 0600 temp file in a RAM-backed dir; the file is removed afterwards."""
    from ..errors import InvalidInput

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise InvalidInput(
            "no $EDITOR is set and nothing came on standard input", "use --file FILE or pipe the text in"
        )
    fd, name = tempfile.mkstemp(prefix="handover-", suffix=suffix, dir=_ram_dir())
    # Closing the terminal (SIGHUP) or a kill (SIGTERM) while the editor is open would end the
    # process without running ``finally``, leaving the page in clear in the RAM dir: make them exit.
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(initial)
        try:
            done = subprocess.run([*shlex.split(editor), name], env=child_env(), check=False)
        except (OSError, ValueError) as exc:
            raise InvalidInput(
                f"cannot run the editor {editor!r} ({exc.__class__.__name__}); nothing was saved"
            ) from None
        if done.returncode != 0:
            raise InvalidInput(f"the editor exited with status {done.returncode}; nothing was saved")
        with open(name, "rb") as fh:
            return read_text_capped(fh, "the edited text")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def read_text_capped(fh: IO[bytes], what: str) -> str:
    """All of ``fh`` as UTF-8 text, refusing more than a document may hold.

    The whole input is either taken or refused: reading a fixed number of bytes and ignoring the
    rest silently saved a truncated page (UTF-8 needs up to 4 bytes per character).
    """
    from ..errors import InvalidInput
    from ..validate import MAX_TEXT

    cap = 4 * MAX_TEXT
    data = fh.read(cap + 1)
    if len(data) > cap:
        raise InvalidInput(
            f"{what} is larger than {cap // 1_000_000} MB; a document holds at most {MAX_TEXT:,} characters",
            "attach large or binary files with: handover attach add",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{what} is not UTF-8 text", "attach binary files with: handover attach add"
        ) from None


def read_body(file: str | None, initial: str = "", optional: bool = False) -> str | None:
    """The body from --file, else standard input, else $EDITOR.

    An empty standard input (a script's ``< /dev/null``, a pipe with nothing in it) is not a body:
    taking it as one silently emptied a page on ``doc edit --title``. With ``optional`` and no
    editor set, None means "keep the current body".
    """
    from ..errors import InvalidInput

    if file:
        try:
            with open(file, "rb") as fh:
                return read_text_capped(fh, file)
        except OSError as exc:
            raise InvalidInput(f"cannot read {file} ({exc.__class__.__name__})") from None
    if not sys.stdin.isatty():
        text = read_text_capped(sys.stdin.buffer, "standard input")
        if text:
            return text
    if optional and not (os.environ.get("VISUAL") or os.environ.get("EDITOR")):
        return None
    return edit_in_editor(initial)


@click.group()
def doc() -> None:
    """Markdown documentation pages; every edit keeps the previous version."""


@doc.command("add")
@click.argument("slug")
@click.argument("title")
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Read the body from FILE.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--overview", is_flag=True, help="This page is the network overview.")
def doc_add(slug: str, title: str, file: str | None, tags: tuple[str, ...], overview: bool) -> None:
    """Add a page: body from --file, standard input, or $EDITOR."""
    v = state().open()
    v.clients.get(slug)
    body = read_body(file)
    rec = v.docs.add(slug, title=title, body=body, tags=list(tags), overview=overview)
    click.echo(f"Added doc {rec.data['title']!r} ({short(rec.id)}).")


@doc.command("list")
@click.argument("slug")
@json_option
def doc_list(slug: str) -> None:
    """List a client's pages."""
    v = state().open()
    _, recs = v.docs.list(slug)
    if state().as_json:
        emit_json([{k: val for k, val in r.to_json().items() if k != "body"} for r in recs])
        return
    table(
        ["id", "title", "tags", "version", "updated"],
        [
            [short(r.id), r.data["title"], ", ".join(r.data.get("tags", [])), r.version, r.updated_at]
            for r in recs
        ],
        "docs",
    )


@doc.command("show")
@click.argument("slug")
@click.argument("ref")
@json_option
def doc_show(slug: str, ref: str) -> None:
    """Print a page (REF: id, id prefix or exact title)."""
    v = state().open()
    _, rec = v.docs.get(slug, ref)
    if state().as_json:
        emit_json(rec.to_json())
        return
    # Control characters are shown, not obeyed (an imported page could drive the terminal); --json
    # gives the exact text.
    if not rec.data["body"].lstrip().startswith("#"):
        click.echo(f"# {printable(rec.data['title'])}\n")
    click.echo(printable(rec.data["body"], multiline=True))


@doc.command("edit")
@click.argument("slug")
@click.argument("ref")
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Replace the body with FILE.")
@click.option("--title", help="New title.")
@click.option("--tag", "tags", multiple=True, help="Replace the tags.")
def doc_edit(slug: str, ref: str, file: str | None, title: str | None, tags: tuple[str, ...]) -> None:
    """Edit a page (the previous version is kept)."""
    v = state().open()
    _, rec = v.docs.get(slug, ref)
    body = read_body(file, rec.data["body"], optional=bool(title or tags))
    new = v.docs.edit(slug, rec.id, body=body, title=title, tags=list(tags) if tags else None)
    click.echo(f"Saved {new.data['title']!r} as version {new.version}.")


@doc.command("history")
@click.argument("slug")
@click.argument("ref")
@json_option
def doc_history(slug: str, ref: str) -> None:
    """List a page's versions."""
    v = state().open()
    rec, old = v.docs.history(slug, ref)
    versions = [*old, rec]
    if state().as_json:
        emit_json([r.to_json() for r in versions])
        return
    table(
        ["version", "saved", "title", "size"],
        [[r.version, r.updated_at, r.data["title"], len(r.data["body"])] for r in versions],
        "versions",
    )


@doc.command("rm")
@click.argument("slug")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def doc_rm(slug: str, ref: str, yes: bool) -> None:
    """Delete a page and its history."""
    v = state().open()
    _, rec = v.docs.get(slug, ref)
    confirm(f"Delete doc {rec.data['title']!r} and all its versions?", yes)
    v.docs.rm(slug, rec.id)
    click.echo(f"Deleted doc {rec.data['title']!r}.")
