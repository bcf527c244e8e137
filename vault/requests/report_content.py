"""What the handover report says, in the order a successor needs it (vault/requests/report.py writes it out).

First screen: the contents and the summary with what needs doing first (critical open issues,
expiries within :data:`SOON_DAYS`, credentials disclosed on request, values that credentials.csv
had to change). Then the agreement and contacts, the network overview before the inventory and the
credentials, rotate on receipt, known issues, expiries, documents, attachments and how to check the
bundle. Values are passed as data; escaping is the writers' business.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from .report import (
    BlockT,
    Bullets,
    Cell,
    Checklist,
    Exact,
    Inline,
    Link,
    Markdown,
    Nowrap,
    Para,
    Record,
    Report,
    Section,
    Strong,
    Table,
)

if TYPE_CHECKING:
    from ..bundle.handover import Handover
    from ..store.records import Rec

SOON_DAYS = 30  # an expiry this close is highlighted and listed among the first things to do
FIRST_SEVERITIES = ("critical", "high")


def report(h: Handover, today: dt.date) -> Report:
    """The whole report for this handover."""
    return Report(
        f"Handover: {h.client.name}",
        (
            summary_section(h, today),
            agreement_section(h),
            contacts_section(h),
            overview_section(h),
            inventory_section(h),
            credentials_section(h),
            rotate_section(h),
            issues_section(h),
            expiries_section(h, today),
            documents_section(h),
            attachments_section(h),
            checking_section(h),
        ),
    )


def _days(date: str, today: dt.date) -> int | None:
    try:
        return (dt.date.fromisoformat(date) - today).days
    except ValueError:
        return None


def _when(days: int | None) -> str:
    if days is None:
        return ""
    if days < 0:
        return f"expired {-days} day{'s' if days != -1 else ''} ago"
    return "expires today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"


def _expiry_css(days: int | None) -> str:
    if days is None:
        return ""
    return "expired" if days < 0 else "soon" if days <= SOON_DAYS else ""


def summary_section(h: Handover, today: dt.date) -> Section:
    from ..bundle.handover import ack_status, cred_rows, csv_changed_fields

    c = h.client
    successor = c.data.get("successor") or {}
    who = successor.get("name") or "not named"
    if successor.get("org"):
        who += f" ({successor['org']})"
    intro = Para(
        (
            "Handover of ",
            Strong(c.name),
            f" ({c.slug}), exported ",
            Nowrap(h.exported_at),
            f". Successor: {who}.",
        )
    )
    todo: list[tuple[Inline, ...]] = []
    css: list[str] = []
    for i in h.open_issues:
        if i.data.get("severity") in FIRST_SEVERITIES:
            todo.append(
                (
                    Strong(f"{i.data['severity'].capitalize()} issue: "),
                    i.data["title"],
                    f" ({ack_status(h, i.id)})",
                )
            )
            css.append("critical" if i.data["severity"] == "critical" else "")
    for date, what, item in _expiries(h):
        days = _days(date, today)
        if days is not None and days <= SOON_DAYS:
            todo.append((Strong(f"{what.capitalize()} {_when(days)}: "), item, " (", Nowrap(date), ")"))
            css.append(_expiry_css(days))
    for cr in _disclosed(h):
        todo.append((Strong("Rotate first: "), cr.data["label"], f" ({cr.data.get('rotation_reason')})"))
        css.append("critical")
    if h.creds:
        todo.append(
            (
                "Change every credential listed under ",
                Link("Rotate on receipt", "rotate-on-receipt"),
                f" ({len(h.creds)}).",
            )
        )
        css.append("")
    changed = [r["label"] for r in cred_rows(h) if csv_changed_fields(r)]
    if changed:
        todo.append(
            (
                Strong("credentials.csv differs: "),
                f"{len(changed)} credential(s) hold a value that credentials.csv writes with an apostrophe (') "
                "before what a spreadsheet would run as a formula: ",
                ", ".join(changed),
                ". The values in this report and in credentials.json are exact.",
            )
        )
        css.append("")
    blocks: list[BlockT] = [intro, Para((Strong("What needs doing first"),))]
    blocks.append(Bullets(tuple(todo), tuple(css)) if todo else Para(("Nothing urgent was recorded.",)))
    blocks.append(
        Para(
            (
                "Before trusting this bundle, compare the vault fingerprint ",
                Exact(h.fingerprint, "fingerprint"),
                f" ({h.ssh_fingerprint}) with the one the outgoing technician gave you by letter or phone: ",
                Link("Checking this bundle", "checking-this-bundle"),
                ".",
            ),
            css="note",
        )
    )
    blocks += technician_blocks(h)
    return Section("Summary", tuple(blocks))


def technician_blocks(h: Handover) -> list[BlockT]:
    """Who hands over, from the technician profile (visible blanks such as [your name] without one)."""
    from ..profile import BLANKS, LABELS, Profile, technician_lines

    profile = Profile(**(h.technician or {}))
    exact = {LABELS["email"]: "email", LABELS["website"]: "url"}
    items: list[tuple[Inline, ...]] = []
    for label, value in technician_lines(profile):
        shown: Inline = value
        if value not in BLANKS.values() and label in exact:
            shown = Exact(value, exact[label])
        elif value not in BLANKS.values() and label == LABELS["phone"]:
            shown = Nowrap(value)
        items.append((Strong(f"{label}: "), shown))
    return [Para((Strong("Outgoing technician (handing over)"),)), Bullets(tuple(items))]


def _expiries(h: Handover) -> list[tuple[str, str, str]]:
    rows = [
        (a.data["expires"], a.data.get("expiry_kind") or "expiry", a.data["hostname"])
        for a in h.assets
        if a.data.get("expires")
    ]
    rows += [(c.data["expires"], "credential", c.data["label"]) for c in h.creds if c.data.get("expires")]
    return sorted(rows)


def _disclosed(h: Handover) -> list[Rec]:
    return [c for c in h.creds if c.data.get("needs_rotation")]


def agreement_section(h: Handover) -> Section:
    from ..agreement import effective_status, notice_terms_text

    a = h.client.agreement
    items: list[tuple[Inline, ...]] = [
        (Strong("Status: "), effective_status(h.client)),
        (Strong("Contract start: "), Nowrap(a.get("contract_start") or "not recorded")),
        (Strong("Notice period: "), notice_terms_text(a)),
    ]
    for key, label in (
        ("notice_given", "Notice given"),
        ("effective_end", "Effective end"),
        ("on_hand_until", "Outgoing technician on hand until"),
    ):
        if a.get(key):
            items.append((Strong(f"{label}: "), Nowrap(str(a[key]))))
    return Section("Agreement", (Bullets(tuple(items)),))


def contacts_section(h: Handover) -> Section:
    rows = tuple(
        (
            c.data["name"],
            c.data.get("role"),
            _exact(c.data.get("email"), "email"),
            _nowrap(c.data.get("phone")),
            "yes" if c.data.get("authorized") else "no",
        )
        for c in h.contacts
    )
    return Section(
        "Contacts", (Table(("Name", "Role", "Email", "Phone", "Authorised for credentials"), rows),)
    )


def _exact(value: Any, kind: str = "") -> Cell:
    return None if value in (None, "") else Exact(str(value), kind)


def _nowrap(value: Any) -> Cell:
    return None if value in (None, "") else Nowrap(str(value))


def doc_path(n: int, d: Rec) -> str:
    from ..bundle.handover import safe_filename

    return f"docs/{n:02d}-{safe_filename(d.data['title'])}.md"


def _is_overview(d: Rec) -> bool:
    return bool(d.data.get("overview")) or "overview" in str(d.data.get("title", "")).casefold()


def overview_section(h: Handover) -> Section:
    blocks: list[BlockT] = []
    for n, d in enumerate(h.docs, 1):
        if _is_overview(d):
            blocks.append(Markdown(d.data["body"], doc_path(n, d)))
    if not blocks:
        blocks = [Para(("No network overview page was recorded.",), css="warning")]
    return Section("Network overview", tuple(blocks))


def inventory_section(h: Handover) -> Section:
    rows = tuple(
        (
            Exact(a.data["hostname"], "hostname"),
            a.data.get("kind"),
            _exact(a.data.get("ip"), "ip"),
            a.data.get("location"),
            a.data.get("model"),
            _exact(a.data.get("serial"), "serial"),
            _nowrap(a.data.get("expires")),
            a.data.get("notes"),
        )
        for a in h.assets
    )
    headers = ("Host", "Kind", "IP/subnet", "Location", "Model", "Serial", "Expires", "Notes")
    return Section("Network inventory", (Table(headers, rows, css="inventory"),))


def credential_record(cr: Rec) -> Record:
    from ..bundle.handover import csv_changed_fields

    d = cr.data
    fields: list[tuple[str, Cell]] = [
        ("Username", _exact(d.get("username"), "username")),
        ("Secret", _exact(d.get("secret"), "secret")),
        ("URL", _exact(d.get("url"), "url")),
        ("Category", d.get("category")),
        (
            "TOTP",
            "yes: the otpauth URI is in credentials.json and the password-manager files"
            if d.get("totp")
            else None,
        ),
        ("Expires", _nowrap(d.get("expires"))),
        ("Last rotated", _nowrap(d.get("last_rotated"))),
        ("Tags", ", ".join(d.get("tags") or []) or None),
    ]
    fields += [(str(k), _exact(v, "field")) for k, v in sorted((d.get("fields") or {}).items())]
    fields.append(("Notes", _exact(d.get("notes"), "notes")))
    notes: list[Para] = []
    if d.get("needs_rotation"):
        notes.append(
            Para((f"Rotate first: {d.get('rotation_reason') or 'flagged for rotation'}.",), css="warning")
        )
    changed = csv_changed_fields(d)
    if changed:
        notes.append(
            Para(
                (
                    f"credentials.csv writes the {', '.join(changed)} of this credential with an apostrophe (') "
                    "before what a spreadsheet would run as a formula. The value shown here is exact; "
                    "remove that ' if you copy from the CSV.",
                ),
                css="note",
            )
        )
    return Record(d["label"], tuple(fields), tuple(notes), anchor=f"cred-{cr.id[:8]}", css="credential")


def credentials_section(h: Handover) -> Section:
    if not h.creds:
        return Section("Credentials", (Para(("No credentials recorded.",)),))
    return Section("Credentials", tuple(credential_record(c) for c in h.creds))


def rotate_section(h: Handover) -> Section:
    if not h.creds:
        return Section("Rotate on receipt", (Para(("No credentials.",)),))
    order = sorted(h.creds, key=lambda c: not c.data.get("needs_rotation"))
    items: list[tuple[Inline, ...]] = []
    for c in order:
        item: tuple[Inline, ...] = (c.data["label"], f" ({c.data.get('category') or 'uncategorised'})")
        if c.data.get("needs_rotation"):
            item += (" ", Strong(f"{c.data.get('rotation_reason') or 'flagged for rotation'}, first"))
        items.append(item)
    lead = Para(
        ("Every credential below was known to the outgoing technician. Change each one and tick it:",)
    )
    return Section("Rotate on receipt", (lead, Checklist(tuple(items))))


def issues_section(h: Handover) -> Section:
    from ..bundle.handover import ack_status

    if not h.open_issues:
        return Section("Known issues", (Para(("No open issues.",)),))
    blocks: list[BlockT] = []
    for i in h.open_issues:
        d = i.data
        fields: tuple[tuple[str, Cell], ...] = (
            ("Severity", Strong(d["severity"])),
            ("Risk if ignored", d.get("risk") or "not recorded"),
            ("Workaround", d.get("workaround") or "none recorded"),
            ("Client acknowledgement", ack_status(h, i.id)),
        )
        css = "issue critical" if d["severity"] == "critical" else "issue"
        blocks.append(Record(f"[{d['severity'].upper()}] {d['title']}", fields, css=css))
        if d.get("description"):
            blocks.append(Markdown(d["description"]))
    return Section("Known issues", tuple(blocks))


def expiries_section(h: Handover, today: dt.date) -> Section:
    from ..bundle.handover import upcoming_expiries

    rows = upcoming_expiries(h, today)
    days = [_days(r[0], today) for r in rows]
    table = Table(
        ("Date", "When", "What", "Item"),
        tuple((Nowrap(r[0]), _when(n), r[1], r[2]) for r, n in zip(rows, days, strict=True)),
        row_css=tuple(_expiry_css(n) for n in days),
    )
    return Section("Upcoming expiries", (table,))


def documents_section(h: Handover) -> Section:
    rows = tuple(
        (
            Exact(doc_path(n, d), "path"),
            d.data["title"],
            ", ".join(d.data.get("tags", [])),
            Nowrap(d.updated_at[:10]),
        )
        for n, d in enumerate(h.docs, 1)
    )
    subs = tuple(
        Section(
            f"Document {n}: {d.data['title']}", (Markdown(d.data["body"], doc_path(n, d)),), anchor=f"doc-{n}"
        )
        for n, d in enumerate(h.docs, 1)
        if not _is_overview(d)
    )
    return Section("Documents", (Table(("File", "Title", "Tags", "Updated"), rows),), subsections=subs)


def attachments_section(h: Handover) -> Section:
    from ..bundle.handover import attachment_names

    rows = tuple(
        (
            Exact(f"attachments/{n}", "path"),
            Nowrap(f"{a.data['size']} bytes"),
            Exact(a.data["sha256"], "sha256"),
        )
        for n, a in attachment_names(h)
    )
    return Section("Attachments", (Table(("File", "Size", "SHA-256"), rows),))


def checking_section(h: Handover) -> Section:
    from ..bundle.verify_guide import technician_line

    return Section(
        "Checking this bundle",
        (
            Para(
                (
                    "VERIFY.txt beside this report shows how to check the bundle with age, tar, ssh-keygen and "
                    "sha256sum alone. The key must come from the termination letter or a phone call, not from "
                    "this bundle: instructions inside an unverified bundle prove nothing by themselves. "
                    + technician_line(h.technician),
                )
            ),
            Bullets(
                (
                    (Strong("Vault fingerprint: "), Exact(h.fingerprint, "fingerprint")),
                    (Strong("SSH fingerprint: "), Exact(h.ssh_fingerprint, "ssh-fingerprint")),
                    (Strong("Signing key: "), Exact(h.ssh_public_key, "ssh-key")),
                )
            ),
        ),
    )
