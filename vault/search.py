"""Search across clients through keyed word-prefix tokens, then an exact check on decrypted records.

Each word of a record's non-secret fields contributes the keyed hashes of its prefixes (2 to 12
characters) under the client's search key. A query finds the records holding a token for every one
of its words, decrypts only those, and keeps the ones that really contain every word. Search thus
matches word beginnings ("fire" finds "Firewall"), costs the same in a vault of any size, and never
looks at secrets or TOTP seeds.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from . import crypto
from .errors import InvalidInput
from .models import Meta, Record, SearchToken

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .core import Vault
    from .records import Rec

SEARCH_KINDS = ("doc", "cred", "asset", "contact", "issue", "attachment")
TITLE_FIELD = {
    "doc": "title",
    "cred": "label",
    "asset": "hostname",
    "contact": "name",
    "issue": "title",
    "attachment": "name",
}
NOT_SEARCHED = {"secret", "totp", "sha256", "fields"}
MIN_PREFIX, MAX_PREFIX = 2, 12
_WORD = re.compile(r"\w+", re.UNICODE)
INDEX_FLAG = "search_index"


def _text(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key in NOT_SEARCHED or value is None or isinstance(value, bool | int | float):
            continue
        parts.append(" ".join(map(str, value)) if isinstance(value, list) else str(value))
    return "\n".join(parts).casefold()


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.casefold()) if len(w) >= MIN_PREFIX}


def _token(client: ClientRef, prefix: str) -> str:
    return crypto.mac(client.keys.search_key, prefix.encode("utf-8")).hex()[:32]


def tokens_for(client: ClientRef, data: dict[str, Any]) -> set[str]:
    prefixes = {w[:n] for w in _words(_text(data)) for n in range(MIN_PREFIX, min(len(w), MAX_PREFIX) + 1)}
    return {_token(client, p) for p in prefixes}


def index_record(s: Session, client: ClientRef, rec: Rec, replace: bool = False) -> None:
    """(Re)write a record's tokens inside the caller's transaction."""
    if rec.kind not in SEARCH_KINDS:
        return
    if replace:
        s.execute(delete(SearchToken).where(SearchToken.record_id == rec.id))
    rows = [{"client_id": client.id, "token": t, "record_id": rec.id} for t in tokens_for(client, rec.data)]
    if rows:
        s.execute(insert(SearchToken), rows)


def ensure_index(v: Vault) -> None:
    """Build tokens for records written before schema 0002 (once per vault)."""
    with v.read() as s:
        if s.get(Meta, INDEX_FLAG) is not None:
            return
    with v.write("building the search index") as s:
        if s.get(Meta, INDEX_FLAG) is not None:
            return
        for client in v.clients.list():
            for kind in SEARCH_KINDS:
                for rec in v.records.list(s, client, kind):
                    index_record(s, client, rec, replace=True)
        s.add(Meta(key=INDEX_FLAG, value=b"1"))


def mark_indexed(s: Session) -> None:
    s.add(Meta(key=INDEX_FLAG, value=b"1"))


def _candidates(s: Session, client: ClientRef, words: list[str]) -> set[str]:
    found: set[str] | None = None
    for w in words:
        tok = _token(client, w[:MAX_PREFIX])
        ids = set(
            s.execute(
                select(SearchToken.record_id).where(
                    SearchToken.client_id == client.id, SearchToken.token == tok
                )
            ).scalars()
        )
        found = ids if found is None else found & ids
        if not found:
            return set()
    return found or set()


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
    """Records (and clients) whose non-secret text contains every word of ``query``."""
    words = sorted(_words(query or ""), key=len, reverse=True)
    if not words:
        raise InvalidInput("the search needs a word of at least two letters or digits")
    ensure_index(v)
    clients = [v.clients.get(slug)] if slug else v.clients.list()
    hits: list[dict[str, Any]] = []
    with v.read() as s:
        for client in clients:
            name = f"{client.slug} {client.name}".casefold()
            if all(w in name for w in words):
                hits.append(
                    {
                        "client": client.slug,
                        "kind": "client",
                        "id": client.id,
                        "title": client.name,
                        "snippet": "",
                    }
                )
            ids = _candidates(s, client, words)
            if not ids:
                continue
            rows = s.execute(select(Record).where(Record.id.in_(sorted(ids)))).scalars()
            for row in rows:
                rec = v.records.load(client, row)
                if all(w in _text(rec.data) for w in words):
                    hits.append(
                        {
                            "client": client.slug,
                            "kind": rec.kind,
                            "id": rec.id,
                            "title": rec.data.get(TITLE_FIELD.get(rec.kind, ""), ""),
                            "snippet": _snippet(rec.data, words[0]),
                        }
                    )
    return hits
