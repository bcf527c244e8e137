"""Nothing changes unnoticed (DESIGN §3a): rows of the vault file changed with sqlite3 by someone
who does not know the passphrase, then the command a technician would run next.

Each tamper restores rows from an older copy of the same file, deletes rows or swaps a key; the
command must exit 4 naming the kind and id of what changed, before anything is shown, revealed,
exported, reported or used in a policy decision, and never print the content.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, run

SECRET_1, SECRET_2 = "Old-s3cret-0001", "New-s3cret-0002"


@dataclass(frozen=True)
class World:
    template: Path
    older: Path  # the same vault, copied before the later changes
    other: Path  # another vault (another vault id and keys)
    acme: str
    beta: str
    cred: str
    beta_cred: str
    jane: str
    doc: str
    request: str
    recipient: str


def _build(base: Path) -> World:
    import pyrage

    from handover_vault import init_vault
    from handover_vault.bundle.export import set_successor
    from handover_vault.requests.service import Requests

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    path, older, other = base / "vault.db", base / "older.db", base / "other.db"
    v, _ = init_vault(path, PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME Ltd", contract_start="2024-01-01", notice_days=30)
        v.clients.add("beta", name="Beta GmbH")
        jane = v.contacts.add("acme", name="Jane Doe", email="jane@acme.example", authorized=True)
        v.contacts.add("acme", name="Bob Smith", email="bob@acme.example", authorized=True)
        cred = v.creds.add(
            "acme", label="Firewall admin", username="admin", secret=SECRET_1, category="firewall"
        )
        beta_cred = v.creds.add("beta", label="Beta router", username="root", secret="beta-secret")
        doc = v.docs.add("acme", title="Network overview", body="# LAN", overview=True)
        v.store.checkpoint()
        shutil.copy(path, older)
        v.contacts.edit("acme", jane.id, authorized=False)  # Jane left: no longer authorised
        v.creds.rotate("acme", cred.id, SECRET_2)
        set_successor(v, "acme", "Next IT", [recipient])
        from handover_vault.agreement import end_agreement

        end_agreement(v, "acme", "2026-01-05", "moving to another provider")  # so `letter` runs
        logged = Requests(v).log(
            "acme",
            requester="Bob Smith",
            channel="phone",
            verified_by="called back on the number on file",
            decision="granted",
            items=[cred.id],
        )
        v.store.checkpoint()
    w, _ = init_vault(other, PASSPHRASE)
    with w:
        w.clients.add("acme", name="ACME Ltd")
        w.store.checkpoint()
    return World(
        path, older, other, v_id(path, "acme"), v_id(path, "beta"), cred.id, beta_cred.id, jane.id, doc.id,
        logged.request.id, recipient,
    )  # fmt: skip


def v_id(path: Path, slug: str) -> str:
    from handover_vault import open_vault

    with open_vault(path, passphrase=PASSPHRASE) as v:
        return v.clients.get(slug).id


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("integrity")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HANDOVER_KDF", "minimum")
        mp.setenv("XDG_STATE_HOME", str(base / "state"))
        return _build(base)


@pytest.fixture
def world(world_template: World, vault_path: Path) -> World:
    shutil.copy(world_template.template, vault_path)
    return world_template


def sql(path: Path, statement: str, params: tuple[Any, ...] = (), older: Path | None = None) -> int:
    """Run one statement on the vault file, with ``older`` attached as ``old``; rows changed."""
    con = sqlite3.connect(path)
    try:
        if older is not None:
            con.execute("ATTACH DATABASE ? AS old", (str(older),))
        changed = con.execute(statement, params).rowcount
        con.commit()
        return changed
    finally:
        con.close()


def refused(done: Any, *names: str) -> None:
    """Exit 4, the names (kind and id) in the message, nothing on stdout, no secret anywhere."""
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.startswith("Error: ")
    first = done.stderr.splitlines()[0]
    for name in names:
        assert name in first, first
    for secret in (SECRET_1, SECRET_2, "beta-secret"):
        assert secret not in done.stderr
    assert "Traceback" not in done.stderr


def audit_count(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT count(*) FROM audit").fetchone()[0])
    finally:
        con.close()


# --- a record rolled back ---------------------------------------------------------------------------


def _roll_back_from_history(path: Path, rid: str, version: int) -> None:
    changed = sql(
        path,
        "UPDATE records SET version = ?, envelope = (SELECT envelope FROM record_versions "
        "WHERE record_id = ? AND version = ?) WHERE id = ?",
        (version, rid, version, rid),
    )
    assert changed == 1


def test_a_rotated_credential_rolled_back_to_its_old_secret_is_not_revealed(
    world: World, vault_path: Path
) -> None:
    _roll_back_from_history(vault_path, world.cred, 1)
    refused(run(["cred", "show", "acme", world.cred, "--reveal"], vault=vault_path), "cred", world.cred)


def test_a_rolled_back_credential_is_not_exported(world: World, vault_path: Path, tmp_path: Path) -> None:
    _roll_back_from_history(vault_path, world.cred, 1)
    out = tmp_path / "bundle.tar.age"
    done = run(
        ["export", "acme", "--recipient", world.recipient, "--force", "--out", str(out)], vault=vault_path
    )
    refused(done, "cred", world.cred)
    assert not out.exists()


def test_the_rotate_flag_of_a_grant_cannot_be_removed(world: World, vault_path: Path) -> None:
    # The grant flagged the credential (version 3); version 2, without the flag, is in the history.
    _roll_back_from_history(vault_path, world.cred, 2)
    refused(run(["cred", "list", "acme", "--needs-rotation"], vault=vault_path), "cred", world.cred)


def test_a_de_authorised_contact_made_authorised_again_is_not_used_by_the_policy(
    world: World, vault_path: Path
) -> None:
    _roll_back_from_history(vault_path, world.jane, 1)
    entries = audit_count(vault_path)
    done = run(
        ["request", "log", "acme", "--requester", "Jane Doe", "--channel", "phone",
         "--verified-by", "called back", "--item", world.cred, "--decision", "granted"],
        vault=vault_path,
    )  # fmt: skip
    refused(done, "contact", world.jane)
    assert audit_count(vault_path) == entries  # nothing was logged, nothing disclosed


def test_a_rolled_back_record_put_back_with_an_older_copy_of_its_row(world: World, vault_path: Path) -> None:
    # The whole row (lookup, timestamps, version, envelope) as the older copy of the file had it.
    sql(vault_path, "DELETE FROM records WHERE id = ?", (world.cred,))
    sql(
        vault_path,
        "INSERT INTO records SELECT * FROM old.records WHERE id = ?",
        (world.cred,),
        older=world.older,
    )
    refused(run(["cred", "show", "acme", "Firewall admin", "--reveal"], vault=vault_path), "cred", world.cred)


# --- a record removed, put back or copied in ----------------------------------------------------------


def test_deleted_requests_are_not_reported_as_none(world: World, vault_path: Path) -> None:
    assert sql(vault_path, "DELETE FROM records WHERE kind = 'request'") == 1
    done = run(["request", "report", "acme"], vault=vault_path)
    # The report is built from the log and the records together and says where they disagree
    # (tests/test_request_report.py), then exit 4; or, when a record it labels items from shares the
    # removed request's id group, that record's check refuses first, naming the removed request.
    assert done.returncode == 4, done.stderr
    assert "Requests 0 (none)" not in done.stdout
    assert "DISAGREE" in done.stdout or f"request {world.request} was removed" in done.stderr
    assert world.request in done.stdout + done.stderr
    assert SECRET_1 not in done.stdout + done.stderr and SECRET_2 not in done.stdout + done.stderr


def test_a_deleted_record_is_reported_when_it_is_asked_for(world: World, vault_path: Path) -> None:
    sql(vault_path, "DELETE FROM records WHERE id = ?", (world.doc,))
    refused(run(["doc", "show", "acme", "Network overview"], vault=vault_path), "doc", world.doc)


def test_a_deleted_record_put_back(world: World, vault_path: Path) -> None:
    assert run(["doc", "rm", "acme", world.doc, "--yes"], vault=vault_path).returncode == 0
    sql(
        vault_path,
        "INSERT INTO records SELECT * FROM old.records WHERE id = ?",
        (world.doc,),
        older=world.older,
    )
    refused(run(["doc", "show", "acme", world.doc], vault=vault_path), "doc", world.doc)
    refused(run(["doc", "list", "acme"], vault=vault_path), "doc", world.doc)


def test_a_record_moved_in_from_another_client(world: World, vault_path: Path) -> None:
    sql(vault_path, "UPDATE records SET client_id = ? WHERE id = ?", (world.acme, world.beta_cred))
    refused(run(["cred", "list", "acme"], vault=vault_path), "cred", world.beta_cred)


def test_a_record_copied_in_from_another_vault(world: World, vault_path: Path) -> None:
    con = sqlite3.connect(world.other)
    row = con.execute(
        "SELECT id, lookup, wrapped_key, version, created_at, updated_at, envelope FROM clients"
    ).fetchone()
    con.close()
    # Another vault's client (with its records' key) added to this vault under a new id.
    sql(
        vault_path,
        "INSERT INTO clients (id, lookup, wrapped_key, version, created_at, updated_at, envelope) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("00000000-0000-4000-8000-000000000001", *row[1:]),
    )
    refused(run(["client", "list"], vault=vault_path), "client", "00000000-0000-4000-8000-000000000001")


# --- client rows, successor, key slots, signing key ------------------------------------------------


def test_a_client_row_replaced_by_an_older_copy_loses_no_successor_unnoticed(
    world: World, vault_path: Path
) -> None:
    sql(vault_path, "DELETE FROM clients WHERE id = ?", (world.acme,))
    sql(
        vault_path,
        "INSERT INTO clients SELECT * FROM old.clients WHERE id = ?",
        (world.acme,),
        older=world.older,
    )
    refused(run(["successor", "show", "acme"], vault=vault_path), "client", world.acme)
    refused(
        run(["letter", "acme", "--out", str(vault_path.parent / "letter")], vault=vault_path),
        "client",
        world.acme,
    )


def test_key_slots_replaced_by_an_older_copy(world: World, vault_path: Path) -> None:
    new_pass = "a new and different passphrase"
    done = run(["passwd"], vault=vault_path, env={"HANDOVER_NEW_PASSPHRASE": new_pass})
    assert done.returncode == 0, done.stderr
    # The old passphrase slot (whose passphrase leaked) put back beside the new one.
    sql(
        vault_path,
        "INSERT INTO key_slots SELECT * FROM old.key_slots WHERE kind = 'passphrase'",
        older=world.older,
    )
    refused(run(["cred", "show", "acme", world.cred, "--reveal"], vault=vault_path), "key slots")
    refused(
        run(["cred", "show", "acme", world.cred, "--reveal"], vault=vault_path, passphrase=new_pass),
        "key slots",
    )


def test_a_swapped_signing_public_key_is_never_announced(world: World, vault_path: Path) -> None:
    sql(
        vault_path,
        "UPDATE meta SET value = (SELECT value FROM old.meta WHERE key = 'signing_public') "
        "WHERE key = 'signing_public'",
        older=world.other,
    )
    for argv in (["audit", "checkpoint"], ["letter", "acme", "--out", str(vault_path.parent / "letter")]):
        refused(run(argv, vault=vault_path), "signing")
    refused(run(["verify"], vault=vault_path), "signing")


def test_the_signing_key_pair_is_checked_before_signing_even_with_its_commitment(
    world: World, vault_path: Path
) -> None:
    """A vault's own commitment cannot vouch for a public key that is not its private key's."""
    from handover_vault import open_vault
    from handover_vault.errors import IntegrityError

    other_pub = (
        sqlite3.connect(world.other)
        .execute("SELECT value FROM meta WHERE key = 'signing_public'")
        .fetchone()[0]
    )
    with open_vault(vault_path, passphrase=PASSPHRASE) as v:
        v._meta["signing_public"] = other_pub  # as if the commitment had been rebuilt around it
        with pytest.raises(IntegrityError, match="signing public key does not match its private key"):
            v.sign(b"x")


# --- audit entries removed with an older head ---------------------------------------------------------


def test_audit_tail_cut_with_an_older_head_on_another_machine(
    world: World, vault_path: Path, tmp_path: Path
) -> None:
    # The older copy's log and head record, while the records stay as they are now.
    sql(vault_path, "DELETE FROM audit WHERE seq > (SELECT max(seq) FROM old.audit)", older=world.older)
    sql(
        vault_path,
        "UPDATE meta SET value = (SELECT value FROM old.meta WHERE key = 'audit_head') WHERE key = 'audit_head'",
        older=world.older,
    )
    fresh = {"XDG_STATE_HOME": str(tmp_path / "another-machine")}
    refused(run(["request", "report", "acme"], vault=vault_path, env=fresh), "client")
    refused(run(["verify"], vault=vault_path, env=fresh))


# --- the whole file ----------------------------------------------------------------------------------


ROLLED_BACK = (
    "Error: the vault is older than the last state seen on this machine (entry {n} of {m}): it was "
    "rolled back or restored from a backup\nhint: handover verify --accept-rollback\n"
)


def _entries(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT max(seq) FROM audit").fetchone()[0])
    finally:
        con.close()


def test_a_whole_file_restored_from_an_older_copy(world: World, vault_path: Path, tmp_path: Path) -> None:
    before = tmp_path / "before.db"
    assert run(["backup", str(before)], vault=vault_path).returncode == 0
    assert run(["cred", "show", "acme", world.cred, "--reveal"], vault=vault_path).returncode == 0
    m = _entries(vault_path)
    shutil.copy(before, vault_path)
    n = _entries(vault_path)
    for argv in (["cred", "show", "acme", world.cred, "--reveal"], ["audit", "verify"], ["verify"]):
        done = run(argv, vault=vault_path)
        assert (done.returncode, done.stdout, done.stderr) == (4, "", ROLLED_BACK.format(n=n, m=m))
    done = run(["verify", "--accept-rollback"], vault=vault_path)
    assert done.returncode == 1 and "add --yes" in done.stderr  # asks first; no terminal here
    done = run(["verify", "--accept-rollback", "--yes"], vault=vault_path)
    assert done.returncode == 0, done.stderr
    assert f"entries {n + 1} to {m}" in done.stdout
    assert "cred.reveal" in done.stdout
    assert run(["cred", "show", "acme", world.cred, "--reveal"], vault=vault_path).returncode == 0
    listed = run(["audit", "list", "--json"], vault=vault_path)
    assert '"vault.rollback-accepted"' in listed.stdout


def test_a_backup_opened_at_its_own_path_is_a_vault_of_its_own(
    world: World, vault_path: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.db"
    assert run(["backup", str(copy)], vault=vault_path).returncode == 0
    assert run(["doc", "add", "acme", "Later page"], vault=vault_path, input="# later\n").returncode == 0
    done = run(["doc", "list", "acme"], vault=copy)  # same vault id, older, another path: fine
    assert done.returncode == 0, done.stderr
    assert run(["doc", "add", "acme", "Page in the copy"], vault=copy, input="# copy\n").returncode == 0
    assert run(["verify"], vault=vault_path).returncode == 0  # neither trips the other
    assert run(["verify"], vault=copy).returncode == 0


def test_a_vault_never_seen_here_opens_normally(world: World, vault_path: Path) -> None:
    done = run(["verify"], vault=vault_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("vault intact: 2 clients, ")


def test_the_head_file_is_private_and_moves_with_xdg_state_home(
    world: World, vault_path: Path, tmp_path: Path
) -> None:
    assert run(["verify"], vault=vault_path).returncode == 0
    assert run(["cred", "show", "acme", world.cred, "--reveal"], vault=vault_path).returncode == 0
    files = list((tmp_path / "state" / "handover-vault" / "heads").glob("*.json"))
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o777 == 0o600
    assert SECRET_2 not in files[0].read_text()


def test_verify_names_the_first_problem(world: World, vault_path: Path) -> None:
    flipped = sql(
        vault_path,
        "UPDATE record_versions SET envelope = CAST(substr(envelope, 1, 20) || x'00' || substr(envelope, 22) AS BLOB) "
        "WHERE record_id = ? AND version = 1",
        (world.cred,),
    )
    assert flipped == 1
    done = run(["verify"], vault=vault_path)
    refused(done, "cred", world.cred, "version 1")


# --- vaults of every earlier schema -------------------------------------------------------------------


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("vault-*.db")), ids=lambda p: p.name)
def test_golden_vaults_verify_after_the_upgrade(golden: Path, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(golden, path)
    done = run(["verify"], vault=path, passphrase="golden vault passphrase")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("vault intact: 1 clients, 6 records, 2 earlier versions, ")
    listed = run(["audit", "list", "--json"], vault=path, passphrase="golden vault passphrase")
    assert listed.stdout.count('"vault.commitment"') == 1  # computed once, at the first open
    # ... and a rollback of the upgraded credential is then caught like in any other vault.
    con = sqlite3.connect(path)
    rid = con.execute("SELECT id FROM records WHERE kind = 'cred'").fetchone()[0]
    con.close()
    _roll_back_from_history(path, rid, 1)
    refused(
        run(["cred", "show", "acme", rid, "--reveal"], vault=path, passphrase="golden vault passphrase"),
        "cred",
        rid,
    )


def test_a_rollback_with_its_commitments_and_an_older_entry_commitment_is_caught(
    world: World, vault_path: Path
) -> None:
    """Records, sums and the newest entry's commitment all as the older copy had them: the entry's
    MAC covers its commitment, so the log would have to be rolled back too."""
    rid = world.jane
    sql(vault_path, "DELETE FROM records WHERE id = ?", (rid,))
    sql(vault_path, "INSERT INTO records SELECT * FROM old.records WHERE id = ?", (rid,), older=world.older)
    for table in ("state_buckets", "state_clients"):
        sql(vault_path, f"DELETE FROM {table}")
        sql(vault_path, f"INSERT INTO {table} SELECT * FROM old.{table}", older=world.older)
    sql(
        vault_path,
        "UPDATE meta SET value = (SELECT value FROM old.meta WHERE key = 'state') WHERE key = 'state'",
        older=world.older,
    )
    sql(
        vault_path,
        "UPDATE audit SET commitment = (SELECT commitment FROM old.audit ORDER BY seq DESC LIMIT 1) "
        "WHERE seq = (SELECT max(seq) FROM audit)",
        older=world.older,
    )
    done = run(["contact", "list", "acme"], vault=vault_path)
    refused(done, "audit")
    assert "MAC does not match" in done.stderr


def test_a_write_never_builds_on_a_rolled_back_state(world: World, vault_path: Path) -> None:
    """A client rolled back whole, with its commitments and the vault's sums, as the older copy had
    them: a write that reads nothing first (``unlock`` appends its entry straight away) must refuse,
    or its entry would carry the rolled-back state's commitment and vouch for it from then on."""
    for table in ("records", "clients"):
        column = "client_id" if table == "records" else "id"
        sql(vault_path, f"DELETE FROM {table} WHERE {column} = ?", (world.acme,))
        sql(
            vault_path,
            f"INSERT INTO {table} SELECT * FROM old.{table} WHERE {column} = ?",
            (world.acme,),
            older=world.older,
        )
    for table in ("state_buckets", "state_clients"):
        sql(vault_path, f"DELETE FROM {table}")
        sql(vault_path, f"INSERT INTO {table} SELECT * FROM old.{table}", older=world.older)
    sql(
        vault_path,
        "UPDATE meta SET value = (SELECT value FROM old.meta WHERE key = 'state') WHERE key = 'state'",
        older=world.older,
    )
    entries = audit_count(vault_path)
    done = run(["unlock", "--for", "1m"], vault=vault_path, env={"HANDOVER_NO_AGENT": "1"})
    assert done.returncode == 4, done.stderr
    assert "state record does not match its newest audit entry" in done.stderr
    assert audit_count(vault_path) == entries
    refused(run(["verify"], vault=vault_path))


def test_after_a_rekey_the_commitment_holds_and_still_catches_a_rollback(
    world: World, vault_path: Path
) -> None:
    done = run(["rekey"], vault=vault_path)
    assert done.returncode == 0, done.stderr
    ok = run(["verify"], vault=vault_path)
    assert ok.returncode == 0, ok.stderr
    _roll_back_from_history(vault_path, world.cred, 1)  # history re-encrypted under the new key too
    refused(run(["cred", "show", "acme", world.cred, "--reveal"], vault=vault_path), "cred", world.cred)
