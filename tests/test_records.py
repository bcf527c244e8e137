"""vault/store/records.py, clients.py, attachments.py: every stored ciphertext is bound to its place.

A flipped byte in any blob is an integrity failure (exit 4) that names the kind and id and leaves
every other record readable; a ciphertext moved to another row, client, kind, version or chunk
position is refused the same way.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from handover_vault.errors import IntegrityError, NotFound
from tests.conftest import PASSPHRASE, run
from tests.helpers_security import flip, flip_column, fork_run, one, sql, swap_column

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

RECORD_HINT = "hint: every other record is unaffected; restore this one from a backup\n"
CLIENT_KEY_HINT = "hint: the other clients are unaffected; restore this client from a backup\n"


@dataclass
class Ids:
    acme: str
    beta: str
    overview: str  # acme doc, edited once (version 2; version 1 in record_versions)
    runbook: str  # acme doc
    beta_doc: str
    cred: str
    attachment: str  # 3 chunks
    small: str  # 1 chunk


def _build_world(path: Path, scratch: Path) -> Ids:
    """ACME (as conftest's ``acme`` fixture) plus a second client, doc history and attachments."""
    from handover_vault import init_vault

    v, _ = init_vault(path, PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME Ltd", contract_start="2024-01-01", notice_days=30)
        v.docs.add("acme", title="Network overview", body="# LAN\n\n10.0.0.0/24 behind fw1", overview=True)
        v.creds.add(
            "acme",
            label="Firewall admin",
            username="admin",
            secret="Fw-s3cret-0001",
            category="firewall",
            url="https://fw1.acme.example",
        )
        v.docs.edit("acme", "Network overview", body="# LAN\n\n10.0.0.0/24 behind fw1\n\nVLAN 20: voice")
        runbook = v.docs.add("acme", title="Runbook", body="Restart the NAS first.")
        beta = v.clients.add("beta", name="Beta GmbH")
        beta_doc = v.docs.add("beta", title="Network overview", body="# Beta LAN")
        att = v.attachments.add_file("acme", _write(scratch / "config-backup.tar", os.urandom(600 * 1024)))
        small = v.attachments.add_file("acme", _write(scratch / "diagram.txt", b"fw1 -- sw1\n"))
        overview = v.docs.get("acme", "Network overview")[1]
        return Ids(
            acme=v.clients.get("acme").id,
            beta=beta.id,
            overview=overview.id,
            runbook=runbook.id,
            beta_doc=beta_doc.id,
            cred=v.creds.get("acme", "Firewall admin")[1].id,
            attachment=att.id,
            small=small.id,
        )


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ids]:
    """Built once per module (the KDF at the floor, as everywhere in the tests); copied per test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HANDOVER_KDF", "minimum")
        while True:
            base = tmp_path_factory.mktemp("world")
            mp.setenv("XDG_STATE_HOME", str(base / "state"))
            ids = _build_world(base / "vault.db", base)
            # Records whose ids share their first two characters are checked as one group (the state
            # commitment, DESIGN §3a): a tampered record makes its neighbours unprovable too. The
            # "everything else reads" checks need each record in a group of its own.
            groups = [i[:2] for i in ids.__dict__.values()]
            if len(set(groups)) == len(groups):
                return base / "vault.db", ids


@pytest.fixture
def world(world_template: tuple[Path, Ids], vault_path: Path) -> Ids:
    template, ids = world_template
    shutil.copyfile(template, vault_path)
    return ids


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _open(path: Path):
    from handover_vault import open_vault

    return open_vault(path, passphrase=PASSPHRASE)


def _attachment_bytes(v, slug: str, ref: str) -> bytes:
    _, rec = v.attachments.get(slug, ref)
    with v.read() as s:
        client = v.clients.get(slug, s)
        return b"".join(v.attachments.chunks(s, client, rec))


def _everything_else_reads(path: Path, ids: Ids, skip: set[str]) -> None:
    """Every record not named in ``skip`` still opens."""
    with _open(path) as v:
        if "acme" not in skip:
            if "overview" not in skip:
                assert "VLAN 20" in v.docs.get("acme", ids.overview)[1].data["body"]
            if "overview-history" not in skip and "overview" not in skip:
                assert len(v.docs.history("acme", ids.overview)[1]) == 1
            if "runbook" not in skip:
                assert v.docs.get("acme", ids.runbook)[1].data["title"] == "Runbook"
            assert v.creds.reveal("acme", ids.cred).data["secret"] == "Fw-s3cret-0001"
            if "attachment" not in skip:
                assert len(_attachment_bytes(v, "acme", ids.attachment)) == 600 * 1024
            assert _attachment_bytes(v, "acme", ids.small) == b"fw1 -- sw1\n"
        assert v.docs.get("beta", ids.beta_doc)[1].data["body"] == "# Beta LAN"
        assert v.clients.get("beta").name == "Beta GmbH"


# --- one flipped byte in each kind of stored blob ---------------------------------------------------

# Byte positions: the version byte, inside the nonce, inside the ciphertext, the last byte of the tag.
POSITIONS = [0, 5, 20, -1]


def _each_position(path: Path, table: str, column: str, where: str, params: tuple, check) -> None:
    """Flip each position in turn, run ``check`` (which must see the failure), restore the blob."""
    original = one(path, f"SELECT {column} FROM {table} WHERE {where}", params)
    for index in POSITIONS:
        flip_column(path, table, column, where, params, index)
        with _open(path) as v:
            check(v)
        sql(path, f"UPDATE {table} SET {column} = ? WHERE {where}", (original, *params))
    flip_column(path, table, column, where, params, 20)  # leave one flip for the "others read" check


def test_flipped_record_envelope(world: Ids, vault_path: Path) -> None:
    def check(v) -> None:
        with pytest.raises(IntegrityError) as err:
            v.docs.get("acme", world.runbook)
        assert err.value.message == f"doc {world.runbook} (version 1) does not decrypt: tampered or corrupt"
        assert err.value.hints == ("every other record is unaffected; restore this one from a backup",)

    _everything_else_reads(vault_path, world, set())
    _each_position(vault_path, "records", "envelope", "id = ?", (world.runbook,), check)
    _everything_else_reads(vault_path, world, {"runbook"})


def test_flipped_record_version(world: Ids, vault_path: Path) -> None:
    def check(v) -> None:
        with pytest.raises(IntegrityError) as err:
            v.docs.history("acme", world.overview)
        assert err.value.message == f"doc {world.overview} (version 1) does not decrypt: tampered or corrupt"
        assert v.docs.get("acme", world.overview)[1].version == 2  # the current version still reads

    _each_position(
        vault_path, "record_versions", "envelope", "record_id = ? AND version = 1", (world.overview,), check
    )
    _everything_else_reads(vault_path, world, {"overview-history"})


def test_flipped_chunk(world: Ids, vault_path: Path) -> None:
    def check(v) -> None:
        with pytest.raises(IntegrityError) as err:
            _attachment_bytes(v, "acme", world.attachment)
        assert err.value.message == f"attachment {world.attachment}: chunk 1 does not decrypt (tampered)"

    _each_position(vault_path, "chunks", "envelope", "record_id = ? AND seq = 1", (world.attachment,), check)
    _everything_else_reads(vault_path, world, {"attachment"})


def test_flipped_client_envelope(world: Ids, vault_path: Path) -> None:
    def check(v) -> None:
        with pytest.raises(IntegrityError) as err:
            v.clients.get("acme")
        assert err.value.message == f"client {world.acme} does not decrypt: tampered or corrupt"

    _each_position(vault_path, "clients", "envelope", "id = ?", (world.acme,), check)
    _other_clients_refused(vault_path, world)


def test_flipped_client_wrapped_key(world: Ids, vault_path: Path) -> None:
    def check(v) -> None:
        with pytest.raises(IntegrityError) as err:
            v.docs.list("acme")
        assert (
            err.value.message == f"the data key of client {world.acme} does not decrypt: tampered or corrupt"
        )

    _each_position(vault_path, "clients", "wrapped_key", "id = ?", (world.acme,), check)
    _other_clients_refused(vault_path, world)


def _other_clients_refused(path: Path, ids: Ids) -> None:
    """A client row that changed leaves the vault's state commitment unprovable for every client
    (it sums them all, DESIGN §3a): the others are refused too, naming the client that changed."""
    with _open(path) as v, pytest.raises(IntegrityError) as err:
        v.docs.get("beta", ids.beta_doc)
    assert err.value.message.startswith(f"client {ids.acme} does not match the vault's state commitment")


# The same five, through the installed command: exit 4, the exact message, and others still read.
CLI_CASES = {
    "record": (
        ("records", "envelope", "id = ?", "runbook"),
        ["doc", "show", "acme", "{runbook}"],
        "Error: doc {runbook} (version 1) does not decrypt: tampered or corrupt\n" + RECORD_HINT,
        ["doc", "show", "acme", "Network overview"],
    ),
    "record_version": (
        ("record_versions", "envelope", "record_id = ? AND version = 1", "overview"),
        ["doc", "history", "acme", "{overview}"],
        "Error: doc {overview} (version 1) does not decrypt: tampered or corrupt\n" + RECORD_HINT,
        ["doc", "show", "acme", "{overview}"],
    ),
    "chunk": (
        ("chunks", "envelope", "record_id = ? AND seq = 2", "attachment"),
        ["attach", "get", "acme", "{attachment}", "--out", "{out}"],
        "Error: attachment {attachment}: chunk 2 does not decrypt (tampered)\n",
        ["attach", "get", "acme", "{small}", "--out", "{out}"],
    ),
    "client_envelope": (
        ("clients", "envelope", "id = ?", "acme"),
        ["client", "show", "acme"],
        "Error: client {acme} does not decrypt: tampered or corrupt\n",
        ["doc", "show", "beta", "Network overview"],
    ),
    "client_wrapped_key": (
        ("clients", "wrapped_key", "id = ?", "acme"),
        ["cred", "show", "acme", "Firewall admin"],
        "Error: the data key of client {acme} does not decrypt: tampered or corrupt\n" + CLIENT_KEY_HINT,
        ["client", "show", "beta"],
    ),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_flipped_blob_through_the_command(case: str, world: Ids, vault_path: Path, tmp_path: Path) -> None:
    (table, column, where, who), tampered, message, other = CLI_CASES[case]
    names = {**world.__dict__, "out": str(tmp_path / "out.bin")}
    flip_column(vault_path, table, column, where, (names[who],), 17)
    runner = run if case == "record" else fork_run  # one on the installed command, the rest forked
    done = runner([a.format(**names) for a in tampered], vault=vault_path)
    assert (done.returncode, done.stdout, done.stderr) == (4, "", message.format(**names))
    assert not (tmp_path / "out.bin").exists()  # a failed get leaves no file, not even a partial one
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin")]
    if case == "record":  # the others are checked in-process above; one run shows it end to end
        ok = run([a.format(**names) for a in other], vault=vault_path)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("# LAN")


# --- ciphertexts moved between places ---------------------------------------------------------------


def test_envelopes_swapped_between_two_records(world: Ids, vault_path: Path) -> None:
    swap_column(vault_path, "records", "envelope", "id", world.overview, world.runbook)
    with _open(vault_path) as v:
        for rid, version in ((world.overview, 2), (world.runbook, 1)):
            with pytest.raises(IntegrityError) as err:
                v.docs.get("acme", rid)
            assert err.value.message == f"doc {rid} (version {version}) does not decrypt: tampered or corrupt"


def test_envelope_copied_to_another_clients_record(world: Ids, vault_path: Path) -> None:
    swap_column(vault_path, "records", "envelope", "id", world.overview, world.beta_doc)
    with _open(vault_path) as v:
        with pytest.raises(IntegrityError, match=f"doc {world.beta_doc} "):
            v.docs.get("beta", world.beta_doc)
        with pytest.raises(IntegrityError, match=f"doc {world.overview} "):
            v.docs.get("acme", world.overview)


def test_record_moved_to_another_client(world: Ids, vault_path: Path) -> None:
    sql(vault_path, "UPDATE records SET client_id = ? WHERE id = ?", (world.beta, world.runbook))
    with _open(vault_path) as v:
        with pytest.raises(IntegrityError) as err:
            v.docs.list("beta")
        assert err.value.message == f"doc {world.runbook} (version 1) does not decrypt: tampered or corrupt"
        # Gone from acme behind the vault's back: the state commitment says so (DESIGN §3a).
        with pytest.raises(IntegrityError) as err:
            v.docs.get("acme", world.runbook)
        assert err.value.message.startswith(f"doc {world.runbook} was removed from client {world.acme}")


def test_record_relabelled_as_another_kind(world: Ids, vault_path: Path) -> None:
    sql(vault_path, "UPDATE records SET kind = 'issue' WHERE id = ?", (world.runbook,))
    done = fork_run(["issue", "list", "acme"], vault=vault_path)
    assert (done.returncode, done.stderr) == (
        4,
        f"Error: issue {world.runbook} (version 1) does not decrypt: tampered or corrupt\n" + RECORD_HINT,
    )


def test_record_version_number_changed(world: Ids, vault_path: Path) -> None:
    sql(vault_path, "UPDATE records SET version = 7 WHERE id = ?", (world.runbook,))
    with _open(vault_path) as v, pytest.raises(IntegrityError, match=r"\(version 7\) does not decrypt"):
        v.docs.get("acme", world.runbook)


def test_history_envelopes_swapped_between_versions(world: Ids, vault_path: Path) -> None:
    with _open(vault_path) as v:
        v.docs.edit("acme", world.overview, body="third version")
    swap_column(vault_path, "record_versions", "envelope", "version", 1, 2)
    with _open(vault_path) as v:
        with pytest.raises(IntegrityError, match=rf"^doc {world.overview} \(version 1\) does not decrypt"):
            v.docs.history("acme", world.overview)
        assert v.docs.get("acme", world.overview)[1].data["body"] == "third version"


def test_history_entry_moved_to_another_record(world: Ids, vault_path: Path) -> None:
    with _open(vault_path) as v:
        v.docs.edit("acme", world.runbook, body="Restart the switch first.")
    sql(vault_path, "DELETE FROM record_versions WHERE record_id = ?", (world.runbook,))
    sql(
        vault_path,
        "UPDATE record_versions SET record_id = ? WHERE record_id = ?",
        (world.runbook, world.overview),
    )
    with _open(vault_path) as v, pytest.raises(IntegrityError, match=rf"^doc {world.runbook} \(version 1\)"):
        v.docs.history("acme", world.runbook)


def test_client_envelopes_swapped(world: Ids, vault_path: Path) -> None:
    swap_column(vault_path, "clients", "envelope", "id", world.acme, world.beta)
    with _open(vault_path) as v:
        for slug, cid in (("acme", world.acme), ("beta", world.beta)):
            with pytest.raises(IntegrityError) as err:
                v.clients.get(slug)
            assert err.value.message == f"client {cid} does not decrypt: tampered or corrupt"


def test_client_wrapped_keys_swapped(world: Ids, vault_path: Path) -> None:
    swap_column(vault_path, "clients", "wrapped_key", "id", world.acme, world.beta)
    with _open(vault_path) as v:
        for slug, cid in (("acme", world.acme), ("beta", world.beta)):
            with pytest.raises(IntegrityError, match=rf"^the data key of client {cid} does not decrypt"):
                v.clients.get(slug)


def test_client_lookups_swapped(world: Ids, vault_path: Path) -> None:
    swap_column(vault_path, "clients", "lookup", "id", world.acme, world.beta)
    done = fork_run(["client", "show", "acme"], vault=vault_path)
    assert (done.returncode, done.stderr) == (
        4,
        f"Error: client {world.beta} does not match its lookup entry: tampered\n",
    )


def test_record_lookups_swapped(world: Ids, vault_path: Path) -> None:
    """Asking for "Runbook" must not quietly return the page whose lookup was swapped in."""
    swap_column(vault_path, "records", "lookup", "id", world.overview, world.runbook)
    with _open(vault_path) as v:
        with pytest.raises(IntegrityError) as err:
            v.docs.get("acme", "Runbook")
        assert err.value.message == f"doc {world.overview} does not match its lookup entry: tampered"
        assert v.docs.get("acme", world.runbook)[1].data["title"] == "Runbook"  # by id: still fine


def test_chunks_reordered(world: Ids, vault_path: Path) -> None:
    sql(vault_path, "UPDATE chunks SET seq = 99 WHERE record_id = ? AND seq = 0", (world.attachment,))
    sql(vault_path, "UPDATE chunks SET seq = 0 WHERE record_id = ? AND seq = 1", (world.attachment,))
    sql(vault_path, "UPDATE chunks SET seq = 1 WHERE record_id = ? AND seq = 99", (world.attachment,))
    with _open(vault_path) as v, pytest.raises(IntegrityError) as err:
        _attachment_bytes(v, "acme", world.attachment)
    assert err.value.message == f"attachment {world.attachment}: chunk 0 does not decrypt (tampered)"


def test_chunk_moved_to_another_attachment(world: Ids, vault_path: Path) -> None:
    sql(vault_path, "DELETE FROM chunks WHERE record_id = ?", (world.small,))
    sql(
        vault_path,
        "UPDATE chunks SET record_id = ? WHERE record_id = ? AND seq = 0",
        (world.small, world.attachment),
    )
    with _open(vault_path) as v, pytest.raises(IntegrityError) as err:
        _attachment_bytes(v, "acme", world.small)
    assert err.value.message == f"attachment {world.small}: chunk 0 does not decrypt (tampered)"


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (2, "attachment {id} is incomplete or altered (chunks or hash differ)"),
        (1, "attachment {id}: chunk 1 is missing"),
    ],
    ids=["last-chunk-dropped", "middle-chunk-dropped"],
)
def test_dropped_chunk(world: Ids, vault_path: Path, seq: int, message: str) -> None:
    sql(vault_path, "DELETE FROM chunks WHERE record_id = ? AND seq = ?", (world.attachment, seq))
    with _open(vault_path) as v, pytest.raises(IntegrityError) as err:
        _attachment_bytes(v, "acme", world.attachment)
    assert err.value.message == message.format(id=world.attachment)


def test_record_payload_that_is_not_an_object(acme) -> None:
    """A validly sealed payload of the wrong JSON shape is refused, not half-loaded."""
    from handover_vault.keys.hierarchy import record_aad

    client = acme.clients.get("acme")
    blob = client.keys.sealer.seal(b"[1, 2]", record_aad(acme.vault_id, client.id, "doc", "r1", 1))
    with pytest.raises(IntegrityError, match=r"^doc r1 has a malformed payload$"):
        acme.records.unseal(client, "doc", "r1", 1, blob)


# --- versions and history ---------------------------------------------------------------------------


def test_update_keeps_every_previous_version(acme) -> None:
    for n in range(2, 5):
        acme.docs.edit("acme", "Network overview", body=f"body {n}")
    rec, old = acme.docs.history("acme", "Network overview")
    assert rec.version == 4 and rec.data["body"] == "body 4"
    assert [(r.version, r.data["body"]) for r in old] == [
        (1, "# LAN\n\n10.0.0.0/24 behind fw1"),
        (2, "body 2"),
        (3, "body 3"),
    ]


def test_stale_update_is_refused(acme) -> None:
    from handover_vault.errors import InvalidInput

    _, rec = acme.docs.get("acme", "Network overview")
    acme.docs.edit("acme", rec.id, body="someone else was faster")
    with acme.write("stale edit") as s, pytest.raises(InvalidInput, match="was changed meanwhile"):
        acme.records.update(s, acme.clients.get("acme", s), rec, {**rec.data, "body": "mine"})


def test_delete_removes_history_and_chunks(acme, tmp_path: Path) -> None:
    acme.docs.edit("acme", "Network overview", body="v2")
    att = acme.attachments.add_file("acme", _write(tmp_path / "a.bin", b"x" * 1000))
    acme.docs.rm("acme", "Network overview")
    acme.attachments.rm("acme", att.id)
    path = acme.location
    assert one(path, "SELECT count(*) FROM record_versions") == 0
    assert one(path, "SELECT count(*) FROM chunks") == 0
    with pytest.raises(NotFound):
        acme.docs.get("acme", "Network overview")


def test_attachment_streams_round_trip(acme) -> None:
    data = os.urandom(3 * 256 * 1024 + 17)
    with acme.write("attach") as s:
        rec = acme.attachments.add_stream(s, acme.clients.get("acme", s), "blob.bin", io.BytesIO(data))
    assert rec.data["chunks"] == 4 and rec.data["size"] == len(data)
    assert _attachment_bytes(acme, "acme", rec.id) == data
    assert one(acme.location, "SELECT count(*) FROM chunks WHERE record_id = ?", (rec.id,)) == 4
    # Each chunk is one envelope: version + nonce + block + tag.
    sizes = [
        r[0]
        for r in sql(
            acme.location, "SELECT length(envelope) FROM chunks WHERE record_id = ? ORDER BY seq", (rec.id,)
        )
    ]
    assert sizes == [256 * 1024 + 29] * 3 + [17 + 29]
    assert flip(b"\x00", 0) == b"\x01"
