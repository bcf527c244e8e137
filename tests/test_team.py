"""Several technicians, each with their own home, member key and passphrase, on one PostgreSQL.

Every step is a real subprocess of the installed command against the session's throwaway server
(tests/pgserver.py); the server's side is looked at with the bare driver, as its superuser.
DESIGN §12: join, endorse, grant, reveal, revoke (at-risk list, records re-encrypted, no more
access), a planted unendorsed key, four processes revealing at once, member removal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import handover_cmd
from tests.helpers_security import fork_run, one, sql

pytestmark = [pytest.mark.postgres, pytest.mark.interop]

SECRET = "Fw-s3cret-team-0001"
FP_RE = re.compile(r"Fingerprint: (hv:[0-9a-f-]+)")


@dataclass
class Tech:
    """One technician: their own home (data, state, runtime dirs), member key and passphrase."""

    name: str
    env: dict[str, str]
    fingerprint: str = ""

    def run(
        self, *args: str, input: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The installed command in a new process: what every check of behaviour goes through."""
        return subprocess.run(
            handover_cmd() + list(args),
            input=input,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=180,
            check=False,
        )

    def ok(self, *args: str, input: str = "") -> str:
        done = self.run(*args, input=input)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    def setup(self, *args: str, input: str = "") -> str:
        """A step of a fixture's setting up: the same entry point in a forked child with this
        technician's environment (tests/helpers_security.py fork_run), a tenth of the cost."""
        done = fork_run(list(args), input=input, env=self.env, passphrase=None)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout


def _tech(name: str, url: str, tmp_path: Path) -> Tech:
    home = tmp_path / name
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOVER_", "XDG_"))}
    env.update(
        {
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state"),
            "HANDOVER_RUNTIME_DIR": str(home / "runtime"),
            "HANDOVER_KDF": "minimum",
            "HANDOVER_DB_URL": url,
            "HANDOVER_PASSPHRASE": f"{name}'s own member passphrase",
        }
    )
    t = Tech(name, env)
    made = t.setup("member", "key")
    m = FP_RE.search(made)
    assert m, made
    t.fingerprint = m.group(1)
    assert (home / "data" / "handover-vault" / "member.key").stat().st_mode & 0o777 == 0o600
    return t


@pytest.fixture
def team(pg_url: str, tmp_path: Path) -> tuple[str, Tech, Tech]:
    """alice (first admin) with client acme; bob joined and added, holding no client yet."""
    alice, bob = _tech("alice", pg_url, tmp_path), _tech("bob", pg_url, tmp_path)
    recovery = tmp_path / "recovery.txt"
    created = alice.setup("team", "init", "--name", "alice", "--recovery-out", str(recovery))
    assert alice.fingerprint in created and recovery.stat().st_mode & 0o777 == 0o600
    alice.setup("client", "add", "acme", "--name", "ACME Ltd", "--contract-start", "2024-01-01")
    alice.setup("cred", "add", "acme", "Firewall admin", "--username", "admin", input=SECRET + "\n")
    alice.setup("doc", "add", "acme", "LAN", input="fw1 guards 10.0.0.0/24\n")
    bob.setup("team", "join", "--admin", alice.fingerprint, "--name", "bob")
    alice.setup("member", "add", "bob", "--fingerprint", bob.fingerprint)
    return pg_url, alice, bob


def test_join_pins_the_first_admin_and_refuses_another(pg_url: str, tmp_path: Path) -> None:
    alice, mallory = _tech("alice", pg_url, tmp_path), _tech("mallory", pg_url, tmp_path)
    alice.ok("team", "init", "--name", "alice")
    wrong = mallory.run("team", "join", "--admin", mallory.fingerprint, "--name", "mallory")
    assert wrong.returncode == 4 and "refusing to join" in wrong.stderr
    assert one(pg_url, "SELECT count(*) FROM members") == 1  # nothing was registered
    mallory.ok("team", "join", "--admin", alice.fingerprint, "--name", "mallory")
    waiting = mallory.run("client", "list")
    assert waiting.returncode == 3 and "no admin has added you to the team yet" in waiting.stderr
    # The server replaces the first admin's row and the pin in the database: the member's own pin wins.
    sql(pg_url, "UPDATE meta SET value = ? WHERE key = 'team_root'", (mallory.fingerprint.encode(),))
    swapped = alice.run("client", "list")
    assert swapped.returncode == 4 and "pinned on this machine" in swapped.stderr


