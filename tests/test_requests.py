"""Requests after the end, through the library: policy, disclosure once, rotation flags, the audit
entries written with the request, fail-closed disclosure and the report."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

SECRET = "Fw-s3cret-0001"
VERIFIED = "called back on the number on file"


@pytest.fixture
def reqs(acme):
    from handover_vault.requests.service import Requests

    acme.contacts.add("acme", name="Bob Intern", email="bob@acme.example")
    acme.creds.add("acme", label="Wi-Fi", secret="wifi-s3cret", category="wifi")
    return Requests(acme)


def end_agreement(v, effective_end: str = "2025-01-31", on_hand_until: str = "2999-12-31") -> None:
    """Mark acme's agreement as ended (the agreement module derives 'ended' from the dates)."""
    with v.write("test: ending") as s:
        client = v.clients.get("acme", s)
        a = {
            **client.agreement,
            "status": "notice-given",
            "notice_given": "2025-01-01",
            "effective_end": effective_end,
            "on_hand_until": on_hand_until,
        }
        v.clients.save(s, client, {**client.data, "agreement": a})


def grant(reqs, **kw: Any):
    args = {
        "requester": "Jane Doe",
        "channel": "phone",
        "verified_by": VERIFIED,
        "decision": "granted",
        "items": ["Firewall admin"],
        **kw,
    }
    return reqs.log("acme", **args)


def all_audit_text(v) -> str:
    return json.dumps([e.to_json() for e in v.audit.events()])


def requests_of(v) -> list:
    with v.read() as s:
        return v.records.list(s, v.clients.get("acme", s), "request")


def test_a_grant_to_an_authorised_verified_contact_after_the_end(reqs) -> None:
    from handover_vault.requests.service import ROTATE_AFTER_END, digest

    v = reqs.v
    end_agreement(v)
    done = grant(reqs)
    assert [r.data["secret"] for r in done.disclosed] == [SECRET]
    assert not done.during_agreement
    d = done.request.data
    assert d["contact"]["name"] == "Jane Doe" and d["contact"]["authorized"] is True
    assert d["agreement"]["status"] == "ended"
    assert d["items"] == d["disclosed"]
    assert [(i["kind"], i["label"], i["version"]) for i in d["items"]] == [("cred", "Firewall admin", 1)]
    assert SECRET not in json.dumps(d)
    _, cred = v.creds.get("acme", "Firewall admin")
    assert cred.data["needs_rotation"] is True
    assert cred.data["rotation_reason"] == ROTATE_AFTER_END == "disclosed after the agreement ended — rotate"
    assert cred.version == 2
    _, flagged = v.creds.list("acme", needs_rotation=True)
    assert [c.data["label"] for c in flagged] == ["Firewall admin"]
    events = v.audit.events()
    log, disclose = events[-2], events[-1]
    assert (log.action, log.record_id, log.seq) == ("request.log", done.request.id, done.seq)
    assert log.detail["sha256"] == digest(d)  # type: ignore[index]
    assert log.detail["decision"] == "granted" and log.detail["verified_by"] == VERIFIED  # type: ignore[index]
    assert (disclose.action, disclose.record_id) == ("request.disclose", cred.id)
    assert disclose.detail == {"request": done.request.id, "kind": "cred", "version": 1, "flagged_version": 2}
    assert SECRET not in all_audit_text(v)
    v.audit.verify()


def test_a_request_during_the_agreement_is_allowed_and_noted(reqs) -> None:
    from handover_vault.requests.service import ROTATE_DURING

    done = grant(reqs)
    assert done.during_agreement
    assert done.request.data["agreement"]["status"] == "active"
    assert reqs.v.creds.get("acme", "Firewall admin")[1].data["rotation_reason"] == ROTATE_DURING


