"""KeePass formats: read KDBX 3.1/4 (decrypted by pykeepass) and KeePass 2 XML; write KeePass 2 XML.

Both readers end in the same walk over the KeePass XML tree (a KDBX file is an encrypted XML
document), so a database and its XML export give the same credentials.

Before pykeepass runs the key derivation we parse the header ourselves and refuse absurd KDF
parameters: a hostile or mistaken file must not make us spin for hours or allocate gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import logging
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from lxml import etree

from ..errors import AuthenticationFailed, InvalidInput, NotFound
from .common import (
    KEEPASS_TOTP_KEYS,
    MAX_ATTACHMENT_BYTES,
    MAX_KDBX_BYTES,
    MAX_TEXT_FILE_BYTES,
    UNTITLED,
    ImportedAttachment,
    ImportedCredential,
    PathLike,
    add_field,
    category_and_tags,
    check_item_count,
    date_from_datetime,
    merge_tags,
    new_credential,
    read_capped,
    split_tags,
    text_or_none,
    totp_from_keepass_fields,
)
from .keepass_write import STANDARD_KEYS as _STANDARD_KEYS

if TYPE_CHECKING:
    # pykeepass (with construct, pycryptodome and argon2) is imported where a KDBX is read: the
    # XML writer, which every export uses, does not need it, and it is about 10 MiB of memory.
    from pykeepass import PyKeePass

WRONG_KEY = "the KeePass database could not be opened: wrong password or key file"

# pykeepass logs an error per value it cannot unprotect. With no logging configured, Python's
# last-resort handler would print those to stderr, and vault/ never prints: a NullHandler stops
# that, while an application that configures logging still receives them.
logging.getLogger("pykeepass").addHandler(logging.NullHandler())

_KDBX_SIGNATURE = bytes.fromhex("03d9a29a67fb4bb5")
_KDB1_SIGNATURE = bytes.fromhex("03d9a29a65fb4bb5")  # KeePass 1.x .kdb

# Key-derivation work accepted from a file. Real databases use KeePassXC's benchmark (about one
# second): tens of millions of AES rounds, or Argon2 at 64 MiB to 1 GiB for a few dozen passes.
# These caps are a hundred times that, and still end in about a minute.
MAX_AES_ROUNDS = 1_000_000_000
MAX_ARGON2_MEMORY = 2 * 1024**3
MAX_ARGON2_LANES = 64
MAX_ARGON2_WORK = 64 * 1024**3  # memory x iterations, in bytes
# The decompressed payload (XML, and in KDBX 4 the inner header with its attachments) accepted from
# a file of at most MAX_KDBX_BYTES. gzip expands up to about 1000:1, so a 64 MiB file could ask for
# tens of GiB; twice the file cap is far above any real database (the XML of 10,000 entries is about
# 10 MiB) and bounds the memory used while refusing one (docs/security.md).
MAX_KDBX_PAYLOAD = 2 * MAX_KDBX_BYTES


class _PayloadTooLarge(Exception):
    """Raised inside pykeepass's parser; turned into InvalidInput by :func:`_open`."""


def _bounded_gunzip(self: Any, data: bytes, con: Any, path: Any) -> bytes:
    """pykeepass's ``Decompressed._decode`` (``zlib.decompress(data, 16 + 15)``, no limit), bounded:
    at most MAX_KDBX_PAYLOAD + 1 bytes are ever produced, so a bomb costs that much memory at most."""
    d = zlib.decompressobj(16 + 15)
    out = d.decompress(data, MAX_KDBX_PAYLOAD + 1)
    if len(out) > MAX_KDBX_PAYLOAD:
        raise _PayloadTooLarge
    if not d.eof:
        raise zlib.error("truncated gzip stream")
    return out


def _bound_pykeepass() -> None:
    from pykeepass.kdbx_parsing import common

    common.Decompressed._decode = _bounded_gunzip


Binaries = dict[str, Callable[[], bytes]]


