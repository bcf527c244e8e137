"""``handover team recover`` (vault/teamrecovery.py): the whole team into a vault file, with the
offline recovery identity, for the day the last admin is gone. Real subprocesses of the installed
command against the session's PostgreSQL; the file is then used as any vault file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, run
from tests.test_team import SECRET, Tech, _tech, team
from tests.test_team_rotation import trio

pytestmark = [pytest.mark.postgres, pytest.mark.interop]

__all__ = ["team", "trio"]  # the fixtures, imported for use here


def test_the_recovery_identity_rescues_every_client_and_the_whole_log(
    trio: tuple[str, Tech, Tech, Tech], tmp_path: Path
) -> None:
    """After a revoke, a removal (two more key versions of acme, a rotation of the team key) and a
    second client, the recovery identity writes a vault file that opens with a new passphrase,
    reveals every secret, lists every audit entry readable (those of the older key versions too)
    and verifies whole. A wrong identity writes nothing."""
    _url, alice, _bob, _carol = trio
    alice.ok("revoke", "acme", "bob", "--yes")
    alice.ok("member", "remove", "carol", "--yes")
    alice.ok("client", "add", "beta", "--name", "Beta GmbH", "--contract-start", "2025-01-01")
    alice.ok("cred", "add", "beta", "NAS admin", "--username", "root", input="Nas-s3cret-0002\n")
    identity = tmp_path / "recovery.txt"
    rescued = tmp_path / "rescued.vault"
    env = {"HANDOVER_NEW_PASSPHRASE": PASSPHRASE, "HANDOVER_PASSPHRASE": ""}

    wrong = tmp_path / "wrong.txt"
    from handover_vault.team.grants import new_recovery_identity

    wrong.write_text(new_recovery_identity()[0] + "\n")
    refused = alice.run("team", "recover", "--identity", str(wrong), "--out", str(rescued), env=env)
    assert refused.returncode == 3 and not rescued.exists(), refused.stderr
    assert not list(tmp_path.glob(".rescued.vault.tmp-*"))

    done = alice.run("team", "recover", "--identity", str(identity), "--out", str(rescued), env=env)
    assert done.returncode == 0, done.stderr
    assert "Recovered the team into" in done.stdout and "2 clients" in done.stdout
    assert rescued.stat().st_mode & 0o777 == 0o600
    assert SECRET not in done.stdout + done.stderr and identity.read_text().strip() not in done.stdout

    clients = json.loads(run(["--json", "client", "list"], rescued).stdout)
    assert sorted(c["slug"] for c in clients) == ["acme", "beta"]
    assert SECRET in run(["cred", "show", "acme", "Firewall admin", "--reveal"], rescued).stdout
    assert "Nas-s3cret-0002" in run(["cred", "show", "beta", "NAS admin", "--reveal"], rescued).stdout
    verified = run(["verify"], rescued)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Audit log intact" in run(["audit", "verify"], rescued).stdout
    listed = json.loads(run(["--json", "audit", "list"], rescued).stdout)
    assert not [e for e in listed if "error" in (e.get("detail") or {})], listed
    reveal = next(e for e in listed if e["action"] == "cred.reveal")  # bob's, at acme's key version 1
    assert reveal["detail"]["field"] == "secret"
    assert [e["detail"]["key_version"] for e in listed if e["action"] == "team.revoke"] == [2, 3]
    [recovered] = [e for e in listed if e["action"] == "team.recover"]
    assert recovered["detail"] == {"clients": 2}
    # The team database was not changed: alice carries on there.
    assert "Audit log intact" in alice.ok("audit", "verify")


def test_a_rescued_team_moves_into_a_new_team_that_verifies(
    trio: tuple[str, Tech, Tech, Tech], tmp_path: Path, pg_server: Any
) -> None:
    """The way out the command prints: the rescued file, moved into a fresh database by a new
    first admin, verifies whole (the old team's signed entries are vouched for by the file's MAC
    chain and the embedded head, as any moved-in file's) and reads every older detail.

    Seen failing by hand before chain_start: the new team's audit verify named entry 1 as signed by
    an unknown member (the old team's)."""
    import uuid

    _url, alice, _bob, _carol = trio
    alice.ok("revoke", "acme", "bob", "--yes")
    rescued = tmp_path / "rescued.vault"
    env = {"HANDOVER_NEW_PASSPHRASE": PASSPHRASE, "HANDOVER_PASSPHRASE": ""}
    assert (
        alice.run(
            "team", "recover", "--identity", str(tmp_path / "recovery.txt"), "--out", str(rescued), env=env
        ).returncode
        == 0
    )
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg_server.create_database(name)
    try:
        rita = _tech("rita", url, tmp_path)
        moved = rita.run(
            "team",
            "init",
            "--name",
            "rita",
            "--from",
            str(rescued),
            env={"HANDOVER_FROM_PASSPHRASE": PASSPHRASE},
        )
        assert moved.returncode == 0, moved.stderr
        assert SECRET in rita.ok("cred", "show", "acme", "Firewall admin", "--reveal")
        assert "Audit log intact" in rita.ok("audit", "verify")
        assert "vault intact" in rita.ok("verify")
        listed = json.loads(rita.ok("--json", "audit", "list"))
        assert not [e for e in listed if "error" in (e.get("detail") or {})], listed
        assert next(e for e in listed if e["action"] == "cred.reveal")["detail"]["field"] == "secret"
    finally:
        pg_server.drop_database(name)
