"""The team audit chain (vault/team/chain.py): signed by each member, hash-chained, faults named."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handover_vault.team import chain, memberkey
from handover_vault.team.chain import Entry
from handover_vault.team.encoding import frame, unframe
from handover_vault.team.memberkey import MemberKey

TEAM = "team-1"
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MemberKey]:
    d = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as mp:  # the lowered KDF for these keys only
        mp.setenv("HANDOVER_KDF", "minimum")
        return {n: memberkey.create(d / n, PASSPHRASE) for n in ("ann", "tom", "eve")}


def _publics(keys: dict[str, MemberKey], *names: str) -> dict[str, bytes]:
    return {n: keys[n].public.ed25519 for n in names}


def _chain(keys: dict[str, MemberKey], who: list[str]) -> list[Entry]:
    out: list[Entry] = []
    prev = chain.genesis(TEAM)
    for i, name in enumerate(who, start=1):
        e = Entry(
            i,
            f"2026-12-02T10:00:{i:02d}Z",
            name,
            "cred.reveal",
            "c1",
            f"r{i}",
            "client",
            f"detail {i}".encode(),
            b"\x01" * 32,
            prev,
        )
        e = chain.sign_entry(keys[name], TEAM, e)
        prev = chain.entry_hash(TEAM, e)
        out.append(e)
    return out


def test_a_valid_chain_verifies_and_gives_its_head(keys: dict[str, MemberKey]) -> None:
    entries = _chain(keys, ["ann", "tom", "ann", "tom"])
    verdict = chain.verify_chain(TEAM, entries, _publics(keys, "ann", "tom"))
    assert verdict.ok and verdict.count == 4
    assert verdict.head == chain.entry_hash(TEAM, entries[-1])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("action", "cred.show"),
        ("client_id", "c2"),
        ("record_id", None),
        ("detail", b"other"),
        ("commitment", None),
        ("at", "2026-12-02T11:00:00Z"),
        ("scope", "vault"),
    ],
)
def test_an_edited_field_is_a_bad_signature_naming_entry_and_member(
    keys: dict[str, MemberKey], field: str, value: object
) -> None:
    entries = _chain(keys, ["ann", "tom", "ann"])
    entries[1] = replace(entries[1], **{field: value})
    v = chain.verify_chain(TEAM, entries, _publics(keys, "ann", "tom"))
    assert (v.ok, v.count, v.bad_seq, v.bad_member, v.reason) == (False, 1, 2, "tom", "bad signature")


def test_a_member_cannot_write_in_another_members_name(keys: dict[str, MemberKey]) -> None:
    entries = _chain(keys, ["ann", "tom"])
    forged = chain.sign_entry(keys["eve"], TEAM, replace(entries[1], member_id="tom", signature=b""))
    v = chain.verify_chain(TEAM, [entries[0], forged], _publics(keys, "ann", "tom", "eve"))
    assert (v.bad_seq, v.bad_member, v.reason) == (2, "tom", "bad signature")


def test_an_unknown_or_unendorsed_member_is_named(keys: dict[str, MemberKey]) -> None:
    entries = _chain(keys, ["ann", "eve"])
    v = chain.verify_chain(TEAM, entries, _publics(keys, "ann"))  # eve has no endorsed key
    assert (v.bad_seq, v.bad_member, v.reason) == (2, "eve", "unknown member")


def test_removed_reordered_and_relinked_entries_are_caught(keys: dict[str, MemberKey]) -> None:
    entries = _chain(keys, ["ann", "tom", "ann", "tom"])
    members = _publics(keys, "ann", "tom")
    gap = chain.verify_chain(TEAM, entries[:1] + entries[2:], members)
    assert (gap.bad_seq, gap.reason) == (3, "sequence gap")
    swapped = chain.verify_chain(TEAM, [entries[0], entries[2], entries[1], entries[3]], members)
    assert (swapped.bad_seq, swapped.reason) == (3, "sequence gap")
    replayed = chain.verify_chain(TEAM, [*entries, entries[1]], members)
    assert (replayed.count, replayed.bad_seq, replayed.reason) == (4, 2, "out of order")
    # An entry renumbered and re-signed by its own member still breaks the link it was cut from.
    cut = replace(entries[2], seq=2, signature=b"")
    v = chain.verify_chain(TEAM, [entries[0], chain.sign_entry(keys["ann"], TEAM, cut)], members)
    assert (v.bad_seq, v.bad_member, v.reason) == (2, "ann", "broken link")
    # The tail of a truncated chain verifies on its own: only an outside head (a checkpoint, a
    # receipt, the per-member head file) shows that entries 3 and 4 existed.
    short = chain.verify_chain(TEAM, entries[:2], members)
    assert short.ok and short.head != chain.verify_chain(TEAM, entries, members).head


def test_a_chain_does_not_verify_in_another_team(keys: dict[str, MemberKey]) -> None:
    entries = _chain(keys, ["ann"])
    v = chain.verify_chain("team-2", entries, _publics(keys, "ann"))
    assert (v.bad_seq, v.reason) == (1, "broken link")


def test_an_embedded_head_is_signed_and_only_on_the_first_entry(keys: dict[str, MemberKey]) -> None:
    first = chain.sign_entry(
        keys["ann"],
        TEAM,
        Entry(
            1,
            "2026-12-02T10:00:00Z",
            "ann",
            "team.init",
            None,
            None,
            "vault",
            b"",
            None,
            chain.genesis(TEAM),
            embedded_head=b"\x07" * 73,
        ),
    )
    members = _publics(keys, "ann")
    assert chain.verify_chain(TEAM, [first], members).ok
    assert (
        chain.verify_chain(TEAM, [replace(first, embedded_head=b"\x08" * 73)], members).reason
        == "bad signature"
    )
    second = chain.sign_entry(
        keys["ann"],
        TEAM,
        Entry(
            2,
            "2026-12-02T10:00:01Z",
            "ann",
            "x",
            None,
            None,
            "vault",
            b"",
            None,
            chain.entry_hash(TEAM, first),
            embedded_head=b"\x01",
        ),
    )
    assert (
        chain.verify_chain(TEAM, [first, second], members).reason == "an embedded head after the first entry"
    )


def test_a_damaged_signature_or_key_is_a_fault_not_a_crash(keys: dict[str, MemberKey]) -> None:
    entries = _chain(keys, ["ann"])
    assert (
        chain.verify_chain(TEAM, [replace(entries[0], signature=b"\x00" * 10)], _publics(keys, "ann")).reason
        == "bad signature"
    )
    assert chain.verify_chain(TEAM, entries, {"ann": b"short"}).reason == "unknown member"


_FIELD = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=64), st.text(max_size=32)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELD, max_size=12), st.lists(_FIELD, max_size=12))
def test_the_entry_encoding_is_injective_and_round_trips(a: list[object], b: list[object]) -> None:
    fa, fb = frame(chain.ENTRY_DOMAIN, *a), frame(chain.ENTRY_DOMAIN, *b)  # type: ignore[arg-type]
    assert list(unframe(chain.ENTRY_DOMAIN, fa)) == a
    if [(type(x), x) for x in a] != [(type(y), y) for y in b]:
        assert fa != fb


def test_a_removed_member_signs_nothing_after_their_removal(keys: dict[str, MemberKey]) -> None:
    """tom was removed by entry 2 (an admin's signed ``member.remove``): his entry 1 stays his,
    an entry he signs after it is refused, whatever else holds (the link, his signature)."""
    entries = _chain(keys, ["tom", "ann", "ann", "tom"])
    members = _publics(keys, "ann", "tom")
    assert chain.verify_chain(TEAM, entries[:3], members, removed={"tom": 2}).ok
    v = chain.verify_chain(TEAM, entries, members, removed={"tom": 2})
    assert (v.ok, v.count, v.bad_seq, v.bad_member, v.reason) == (False, 3, 4, "tom", "signed after removal")
    assert chain.verify_chain(TEAM, entries, members).ok  # without the removal, the same chain holds