def test_grant_reveal_revoke(team: tuple[str, Tech, Tech]) -> None:
    url, alice, bob = team
    assert bob.ok("client", "list").strip() in ("(no clients)", "")
    refused = bob.run("cred", "show", "acme", "Firewall admin", "--reveal")
    assert refused.returncode == 1 and "not granted to you" in refused.stderr and SECRET not in refused.stdout
    alice.ok("grant", "acme", "bob")
    assert SECRET in bob.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    session = bob.ok("unlock").strip().split("=", 1)[1]
    cid = one(url, "SELECT id FROM clients")
    before = {
        r[0]: bytes(r[1]) for r in sql(url, "SELECT id, envelope FROM records WHERE client_id = ?", (cid,))
    }

    revoked = alice.run("revoke", "acme", "bob", "--yes")
    assert revoked.returncode == 0, revoked.stderr
    assert "key version 2" in revoked.stdout and "kept by: alice" in revoked.stdout
    assert "At risk (flagged for rotation: bob could read them):" in revoked.stdout
    assert "Firewall admin" in revoked.stdout
    after = {
        r[0]: bytes(r[1]) for r in sql(url, "SELECT id, envelope FROM records WHERE client_id = ?", (cid,))
    }
    assert set(after) == set(before) and all(after[k] != before[k] for k in before)  # every record re-sealed
    assert one(url, "SELECT key_version FROM clients") == 2
    assert (
        one(url, "SELECT count(*) FROM grants g JOIN members m ON m.id = g.member_id WHERE m.name = 'bob'")
        == 0
    )
    # No more access, neither with his key file nor with the session he unlocked before.
    for env in ({}, {"HANDOVER_SESSION": session, "HANDOVER_PASSPHRASE": ""}):
        again = bob.run("cred", "show", "acme", "Firewall admin", "--reveal", env=env)
        assert again.returncode == 1 and SECRET not in again.stdout, again.stderr
    flagged = json.loads(alice.ok("--json", "cred", "list", "acme", "--needs-rotation"))
    assert [c["label"] for c in flagged] == ["Firewall admin"]
    assert SECRET in alice.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    assert "Audit log intact" in alice.ok("audit", "verify")
    assert "vault intact" in alice.ok("verify")
    assert "1 clients not granted to you" in bob.ok("verify")


def test_a_key_no_admin_endorsed_gets_no_grant(team: tuple[str, Tech, Tech], tmp_path: Path) -> None:
    url, alice, _bob = team
    eve = _tech("eve", url, tmp_path)
    eve.ok("team", "join", "--admin", alice.fingerprint, "--name", "eve")
    # The server (or its superuser) makes eve look endorsed: by alice's id, with a made-up signature.
    alice_id = one(url, "SELECT id FROM members WHERE name = 'alice'")
    sql(
        url,
        "UPDATE members SET endorsed_by = ?, endorsement = ? WHERE name = 'eve'",
        (alice_id, b"\x00" * 64),
    )
    refused = alice.run("grant", "acme", "eve")
    assert refused.returncode == 4 and "endorsement" in refused.stderr
    assert (
        one(url, "SELECT count(*) FROM grants g JOIN members m ON m.id = g.member_id WHERE m.name = 'eve'")
        == 0
    )
    assert eve.run("client", "list").returncode == 4  # her own unlock finds no valid chain either


