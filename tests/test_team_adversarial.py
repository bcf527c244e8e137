"""An adversarial second read of the team vault (DESIGN §3, §3a, §4, §12).

The attacker is the PostgreSQL server (bare SQL as its superuser), sometimes with a member who was
revoked or removed and kept what they had (their member key, a pg_dump). Each test is the attack;
the ones still open are ``xfail(strict=True)`` with the reason. Real subprocesses of the installed
command, one home per technician, as tests/test_team.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers_security import find_plaintext, one, sql
from tests.pgserver import PgServer
from tests.test_team import SECRET, Tech, _tech, team

pytestmark = [pytest.mark.postgres, pytest.mark.interop]

__all__ = ["team"]  # the fixture, imported for use here


def _key_file(t: Tech) -> Path:
    return Path(t.env["XDG_DATA_HOME"]) / "handover-vault" / "member.key"


def _member_key(t: Tech):  # type: ignore[no-untyped-def]
    """The technician's member key, opened the way the program does (the attacker's own, or a
    revoked member who kept theirs)."""
    from handover_vault.team.memberkey import load

    return load(_key_file(t), t.env["HANDOVER_PASSPHRASE"])


def _vault_id(url: str) -> str:
    return bytes(one(url, "SELECT value FROM meta WHERE key = 'vault_id'")).decode()


def _id(url: str, name: str) -> str:
    return str(one(url, "SELECT id FROM members WHERE name = ?", (name,)))


# --- keys the server slips in -------------------------------------------------------------------


def test_member_add_endorses_only_the_keys_whose_fingerprint_was_told(pg_url: str, tmp_path: Path) -> None:
    """bob joins and tells alice his fingerprint by phone. Before alice runs ``member add``, the
    server replaces the public keys in bob's row with its own, leaving the ``fingerprint`` column
    (a plain, unsigned copy) as bob's. alice must endorse nothing and wrap nothing."""
    from handover_vault.team.grants import Binding, unwrap

    alice, bob, server = (_tech(n, pg_url, tmp_path) for n in ("alice", "bob", "server"))
    alice.ok("team", "init", "--name", "alice")
    bob.ok("team", "join", "--admin", alice.fingerprint, "--name", "bob")
    evil = _member_key(server).public
    sql(pg_url, "UPDATE members SET x25519 = ?, ed25519 = ? WHERE name = 'bob'", (evil.x25519, evil.ed25519))

    added = alice.run("member", "add", "bob", "--fingerprint", bob.fingerprint)
    bob_id = _id(pg_url, "bob")
    slots = sql(pg_url, "SELECT wrapped FROM key_slots WHERE id = ?", (bob_id,))
    if slots:  # what the server gains if the add went through: the team key
        vmk = unwrap(
            _member_key(server), Binding(_vault_id(pg_url), "*team key*", 0, bob_id), bytes(slots[0][0])
        )
        assert len(vmk) != 32, "the server unwrapped the team key wrapped to the keys it planted"
    assert added.returncode == 4, added.stderr
    assert bob.fingerprint in added.stderr
    assert one(pg_url, "SELECT endorsed_by FROM members WHERE name = 'bob'") == ""


