"""Requests from a client after (or during) the agreement: who asked, how identity was checked, what
was asked for, what was decided and what was disclosed.

A request is a sealed record of kind ``request``; it never holds a secret. Logging one writes the
record, its ``request.log`` audit entry, one ``request.disclose`` entry and a rotation flag per
disclosed credential in ONE write transaction, and returns the secrets only after that transaction
committed: if the audit entry cannot be written, nothing is disclosed (fail closed).

Policy: granting to someone who is not an authorised contact of the client, or without an identity
check (``verified_by="none"``), is refused unless an override reason is given; the refusal itself is
logged (``request.refused``). ``request.log`` carries the SHA-256 of the request's payload, so a
request record changed later no longer matches the log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import validate
from ..errors import IntegrityError, InvalidInput, NotFound, PolicyRefused

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..clients import ClientRef
    from ..core import Vault
    from ..profile import Profile
    from ..store.records import Rec

KIND = "request"
CHANNELS = ("phone", "email", "in-person", "other")
DECISIONS = ("granted", "denied", "referred")
ITEM_KINDS = ("cred", "doc", "asset")
KIND_ALIASES = {"cred": "cred", "credential": "cred", "doc": "doc", "document": "doc", "asset": "asset"}
KIND_NAMES = {"cred": "credential", "doc": "document", "asset": "asset"}
NAME_FIELD = {"cred": "label", "doc": "title", "asset": "hostname"}
NO_CHECK = "none"
ENDED = ("ended", "archived")
ROTATE_AFTER_END = "disclosed after the agreement ended — rotate"
ROTATE_DURING = "disclosed on request while the agreement was still active — rotate"
_ID_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")
_NAMED_EMAIL = re.compile(r"^(.*?)\s*<([^<>\s]+@[^<>\s]+)>\s*$")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip().casefold()


def digest(data: dict[str, Any]) -> str:
    """SHA-256 of a request's payload as canonical JSON (what ``request.log`` pins)."""
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def agreement_at(client: ClientRef, today: dt.date | None = None) -> dict[str, Any]:
    """The agreement's status now: whether it has ended, and its end and on-hand dates."""
    a = client.agreement
    try:
        from ..agreement import effective_status

        status = effective_status(a, today)
    except ImportError:  # pragma: no cover - the agreement module ships with the vault
        status = str(a.get("status") or "active")
    return {
        "status": status,
        "ended": status in ENDED,
        "effective_end": a.get("effective_end"),
        "on_hand_until": a.get("on_hand_until"),
    }


def item_name(kind: str, rec: Rec) -> str:
    return str(rec.data.get(NAME_FIELD[kind]) or rec.id[:8])


@dataclass
class Logged:
    """What ``log`` did. ``disclosed`` holds the credentials *with* their secrets: show them once."""

    client: ClientRef
    request: Rec
    disclosed: list[Rec] = field(default_factory=list)
    seq: int = 0
    # The audit head once the request's entries are written (its newest entry): what a receipt pins.
    head_seq: int = 0
    head_mac: bytes = b""

    @property
    def during_agreement(self) -> bool:
        return not self.request.data["agreement"]["ended"]


@dataclass
class Linked:
    """A request with the audit entry that logged it (``seq`` 0 when none was found)."""

    client: ClientRef
    request: Rec
    seq: int = 0
    matches: bool = False
    # Set by the report's reconciliation (vault/requests/ledger.py) when the log and records disagree.
    problem: str = ""


@dataclass(frozen=True)
class Report:
    """A request report and the disagreements between audit log and records it shows (if any)."""

    text: str
    page: str
    problems: list[str]


