"""``handover verify``: the whole vault checked at once (DESIGN §3a), and adopting a restored file.

Every check a read makes on the way, made for everything: each envelope (client profiles, records,
their history, attachment chunks) decrypts, the state commitment matches the records, clients, key
slots and signing key, the audit chain and its head verify, the out-of-file head is not ahead of the
file, and the signing public key is the one of the vault's own private key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..errors import IntegrityError, NoAccess
from ..store.models import Client, Record, RecordVersion
from . import statehead
from .statecheck import check_client, check_top

if TYPE_CHECKING:
    from ..core import Vault

ROLLBACK_ACTION = "vault.rollback-accepted"


@dataclass(frozen=True)
class Verified:
    clients: int
    records: int
    versions: int
    entries: int
    fingerprint: str
    #: Team vault: clients not granted to this member, checked against the commitment only.
    not_granted: int = 0

    def summary(self) -> str:
        return (
            f"vault intact: {self.clients} clients, {self.records} records, {self.versions} earlier "
            f"versions, {self.entries} audit entries; the state commitment matches entry {self.entries}; "
            f"signing key {self.fingerprint}"
            + (
                f"; {self.not_granted} clients not granted to you were checked by their commitments only"
                if self.not_granted
                else ""
            )
        )


def verify_vault(v: Vault, *, head_check: bool = True) -> Verified:
    """Check everything; raise IntegrityError naming the first problem.

    ``head_check=False`` leaves out the out-of-file head (``--accept-rollback`` checks the file
    itself before adopting it).
    """
    if head_check:
        statehead.check_open(v)
    head = v.audit.verify()
    fingerprint = v.fingerprint  # the key pair: a swapped public key is refused here
    records = versions = not_granted = 0
    with v.read() as s:
        _, commitment = v.audit.newest(s)
        if commitment is None:
            raise IntegrityError(f"the newest audit entry ({head.seq}) carries no state commitment: tampered")
        check_top(v, s)
        known = set()
        for row in s.execute(select(Client)).scalars().all():
            known.add(row.id)
            try:
                client = v.clients.load(row)
            except NoAccess:
                not_granted += 1  # a team member checks the clients granted to them
                check_client(v, s, row.id)
                continue
            for rec_row in s.execute(select(Record).where(Record.client_id == row.id)).scalars():
                rec = v.records.load(client, rec_row)
                records += 1
                for old in s.execute(
                    select(RecordVersion).where(RecordVersion.record_id == rec.id)
                ).scalars():
                    v.records.unseal(client, rec.kind, rec.id, old.version, old.envelope)
                    versions += 1
                if rec.kind == "attachment":
                    for _block in v.attachments.chunks(s, client, rec):
                        pass
            check_client(v, s, row.id)
        stray = s.execute(
            select(Record.kind, Record.id).where(Record.client_id.not_in(known)).limit(1)
        ).first()
        if stray is not None:
            raise IntegrityError(f"{stray[0]} {stray[1]} belongs to no client of this vault: copied in")
        clients = int(s.execute(select(func.count()).select_from(Client)).scalar_one())
    return Verified(clients, records, versions, head.seq, fingerprint, not_granted)


@dataclass(frozen=True)
class Rollback:
    """What the last state seen on this machine had that the vault file lacks."""

    recorded_seq: int
    file_seq: int
    lost: list[dict[str, Any]]

    def describe(self) -> list[str]:
        lines = [
            f"The last state seen on this machine had audit entry {self.recorded_seq}; the file ends at "
            f"entry {self.file_seq}."
        ]
        if self.file_seq < self.recorded_seq:
            lines.append(f"Missing from the file: entries {self.file_seq + 1} to {self.recorded_seq}.")
        else:
            lines.append(
                f"The file's history differs from the recorded one from entry {self.recorded_seq} on."
            )
        for e in self.lost:
            lines.append(f"  {e.get('seq')}  {e.get('at')}  {e.get('action')}")
        if not self.lost:
            lines.append("  (what those entries were is not known here)")
        return lines


def rollback(v: Vault) -> Rollback | None:
    """The difference between the recorded head and the file, or None when the file is not behind."""
    found = statehead.compare(v, statehead.read(v))
    if found is None:
        return None
    rec, file_seq = found
    cut = file_seq if file_seq < rec["seq"] else rec["seq"] - 1
    lost = [
        e
        for e in rec.get("recent", [])
        if isinstance(e, dict) and isinstance(e.get("seq"), int) and e["seq"] > cut
    ]
    return Rollback(rec["seq"], file_seq, lost)


def accept_rollback(v: Vault, found: Rollback) -> int:
    """Adopt the file as it is: verify it, write ``vault.rollback-accepted``, record its head anew.

    Raises IntegrityError when the file itself does not verify (nothing is adopted then).
    """
    verify_vault(v, head_check=False)
    with v.write("accepting a restored vault") as s:
        s.info["state_head_force"] = True
        return v.audit.append(
            s,
            ROLLBACK_ACTION,
            detail={
                "recorded_seq": found.recorded_seq,
                "file_seq": found.file_seq,
                "lost": [str(e.get("action")) for e in found.lost],
            },
        )
