"""Endorsement chains (vault/team/endorse.py): only members reachable from the pinned first admin."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from handover_vault.errors import IntegrityError
from handover_vault.team import endorse, memberkey
from handover_vault.team.memberkey import MemberKey

from .conftest import PASSPHRASE

TEAM = "team-1"


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MemberKey]:
    d: Path = tmp_path_factory.mktemp("keys")
    with pytest.MonkeyPatch.context() as mp:  # the lowered KDF for these keys only, not the whole run
        mp.setenv("HANDOVER_KDF", "minimum")
        return {n: memberkey.create(d / n, PASSPHRASE) for n in ("root", "admin2", "tech", "mallory")}


def rows(k: dict[str, MemberKey]) -> list[endorse.Member]:
    root = endorse.endorse(k["root"], "root", TEAM, "root", "Root", k["root"].public, True)
    admin2 = endorse.endorse(k["root"], "root", TEAM, "admin2", "Ann", k["admin2"].public, True)
    tech = endorse.endorse(k["admin2"], "admin2", TEAM, "tech", "Tom", k["tech"].public, False)
    return [root, admin2, tech]


def test_valid_chain(team: dict[str, MemberKey]) -> None:
    fp = team["root"].public.fingerprint
    got = endorse.verify_endorsements(TEAM, fp, rows(team))
    assert got == {n: team[n].public for n in ("root", "admin2", "tech")}
    assert set(endorse.endorsed_admins(TEAM, fp, rows(team))) == {"root", "admin2"}
    assert endorse.why_not_endorsed(TEAM, fp, rows(team), "tech") is None


def test_unendorsed_self_endorsed_and_non_admin_endorser(team: dict[str, MemberKey]) -> None:
    fp = team["root"].public.fingerprint
    m = team["mallory"]
    cases = {
        "self": endorse.endorse(m, "mal", TEAM, "mal", "Mal", m.public, True),
        "by-tech": endorse.endorse(team["tech"], "tech", TEAM, "mal", "Mal", m.public, False),
        "unknown": endorse.endorse(m, "ghost", TEAM, "mal", "Mal", m.public, False),
    }
    reasons = {"self": "not the pinned first admin", "by-tech": "not an admin", "unknown": "unknown member"}
    for case, row in cases.items():
        all_rows = [*rows(team), row]
        assert "mal" not in endorse.verify_endorsements(TEAM, fp, all_rows)
        assert reasons[case] in (endorse.why_not_endorsed(TEAM, fp, all_rows, "mal") or "")
        with pytest.raises(IntegrityError):
            endorse.require_endorsed(TEAM, fp, all_rows, "mal")


def test_swapped_x25519_key_with_old_signature(team: dict[str, MemberKey]) -> None:
    fp = team["root"].public.fingerprint
    r = rows(team)
    swapped = dataclasses.replace(r[2].public, x25519=team["mallory"].public.x25519)
    r[2] = dataclasses.replace(r[2], public=swapped)
    assert "tech" not in endorse.verify_endorsements(TEAM, fp, r)
    assert "signature does not verify" in (endorse.why_not_endorsed(TEAM, fp, r, "tech") or "")


def test_wrong_pin_excludes_everyone(team: dict[str, MemberKey]) -> None:
    assert endorse.verify_endorsements(TEAM, team["mallory"].public.fingerprint, rows(team)) == {}


def test_cycle_without_root_and_long_chain(team: dict[str, MemberKey]) -> None:
    fp = team["root"].public.fingerprint
    a, b = team["admin2"], team["mallory"]
    cycle = [
        endorse.endorse(b, "y", TEAM, "x", "X", a.public, True),
        endorse.endorse(a, "x", TEAM, "y", "Y", b.public, True),
    ]
    assert endorse.verify_endorsements(TEAM, fp, [*rows(team), *cycle]).keys() == {"root", "admin2", "tech"}
    chain = [endorse.endorse(team["root"], "root", TEAM, "root", "Root", team["root"].public, True)]
    prev = "root"
    for i in range(2000):
        key = a if i % 2 else b
        signer = team["root"] if prev == "root" else (b if i % 2 else a)
        chain.append(endorse.endorse(signer, prev, TEAM, f"m{i}", "M", key.public, True))
        prev = f"m{i}"
    assert len(endorse.verify_endorsements(TEAM, fp, chain)) == 2001
