"""Handover Vault: an encrypted vault of client documentation and credentials.

The public surface: :func:`init_vault`, :func:`open_vault`, :func:`recover_vault`, the
:class:`Vault` they return, and the :class:`VaultError` tree.

The core (SQLAlchemy, cryptography) is imported on first use, so light modules such as
``vault.paths`` or ``vault.errors`` stay cheap to import for the command line's fast path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AlreadyExists,
    AuthenticationFailed,
    Busy,
    IntegrityError,
    InvalidInput,
    MigrationRequired,
    NotFound,
    PolicyRefused,
    StorageError,
    VaultError,
)

if TYPE_CHECKING:
    from .core import Vault, init_vault, open_vault, recover_vault

__version__ = "0.1.0"
__all__ = [
    "AlreadyExists",
    "AuthenticationFailed",
    "Busy",
    "IntegrityError",
    "InvalidInput",
    "MigrationRequired",
    "NotFound",
    "PolicyRefused",
    "StorageError",
    "Vault",
    "VaultError",
    "init_vault",
    "open_vault",
    "recover_vault",
]
_CORE = ("Vault", "init_vault", "open_vault", "recover_vault")


def __getattr__(name: str) -> Any:
    if name in _CORE:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module 'vault' has no attribute {name!r}")
