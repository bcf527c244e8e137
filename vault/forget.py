"""Forgetting a client (crypto-shredding) and the signed certificate of destruction.

One write transaction deletes the client's row, which holds its wrapped data key, and every record,
previous version, attachment chunk and search token of the client (``ON DELETE CASCADE``), and
appends a ``client.forget`` audit entry sealed under the vault's audit key so that its detail stays
readable. Then the database is vacuumed and the write-ahead log checkpointed and truncated: in WAL
mode deleted pages survive in the -wal file until a checkpoint, and ``secure_delete`` zeroes freed
content in the main file. Older audit entries about the client stay (the MAC chain still verifies);
their details were sealed under the destroyed key and can no longer be read.

The certificate is Markdown followed by a signature block (docs/agreement.md gives the format)::

    ```handover-signature
    Format: handover-certificate/1
    Signer: hv:xxxx-...
    Signature: <base64 Ed25519 signature>
    -----BEGIN PUBLIC KEY-----
    ...
    -----END PUBLIC KEY-----
    ```

The signature covers ``b"handover-certificate/1\\n"`` followed by the UTF-8 bytes of everything
before the line that opens the block, with line endings normalised to LF (mail clients convert them).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from .agreement import effective_status, status_line
from .errors import IntegrityError, InvalidInput, NotFound, PolicyRefused, StorageError
from .integrity.commitment import tracker
from .keys import crypto

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .core import Vault

from .store.models import AuditEntry, Chunk, Client, Record, RecordVersion

CERT_FORMAT = "handover-certificate/1"
# Documents signed the same way: the certificate of destruction and a request's receipt
# (vault/requests/receipts.py). The format line is what the signature covers first, so a signature made for
# one kind of document never verifies as the other.
SIGNED_FORMATS = (CERT_FORMAT, "handover-receipt/1")
SIG_OPEN = "```handover-signature\n"
FORGET_ACTION = "client.forget"
MAX_CERTIFICATE = 1_000_000
# A TRUNCATE checkpoint waits (busy handler) for readers of older snapshots to finish. The deletion is
# already committed by then, so wait briefly and report an incomplete purge instead of hanging.
# Counted besides the records of each kind (they are parts of records, or audit entries).
KIND_LABELS = {
    "contact": "contacts",
    "doc": "documents",
    "asset": "assets",
    "cred": "credentials",
    "issue": "known issues",
    "attachment": "attachments",
    "ack": "acknowledgements",
    "request": "requests after the end",
}
EXTRA_COUNTS = ("previous versions", "attachment chunks", "audit details made unreadable")


@dataclass(frozen=True)
class Forgotten:
    """What ``forget_client`` destroyed, and the audit entry that records it."""

    slug: str
    name: str
    client_id: str
    counts: dict[str, int]
    audit_seq: int
    purged: bool
    backups: tuple[Path, ...] = ()  # the pre-upgrade copies found (see ``upgrade_backups``)
    backups_left: tuple[Path, ...] = ()  # those still on disk afterwards (kept, or not deletable)


def upgrade_backups(v: Vault) -> list[Path]:
    """The copies of the whole vault that schema upgrades left next to it (store ``upgrade_copies``).

    Each is the whole vault as it was before that upgrade: a client that was in it then is in it
    still, under the same keys, whatever ``forget`` does to the vault itself.
    """
    return v.store.upgrade_copies()


def counts(v: Vault, s: Session, client: ClientRef) -> dict[str, int]:
    """Rows of the client per kind, plus previous versions, attachment chunks and audit entries."""
    out: dict[str, int] = {}
    rows = s.execute(
        select(Record.kind, func.count()).where(Record.client_id == client.id).group_by(Record.kind)
    )
    for kind, n in rows:
        out[str(kind)] = int(n)
    record_ids = select(Record.id).where(Record.client_id == client.id)
    out["previous versions"] = int(
        s.execute(
            select(func.count()).select_from(RecordVersion).where(RecordVersion.record_id.in_(record_ids))
        ).scalar_one()
    )
    out["attachment chunks"] = int(
        s.execute(select(func.count()).select_from(Chunk).where(Chunk.record_id.in_(record_ids))).scalar_one()
    )
    out["audit details made unreadable"] = int(
        s.execute(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.client_id == client.id, AuditEntry.scope == "client")
        ).scalar_one()
    )
    return out


def record_total(n: dict[str, int]) -> int:
    """How many records (of every kind) a ``counts`` dict names."""
    return sum(c for k, c in n.items() if k not in EXTRA_COUNTS)


def check_forgettable(client: ClientRef, today: dt.date | None = None) -> str:
    """The derived status when the client may be forgotten (ended or archived); else PolicyRefused."""
    status = effective_status(client, today)
    if status in ("ended", "archived"):
        return status
    if status == "notice-given":
        raise PolicyRefused(
            f"the agreement with {client.slug} runs until {client.agreement.get('effective_end')}; "
            "a client can be forgotten only after its agreement has ended",
            f"if an earlier end was agreed, correct it: handover end {client.slug} --amend ...",
        )
    raise PolicyRefused(
        f"{client.slug} has an {status} agreement; only a client whose agreement has ended can be forgotten",
        f"end it first: handover end {client.slug} --notice-given DATE --reason TEXT",
    )


def preview(v: Vault, slug: str, today: dt.date | None = None) -> tuple[ClientRef, str, dict[str, int]]:
    """(client, derived status, counts) of a client that may be forgotten; raises as ``forget_client``."""
    with v.read() as s:
        client = v.clients.get(slug, s)
        status = check_forgettable(client, today)
        return client, status, counts(v, s, client)


def forget_client(
    v: Vault, slug: str, today: dt.date | None = None, delete_backups: bool = False
) -> Forgotten:
    """Crypto-shred a client whose agreement has ended, then purge the deleted bytes from the files.

    With ``delete_backups``, the pre-upgrade copies (:func:`upgrade_backups`) are deleted too, after
    the forget is committed; the audit entry names every copy found, and the certificate says which
    are still on disk when it is written.

    Raises NotFound, PolicyRefused (agreement not ended), Busy/StorageError (the write failed:
    nothing was deleted). ``purged`` is False when another process kept the write-ahead log from
    being truncated (the deletion itself is committed; ``purge`` may be run again).
    """
    backups = upgrade_backups(v)
    with v.write("forgetting a client") as s:
        client = v.clients.get(slug, s)
        check_forgettable(client, today)
        n = counts(v, s, client)
        a = client.agreement
        row = s.get(Client, client.id)
        if row is not None:
            tracker(v, s).client_removed(s, row)
        s.execute(delete(Client).where(Client.id == client.id))
        from .rekey import forget_client_keys

        forget_client_keys(v, s, client.id)  # its keys from before a rekey go with it
        s.flush()
        left = s.execute(select(func.count()).select_from(Record).where(Record.client_id == client.id))
        if left.scalar_one():
            raise StorageError(
                "the client's records were not deleted with it (foreign keys are off); nothing was changed"
            )
        seq = v.audit.append(
            s,
            FORGET_ACTION,
            client=client,
            vault_scope=True,
            detail={
                "slug": client.slug,
                "name": client.name,
                "client_id": client.id,
                "counts": n,
                "status": status_line(a, today),
                "effective_end": a.get("effective_end"),
                "on_hand_until": a.get("on_hand_until"),
                "fingerprint": v.fingerprint,
                "upgrade_backups": [b.name for b in backups],
            },
        )
    v.keys.forget_client(client.id)
    purged = purge(v)
    if delete_backups:
        for b in backups:
            with contextlib.suppress(FileNotFoundError, PermissionError):
                b.unlink()
    left = tuple(b for b in backups if b.exists())
    return Forgotten(client.slug, client.name, client.id, n, seq, purged, tuple(backups), left)


def purge(v: Vault) -> bool:
    """Remove what the storage keeps of the deleted rows (SQLite: VACUUM, then the WAL checkpointed
    and truncated). True when done; :func:`retained` says what a database server keeps beyond it."""
    return v.store.purge()


def retained(v: Vault) -> list[str]:
    """What the storage may still hold of a forgotten client, beyond this program's reach."""
    return v.store.retains()


