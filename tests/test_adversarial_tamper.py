"""Tampering: property-based flips, truncations, extensions, swaps, retypes and replays of every
stored blob kind are detected with the right exit code and release no plaintext (DESIGN §3, §8, §9).

Key slots fail like a wrong passphrase (exit 3, one generic message); a slot whose stored KDF input
is malformed is refused before the KDF runs (exit 4, keys.try_unwrap). Everything else that fails
to decrypt or verify under a key that did unwrap is an integrity failure (exit 4) naming the kind and
id, never the content, and every other client and record stays readable.

The hypothesis part drives the library in-process (opening with an unlock session, so each example
costs a file copy rather than an Argon2id run); a parametrized part checks the same through the
installed command.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import PASSPHRASE
from tests.helpers_adversarial import base_env, run_env

PLAIN = {
    "secret": "Tamper-s3cret-current",
    "old_secret": "Tamper-s3cret-previous",
    "body": "Core switch sw-core-01 lives in rack B",
    "attachment": b"CONFIG-BACKUP-PLAINTEXT " * 14000,  # two chunks
    "beta_secret": "Beta-s3cret-untouched",
}
RECOVERY: dict[str, str] = {}


@dataclass
class Template:
    path: Path
    token: str
    recovery: str
    ids: dict[str, str]


@pytest.fixture
def template(tmp_path: Path) -> Template:
    from handover_vault import init_vault

    path = tmp_path / "template.db"
    v, code = init_vault(path, PASSPHRASE)
    ids: dict[str, str] = {}
    with v:
        v.clients.add("acme", name="ACME Ltd")
        v.clients.add("beta", name="Beta GmbH")
        ids["doc"] = v.docs.add("acme", title="Overview", body=PLAIN["body"]).id
        v.docs.edit("acme", ids["doc"], body=PLAIN["body"] + "\n\nedited")
        ids["cred"] = v.creds.add("acme", label="fw", username="admin", secret=PLAIN["old_secret"]).id
        v.creds.rotate("acme", "fw", PLAIN["secret"])
        v.creds.reveal("acme", "fw")
        src = tmp_path / "config.txt"
        src.write_bytes(PLAIN["attachment"])
        ids["attachment"] = v.attachments.add_file("acme", src).id
        ids["beta_cred"] = v.creds.add("beta", label="wifi", secret=PLAIN["beta_secret"]).id
        ids["acme"] = v.clients.get("acme").id
        ids["beta"] = v.clients.get("beta").id
        token = v.start_session(3600)
    return Template(path, token, code, ids)


def _copy(t: Template, dest: Path) -> Path:
    dest.unlink(missing_ok=True)
    shutil.copyfile(t.path, dest)
    return dest


def _sql(path: Path, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute(statement, params).fetchall()
        con.commit()
        return rows
    finally:
        con.close()


# --- what each blob kind protects, and how to read it back -------------------------------------------


def _open(t: Template, path: Path) -> Any:
    from handover_vault import open_vault

    return open_vault(path, session_token=t.token)


def read_slot(t: Template, path: Path) -> Any:
    from handover_vault import open_vault

    with open_vault(path, passphrase=PASSPHRASE) as v:
        return v.clients.list()


def read_recovery(t: Template, path: Path) -> Any:
    from handover_vault.core import recover_vault

    with recover_vault(path, t.recovery, "a new passphrase after recovery"):
        return None


def read_client(t: Template, path: Path) -> Any:
    with _open(t, path) as v:
        try:
            return v.clients.get("acme").data
        finally:
            # Another client is untouched by a tampered one.
            _, rec = v.creds.get("beta", t.ids["beta_cred"])
            assert rec.data["label"] == "wifi"


def read_record(t: Template, path: Path) -> Any:
    with _open(t, path) as v:
        try:
            return v.creds.reveal("acme", t.ids["cred"]).data
        finally:
            _, doc = v.docs.get("acme", t.ids["doc"])  # every other record stays readable
            assert doc.data["title"] == "Overview"


def read_moved(t: Template, path: Path) -> Any:
    """A record whose row was moved to another client, read as that client's."""
    with _open(t, path) as v:
        return v.creds.reveal("beta", t.ids["cred"]).data


def read_version(t: Template, path: Path) -> Any:
    with _open(t, path) as v:
        return [r.data for r in v.creds.history_revealed("acme", t.ids["cred"])[1]]


def read_chunks(t: Template, path: Path) -> Any:
    with _open(t, path) as v, v.read() as s:
        client = v.clients.get("acme", s)
        rec = v.records.get(s, client, "attachment", t.ids["attachment"])
        return b"".join(v.attachments.chunks(s, client, rec))


