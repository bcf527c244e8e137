"""audit commands: list, verify, checkpoint."""

from __future__ import annotations

import json
from typing import Any

import click

from .context import emit_json, json_option, short, state, table


@click.group()
def audit() -> None:
    """The tamper-evident audit log (an HMAC chain; no secret is ever in it)."""


@audit.command("list")
@click.option("--client", "slug", help="Only entries about this client.")
@click.option(
    "--action", "action", metavar="PREFIX", help="Only actions starting with PREFIX (e.g. request.)."
)
@json_option
def audit_list(slug: str | None, action: str | None) -> None:
    """List audit entries, oldest first."""
    v = state().open()
    client_id = v.clients.get(slug).id if slug else None
    events = v.audit.events(client_id)
    if action:
        events = [e for e in events if e.action.startswith(action)]
    if state().as_json:
        emit_json([e.to_json() for e in events])
        return
    names = {c.id: c.slug for c in v.clients.list()}
    team = v.keys.team
    table(
        ["seq", "at", *(["member"] if team else []), "action", "client", "record", "detail"],
        [
            [
                e.seq,
                e.at,
                *([e.member or ""] if team else []),
                e.action,
                names.get(e.client_id or "", (e.client_id or "")[:8]),
                short(e.record_id or ""),
                "(unreadable: client forgotten)" if e.detail is None else _compact(e.detail),
            ]
            for e in events
        ],
        "audit entries",
    )


def _load_checkpoint(path: str) -> tuple[dict[str, Any] | None, bytes]:
    """(the JSON checkpoint, None for a signed receipt) and the file's bytes."""
    from ..errors import InvalidInput
    from ..requests.receipts import MAX_RECEIPT, is_signed_document

    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_RECEIPT + 1)  # never read a huge file whole
        if len(data) > MAX_RECEIPT:
            raise ValueError("too large")
        if is_signed_document(data):
            return None, data
        if len(data) > 65_536:  # a checkpoint is a few hundred bytes
            raise ValueError("too large")
        cp = json.loads(data.decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise InvalidInput(f"{path} is not a checkpoint file or a receipt") from None
    if not isinstance(cp, dict):
        raise InvalidInput(f"{path} is not a checkpoint file or a receipt")
    return cp, data


@audit.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint",
    type=click.Path(dir_okay=False, exists=True),
    help="A file written by `handover audit checkpoint`, or a request's receipt: also detect "
    "truncation or rollback behind it.",
)
def audit_verify(checkpoint: str | None) -> None:
    """Walk the MAC chain; exit 4 naming the first broken entry.

    Without --checkpoint this catches any edit, deletion, insertion or reordering, and the removal of
    the newest entries by anyone without the vault's key. Rolling the whole file back to an older
    copy, or a rewrite by the vault's owner, is caught only against a checkpoint kept elsewhere (a
    request's receipt serves as one).
    """
    v = state().open()
    if not checkpoint:
        head = v.audit.verify()
        click.echo(f"Audit log intact: {head.seq} entries, head {head.mac.hex()[:16]}.")
        return
    cp, data = _load_checkpoint(checkpoint)
    if cp is not None:
        head = v.audit.verify(cp)
        extra = f"; checkpoint at entry {cp['seq']} matches"
    else:
        from ..requests.receipts import check_receipt

        pinned = check_receipt(v, data)
        head = v.audit.verify(pinned=pinned)
        extra = f"; receipt's entry {pinned.seq} matches"
    click.echo(f"Audit log intact: {head.seq} entries, head {head.mac.hex()[:16]}{extra}.")


@audit.command("checkpoint")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), help="Write it to FILE instead of standard output."
)
def audit_checkpoint(out: str | None) -> None:
    """Print a signed head (sequence, MAC, time) to keep outside the vault.

    Keep it where the vault's owner cannot change it (mail it to the client, commit it elsewhere):
    `audit verify --checkpoint FILE` then detects truncation, rollback and rewritten history.
    """
    v = state().open()
    cp = v.audit.checkpoint()
    text = json.dumps(cp, indent=2) + "\n"
    if not out:
        click.echo(text, nl=False)
        return
    from ..files import write_private

    dest = write_private(out, text.encode("utf-8"), overwrite=True)
    click.echo(f"Wrote checkpoint of entry {cp['seq']} to {dest}.", err=True)


def _compact(detail: dict[str, object], width: int = 90) -> str:
    """One table cell of a detail; the whole of it is in --json."""
    text = json.dumps(detail, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"
