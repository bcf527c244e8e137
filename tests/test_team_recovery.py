"""``handover team recover`` (vault/teamrecovery.py): the whole team into a vault file, with the
offline recovery identity, for the day the last admin is gone. Real subprocesses of the installed
command against the session's PostgreSQL; the file is then used as any vault file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, run
from tests.test_team import SECRET, Tech, team
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
