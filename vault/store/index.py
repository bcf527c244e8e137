"""Search across clients through keyed word-prefix tokens, then an exact check on decrypted records.

Each word of a record's non-secret fields contributes the keyed hashes of its prefixes (2 to 12
characters) under the client's search key. A query finds the records holding a token for every one
of its words, decrypts only those, and keeps the ones that really contain every word. Search thus
matches word beginnings ("fire" finds "Firewall"), costs the same in a vault of any size, and never
looks at secrets or TOTP seeds.

The tokens are stored as postings (``search_postings``): per client and token, sorted blocks of
up to :data:`BLOCK_IDS` record ids, each block keyed by the lowest id its range may hold. A
record's postings are found again by recomputing its tokens from its payload and seeking to the
block whose range holds its id, so the table needs no second index by record.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError
from .engine import driver_sql
from .models import Meta

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from .records import Rec
    from .scope import ClientScope as ClientRef

SEARCH_KINDS = ("doc", "cred", "asset", "contact", "issue", "attachment")
TITLE_FIELD = {
    "doc": "title",
    "cred": "label",
    "asset": "hostname",
    "contact": "name",
    "issue": "title",
    "attachment": "name",
}
NOT_SEARCHED = {"secret", "totp", "sha256", "fields", "secret_fields"}
MIN_PREFIX, MAX_PREFIX = 2, 12
_WORD = re.compile(r"\w+", re.UNICODE)
INDEX_FLAG = "search_index"
SEARCH_BATCH = 500
TOKEN_BYTES = 16  # 128 bits of HMAC-SHA256: collisions between a client's prefixes never happen
ID_BYTES = 16  # a record id (UUID) in a postings block
BLOCK_IDS = 256  # record ids per postings row at most: 4 KiB, rewritten whole when one changes
PROBE = 256  # candidates left up to which a further search word is checked by seeks, not read whole
FEW = 5_000  # ids added at once up to which each is placed by a seek rather than a bulk read
LOOKUP_CHUNK = 5_000  # tokens per IN (...) query, well under SQLite's bound-parameter limit
INSERT_CHUNK = 20_000  # postings rows per statement: bounded memory for the parameter lists


def searched_text(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key in NOT_SEARCHED or value is None or isinstance(value, bool | int | float):
            continue
        parts.append(" ".join(map(str, value)) if isinstance(value, list) else str(value))
    return "\n".join(parts).casefold()


def words_of(text: str) -> set[str]:
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
    words = words_of(searched_text(data))
    if memo is None:
        return {_token(client, w[:n]) for w in words for n in range(MIN_PREFIX, min(len(w), MAX_PREFIX) + 1)}
    out: set[bytes] = set()
    for w in words:
        out |= memo.word(w)
    return out


# --- postings: which records hold each token -------------------------------------------------------


def rid_bytes(rid: str) -> bytes:
    """A record id (a UUID in its canonical text form) as its 16 raw bytes."""
    try:
        raw = bytes.fromhex(rid.replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != ID_BYTES or rid_text(raw) != rid:
        raise IntegrityError(f"record id {rid!r} is not a UUID: the vault file was altered")
    return raw


def rid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _split(ids: bytes) -> list[bytes]:
    if len(ids) % ID_BYTES or not ids:
        raise IntegrityError(
            "the search index holds a malformed row: the vault file was altered",
            "restore a backup (handover backup) or rebuild the index by deleting the search_index meta row",
        )
    return [ids[i : i + ID_BYTES] for i in range(0, len(ids), ID_BYTES)]


def _q(conn: Connection, sql: str, params: Any) -> Any:
    """Run ``sql`` (``?`` placeholders) straight on the driver, in its paramstyle."""
    return conn.exec_driver_sql(driver_sql(conn, sql), params)


def _holding(conn: Connection) -> str:
    """The condition "the block holds the bytes of the bound id" in the engine's SQL."""
    return "instr(ids, ?) > 0" if conn.dialect.name == "sqlite" else "position(? in ids) > 0"


def _in_list(n: int) -> str:
    return ", ".join("?" * n)


# The block whose range holds ``id``: the one with the greatest ``low`` not above it.
_SEEK = (
    "SELECT low, ids FROM search_postings WHERE client_id = ? AND token = ? AND low <= ? "
    "ORDER BY low DESC LIMIT 1"
)
# An upsert both engines take (SQLite 3.24+, PostgreSQL 9.5+): a block's ids replace the old ones.
_PUT = (
    "INSERT INTO search_postings (client_id, token, low, ids) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (client_id, token, low) DO UPDATE SET ids = excluded.ids"
)
_DROP = "DELETE FROM search_postings WHERE client_id = ? AND token = ? AND low = ?"


