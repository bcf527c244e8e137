"""Search tokens (schema 0003): written in bulk or one by one, and removed exactly when data changes.

The token table has no index by record, so a record's tokens are deleted by recomputing them from
its stored payload: these tests check that nothing is left behind and nothing extra is removed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vault import search


def _tokens(path: Path, record_id: str) -> set[bytes]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT token FROM search_tokens WHERE record_id = ?", (record_id,)).fetchall()
    finally:
        con.close()
    return {bytes(r[0]) for r in rows}


def _all_tokens(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT count(*) FROM search_tokens").fetchone()[0])
    finally:
        con.close()


def _expected(v, slug: str, data: dict) -> set[bytes]:
    return search.tokens_for(v.clients.get(slug), data)


def test_edit_replaces_exactly_the_changed_tokens(acme, v, vault_path: Path) -> None:
    rec = v.docs.add("acme", title="Switch closet", body="patch panel beside the zanzibar rack")
    assert _tokens(vault_path, rec.id) == _expected(v, "acme", rec.data)
    new = v.docs.edit("acme", rec.id, body="patch panel beside the quokka rack")
    assert _tokens(vault_path, rec.id) == _expected(v, "acme", new.data)
    assert [h["id"] for h in v.search("quokka")] == [rec.id]
    assert v.search("zanzibar") == []


def test_rm_removes_the_records_tokens_and_no_other(acme, v, vault_path: Path) -> None:
    keep = v.assets.add("acme", hostname="nas1", notes="zanzibar backups")
    gone = v.assets.add("acme", hostname="nas2", notes="zanzibar archive")
    before = _all_tokens(vault_path)
    v.assets.rm("acme", gone.id)
    assert _tokens(vault_path, gone.id) == set()
    assert _tokens(vault_path, keep.id) == _expected(v, "acme", keep.data)
    assert _all_tokens(vault_path) == before - len(_expected(v, "acme", gone.data))
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


def test_index_is_rebuilt_when_the_flag_is_missing(acme, v, vault_path: Path) -> None:
    rec = v.docs.add("acme", title="Remote site", body="zanzibar office")
    con = sqlite3.connect(vault_path)
    con.execute("DELETE FROM search_tokens")
    con.execute("DELETE FROM meta WHERE key = 'search_index'")
    con.commit()
    con.close()
    assert [h["id"] for h in v.search("zanzibar")] == [rec.id]
    assert _tokens(vault_path, rec.id) == _expected(v, "acme", rec.data)