class Requests:
    def __init__(self, vault: Vault) -> None:
        self.v = vault

    # --- lookups ----------------------------------------------------------------------------------

    def match_contact(self, contacts: list[Rec], requester: str, slug: str) -> Rec | None:
        """The contact the requester is: by id or id prefix, exact name or email (case-insensitive).

        ``Name <email>`` is matched by its email, then its name. Raises InvalidInput when several match.
        """
        wanted = _fold(requester)
        if _ID_PREFIX.match(wanted):
            by_id = [c for c in contacts if c.id.startswith(wanted)]
            if len(by_id) == 1:
                return by_id[0]
        m = _NAMED_EMAIL.match(requester)
        candidates = [_fold(m.group(2)), _fold(m.group(1))] if m else [wanted]
        for want in filter(None, candidates):
            hits = [
                c
                for c in contacts
                if _fold(str(c.data.get("name") or "")) == want
                or _fold(str(c.data.get("email") or "")) == want
            ]
            if len(hits) > 1:
                ids = ", ".join(c.id[:8] for c in hits)
                raise InvalidInput(
                    f"{requester!r} matches several contacts of {slug} ({ids})",
                    "name one by its id: --requester ID",
                )
            if hits:
                return hits[0]
        return None

    def resolve_item(self, s: Session, client: ClientRef, ref: str) -> tuple[str, Rec]:
        """A credential, document or asset by id, id prefix or exact name; ``cred:``/``doc:``/``asset:``
        narrows the kind. Raises NotFound, or InvalidInput when the name is ambiguous."""
        prefix, sep, rest = ref.partition(":")
        kinds: tuple[str, ...] = ITEM_KINDS
        if sep and prefix.strip().lower() in KIND_ALIASES and rest.strip():
            kinds, ref = (KIND_ALIASES[prefix.strip().lower()],), rest
        found: list[tuple[str, Rec]] = []
        for kind in kinds:
            try:
                found.append((kind, self.v.records.get(s, client, kind, ref)))
            except NotFound:
                continue
        if not found:
            what = " or ".join(KIND_NAMES[k] for k in kinds)
            raise NotFound(
                f"no {what} {ref.strip()!r} for client {client.slug}",
                f"find it: handover search WORD --client {client.slug}",
            )
        if len(found) > 1:
            names = " and ".join(("an " if k == "asset" else "a ") + KIND_NAMES[k] for k, _ in found)
            raise InvalidInput(
                f"{ref.strip()!r} names {names}", "say which: --item cred:REF, doc:REF or asset:REF"
            )
        return found[0]

    def find_items(self, slug: str, query: str) -> list[tuple[str, Rec]]:
        """Credentials, documents and assets whose name contains every word of ``query`` (no secrets)."""
        words = _fold(query).split()
        out: list[tuple[str, Rec]] = []
        with self.v.read() as s:
            client = self.v.clients.get(slug, s)
            for kind in ITEM_KINDS:
                for rec in self.v.records.list(s, client, kind):
                    name = _fold(item_name(kind, rec))
                    if all(w in name for w in words):
                        out.append((kind, rec))
        return out

    def policy_problems(self, slug: str, contact: Rec | None, requester: str, verified_by: str) -> list[str]:
        """Why granting would break the disclosure policy (empty: it would not)."""
        problems = []
        if contact is None:
            problems.append(f"{requester!r} is not a contact of {slug}")
        elif not contact.data.get("authorized"):
            problems.append(
                f"{contact.data.get('name')} is a contact of {slug} but not authorised to receive credentials"
            )
        if _fold(verified_by) == NO_CHECK:
            problems.append("identity was not checked (--verified-by none)")
        return problems

    def check(self, slug: str, requester: str, verified_by: str) -> tuple[Rec | None, list[str]]:
        """The matched contact and the policy problems a grant would have (for interactive use)."""
        with self.v.read() as s:
            client = self.v.clients.get(slug, s)
            contact = self.match_contact(self.v.records.list(s, client, "contact"), requester, slug)
        return contact, self.policy_problems(slug, contact, requester, verified_by)

    # --- logging ----------------------------------------------------------------------------------

    def log(
        self,
        slug: str,
        *,
        requester: str,
        channel: str,
        verified_by: str,
        decision: str,
        items: list[str] | tuple[str, ...] = (),
        override: str | None = None,
        note: str | None = None,
        today: dt.date | None = None,
    ) -> Logged:
        """Record a request and its decision; return the disclosed credentials after the commit.

        Raises InvalidInput (bad values), NotFound (client or item), PolicyRefused (a grant to an
        unauthorised or unverified requester without ``override``: nothing is disclosed, the refusal
        is logged), StorageError/Busy/IntegrityError (the log could not be written: nothing disclosed).
        """
        from ..clock import utcnow

        fields = _clean(requester, channel, verified_by, decision, override, note)
        if fields["decision"] == "granted" and not items:
            raise InvalidInput("a granted request names what was disclosed", "add --item REF for each item")
        with self.v.write("logging a request") as s:
            client = self.v.clients.get(slug, s)
            contact = self.match_contact(self.v.records.list(s, client, "contact"), fields["requester"], slug)
            wanted = _fold(fields["requester"])
            if contact is not None and _ID_PREFIX.match(wanted) and contact.id.startswith(wanted):
                fields["requester"] = str(contact.data.get("name"))  # picked by id: keep the person's name
            chosen: dict[str, tuple[str, Rec]] = {}
            for ref in items:
                kind, rec = self.resolve_item(s, client, ref)
                chosen.setdefault(rec.id, (kind, rec))
            problems = []
            if fields["decision"] == "granted":
                problems = self.policy_problems(
                    client.slug, contact, fields["requester"], fields["verified_by"]
                )
            if not problems or fields["override"]:
                return self._write(s, client, contact, fields, chosen, problems, utcnow(), today)
            # Refused: the refusal is logged (and committed), nothing else is written or disclosed.
            self.v.audit.append(
                s,
                "request.refused",
                client=client,
                detail={
                    "requester": fields["requester"],
                    "contact": contact.id if contact else None,
                    "verified_by": fields["verified_by"],
                    "reasons": problems,
                    "items": [{"kind": k, "id": r.id, "version": r.version} for k, r in chosen.values()],
                },
            )
        raise PolicyRefused(
            f"refused to disclose to {fields['requester']!r}: "
            + "; ".join(problems)
            + " (nothing was disclosed)",
            "record the decision instead: --decision denied (or referred)",
            "if you must disclose anyway: --override REASON (kept in the request and the audit log)",
        )

    def _write(
        self,
        s: Session,
        client: ClientRef,
        contact: Rec | None,
        fields: dict[str, Any],
        chosen: dict[str, tuple[str, Rec]],
        problems: list[str],
        now: str,
        today: dt.date | None,
    ) -> Logged:
        agreement = agreement_at(client, today)
        granted = fields["decision"] == "granted"
        listed = [
            {"kind": k, "id": r.id, "version": r.version, "label": item_name(k, r)}
            for k, r in chosen.values()
        ]
        data = {
            **fields,
            "contact": None
            if contact is None
            else {
                "id": contact.id,
                "name": contact.data.get("name"),
                "role": contact.data.get("role"),
                "email": contact.data.get("email"),
                "authorized": bool(contact.data.get("authorized")),
            },
            "identity_checked": fields["verified_by"] != NO_CHECK,
            "items": listed,
            "policy": problems if fields["override"] else [],
            "agreement": agreement,
            "disclosed": listed if granted else [],
            "logged_at": now,
        }
        req = self.v.records.add(s, client, KIND, data)
        seq = self.v.audit.append(
            s,
            "request.log",
            client=client,
            record_id=req.id,
            detail={
                "requester": data["requester"],
                "contact": contact.id if contact else None,
                "authorized": bool(data["contact"] and data["contact"]["authorized"]),
                "channel": data["channel"],
                "verified_by": data["verified_by"],
                "decision": data["decision"],
                "override": data["override"],
                "agreement": agreement["status"],
                "items": [{k: i[k] for k in ("kind", "id", "version")} for i in listed],
                "sha256": digest(data),
            },
        )
        disclosed = []
        last = seq
        reason = ROTATE_AFTER_END if agreement["ended"] else ROTATE_DURING
        for kind, rec in chosen.values() if granted else ():
            extra: dict[str, Any] = {}
            if kind == "cred":
                flagged = self.v.creds.flag_for_rotation(s, client, rec, reason)
                extra = {"flagged_version": flagged.version}
                disclosed.append(rec)
            last = self.v.audit.append(
                s,
                "request.disclose",
                client=client,
                record_id=rec.id,
                detail={"request": req.id, "kind": kind, "version": rec.version, **extra},
            )
        from ..store.models import AuditEntry

        newest = s.get(AuditEntry, last)
        mac = bytes(newest.mac) if newest is not None else b""
        return Logged(client, req, disclosed, seq, last, mac)

    # --- reading ----------------------------------------------------------------------------------

    def _audit_links(self, client: ClientRef) -> dict[str, tuple[int, str]]:
        links: dict[str, tuple[int, str]] = {}
        for e in self.v.audit.events(client.id):
            if e.action == "request.log" and e.record_id and e.detail:
                links[e.record_id] = (e.seq, str(e.detail.get("sha256")))
        return links

    def _link(self, client: ClientRef, recs: list[Rec]) -> list[Linked]:
        links = self._audit_links(client)
        out = []
        for r in recs:
            seq, pinned = links.get(r.id, (0, ""))
            out.append(Linked(client, r, seq, pinned == digest(r.data)))
        return out

    def list(self, slug: str | None = None) -> list[Linked]:
        """Requests of one client (or every client), oldest first, each with its audit entry."""
        clients = [self.v.clients.get(slug)] if slug else self.v.clients.list()
        out: list[Linked] = []
        for client in clients:
            with self.v.read() as s:
                recs = self.v.records.list(s, client, KIND)
            out.extend(self._link(client, sorted(recs, key=lambda r: str(r.data.get("logged_at")))))
        return sorted(out, key=lambda x: str(x.request.data.get("logged_at"))) if not slug else out

    def get(self, ref: str) -> Linked:
        """A request of any client by its id or a unique id prefix. Raises NotFound or InvalidInput."""
        ref = ref.strip().lower()
        if not _ID_PREFIX.match(ref):
            raise InvalidInput(f"{ref[:40]!r} is not a request id", "list them: handover request list")
        hits: list[tuple[ClientRef, Rec]] = []
        for client in self.v.clients.list():
            with self.v.read() as s:
                try:
                    hits.append((client, self.v.records.get(s, client, KIND, ref)))
                except NotFound:
                    continue
        if not hits:
            raise NotFound(f"no request {ref!r}", "list them: handover request list")
        if len(hits) > 1:
            raise InvalidInput(f"{ref!r} matches several requests", "give more of the id")
        client, rec = hits[0]
        return self._link(client, [rec])[0]

    def report(self, slug: str) -> tuple[str, str]:
        """(Markdown, HTML) record of every request of the client; no secret is in it. Audited.

        Raises IntegrityError when the audit log and the request records disagree (the report is
        still built and audited: :meth:`build_report` returns it with the disagreements).
        """
        built = self.build_report(slug)
        if built.problems:
            raise disagreement(built.problems)
        return built.text, built.page

    def build_report(self, slug: str) -> Report:
        """The report from the audit entries and the records together, and where they disagree."""
        from ..clock import utcnow
        from ..integrity.statecheck import check_client
        from .ledger import problems, reconcile

        client = self.v.clients.get(slug)
        linked = reconcile(self.v, client)
        found = problems(linked)
        if not found:
            # The requests agree with the log: the rest of the client's records must pass the state
            # commitment (DESIGN §3a) before anything is reported. Where they disagree, the report
            # itself says so (and the command exits 4).
            with self.v.read() as s:
                check_client(self.v, s, client.id)
        head = self.v.audit.head()
        text, page = render_report(
            client, linked, agreement_at(client), self.v.fingerprint, head, utcnow(), self.v.profile.get()
        )
        self.v.audit.append_now(
            "request.report",
            client=client,
            detail={
                "requests": [x.request.id for x in linked],
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
                **({"disagreements": len(found)} if found else {}),
            },
        )
        return Report(text, page, found)


