"""Random sequences of writes, then one random tamper with the file: always detected (DESIGN §3a).

The tamper is what someone without the passphrase can do with sqlite3: put back a row (of a record
or a client) as an earlier state of the same file had it, delete a live record, or put back a
deleted one. Afterwards ``verify`` and a read of the affected client both refuse (IntegrityError).
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PASSPHRASE

OPS = st.sampled_from(["cred", "rotate", "doc", "edit", "rm", "contact", "client"])


def _rows(path: Path, table: str) -> dict[str, tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return {r[0]: r for r in con.execute(f"SELECT * FROM {table}")}
    finally:
        con.close()


def _apply(v: Any, op: str, n: int) -> None:
    _, creds = v.creds.list("acme")
    _, docs = v.docs.list("acme")
    if op == "cred" or (op == "rotate" and not creds):
        v.creds.add("acme", label=f"cred {n}", secret=f"secret-{n}")
    elif op == "rotate":
        v.creds.rotate("acme", creds[n % len(creds)].id, f"rotated-{n}")
    elif op == "doc" or (op in ("edit", "rm") and not docs):
        v.docs.add("acme", title=f"page {n}", body=f"body {n}")
    elif op == "edit":
        v.docs.edit("acme", docs[n % len(docs)].id, body=f"edited {n}")
    elif op == "rm":
        v.docs.rm("acme", docs[n % len(docs)].id)
    elif op == "contact":
        v.contacts.add("acme", name=f"person {n}", authorized=bool(n % 2))
    else:
        v.clients.edit("acme", name=f"ACME {n}")


def _tamper(path: Path, snapshots: list[dict[str, dict[str, tuple[Any, ...]]]], data: st.DataObject) -> str:
    """Change the file; return the id of the client or record changed."""
    now = {t: _rows(path, t) for t in ("records", "clients")}
    candidates: list[tuple[str, str, tuple[Any, ...] | None]] = []
    for snap in snapshots:
        for table in ("records", "clients"):
            for rid, row in snap[table].items():
                if now[table].get(rid) != row:
                    candidates.append((table, rid, row))  # an older state of the row (or a deleted one)
    candidates += [("records", rid, None) for rid in now["records"]]  # or delete a live record
    # An index into the candidates rather than sampled_from(candidates): their number depends on
    # the random ids and clock of the writes, which hypothesis must not see as its own input.
    table, rid, row = candidates[data.draw(st.integers(0, 10**6)) % len(candidates)]
    con = sqlite3.connect(path)
    try:
        con.execute(f"DELETE FROM {table} WHERE id = ?", (rid,))
        if row is not None:
            con.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
        con.commit()
    finally:
        con.close()
    return rid


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=6), data=st.data())
def test_random_writes_and_a_random_tamper_are_always_detected(
    ops: list[str], data: st.DataObject, tmp_path: Path
) -> None:
    from handover_vault import init_vault, open_vault
    from handover_vault.errors import IntegrityError
    from handover_vault.integrity.verify import verify_vault

    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "vault.db"
    v, _ = init_vault(path, PASSPHRASE)
    snapshots = []
    with v:
        v.clients.add("acme", name="ACME")
        v.creds.add("acme", label="first", secret="first-secret")
        snapshots.append({t: _rows(path, t) for t in ("records", "clients")})
        for n, op in enumerate(ops):
            _apply(v, op, n)
            snapshots.append({t: _rows(path, t) for t in ("records", "clients")})
        v.store.checkpoint()
    changed = _tamper(path, snapshots[:-1], data)
    with open_vault(path, passphrase=PASSPHRASE) as v:
        with pytest.raises(IntegrityError):
            verify_vault(v)
        with pytest.raises(IntegrityError) as err, v.read() as s:
            client = v.clients.get("acme", s)
            for kind in ("cred", "doc", "contact"):
                v.records.list(s, client, kind)
        assert (
            "tampered" in err.value.message
            or "commitment" in err.value.message
            or changed in err.value.message
        )
