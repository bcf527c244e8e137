"""Attachments: diagrams, config backups, signed scans — encrypted in chunks, streamed both ways.

The record holds name, size, SHA-256 and chunk count; the content lives in ``chunks`` rows, each
sealed with AAD naming the attachment and the chunk's index, so chunks cannot be reordered, swapped
between attachments or dropped (the count and hash are checked on read).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import select

from . import validate
from .errors import AlreadyExists, IntegrityError, InvalidInput, StorageError
from .keys.crypto import DecryptFailed
from .keys.hierarchy import record_aad
from .services import RecordService
from .store.engine import page_cache
from .store.models import Chunk

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .store.records import Rec

CHUNK = 256 * 1024  # large enough to amortise per-row cost, small enough to keep memory flat
DEFAULT_MAX = 512 * 1024 * 1024
READ_CACHE_KIB = 256  # SQLite page cache while streaming chunks out: one chunk's worth


def max_size() -> int:
    raw = os.environ.get("HANDOVER_MAX_ATTACHMENT_MB")
    return int(raw) * 1024 * 1024 if raw and raw.isdigit() else DEFAULT_MAX


def chunk_aad(vault_id: str, client_id: str, record_id: str, seq: int) -> bytes:
    """The AAD of chunk ``seq`` of attachment ``record_id``.

    Each (record, position) is sealed exactly once: chunks are written only by :meth:`add_stream`,
    for a record it has just created under a fresh random id, and never rewritten (the version is
    fixed at 1 for that reason). The export relies on it (``chunks(verify_digest=False)``); a
    feature that replaced an attachment's content in place would have to bind a content version
    here first. ``rekey`` (vault/rekey.py) re-seals each chunk's own plaintext at its position under
    the client's new key: the content stays the one sealed at creation.
    """
    return record_aad(vault_id, client_id, "chunk", f"{record_id}/{seq}", 1)


class Attachments(RecordService):
    kind = "attachment"
    name_field = "name"
    audit_changes = True

    def clean(self, data: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        name = validate.text(data.get("name"), "file name", 255, required=True) or ""
        if "/" in name or "\\" in name or name in (".", ".."):
            raise InvalidInput(f"attachment name {name[:60]!r} must be a plain file name")
        return {
            "name": name,
            "size": int(data.get("size") or 0),
            "sha256": data.get("sha256") or "",
            "chunks": int(data.get("chunks") or 0),
            "content_type": data.get("content_type"),
            "notes": validate.text(data.get("notes"), "notes", 10_000),
        }

    def add_stream(self, s: Session, client: ClientRef, name: str, stream: IO[bytes], **extra: Any) -> Rec:
        """Store a stream inside the caller's transaction; raises InvalidInput over the size cap."""
        rec = self.v.records.add(s, client, self.kind, self.clean({"name": name, **extra}), name)
        digest, size, seq, limit = hashlib.sha256(), 0, 0, max_size()
        sealer = client.keys.sealer
        while block := stream.read(CHUNK):
            size += len(block)
            if size > limit:
                raise InvalidInput(f"{name} is larger than the attachment limit of {limit // 2**20} MiB")
            digest.update(block)
            s.add(
                Chunk(
                    record_id=rec.id,
                    seq=seq,
                    envelope=sealer.seal(block, chunk_aad(self.v.vault_id, client.id, rec.id, seq)),
                )
            )
            seq += 1
            if seq % 64 == 0:
                s.flush()
        data = {**rec.data, "size": size, "sha256": digest.hexdigest(), "chunks": seq}
        return self.v.records.update_in_place(s, client, rec, data)

    def add_file(self, slug: str, path: Path | str, name: str | None = None, notes: str | None = None) -> Rec:
        path = Path(path)
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
        with fh, self.v.write("adding an attachment") as s:
            client = self.v.clients.get(slug, s)
            rec = self.add_stream(s, client, name or path.name, fh, notes=notes)
            self.after_write(s, client, rec, "add")
            return rec

    def chunks(
        self, s: Session, client: ClientRef, rec: Rec, *, verify_digest: bool = True
    ) -> Iterator[bytes]:
        """The decrypted content, chunk by chunk, checked against the stored count and hash.

        Every chunk authenticates (AES-GCM) under an AAD naming this record and its position, the
        positions must run 0, 1, 2… without a gap and end at the authenticated count: the content
        can only be the one sealed when the attachment was made, whose SHA-256 was stored with it
        (:func:`chunk_aad`). ``verify_digest=False`` therefore skips recomputing that SHA-256
        (the export, where the successor's verification hashes every file again); everything
        else is checked either way (docs/security.md, "Attachments in the bundle").

        Raises:
            IntegrityError: a chunk missing, out of place or not authentic, the count or the hash wrong.
        """
        digest, n = hashlib.sha256(), 0
        update = digest.update if verify_digest else None
        # Every page is read once: SQLite's default 2 MiB page cache would only fill up with pages
        # never read again (an export's peak RSS: 1.5 MiB lower). It lasts as long as the session's
        # connection, which ends with the read.
        page_cache(s, READ_CACHE_KIB)
        rows = s.execute(
            select(Chunk.seq, Chunk.envelope)
            .where(Chunk.record_id == rec.id)
            .order_by(Chunk.seq)
            # Two chunks (512 KiB) in flight: an export streams hundreds of MiB in flat memory.
            .execution_options(yield_per=2)
        )
        for seq, blob in rows:
            if seq != n:
                raise IntegrityError(f"attachment {rec.id}: chunk {n} is missing")
            try:
                block = client.keys.sealer.open(blob, chunk_aad(self.v.vault_id, client.id, rec.id, seq))
            except DecryptFailed:
                raise IntegrityError(
                    f"attachment {rec.id}: chunk {seq} does not decrypt (tampered)"
                ) from None
            if update is not None:
                update(block)
            n += 1
            yield block
        if n != rec.data.get("chunks") or (
            update is not None and digest.hexdigest() != rec.data.get("sha256")
        ):
            raise IntegrityError(f"attachment {rec.id} is incomplete or altered (chunks or hash differ)")

    def save_to(self, slug: str, ref: str, out: Path | str) -> Rec:
        """Write an attachment to ``out`` (0600, via a temp file; nothing left behind on failure)."""
        from .files import atomic_output

        out = Path(out)
        if os.path.lexists(out):
            raise AlreadyExists(
                f"{out} already exists; refusing to overwrite it", "choose another name or remove it first"
            )
        # Attachments hold config backups and scans, secrets among them: the disclosure is audited
        # (and committed) before any byte is written; if the entry cannot be written, nothing is.
        with self.v.write("auditing an attachment export") as s:
            client = self.v.clients.get(slug, s)
            rec = self.v.records.get(s, client, self.kind, ref)
            self.v.audit.append(
                s,
                "attachment.get",
                client=client,
                record_id=rec.id,
                detail={"version": rec.version, "sha256": rec.data.get("sha256"), "file": out.name},
            )
        try:
            with self.v.read() as s, atomic_output(out) as fh:
                for block in self.chunks(s, client, rec):
                    fh.write(block)
        except OSError as exc:  # a write error (disk full, I/O error): the temp file is gone already
            raise StorageError(f"cannot write {out}: {exc.strerror}") from None
        return rec
