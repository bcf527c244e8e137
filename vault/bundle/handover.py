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

from ..validate import SEVERITIES

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..clients import ClientRef
    from ..core import Vault
    from ..store.records import Rec
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
    ssh_fingerprint: str = ""  # SHA256:… of the vault's signing key (ssh-keygen -lf)
    ssh_public_key: str = ""  # ssh-ed25519 AAAA… handover-vault
    # The outgoing technician (the profile's fields that are set: name, company, email, phone,
    # address, website), for VERIFY.txt and the report; None while the vault has no profile.
    technician: dict[str, str] | None = None
    contacts: list[Rec] = field(default_factory=list)
    docs: list[Rec] = field(default_factory=list)
    assets: list[Rec] = field(default_factory=list)
    creds: list[Rec] = field(default_factory=list)
    issues: list[Rec] = field(default_factory=list)
    attachments: list[Rec] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    ack_records: list[Rec] = field(default_factory=list)

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
    h = Handover(client, v.fingerprint, exported_at, v.ssh_fingerprint, v.ssh_public_key)
    h.technician = v.profile.get(s).present() or None
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
        from ..agreement import ack_state

        h.acks = list(ack_state(v, client))
    except ImportError:
        h.acks = []
    return h


# --- small formatting helpers ----------------------------------------------------------------------


def safe_filename(title: str, fallback: str = "untitled") -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")[:60]
    return name or fallback


# Spreadsheets run a cell as a formula when it starts with = + - or @ (or a tab or CR), also after spaces,
# tabs or line breaks (CSV injection). A spreadsheet set to another separator (";" in most European
# locales, or a tab when pasted) splits a cell at that separator, so what follows a ";", "," or tab
# is a cell start too ("x;=HYPERLINK(...)" in one quoted CSV cell becomes a formula in ";" locales),
# and so is what follows a line break (the quoting that kept it in the cell is not seen there).
_CELL_START = re.compile(r"(^|[;,\t\r\n])([ \t\r\n]*)(?=[=+\-@\t\r])")
CSV_NOTE = (
    "credentials.csv and assets.csv are for spreadsheets: where a value could run as a formula "
    "(it starts with = + - @, a tab or a line break, perhaps after spaces, or has one after a ; , or "
    "tab), an apostrophe (') is put before it. credentials.json, credentials.keepass.xml and "
    "credentials.bitwarden.json hold every value exactly: import from those."
)


def csv_cell(value: Any) -> str:
    """``value`` for a CSV cell, with an apostrophe before every place a spreadsheet would start a
    formula (:data:`CSV_NOTE` tells the successor; the JSON and password-manager files are exact)."""
    text = "" if value is None else str(value)
    return _CELL_START.sub(lambda m: f"{m.group(1)}{m.group(2)}'", text)


def csv_bytes(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([csv_cell(row.get(c)) for c in columns])
    return buf.getvalue().encode("utf-8")


def csv_changed_fields(row: dict[str, Any], columns: tuple[str, ...] = CRED_COLUMNS) -> list[str]:
    """The columns whose cell credentials.csv writes differently from the value (the spreadsheet
    formula guard of :func:`csv_cell`, whatever it does): the report tells the successor."""
    return [c for c in columns if row.get(c) not in (None, "") and csv_cell(row.get(c)) != str(row.get(c))]


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


def index_html(h: Handover, today: dt.date) -> str:
    """The report as the successor opens it in a browser (escaped once, for HTML)."""
    from ..requests.report import to_html
    from ..requests.report_content import report

    return to_html(report(h, today))


def handover_md(h: Handover, today: dt.date) -> str:
    """The same report as GFM (escaped once, for Markdown)."""
    from ..requests.report import to_markdown
    from ..requests.report_content import report

    return to_markdown(report(h, today))


def known_issues_md(h: Handover) -> str:
    from ..requests.report import Report, to_markdown
    from ..requests.report_content import issues_section

    return to_markdown(Report(f"Known issues: {h.client.name}", (issues_section(h),), contents=False))


def acknowledgement_html(h: Handover) -> str:
    from ..render import escape, html_page

    rows = []
    for i in h.open_issues:
        d = i.data
        rows.append(
            f"<tr><td>{escape(d['severity'])}</td><td>{escape(d['title'])}</td>"
            f"<td>{escape(d.get('risk') or '')}</td><td>{escape(d.get('workaround') or '')}</td>"
            f"<td>{escape(ack_status(h, i.id))}</td></tr>"
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


def ack_status(h: Handover, issue_id: str) -> str:
    """An open issue's acknowledgement as the successor and the client read it."""
    ack = h.acknowledged(issue_id)
    if ack:
        return f"Acknowledged by {ack.get('by')}, {ack.get('date')}"
    row = next((r for r in h.acks if r.get("id") == issue_id), None)
    if row and row.get("changed_since_ack"):
        return "Not acknowledged (changed since it was acknowledged)"
    return "Not acknowledged"


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
        | {
            "id": cr.id,
            "tags": cr.data.get("tags") or [],
            "fields": cr.data.get("fields") or {},
            "secret_fields": cr.data.get("secret_fields") or {},
        }
        for cr in h.creds
    ]


def client_json(h: Handover) -> dict[str, Any]:
    c = h.client
    return {
        "client": {"slug": c.slug, "name": c.name, "id": c.id},
        "agreement": c.agreement,
        "contacts": [r.data for r in h.contacts],
        "successor": c.data.get("successor"),
        "technician": h.technician,
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
        text("known-issues.md", known_issues_md(h)),
        BundleFile.from_bytes("known-issues.json", json_bytes(issues_json(h))),
        text("acknowledgement.html", acknowledgement_html(h)),
        # The outgoing technician's audit head, signed: the client and successor hold proof of what
        # the request log contained at handover (``handover audit verify --checkpoint``).
        BundleFile.from_bytes("audit-checkpoint.json", json_bytes(v.audit.checkpoint())),
        text("VERIFY.txt", verify_text(v, h, today)),
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


def verify_text(v: Vault, h: Handover, today: dt.date, technician: dict[str, str] | None = None) -> str:
    """VERIFY.txt for this bundle (vault/bundle/verify_guide.py); ``technician`` (default: the
    handover's) names who to call."""
    from .format import bundle_root
    from .verify_guide import verify_txt

    root = bundle_root(h.client.slug, today)
    who = technician if technician is not None else h.technician
    return verify_txt(root, v.fingerprint, v.ssh_fingerprint, v.ssh_public_key, technician=who)


def _chunks_of(v: Vault, s: Session, h: Handover, rec: Rec) -> Callable[[], Iterator[bytes]]:
    """Read an attachment lazily, while the tar streams (memory stays flat)."""
    return lambda: v.attachments.chunks(s, h.client, rec, verify_digest=False)


def _password_manager_files(h: Handover) -> list[BundleFile]:
    """KeePass 2 XML and Bitwarden JSON, for the successor's own password manager."""
    from .tarsafe import BundleFile

    try:
        from ..formats.common import write_bitwarden_json, write_keepass_xml
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
            "secret_fields": c.data.get("secret_fields") or {},
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
