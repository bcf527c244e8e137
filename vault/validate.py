"""Validation of values that come from users and outside files. Each raises InvalidInput."""

from __future__ import annotations

import datetime as dt
import re

from .errors import InvalidInput

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
MAX_TEXT = 1_000_000  # 1 MB of Markdown per document is far more than any real page.
MAX_FIELD = 10_000  # single-line fields: names, labels, usernames, URLs, secrets.
SEVERITIES = ("critical", "high", "medium", "low")


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