def disagreement(found: list[str]) -> IntegrityError:
    n = len(found)
    return IntegrityError(
        f"the audit log and the request records disagree ({n} {'request' if n == 1 else 'requests'}): "
        + "; ".join(found[:3])
        + ("; …" if n > 3 else ""),
        "check the log: handover audit verify (and against a receipt: --checkpoint FILE)",
    )


# --- the report -------------------------------------------------------------------------------------

# Characters that can start Markdown markup inside a line (emphasis, code, links, autolinks, raw
# HTML, table cells, entities, strikethrough, headings). Escaped so user text stays text.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|!&~#])")


def md(value: Any) -> str:
    """User text as one line of literal Markdown (whitespace collapsed, markup escaped)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value if value is not None else "").split()))


def to_html(title: str, markdown: str) -> str:
    """The report as a self-contained page through the shared safe renderer (raw HTML off)."""
    from ..render import html_page, render_markdown

    # html_page prints the title as the page's heading: drop the Markdown's own first heading.
    body = markdown.split("\n", 1)[1] if markdown.startswith("# ") else markdown
    return html_page(title, render_markdown(body))


def requester_name(data: dict[str, Any]) -> str:
    """The matched contact's name, else the requester as recorded."""
    c = data.get("contact")
    return str(c.get("name") or data["requester"]) if c else str(data["requester"])


