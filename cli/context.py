"""Shared CLI plumbing: the vault to use, unlocking, secret input, output and error reporting.

Secrets arrive only through files, commands, environment variables, standard input or a hidden
prompt, never argv. Secret-bearing environment variables are removed from ``os.environ`` as soon as
the process starts, so no child process (``$EDITOR``, a passphrase command) inherits them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..core import Vault

SECRET_ENV = (
    "HANDOVER_PASSPHRASE",
    "HANDOVER_NEW_PASSPHRASE",
    "HANDOVER_RECOVERY_CODE",
    "HANDOVER_BUNDLE_PASSPHRASE",
    "HANDOVER_IMPORT_PASSPHRASE",
    "HANDOVER_SESSION",
    "HANDOVER_FROM_PASSPHRASE",
)
_secrets: dict[str, str] = {}
MAX_STDIN = 1_048_576
MAX_PASSPHRASE_BYTES = 65_536  # a passphrase is a line: a bigger file or output is the wrong one


def capture_secret_env() -> None:
    """Move secret-bearing variables out of the environment into this process's memory."""
    for name in SECRET_ENV:
        value = os.environ.pop(name, None)
        if value is not None:
            _secrets[name] = value


def secret_env(name: str) -> str | None:
    return _secrets.get(name, os.environ.get(name) if name not in SECRET_ENV else None)


