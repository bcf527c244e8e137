"""The termination letter: a Markdown template with ``{{placeholder}}`` substitution, as .md and .html.

Templates are data, never code: a placeholder is a name in double braces, replaced by text built here
from the client's agreement, contacts, successor and open issues. Nothing else is evaluated, a value
is inserted once (a value that looks like a placeholder stays as written), and an unknown name is an
error so a typo never reaches a client. HTML comments in the template are notes for its editor and
are dropped. No credential record is ever read while building a letter, so no secret can reach it.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agreement import ack_state, notice_terms_text, require_notice
from .errors import AlreadyExists, InvalidInput, StorageError

if TYPE_CHECKING:
    from .clients import ClientRef
    from .core import Vault

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
COMMENT = re.compile(r"<!--.*?-->\n?", re.S)
MAX_TEMPLATE = 256 * 1024
SENDER_BLANK = "[your name]"
CONTACT_BLANK = "[your telephone number and email address]"

# Every placeholder a template may use, with what it becomes (docs/agreement.md lists the same).
PLACEHOLDERS = {
    "letter_date": "today's date",
    "sender": "your name (letter --sender)",
    "sender_contact": "how to reach you (letter --sender-contact)",
    "client_name": "the client's display name",
    "client_slug": "the client's short name in the vault",
    "contract_start": "the contract start date, or 'the start of our cooperation'",
    "notice_terms": "the notice clause in words, e.g. 1 month's notice to the end of a calendar month",
    "notice_given": "the date notice was given",
    "effective_end": "the effective end date",
    "earliest_end": "the earliest end the notice allows (or the effective end)",
    "end_clause": "a paragraph: which clause the end date follows, or that it was agreed",
    "reasons": "the reasons, as a paragraph or a list",
    "successor": "the successor's name and organisation, or 'the provider you choose'",
    "handover_plan": "a list: what is handed over, to whom, and when",
    "open_issues": "the open known issues (title, severity, risk) and their acknowledgement",
    "on_hand_days": "the length of the on-hand window in days",
    "on_hand_until": "the last day of the on-hand window",
    "on_hand": "a paragraph: how to reach you during the on-hand window, and what happens after",
    "identity_check": "a paragraph: who may receive credentials and how identity is checked",
    "authorised_contacts": "the authorised contacts as a list",
    "vault_fingerprint": "the fingerprint that signs the handover bundle",
    "vault_ssh_fingerprint": "the same key's SHA256: fingerprint, as ssh-keygen -lf shows it",
    "vault_ssh_key": "the vault's signing key as an OpenSSH line, to check the bundle with ssh-keygen",
    "audit_head": "a paragraph: the audit log's signed head today, so a later removal is detectable",
}


def default_template() -> str:
    """The template shipped with the program (``vault/templates/letter.md``)."""
    return resources.files("handover_vault.templates").joinpath("letter.md").read_text(encoding="utf-8")


def read_template(path: Path | str) -> str:
    """A user's template file. Raises InvalidInput (unreadable, not UTF-8, too large)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TEMPLATE + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read the template {path}: {exc.strerror}") from None
    if len(raw) > MAX_TEMPLATE:
        raise InvalidInput(f"the template {path} is larger than {MAX_TEMPLATE // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the template {path} is not UTF-8 text") from None


def fill(template: str, values: dict[str, str]) -> str:
    """Replace each ``{{name}}`` by ``values[name]`` in one pass; unknown names raise InvalidInput.

    Anything in double braces is a placeholder, so ``{{ 7*7 }}`` or ``{% if %}``-style habits from
    other template languages are reported rather than left in the letter.
    """
    comments = [m.span() for m in COMMENT.finditer(template)]
    unknown: dict[str, int] = {}
    for match in PLACEHOLDER.finditer(template):
        name = match.group(1).strip()
        if any(a <= match.start() < b for a, b in comments):
            continue
        if name not in values and name not in unknown:
            unknown[name] = template.count("\n", 0, match.start()) + 1
    if unknown:
        where = ", ".join(f"{{{{{n[:40]}}}}} (line {line})" for n, line in unknown.items())
        raise InvalidInput(
            f"the template uses unknown placeholders: {where}",
            "the placeholders are listed in: handover letter --print-template",
        )
    text = COMMENT.sub("", template)
    return PLACEHOLDER.sub(lambda m: values[m.group(1).strip()], text).lstrip("\n")


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())


