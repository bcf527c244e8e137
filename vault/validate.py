"""Validation of values that come from users and outside files. Each raises InvalidInput."""

from __future__ import annotations

import datetime as dt
import re

from .errors import InvalidInput

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
MAX_TEXT = 1_000_000  # 1 MB of Markdown per document is far more than any real page.
MAX_FIELD = 10_000  # single-line fields: names, labels, usernames, URLs, secrets.
SEVERITIES = ("critical", "high", "medium", "low")

# Characters that drive a terminal or reorder what it shows rather than being shown: C0 controls
# but tab and newline, DEL, C1 controls (U+0080-U+009F: CSI U+009B starts an escape sequence on
# its own), and every format character (Unicode category Cf: bidirectional embeddings, overrides
# and isolates U+202A-U+202E and U+2066-U+2069, the marks U+200E/U+200F and U+061C, zero-width
# characters, the BOM, tag characters) plus the line and paragraph separators (Zl, Zp). Written as
# ranges so that importing this costs nothing; tests/test_outside_data.py checks it against
# unicodedata's Cf, Zl and Zp for every code point.
_UNSAFE_RANGES = (
    "\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
TERMINAL_UNSAFE = re.compile(f"[{_UNSAFE_RANGES}]")
_UNSAFE_OR_NEWLINE = re.compile(f"[\n{_UNSAFE_RANGES}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, multiline: bool = False) -> str:
    """``text`` with every character of :data:`TERMINAL_UNSAFE` shown as an escape (``\\x1b``,
    ``\\u202e``) instead of obeyed; newlines too unless ``multiline``.

    The one function that everything from outside (bundle manifests, certificates, receipts,
    imported files, vault content) passes before it reaches a terminal: a value on one line cannot
    start another (a forged "Signed by ..." line) nor hide or reorder the text around it.
    """
    return (TERMINAL_UNSAFE if multiline else _UNSAFE_OR_NEWLINE).sub(_escape, text)


def slug(text: str) -> str:
    value = (text or "").strip()
    if not SLUG_RE.match(value):
        raise InvalidInput(
            f"{value[:60]!r} is not a valid client slug",
            "use 1-48 lowercase letters, digits and inner dashes, e.g. acme or acme-north",
        )
    return value


def date(text: str | None, what: str = "date") -> str | None:
    """ISO ``YYYY-MM-DD`` (a real calendar date) or None."""
    if text is None or text == "":
        return None
    value = str(text).strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise InvalidInput(f"{what} {value[:40]!r} is not a date", "write dates as YYYY-MM-DD")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{what} {value!r} is not a real calendar date") from None
    if not 1900 <= parsed.year <= 2999:
        raise InvalidInput(f"{what} {value!r} is out of range")
    return value


def text(value: str | None, what: str, limit: int = MAX_FIELD, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{what} must not be empty")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    if len(value) > limit:
        raise InvalidInput(f"{what} is too long ({len(value)} characters; the limit is {limit})")
    if required and not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    return value


def severity(value: str) -> str:
    v = (value or "").strip().lower()
    if v not in SEVERITIES:
        raise InvalidInput(f"severity {value!r} is not one of {', '.join(SEVERITIES)}")
    return v


def email(value: str | None) -> str | None:
    v = text(value, "email", 320)
    if v is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
        raise InvalidInput(f"{v[:60]!r} is not an email address")
    return v


MAX_DAYS = 3650  # ten years: a notice or on-hand period longer than that is a typo
MAX_MONTHS = 120


def positive_int(value: int | None, what: str, maximum: int) -> int | None:
    if value is None:
        return None
    if not 0 <= int(value) <= maximum:
        raise InvalidInput(f"{what} must be between 0 and {maximum}")
    return int(value)