# --- the certificate --------------------------------------------------------------------------------


def _entry(v: Vault, seq: int) -> tuple[dict[str, Any], str, bytes]:
    """(detail, time, mac) of a ``client.forget`` audit entry."""
    with v.read() as s:
        row = s.get(AuditEntry, seq)
        if row is None:
            raise NotFound(f"no audit entry {seq}")
        if row.action != FORGET_ACTION:
            raise InvalidInput(f"audit entry {seq} is a {row.action} entry, not {FORGET_ACTION}")
        at, mac = row.at, bytes(row.mac)
    detail = v.audit.event(seq).detail
    if not detail or "slug" not in detail:
        raise IntegrityError(f"audit entry {seq} has no readable detail")
    return detail, at, mac


def certificate_body(v: Vault, seq: int, purged: bool = True) -> str:
    """The Markdown of the certificate for the ``client.forget`` entry ``seq`` (unsigned)."""
    from .profile import technician_md

    d, at, mac = _entry(v, seq)
    n: dict[str, int] = d.get("counts") or {}
    issuer = v.profile.get()
    names = [str(b) for b in d.get("upgrade_backups") or [] if "/" not in str(b)]
    # Checked on disk as the certificate is written: it never says a copy is gone that is not.
    still = {p.name for p in v.store.upgrade_copies()}
    copies = {
        "deleted": [b for b in names if b not in still],
        "still_holding_the_client": [b for b in names if b in still],
    }
    facts = {
        "format": CERT_FORMAT,
        "client": {"name": d["name"], "slug": d["slug"], "id": d.get("client_id")},
        "destroyed_at": at,
        "counts": n,
        "vault_fingerprint": v.fingerprint,
        "audit": {"seq": seq, "mac": mac.hex()},
        "storage_purged": purged,
        "issued_by": issuer.values() if issuer.is_set else None,
        "upgrade_backups": copies,
    }
    kinds = ["- the client's data key and its profile (name, agreement terms and dates)"]
    kinds += [f"- {KIND_LABELS.get(k, k)}: {c}" for k, c in sorted(n.items()) if c and k not in EXTRA_COUNTS]
    kinds += [f"- {k}: {n[k]}" for k in EXTRA_COUNTS if n.get(k)]
    if v.path is None:  # a database on a server
        storage = (
            "The tables that held them were then rewritten (VACUUM FULL), so no deleted row of the client "
            "remains in the live tables."
            if purged
            else "The database role may not rewrite the tables (VACUUM FULL needs their owner), so the deleted "
            "rows stay in the table files as dead tuples until the owner's next VACUUM."
        )
    else:
        storage = (
            "The vault file was then vacuumed and its write-ahead log checkpointed and truncated, so neither "
            "the key nor any of the encrypted records remains in the vault file or its write-ahead log."
            if purged
            else "Another program had the vault open, so the write-ahead log could not yet be truncated; the "
            "deleted bytes are overwritten at its next checkpoint."
        )
    server = [f"- On the database server, {line}." for line in retained(v)]
    lines = [
        "# Certificate of destruction",
        "",
        f"- **Client:** {_one_line(d['name'])} (`{d['slug']}`)",
        f"- **Destroyed at:** {at} (UTC)",
        f"- **Vault:** `{v.fingerprint}` (`{v.ssh_fingerprint}`; the key that signs this certificate)",
        f"- **Audit entry:** number {seq}, MAC `{mac.hex()}`",
        "",
        "All the data this vault held for the client was destroyed by crypto-shredding: the client's own "
        "data key, stored only wrapped under the vault's master key, was deleted in one transaction "
        "together with every encrypted record, previous version and attachment of the client. " + storage,
        "",
        "What was destroyed:",
        "",
        *kinds,
        "",
        "## Issued by",
        "",
        technician_md(issuer),
        "## What this does not cover",
        "",
        *_backup_lines(copies),
        *server,
        "- **Backups of the vault made before this date still hold the data**, encrypted under the same "
        "keys. They are not changed by this destruction; they are removed only when those backups are.",
        "- A handover bundle already delivered to the client's successor is theirs, not ours to destroy.",
        "- The vault's audit log keeps its entries about this client (times and kinds of action) so that "
        "its tamper-evident chain still verifies. Their details were encrypted under the destroyed key "
        "and can no longer be read. The entry named above records this destruction.",
        "",
        *checking_section("certificate", CERT_FORMAT, v.fingerprint, facts),
    ]
    return "\n".join(lines)


