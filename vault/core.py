"""Creating, opening and re-keying a vault: the entry points of the library.

>>> v, recovery_code = init_vault(path, passphrase="…")
>>> v = open_vault(path, passphrase="…")        # or session=os.environ["HANDOVER_SESSION"]
>>> v.clients.add("acme", name="ACME Ltd")
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from .clock import utcnow
from .errors import (
    AlreadyExists,
    AuthenticationFailed,
    IntegrityError,
    InvalidInput,
    PolicyRefused,
    StorageError,
)
from .keys import crypto, session
from .keys import hierarchy as keys
from .keys.crypto import KdfParams, kdf_params
from .store import engine as store
from .store.index import mark_indexed
from .store.models import KeySlot, Meta

if TYPE_CHECKING:
    from .attachments import Attachments
    from .clients import Clients
    from .creds import Creds
    from .integrity.audit import AuditLog
    from .profile import Profiles
    from .services import Assets, Contacts, Docs, Issues
    from .store.records import Records

FORMAT = b"handover-vault/1"
# The meta row a team vault has and a single-user vault has not (vault/teams.py ROOT_KEY).
TEAM_ROOT = "team_root"


def _slot_row(slot: keys.SlotData) -> KeySlot:
    p = slot.params
    return KeySlot(
        id=slot.id,
        kind=slot.kind,
        salt=slot.salt,
        memory_kib=p.memory_kib,
        iterations=p.iterations,
        lanes=p.lanes,
        wrapped=slot.wrapped,
        created_at=utcnow(),
    )


def _slot_data(row: KeySlot) -> keys.SlotData:
    params = KdfParams(row.memory_kib, row.iterations, row.lanes)
    return keys.SlotData(row.id, row.kind, row.salt, params, row.wrapped)


def init_vault(target: Path | str, passphrase: str, kdf: KdfParams | None = None) -> tuple[Vault, str]:
    """Create a new vault at ``target`` (a file path, or an empty PostgreSQL database's URL); return
    it, unlocked, and the recovery code (shown once).

    Raises AlreadyExists if anything exists at ``target``; InvalidInput for a passphrase under 12
    characters or a KDF below the floor; StorageError if the file cannot be created.
    """
    secret = keys.new_passphrase(passphrase)
    params = kdf or kdf_params()
    crypto.check_kdf_for_create(params)
    if store.is_database_url(target):
        return _init_database(str(target), secret, params)
    path = Path(target)
    if path.exists() or path.is_symlink():
        raise AlreadyExists(f"a file already exists at {path}; refusing to overwrite it")
    # Built under a hidden name and given its real name only once complete: a process killed during
    # init (even SIGKILL) leaves no half-made file at ``path`` that would block the next ``init``.
    tmp = path.with_name(f".{path.name}.init-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _remove_vault_files(tmp)  # a leftover of a crashed init that had this process id
        store.create_private_file(tmp)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None
    try:
        k, recovery = _populate_new(tmp, secret, params)
        from .files import _publish

        _publish(tmp, path, overwrite=False)  # no clobber; works where hard links do not
    finally:
        _remove_vault_files(tmp)
    return Vault(store.open_store(path), k), recovery


def _init_database(url: str, secret: bytes, params: KdfParams) -> tuple[Vault, str]:
    """Create the schema (Alembic) and the vault in an empty database. The schema is built in its
    own transaction; a crash before the vault's first transaction commits leaves an empty schema,
    which the next ``init`` fills."""
    from .store.postgres import PostgresStore

    st = PostgresStore(url)
    try:
        if not st.is_empty():
            raise AlreadyExists(f"the database {st.location} already holds a vault; refusing to overwrite it")
        store.upgrade(st)
        k, recovery = _populate(st, secret, params)
    except BaseException:
        st.close()
        raise
    return Vault(st, k), recovery


def _remove_vault_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _populate_new(path: Path, secret: bytes, params: KdfParams) -> tuple[keys.VaultKeys, str]:
    """Write a complete new vault at ``path`` and close it (its WAL folded into the file)."""
    st = store.open_store(path)
    try:
        store.upgrade(st)
        v_keys, recovery = _populate(st, secret, params, record_head=False)
    finally:
        st.close()
    return v_keys, recovery


def _populate(
    st: store.Store, secret: bytes, params: KdfParams, record_head: bool = True
) -> tuple[keys.VaultKeys, str]:
    """Write the vault's first transaction into an empty schema: identity, key slots, first entry."""
    recovery = keys.new_recovery_code()

    def slots(vault_id: str, vmk: bytes) -> list[Any]:
        return [_slot_row(slot) for slot in keys.vault_file_slots(vault_id, secret, recovery, vmk, params)]

    v = _populate_schema(st, slots, keys.VaultKeys, record_head=record_head)
    return v.keys, recovery


def _populate_schema(
    st: store.Store,
    rows: Callable[[str, bytes], list[Any]],
    make_keys: Callable[[str, bytes], keys.VaultKeys],
    record_head: bool = True,
    detail: dict[str, Any] | None = None,
) -> Vault:
    """The vault's first transaction: its identity and signing key, the ``rows`` that open it (key
    slots; a team's members), and the first audit entry. Returns the vault, open."""
    vault_id = str(uuid.uuid4())
    vmk = crypto.random_key()
    k = make_keys(vault_id, vmk)
    priv, pub = crypto.new_signing_key()
    v = Vault(st, k)
    v.record_head = record_head
    with st.write("creating the vault") as s:
        if s.execute(select(Meta.key).limit(1)).first() is not None:
            raise AlreadyExists(f"{st.location} already holds a vault; refusing to overwrite it")
        s.add(Meta(key="format", value=FORMAT))
        s.add(Meta(key="vault_id", value=vault_id.encode()))
        s.add(Meta(key="created_at", value=utcnow().encode()))
        s.add(Meta(key="signing_public", value=pub))
        s.add(Meta(key="signing_private", value=k.wrap_signing_key(priv)))
        for row in rows(vault_id, vmk):
            s.add(row)
        mark_indexed(s)
        from .integrity.commitment import recompute_commitments

        recompute_commitments(v, s)
        v.audit.append(s, "vault.init", detail={"fingerprint": crypto.fingerprint(pub), **(detail or {})})
    return v


def _read_meta(st: store.Store) -> dict[str, bytes]:
    with st.read() as s:
        rows = s.execute(select(Meta)).scalars().all()
    meta = {m.key: m.value for m in rows}
    if meta.get("format") != FORMAT or "vault_id" not in meta:
        raise IntegrityError(f"{st.location} is not a handover vault (format marker missing or unknown)")
    return meta


def _open_store(target: Path | str) -> tuple[store.Store, str, bool, bool]:
    """The store, the vault id, whether an older schema awaits its upgrade, and whether it is a
    team vault.

    The upgrade (backup + Alembic) waits until the caller has unlocked the vault: a wrong passphrase
    must change nothing on disk. The unlock reads ``meta`` and ``key_slots`` with today's models, so
    a migration that changes those two tables must keep the old columns readable.
    """
    if not store.is_database_url(target):
        store.check_target(target)  # a database is checked by the queries below
    st = store.open_store(target)
    try:
        older = store.check_schema(st)
        meta = _read_meta(st)
        vault_id = meta["vault_id"].decode("ascii", "replace")
    except BaseException:
        st.close()
        raise
    return st, vault_id, older, TEAM_ROOT in meta


def _unlock_with(st: store.Store, vault_id: str, kind: str, secret: bytes) -> bytes:
    with st.read() as s:
        rows = s.execute(select(KeySlot).where(KeySlot.kind == kind)).scalars().all()
    for row in rows:
        vmk = keys.try_unwrap(vault_id, _slot_data(row), secret)
        if vmk is not None:
            return vmk
    if kind == "recovery":
        raise AuthenticationFailed("the recovery code is not valid")
    raise AuthenticationFailed("wrong passphrase", "check the passphrase source (prompt, file or command)")


def open_vault(
    target: Path | str,
    passphrase: str | None = None,
    session_token: str | None = None,
    *,
    check_head: bool = True,
) -> Vault:
    """Open and unlock a vault (a file path or a PostgreSQL URL) with a passphrase or a session token.

    Raises NotFound (no file), IntegrityError (not a vault, corrupt, or older than the last state
    this machine saw of it: see ``statehead.py``; ``check_head=False`` only for
    ``handover verify --accept-rollback``), MigrationRequired (newer schema), AuthenticationFailed
    (wrong passphrase, bad or expired session).
    """
    st, vault_id, older, team = _open_store(target)
    try:
        if team:  # never older than the schema that made teams
            v = Vault(st, _unlock_team(st, vault_id, _read_meta(st), passphrase, session_token))
            _opened(v, check_head)
            return v
        if session_token:
            vmk = session.load(session_token, vault_id)
            from .rekey import check_session_key

            check_session_key(st, vault_id, vmk)  # a session made before a rekey is refused
        elif passphrase is not None:
            vmk = _unlock_with(st, vault_id, "passphrase", keys.normalise_passphrase(passphrase))
        else:
            raise AuthenticationFailed("no passphrase was given")
        if older:
            st.upgrade_older()
        v = Vault(st, keys.VaultKeys(vault_id, vmk))
        _opened(v, check_head)
    except BaseException:
        st.close()
        raise
    return v


def _unlock_team(
    st: store.Store, vault_id: str, meta: dict[str, bytes], passphrase: str | None, token: str | None
) -> keys.VaultKeys:
    """A team member's keys: from their session, or their member key file and its passphrase."""
    from .teams import unlock

    if token:
        vmk, member = session.load_with_member(token, vault_id)
        if not member:
            raise AuthenticationFailed(
                "HANDOVER_SESSION is not a team member's session", "run: handover unlock"
            )
        k = unlock(st, vault_id, meta, None, member)
        if not crypto.mac_equal(k.vmk, vmk):
            raise AuthenticationFailed(
                "the session's team key is not the team's: it ended", "run: handover unlock"
            )
        return k
    return unlock(st, vault_id, meta, passphrase, b"")


def _opened(v: Vault, check_head: bool = True) -> None:
    """Once unlocked: compute the commitments of an upgraded vault, then compare the file with the
    last state this machine saw (statehead.py). Raises IntegrityError for an older file."""
    from .integrity.statehead import check_open

    with v.read() as s:
        from .integrity.commitment import is_initialised

        initialised = is_initialised(s)
    if not initialised:
        from .integrity.commitment import initialise

        initialise(v)
    if check_head:
        seen = check_open(v)
        if v.keys.team:
            from .teams import verify_since_seen

            verify_since_seen(v, seen["seq"] if seen is not None else None)


def recover_vault(target: Path | str, recovery_code: str, new_passphrase: str) -> Vault:
    """Replace every passphrase slot using the recovery code; the recovery slot stays."""
    st, vault_id, older, team = _open_store(target)
    try:
        if team:
            raise PolicyRefused(
                "a team vault has no recovery code: its offline recovery key opens every client",
                "a member who lost their member key makes a new one and is added again by an admin",
            )
        code = keys.normalise_recovery_code(recovery_code)
        vmk = _unlock_with(st, vault_id, "recovery", code)
        if older:
            st.upgrade_older()
    except BaseException:
        st.close()
        raise
    v = Vault(st, keys.VaultKeys(vault_id, vmk))
    try:
        _opened(v)
    except BaseException:
        st.close()
        raise
    v.set_passphrase(new_passphrase, action="vault.recover")
    return v


class Vault:
    """An open, unlocked vault. Use as a context manager or call ``close()``."""

    def __init__(self, st: store.Store, k: keys.VaultKeys) -> None:
        #: The vault file (None for a database on a server); ``location`` names either.
        self.path = st.path
        self.location = st.location
        self.store = st
        self.keys = k
        self.vault_id = k.vault_id
        # Whether writes record the head outside the file (statehead.py): not for the hidden file
        # ``init`` builds before giving it its name.
        self.record_head = True

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # --- services (imported lazily: a command pays only for what it uses) ------------------------

    @cached_property
    def audit(self) -> AuditLog:
        from .integrity.audit import AuditLog

        return AuditLog(self)

    @cached_property
    def records(self) -> Records:
        from .integrity.statecheck import VaultGuard
        from .store.records import Records

        return Records(self.vault_id, VaultGuard(self))

    @cached_property
    def clients(self) -> Clients:
        from .clients import Clients

        return Clients(self)

    @cached_property
    def contacts(self) -> Contacts:
        from .services import Contacts

        return Contacts(self)

    @cached_property
    def docs(self) -> Docs:
        from .services import Docs

        return Docs(self)

    @cached_property
    def assets(self) -> Assets:
        from .services import Assets

        return Assets(self)

    @cached_property
    def issues(self) -> Issues:
        from .services import Issues

        return Issues(self)

    @cached_property
    def creds(self) -> Creds:
        from .creds import Creds

        return Creds(self)

    @cached_property
    def attachments(self) -> Attachments:
        from .attachments import Attachments

        return Attachments(self)

    @cached_property
    def profile(self) -> Profiles:
        """The technician's own identity (name, company, email, phone, address, website)."""
        from .profile import Profiles

        return Profiles(self)

    def search(self, query: str, slug: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        from .search import search

        return search(self, query, slug, limit)

    # --- identity and signing -------------------------------------------------------------------

    @cached_property
    def _meta(self) -> dict[str, bytes]:
        return _read_meta(self.store)

    def meta_value(self, key: str) -> bytes | None:
        """A ``meta`` row as this process first read it (None: absent)."""
        value = self._meta.get(key)
        return None if value is None else bytes(value)

    def forget_meta(self) -> None:
        """Read ``meta`` again on next use (after this process changed the signing key)."""
        for name in ("_meta", "signing_public"):
            self.__dict__.pop(name, None)

    @cached_property
    def signing_public(self) -> bytes:
        """The stored public key, once it is known to be the one of the vault's own private key.

        Raises IntegrityError when it was swapped: the letter, checkpoints and every signature
        would otherwise announce another key's fingerprint.
        """
        stored = self._meta["signing_public"]
        private = self.keys.unwrap_signing_key(self._meta["signing_private"])
        if not crypto.mac_equal(crypto.public_from_private(private), bytes(stored)):
            raise IntegrityError(
                "the vault's signing public key does not match its private key: it was swapped "
                "(tampered); nothing was signed or shown",
                "run: handover verify",
            )
        return bytes(stored)

    @property
    def fingerprint(self) -> str:
        return crypto.fingerprint(self.signing_public)

    @property
    def ssh_public_key(self) -> str:
        """The signing key as an OpenSSH line (``ssh-ed25519 AAAA… handover-vault``): what the
        successor puts in allowed_signers to check SHA256SUMS.sig with ``ssh-keygen -Y verify``."""
        from .keys.sshsig import public_key_line

        return public_key_line(self.signing_public)

    @property
    def ssh_fingerprint(self) -> str:
        """``SHA256:…`` as ``ssh-keygen -lf`` prints it for :attr:`ssh_public_key`."""
        from .keys.sshsig import ssh_fingerprint

        return ssh_fingerprint(self.signing_public)

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature with the vault's key (the private key is unwrapped for this call only)."""
        self.signing_public  # noqa: B018 - refuses a swapped public key before anything is signed
        priv = self.keys.unwrap_signing_key(self._meta["signing_private"])
        return crypto.sign(priv, data)

    # --- passphrase and sessions ----------------------------------------------------------------

    def set_passphrase(self, new_passphrase: str, action: str = "vault.passwd") -> None:
        """Re-wrap the VMK under a new passphrase: no record is re-encrypted.

        The new slot is written and the old ones deleted in one transaction, with the audit entry:
        after a crash either the old or the new passphrase opens the vault, never neither.
        """
        self._not_in_a_team(
            "its members unlock with their own member keys; change yours with a new member key"
        )
        secret = keys.new_passphrase(new_passphrase)
        slot = keys.make_slot(self.vault_id, "passphrase", secret, self.keys.vmk, kdf_params())
        with self.store.write("changing the passphrase") as s:
            self._replace_slots(s, "passphrase", slot)
            self.audit.append(s, action, detail={"slot": slot.id})

    def _not_in_a_team(self, why: str) -> None:
        if self.keys.team:
            raise PolicyRefused(f"not in a team vault: {why}")

    def new_recovery_code(self) -> str:
        self._not_in_a_team("its offline recovery key was made at team init")
        code = keys.new_recovery_code()
        slot = keys.make_slot(
            self.vault_id, "recovery", keys.normalise_recovery_code(code), self.keys.vmk, kdf_params()
        )
        with self.store.write("replacing the recovery code") as s:
            self._replace_slots(s, "recovery", slot)
            self.audit.append(s, "vault.recovery-code", detail={"slot": slot.id})
        return code

    def _replace_slots(self, s: Any, kind: str, slot: keys.SlotData) -> None:
        """Delete the slots of ``kind`` and add ``slot``, after checking the slots are the vault's own."""
        from .integrity.commitment import hasher, tracker
        from .integrity.statecheck import check_top

        check_top(self, s)
        state, h = tracker(self, s), hasher(self)
        for old in s.execute(select(KeySlot).where(KeySlot.kind == kind)).scalars().all():
            state.vault_element(h.slot(old), -1)
        s.execute(delete(KeySlot).where(KeySlot.kind == kind))
        row = _slot_row(slot)
        s.add(row)
        state.vault_element(h.slot(row), +1)

    def start_session(self, seconds: int) -> str:
        member = self.keys.session_blob() if self.keys.team else b""  # type: ignore[attr-defined]
        token = session.create(self.vault_id, self.location, self.keys.vmk, seconds, member)
        self.audit.append_now("vault.unlock", detail={"seconds": seconds})
        return token

    def backup(self, dest: Path | str) -> Path:
        """A consistent copy of the live vault into a new 0600 vault file, audited (SQLite: the
        online backup API; PostgreSQL: a snapshot of every table)."""
        dest = Path(dest)
        self._not_in_a_team(
            "its backup is the database's own (pg_dump): a vault file of it would open for no member"
        )
        if self.path is not None and dest.resolve() == self.path.resolve():
            raise InvalidInput("the backup file must not be the vault itself")
        # Refused before the audit entry, so the log never records a backup that was not made.
        if dest.exists() or dest.is_symlink():
            raise AlreadyExists(f"{dest} already exists; choose another backup file name")
        self.audit.append_now("vault.backup", detail={"file": dest.name})
        self.store.backup(dest)
        return dest

    def write(self, doing: str, bulk: bool = False) -> Any:
        """A write transaction on the vault (``with v.write("adding a doc") as s:``).

        ``bulk=True`` for transactions that add thousands of records (a larger page cache).
        """
        return self.store.write(doing, bulk)

    def read(self) -> Any:
        return self.store.read()
