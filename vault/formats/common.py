"""Import and hand-over file formats: the normalised credential and what every format shares.

This layer turns other tools' files into plain :class:`ImportedCredential` dicts and writes the
successor's copies. It knows nothing about vaults: the caller decides what to store.

Public surface (each function is documented where it is defined below):

- :func:`read_keepass` — a KeePass/KeePassXC database (KDBX 3.1 or 4), via pykeepass.
- :func:`read_keepass_xml` — a plain "KeePass XML (2.x)" export, including our own.
- :func:`read_bitwarden` — Bitwarden's unencrypted JSON export (personal or organisation).
- :func:`read_csv` — a spreadsheet in our column set, KeePassXC's or Bitwarden's CSV export.
- :func:`write_keepass_xml` / :func:`write_bitwarden_json` — the bundle's copies for a successor.

Every parsing failure is an :class:`~vault.errors.InvalidInput` naming *where* (a row, an item
index, an entry path) and never quoting a value: the value might be a password in the wrong column.
The implementations live in ``formats_keepass``, ``formats_bitwarden`` and ``formats_csv``; they
import this module's helpers, so this module imports them lazily inside the wrappers below (an
import at the top would be circular).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import urllib.parse
from datetime import date, datetime
from pathlib import Path
from typing import TypedDict

from ..errors import InvalidInput, NotFound

# Sizes refused before parsing. A hand-over holds one client's credentials: kilobytes to a few
# megabytes. 64 MiB leaves room for attachments yet keeps a mistaken or hostile file (a disk image
# picked by accident, a decompression bomb) from exhausting memory: parsers hold several copies.
MAX_TEXT_FILE_BYTES = 64 * 1024 * 1024
MAX_KDBX_BYTES = 64 * 1024 * 1024
# One attachment (a config backup, a diagram, a scanned form) larger than this belongs elsewhere.
MAX_ATTACHMENT_BYTES = 16 * 1024 * 1024
# A hand-over holds tens to a few thousand credentials. Reading, planning and storing grow with the
# count, so a file of millions of rows (64 MiB of short CSV lines) is refused as soon as the count
# passes this, instead of being ground through for an hour in one transaction.
MAX_ITEMS = 10_000

PathLike = str | os.PathLike[str]


class ImportedAttachment(TypedDict):
    """A file attached to a credential: its name as shown to the user and its bytes."""

    name: str
    data: bytes


class ImportedCredential(TypedDict):
    """One credential as every reader returns it and every writer accepts it.

    ``label``
        The entry's title (never empty; readers fall back to ``"(untitled)"`` where the source
        allows empty titles, and refuse an empty label in a CSV row).
    ``username``, ``secret``, ``url``, ``notes``
        Text or ``None`` when absent or empty. The secret is kept byte-for-byte (never stripped).
    ``category``
        The top-level group (KeePass), folder or collection (Bitwarden), or the CSV column.
    ``tags``
        The group path (each group name below the root, top first), then the entry's own tags,
        without duplicates.
    ``totp``
        An ``otpauth://`` URI. Bare base32 seeds and the other encodings tools use (KeePassXC's
        legacy ``TOTP Seed``/``TOTP Settings``, KeePass's ``TimeOtp-*``, KeeOtp, ``steam://``)
        are converted to one.
    ``expires``
        ``YYYY-MM-DD`` or ``None``.
    ``fields``
        Custom fields, name to text. Names are unique: a repeated name gets `` (2)``, `` (3)``.
    ``secret_fields``
        The custom fields the source marks hidden or protected (Bitwarden hidden fields, card codes,
        identity numbers; KeePass protected strings), kept apart so that they are treated like the
        secret: never shown without ``--reveal``, every reveal audited, exported like the secret.
    ``attachments``
        Files, each at most :data:`MAX_ATTACHMENT_BYTES`.
    """

    label: str
    username: str | None
    secret: str | None
    url: str | None
    notes: str | None
    category: str | None
    tags: list[str]
    totp: str | None
    expires: str | None
    fields: dict[str, str]
    secret_fields: dict[str, str]
    attachments: list[ImportedAttachment]


UNTITLED = "(untitled)"


def new_credential(label: str) -> ImportedCredential:
    """An :class:`ImportedCredential` with ``label`` and every other key empty."""
    return {
        "label": label,
        "username": None,
        "secret": None,
        "url": None,
        "notes": None,
        "category": None,
        "tags": [],
        "totp": None,
        "expires": None,
        "fields": {},
        "secret_fields": {},
        "attachments": [],
    }


# --- Files ------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def check_item_count(count: int, what: str) -> None:
    """Raise InvalidInput once a file has yielded more than :data:`MAX_ITEMS` credentials."""
    if count > MAX_ITEMS:
        raise InvalidInput(
            f"the {what} holds more than {MAX_ITEMS:,} credentials; this tool imports at most that many at once",
            "split the export into smaller files (by folder or group)",
        )


def read_capped(path: PathLike, limit: int, what: str) -> bytes:
    """Read a whole regular file of at most ``limit`` bytes.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: it is not a regular file, is larger than ``limit`` or cannot be read.
    """
    p = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO picked by mistake must not hang waiting for a writer; it is
        # then refused as not a regular file. It changes nothing for regular files.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            # fstat on the open handle, not stat on the name: the size checked is the file read.
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"the {what} {p} is not a regular file")
            if info.st_size > limit:
                raise InvalidInput(
                    f"the {what} {p} is {_mib(info.st_size)}, over the {_mib(limit)} this tool accepts",
                    "export only the entries you need, or remove large attachments first",
                )
            # Read one byte past the limit so a file that grew since fstat is still refused.
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"the {what} {p} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"the {what} {p} is not a regular file") from None
    except OSError as exc:
        raise InvalidInput(f"the {what} {p} could not be read: {exc.strerror or 'I/O error'}") from None
    if len(data) > limit:
        raise InvalidInput(f"the {what} {p} is over the {_mib(limit)} this tool accepts")
    return data


def decode_utf8(data: bytes, what: str) -> str:
    """Decode UTF-8 text, dropping a byte-order mark (Excel and some exporters write one).

    Raises:
        InvalidInput: the bytes are not UTF-8, with the position of the first bad byte.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the {what} is not UTF-8 text (first bad byte at offset {exc.start})",
            "save it as UTF-8 (in Excel: 'CSV UTF-8'; in LibreOffice: character set 'Unicode (UTF-8)')",
        ) from None


