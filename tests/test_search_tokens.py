"""Search postings (schema 0004): written in bulk or one by one, and changed exactly when data changes.

The postings table holds, per client and token, sorted blocks of record ids keyed by the range
they cover; it has no index by record, so a record's postings are found again by recomputing its
tokens from its stored payload and seeking to the block that covers its id. These
tests read the real SQLite file and check that nothing is left behind, nothing extra is removed,
blocks never overflow and empty blocks go away.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handover_vault.errors import IntegrityError
from handover_vault.store import index as search

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file


def _rows(path: Path) -> list[tuple[str, bytes, bytes, bytes]]:
    con = sqlite3.connect(path)
    try:
        return [
            (c, bytes(t), bytes(low), bytes(ids))
            for c, t, low, ids in con.execute("SELECT client_id, token, low, ids FROM search_postings")
        ]
    finally:
        con.close()


def _pairs(path: Path) -> Counter[tuple[str, bytes, str]]:
    """Every (client, token, record id) the postings hold, with how many times."""
    out: Counter[tuple[str, bytes, str]] = Counter()
    for client_id, token, _low, ids in _rows(path):
        assert ids and len(ids) % 16 == 0
        for i in range(0, len(ids), 16):
            out[(client_id, token, search.rid_text(ids[i : i + 16]))] += 1
    return out


def _tokens(path: Path, record_id: str) -> set[bytes]:
    return {t for (_c, t, rid) in _pairs(path) if rid == record_id}


def _expected(v, slug: str, data: dict) -> set[bytes]:
    return search.tokens_for(v.clients.get(slug), data)


def test_record_ids_round_trip_and_non_uuids_are_refused() -> None:
    rid = "6224fd1c-036f-41f5-9076-ce1e51946a75"
    assert search.rid_text(search.rid_bytes(rid)) == rid
    for bad in ("6224FD1C-036F-41F5-9076-CE1E51946A75", "6224fd1c036f41f59076ce1e51946a75", "x" * 36, ""):
        with pytest.raises(IntegrityError, match="not a UUID"):
            search.rid_bytes(bad)


def test_edit_replaces_exactly_the_changed_tokens(acme, v, vault_path: Path) -> None:
    rec = v.docs.add("acme", title="Switch closet", body="patch panel beside the zanzibar rack")
    assert _tokens(vault_path, rec.id) == _expected(v, "acme", rec.data)
    new = v.docs.edit("acme", rec.id, body="patch panel beside the quokka rack")
    assert _tokens(vault_path, rec.id) == _expected(v, "acme", new.data)
    assert [h["id"] for h in v.search("quokka")] == [rec.id]
    assert v.search("zanzibar") == []


def test_rm_removes_the_records_postings_and_no_other(acme, v, vault_path: Path) -> None:
    keep = v.assets.add("acme", hostname="nas1", notes="zanzibar backups")
    gone = v.assets.add("acme", hostname="nas2", notes="zanzibar archive")
    before = sum(_pairs(vault_path).values())
    v.assets.rm("acme", gone.id)
    assert _tokens(vault_path, gone.id) == set()
    assert _tokens(vault_path, keep.id) == _expected(v, "acme", keep.data)
    assert sum(_pairs(vault_path).values()) == before - len(_expected(v, "acme", gone.data))
    assert [h["id"] for h in v.search("zanzibar")] == [keep.id]


def test_bulk_add_writes_the_same_tokens_as_one_by_one(acme, v, vault_path: Path) -> None:
    data = v.creds.clean({"label": "Core switch", "username": "netadmin", "notes": "zanzibar uplink"})
    single = v.creds.add("acme", **data)
    with v.write("bulk") as s:
        client = v.clients.get("acme", s)
        (bulk,) = v.records.add_many(s, client, "cred", [(data, data["label"])])
    assert _tokens(vault_path, bulk.id) == _tokens(vault_path, single.id) == _expected(v, "acme", data)
    assert {h["id"] for h in v.search("zanzib")} == {single.id, bulk.id}
    assert v.creds.get("acme", bulk.id)[1].data == data


def test_attachment_metadata_completed_in_place_is_indexed_once(acme, v, vault_path: Path, tmp_path) -> None:
    f = tmp_path / "zanzibar-diagram.txt"
    f.write_bytes(b"x" * 1000)
    rec = v.attachments.add_file("acme", f)
    assert _tokens(vault_path, rec.id) == _expected(v, "acme", rec.data)
    assert max(_pairs(vault_path).values()) == 1


def test_index_is_rebuilt_when_the_flag_is_missing(acme, v, vault_path: Path) -> None:
    rec = v.docs.add("acme", title="Remote site", body="zanzibar office")
    pairs = _pairs(vault_path)
    con = sqlite3.connect(vault_path)
    con.execute("DELETE FROM search_postings")
    con.execute("DELETE FROM meta WHERE key = 'search_index'")
    con.commit()
    con.close()
    assert [h["id"] for h in v.search("zanzibar")] == [rec.id]
    assert _pairs(vault_path) == pairs


def _check_blocks(path: Path, most: int) -> None:
    """Every token's blocks hold sorted, unique ids within their ranges, none empty or over ``most``."""
    by_token: dict[tuple[str, bytes], list[tuple[bytes, bytes]]] = {}
    for client_id, token, low, ids in _rows(path):
        by_token.setdefault((client_id, token), []).append((low, ids))
    for blocks in by_token.values():
        blocks.sort()
        for n, (low, ids) in enumerate(blocks):
            parts = [ids[i : i + 16] for i in range(0, len(ids), 16)]
            assert 1 <= len(parts) <= most
            assert parts == sorted(set(parts))
            assert parts[0] >= low
            if n + 1 < len(blocks):
                assert parts[-1] < blocks[n + 1][0]


