"""``handover rekey``: a new vault master key (VMK) and new client keys, everything re-encrypted.

``passwd`` re-wraps the VMK under a new passphrase, so whoever learnt the VMK (a leaked session
file and token, or the old passphrase together with a copy of the file) still holds the key to every
later version of the vault. ``rekey`` makes that knowledge useless for what follows. In ONE write
transaction it

1. makes a random new VMK and a random new data key for every client;
2. re-seals every client profile, record, previous version and attachment chunk under the new
   client key, with the same associated data (the AAD names vault, client, kind, id and version,
   none of which changes), and recomputes the keyed lookups and search tokens, which are derived
   from the keys;
3. re-wraps every client key and the Ed25519 signing key under the new VMK (the signing key stays:
   it is the vault's identity, printed in letters and receipts);
4. replaces the key slots: the passphrase slot is made again from the passphrase the caller gave
   (checked against the old slot first), and a *new* recovery code is made, returned to be shown
   once: the old code cannot be re-wrapped without being typed in, and after a leak it is safer new;
5. appends the audit entry ``vault.rekey``, MACed under the old audit key, and continues the chain
   under the new one (docs/spec.md, "Rekey"): the old audit keys and old client keys are kept,
   sealed under the new VMK in the ``key_history`` meta row, so the old entries still verify and
   their details still read; the head record is written under the new key.

A crash before the commit leaves the old vault, after it the new one (SQLite's transaction); never
a mix. After the commit every unlock session is dropped (session files deleted, so the warm agents
exit) and a session made before the rekey is refused even if its file is put back
(:func:`check_session_key`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, select, update

from .errors import AuthenticationFailed, IntegrityError, PolicyRefused
from .integrity.commitment import recompute_commitments
from .keys import crypto
from .keys import hierarchy as keys
from .keys.crypto import DecryptFailed
from .store.models import AuditEntry, Chunk, Client, KeySlot, Meta, Record, RecordVersion, SearchPosting

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .core import Vault
    from .store.engine import Store

HISTORY_KEY = "key_history"
HISTORY_FORMAT = 1
KEY_CHECK = b"handover-vault/v1 audit key check"
REKEY_ACTION = "vault.rekey"  # the entry that ends one key's epoch
_SESSION_FILE = re.compile(r"^[0-9a-f]{32}$")
BATCH = 1000  # records re-sealed per statement


# --- the key history: what the audit log needs of the keys before each rekey ----------------------


@dataclass
class Epoch:
    """The keys of the audit entries up to and including entry ``until`` (a ``vault.rekey``)."""

    until: int
    mac_key: bytes
    detail_key: bytes
    clients: dict[str, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        b64 = _b64
        return {
            "until": self.until,
            "audit_mac": b64(self.mac_key),
            "audit_detail": b64(self.detail_key),
            "clients": {cid: b64(k) for cid, k in sorted(self.clients.items())},
        }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _blob(value: Any) -> bytes:
    """A blob column's value; anything else a raw edit stored there (text, a number) as no bytes."""
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""


def history_aad(vault_id: str) -> bytes:
    return f"handover-vault/v1/key-history\x00{vault_id}".encode()


def read_epochs(s: Session, vk: keys.VaultKeys) -> list[Epoch]:
    """The key history (oldest first; empty for a vault never rekeyed). IntegrityError if altered."""
    row = s.get(Meta, HISTORY_KEY)
    if row is None:
        return []
    try:
        data = json.loads(vk.vmk_sealer.open(_blob(row.value), history_aad(vk.vault_id)))
        assert data["format"] == HISTORY_FORMAT
        return [
            Epoch(
                int(e["until"]),
                base64.b64decode(e["audit_mac"]),
                base64.b64decode(e["audit_detail"]),
                {cid: base64.b64decode(k) for cid, k in e["clients"].items()},
            )
            for e in data["epochs"]
        ]
    except (DecryptFailed, ValueError, KeyError, TypeError, AssertionError):
        raise IntegrityError(
            "the vault's key history (the audit keys before a rekey) does not decrypt: tampered",
            "run: handover audit verify",
        ) from None


