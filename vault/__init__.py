"""Handover Vault: an encrypted vault of client documentation and credentials.

The public surface: :func:`init_vault`, :func:`open_vault`, :func:`recover_vault`, the
:class:`Vault` they return, and the :class:`VaultError` tree.
"""

from __future__ import annotations

from .core import Vault, init_vault, open_vault, recover_vault
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
