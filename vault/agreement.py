"""Ending an agreement: notice arithmetic, the status timeline and the client's acknowledgement.

The stored status moves ``active -> notice-given`` when notice is recorded (``end_agreement``).
``ended`` and ``archived`` are never stored: they are derived on read from the recorded dates, so a
client's status cannot go stale and no background job is needed. The agreement runs *through* its
effective end date; it is ``ended`` from the day after, and ``archived`` (data due to be forgotten)
from the day after the last day of the on-hand window.

Date arithmetic is in pure functions (``add_months``, ``earliest_end``, ``plan_end``) so it can be
tested on its own; everything that touches the vault takes the vault as its first argument.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import validate
from .errors import InvalidInput, NotFound, PolicyRefused

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .clients import ClientRef
    from .core import Vault
    from .store.records import Rec

DEFAULT_ON_HAND_DAYS = 90
STATUSES = ("active", "notice-given", "ended", "archived")
ACK_METHODS = ("signed-form", "email", "in-person")
ACK_KIND = "ack"
# The fields of an issue a client acknowledges. Status and resolution time are left out: they do
# not change what the client was told.
ACK_FIELDS = ("title", "severity", "description", "risk", "workaround")


# --- pure date arithmetic ---------------------------------------------------------------------------


def parse_date(value: str | dt.date, what: str = "date") -> dt.date:
    """An ISO date (or a date) as ``datetime.date``. Raises InvalidInput."""
    if isinstance(value, dt.date):
        return value
    checked = validate.date(value, what)
    if checked is None:
        raise InvalidInput(f"{what} is missing")
    return dt.date.fromisoformat(checked)


def last_day_of_month(d: dt.date) -> dt.date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def add_months(d: dt.date, months: int) -> dt.date:
    """``d`` plus whole calendar months, clamped to the target month's last day.

    2027-01-31 + 1 month = 2027-02-28; 2028-01-31 + 1 month = 2028-02-29 (leap year).
    """
    index = d.year * 12 + (d.month - 1) + months
    year, month = divmod(index, 12)
    day = min(d.day, calendar.monthrange(year, month + 1)[1])
    return dt.date(year, month + 1, day)


def earliest_end(notice_given: dt.date, notice: dict[str, Any], end_of_month: bool = False) -> dt.date:
    """The earliest end date the notice terms allow for notice given on ``notice_given``.

    ``notice`` is ``{"days": N}`` or ``{"months": N}``. With the end-of-month rule the end moves to
    the last day of the month in which the period runs out (30 days from 2026-11-26 is 2026-12-26;
    one month to the end of a month from 2026-11-10 is 2026-12-31). Raises InvalidInput when the
    terms name no period.
    """
    if "days" in notice:
        end = notice_given + dt.timedelta(days=int(notice["days"]))
    elif "months" in notice:
        end = add_months(notice_given, int(notice["months"]))
    else:
        raise InvalidInput("the agreement has no notice period")
    return last_day_of_month(end) if end_of_month else end


def on_hand_until(effective_end: dt.date, days: int = DEFAULT_ON_HAND_DAYS) -> dt.date:
    """The last day of the on-hand window: ``days`` after the effective end."""
    return effective_end + dt.timedelta(days=days)


def notice_terms_text(agreement: dict[str, Any]) -> str:
    """The notice clause in words: "1 month's notice to the end of a calendar month"."""
    notice = agreement.get("notice") or {}
    if "days" in notice:
        n, unit = int(notice["days"]), "day"
    elif "months" in notice:
        n, unit = int(notice["months"]), "month"
    else:
        return "no notice period"
    text = f"{n} {unit}'s notice" if n == 1 else f"{n} {unit}s' notice"
    return text + (" to the end of a calendar month" if agreement.get("end_of_month") else "")


@dataclass(frozen=True)
class EndPlan:
    """What ``end`` records: all dates ISO strings; ``earliest_end`` None without notice terms."""

    notice_given: str
    earliest_end: str | None
    effective_end: str
    by_agreement: bool
    on_hand_days: int
    on_hand_until: str
    terms: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_end(
    agreement: dict[str, Any],
    notice_given: str | dt.date,
    end_date: str | dt.date | None = None,
    by_agreement: bool = False,
    on_hand_days: int | None = None,
) -> EndPlan:
    """Compute the effective end for notice given on ``notice_given`` under ``agreement``'s terms.

    Without ``end_date`` the end is the earliest the notice allows. A later ``end_date`` is taken as
    given; an earlier one needs ``by_agreement``. Raises InvalidInput (no terms and no end date, a
    date before the notice or the contract start, --by-agreement without a date) and PolicyRefused
    (an end earlier than the notice allows).
    """
    given = parse_date(notice_given, "notice date")
    start = agreement.get("contract_start")
    if start and given < parse_date(start, "contract start"):
        raise InvalidInput(f"notice given on {given} is before the contract started ({start})")
    wanted = parse_date(end_date, "end date") if end_date is not None else None
    if by_agreement and wanted is None:
        raise InvalidInput("--by-agreement needs the agreed end date", "add --end-date DATE")
    if wanted is not None and wanted < given:
        raise InvalidInput(f"the end date {wanted} is before the notice date {given}")
    earliest: dt.date | None = None
    if agreement.get("notice"):
        earliest = earliest_end(given, agreement["notice"], bool(agreement.get("end_of_month")))
    elif wanted is None:
        raise InvalidInput(
            "this client has no notice terms on file, so the end date cannot be computed",
            "give the agreed end date with --end-date DATE",
            "or record the terms first: handover client edit SLUG --notice-days N | --notice-months N",
        )
    effective = wanted or earliest
    assert effective is not None
    if earliest is not None and effective < earliest and not by_agreement:
        raise PolicyRefused(
            f"the notice terms ({notice_terms_text(agreement)}) allow an end on {earliest} at the "
            f"earliest; {effective} is earlier",
            "if the client agreed to the earlier date, add --by-agreement",
        )
    days = on_hand_days if on_hand_days is not None else agreement.get("on_hand_days")
    days = DEFAULT_ON_HAND_DAYS if days is None else int(days)
    validate.positive_int(days, "on-hand days", validate.MAX_DAYS)
    return EndPlan(
        notice_given=given.isoformat(),
        earliest_end=earliest.isoformat() if earliest else None,
        effective_end=effective.isoformat(),
        by_agreement=bool(by_agreement),
        on_hand_days=days,
        on_hand_until=on_hand_until(effective, days).isoformat(),
        terms=notice_terms_text(agreement),
    )


# --- derived status ---------------------------------------------------------------------------------


def _agreement_of(client_or_agreement: Any) -> dict[str, Any]:
    if isinstance(client_or_agreement, dict):
        return client_or_agreement
    return dict(client_or_agreement.agreement)


def effective_status(client_or_agreement: Any, today: dt.date | None = None) -> str:
    """``active``, ``notice-given``, ``ended`` (end date passed) or ``archived`` (window passed)."""
    a = _agreement_of(client_or_agreement)
    status = str(a.get("status") or "active")
    if status != "notice-given" or not a.get("effective_end"):
        return status
    today = today or dt.date.today()
    if a.get("on_hand_until") and today > dt.date.fromisoformat(a["on_hand_until"]):
        return "archived"
    if today > dt.date.fromisoformat(a["effective_end"]):
        return "ended"
    return "notice-given"


def status_line(client_or_agreement: Any, today: dt.date | None = None) -> str:
    """One line for ``client list``/``check``: "notice-given (ends 2026-12-26)",
    "ended (on hand until 2027-03-26)", "archived: due to be forgotten (on-hand window ended 2027-03-26)".
    """
    a = _agreement_of(client_or_agreement)
    status = effective_status(a, today)
    if status == "notice-given":
        return f"notice-given (ends {a['effective_end']})"
    if status == "ended":
        return f"ended (on hand until {a['on_hand_until']})"
    if status == "archived":
        return f"archived: due to be forgotten (on-hand window ended {a['on_hand_until']})"
    return status


def due_to_be_forgotten(client_or_agreement: Any, today: dt.date | None = None) -> bool:
    return effective_status(client_or_agreement, today) == "archived"


def forget_due(client: ClientRef, today: dt.date | None = None) -> str | None:
    """The reminder ``check`` shows once the on-hand window is over, else None."""
    if not due_to_be_forgotten(client, today):
        return None
    return (
        f"the on-hand window for {client.slug} ended {client.agreement['on_hand_until']}: its data is "
        f"due to be forgotten (handover forget {client.slug})"
    )


def timeline(client_or_agreement: Any, today: dt.date | None = None) -> list[dict[str, Any]]:
    """Each status with the date it was (or will be) reached: active, notice-given, ended, archived."""
    a = _agreement_of(client_or_agreement)
    today = today or dt.date.today()
    history = a.get("history") or []
    start = a.get("contract_start") or (history[0]["at"][:10] if history else None)
    steps: list[dict[str, Any]] = [{"status": "active", "date": start, "reached": True}]
    if a.get("notice_given"):
        steps.append({"status": "notice-given", "date": a["notice_given"], "reached": True})
        for status, key in (("ended", "effective_end"), ("archived", "on_hand_until")):
            when = a.get(key)
            reached = isinstance(when, str) and today > dt.date.fromisoformat(when)
            steps.append({"status": status, "date": when, "reached": reached})
    return steps


def describe(client: ClientRef, today: dt.date | None = None) -> dict[str, Any]:
    """The agreement as ``client show --json`` should present it: stored fields plus derived ones."""
    a = client.agreement
    return {
        **a,
        "effective_status": effective_status(a, today),
        "status_line": status_line(a, today),
        "notice_terms": notice_terms_text(a),
        "timeline": timeline(a, today),
    }


# --- recording the end ------------------------------------------------------------------------------


def end_agreement(
    v: Vault,
    slug: str,
    notice_given: str,
    reasons: list[str] | str,
    end_date: str | None = None,
    by_agreement: bool = False,
    on_hand_days: int | None = None,
    amend: bool = False,
    dry_run: bool = False,
    today: dt.date | None = None,
) -> tuple[ClientRef, EndPlan]:
    """Record notice: status ``notice-given``, the reasons, the effective end and on-hand window.

    ``amend`` corrects notice already recorded (only while the agreement has not yet ended);
    ``dry_run`` computes without writing. Raises NotFound, InvalidInput, PolicyRefused (an end
    earlier than the notice allows, notice already recorded, agreement already ended).
    """
    from .clock import utcnow

    items = [reasons] if isinstance(reasons, str) else list(reasons)
    cleaned = [validate.text(r.strip(), "reason", 5000, required=True) or "" for r in items if r is not None]
    if not cleaned:
        raise InvalidInput("give the reason for ending the agreement with --reason TEXT")
    with v.write("recording the end of an agreement") as s:
        client = v.clients.get(slug, s)
        agreement = client.agreement
        status = effective_status(agreement, today)
        if status != "active" and not amend:
            raise PolicyRefused(
                f"notice for {client.slug} was already recorded on {agreement.get('notice_given')}; "
                f"status: {status_line(agreement, today)}",
                f"to correct it while the agreement runs: handover end {client.slug} --amend ...",
            )
        if amend and status != "notice-given":
            raise PolicyRefused(
                f"there is no running notice to amend for {client.slug}; "
                f"status: {status_line(agreement, today)}"
            )
        plan = plan_end(agreement, notice_given, end_date, by_agreement, on_hand_days)
        if dry_run:
            return client, plan
        entry: dict[str, Any] = {"status": "notice-given", "at": utcnow(), "date": plan.notice_given}
        if amend:
            entry["amended"] = True
        agreement.update(
            status="notice-given",
            history=[*agreement.get("history", []), entry],
            notice_given=plan.notice_given,
            reason="; ".join(cleaned),
            reasons=cleaned,
            earliest_end=plan.earliest_end,
            effective_end=plan.effective_end,
            by_agreement=plan.by_agreement,
            on_hand_days=plan.on_hand_days,
            on_hand_until=plan.on_hand_until,
        )
        ref = v.clients.save(s, client, {**client.data, "agreement": agreement})
        v.audit.append(
            s,
            "agreement.amend" if amend else "agreement.notice",
            client=ref,
            detail={k: val for k, val in plan.to_json().items() if k != "terms"},
        )
        return ref, plan


# --- acknowledgement of open issues -----------------------------------------------------------------


def issue_digest(rec: Rec) -> str:
    """SHA-256 of an issue's canonical content: any edit to what the client was told changes it."""
    canonical = {"format": "handover-issue-ack/1", "id": rec.id, **{f: rec.data.get(f) for f in ACK_FIELDS}}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _open_issues(v: Vault, s: Session, client: ClientRef) -> list[Rec]:
    recs = [r for r in v.records.list(s, client, "issue") if r.data.get("status", "open") == "open"]
    order = {sev: i for i, sev in enumerate(validate.SEVERITIES)}
    return sorted(recs, key=lambda r: (order.get(r.data.get("severity", ""), 9), r.data.get("title", "")))


