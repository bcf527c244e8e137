"""What the store needs from the layers above it, as protocols (the store imports no domain module).

Records and the search index work on a *client scope* (a client's id and keys: ``clients.ClientRef``
is one) and report every envelope they write or drop to a *state guard* (the integrity layer's
``integrity.statecheck.VaultGuard``, which keeps the state commitment of DESIGN §3a and checks it
before a record is used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..keys.hierarchy import ClientKeys


class ClientScope(Protocol):
    """An unlocked client as the store sees it."""

    @property
    def id(self) -> str: ...

    @property
    def keys(self) -> ClientKeys: ...

    @property
    def slug(self) -> str:
        """How messages name the client (the technician's own short name for it)."""


class StateGuard(Protocol):
    """The integrity hooks every record write and read goes through."""

    def note(
        self, s: Session, cid: str, rid: str, kind: str, version: int, envelope: bytes, sign: int
    ) -> None:
        """Count an envelope in (``sign`` +1) or out (-1) of the client's commitment."""

    def check_client(self, s: Session, cid: str) -> None:
        """Every record of the client against its commitment; IntegrityError if one differs."""

    def check_record(self, s: Session, cid: str, rid: str, kind: str) -> None:
        """The commitment group holding one record; IntegrityError naming ``kind`` and ``rid``."""
