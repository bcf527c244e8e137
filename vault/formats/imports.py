"""Imports from KeePass/KeePassXC, Bitwarden and spreadsheets into one client (DESIGN §11).

The format readers (``formats*.py``) turn a file into normalised credentials; this module plans
the import (new vs duplicate: same label and username, case-insensitive, already in the client or
earlier in the file) and writes it in ONE transaction with one audit entry, so a malformed file or
a failure half-way adds nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..creds import CATEGORIES, parse_otpauth
from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..core import Vault
    from .common import ImportedCredential

SOURCES = ("keepass", "bitwarden", "csv")
# Credentials per multi-row INSERT: large enough to amortise the statement, small enough that the
# rows and their search tokens (about fifty each) stay a few MiB.
BATCH = 10_000


@dataclass
class ImportPlan:
    source: str
    file: str
    new: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def brief(c: dict[str, Any]) -> dict[str, Any]:
            return {k: c.get(k) for k in ("label", "username", "url", "category", "tags")} | {
                "has_secret": bool(c.get("secret")),
                "has_totp": bool(c.get("totp")),
                "attachments": len(c.get("attachments") or []),
            }

        return {
            "source": self.source,
            "file": self.file,
            "new": [brief(c) for c in self.new],
            "duplicates": [brief(c) for c in self.duplicates],
            "warnings": self.warnings,
        }


def read_source(
    source: str,
    path: Path,
    password: str | None = None,
    keyfile: Path | None = None,
    mapping: dict[str, str] | None = None,
    group: str | None = None,
) -> list[ImportedCredential]:
    """Parse an outside file. Raises InvalidInput, NotFound, AuthenticationFailed (wrong KDBX password)."""
    from . import common as formats

    if source == "keepass":
        if password is None and keyfile is None:
            raise InvalidInput(
                "the KeePass database needs its password", "set HANDOVER_IMPORT_PASSPHRASE or use a TTY"
            )
        return formats.read_keepass(path, password or "", keyfile, group=group)
    if source == "bitwarden":
        return formats.read_bitwarden(path)
    if source == "csv":
        return formats.read_csv(path, mapping)
    raise InvalidInput(f"unknown import source {source!r}; one of {', '.join(SOURCES)}")


def _key(label: str, username: str | None) -> tuple[str, str]:
    return label.strip().casefold(), (username or "").strip().casefold()


def _convert(item: ImportedCredential, warnings: list[str]) -> dict[str, Any]:
    """An imported credential as ``Creds`` fields (unknown categories become tags)."""
    category = (item.get("category") or "").strip().lower() or None
    tags = list(item.get("tags") or [])
    if category and category not in CATEGORIES:
        tags = [item["category"] or "", *tags]
        category = None
    totp = item.get("totp")
    if totp:
        try:
            parse_otpauth(totp)
        except InvalidInput as exc:
            warnings.append(f"{item['label']!r}: TOTP not imported ({exc.message})")
            totp = None
    return {
        "label": item["label"],
        "username": item.get("username"),
        "secret": item.get("secret"),
        "url": item.get("url"),
        "notes": item.get("notes"),
        "category": category,
        "tags": sorted({t for t in tags if t}),
        "totp": totp,
        "expires": item.get("expires"),
        "fields": dict(item.get("fields") or {}),
        "secret_fields": dict(item.get("secret_fields") or {}),
        "attachments": list(item.get("attachments") or []),
    }


def plan(v: Vault, slug: str, source: str, path: Path, items: list[ImportedCredential]) -> ImportPlan:
    """Split ``items`` into new credentials and duplicates of existing ones."""
    p = ImportPlan(source, path.name)
    _client, existing = v.creds.list(slug)
    seen = {_key(r.data["label"], r.data.get("username")) for r in existing}
    for item in items:
        cred = _convert(item, p.warnings)
        k = _key(cred["label"], cred["username"])
        (p.duplicates if k in seen else p.new).append(cred)
        seen.add(k)
    return p


def apply(v: Vault, slug: str, p: ImportPlan, progress: Callable[[int, int], None] | None = None) -> int:
    """Add the plan's new credentials (and their attachments) in one transaction; return the count."""
    with v.write(f"importing from {p.source}", bulk=True) as s:
        client = v.clients.get(slug, s)
        # Credentials without attachments are written BATCH at a time (one multi-row INSERT each):
        # a flush per record made a 10,000-entry import take most of a minute.
        batch: list[tuple[dict[str, Any], dict[str, Any]]] = []

        def write_batch() -> None:
            recs = v.records.add_many(s, client, "cred", [(data, data["label"]) for _, data in batch])
            for (cred, _), rec in zip(batch, recs, strict=True):
                cred["id"] = rec.id
            batch.clear()

        for n, cred in enumerate(p.new, 1):
            files = cred.pop("attachments", [])
            data = v.creds.clean(cred)
            cred["attachments"] = files
            if files:
                rec = v.records.add(s, client, "cred", data, data["label"])
                cred["id"] = rec.id
                for f in files:
                    v.attachments.add_stream(
                        s, client, f["name"], io.BytesIO(f["data"]), notes=f"from credential {data['label']}"
                    )
            else:
                batch.append((cred, data))
                if len(batch) >= BATCH:
                    write_batch()
            if progress is not None:
                progress(len(p.new), n)
        write_batch()
        v.audit.append(
            s,
            f"import.{p.source}",
            client=client,
            detail={
                "file": p.file,
                "added": len(p.new),
                "duplicates": len(p.duplicates),
                "attachments": sum(len(c.get("attachments") or []) for c in p.new),
                "warnings": len(p.warnings),
            },
        )
    return len(p.new)
