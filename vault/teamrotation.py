"""A new team key when a member leaves (``member remove``: DESIGN §12).

Revoking every client a member held re-keys those clients, but the member also held the *team
key*: the audit MAC and vault-wide detail keys, the state commitment, the signing key's wrap and
the technician profile. A copy of it kept on their machine would read every vault-wide audit detail
written later and compute MACs over a log they could write to. So the removal ends with a rotation,
in the same write transaction (a crash leaves the old team or the new one, never a mix):

1. a random new team key;
2. the signing key and the profile sealed again under it; the client-index key (the slugs' keyed
   lookups) carried over, sealed under it (``TeamKeys.adopt_index_key`` says why it is kept);
3. every team key slot made again: wrapped to each remaining member whose endorsement chain leads
   to the first admin pinned on this machine, and to the offline recovery key;
4. every commitment again under the new key; then the bridge entry ``team.rekey``, the last of the
   old key's epoch (MAC and detail under the old keys, as ``rekey``'s ``vault.rekey``); the old
   audit keys go into the key history (vault/rekey.py), sealed under the new key, so every member
   still verifies and reads the old entries; the head record is written under the new key.

What it cannot take back: what the member already read or copied (the at-risk list of each
revoke), and the vault's signing key, which they could unwrap while they held the team key. The
signing key is the vault's identity in letters, receipts and bundles already sent, so it is
re-wrapped, not replaced here; ``member remove --new-signing-key`` (or ``handover
new-signing-key`` later) replaces it (vault/signing_keys.py).

Every other member's session ends with it (the session's team key is no longer the team's:
``core._unlock_team``), and a command another member started before the rotation commits is
refused as a rotation, with nothing written (``AuditLog._refuse_a_rotated_team_key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from .keys import crypto
from .store.models import AuditEntry, KeySlot, Meta
from .team import keycheck
from .team.endorse import verify_endorsements
from .team.grants import RECOVERY
from .team.memberkey import MemberPublic

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .core import Vault

ACTION = "team.rekey"


@dataclass(frozen=True)
class Rotation:
    """What the rotation did. ``vault`` is the team under its new key (the old object is spent)."""

    vault: Vault
    epoch: int
    members: list[str]  # the names of the members the new key was wrapped to
    audit_seq: int
    dropped: list[str]  # members who held the old key but whose endorsement chain no longer holds


def rotate_team_key(v: Vault, s: Session, reason: str) -> Rotation:
    """Give the team ``v`` a new team key inside the caller's write transaction ``s``.

    ``reason`` is said in the bridge entry (``member.remove``). The caller commits; afterwards it
    uses only ``Rotation.vault``.
    """
    from .core import Vault
    from .integrity.audit import Head
    from .integrity.commitment import recompute_commitments
    from .rekey import KEY_CHECK, Epoch, _blob, read_epochs, reseal_profile, write_epochs
    from .teamkeys import INDEX_KEY, TeamKeys
    from .teams import (
        MEMBER_SLOT,
        RECOVERY_SLOT,
        _pinned,
        _slot,
        _team_keys,
        _wrap_team_key,
        gone_members,
        members,
    )

    k = _team_keys(v)
    new = TeamKeys(
        v.vault_id, crypto.random_key(), k.member, k.member_id, k.admins, k.recovery_recipient, k.removed
    )
    new.client_index_key = k.client_index_key
    epochs = read_epochs(s, k)

    index = s.get(Meta, INDEX_KEY)
    if index is None:
        s.add(Meta(key=INDEX_KEY, value=new.sealed_index_key()))
    else:
        index.value = new.sealed_index_key()
    signing = s.get(Meta, "signing_private")
    assert signing is not None
    signing.value = new.wrap_signing_key(k.unwrap_signing_key(_blob(signing.value)))
    reseal_profile(v, s, new)

    # The slots: only to members who held the team key and whose chain still leads to the pin.
    rows = members(s, gone_members(s, k))
    valid = verify_endorsements(v.vault_id, _pinned(v), rows)
    held = set(s.execute(select(KeySlot.id).where(KeySlot.kind == MEMBER_SLOT)).scalars())
    names = {m.member_id: m.name for m in rows}
    kept = sorted(mid for mid in valid if mid in held)
    dropped = sorted(names.get(mid, mid) for mid in held if mid not in valid)
    s.execute(delete(KeySlot))  # a team has only member slots and the recovery key's
    s.flush()
    for mid in kept:
        s.add(_slot(mid, MEMBER_SLOT, _wrap_team_key(v.vault_id, mid, valid[mid], new.vmk)))
    recovery = MemberPublic(k.recovery_recipient, b"")
    s.add(_slot(RECOVERY, RECOVERY_SLOT, _wrap_team_key(v.vault_id, RECOVERY, recovery, new.vmk)))
    vouched = s.get(Meta, keycheck.META_KEY)  # this admin vouches for the new key (team/keycheck.py)
    value = keycheck.sign(k.member, k.member_id, v.vault_id, new.vmk)
    if vouched is None:
        s.add(Meta(key=keycheck.META_KEY, value=value))
    else:
        vouched.value = value
    s.flush()

    renewed = Vault(v.store, new)
    recompute_commitments(renewed, s)  # the bridge entry appended next carries them
    epoch = len(epochs) + 1
    kept_names = sorted(names[mid] for mid in kept)
    seq = v.audit.append(
        s,
        ACTION,
        detail={
            "epoch": epoch,
            "reason": reason,
            "members": kept_names,
            "dropped": dropped,
            "new_key_check": crypto.mac(new.audit_mac_key, KEY_CHECK).hex(),
        },
    )
    epochs.append(Epoch(seq, k.audit_mac_key, k.audit_detail_key, {}))
    write_epochs(s, new, epochs)
    entry = s.get(AuditEntry, seq)
    assert entry is not None
    renewed.audit.adopt_head(s, Head(seq, bytes(entry.mac)))
    return Rotation(renewed, epoch, kept_names, seq, dropped)
