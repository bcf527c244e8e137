"""Values from outside reach the terminal as text, never as commands (DESIGN §4, §6).

A bundle or certificate signed by someone else's key is still "valid" (its signature checks out
against the key it carries); what it says is shown, never obeyed. The attacks of the review: a
manifest whose client carried escape sequences forged a "Signed by vault <real fingerprint>" line
and hid the real signer; the same in a certificate; tar names with bidi overrides and C1 controls.
"""

from __future__ import annotations

import io
import sys
import tarfile
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import run

ESC_CLIENT = "acme\x1b[2K\r\x1b[1ASigned by vault hv:0000-real-fingerprint\n\x9b2J\u202eevil\u2066"
RAW = ("\x1b", "\x9b", "\u202e", "\u2066", "\u200e", "\r")


def _no_raw(text: str) -> None:
    found = [repr(c) for c in RAW if c in text]
    assert found == [], f"raw control or format characters reached the terminal: {found}"


def test_printable_covers_every_control_and_format_character() -> None:
    from handover_vault.validate import TERMINAL_UNSAFE, printable

    missed = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if (unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp") and chr(c) not in "\t\n")
        and not TERMINAL_UNSAFE.match(chr(c))
    ]
    assert missed == []
    assert printable("a\x1b[31mb\u202ec\u200fd\x9b\ne") == "a\\x1b[31mb\\u202ec\\u200fd\\x9b\\x0ae"
    assert printable("line 1\nline 2\tx", multiline=True) == "line 1\nline 2\tx"
    assert printable("café ü 日本 🙂") == "café ü 日本 🙂"  # ordinary text is untouched


# --- a forged bundle ---------------------------------------------------------------------------


def _forged_bundle(tmp_path: Path, client: str, exported_at: str) -> tuple[Path, Path, str]:
    """A bundle made with the project's own code, its manifest's client and date hostile, signed
    with another key (an attacker's own): it verifies, and says who really signed it."""
    from pyrage import x25519

    from handover_vault.bundle.format import seal_bundle
    from handover_vault.bundle.tarsafe import BundleFile
    from handover_vault.keys import crypto

    ident = x25519.Identity.generate()
    key = tmp_path / "successor.key"
    key.write_text(str(ident) + "\n")
    priv, pub = crypto.new_signing_key()
    out = tmp_path / "forged.tar.age"
    seal_bundle(
        out,
        "acme-handover",
        [BundleFile.from_bytes("index.html", b"<p>report</p>")],
        {"client": client, "exported_at": exported_at},
        sign=lambda m: crypto.sign(priv, m),
        signer_public_key=pub,
        recipients=[str(ident.to_public())],
    )
    return out, key, crypto.fingerprint(pub)


def test_a_forged_manifests_escape_sequences_are_shown_not_obeyed(tmp_path: Path) -> None:
    bundle, key, attacker = _forged_bundle(tmp_path, ESC_CLIENT, "2026-12-01\x1b]0;owned\x07\u202e")
    done = run(["bundle", "verify", str(bundle), "--identity", str(key)], passphrase=None)
    assert done.returncode == 0, done.stderr
    _no_raw(done.stdout + done.stderr)
    assert "\x07" not in done.stdout
    lines = done.stdout.splitlines()
    assert len(lines) == 2  # the client's newline did not make a line of its own
    (signed,) = [line for line in lines if line.startswith("Signed by vault")]
    assert signed.startswith(f"Signed by vault {attacker}  SHA256:")  # the attacker's key, in both forms
    assert signed.endswith(
        " (compare it with the fingerprint the outgoing technician told you, or pass --signer)"
    )
    assert lines[0].startswith("Bundle OK: acme\\x1b[2K\\x0d\\x1b[1ASigned by vault hv:0000")
    # --json carries the exact value, escaped so that a terminal shows it too.
    as_json = run(["bundle", "verify", str(bundle), "--identity", str(key), "--json"], passphrase=None)
    assert as_json.returncode == 0, as_json.stderr
    _no_raw(as_json.stdout)
    import json

    assert json.loads(as_json.stdout)["client"] == ESC_CLIENT
    opened = run(
        ["bundle", "open", str(bundle), "--identity", str(key), "--to", str(tmp_path / "x")], passphrase=None
    )
    assert opened.returncode == 0, opened.stderr
    _no_raw(opened.stdout)


def test_a_forged_certificates_facts_are_shown_not_obeyed(v, tmp_path: Path) -> None:
    import json

    from handover_vault.forget import CERT_FORMAT, sign_certificate

    facts = {
        "format": CERT_FORMAT,
        "client": {"name": ESC_CLIENT, "slug": "acme\u202e"},
        "destroyed_at": "2026\x1b[8m",
        "audit": {"seq": 7},
    }
    body = "# Certificate of destruction\n\n```json\n" + json.dumps(facts, ensure_ascii=False) + "\n```\n"
    cert = tmp_path / "cert.md"
    cert.write_text(sign_certificate(v, body))
    done = run(["certificate", "verify", str(cert)], passphrase=None)
    assert done.returncode == 0, done.stderr
    _no_raw(done.stdout)
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith(f"Signed by {v.fingerprint}  {v.ssh_fingerprint}. Compare")


