"""Who is handing over: the outgoing technician's (or MSP's) own identity, one per vault.

The letter is signed with it, the bundle's report names whom to call about the fingerprint, the
certificate of destruction and the request report say who issued them. Like every user value it is
stored only sealed: ``meta.profile`` is the AES-256-GCM envelope (under the vault master key) of the
profile's JSON, with associated data ``AAD("handover-vault/v1/profile", vault_id)``, so it decrypts
in no other vault and in no other place (docs/spec.md, "Technician profile").

Documents made without a profile keep visible blanks (``[your name]``): nothing is invented, and the
gap is a readiness warning (``readiness.profile_gaps``) that names the command which fills it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from . import validate
from .errors import IntegrityError, InvalidInput, NotFound
from .keys.crypto import DecryptFailed

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .core import Vault

META_KEY = "profile"
ACTION = "profile.set"
SET_COMMAND = "handover profile set --name NAME --company COMPANY --email EMAIL --phone PHONE"
# The visible blanks a document keeps for what the profile does not say (the letter's, since 0.1).
BLANKS = {
    "name": "[your name]",
    "company": "[your company]",
    "email": "[your email address]",
    "phone": "[your telephone number]",
    "address": "[your postal address]",
    "website": "[your website]",
}
CONTACT_BLANK = "[your telephone number and email address]"
LABELS = {
    "name": "Name",
    "company": "Company",
    "email": "Email",
    "phone": "Telephone",
    "address": "Address",
    "website": "Website",
}
LIMITS = {"name": 300, "company": 300, "email": 320, "phone": 100, "address": 1000, "website": 2000}
# Characters that can start inline Markdown anywhere in a line (code, emphasis, links, autolinks,
# entities, table cells, strikethrough): escaped wherever they occur. CommonMark shows an escaped
# ASCII punctuation character as itself, so the text renders exactly.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>|!&~#])")
# What starts a block at the beginning of a line (a list item, heading, quote, thematic break, setext
# underline, fence): a value may begin a line (the letter's signature), so its first mark is escaped.
_MD_LINE_START = re.compile(r"^(?:(\d{1,9})([.)])|([-+=>]))")


@dataclass(frozen=True)
class Profile:
    """The technician's identity; every field optional (an empty profile is "not set")."""

    name: str | None = None
    company: str | None = None
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    website: str | None = None
    updated_at: str | None = None

    @property
    def is_set(self) -> bool:
        return any(getattr(self, f) for f in LABELS)

    def values(self) -> dict[str, str | None]:
        return {f: getattr(self, f) for f in LABELS}

    def present(self) -> dict[str, str]:
        """The fields that are set (name, company, email, phone, address, website)."""
        return {f: v for f, v in self.values().items() if v}

    def to_json(self) -> dict[str, Any]:
        return {**self.values(), "updated_at": self.updated_at}

    def field(self, name: str) -> str:
        """One field on one line, or its visible blank when the profile does not say it."""
        return one_line(getattr(self, name)) or BLANKS[name]

    @property
    def sender(self) -> str:
        """Who speaks: the name, with the company after it when both are known."""
        name, company = one_line(self.name), one_line(self.company)
        if name and company:
            return f"{name}, {company}"
        return name or company or BLANKS["name"]

    @property
    def contact(self) -> str:
        """How to reach the technician: telephone and email, or the blank when neither is known."""
        return ", ".join(x for x in (one_line(self.phone), one_line(self.email)) if x) or CONTACT_BLANK


def one_line(text: Any) -> str:
    """Text on one line: runs of whitespace (newlines of an address included) become one space."""
    return " ".join(str(text or "").split())


def md_literal(text: Any) -> str:
    """Text as literal Markdown on one line: it renders as exactly this text, wherever it is put.

    Inline markup characters are escaped everywhere, and a mark that could open a block (``- x``,
    ``1. x``, ``> x``, ``===``) at the start, since a value may begin a line.
    """
    escaped = _MD_INLINE.sub(r"\\\1", one_line(text))
    return _MD_LINE_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", escaped, count=1)


def _shown(profile: Profile) -> list[str]:
    # Name, company, email and telephone always (a blank where the profile is silent, so the reader
    # sees what is missing); address and website only when set.
    return ["name", "company", "email", "phone"] + [f for f in ("address", "website") if getattr(profile, f)]


def technician_lines(profile: Profile) -> list[tuple[str, str]]:
    """(label, value) of what a document says about who issued it, as plain one-line text."""
    return [(LABELS[f], profile.field(f)) for f in _shown(profile)]


def technician_md(profile: Profile) -> str:
    """The issuer as a Markdown list (values escaped, so each renders exactly as stored)."""
    return "".join(f"- **{LABELS[f]}:** {field_md(profile, f)}\n" for f in _shown(profile))


def sender_md(profile: Profile) -> str:
    """Who speaks, as Markdown: the name (with the company), or the visible blank."""
    return BLANKS["name"] if not (profile.name or profile.company) else md_literal(profile.sender)


def contact_md(profile: Profile) -> str:
    """How to reach the technician, as Markdown: telephone and email, or the visible blank."""
    return CONTACT_BLANK if not (profile.phone or profile.email) else md_literal(profile.contact)