# --- Reading KDBX -----------------------------------------------------------------------------


def read_keepass(
    path: PathLike, password: str, keyfile: PathLike | None = None, *, group: str | None = None
) -> list[ImportedCredential]:
    """Decrypt a KDBX 3.1/4 database and return its credentials (see :func:`vault.formats.read_keepass`).

    Raises:
        AuthenticationFailed: wrong password or key file.
        NotFound: the database, key file or ``group`` does not exist.
        InvalidInput: not KDBX, damaged, oversized, absurd KDF parameters, unconvertible values.
    """
    data = read_capped(path, MAX_KDBX_BYTES, "KeePass database")
    key_data = read_capped(keyfile, MAX_KDBX_BYTES, "key file") if keyfile is not None else None
    header = _parse_header(data)
    kp = _open(data, password, key_data, header)
    _check_header_hash(kp)
    binaries: Binaries
    if kp.version >= (4, 0):
        # KDBX 4 keeps attachments in the inner header, already decompressed with the payload.
        binaries = {str(i): functools.partial(bytes, b) for i, b in enumerate(kp.binaries)}
    else:
        binaries = _meta_binaries(kp.tree.getroot())
    return _credentials(kp.tree.getroot(), binaries, group)


def _parse_header(data: bytes) -> Any:
    """Parse the unencrypted header with pykeepass's grammar, without running the KDF.

    Raises:
        InvalidInput: not a KDBX file, an unsupported version, or a damaged header.
    """
    if data[:8] == _KDB1_SIGNATURE:
        raise InvalidInput(
            "this is a KeePass 1 database (.kdb), which is not supported",
            "open it in KeePassXC or KeePass 2 and save it as a .kdbx database first",
        )
    if data[:8] != _KDBX_SIGNATURE:
        raise InvalidInput("the file is not a KeePass database (KDBX)")
    from pykeepass.kdbx_parsing import KDBX

    try:
        # A placeholder transformed key stops pykeepass deriving the real one while it parses.
        parsed = KDBX.parse(data, password=None, keyfile=None, transformed_key=bytes(32), decrypt=False)
        header = parsed.header.value
    except Exception:  # construct raises a dozen exception types, all meaning "cannot parse"
        raise InvalidInput("the KeePass database is damaged: its header cannot be read") from None
    if header.major_version not in (3, 4) or header.dynamic_header is None:
        raise InvalidInput(
            f"KDBX version {header.major_version}.{header.minor_version} is not supported",
            "KeePass and KeePassXC write versions 3.1 and 4; re-save the database with one of them",
        )
    return header


def _aes_kdf_params(header: Any) -> tuple[bytes, int] | None:
    """(seed, rounds) when the database uses AES-KDF; ``None`` for Argon2 (checked here too).

    Raises:
        InvalidInput: an unknown KDF, or parameters over the caps above.
    """
    from pykeepass.kdbx_parsing import kdf_uuids

    try:
        if header.major_version == 3:
            seed, rounds = (
                header.dynamic_header.transform_seed.data,
                header.dynamic_header.transform_rounds.data,
            )
        else:
            params = {k: v.value for k, v in header.dynamic_header.kdf_parameters.data.dict.items()}
            if params["$UUID"] != kdf_uuids["aeskdf"]:
                _check_argon2(params)
                return None
            seed, rounds = params["S"], params["R"]
    except (AttributeError, KeyError, TypeError):
        raise InvalidInput(
            "the KeePass database is damaged: its key-derivation settings are incomplete"
        ) from None
    if not isinstance(rounds, int) or not 0 <= rounds <= MAX_AES_ROUNDS or len(seed) != 32:
        raise InvalidInput(*_TOO_COSTLY)
    return bytes(seed), rounds


_TOO_COSTLY = (
    "the KeePass database asks for more key-derivation work than this tool accepts",
    "in KeePassXC, lower Database > Database Security > Encryption Settings > Decryption time, "
    "save, and import again",
)