# --- Small value helpers ----------------------------------------------------------------------


def text_or_none(value: str | None) -> str | None:
    """``None`` for a missing or whitespace-only value, else the value unchanged."""
    if value is None or not value.strip():
        return None
    return value


def add_field(fields: dict[str, str], name: str, value: str) -> None:
    """Add a custom field, keeping names unique (`` (2)``, `` (3)`` …) and skipping empty values."""
    if value == "":
        return
    base = name.strip() or "field"
    candidate, n = base, 2
    while candidate in fields:
        candidate, n = f"{base} ({n})", n + 1
    fields[candidate] = value


def merge_tags(*groups: list[str]) -> list[str]:
    """Concatenate tag lists, dropping blanks and later duplicates, keeping first-seen order."""
    out: list[str] = []
    for group in groups:
        for tag in group:
            tag = tag.strip()
            if tag and tag not in out:
                out.append(tag)
    return out


def split_tags(value: str | None) -> list[str]:
    """Tags written as one string: KeePass separates them with ``;``, spreadsheets often ``,``."""
    if not value:
        return []
    return merge_tags(re.split(r"[;,]", value))


def category_and_tags(path: list[str]) -> tuple[str | None, list[str]]:
    """A group/folder path below the root -> (top-level name as category, every name as a tag)."""
    names = [p.strip() for p in path if p.strip()]
    return (names[0] if names else None), merge_tags(names)


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: str, where: str) -> str:
    """Check a ``YYYY-MM-DD`` date and return it; the value itself is never echoed.

    Raises:
        InvalidInput: not that shape, or not a real calendar date.
    """
    text = value.strip()
    if _ISO_DATE.fullmatch(text):
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    # ``date.fromisoformat`` alone would also accept 20240131 and week dates: refuse them too.
    raise InvalidInput(f"{where}: the expiry date must be written YYYY-MM-DD (e.g. 2027-03-31)")


