"""Credentials: secrets, TOTP seeds, rotation and the audited reveal.

A reveal (secret, TOTP code, secrets of past versions) appends its audit entry inside a write
transaction that commits *before* the value is returned: if the entry cannot be written, the caller
gets an error and never the secret (fail closed).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import secrets
import string
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from . import validate
from .errors import InvalidInput
from .keys import crypto
from .services import RecordService

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .store.records import Rec

CATEGORIES = (
    "registrar",
    "dns",
    "tenant-admin",
    "backup-key",
    "mfa-recovery",
    "firewall",
    "wifi",
    "isp",
    "server",
    "network",
    "email",
    "service",
    "other",
)
# Never shown without a reveal: the secret, the TOTP seed, and the custom fields the source marked
# hidden or protected (``formats.ImportedCredential.secret_fields``).
SECRET_FIELDS = ("secret", "totp", "secret_fields")
GEN_ALPHABET = string.ascii_letters + string.digits + "-_.,:;!?@#%+="
MAX_SECRET = 10_000


def generate_secret(length: int = 24) -> str:
    """A random password from the OS CSPRNG (24 symbols of 76: about 150 bits)."""
    if not 8 <= length <= 256:
        raise InvalidInput("a generated secret is between 8 and 256 characters long")
    return "".join(secrets.choice(GEN_ALPHABET) for _ in range(length))


def parse_otpauth(uri: str) -> dict[str, Any]:
    """Validate an ``otpauth://totp/...`` URI; return its parameters. Raises InvalidInput."""
    uri = (uri or "").strip()
    if len(uri) > 2048:
        raise InvalidInput("the otpauth URI is too long")
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "otpauth" or parts.netloc.lower() != "totp":
        raise InvalidInput("the TOTP seed must be an otpauth://totp/... URI")
    query = urllib.parse.parse_qs(parts.query)
    raw = (query.get("secret") or [""])[0].replace(" ", "").upper()
    try:
        seed = base64.b32decode(raw + "=" * (-len(raw) % 8))
    except (binascii.Error, ValueError):
        raise InvalidInput("the otpauth URI's secret is not base32") from None
    if len(seed) < 10:
        raise InvalidInput("the otpauth URI's secret is missing or shorter than 80 bits")
    algorithm = (query.get("algorithm") or ["SHA1"])[0].upper()
    if algorithm not in ("SHA1", "SHA256", "SHA512"):
        raise InvalidInput(f"unsupported TOTP algorithm {algorithm!r}")
    try:
        digits = int((query.get("digits") or ["6"])[0])
        period = int((query.get("period") or ["30"])[0])
    except ValueError:
        raise InvalidInput("the otpauth URI's digits or period is not a number") from None
    if digits not in (6, 7, 8) or not 10 <= period <= 300:
        raise InvalidInput("TOTP digits must be 6-8 and the period 10-300 seconds")
    return {"seed": seed, "algorithm": algorithm, "digits": digits, "period": period}


def totp_code(uri: str, at: float | None = None) -> tuple[str, int]:
    """The current code and the seconds it stays valid."""
    p = parse_otpauth(uri)
    now = time.time() if at is None else at
    code = crypto.totp_now(p["seed"], p["digits"], p["period"], p["algorithm"], now)
    return code, p["period"] - int(now) % p["period"]


def public_view(data: dict[str, Any]) -> dict[str, Any]:
    """A credential's fields without its secret or TOTP seed (what ``cred list/show`` display)."""
    out = {k: v for k, v in data.items() if k not in SECRET_FIELDS}
    out["has_secret"] = bool(data.get("secret"))
    out["has_totp"] = bool(data.get("totp"))
    out["hidden_fields"] = sorted(data.get("secret_fields") or {})  # their names only
    return out