def load_epochs(v: Vault) -> list[Epoch]:
    with v.read() as s:
        return read_epochs(s, v.keys)


def write_epochs(s: Session, vk: keys.VaultKeys, epochs: list[Epoch]) -> None:
    plain = json.dumps({"format": HISTORY_FORMAT, "epochs": [e.to_json() for e in epochs]}).encode()
    value = vk.vmk_sealer.seal(plain, history_aad(vk.vault_id))
    row = s.get(Meta, HISTORY_KEY)
    if row is None:
        s.add(Meta(key=HISTORY_KEY, value=value))
    else:
        row.value = value


def forget_client_keys(v: Vault, s: Session, client_id: str) -> None:
    """Drop a forgotten client's old keys from the history (``forget`` calls it in its transaction).

    Crypto-shredding must not leave an older key of the client behind: its old audit details
    become unreadable, as its current ones do.
    """
    epochs = read_epochs(s, v.keys)
    if any(client_id in e.clients for e in epochs):
        for e in epochs:
            e.clients.pop(client_id, None)
        write_epochs(s, v.keys, epochs)


def check_session_key(st: Store, vault_id: str, vmk: bytes) -> None:
    """Refuse a session whose VMK is not this vault's current one (made before a rekey).

    The signing key is wrapped under the current VMK and the audit head record is tagged under a key
    derived from it: after a rekey neither opens with the old VMK. Only when both fail is the
    session stale; one of them failing alone is tampering with that value, reported (exit 4) where
    it is used. Raises AuthenticationFailed (exit 3).
    """
    from .integrity.audit import HEAD_KEY, head_verifies

    with st.read() as s:
        row = s.get(Meta, "signing_private")
        wrapped = _blob(None if row is None else row.value)
        head = s.get(Meta, HEAD_KEY)
        head_value = None if head is None else head.value
    k = keys.VaultKeys(vault_id, vmk)
    try:
        k.unwrap_signing_key(wrapped)
        return
    except IntegrityError:
        pass
    if head_value is None or not head_verifies(k.audit_mac_key, vault_id, head_value):
        raise AuthenticationFailed(
            "the session no longer opens this vault: it was made before the vault was rekeyed",
            "unlock again with: eval $(handover unlock)",
        ) from None


# --- the rekey -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rekeyed:
    """What ``rekey`` did. ``vault`` is the vault under its new keys (the old object is spent)."""

    vault: Vault
    recovery_code: str
    clients: int
    records: int
    versions: int
    chunks: int
    audit_seq: int
    sessions_dropped: int


@dataclass
class _Counts:
    records: int = 0
    versions: int = 0
    chunks: int = 0


def reseal_profile(v: Vault, s: Session, new: keys.VaultKeys) -> None:
    """The technician profile (``meta.profile``, sealed under the VMK) under the new master key."""
    from .profile import META_KEY

    row = s.get(Meta, META_KEY)
    if row is not None:
        row.value = new.vmk_sealer.seal(v.profile.plaintext(s), new.profile_aad())