# --- vault content and error messages ------------------------------------------------------------


def test_imported_names_with_escapes_show_as_text_in_lists_fields_and_errors(
    acme, vault_path: Path, tmp_path: Path
) -> None:
    import json

    acme.close()
    export = tmp_path / "bw.json"
    export.write_text(
        json.dumps(
            {
                "encrypted": False,
                "items": [
                    {
                        "type": 1,
                        "name": "Router\x1b[2J\u202e",
                        "notes": "line one\nsecret  FAKE\x1b[31m",
                        "login": {"username": "adm\x9b1m", "password": "pw"},
                    }
                ],
            }
        )
    )
    done = run(["import", "bitwarden", "acme", str(export)], vault_path)
    assert done.returncode == 0, done.stderr
    _no_raw(done.stdout + done.stderr)
    for args in (
        ["cred", "list", "acme"],
        ["cred", "show", "acme", "Router\x1b[2J\u202e"],
        ["search", "router"],
    ):
        shown = run(args, vault_path)
        assert shown.returncode == 0, (args, shown.stderr)
        _no_raw(shown.stdout)
    shown = run(["cred", "show", "acme", "Router\x1b[2J\u202e"], vault_path).stdout
    # The note's second line is indented under the first: it cannot pass for a field of its own.
    assert "\nsecret  FAKE" not in shown
    missing = run(["cred", "show", "acme", "nope\x1b[2J\u202e"], vault_path)
    assert missing.returncode == 1
    _no_raw(missing.stderr)


# --- tar member names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "r/\u202egpj.exe",
        "r/a\x9bb",
        "r/a\u200eb",
        "r/\u2066x\u2069",
        "r/zero\u200bwidth",
        "r/bom\ufeff",
        "r/a\x85b",
    ],
    ids=["rlo", "csi", "lrm", "isolate", "zwsp", "bom", "nel"],
)
def test_tar_names_with_format_or_c1_characters_are_refused(name: str, tmp_path: Path) -> None:
    from handover_vault.bundle.format import verify_bundle_tar
    from handover_vault.bundle.tarsafe import name_problem
    from handover_vault.errors import VaultError

    assert name_problem(name) == "a control or format character (such as a bidi override) in the name"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in ("r/index.html", name):
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with pytest.raises(VaultError) as err:
        verify_bundle_tar(buf)
    assert "format character" in err.value.message or "control" in err.value.message
    _no_raw(err.value.message)


# --- credentials.csv in a spreadsheet ------------------------------------------------------------

_TRIGGERS = "=+-@"


def _cell_starts(text: str) -> list[str]:
    """Every place a spreadsheet may start a cell in ``text``: its start, and after a ``;``, ``,``,
    tab or line break (another separator, or a line break whose quoting is not seen), whitespace
    skipped."""
    import re

    return [m.group(1) for m in re.finditer(r"(?:^|[;,\t\r\n])[ \t\r\n]*(.?)", text)]


@pytest.mark.parametrize(
    "value",
    [
        "=1+1",
        'x;=HYPERLINK("http://e")',
        "  =cmd",
        "\t=x",
        "a,-2",
        "ok\n@SUM(A1)",
        "x;\t+1",
        "\r=a",
        "-",
        "a\r\n=b",
    ],
)
def test_the_csv_guard_leaves_no_cell_that_starts_a_formula(value: str) -> None:
    from handover_vault.bundle.handover import csv_cell

    guarded = csv_cell(value)
    assert [c for c in _cell_starts(guarded) if c and c in _TRIGGERS] == [], repr(guarded)
    assert guarded.replace("'", "") == value.replace("'", "")  # only apostrophes were added


def test_the_csv_guard_keeps_ordinary_values_exact() -> None:
    from handover_vault.bundle.handover import csv_cell

    for value in ("plain", "p=q", "a-b", "user@example.com", "x;y", "Fw!2024", "café", ""):
        assert csv_cell(value) == value


def test_csv_guard_property() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from handover_vault.bundle.handover import csv_cell

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("ab =+-@;,\t\r\n'"))))
    def check(value: str) -> None:
        guarded = csv_cell(value)
        assert [c for c in _cell_starts(guarded) if c and c in _TRIGGERS] == []
        assert guarded.replace("'", "") == value.replace("'", "")

    check()


def test_an_attached_files_name_is_shown_not_obeyed(acme, vault_path: Path, tmp_path: Path) -> None:
    acme.close()
    hostile = tmp_path / "diagram\x1b[2J\u202egpj.exe"
    hostile.write_bytes(b"png")
    done = run(["attach", "add", "acme", str(hostile)], vault_path)
    assert done.returncode == 0, done.stderr
    assert "diagram\\x1b[2J\\u202egpj.exe" in done.stdout
    _no_raw(done.stdout + done.stderr)
