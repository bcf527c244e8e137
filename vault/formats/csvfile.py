"""Spreadsheet (CSV) import.

Our column set, matched case-insensitively and in any order::

    label,username,password,url,notes,category,tags,totp,expires

``label`` is required (``title`` is accepted for it, ``secret`` for ``password``). ``tags`` are
separated by ``;`` or ``,``; ``totp`` is an ``otpauth://`` URI or a base32 seed; ``expires`` is
``YYYY-MM-DD``. Any other column becomes a custom field of that name, unless mapped.

Two exports are recognised from their headers and read without a mapping:

- KeePassXC (``keepassxc-cli export -f csv``, Database > Export > CSV):
  ``Group,Title,Username,Password,URL,Notes[,TOTP,Icon,Last Modified,Created]``. The group path
  starts with the root group's name, which is dropped; rows in ``Recycle Bin`` are skipped.
- Bitwarden (``bw export --format csv``): ``folder,favorite,type,name,notes,fields,reprompt,
  login_uri,login_username,login_password,login_totp`` (organisations: ``collections`` instead of
  ``folder``). ``fields`` holds ``name: value`` lines; ``login_uri`` several URIs joined by commas.

Rows are numbered as a spreadsheet shows them: the header is row 1. The delimiter is the one of
``,``, ``;`` (Excel in many European locales) or tab that splits the header into most columns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from ..errors import InvalidInput
from .common import (
    MAX_TEXT_FILE_BYTES,
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

COLUMNS = ("label", "username", "password", "url", "notes", "category", "tags", "totp", "expires")
IGNORE = "ignore"

_OURS = {**{c: c for c in COLUMNS}, "title": "label", "secret": "password"}
# Internal targets start with "_": they need a dialect's own handling.
_KEEPASSXC = {
    "group": "_group",
    "title": "label",
    "username": "username",
    "password": "password",
    "url": "url",
    "notes": "notes",
    "totp": "totp",
    "tags": "tags",
    "icon": IGNORE,
    "last modified": IGNORE,
    "created": IGNORE,
}
_BITWARDEN = {
    "folder": "_folder",
    "collections": "_collections",
    "favorite": IGNORE,
    "type": IGNORE,
    "name": "label",
    "notes": "notes",
    "fields": "_fields",
    "reprompt": IGNORE,
    "login_uri": "_uris",
    "login_username": "username",
    "login_password": "password",
    "login_totp": "totp",
    "login_fido2credentials": IGNORE,
}
# Column names this reader knows: the only header cells an error message may quote back.
_KNOWN_NAMES = {*_OURS, *_KEEPASSXC, *_BITWARDEN}
_RECYCLE_BIN = "Recycle Bin"


def read_csv(path: PathLike, mapping: dict[str, str] | None = None) -> list[ImportedCredential]:
    """Read a CSV export (see the module docstring and :func:`vault.formats.read_csv`).

    Raises:
        NotFound: the file does not exist.
        InvalidInput: empty, no label column, a bad mapping, malformed CSV, a bad cell (naming the
            row and column), not UTF-8, oversized.
    """
    text = decode_utf8(read_capped(path, MAX_TEXT_FILE_BYTES, "CSV file"), "CSV file")
    rows = _rows(text)
    header = next(rows, None)
    if header is None or not any(h.strip() for h in header):
        raise InvalidInput("the CSV file is empty: the first row must name the columns")
    targets = _targets(header, mapping)
    out: list[ImportedCredential] = []
    for number, row in enumerate(rows, start=2):
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header) :]):
            raise InvalidInput(
                f"row {number}: has {len(row)} cells but the header names {len(header)} columns"
            )
        if any(cell.strip() for cell in row):
            cred = _row(row, header, targets, f"row {number}")
            if cred is not None:
                out.append(cred)
                check_item_count(len(out), "CSV file")
    return out


def _rows(text: str) -> Iterator[list[str]]:
    """CSV records, with ``csv.Error`` turned into InvalidInput naming the record."""
    first_line = text.split("\n", 1)[0]
    delimiter = max([",", ";", "\t"], key=first_line.count)
    # strict: a stray quote is an error rather than silently merged cells. Cells over csv's
    # 128 KiB limit are refused too; no credential's value is that long.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    number = 0
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            raise InvalidInput(
                f"row {number}: the CSV is malformed (an unbalanced quote, or a cell over 128 KiB)"
            ) from None
        yield row


def _targets(header: list[str], mapping: dict[str, str] | None) -> list[str]:
    """For each column, what it fills: one of COLUMNS, an internal target, IGNORE, or
    ``field:NAME`` (a custom field).

    Raises:
        InvalidInput: a mapping names an absent column or an unknown target, two columns fill the
            same value, or there is no label column.
    """
    names = [h.strip().casefold() for h in header]
    keys = set(names)
    if "login_password" in keys or {"name", "login_uri"} <= keys:
        table = _BITWARDEN
    elif {"group", "title", "username", "password"} <= keys:
        table = _KEEPASSXC
    else:
        table = _OURS
    user = _check_mapping(mapping or {}, keys)
    targets = [
        user.get(n) or table.get(n) or f"field:{h.strip()}" for n, h in zip(names, header, strict=True)
    ]
    seen: dict[str, str] = {}
    for target, original in zip(targets, header, strict=True):
        if target == IGNORE or target.startswith("field:"):
            continue
        if target in seen:
            raise InvalidInput(
                f"the columns '{seen[target]}' and '{original.strip()}' both give the {target.lstrip('_')}"
            )
        seen[target] = original.strip()
    if "label" not in seen:
        # Only names we know are quoted back: a file without a header row, or whose header line
        # ran into the first row, has a credential (and its password) where the names should be.
        known = [h.strip() for n, h in zip(names, header, strict=True) if n in _KNOWN_NAMES or n in user]
        others = len(header) - len(known)
        listed = ", ".join(known) or "none recognised"
        raise InvalidInput(
            f"the CSV has no label column (columns: {listed}"
            + (f"; {others} other{'s' if others != 1 else ''} not shown" if others else "")
            + ")",
            "name the column that holds each credential's title, e.g. --map Title=label; "
            "check that the first line is the header row",
        )
    return targets


def _check_mapping(mapping: dict[str, str], keys: set[str]) -> dict[str, str]:
    user: dict[str, str] = {}
    for source, target in mapping.items():
        s, t = source.strip().casefold(), target.strip().casefold()
        if t not in COLUMNS and t != IGNORE:
            raise InvalidInput(
                f"cannot map '{source}' to '{target}'",
                "map a column to one of: " + ", ".join(COLUMNS) + f", or {IGNORE}",
            )
        if s not in keys:
            raise InvalidInput(f"the CSV has no column '{source}' to map")
        user[s] = t
    return user


def _row(row: list[str], header: list[str], targets: list[str], where: str) -> ImportedCredential | None:
    values: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for index, target in enumerate(targets):
        cell = row[index] if index < len(row) else ""
        if target.startswith("field:"):
            extra.append((target[len("field:") :], cell))
        elif target != IGNORE:
            values[target] = cell
    label = values.get("label", "").strip()
    if not label:
        raise InvalidInput(f"{where}: the label is empty")
    cred = new_credential(label)
    if not _place(cred, values):
        return None  # a KeePassXC Recycle Bin row
    cred["username"] = text_or_none(values.get("username"))
    cred["secret"] = values.get("password") or None  # kept exactly: spaces can be part of it
    cred["url"] = text_or_none(values.get("url"))
    cred["notes"] = text_or_none(values.get("notes"))
    if values.get("totp", "").strip():
        cred["totp"] = normalise_totp(values["totp"], label, f"{where}, {_column(header, targets, 'totp')}")
    if values.get("expires", "").strip():
        cred["expires"] = parse_date(values["expires"], where)
    _uris(cred, values.get("_uris", ""))
    _bitwarden_fields(cred, values.get("_fields", ""))
    for name, cell in extra:
        add_field(cred["fields"], name or "field", cell)
    return cred


def _column(header: list[str], targets: list[str], target: str) -> str:
    return f"column '{header[targets.index(target)].strip()}'"


def _place(cred: ImportedCredential, values: dict[str, str]) -> bool:
    """Set category and tags from whichever columns the dialect has; False for a Recycle Bin row."""
    tags = split_tags(values.get("tags"))
    path: list[str] = []
    if "_group" in values:
        path = values["_group"].split("/")[1:]  # KeePassXC includes the root group's name
        if path and path[0] == _RECYCLE_BIN:
            return False
    elif values.get("_folder", "").strip():
        path = values["_folder"].split("/")  # Bitwarden writes nested folders as Parent/Child
    elif values.get("_collections", "").strip():
        collections = [c for c in values["_collections"].split(",") if c.strip()]
        path = collections[0].split("/")
        tags = merge_tags([c.strip() for c in collections[1:]], tags)
    category, path_tags = category_and_tags(path)
    column = text_or_none(values.get("category"))
    cred["category"] = column.strip() if column else category
    cred["tags"] = merge_tags(path_tags, tags)
    return True


def _uris(cred: ImportedCredential, cell: str) -> None:
    uris = [u.strip() for u in cell.split(",") if u.strip()]
    if uris and cred["url"] is None:
        cred["url"] = uris[0]
    for n, uri in enumerate(uris[1:], start=2):
        add_field(cred["fields"], f"URL {n}", uri)


def _bitwarden_fields(cred: ImportedCredential, cell: str) -> None:
    """Bitwarden's CSV ``fields`` cell: one ``name: value`` per line."""
    for n, line in enumerate(cell.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(": ")
        if not sep:
            name, value = f"Field {n}", line
        add_field(cred["fields"], name, value)
