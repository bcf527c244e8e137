"""end, letter, issue ack, forget and certificate on the command line.

Most checks call ``cli.main.main`` in this process (the same entry point, error handler and exit
codes as the console script, without paying for a new interpreter each time); the forget workflow
runs end to end through the installed ``handover`` command in a subprocess with no TTY.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from pathlib import Path

import pytest

from handover_vault.letter import default_template
from tests.conftest import PASSPHRASE, run
from tests.test_forget import client_blobs, found, vault_bytes


@pytest.fixture
def cli_vault(acme, vault_path):
    """The conftest's acme client plus 'old', whose agreement ended long ago; returns the vault path."""
    acme.clients.add("old", name="Old Co", contract_start="2020-01-01", notice_months=1, end_of_month=True)
    acme.contacts.add("old", name="Olga Old", role="Owner", phone="+1 555 0100", authorized=True)
    acme.creds.add(
        "old", label="Old router", username="root", secret="Old-r0uter-s3cret", category="firewall"
    )
    acme.issues.add("old", title="Flaky UPS", severity="medium", risk="outage")
    acme.clients.add("bare", name="Bare Ltd")  # no notice terms at all
    return vault_path


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(args, vault)``: run ``handover args`` in-process; a Result like subprocess's."""
    from handover_vault.cli import context
    from handover_vault.cli.main import main

    # main() moves secret variables into this module-level dict: keep ours from outliving the test.
    monkeypatch.setattr(context, "_secrets", {})

    def invoke(args: list[str], vault: Path | None = None, passphrase: str | None = PASSPHRASE) -> Result:
        if vault is not None:
            monkeypatch.setenv("HANDOVER_VAULT", str(vault))
        if passphrase is not None:
            monkeypatch.setenv("HANDOVER_PASSPHRASE", passphrase)
        capsys.readouterr()
        mask = os.umask(0o022)
        os.umask(mask)
        try:
            with pytest.raises(SystemExit) as done:
                main(args)
        finally:
            os.umask(mask)
        out, err = capsys.readouterr()
        return Result(int(done.value.code or 0), out, err)

    return invoke


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_end_computes_the_date_and_refuses_an_early_end(cli, cli_vault) -> None:
    today = dt.date.today()
    end, until = today + dt.timedelta(days=30), today + dt.timedelta(days=120)
    early = cli(
        [
            "end",
            "acme",
            "--notice-given",
            today.isoformat(),
            "--reason",
            "Retiring",
            "--end-date",
            (today + dt.timedelta(days=10)).isoformat(),
        ],
        cli_vault,
    )
    assert early.returncode == 1
    assert early.stderr == (
        f"Error: the notice terms (30 days' notice) allow an end on {end} at the earliest; "
        f"{today + dt.timedelta(days=10)} is earlier\n"
        "hint: if the client agreed to the earlier date, add --by-agreement\n"
    )
    out = ok(
        cli(
            [
                "end",
                "acme",
                "--notice-given",
                today.isoformat(),
                "--reason",
                "We are retiring",
                "--reason",
                "Moving abroad",
            ],
            cli_vault,
        )
    )
    assert f"Recorded notice for acme (ACME Ltd) given on {today}." in out
    assert f"effective end  {end} (30 days' notice)" in out
    assert f"on hand until  {until} (90 days after the end)" in out
    assert f"status         notice-given (ends {end})" in out
    listing = ok(cli(["client", "list"], cli_vault))
    assert f"notice-given (ends {end})" in listing
    shown = json.loads(ok(cli(["client", "show", "acme", "--json"], cli_vault)))
    a = shown["agreement"]
    assert (a["status"], a["notice_given"], a["effective_end"], a["on_hand_until"]) == (
        "notice-given",
        today.isoformat(),
        end.isoformat(),
        until.isoformat(),
    )
    assert a["reasons"] == ["We are retiring", "Moving abroad"]
    again = cli(["end", "acme", "--notice-given", today.isoformat(), "--reason", "x"], cli_vault)
    assert again.returncode == 1
    assert again.stderr.startswith(
        f"Error: notice for acme was already recorded on {today}; status: notice-given"
    )


def test_end_without_terms_and_dry_run_json(cli, cli_vault) -> None:
    bare = cli(["end", "bare", "--notice-given", "2026-11-10", "--reason", "x"], cli_vault)
    assert bare.returncode == 1
    assert bare.stderr == (
        "Error: this client has no notice terms on file, so the end date cannot be computed\n"
        "hint: give the agreed end date with --end-date DATE\n"
        "hint: or record the terms first: handover client edit SLUG --notice-days N | --notice-months N\n"
    )
    plan = json.loads(
        ok(
            cli(
                ["end", "old", "--notice-given", "2026-11-10", "--reason", "x", "--dry-run", "--json"],
                cli_vault,
            )
        )
    )
    assert (plan["effective_end"], plan["on_hand_until"], plan["recorded"]) == (
        "2026-12-31",
        "2027-03-31",
        False,
    )
    shown = json.loads(ok(cli(["client", "show", "old", "--json"], cli_vault)))
    assert shown["agreement"]["status"] == "active"
    missing = cli(["end", "old", "--notice-given", "2026-11-10"], cli_vault)
    assert missing.returncode == 2 and "Missing option '--reason'" in missing.stderr


