"""Search across clients: case-insensitive substring match over every non-secret field.

Secrets and TOTP seeds are never searched (a match would disclose something about them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InvalidInput

if TYPE_CHECKING:
    from .core import Vault

SEARCH_KINDS = ("doc", "cred", "asset", "contact", "issue", "attachment")
TITLE_FIELD = {"doc": "title", "cred": "label", "asset": "hostname", "contact": "name",
               "issue": "title", "attachment": "name"}
NOT_SEARCHED = {"secret", "totp"}


def _haystack(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key in NOT_SEARCHED or value is None or isinstance(value, bool):
            continue
        parts.append(" ".join(map(str, value)) if isinstance(value, list) else str(value))
    return "\n".join(parts).casefold()


def _snippet(data: dict[str, Any], needle: str) -> str:
    for key, value in data.items():
        if key in NOT_SEARCHED or not isinstance(value, str):
            continue
        pos = value.casefold().find(needle)
        if pos >= 0:
            start = max(0, pos - 30)
            return value[start : pos + len(needle) + 30].replace("\n", " ")
    return ""


def search(v: Vault, query: str, slug: str | None = None) -> list[dict[str, Any]]:
    needle = (query or "").strip().casefold()
    if not needle:
        raise InvalidInput("the search query is empty")
    clients = [v.clients.get(slug)] if slug else v.clients.list()
    hits: list[dict[str, Any]] = []
    with v.read() as s:
        for client in clients:
            if needle in client.name.casefold() or needle in client.slug:
                hits.append({"client": client.slug, "kind": "client", "id": client.id,
                             "title": client.name, "snippet": ""})
            for kind in SEARCH_KINDS:
                for rec in v.records.list(s, client, kind):
                    if needle in _haystack(rec.data):
                        hits.append({"client": client.slug, "kind": kind, "id": rec.id,
                                     "title": rec.data.get(TITLE_FIELD[kind]) or "",
                                     "snippet": _snippet(rec.data, needle)})
    return hits