def date_from_datetime(when: datetime) -> str:
    """The calendar date of an aware datetime as the user saw it: in this machine's time zone.

    KeePass stores expiry instants in UTC; a user in UTC+1 who picked "1 March, 00:00" has
    "28 February 23:00Z" on file. The importing machine is normally the one that user works on.
    """
    try:
        return when.astimezone().date().isoformat()
    except (OverflowError, ValueError):
        # 9999-12-31 and 0001-01-01 cannot be shifted; their UTC date is as good as any.
        return when.date().isoformat()


# --- TOTP -------------------------------------------------------------------------------------

_ALGORITHMS = {"SHA1", "SHA256", "SHA512"}


def clean_base32(seed: str) -> str | None:
    """A base32 seed as authenticator apps show it (spaces, hyphens, lower case, padding allowed)
    in canonical form (upper case, no separators or padding), or ``None`` if it is not base32."""
    s = re.sub(r"[\s-]", "", seed).upper().rstrip("=")
    if not s or not re.fullmatch(r"[A-Z2-7]+", s):
        return None
    try:
        base64.b32decode(s + "=" * (-len(s) % 8))
    except (binascii.Error, ValueError):
        return None  # lengths 1, 3 and 6 mod 8 cannot come from whole bytes
    return s


def totp_uri(
    secret: str,
    label: str,
    *,
    period: int = 30,
    digits: int = 6,
    algorithm: str = "SHA1",
    encoder: str | None = None,
) -> str:
    """Build an ``otpauth://totp/`` URI (Google's Key Uri Format) for a canonical base32 secret.

    Defaults are left out, as most generators do; ``encoder=steam`` is KeePassXC's convention.
    """
    query: dict[str, str] = {"secret": secret, "issuer": label}
    if period != 30:
        query["period"] = str(period)
    if digits != 6:
        query["digits"] = str(digits)
    if algorithm != "SHA1":
        query["algorithm"] = algorithm
    if encoder:
        query["encoder"] = encoder
    # quote_via=quote writes spaces as %20: "+" is a literal plus to several otpauth parsers.
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return f"otpauth://totp/{urllib.parse.quote(label, safe='')}?{encoded}"


def _int_param(value: str | None, default: int, low: int, high: int, what: str, where: str) -> int:
    if value is None or value.strip() == "":
        return default
    text = value.strip()
    # fullmatch on ASCII digits: str.isdigit() also accepts "²", which int() then refuses.
    if not re.fullmatch(r"[0-9]{1,6}", text) or not low <= int(text) <= high:
        raise InvalidInput(f"{where}: the one-time password {what} must be a number from {low} to {high}")
    return int(text)


def check_otp_params(
    where: str, *, period: str | None = None, digits: str | None = None, algorithm: str | None = None
) -> tuple[int, int, str]:
    """Validate TOTP period (1-300 s), digits (4-10) and algorithm (SHA1/SHA256/SHA512).

    Raises:
        InvalidInput: a parameter is out of range or unknown.
    """
    p = _int_param(period, 30, 1, 300, "period", where)
    d = _int_param(digits, 6, 4, 10, "length", where)
    algo = (algorithm or "SHA1").strip().upper().replace("HMAC-", "").replace("-", "")
    if algo not in _ALGORITHMS:
        raise InvalidInput(f"{where}: the one-time password algorithm must be SHA1, SHA256 or SHA512")
    return p, d, algo


def _check_otpauth(uri: str, where: str) -> str:
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # e.g. "Invalid IPv6 URL" for an unbalanced "[": the URI is not quoted back
        raise InvalidInput(f"{where}: the otpauth:// URI is malformed") from None
    if parts.netloc.lower() not in ("totp", "hotp"):
        raise InvalidInput(f"{where}: an otpauth:// URI must be otpauth://totp/… or otpauth://hotp/…")
    query = urllib.parse.parse_qs(parts.query)
    secrets = query.get("secret", [])
    if len(secrets) != 1 or clean_base32(secrets[0]) is None:
        raise InvalidInput(f"{where}: the otpauth:// URI has no valid base32 secret")
    first = {k: v[0] for k, v in query.items()}
    check_otp_params(
        where, period=first.get("period"), digits=first.get("digits"), algorithm=first.get("algorithm")
    )
    return uri


