"""audit commands: list, verify, checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.context import emit_json, json_option, state, table


@click.group()
def audit() -> None:
    """The tamper-evident audit log (an HMAC chain; no secret is ever in it)."""


@audit.command("list")
@click.option("--client", "slug", help="Only entries about this client.")
@json_option
def audit_list(slug: str | None) -> None:
    """List audit entries, oldest first."""
    v = state().open()
    client_id = v.clients.get(slug).id if slug else None
    events = v.audit.events(client_id)
    if state().as_json:
        emit_json([e.to_json() for e in events])
        return
    names = {c.id: c.slug for c in v.clients.list()}
    table(["seq", "at", "action", "client", "record", "detail"],
          [[e.seq, e.at, e.action, names.get(e.client_id or "", (e.client_id or "")[:8]), (e.record_id or "")[:8],
            "(unreadable: client forgotten)" if e.detail is None else json.dumps(e.detail, sort_keys=True)]
           for e in events], "audit entries")


@audit.command("verify")
@click.option("--checkpoint", "checkpoint", type=click.Path(dir_okay=False, exists=True),
              help="A file written by `handover audit checkpoint`: also detect truncation or rollback.")
def audit_verify(checkpoint: str | None) -> None:
    """Walk the MAC chain; exit 4 naming the first broken entry."""
    from vault.errors import InvalidInput

    v = state().open()
    cp = None
    if checkpoint:
        try:
            cp = json.loads(Path(checkpoint).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            raise InvalidInput(f"{checkpoint} is not a checkpoint file") from None
        if not isinstance(cp, dict):
            raise InvalidInput(f"{checkpoint} is not a checkpoint file")
    head = v.audit.verify(cp)
    extra = f"; checkpoint at entry {cp['seq']} matches" if cp else ""
    click.echo(f"Audit log intact: {head.seq} entries, head {head.mac.hex()[:16]}{extra}.")


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Print a signed head (sequence, MAC, time) to keep outside the vault."""
    v = state().open()
    emit_json(v.audit.checkpoint())