def checking_section(what: str, fmt: str, fingerprint: str, facts: dict[str, Any]) -> list[str]:
    """The closing lines of a signed document: how to check it, then its facts as JSON (last, after
    every user-provided value, so the verifier reads the block the signer wrote)."""
    return [
        f"## Checking this {what}",
        "",
        f"Run `handover certificate verify FILE --signer {fingerprint}`. Any Ed25519 tool will do: "
        f"the signature below covers the text `{fmt}` and a line feed, followed by this "
        "file up to the line that opens the signature block, with LF line endings.",
        "",
        "```json",
        json.dumps(facts, indent=2, sort_keys=True, ensure_ascii=False),
        "```",
        "",
    ]


def _backup_lines(copies: dict[str, list[str]]) -> list[str]:
    """What the certificate says of the copies schema upgrades made next to the vault."""
    lines = []
    if copies["still_holding_the_client"]:
        names = ", ".join(f"`{n}`" for n in copies["still_holding_the_client"])
        lines.append(
            f"- **Copies this tool made before schema upgrades still hold the data:** {names}, next to "
            "the vault file. They are deleted only when the technician deletes them."
        )
    if copies["deleted"]:
        names = ", ".join(f"`{n}`" for n in copies["deleted"])
        lines.append(
            f"- The copies this tool made before schema upgrades ({names}) were deleted as files after "
            "this destruction; the blocks they used on disk are not overwritten."
        )
    return lines


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def sign_certificate(v: Vault, body: str, fmt: str = CERT_FORMAT) -> str:
    """``body`` followed by its signature block (Ed25519 with the vault's signing key).

    ``fmt`` is one of :data:`SIGNED_FORMATS`; the signature covers it, a line feed and ``body``.
    """
    body = body.replace("\r\n", "\n")
    if not body.endswith("\n"):
        body += "\n"
    sig = v.sign((fmt + "\n").encode() + body.encode("utf-8"))
    pem = crypto.public_key_pem(v.signing_public).decode("ascii")
    block = [
        SIG_OPEN.rstrip("\n"),
        f"Format: {fmt}",
        f"Signer: {v.fingerprint}",
        f"Signature: {base64.b64encode(sig).decode('ascii')}",
        pem.rstrip("\n"),
        "```",
        "",
    ]
    return body + "\n".join(block)