@pytest.mark.parametrize(
    ("requester", "verified_by", "reasons"),
    [
        ("Mallory", VERIFIED, "'Mallory' is not a contact of acme"),
        ("Bob Intern", VERIFIED, "Bob Intern is a contact of acme but not authorised to receive credentials"),
        ("Jane Doe", "none", "identity was not checked (--verified-by none)"),
        ("Jane Doe", "NONE", "identity was not checked (--verified-by none)"),
        (
            "bob@acme.example",
            "none",
            "Bob Intern is a contact of acme but not authorised to receive credentials; "
            "identity was not checked (--verified-by none)",
        ),
    ],
)
def test_an_unauthorised_or_unverified_grant_is_refused_and_nothing_disclosed(
    reqs, requester: str, verified_by: str, reasons: str
) -> None:
    from handover_vault.errors import PolicyRefused

    v = reqs.v
    before = v.audit.verify().seq
    with pytest.raises(PolicyRefused) as exc:
        grant(reqs, requester=requester, verified_by=verified_by)
    assert exc.value.exit_code == 1
    assert str(exc.value) == f"refused to disclose to {requester!r}: {reasons} (nothing was disclosed)"
    assert exc.value.hints == (
        "record the decision instead: --decision denied (or referred)",
        "if you must disclose anyway: --override REASON (kept in the request and the audit log)",
    )
    assert requests_of(v) == []
    assert v.creds.get("acme", "Firewall admin")[1].data["needs_rotation"] is False
    events = v.audit.events()
    assert [e.action for e in events[before:]] == ["request.refused"]
    assert events[-1].detail["reasons"] == reasons.split("; ")  # type: ignore[index]
    assert SECRET not in all_audit_text(v)


def test_an_override_discloses_and_records_the_reason_and_the_rule_broken(reqs) -> None:
    done = grant(reqs, requester="Mallory", verified_by="none", override="owner confirmed in writing")
    d = done.request.data
    assert [r.data["secret"] for r in done.disclosed] == [SECRET]
    assert d["override"] == "owner confirmed in writing"
    assert d["policy"] == [
        "'Mallory' is not a contact of acme",
        "identity was not checked (--verified-by none)",
    ]
    assert d["contact"] is None and d["identity_checked"] is False and d["verified_by"] == "none"
    assert reqs.v.audit.events()[-2].detail["override"] == "owner confirmed in writing"  # type: ignore[index]


@pytest.mark.parametrize("decision", ["denied", "referred"])
def test_denied_and_referred_requests_disclose_nothing(reqs, decision: str) -> None:
    done = reqs.log(
        "acme",
        requester="Mallory",
        channel="email",
        verified_by="none",
        decision=decision,
        items=["Firewall admin", "doc:Network overview"],
        note="asked for 'everything'",
    )
    assert done.disclosed == []
    assert done.request.data["disclosed"] == []
    assert [i["kind"] for i in done.request.data["items"]] == ["cred", "doc"]
    assert reqs.v.creds.get("acme", "Firewall admin")[1].data["needs_rotation"] is False
    assert [e.action for e in reqs.v.audit.events()[-1:]] == ["request.log"]


def test_requester_matching_by_email_id_prefix_and_name_with_email(reqs) -> None:
    v = reqs.v
    _, contacts = v.contacts.list("acme")
    jane = next(c for c in contacts if c.data["name"] == "Jane Doe")
    for who in ("JANE@acme.example", jane.id[:8], "  jane doe ", "Someone <jane@acme.example>"):
        done = grant(reqs, requester=who, decision="denied", items=[])
        assert done.request.data["contact"]["id"] == jane.id, who
    assert grant(reqs, requester=jane.id[:8], decision="denied").request.data["requester"] == "Jane Doe"


def test_two_contacts_with_the_same_name_must_be_named_by_id(reqs) -> None:
    from handover_vault.errors import InvalidInput

    reqs.v.contacts.add("acme", name="Jane Doe", email="other@acme.example")
    with pytest.raises(InvalidInput, match="matches several contacts of acme"):
        grant(reqs)