def test_four_processes_of_two_members_reveal_at_once(team: tuple[str, Tech, Tech]) -> None:
    url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    before = one(url, "SELECT max(seq) FROM audit")
    results: list[subprocess.CompletedProcess[str]] = []
    lock = threading.Lock()

    def worker(t: Tech) -> None:
        for _ in range(5):
            done = t.run("cred", "show", "acme", "Firewall admin", "--reveal")
            with lock:
                results.append(done)

    threads = [threading.Thread(target=worker, args=(t,)) for t in (alice, bob, alice, bob)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    assert one(url, "SELECT max(seq) FROM audit") == before + 20
    assert one(url, "SELECT count(DISTINCT seq) FROM audit") == before + 20  # no fork, no gap
    assert "Audit log intact" in bob.ok("audit", "verify")


def test_a_removed_member_can_open_nothing(team: tuple[str, Tech, Tech]) -> None:
    url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    removed = alice.run("member", "remove", "bob", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert (
        "Revoked bob's access to acme" in removed.stdout
        and "the team key rotated (epoch 1), wrapped to: alice and the recovery key" in removed.stdout
    )
    gone = bob.run("client", "list")
    assert gone.returncode == 3 and SECRET not in gone.stdout
    assert one(url, "SELECT count(*) FROM key_slots WHERE kind = 'member'") == 1
    listed = json.loads(alice.ok("--json", "member", "list"))
    assert [m["name"] for m in listed] == ["alice"]


def test_only_an_admin_adds_clients_and_grants(team: tuple[str, Tech, Tech]) -> None:
    url, _alice, bob = team
    refused = bob.run("client", "add", "beta", "--name", "Beta")
    assert refused.returncode == 1 and "only a team admin adds clients" in refused.stderr
    assert bob.run("grant", "acme", "bob").returncode == 1
    assert one(url, "SELECT count(*) FROM clients") == 1


def test_the_recovery_identity_opens_every_client_key(team: tuple[str, Tech, Tech], tmp_path: Path) -> None:
    from handover_vault.team.grants import unwrap_recovery

    url, alice, _bob = team
    identity = (tmp_path / "recovery.txt").read_text().strip()
    vault_id = bytes(one(url, "SELECT value FROM meta WHERE key = 'vault_id'")).decode()
    cid, version, wrapped = sql(url, "SELECT client_id, key_version, wrapped FROM recovery_wraps")[0]
    key = unwrap_recovery(identity, vault_id, cid, version, bytes(wrapped))
    assert len(key) == 32
    alice.ok("grant", "acme", "bob")
    alice.ok("revoke", "acme", "bob", "--yes")
    assert one(url, "SELECT count(*) FROM recovery_wraps WHERE key_version = 2") == 1


def test_every_entry_names_and_is_signed_by_its_member(team: tuple[str, Tech, Tech]) -> None:
    url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    assert SECRET in bob.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    listed = json.loads(alice.ok("--json", "audit", "list"))
    assert all(e["member"] in ("alice", "bob") for e in listed)
    assert listed[0]["member"] == "alice" and listed[0]["action"] == "vault.init"
    [reveal] = [e for e in listed if e["action"] == "cred.reveal"]
    assert reveal["member"] == "bob"
    assert "member" in alice.ok("audit", "list").splitlines()[0]  # the table's header names the column
    assert one(url, "SELECT count(*) FROM audit WHERE signature IS NULL OR prev_hash IS NULL") == 0
    # A superuser puts bob's reveal on alice's account: the MAC chain does not cover who, the
    # signature does, and audit verify names the entry and the member it now claims.
    alice_id = one(url, "SELECT id FROM members WHERE name = 'alice'")
    sql(url, "ALTER TABLE audit DISABLE TRIGGER USER")
    sql(url, "UPDATE audit SET member_id = ? WHERE seq = ?", (alice_id, reveal["seq"]))
    sql(url, "ALTER TABLE audit ENABLE TRIGGER USER")
    for t in (alice, bob):
        done = t.run("audit", "verify")
        assert done.returncode == 4
        assert f"audit entry {reveal['seq']} (member alice) does not verify: bad signature" in done.stderr


def test_a_vault_file_moves_in_with_its_history(pg_url: str, tmp_path: Path) -> None:
    from tests.conftest import PASSPHRASE, run

    old = tmp_path / "solo.vault"
    assert run(["init"], vault=old).returncode == 0
    for args, stdin in (
        (["client", "add", "acme", "--name", "ACME Ltd", "--contract-start", "2024-01-01"], ""),
        (["contact", "add", "acme", "--name", "Jane Doe", "--email", "jane@acme.example", "--authorized"], ""),
        (["cred", "add", "acme", "Firewall admin", "--username", "admin"], SECRET + "\n"),
        (["doc", "add", "acme", "LAN"], "fw1 guards 10.0.0.0/24\n"),
        (["request", "log", "acme", "--requester", "Jane Doe", "--channel", "phone", "--verified-by", "callback",
          "--item", "Firewall admin", "--decision", "granted"], ""),
    ):  # fmt: skip
        done = run(args, vault=old, input=stdin)
        assert done.returncode == 0, (args, done.stderr)
    solo_fp = json.loads(run(["--json", "audit", "list"], vault=old).stdout)
    fingerprint = re.search(r"signing key (hv:[0-9a-f-]+)", run(["verify"], vault=old).stdout).group(1)
    alice, bob = _tech("alice", pg_url, tmp_path), _tech("bob", pg_url, tmp_path)
    moved = alice.run(
        "team", "init", "--name", "alice", "--from", str(old), env={"HANDOVER_FROM_PASSPHRASE": PASSPHRASE}
    )
    assert moved.returncode == 0, moved.stderr
    assert f"{len(solo_fp)} audit entries verified and kept" in moved.stdout
    assert SECRET in alice.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    assert fingerprint in alice.ok("verify")  # the same signing key: bundles and receipts still check
    listed = json.loads(alice.ok("--json", "audit", "list"))
    assert [e["action"] for e in listed[: len(solo_fp)]] == [e["action"] for e in solo_fp]
    assert listed[len(solo_fp)]["action"] == "team.init" and listed[len(solo_fp)]["member"] == "alice"
    assert all(r["matches_audit"] for r in json.loads(alice.ok("--json", "request", "list")))
    assert one(pg_url, "SELECT count(*) FROM key_slots WHERE kind IN ('passphrase', 'recovery')") == 0
    assert one(pg_url, "SELECT count(*) FROM clients WHERE length(wrapped_key) > 0") == 0
    bob.ok("team", "join", "--admin", alice.fingerprint, "--name", "bob")
    alice.ok("member", "add", "bob", "--fingerprint", bob.fingerprint)
    alice.ok("grant", "acme", "bob")
    assert SECRET in bob.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    assert "Audit log intact" in bob.ok("audit", "verify")
    # The team's first entry vouches for the moved chain: changing what it embeds is caught.
    first = len(solo_fp) + 1
    sql(pg_url, "ALTER TABLE audit DISABLE TRIGGER USER")
    sql(pg_url, "UPDATE audit SET embedded_head = ? WHERE seq = ?", (b"\x00" * 32, first))
    sql(pg_url, "ALTER TABLE audit ENABLE TRIGGER USER")
    broken = bob.run("audit", "verify")
    assert broken.returncode == 4 and f"audit entry {first}" in broken.stderr


def test_a_dump_of_the_team_database_holds_nothing_in_clear(
    team: tuple[str, Tech, Tech], pg_server, tmp_path: Path
) -> None:
    from tests.helpers_security import find_plaintext

    url, alice, bob = team
    alice.ok("grant", "acme", "bob")
    bob.ok("cred", "show", "acme", "Firewall admin", "--reveal")
    alice.ok("revoke", "acme", "bob", "--yes")
    dump = tmp_path / "team.sql"
    pg_server.dump(url, dump)
    recovery = (tmp_path / "recovery.txt").read_text().strip()
    planted = [
        SECRET,
        "ACME Ltd",
        "fw1 guards 10.0.0.0/24",
        "Firewall admin",
        recovery,
        alice.env["HANDOVER_PASSPHRASE"],
        bob.env["HANDOVER_PASSPHRASE"],
    ]
    assert dump.stat().st_size > 10_000
    assert find_plaintext([dump], planted) == []
    assert find_plaintext([dump], [alice.fingerprint]) != []  # not vacuous: public facts are there


def test_a_team_vault_is_not_backed_up_into_a_file_nor_rekeyed_like_one(
    team: tuple[str, Tech, Tech], tmp_path: Path
) -> None:
    _url, alice, _bob = team
    for args in (["backup", str(tmp_path / "copy.db")], ["rekey"], ["passwd"]):
        done = alice.run(*args, env={"HANDOVER_NEW_PASSPHRASE": "another long passphrase"})
        assert done.returncode == 1 and "team" in done.stderr, (args, done.stderr)
    assert not (tmp_path / "copy.db").exists()


def test_the_whole_job_runs_against_the_team_vault(pg_url: str, tmp_path: Path) -> None:
    import datetime as dt

    from handover_vault.cli.demo import _fill, _steps

    alice = _tech("alice", pg_url, tmp_path)
    alice.ok("team", "init", "--name", "alice")
    session = alice.ok("unlock", "--for", "30m").strip().split("=", 1)[1]
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    for step in _steps(work, dt.datetime.now(dt.UTC).date()):
        args = [_fill(a, work) for a in step.args]
        done = alice.run(
            *args, input=step.stdin, env={"HANDOVER_SESSION": session, "HANDOVER_PASSPHRASE": ""}
        )
        assert done.returncode == step.expect, (args, done.stdout[-1500:], done.stderr[-1500:])
    listed = json.loads(alice.ok("--json", "audit", "list"))
    assert {"bundle.export", "request.log", "client.forget"} <= {e["action"] for e in listed}
    assert {e["member"] for e in listed} == {"alice"}
    assert "Audit log intact" in alice.ok("audit", "verify")
