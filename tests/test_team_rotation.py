"""The team key rotated at ``member remove``, and every key version of a client read back (DESIGN §12).

A removed member may have kept the team key they held (unwrapped from their slot with their own
member key, which they keep). After the removal that copy opens nothing the team writes; the
members who stay carry on, their old entries still verify and read; a command that held the old key
while the rotation committed writes nothing. Real subprocesses of the installed command, one home
per technician, against the session's PostgreSQL (tests/test_team.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_security import one, sql
from tests.test_team import SECRET, Tech, _tech, team
from tests.test_team_adversarial import _id, _member_key, _vault_id

pytestmark = [pytest.mark.postgres, pytest.mark.interop]

__all__ = ["team"]  # the fixture, imported for use here


def _team_key(url: str, t: Tech, slot: bytes) -> bytes:
    """What ``t`` unwraps from a team key slot with their own member key (what they could keep)."""
    from handover_vault.team.grants import Binding, unwrap

    return unwrap(_member_key(t), Binding(_vault_id(url), "*team key*", 0, _id(url, t.name)), slot)


def _slot(url: str, t: Tech) -> bytes:
    return bytes(one(url, "SELECT wrapped FROM key_slots WHERE id = ?", (_id(url, t.name),)))


@pytest.fixture
def trio(team: tuple[str, Tech, Tech], tmp_path: Path) -> tuple[str, Tech, Tech, Tech]:
    """team's alice and bob (granted acme, who revealed it) plus carol, a member holding acme."""
    url, alice, bob = team
    carol = _tech("carol", url, tmp_path)
    carol.setup("team", "join", "--admin", alice.fingerprint, "--name", "carol")
    alice.setup("member", "add", "carol", "--fingerprint", carol.fingerprint)
    alice.setup("grant", "acme", "bob")
    alice.setup("grant", "acme", "carol")
    assert SECRET in bob.setup("cred", "show", "acme", "Firewall admin", "--reveal")
    return url, alice, bob, carol


