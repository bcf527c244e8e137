"""Attacks on the team key rotation at ``member remove`` and on the admin's key commitment.

What is attacked (vault/teamrotation.py, vault/team/keycheck.py, vault/teams.py ``unlock`` and
``remove_member``, vault/integrity/audit.py ``_refuse_a_rotated_team_key``, vault/team/chain.py
"signed after removal"), by:

- the PostgreSQL superuser, with bare SQL (and ``ALTER TABLE audit DISABLE TRIGGER USER``);
- a removed member who kept their member key, the old team key and a pg_dump, colluding with the
  server (what they compute with their own keys is done here with the library's crypto, as their
  own tooling would);
- concurrency: a grant or a second removal while a removal runs, and a removal aborted inside its
  transaction (a trigger that raises, a process killed while the transaction is open);
- plain use: revoke / remove / grant sequences, a team moved in from a rekeyed vault file, forget
  and backup after a rotation, ``request report``, ``audit list``/``audit verify``/``verify`` by
  every member afterwards.

A helper's review wrote these; seven of them were holes, each seen failing on the code of commit
1e7fe7e at the assertion that states the guarantee, and fixed after (the recovery recipient in the
state commitment; removals and holdings read from signed entries without a key; a removal always
followed by its rotation; the first admin not removable; grants made during a removal revoked;
details sealed to another key version not called tampered). The setup of each attack is checked
with ``_setup`` (a RuntimeError, so a broken attack never passes for a defence). The others were
defences that held; each says how it was seen to fail with the defence taken out. Real subprocesses of the installed command, one home per technician, as
tests/test_team.py; the forked ``setup`` runs only arrange the scene.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, handover_cmd
from tests.helpers_security import fork_run, one, sql
from tests.test_team import SECRET, Tech, _tech, team
from tests.test_team_adversarial import _id, _member_key, _vault_id
from tests.test_team_rotation import _slot, _team_key, trio

pytestmark = [pytest.mark.postgres, pytest.mark.interop]

__all__ = ["team", "trio"]  # the fixtures, imported for use here

TEAM_KEY = "*team key*"


def _setup(ok: bool, why: str) -> None:
    """A precondition of the attack itself (not the guarantee under test)."""
    if not ok:
        raise RuntimeError(f"the attack was not set up as intended: {why}")


def _public(url: str, name: str) -> Any:
    from handover_vault.team.memberkey import MemberPublic

    x, ed = sql(url, "SELECT x25519, ed25519 FROM members WHERE name = ?", (name,))[0]
    return MemberPublic(x, bytes(ed))


def _vault_details_open_under(url: str, key: bytes, after: int) -> list[int]:
    """The vault-scope audit entries after ``after`` whose detail opens under team key ``key``."""
    from handover_vault.integrity.audit import detail_aad
    from handover_vault.keys.crypto import DecryptFailed
    from handover_vault.keys.hierarchy import VaultKeys

    vid = _vault_id(url)
    sealer = VaultKeys(vid, key).audit_detail
    opened = []
    for seq, detail in sql(url, "SELECT seq, detail FROM audit WHERE scope = 'vault' AND seq > ?", (after,)):
        try:
            sealer.open(bytes(detail), detail_aad(vid, seq))
            opened.append(seq)
        except DecryptFailed:
            pass
    return opened


def _refused_under(t: Tech, url: str, key: bytes, after: int, which: str) -> None:
    """``t``'s unlock (it writes a vault-scope entry, sealed under the team key they hold) is
    refused, and nothing after entry ``after`` opens under ``key``."""
    opened = t.run("unlock")
    leaked = _vault_details_open_under(url, key, after)
    assert opened.returncode == 4 and not leaked, (
        f"{t.name} unlocked under {which} (exit {opened.returncode}); entries {leaked} open under it"
    )


def _records_open_under(url: str, client_id: str, key: bytes) -> list[str]:
    """The ids of the client's live records whose envelope opens under client key ``key``."""
    from handover_vault.keys.crypto import DecryptFailed
    from handover_vault.keys.hierarchy import ClientKeys, record_aad

    vid, sealer = _vault_id(url), ClientKeys(key).sealer
    opened = []
    rows = sql(url, "SELECT id, kind, version, envelope FROM records WHERE client_id = ?", (client_id,))
    for rid, kind, version, envelope in rows:
        try:
            sealer.open(bytes(envelope), record_aad(vid, client_id, kind, rid, version))
            opened.append(rid)
        except DecryptFailed:
            pass
    return opened