def _who(data: dict[str, Any]) -> str:
    c = data.get("contact")
    if not c:
        return f"{md(data['requester'])} (not a contact)"
    role = f", {md(c['role'])}" if c.get("role") else ""
    status = "authorised contact" if c.get("authorized") else "contact, not authorised"
    return f"{md(requester_name(data))} ({status}{role})"


def _items(items: list[dict[str, Any]]) -> str:
    return (
        "; ".join(f"{md(i['label'])} ({KIND_NAMES.get(i['kind'], i['kind'])} v{i['version']})" for i in items)
        or "—"
    )


def _check(data: dict[str, Any]) -> str:
    return "not checked" if data["verified_by"] == NO_CHECK else md(data["verified_by"])


def _section(x: Linked) -> list[str]:
    d = x.request.data
    a = d.get("agreement") or {}
    during = "" if a.get("ended") else " — the agreement was still in force"
    lines = [
        f"### {md(d['logged_at'][:10])}: {_who(d)}",
        "",
        f"- **Request:** `{x.request.id}`, logged {md(d['logged_at'])}",
        f"- **Requester:** {_who(d)}",
        f"- **Channel:** {md(d['channel'])}",
        f"- **Identity check:** {_check(d)}",
        f"- **Asked for:** {_items(d.get('items') or [])}",
        f"- **Decision:** {md(d['decision'])}",
    ]
    if d.get("override"):
        lines.append(
            f"- **Policy override:** {md(d['override'])} (policy: {md('; '.join(d.get('policy') or []))})"
        )
    if d.get("disclosed"):
        creds = [i for i in d["disclosed"] if i["kind"] == "cred"]
        lines.append(f"- **Disclosed:** {_items(d['disclosed'])}")
        if creds:
            lines.append(f"- **Rotation:** {md(', '.join(i['label'] for i in creds))} flagged to be changed")
    lines.append(f"- **Agreement at the time:** {md(a.get('status', 'unknown'))}{during}")
    lines.append(f"- **Audit entry:** {x.seq}" if x.seq else "- **Audit entry:** not found")
    if x.problem:
        lines.append(f"- **WARNING — the audit log and the records disagree:** {md(x.problem)}")
    if d.get("note"):
        lines += ["", *[f"> {md(line)}" if line.strip() else ">" for line in str(d["note"]).splitlines()]]
    return [*lines, ""]