def read_audit(t: Template, path: Path) -> Any:
    with _open(t, path) as v:
        return v.audit.verify()


def read_signing(t: Template, path: Path) -> Any:
    with _open(t, path) as v:
        return v.sign(b"manifest")


@dataclass(frozen=True)
class Target:
    name: str
    table: str
    column: str
    where: str  # selects the one row to tamper with
    others: str  # selects rows whose value may be swapped in
    read: Callable[[Template, Path], Any]
    exit_code: int


TARGETS = [
    Target("slot", "key_slots", "wrapped", "kind = 'passphrase'", "1", read_slot, 3),
    Target("slot-salt", "key_slots", "salt", "kind = 'passphrase'", "1", read_slot, 3),
    Target("recovery-slot", "key_slots", "wrapped", "kind = 'recovery'", "1", read_recovery, 3),
    Target("client-key", "clients", "wrapped_key", "id = :acme", "1", read_client, 4),
    Target("client-profile", "clients", "envelope", "id = :acme", "1", read_client, 4),
    Target("record", "records", "envelope", "id = :cred", "1", read_record, 4),
    Target("record-version", "record_versions", "envelope", "record_id = :cred", "1", read_version, 4),
    Target("chunk", "chunks", "envelope", "record_id = :attachment AND seq = 0", "1", read_chunks, 4),
    Target("audit-detail", "audit", "detail", "seq = 3", "1", read_audit, 4),
    Target("audit-mac", "audit", "mac", "seq = 4", "1", read_audit, 4),
    Target("audit-at", "audit", "at", "seq = 2", "1", read_audit, 4),
    Target("audit-action", "audit", "action", "seq = 5", "1", read_audit, 4),
    Target("audit-head", "meta", "value", "key = 'audit_head'", "1", read_audit, 4),
    Target("signing-key", "meta", "value", "key = 'signing_private'", "key LIKE 'sign%'", read_signing, 4),
]


def _bind(t: Template, clause: str) -> tuple[str, dict[str, str]]:
    return clause, {k: v for k, v in t.ids.items() if f":{k}" in clause}


def _value(path: Path, t: Template, target: Target) -> Any:
    clause, params = _bind(t, target.where)
    rows = _sql(path, f"SELECT {target.column} FROM {target.table} WHERE {clause} LIMIT 1", params)
    assert rows, target
    return rows[0][0]


class AsText(bytes):
    """Bytes to be stored with SQLite type TEXT (CAST), e.g. not valid UTF-8: what a raw edit makes."""


@st.composite
def mutations(draw: st.DrawFn, original: Any) -> Any:
    """A changed value: flip, truncate, extend, replace, retype (SQLite is dynamically typed)."""
    data = original.encode() if isinstance(original, str) else bytes(original)
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "random", "retype", "as-text"]))
    if kind == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        new = bytearray(data)
        new[i] ^= 1 << draw(st.integers(0, 7))
        out: Any = bytes(new)
    elif kind == "truncate" and data:
        out = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "extend":
        out = data + draw(st.binary(min_size=1, max_size=32))
    elif kind == "random":
        out = draw(st.binary(min_size=len(data), max_size=len(data)).filter(lambda b: b != data))
    elif kind == "as-text":
        return AsText(data if not isinstance(original, str) else data + b"\xff")
    else:
        out = draw(st.sampled_from([data.hex(), 0, 1.5, data.decode("latin-1")]))
    if isinstance(original, str):
        out = out.decode("latin-1") if isinstance(out, bytes) else str(out)
    assume(type(out) is not type(original) or out != original)
    return out


def _update(path: Path, t: Template, target: Target, new: Any) -> None:
    clause, params = _bind(t, target.where)
    value = "CAST(:new AS TEXT)" if isinstance(new, AsText) else ":new"
    _sql(path, f"UPDATE {target.table} SET {target.column} = {value} WHERE {clause}", {**params, "new": new})


def _expected_code(target: Target, value: Any) -> int:
    # keys.try_unwrap refuses a slot whose salt is not 8-64 bytes before running the KDF (exit 4):
    # that is a malformed file, not a passphrase that failed to unwrap.
    if target.name == "slot-salt" and not (type(value) is bytes and 8 <= len(value) <= 64):
        return 4
    return target.exit_code


