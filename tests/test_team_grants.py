"""Grants (vault/team/grants.py): age wrap with an inner binding, grant signatures, recovery, interop."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from handover_vault.errors import IntegrityError
from handover_vault.team import grants, memberkey
from handover_vault.team.grants import Binding
from handover_vault.team.memberkey import MemberKey

from .conftest import PASSPHRASE, need

B = Binding("team-1", "client-1", 3, "tech")
KEY = bytes(range(32))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MemberKey]:
    d = tmp_path_factory.mktemp("k")
    with pytest.MonkeyPatch.context() as mp:  # the lowered KDF for these keys only, not the whole run
        mp.setenv("HANDOVER_KDF", "minimum")
        return {n: memberkey.create(d / n, PASSPHRASE) for n in ("admin", "tech", "other")}


def test_round_trip(keys: dict[str, MemberKey]) -> None:
    blob = grants.wrap_for(keys["tech"].public, B, KEY)
    assert grants.unwrap(keys["tech"], B, blob) == KEY
    with pytest.raises(IntegrityError, match="does not decrypt"):
        grants.unwrap(keys["other"], B, blob)


@pytest.mark.parametrize(
    "change", [{"team_id": "t2"}, {"client_id": "c2"}, {"key_version": 4}, {"member_id": "other"}]
)
def test_binding_mismatch(keys: dict[str, MemberKey], change: dict[str, object]) -> None:
    blob = grants.wrap_for(keys["tech"].public, B, KEY)
    with pytest.raises(IntegrityError, match="bound to another place"):
        grants.unwrap(keys["tech"], dataclasses.replace(B, **change), blob)  # type: ignore[arg-type]


def test_grant_signature(keys: dict[str, MemberKey]) -> None:
    admins = {"admin": keys["admin"].public}
    blob = grants.wrap_for(keys["tech"].public, B, KEY)
    sig = grants.sign_grant(keys["admin"], "admin", B, blob)
    grants.verify_grant(admins, "admin", B, blob, sig)
    other_blob = grants.wrap_for(keys["tech"].public, B, KEY)
    with pytest.raises(IntegrityError, match="is bad"):
        grants.verify_grant(admins, "admin", B, other_blob, sig)  # blob from another grant
    forged = grants.sign_grant(keys["other"], "admin", B, blob)
    with pytest.raises(IntegrityError, match="is bad"):
        grants.verify_grant(admins, "admin", B, blob, forged)
    by_tech = grants.sign_grant(keys["tech"], "tech", B, blob)
    with pytest.raises(IntegrityError, match="not an endorsed admin"):
        grants.verify_grant(admins, "tech", B, blob, by_tech)


def test_recovery_round_trip() -> None:
    ident, recipient = grants.new_recovery_identity()
    blob = grants.wrap_recovery(recipient, "team-1", "client-1", 1, KEY)
    assert grants.unwrap_recovery(ident, "team-1", "client-1", 1, blob) == KEY
    with pytest.raises(IntegrityError):
        grants.unwrap_recovery(ident, "team-1", "client-1", 2, blob)


def test_blob_decrypts_with_the_age_binary(keys: dict[str, MemberKey], tmp_path: Path) -> None:
    age = need("age")
    blob = grants.wrap_for(keys["tech"].public, B, KEY)
    ident = tmp_path / "id.txt"
    ident.write_text(keys["tech"].identity + "\n")
    out = subprocess.run([age, "-d", "-i", str(ident)], input=blob, capture_output=True, check=True).stdout
    assert out.endswith(KEY) and b"client-1" in out