def _end_clause(a: dict[str, Any], start: str) -> str:
    terms, end, earliest = notice_terms_text(a), a["effective_end"], a.get("earliest_end")
    if not a.get("notice"):
        return f"Our agreement does not set a notice period. As agreed between us, it ends on {end}."
    clause = (
        f"Our agreement, in force since {start}, allows either party to end it with {terms}. "
        f"Notice is given on {a['notice_given']}"
    )
    if earliest == end:
        return clause + f", so the agreement ends on {end}."
    if earliest and end < earliest and a.get("by_agreement"):
        return (
            clause + f"; that would end the agreement on {earliest}. As agreed between us, it ends "
            f"earlier, on {end}."
        )
    return (
        clause + f"; the notice allows an end on {earliest} at the earliest, and the agreement ends on {end}."
    )


def _reasons(a: dict[str, Any]) -> str:
    reasons = [str(r).strip() for r in (a.get("reasons") or [a.get("reason") or ""]) if str(r).strip()]
    if len(reasons) == 1:
        return reasons[0]
    return "\n".join(f"- {_one_line(r)}" for r in reasons)


def _successor(client: ClientRef) -> str:
    succ = client.data.get("successor") or {}
    name, org = _one_line(succ.get("name")), _one_line(succ.get("org") or succ.get("organisation"))
    if name and org:
        return f"{name} ({org})"
    return name or org or ""


def _handover_plan(client: ClientRef, a: dict[str, Any], v: Vault) -> str:
    succ = _successor(client)
    email = _one_line((client.data.get("successor") or {}).get("email"))
    to_whom = (
        f"{succ}{f', {email}' if email else ''}, whom you have named as your new IT provider."
        if succ
        else "the IT provider or person you name. Please tell us in writing who that "
        f"is, before {a['effective_end']}."
    )
    return "\n".join(
        [
            "- **What:** a sealed handover bundle with the network documentation, the inventory of devices "
            "and licences, every credential we hold (each to be changed on receipt), and the known issues "
            "with their workarounds. It is encrypted so that only the recipient can open it, and signed so "
            f"its origin can be checked: our vault's fingerprint is `{v.fingerprint}` "
            f"(`{v.ssh_fingerprint}`), and its signing key, which your new provider needs to check the "
            f"bundle (the bundle's VERIFY.txt says how), is `{v.ssh_public_key}`. Please pass this "
            "letter on to them: that key must reach them from us, not from the bundle.",
            f"- **To whom:** {to_whom}",
            f"- **When:** no later than {a['effective_end']}, the day the agreement ends.",
        ]
    )


def _open_issues(states: list[dict[str, Any]]) -> str:
    if not states:
        return "There are no open known issues at the time of this letter."
    lines = [
        "We know of the following open issues. We ask you to confirm in writing that you are aware "
        "of them, for example by signing the acknowledgement form in the handover:",
        "",
    ]
    for i, st in enumerate(states, 1):
        risk = _one_line(st.get("risk")) or "not assessed"
        ack = (
            f" Acknowledged by {_one_line(st['by'])} on {st['date']}."
            if st["acknowledged"]
            else " Changed since you acknowledged it: please confirm again."
            if st.get("changed_since_ack")
            else ""
        )
        lines.append(
            f"{i}. **{_one_line(st['title'])}** ({st['severity']}). Risk if it is left as it is: {risk}.{ack}"
        )
    return "\n".join(lines)


def _contacts(v: Vault, client: ClientRef) -> list[str]:
    with v.read() as s:
        recs = v.records.list(s, client, "contact")
    return [
        _one_line(r.data.get("name")) + (f" ({_one_line(r.data['role'])})" if r.data.get("role") else "")
        for r in recs
        if r.data.get("authorized")
    ]


def _identity_check(names: list[str]) -> str:
    who = (
        f"We release information such as passwords only to the people you have authorised: "
        f"{', '.join(names)}."
        if names
        else "You have not yet named anyone who may receive credentials; please tell us in writing who may."
    )
    return (
        f"{who} Before answering a request we check who is asking: we call back on the telephone "
        "number we have on file for that person, or answer only to the email address on file. We never "
        "send a password to a number or address given during the same call or message, and every request "
        "and our answer is recorded. Please tell us in writing if these people or their details change."
    )