def child_env() -> dict[str, str]:
    """The environment for child processes: never any of our secret variables."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_ENV}


@dataclass
class State:
    vault_path: str | None = None
    as_json: bool = False
    debug: bool = False
    db_url: str | None = None
    _vault: Any = field(default=None, repr=False)

    def path(self) -> Path:
        if self.vault_path:
            return Path(self.vault_path).expanduser()
        import platformdirs

        return Path(platformdirs.user_data_dir("handover-vault")) / "vault.db"

    def target(self) -> Path | str:
        """The vault to use: a team database (``--db`` / HANDOVER_DB_URL) or a vault file."""
        return self.db_url if self.db_url else self.path()

    def location(self) -> str:
        """How messages name the target (a database URL never with its password)."""
        if self.db_url:
            from ..store.postgres import normalise_url, public_location

            return public_location(normalise_url(self.db_url))
        return str(self.path())

    def check(self) -> None:
        """Say "no vault" (or "cannot reach the server") before asking for a passphrase."""
        from ..store.engine import check_target

        check_target(self.target())

    def open(self, check_head: bool = True) -> Vault:
        """Open and unlock the vault (session first, then the passphrase sources).

        ``check_head=False``: do not refuse a file older than the last state seen on this machine
        (only ``handover verify``, which reports it or adopts the file).
        """
        if self._vault is None:
            from ..core import open_vault
            from ..process import forbid_core_dumps

            forbid_core_dumps()  # before the key exists in this process (a no-op in the agent's forks)
            target = self.target()
            token = secret_env("HANDOVER_SESSION")
            if token:
                self._vault = open_vault(target, session_token=token, check_head=check_head)
            else:
                self.check()
                self._vault = open_vault(target, passphrase=read_passphrase(), check_head=check_head)
            click.get_current_context().call_on_close(self._vault.close)
        return self._vault


def refuse_password_in_argv(url: str) -> None:
    """A password in ``--db URL`` is a secret in argv (visible in ps, shell history): refused."""
    from ..errors import InvalidInput
    from ..store.postgres import normalise_url

    if normalise_url(url).password:
        raise InvalidInput(
            "the --db URL holds a password, and the command line is visible to every user of this machine",
            "leave the password out of the URL and put it in ~/.pgpass or PGPASSWORD (or the URL in HANDOVER_DB_URL)",
        )


def state() -> State:
    obj = click.get_current_context().find_root().obj
    assert isinstance(obj, State)
    return obj


def read_passphrase(prompt: str = "Vault passphrase") -> str:
    """First found wins: FILE, COMMAND, HANDOVER_PASSPHRASE, then a hidden TTY prompt."""
    from ..errors import AuthenticationFailed, InvalidInput

    file = os.environ.get("HANDOVER_PASSPHRASE_FILE")
    if file:
        try:
            with Path(file).expanduser().open("rb") as fh:
                data = fh.read(MAX_PASSPHRASE_BYTES + 1)
            if len(data) > MAX_PASSPHRASE_BYTES:
                raise InvalidInput(
                    f"HANDOVER_PASSPHRASE_FILE ({file}) is larger than 64 KiB: it is not a passphrase file"
                )
            return data.decode("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else _oserror_words(exc)
            raise InvalidInput(
                f"cannot read HANDOVER_PASSPHRASE_FILE ({file}): {why}",
                "point HANDOVER_PASSPHRASE_FILE at the file that holds the passphrase (one line), or unset it",
            ) from None
    command = os.environ.get("HANDOVER_PASSPHRASE_COMMAND")
    if command:
        return _run_passphrase_command(command)
    env = secret_env("HANDOVER_PASSPHRASE")
    if env:
        return env
    if _tty():
        return click.prompt(prompt, hide_input=True, err=True)
    raise AuthenticationFailed(
        "no passphrase: no terminal to prompt on and no passphrase source set",
        "set HANDOVER_PASSPHRASE_FILE or HANDOVER_PASSPHRASE_COMMAND, or unlock a session first",
    )


def _oserror_words(exc: OSError) -> str:
    """What went wrong with a file, in words (never the exception's class name)."""
    if isinstance(exc, FileNotFoundError):
        return "there is no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or "it cannot be read").lower()


def _run_passphrase_command(command: str) -> str:
    from ..errors import AuthenticationFailed

    try:
        proc = subprocess.Popen(
            shlex.split(command), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env()
        )
    except (OSError, ValueError) as exc:
        why = _oserror_words(exc) if isinstance(exc, OSError) else "it is not a valid command line"
        raise AuthenticationFailed(
            f"HANDOVER_PASSPHRASE_COMMAND could not run: {why}",
            "set it to a command that prints the passphrase, e.g. pass show handover",
        ) from None
    try:
        # Read at most 64 KiB within the time limit: a command that prints without end (or hangs)
        # must not fill memory or block forever.
        out = _read_bounded(proc, MAX_PASSPHRASE_BYTES, deadline=time.monotonic() + 120)
        if out is None:
            raise AuthenticationFailed(
                "HANDOVER_PASSPHRASE_COMMAND printed more than 64 KiB: not a passphrase"
            )
        returncode = proc.wait(timeout=5)
    except (subprocess.TimeoutExpired, TimeoutError):
        raise AuthenticationFailed(
            "HANDOVER_PASSPHRASE_COMMAND did not finish in time",
            "a passphrase command must print the passphrase and exit without waiting for input",
        ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if returncode != 0:
        raise AuthenticationFailed(f"HANDOVER_PASSPHRASE_COMMAND exited with status {returncode}")
    return out.decode("utf-8", "replace").rstrip("\r\n")


def _read_bounded(proc: subprocess.Popen[bytes], limit: int, deadline: float) -> bytes | None:
    """The child's whole stdout, or None past ``limit`` bytes; TimeoutError past ``deadline``."""
    import selectors

    assert proc.stdout is not None
    out = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return bytes(out)
            out += chunk
            if len(out) > limit:
                return None


def _tty() -> bool:
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def new_secret(env_name: str, prompt: str) -> str:
    """A new passphrase: from ``env_name`` if set, else prompted twice on a TTY."""
    from ..errors import InvalidInput

    value = secret_env(env_name)
    if value:
        return value
    if not _tty():
        raise InvalidInput(f"no terminal to prompt for the {prompt.lower()}", f"set {env_name}")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True)


def chosen_passphrase(prompt: str) -> str:
    """The passphrase of something new (a vault, a member key): HANDOVER_NEW_PASSPHRASE, else a
    passphrase source the caller set up (file, command, variable), else a prompt asked twice."""
    if secret_env("HANDOVER_NEW_PASSPHRASE"):
        return str(secret_env("HANDOVER_NEW_PASSPHRASE"))
    if any(
        os.environ.get(n) for n in ("HANDOVER_PASSPHRASE_FILE", "HANDOVER_PASSPHRASE_COMMAND")
    ) or secret_env("HANDOVER_PASSPHRASE"):
        return read_passphrase()
    return new_secret("HANDOVER_NEW_PASSPHRASE", prompt)


def read_secret_lines(prompt: str, count: int = 1, confirm: bool = False) -> list[str]:
    """Secret values from standard input (not a TTY: one per line) or hidden prompts.

    ``confirm``: a typed secret is asked twice (as ``pass insert`` does), since nobody sees a typo
    in a hidden prompt until the secret fails to work.
    """
    from ..errors import InvalidInput

    if not _stdin_tty():
        data = sys.stdin.buffer.read(MAX_STDIN + 1)
        if len(data) > MAX_STDIN:
            raise InvalidInput("standard input is larger than 1 MiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("standard input is not UTF-8 text") from None
        lines = text.split("\n")
        extra = [line for line in lines[count:] if line.strip()]
        if extra:
            # Taking the first line and dropping the rest would save a cut secret (an SSH key piped
            # in keeps only "-----BEGIN ..."): refuse instead, and say how to store such a value.
            raise InvalidInput(
                f"standard input has {count + len(extra)} lines but {count} {'is' if count == 1 else 'are'} "
                "expected (a secret is one line); nothing was saved",
                "store a multi-line key as a file: handover attach add SLUG FILE",
            )
        return [line.rstrip("\r") for line in lines[:count]] + [""] * max(0, count - len(lines))
    first = click.prompt(
        prompt, hide_input=True, err=True, default="", show_default=False, confirmation_prompt=confirm
    )
    return [first]


def _stdin_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


# --- output -----------------------------------------------------------------------------------


def json_option(f: Any) -> Any:
    """``--json`` on a list/show command (the global ``handover --json`` works as well)."""

    def cb(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
        if value:
            state().as_json = True

    return click.option(
        "--json",
        "as_json_local",
        is_flag=True,
        expose_value=False,
        callback=cb,
        help="Print JSON instead of a table.",
    )(f)


def emit_json(data: Any) -> None:
    """JSON for scripts; the characters a terminal would obey are written as ``\\uXXXX`` escapes,
    which decode to the same value (JSON itself escapes C0 controls, not C1 or bidi overrides)."""
    from ..validate import TERMINAL_UNSAFE

    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False)
    click.echo(TERMINAL_UNSAFE.sub(lambda m: json.dumps(m.group())[1:-1], text))


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    """A plain-text table (rich; NO_COLOR respected). Empty lists say so."""
    if not rows:
        click.echo(f"(no {title or 'entries'})")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        # Text, not str: rich would parse "[...]" in a label as console markup (a label such as
        # "x[/y]" crashed every list with MarkupError; "[link=...]" made a hyperlink).
        t.add_row(*[Text(printable("" if c is None else str(c), multiline=True)) for c in row])
    # Piped output is not wrapped at 80 columns: scripts and pagers get whole lines.
    width = None if sys.stdout.isatty() else 400
    Console(no_color="NO_COLOR" in os.environ, soft_wrap=False, highlight=False, width=width).print(t)


def fields(pairs: list[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        # A second line is indented under the first: a value cannot start a line of its own that
        # reads as another field ("secret  ...").
        lines = printable(str(value), multiline=True).split("\n")
        click.echo(f"{key.ljust(width)}  " + ("\n" + " " * (width + 2)).join(lines))


def printable(text: str, multiline: bool = False) -> str:
    """``text`` with terminal controls, bidi overrides and format characters shown as escapes
    (``vault.validate.printable``: the one function for everything that reaches a terminal)."""
    from ..validate import printable as neutralised

    return neutralised(text, multiline)


def profile_warnings(v: Vault, gaps: list[Any] | None = None) -> None:
    """Say on stderr when documents cannot name who is handing over (no or incomplete profile)."""
    from ..readiness import profile_gaps

    for gap in profile_gaps(v.profile.get()) if gaps is None else gaps:
        click.echo(f"warning: {gap.message}", err=True)


def short(rid: str) -> str:
    return rid[:8]


def confirm(question: str, yes: bool) -> None:
    from ..errors import InvalidInput

    if yes:
        return
    if not _tty():
        raise InvalidInput("refusing without confirmation: no terminal to ask on", "add --yes")
    click.confirm(question, abort=True, err=True)


# --- errors -----------------------------------------------------------------------------------


def report_error(exc: BaseException, debug: bool) -> int:
    """Print ``Error: …`` and ``hint: …`` lines; return the exit code (DESIGN §9)."""
    from ..errors import VaultError

    if debug:
        print_safe_traceback(exc)
    if isinstance(exc, VaultError):
        # Messages may quote outside values (a label, a file name, a manifest's field).
        click.echo(f"Error: {printable(exc.message)}", err=True)
        for line in exc.details:
            click.echo(f"  {printable(line)}", err=True)
        for hint in exc.hints:
            click.echo(f"hint: {printable(hint)}", err=True)
        return exc.exit_code
    # An unexpected error's message may quote data; it is never printed, even with --debug.
    click.echo(f"Error: internal error ({exc.__class__.__name__})", err=True)
    click.echo("hint: run again with --debug for the stack, and report it", err=True)
    return 1


def print_safe_traceback(exc: BaseException) -> None:
    """Frames (file, line, function, source line) of every chained exception, and messages only of
    our own errors: another library's message may quote the data it choked on, a secret included."""
    import traceback

    from ..errors import VaultError

    seen: BaseException | None = exc
    while seen is not None:
        click.echo("Traceback (most recent call last):", err=True)
        for frame in traceback.extract_tb(seen.__traceback__):
            click.echo(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}', err=True)
        message = f": {printable(str(seen))}" if isinstance(seen, VaultError) else " (message withheld)"
        click.echo(f"{seen.__class__.__module__}.{seen.__class__.__name__}{message}", err=True)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