def render_report(
    client: ClientRef,
    linked: list[Linked],
    agreement: dict[str, Any],
    fingerprint: str,
    head: Any,
    now: str,
    technician: Profile | None = None,
) -> tuple[str, str]:
    """The report as Markdown and HTML. Only request records go in: they never hold a secret."""
    from ..profile import Profile, contact_md, sender_md

    counts = {d: sum(1 for x in linked if x.request.data["decision"] == d) for d in DECISIONS}
    summary = ", ".join(f"{n} {d}" for d, n in counts.items() if n) or "none"
    logged = sum(1 for x in linked if x.seq)
    records = sum(1 for x in linked if x.request.version)  # a stand-in rebuilt from the log has 0
    bad = [x for x in linked if x.problem]
    sources = f"{logged} in the audit log, {records} request records"
    if bad:
        sources += f" — DISAGREE for {len(bad)}, see the warning below"
    end = f", effective end {md(agreement['effective_end'])}" if agreement.get("effective_end") else ""
    title = f"Requests received from {client.name}"
    out = [
        f"# {md(title)}",
        "",
        "| | |",
        "| --- | --- |",
        f"| Client | {md(client.name)} ({md(client.slug)}) |",
        f"| Agreement | {md(agreement['status'])}{end} |",
        f"| Requests | {len(linked)} ({summary}) |",
        f"| Sources | {sources} |",
        f"| Prepared | {md(now)} |",
        f"| Prepared by | {sender_md(technician or Profile())} |",
        f"| Contact | {contact_md(technician or Profile())} |",
        f"| Vault | {md(fingerprint)} |",
        f"| Audit log | {head.seq} entries, newest MAC {head.mac.hex()[:16]} |",
        "",
        *_warning(bad),
        "Every request for this client's credentials or documentation is listed with who asked, how their",
        "identity was checked and what was decided. No password, key or other secret is in this record:",
        "a disclosure names the credential and its version only, and every credential disclosed is flagged",
        "to be changed.",
        "",
        "## Summary",
        "",
        "| Date | Requester | Channel | Identity check | Asked for | Decision |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for x in linked:
        d = x.request.data
        out.append(
            f"| {md(d['logged_at'][:10])} | {_who(d)} | {md(d['channel'])} | {_check(d)} | "
            f"{_items(d.get('items') or [])} | {md(d['decision'])} |"
        )
    if not linked:
        out.append("| — | no requests | | | | |")
    out += ["", "## Requests", ""]
    for x in linked:
        out += _section(x)
    out += [
        "## How to check this record",
        "",
        "Each request is an entry in the vault's HMAC-chained audit log (entry numbers above). The",
        "technician can show that the log verifies (`handover audit verify`) and that it still matches",
        "a signed checkpoint kept outside the vault (`handover audit verify --checkpoint FILE`).",
        "",
    ]
    text = "\n".join(out)
    return text, to_html(title, text)


def _warning(bad: list[Linked]) -> list[str]:
    """The disagreements between log and records, before anything else in the report."""
    if not bad:
        return []
    lines = [
        "## WARNING: the audit log and the request records disagree",
        "",
        "This report is built from both. Where they differ, someone changed the vault's file outside",
        "handover: the rows below cannot be taken at face value.",
        "",
    ]
    for x in bad:
        entry = f"audit entry {x.seq}" if x.seq else "no audit entry"
        lines.append(f"- request `{x.request.id}` ({entry}): {md(x.problem)}")
    return [*lines, ""]


def _clean(
    requester: str, channel: str, verified_by: str, decision: str, override: str | None, note: str | None
) -> dict[str, Any]:
    channel = (channel or "").strip().lower()
    if channel not in CHANNELS:
        raise InvalidInput(f"channel {channel!r} is not one of {', '.join(CHANNELS)}")
    decision = (decision or "").strip().lower()
    if decision not in DECISIONS:
        raise InvalidInput(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    verified = (validate.text(verified_by, "how identity was checked (--verified-by)", 1000) or "").strip()
    if not verified:
        raise InvalidInput("say how the requester's identity was checked", "--verified-by TEXT, or none")
    override = (validate.text(override, "override reason", 1000) or "").strip() or None
    if override and decision != "granted":
        raise InvalidInput("--override applies to a granted request only")
    return {
        "requester": (validate.text(requester, "requester", 300, required=True) or "").strip(),
        "channel": channel,
        "verified_by": NO_CHECK if _fold(verified) == NO_CHECK else verified,
        "decision": decision,
        "override": override,
        "note": validate.text(note, "note", 20_000),
    }
