"""Option types: a malformed value is a usage error (exit 2) that names the option and the form.

The checks themselves are the library's (``validate.date``, ``session.parse_duration``): the CLI only
moves them to parse time, so ``--expires 01/03/2027`` fails as click's ``BadParameter`` before the vault
is opened, instead of as an operation failure after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .. import validate
from ..errors import InvalidInput
from ..validate import MAX_DAYS, MAX_MONTHS


class _Checked(click.ParamType):
    """A string option whose value a library function checks (and may normalise)."""

    def __init__(self, name: str, check: Callable[[str], Any], form: str) -> None:
        self.name = name
        self._check = check
        self._form = form

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or not isinstance(value, str):
            return value
        try:
            self._check(value)
        except InvalidInput as exc:
            self.fail(f"{exc.message.removeprefix(self.name + ' ')}; {self._form}", param, ctx)
        return value.strip()


def _date(value: str) -> None:
    validate.date(value, "date")


def _duration(value: str) -> None:
    from ..keys.session import parse_duration

    parse_duration(value)


DATE = _Checked("date", _date, "write dates as YYYY-MM-DD (e.g. 2027-03-01)")
DURATION = _Checked("duration", _duration, "write a duration as e.g. 90s, 15m, 2h or 1d (at most 7 days)")
DAYS = click.IntRange(0, MAX_DAYS)  # the library's bounds, checked at parse time
MONTHS = click.IntRange(0, MAX_MONTHS)
SECRET_LENGTH = click.IntRange(8, 256)  # what generate_secret accepts