def _from_keeotp(value: str, label: str, where: str) -> str:
    # KeeOtp plugin and KeePassXC's compatibility form: key=SEED&size=6&step=30&otpHashMode=SHA256
    query = {k: v[0] for k, v in urllib.parse.parse_qs(value).items()}
    secret = clean_base32(query.get("key", ""))
    if secret is None:
        raise InvalidInput(f"{where}: the one-time password key is not base32")
    period, digits, algo = check_otp_params(
        where, period=query.get("step"), digits=query.get("size"), algorithm=query.get("otpHashMode")
    )
    return totp_uri(secret, label, period=period, digits=digits, algorithm=algo)


def normalise_totp(value: str, label: str, where: str) -> str:
    """Turn any TOTP notation a password manager stores into an ``otpauth://`` URI.

    Accepted: ``otpauth://`` URIs (validated, returned unchanged), ``steam://SEED``, KeeOtp's
    ``key=SEED&step=30&size=6``, and bare base32 seeds (``label`` becomes the URI's name).

    Raises:
        InvalidInput: none of those; the message says where, never what.
    """
    text = value.strip()
    lowered = text.lower()
    if lowered.startswith("otpauth://"):
        return _check_otpauth(text, where)
    if lowered.startswith("steam://"):
        secret = clean_base32(text[len("steam://") :])
        if secret is None:
            raise InvalidInput(f"{where}: the steam:// one-time password seed is not base32")
        return totp_uri(secret, label, digits=5, encoder="steam")
    if lowered.startswith("key=") or "&key=" in lowered:
        return _from_keeotp(text, label, where)
    secret = clean_base32(text)
    if secret is None:
        raise InvalidInput(
            f"{where}: the TOTP value is neither an otpauth:// URI nor a base32 seed",
            "copy the seed (or the otpauth:// link) from the service's 2FA set-up page",
        )
    return totp_uri(secret, label)


# KeePass-family TOTP fields: consumed once converted, so the seed is not kept twice as a field.
_TIME_OTP_KEYS = [f"TimeOtp-{k}" for k in ("Secret", "Secret-Hex", "Secret-Base32", "Secret-Base64")]
KEEPASS_TOTP_KEYS = frozenset(
    {
        "otp",
        "TOTP Seed",
        "TOTP Settings",
        "TimeOtp-Length",
        "TimeOtp-Period",
        "TimeOtp-Algorithm",
        *_TIME_OTP_KEYS,
    }
)


def totp_from_keepass_fields(strings: dict[str, str], label: str, where: str) -> str | None:
    """A KeePass entry's TOTP as an ``otpauth://`` URI, from its string fields, in order of
    precedence: KeePassXC's ``otp``, KeePass 2.47+'s ``TimeOtp-*``, and the legacy ``TOTP Seed`` /
    ``TOTP Settings`` pair of KeePassXC before 2.6 (and KeeTrayTOTP). ``None`` when there is none.

    Raises:
        InvalidInput: a TOTP field that cannot be converted, naming ``where`` and the field.
    """
    if strings.get("otp", "").strip():
        return normalise_totp(strings["otp"], label, f"{where}, field 'otp'")
    for key in _TIME_OTP_KEYS:
        if strings.get(key, "").strip():
            secret = time_otp_secret(key, strings[key], f"{where}, field '{key}'")
            period, digits, algo = check_otp_params(
                where,
                period=strings.get("TimeOtp-Period"),
                digits=strings.get("TimeOtp-Length"),
                algorithm=strings.get("TimeOtp-Algorithm"),
            )
            return totp_uri(secret, label, period=period, digits=digits, algorithm=algo)
    seed = strings.get("TOTP Seed", "").strip()
    if not seed:
        return None
    legacy = clean_base32(seed)
    if legacy is None:
        raise InvalidInput(f"{where}, field 'TOTP Seed': the seed is not base32")
    step, _, size = strings.get("TOTP Settings", "30;6").partition(";")
    if size.strip() == "S":  # "30;S": Steam Guard codes, five characters
        return totp_uri(legacy, label, digits=5, encoder="steam")
    period, digits, _ = check_otp_params(where, period=step, digits=size)
    return totp_uri(legacy, label, period=period, digits=digits)


