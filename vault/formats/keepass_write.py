"""KeePass 2 XML for the successor's bundle, written without lxml.

Every export writes this file, and lxml (with the reading side of ``formats_keepass``) costs about
4.5 MiB of memory in the export process: the tree is built with the standard library's
ElementTree and written by :func:`_serialize`, which produces exactly the bytes lxml's
``tostring(..., pretty_print=True)`` gives for these documents (a test compares them), including
``&#13;`` for a carriage return, which ElementTree's own writer would leave raw for a reader to
turn into a line feed.
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..errors import InvalidInput
from .common import KEEPASS_TOTP_KEYS, ImportedCredential, parse_date

STANDARD_KEYS = {"Title", "UserName", "Password", "URL", "Notes"}

# --- Writing KeePass 2 XML --------------------------------------------------------------------

# Ids are UUIDv5 under this namespace: the same credentials in the same order give the same file.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:handover-vault:formats:keepass-xml")
_RESERVED = {*STANDARD_KEYS, *KEEPASS_TOTP_KEYS}
# XML 1.0's Char production: everything else (NUL, most C0 controls, lone surrogates, U+FFFE/F)
# cannot appear in a document at all, not even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_keepass_xml(
    creds: list[ImportedCredential], *, exported_at: datetime | None = None, name: str = "Handover"
) -> bytes:
    """KeePass 2 XML with one group per category under a root group named ``name``.

    Uncategorised credentials sit in the root group. Passwords, TOTP URIs and custom fields are
    marked ``ProtectInMemory`` (shown masked): we cannot tell which custom field is sensitive.

    Raises:
        InvalidInput: a value holds characters XML 1.0 cannot carry, or a bad ``expires``.
    """
    out = ["<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n"]
    _serialize(document(creds, exported_at=exported_at, name=name), out, 0)
    return "".join(out).encode("utf-8")


def document(
    creds: list[ImportedCredential], *, exported_at: datetime | None = None, name: str = "Handover"
) -> Element:
    """The element tree :func:`write_keepass_xml` writes (raises as it does)."""
    when = _xml_time(exported_at or datetime.now(UTC))
    for index, cred in enumerate(creds):
        _check_xml_safe(cred, f"credential {index + 1}")
    _check_xml_safe_text(name, "the database name")
    doc = Element("KeePassFile")
    meta = _sub(doc, "Meta")
    for tag, text in (("Generator", "Handover Vault"), ("DatabaseName", name), ("DatabaseNameChanged", when)):
        _sub(meta, tag, text)
    protection = _sub(meta, "MemoryProtection")
    for field in ("Title", "UserName", "Password", "URL", "Notes"):
        _sub(protection, f"Protect{field}", str(field == "Password"))
    _sub(meta, "RecycleBinEnabled", "True")
    _sub(meta, "RecycleBinUUID", _b64uuid(None))  # KeePass creates the bin on first delete
    store = _sub(meta, "Binaries")
    root = _group(_sub(doc, "Root"), name, "root", when)
    by_category: dict[str, list[tuple[int, ImportedCredential]]] = {}
    for index, cred in enumerate(creds):
        if cred["category"]:
            by_category.setdefault(cred["category"], []).append((index, cred))
        else:
            _write_entry(root, index, cred, when, store)
    for category, members in by_category.items():  # first-appearance order
        group = _group(root, category, f"group\x00{category}", when)
        for index, cred in members:
            _write_entry(group, index, cred, when, store)
    return doc


_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#9;"}
)


def _serialize(el: Element, out: list[str], depth: int) -> None:
    """Write ``el`` as lxml's pretty printer does for element-only or text-only content."""
    pad = "  " * depth
    attrs = "".join(f' {k}="{v.translate(_ATTR_ESCAPES)}"' for k, v in el.attrib.items())
    children = list(el)
    if children:
        out.append(f"{pad}<{el.tag}{attrs}>\n")
        for child in children:
            _serialize(child, out, depth + 1)
        out.append(f"{pad}</{el.tag}>\n")
    elif el.text is None:
        out.append(f"{pad}<{el.tag}{attrs}/>\n")
    else:
        out.append(f"{pad}<{el.tag}{attrs}>{el.text.translate(_TEXT_ESCAPES)}</{el.tag}>\n")


def _check_xml_safe_text(text: str | None, where: str) -> None:
    if text is not None and _NOT_XML.search(text):
        raise InvalidInput(f"{where}: holds characters XML cannot carry (NUL or control codes)")