class Creds(RecordService):
    kind = "cred"
    name_field = "label"
    unique_field = "label"
    noun = "credential labelled"
    audit_changes = True

    def clean(self, data: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        category = (data.get("category") or "").strip().lower() or None
        if category and category not in CATEGORIES:
            raise InvalidInput(f"category {category!r} is not one of: {', '.join(CATEGORIES)}")
        totp = data.get("totp") or None
        if totp:
            parse_otpauth(totp)
        return {
            "label": validate.text(data.get("label"), "label", 300, required=True),
            "username": validate.text(data.get("username"), "username", 500),
            "secret": validate.text(data.get("secret"), "secret", MAX_SECRET),
            "url": validate.text(data.get("url"), "URL", 2048),
            "notes": validate.text(data.get("notes"), "notes", validate.MAX_TEXT),
            "category": category,
            "tags": sorted(set(data.get("tags") or [])),
            "expires": validate.date(data.get("expires"), "expiry date"),
            "totp": totp,
            "last_rotated": data.get("last_rotated"),
            "needs_rotation": bool(data.get("needs_rotation")),
            "rotation_reason": data.get("rotation_reason"),
            "fields": dict(data.get("fields") or {}),
            "secret_fields": {
                validate.text(k, "field name", 300, required=True): validate.text(
                    v, "hidden field", MAX_SECRET
                )
                for k, v in dict(data.get("secret_fields") or {}).items()
            },
        }

    def list(self, slug: str, needs_rotation: bool = False) -> tuple[ClientRef, builtins.list[Rec]]:
        client, recs = super().list(slug)
        if needs_rotation:
            recs = [r for r in recs if r.data.get("needs_rotation")]
        return client, recs

    def reveal(self, slug: str, ref: str, purpose: str = "show", field: str = "secret") -> Rec:
        """The credential with its secret, after its audit entry has been committed."""
        with self.v.write("revealing a credential") as s:
            client = self.v.clients.get(slug, s)
            rec = self.v.records.get(s, client, self.kind, ref)
            detail: dict[str, Any] = {"version": rec.version, "field": field, "purpose": purpose}
            hidden = sorted(rec.data.get("secret_fields") or {})
            if field == "secret" and hidden:
                detail["hidden_fields"] = hidden  # revealed with the secret: named, never their values
            self.v.audit.append(s, "cred.reveal", client=client, record_id=rec.id, detail=detail)
        return rec

    def totp(self, slug: str, ref: str) -> tuple[Rec, str, int]:
        rec = self.reveal(slug, ref, purpose="totp", field="totp")
        uri = rec.data.get("totp")
        if not uri:
            raise InvalidInput(f"credential {rec.data.get('label')!r} has no TOTP seed")
        code, left = totp_code(uri)
        return rec, code, left

    def history_revealed(self, slug: str, ref: str) -> tuple[Rec, builtins.list[Rec]]:
        """Past versions with their secrets: one audit entry names every version disclosed."""
        with self.v.write("revealing credential history") as s:
            client = self.v.clients.get(slug, s)
            rec = self.v.records.get(s, client, self.kind, ref)
            old = self.v.records.history(s, client, rec)
            self.v.audit.append(
                s,
                "cred.reveal",
                client=client,
                record_id=rec.id,
                detail={
                    "versions": [r.version for r in old] + [rec.version],
                    "field": "secret",
                    "purpose": "history",
                },
            )
        return rec, old

    def rotate(self, slug: str, ref: str, new_secret: str) -> Rec:
        """Replace the secret; the previous one stays in the credential's history."""
        from .clock import utcnow

        if not new_secret:
            raise InvalidInput("the new secret is empty")
        with self.v.write("rotating a credential") as s:
            client = self.v.clients.get(slug, s)
            rec = self.v.records.get(s, client, self.kind, ref)
            data = self.clean(
                {
                    **rec.data,
                    "secret": new_secret,
                    "last_rotated": utcnow()[:10],
                    "needs_rotation": False,
                    "rotation_reason": None,
                }
            )
            new = self.v.records.update(s, client, rec, data, self._name(data))
            self.after_write(s, client, new, "rotate")
            return new

    def flag_for_rotation(self, s: Session, client: ClientRef, rec: Rec, reason: str) -> Rec:
        data = {**rec.data, "needs_rotation": True, "rotation_reason": reason}
        return self.v.records.update(s, client, rec, data, self._name(data))