def time_otp_secret(key: str, value: str, where: str) -> str:
    """KeePass 2.47+ stores the TOTP key as UTF-8 text, hex, base32 or base64; return base32."""
    try:
        if key.endswith("Base32"):
            secret = clean_base32(value)
            if secret is None:
                raise ValueError
            return secret
        if key.endswith("Hex"):
            raw = bytes.fromhex(value)
        elif key.endswith("Base64"):
            raw = base64.b64decode(value, validate=True)
        else:
            raw = value.encode("utf-8")
    except (ValueError, binascii.Error):
        raise InvalidInput(f"{where}: the one-time password key cannot be decoded") from None
    if not raw:
        raise InvalidInput(f"{where}: the one-time password key is empty")
    return base64.b32encode(raw).decode("ascii").rstrip("=")


# --- Public API: thin wrappers over the format modules ----------------------------------------
# Each wrapper imports its module on first use: those modules import the helpers above.


def read_keepass(
    path: PathLike, password: str, keyfile: PathLike | None = None, *, group: str | None = None
) -> list[ImportedCredential]:
    """Read every credential of a KeePass/KeePassXC database (KDBX 3.1 or 4).

    ``group`` (``"Clients/Acme"``) limits the import to that group's subtree; category and tags
    are then taken relative to it. The Recycle Bin and entry history are never imported.

    Raises:
        AuthenticationFailed: wrong password or key file (exit 3).
        NotFound: the database, the key file or ``group`` does not exist.
        InvalidInput: not a KDBX file, damaged, over the size cap, asks for absurd key-derivation
            work, or holds a value that cannot be converted (an attachment over the cap, a
            malformed TOTP).
    """
    from .keepass import read_keepass as _read

    return _read(path, password, keyfile, group=group)


def read_keepass_xml(path: PathLike, *, group: str | None = None) -> list[ImportedCredential]:
    """Read a plain KeePass 2 XML export ("KeePass XML (2.x)", ``keepassxc-cli export``).

    ``group`` works as for :func:`read_keepass`.

    Raises:
        NotFound: the file or ``group`` does not exist.
        InvalidInput: not KeePass XML, over the size cap, holds encrypted (``Protected``) values,
            a DOCTYPE, or a value that cannot be converted.
    """
    from .keepass import read_keepass_xml as _read

    return _read(path, group=group)


def read_bitwarden(path: PathLike) -> list[ImportedCredential]:
    """Read Bitwarden's unencrypted JSON export (``bw export --format json``).

    Raises:
        NotFound: the file does not exist.
        InvalidInput: encrypted export, not JSON, not Bitwarden's shape (naming the item index),
            over the size cap.
    """
    from .bitwarden import read_bitwarden as _read

    return _read(path)


def read_csv(path: PathLike, mapping: dict[str, str] | None = None) -> list[ImportedCredential]:
    """Read a spreadsheet export; see :mod:`vault.formats_csv` for the columns understood.

    ``mapping`` maps the file's headers (any case) to ours, e.g. ``{"Title": "label"}``; a header
    mapped to ``"ignore"`` is skipped.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: no label column, a bad mapping, a bad date or TOTP (naming the row), not
            UTF-8, malformed CSV, over the size cap.
    """
    from .csvfile import read_csv as _read

    return _read(path, mapping)


def write_keepass_xml(
    creds: list[ImportedCredential], *, exported_at: datetime | None = None, name: str = "Handover"
) -> bytes:
    """KeePass 2 XML that KeePass, KeePassXC (GUI and ``keepassxc-cli import``) import.

    Output is byte-for-byte deterministic for a given ``exported_at``; without it, now is used.

    Raises:
        InvalidInput: a value holds characters XML 1.0 cannot carry (NUL and most control codes).
    """
    from .keepass_write import write_keepass_xml as _write

    return _write(creds, exported_at=exported_at, name=name)


def write_bitwarden_json(creds: list[ImportedCredential]) -> bytes:
    """Bitwarden's unencrypted JSON import format, deterministic (ids derived from the content).

    Bitwarden has no tags, expiry or attachments on items: tags and expiry become the custom
    fields ``Tags`` and ``Expires`` (which :func:`read_bitwarden` reads back); attachments are
    left out (the bundle carries them as files).
    """
    from .bitwarden import write_bitwarden_json as _write

    return _write(creds)
