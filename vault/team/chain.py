"""The team audit chain: every entry signed by the member who made it and hash-chained (DESIGN §12).

In a team vault several people write one log, so a shared MAC key would let any member forge any
entry. Each entry is therefore signed with its member's Ed25519 key over a canonical message
(``encoding.frame``) that holds every field and the hash of the entry before it; an entry's hash
covers that message and the signature. Changing, removing, reordering or inserting an entry breaks
the link after it, and no member can produce an entry in another member's name. The sequence is
the chain's own (1, 2, 3, …), never a database sequence or a timestamp. docs/spec.md ("Team audit
chain") gives the byte layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from ..keys.crypto import Verifier
from .encoding import frame
from .memberkey import MemberKey

ENTRY_DOMAIN = b"handover-vault/v1/team-audit-entry"
HASH_DOMAIN = b"handover-vault/v1/team-audit-hash"
GENESIS_DOMAIN = b"handover-vault/v1/team-audit-genesis"
SIGNATURE_SIZE = 64  # Ed25519


@dataclass(frozen=True)
class Entry:
    """One entry as stored. ``detail`` is ciphertext (the store seals it); ``embedded_head`` is set
    only on the first entry of a team moved in from a single-user vault (that vault's verified head)."""

    seq: int
    at: str
    member_id: str
    action: str
    client_id: str | None
    record_id: str | None
    scope: str
    detail: bytes
    commitment: bytes | None
    prev_hash: bytes
    signature: bytes = b""
    embedded_head: bytes | None = None


def genesis(team_id: str) -> bytes:
    """The ``prev_hash`` of entry 1: bound to the team, so a chain cannot be replayed in another."""
    return hashlib.sha256(frame(GENESIS_DOMAIN, team_id)).digest()


def message(team_id: str, e: Entry) -> bytes:
    """What the member signs: every field but the signature, with the team id."""
    return frame(
        ENTRY_DOMAIN,
        team_id,
        e.seq,
        e.at,
        e.member_id,
        e.action,
        e.client_id,
        e.record_id,
        e.scope,
        e.detail,
        e.commitment,
        e.prev_hash,
        e.embedded_head,
    )


def _hash(signed: bytes, signature: bytes) -> bytes:
    return hashlib.sha256(HASH_DOMAIN + signed + signature).digest()


def entry_hash(team_id: str, e: Entry) -> bytes:
    """The hash the next entry's ``prev_hash`` must equal."""
    return _hash(message(team_id, e), e.signature)


def sign_entry(member: MemberKey, team_id: str, e: Entry) -> Entry:
    """``e`` with ``member``'s signature. An entry that names another member then fails
    :func:`verify_chain` (it is checked under the key registered for the member it names)."""
    return replace(e, signature=member.sign(message(team_id, e)))


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`verify_chain`: how many entries held, and the first that did not."""

    count: int
    head: bytes
    bad_seq: int | None = None
    bad_member: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def verify_chain(
    team_id: str,
    entries: Iterable[Entry],
    members: Mapping[str, bytes],
    first_seq: int = 1,
    prev: bytes | None = None,
    removed: Mapping[str, int] | None = None,
) -> Verdict:
    """Walk the chain in storage order; stop at the first entry that does not hold.

    ``members`` maps member id to raw Ed25519 public key (only keys with a valid endorsement chain:
    ``endorse.verify_endorsements``). Each key is loaded once. Reasons name the fault without
    content: ``sequence gap``, ``out of order``, ``broken link``, ``unknown member``, ``signed after
    removal``, ``bad signature``.
    ``first_seq``: the number of the chain's first entry (a team moved in from a vault file goes
    on from that vault's entries, whose own HMAC chain vouches for them). ``prev``: the hash of
    the entry before ``first_seq`` when the walk starts inside the chain (one already verified).
    ``removed``: member id to the entry that removed them (an admin's signed ``member.remove``);
    an entry they sign after it is ``signed after removal``.
    """
    removed = removed or {}
    verifiers: dict[str, Verifier | None] = {}
    prev = genesis(team_id) if prev is None else prev
    expected = first_seq
    count = 0
    for e in entries:
        fault = None
        if e.seq != expected:
            fault = "sequence gap" if e.seq > expected else "out of order"
        elif e.prev_hash != prev:
            fault = "broken link"
        elif e.embedded_head is not None and (e.seq != first_seq or prev != genesis(team_id)):
            fault = "an embedded head after the first entry"
        else:
            if e.member_id in verifiers:
                verify = verifiers[e.member_id]
            else:
                raw = members.get(e.member_id)
                try:
                    verify = Verifier(raw) if raw is not None else None
                except ValueError:  # not an Ed25519 key: as good as none
                    verify = None
                verifiers[e.member_id] = verify
            signed = message(team_id, e)
            if verify is None:
                fault = "unknown member"
            elif e.seq > removed.get(e.member_id, e.seq):
                fault = "signed after removal"
            elif len(e.signature) != SIGNATURE_SIZE or not verify(e.signature, signed):
                fault = "bad signature"
        if fault is not None:
            return Verdict(count, prev, e.seq, e.member_id, fault)
        prev = _hash(signed, e.signature)
        expected += 1
        count += 1
    return Verdict(count, prev)
