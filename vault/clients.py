"""Clients: a slug, a display name and the agreement, sealed under the client's own data key."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import object_session

from . import validate
from .errors import AlreadyExists, IntegrityError, NoAccess, NotFound
from .integrity.commitment import tracker
from .integrity.statecheck import check_top
from .keys import crypto
from .keys.crypto import DecryptFailed
from .keys.hierarchy import ClientKeys, record_aad
from .store.models import Client

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .core import Vault

PROFILE_KIND = "client"


@dataclass
class ClientRef:
    """An unlocked client: its keys and decrypted profile (slug, name, agreement, successor)."""

    id: str
    version: int
    created_at: str
    updated_at: str
    keys: ClientKeys
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return str(self.data["slug"])

    @property
    def name(self) -> str:
        return str(self.data.get("name") or self.slug)

    @property
    def agreement(self) -> dict[str, Any]:
        return dict(self.data.get("agreement") or {})

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "updated_at": self.updated_at, **self.data}


def agreement_fields(
    contract_start: str | None = None,
    notice_days: int | None = None,
    notice_months: int | None = None,
    end_of_month: bool | None = None,
    on_hand_days: int | None = None,
) -> dict[str, Any]:
    """Validated agreement terms (only the ones given)."""
    from .errors import InvalidInput

    if notice_days is not None and notice_months is not None:
        raise InvalidInput("give the notice period in days or in months, not both")
    out: dict[str, Any] = {}
    if contract_start is not None:
        out["contract_start"] = validate.date(contract_start, "contract start")
    if notice_days is not None:
        out["notice"] = {"days": validate.positive_int(notice_days, "notice days", validate.MAX_DAYS)}
    if notice_months is not None:
        out["notice"] = {"months": validate.positive_int(notice_months, "notice months", validate.MAX_MONTHS)}
    if end_of_month is not None:
        out["end_of_month"] = bool(end_of_month)
    if on_hand_days is not None:
        out["on_hand_days"] = validate.positive_int(on_hand_days, "on-hand days", validate.MAX_DAYS)
    return out


class Clients:
    def __init__(self, vault: Vault) -> None:
        self.v = vault

    def _seal(self, keys: ClientKeys, client_id: str, version: int, data: dict[str, Any]) -> bytes:
        aad = record_aad(self.v.vault_id, client_id, PROFILE_KIND, client_id, version)
        return keys.sealer.seal(json.dumps(data, sort_keys=True).encode(), aad)

    def unseal(self, keys: ClientKeys, row: Client) -> dict[str, Any]:
        """The client profile in ``row``'s envelope, opened with ``keys``. IntegrityError if it
        does not decrypt."""
        aad = record_aad(self.v.vault_id, row.id, PROFILE_KIND, row.id, row.version)
        try:
            data: dict[str, Any] = json.loads(keys.sealer.open(row.envelope, aad))
        except (DecryptFailed, ValueError):
            raise IntegrityError(f"client {row.id} does not decrypt: tampered or corrupt") from None
        return data

    def load(self, row: Client) -> ClientRef:
        """The client of ``row``, decrypted. Raises IntegrityError, or NoAccess in a team vault
        when this member holds no grant for it."""
        keys = self.v.keys.client(row.id, row.wrapped_key, object_session(row), row.key_version)
        data = self.unseal(keys, row)
        if self.v.keys.client_lookup(data.get("slug", "")) != row.lookup:
            raise IntegrityError(f"client {row.id} does not match its lookup entry: tampered")
        return ClientRef(row.id, row.version, row.created_at, row.updated_at, keys, data)

    def add(self, slug: str, name: str, **terms: Any) -> ClientRef:
        """Create a client with its own random data key. Raises AlreadyExists for a taken slug."""
        from .clock import utcnow

        slug = validate.slug(slug)
        name = validate.text(name, "name", 200, required=True) or slug
        agreement = {"status": "active", "history": [{"status": "active", "at": utcnow()}]}
        agreement.update(agreement_fields(**terms))
        data = {"slug": slug, "name": name, "agreement": agreement}
        cid, now, key = str(uuid.uuid4()), utcnow(), crypto.random_key()
        keys = ClientKeys(key)
        row = Client(
            id=cid,
            lookup=self.v.keys.client_lookup(slug),
            wrapped_key=self.v.keys.wrap_client_key(cid, key),
            version=1,
            created_at=now,
            updated_at=now,
            envelope=self._seal(keys, cid, 1, data),
        )
        ref = ClientRef(cid, 1, now, now, keys, data)
        try:
            with self.v.write("adding a client") as s:
                if s.execute(select(Client.id).where(Client.lookup == row.lookup)).first():
                    raise AlreadyExists(
                        f"client {slug!r} already exists", f"see it: handover client show {slug}"
                    )
                s.add(row)
                s.flush()
                self.v.keys.client_added(s, cid, key)
                tracker(self.v, s).client(row, +1, new=True)
                self.v.audit.append(s, "client.add", client=ref)
        except SAIntegrityError:
            raise AlreadyExists(f"client {slug!r} already exists") from None
        return ref

    def get(self, slug: str, s: Session | None = None) -> ClientRef:
        """The client with this slug. Raises NotFound (with a hint) or IntegrityError."""
        lookup = self.v.keys.client_lookup((slug or "").strip())
        if s is None:
            with self.v.read() as s2:
                return self._get(s2, slug, lookup)
        return self._get(s, slug, lookup)

    def _get(self, s: Session, slug: str, lookup: str) -> ClientRef:
        row = s.execute(select(Client).where(Client.lookup == lookup)).scalar()
        if row is None:
            check_top(self.v, s)  # a client that is gone may have been removed behind our back
            raise NotFound(f"no client {slug!r}", "list clients with: handover client list")
        ref = self.load(row)
        check_top(self.v, s)  # after the decryption: a flipped byte is named as such first
        return ref

    def list(self) -> list[ClientRef]:
        """Every client this vault's keys open (in a team vault: the clients granted to this member)."""
        with self.v.read() as s:
            rows = s.execute(select(Client)).scalars().all()
            refs = []
            for r in rows:
                try:
                    refs.append(self.load(r))
                except NoAccess:
                    continue
            check_top(self.v, s)
        return sorted(refs, key=lambda c: c.slug)

    def save(self, s: Session, client: ClientRef, data: dict[str, Any]) -> ClientRef:
        """Write a new version of the client's profile inside the caller's transaction."""
        from .clock import utcnow

        row = s.get(Client, client.id)
        if row is None:
            raise NotFound(f"client {client.slug!r} no longer exists")
        state = tracker(self.v, s)
        state.client(row, -1)
        row.version += 1
        row.updated_at = utcnow()
        row.envelope = self._seal(client.keys, client.id, row.version, data)
        new_slug = data["slug"]
        row.lookup = self.v.keys.client_lookup(new_slug)
        s.flush()
        state.client(row, +1)
        return ClientRef(client.id, row.version, client.created_at, row.updated_at, client.keys, data)

    def edit(self, slug: str, name: str | None = None, **terms: Any) -> ClientRef:
        with self.v.write("editing a client") as s:
            client = self.get(slug, s)
            data = dict(client.data)
            if name is not None:
                data["name"] = validate.text(name, "name", 200, required=True)
            agreement = client.agreement
            agreement.update(agreement_fields(**{k: v for k, v in terms.items() if v is not None}))
            data["agreement"] = agreement
            ref = self.save(s, client, data)
            self.v.audit.append(s, "client.edit", client=ref)
            return ref
