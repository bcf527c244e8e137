"""Search across clients: the blind index (``store/index.py``) finds candidates, then each one is
decrypted, checked against the state commitment and kept only if it really contains every word.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from .errors import InvalidInput
from .integrity.statecheck import check_record
from .store.index import (
    INDEX_FLAG,
    NOT_SEARCHED,
    SEARCH_BATCH,
    SEARCH_KINDS,
    TITLE_FIELD,
    candidates,
    index_new_records,
    rid_text,
    searched_text,
    words_of,
)
from .store.models import Meta, Record, SearchPosting

if TYPE_CHECKING:
    from .core import Vault


def ensure_index(v: Vault) -> None:
    """Build the tokens of every record when the vault has none yet (after schema 0002 to 0004)."""
    with v.read() as s:
        if s.get(Meta, INDEX_FLAG) is not None:
            return
    with v.write("building the search index", bulk=True) as s:
        if s.get(Meta, INDEX_FLAG) is not None:
            return
        s.execute(delete(SearchPosting))
        for client in v.clients.list():
            for kind in SEARCH_KINDS:
                index_new_records(s, client, v.records.list(s, client, kind))
        s.add(Meta(key=INDEX_FLAG, value=b"1"))


def _snippet(data: dict[str, Any], needle: str) -> str:
    for key, value in data.items():
        if key in NOT_SEARCHED or not isinstance(value, str):
            continue
        pos = value.casefold().find(needle)
        if pos >= 0:
            start = max(0, pos - 30)
            return value[start : pos + len(needle) + 30].replace("\n", " ")
    return ""


def search(v: Vault, query: str, slug: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Records (and clients) whose non-secret text contains every word of ``query``.

    With ``limit``, stops once it has found that many (candidates are decrypted in batches, so a
    very common word costs what ``limit`` matches cost, not what every match would).
    """
    words = sorted(words_of(query or ""), key=len, reverse=True)
    if not words:
        raise InvalidInput("the search needs a word of at least two letters or digits")
    ensure_index(v)
    clients = [v.clients.get(slug)] if slug else v.clients.list()
    hits: list[dict[str, Any]] = []

    def full() -> bool:
        return limit is not None and len(hits) >= limit

    with v.read() as s:
        for client in clients:
            if full():
                break
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
            ordered = candidates(s, client, words)
            # Batches keep each query under SQLite's bound-parameter limit and let a limit stop early.
            for start in range(0, len(ordered), SEARCH_BATCH):
                if full():
                    break
                batch = [rid_text(raw) for raw in ordered[start : start + SEARCH_BATCH]]
                rows = s.execute(select(Record).where(Record.id.in_(batch)).order_by(Record.id)).scalars()
                # Checked here, not in SQL: a client_id condition makes SQLite walk the client's index.
                for row in (r for r in rows if r.client_id == client.id):
                    rec = v.records.load(client, row)
                    check_record(v, s, client.id, rec.id, rec.kind)
                    if not full() and all(w in searched_text(rec.data) for w in words):
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