def test_a_team_key_the_server_wrapped_to_a_member_is_refused(team: tuple[str, Tech, Tech]) -> None:
    from handover_vault.team.grants import Binding, wrap_for
    from handover_vault.team.memberkey import MemberPublic

    """The slot is an age wrap, so the server can wrap a team key of its own to bob's public key
    with the right binding. The admin's signed key commitment (vault/team/keycheck.py) does not
    hold for that key: bob is refused at unlock, before he seals anything under it; with the
    commitment removed too, he is refused as well."""
    url, _alice, bob = team
    bob_id = _id(url, "bob")
    x, ed = sql(url, "SELECT x25519, ed25519 FROM members WHERE id = ?", (bob_id,))[0]
    server_vmk = os.urandom(32)  # the server knows it
    fake = wrap_for(MemberPublic(x, bytes(ed)), Binding(_vault_id(url), "*team key*", 0, bob_id), server_vmk)
    sql(url, "UPDATE key_slots SET wrapped = ? WHERE id = ?", (fake, bob_id))
    # bob now works under a team key the server holds: whatever he seals with it (his profile, the
    # vault-wide audit details, commitments) the server reads. He must be stopped at unlock.
    opened = bob.run("client", "list")
    assert opened.returncode == 4, (opened.returncode, opened.stdout, opened.stderr)
    assert "does not hold the team key an admin made" in opened.stderr
    sql(url, "DELETE FROM meta WHERE key = 'team_key_commitment'")
    stripped = bob.run("client", "list")
    assert stripped.returncode == 4 and "vouched for by no admin" in stripped.stderr, stripped.stderr


