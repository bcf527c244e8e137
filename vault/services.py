"""Recording services: one small class per record kind over the generic sealed record store.

Each service validates its fields, names records by their title/label (for lookup by exact name)
and writes audit entries for the actions that matter. ``creds.py`` and ``attachments.py`` build on
the same base for the kinds with secrets and blobs.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from . import validate
from .errors import AlreadyExists, InvalidInput

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .core import Vault
    from .store.records import Rec


class RecordService:
    """add / list / get / edit / history / rm for one record kind."""

    kind = ""
    name_field = "title"
    # Every change is an audit entry: the entry carries the state commitment after it (DESIGN §3a),
    # so a change without one would leave nothing that pins it down.
    audit_changes = True
    # A second record with the same value of this field in one client is refused unless allowed:
    # "cred show acme 'Firewall admin'" must name one credential, and one email one contact.
    unique_field: str | None = None
    noun = ""  # how a message names one record of the kind ("credential labelled")

    def __init__(self, vault: Vault) -> None:
        self.v = vault

    # Subclasses turn user input into a payload; ``old`` is the current payload on edit.
    def clean(self, data: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def _name(self, data: dict[str, Any]) -> str | None:
        value = data.get(self.name_field)
        return str(value) if value else None

    def add(self, slug: str, allow_duplicate: bool = False, **fields: Any) -> Rec:
        """Add a record; AlreadyExists for a duplicate of :attr:`unique_field` unless allowed."""
        data = self.clean(fields)
        with self.v.write(f"adding a {self.kind}") as s:
            client = self.v.clients.get(slug, s)
            if not allow_duplicate:
                self._refuse_duplicate(s, client, data.get(self.unique_field or ""))
            rec = self.v.records.add(s, client, self.kind, data, self._name(data))
            self.after_write(s, client, rec, "add")
            return rec

    def add_in(self, s: Session, client: ClientRef, fields: dict[str, Any]) -> Rec:
        """Add inside an open transaction (imports, demo)."""
        data = self.clean(fields)
        rec = self.v.records.add(s, client, self.kind, data, self._name(data))
        self.after_write(s, client, rec, "add")
        return rec

    def refuse_duplicate(self, slug: str, value: str | None) -> None:
        """AlreadyExists if the client has a record whose :attr:`unique_field` is ``value``."""
        with self.v.read() as s:
            self._refuse_duplicate(s, self.v.clients.get(slug, s), value)

    def _refuse_duplicate(self, s: Session, client: ClientRef, value: Any, own_id: str | None = None) -> None:
        if not self.unique_field or not isinstance(value, str) or not value.strip():
            return
        if self.unique_field == self.name_field:
            same = self.v.records.named(s, client, self.kind, value)
        else:
            wanted = value.strip().casefold()
            same = [
                r
                for r in self.v.records.list(s, client, self.kind)
                if str(r.data.get(self.unique_field) or "").strip().casefold() == wanted
            ]
        same = [r for r in same if r.id != own_id]
        if same:
            raise AlreadyExists(
                f"client {client.slug} already has a {self.noun} {same[0].data.get(self.unique_field)!r} "
                f"({same[0].id[:8]}); nothing was saved",
                f"use a distinct {self.unique_field}, name the existing one by its id, "
                "or add --allow-duplicate to keep both",
            )

    def list(self, slug: str) -> tuple[ClientRef, builtins.list[Rec]]:
        with self.v.read() as s:
            client = self.v.clients.get(slug, s)
            return client, self.v.records.list(s, client, self.kind)

    def get(self, slug: str, ref: str) -> tuple[ClientRef, Rec]:
        with self.v.read() as s:
            client = self.v.clients.get(slug, s)
            return client, self.v.records.get(s, client, self.kind, ref)

    def edit(self, slug: str, ref: str, **changes: Any) -> Rec:
        with self.v.write(f"editing a {self.kind}") as s:
            client = self.v.clients.get(slug, s)
            rec = self.v.records.get(s, client, self.kind, ref)
            merged = {**rec.data, **{k: v for k, v in changes.items() if v is not None}}
            data = self.clean(merged, old=rec.data)
            if self.unique_field and data.get(self.unique_field) != rec.data.get(self.unique_field):
                self._refuse_duplicate(s, client, data.get(self.unique_field), own_id=rec.id)
            new = self.v.records.update(s, client, rec, data, self._name(data))
            self.after_write(s, client, new, "edit")
            return new

    def history(self, slug: str, ref: str) -> tuple[Rec, builtins.list[Rec]]:
        with self.v.read() as s:
            client = self.v.clients.get(slug, s)
            rec = self.v.records.get(s, client, self.kind, ref)
            return rec, self.v.records.history(s, client, rec)

    def rm(self, slug: str, ref: str) -> Rec:
        with self.v.write(f"removing a {self.kind}") as s:
            client = self.v.clients.get(slug, s)
            rec = self.v.records.get(s, client, self.kind, ref)
            self.v.records.delete(s, client, rec)
            self.after_write(s, client, rec, "rm")
            return rec

    def after_write(self, s: Session, client: ClientRef, rec: Rec, verb: str) -> None:
        if self.audit_changes:
            self.v.audit.append(
                s, f"{self.kind}.{verb}", client=client, record_id=rec.id, detail={"version": rec.version}
            )


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return sorted({validate.text(str(t).strip(), "tag", 64) or "" for t in items} - {""})


class Contacts(RecordService):
    kind = "contact"
    name_field = "name"
    unique_field = "email"
    noun = "contact with the email"
    audit_changes = True  # who may receive credentials is part of the disclosure policy

    def clean(self, data: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "name": validate.text(data.get("name"), "name", 200, required=True),
            "role": validate.text(data.get("role"), "role", 200),
            "email": validate.email(data.get("email")),
            "phone": validate.text(data.get("phone"), "phone", 64),
            "authorized": bool(data.get("authorized")),
            "notes": validate.text(data.get("notes"), "notes", validate.MAX_TEXT),
        }


class Docs(RecordService):
    kind = "doc"

    def clean(self, data: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        body = data.get("body")
        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    "the document is not UTF-8 text", "attach binary files with: handover attach add"
                ) from None
        return {
            "title": validate.text(data.get("title"), "title", 300, required=True),
            "body": validate.text(body or "", "document body", validate.MAX_TEXT) or "",
            "tags": _tags(data.get("tags")),
            "overview": bool(data.get("overview")),
        }


ASSET_EXPIRY_KINDS = ("warranty", "licence", "domain", "certificate", "support")


class Assets(RecordService):
    kind = "asset"
    name_field = "hostname"

    def clean(self, data: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        kind = data.get("expiry_kind")
        if kind and kind not in ASSET_EXPIRY_KINDS:
            raise InvalidInput(f"expiry kind {kind!r} is not one of {', '.join(ASSET_EXPIRY_KINDS)}")
        return {
            "hostname": validate.text(data.get("hostname"), "hostname", 255, required=True),
            "kind": validate.text(data.get("kind"), "kind", 64),
            "ip": validate.text(data.get("ip"), "IP/subnet", 128),
            "location": validate.text(data.get("location"), "location", 300),
            "model": validate.text(data.get("model"), "model", 200),
            "serial": validate.text(data.get("serial"), "serial", 200),
            "expires": validate.date(data.get("expires"), "expiry date"),
            "expiry_kind": kind or ("warranty" if data.get("expires") else None),
            "notes": validate.text(data.get("notes"), "notes", validate.MAX_TEXT),
        }


class Issues(RecordService):
    kind = "issue"

    def clean(self, data: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        status = data.get("status") or "open"
        if status not in ("open", "resolved"):
            raise InvalidInput(f"issue status {status!r} is not open or resolved")
        return {
            "title": validate.text(data.get("title"), "title", 300, required=True),
            "severity": validate.severity(data.get("severity") or ""),
            "status": status,
            "description": validate.text(data.get("description"), "description", validate.MAX_TEXT) or "",
            "risk": validate.text(data.get("risk"), "risk", validate.MAX_TEXT),
            "workaround": validate.text(data.get("workaround"), "workaround", validate.MAX_TEXT),
            "resolved_at": data.get("resolved_at"),
        }

    def resolve(self, slug: str, ref: str) -> Rec:
        from .clock import utcnow

        return self.edit(slug, ref, status="resolved", resolved_at=utcnow())
