"""`handover request ...` through the installed command (subprocess, no TTY), plus the interactive
mode through CliRunner with a pretend terminal."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, run

pytestmark = pytest.mark.engines  # every test that does not reach into the SQLite file

SECRET = "Fw-s3cret-0001"
TOTP = "otpauth://totp/acme:wifi?secret=JBSWY3DPEHPK3PXPJBSWY3DP"
GRANT = [
    "request",
    "log",
    "acme",
    "--requester",
    "Jane Doe",
    "--channel",
    "phone",
    "--verified-by",
    "called back on the number on file",
    "--item",
    "Firewall admin",
    "--decision",
    "granted",
]


@pytest.fixture
def ended(acme, vault_target: Path | str) -> Path | str:
    """acme with an ended agreement, an unauthorised contact, a second credential; vault closed."""
    acme.contacts.add("acme", name="Bob Intern", email="bob@acme.example")
    acme.creds.add("acme", label="Wi-Fi", secret="wifi-s3cret", totp=TOTP)
    with acme.write("test: ending") as s:
        client = acme.clients.get("acme", s)
        a = {
            **client.agreement,
            "status": "notice-given",
            "notice_given": "2025-01-01",
            "effective_end": "2025-01-31",
            "on_hand_until": "2999-12-31",
        }
        acme.clients.save(s, client, {**client.data, "agreement": a})
    acme.close()
    return vault_target


def out(done: Any) -> str:
    return done.stdout + done.stderr


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def hv(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Done]:
    """The same entry point as the installed command, in this process (for the follow-up checks that
    need no process boundary; the behaviour under test runs through ``run`` in a subprocess)."""
    import os

    from handover_vault.cli.main import main

    def call(args: list[str], vault: Path | str) -> Done:
        monkeypatch.setenv("HANDOVER_DB_URL" if "://" in str(vault) else "HANDOVER_VAULT", str(vault))
        monkeypatch.setenv("HANDOVER_PASSPHRASE", PASSPHRASE)
        capsys.readouterr()
        umask = os.umask(0o077)
        try:
            with pytest.raises(SystemExit) as exc:
                main(args)
        finally:
            os.umask(umask)
        captured = capsys.readouterr()
        return Done(int(exc.value.code or 0), captured.out, captured.err)

    return call


def test_granted_to_an_authorised_verified_contact_shows_the_secret_once_and_flags_it(
    ended: Path, hv
) -> None:
    done = run(GRANT, vault=ended)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(SECRET) == 1
    assert "Disclosed — shown this once; neither the request nor the audit log keeps it:" in done.stdout
    assert "Flagged for rotation: Firewall admin (handover cred list acme --needs-rotation)." in done.stdout
    assert "still in force" not in done.stderr
    flagged = hv(["cred", "list", "acme", "--needs-rotation", "--json"], ended)
    [cred] = json.loads(flagged.stdout)
    assert (cred["label"], cred["needs_rotation"]) == ("Firewall admin", True)
    assert cred["rotation_reason"] == "disclosed after the agreement ended — rotate"
    table = hv(["cred", "list", "acme", "--needs-rotation"], ended).stdout
    assert "Firewall admin" in table and "Wi-Fi" not in table
    # Shown once: nothing afterwards carries it.
    for args in (
        ["request", "list", "--json"],
        ["request", "report", "acme"],
        ["audit", "list", "--json"],
        ["request", "list"],
    ):
        later = hv(args, ended)
        assert later.returncode == 0, later.stderr
        assert SECRET not in out(later), args


@pytest.mark.parametrize(
    ("requester", "verified_by", "why"),
    [
        ("Mallory", "knew the office address", "'Mallory' is not a contact of acme"),
        (
            "Bob Intern",
            "called back",
            "Bob Intern is a contact of acme but not authorised to receive credentials",
        ),
        ("Jane Doe", "none", "identity was not checked (--verified-by none)"),
    ],
)
def test_an_unauthorised_or_unverified_grant_is_refused_without_showing_anything(
    ended: Path, hv, requester: str, verified_by: str, why: str
) -> None:
    args = [*GRANT]
    args[args.index("Jane Doe")] = requester
    args[args.index("called back on the number on file")] = verified_by
    done = run(args, vault=ended)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"Error: refused to disclose to {requester!r}: {why} (nothing was disclosed)",
        "hint: record the decision instead: --decision denied (or referred)",
        "hint: if you must disclose anyway: --override REASON (kept in the request and the audit log)",
    ]
    assert json.loads(hv(["cred", "list", "acme", "--needs-rotation", "--json"], ended).stdout) == []
    assert json.loads(hv(["request", "list", "--json"], ended).stdout) == []
    refused = json.loads(hv(["audit", "list", "--action", "request.refused", "--json"], ended).stdout)
    assert [e["detail"]["reasons"] for e in refused] == [[why]]


def test_an_override_discloses_and_says_which_rule_it_broke(ended: Path, hv) -> None:
    args = [*GRANT, "--override", "the owner confirmed by signed letter"]
    args[args.index("Jane Doe")] = "Mallory"
    done = hv(args, ended)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(SECRET) == 1
    assert (
        "Policy overridden ('Mallory' is not a contact of acme): the owner confirmed by signed letter"
        in done.stderr
    )


def test_a_request_while_the_agreement_is_active_is_noted(acme, vault_path: Path, hv) -> None:
    acme.close()
    done = hv(GRANT, vault_path)
    assert done.returncode == 0, done.stderr
    assert (
        "Note: the agreement with acme is still in force (active); recorded as a request during the "
        "agreement."
    ) in done.stderr
    [cred] = json.loads(hv(["cred", "list", "acme", "--needs-rotation", "--json"], vault_path).stdout)
    assert cred["rotation_reason"] == "disclosed on request while the agreement was still active — rotate"


def test_missing_flags_without_a_terminal_are_a_usage_error(ended: Path, hv) -> None:
    done = run(["request", "log", "acme", "--requester", "Jane Doe", "--channel", "phone"], vault=ended)
    assert done.returncode == 2
    assert "Error: missing --verified-by, --decision (no terminal to ask on)" in done.stderr
    bad = hv([*GRANT[:-1], "maybe"], ended)
    assert bad.returncode == 2
    assert "'maybe' is not one of 'granted', 'denied', 'referred'" in bad.stderr


def test_list_show_and_report_files(ended: Path, tmp_path: Path, hv) -> None:
    assert hv(GRANT, ended).returncode == 0
    denied = hv(
        [
            "request",
            "log",
            "acme",
            "--requester",
            "Mallory <m@evil.example>",
            "--channel",
            "email",
            "--verified-by",
            "none",
            "--item",
            "Wi-Fi",
            "--item",
            "doc:Network overview",
            "--decision",
            "denied",
            "--note",
            "<script>alert(1)</script>",
        ],
        ended,
    )
    assert denied.returncode == 0, denied.stderr
    assert "Disclosed" not in denied.stdout
    listed = json.loads(hv(["request", "list", "acme", "--json"], ended).stdout)
    assert [(r["decision"], r["matches_audit"]) for r in listed] == [("granted", True), ("denied", True)]
    shown = hv(["request", "show", listed[1]["id"][:8], "--json"], ended)
    assert json.loads(shown.stdout)["audit_seq"] == listed[1]["audit_seq"]
    human = hv(["request", "show", listed[0]["id"]], ended).stdout
    assert "contact    Jane Doe (authorised" in human and f"entry {listed[0]['audit_seq']} (matches)" in human
    report = run(["request", "report", "acme", "--out", str(tmp_path / "acme-requests.md")], vault=ended)
    assert report.returncode == 0, report.stderr
    md, html = tmp_path / "acme-requests.md", tmp_path / "acme-requests.html"
    assert report.stdout == f"Wrote {md} and {html}.\n"
    for f in (md, html):
        assert f.stat().st_mode & 0o777 == 0o600
        text = f.read_text()
        assert (
            "Jane Doe" in text
            and "Mallory" in text
            and "Firewall admin" in text
            and "Network overview" in text
        )
        assert SECRET not in text and "wifi-s3cret" not in text
    assert "<script>" not in html.read_text()
    assert not list(tmp_path.glob(".*tmp*"))
    assert hv(["request", "show", "ffffffff"], ended).returncode == 1


def test_every_reveal_and_disclosure_is_in_the_log(ended: Path, hv) -> None:
    for args in (
        ["cred", "show", "acme", "Firewall admin", "--reveal"],
        ["cred", "totp", "acme", "Wi-Fi"],
        ["cred", "history", "acme", "Firewall admin", "--reveal"],
        GRANT,
    ):
        done = hv(args, ended)
        assert done.returncode == 0, (args, done.stderr)
    events = json.loads(hv(["audit", "list", "--client", "acme", "--json"], ended).stdout)
    reveals = [
        (e["action"], (e["detail"] or {}).get("purpose"))
        for e in events
        if e["action"] in ("cred.reveal", "request.disclose")
    ]
    assert reveals == [
        ("cred.reveal", "show"),
        ("cred.reveal", "totp"),
        ("cred.reveal", "history"),
        ("request.disclose", None),
    ]
    assert SECRET not in json.dumps(events) and "JBSWY3DP" not in json.dumps(events)
    assert hv(["audit", "verify"], ended).returncode == 0


@pytest.mark.sqlite_only  # an SQLite trigger makes the audit table refuse
def test_nothing_is_disclosed_when_the_audit_entry_cannot_be_written(ended: Path, hv) -> None:
    con = sqlite3.connect(ended)
    con.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no'); END")
    con.commit()
    con.close()
    for args in (
        ["cred", "show", "acme", "Firewall admin", "--reveal"],
        ["cred", "totp", "acme", "Wi-Fi"],
        ["cred", "history", "acme", "Firewall admin", "--reveal"],
        GRANT,
    ):
        done = (
            run(args, vault=ended)
            if args in (GRANT, ["cred", "show", "acme", "Firewall admin", "--reveal"])
            else hv(args, ended)
        )
        assert done.returncode != 0, args
        assert done.stderr.startswith("Error: ")
        assert SECRET not in out(done) and "wifi-s3cret" not in out(done)
    con = sqlite3.connect(ended)
    con.execute("DROP TRIGGER no_audit")
    con.commit()
    con.close()
    assert json.loads(hv(["cred", "list", "acme", "--needs-rotation", "--json"], ended).stdout) == []
    assert json.loads(hv(["request", "list", "--json"], ended).stdout) == []


def test_two_dozen_requests_from_four_processes_at_once(ended: Path, hv) -> None:
    results: list[Any] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(6):
            done = run([*GRANT, "--note", f"worker {n} request {i}"], vault=ended)
            with lock:
                results.append(done)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0] * 24, [r.stderr for r in results if r.returncode]
    assert all(r.stdout.count(SECRET) == 1 for r in results)
    verify = run(["audit", "verify"], vault=ended)
    assert verify.returncode == 0, verify.stderr
    listed = json.loads(hv(["request", "list", "--json"], ended).stdout)
    assert len(listed) == 24 and all(r["matches_audit"] for r in listed)
    assert len({r["audit_seq"] for r in listed}) == 24
    [cred] = json.loads(hv(["cred", "list", "acme", "--needs-rotation", "--json"], ended).stdout)
    assert cred["version"] == 25  # each grant flagged the version it disclosed: no lost update


# --- interactive (a pretend terminal) --------------------------------------------------------------


def _interactive(ended: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> Any:
    from click.testing import CliRunner

    from handover_vault.cli import requests as cli_requests
    from handover_vault.cli.main import cli

    monkeypatch.setattr(cli_requests, "_stdin_tty", lambda: True)
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE)
    where = "HANDOVER_DB_URL" if "://" in str(ended) else "HANDOVER_VAULT"
    env = {"HANDOVER_PASSPHRASE_FILE": str(pw), where: str(ended)}
    return CliRunner().invoke(cli, ["request", "log", "acme"], input="\n".join(answers) + "\n", env=env)


def test_interactive_log_picks_the_requester_and_items_and_confirms(
    ended: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hv
) -> None:
    answers = ["1", "phone", "called back on the number on file", "fire", "1", "", "granted", "", "y"]
    result = _interactive(ended, tmp_path, monkeypatch, answers)
    assert result.exit_code == 0, result.output
    assert result.stdout.count(SECRET) == 1
    assert "1) Jane Doe (Office manager, jane@acme.example) — authorised" in result.output
    assert "cred  Firewall admin" in result.output
    [req] = json.loads(hv(["request", "list", "--json"], ended).stdout)
    assert (req["requester"], req["channel"], req["decision"]) == ("Jane Doe", "phone", "granted")


def test_interactive_refusal_when_no_override_is_given(
    ended: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handover_vault.errors import PolicyRefused

    answers = ["Mallory", "phone", "none", "Firewall admin", "1", "", "granted", "", "", "y"]
    result = _interactive(ended, tmp_path, monkeypatch, answers)
    assert isinstance(result.exception, PolicyRefused)
    assert (
        "Policy: 'Mallory' is not a contact of acme; identity was not checked (--verified-by none)."
        in result.output
    )
    assert SECRET not in result.output


def test_a_request_after_the_on_hand_window_reminds_that_the_data_is_due_to_be_forgotten(
    acme, vault_path, hv
) -> None:
    with acme.write("test: window over") as s:
        client = acme.clients.get("acme", s)
        a = {
            **client.agreement,
            "status": "notice-given",
            "notice_given": "2025-01-01",
            "effective_end": "2025-01-31",
            "on_hand_until": "2025-05-01",
        }
        acme.clients.save(s, client, {**client.data, "agreement": a})
    acme.close()
    done = hv([*GRANT[:-1], "denied"], vault_path)
    assert done.returncode == 0, done.stderr
    assert (
        "Note: the on-hand window for acme ended 2025-05-01; its data is due to be forgotten "
        "(handover forget acme)."
    ) in done.stderr
