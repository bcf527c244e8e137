"""Team vaults: create one, join it, endorse members, grant and revoke clients (DESIGN §12).

A team vault is a vault in PostgreSQL whose team key is wrapped to each endorsed member (key slots
of kind ``member``) and to the team's offline recovery key, and whose client keys live only in
grants (vault/teamkeys.py). The first admin's fingerprint is pinned in the database and, what
counts, on each member's machine (:mod:`vault.team.pins`) at ``team join``: a server that swaps
the members' rows cannot make a member wrap a key to a key of its own.

>>> v, recovery = init_team(url, member_key, "alice")         # alice is the first admin
>>> join_team(url, bob_key, "bob", admin_fingerprint)         # bob registers, pins alice
>>> add_member(v, "bob", bob_fingerprint)                     # alice endorses bob
>>> grant(v, "acme", "bob")                                   # bob may now open acme
>>> revoked = revoke(v, "acme", "bob")                        # acme re-keyed; revoked.at_risk
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from .clock import utcnow
from .errors import (
    AlreadyExists,
    AuthenticationFailed,
    IntegrityError,
    InvalidInput,
    NoAccess,
    NotFound,
    PolicyRefused,
)
from .keys import crypto
from .store.models import Client, Grant, KeySlot, Meta
from .team import keycheck, pins
from .team.chain import Verdict
from .team.endorse import Member as MemberRow
from .team.endorse import endorse, endorsed_admins, require_endorsed, verify_endorsements
from .team.grants import RECOVERY, Binding, new_recovery_identity, unwrap, verify_grant, wrap_for
from .team.memberkey import MemberKey, MemberPublic
from .teamkeys import INDEX_KEY, TeamKeys

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .core import Vault
    from .store.engine import Store
    from .teamrotation import Rotation

ROOT_KEY = "team_root"  # meta: the first admin's fingerprint (core.TEAM_ROOT)
RECOVERY_KEY = "team_recovery"  # meta: the offline recovery key's age recipient
MEMBER_SLOT = "member"
RECOVERY_SLOT = "team-recovery"
TEAM_KEY_CLIENT = "*team key*"  # the client id field of the team key's binding (never a client's id)


# --- rows ------------------------------------------------------------------------------------------


def _member(row: Any) -> MemberRow:
    return MemberRow(
        row.id,
        row.name,
        MemberPublic(row.x25519, bytes(row.ed25519)),
        bool(row.admin),
        row.endorsed_by,
        bytes(row.endorsement),
    )


def members(s: Session, gone: frozenset[str] = frozenset()) -> list[MemberRow]:
    """Every member row that is not removed (a removed member's grants are gone, its row stays),
    and none whose fingerprint is in ``gone`` (:func:`gone_members`: ``removed_at`` is a column the
    server could clear, the signed log entries and this machine's pin are not)."""
    from .store.models import Member

    rows = [_member(r) for r in s.execute(select(Member).where(Member.removed_at.is_(None))).scalars()]
    return [m for m in rows if m.public.fingerprint not in gone]


def gone_members(s: Session, keys: Any) -> frozenset[str]:
    """The members removed for good: those the audit log's signed ``member.remove`` entries name,
    and those this machine has seen removed (``TeamKeys.removed``: the server could delete the
    entry, not the pin)."""
    return frozenset(removed_by_log(s, keys.vault_id)) | getattr(keys, "removed", frozenset())


def removed_by_log(s: Session, vault_id: str) -> dict[str, int]:
    """The fingerprints named by the ``member.remove`` entries that their (admin) member signed,
    each with the sequence number of its removal (the first, if the log names one twice).

    The removed member is the entry's ``record_id`` (signed and MACed, in clear): what a member
    is checked against never depends on a key, least of all on the team key being checked.
    """
    from .store.models import AuditEntry, Member

    found: dict[str, int] = {}
    entries = (
        s.execute(select(AuditEntry).where(AuditEntry.action == "member.remove").order_by(AuditEntry.seq))
        .scalars()
        .all()
    )
    for e in entries:
        gone = s.get(Member, e.record_id) if e.record_id else None
        if gone is not None and _signed_by_member(s, vault_id, e, admin=True):
            # The removed member's keys as the rows hold them for that id: a row whose keys the
            # server swapped has no valid endorsement, so it is no member anyway.
            found.setdefault(_member(gone).public.fingerprint, e.seq)
    return found


def _signed_by_member(s: Session, vault_id: str, e: Any, admin: bool) -> bool:
    """Whether audit entry ``e`` carries the valid signature of the member it names (an admin,
    with ``admin``), under the keys their row holds."""
    from .store.models import Member
    from .team.chain import message

    signer = s.get(Member, e.member_id) if e.member_id else None
    if signer is None or e.signature is None or (admin and not signer.admin):
        return False
    return crypto.verify_signature(
        bytes(signer.ed25519), bytes(e.signature), message(vault_id, _chain_entry(e))
    )


def check_removals_rotated(s: Session) -> None:
    """Every ``member.remove`` entry is followed by the ``team.rekey`` of its own transaction.

    A log cut right after a removal (with the old slots and key commitment put back) would be a
    consistent team under the team key the removed member knows; such a state never existed, so
    it is refused (IntegrityError) before any key is used.
    """
    from .store.models import AuditEntry
    from .teamrotation import ACTION as REKEY

    removals = s.execute(select(AuditEntry.seq).where(AuditEntry.action == "member.remove")).scalars().all()
    if not removals:
        return
    rotations = set(s.execute(select(AuditEntry.seq).where(AuditEntry.action == REKEY)).scalars())
    for seq in removals:
        if seq + 1 not in rotations:
            raise IntegrityError(
                f"audit entry {seq} removes a member, but the rotation of the team key written with it "
                f"(entry {seq + 1}) is not there: the log was cut back on the server; nothing was opened",
                "check with your team's admin; restore the database from a backup",
            )


def _member_row(
    member_id: str, name: str, public: MemberPublic, admin: bool, by: str, endorsement: bytes
) -> Any:
    from .store.models import Member

    return Member(
        id=member_id,
        name=name,
        x25519=public.x25519,
        ed25519=public.ed25519,
        fingerprint=public.fingerprint,
        admin=admin,
        endorsed_by=by,
        endorsement=endorsement,
        created_at=utcnow(),
    )


def _slot(member_id: str, kind: str, wrapped: bytes) -> KeySlot:
    # A team key slot is an age wrap, not a passphrase slot: no KDF parameters.
    return KeySlot(
        id=member_id,
        kind=kind,
        salt=b"",
        memory_kib=0,
        iterations=0,
        lanes=0,
        wrapped=wrapped,
        created_at=utcnow(),
    )


def _wrap_team_key(team_id: str, member_id: str, public: MemberPublic, vmk: bytes) -> bytes:
    return wrap_for(public, Binding(team_id, TEAM_KEY_CLIENT, 0, member_id), vmk)


def unwrap_team_key(team_id: str, member_id: str, key: MemberKey, wrapped: bytes) -> bytes:
    """The team key from the slot of ``member_id`` (or ``RECOVERY``). IntegrityError if it does
    not open with ``key`` or is bound to another slot."""
    return unwrap(key, Binding(team_id, TEAM_KEY_CLIENT, 0, member_id), wrapped)


def is_team(meta: dict[str, bytes]) -> bool:
    return ROOT_KEY in meta


# --- creating ----------------------------------------------------------------------------------------


def _empty_database(url: str) -> Store:
    """The store of the database at ``url`` with today's schema, refused unless it holds no vault."""
    from .store.engine import upgrade
    from .store.postgres import PostgresStore

    st = PostgresStore(url)
    try:
        if not st.is_empty():
            raise AlreadyExists(f"the database {st.location} already holds a vault; refusing to overwrite it")
        upgrade(st)
    except BaseException:
        st.close()
        raise
    return st


def _first_admin_rows(
    vault_id: str, vmk: bytes, key: MemberKey, member_id: str, name: str, recovery_recipient: str
) -> list[Any]:
    """What makes a vault a team: the pinned first admin (self-endorsed), the team key wrapped to
    them and to the recovery key, and the recovery key's recipient."""
    me = endorse(key, member_id, vault_id, member_id, name, key.public, True)
    recovery = MemberPublic(recovery_recipient, b"")
    return [
        Meta(key=ROOT_KEY, value=key.public.fingerprint.encode()),
        Meta(key=RECOVERY_KEY, value=recovery_recipient.encode()),
        Meta(key=keycheck.META_KEY, value=keycheck.sign(key, member_id, vault_id, vmk)),
        _member_row(member_id, name, key.public, True, member_id, me.signature),
        _slot(member_id, MEMBER_SLOT, _wrap_team_key(vault_id, member_id, key.public, vmk)),
        _slot(RECOVERY, RECOVERY_SLOT, _wrap_team_key(vault_id, RECOVERY, recovery, vmk)),
    ]


def init_team(url: str, key: MemberKey, name: str) -> tuple[Vault, str]:
    """Create a team vault in the empty database at ``url``; ``key``'s holder is its first admin.

    Returns the open vault and the offline recovery identity (``AGE-SECRET-KEY-1…``, shown once).
    """
    from .core import _populate_schema

    name = _name(name)
    st = _empty_database(url)
    try:
        member_id = str(uuid.uuid4())
        recovery_identity, recovery_recipient = new_recovery_identity()

        def team_rows(vault_id: str, vmk: bytes) -> list[Any]:
            return _first_admin_rows(vault_id, vmk, key, member_id, name, recovery_recipient)

        def team_keys(vault_id: str, vmk: bytes) -> TeamKeys:
            return TeamKeys(vault_id, vmk, key, member_id, {member_id: key.public}, recovery_recipient)

        v = _populate_schema(st, team_rows, team_keys, detail={"team": name})
    except BaseException:
        st.close()
        raise
    pins.write(v.location, v.vault_id, key.public.fingerprint, member_id)
    return v, recovery_identity


def _name(name: str) -> str:
    from . import validate

    return validate.text(name, "member name", 200, required=True) or ""


# --- joining and opening --------------------------------------------------------------------------


def open_team_store(url: str, hint: str) -> tuple[Store, dict[str, bytes]]:
    """The store of the team database at ``url`` and its meta rows; InvalidInput (with ``hint``)
    when it holds a single-user vault. The caller closes the store."""
    from .core import _read_meta
    from .store.postgres import PostgresStore

    st = PostgresStore(url)
    try:
        meta = _read_meta(st)
        if not is_team(meta):
            raise InvalidInput(f"{st.location} is a vault, not a team vault", hint)
    except BaseException:
        st.close()
        raise
    return st, meta


def join_team(url: str, key: MemberKey, name: str, admin_fingerprint: str) -> str:
    """Register ``key`` in the team at ``url`` and pin its first admin; return the member id.

    Raises IntegrityError (exit 4) when the team's first admin is not ``admin_fingerprint`` (the
    fingerprint told out of band) or its own endorsement does not verify: nothing is written.
    """
    from .store.models import Member

    name = _name(name)
    st, meta = open_team_store(url, "create a team with: handover team init")
    try:
        vault_id = meta["vault_id"].decode()
        stored_root = meta[ROOT_KEY].decode()
        with st.write("joining the team") as s:
            rows = members(s)
            if stored_root != admin_fingerprint.strip() or not verify_endorsements(
                vault_id, admin_fingerprint.strip(), rows
            ):
                raise IntegrityError(
                    f"the team's first admin is not {admin_fingerprint.strip()}: refusing to join (the fingerprint "
                    "you were told does not match the team database)",
                    "check the first admin's fingerprint with them in person or by phone",
                )
            mine = s.execute(select(Member).where(Member.fingerprint == key.public.fingerprint)).scalar()
            if mine is not None:
                member_id = mine.id
            else:
                if s.execute(select(Member.id).where(Member.name == name)).first():
                    raise AlreadyExists(f"the team already has a member named {name!r}")
                member_id = str(uuid.uuid4())
                # Registered, not endorsed: no key is wrapped to it until an admin endorses it.
                s.add(_member_row(member_id, name, key.public, False, "", b""))
        pins.write(st.location, vault_id, admin_fingerprint.strip(), member_id)
    finally:
        st.close()
    return member_id


def unlock(
    st: Store, vault_id: str, meta: dict[str, bytes], passphrase: str | None, session_member: bytes
) -> TeamKeys:
    """This member's keys: the member key file (opened with ``passphrase``) or a session's copy,
    the endorsement chain from the first admin pinned on this machine, then the team key."""
    from .store.models import Member
    from .team.memberkey import default_path, load
    from .teamkeys import member_from_session

    pin = pins.read(st.location, vault_id)
    if pin is None:
        raise AuthenticationFailed(
            f"this machine has not joined the team vault {st.location}",
            "join it with: handover team join --db URL --admin FINGERPRINT",
        )
    if session_member:
        member_id, key = member_from_session(session_member)
    elif passphrase is not None:
        key = load(default_path(), passphrase)
        member_id = pin["member_id"]
    else:
        raise AuthenticationFailed("no passphrase was given")
    if meta.get(ROOT_KEY, b"").decode() != pin["root"]:
        raise IntegrityError(
            "the team database names another first admin than the one pinned on this machine at join: "
            "its members were replaced; nothing was opened",
            "check with your team's admin before using this database",
        )
    with st.read() as s:
        check_removals_rotated(s)
        row = s.get(Member, member_id)
        slot = s.get(KeySlot, member_id)
        commitment = s.get(Meta, keycheck.META_KEY)
        vouched = None if commitment is None else bytes(commitment.value)
        index = s.get(Meta, INDEX_KEY)  # read with the slot: one snapshot, one team key
        # The removed, as the signed log names them (read without any key) and as this machine saw.
        gone = frozenset(removed_by_log(s, vault_id)) | pins.removed(pin)
        rows = members(s, gone)
        admins = endorsed_admins(vault_id, pin["root"], rows)
        vmk = b""
        if (
            slot is not None
            and slot.kind == MEMBER_SLOT
            and row is not None
            and row.fingerprint == key.public.fingerprint
        ):
            vmk = unwrap_team_key(vault_id, member_id, key, bytes(slot.wrapped))
            # Before the key is used: an admin who is still one must have made it.
            keycheck.verify(vouched, vault_id, vmk, admins)
    # Removed by an admin (its signed entry, or as this machine saw), whatever the row says now.
    removed = row is not None and (row.fingerprint in gone or row.removed_at is not None)
    if row is None or removed or row.fingerprint != key.public.fingerprint:
        raise AuthenticationFailed(
            "your member key is not a member of this team vault", "ask an admin: handover member add"
        )
    if not row.endorsed_by:
        raise AuthenticationFailed(
            "no admin has added you to the team yet",
            f"tell an admin your fingerprint; they run: handover member add NAME --fingerprint {row.fingerprint}",
        )
    require_endorsed(vault_id, pin["root"], rows, member_id)
    if not vmk:
        raise AuthenticationFailed(
            "no admin has given you the team key yet",
            "ask an admin: handover member add NAME --fingerprint FP",
        )
    pins.remember_removed(st.location, vault_id, gone)
    keys = TeamKeys(vault_id, vmk, key, member_id, admins, meta[RECOVERY_KEY].decode(), gone)
    keys.adopt_index_key(None if index is None else bytes(index.value))
    return keys


# --- members ---------------------------------------------------------------------------------------


def _team_keys(v: Vault) -> TeamKeys:
    if not isinstance(v.keys, TeamKeys):
        raise InvalidInput("this is not a team vault", "team commands need --db URL of a team vault")
    return v.keys


def _admin(v: Vault) -> TeamKeys:
    k = _team_keys(v)
    if not k.is_admin:
        raise PolicyRefused("only a team admin can do this")
    return k


def _pinned(v: Vault) -> str:
    pin = pins.read(v.location, v.vault_id)
    assert pin is not None  # unlock refused without one
    return str(pin["root"])


def _named(s: Session, name: str) -> Any:
    from .store.models import Member

    row = s.execute(select(Member).where(Member.name == name, Member.removed_at.is_(None))).scalar()
    if row is None:
        raise NotFound(f"no member named {name!r}", "list them with: handover member list")
    return row


@dataclass(frozen=True)
class MemberInfo:
    name: str
    fingerprint: str
    admin: bool
    endorsed: bool
    has_team_key: bool
    clients: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_members(v: Vault) -> list[MemberInfo]:
    from .store.models import Member

    _team_keys(v)  # refuses a vault that is not a team's
    pinned = _pinned(v)
    with v.read() as s:
        rows = members(s, gone_members(s, v.keys))  # without the removed, whatever their rows say now
        valid = verify_endorsements(v.vault_id, pinned, rows)
        ids = [m.member_id for m in rows]
        out = []
        for r in s.execute(select(Member).where(Member.id.in_(ids)).order_by(Member.name)).scalars():
            slot = s.get(KeySlot, r.id)
            n = len(s.execute(select(Grant.client_id).where(Grant.member_id == r.id).distinct()).all())
            out.append(MemberInfo(r.name, r.fingerprint, bool(r.admin), r.id in valid, slot is not None, n))
    return out


def add_member(v: Vault, name: str, fingerprint: str, admin: bool = False) -> MemberInfo:
    """Endorse the registered key ``fingerprint`` as member ``name`` and wrap the team key to it."""
    from .integrity.commitment import hasher, tracker
    from .store.models import Member

    k = _admin(v)
    name = _name(name)
    with v.write("adding a member") as s:
        row = s.execute(select(Member).where(Member.fingerprint == fingerprint.strip())).scalar()
        if row is None:
            raise NotFound(
                f"no member key {fingerprint.strip()} has joined the team",
                "the technician runs first: handover team join --db URL --admin YOUR_FINGERPRINT",
            )
        if row.removed_at is not None:
            raise PolicyRefused(
                f"{row.name} was removed from the team; they join again with a new member key"
            )
        other = s.execute(select(Member.id).where(Member.name == name, Member.id != row.id)).first()
        if other:
            raise AlreadyExists(f"the team already has a member named {name!r}")
        public = MemberPublic(row.x25519, bytes(row.ed25519))
        # The fingerprint column is the server's copy: what is endorsed are the keys, so they must be
        # the ones whose fingerprint the technician told out of band (else a server that swapped the
        # row's keys would have its own endorsed and given the team key).
        if public.fingerprint != fingerprint.strip() or row.fingerprint != public.fingerprint:
            raise IntegrityError(
                f"the keys registered for {fingerprint.strip()} do not have that fingerprint: the member "
                "row was changed on the server; nothing was endorsed or wrapped",
                "the technician joins again (handover team join); check the team database",
            )
        signed = endorse(k.member, k.member_id, v.vault_id, row.id, name, public, admin)
        row.name, row.admin, row.endorsed_by, row.endorsement = name, admin, k.member_id, signed.signature
        s.flush()
        # The chain is walked again from the pinned first admin: a grant never trusts the row alone.
        require_endorsed(v.vault_id, _pinned(v), members(s, gone_members(s, v.keys)), row.id)
        state, h = tracker(v, s), hasher(v)
        old = s.get(KeySlot, row.id)
        if old is not None:
            state.vault_element(h.slot(old), -1)
            s.delete(old)
            s.flush()
        slot = _slot(row.id, MEMBER_SLOT, _wrap_team_key(v.vault_id, row.id, public, k.vmk))
        s.add(slot)
        s.flush()
        state.vault_element(h.slot(slot), +1)
        if admin:
            k.admins[row.id] = public
        v.audit.append(s, "member.add", detail={"name": name, "fingerprint": row.fingerprint, "admin": admin})
    return MemberInfo(name, row.fingerprint, admin, True, True, 0)


# --- grants ----------------------------------------------------------------------------------------


def grant(v: Vault, slug: str, name: str) -> int:
    """Wrap the client's current key to member ``name``; return the key version granted.

    Raises IntegrityError (exit 4, nothing wrapped) when the member's endorsement chain does not
    lead back to the first admin pinned on this machine.
    """
    k = _admin(v)
    with v.write("granting a client") as s:
        client = v.clients.get(slug, s)
        row = _named(s, name)
        public = require_endorsed(v.vault_id, _pinned(v), members(s, gone_members(s, v.keys)), row.id)
        version = _key_version(s, client.id)
        if s.get(Grant, (client.id, version, row.id)) is not None:
            raise AlreadyExists(f"{name} already holds {client.slug}")
        k.put_grant(s, client.id, version, row.id, public, client.keys.key)
        s.flush()
        v.audit.append(  # the member in record_id: what held_by_log reads, signed, without a key
            s, "team.grant", client=client, record_id=row.id, detail={"member": name, "key_version": version}
        )
    return version


def _key_version(s: Session, client_id: str) -> int:
    row = s.get(Client, client_id)
    assert row is not None
    return int(row.key_version)


@dataclass(frozen=True)
class Revoked:
    slug: str
    member: str
    key_version: int
    records: int
    at_risk: list[dict[str, str]]
    kept: list[str]


def revoke(v: Vault, slug: str, name: str) -> Revoked:
    """Take the client from member ``name``: a new key version, every record, version and chunk of
    the client re-encrypted under it and rewrapped to the members who keep it, and the at-risk list
    (every credential the member could read, each flagged for rotation)."""
    from .clients import ClientRef
    from .integrity.commitment import recompute_commitments
    from .integrity.statecheck import check_client
    from .keys.hierarchy import ClientKeys
    from .rekey import _Counts, _rekey_chunks, _rekey_records, _rekey_versions

    k = _admin(v)
    with v.write("revoking a client", bulk=True) as s:
        old = v.clients.get(slug, s)
        check_client(v, s, old.id)  # its records are what they were committed as, before re-sealing
        row = _named(s, name)
        version = _key_version(s, old.id)
        held = (
            s.execute(select(Grant).where(Grant.client_id == old.id, Grant.key_version == version))
            .scalars()
            .all()
        )
        if not any(g.member_id == row.id for g in held) and old.id not in held_by_log(s, v.vault_id, row.id):
            raise NotFound(f"{name} holds no grant for {old.slug}")  # neither a grant row nor by the log
        if row.id == k.member_id:
            raise PolicyRefused("an admin does not revoke their own access", "another admin can")
        rows = members(s, gone_members(s, v.keys))
        pinned = _pinned(v)
        keep = []
        names = {m.member_id: m.name for m in rows}
        for g in held:
            if g.member_id == row.id:
                continue
            # Only a grant an endorsed admin signed says who holds the client: a row the server
            # planted must not earn its member the new key.
            try:
                verify_grant(
                    k.admins,
                    g.granted_by,
                    k.binding(old.id, version, g.member_id),
                    bytes(g.wrapped),
                    bytes(g.signature),
                )
            except IntegrityError:
                raise IntegrityError(
                    f"the grant of {old.slug} to {names.get(g.member_id, g.member_id)} is not signed by an "
                    "endorsed admin (planted or tampered); nothing was re-keyed or wrapped",
                    "check the team database; an admin grants the client again if it was meant",
                ) from None
            keep.append((g.member_id, require_endorsed(v.vault_id, pinned, rows, g.member_id)))
        new_version = version + 1
        fresh_key = crypto.random_key()
        fresh = ClientRef(
            old.id, old.version, old.created_at, old.updated_at, ClientKeys(fresh_key), old.data
        )
        client_row = s.get(Client, old.id)
        assert client_row is not None
        client_row.key_version = new_version
        client_row.envelope = v.clients._seal(fresh.keys, old.id, client_row.version, old.data)
        s.flush()
        n = _Counts()
        _rekey_records(v, s, old, fresh, n)
        _rekey_versions(v, s, old, fresh, n)
        _rekey_chunks(v, s, old, fresh, n)
        # The revoked member's grants of every version go; the others keep the old versions (their
        # history of the client's audit details) and get the new one.
        s.execute(delete(Grant).where(Grant.client_id == old.id, Grant.member_id == row.id))
        for member_id, public in keep:
            k.put_grant(s, old.id, new_version, member_id, public, fresh_key)
        s.add(k.recovery_wrap(old.id, new_version, fresh_key))
        k.renewed(old.id, new_version, fresh_key)
        s.flush()
        # The re-encryption wrote envelopes past the commitment's tracker (as rekey does): the
        # commitment is rebuilt from the rows, after the top and this client were checked above.
        recompute_commitments(v, s)
        renewed = v.clients.load(client_row)
        at_risk = []
        for rec in v.records.list(s, renewed, "cred"):
            at_risk.append({"id": rec.id, "label": str(rec.data.get("label", ""))})
            v.creds.flag_for_rotation(s, renewed, rec, f"{name}'s access to {old.slug} was revoked")
        v.audit.append(
            s,
            "team.revoke",
            client=renewed,
            record_id=row.id,
            detail={"member": name, "key_version": new_version, "at_risk": at_risk, "records": n.records},
        )
    kept_names = [m.name for m in rows if m.member_id in {i for i, _ in keep}]
    return Revoked(old.slug, name, new_version, n.records, at_risk, kept_names)


@dataclass(frozen=True)
class Removed:
    """What ``member remove`` did. ``vault`` is the team under its new team key."""

    name: str
    revoked: list[Revoked]
    vault: Vault
    epoch: int
    kept: list[str]
    sessions_dropped: int
    dropped: list[str]  # members who lost the team key: their endorsement chain no longer holds


def remove_member(v: Vault, name: str) -> Removed:
    """Revoke every client ``name`` holds (each re-keyed, with its at-risk list), then mark them
    removed (their row stays: their audit entries still name them) and rotate the team key in the
    same transaction (vault/teamrotation.py). The old ``v`` must not be used after."""
    from .rekey import drop_sessions

    k = _admin(v)
    with v.read() as s:
        row = _named(s, name)
        if row.id == k.member_id:
            raise PolicyRefused("an admin does not remove themselves", "another admin can")
        if _member(row).public.fingerprint == _pinned(v):
            # Every member's machine pinned this key at join and every endorsement chain starts at
            # it: without it no member's chain holds, and the rotation would wrap the key to nobody.
            raise PolicyRefused(
                f"{name} is the team's first admin, whom every member pinned at join: they cannot be removed",
                f"take their clients with: handover revoke SLUG {name}",
            )
    revoked: list[Revoked] = []
    for _attempt in range(3):
        with v.read() as s:
            slugs = _slugs_held(v, s, row.id, name)
        revoked += [revoke(v, slug, name) for slug in slugs]
        try:
            removed = _remove_revoked(v, k, row.id, name, [r.slug for r in revoked])
            break
        except _GrantedMeanwhile:
            continue  # another admin granted NAME a client meanwhile: revoke that one too
    else:
        raise PolicyRefused(
            f"{name} was granted clients again while being removed, three times; nothing more was removed",
            "ask the other admins to stop granting, then run it again",
        )
    pins.remember_removed(v.location, v.vault_id, k.removed)
    dropped = drop_sessions()  # this machine's sessions hold the old team key (the others' end at open)
    return Removed(name, revoked, removed.vault, removed.epoch, removed.members, dropped, removed.dropped)


class _GrantedMeanwhile(Exception):
    """A client was granted to the member being removed after their clients were revoked."""


def held_by_log(s: Session, vault_id: str, member_id: str) -> set[str]:
    """The clients the signed log says ``member_id`` holds: one they added (``client.add``) or an
    admin granted them (``team.grant``), with no ``team.revoke`` of them since. The grant rows
    are the server's to hide; these entries are signed (each names the member in ``record_id``)."""
    from .store.models import AuditEntry

    entries = s.execute(
        select(AuditEntry)
        .where(
            AuditEntry.action.in_(("client.add", "team.grant", "team.revoke")),
            AuditEntry.client_id.is_not(None),
        )
        .order_by(AuditEntry.seq)
    ).scalars()
    held: dict[str, bool] = {}
    for e in entries:
        named = e.member_id if e.action == "client.add" else e.record_id
        # A grant or revoke is an admin's; a client is added by its first holder (an admin then).
        if named == member_id and _signed_by_member(s, vault_id, e, admin=e.action != "client.add"):
            held[str(e.client_id)] = e.action != "team.revoke"
    return {cid for cid, holds in held.items() if holds and s.get(Client, cid) is not None}


def _held(s: Session, vault_id: str, member_id: str) -> set[str]:
    """What ``member_id`` holds now: a grant of a client's current key version, or by the log."""
    rows = s.execute(
        select(Grant.client_id)
        .join(Client, Client.id == Grant.client_id)
        .where(Grant.member_id == member_id, Grant.key_version == Client.key_version)
    ).scalars()
    return set(rows) | held_by_log(s, vault_id, member_id)


def _slugs_held(v: Vault, s: Session, member_id: str, name: str) -> list[str]:
    """The slugs of what ``name`` holds; refused when this admin cannot re-key one of them."""
    slugs, closed = [], 0
    for cid in sorted(_held(s, v.vault_id, member_id)):
        client_row = s.get(Client, cid)
        assert client_row is not None
        try:
            slugs.append(v.clients.load(client_row).slug)
        except NoAccess:
            closed += 1
    if closed:
        raise PolicyRefused(
            f"{name} holds {closed} client(s) not granted to you: you cannot re-key them, so {name} is "
            "not removed (nothing was changed)",
            f"an admin who holds them runs: handover member remove {name}",
        )
    return slugs


def _remove_revoked(v: Vault, k: TeamKeys, member_id: str, name: str, slugs: list[str]) -> Rotation:
    """The removal's one transaction, once every client of the member was revoked: their grants
    and slot go, ``member.remove``, the rotation. Raises _GrantedMeanwhile (nothing written) when
    the member holds a client again."""
    from .integrity.commitment import hasher, tracker
    from .store.models import Member
    from .teamrotation import rotate_team_key

    with v.write("removing a member") as s:
        if _held(s, v.vault_id, member_id):
            raise _GrantedMeanwhile
        row = s.get(Member, member_id)
        assert row is not None
        s.execute(delete(Grant).where(Grant.member_id == member_id))  # older key versions too
        slot = s.get(KeySlot, member_id)
        if slot is not None:
            tracker(v, s).vault_element(hasher(v).slot(slot), -1)
            s.delete(slot)
        row.removed_at = utcnow()
        k.admins.pop(member_id, None)
        # The removed member's id is also in the entry's record_id: signed and MACed, and readable
        # without any key (removed_by_log must not depend on the team key it is checking).
        v.audit.append(
            s,
            "member.remove",
            record_id=member_id,
            detail={"name": name, "fingerprint": row.fingerprint, "clients": slugs},
        )
        k.removed = k.removed | {row.fingerprint}
        return rotate_team_key(v, s, "member.remove")


# --- the signed audit chain (vault/team/chain.py) -------------------------------------------------


def _chain_entry(row: Any) -> Any:
    from .team.chain import Entry

    return Entry(
        seq=row.seq,
        at=row.at,
        member_id=row.member_id or "",
        action=row.action,
        client_id=row.client_id,
        record_id=row.record_id,
        scope=row.scope,
        detail=bytes(row.detail),
        commitment=bytes(row.commitment) if row.commitment is not None else None,
        prev_hash=bytes(row.prev_hash or b""),
        signature=bytes(row.signature or b""),
        embedded_head=bytes(row.embedded_head) if row.embedded_head is not None else None,
    )


def sign_entry(v: Vault, s: Session, entry: Any) -> None:
    """Name this member on a new audit entry, chain it to the previous entry's hash and sign it."""
    from .store.models import AuditEntry
    from .team.chain import entry_hash, genesis

    k = _team_keys(v)
    entry.member_id = k.member_id
    prev = s.get(AuditEntry, entry.seq - 1) if entry.seq > 1 else None
    if prev is not None and prev.signature is not None:
        entry.prev_hash = entry_hash(v.vault_id, _chain_entry(prev))
    else:
        # The chain's first entry. After a move from a vault file (``move_in``), it embeds that
        # vault's verified head: the unsigned entries before it are vouched for by their HMAC chain.
        entry.prev_hash = genesis(v.vault_id)
        if prev is not None:
            entry.embedded_head = bytes(prev.mac)
    resign(v, entry)


def resign(v: Vault, entry: Any) -> None:
    """Sign ``entry`` (again, once its commitment is final: ``AuditLog.reseal``)."""
    from .team.chain import message

    k = _team_keys(v)
    entry.signature = k.member.sign(message(v.vault_id, _chain_entry(entry)))


def member_names(s: Session) -> dict[str, str]:
    """Member id to name, removed members included (their entries still name them)."""
    from .store.models import Member

    return {r.id: r.name for r in s.execute(select(Member)).scalars()}


def verify_signatures(v: Vault, s: Session, since: int = 0) -> int:
    """Every entry signed by the member it names, each chained to the one before: the count.

    Keys are those of members whose endorsement chain leads to the first admin pinned on this
    machine (removed members included: their entries stay theirs). Raises IntegrityError naming
    the first entry that does not hold and its member. ``since``: walk only the entries after that
    one (an entry this machine already saw: ``verify_since_seen``).
    """
    from .store.models import AuditEntry, Member
    from .team.chain import entry_hash, verify_chain

    every = list(s.execute(select(Member)).scalars())

    def signing_keys() -> dict[str, bytes]:
        valid = verify_endorsements(v.vault_id, _pinned(v), [_member(r) for r in every])
        return {mid: public.ed25519 for mid, public in valid.items()}

    # A removed member's key signs nothing after the admin's entry that removed them.
    by_log = removed_by_log(s, v.vault_id)
    removed = {r.id: by_log[r.fingerprint] for r in every if r.fingerprint in by_log}

    if since:
        seen = s.get(AuditEntry, since)
        if seen is not None and seen.signature is not None:
            after = list(
                s.execute(select(AuditEntry).where(AuditEntry.seq > since).order_by(AuditEntry.seq)).scalars()
            )
            if not after:
                return 0
            verdict = verify_chain(
                v.vault_id,
                (_chain_entry(r) for r in after),
                signing_keys(),
                first_seq=since + 1,
                prev=entry_hash(v.vault_id, _chain_entry(seen)),
                removed=removed,
            )
            return _checked(s, verdict)
    keys = signing_keys()
    rows = list(s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars())
    # Entries moved in from a vault file come first (unsigned, or signed in an earlier team whose
    # members are not this team's: a file `team recover` wrote); every one from this team's first
    # entry on must be signed (a signature removed reads as an unknown member's entry).
    start = chain_start(s) - 1 if rows else 0
    signed = rows[start:]
    if (
        start
        and signed
        and (signed[0].embedded_head is None or bytes(signed[0].embedded_head) != bytes(rows[start - 1].mac))
    ):
        raise IntegrityError(
            f"audit entry {signed[0].seq}, the team's first, does not embed the head of the entries before it",
            "the entries were changed on the server; restore the database from a backup",
        )
    if not signed and rows:
        raise IntegrityError("no audit entry of this team vault is signed: the signatures were removed")
    first = signed[0].seq if signed else 1
    chain = (_chain_entry(r) for r in signed)
    return _checked(s, verify_chain(v.vault_id, chain, keys, first_seq=first, removed=removed))


def chain_start(s: Session) -> int:
    """The sequence number of this team's first entry: the newest one that embeds the head of a
    vault file moved in (``move_in``), else the first signed one, else 1.

    An ``embedded_head`` is in the signed message and allowed only on a chain's first entry, so
    no one can put one on a later entry to skip what comes before it."""
    from sqlalchemy import func, or_

    from .store.models import AuditEntry

    embedded = s.execute(
        select(func.max(AuditEntry.seq)).where(AuditEntry.embedded_head.is_not(None))
    ).scalar()
    if embedded:
        return int(embedded)
    first = s.execute(
        select(func.min(AuditEntry.seq)).where(
            or_(AuditEntry.signature.is_not(None), AuditEntry.member_id.is_not(None))
        )
    ).scalar()
    return int(first or 1)


def _checked(s: Session, verdict: Verdict) -> int:
    if not verdict.ok:
        names = member_names(s)
        who = names.get(verdict.bad_member or "", verdict.bad_member or "no member")
        raise IntegrityError(
            f"audit entry {verdict.bad_seq} (member {who}) does not verify: {verdict.reason}",
            "the entry was changed, inserted or removed on the server; restore the database from a backup",
        )
    return verdict.count


def verify_since_seen(v: Vault, seen: int | None) -> None:
    """At open: the signed chain from ``seen``, the newest entry this machine saw (statehead.py),
    to the head; the whole chain when this machine has seen none (a first open here).

    An ordinary open does not walk the whole chain again (``audit verify`` does), but what was added
    since this member last looked must link and verify: a server that deletes an entry it dislikes
    (a ``member.remove``) or slips one in is caught by the next member to open the vault. The head
    walked to is then recorded as seen, so the next open walks only what comes after it, and a
    server that later serves an older log is refused as rolled back.
    """
    from .integrity.statehead import record
    from .store.models import AuditEntry

    with v.read() as s:
        if not verify_signatures(v, s, since=seen or 0):
            return  # nothing new since ``seen``: nothing to record
        head = s.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
    if head is not None and head.commitment is not None and v.record_head:
        record(v, head.seq, bytes(head.mac), bytes(head.commitment))


# --- moving a vault file in ----------------------------------------------------------------------


def _grant_file_epochs(s: Session, k: TeamKeys, member_id: str, public: MemberPublic) -> None:
    """The client keys a vault file's ``rekey`` kept (its key history, for the audit details
    sealed before it) leave the key history, which any holder of the team key reads: each becomes
    a grant of key version -(epoch + 1) to the first admin, and a recovery wrap. Per client, as
    every other client key of a team (the audit reads them as such: ``AuditLog._key_version_at``).
    """
    from .rekey import read_epochs, write_epochs

    epochs = read_epochs(s, k)
    if not any(e.clients for e in epochs):
        return
    for i, epoch in enumerate(epochs):
        for cid, client_key in sorted(epoch.clients.items()):
            if s.get(Client, cid) is not None:
                k.put_grant(s, cid, -(i + 1), member_id, public, client_key)
                s.add(k.recovery_wrap(cid, -(i + 1), client_key))
        epoch.clients = {}
    write_epochs(s, k, epochs)


def move_in(url: str, key: MemberKey, name: str, source: Any) -> tuple[Vault, str, int]:
    """Make the empty database at ``url`` a team vault holding the vault file ``source`` (open).

    ``source`` is verified whole first (every envelope, the state, the audit chain). Its rows move
    unchanged: the same vault id, team key (its master key), signing key and client keys, so every
    ciphertext and the audit chain stay as they are. Then one transaction makes it a team: the
    caller first admin, the team key and each client's key wrapped to them and to a new recovery
    key, the passphrase and recovery-code slots removed, the clients' own wraps emptied. Its first
    signed entry embeds the moved chain's head. Returns (vault, recovery identity, entries moved).
    """
    from .core import Vault
    from .integrity.commitment import recompute_commitments
    from .integrity.verify import verify_vault
    from .store.engine import copy_tables

    name = _name(name)
    checked = verify_vault(source)
    st = _empty_database(url)
    try:
        with source.read() as src, st.write("moving the vault in", bulk=True) as s:
            copy_tables(src, s)
        vault_id, vmk = source.vault_id, source.keys.vmk
        member_id = str(uuid.uuid4())
        recovery_identity, recovery_recipient = new_recovery_identity()
        k = TeamKeys(vault_id, vmk, key, member_id, {member_id: key.public}, recovery_recipient)
        v = Vault(st, k)
        with st.write("making the vault a team", bulk=True) as s:
            s.execute(delete(KeySlot))  # the passphrase and recovery-code slots: a team has neither
            s.flush()
            for row in _first_admin_rows(vault_id, vmk, key, member_id, name, recovery_recipient):
                s.add(row)
            for row in s.execute(select(Client)).scalars().all():
                client_key = source.keys.client(row.id, row.wrapped_key).key
                k.put_grant(s, row.id, row.key_version, member_id, key.public, client_key)
                s.add(k.recovery_wrap(row.id, row.key_version, client_key))
                row.wrapped_key = b""
            _grant_file_epochs(s, k, member_id, key.public)
            s.flush()
            recompute_commitments(v, s)
            v.audit.append(
                s,
                "team.init",
                detail={
                    "team": name,
                    "from": source.fingerprint,
                    "entries": checked.entries,
                    "clients": checked.clients,
                },
            )
    except BaseException:
        st.close()
        raise
    pins.write(v.location, v.vault_id, key.public.fingerprint, member_id)
    return v, recovery_identity, checked.entries