def signature_md(profile: Profile, contact: str | None = None) -> str:
    """The letter's signature: name, company, address, telephone, email, website, one per line.

    ``contact`` (Markdown) replaces the telephone and email lines (``letter --sender-contact``).
    """
    parts = [md_literal(profile.name) or BLANKS["name"]]
    parts += [md_literal(getattr(profile, f)) for f in ("company", "address") if getattr(profile, f)]
    reach = [md_literal(getattr(profile, f)) for f in ("phone", "email") if getattr(profile, f)]
    parts += [contact] if contact else reach or [CONTACT_BLANK]
    if profile.website:
        parts.append(md_literal(profile.website))
    # A backslash at the end of a line is CommonMark's hard line break.
    return "\\\n".join(parts)


def field_md(profile: Profile, name: str) -> str:
    """One field as Markdown, or its visible blank."""
    return md_literal(getattr(profile, name)) or BLANKS[name]


def letter_values(profile: Profile, contact: str | None = None) -> dict[str, str]:
    """The letter's ``{{sender…}}`` placeholders (Markdown). ``contact`` overrides how to reach you."""
    reach = md_literal(contact) if one_line(contact) else contact_md(profile)
    return {
        "sender": sender_md(profile),
        "sender_contact": reach,
        "sender_signature": signature_md(profile, reach if one_line(contact) else None),
        **{f"sender_{f}": field_md(profile, f) for f in LABELS},
    }


def call_to_confirm(profile: Profile) -> str:
    """Whom to call: ``Name (Company) on PHONE`` (blanks where not known), as plain text."""
    name, company = one_line(profile.name), one_line(profile.company)
    who = f"{name} ({company})" if name and company else name or company or BLANKS["name"]
    return f"{who} on {profile.field('phone')}"


class Profiles:
    """``vault.profile``: read and write the one technician profile of the vault."""

    def __init__(self, vault: Vault) -> None:
        self.v = vault

    def get(self, s: Session | None = None) -> Profile:
        """The profile (empty when none was set). Raises IntegrityError when it does not decrypt."""
        from .store.models import Meta

        if s is None:
            with self.v.read() as s2:
                return self.get(s2)
        if s.get(Meta, META_KEY) is None:
            return Profile()
        try:
            data = json.loads(self.plaintext(s))
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise IntegrityError("the technician profile has a malformed payload")
        # After the decryption (a flipped byte is named as such first): an older copy of the profile
        # decrypts too, and only the state commitment tells it from the current one.
        from .integrity.statecheck import check_top

        check_top(self.v, s)
        known = {f.name for f in fields(Profile)}
        return Profile(**{k: v for k, v in data.items() if k in known and isinstance(v, str)})

    def plaintext(self, s: Session) -> bytes:
        """The profile's JSON as stored (for ``rekey``). Raises IntegrityError, NotFound (none set)."""
        from .store.models import Meta

        row = s.get(Meta, META_KEY)
        if row is None:
            raise NotFound("no technician profile is set", f"set it: {SET_COMMAND}")
        try:
            return self.v.keys.vmk_sealer.open(row.value, self.v.keys.profile_aad())
        except DecryptFailed:
            raise IntegrityError(
                "the technician profile does not decrypt: tampered or corrupt",
                "handover verify names every problem; restore the vault from a backup made before it",
            ) from None

    def set(self, **changes: str | None) -> Profile:
        """Update the given fields only (``None``: leave as is; ``""``: clear it); audited.

        Raises InvalidInput for an unknown field, a value too long, a NUL or other control
        character, a line break outside the address, or an email that is not one.
        """
        from .clock import utcnow

        unknown = sorted(set(changes) - set(LABELS))
        if unknown:
            raise InvalidInput(f"unknown profile field {unknown[0]!r}", f"fields: {', '.join(LABELS)}")
        given = {k: _clean(k, v) for k, v in changes.items() if v is not None}
        if not given:
            raise InvalidInput(
                "nothing to set",
                "give at least one of --name, --company, --email, --phone, --address, --website",
            )
        with self.v.write("setting the technician profile") as s:
            # A damaged profile is not written over: its old value would go into the commitment.
            current = self.get(s)
            merged = {**current.values(), **given}
            new = Profile(**merged, updated_at=utcnow())
            payload = {k: v for k, v in new.to_json().items() if v}
            plain = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            blob = self.v.keys.vmk_sealer.seal(plain.encode("utf-8"), self.v.keys.profile_aad())
            # The profile is part of the state commitment (a copy rolled back is refused).
            from .integrity.commitment import set_committed_meta

            set_committed_meta(self.v, s, META_KEY, blob)
            # Which fields changed, never their values (the detail is sealed anyway; it need not hold them).
            changed = sorted(k for k in given if current.values().get(k) != new.values().get(k))
            self.v.audit.append(s, ACTION, vault_scope=True, detail={"fields": changed})
        return new


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _clean(name: str, value: str) -> str | None:
    what = f"profile {name} (--{name})"
    text = validate.text(value, what, LIMITS[name])
    if text is None:
        return None
    text = text.strip()
    if name != "address" and ("\n" in text or "\r" in text):
        raise InvalidInput(f"{what} must be on one line")
    if _CONTROL.search(text.replace("\n", "").replace("\t", " ")):
        raise InvalidInput(f"{what} contains a control character")
    if name == "email" and text:
        validate.email(text)
    return text or None
