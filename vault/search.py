"""Search across clients through keyed word-prefix tokens, then an exact check on decrypted records.

Each word of a record's non-secret fields contributes the keyed hashes of its prefixes (2 to 12
characters) under the client's search key. A query finds the records holding a token for every one
of its words, decrypts only those, and keeps the ones that really contain every word. Search thus
matches word beginnings ("fire" finds "Firewall"), costs the same in a vault of any size, and never
looks at secrets or TOTP seeds.
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from .errors import InvalidInput
from .models import Meta, Record, SearchToken
from .store import insert_many

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
SEARCH_BATCH = 500
TOKEN_BYTES = 16  # 128 bits of HMAC-SHA256: collisions between a client's prefixes never happen
INSERT_CHUNK = 20_000  # token rows per statement: bounded memory for the parameter lists


def _text(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key in NOT_SEARCHED or value is None or isinstance(value, bool | int | float):
            continue
        parts.append(" ".join(map(str, value)) if isinstance(value, list) else str(value))
    return "\n".join(parts).casefold()


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.casefold()) if len(w) >= MIN_PREFIX}


def _token(client: ClientRef, prefix: str) -> bytes:
    return client.keys.search_mac(prefix.encode("utf-8"))[:TOKEN_BYTES]


class TokenMemo:
    """Tokens already computed while indexing many records of one client at once.

    Words that many records share ("admin", "https", "rack") are served whole; a new word still
    finds most of its prefixes ("adm", "admi", ...) computed: an import then runs one HMAC per
    distinct prefix instead of about fifty per record.
    """

    def __init__(self, client: ClientRef) -> None:
        self.client = client
        self.words: dict[str, frozenset[bytes]] = {}
        self.prefixes: dict[str, bytes] = {}

    def word(self, w: str) -> frozenset[bytes]:
        tokens = self.words.get(w)
        if tokens is None:
            out = []
            for n in range(MIN_PREFIX, min(len(w), MAX_PREFIX) + 1):
                prefix = w[:n]
                token = self.prefixes.get(prefix)
                if token is None:
                    token = self.prefixes[prefix] = _token(self.client, prefix)
                out.append(token)
            tokens = self.words[w] = frozenset(out)
        return tokens


def tokens_for(client: ClientRef, data: dict[str, Any], memo: TokenMemo | None = None) -> set[bytes]:
    """The tokens of a record's payload: those of every prefix of every word."""
    words = _words(_text(data))
    if memo is None:
        return {_token(client, w[:n]) for w in words for n in range(MIN_PREFIX, min(len(w), MAX_PREFIX) + 1)}
    out: set[bytes] = set()
    for w in words:
        out |= memo.word(w)
    return out


def _insert(s: Session, client: ClientRef, rows: list[tuple[bytes, str]]) -> None:
    """Insert (token, record id) rows in primary-key order, a chunk per statement.

    In key order each B-tree page is filled once instead of being revisited at random: that is
    most of the cost of writing the tokens of a large import.
    """
    rows.sort(key=itemgetter(0))  # by token: cheaper than by (token, record), and nearly as local
    table = SearchToken.__table__
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = [(client.id, t, rid) for t, rid in rows[start : start + INSERT_CHUNK]]
        insert_many(s, table, ("client_id", "token", "record_id"), chunk)


def index_record(s: Session, client: ClientRef, rec: Rec, old: dict[str, Any] | None = None) -> None:
    """Write a record's tokens inside the caller's transaction; ``old`` is the payload it replaces.

    The tokens of ``old`` that the new payload no longer has are deleted by primary key: the table
    has no index by record (see :class:`vault.models.SearchToken`), so they are recomputed.
    """
    if rec.kind not in SEARCH_KINDS:
        return
    new = tokens_for(client, rec.data)
    if old is not None:
        before = tokens_for(client, old)
        if before - new:
            drop_tokens(s, client, rec.id, before - new)
        new -= before
    _insert(s, client, [(t, rec.id) for t in new])


def drop_tokens(s: Session, client: ClientRef, record_id: str, tokens: set[bytes]) -> None:
    """Delete a record's tokens (computed from the payload that produced them)."""
    ordered = sorted(tokens)
    for start in range(0, len(ordered), INSERT_CHUNK):
        s.execute(
            delete(SearchToken).where(
                SearchToken.client_id == client.id,
                SearchToken.record_id == record_id,
                SearchToken.token.in_(ordered[start : start + INSERT_CHUNK]),
            )
        )


def drop_record_tokens(s: Session, client: ClientRef, rec: Rec) -> None:
    """Delete the tokens of a record about to be deleted (``rec.data`` as stored)."""
    if rec.kind in SEARCH_KINDS:
        tokens = tokens_for(client, rec.data)
        if tokens:
            drop_tokens(s, client, rec.id, tokens)


def index_new_records(s: Session, client: ClientRef, recs: list[Rec]) -> None:
    """Write the tokens of records just added, all in index order (bulk imports)."""
    memo = TokenMemo(client)
    _insert(
        s,
        client,
        [(t, rec.id) for rec in recs if rec.kind in SEARCH_KINDS for t in tokens_for(client, rec.data, memo)],
    )


def ensure_index(v: Vault) -> None:
    """Build the tokens of every record when the vault has none yet (after schema 0002 or 0003)."""
    with v.read() as s:
        if s.get(Meta, INDEX_FLAG) is not None:
            return
    with v.write("building the search index", bulk=True) as s:
        if s.get(Meta, INDEX_FLAG) is not None:
            return
        s.execute(delete(SearchToken))
        for client in v.clients.list():
            for kind in SEARCH_KINDS:
                index_new_records(s, client, v.records.list(s, client, kind))
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


def search(v: Vault, query: str, slug: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Records (and clients) whose non-secret text contains every word of ``query``.

    With ``limit``, stops once it has found that many (candidates are decrypted in batches, so a
    very common word costs what ``limit`` matches cost, not what every match would).
    """
    words = sorted(_words(query or ""), key=len, reverse=True)
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
            ordered = sorted(_candidates(s, client, words))
            # Batches keep each query under SQLite's bound-parameter limit and let a limit stop early.
            for start in range(0, len(ordered), SEARCH_BATCH):
                if full():
                    break
                batch = ordered[start : start + SEARCH_BATCH]
                for row in s.execute(select(Record).where(Record.id.in_(batch))).scalars():
                    rec = v.records.load(client, row)
                    if not full() and all(w in _text(rec.data) for w in words):
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