def test_ack_and_letter(cli, cli_vault, acme, tmp_path) -> None:
    scan = tmp_path / "signed-form.pdf"
    scan.write_bytes(b"%PDF-1.4 signed")
    out = ok(
        cli(
            [
                "issue",
                "ack",
                "acme",
                "--by",
                "Jane Doe",
                "--role",
                "Office manager",
                "--date",
                "2026-11-20",
                "--method",
                "signed-form",
                "--scan",
                str(scan),
            ],
            cli_vault,
        )
    )
    assert (
        "Recorded the acknowledgement by Jane Doe (Office manager) on 2026-11-20 (signed-form) of 1 open issue(s)"
        in out
    )
    assert "Signed scan stored as attachment" in out
    assert "Jane Doe, 2026-11-20" in out
    assert "signed-form.pdf" in ok(cli(["attach", "list", "acme"], cli_vault))

    no_notice = cli(["letter", "acme", "--out", str(tmp_path)], cli_vault)
    assert no_notice.returncode == 1
    assert no_notice.stderr == (
        "Error: no notice has been recorded for acme\n"
        "hint: record it first: handover end acme --notice-given DATE --reason TEXT\n"
    )
    ok(
        cli(
            ["end", "acme", "--notice-given", "2026-11-26", "--reason", "We are retiring from field service"],
            cli_vault,
        )
    )
    acme.issues.edit("acme", "Backups untested", risk="data loss, and ransomware")  # after the ack
    letters = tmp_path / "letters"
    letters.mkdir()
    res = cli(["letter", "acme", "--out", str(letters), "--sender", "Alex Tech"], cli_vault)
    assert res.returncode == 0, res.stderr
    assert res.stderr.endswith(
        "note: the letter has blanks in [brackets]; fill them in or pass --sender-contact\n"
    )
    assert res.stderr.startswith("warning: the notice date 2026-11-26 is before today")
    md, html = letters / "acme-termination-letter.md", letters / "acme-termination-letter.html"
    for path in (md, html):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        text = path.read_text()
        for expected in (
            "ACME Ltd",
            "2026-12-26",
            "We are retiring from field service",
            "Backups untested",
            "data loss, and ransomware",
            "Jane Doe (Office manager)",
            "Alex Tech",
        ):
            assert expected in text, expected
        assert "Fw-s3cret-0001" not in text and "Old-r0uter" not in text
    assert "Changed since you acknowledged it: please confirm again." in md.read_text()
    again = cli(["letter", "acme", "--out", str(letters)], cli_vault)
    assert again.returncode == 1
    assert again.stderr == (
        f"Error: {md} already exists; refusing to overwrite it\nhint: add --force to replace it\n"
    )
    ok(cli(["letter", "acme", "--out", str(letters), "--force"], cli_vault))


def test_letter_template_round_trip(cli, cli_vault, tmp_path) -> None:
    printed = ok(cli(["letter", "--print-template"], None, passphrase=None))
    assert printed == default_template()
    ok(cli(["end", "old", "--notice-given", "2026-11-10", "--reason", "Retiring"], cli_vault))
    mine = tmp_path / "mine.md"
    mine.write_text("Dear {{client_name}},\n\nwe part on {{effective_end}}.\n\n{{ signature }}\n")
    bad = cli(["letter", "old", "--out", str(tmp_path), "--template", str(mine)], cli_vault)
    assert bad.returncode == 1
    assert bad.stderr == (
        "Error: the template uses unknown placeholders: {{signature}} (line 5)\n"
        "hint: the placeholders are listed in: handover letter --print-template\n"
    )
    assert not (tmp_path / "old-termination-letter.md").exists()  # nothing written on failure
    mine.write_text("Dear {{client_name}},\n\nwe part on {{effective_end}}.\n")
    ok(
        cli(
            [
                "letter",
                "old",
                "--out",
                str(tmp_path),
                "--template",
                str(mine),
                "--sender",
                "A",
                "--sender-contact",
                "B",
            ],
            cli_vault,
        )
    )
    assert (tmp_path / "old-termination-letter.md").read_text() == "Dear Old Co,\n\nwe part on 2026-12-31.\n"
    usage = cli(["letter"], cli_vault)
    assert usage.returncode == 2 and "missing argument SLUG (or use --print-template)" in usage.stderr


