"""``handover team recover``: a team's whole vault into a vault file, with the offline recovery key.

The recovery identity printed at ``team init`` is what a team keeps for the day its last admin
leaves or loses their member key: no member can then endorse anyone, every chain starting at a
key nobody holds. It unwraps the team key (the ``team-recovery`` slot) and every version of every
client key (``recovery_wraps``). This writes them into a new single-user vault file, 0600, whose
holder can open everything (and move it into a new team with ``team init --from``):

1. a snapshot of every table (the same ciphertexts: PostgresStore.backup) into a temporary file;
2. in one transaction there: each client's current key wrapped under the team key (the file's
   master key), its slug lookup made again under the file's index key; the older key versions
   (after revokes, and a moved-in file's rekeys) put into the key history as epochs, so every
   older audit detail opens; the team's rows (members, grants, recovery wraps, team key slots, the
   team's meta) removed; a passphrase slot and a new recovery code; the commitments again and the
   entry ``team.recover``;
3. the file renamed into place. Any failure leaves no file.

The audit log keeps its MAC chain (under the team key's epochs), so ``audit verify`` holds in the
file; the members' signatures stay in their columns, no longer checked there.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from .errors import AlreadyExists, AuthenticationFailed, IntegrityError
from .keys import hierarchy as keys
from .store.models import AuditEntry, Client, Grant, KeySlot, Member, Meta, RecoveryWrap
from .team.grants import RECOVERY, unwrap_recovery
from .team.memberkey import MemberKey, MemberPublic

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .rekey import Epoch

TEAM_META = ("team_root", "team_recovery", "team_key_commitment", "team_index_key")


@dataclass(frozen=True)
class Recovered:
    path: Path
    recovery_code: str
    clients: int
    entries: int


def recover_team(url: str, identity: str, dest: Path, passphrase: str) -> Recovered:
    """Write the team at ``url`` into the new vault file ``dest`` (opened with ``passphrase``).

    Raises AuthenticationFailed (the identity opens neither the team key nor a client key),
    AlreadyExists (``dest`` exists), InvalidInput (not a team), IntegrityError.
    """
    from .teams import RECOVERY_SLOT, open_team_store, unwrap_team_key

    if dest.exists() or dest.is_symlink():
        raise AlreadyExists(f"{dest} already exists; choose another file name")
    secret = keys.new_passphrase(passphrase)
    st, meta = open_team_store(url, "a vault file is recovered with: handover recover")
    try:
        vault_id = meta["vault_id"].decode()
        offline = MemberKey(MemberPublic("", b""), identity.strip(), b"")
        with st.read() as s:
            slot = s.get(KeySlot, RECOVERY)
            if slot is None or slot.kind != RECOVERY_SLOT:
                raise IntegrityError("the team has no recovery key slot (removed on the server)")
            try:
                vmk = unwrap_team_key(vault_id, RECOVERY, offline, bytes(slot.wrapped))
                wraps = {
                    (w.client_id, w.key_version): unwrap_recovery(
                        identity.strip(), vault_id, w.client_id, w.key_version, bytes(w.wrapped)
                    )
                    for w in s.execute(select(RecoveryWrap)).scalars()
                }
            except (IntegrityError, ValueError):
                raise AuthenticationFailed(
                    "the recovery identity does not open this team's keys",
                    "check the file: AGE-SECRET-KEY-1…",
                ) from None
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        st.backup(tmp)
        try:
            code, clients, entries = _as_vault_file(tmp, vault_id, vmk, wraps, secret)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    finally:
        st.close()
    return Recovered(dest, code, clients, entries)


def _as_vault_file(
    path: Path, vault_id: str, vmk: bytes, wraps: dict[tuple[str, int], bytes], secret: bytes
) -> tuple[str, int, int]:
    from .core import Vault, _slot_row
    from .integrity.commitment import recompute_commitments
    from .keys.crypto import kdf_params
    from .rekey import read_epochs, write_epochs
    from .store.sqlite import SqliteStore, standalone

    vk = keys.VaultKeys(vault_id, vmk)
    store = SqliteStore(path)
    try:
        v = Vault(store, vk)
        v.record_head = False  # a temporary path: the file is recorded when it is first opened
        code = keys.new_recovery_code()
        params = kdf_params()
        with store.write("recovering the team into a vault file", bulk=True) as s:
            rows = list(s.execute(select(Client)).scalars())
            write_epochs(s, vk, _epochs(s, vk, read_epochs(s, vk), wraps, [r.id for r in rows]))
            for row in rows:
                key = wraps.get((row.id, row.key_version))
                if key is None:
                    raise IntegrityError(
                        f"client {row.id} has no recovery wrap of its key version {row.key_version}"
                    )
                row.wrapped_key = vk.wrap_client_key(row.id, key)
                row.lookup = vk.client_lookup(
                    str(v.clients.unseal(keys.ClientKeys(key), row).get("slug", ""))
                )
            for table in (Grant, RecoveryWrap, Member, KeySlot):
                s.execute(delete(table))
            s.execute(delete(Meta).where(Meta.key.in_(TEAM_META)))
            s.flush()
            for slot in keys.vault_file_slots(vault_id, secret, code, vmk, params):
                s.add(_slot_row(slot))
            s.flush()
            recompute_commitments(v, s)
            seq = v.audit.append(s, "team.recover", detail={"clients": len(rows)})
        return code, len(rows), seq
    finally:
        store.close()
        standalone(path)


def _epochs(
    s: Session,
    vk: keys.VaultKeys,
    existing: list[Epoch],
    wraps: dict[tuple[str, int], bytes],
    clients: list[str],
) -> list[Epoch]:
    """The key history of the vault file: the team's epochs, cut again wherever a client's key
    version changed (each ``team.revoke``), each holding every client's key of that time.

    A team opens an older client detail with the key version of its time (``AuditLog._key_version_at``);
    a vault file opens it with the epoch's key of the client. The cuts keep the same audit keys
    (an epoch boundary that is no rekey changes no MAC key)."""
    from .integrity.audit import key_version_at
    from .rekey import Epoch
    from .teams import chain_start

    team_start = chain_start(s)
    revokes: dict[str, list[int]] = {}
    for cid, seq in s.execute(
        select(AuditEntry.client_id, AuditEntry.seq)
        .where(AuditEntry.action == "team.revoke")
        .order_by(AuditEntry.seq)
    ):
        revokes.setdefault(str(cid), []).append(int(seq))
    cuts = sorted({e.until for e in existing} | {r - 1 for seqs in revokes.values() for r in seqs if r > 1})

    def covering(seq: int) -> Epoch | None:
        return next((e for e in existing if seq <= e.until), None)

    current = (vk.audit_mac_key, vk.audit_detail_key)
    out = []
    for cut in cuts:
        epoch = covering(cut)
        mac, detail = (epoch.mac_key, epoch.detail_key) if epoch is not None else current
        held: dict[str, bytes] = {}
        for cid in clients:
            key: Any = wraps.get((cid, key_version_at(cut, team_start, existing, revokes.get(cid, []))))
            if key is None and epoch is not None:
                key = epoch.clients.get(cid)
            if key is not None:
                held[cid] = key
        out.append(Epoch(cut, mac, detail, held))
    return out