def _check_argon2(params: dict[str, Any]) -> None:
    from pykeepass.kdbx_parsing import kdf_uuids

    if params["$UUID"] not in (kdf_uuids["argon2"], kdf_uuids["argon2id"]):
        raise InvalidInput("the KeePass database uses a key-derivation function this tool does not know")
    memory, iterations, lanes = params["M"], params["I"], params["P"]
    if not (
        0 < memory <= MAX_ARGON2_MEMORY
        and 0 < lanes <= MAX_ARGON2_LANES
        and 0 < memory * iterations <= MAX_ARGON2_WORK
    ):
        raise InvalidInput(*_TOO_COSTLY)


def aes_kdf(seed: bytes, rounds: int, composite: bytes) -> bytes:
    """KeePass's AES-KDF, computed in C by ``crypto.keepass_aes_kdf`` (pykeepass loops in Python)."""
    from ..keys.crypto import keepass_aes_kdf

    return keepass_aes_kdf(seed, rounds, composite)


def _open(data: bytes, password: str, key_data: bytes | None, header: Any) -> PyKeePass:
    """Derive the key (AES-KDF ourselves, Argon2 by pykeepass) and decrypt.

    Raises:
        AuthenticationFailed: wrong password or key file.
        InvalidInput: a damaged database or key file.
    """
    from pykeepass import PyKeePass
    from pykeepass.exceptions import CredentialsError, HeaderChecksumError, PayloadChecksumError
    from pykeepass.kdbx_parsing.common import compute_key_composite

    aes = _aes_kdf_params(header)
    # KeePassXC treats an empty password as "no password" (a key-file-only database); so do we.
    pw = password or None
    keyfile = io.BytesIO(key_data) if key_data is not None else None
    try:
        composite = compute_key_composite(password=pw, keyfile=keyfile)
    except (AssertionError, OSError, ValueError):
        # pykeepass asserts on a key file whose checksum does not match, fails in bytes.fromhex on
        # a malformed one, and raises IOError for one it cannot read at all.
        raise InvalidInput("the key file is damaged or not a KeePass key file") from None
    _bound_pykeepass()
    try:
        transformed = aes_kdf(aes[0], aes[1], composite) if aes is not None else None
        return PyKeePass(io.BytesIO(data), password=pw, keyfile=keyfile, transformed_key=transformed)
    except CredentialsError:
        raise AuthenticationFailed(WRONG_KEY) from None
    except _PayloadTooLarge:
        raise InvalidInput(
            f"the KeePass database's contents expand to more than {MAX_KDBX_PAYLOAD // 1024**2} MiB; refused",
            "a real database is far smaller: this file is damaged or built to exhaust memory",
        ) from None
    except (HeaderChecksumError, PayloadChecksumError):
        raise InvalidInput("the KeePass database is damaged: a checksum does not match") from None
    except Exception:  # construct, zlib and lxml errors from a payload that decrypted to garbage
        # "from None": the chained context could hold the decryption context; never show it.
        raise InvalidInput("the KeePass database is damaged: its contents cannot be read") from None


def _check_header_hash(kp: PyKeePass) -> None:
    """KDBX 3.1 authenticates its header only through ``Meta/HeaderHash`` inside the payload,
    which pykeepass does not check. Without it a damaged header (say, the inner stream key) still
    decrypts, and every protected value comes out as garbage instead of an error.

    Raises:
        InvalidInput: the hash is present and does not match.
    """
    if kp.version >= (4, 0):
        return  # KDBX 4 authenticates its header with an HMAC that pykeepass does check
    stored = kp.tree.findtext("Meta/HeaderHash")
    if stored:
        actual = base64.b64encode(hashlib.sha256(kp.kdbx.header.data).digest()).decode("ascii")
        if stored.strip() != actual:
            raise InvalidInput("the KeePass database is damaged: its header does not match its contents")


# --- Reading KeePass XML ----------------------------------------------------------------------


