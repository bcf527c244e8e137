"""The tamper-evident audit log: an append-only table with an HMAC chain.

``mac[n] = HMAC-SHA256(audit_key, mac[n-1] || entry_bytes(n))`` with ``mac[0]`` a vault-specific
genesis value; ``entry_bytes`` covers every column but the MAC (docs/spec.md gives the layout). An
edit, deletion, insertion or reordering breaks the chain at the first affected entry. Truncation of
the newest entries is caught against a signed checkpoint kept outside the vault.

Details are sealed: under the client's key for client events (unreadable once the client is
forgotten, while the chain still verifies) and under a VMK-derived key otherwise. No secret value is
ever put in a detail: a disclosure records which credential and which version, not the secret.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from . import crypto
from .crypto import DecryptFailed
from .errors import IntegrityError, InvalidInput, NotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .core import Vault

from .models import AuditEntry, Client

CHECKPOINT_FORMAT = "handover-audit-checkpoint/1"


def entry_bytes(vault_id: str, e: AuditEntry) -> bytes:
    """Every field of an entry except its MAC, each length-prefixed (unambiguous concatenation)."""
    fields = [
        b"handover-vault/v1/audit",
        vault_id.encode(),
        str(e.seq).encode(),
        e.at.encode(),
        e.action.encode(),
        (e.client_id or "").encode(),
        (e.record_id or "").encode(),
        e.scope.encode(),
        bytes(e.detail),
    ]
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def detail_aad(vault_id: str, seq: int) -> bytes:
    return f"handover-vault/v1/audit-detail\x00{vault_id}\x00{seq}".encode()


@dataclass(frozen=True)
class Head:
    seq: int
    mac: bytes


@dataclass
class Event:
    """An audit entry as shown to the user (detail None when it can no longer be decrypted)."""

    seq: int
    at: str
    action: str
    client_id: str | None
    record_id: str | None
    detail: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "action": self.action,
            "client_id": self.client_id,
            "record_id": self.record_id,
            "detail": self.detail,
        }


class AuditLog:
    def __init__(self, vault: Vault) -> None:
        self.v = vault
        self.key = vault.keys.audit_mac_key
        self.genesis = crypto.mac(self.key, b"handover-vault/v1/audit-genesis\x00" + vault.vault_id.encode())

    # --- writing ----------------------------------------------------------------------------------

    def append(
        self,
        s: Session,
        action: str,
        client: ClientRef | None = None,
        record_id: str | None = None,
        detail: dict[str, Any] | None = None,
        vault_scope: bool = False,
    ) -> int:
        """Append one entry inside the caller's write transaction (BEGIN IMMEDIATE serialises it).

        If this raises, the caller's transaction rolls back: the action it records does not happen.
        """
        from .core import utcnow

        last = s.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
        seq = 1 if last is None else last.seq + 1
        prev = self.genesis if last is None else bytes(last.mac)
        plain = json.dumps(detail or {}, sort_keys=True, separators=(",", ":")).encode()
        scope = "client" if client is not None and not vault_scope else "vault"
        sealer = client.keys.sealer if scope == "client" and client is not None else self.v.keys.audit_detail
        entry = AuditEntry(
            seq=seq,
            at=utcnow(),
            action=action,
            client_id=client.id if client is not None else None,
            record_id=record_id,
            scope=scope,
            detail=sealer.seal(plain, detail_aad(self.v.vault_id, seq)),
            mac=b"",
        )
        entry.mac = crypto.mac(self.key, prev + entry_bytes(self.v.vault_id, entry))
        s.add(entry)
        s.flush()
        return seq

    def append_now(self, action: str, client: ClientRef | None = None, **kw: Any) -> int:
        with self.v.write(f"writing the audit entry for {action}") as s:
            return self.append(s, action, client=client, **kw)

    # --- reading ----------------------------------------------------------------------------------

    def _rows(self, s: Session, client_id: str | None = None) -> Iterator[AuditEntry]:
        q = select(AuditEntry).order_by(AuditEntry.seq)
        if client_id is not None:
            q = q.where(AuditEntry.client_id == client_id)
        yield from s.execute(q.execution_options(yield_per=2000)).scalars()

    def _sealer_for(self, s: Session, e: AuditEntry, cache: dict[str, Any]) -> Any:
        if e.scope == "vault" or not e.client_id:
            return self.v.keys.audit_detail
        if e.client_id not in cache:
            row = s.get(Client, e.client_id)
            cache[e.client_id] = None if row is None else self.v.keys.client(row.id, row.wrapped_key).sealer
        return cache[e.client_id]

    def events(self, client_id: str | None = None) -> list[Event]:
        """Every entry, oldest first, with its detail decrypted where the key still exists."""
        out: list[Event] = []
        cache: dict[str, Any] = {}
        with self.v.read() as s:
            for e in self._rows(s, client_id):
                sealer = self._sealer_for(s, e, cache)
                detail = None
                if sealer is not None:
                    try:
                        detail = json.loads(sealer.open(bytes(e.detail), detail_aad(self.v.vault_id, e.seq)))
                    except (DecryptFailed, ValueError):
                        detail = {"error": "detail does not decrypt (tampered)"}
                out.append(Event(e.seq, e.at, e.action, e.client_id, e.record_id, detail))
        return out

    def verify(self, checkpoint: dict[str, Any] | None = None) -> Head:
        """Walk the chain; raise IntegrityError naming the first broken entry.

        With a checkpoint (from ``checkpoint()``), also refuse a log that no longer contains the
        checkpointed head: truncation or rollback.
        """
        if checkpoint is not None:
            self.check_checkpoint_signature(checkpoint)
        prev, expected_seq, vid = self.genesis, 1, self.v.vault_id
        with self.v.read() as s:
            for e in self._rows(s):
                if e.seq != expected_seq:
                    raise IntegrityError(
                        f"audit log broken at entry {expected_seq}: entry missing or reordered "
                        f"(found {e.seq} next)"
                    )
                if not crypto.mac_equal(crypto.mac(self.key, prev + entry_bytes(vid, e)), bytes(e.mac)):
                    raise IntegrityError(
                        f"audit log broken at entry {e.seq}: its MAC does not match "
                        "(edited, inserted, reordered or an earlier entry deleted)"
                    )
                if checkpoint is not None and e.seq == checkpoint["seq"]:
                    if not crypto.mac_equal(bytes(e.mac), bytes.fromhex(checkpoint["mac"])):
                        raise IntegrityError(f"audit entry {e.seq} differs from the checkpoint: history rewritten")
                prev, expected_seq = bytes(e.mac), expected_seq + 1
        head = Head(expected_seq - 1, prev)
        if checkpoint is not None and head.seq < int(checkpoint["seq"]):
            raise IntegrityError(
                f"the audit log ends at entry {head.seq} but the checkpoint saw entry {checkpoint['seq']}: "
                "entries were removed (truncation or rollback)"
            )
        return head

    # --- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """A signed statement of the current head, to keep outside the vault."""
        from .core import utcnow

        head = self.verify()
        body = {
            "format": CHECKPOINT_FORMAT,
            "vault": self.v.fingerprint,
            "seq": head.seq,
            "mac": head.mac.hex(),
            "at": utcnow(),
        }
        msg = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return {**body, "signature": base64.b64encode(self.v.sign(msg)).decode("ascii")}

    def check_checkpoint_signature(self, cp: dict[str, Any]) -> None:
        try:
            body = {k: cp[k] for k in ("format", "vault", "seq", "mac", "at")}
            sig = base64.b64decode(cp["signature"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("the checkpoint file is malformed") from None
        if body["format"] != CHECKPOINT_FORMAT:
            raise InvalidInput("the checkpoint file has an unknown format")
        if body["vault"] != self.v.fingerprint:
            raise IntegrityError("the checkpoint was made by another vault")
        msg = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        if not crypto.verify_signature(self.v.signing_public, sig, msg):
            raise IntegrityError("the checkpoint's signature is not valid")

    def event(self, seq: int) -> Event:
        for ev in self.events():
            if ev.seq == seq:
                return ev
        raise NotFound(f"no audit entry {seq}")