def _assert_detected(t: Template, target: Target, path: Path, expected: int) -> None:
    from handover_vault.errors import VaultError

    try:
        result = target.read(t, path)
    except VaultError as exc:
        assert exc.exit_code == expected, (target.name, type(exc).__name__, exc.message)
        text = " ".join([exc.message, *exc.hints])
        for plain in PLAIN.values():
            shown = plain.decode() if isinstance(plain, bytes) else plain
            assert shown[:20] not in text, f"{target.name}: plaintext in the error"
        if target.name in ("record", "record-version"):
            assert "cred" in exc.message and t.ids["cred"] in exc.message, exc.message
        return
    pytest.fail(f"{target.name}: tampering went unnoticed and released {str(result)[:80]!r}")


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_change_to_a_stored_blob_is_detected(
    template: Template, tmp_path: Path, target: Target, data: st.DataObject
) -> None:
    path = _copy(template, tmp_path / "work.db")
    original = _value(path, template, target)
    new = data.draw(mutations(original), label="new value")
    _update(path, template, target, new)
    _assert_detected(template, target, path, _expected_code(target, new))


@pytest.mark.parametrize("target", [t for t in TARGETS if t.table != "meta"], ids=lambda t: t.name)
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_blob_swapped_in_from_another_row_is_detected(
    template: Template, tmp_path: Path, target: Target, data: st.DataObject
) -> None:
    """Cut and paste: the same column of another row (another record, client, slot or entry)."""
    path = _copy(template, tmp_path / "work.db")
    original = _value(path, template, target)
    candidates = [
        r[0]
        for r in _sql(path, f"SELECT {target.column} FROM {target.table}")
        if r[0] != original and r[0] is not None
    ]
    if not candidates and isinstance(original, str):
        # Every entry was written in the same second: a plausible other time is the swap.
        candidates = [original[:-2] + ("1Z" if not original.endswith("1Z") else "2Z")]
    assert candidates, target.name
    new = data.draw(st.sampled_from(candidates), label="swapped in")
    _update(path, template, target, new)
    _assert_detected(template, target, path, target.exit_code)


# --- replays and structural edits -------------------------------------------------------------------


def _replay_old_record_version(path: Path, t: Template) -> None:
    old = _sql(
        path, "SELECT envelope FROM record_versions WHERE record_id = ? ORDER BY version", (t.ids["cred"],)
    )
    _sql(path, "UPDATE records SET envelope = ? WHERE id = ?", (old[0][0], t.ids["cred"]))


def _move_record_to_other_client(path: Path, t: Template) -> None:
    _sql(path, "UPDATE records SET client_id = ? WHERE id = ?", (t.ids["beta"], t.ids["cred"]))


def _swap_client_keys(path: Path, t: Template) -> None:
    a, b = t.ids["acme"], t.ids["beta"]
    ka = _sql(path, "SELECT wrapped_key FROM clients WHERE id = ?", (a,))[0][0]
    kb = _sql(path, "SELECT wrapped_key FROM clients WHERE id = ?", (b,))[0][0]
    _sql(path, "UPDATE clients SET wrapped_key = ? WHERE id = ?", (kb, a))
    _sql(path, "UPDATE clients SET wrapped_key = ? WHERE id = ?", (ka, b))


def _swap_slots(path: Path, t: Template) -> None:
    rows = _sql(path, "SELECT id, wrapped FROM key_slots ORDER BY kind")
    _sql(path, "UPDATE key_slots SET wrapped = ? WHERE id = ?", (rows[1][1], rows[0][0]))
    _sql(path, "UPDATE key_slots SET wrapped = ? WHERE id = ?", (rows[0][1], rows[1][0]))


def _lower_kdf(path: Path, t: Template) -> None:
    _sql(path, "UPDATE key_slots SET iterations = iterations + 1 WHERE kind = 'passphrase'")


def _replay_audit_entry(path: Path, t: Template) -> None:
    _sql(
        path,
        "INSERT INTO audit (seq, at, action, client_id, record_id, scope, detail, mac, commitment) "
        "SELECT (SELECT max(seq) + 1 FROM audit), at, action, client_id, record_id, "
        "scope, detail, mac, commitment FROM audit WHERE seq = 3",
    )


def _delete_audit_entry(path: Path, t: Template) -> None:
    _sql(path, "DELETE FROM audit WHERE seq = 3")


def _truncate_audit(path: Path, t: Template) -> None:
    _sql(path, "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")


def _swap_audit_entries(path: Path, t: Template) -> None:
    _sql(path, "UPDATE audit SET seq = -1 WHERE seq = 3")
    _sql(path, "UPDATE audit SET seq = 3 WHERE seq = 4")
    _sql(path, "UPDATE audit SET seq = 4 WHERE seq = -1")


def _move_audit_entry_to_other_client(path: Path, t: Template) -> None:
    _sql(path, "UPDATE audit SET client_id = ? WHERE client_id = ?", (t.ids["beta"], t.ids["acme"]))