def test_forget_through_the_command(cli, cli_vault, acme, tmp_path) -> None:
    refused = run(["forget", "acme", "--yes"], cli_vault)
    assert refused.returncode == 1
    assert refused.stderr == (
        "Error: acme has an active agreement; only a client whose agreement has ended can be forgotten\n"
        "hint: end it first: handover end acme --notice-given DATE --reason TEXT\n"
    )
    ok(run(["end", "old", "--notice-given", "2025-01-10", "--reason", "Retiring"], cli_vault))
    listing = ok(run(["client", "list"], cli_vault))
    assert "archived: due to be forgotten (on-hand window ended 2025-05-29)" in listing
    no_tty = run(["forget", "old"], cli_vault)
    assert no_tty.returncode == 1
    assert no_tty.stderr == "Error: refusing without confirmation: no terminal to ask on\nhint: add --yes\n"

    old_id = acme.clients.get("old").id
    blobs = client_blobs(cli_vault, old_id)
    assert found(blobs, vault_bytes(cli_vault)) == list(blobs)
    cert = tmp_path / "old-cert.md"
    res = run(["forget", "old", "--yes", "--certificate", str(cert)], cli_vault)
    assert res.returncode == 0, res.stderr
    assert "Forgot old (Old Co): 3 records and the client's key destroyed (audit entry" in res.stdout
    assert res.stderr == "note: backups of the vault made before now still hold this client's data.\n"
    assert found(blobs, vault_bytes(cli_vault)) == []
    assert stat.S_IMODE(os.stat(cert).st_mode) == 0o600

    assert "old" not in ok(run(["client", "list", "--json"], cli_vault)).replace("bold", "")
    assert json.loads(ok(run(["search", "router", "--json"], cli_vault))) == []
    assert json.loads(ok(cli(["search", "Olga", "--json"], cli_vault))) == []
    audit = ok(run(["audit", "list"], cli_vault))
    assert "(unreadable: client forgotten)" in audit and "client.forget" in audit
    assert ok(cli(["audit", "verify"], cli_vault)).startswith("Audit log intact")
    gone = cli(["client", "show", "old"], cli_vault)
    assert gone.returncode == 1 and gone.stderr.startswith("Error: no client 'old'")

    fingerprint = acme.fingerprint
    checked = ok(run(["certificate", "verify", str(cert), "--signer", fingerprint], None, passphrase=None))
    assert checked.startswith("Certificate valid: Old Co (old) destroyed at ")
    assert re.search(
        rf"Signed by {fingerprint}  SHA256:[A-Za-z0-9+/]{{43}} \(the signer you expected\)\.", checked
    )
    wrong = cli(
        ["certificate", "verify", str(cert), "--signer", "hv:0000-0000-0000-0000-0000-0000-0000-0000"],
        None,
        passphrase=None,
    )
    assert wrong.returncode == 4
    assert wrong.stderr == (
        f"Error: the certificate was signed by {fingerprint}, not by "
        "hv:0000-0000-0000-0000-0000-0000-0000-0000\n"
    )
    forged = tmp_path / "forged.md"
    forged.write_text(cert.read_text().replace("Old Co", "Someone Else"))
    bad = cli(["certificate", "verify", str(forged)], None, passphrase=None)
    assert bad.returncode == 4
    assert bad.stderr == (
        "Error: the certificate's signature is not valid: it was altered or not signed by this key\n"
    )

    seq = json.loads(cert.read_text().split("```json\n")[-1].split("```")[0])["audit"]["seq"]
    again = tmp_path / "again.md"
    ok(cli(["certificate", "issue", str(seq), "--out", str(again)], cli_vault))
    assert again.read_text() == cert.read_text()
    twice = cli(["forget", "old", "--yes"], cli_vault)
    assert twice.returncode == 1 and twice.stderr.startswith("Error: no client 'old'")


def test_forget_refuses_an_existing_certificate_before_destroying(cli, cli_vault, tmp_path) -> None:
    ok(cli(["end", "old", "--notice-given", "2025-01-10", "--reason", "Retiring"], cli_vault))
    cert = tmp_path / "taken.md"
    cert.write_text("keep me")
    res = cli(["forget", "old", "--yes", "--certificate", str(cert)], cli_vault)
    assert res.returncode == 1
    assert res.stderr == (
        f"Error: {cert} already exists; refusing to overwrite it\n"
        "hint: choose another file with --certificate FILE\n"
    )
    assert cert.read_text() == "keep me"
    assert "Old Co" in ok(cli(["client", "list"], cli_vault))


def test_help_lists_the_commands() -> None:
    out = ok(run(["--help"], None, passphrase=None))
    for name in ("end", "letter", "forget", "certificate"):
        assert f"  {name} " in out
    assert "--by-agreement" in ok(run(["end", "--help"], None, passphrase=None))
    assert "--scan" in ok(run(["issue", "ack", "--help"], None, passphrase=None))


def test_vault_path_is_not_needed_to_verify(cli, tmp_path: Path) -> None:
    missing = cli(["certificate", "verify", str(tmp_path / "nope.md")], None, passphrase=None)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
