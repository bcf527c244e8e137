"""The sealed handover bundle (DESIGN §6): manifest, signature, verification and safe opening.

A bundle is ``<root>.tar.age``: an age file (:mod:`vault.agefile`) holding a deterministic tar
(:mod:`vault.tarsafe`) of one folder ``<root>/`` with the content files plus five format files:

- ``SHA256SUMS``: ``<sha256>  <path>`` per content file, so ``sha256sum -c`` checks them;
- ``SHA256SUMS.sig``: an OpenSSH signature (namespace ``handover-bundle``) of SHA256SUMS's exact
  bytes by the vault's key, so ``ssh-keygen -Y verify`` checks them (:mod:`vault.sshsig`);
- ``manifest.json``: canonical JSON naming the format, vault fingerprint, client, export time, root
  folder and every file (content files, ``SHA256SUMS`` and its signature) with size and SHA-256;
- ``manifest.sig``: the raw 64-byte Ed25519 signature of ``manifest.json``'s exact bytes;
- ``signer.pub``: the vault's Ed25519 public key as PEM SubjectPublicKeyInfo.

docs/bundle-format.md specifies it for independent verifiers (age, tar, sha256sum, ssh-keygen, openssl). Private
keys never enter this module: signing is a callback.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any

from ..errors import IntegrityError, InvalidInput, NotFound, StorageError
from ..keys import crypto, sshsig
from .agefile import (
    Identity,
    Recipient,
    SealResult,
    decrypt_to,
    load_identity_file,
    open_stream,
    parse_identities,
    parse_recipient,
    recipient_fingerprint,
    seal_stream,
)
from .tarsafe import (
    DEFAULT_LIMITS,
    BundleFile,
    CheckedTar,
    MemberHasher,
    TarLimits,
    extract_files,
    name_problem,
    open_checked,
    tar_parts,
    tar_stream,
)

__all__ = [
    "FORMAT",
    "BundleFile",
    "Identity",
    "ManifestEntry",
    "Recipient",
    "SealResult",
    "TarLimits",
    "VerifiedBundle",
    "assemble_bundle",
    "build_manifest",
    "build_sums",
    "bundle_root",
    "export_mtime",
    "extract_bundle",
    "file_count",
    "load_identity_file",
    "open_sealed_bundle",
    "open_stream",
    "parse_identities",
    "parse_recipient",
    "recipient_fingerprint",
    "seal_bundle",
    "seal_stream",
    "tar_stream",
    "verify_bundle_tar",
    "verify_sealed_bundle",
]

FORMAT = "handover-bundle/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
SIGNER_NAME = "signer.pub"
SUMS_NAME = "SHA256SUMS"
SUMS_SIGNATURE_NAME = "SHA256SUMS.sig"
# Not listed in the manifest: the manifest cannot list itself, and the other two are its signature.
SIGNATURE_FILES = frozenset({MANIFEST_NAME, SIGNATURE_NAME, SIGNER_NAME})
RESERVED_NAMES = SIGNATURE_FILES | {SUMS_NAME, SUMS_SIGNATURE_NAME}
# An Ed25519 SSHSIG armored is 422 bytes.
MAX_SUMS_SIGNATURE_BYTES = sshsig.MAX_ARMOR
REQUIRED_META = ("client", "exported_at", "root", "vault_fingerprint")
# Ed25519 signatures are exactly 64 bytes (RFC 8032); anything else is not ours.
SIGNATURE_BYTES = 64
# A PEM SubjectPublicKeyInfo for Ed25519 is 113 bytes; 4 KiB refuses anything else before parsing.
MAX_SIGNER_PEM_BYTES = 4096
# ~150 bytes per listed file: 16 MiB covers TarLimits.max_members many times over.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# --- Building --------------------------------------------------------------------------------------


def bundle_root(client_slug: str, day: date) -> str:
    """The top folder (and file stem) of a bundle: ``<slug>-handover-<YYYY-MM-DD>``."""
    return f"{client_slug}-handover-{day.isoformat()}"


def export_mtime(day: date) -> int:
    """The mtime stamped on every tar entry: ``day`` at 00:00 UTC, as a Unix time.

    The date, not the instant, so that two exports on one day of the same data are byte-identical.
    """
    return calendar.timegm(day.timetuple())


def build_sums(files: Sequence[BundleFile]) -> bytes:
    """``SHA256SUMS`` for ``files``: ``<sha256>  <name>`` lines sorted by name (``sha256sum`` format)."""
    return "".join(f"{f.sha256}  {f.name}\n" for f in sorted(files, key=lambda f: f.name)).encode("utf-8")


def file_count(content_files: Sequence[BundleFile]) -> int:
    """How many files a bundle of these content files holds: the one count export, verify and open
    show (content files and the five format files; folders are not counted)."""
    return len(content_files) + len(RESERVED_NAMES)


def build_manifest(files: Sequence[BundleFile], meta: Mapping[str, Any]) -> bytes:
    """The canonical ``manifest.json``: sorted keys, 2-space indent, UTF-8, one trailing newline.

    ``meta`` must hold the strings ``client``, ``exported_at``, ``root`` and ``vault_fingerprint``;
    other JSON-native keys pass through (``format`` and ``files`` are ours).

    Raises:
        InvalidInput: a required key missing or not a string, a reserved key, a value JSON cannot
            represent exactly (NaN, non-string keys, objects), or an unsafe file name.
    """
    missing = [k for k in REQUIRED_META if not isinstance(meta.get(k), str) or not meta[k]]
    if missing:
        raise InvalidInput(f"the manifest needs a non-empty string for: {', '.join(missing)}")
    if "format" in meta or "files" in meta:
        raise InvalidInput("'format' and 'files' are set by the bundle format, not by the caller")
    for f in files:
        if name_problem(f.name):
            raise InvalidInput(f"cannot list {f.name!r} in the manifest: {name_problem(f.name)}")
    entries = [
        {"path": f.name, "sha256": f.sha256, "size": f.size} for f in sorted(files, key=lambda f: f.name)
    ]
    document = {**meta, "format": FORMAT, "files": entries}
    try:
        text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the manifest metadata is not plain JSON: {exc}") from None
    return (text + "\n").encode("utf-8")


def assemble_bundle(
    root: str,
    files: Sequence[BundleFile],
    meta: Mapping[str, Any],
    *,
    sign: Callable[[bytes], bytes],
    signer_public_key: bytes,
) -> list[BundleFile]:
    """All files of a bundle: ``files`` plus SHA256SUMS, SHA256SUMS.sig, manifest.json, manifest.sig
    and signer.pub.

    ``sign`` receives the manifest bytes and returns the raw Ed25519 signature; it is checked
    against ``signer_public_key`` (32 raw bytes) before anything is written.

    Raises:
        InvalidInput: a content file uses a reserved name, meta is incomplete or names a different
            vault than the signer, or a name is unsafe.
        IntegrityError: the callback's signature does not verify with ``signer_public_key``.
    """
    reserved = sorted(RESERVED_NAMES & {f.name for f in files})
    if reserved:
        raise InvalidInput(f"{reserved[0]!r} is reserved for the bundle format")
    fingerprint = crypto.fingerprint(signer_public_key)
    if meta.get("vault_fingerprint", fingerprint) != fingerprint:
        raise InvalidInput("the manifest's vault_fingerprint is not the signer's fingerprint")
    if meta.get("root", root) != root:
        raise InvalidInput("the manifest's root is not the bundle's folder name")
    sums = BundleFile.from_bytes(SUMS_NAME, build_sums(files))
    sums_sig = BundleFile.from_bytes(
        SUMS_SIGNATURE_NAME, sshsig.sign(build_sums(files), sign, signer_public_key).encode("ascii")
    )
    manifest = build_manifest(
        [*files, sums, sums_sig], {**meta, "root": root, "vault_fingerprint": fingerprint}
    )
    signature = sign(manifest)
    if len(signature) != SIGNATURE_BYTES or not crypto.verify_signature(
        signer_public_key, signature, manifest
    ):
        raise IntegrityError("the signing callback's signature does not verify with the signer key")
    return [
        *files,
        sums,
        sums_sig,
        BundleFile.from_bytes(MANIFEST_NAME, manifest),
        BundleFile.from_bytes(SIGNATURE_NAME, signature),
        BundleFile.from_bytes(SIGNER_NAME, crypto.public_key_pem(signer_public_key)),
    ]


def seal_bundle(
    out_path: Path,
    root: str,
    files: Sequence[BundleFile],
    meta: Mapping[str, Any],
    *,
    sign: Callable[[bytes], bytes],
    signer_public_key: bytes,
    recipients: Sequence[Recipient | str] = (),
    passphrase: str | None = None,
    mtime: int = 0,
    overwrite: bool = False,
) -> SealResult:
    """Assemble, tar and age-encrypt a bundle into ``out_path`` in one streamed pass (the tar is
    produced here while age runs in a helper process: see :func:`vault.agefile.seal_stream`).

    Nothing is at ``out_path`` unless every file matched its declaration and encryption finished.

    Raises:
        InvalidInput, IntegrityError: from :func:`assemble_bundle` or a file whose content no
            longer matches its declared size and SHA-256 while streaming.
        AlreadyExists, NotFound, StorageError: from the output file.
    """
    bundle = assemble_bundle(root, files, meta, sign=sign, signer_public_key=signer_public_key)
    parts = tar_parts(root, bundle, mtime=mtime)
    return seal_stream(parts, out_path, recipients, passphrase, overwrite=overwrite)


# --- Verifying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestEntry:
    """One listed file: path relative to the root folder, size and SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, listing and every hash checked out."""

    root: str
    client: str
    exported_at: str
    signer_fingerprint: str
    files: tuple[ManifestEntry, ...]  # as listed in the manifest (content files, SHA256SUMS[.sig])
    manifest: Mapping[str, Any]
    manifest_sha256: str
    format_files: tuple[ManifestEntry, ...]  # manifest.json, manifest.sig, signer.pub
    signer_ssh_fingerprint: str = ""  # SHA256:… as ssh-keygen -lf prints it for the signer

    @property
    def file_count(self) -> int:
        """Every file in the bundle folder (the count export printed for it)."""
        return len(self.files) + len(self.format_files)


def verify_bundle_tar(
    tar: Path | IO[bytes],
    expected_signer_fingerprint: str | None = None,
    *,
    limits: TarLimits = DEFAULT_LIMITS,
) -> VerifiedBundle:
    """Verify a decrypted bundle archive (a path or a seekable binary file) without writing anything.

    In order: the archive's structure (:func:`vault.tarsafe.open_checked`), the signature over
    manifest.json's exact bytes, the signer (against ``expected_signer_fingerprint`` when given, and
    against the manifest's ``vault_fingerprint``), the manifest's shape, that the archive holds
    exactly the listed files, SHA256SUMS, and finally every file's size and SHA-256.

    Raises:
        IntegrityError: any of those checks fails; the message names the file.
        InvalidInput: the manifest announces a different bundle format version.
        NotFound, StorageError: the archive cannot be read.
    """
    with _tar_source(tar) as f, open_checked(f, limits) as checked:
        return _verify_checked(checked, expected_signer_fingerprint, None)


def extract_bundle(
    tar: Path | IO[bytes],
    to_dir: Path,
    expected_signer_fingerprint: str | None = None,
    *,
    limits: TarLimits = DEFAULT_LIMITS,
) -> VerifiedBundle:
    """Verify the archive fully, then write its files to ``to_dir/<root>/`` (files 0600, folders 0700).

    Only regular files are written, each read with ``extractfile`` to a path resolved by us, never
    over an existing file; on failure everything written is removed again.

    Raises:
        IntegrityError, InvalidInput: as :func:`verify_bundle_tar` (nothing is written then).
        AlreadyExists: a file of the bundle already exists in the target.
        NotFound, StorageError: the archive cannot be read or the target written.
    """
    return _extract(tar, to_dir, expected_signer_fingerprint, limits, None)


def _extract(
    tar: Path | IO[bytes],
    to_dir: Path,
    expected_signer: str | None,
    limits: TarLimits,
    hashed: MemberHasher | None,
) -> VerifiedBundle:
    with _tar_source(tar) as f, open_checked(f, limits) as checked:
        verified = _verify_checked(checked, expected_signer, hashed)
        wanted = {e.path: (e.size, e.sha256) for e in (*verified.files, *verified.format_files)}
        extract_files(checked, Path(to_dir), wanted)
    return verified


@contextmanager
def _tar_source(tar: Path | IO[bytes]) -> Iterator[IO[bytes]]:
    if not isinstance(tar, (str, Path)):
        yield tar
        return
    try:
        f = open(tar, "rb")
    except FileNotFoundError:
        raise NotFound(f"{str(tar)!r} does not exist") from None
    except OSError as exc:
        raise StorageError(f"cannot read {str(tar)!r}: {exc.strerror}") from None
    with f:
        yield f


def _verify_checked(
    checked: CheckedTar, expected_signer: str | None, hashed: MemberHasher | None
) -> VerifiedBundle:
    """The checks of :func:`verify_bundle_tar`. ``hashed`` must have been fed this very file's
    bytes as they were written (only :func:`_decrypted` makes one, with the file it fills)."""
    manifest_bytes = checked.read_member(MANIFEST_NAME, MAX_MANIFEST_BYTES)
    signature = checked.read_member(SIGNATURE_NAME, SIGNATURE_BYTES)
    pem = checked.read_member(SIGNER_NAME, MAX_SIGNER_PEM_BYTES)
    signer = crypto.public_key_from_pem(pem)
    if not crypto.verify_signature(signer, signature, manifest_bytes):
        raise IntegrityError(
            "manifest.sig is not a valid signature of manifest.json by signer.pub",
            "the bundle was modified after it was made; do not trust its content",
        )
    fingerprint = crypto.fingerprint(signer)
    if expected_signer is not None and expected_signer.strip().lower() != fingerprint:
        raise IntegrityError(
            f"the bundle is signed by {fingerprint}, not by the expected {expected_signer.strip()}",
            "ask the sender to confirm their vault fingerprint over another channel",
        )
    manifest, entries = _parse_manifest(manifest_bytes)
    if manifest["vault_fingerprint"] != fingerprint:
        raise IntegrityError("the manifest names a different vault than the key that signed it")
    if manifest["root"] != checked.root:
        raise IntegrityError(
            f"the bundle folder is {checked.root!r} but the manifest says {manifest['root']!r}"
        )
    _check_listing(checked, entries)
    _check_sums(entries)
    for entry in entries:
        _check_file(checked, entry, hashed)
    _check_sums_signature(checked, entries, signer)
    return VerifiedBundle(
        root=checked.root,
        client=manifest["client"],
        exported_at=manifest["exported_at"],
        signer_fingerprint=fingerprint,
        files=entries,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        signer_ssh_fingerprint=sshsig.ssh_fingerprint(signer),
        format_files=tuple(
            ManifestEntry(name, len(data), hashlib.sha256(data).hexdigest())
            for name, data in (
                (MANIFEST_NAME, manifest_bytes),
                (SIGNATURE_NAME, signature),
                (SIGNER_NAME, pem),
            )
        ),
    )


def _parse_manifest(data: bytes) -> tuple[dict[str, Any], tuple[ManifestEntry, ...]]:
    """Parse and shape-check a (signature-verified) manifest."""
    try:
        manifest = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"manifest.json is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise IntegrityError("manifest.json is not a JSON object")
    if manifest.get("format") != FORMAT:
        shown = str(manifest.get("format"))[:40]
        raise InvalidInput(f"unsupported bundle format {shown!r}", "a newer handover-vault may read it")
    for key in REQUIRED_META:
        if not isinstance(manifest.get(key), str):
            raise IntegrityError(f"manifest.json lacks the string field {key!r}")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise IntegrityError("manifest.json has no file list")
    entries = tuple(_parse_entry(item) for item in files)
    if len({e.path for e in entries}) != len(entries):
        raise IntegrityError("manifest.json lists a file twice")
    return manifest, entries


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _parse_entry(item: object) -> ManifestEntry:
    if not isinstance(item, dict) or set(item) != {"path", "size", "sha256"}:
        raise IntegrityError("manifest.json has a malformed file entry")
    path, size, sha = item["path"], item["size"], item["sha256"]
    if not isinstance(path, str) or name_problem(path) or path in SIGNATURE_FILES:
        raise IntegrityError(f"manifest.json lists an invalid path {str(path)[:80]!r}")
    # bool is an int in Python; JSON true is not a size.
    if type(size) is not int or size < 0 or not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
        raise IntegrityError(f"manifest.json has an invalid size or SHA-256 for {path!r}")
    return ManifestEntry(path, size, sha)


def _check_listing(checked: CheckedTar, entries: tuple[ManifestEntry, ...]) -> None:
    present = set(checked.files) - SIGNATURE_FILES
    listed = {e.path for e in entries}
    extra, missing = sorted(present - listed), sorted(listed - present)
    if extra:
        raise IntegrityError(f"{extra[0]} is in the bundle but not in the manifest ({len(extra)} such files)")
    if missing:
        raise IntegrityError(
            f"{missing[0]} is listed in the manifest but missing ({len(missing)} such files)"
        )


def _check_sums(entries: tuple[ManifestEntry, ...]) -> None:
    sums = next((e for e in entries if e.path == SUMS_NAME), None)
    if sums is None:
        raise IntegrityError("the manifest does not list SHA256SUMS")
    content = [e for e in entries if e.path not in (SUMS_NAME, SUMS_SIGNATURE_NAME)]
    expected = "".join(f"{e.sha256}  {e.path}\n" for e in sorted(content, key=lambda e: e.path))
    if hashlib.sha256(expected.encode("utf-8")).hexdigest() != sums.sha256:
        raise IntegrityError("SHA256SUMS does not agree with the manifest")


def _check_sums_signature(checked: CheckedTar, entries: tuple[ManifestEntry, ...], signer: bytes) -> None:
    """SHA256SUMS.sig must be the signer's OpenSSH signature of SHA256SUMS: what the successor's
    ``ssh-keygen -Y verify`` checks, checked here too so both verdicts agree. A bundle made before
    SHA256SUMS.sig existed does not list it; its signed manifest still covers every file."""
    if not any(e.path == SUMS_SIGNATURE_NAME for e in entries):
        return
    sums = checked.read_member(SUMS_NAME, MAX_MANIFEST_BYTES)
    sshsig.verify(checked.read_member(SUMS_SIGNATURE_NAME, MAX_SUMS_SIGNATURE_BYTES), sums, signer)


def _check_file(checked: CheckedTar, entry: ManifestEntry, hashed: MemberHasher | None) -> None:
    info = checked.files[entry.path]
    if info.size != entry.size:
        raise IntegrityError(f"{entry.path} has the wrong size (manifest: {entry.size} bytes)")
    # The member's bytes as tarfile locates them, hashed while the spool was written when the
    # walk saw the same offset and size (the usual case), or read again from the file.
    known = hashed.digest_of(info.offset_data, info.size) if hashed is not None else None
    if known is None:
        digest = hashlib.sha256()
        for chunk in checked.iter_member(entry.path):
            digest.update(chunk)
        known = digest.hexdigest()
    if known != entry.sha256:
        raise IntegrityError(f"{entry.path} does not match its SHA-256 in the manifest")


# --- Sealed bundles end to end ---------------------------------------------------------------------


@contextmanager
def _decrypted(
    bundle_path: Path,
    identities: Sequence[Identity],
    passphrase: str | None,
    spool_dir: Path | None,
    limits: TarLimits,
) -> Iterator[tuple[IO[bytes], MemberHasher]]:
    """The decrypted archive in an anonymous 0600 temp file that vanishes on close or crash, and
    its members' digests taken as it was written (used only once all of it authenticated)."""
    try:
        spool = tempfile.TemporaryFile(dir=spool_dir)
    except OSError as exc:
        raise StorageError(f"cannot create a temporary file: {exc.strerror}") from None
    hashed = MemberHasher(limits)
    with spool:
        decrypt_to(
            bundle_path,
            spool,
            identities=identities,
            passphrase=passphrase,
            hashed=False,
            observe=hashed.feed,
        )
        spool.seek(0)
        yield spool, hashed


