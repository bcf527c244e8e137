"""handover_vault.agreement: notice arithmetic (pure, with properties), derived status, end, acknowledgements."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handover_vault import agreement as ag
from handover_vault.errors import InvalidInput, NotFound, PolicyRefused

D = dt.date
dates = st.dates(min_value=D(1990, 1, 1), max_value=D(2400, 12, 31))


# --- month arithmetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (D(2027, 1, 31), 1, D(2027, 2, 28)),  # clamped to the month's last day
        (D(2028, 1, 31), 1, D(2028, 2, 29)),  # leap year
        (D(2028, 2, 29), 12, D(2029, 2, 28)),  # leap day, next year has none
        (D(2028, 2, 29), 48, D(2032, 2, 29)),
        (D(2026, 3, 31), 1, D(2026, 4, 30)),
        (D(2026, 12, 15), 1, D(2027, 1, 15)),  # over the year end
        (D(2026, 11, 30), 3, D(2027, 2, 28)),
        (D(2026, 5, 10), 0, D(2026, 5, 10)),
        (D(2026, 5, 10), 24, D(2028, 5, 10)),
    ],
)
def test_add_months(start: dt.date, months: int, expected: dt.date) -> None:
    assert ag.add_months(start, months) == expected


@given(dates, st.integers(min_value=0, max_value=600))
def test_add_months_properties(d: dt.date, months: int) -> None:
    out = ag.add_months(d, months)
    assert (out.year * 12 + out.month) - (d.year * 12 + d.month) == months
    assert out.day <= d.day
    # Either the same day of the month, or clamped to the last day of a shorter month.
    assert out.day == d.day or out == ag.last_day_of_month(out)
    if d.day <= 28:
        assert out.day == d.day
    assert out >= d


# --- earliest end from the notice terms -----------------------------------------------------------


def test_examples_from_the_contract() -> None:
    assert ag.earliest_end(D(2026, 11, 26), {"days": 30}) == D(2026, 12, 26)
    assert ag.earliest_end(D(2026, 11, 10), {"months": 1}, end_of_month=True) == D(2026, 12, 31)
    assert ag.earliest_end(D(2027, 1, 31), {"months": 1}) == D(2027, 2, 28)
    assert ag.earliest_end(D(2028, 1, 31), {"months": 1}) == D(2028, 2, 29)
    assert ag.earliest_end(D(2026, 11, 26), {"days": 30}, end_of_month=True) == D(2026, 12, 31)
    assert ag.earliest_end(D(2027, 11, 30), {"months": 3}, end_of_month=True) == D(2028, 2, 29)
    assert ag.earliest_end(D(2026, 12, 31), {"months": 1}, end_of_month=True) == D(2027, 1, 31)


def test_no_period_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no notice period"):
        ag.earliest_end(D(2026, 1, 1), {})


@given(dates, st.integers(min_value=0, max_value=3650), st.booleans())
def test_days_notice_properties(d: dt.date, days: int, eom: bool) -> None:
    end = ag.earliest_end(d, {"days": days}, end_of_month=eom)
    floor = d + dt.timedelta(days=days)
    assert end >= floor
    if eom:
        assert end == ag.last_day_of_month(end)
        assert (end.year, end.month) == (floor.year, floor.month)
    else:
        assert end == floor


@given(dates, st.integers(min_value=0, max_value=120), st.booleans())
def test_months_notice_properties(d: dt.date, months: int, eom: bool) -> None:
    end = ag.earliest_end(d, {"months": months}, end_of_month=eom)
    floor = ag.add_months(d, months)
    assert end >= floor >= d
    assert (end.year, end.month) == (floor.year, floor.month)
    if eom:
        assert end == ag.last_day_of_month(end)
    if months and not eom:
        assert end > d


# --- plan_end ----------------------------------------------------------------------------------------

TERMS = {"contract_start": "2024-01-01", "notice": {"months": 3}, "end_of_month": True}


def test_plan_end_from_terms() -> None:
    plan = ag.plan_end(TERMS, "2026-11-10")
    assert plan.earliest_end == plan.effective_end == "2027-02-28"
    assert plan.on_hand_days == 90
    assert plan.on_hand_until == "2027-05-29"
    assert plan.terms == "3 months' notice to the end of a calendar month"
    assert not plan.by_agreement


def test_plan_end_window_length_from_contract_or_option() -> None:
    assert ag.plan_end({**TERMS, "on_hand_days": 30}, "2026-11-10").on_hand_until == "2027-03-30"
    assert ag.plan_end(TERMS, "2026-11-10", on_hand_days=0).on_hand_until == "2027-02-28"
    assert ag.plan_end({"notice": {"days": 30}}, "2026-11-26").on_hand_until == "2027-03-26"


def test_later_end_date_is_taken_as_given() -> None:
    plan = ag.plan_end(TERMS, "2026-11-10", end_date="2027-06-30")
    assert (plan.earliest_end, plan.effective_end) == ("2027-02-28", "2027-06-30")


def test_earlier_end_is_refused_without_agreement() -> None:
    with pytest.raises(PolicyRefused) as err:
        ag.plan_end(TERMS, "2026-11-10", end_date="2027-01-15")
    assert str(err.value) == (
        "the notice terms (3 months' notice to the end of a calendar month) allow an end on 2027-02-28 "
        "at the earliest; 2027-01-15 is earlier"
    )
    assert err.value.hints == ("if the client agreed to the earlier date, add --by-agreement",)
    plan = ag.plan_end(TERMS, "2026-11-10", end_date="2027-01-15", by_agreement=True)
    assert (plan.effective_end, plan.by_agreement) == ("2027-01-15", True)


def test_by_agreement_needs_a_date_and_dates_must_be_in_order() -> None:
    with pytest.raises(InvalidInput, match="--by-agreement needs the agreed end date"):
        ag.plan_end(TERMS, "2026-11-10", by_agreement=True)
    with pytest.raises(InvalidInput, match="the end date 2026-11-01 is before the notice date 2026-11-10"):
        ag.plan_end(TERMS, "2026-11-10", end_date="2026-11-01", by_agreement=True)
    with pytest.raises(
        InvalidInput, match=r"notice given on 2023-12-31 is before the contract started \(2024-01-01\)"
    ):
        ag.plan_end(TERMS, "2023-12-31")
    with pytest.raises(InvalidInput, match="is not a date"):
        ag.plan_end(TERMS, "10/11/2026")


def test_no_terms_needs_an_end_date() -> None:
    with pytest.raises(InvalidInput) as err:
        ag.plan_end({"contract_start": "2024-01-01"}, "2026-11-10")
    assert str(err.value) == "this client has no notice terms on file, so the end date cannot be computed"
    assert "give the agreed end date with --end-date DATE" in err.value.hints
    plan = ag.plan_end({}, "2026-11-10", end_date="2026-12-01")
    assert (plan.earliest_end, plan.effective_end, plan.terms) == (None, "2026-12-01", "no notice period")


@given(
    dates,
    st.one_of(
        st.builds(lambda n: {"days": n}, st.integers(0, 400)),
        st.builds(lambda n: {"months": n}, st.integers(0, 36)),
    ),
    st.booleans(),
    st.integers(-400, 400),
)
def test_plan_end_never_ends_before_the_notice_allows(
    d: dt.date, notice: dict, eom: bool, shift: int
) -> None:
    terms = {"notice": notice, "end_of_month": eom}
    earliest = ag.earliest_end(d, notice, eom)
    wanted = earliest + dt.timedelta(days=shift)
    if wanted < d:
        with pytest.raises(InvalidInput):
            ag.plan_end(terms, d, end_date=wanted, by_agreement=True)
        return
    if wanted < earliest:
        with pytest.raises(PolicyRefused):
            ag.plan_end(terms, d, end_date=wanted)
        assert ag.plan_end(terms, d, end_date=wanted, by_agreement=True).effective_end == wanted.isoformat()
    else:
        plan = ag.plan_end(terms, d, end_date=wanted)
        assert D.fromisoformat(plan.effective_end) >= earliest >= d


# --- derived status ----------------------------------------------------------------------------------

NOTICE = {
    "status": "notice-given",
    "notice_given": "2026-11-26",
    "effective_end": "2026-12-26",
    "on_hand_until": "2027-03-26",
    "contract_start": "2024-01-01",
}


@pytest.mark.parametrize(
    ("today", "status", "line"),
    [
        (D(2026, 11, 26), "notice-given", "notice-given (ends 2026-12-26)"),
        (D(2026, 12, 26), "notice-given", "notice-given (ends 2026-12-26)"),  # the last day still runs
        (D(2026, 12, 27), "ended", "ended (on hand until 2027-03-26)"),
        (D(2027, 3, 26), "ended", "ended (on hand until 2027-03-26)"),
        (D(2027, 3, 27), "archived", "archived: due to be forgotten (on-hand window ended 2027-03-26)"),
    ],
)
def test_status_is_derived_from_the_dates(today: dt.date, status: str, line: str) -> None:
    assert ag.effective_status(NOTICE, today) == status
    assert ag.status_line(NOTICE, today) == line
    assert ag.due_to_be_forgotten(NOTICE, today) == (status == "archived")


def test_active_and_timeline() -> None:
    assert ag.status_line({"status": "active"}) == "active"
    steps = ag.timeline(NOTICE, D(2027, 1, 5))
    assert [(s["status"], s["date"], s["reached"]) for s in steps] == [
        ("active", "2024-01-01", True),
        ("notice-given", "2026-11-26", True),
        ("ended", "2026-12-26", True),
        ("archived", "2027-03-26", False),
    ]


def test_notice_terms_text() -> None:
    assert ag.notice_terms_text({"notice": {"days": 1}}) == "1 day's notice"
    assert ag.notice_terms_text({"notice": {"days": 30}}) == "30 days' notice"
    assert ag.notice_terms_text({"notice": {"months": 1}, "end_of_month": True}) == (
        "1 month's notice to the end of a calendar month"
    )


# --- recording the end in a vault --------------------------------------------------------------------


def test_end_records_notice_and_shows_in_the_profile(acme) -> None:
    v = acme
    client, plan = ag.end_agreement(
        v, "acme", "2026-11-26", ["We are retiring", "Moving abroad"], today=D(2026, 11, 26)
    )
    assert plan.effective_end == "2026-12-26"
    a = v.clients.get("acme").agreement
    assert a["status"] == "notice-given"
    assert a["history"][-1]["status"] == "notice-given" and a["history"][-1]["date"] == "2026-11-26"
    assert a["reason"] == "We are retiring; Moving abroad"
    assert a["reasons"] == ["We are retiring", "Moving abroad"]
    assert (a["effective_end"], a["on_hand_until"], a["on_hand_days"]) == ("2026-12-26", "2027-03-26", 90)
    assert ag.status_line(client, D(2026, 12, 1)) == "notice-given (ends 2026-12-26)"
    d = ag.describe(client, D(2027, 1, 1))
    assert d["effective_status"] == "ended" and d["notice_terms"] == "30 days' notice"
    actions = [e.action for e in v.audit.events(client.id)]
    assert actions[-1] == "agreement.notice"


def test_end_twice_needs_amend_and_amend_needs_running_notice(acme) -> None:
    v = acme
    today = D(2026, 11, 26)
    with pytest.raises(PolicyRefused, match="no running notice to amend"):
        ag.end_agreement(v, "acme", "2026-11-26", "x", amend=True, today=today)
    ag.end_agreement(v, "acme", "2026-11-26", "x", today=today)
    with pytest.raises(PolicyRefused) as err:
        ag.end_agreement(v, "acme", "2026-11-27", "x", today=today)
    assert str(err.value) == (
        "notice for acme was already recorded on 2026-11-26; status: notice-given (ends 2026-12-26)"
    )
    _, plan = ag.end_agreement(v, "acme", "2026-11-27", "x", amend=True, today=today)
    assert plan.effective_end == "2026-12-27"
    hist = v.clients.get("acme").agreement["history"]
    assert hist[-1].get("amended") is True and len(hist) == 3
    # Once the end has passed, the dates are history: no more amending.
    with pytest.raises(PolicyRefused, match="no running notice to amend for acme; status: ended"):
        ag.end_agreement(v, "acme", "2026-11-27", "x", amend=True, today=D(2027, 1, 1))


def test_dry_run_writes_nothing_and_errors_leave_the_client_alone(acme) -> None:
    v = acme
    before = v.clients.get("acme").version
    _, plan = ag.end_agreement(v, "acme", "2026-11-26", "x", dry_run=True)
    assert plan.effective_end == "2026-12-26"
    with pytest.raises(PolicyRefused):
        ag.end_agreement(v, "acme", "2026-11-26", "x", end_date="2026-12-01")
    with pytest.raises(InvalidInput, match="give the reason"):
        ag.end_agreement(v, "acme", "2026-11-26", [])
    assert v.clients.get("acme").version == before
    with pytest.raises(NotFound):
        ag.end_agreement(v, "nobody", "2026-11-26", "x")


# --- acknowledgement -----------------------------------------------------------------------------------


def test_ack_covers_open_issues_as_they_stand(acme, tmp_path) -> None:
    v = acme
    v.issues.add("acme", title="No UPS", severity="critical", risk="outage", workaround="none")
    resolved = v.issues.add("acme", title="Old printer", severity="low")
    v.issues.resolve("acme", resolved.id)
    client = v.clients.get("acme")
    assert [r["acknowledged"] for r in ag.ack_state(v, client)] == [False, False]
    scan = tmp_path / "signed.pdf"
    scan.write_bytes(b"%PDF-1.4 signed form")
    rec = ag.record_ack(
        v,
        "acme",
        "Jane Doe",
        role="Office manager",
        date="2026-11-20",
        method="signed-form",
        scan=scan,
        today=D(2026, 11, 26),
    )
    state = ag.ack_state(v, client)
    assert [s["title"] for s in state] == ["No UPS", "Backups untested"]  # by severity; resolved left out
    assert all(s["acknowledged"] and s["by"] == "Jane Doe" and s["date"] == "2026-11-20" for s in state)
    _, att = v.attachments.get("acme", rec.data["scan"])
    assert att.data["name"] == "signed.pdf" and att.data["size"] == len(b"%PDF-1.4 signed form")
    assert "issue.ack" in [e.action for e in v.audit.events(client.id)]


def test_editing_an_issue_withdraws_its_acknowledgement_and_readiness_sees_it(acme) -> None:
    from handover_vault.readiness import check

    v = acme
    crit = v.issues.add("acme", title="No UPS", severity="critical", risk="outage", workaround="none")
    codes = {g.code for g in check(v, "acme").blocking}
    assert "critical-unacknowledged" in codes
    ag.record_ack(v, "acme", "Jane Doe")
    assert "critical-unacknowledged" not in {g.code for g in check(v, "acme").blocking}
    v.issues.edit("acme", crit.id, risk="outage and data loss")
    client = v.clients.get("acme")
    row = next(s for s in ag.ack_state(v, client) if s["id"] == crit.id)
    assert (row["acknowledged"], row["changed_since_ack"], row["by"]) == (False, True, None)
    other = next(s for s in ag.ack_state(v, client) if s["id"] != crit.id)
    assert other["acknowledged"]  # an untouched issue stays acknowledged
    assert "critical-unacknowledged" in {g.code for g in check(v, "acme").blocking}
    ag.record_ack(v, "acme", "Jane Doe", method="email")
    assert all(s["acknowledged"] for s in ag.ack_state(v, client))


def test_ack_refusals(acme, tmp_path) -> None:
    v = acme
    with pytest.raises(InvalidInput, match="is in the future"):
        ag.record_ack(v, "acme", "Jane", date="2026-12-01", today=D(2026, 11, 26))
    with pytest.raises(InvalidInput, match="method 'fax' is not one of signed-form, email, in-person"):
        ag.record_ack(v, "acme", "Jane", method="fax")
    with pytest.raises(InvalidInput, match="cannot read the scan"):
        ag.record_ack(v, "acme", "Jane", scan=tmp_path / "missing.pdf")
    for issue in v.issues.list("acme")[1]:
        v.issues.resolve("acme", issue.id)
    with pytest.raises(InvalidInput, match="acme has no open issues to acknowledge"):
        ag.record_ack(v, "acme", "Jane")
    with v.read() as s:
        assert v.records.count(s, v.clients.get("acme"), "ack") == 0


# --- the letter ------------------------------------------------------------------------------------------


def test_fill_substitutes_once_and_reports_unknown_placeholders() -> None:
    from handover_vault.letter import fill

    assert fill("Dear {{ name }}, {{name}}.", {"name": "{{evil}}"}) == "Dear {{evil}}, {{evil}}."
    assert fill("<!-- a note with {{whatever}} -->\nHello {{x}}\n", {"x": "you"}) == "Hello you\n"
    with pytest.raises(InvalidInput) as err:
        fill("Hi {{name}}\n\n{{ 7*7 }} and {{nmae}}\n{{nmae}}", {"name": "x"})
    assert str(err.value) == "the template uses unknown placeholders: {{7*7}} (line 3), {{nmae}} (line 3)"


def _letter_vault(v, secret: str = "Pl4nted-S3cret-Value"):
    v.creds.add(
        "acme",
        label="Tenant admin",
        username="admin@acme.example",
        secret=secret,
        category="tenant-admin",
        totp="otpauth://totp/acme?secret=JBSWY3DPEHPK3PXPJBSWY3DP",
    )
    v.creds.rotate("acme", "Tenant admin", "Older-Rotated-S3cret")
    v.issues.add(
        "acme",
        title="Switch <script>alert(1)</script> EOL",
        severity="critical",
        risk="no security updates",
        workaround="replace it",
    )
    with v.write("test: successor") as s:
        c = v.clients.get("acme", s)
        v.clients.save(
            s,
            c,
            {
                **c.data,
                "successor": {"name": "Sam Successor", "org": "NextIT", "email": "sam@nextit.example"},
            },
        )
    ag.end_agreement(v, "acme", "2026-11-26", ["We are retiring from field service"])
    return v


def test_letter_content_and_no_secret(acme) -> None:
    from handover_vault.letter import compose

    v = _letter_vault(acme)
    title, md, html = compose(
        v, "acme", sender="Alex Tech", sender_contact="+44 20 7946 0000", today=D(2026, 11, 26)
    )
    assert title == "Ending our agreement: ACME Ltd"
    for text in (md, html):
        for expected in (
            "ACME Ltd",
            "2026-12-26",
            "We are retiring from field service",
            "Backups untested",
            "data loss",
            "no security updates",
            "Sam Successor",
            "NextIT",
            "Jane Doe",
            "Alex Tech",
            "+44 20 7946 0000",
            "2027-03-26",
            "call back",
            v.fingerprint,
        ):
            assert expected in text, expected
        for secret in ("Pl4nted-S3cret-Value", "Older-Rotated-S3cret", "Fw-s3cret-0001", "JBSWY3DP"):
            assert secret not in text
    assert "30 days' notice. Notice is given on 2026-11-26, so the agreement ends on 2026-12-26." in md
    assert "1. **Switch <script>alert(1)</script> EOL** (critical)" in md  # critical first
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<!--" not in md


def test_letter_mentions_agreed_date_and_acknowledgements(acme) -> None:
    from handover_vault.letter import compose

    v = acme
    ag.record_ack(v, "acme", "Jane Doe", date="2026-11-20", today=D(2026, 11, 26))
    ag.end_agreement(v, "acme", "2026-11-26", "Retiring", end_date="2026-12-05", by_agreement=True)
    _, md, _ = compose(v, "acme")
    assert (
        "that would end the agreement on 2026-12-26. As agreed between us, it ends earlier, on 2026-12-05."
        in md
    )
    assert "Acknowledged by Jane Doe on 2026-11-20." in md
    assert "[your name]" in md and "[your telephone number and email address]" in md


def test_letter_needs_notice_and_known_placeholders(acme, tmp_path) -> None:
    from handover_vault.letter import PLACEHOLDERS, compose, default_template

    with pytest.raises(NotFound) as err:
        compose(acme, "acme")
    assert str(err.value) == "no notice has been recorded for acme"
    assert err.value.hints == ("record it first: handover end acme --notice-given DATE --reason TEXT",)
    ag.end_agreement(acme, "acme", "2026-11-26", "Retiring")
    for name in PLACEHOLDERS:  # every placeholder is documented in the shipped template
        assert f"  {name} " in default_template()
    _, md, _ = compose(acme, "acme", template="{{client_name}} ends {{effective_end}} {{vault_fingerprint}}")
    assert md == f"ACME Ltd ends 2026-12-26 {acme.fingerprint}"
    with pytest.raises(InvalidInput, match=r"unknown placeholders: \{\{client\}\} \(line 1\)"):
        compose(acme, "acme", template="{{client}}")


def test_write_letter_files_are_private_and_not_overwritten(acme, tmp_path) -> None:
    import os
    import stat

    from handover_vault.errors import AlreadyExists
    from handover_vault.letter import write_letter

    ag.end_agreement(acme, "acme", "2026-11-26", "Retiring")
    paths = write_letter(acme, "acme", tmp_path)
    assert [p.name for p in paths] == ["acme-termination-letter.md", "acme-termination-letter.html"]
    for p in paths:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    paths[0].write_text("mine")
    with pytest.raises(
        AlreadyExists, match=r"acme-termination-letter\.md already exists; refusing to overwrite it"
    ):
        write_letter(acme, "acme", tmp_path)
    assert paths[0].read_text() == "mine"
    write_letter(acme, "acme", tmp_path, force=True)
    assert "ACME Ltd" in paths[0].read_text()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