def test_member_remove_rotates_the_team_key_and_the_rest_carry_on(
    trio: tuple[str, Tech, Tech, Tech], tmp_path: Path
) -> None:
    from handover_vault.errors import IntegrityError
    from handover_vault.keys.hierarchy import VaultKeys
    from handover_vault.team.grants import Binding, unwrap
    from handover_vault.team.memberkey import MemberKey, MemberPublic

    url, alice, bob, carol = trio
    kept_by_bob = _team_key(url, bob, _slot(url, bob))  # the copy a removed member could keep
    carol_session = carol.ok("unlock").strip().split("=", 1)[1]
    slots_before = {r[0]: bytes(r[1]) for r in sql(url, "SELECT id, wrapped FROM key_slots")}

    removed = alice.run("member", "remove", "bob", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "the team key rotated (epoch 1), wrapped to: alice, carol and the recovery key" in removed.stdout
    assert (
        "could copy the vault's signing key" in removed.stderr
        and "handover new-signing-key" in removed.stderr
    )

    # Every slot is new; bob has none. bob's copy of the old key opens nothing of the team's now.
    slots = {r[0]: bytes(r[1]) for r in sql(url, "SELECT id, wrapped FROM key_slots")}
    assert set(slots) == set(slots_before) - {_id(url, "bob")}
    assert all(slots[i] != slots_before[i] for i in slots)
    new_key = _team_key(url, alice, slots[_id(url, "alice")])
    assert new_key != kept_by_bob
    signing = bytes(one(url, "SELECT value FROM meta WHERE key = 'signing_private'"))
    VaultKeys(_vault_id(url), new_key).unwrap_signing_key(signing)
    with pytest.raises(IntegrityError):
        VaultKeys(_vault_id(url), kept_by_bob).unwrap_signing_key(signing)
    # The recovery key was given the new team key too.
    identity = (tmp_path / "recovery.txt").read_text().strip()
    wrapped = bytes(one(url, "SELECT wrapped FROM key_slots WHERE kind = 'team-recovery'"))
    offline = MemberKey(MemberPublic("", b""), identity, b"")  # the recovery identity alone
    assert unwrap(offline, Binding(_vault_id(url), "*team key*", 0, "recovery"), wrapped) == new_key

    # A vault-wide detail written after the rotation: bob's old key does not open it.
    dave = _tech("dave", url, tmp_path)
    dave.ok("team", "join", "--admin", alice.fingerprint, "--name", "dave")
    alice.ok("member", "add", "dave", "--fingerprint", dave.fingerprint)
    seq, detail = sql(url, "SELECT seq, detail FROM audit WHERE action = 'member.add' ORDER BY seq DESC")[0]
    from handover_vault.integrity.audit import detail_aad
    from handover_vault.keys.crypto import DecryptFailed

    with pytest.raises(DecryptFailed):
        VaultKeys(_vault_id(url), kept_by_bob).audit_detail.open(
            bytes(detail), detail_aad(_vault_id(url), seq)
        )
    assert (
        "dave"
        in VaultKeys(_vault_id(url), new_key)
        .audit_detail.open(bytes(detail), detail_aad(_vault_id(url), seq))
        .decode()
    )

    # carol's session held the old team key: it ended. Unlocked again, she carries on.
    stale = carol.run("client", "list", env={"HANDOVER_SESSION": carol_session, "HANDOVER_PASSPHRASE": ""})
    assert stale.returncode == 3 and "unlock" in stale.stderr, stale.stderr
    assert SECRET in carol.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    for t in (alice, carol, dave):
        assert "Audit log intact" in t.ok("audit", "verify")
    assert "vault intact" in alice.ok("verify")
    # Entries of the old epoch still read, to every member who stays (and to dave, who came after).
    for t in (alice, dave):
        listed = {e["action"]: e for e in json.loads(t.ok("--json", "audit", "list"))}
        assert listed["member.remove"]["detail"]["name"] == "bob"
        assert listed["team.rekey"]["detail"]["members"] == ["alice", "carol"]
        assert listed["vault.init"]["detail"]["team"] == "alice"
    # bob is out, with his key file and with the copy of the old key.
    gone = bob.run("client", "list")
    assert gone.returncode == 3 and SECRET not in gone.stdout


def test_a_removal_after_a_rotation_is_still_known_from_the_log(
    trio: tuple[str, Tech, Tech, Tech], tmp_path: Path
) -> None:
    """Two removals, two epochs: the first ``member.remove`` entry is sealed under the first team
    key, and the walks still find it (the server un-removing bob brings him back nowhere). dave
    joins after both, so only the log tells his machine of them."""
    url, alice, bob, carol = trio
    bob_slot = sql(url, "SELECT * FROM key_slots WHERE id = ?", (_id(url, "bob"),))[0]
    alice.ok("member", "remove", "bob", "--yes")
    alice.ok("member", "remove", "carol", "--yes")
    assert one(url, "SELECT count(*) FROM audit WHERE action = 'team.rekey'") == 2
    dave = _tech("dave", url, tmp_path)
    dave.ok("team", "join", "--admin", alice.fingerprint, "--name", "dave")
    alice.ok("member", "add", "dave", "--fingerprint", dave.fingerprint)
    sql(url, "UPDATE members SET removed_at = NULL")
    sql(url, f"INSERT INTO key_slots VALUES ({', '.join('?' * len(bob_slot))})", bob_slot)
    assert {m["name"] for m in json.loads(alice.ok("--json", "member", "list"))} == {"alice", "dave"}
    assert {m["name"] for m in json.loads(dave.ok("--json", "member", "list"))} == {"alice", "dave"}
    assert alice.run("grant", "acme", "bob").returncode != 0
    for t in (bob, carol):
        back = t.run("cred", "show", "acme", "Firewall admin", "--reveal")
        assert back.returncode in (3, 4) and SECRET not in back.stdout, back.stderr
    assert "Audit log intact" in alice.ok("audit", "verify")


def test_a_slot_the_server_rolls_back_to_the_old_team_key_opens_nothing(
    trio: tuple[str, Tech, Tech, Tech],
) -> None:
    """The server keeps carol's slot of the old team key (which bob also knew) and puts it back:
    carol would write under a key bob holds. Her open is refused and nothing is written."""
    url, alice, _bob, carol = trio
    old_slot = _slot(url, carol)
    alice.ok("member", "remove", "bob", "--yes")
    new_slot = _slot(url, carol)
    sql(url, "UPDATE key_slots SET wrapped = ? WHERE id = ?", (old_slot, _id(url, "carol")))
    entries = one(url, "SELECT count(*) FROM audit")
    for args in (("client", "list"), ("cred", "show", "acme", "Firewall admin", "--reveal")):
        done = carol.run(*args)
        assert done.returncode == 4 and SECRET not in done.stdout, (done.returncode, done.stderr)
        assert "an older team key put back" in done.stderr
    assert one(url, "SELECT count(*) FROM audit") == entries
    sql(url, "UPDATE key_slots SET wrapped = ? WHERE id = ?", (new_slot, _id(url, "carol")))
    assert SECRET in carol.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    # The row that carries the slugs' lookup key over the rotation is in the state commitment: a
    # server that drops it (so that no client is found) is named, not taken for "no such client".
    sql(url, "DELETE FROM meta WHERE key = 'team_index_key'")
    dropped = alice.run("cred", "show", "acme", "Firewall admin", "--reveal")
    assert dropped.returncode == 4 and SECRET not in dropped.stdout, (dropped.returncode, dropped.stderr)


def test_a_command_holding_the_old_team_key_writes_nothing(
    trio: tuple[str, Tech, Tech, Tech], monkeypatch: pytest.MonkeyPatch
) -> None:
    """carol's command opened the team before alice's removal of bob committed: its reveal is
    refused as a rotation (not reported as tampering), and no entry is written under the old key."""
    from handover_vault.core import open_vault
    from handover_vault.errors import AuthenticationFailed

    url, alice, _bob, carol = trio
    for name in ("HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "HANDOVER_RUNTIME_DIR", "HANDOVER_KDF"):
        monkeypatch.setenv(name, carol.env[name])
    v = open_vault(url, passphrase=carol.env["HANDOVER_PASSPHRASE"])
    try:
        client = v.clients.get("acme")
        alice.ok("member", "remove", "bob", "--yes")
        entries = one(url, "SELECT count(*) FROM audit")
        with pytest.raises(AuthenticationFailed, match="rotated while this command ran"):
            v.audit.append_now("cred.reveal", client, detail={"field": "secret"})
        assert one(url, "SELECT count(*) FROM audit") == entries
    finally:
        v.close()
    assert "Audit log intact" in alice.ok("audit", "verify")


def test_a_clients_older_audit_details_read_after_a_revoke(trio: tuple[str, Tech, Tech, Tech]) -> None:
    """Each revoke makes a key version; an entry's detail opens with the version it was sealed
    under. A member granted only a later version sees the older details as sealed to them, not as
    tampered."""
    url, alice, _bob, carol = trio
    alice.ok("revoke", "acme", "bob", "--yes")
    alice.ok("revoke", "acme", "carol", "--yes")
    assert one(url, "SELECT key_version FROM clients") == 3
    listed = json.loads(alice.ok("--json", "audit", "list"))
    assert not [e for e in listed if "error" in (e.get("detail") or {})], listed
    reveal = next(e for e in listed if e["action"] == "cred.reveal")
    assert reveal["detail"]["field"] == "secret"
    assert [e["detail"]["key_version"] for e in listed if e["action"] == "team.revoke"] == [2, 3]
    alice.ok("grant", "acme", "carol")  # carol again, at version 3 only
    hers = json.loads(carol.ok("--json", "audit", "list"))
    assert not [e for e in hers if "error" in (e.get("detail") or {})], hers
    assert next(e for e in hers if e["action"] == "cred.reveal")["detail"] is None  # sealed to her
    assert next(e for e in hers if e["seq"] == max(x["seq"] for x in hers))["detail"]["member"] == "carol"


def test_a_removal_the_server_deletes_is_met_by_a_member_who_stays(
    trio: tuple[str, Tech, Tech, Tech],
) -> None:
    """carol's machine last saw an entry before bob's removal. The superuser deletes the signed
    ``member.remove`` entry (and un-removes bob): carol's next open walks what came after the
    entry she saw and meets the hole, naming it (exit 4); nothing is written."""
    url, alice, _bob, carol = trio
    carol.ok("client", "list")  # carol's machine records the head it walked to
    alice.ok("member", "remove", "bob", "--yes")
    removal = one(url, "SELECT seq FROM audit WHERE action = 'member.remove'")
    sql(url, "ALTER TABLE audit DISABLE TRIGGER USER")
    sql(url, "DELETE FROM audit WHERE seq = ?", (removal,))
    sql(url, "ALTER TABLE audit ENABLE TRIGGER USER")
    sql(url, "UPDATE members SET removed_at = NULL")
    entries = one(url, "SELECT count(*) FROM audit")
    met = carol.run("cred", "show", "acme", "Firewall admin", "--reveal")
    assert met.returncode == 4 and SECRET not in met.stdout, (met.returncode, met.stderr)
    assert f"audit entry {removal + 1}" in met.stderr and "does not verify" in met.stderr
    assert one(url, "SELECT count(*) FROM audit") == entries


def test_member_remove_can_replace_the_signing_key_they_could_copy(
    trio: tuple[str, Tech, Tech, Tech],
) -> None:
    """With ``--new-signing-key`` the removal also replaces the vault's signing key (bob could have
    unwrapped it with the team key he held). Only an admin replaces it."""
    _url, alice, _bob, carol = trio
    old_fp = json.loads(alice.ok("--json", "audit", "list"))[0]["detail"]["fingerprint"]
    refused = carol.run("new-signing-key", "--yes")
    assert refused.returncode == 1 and "only a team admin" in refused.stderr, refused.stderr
    done = alice.run("member", "remove", "bob", "--yes", "--new-signing-key")
    assert done.returncode == 0, done.stderr
    assert f"it replaced {old_fp}" in done.stdout and "could copy" not in done.stderr
    new_fp = done.stdout.split("New signing key: ")[1].split()[0]
    for t in (alice, carol):
        verified = t.ok("verify")
        assert new_fp in verified and old_fp not in verified
        assert "Audit log intact" in t.ok("audit", "verify")


def test_members_a_removed_admin_endorsed_are_named_and_can_be_added_again(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    """carol, an admin, endorsed dave. When carol is removed, dave's endorsement chain no longer
    leads to the first admin: the new team key is not wrapped to him, and the command says so by
    name. alice endorses him again and he carries on."""
    url, alice, _bob = team
    carol = _tech("carol", url, tmp_path)
    carol.setup("team", "join", "--admin", alice.fingerprint, "--name", "carol")
    alice.setup("member", "add", "carol", "--fingerprint", carol.fingerprint, "--admin")
    dave = _tech("dave", url, tmp_path)
    dave.setup("team", "join", "--admin", alice.fingerprint, "--name", "dave")
    carol.setup("member", "add", "dave", "--fingerprint", dave.fingerprint)
    dave.ok("client", "list")
    removed = alice.run("member", "remove", "carol", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "wrapped to: alice, bob and the recovery key" in removed.stdout
    assert "warning: dave held the team key but their endorsement no longer leads" in removed.stderr
    assert dave.run("client", "list").returncode in (3, 4)
    alice.ok("member", "add", "dave", "--fingerprint", dave.fingerprint)
    dave.ok("client", "list")
    assert "Audit log intact" in dave.ok("audit", "verify")


def test_a_moved_in_vault_files_older_client_keys_are_held_by_grants_only(
    pg_url: str, tmp_path: Path
) -> None:
    """A vault file that was rekeyed keeps each client's old key in its key history, for the audit
    details sealed before the rekey. Moved into a team, that history is read by every holder of the
    team key: the old client keys leave it for grants of version -1 to the first admin (and the
    recovery key). alice still reads the old details; bob, granted acme later, sees them sealed
    (not tampered); the team key alone opens no client key."""
    from handover_vault.keys.hierarchy import VaultKeys
    from handover_vault.rekey import history_aad
    from tests.conftest import PASSPHRASE
    from tests.helpers_security import fork_run

    old = tmp_path / "solo.vault"
    for args, stdin in (
        (["init"], ""),
        (["client", "add", "acme", "--name", "ACME Ltd", "--contract-start", "2024-01-01"], ""),
        (["cred", "add", "acme", "Firewall admin", "--username", "admin"], SECRET + "\n"),
        (["cred", "show", "acme", "Firewall admin", "--reveal"], ""),
        (["rekey"], ""),
    ):
        done = fork_run(args, vault=old, input=stdin)
        assert done.returncode == 0, (args, done.stderr)
    alice, bob = _tech("alice", pg_url, tmp_path), _tech("bob", pg_url, tmp_path)
    moved = fork_run(
        ["team", "init", "--name", "alice", "--from", str(old)],
        env={**alice.env, "HANDOVER_FROM_PASSPHRASE": PASSPHRASE},
        passphrase=None,
    )
    assert moved.returncode == 0, moved.stderr
    bob.setup("team", "join", "--admin", alice.fingerprint, "--name", "bob")
    alice.setup("member", "add", "bob", "--fingerprint", bob.fingerprint)
    alice.setup("grant", "acme", "bob")

    team_key = _team_key(pg_url, bob, _slot(pg_url, bob))  # what any member holds
    vid = _vault_id(pg_url)
    sealed = bytes(one(pg_url, "SELECT value FROM meta WHERE key = 'key_history'"))
    history = json.loads(VaultKeys(vid, team_key).vmk_sealer.open(sealed, history_aad(vid)))
    assert [e["clients"] for e in history["epochs"]] == [{}]
    assert sql(
        pg_url, "SELECT m.name FROM grants g JOIN members m ON m.id = g.member_id WHERE key_version = -1"
    ) == [("alice",)]
    assert one(pg_url, "SELECT count(*) FROM recovery_wraps WHERE key_version = -1") == 1

    def reveal_detail(t: Tech) -> object:
        listed = json.loads(t.ok("--json", "audit", "list"))
        assert not [e for e in listed if "error" in (e.get("detail") or {})], listed
        return next(e for e in listed if e["action"] == "cred.reveal")["detail"]

    assert reveal_detail(alice) == {"field": "secret", "purpose": "show", "version": 1}
    assert reveal_detail(bob) is None  # sealed under a key of acme bob was never given
    for t in (alice, bob):
        assert "Audit log intact" in t.ok("audit", "verify")