def record_ack(
    v: Vault,
    slug: str,
    by: str,
    role: str | None = None,
    date: str | None = None,
    method: str = "signed-form",
    scan: Path | str | None = None,
    today: dt.date | None = None,
) -> Rec:
    """Record that the client acknowledged every open issue as it stands now (record kind ``ack``).

    A signed scan is stored as an attachment linked from the record. Raises NotFound, InvalidInput
    (no open issues, a date in the future, an unknown method, an unreadable scan).
    """
    from .clock import utcnow

    by = validate.text(by, "acknowledged by", 200, required=True) or ""
    role = validate.text(role, "role", 200)
    if method not in ACK_METHODS:
        raise InvalidInput(f"method {method!r} is not one of {', '.join(ACK_METHODS)}")
    today = today or dt.date.today()
    when = parse_date(date, "acknowledgement date") if date else today
    if when > today:
        raise InvalidInput(f"the acknowledgement date {when} is in the future")
    fh = None
    if scan is not None:
        try:
            fh = Path(scan).open("rb")
        except OSError as exc:
            raise InvalidInput(f"cannot read the scan {scan}: {exc.strerror}") from None
    try:
        with v.write("recording an acknowledgement") as s:
            client = v.clients.get(slug, s)
            issues = _open_issues(v, s, client)
            if not issues:
                raise InvalidInput(f"{client.slug} has no open issues to acknowledge")
            scan_id = None
            if fh is not None:
                att = v.attachments.add_stream(
                    s,
                    client,
                    Path(str(scan)).name,
                    fh,
                    notes=f"signed acknowledgement of known issues by {by}",
                )
                v.attachments.after_write(s, client, att, "add")
                scan_id = att.id
            data = {
                "by": by,
                "role": role,
                "date": when.isoformat(),
                "method": method,
                "scan": scan_id,
                "recorded_at": utcnow(),
                "issues": [
                    {
                        "id": r.id,
                        "version": r.version,
                        "title": r.data.get("title"),
                        "severity": r.data.get("severity"),
                        "sha256": issue_digest(r),
                    }
                    for r in issues
                ],
            }
            rec = v.records.add(s, client, ACK_KIND, data)
            v.audit.append(
                s,
                "issue.ack",
                client=client,
                record_id=rec.id,
                detail={"issues": [r.id for r in issues], "method": method, "scan": scan_id},
            )
            return rec
    finally:
        if fh is not None:
            fh.close()