def rekey(v: Vault, passphrase: str) -> Rekeyed:
    """Re-key the vault ``v`` (opened with ``passphrase``). The old ``v`` must not be used after.

    Raises AuthenticationFailed (the passphrase does not open the passphrase slot), IntegrityError
    (the audit chain or a record is broken: nothing is changed), Busy/StorageError (nothing changed).
    """
    from .core import _slot_row, _unlock_with
    from .integrity.audit import Head
    from .keys.crypto import kdf_params

    if v.keys.team:
        raise PolicyRefused(
            "rekey is for a vault file; in a team vault, revoke re-keys a client (handover revoke SLUG MEMBER)"
        )
    secret = keys.normalise_passphrase(passphrase)
    if _unlock_with(v.store, v.vault_id, "passphrase", secret) != v.keys.vmk:
        raise AuthenticationFailed("wrong passphrase")
    v.audit.verify()  # a broken chain is not carried over into a new epoch
    new = keys.VaultKeys(v.vault_id, crypto.random_key())
    code = keys.new_recovery_code()
    params = kdf_params()
    slots = keys.vault_file_slots(v.vault_id, secret, code, new.vmk, params)
    n = _Counts()
    with v.write("re-keying the vault", bulk=True) as s:
        epochs = read_epochs(s, v.keys)
        old_clients: dict[str, bytes] = {}
        client_rows = list(s.execute(select(Client)).scalars())
        for row in client_rows:
            old_clients[row.id] = _rekey_client(v, s, new, row, n)
        meta = s.get(Meta, "signing_private")
        assert meta is not None
        meta.value = new.wrap_signing_key(v.keys.unwrap_signing_key(_blob(meta.value)))
        reseal_profile(v, s, new)
        s.execute(delete(KeySlot))
        for slot in slots:
            s.add(_slot_row(slot))
        s.flush()
        renewed = _vault_with(v, new)
        # Every commitment again under the new commitment key (DESIGN §3a): the bridge entry
        # appended next carries it.
        recompute_commitments(renewed, s)
        # The bridge: this entry is the last of the old key's epoch (MAC, detail and head under the
        # old keys); the key history then records where the epoch ended, and the head record is
        # written again under the new key, so the next entry chains on under it.
        seq = v.audit.append(
            s,
            REKEY_ACTION,
            detail={
                "epoch": len(epochs) + 1,
                "clients": len(client_rows),
                "records": n.records,
                "versions": n.versions,
                "chunks": n.chunks,
                "slots": [slot.id for slot in slots],
                "new_key_check": crypto.mac(new.audit_mac_key, KEY_CHECK).hex(),
            },
        )
        epochs.append(Epoch(seq, v.keys.audit_mac_key, v.keys.audit_detail_key, old_clients))
        write_epochs(s, new, epochs)
        entry = s.get(AuditEntry, seq)
        assert entry is not None
        renewed.audit.adopt_head(s, Head(seq, bytes(entry.mac)))
    dropped = drop_sessions()
    return Rekeyed(renewed, code, len(client_rows), n.records, n.versions, n.chunks, seq, dropped)


def _vault_with(v: Vault, new: keys.VaultKeys) -> Vault:
    from .core import Vault

    return Vault(v.store, new)


def _rekey_client(v: Vault, s: Session, new: keys.VaultKeys, row: Client, n: _Counts) -> bytes:
    """Re-seal one client's profile, records, versions and chunks; return its old data key."""
    from .clients import ClientRef

    old = v.clients.load(row)
    key = crypto.random_key()
    fresh = ClientRef(old.id, old.version, old.created_at, old.updated_at, keys.ClientKeys(key), old.data)
    row.wrapped_key = new.wrap_client_key(row.id, key)
    row.lookup = new.client_lookup(old.slug)
    row.envelope = v.clients._seal(fresh.keys, row.id, row.version, old.data)
    s.flush()
    _rekey_records(v, s, old, fresh, n)
    _rekey_versions(v, s, old, fresh, n)
    _rekey_chunks(v, s, old, fresh, n)
    return old.keys.key