class _Writes:
    """Blocks to write and to delete, sent in two ``executemany`` calls in key order."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.put: list[tuple[str, bytes, bytes, bytes]] = []
        self.drop: list[tuple[str, bytes, bytes]] = []

    def block(self, token: bytes, low: bytes, ids: list[bytes], existed: bool) -> None:
        """Store ``ids`` (sorted, unique) as the block keyed ``low``, split into even blocks of at
        most :data:`BLOCK_IDS`; an empty block is deleted."""
        if not ids:
            if existed:
                self.drop.append((self.client_id, token, low))
            return
        pieces = -(-len(ids) // BLOCK_IDS)
        size = -(-len(ids) // pieces)
        for i in range(0, len(ids), size):
            piece = ids[i : i + size]
            self.put.append((self.client_id, token, low if i == 0 else piece[0], b"".join(piece)))

    def send(self, s: Session) -> None:
        conn = s.connection()
        if self.drop:
            _q(conn, _DROP, sorted(self.drop))
        self.put.sort()
        for start in range(0, len(self.put), INSERT_CHUNK):
            _q(conn, _PUT, self.put[start : start + INSERT_CHUNK])


def _lows(s: Session, client: ClientRef, tokens: list[bytes]) -> dict[bytes, list[bytes]]:
    """The keys (``low``) of every block of ``tokens``, in order: a bulk write places its ids by them."""
    out: dict[bytes, list[bytes]] = {}
    conn = s.connection()
    for start in range(0, len(tokens), LOOKUP_CHUNK):
        chunk = tokens[start : start + LOOKUP_CHUNK]
        rows = _q(
            conn,
            "SELECT token, low FROM search_postings "  # noqa: S608 (the f-string adds only "?, ?, ...")
            f"WHERE client_id = ? AND token IN ({_in_list(len(chunk))}) ORDER BY token, low",
            (client.id, *chunk),
        )
        for t, low in rows:
            out.setdefault(bytes(t), []).append(bytes(low))
    return out


def _add(s: Session, client: ClientRef, postings: dict[bytes, list[bytes]]) -> None:
    """Add record ids (no repeats within a token, none already there) to the postings of their tokens.

    Each id goes into the block whose range holds it, which is rewritten sorted and split in two
    when it overflows: adding one record costs a seek per token, whatever the vault's size. A bulk
    write (an import) places its ids by the keys of the tokens' blocks instead, read in one query
    per :data:`LOOKUP_CHUNK` tokens; into a client with no postings yet it just writes full blocks.
    """
    if not postings:
        return
    conn = s.connection()
    tokens = sorted(postings)
    groups: dict[tuple[bytes, bytes], set[bytes]] = {}
    held: dict[tuple[bytes, bytes], bytes] = {}
    out = _Writes(client.id)
    if sum(len(ids) for ids in postings.values()) <= FEW:
        for t in tokens:
            for rid in postings[t]:
                row = _q(conn, _SEEK, (client.id, t, rid)).first()
                key = (t, bytes(row[0]) if row else b"")
                if row:
                    held[key] = bytes(row[1])
                groups.setdefault(key, set()).add(rid)
    else:
        lows = _lows(s, client, tokens)
        for t in tokens:
            keys = lows.get(t)
            if not keys:  # the token's first ids: blocks are written without reading any
                out.block(t, b"", sorted(postings[t]), False)
                continue
            for rid in postings[t]:
                at = bisect_right(keys, rid)
                groups.setdefault((t, keys[at - 1] if at else b""), set()).add(rid)
        for key in groups:
            if key[1] in lows.get(key[0], ()):
                row = _q(
                    conn,
                    "SELECT ids FROM search_postings WHERE client_id = ? AND token = ? AND low = ?",
                    (client.id, *key),
                ).first()
                held[key] = bytes(row[0]) if row else b""
    for (t, low), new in groups.items():
        old = held.get((t, low), b"")
        out.block(t, low, sorted(new.union(_split(old)) if old else new), bool(old))
    out.send(s)


def _remove(s: Session, client: ClientRef, record_id: str, tokens: set[bytes] | None) -> None:
    """Take a record's id out of the postings of ``tokens`` (None: of every token of the client).

    With its tokens, a seek per token finds the one block that can hold the id. Without them (a
    payload that no longer decrypts), SQLite looks through the client's blocks for the bytes
    (``instr``). A block left empty is deleted.
    """
    needle = rid_bytes(record_id)
    conn = s.connection()
    rows: list[tuple[Any, ...]] = []
    if tokens is None:
        rows += (
            tuple(row)
            for row in _q(
                conn,
                f"SELECT token, low, ids FROM search_postings WHERE client_id = ? AND {_holding(conn)}",  # noqa: S608
                (client.id, needle),
            )
        )
    else:
        for t in sorted(tokens):
            row = _q(conn, _SEEK, (client.id, t, needle)).first()
            if row:
                rows.append((t, *row))
    out = _Writes(client.id)
    for token, low, ids in rows:
        parts = _split(bytes(ids))
        if needle in parts:
            out.block(bytes(token), bytes(low), [p for p in parts if p != needle], True)
    out.send(s)


def index_record(s: Session, client: ClientRef, rec: Rec, old: dict[str, Any] | None = None) -> None:
    """Write a record's tokens inside the caller's transaction; ``old`` is the payload it replaces.

    Only the tokens that changed are touched: the ones ``old`` had and the new payload lacks lose
    the record, the new ones gain it.
    """
    if rec.kind not in SEARCH_KINDS:
        return
    new = tokens_for(client, rec.data)
    if old is not None:
        before = tokens_for(client, old)
        if before - new:
            _remove(s, client, rec.id, before - new)
        new -= before
    raw = rid_bytes(rec.id)
    _add(s, client, {t: [raw] for t in new})


def drop_record_tokens(s: Session, client: ClientRef, rec: Rec) -> None:
    """Take out the postings of a record about to be deleted (``rec.data`` as stored)."""
    if rec.kind in SEARCH_KINDS:
        tokens = tokens_for(client, rec.data)
        if tokens:
            _remove(s, client, rec.id, tokens)


def drop_record_everywhere(s: Session, client: ClientRef, record_id: str) -> None:
    """Take a record out of every posting of its client (its payload no longer decrypts)."""
    _remove(s, client, record_id, None)


def index_new_records(s: Session, client: ClientRef, recs: list[Rec]) -> None:
    """Write the tokens of records just added (bulk imports, index rebuilds)."""
    memo = TokenMemo(client)
    postings: dict[bytes, list[bytes]] = {}
    # In id order, each token's list comes out sorted: writing a new token's blocks sorts nothing.
    by_id = sorted({rid_bytes(rec.id): rec for rec in recs if rec.kind in SEARCH_KINDS}.items())
    for raw, rec in by_id:
        for t in tokens_for(client, rec.data, memo):
            ids = postings.get(t)
            if ids is None:
                postings[t] = [raw]
            else:
                ids.append(raw)
    _add(s, client, postings)


def mark_indexed(s: Session) -> None:
    s.add(Meta(key=INDEX_FLAG, value=b"1"))


def candidates(s: Session, client: ClientRef, words: list[str]) -> list[bytes]:
    """Ids (raw, sorted) of the client's records holding a token for every word.

    The word whose token has the fewest blocks is read whole, its blocks in key order (so its ids
    come sorted); each other word then either probes the one block that could hold each remaining
    candidate, when few are left, or is read whole and intersected.
    """
    conn = s.connection()
    tokens = [_token(client, w[:MAX_PREFIX]) for w in words]
    sizes = {
        t: _q(
            conn, "SELECT count(*) FROM search_postings WHERE client_id = ? AND token = ?", (client.id, t)
        ).scalar_one()
        for t in tokens
    }
    tokens.sort(key=sizes.__getitem__)
    if not sizes[tokens[0]]:
        return []
    found: list[bytes] = []
    for blob in _q(
        conn,
        "SELECT ids FROM search_postings WHERE client_id = ? AND token = ? ORDER BY low",
        (client.id, tokens[0]),
    ).scalars():
        found += _split(bytes(blob))
    for t in tokens[1:]:
        if len(found) <= PROBE:
            kept = []
            for rid in found:
                row = _q(conn, _SEEK, (client.id, t, rid)).first()
                if row is not None and rid in _split(bytes(row[1])):
                    kept.append(rid)
            found = kept
        else:
            ids: set[bytes] = set()
            for blob in _q(
                conn, "SELECT ids FROM search_postings WHERE client_id = ? AND token = ?", (client.id, t)
            ).scalars():
                ids.update(_split(bytes(blob)))
            found = [rid for rid in found if rid in ids]
        if not found:
            break
    return found