def _check_xml_safe(cred: ImportedCredential, where: str) -> None:
    for key in ("label", "username", "secret", "url", "notes", "category", "totp"):
        _check_xml_safe_text(cred[key], f"{where}, {key}")
    hidden = cred.get("secret_fields") or {}
    for text in [*cred["tags"], *cred["fields"], *cred["fields"].values(), *hidden, *hidden.values()]:
        _check_xml_safe_text(text, f"{where}, tags or custom fields")
    for attachment in cred["attachments"]:
        _check_xml_safe_text(attachment["name"], f"{where}, attachment name")
    if cred["expires"] is not None:
        parse_date(cred["expires"], where)


def _sub(parent: Any, tag: str, text: str | None = None, **attrib: str) -> Any:
    el = SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _xml_time(when: datetime) -> str:
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64uuid(seed: str | None) -> str:
    raw = bytes(16) if seed is None else uuid.uuid5(_NAMESPACE, seed).bytes
    return base64.b64encode(raw).decode("ascii")


def _times(parent: Any, when: str, expires: str | None) -> None:
    times = _sub(parent, "Times")
    for tag in ("CreationTime", "LastModificationTime", "LastAccessTime"):
        _sub(times, tag, when)
    # Noon UTC keeps the calendar date the same for every time zone from UTC-11 to UTC+11.
    _sub(times, "ExpiryTime", f"{expires}T12:00:00Z" if expires else when)
    _sub(times, "Expires", str(expires is not None))
    _sub(times, "UsageCount", "0")
    _sub(times, "LocationChanged", when)


def _group(parent: Any, name: str, seed: str, when: str) -> Any:
    group = _sub(parent, "Group")
    _sub(group, "UUID", _b64uuid(seed))
    _sub(group, "Name", name)
    _sub(group, "IconID", "48")  # the folder icon
    _times(group, when, None)
    _sub(group, "IsExpanded", "True")
    return group


def _string(entry: Any, key: str, value: str, protect: bool = False) -> None:
    s = _sub(entry, "String")
    _sub(s, "Key", key)
    # ProtectInMemory, not Protected: Protected means "encrypted with the inner stream key", which
    # a plain XML file has none of; importers would fail to decrypt it.
    _sub(s, "Value", value, **({"ProtectInMemory": "True"} if protect else {}))


def _write_entry(group: Any, index: int, cred: ImportedCredential, when: str, store: Any) -> None:
    entry = _sub(group, "Entry")
    _sub(entry, "UUID", _b64uuid(f"entry\x00{index}\x00{cred['label']}"))
    _sub(entry, "IconID", "0")
    tags = [t for t in cred["tags"] if t != cred["category"]]  # the group already says it
    if tags:
        _sub(entry, "Tags", ";".join(tags))
    _times(entry, when, cred["expires"])
    _string(entry, "Title", cred["label"])
    _string(entry, "UserName", cred["username"] or "")
    _string(entry, "Password", cred["secret"] or "", protect=True)
    _string(entry, "URL", cred["url"] or "")
    _string(entry, "Notes", cred["notes"] or "")
    if cred["totp"]:
        _string(entry, "otp", cred["totp"], protect=True)
    used = {"Title", "UserName", "Password", "URL", "Notes", "otp"}
    for key, value in [*cred["fields"].items(), *(cred.get("secret_fields") or {}).items()]:
        # A custom field may not take a standard key, nor a TOTP one (KeePass would read it as
        # the entry's TOTP); and keys must stay unique within the entry.
        if not key.strip() or key in _RESERVED:
            key = f"{key} (custom)"
        candidate, n = key, 2
        while candidate in used:
            candidate, n = f"{key} ({n})", n + 1
        used.add(candidate)
        _string(entry, candidate, value, protect=True)
    names: dict[str, None] = {}
    for attachment in cred["attachments"]:
        name, n = attachment["name"] or "attachment", 2
        while name in names:  # KeePass keys attachments by name within an entry
            name, n = f"{attachment['name']} ({n})", n + 1
        names[name] = None
        ref = str(len(store))
        _sub(
            store, "Binary", base64.b64encode(attachment["data"]).decode("ascii"), ID=ref, Compressed="False"
        )
        binary = _sub(entry, "Binary")
        _sub(binary, "Key", name)
        _sub(binary, "Value", Ref=ref)
