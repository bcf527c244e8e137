"""The one exception tree of Handover Vault.

Every failure that leaves ``vault/`` is a :class:`VaultError`. Each subclass carries the exit code
the command line maps it to (DESIGN §9). Messages are written for a technician and never contain a
secret: they may name a record's kind and id, never its content.
"""

from __future__ import annotations


class VaultError(Exception):
    """Root of every error raised by the vault library."""

    exit_code = 1
    #: Set by the store when the failed transaction may simply be run again (Store.run_write).
    retryable = False

    def __init__(self, message: str, *hints: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hints = tuple(h for h in hints if h)
        # Lines listed under the message (one item each, such as a blocking gap): kept apart so
        # that a newline inside a quoted value can never pass for one of them.
        self.details = details

    def __str__(self) -> str:
        return self.message


class NotFound(VaultError):
    """A client, record, file or vault that was named does not exist."""


class AlreadyExists(VaultError):
    """Creating something that is already there (a vault, a client slug)."""


class InvalidInput(VaultError):
    """A value given by the user or read from an outside file is malformed or out of bounds."""


class PolicyRefused(VaultError):
    """The action is refused by policy (disclosure without check, export with blocking gaps)."""


class NoAccess(PolicyRefused):
    """A team member holds no grant for the client (its key is not wrapped to them). Exit 1."""


class AuthenticationFailed(VaultError):
    """Wrong passphrase, wrong recovery code, expired or foreign session. Exit 3."""

    exit_code = 3


class IntegrityError(VaultError):
    """Tampered or corrupt data: a record, a signature, the audit chain. Exit 4."""

    exit_code = 4


class MigrationRequired(VaultError):
    """The vault's schema is newer than this program, or could not be upgraded."""


class Busy(VaultError):
    """Another process held the vault longer than the busy timeout allows."""


class StorageError(VaultError):
    """The file system or database refused a write or read (disk full, I/O error, read-only)."""
