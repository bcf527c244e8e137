"""First use, as a new user met it: each papercut through the installed command, with no TTY.

Every refusal is checked three ways: the exit code, the exact message, and that nothing was stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handover_vault import open_vault
from tests.conftest import PASSPHRASE, run


@pytest.fixture
def cli_vault(acme, vault_path: Path) -> Path:
    acme.close()
    return vault_path


def creds_named(path: Path, label: str) -> list[str]:
    with open_vault(path, passphrase=PASSPHRASE) as v:
        _, recs = v.creds.list("acme")
        return [r.id for r in recs if r.data["label"] == label]


NO_SECRET = (
    "Error: no secret was given (standard input or the prompt was empty); nothing was saved\n"
    "hint: type or pipe the secret, use --generate for a random one, or --no-secret for a credential "
    "that has none\n"
)


@pytest.mark.parametrize("stdin", ["", "\n", "   \n"])
def test_an_empty_secret_is_refused(cli_vault: Path, stdin: str) -> None:
    done = run(["cred", "add", "acme", "Switch admin"], vault=cli_vault, input=stdin)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", NO_SECRET)
    assert creds_named(cli_vault, "Switch admin") == []


def test_no_secret_says_it_is_intended(cli_vault: Path) -> None:
    done = run(["cred", "add", "acme", "Switch admin", "--no-secret"], vault=cli_vault)
    assert done.returncode == 0, done.stderr
    (rid,) = creds_named(cli_vault, "Switch admin")
    with open_vault(cli_vault, passphrase=PASSPHRASE) as v:
        assert v.creds.get("acme", rid)[1].data["secret"] is None
    both = run(["cred", "add", "acme", "Other", "--no-secret", "--generate"], vault=cli_vault)
    assert both.returncode == 2 and "--no-secret and --generate exclude each other" in both.stderr


def test_a_piped_secret_is_stored_as_given(cli_vault: Path) -> None:
    done = run(["cred", "add", "acme", "Switch admin"], vault=cli_vault, input="s3cret value\n")
    assert done.returncode == 0, done.stderr
    (rid,) = creds_named(cli_vault, "Switch admin")
    with open_vault(cli_vault, passphrase=PASSPHRASE) as v:
        assert v.creds.reveal("acme", rid).data["secret"] == "s3cret value"


def test_a_duplicate_label_is_refused(cli_vault: Path) -> None:
    (existing,) = creds_named(cli_vault, "Firewall admin")
    done = run(["cred", "add", "acme", "firewall ADMIN"], vault=cli_vault, input="another\n")
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        f"Error: client acme already has a credential labelled 'Firewall admin' ({existing[:8]}); "
        "nothing was saved\n"
        "hint: use a distinct label, name the existing one by its id, or add --allow-duplicate to keep both\n",
    )
    assert creds_named(cli_vault, "firewall ADMIN") == []
    allowed = run(
        ["cred", "add", "acme", "Firewall admin", "--allow-duplicate"], vault=cli_vault, input="another\n"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert len(creds_named(cli_vault, "Firewall admin")) == 2


def test_renaming_onto_an_existing_label_is_refused(acme, vault_path: Path) -> None:
    from handover_vault.errors import AlreadyExists

    other = acme.creds.add("acme", label="Switch admin", secret="x" * 12)
    with pytest.raises(AlreadyExists):
        acme.creds.edit("acme", other.id, label="FIREWALL admin")
    assert acme.creds.get("acme", other.id)[1].data["label"] == "Switch admin"
    acme.creds.edit("acme", other.id, label="Switch admin (old)")  # a distinct label is fine


def test_a_duplicate_contact_email_is_refused(cli_vault: Path) -> None:
    done = run(
        ["contact", "add", "acme", "--name", "J. Doe", "--email", "JANE@acme.example"], vault=cli_vault
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        "Error: client acme already has a contact with the email 'jane@acme.example'"
    )
    assert "--allow-duplicate" in done.stderr
    with open_vault(cli_vault, passphrase=PASSPHRASE) as v:
        assert len(v.contacts.list("acme")[1]) == 1
    allowed = run(
        ["contact", "add", "acme", "--name", "J. Doe", "--email", "JANE@acme.example", "--allow-duplicate"],
        vault=cli_vault,
    )
    assert allowed.returncode == 0, allowed.stderr


SHORT = (
    "Error: the passphrase is shorter than 12 characters; nothing was changed\n"
    "hint: a few unrelated words make a passphrase that is long and still easy to type\n"
)


def test_init_refuses_a_short_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    done = run(["init"], vault=path, passphrase=None, env={"HANDOVER_NEW_PASSPHRASE": "x" * 11})
    assert (done.returncode, done.stdout, done.stderr) == (1, "", SHORT)
    assert list(tmp_path.glob("new.db*")) == []
    ok = run(["init"], vault=path, passphrase=None, env={"HANDOVER_NEW_PASSPHRASE": "x" * 12})
    assert ok.returncode == 0, ok.stderr


def test_passwd_and_recover_refuse_a_short_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    made = run(["init"], vault=path, passphrase=None, env={"HANDOVER_NEW_PASSPHRASE": PASSPHRASE})
    code = next(line.strip() for line in made.stdout.splitlines() if line.startswith("    "))
    done = run(["passwd"], vault=path, env={"HANDOVER_NEW_PASSPHRASE": "é" * 11})
    assert (done.returncode, done.stderr) == (1, SHORT)
    done = run(
        ["recover"],
        vault=path,
        passphrase=None,
        env={"HANDOVER_RECOVERY_CODE": code, "HANDOVER_NEW_PASSPHRASE": "short"},
    )
    assert (done.returncode, done.stderr) == (1, SHORT)
    with open_vault(path, passphrase=PASSPHRASE):  # the old passphrase still opens it
        pass


@pytest.mark.parametrize(
    ("args", "option", "why"),
    [
        (
            ["client", "add", "beta", "--name", "B", "--contract-start", "01/03/2027"],
            "--contract-start",
            "'01/03/2027' is not a date; write dates as YYYY-MM-DD (e.g. 2027-03-01)",
        ),
        (
            ["client", "add", "beta", "--name", "B", "--contract-start", "2027-02-30"],
            "--contract-start",
            "'2027-02-30' is not a real calendar date; write dates as YYYY-MM-DD (e.g. 2027-03-01)",
        ),
        (
            ["client", "add", "beta", "--name", "B", "--notice-days", "-3"],
            "--notice-days",
            "-3 is not in the range 0<=x<=3650.",
        ),
        (
            ["unlock", "--for", "30x"],
            "--for",
            "not a duration: '30x'; write a duration as e.g. 90s, 15m, 2h or 1d (at most 7 days)",
        ),
        (
            ["cred", "add", "acme", "New", "--expires", "2027-13-01"],
            "--expires",
            "'2027-13-01' is not a real calendar date; write dates as YYYY-MM-DD (e.g. 2027-03-01)",
        ),
        (["cred", "add", "acme", "New", "--generate", "4"], "--generate", "4 is not in the range 8<=x<=256."),
        (
            ["asset", "add", "acme", "sw1", "--expires", "soon"],
            "--expires",
            "'soon' is not a date; write dates as YYYY-MM-DD (e.g. 2027-03-01)",
        ),
        (
            ["end", "acme", "--notice-given", "10.11.2026", "--reason", "r"],
            "--notice-given",
            "'10.11.2026' is not a date; write dates as YYYY-MM-DD (e.g. 2027-03-01)",
        ),
        (
            ["issue", "ack", "acme", "--by", "Jane", "--date", "yesterday"],
            "--date",
            "'yesterday' is not a date; write dates as YYYY-MM-DD (e.g. 2027-03-01)",
        ),
    ],
)
def test_a_bad_option_value_is_a_usage_error(cli_vault: Path, args: list[str], option: str, why: str) -> None:
    done = run(args, vault=cli_vault, input="")
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith(f"Error: Invalid value for '{option}': {why}\n")


def test_a_missing_passphrase_file_is_said_in_words(cli_vault: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    done = run(
        ["client", "list"], vault=cli_vault, passphrase=None, env={"HANDOVER_PASSPHRASE_FILE": str(missing)}
    )
    assert (done.returncode, done.stderr) == (
        1,
        f"Error: cannot read HANDOVER_PASSPHRASE_FILE ({missing}): there is no such file\n"
        "hint: point HANDOVER_PASSPHRASE_FILE at the file that holds the passphrase (one line), or unset it\n",
    )
    folder = run(
        ["client", "list"], vault=cli_vault, passphrase=None, env={"HANDOVER_PASSPHRASE_FILE": str(tmp_path)}
    )
    assert "it is a folder, not a file" in folder.stderr
    assert "Error" in folder.stderr and "IsADirectoryError" not in folder.stderr


def test_export_lists_one_blocking_gap_a_line(cli_vault: Path, tmp_path: Path) -> None:
    done = run(["export", "acme", "--out", str(tmp_path / "b.tar.age")], vault=cli_vault)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Error: acme is not ready to hand over (")
    gaps = [line for line in lines if line.startswith("  BLOCKING  ")]
    check = run(["check", "acme"], vault=cli_vault)
    assert gaps == ["  " + line for line in check.stdout.splitlines() if line.startswith("BLOCKING  ")]
    assert len(gaps) >= 2
    assert not (tmp_path / "b.tar.age").exists()


def test_issue_list_shows_acknowledgement(cli_vault: Path) -> None:
    before = run(["issue", "list", "acme"], vault=cli_vault)
    assert "acknowledged" in before.stdout and "Backups untested" in before.stdout
    row = next(line for line in before.stdout.splitlines() if "Backups untested" in line)
    assert row.rstrip().endswith("no")
    assert (
        run(["issue", "ack", "acme", "--by", "Jane Doe", "--date", "2026-11-20"], vault=cli_vault).returncode
        == 0
    )
    after = run(["issue", "list", "acme"], vault=cli_vault)
    row = next(line for line in after.stdout.splitlines() if "Backups untested" in line)
    assert "yes (Jane Doe, 2026-11-20)" in row
    as_json = run(["issue", "list", "acme", "--json"], vault=cli_vault)
    import json

    (issue,) = json.loads(as_json.stdout)
    assert issue["acknowledgement"]["acknowledged"] is True and issue["acknowledgement"]["by"] == "Jane Doe"


def test_keygen_help_names_its_option() -> None:
    done = run(["keygen", "--help"])
    assert "--out KEYFILE  Write the identity to KEYFILE (0600)." in done.stdout


def test_the_readme_tour_needs_no_outside_password_generator() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "pwgen" not in readme and "--generate" in readme
