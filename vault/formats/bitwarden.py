"""Bitwarden's unencrypted JSON export: read it, and write it for a successor.

The shape follows Bitwarden's own export models (``libs/common/src/models/export`` in
bitwarden/clients) and the "Condition a Bitwarden .json" help page::

    {"encrypted": false,
     "folders": [{"id": "…", "name": "Network/Firewalls"}],      personal vaults
     "collections": [{"id": "…", "organizationId": "…", "name": "…"}],   organisation vaults
     "items": [{"type": 1, "name": "…", "notes": "…", "folderId": "…", "collectionIds": […],
                "fields": [{"name": "…", "value": "…", "type": 0}],
                "login": {"username": "…", "password": "…", "totp": "…", "uris": [{"uri": "…"}]},
                "secureNote": {"type": 0}, "card": {…}, "identity": {…}, "sshKey": {…}}]}

Item types: 1 login, 2 secure note, 3 card, 4 identity, 5 SSH key. Field types: 0 text, 1 hidden,
2 boolean, 3 linked (a pointer to the login's own username or password, so skipped). Bitwarden
has no tags, expiry dates or attachments in this format (attachments are never exported).
"""

from __future__ import annotations

import calendar
import json
import re
import uuid
from typing import Any

from ..errors import InvalidInput
from .common import (
    MAX_TEXT_FILE_BYTES,
    UNTITLED,
    ImportedCredential,
    PathLike,
    add_field,
    category_and_tags,
    check_item_count,
    decode_utf8,
    merge_tags,
    new_credential,
    normalise_totp,
    parse_date,
    read_capped,
    split_tags,
    text_or_none,
)

LOGIN, SECURE_NOTE, CARD, IDENTITY, SSH_KEY = 1, 2, 3, 4, 5
FIELD_TEXT, FIELD_HIDDEN, FIELD_BOOLEAN, FIELD_LINKED = 0, 1, 2, 3
# Custom fields the writer uses for what Bitwarden items cannot hold, and the reader reads back.
TAGS_FIELD, EXPIRES_FIELD = "Tags", "Expires"

_CARD_FIELDS = {"brand": "Brand", "code": "Security code"}
# What Bitwarden itself hides (masked, "reprompt"-protected in its apps): secrets here too.
_CARD_SECRETS = frozenset({"code"})
_IDENTITY_SECRETS = frozenset({"ssn", "passportNumber", "licenseNumber"})
_IDENTITY_FIELDS = {
    "title": "Title",
    "firstName": "First name",
    "middleName": "Middle name",
    "lastName": "Last name",
    "company": "Company",
    "email": "Email",
    "phone": "Phone",
    "address1": "Address 1",
    "address2": "Address 2",
    "address3": "Address 3",
    "city": "City",
    "state": "State",
    "postalCode": "Postal code",
    "country": "Country",
    "ssn": "Social security number",
    "passportNumber": "Passport number",
    "licenseNumber": "Licence number",
}
_SSH_FIELDS = {"publicKey": "Public key", "keyFingerprint": "Fingerprint"}
_KNOWN_KEYS = {"login", "secureNote", "card", "identity", "sshKey", "fields", "passwordHistory"}


# --- Reading ----------------------------------------------------------------------------------


def read_bitwarden(path: PathLike) -> list[ImportedCredential]:
    """Read an unencrypted Bitwarden JSON export (see :func:`vault.formats.read_bitwarden`).

    Items in the trash (``deletedDate`` set) are skipped, as the Recycle Bin is for KeePass.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: encrypted, not JSON, not Bitwarden's shape (naming ``items[N]``), oversized.
    """
    doc = _load(read_capped(path, MAX_TEXT_FILE_BYTES, "Bitwarden export"))
    groups = _groupings(doc)
    items = doc.get("items")
    if not isinstance(items, list):
        raise InvalidInput("the JSON is not a Bitwarden export: it has no 'items' list")
    check_item_count(len(items), "Bitwarden export")
    out: list[ImportedCredential] = []
    for index, item in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} is not an object")
        if item.get("deletedDate") is None:
            out.append(_item(item, groups, where))
    return out


def _load(data: bytes) -> dict[str, Any]:
    text = decode_utf8(data, "Bitwarden export")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the file is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError):
        # RecursionError: thousands of nested brackets; ValueError: e.g. a 5000-digit number.
        raise InvalidInput(
            "the file is not JSON this tool can read (too deeply nested or too large a number)"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidInput("the JSON is not a Bitwarden export: the top level is not an object")
    if doc.get("encrypted") is True or "encKeyValidation_DO_NOT_EDIT" in doc or doc.get("passwordProtected"):
        raise InvalidInput(
            "this Bitwarden export is encrypted; it can only be read by Bitwarden",
            "export again choosing File format '.json' (not '.json (Encrypted)'), "
            "or run: bw export --format json",
        )
    return doc


def _groupings(doc: dict[str, Any]) -> dict[str, str]:
    """Folder and collection ids mapped to their names (personal and organisation exports)."""
    names: dict[str, str] = {}
    for key in ("folders", "collections"):
        entries = doc.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise InvalidInput(f"'{key}' is not a list")
        for index, entry in enumerate(entries):
            where = f"{key}[{index}]"
            if not isinstance(entry, dict):
                raise InvalidInput(f"{where} is not an object")
            ident, name = _str(entry, "id", where), _str(entry, "name", where)
            if ident is not None and name:
                names[ident] = name
    return names


def _str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"{where}.{key} must be text")