def _drop_chunk(path: Path, t: Template) -> None:
    _sql(
        path,
        "DELETE FROM chunks WHERE record_id = ? AND seq = (SELECT max(seq) FROM chunks WHERE record_id = ?)",
        (t.ids["attachment"], t.ids["attachment"]),
    )


def _reorder_chunks(path: Path, t: Template) -> None:
    a = t.ids["attachment"]
    _sql(path, "UPDATE chunks SET seq = -1 WHERE record_id = ? AND seq = 0", (a,))
    _sql(path, "UPDATE chunks SET seq = 0 WHERE record_id = ? AND seq = 1", (a,))
    _sql(path, "UPDATE chunks SET seq = 1 WHERE record_id = ? AND seq = -1", (a,))


STRUCTURAL = [
    ("replay-old-version-envelope", _replay_old_record_version, read_record, 4),
    ("record-moved-to-other-client", _move_record_to_other_client, read_moved, 4),
    ("client-keys-swapped", _swap_client_keys, read_client, 4),
    ("passphrase-and-recovery-slots-swapped", _swap_slots, read_slot, 3),
    ("kdf-parameters-edited", _lower_kdf, read_slot, 3),
    ("audit-entry-replayed", _replay_audit_entry, read_audit, 4),
    ("audit-entry-deleted", _delete_audit_entry, read_audit, 4),
    ("audit-truncated", _truncate_audit, read_audit, 4),
    ("audit-entries-swapped", _swap_audit_entries, read_audit, 4),
    ("audit-entries-moved-to-other-client", _move_audit_entry_to_other_client, read_audit, 4),
    ("attachment-chunk-dropped", _drop_chunk, read_chunks, 4),
    ("attachment-chunks-reordered", _reorder_chunks, read_chunks, 4),
]


@pytest.mark.parametrize("name,edit,read,code", STRUCTURAL, ids=[s[0] for s in STRUCTURAL])
def test_replays_and_structural_edits_are_detected(
    template: Template, tmp_path: Path, name: str, edit: Any, read: Any, code: int
) -> None:
    path = _copy(template, tmp_path / "work.db")
    edit(path, template)
    target = Target(name, "", "", "", "", read, code)
    _assert_detected(template, target, path, code)


# --- the same through the installed command -----------------------------------------------------------


CLI_CASES = [
    (
        "slot",
        "UPDATE key_slots SET wrapped = substr(wrapped, 1, 20) WHERE kind = 'passphrase'",
        ["client", "list"],
        3,
        "Error: wrong passphrase",
    ),
    (
        "record",
        "UPDATE records SET envelope = substr(envelope, 1, length(envelope) - 1) || x'00' WHERE id = :cred",
        ["cred", "show", "acme", ":cred", "--reveal"],
        4,
        "Error: cred :cred (version 2) does not decrypt",
    ),
    (
        "client-key",
        "UPDATE clients SET wrapped_key = x'01' || substr(wrapped_key, 2) WHERE id = :acme",
        ["doc", "list", "acme"],
        4,
        "does not decrypt",
    ),
    (
        "audit",
        "UPDATE audit SET detail = x'00' || substr(detail, 2) WHERE seq = 3",
        ["audit", "verify"],
        4,
        "Error: audit log broken at entry 3",
    ),
    (
        "chunk",
        "UPDATE chunks SET envelope = x'01' || zeroblob(40) WHERE seq = 1",
        ["attach", "get", "acme", ":attachment", "--out", "OUT"],
        4,
        "chunk 1 does not decrypt",
    ),
]


@pytest.mark.parametrize("name,statement,args,code,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_tampering_through_the_command(
    template: Template, tmp_path: Path, name: str, statement: str, args: list[str], code: int, message: str
) -> None:
    path = _copy(template, tmp_path / "work.db")
    _sql(path, statement, {k: v for k, v in template.ids.items() if f":{k}" in statement})
    out = tmp_path / "attachment.out"
    argv = [str(out) if a == "OUT" else template.ids.get(a[1:], a) if a.startswith(":") else a for a in args]
    done = run_env(argv, base_env(path))
    err = done.stderr.decode()
    assert done.returncode == code, err
    want = message.replace(":cred", template.ids["cred"])
    assert want in err, err
    assert "Traceback" not in err
    for plain in PLAIN.values():
        shown = plain.decode() if isinstance(plain, bytes) else plain
        assert shown[:20] not in done.stdout.decode(errors="replace") + err
    # A failed decryption leaves no partial plaintext on disk.
    assert not out.exists() and not any(p.name.startswith(".attachment.out") for p in tmp_path.iterdir())