def read_keepass_xml(path: PathLike, *, group: str | None = None) -> list[ImportedCredential]:
    """Read a plain KeePass 2 XML export (see :func:`vault.formats.read_keepass_xml`).

    Raises:
        NotFound: the file or ``group`` does not exist.
        InvalidInput: not KeePass XML, oversized, encrypted values, a DOCTYPE, unconvertible values.
    """
    data = read_capped(path, MAX_TEXT_FILE_BYTES, "KeePass XML export")
    # No entity expansion, no network, no DTD: an XML file from elsewhere is untrusted input.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        tree = etree.parse(io.BytesIO(data), parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"the file is not well-formed XML (line {exc.lineno})") from None
    if tree.docinfo.doctype:
        raise InvalidInput("the XML file declares a DOCTYPE, which KeePass exports never do; refused")
    root = tree.getroot()
    if root.tag != "KeePassFile":
        raise InvalidInput("the XML file is not a KeePass export (no <KeePassFile> root element)")
    if root.find(".//Value[@Protected='True']") is not None:
        raise InvalidInput(
            "the XML holds values encrypted with a database's inner key, which only the database can read",
            "export again as plain 'KeePass XML (2.x)', or import the .kdbx database instead",
        )
    return _credentials(root, _meta_binaries(root), group)


def _meta_binaries(root: Any) -> Binaries:
    """Attachments stored in ``Meta/Binaries`` (KDBX 3.1 and XML), decoded only when referenced."""
    out: Binaries = {}
    for el in root.iterfind("Meta/Binaries/Binary"):
        ref = el.get("ID", "")
        compressed = el.get("Compressed", "False") == "True"
        out[ref] = functools.partial(_decode_binary, el.text or "", compressed)
    return out


def _decode_binary(text: str, compressed: bool) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=False)
        if not compressed:
            return raw
        # Bounded decompression: a few kilobytes of gzip can expand to gigabytes.
        d = zlib.decompressobj(zlib.MAX_WBITS | 32)
        out = d.decompress(raw, MAX_ATTACHMENT_BYTES + 1)
    except (binascii.Error, UnicodeEncodeError, zlib.error):
        raise _BadBinary("damaged") from None
    if len(out) > MAX_ATTACHMENT_BYTES:
        raise _BadBinary(_OVERSIZE)
    if not d.eof:
        raise _BadBinary("damaged")
    return out


_OVERSIZE = f"over the {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB attachment limit"


class _BadBinary(Exception):
    """Internal: an attachment that cannot be decoded; turned into InvalidInput with its entry."""


# --- The shared walk --------------------------------------------------------------------------


def _credentials(root: Any, binaries: Binaries, group: str | None) -> list[ImportedCredential]:
    start = root.find("Root/Group")
    if start is None:
        raise InvalidInput("the KeePass data has no root group")
    prefix: list[str] = []
    if group is not None:
        start, prefix = _find_group(start, group), [p for p in group.split("/") if p]
    recycle_bin = _uuid_bytes(root.findtext("Meta/RecycleBinUUID"))
    out: list[ImportedCredential] = []
    for group_el, path in _walk(start, recycle_bin):
        for entry in group_el.iterfind("Entry"):
            out.append(_entry(entry, path, binaries, prefix))
            check_item_count(len(out), "KeePass data")
    return out


def _find_group(start: Any, group: str) -> Any:
    node = start
    for name in (p for p in group.split("/") if p):
        found = next((g for g in node.iterfind("Group") if (g.findtext("Name") or "") == name), None)
        if found is None:
            raise NotFound(f"the KeePass database has no group '{group}'")
        node = found
    return node