def verify_sealed_bundle(
    bundle_path: Path,
    *,
    identities: Sequence[Identity] = (),
    passphrase: str | None = None,
    expected_signer_fingerprint: str | None = None,
    limits: TarLimits = DEFAULT_LIMITS,
    spool_dir: Path | None = None,
) -> VerifiedBundle:
    """Decrypt a ``.tar.age`` bundle to an anonymous temp file and verify it (``bundle verify``).

    Raises:
        AuthenticationFailed, IntegrityError, InvalidInput, NotFound, StorageError: as
            :func:`vault.agefile.open_stream` and :func:`verify_bundle_tar`.
    """
    with (
        _decrypted(Path(bundle_path), identities, passphrase, spool_dir, limits) as (spool, hashed),
        open_checked(spool, limits) as checked,
    ):
        return _verify_checked(checked, expected_signer_fingerprint, hashed)


def open_sealed_bundle(
    bundle_path: Path,
    to_dir: Path,
    *,
    identities: Sequence[Identity] = (),
    passphrase: str | None = None,
    expected_signer_fingerprint: str | None = None,
    limits: TarLimits = DEFAULT_LIMITS,
    spool_dir: Path | None = None,
) -> VerifiedBundle:
    """Decrypt, verify and extract a ``.tar.age`` bundle into ``to_dir/<root>/`` (``bundle open``).

    Raises:
        As :func:`verify_sealed_bundle` and :func:`extract_bundle` (including AlreadyExists).
    """
    with _decrypted(Path(bundle_path), identities, passphrase, spool_dir, limits) as (spool, hashed):
        return _extract(spool, to_dir, expected_signer_fingerprint, limits, hashed)