def _obj(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise InvalidInput(f"{where}.{key} must be an object")


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise InvalidInput(f"{where}.{key} must be a list")


def _item(item: dict[str, Any], groups: dict[str, str], where: str) -> ImportedCredential:
    kind = item.get("type")
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise InvalidInput(f"{where}.type must be a number (1 login, 2 note, 3 card, 4 identity, 5 SSH key)")
    cred = new_credential((_str(item, "name", where) or "").strip() or UNTITLED)
    cred["notes"] = text_or_none(_str(item, "notes", where))
    cred["category"], cred["tags"] = _placement(item, groups, where)
    _custom_fields(cred, _list(item, "fields", where), where)
    if kind == LOGIN:
        _login(cred, _obj(item, "login", where), f"{where}.login")
    elif kind == CARD:
        _card(cred, _obj(item, "card", where), f"{where}.card")
    elif kind == IDENTITY:
        _flatten(
            cred, _obj(item, "identity", where), _IDENTITY_FIELDS, f"{where}.identity", _IDENTITY_SECRETS
        )
        cred["username"] = text_or_none(_str(_obj(item, "identity", where), "username", f"{where}.identity"))
    elif kind == SSH_KEY:
        ssh = _obj(item, "sshKey", where)
        cred["secret"] = _str(ssh, "privateKey", f"{where}.sshKey") or None
        _flatten(cred, ssh, _SSH_FIELDS, f"{where}.sshKey")
    elif kind != SECURE_NOTE:
        # A type newer than this code (bank account, passport…): keep its text rather than lose it.
        for key, value in item.items():
            if key not in _KNOWN_KEYS and isinstance(value, dict):
                _flatten(cred, value, {k: k for k in value}, f"{where}.{key}")
    return cred


def _placement(item: dict[str, Any], groups: dict[str, str], where: str) -> tuple[str | None, list[str]]:
    """Category and tags from the item's folder (personal) or collections (organisation).

    Bitwarden writes nested folders as ``Parent/Child`` names, like a KeePass group path.
    """
    paths: list[str] = []
    folder = _str(item, "folderId", where)
    if folder is not None and folder in groups:
        paths.append(groups[folder])
    for index, ident in enumerate(_list(item, "collectionIds", where)):
        if not isinstance(ident, str):
            raise InvalidInput(f"{where}.collectionIds[{index}] must be text")
        if ident in groups:
            paths.append(groups[ident])
    if not paths:
        return None, []
    category, tags = category_and_tags(paths[0].split("/"))
    for extra in paths[1:]:
        tags = merge_tags(tags, category_and_tags(extra.split("/"))[1])
    return category, tags


def _custom_fields(cred: ImportedCredential, fields: list[Any], where: str) -> None:
    for index, field in enumerate(fields):
        at = f"{where}.fields[{index}]"
        if not isinstance(field, dict):
            raise InvalidInput(f"{at} is not an object")
        kind = field.get("type", FIELD_TEXT)
        if kind == FIELD_LINKED:
            continue  # a pointer to this item's username or password: nothing of its own
        name = (_str(field, "name", at) or "").strip() or f"Field {index + 1}"
        value = field.get("value")
        if isinstance(value, bool):  # some tools write booleans as JSON true/false
            value = "true" if value else "false"
        elif value is not None and not isinstance(value, str):
            raise InvalidInput(f"{at}.value must be text")
        value = value or ""
        if kind == FIELD_TEXT and name == TAGS_FIELD:
            cred["tags"] = merge_tags(cred["tags"], split_tags(value))
        elif kind == FIELD_TEXT and name == EXPIRES_FIELD and cred["expires"] is None and _is_date(value):
            cred["expires"] = value.strip()
        elif kind == FIELD_HIDDEN:
            add_field(cred["secret_fields"], name, value)
        else:
            add_field(cred["fields"], name, value)


def _is_date(value: str) -> bool:
    """An ``Expires`` field is the expiry only when it is a date; otherwise it is someone's field."""
    try:
        parse_date(value, "")
    except InvalidInput:
        return False
    return True


def _login(cred: ImportedCredential, login: dict[str, Any], where: str) -> None:
    cred["username"] = text_or_none(_str(login, "username", where))
    cred["secret"] = _str(login, "password", where) or None
    totp = _str(login, "totp", where)
    if totp and totp.strip():
        cred["totp"] = normalise_totp(totp, cred["label"], f"{where}.totp")
    uris: list[str] = []
    for index, entry in enumerate(_list(login, "uris", where)):
        if not isinstance(entry, dict):
            raise InvalidInput(f"{where}.uris[{index}] is not an object")
        uri = text_or_none(_str(entry, "uri", f"{where}.uris[{index}]"))
        if uri:
            uris.append(uri)
    if uris:
        cred["url"] = uris[0]
    for n, uri in enumerate(uris[1:], start=2):
        add_field(cred["fields"], f"URL {n}", uri)  # the vault holds one URL; keep the rest


def _card(cred: ImportedCredential, card: dict[str, Any], where: str) -> None:
    """The card number is the secret, the holder the username; brand and code become fields.

    A card's expiry (month/year) becomes ``expires``: the last day of that month.
    """
    cred["username"] = text_or_none(_str(card, "cardholderName", where))
    cred["secret"] = text_or_none(_str(card, "number", where))
    _flatten(cred, card, _CARD_FIELDS, where, _CARD_SECRETS)
    month = (_str(card, "expMonth", where) or "").strip()
    year = (_str(card, "expYear", where) or "").strip()
    if month and year:
        add_field(cred["fields"], "Expiry", f"{month}/{year}")
        if re.fullmatch(r"[0-9]{1,2}", month) and re.fullmatch(r"[0-9]{4}", year) and 1 <= int(month) <= 12:
            cred["expires"] = _month_end(int(year), int(month))


def _month_end(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}-{calendar.monthrange(year, month)[1]:02d}"


def _flatten(
    cred: ImportedCredential,
    obj: dict[str, Any],
    names: dict[str, str],
    where: str,
    secrets: frozenset[str] = frozenset(),
) -> None:
    for key, label in names.items():
        value = obj.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            add_field(cred["secret_fields" if key in secrets else "fields"], label, value)
        elif value is not None and not isinstance(value, str | list | dict | bool):
            raise InvalidInput(f"{where}.{key} must be text")


# --- Writing ----------------------------------------------------------------------------------

# Item and folder ids are UUIDv5 under this namespace, so the same input gives the same file.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:handover-vault:formats:bitwarden-json")


def write_bitwarden_json(creds: list[ImportedCredential]) -> bytes:
    """Bitwarden's unencrypted JSON (individual vault) with one folder per category.

    Raises:
        InvalidInput: a value holds a lone surrogate, which UTF-8 cannot encode.

    Every credential becomes a login item. Custom fields are written hidden (type 1): we cannot
    tell which are sensitive, and a hidden field costs the reader one click. Tags other than the
    category and the expiry date become the text fields ``Tags`` and ``Expires``.
    """
    folders: dict[str, str] = {}
    for cred in creds:
        if cred["category"] and cred["category"] not in folders:
            folders[cred["category"]] = str(uuid.uuid5(_NAMESPACE, f"folder\x00{cred['category']}"))
    items = [_write_item(index, cred, folders) for index, cred in enumerate(creds)]
    for index, item in enumerate(items):
        try:
            json.dumps(item, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate survives in a Python str (json.loads makes one of "\ud800") but
            # cannot be written as UTF-8; say which credential rather than fail the whole file.
            raise InvalidInput(
                f"credential {index + 1}: holds text that is not valid Unicode (a lone surrogate)"
            ) from None
    doc = {
        "encrypted": False,
        "folders": [{"id": ident, "name": name} for name, ident in folders.items()],
        "items": items,
    }
    # ensure_ascii=False keeps the file readable for a successor who opens it in an editor.
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _write_item(index: int, cred: ImportedCredential, folders: dict[str, str]) -> dict[str, Any]:
    # A custom field of the reserved names is renamed, so reading the file back cannot take it
    # for the tags or the expiry date.
    fields: list[dict[str, Any]] = []
    for key, value in [*cred["fields"].items(), *(cred.get("secret_fields") or {}).items()]:
        name = f"{key} (custom)" if key in (TAGS_FIELD, EXPIRES_FIELD) else key
        fields.append({"name": name, "value": value, "type": FIELD_HIDDEN, "linkedId": None})
    tags = [t for t in cred["tags"] if t != cred["category"]]
    if tags:
        fields.append({"name": TAGS_FIELD, "value": "; ".join(tags), "type": FIELD_TEXT, "linkedId": None})
    if cred["expires"]:
        fields.append({"name": EXPIRES_FIELD, "value": cred["expires"], "type": FIELD_TEXT, "linkedId": None})
    return {
        "id": str(uuid.uuid5(_NAMESPACE, f"item\x00{index}\x00{cred['label']}")),
        "organizationId": None,
        "folderId": folders.get(cred["category"] or ""),
        "type": LOGIN,
        "reprompt": 0,
        "name": cred["label"],
        "notes": cred["notes"],
        "favorite": False,
        "fields": fields,
        "login": {
            "uris": [{"match": None, "uri": cred["url"]}] if cred["url"] else [],
            "username": cred["username"],
            "password": cred["secret"],
            "totp": cred["totp"],
        },
        "collectionIds": None,
    }