def _rekey_records(v: Vault, s: Session, old: ClientRef, fresh: ClientRef, n: _Counts) -> None:
    """Re-seal the client's records, and write their search tokens under the new key, in batches
    (a client of 100,000 records is never held in memory at once)."""
    from .store.index import index_new_records
    from .store.records import Rec

    s.execute(delete(SearchPosting).where(SearchPosting.client_id == old.id))
    ids = list(s.execute(select(Record.id).where(Record.client_id == old.id).order_by(Record.id)).scalars())
    t: Any = Record.__table__
    stmt = (
        update(t)
        .where(t.c.id == bindparam("b_id"))
        .values(envelope=bindparam("b_envelope"), lookup=bindparam("b_lookup"))
    )
    for at in range(0, len(ids), BATCH):
        rows = s.execute(
            select(
                t.c.id, t.c.kind, t.c.version, t.c.lookup, t.c.created_at, t.c.updated_at, t.c.envelope
            ).where(t.c.id.in_(ids[at : at + BATCH]))
        ).all()
        recs, params = [], []
        for rid, kind, version, lookup, created, updated, blob in rows:
            data = v.records.unseal(old, kind, rid, version, blob)
            params.append(
                {
                    "b_id": rid,
                    "b_envelope": v.records.seal(fresh, kind, rid, version, data),
                    "b_lookup": _relookup(old, fresh, kind, rid, lookup, data),
                }
            )
            recs.append(Rec(rid, old.id, kind, version, created, updated, data))
        s.connection().execute(stmt, params)
        index_new_records(s, fresh, recs)
        n.records += len(params)


def _relookup(old: ClientRef, fresh: ClientRef, kind: str, rid: str, lookup: str | None, data: Any) -> Any:
    """The record's keyed name lookup under the new key (the name is the value the old one hashes)."""
    if lookup is None:
        return None
    for value in data.values():
        if isinstance(value, str) and old.keys.record_lookup(kind, value) == lookup:
            return fresh.keys.record_lookup(kind, value)
    raise IntegrityError(f"{kind} {rid} does not match its lookup entry: tampered; nothing was changed")


def _rekey_versions(v: Vault, s: Session, old: ClientRef, fresh: ClientRef, n: _Counts) -> None:
    rows = s.execute(
        select(RecordVersion.record_id, RecordVersion.version, Record.kind, RecordVersion.envelope)
        .join(Record, Record.id == RecordVersion.record_id)
        .where(Record.client_id == old.id)
    ).all()
    params = [
        {
            "b_id": rid,
            "b_version": version,
            "b_envelope": v.records.seal(
                fresh, kind, rid, version, v.records.unseal(old, kind, rid, version, blob)
            ),
        }
        for rid, version, kind, blob in rows
    ]
    if params:
        t: Any = RecordVersion.__table__
        stmt = (
            update(t)
            .where(t.c.record_id == bindparam("b_id"), t.c.version == bindparam("b_version"))
            .values(envelope=bindparam("b_envelope"))
        )
        s.connection().execute(stmt, params)
    n.versions += len(params)


def _rekey_chunks(v: Vault, s: Session, old: ClientRef, fresh: ClientRef, n: _Counts) -> None:
    """One chunk at a time (an attachment may be hundreds of MiB): memory stays flat."""
    from .attachments import chunk_aad

    keys_ = s.execute(
        select(Chunk.record_id, Chunk.seq)
        .join(Record, Record.id == Chunk.record_id)
        .where(Record.client_id == old.id)
        .order_by(Chunk.record_id, Chunk.seq)
    ).all()
    t: Any = Chunk.__table__
    conn = s.connection()
    for rid, seq in keys_:
        blob = conn.execute(select(t.c.envelope).where(t.c.record_id == rid, t.c.seq == seq)).scalar_one()
        aad = chunk_aad(v.vault_id, old.id, rid, seq)
        try:
            block = old.keys.sealer.open(blob, aad)
        except DecryptFailed:
            raise IntegrityError(
                f"attachment {rid}: chunk {seq} does not decrypt (tampered); nothing was changed"
            ) from None
        conn.execute(
            update(t)
            .where(t.c.record_id == rid, t.c.seq == seq)
            .values(envelope=fresh.keys.sealer.seal(block, aad))
        )
    n.chunks += len(keys_)


def drop_sessions() -> int:
    """Delete every unlock session file of this user (the warm agents then exit).

    Session files are sealed under keys only their tokens hold, so which vault each one opens is
    not known here: all of them go (docs/security.md says so). Returns how many were deleted.
    """
    from .paths import sessions_dir

    count = 0
    folder = sessions_dir()
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        if _SESSION_FILE.match(path.name) and not path.is_symlink() and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                count += 1
    return count
