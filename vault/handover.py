"""The successor's copy: every file of the handover bundle, built from one client's records.

Reports are written in Markdown first (HANDOVER.md) and rendered to HTML by ``render.py``, whose
markdown-it has raw HTML disabled and refuses unsafe links: a document containing ``<script>`` shows
as text. CSV cells that a spreadsheet would run as a formula are prefixed with an apostrophe.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .validate import SEVERITIES

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .core import Vault
    from .profile import Profile
    from .records import Rec
    from .tarsafe import BundleFile

EXPIRY_HORIZON_DAYS = 180
CRED_COLUMNS = ("label", "username", "secret", "url", "category", "expires", "last_rotated", "totp", "notes")
ASSET_COLUMNS = ("hostname", "kind", "ip", "location", "model", "serial", "expires", "expiry_kind", "notes")


@dataclass
class Handover:
    """Everything about one client that goes to the successor (secrets included)."""

    client: ClientRef
    fingerprint: str
    exported_at: str
    contacts: list[Rec] = field(default_factory=list)
    docs: list[Rec] = field(default_factory=list)
    assets: list[Rec] = field(default_factory=list)
    creds: list[Rec] = field(default_factory=list)
    issues: list[Rec] = field(default_factory=list)
    attachments: list[Rec] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    ack_records: list[Rec] = field(default_factory=list)
    technician: Profile | None = None  # who hands over (the vault's technician profile)

    @property
    def open_issues(self) -> list[Rec]:
        live = [i for i in self.issues if i.data.get("status") == "open"]
        return sorted(live, key=lambda i: SEVERITIES.index(i.data.get("severity") or "low"))

    def acknowledged(self, issue_id: str) -> dict[str, Any] | None:
        for row in self.acks:
            if row.get("id") == issue_id and row.get("acknowledged"):
                return row
        return None


def collect(v: Vault, s: Session, client: ClientRef, exported_at: str) -> Handover:
    """Read (and decrypt) everything the bundle needs inside one read transaction."""
    h = Handover(client, v.fingerprint, exported_at, technician=v.profile.get(s))
    for kind, attr in (
        ("contact", "contacts"),
        ("doc", "docs"),
        ("asset", "assets"),
        ("cred", "creds"),
        ("issue", "issues"),
        ("attachment", "attachments"),
        ("ack", "ack_records"),
    ):
        setattr(h, attr, v.records.list(s, client, kind))
    try:
        from .agreement import ack_state

        h.acks = list(ack_state(v, client))
    except ImportError:
        h.acks = []
    return h


# --- small formatting helpers ----------------------------------------------------------------------


def md_cell(value: Any) -> str:
    """A value safe inside a Markdown table cell (pipes escaped, one line)."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_table(columns: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "_None recorded._\n"
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def md_code(value: Any) -> str:
    """Inline code that survives backticks inside the value (CommonMark's fence-length rule)."""
    text = md_cell(value)
    if not text:
        return ""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def safe_filename(title: str, fallback: str = "untitled") -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")[:60]
    return name or fallback


def csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells starting with these as formulas (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_bytes(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([csv_cell(row.get(c)) for c in columns])
    return buf.getvalue().encode("utf-8")


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def upcoming_expiries(h: Handover, today: dt.date) -> list[list[str]]:
    """Assets and credentials expiring within the horizon (or already expired), soonest first."""
    rows = []
    for a in h.assets:
        if a.data.get("expires"):
            rows.append([a.data["expires"], a.data.get("expiry_kind") or "expiry", a.data["hostname"]])
    for c in h.creds:
        if c.data.get("expires"):
            rows.append([c.data["expires"], "credential", c.data["label"]])
    horizon = (today + dt.timedelta(days=EXPIRY_HORIZON_DAYS)).isoformat()
    return sorted(r for r in rows if r[0] <= horizon)


# --- the report ------------------------------------------------------------------------------------


def _agreement_md(h: Handover) -> str:
    from .agreement import effective_status, notice_terms_text

    a = h.client.agreement
    lines = [
        f"- **Status:** {md_cell(effective_status(h.client))}",
        f"- **Contract start:** {md_cell(a.get('contract_start') or 'not recorded')}",
        f"- **Notice period:** {md_cell(notice_terms_text(a))}",
    ]
    for key, label in (
        ("notice_given", "Notice given"),
        ("effective_end", "Effective end"),
        ("on_hand_until", "Outgoing technician on hand until"),
    ):
        if a.get(key):
            lines.append(f"- **{label}:** {md_cell(a[key])}")
    return "\n".join(lines) + "\n"


def _contacts_md(h: Handover) -> str:
    rows = [
        [
            c.data["name"],
            c.data.get("role"),
            c.data.get("email"),
            c.data.get("phone"),
            "yes" if c.data.get("authorized") else "no",
        ]
        for c in h.contacts
    ]
    return md_table(["Name", "Role", "Email", "Phone", "Authorised for credentials"], rows)


def _creds_md(h: Handover) -> str:
    rows = [
        [
            c.data["label"],
            c.data.get("category"),
            c.data.get("username"),
            md_code(c.data.get("secret")),
            c.data.get("url"),
            "yes" if c.data.get("totp") else "",
            c.data.get("expires"),
        ]
        for c in h.creds
    ]
    return md_table(["Label", "Category", "Username", "Secret", "URL", "TOTP", "Expires"], rows)


def _rotate_md(h: Handover) -> str:
    if not h.creds:
        return "_No credentials._\n"
    lines = ["Every credential below was known to the outgoing technician. Rotate each one and tick it:", ""]
    lines += [
        f"- [ ] {md_cell(c.data['label'])} ({md_cell(c.data.get('category') or 'uncategorised')})"
        for c in h.creds
    ]
    return "\n".join(lines) + "\n"


def _issues_md(h: Handover) -> str:
    if not h.open_issues:
        return "_No open issues._\n"
    out = []
    for i in h.open_issues:
        d = i.data
        ack = h.acknowledged(i.id)
        state = (
            f"acknowledged by {md_cell(ack.get('by'))} on {md_cell(ack.get('date'))}"
            if ack
            else "**not acknowledged**"
        )
        out += [
            f"### [{d['severity'].upper()}] {md_cell(d['title'])}",
            "",
            f"- **Risk if ignored:** {md_cell(d.get('risk') or 'not recorded')}",
            f"- **Workaround:** {md_cell(d.get('workaround') or 'none recorded')}",
            f"- **Client acknowledgement:** {state}",
            "",
        ]
        if d.get("description"):
            out += [d["description"], ""]
    return "\n".join(out) + "\n"


def _confirm_md(h: Handover) -> str:
    """Whom the successor calls to check the fingerprint (from the technician profile)."""
    from .profile import Profile, call_to_confirm

    call = call_to_confirm(h.technician or Profile(), markdown=True)
    # Anyone who could alter the bundle could alter this number too: the reader is told to use one
    # they already have (the letter, the contract) and to treat this one as a reminder only.
    return (
        f"Before trusting this bundle, call the outgoing technician, {call}, to confirm that fingerprint "
        "(on a number you already have from the letter or the contract, not only the one printed here)."
    )


def _technician_md(h: Handover) -> str:
    from .profile import Profile, technician_md

    return "Outgoing technician (handing over):\n\n" + technician_md(h.technician or Profile())


def report_sections(h: Handover, today: dt.date) -> list[tuple[str, str]]:
    """(heading, Markdown) pairs shared by HANDOVER.md and index.html."""
    c = h.client
    successor = c.data.get("successor") or {}
    docs = [
        [
            f"docs/{n:02d}-{safe_filename(d.data['title'])}.md",
            d.data["title"],
            ", ".join(d.data.get("tags", [])),
            d.updated_at[:10],
        ]
        for n, d in enumerate(h.docs, 1)
    ]
    return [
        (
            "Summary",
            (
                f"Handover of **{md_cell(c.name)}** ({md_cell(c.slug)}), exported {h.exported_at} from vault "
                f"`{h.fingerprint}`. {_confirm_md(h)}\n\nSuccessor: "
                f"{md_cell(successor.get('name') or 'not named')}"
                f"{' (' + md_cell(successor['org']) + ')' if successor.get('org') else ''}.\n\n"
                f"{_technician_md(h)}"
            ),
        ),
        ("Agreement", _agreement_md(h)),
        ("Contacts", _contacts_md(h)),
        ("Documents", md_table(["File", "Title", "Tags", "Updated"], docs)),
        (
            "Network inventory",
            md_table(
                ["Host", "Kind", "IP/subnet", "Location", "Model", "Serial", "Expires"],
                [
                    [
                        a.data["hostname"],
                        a.data.get("kind"),
                        a.data.get("ip"),
                        a.data.get("location"),
                        a.data.get("model"),
                        a.data.get("serial"),
                        a.data.get("expires"),
                    ]
                    for a in h.assets
                ],
            ),
        ),
        ("Credentials", _creds_md(h)),
        ("Rotate on receipt", _rotate_md(h)),
        ("Known issues", _issues_md(h)),
        ("Upcoming expiries", md_table(["Date", "What", "Item"], upcoming_expiries(h, today))),
        (
            "Attachments",
            md_table(
                ["File", "Size", "SHA-256"],
                [[f"attachments/{n}", a.data["size"], a.data["sha256"]] for n, a in attachment_names(h)],
            ),
        ),
    ]


def handover_md(h: Handover, today: dt.date) -> str:
    parts = [f"# Handover: {md_cell(h.client.name)}", ""]
    for heading, body in report_sections(h, today):
        parts += [f"## {heading}", "", body]
    return "\n".join(parts)


def index_html(h: Handover, today: dt.date) -> str:
    from .render import escape, html_page, render_markdown

    body = []
    for heading, md in report_sections(h, today):
        body.append(f"<section><h2>{escape(heading)}</h2>{render_markdown(md)}</section>")
    for n, d in enumerate(h.docs, 1):
        body.append(
            f'<section class="doc"><h2>Document {n}: {escape(d.data["title"])}</h2>'
            f"{render_markdown(d.data['body'])}</section>"
        )
    return html_page(f"Handover: {h.client.name}", "\n".join(body))


def acknowledgement_html(h: Handover) -> str:
    from .render import escape, html_page

    rows = []
    for i in h.open_issues:
        d, ack = i.data, h.acknowledged(i.id)
        done = f"Acknowledged by {escape(str(ack.get('by')))}, {escape(str(ack.get('date')))}" if ack else ""
        rows.append(
            f"<tr><td>{escape(d['severity'])}</td><td>{escape(d['title'])}</td>"
            f"<td>{escape(d.get('risk') or '')}</td><td>{escape(d.get('workaround') or '')}</td>"
            f"<td>{done}</td></tr>"
        )
    table = (
        (
            "<table><thead><tr><th>Severity</th><th>Issue</th><th>Risk if ignored</th><th>Workaround</th>"
            "<th>Status</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
        if rows
        else "<p>There are no open issues to acknowledge.</p>"
    )
    body = (
        f"<p>Client: <strong>{escape(h.client.name)}</strong></p>"
        "<p>By signing below, the client confirms that they have been informed of the open issues listed, "
        "the risk of leaving each one unresolved and the available workaround.</p>"
        + table
        + '<div class="signature"><p>Name: ______________________________ Role: ____________________</p>'
        "<p>Signature: __________________________ Date: ____________________</p></div>"
    )
    return html_page(f"Acknowledgement of open issues: {h.client.name}", body)


def attachment_names(h: Handover) -> list[tuple[str, Rec]]:
    """Unique, safe file names for the attachments (a clash gets a numeric prefix)."""
    # Compared case-insensitively: the successor's reader (and macOS/Windows) treat Config.txt and
    # config.txt as one file, so a bundle holding both could never be opened.
    seen: set[str] = set()
    out = []
    for a in h.attachments:
        name = safe_filename(a.data["name"], "attachment")
        n = 2
        while name.casefold() in seen:
            name = f"{n}-{safe_filename(a.data['name'], 'attachment')}"
            n += 1
        seen.add(name.casefold())
        out.append((name, a))
    return out


def cred_rows(h: Handover) -> list[dict[str, Any]]:
    return [
        {c_: cr.data.get(c_) for c_ in CRED_COLUMNS}
        | {"id": cr.id, "tags": cr.data.get("tags") or [], "fields": cr.data.get("fields") or {}}
        for cr in h.creds
    ]


def client_json(h: Handover) -> dict[str, Any]:
    c = h.client
    return {
        "client": {"slug": c.slug, "name": c.name, "id": c.id},
        "agreement": c.agreement,
        "contacts": [r.data for r in h.contacts],
        "successor": c.data.get("successor"),
        "technician": h.technician.values() if h.technician and h.technician.is_set else None,
        "exported_at": h.exported_at,
        "vault": h.fingerprint,
    }


def issues_json(h: Handover) -> list[dict[str, Any]]:
    return [
        {"id": i.id, **i.data, "acknowledgement": h.acknowledged(i.id)}
        for i in sorted(h.issues, key=lambda i: SEVERITIES.index(i.data.get("severity") or "low"))
    ]


def build_files(v: Vault, s: Session, h: Handover, today: dt.date) -> list[BundleFile]:
    """Every file of the bundle but the manifest and its signature."""
    from .tarsafe import BundleFile

    def text(name: str, content: str) -> BundleFile:
        return BundleFile.from_bytes(name, content.encode("utf-8"))

    files = [
        text("index.html", index_html(h, today)),
        text("HANDOVER.md", handover_md(h, today)),
        BundleFile.from_bytes("client.json", json_bytes(client_json(h))),
        BundleFile.from_bytes("assets.csv", csv_bytes(ASSET_COLUMNS, [a.data for a in h.assets])),
        BundleFile.from_bytes("credentials.csv", csv_bytes(CRED_COLUMNS, cred_rows(h))),
        BundleFile.from_bytes("credentials.json", json_bytes(cred_rows(h))),
        text("known-issues.md", f"# Known issues: {md_cell(h.client.name)}\n\n" + _issues_md(h)),
        BundleFile.from_bytes("known-issues.json", json_bytes(issues_json(h))),
        text("acknowledgement.html", acknowledgement_html(h)),
        # The outgoing technician's audit head, signed: the client and successor hold proof of what
        # the request log contained at handover (``handover audit verify --checkpoint``).
        BundleFile.from_bytes("audit-checkpoint.json", json_bytes(v.audit.checkpoint())),
    ]
    files += _password_manager_files(h)
    for n, d in enumerate(h.docs, 1):
        files.append(text(f"docs/{n:02d}-{safe_filename(d.data['title'])}.md", d.data["body"]))
    for name, a in attachment_names(h):
        # Every chunk authenticates under its record and position and the count is checked, so the
        # content is the one whose SHA-256 is stored: it is not hashed again, neither by the
        # attachment store nor by the tar writer (docs/security.md, "Attachments in the bundle").
        files.append(
            BundleFile(
                f"attachments/{name}",
                a.data["size"],
                a.data["sha256"],
                _chunks_of(v, s, h, a),
                source_checked=True,
            )
        )
    return files


def _chunks_of(v: Vault, s: Session, h: Handover, rec: Rec) -> Callable[[], Iterator[bytes]]:
    """Read an attachment lazily, while the tar streams (memory stays flat)."""
    return lambda: v.attachments.chunks(s, h.client, rec, verify_digest=False)


def _password_manager_files(h: Handover) -> list[BundleFile]:
    """KeePass 2 XML and Bitwarden JSON, for the successor's own password manager."""
    from .tarsafe import BundleFile

    try:
        from .formats import write_bitwarden_json, write_keepass_xml
    except ImportError:
        return []
    creds: list[Any] = [
        {
            "label": c.data["label"],
            "username": c.data.get("username"),
            "secret": c.data.get("secret"),
            "url": c.data.get("url"),
            "notes": c.data.get("notes"),
            "category": c.data.get("category"),
            "tags": c.data.get("tags") or [],
            "totp": c.data.get("totp"),
            "expires": c.data.get("expires"),
            "fields": c.data.get("fields") or {},
            "attachments": [],
        }
        for c in h.creds
    ]
    when = dt.datetime.fromisoformat(h.exported_at.replace("Z", "+00:00"))
    xml = write_keepass_xml(creds, exported_at=when, name=f"Handover {h.client.name}")
    return [
        BundleFile.from_bytes("credentials.keepass.xml", xml),
        BundleFile.from_bytes("credentials.bitwarden.json", write_bitwarden_json(creds)),
    ]