def test_a_swapped_member_key_after_endorsement_gets_no_grant(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    url, alice, _bob = team
    server = _tech("server", url, tmp_path)
    evil = _member_key(server).public
    sql(
        url,
        "UPDATE members SET x25519 = ?, ed25519 = ?, fingerprint = ? WHERE name = 'bob'",
        (evil.x25519, evil.ed25519, evil.fingerprint),
    )
    refused = alice.run("grant", "acme", "bob")
    assert refused.returncode == 4 and "nothing was wrapped" in refused.stderr
    assert one(url, "SELECT count(*) FROM grants WHERE member_id = ?", (_id(url, "bob"),)) == 0


def _sign_row(url: str, signer, signer_id: str, member_id: str, name: str) -> None:  # type: ignore[no-untyped-def]
    """Endorse member ``member_id`` as an admin with ``signer``'s real key, written straight into its row."""
    from handover_vault.team.endorse import endorse
    from handover_vault.team.memberkey import MemberPublic

    x, ed = sql(url, "SELECT x25519, ed25519 FROM members WHERE id = ?", (member_id,))[0]
    signed = endorse(signer, signer_id, _vault_id(url), member_id, name, MemberPublic(x, bytes(ed)), True)
    sql(
        url,
        "UPDATE members SET endorsed_by = ?, endorsement = ?, admin = true WHERE id = ?",
        (signer_id, signed.signature, member_id),
    )


def test_an_endorsement_by_a_non_admin_or_a_cycle_counts_for_nothing(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """eve joins; bob (an endorsed member, not an admin) signs her row with his real key; then the
    server makes bob and eve endorse each other. No grant to eve either way."""
    url, alice, bob = team
    eve = _tech("eve", url, tmp_path)
    eve.ok("team", "join", "--admin", alice.fingerprint, "--name", "eve")
    bob_id, eve_id = _id(url, "bob"), _id(url, "eve")
    _sign_row(url, _member_key(bob), bob_id, eve_id, "eve")
    assert alice.run("grant", "acme", "eve").returncode == 4
    # A cycle: bob endorsed by eve, eve by bob (bob's row re-signed by eve's real key, as admin).
    _sign_row(url, _member_key(eve), eve_id, bob_id, "bob")
    for who in ("eve", "bob"):
        assert alice.run("grant", "acme", who).returncode == 4
    assert one(url, "SELECT count(*) FROM grants WHERE member_id IN (?, ?)", (bob_id, eve_id)) == 0


# --- grants moved around --------------------------------------------------------------------------


def test_a_grant_copied_from_another_client_or_version_does_not_open(team: tuple[str, Tech, Tech]) -> None:
    url, alice, bob = team
    alice.ok("client", "add", "beta", "--name", "Beta GmbH", "--contract-start", "2024-01-01")
    alice.ok("cred", "add", "beta", "Beta router", "--username", "root", input="beta-secret-0002\n")
    alice.ok("grant", "beta", "bob")  # bob holds beta, not acme
    bob_id = _id(url, "bob")
    acme = one(
        url,
        "SELECT id FROM clients c WHERE NOT EXISTS (SELECT 1 FROM grants g WHERE g.client_id = c.id AND g.member_id = ?)",
        (bob_id,),
    )
    sql(
        url,
        "INSERT INTO grants (client_id, key_version, member_id, wrapped, granted_by, signature, created_at) "
        "SELECT ?, key_version, member_id, wrapped, granted_by, signature, created_at FROM grants WHERE member_id = ?",
        (acme, bob_id),
    )
    copied = bob.run("cred", "show", "acme", "Firewall admin", "--reveal")
    assert copied.returncode == 4 and SECRET not in copied.stdout, copied.stderr
    # The same blob under another key version of the same client: bound to version 1, refused as 2.
    sql(url, "DELETE FROM grants WHERE client_id = ? AND member_id = ?", (acme, bob_id))
    sql(url, "UPDATE grants SET key_version = 2 WHERE member_id = ?", (bob_id,))
    sql(url, "UPDATE clients SET key_version = 2 WHERE id <> ?", (acme,))
    moved = bob.run("cred", "show", "beta", "Beta router", "--reveal")
    assert moved.returncode == 4 and "beta-secret-0002" not in moved.stdout, moved.stderr


def test_a_client_key_version_rolled_back_after_a_revoke_is_refused(team: tuple[str, Tech, Tech]) -> None:
    """After a revoke the server (with bob, who kept his version-1 grant) puts the client row and its
    commitment rows back as they were, so that alice, who keeps her version-1 grant, would write under
    the key bob holds. The commitment in the members' signed audit entries catches it."""
    from handover_vault.team.grants import Binding, unwrap

    url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    cid = one(url, "SELECT id FROM clients")
    bob_id = _id(url, "bob")
    kept = sql(url, "SELECT wrapped FROM grants WHERE member_id = ? AND client_id = ?", (bob_id, cid))
    old_client = sql(url, "SELECT envelope, key_version FROM clients WHERE id = ?", (cid,))[0]
    old_state = [sql(url, f"SELECT * FROM {t}") for t in ("state_clients", "state_buckets")]
    alice.ok("revoke", "acme", "bob", "--yes")
    # The server rolls the client back to key version 1 (its row and its commitment rows).
    sql(url, "UPDATE clients SET envelope = ?, key_version = ? WHERE id = ?", (*old_client, cid))
    for table, rows in zip(("state_clients", "state_buckets"), old_state, strict=True):
        sql(url, f"DELETE FROM {table}")
        for r in rows:
            sql(url, f"INSERT INTO {table} VALUES ({', '.join('?' * len(r))})", r)
    added = alice.run("cred", "add", "acme", "New VPN", "--username", "vpn", input="after-revoke-0003\n")
    # What bob gets if that went through: his kept version-1 grant opens the new credential.
    if added.returncode == 0:
        key = unwrap(_member_key(bob), Binding(_vault_id(url), cid, 1, bob_id), bytes(kept[0][0]))
        assert len(key) != 32, "alice wrote a new credential under the key the revoked member holds"
    assert added.returncode == 4, added.stderr


def test_revoke_rewraps_only_to_members_whose_grant_an_admin_signed(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """carol is an endorsed member without acme. The server plants a grant row of acme for her (bob's
    blob and signature copied): it opens nothing, but a revoke that keeps "every holder of the current
    version" without checking the grants' signatures would wrap acme's new key to carol."""
    url, alice, _bob = team
    carol = _tech("carol", url, tmp_path)
    carol.ok("team", "join", "--admin", alice.fingerprint, "--name", "carol")
    alice.ok("member", "add", "carol", "--fingerprint", carol.fingerprint)
    alice.ok("grant", "acme", "bob")
    bob_id, carol_id = _id(url, "bob"), _id(url, "carol")
    sql(
        url,
        "INSERT INTO grants (client_id, key_version, member_id, wrapped, granted_by, signature, created_at) "
        "SELECT client_id, key_version, ?, wrapped, granted_by, signature, created_at FROM grants "
        "WHERE member_id = ?",
        (carol_id, bob_id),
    )
    assert carol.run("cred", "show", "acme", "Firewall admin", "--reveal").returncode == 4
    revoked = alice.run("revoke", "acme", "bob", "--yes")
    assert "carol" not in revoked.stdout
    assert one(url, "SELECT count(*) FROM grants WHERE member_id = ? AND key_version = 2", (carol_id,)) == 0
    leaked = carol.run("cred", "show", "acme", "Firewall admin", "--reveal")
    assert SECRET not in leaked.stdout
    assert revoked.returncode == 4 and "carol" in revoked.stderr, revoked.stderr


# --- what a removed member keeps ------------------------------------------------------------------


def test_a_removed_members_session_opens_nothing(team: tuple[str, Tech, Tech]) -> None:
    _url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    token = bob.ok("unlock").strip().split("=", 1)[1]
    alice.ok("member", "remove", "bob", "--yes")
    for args in (("client", "list"), ("cred", "show", "acme", "Firewall admin", "--reveal")):
        done = bob.run(*args, env={"HANDOVER_SESSION": token, "HANDOVER_PASSPHRASE": ""})
        assert done.returncode == 3 and SECRET not in done.stdout, done.stderr


def test_a_member_the_server_un_removes_stays_removed(team: tuple[str, Tech, Tech]) -> None:
    url, alice, bob = team
    bob_id = _id(url, "bob")
    slot = sql(url, "SELECT * FROM key_slots WHERE id = ?", (bob_id,))[0]
    alice.ok("member", "remove", "bob", "--yes")
    sql(url, "UPDATE members SET removed_at = NULL WHERE id = ?", (bob_id,))
    sql(url, f"INSERT INTO key_slots VALUES ({', '.join('?' * len(slot))})", slot)
    # The slot put back holds the team key from before the removal rotated it: refused at unlock.
    back = bob.run("client", "list")
    assert back.returncode == 4 and "an older team key put back" in back.stderr, (
        back.returncode,
        back.stderr,
    )
    assert alice.run("grant", "acme", "bob").returncode != 0


def test_a_removal_the_server_deletes_from_the_log_is_caught_or_stays(team: tuple[str, Tech, Tech]) -> None:
    """The superuser deletes the signed ``member.remove`` entry itself and un-removes bob. alice's
    machine saw the removal (its pin keeps it) and her next write meets the hole. bob's slot put
    back holds the team key the removal replaced: refused at unlock (exit 4)."""
    url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    assert SECRET in bob.ok("cred", "show", "acme", "Firewall admin", "--reveal")  # bob's machine sees a head
    bob_id = _id(url, "bob")
    slot = sql(url, "SELECT * FROM key_slots WHERE id = ?", (bob_id,))[0]
    alice.ok("member", "remove", "bob", "--yes")
    removal = one(url, "SELECT seq FROM audit WHERE action = 'member.remove'")
    alice.ok("doc", "add", "acme", "WAN", input="isp uplink\n")  # later entries: the removal is not the head
    sql(url, "ALTER TABLE audit DISABLE TRIGGER USER")
    sql(url, "DELETE FROM audit WHERE action = 'member.remove'")
    sql(url, "ALTER TABLE audit ENABLE TRIGGER USER")
    sql(url, "UPDATE members SET removed_at = NULL WHERE id = ?", (bob_id,))
    sql(url, f"INSERT INTO key_slots VALUES ({', '.join('?' * len(slot))})", slot)
    back = bob.run("client", "list")
    assert back.returncode == 4 and "an older team key put back" in back.stderr, (
        back.returncode,
        back.stderr,
    )
    # alice's machine pinned the removal: bob is no member to her, and her next write meets the hole.
    assert "bob" not in {m["name"] for m in json.loads(alice.ok("--json", "member", "list"))}
    again = alice.run("grant", "acme", "bob")  # the slot put back, or the hole: whichever is met first
    assert again.returncode == 4 and ("audit log broken" in again.stderr or "key slots" in again.stderr)
    assert f"broken at entry {removal}" in alice.run("audit", "verify").stderr  # the hole, named


def test_a_machine_that_never_opened_the_team_walks_the_whole_chain_once(
    team: tuple[str, Tech, Tech],
) -> None:
    """bob's machine joined but never opened the vault: it has seen no entry. The server rewrites
    an old entry of alice's (long before the head, so no later write of hers walks it again); bob's
    first open walks the whole signed chain and refuses it, naming the entry; put back, the same
    open goes through."""
    url, _alice, bob = team
    heads = Path(bob.env["XDG_STATE_HOME"]) / "handover-vault" / "heads"
    assert not heads.exists() or not list(heads.iterdir())  # bob's machine has seen no entry
    old = one(url, "SELECT min(seq) FROM audit WHERE action = 'client.add'")
    head = one(url, "SELECT max(seq) FROM audit")
    assert head > old + 2
    at = one(url, "SELECT at FROM audit WHERE seq = ?", (old,))
    sql(url, "ALTER TABLE audit DISABLE TRIGGER USER")
    sql(url, "UPDATE audit SET at = '2020-01-01T00:00:00Z' WHERE seq = ?", (old,))
    first = bob.run("client", "list")
    assert first.returncode == 4, (first.returncode, first.stderr)
    assert f"audit entry {old} (member alice) does not verify" in first.stderr
    assert not heads.exists() or not list(heads.iterdir())  # a refused open records nothing
    sql(url, "UPDATE audit SET at = ? WHERE seq = ?", (at, old))  # put back: the same open goes through
    sql(url, "ALTER TABLE audit ENABLE TRIGGER USER")
    bob.ok("client", "list")


def test_a_first_open_records_the_head_it_walked_to(team: tuple[str, Tech, Tech]) -> None:
    url, _alice, bob = team
    heads = Path(bob.env["XDG_STATE_HOME"]) / "handover-vault" / "heads"
    bob.ok("client", "list")
    (rec,) = [json.loads(p.read_text()) for p in heads.iterdir() if p.suffix == ".json"]
    assert rec["seq"] == one(url, "SELECT max(seq) FROM audit")
    assert rec["mac"] == bytes(one(url, "SELECT mac FROM audit WHERE seq = ?", (rec["seq"],))).hex()


def test_revoke_leaves_no_ciphertext_the_old_grant_opens(
    pg_server: PgServer, team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """bob keeps a pg_dump from before his revoke. Every envelope of the client in the database after
    it (records, versions, chunks, the client row) must fail under the version-1 key his blob opens."""
    from handover_vault.keys.crypto import DecryptFailed
    from handover_vault.keys.hierarchy import ClientKeys, record_aad
    from handover_vault.team.grants import Binding, unwrap

    url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    alice.ok("cred", "rotate", "acme", "Firewall admin", input="Fw-rotated-0005\n")  # a record version
    cid = one(url, "SELECT id FROM clients")
    bob_id = _id(url, "bob")
    blob = bytes(one(url, "SELECT wrapped FROM grants WHERE member_id = ?", (bob_id,)))
    old_key = unwrap(_member_key(bob), Binding(_vault_id(url), cid, 1, bob_id), blob)
    alice.ok("revoke", "acme", "bob", "--yes")
    vid = _vault_id(url)
    sealer = ClientKeys(old_key).sealer
    rows = sql(url, "SELECT id, kind, version, envelope FROM records WHERE client_id = ?", (cid,))
    rows += sql(
        url,
        "SELECT r.id, r.kind, v.version, v.envelope FROM record_versions v JOIN records r "
        "ON r.id = v.record_id WHERE r.client_id = ?",
        (cid,),
    )
    rows += sql(url, "SELECT id, 'client', version, envelope FROM clients WHERE id = ?", (cid,))
    assert len(rows) >= 4
    opened = []
    for rid, kind, version, blob in rows:
        try:
            sealer.open(bytes(blob), record_aad(vid, cid, kind, rid, version))
            opened.append((kind, rid, version))
        except DecryptFailed:
            pass
    assert opened == []
    pg_server.dump(url, tmp_path / "after.sql")
    assert find_plaintext([tmp_path / "after.sql"], [SECRET]) == []


# --- what the server and its dumps hold ----------------------------------------------------------


def test_a_team_dump_holds_no_client_value_nor_key_in_clear(
    pg_server: PgServer, team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    assert SECRET in bob.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    alice.ok("revoke", "acme", "bob", "--yes")
    recovery = (tmp_path / "recovery.txt").read_text().strip()
    needles = [
        SECRET,
        "ACME Ltd",
        "Firewall admin",
        "fw1 guards 10.0.0.0/24",
        recovery,
        alice.env["HANDOVER_PASSPHRASE"],
        bob.env["HANDOVER_PASSPHRASE"],
        str(_member_key(alice).identity),
        str(_member_key(bob).identity),
    ]
    pg_server.dump(url, tmp_path / "team.sql")
    assert find_plaintext([tmp_path / "team.sql"], needles) == []


# --- files and messages ---------------------------------------------------------------------------


def test_a_member_key_file_is_0600_and_never_overwritten(pg_url: str, tmp_path: Path) -> None:
    alice = _tech("alice", pg_url, tmp_path)
    path = _key_file(alice)
    before = path.read_bytes()
    again = alice.run("member", "key")
    assert again.returncode != 0 and path.read_bytes() == before
    other = tmp_path / "other.key"
    other.write_bytes(b"not a key, but mine")
    assert alice.run("member", "key", "--out", str(other)).returncode != 0
    assert other.read_bytes() == b"not a key, but mine"
    made = tmp_path / "fresh" / "m.key"
    alice.ok("member", "key", "--out", str(made))
    assert made.stat().st_mode & 0o777 == 0o600 and made.parent.stat().st_mode & 0o777 == 0o700


def test_team_init_with_a_taken_recovery_file_loses_no_recovery_identity(pg_url: str, tmp_path: Path) -> None:
    """The recovery identity exists once, in this process: a --recovery-out that cannot be written
    must be found out before the team is made, not after (the identity would be lost for good)."""
    alice = _tech("alice", pg_url, tmp_path)
    taken = tmp_path / "recovery.txt"
    taken.write_text("someone else's file\n")
    done = alice.run("team", "init", "--name", "alice", "--recovery-out", str(taken))
    assert done.returncode != 0
    assert taken.read_text() == "someone else's file\n"
    assert "AGE-SECRET-KEY" not in done.stdout + done.stderr
    # Nothing was made: the same command with a free file creates the team.
    alice.ok("team", "init", "--name", "alice", "--recovery-out", str(tmp_path / "free.txt"))
    assert (tmp_path / "free.txt").read_text().startswith("AGE-SECRET-KEY-1")


def test_errors_never_show_the_database_password(pg_url: str, tmp_path: Path) -> None:
    alice = _tech("alice", pg_url, tmp_path)
    password = "Pg-pa55word-0004"
    bad = pg_url.replace("://postgres@", f"://nobody:{password}@", 1)
    assert bad != pg_url
    outputs = []
    for env in ({"HANDOVER_DB_URL": bad}, {"HANDOVER_DB_URL": bad.rsplit("/", 1)[0] + "/no_such_db"}):
        for args in (
            ("team", "init", "--name", "alice"),
            ("team", "join", "--admin", alice.fingerprint),
            ("client", "list"),
        ):
            done = alice.run(*args, env=env)
            assert done.returncode != 0
            outputs.append(done.stdout + done.stderr)
    argv = alice.run("team", "init", "--db", bad)
    assert argv.returncode != 0 and "password" in argv.stderr
    outputs.append(argv.stdout + argv.stderr)
    assert all(password not in o for o in outputs), outputs