def _grant_key(url: str, t: Tech, client_id: str, version: int, blob: bytes) -> bytes:
    from handover_vault.team.grants import Binding, unwrap

    key: bytes = unwrap(_member_key(t), Binding(_vault_id(url), client_id, version, _id(url, t.name)), blob)
    return key


def _in_process_as(t: Tech, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process becomes ``t``'s machine (their home, pin, recorded head, member key)."""
    for name in ("HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "HANDOVER_RUNTIME_DIR", "HANDOVER_KDF"):
        monkeypatch.setenv(name, t.env[name])


def _admin(url: str, name: str, tmp_path: Path, by: Tech, *grants: str) -> Tech:
    """A new admin ``name``, endorsed by ``by``, holding ``grants``."""
    new = _tech(name, url, tmp_path)
    new.setup("team", "join", "--admin", by.fingerprint, "--name", new.name)
    by.setup("member", "add", new.name, "--fingerprint", new.fingerprint, "--admin")
    for slug in grants:
        by.setup("grant", slug, new.name)
    return new


# --- (b) a removed member, with the server ------------------------------------------------------------


def test_a_removed_admin_cannot_vouch_for_a_team_key_of_the_servers(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """bob was an admin; alice removes him (the key rotates). dave joins afterwards, so his machine
    has pinned no removal. The server, with bob, wraps a team key K of their own to dave, has bob
    sign its key commitment with his (still endorsed) admin key, clears bob's ``removed_at``, drops
    the key history and re-seals the index key under K, re-tags the head and appends one entry that
    bob signs, carrying the state commitment under K. Were the removals read by opening the
    member.remove details with K (as they first were), dave would find nobody removed and work
    under a key the server and bob hold. They are read from the entries' signed ``record_id``,
    with no key: bob vouches for nothing and dave is refused."""
    from sqlalchemy import select

    from handover_vault.core import Vault
    from handover_vault.integrity.audit import Head
    from handover_vault.integrity.commitment import recompute_commitments
    from handover_vault.keys.hierarchy import VaultKeys
    from handover_vault.store.models import AuditEntry, KeySlot, Member, Meta
    from handover_vault.store.postgres import PostgresStore
    from handover_vault.team import keycheck
    from handover_vault.team.grants import Binding, wrap_for
    from handover_vault.teamkeys import INDEX_KEY, TeamKeys

    url, alice, bob = team
    alice.setup("member", "add", "bob", "--fingerprint", bob.fingerprint, "--admin")  # bob, an admin
    vid, bob_id = _vault_id(url), _id(url, "bob")
    first_key = _team_key(url, bob, _slot(url, bob))  # bob keeps the team key he held
    alice.setup("member", "remove", "bob", "--yes")
    dave = _tech("dave", url, tmp_path)
    dave.setup("team", "join", "--admin", alice.fingerprint, "--name", "dave")
    alice.setup("member", "add", "dave", "--fingerprint", dave.fingerprint)
    alice.setup("grant", "acme", "dave")
    dave_id = _id(url, "dave")

    # The server and bob: K, vouched for by bob, and a state that holds under K.
    forged_key = os.urandom(32)
    bob_key = _member_key(bob)
    recovery = bytes(one(url, "SELECT value FROM meta WHERE key = 'team_recovery'")).decode()
    admins = {_id(url, "alice"): _public(url, "alice"), bob_id: bob_key.public}
    k = TeamKeys(vid, forged_key, bob_key, bob_id, admins, recovery)
    k.client_index_key = VaultKeys(vid, first_key).client_index_key  # never rotated before: bob knows it
    forged = Vault(PostgresStore(url), k)
    forged.record_head = False
    try:
        with forged.write("the server's and bob's edit") as s:
            slot = s.get(KeySlot, dave_id)
            slot.wrapped = wrap_for(_public(url, "dave"), Binding(vid, TEAM_KEY, 0, dave_id), forged_key)
            s.get(Meta, keycheck.META_KEY).value = keycheck.sign(bob_key, bob_id, vid, forged_key)
            s.get(Member, bob_id).removed_at = None
            s.delete(s.get(Meta, "key_history"))
            s.get(Meta, INDEX_KEY).value = k.sealed_index_key()
            last = s.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
            forged.audit.adopt_head(s, Head(last.seq, bytes(last.mac)))
            recompute_commitments(forged, s)
            forged_seq = forged.audit.append(s, "vault.unlock", detail={"seconds": 60})
    finally:
        forged.close()
    _setup(one(url, "SELECT member_id FROM audit WHERE seq = ?", (forged_seq,)) == bob_id, "bob's entry")

    listed = dave.run("--json", "member", "list")
    _refused_under(
        dave, url, forged_key, forged_seq, f"the attackers' key; his member list: {listed.stdout!r}"
    )


def test_a_removal_whose_rotation_the_server_cuts_off_is_not_used_under_the_old_key(
    trio: tuple[str, Tech, Tech, Tech],
) -> None:
    """carol last opened the team before bob's removal (away on holiday). The server keeps what
    it had before the removal (a pg_dump: carol's and alice's slots of the old key, the old signing
    key wrap, alice's old key commitment) and, with bob, who holds the old key, serves carol the
    log cut right after alice's ``member.remove`` (the rotation's bridge and what follows dropped),
    the old rows put back and the commitments and head record made again under the old key. Every
    entry carol walks is genuine and signed, bob is removed in it, and alice's commitment vouches
    for the old key; but a member.remove is always followed by its own rotation's team.rekey, so
    the cut log is refused (``check_removals_rotated``) before carol uses the key bob holds."""
    from handover_vault.core import Vault
    from handover_vault.integrity.audit import Head
    from handover_vault.integrity.commitment import _TRACKER, recompute_commitments
    from handover_vault.store.models import KeySlot, Meta
    from handover_vault.store.postgres import PostgresStore
    from handover_vault.teamkeys import INDEX_KEY, TeamKeys

    url, alice, bob, carol = trio
    carol.setup("client", "list")  # carol's machine records the head it saw, then she is away
    vid, bob_id = _vault_id(url), _id(url, "bob")
    old_key = _team_key(url, bob, _slot(url, bob))
    columns = [c.name for c in KeySlot.__table__.columns]
    kept_slots = sql(url, f"SELECT {', '.join(columns)} FROM key_slots WHERE id <> ?", (bob_id,))
    kept_meta = {
        k: bytes(one(url, "SELECT value FROM meta WHERE key = ?", (k,)))
        for k in ("signing_private", "team_key_commitment")
    }
    alice.setup("member", "remove", "bob", "--yes")
    removal, mac, commitment = sql(
        url, "SELECT seq, mac, commitment FROM audit WHERE action = 'member.remove'"
    )[0]

    sql(url, "ALTER TABLE audit DISABLE TRIGGER USER")
    sql(url, "DELETE FROM audit WHERE seq > ?", (removal,))
    sql(url, "ALTER TABLE audit ENABLE TRIGGER USER")
    recovery = bytes(one(url, "SELECT value FROM meta WHERE key = 'team_recovery'")).decode()
    k = TeamKeys(vid, old_key, _member_key(bob), bob_id, {_id(url, "alice"): _public(url, "alice")}, recovery)
    cut = Vault(PostgresStore(url), k)
    cut.record_head = False
    try:
        with cut.write("the server's and bob's edit") as s:
            for row in s.query(KeySlot).all():
                s.delete(row)
            s.flush()
            for values in kept_slots:
                s.add(KeySlot(**dict(zip(columns, values, strict=True))))
            for key, value in kept_meta.items():
                s.get(Meta, key).value = value
            for key in ("key_history", INDEX_KEY):
                s.delete(s.get(Meta, key))
            root = recompute_commitments(cut, s)
            s.info[_TRACKER].changed = False  # nothing for the library to append: the edit is the server's
            cut.audit.adopt_head(s, Head(removal, bytes(mac)))
    finally:
        cut.close()
    _setup(root == bytes(commitment), "the rows put back give the commitment member.remove carries")

    _refused_under(carol, url, old_key, removal, "the team key the removal was to retire, which bob kept")


def test_a_recovery_recipient_the_server_swaps_gets_no_key_of_the_rotation(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """The server replaces the recovery key's recipient in ``meta`` with one of its own. alice
    removes bob: the rotation wraps the new team key to the recovery "recipient", and the revoke
    of acme wraps acme's new key to it. The server must not be able to open either."""
    from handover_vault.errors import IntegrityError
    from handover_vault.team.grants import Binding, new_recovery_identity, unwrap, unwrap_recovery
    from handover_vault.team.memberkey import MemberKey, MemberPublic

    url, alice, _bob = team
    alice.setup("grant", "acme", "bob")
    identity, recipient = new_recovery_identity()  # the server's
    sql(url, "UPDATE meta SET value = ? WHERE key = 'team_recovery'", (recipient.encode(),))
    removed = alice.run("member", "remove", "bob", "--yes")

    vid, cid = _vault_id(url), one(url, "SELECT id FROM clients")
    leaked = []
    for (wrapped,) in sql(url, "SELECT wrapped FROM key_slots WHERE kind = 'team-recovery'"):
        try:
            key = unwrap(
                MemberKey(MemberPublic("", b""), identity, b""),
                Binding(vid, TEAM_KEY, 0, "recovery"),
                bytes(wrapped),
            )
            leaked.append(
                f"the team key{' (alice’s)' if key == _team_key(url, alice, _slot(url, alice)) else ''}"
            )
        except IntegrityError:
            pass
    for version, wrapped in sql(
        url, "SELECT key_version, wrapped FROM recovery_wraps WHERE client_id = ?", (cid,)
    ):
        try:
            key = unwrap_recovery(identity, vid, cid, version, bytes(wrapped))
            if _records_open_under(url, cid, key):
                leaked.append(f"acme's key version {version}, which opens its records")
        except IntegrityError:
            pass
    assert not leaked, f"member remove (exit {removed.returncode}) wrapped to the server's key: {leaked}"
    assert SECRET not in removed.stdout + removed.stderr


def test_a_grant_the_server_hides_is_still_revoked_at_removal(team: tuple[str, Tech, Tech]) -> None:
    """bob holds acme (he unwrapped its key when he read it). Before alice removes him, the server
    deletes bob's grant rows. ``member remove`` still re-keys acme: what bob holds is read from
    the signed log too (``held_by_log``), so no record, nor a credential alice adds after the
    removal, opens under the key bob kept."""
    url, alice, bob = team
    alice.setup("grant", "acme", "bob")
    assert SECRET in bob.setup("cred", "show", "acme", "Firewall admin", "--reveal")
    cid = one(url, "SELECT id FROM clients")
    blob = bytes(one(url, "SELECT wrapped FROM grants WHERE member_id = ?", (_id(url, "bob"),)))
    kept = _grant_key(url, bob, cid, 1, blob)
    sql(url, "DELETE FROM grants WHERE member_id = ?", (_id(url, "bob"),))
    removed = alice.run("member", "remove", "bob", "--yes")
    alice.setup("cred", "add", "acme", "New VPN", "--username", "vpn", input="after-removal-0006\n")
    opened = _records_open_under(url, cid, kept)
    assert not opened, (
        f"member remove (exit {removed.returncode}: {removed.stdout.strip()!r}) left acme at key version "
        f"{one(url, 'SELECT key_version FROM clients')}: {len(opened)} of its records, the new one too, "
        "open under the key bob kept"
    )


# --- (c) concurrency and crashes ----------------------------------------------------------------------


def test_a_grant_made_while_the_removal_runs_is_revoked_too(
    team: tuple[str, Tech, Tech], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """carol (an admin) grants acme to bob while alice's ``member remove bob`` runs: after alice's
    command read what bob holds (nothing), before its removal transaction. That transaction sees
    the new grant, writes nothing and the removal revokes acme too before it tries again: bob, who
    could read his grant the moment it committed, keeps no current key."""
    from handover_vault.core import open_vault
    from handover_vault.teams import remove_member

    url, alice, bob = team
    carol = _admin(url, "carol", tmp_path, alice, "acme")
    cid, bob_id = one(url, "SELECT id FROM clients"), _id(url, "bob")
    seen: dict[str, bytes] = {}
    _in_process_as(alice, monkeypatch)
    v = open_vault(url, passphrase=alice.env["HANDOVER_PASSPHRASE"])
    write = v.write

    def meanwhile(doing: str, bulk: bool = False) -> Any:
        if doing == "removing a member" and not seen:
            granted = carol.run("grant", "acme", "bob")  # carol's own process, committed
            _setup(granted.returncode == 0, f"carol's grant: {granted.stderr}")
            seen["blob"] = bytes(one(url, "SELECT wrapped FROM grants WHERE member_id = ?", (bob_id,)))
        return write(doing, bulk)

    v.write = meanwhile  # type: ignore[method-assign,unused-ignore]
    try:
        done = remove_member(v, "bob")
        done.vault.close()
    finally:
        v.close()
    _setup("blob" in seen, "the grant ran inside the removal")
    kept = _grant_key(url, bob, cid, 1, seen["blob"])
    opened = _records_open_under(url, cid, kept)
    assert not opened and done.revoked, (
        f"acme is still at key version {one(url, 'SELECT key_version FROM clients')} after bob's removal "
        f"({len(done.revoked)} clients revoked); {len(opened)} of its records open under the key he read"
    )


def test_a_removal_aborted_inside_its_transaction_leaves_the_old_team_and_runs_again(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """The rotation is in the removal's transaction. A trigger raises when the bridge entry is
    written (its message carries a marker the server chose), then the command is killed while the
    transaction sleeps in the same place. Each time nothing of the removal is left: bob keeps his
    slot of the same team key, no member.remove, every member carries on, nothing of the server's
    message or of a key in the output. Then the removal runs again, once.

    Seen failing: with ``remove_member`` committing the member.remove before calling
    ``rotate_team_key`` in a second transaction, the entry stayed after the abort."""
    url, alice, bob = team
    alice.setup("grant", "acme", "bob")
    marker = "server-says-Zq81"
    key_before = _team_key(url, alice, _slot(url, alice))
    recovery = (tmp_path / "recovery.txt").read_text().strip()

    def unchanged(outputs: str) -> None:
        assert marker not in outputs and key_before.hex() not in outputs and recovery not in outputs
        assert one(url, "SELECT count(*) FROM audit WHERE action IN ('member.remove', 'team.rekey')") == 0
        assert one(url, "SELECT removed_at FROM members WHERE name = 'bob'") is None
        assert _team_key(url, bob, _slot(url, bob)) == key_before == _team_key(url, alice, _slot(url, alice))
        assert "Audit log intact" in alice.ok("audit", "verify")
        assert bob.run("client", "list").returncode == 0  # still a member (his clients revoked)

    sql(
        url,
        "CREATE FUNCTION hv_test_abort() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"RAISE EXCEPTION '{marker}'; END $$",
    )
    sql(
        url,
        "CREATE TRIGGER hv_test_abort BEFORE INSERT ON audit FOR EACH ROW "
        "WHEN (NEW.action = 'team.rekey') EXECUTE FUNCTION hv_test_abort()",
    )
    raised = alice.run("member", "remove", "bob", "--yes")
    assert raised.returncode != 0, raised.stdout
    assert one(url, "SELECT key_version FROM clients") == 2  # the revoke before it is its own transaction
    unchanged(raised.stdout + raised.stderr)

    sql(url, "DROP TRIGGER hv_test_abort ON audit")
    sql(
        url,
        "CREATE OR REPLACE FUNCTION hv_test_abort() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_sleep(120); RETURN NEW; END $$",
    )
    sql(
        url,
        "CREATE TRIGGER hv_test_abort BEFORE INSERT ON audit FOR EACH ROW "
        "WHEN (NEW.action = 'team.rekey') EXECUTE FUNCTION hv_test_abort()",
    )
    proc = subprocess.Popen(
        [*handover_cmd(), "member", "remove", "bob", "--yes"],
        env=alice.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    waiting = "SELECT pid FROM pg_stat_activity WHERE starts_with(query, 'INSERT INTO audit') AND datname = current_database()"
    deadline = time.monotonic() + 90  # a loaded CI machine: the revoke and the rotation come first
    while not sql(url, waiting) and time.monotonic() < deadline:
        time.sleep(0.1)
    _setup(bool(sql(url, waiting)), "the removal reached the bridge entry")
    proc.send_signal(signal.SIGKILL)  # the technician's machine dies mid-transaction
    out, err = proc.communicate(timeout=30)
    sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE starts_with(query, 'INSERT INTO audit') "
        "AND datname = current_database()",
    )  # its connection's backend, gone with the socket in the end
    sql(url, "DROP TRIGGER hv_test_abort ON audit")
    sql(url, "DROP FUNCTION hv_test_abort()")
    unchanged(out + err)

    again = alice.run("member", "remove", "bob", "--yes")
    assert again.returncode == 0, again.stderr
    assert "the team key rotated (epoch 1), wrapped to: alice and the recovery key" in again.stdout
    assert one(url, "SELECT count(*) FROM audit WHERE action = 'team.rekey'") == 1
    assert _team_key(url, alice, _slot(url, alice)) != key_before
    assert bob.run("client", "list").returncode == 3
    assert "Audit log intact" in alice.ok("audit", "verify")


def test_two_admins_removing_at_once_one_waits_and_is_refused_as_a_rotation(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """alice removes bob while carol (an admin) removes dave. A trigger holds each removal's
    transaction for four seconds at its member.remove entry, so the second opens the team before
    the first commits and waits on the audit head. It then holds the old team key: it is refused
    as a rotation (exit 3, "run the command again"), nothing written, not reported as tampering;
    run again, it rotates once more. Every member who stays verifies the log; bob and dave are out.

    Seen failing: with ``AuditLog._refuse_a_rotated_team_key`` not called, the loser reported
    "the audit log's head record does not verify (tampered)", exit 4."""
    url, alice, bob = team
    carol = _admin(url, "carol", tmp_path, alice)
    dave = _tech("dave", url, tmp_path)
    dave.setup("team", "join", "--admin", alice.fingerprint, "--name", "dave")
    alice.setup("member", "add", "dave", "--fingerprint", dave.fingerprint)
    sql(
        url,
        "CREATE FUNCTION hv_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_sleep(4); RETURN NEW; END $$",
    )
    sql(
        url,
        "CREATE TRIGGER hv_test_hold BEFORE INSERT ON audit FOR EACH ROW "
        "WHEN (NEW.action = 'member.remove') EXECUTE FUNCTION hv_test_hold()",
    )
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def remove(admin: Tech, name: str) -> None:
        results[name] = admin.run("member", "remove", name, "--yes")

    threads = [threading.Thread(target=remove, args=a) for a in ((alice, "bob"), (carol, "dave"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    sql(url, "DROP TRIGGER hv_test_hold ON audit")
    codes = sorted(r.returncode for r in results.values())
    assert codes == [0, 3], {n: (r.returncode, r.stderr) for n, r in results.items()}
    (loser,) = [n for n, r in results.items() if r.returncode == 3]
    refused = results[loser]
    assert "rotated while this command ran" in refused.stderr and "tampered" not in refused.stderr
    assert one(url, "SELECT count(*) FROM audit WHERE action = 'team.rekey'") == 1
    assert one(url, "SELECT count(*) FROM audit WHERE action = 'member.remove'") == 1
    admin = alice if loser == "bob" else carol
    again = admin.run("member", "remove", loser, "--yes")
    assert again.returncode == 0, again.stderr
    assert "(epoch 2)" in again.stdout
    for t in (alice, carol):
        assert "Audit log intact" in t.ok("audit", "verify")
    for t in (bob, dave):
        assert t.run("client", "list").returncode == 3


# --- (a)/(b) defences that hold ----------------------------------------------------------------------


def test_an_entry_the_removed_member_signs_after_removal_stops_the_next_open(
    team: tuple[str, Tech, Tech],
) -> None:
    """The removal is known from the log (the member.remove entry names bob in its signed
    ``record_id``), and bob's key signs nothing after it: the server appends
    an entry bob signed, chained to the head; alice's next open names it (exit 4).

    Seen failing: with the ``signed after removal`` rule taken out of verify_chain, the open was
    still refused, but as "the audit log ends at entry N but its head record names entry N-1"."""
    from handover_vault.store.models import AuditEntry
    from handover_vault.team.chain import Entry, entry_hash, sign_entry
    from handover_vault.teams import _chain_entry

    url, alice, bob = team
    alice.setup("member", "remove", "bob", "--yes")
    alice.setup("client", "list")  # alice's machine has seen the head
    vid, bob_id = _vault_id(url), _id(url, "bob")
    columns = [c.name for c in AuditEntry.__table__.columns]
    head = sql(url, f"SELECT {', '.join(columns)} FROM audit ORDER BY seq DESC LIMIT 1")[0]
    last = _chain_entry(AuditEntry(**dict(zip(columns, head, strict=True))))
    forged = sign_entry(
        _member_key(bob),
        vid,
        Entry(
            seq=last.seq + 1,
            at=last.at,
            member_id=bob_id,
            action="vault.unlock",
            client_id=None,
            record_id=None,
            scope="vault",
            detail=b"\x01" + os.urandom(40),
            commitment=last.commitment,
            prev_hash=entry_hash(vid, last),
        ),
    )
    sql(
        url,
        "INSERT INTO audit (seq, at, action, client_id, record_id, scope, detail, mac, commitment, "
        "member_id, prev_hash, signature) VALUES (?, ?, ?, NULL, NULL, 'vault', ?, ?, ?, ?, ?, ?)",
        (forged.seq, forged.at, forged.action, forged.detail, os.urandom(32), forged.commitment,
         bob_id, forged.prev_hash, forged.signature),
    )  # fmt: skip
    met = alice.run("client", "list")
    assert met.returncode == 4, (met.returncode, met.stderr)
    assert f"audit entry {forged.seq} (member bob) does not verify: signed after removal" in met.stderr


def test_the_old_team_key_opens_nothing_the_rotation_wrote(trio: tuple[str, Tech, Tech, Tech]) -> None:
    """bob keeps the team key he held and takes a pg_dump after his removal: every meta value the
    team key seals (the signing key, the profile, the key history, the index key, the head record,
    the key commitment) and every vault-wide detail written after the bridge entry is new to him.

    Seen failing: with ``reseal_profile`` left out of the rotation, the profile opened under bob's
    key (and no longer under the new one)."""
    from handover_vault.errors import IntegrityError
    from handover_vault.integrity.audit import head_verifies
    from handover_vault.keys.crypto import DecryptFailed
    from handover_vault.keys.hierarchy import VaultKeys
    from handover_vault.rekey import history_aad
    from handover_vault.team import keycheck
    from handover_vault.teamkeys import index_key_aad

    url, alice, bob, _carol = trio
    alice.setup("profile", "set", "--name", "Alice Admin", "--phone", "+44 20 7946 0999")
    old = VaultKeys(_vault_id(url), _team_key(url, bob, _slot(url, bob)))
    alice.setup("member", "remove", "bob", "--yes")
    alice.setup("unlock")  # a vault-wide entry under the new key
    bridge = one(url, "SELECT seq FROM audit WHERE action = 'team.rekey'")
    meta = {k: bytes(v) for k, v in sql(url, "SELECT key, value FROM meta")}
    opens = []
    for name, aad in (
        ("profile", old.profile_aad()),
        ("key_history", history_aad(old.vault_id)),
        ("team_index_key", index_key_aad(old.vault_id)),
    ):
        try:
            old.vmk_sealer.open(meta[name], aad)
            opens.append(name)
        except DecryptFailed:
            pass
    with pytest.raises(IntegrityError):
        old.unwrap_signing_key(meta["signing_private"])
    if head_verifies(old.audit_mac_key, old.vault_id, meta["audit_head"]):
        opens.append("audit_head")
    with pytest.raises(IntegrityError):
        keycheck.verify(
            meta[keycheck.META_KEY], old.vault_id, old.vmk, {_id(url, "alice"): _public(url, "alice")}
        )
    assert opens == []
    assert _vault_details_open_under(url, old.vmk, bridge) == []
    assert (
        len(sql(url, "SELECT seq FROM audit WHERE scope = 'vault' AND seq > ?", (bridge,))) >= 1
    )  # not vacuous
    assert "Alice Admin" in alice.ok("profile", "show")  # and the new key opens it


# --- plain use after a rotation ----------------------------------------------------------------------


def test_a_rekeyed_vault_moved_in_verifies_and_reads_after_two_removals_and_a_forget(
    pg_url: str, tmp_path: Path
) -> None:
    """A vault file with a request logged and a ``rekey`` behind it moves in; bob and carol join and
    hold acme; bob, then carol, are removed (two revokes, two rotations, key history of three
    epochs over the file's own). Every member left and one who joins afterwards lists the log
    without a detail reading as tampered, verifies it and the vault; the request report agrees;
    ``backup`` still refuses the team; acme is forgotten and everything verifies again.

    Seen failing: with ``AuditLog._key_version_at`` giving the client's current key version (what
    it did before this change), every older client-scope detail of acme read as tampered."""
    url = pg_url
    old = tmp_path / "solo.vault"
    for args, stdin in (
        (["init"], ""),
        (["client", "add", "acme", "--name", "ACME Ltd", "--contract-start", "2024-01-01", "--notice-days", "1"], ""),
        (["contact", "add", "acme", "--name", "Jane Doe", "--email", "jane@acme.example", "--authorized"], ""),
        (["cred", "add", "acme", "Firewall admin", "--username", "admin"], SECRET + "\n"),
        (["request", "log", "acme", "--requester", "Jane Doe", "--channel", "phone", "--verified-by", "callback",
          "--item", "Firewall admin", "--decision", "granted"], ""),
        (["rekey"], ""),
        (["doc", "add", "acme", "LAN"], "fw1 guards 10.0.0.0/24\n"),
    ):  # fmt: skip
        done = fork_run(args, vault=old, input=stdin)
        _setup(done.returncode == 0, f"{args}: {done.stderr}")
    alice, bob, carol = (_tech(n, url, tmp_path) for n in ("alice", "bob", "carol"))
    env = {**alice.env, "HANDOVER_FROM_PASSPHRASE": PASSPHRASE}
    moved = fork_run(["team", "init", "--name", "alice", "--from", str(old)], env=env, passphrase=None)
    _setup(moved.returncode == 0, moved.stderr)
    for t in (bob, carol):
        t.setup("team", "join", "--admin", alice.fingerprint, "--name", t.name)
        alice.setup("member", "add", t.name, "--fingerprint", t.fingerprint)
        alice.setup("grant", "acme", t.name)
    assert SECRET in bob.setup("cred", "show", "acme", "Firewall admin", "--reveal")
    alice.setup("member", "remove", "bob", "--yes")
    carol.setup("doc", "add", "acme", "WAN", input="isp uplink\n")
    alice.setup("member", "remove", "carol", "--yes")
    dave = _tech("dave", url, tmp_path)
    dave.setup("team", "join", "--admin", alice.fingerprint, "--name", "dave")
    alice.setup("member", "add", "dave", "--fingerprint", dave.fingerprint)
    assert one(url, "SELECT count(*) FROM audit WHERE action IN ('vault.rekey', 'team.rekey')") == 3

    for t in (alice, dave):
        listed = json.loads(t.ok("--json", "audit", "list"))
        bad = [(e["seq"], e["action"]) for e in listed if "error" in (e.get("detail") or {})]
        assert bad == [], (t.name, bad)
        assert "Audit log intact" in t.ok("audit", "verify")
        assert "vault intact" in t.ok("verify")
    readable = {
        e["action"] for e in json.loads(alice.ok("--json", "audit", "list")) if e["detail"] is not None
    }
    assert {"request.log", "vault.rekey", "team.revoke", "member.remove", "team.rekey"} <= readable
    assert alice.run("request", "report", "acme").returncode == 0
    refused = alice.run("backup", str(tmp_path / "copy.db"))
    assert refused.returncode == 1 and "team" in refused.stderr and not (tmp_path / "copy.db").exists()

    alice.setup("end", "acme", "--notice-given", "2024-06-01", "--reason", "moved on")
    forgot = alice.run("forget", "acme", "--yes", "--certificate", str(tmp_path / "acme-destroyed.md"))
    assert forgot.returncode == 0, forgot.stderr
    for t in (alice, dave):
        assert "Audit log intact" in t.ok("audit", "verify")
        assert "vault intact" in t.ok("verify")


def test_a_member_granted_after_a_removal_gets_the_request_report_without_a_false_alarm(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """A request is logged for acme; bob, who held acme, is removed (acme re-keyed to version 2,
    the team key rotated); dave joins and is granted acme, at version 2. His ``request report acme``
    must not call the log tampered: nothing was."""
    url, alice, _bob = team
    alice.setup(
        "contact", "add", "acme", "--name", "Jane Doe", "--email", "jane@acme.example", "--authorized"
    )
    alice.setup(
        "request", "log", "acme", "--requester", "Jane Doe", "--channel", "phone",
        "--verified-by", "callback", "--item", "Firewall admin", "--decision", "granted",
    )  # fmt: skip
    alice.setup("grant", "acme", "bob")
    alice.setup("member", "remove", "bob", "--yes")
    dave = _tech("dave", url, tmp_path)
    dave.setup("team", "join", "--admin", alice.fingerprint, "--name", "dave")
    alice.setup("member", "add", "dave", "--fingerprint", dave.fingerprint)
    alice.setup("grant", "acme", "dave")
    assert alice.run("request", "report", "acme").returncode == 0  # the admin, holding both versions
    assert "Audit log intact" in dave.ok("audit", "verify")
    report = dave.run("request", "report", "acme")
    assert report.returncode == 0 and "tampered" not in report.stderr, (report.returncode, report.stderr)


def test_removing_the_first_admin_leaves_the_team_usable_or_is_refused(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """carol, an admin alice endorsed and who holds acme, removes alice (the first admin, whom
    every member pinned at join). Had it succeeded, the rotation would have made no member slot
    (every endorsement chain starts at alice) and locked the team out. Either the removal is
    refused (it is), or the team still opens."""
    url, alice, bob = team
    carol = _admin(url, "carol", tmp_path, alice, "acme")
    removed = carol.run("member", "remove", "alice", "--yes")
    after = carol.run("client", "list")
    slots = [k for (k,) in sql(url, "SELECT kind FROM key_slots")]
    assert removed.returncode != 0 or (after.returncode == 0 and bob.run("client", "list").returncode == 0), (
        f"removal exit {removed.returncode} ({removed.stdout.strip()!r}); carol then: exit "
        f"{after.returncode} {after.stderr.strip()!r}; key slots left: {slots}"
    )
    if removed.returncode != 0:
        assert alice.run("client", "list").returncode == 0