def acks(v: Vault, s: Session, client: ClientRef) -> list[Rec]:
    """Every acknowledgement record of the client, newest first."""
    recs = v.records.list(s, client, ACK_KIND)
    return sorted(recs, key=lambda r: (r.data.get("date", ""), r.data.get("recorded_at", "")), reverse=True)


def ack_state(v: Vault, client: ClientRef, s: Session | None = None) -> list[dict[str, Any]]:
    """Each open issue (by severity) and whether the client acknowledged it *as it stands now*.

    Keys: id, title, severity, risk, acknowledged, by, role, date, method, ack_id, and
    changed_since_ack (an acknowledgement exists for an earlier content of the issue).
    """
    if s is None:
        with v.read() as s2:
            return ack_state(v, client, s2)
    issues, records = _open_issues(v, s, client), acks(v, s, client)
    out = []
    for rec in issues:
        digest, match, stale = issue_digest(rec), None, False
        for ack in records:
            entries = [e for e in ack.data.get("issues", []) if e.get("id") == rec.id]
            if any(e.get("sha256") == digest for e in entries):
                match = ack
                break
            stale = stale or bool(entries)
        d = match.data if match else {}
        out.append(
            {
                "id": rec.id,
                "title": rec.data.get("title"),
                "severity": rec.data.get("severity"),
                "risk": rec.data.get("risk"),
                "acknowledged": match is not None,
                "by": d.get("by"),
                "role": d.get("role"),
                "date": d.get("date"),
                "method": d.get("method"),
                "ack_id": match.id if match else None,
                "changed_since_ack": match is None and stale,
            }
        )
    return out


def client_ack_state(v: Vault, slug: str) -> tuple[ClientRef, list[dict[str, Any]]]:
    """``ack_state`` for a client named by slug (raises NotFound)."""
    with v.read() as s:
        client = v.clients.get(slug, s)
        return client, ack_state(v, client, s)


def require_notice(client: ClientRef) -> dict[str, Any]:
    """The agreement, or NotFound when no notice was recorded (the letter needs the dates)."""
    a = client.agreement
    if not a.get("effective_end"):
        raise NotFound(
            f"no notice has been recorded for {client.slug}",
            f"record it first: handover end {client.slug} --notice-given DATE --reason TEXT",
        )
    return a
