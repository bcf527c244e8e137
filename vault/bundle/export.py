"""Export: the successor, readiness gate, sealed bundle and its audit entry (DESIGN §6).

The bundle is streamed: files are tarred and age-encrypted in one pass into a temp file that is
renamed only on success, so memory stays flat and a failed export leaves nothing behind. The audit
entry is written before the rename; if it cannot be written, the bundle is deleted (fail closed).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import validate
from ..errors import AlreadyExists, InvalidInput, PolicyRefused

if TYPE_CHECKING:
    from ..core import Vault
    from ..readiness import Readiness
    from .tarsafe import BundleFile


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    size: int
    fingerprint: str
    recipients: list[str]
    files: int  # every file in the bundle folder: the count bundle verify and open print too
    readiness: Readiness
    audit_seq: int


def set_successor(
    v: Vault,
    slug: str,
    name: str,
    recipients: list[str],
    org: str | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """Record the successor and their age/SSH public keys (each validated)."""
    from .agefile import parse_recipient

    if not recipients:
        raise InvalidInput("give at least one --recipient (an age1… or ssh-ed25519/ssh-rsa public key)")
    parsed = [parse_recipient(r) for r in recipients]
    successor = {
        "name": validate.text(name, "name", 200, required=True),
        "org": validate.text(org, "organisation", 200),
        "email": validate.email(email),
        "phone": validate.text(phone, "phone", 64),
        "recipients": [p.text for p in parsed],
        "fingerprints": [p.fingerprint for p in parsed],
    }
    with v.write("setting the successor") as s:
        client = v.clients.get(slug, s)
        ref = v.clients.save(s, client, {**client.data, "successor": successor})
        v.audit.append(s, "successor.set", client=ref, detail={"fingerprints": successor["fingerprints"]})
    return successor


def keygen(out: Path | None) -> tuple[str, str]:
    """A new age X25519 identity: (identity file text, public recipient). Written 0600 if ``out``."""
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    public = str(ident.to_public())
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    text = f"# created: {now}\n# public key: {public}\n{ident}\n"
    if out is not None:
        from ..files import atomic_output

        with atomic_output(Path(out)) as fh:
            fh.write(text.encode("ascii"))
    return text, public


def default_out(slug: str, day: dt.date, directory: Path | None = None) -> Path:
    return (directory or Path.cwd()) / f"{slug}-handover-{day.isoformat()}.tar.age"


def export(
    v: Vault,
    slug: str,
    recipients: list[str] | None = None,
    passphrase: str | None = None,
    out: Path | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Seal the client's handover bundle. Raises PolicyRefused for blocking gaps without ``force``."""
    from ..clock import utcnow
    from ..readiness import check
    from .format import bundle_root, export_mtime, file_count, seal_bundle
    from .handover import build_files, collect

    readiness = check(v, slug)
    if readiness.blocking and not force:
        # One gap a line, as `handover check` lists them: a list run together is unreadable.
        raise PolicyRefused(
            f"{slug} is not ready to hand over ({len(readiness.blocking)} blocking gap(s)):",
            f"fill the gaps (handover check {slug}) or export anyway with --force",
            details=tuple(f"BLOCKING  {g.message}" for g in readiness.blocking),
        )
    exported_at = utcnow()
    day = dt.date.fromisoformat(exported_at[:10])
    with v.read() as s:
        client = v.clients.get(slug, s)
        stored = (client.data.get("successor") or {}).get("recipients") or []
        # A passphrase bundle has no recipients (age allows one or the other).
        keys = list(recipients) if recipients else ([] if passphrase is not None else list(stored))
        if not keys and passphrase is None:
            raise InvalidInput(
                "no recipient: the client has no successor key and none was given",
                "add --recipient KEY, --passphrase, or: handover successor set",
            )
        from .agefile import parse_recipient

        parsed = [parse_recipient(k) for k in keys]
        h = collect(v, s, client, exported_at)
        files = build_files(v, s, h, day)
        if progress is not None:
            files = _with_progress(files, progress)
        root = bundle_root(client.slug, day)
        path = Path(out) if out else default_out(client.slug, day)
        if os.path.lexists(path):
            raise AlreadyExists(f"{str(path)!r} already exists", "choose another --out or remove it first")
        # Sealed under a hidden staging name and given its real name only after the audit entry is
        # committed: a crash in between (even SIGKILL) never leaves an unaudited bundle at ``path``.
        staging = path.with_name(f".{path.name}.unaudited-{os.getpid()}")
        meta = {
            "client": client.slug,
            "client_name": client.name,
            "exported_at": exported_at,
            "root": root,
            "vault_fingerprint": v.fingerprint,
        }
        result = seal_bundle(
            staging,
            root,
            files,
            meta,
            sign=v.sign,
            signer_public_key=v.signing_public,
            recipients=parsed,
            passphrase=passphrase,
            mtime=export_mtime(day),
        )
    try:
        seq = v.audit.append_now(
            "bundle.export",
            client=client,
            detail={
                "sha256": result.sha256,
                "size": result.size,
                "file": path.name,
                "recipients": [p.fingerprint for p in parsed],
                "passphrase": passphrase is not None,
                "files": file_count(files),
                "forced": bool(readiness.blocking),
            },
        )
    except BaseException:
        # Fail closed: an export that is not in the audit log does not exist.
        staging.unlink(missing_ok=True)
        raise
    _publish(staging, path)
    return ExportResult(
        path,
        result.sha256,
        result.size,
        v.fingerprint,
        [p.fingerprint for p in parsed],
        file_count(files),
        readiness,
        seq,
    )


def _publish(staging: Path, path: Path) -> None:
    """Give the audited bundle its name without clobbering anything (vault/files.py's publish, which
    also works where hard links do not: exFAT sticks, some shares)."""
    from ..files import _publish as publish_no_clobber

    try:
        os.chmod(staging, 0o600)
        publish_no_clobber(staging, path, overwrite=False)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _with_progress(files: list[BundleFile], progress: Callable[[int, int], None]) -> list[BundleFile]:
    """Wrap each file's chunks so ``progress(total_bytes, advanced_by)`` follows the stream."""
    import dataclasses

    total = sum(f.size for f in files)

    def wrap(chunks: Callable[[], Iterable[bytes]]) -> Callable[[], Iterator[bytes]]:
        def gen() -> Iterator[bytes]:
            for block in chunks():
                progress(total, len(block))
                yield block

        return gen

    return [dataclasses.replace(f, chunks=wrap(f.chunks)) for f in files]