def _uuid_bytes(text: str | None) -> bytes | None:
    try:
        raw = base64.b64decode(text or "", validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 16 and any(raw) else None


def _walk(start: Any, recycle_bin: bytes | None) -> Iterator[tuple[Any, list[str]]]:
    """Groups depth-first in document order with their name path below ``start``, skipping the
    Recycle Bin subtree. Iterative, so deep nesting cannot exhaust the Python stack."""
    stack: list[tuple[Any, list[str]]] = [(start, [])]
    while stack:
        group_el, path = stack.pop()
        yield group_el, path
        children = [
            (g, [*path, g.findtext("Name") or ""])
            for g in group_el.iterfind("Group")
            if recycle_bin is None or _uuid_bytes(g.findtext("UUID")) != recycle_bin
        ]
        stack.extend(reversed(children))


def _entry(entry: Any, path: list[str], binaries: Binaries, prefix: list[str]) -> ImportedCredential:
    strings: dict[str, str] = {}
    protected: set[str] = set()
    for s in entry.iterfind("String"):
        # The first of duplicated keys wins, as in KeePass itself.
        key = s.findtext("Key") or ""
        if key not in strings:
            strings[key] = s.findtext("Value") or ""
            value = s.find("Value")
            # Protected (KDBX, encrypted with the inner stream) or ProtectInMemory (XML export):
            # the user marked it secret.
            if value is not None and "True" in (value.get("Protected"), value.get("ProtectInMemory")):
                protected.add(key)
    cred = new_credential(strings.get("Title", "").strip() or UNTITLED)
    where = "entry '" + "/".join([*prefix, *path, cred["label"]]) + "'"  # for error messages
    cred["username"] = text_or_none(strings.get("UserName"))
    cred["secret"] = strings.get("Password") or None  # kept exactly: spaces can be part of it
    cred["url"] = text_or_none(strings.get("URL"))
    cred["notes"] = text_or_none(strings.get("Notes"))
    category, tags = category_and_tags(path)
    cred["category"], cred["tags"] = category, merge_tags(tags, split_tags(entry.findtext("Tags")))
    cred["totp"] = totp_from_keepass_fields(strings, cred["label"], where)
    skip = _STANDARD_KEYS | (KEEPASS_TOTP_KEYS if cred["totp"] else set())
    for key, value in strings.items():
        if key not in skip:
            add_field(cred["secret_fields" if key in protected else "fields"], key, value)
    cred["expires"] = _expiry(entry, where)
    cred["attachments"] = _attachments(entry, binaries, where)
    return cred


def _expiry(entry: Any, where: str) -> str | None:
    if entry.findtext("Times/Expires") != "True":
        return None
    text = (entry.findtext("Times/ExpiryTime") or "").strip()
    try:
        return date_from_datetime(_keepass_time(text))
    except (ValueError, OverflowError, binascii.Error):
        raise InvalidInput(f"{where}: the expiry time cannot be read") from None


def _keepass_time(text: str) -> datetime:
    """KDBX 4 writes times as base64 of int64 seconds since 0001-01-01 UTC; XML and KDBX 3.1
    write ISO 8601. Raises ValueError/OverflowError/binascii.Error on anything else."""
    if len(text) == 12 and text.endswith("="):
        seconds = int.from_bytes(base64.b64decode(text, validate=True), "little", signed=True)
        return datetime(1, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _attachments(entry: Any, binaries: Binaries, where: str) -> list[ImportedAttachment]:
    out: list[ImportedAttachment] = []
    for b in entry.iterfind("Binary"):
        name = (b.findtext("Key") or "").strip() or "attachment"
        value = b.find("Value")
        ref = value.get("Ref") if value is not None else None
        if value is None or (ref is not None and ref not in binaries):
            raise InvalidInput(f"{where}: attachment '{name}' refers to data missing from the file")
        try:
            if ref is None:  # old writers put the data inline instead of a reference
                data = _decode_binary(value.text or "", value.get("Compressed") == "True")
            else:
                data = binaries[ref]()
            if len(data) > MAX_ATTACHMENT_BYTES:
                raise _BadBinary(_OVERSIZE)
        except _BadBinary as exc:
            raise InvalidInput(
                f"{where}: attachment '{name}' is {exc}", "remove it from the entry and import again"
            ) from None
        out.append({"name": name, "data": data})
    return out