def test_blocks_split_when_full_and_go_when_empty(acme, v, vault_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(search, "BLOCK_IDS", 3)
    recs = [v.docs.add("acme", title=f"Closet {n}", body="zanzibar rack") for n in range(10)]
    zanzibar = search.tokens_for(v.clients.get("acme"), {"body": "zanzibar"})
    assert len(zanzibar) == 7  # "za" .. "zanzibar"

    def blocks() -> list[int]:
        return sorted(len(ids) // 16 for _c, t, _low, ids in _rows(vault_path) if t == min(zanzibar))

    assert sum(blocks()) == 10 and len(blocks()) >= 4  # split as they filled up
    _check_blocks(vault_path, 3)
    monkeypatch.setattr(search, "FEW", 0)  # the bulk path, into the blocks that exist
    with v.write("bulk") as s:
        client = v.clients.get("acme", s)
        data = v.docs.clean({"title": "Closet", "body": "zanzibar rack"})
        recs += v.records.add_many(s, client, "doc", [(data, f"Closet {n}") for n in range(10, 30)])
    assert sum(blocks()) == 30
    _check_blocks(vault_path, 3)
    assert {h["id"] for h in v.search("zanzibar")} == {r.id for r in recs}
    monkeypatch.setattr(search, "FEW", 5_000)
    for rec in recs[:28]:
        v.docs.rm("acme", rec.id)
    assert sum(blocks()) == 2 and len(blocks()) <= 2  # emptied blocks are gone
    _check_blocks(vault_path, 3)
    with v.write("bulk") as s:  # a bulk add places each id in its block's range and splits
        client = v.clients.get("acme", s)
        data = v.creds.clean({"label": "Bulk", "notes": "zanzibar"})
        bulk = v.records.add_many(s, client, "cred", [(data, f"Bulk {n}") for n in range(20)])
    assert sum(blocks()) == 22
    _check_blocks(vault_path, 3)
    assert {h["id"] for h in v.search("zanzibar")} == {r.id for r in recs[28:] + bulk}


def test_an_import_into_a_new_client_writes_full_blocks(v, vault_path: Path) -> None:
    v.clients.add("big", name="Big")
    with v.write("bulk") as s:
        client = v.clients.get("big", s)
        data = v.creds.clean({"label": "Entry", "notes": "zanzibar"})
        v.records.add_many(s, client, "cred", [(data, f"Entry {n}") for n in range(600)])
    zanzibar = min(search.tokens_for(v.clients.get("big"), {"body": "zanzibar"}))
    assert sorted(len(ids) // 16 for _c, t, _l, ids in _rows(vault_path) if t == zanzibar) == [200, 200, 200]
    _check_blocks(vault_path, search.BLOCK_IDS)


def test_a_record_whose_payload_no_longer_decrypts_leaves_no_postings(acme, v, vault_path: Path) -> None:
    rec = v.docs.add("acme", title="Doomed", body="zanzibar")
    keep = v.docs.add("acme", title="Kept", body="zanzibar")
    con = sqlite3.connect(vault_path)
    con.execute("UPDATE records SET envelope = zeroblob(80) WHERE id = ?", (rec.id,))
    con.commit()
    con.close()
    with v.write("removing the record") as s:  # rm refuses to load it; the library still deletes it
        v.records.delete(s, v.clients.get("acme", s), rec)
    assert _tokens(vault_path, rec.id) == set()
    assert _tokens(vault_path, keep.id) == _expected(v, "acme", keep.data)


def test_a_malformed_postings_row_is_a_clear_integrity_error(acme, v, vault_path: Path) -> None:
    v.docs.add("acme", title="Remote site", body="zanzibar office")
    con = sqlite3.connect(vault_path)
    con.execute("UPDATE search_postings SET ids = substr(ids, 2)")  # 15 bytes: not whole ids
    con.commit()
    con.close()
    with pytest.raises(IntegrityError, match="search index holds a malformed row"):
        v.search("zanzibar")


def test_forgetting_a_client_takes_its_postings(acme, v, vault_path: Path) -> None:
    v.clients.add("beta", name="Beta GmbH")
    v.docs.add("beta", title="Router", body="zanzibar")
    acme_id = v.clients.get("acme").id
    assert any(c == acme_id for c, *_ in _rows(vault_path))
    con = sqlite3.connect(vault_path)
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("DELETE FROM clients WHERE id = ?", (acme_id,))
    con.commit()
    con.close()
    assert not any(c == acme_id for c, *_ in _rows(vault_path))
    from handover_vault.errors import IntegrityError
    from handover_vault.integrity.commitment import recompute_commitments

    with pytest.raises(IntegrityError, match=f"client {acme_id} was removed"):
        v.search("zanzibar")  # a client deleted behind the vault's back (DESIGN §3a)
    with v.write("adopting the deletion") as s:
        recompute_commitments(v, s)
    assert [h["client"] for h in v.search("zanzibar")] == ["beta"]


WORDS = ("alpha", "alpine", "bravo", "brave", "charlie", "delta", "zanzibar")
texts = st.lists(st.sampled_from(WORDS), max_size=4).map(" ".join)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), texts),
        st.tuples(st.just("edit"), st.integers(0, 20), texts),
        st.tuples(st.just("rm"), st.integers(0, 20)),
        st.tuples(st.just("bulk"), st.lists(texts, min_size=1, max_size=8)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops, few=st.sampled_from([0, 5_000]))
def test_postings_match_the_live_records_after_any_edits(
    v, vault_path: Path, monkeypatch, script, few
) -> None:
    """Random adds, edits, removals and bulk adds, with two ids per block so every path splits and
    empties blocks: afterwards the postings hold each live record's tokens exactly once, nothing
    else, and every block is well formed."""
    monkeypatch.setattr(search, "BLOCK_IDS", 2)
    monkeypatch.setattr(search, "FEW", few)  # 0: every write takes the bulk path
    slug = f"c{len(v.clients.list())}"  # a fresh client per example; the vault is shared
    client = v.clients.add(slug, name="Example")
    live: dict[str, dict] = {}
    for op in script:
        ids = sorted(live)
        if op[0] == "add":
            rec = v.docs.add(slug, title="t", body=op[1])
            live[rec.id] = rec.data
        elif op[0] == "edit" and ids:
            rec = v.docs.edit(slug, ids[op[1] % len(ids)], body=op[2] or "empty")
            live[rec.id] = rec.data
        elif op[0] == "rm" and ids:
            rid = ids[op[1] % len(ids)]
            v.docs.rm(slug, rid)
            del live[rid]
        elif op[0] == "bulk":
            with v.write("bulk") as s:
                c = v.clients.get(slug, s)
                items = [(v.docs.clean({"title": "t", "body": b}), "t") for b in op[1]]
                live.update((r.id, r.data) for r in v.records.add_many(s, c, "doc", items))
    got = Counter({k: n for k, n in _pairs(vault_path).items() if k[0] == client.id})
    want = Counter(
        (client.id, t, rid)
        for rid, data in live.items()
        for t in search.tokens_for(v.clients.get(slug), data)
    )
    assert got == want
    _check_blocks(vault_path, 2)
    for word in WORDS:
        found = {h["id"] for h in v.search(word, slug=slug) if h["kind"] == "doc"}
        assert found == {rid for rid, data in live.items() if word in data["body"].split()}