def test_items_by_kind_id_and_name_and_their_errors(reqs) -> None:
    from handover_vault.errors import InvalidInput, NotFound

    v = reqs.v
    v.assets.add("acme", hostname="Wi-Fi")
    with pytest.raises(InvalidInput, match="'Wi-Fi' names a credential and an asset"):
        grant(reqs, items=["Wi-Fi"])
    with pytest.raises(NotFound, match="no credential or document or asset 'nothing' for client acme"):
        grant(reqs, items=["nothing"])
    with pytest.raises(NotFound, match="no document 'Wi-Fi'"):
        grant(reqs, items=["doc:Wi-Fi"])
    _, fw = v.creds.get("acme", "Firewall admin")
    done = grant(
        reqs, items=["cred:Wi-Fi", "asset:Wi-Fi", fw.id[:8], "Firewall admin", "document:Network overview"]
    )
    assert [i["kind"] for i in done.request.data["items"]] == ["cred", "asset", "cred", "doc"]
    assert sorted(r.data["label"] for r in done.disclosed) == ["Firewall admin", "Wi-Fi"]
    assert [e.action for e in v.audit.events()[-5:]] == ["request.log"] + ["request.disclose"] * 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channel": "fax"}, "channel 'fax' is not one of phone, email, in-person, other"),
        ({"decision": "maybe"}, "decision 'maybe' is not one of granted, denied, referred"),
        ({"verified_by": " "}, "say how the requester's identity was checked"),
        ({"requester": ""}, "requester must not be empty"),
        ({"items": []}, "a granted request names what was disclosed"),
        ({"decision": "denied", "override": "x"}, "--override applies to a granted request only"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(
    reqs, change: dict[str, Any], message: str
) -> None:
    from handover_vault.errors import InvalidInput

    before = reqs.v.audit.verify().seq
    with pytest.raises(InvalidInput) as exc:
        grant(reqs, **change)
    assert str(exc.value) == message
    assert reqs.v.audit.verify().seq == before


def test_fail_closed_when_the_audit_entry_cannot_be_written(reqs, vault_path: Path) -> None:
    from handover_vault import open_vault
    from handover_vault.errors import VaultError
    from handover_vault.requests.service import Requests

    reqs.v.close()
    con = sqlite3.connect(vault_path)
    con.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no'); END")
    con.commit()
    con.close()
    with open_vault(vault_path, passphrase=PASSPHRASE) as v:
        with pytest.raises(VaultError) as exc:
            grant(Requests(v))
        assert SECRET not in str(exc.value)
        assert requests_of(v) == []  # the request, the flag and the entries rolled back together
        assert v.creds.get("acme", "Firewall admin")[1].data["needs_rotation"] is False


def test_list_show_and_the_link_to_the_audit_log(reqs) -> None:
    from handover_vault.errors import InvalidInput, NotFound

    v = reqs.v
    v.clients.add("beta", name="Beta GmbH")
    v.contacts.add("beta", name="Ann", authorized=True)
    v.creds.add("beta", label="Router", secret="r0uter")
    first = grant(reqs)
    second = reqs.log(
        "beta",
        requester="Ann",
        channel="in-person",
        verified_by="photo ID",
        decision="granted",
        items=["Router"],
    )
    assert [x.request.id for x in reqs.list()] == [first.request.id, second.request.id]
    assert [x.request.id for x in reqs.list("beta")] == [second.request.id]
    x = reqs.get(second.request.id[:8])
    assert (x.client.slug, x.seq, x.matches) == ("beta", second.seq, True)
    with pytest.raises(NotFound, match="no request 'ffffffff'"):
        reqs.get("ffffffff")
    with pytest.raises(InvalidInput, match="is not a request id"):
        reqs.get("Ann")
    # A request record changed after it was logged (only the key holder can) no longer matches the log.
    with v.write("test: rewrite") as s:
        client = v.clients.get("beta", s)
        rec = v.records.get(s, client, "request", second.request.id)
        v.records.update_in_place(s, client, rec, {**rec.data, "verified_by": "passport"})
    assert reqs.get(second.request.id).matches is False
    from handover_vault.errors import IntegrityError

    with pytest.raises(IntegrityError, match="does not match its audit entry"):
        reqs.report("beta")


def test_the_report_names_requesters_and_items_but_no_secret(reqs) -> None:
    v = reqs.v
    end_agreement(v)
    grant(reqs, note="Asked on a Sunday.\n<script>alert(1)</script> [x](javascript:alert(1))")
    reqs.log(
        "acme",
        requester="Mallory <m@evil.example>",
        channel="email",
        verified_by="none",
        decision="denied",
        items=["Wi-Fi"],
    )
    text, page = reqs.report("acme")
    for needle in (
        "# Requests received from ACME Ltd",
        "Jane Doe (authorised contact, Office manager)",
        "Mallory \\<m@evil.example\\> (not a contact)",
        "Firewall admin (credential v1)",
        "Wi-Fi (credential v1)",
        "| Requests | 2 (1 granted, 1 denied) |",
        "ended, effective end 2025-01-31",
        "not checked",
        VERIFIED,
        "Firewall admin flagged to be changed",
    ):
        assert needle in text, needle
    for secret in (SECRET, "wifi-s3cret"):
        assert secret not in text and secret not in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'href="javascript' not in page
    assert "<table>" in page and "Jane Doe" in page
    last = v.audit.events()[-1]
    assert last.action == "request.report" and len(last.detail["requests"]) == 2  # type: ignore[index]


def test_find_items_searches_names_of_every_item_kind(reqs) -> None:
    found = reqs.find_items("acme", "fire")
    assert [(k, r.data.get("label") or r.data.get("hostname")) for k, r in found] == [
        ("cred", "Firewall admin")
    ]
    assert {k for k, _ in reqs.find_items("acme", "")} == {"cred", "doc", "asset"}
    assert "secret" not in json.dumps([r.data.get("title") for _, r in reqs.find_items("acme", "w")])