def values(
    v: Vault,
    slug: str,
    sender: str | None = None,
    sender_contact: str | None = None,
    today: dt.date | None = None,
) -> dict[str, str]:
    """Every placeholder's text for this client. Raises NotFound (no client, no notice recorded)."""
    client = v.clients.get(slug)
    a = require_notice(client)
    states = ack_state(v, client)
    names = _contacts(v, client)
    start = a.get("contract_start") or "the start of our cooperation"
    sender = _one_line(sender) or SENDER_BLANK
    reach = _one_line(sender_contact) or CONTACT_BLANK
    return {
        "letter_date": (today or dt.date.today()).isoformat(),
        "sender": sender,
        "sender_contact": reach,
        "client_name": _one_line(client.name),
        "client_slug": client.slug,
        "contract_start": start,
        "notice_terms": notice_terms_text(a),
        "notice_given": a["notice_given"],
        "effective_end": a["effective_end"],
        "earliest_end": a.get("earliest_end") or a["effective_end"],
        "end_clause": _end_clause(a, start),
        "reasons": _reasons(a),
        "successor": _successor(client) or "the provider you choose",
        "handover_plan": _handover_plan(client, a, v),
        "open_issues": _open_issues(states),
        "on_hand_days": str(a["on_hand_days"]),
        "on_hand_until": a["on_hand_until"],
        "on_hand": (
            f"For {a['on_hand_days']} days after the end, until {a['on_hand_until']}, we remain "
            f"available for questions about the handover: {reach}. After that date we delete your data "
            "from our records and send you a certificate of destruction."
        ),
        "identity_check": _identity_check(names),
        "authorised_contacts": "\n".join(f"- {n}" for n in names) or "- (none named yet)",
        "vault_fingerprint": v.fingerprint,
        "vault_ssh_fingerprint": v.ssh_fingerprint,
        "vault_ssh_key": v.ssh_public_key,
        "audit_head": _audit_head(v),
    }


def _audit_head(v: Vault) -> str:
    """The audit log's signed head: with this letter in the client's hands, the log's owner can no
    longer quietly drop entries written before it (``handover audit verify --checkpoint``)."""
    cp = v.audit.checkpoint()
    return (
        f"Every request and our answer go into a tamper-evident log. At the time of this letter it "
        f"holds {cp['seq']} entries, the latest sealed as `{cp['mac']}`. Keep this letter: that value "
        "lets anyone check later that no entry written before today was removed or changed."
    )


def compose(v: Vault, slug: str, template: str | None = None, **kw: Any) -> tuple[str, str, str]:
    """(title, markdown, html) of the letter. Raises NotFound, InvalidInput (template errors)."""
    from .render import html_page, render_markdown

    vals = values(v, slug, **kw)
    markdown = fill(default_template() if template is None else template, vals)
    title = f"Ending our agreement: {vals['client_name']}"
    body = render_markdown(markdown)
    # The template's own heading is the letter's H1; the page adds one only if it has none.
    return title, markdown, html_page(title, body, heading="<h1>" not in body)


def notice_warning(v: Vault, slug: str, today: dt.date | None = None) -> str | None:
    """A warning when the recorded notice date is before today: the letter says notice "is given"
    on that date, which a client reading it today would take for a back-dated letter.

    Raises NotFound (no client, no notice recorded).
    """
    a = require_notice(v.clients.get(slug))
    today = today or dt.date.today()
    given = str(a.get("notice_given") or "")
    if given and given < today.isoformat():
        return (
            f"the notice date {given} is before today ({today.isoformat()}): the letter states notice "
            "as given on that date; check it (handover end SLUG --notice-given DATE records another)"
        )
    return None


def write_letter(
    v: Vault,
    slug: str,
    out_dir: Path | str = ".",
    template: str | None = None,
    force: bool = False,
    **kw: Any,
) -> list[Path]:
    """Write ``SLUG-termination-letter.md`` and ``.html`` into ``out_dir`` (0600, atomically)."""
    _title, markdown, html = compose(v, slug, template, **kw)
    base = Path(out_dir) / f"{v.clients.get(slug).slug}-termination-letter"
    files = {
        base.with_suffix(".md"): markdown.encode("utf-8"),
        base.with_suffix(".html"): html.encode("utf-8"),
    }
    write_private_files(files, force)
    return list(files)


def write_private_files(files: dict[Path, bytes], force: bool = False) -> None:
    """Write each file via a 0600 temp file and a rename; refuse existing files unless ``force``.

    Every target is checked before anything is written, and a failure leaves no temp file behind.
    Raises AlreadyExists, StorageError.
    """
    for path in files:
        if not path.parent.is_dir():
            raise StorageError(f"the folder {path.parent} does not exist")
        if (path.exists() or path.is_symlink()) and not force:
            raise AlreadyExists(
                f"{path} already exists; refusing to overwrite it", "add --force to replace it"
            )
        if path.is_dir():
            raise StorageError(f"{path} is a folder")
    from .files import write_private

    for path, data in files.items():
        write_private(path, data, overwrite=force)