def certificate(v: Vault, seq: int, purged: bool = True) -> str:
    """The signed certificate of destruction for audit entry ``seq``."""
    return sign_certificate(v, certificate_body(v, seq, purged))


@dataclass(frozen=True)
class VerifiedCertificate:
    signer: str
    facts: dict[str, Any]
    signer_checked: bool
    signer_ssh_fingerprint: str = ""  # SHA256:… of the same key, as ssh-keygen -lf prints it


def verify_certificate(data: bytes | str, signer: str | None = None) -> VerifiedCertificate:
    """Check a certificate's (or a receipt's) signature (and, with ``signer``, whose key made it).

    ``facts["format"]`` says which of :data:`SIGNED_FORMATS` it is.

    Raises InvalidInput (not a certificate, malformed block) and IntegrityError (bad signature,
    a signer other than the one expected, a key that does not match its stated fingerprint).
    """
    if isinstance(data, bytes):
        if len(data) > MAX_CERTIFICATE:
            raise InvalidInput("the file is too large to be a certificate")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the certificate is not UTF-8 text") from None
    text = data.replace("\r\n", "\n")
    at = text.rfind("\n" + SIG_OPEN)
    if at < 0:
        raise InvalidInput("no signature block found: not a handover certificate")
    body, block = text[: at + 1], text[at + 1 + len(SIG_OPEN) :]
    fields, pem = _parse_block(block)
    fmt = fields.get("Format", "")
    if fmt not in SIGNED_FORMATS:
        raise InvalidInput(f"unknown certificate format {fmt[:40]!r}")
    try:
        sig = base64.b64decode(fields.get("Signature", ""), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the signature is not base64") from None
    public = crypto.public_key_from_pem(pem.encode("ascii"))
    actual = crypto.fingerprint(public)
    what = "certificate" if fmt == CERT_FORMAT else "receipt"
    if fields.get("Signer") != actual:
        raise IntegrityError(f"the {what}'s stated signer does not match its public key")
    if signer is not None and signer.strip().lower() != actual:
        raise IntegrityError(f"the {what} was signed by {actual}, not by {signer.strip()}")
    if not crypto.verify_signature(public, sig, (fmt + "\n").encode() + body.encode("utf-8")):
        raise IntegrityError(f"the {what}'s signature is not valid: it was altered or not signed by this key")
    from .keys.sshsig import ssh_fingerprint

    return VerifiedCertificate(actual, _facts(body, fmt), signer is not None, ssh_fingerprint(public))


def _parse_block(block: str) -> tuple[dict[str, str], str]:
    lines = block.split("\n")
    try:
        end = lines.index("```")
    except ValueError:
        raise InvalidInput("the signature block is not closed") from None
    if any(line.strip() for line in lines[end + 1 :]):
        raise InvalidInput("text follows the signature block")
    fields: dict[str, str] = {}
    pem: list[str] = []
    for line in lines[:end]:
        if pem or line.startswith("-----BEGIN PUBLIC KEY-----"):
            pem.append(line)
        elif ": " in line:
            key, _, value = line.partition(": ")
            fields[key.strip()] = value.strip()
        elif line.strip():
            raise InvalidInput("the signature block has a malformed line")
    if not pem:
        raise InvalidInput("the signature block has no public key")
    return fields, "\n".join(pem) + "\n"


def _facts(body: str, fmt: str = CERT_FORMAT) -> dict[str, Any]:
    # The last JSON block: the facts are written after every user-provided value.
    blocks = re.findall(r"^```json\n(.*?)^```$", body, re.S | re.M)
    if not blocks:
        raise InvalidInput("the signed certificate has no facts block")
    try:
        facts = json.loads(blocks[-1])
    except ValueError:
        raise InvalidInput("the certificate's facts block is not JSON") from None
    # The facts must be of the format the signature block names: a receipt's facts inside a
    # certificate's block (or the other way round) is refused.
    if not isinstance(facts, dict) or facts.get("format") != fmt:
        raise InvalidInput("the certificate's facts block has an unknown format")
    return facts
