"""The technician profile: sealed in the vault, and named exactly in every document that speaks for it.

The end-to-end tests run the installed ``handover`` command in a subprocess: a profile with hostile
characters is set, then the letter, an exported bundle (opened with ``handover bundle open``), a
certificate of destruction and the request report are read for the name, company, email and phone,
each as its format shows it (Markdown rendered, HTML unescaped). Without a profile, the commands
warn and the documents keep their visible blanks.
"""

from __future__ import annotations

import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from handover_vault.cli.context import printable
from handover_vault.errors import IntegrityError, InvalidInput
from handover_vault.profile import md_literal, one_line
from handover_vault.render import render_markdown
from tests.conftest import run
from tests.test_forget import vault_bytes

HOSTILE = {
    "name": 'Zoë O\'Brien \\ | `tick` *star* _u_ <&> "dq" \u200fعلي',
    "company": "Kestrel|IT & Co <Ltd> `x` *y* ~~z~~ #1",
    "email": "zoe.o'brien+`k`*|&@kestrel-mail.example",
    "phone": "+44 (0)20 *7946* | 0001 \\ ext. `5`",
    "address": '1 <Quayside> & "Dock" Road\nHarbour Town',
    "website": "https://kestrel.example/?a=1&b=<2>",
}
SHOWN = ("name", "company", "email", "phone")  # what every document must carry exactly
# Distinctive pieces of each value, searched for in the vault's raw bytes.
TOKENS = ("Zoë", "علي", "Kestrel", "kestrel-mail", "7946", "Quayside", "kestrel.example")


class _Text(HTMLParser):
    """The text a browser shows: character references decoded, tags dropped, comments and styles off."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("style", "title", "head"):
            self._skip += 1
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title", "head"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "".join(parser.parts)


def md_text(markdown: str) -> str:
    """What a Markdown file shows once rendered (CommonMark plus GFM tables, as the bundle's reader)."""
    return html_text(render_markdown(markdown))


def assert_carries(text: str, where: str, profile: dict[str, str] = HOSTILE) -> None:
    flat = " ".join(text.split())
    for key in SHOWN:
        assert one_line(profile[key]) in flat, f"{where}: {key} not shown exactly"


# --- the library -------------------------------------------------------------------------------------


def test_set_updates_only_the_given_fields_and_is_audited(v) -> None:
    assert not v.profile.get().is_set
    v.profile.set(name="Alex Tech", email="alex@example.net")
    p = v.profile.set(phone="+44 20 7946 0000")
    assert (p.name, p.email, p.phone, p.company) == (
        "Alex Tech",
        "alex@example.net",
        "+44 20 7946 0000",
        None,
    )
    assert v.profile.get() == p
    p = v.profile.set(email="", company="Tech Ltd")  # an empty value clears a field
    assert (p.email, p.company, p.name) == (None, "Tech Ltd", "Alex Tech")
    events = [e for e in v.audit.events() if e.action == "profile.set"]
    assert [e.detail for e in events] == [
        {"fields": ["email", "name"]},
        {"fields": ["phone"]},
        {"fields": ["company", "email"]},
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "nothing to set"),
        ({"name": "two\nlines"}, "profile name (--name) must be on one line"),
        ({"phone": "+44\x1b[2J"}, "profile phone (--phone) contains a control character"),
        ({"email": "not-an-address"}, "'not-an-address' is not an email address"),
        ({"name": "x" * 301}, "profile name (--name) is too long (301 characters; the limit is 300)"),
        ({"nickname": "Al"}, "unknown profile field 'nickname'"),
    ],
)
def test_set_refuses_bad_values_and_writes_nothing(v, changes, message) -> None:
    with pytest.raises(InvalidInput) as err:
        v.profile.set(**changes)
    assert err.value.message == message
    assert not v.profile.get().is_set
    assert not [e for e in v.audit.events() if e.action == "profile.set"]


def test_address_may_span_lines(v) -> None:
    assert v.profile.set(address=HOSTILE["address"]).address == HOSTILE["address"]


def test_profile_is_stored_only_as_ciphertext(v, vault_path: Path) -> None:
    v.profile.set(**HOSTILE)
    raw = vault_bytes(vault_path)
    for token in TOKENS:
        assert token.encode() not in raw, token
    assert v.profile.get().values() == HOSTILE


def test_profile_copied_into_another_vault_does_not_decrypt(v, vault_path: Path, tmp_path: Path) -> None:
    from handover_vault import init_vault

    v.profile.set(name="Alex Tech")
    other, _ = init_vault(tmp_path / "other.db", "another passphrase")
    with other:
        other.profile.set(name="Someone else")
        db = sqlite3.connect(vault_path)
        blob = db.execute("SELECT value FROM meta WHERE key = 'profile'").fetchone()[0]
        db.close()
        db = sqlite3.connect(tmp_path / "other.db")
        with db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'profile'", (blob,))
        db.close()
        with pytest.raises(IntegrityError) as err:
            other.profile.get()
        assert err.value.message == "the technician profile does not decrypt: tampered or corrupt"
        # Not written over either: the damaged value would go into the state commitment.
        with pytest.raises(IntegrityError):
            other.profile.set(name="Someone else")


def test_rekey_reseals_the_profile(v, vault_path: Path) -> None:
    from handover_vault.rekey import rekey
    from tests.conftest import PASSPHRASE

    v.profile.set(name="Alex Tech", phone="+44 20 7946 0000")
    db = sqlite3.connect(vault_path)
    (before,) = db.execute("SELECT value FROM meta WHERE key = 'profile'").fetchone()
    db.close()
    done = rekey(v, PASSPHRASE)
    with done.vault as renewed:
        assert renewed.profile.get().present() == {"name": "Alex Tech", "phone": "+44 20 7946 0000"}
        db = sqlite3.connect(vault_path)
        (after,) = db.execute("SELECT value FROM meta WHERE key = 'profile'").fetchone()
        db.close()
        assert after != before  # sealed again under the new master key, not left under the old one


def test_envelope_is_the_one_docs_spec_describes(v, vault_path: Path) -> None:
    """meta.profile opens with AES-256-GCM under the master key and AAD("handover-vault/v1/profile",
    vault_id), computed here independently, and with no other associated data."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    v.profile.set(name="Alex Tech", phone="+44 20 7946 0000")
    db = sqlite3.connect(vault_path)
    (blob,) = db.execute("SELECT value FROM meta WHERE key = 'profile'").fetchone()
    db.close()
    assert blob[0] == 1 and len(blob) > 29
    aead, nonce, body = AESGCM(v.keys.vmk), blob[1:13], blob[13:]
    aad = b"handover-vault/v1/profile\x00" + v.vault_id.encode()
    data = json.loads(aead.decrypt(nonce, body, aad))
    assert data == {"name": "Alex Tech", "phone": "+44 20 7946 0000", "updated_at": data["updated_at"]}
    for other in (b"handover-vault/v1/profile", b"handover-vault/v1/signing-key\x00" + v.vault_id.encode()):
        with pytest.raises(InvalidTag):
            aead.decrypt(nonce, body, other)


def test_another_envelope_of_the_master_key_put_in_its_place_is_refused(v, vault_path: Path) -> None:
    """The signing key is sealed under the same master key; put in the profile's row it is refused
    (exit 4 material), never read as a profile. (The AAD itself is pinned by the spec test above.)"""
    v.profile.set(name="Alex Tech")
    db = sqlite3.connect(vault_path)
    with db:
        (signing,) = db.execute("SELECT value FROM meta WHERE key = 'signing_private'").fetchone()
        db.execute("UPDATE meta SET value = ? WHERE key = 'profile'", (signing,))
    db.close()
    with pytest.raises(IntegrityError) as err:
        v.profile.get()
    assert err.value.message == "the technician profile does not decrypt: tampered or corrupt"


# A small alphabet, mostly Markdown's own marks, so that emphasis, code, links, entities, lists,
# headings, quotes and setext underlines all turn up; a few letters, digits and non-ASCII around them.
_ALPHABET = st.sampled_from(list("ab1 \\|`*_<&>\"'#-+=!~[]().:;/é\u200fع"))


@settings(max_examples=500, deadline=None)
@given(st.text(_ALPHABET, min_size=1, max_size=16).filter(lambda s: s.strip()))
@example("*star* _u_ `tick` <b> &amp; [a](b) ~~s~~ a|b \\")
@example("- item")
@example("+ 44")
@example("1. first")
@example("2) second")
@example("> quote")
@example("# heading")
@example("===")
@example("---")
def test_md_literal_renders_as_the_text_itself_even_at_a_line_start(text: str) -> None:
    wanted = one_line(text)
    shown = md_text(f"Kind regards,\\\n{md_literal(text)}\\\nEnd")
    lines = [line for line in shown.split("\n") if line]  # <br /> and the line feed after it
    assert lines == ["Kind regards,", wanted, "End"]


# --- end to end, through the installed command -------------------------------------------------------


def ok(res) -> str:
    assert res.returncode == 0, res.stderr
    return res.stdout


def _client(vault: Path, tmp_path: Path) -> Path:
    """acme (ended long ago, so it can be forgotten) with an authorised contact and a successor key."""
    key = tmp_path / "successor.key"
    ok(run(["init"], vault, env={"HANDOVER_NEW_PASSPHRASE": "correct horse battery staple"}))
    ok(run(["keygen", "--out", str(key)], None, passphrase=None))
    public = next(
        line.split(": ", 1)[1] for line in key.read_text().splitlines() if line.startswith("# public key:")
    )
    ok(run(["client", "add", "acme", "--name", "ACME Ltd", "--contract-start", "2020-01-01",
            "--notice-days", "30"], vault))  # fmt: skip
    ok(run(["contact", "add", "acme", "--name", "Jane Doe", "--authorized"], vault))
    ok(run(["successor", "set", "acme", "--name", "Next IT", "--recipient", public], vault))
    ok(run(["end", "acme", "--notice-given", "2025-01-10", "--reason", "Retiring"], vault))
    return key


def _documents(vault: Path, tmp_path: Path, key: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Make every document; ({name: text as shown}, {name: raw file}), and each command's stderr."""
    letters = tmp_path / "letters"
    out: dict[str, str] = {}
    raw: dict[str, str] = {}
    warnings: dict[str, str] = {}
    res = run(["letter", "acme", "--out", str(letters)], vault)
    warnings["letter"] = res.stderr
    ok(res)
    raw["letter.md"] = (letters / "acme-termination-letter.md").read_text()
    raw["letter.html"] = (letters / "acme-termination-letter.html").read_text()
    receipt = tmp_path / "receipt.md"
    ok(run(["request", "log", "acme", "--requester", "Jane Doe", "--channel", "phone",
            "--verified-by", "callback to the number on file", "--decision", "denied",
            "--receipt", str(receipt)], vault))  # fmt: skip
    raw["receipt.md"] = receipt.read_text()
    raw["receipt verify"] = ok(run(["certificate", "verify", str(receipt)], None, passphrase=None))
    report = tmp_path / "requests.md"
    ok(run(["request", "report", "acme", "--out", str(report)], vault))
    raw["report.md"] = report.read_text()
    raw["report.html"] = report.with_suffix(".html").read_text()
    res = run(["check", "acme"], vault)
    warnings["check"] = res.stdout
    bundle = tmp_path / "acme.tar.age"
    res = run(["export", "acme", "--out", str(bundle), "--force"], vault)
    warnings["export"] = res.stderr
    ok(res)
    opened = tmp_path / "opened"
    ok(run(["bundle", "open", str(bundle), "--to", str(opened), "-i", str(key)], passphrase=None))
    raw["HANDOVER.md"] = next(opened.rglob("HANDOVER.md")).read_text()
    raw["index.html"] = next(opened.rglob("index.html")).read_text()
    raw["client.json"] = next(opened.rglob("client.json")).read_text()
    raw["VERIFY.txt"] = next(opened.rglob("VERIFY.txt")).read_text()
    cert = tmp_path / "certificate.md"
    res = run(["forget", "acme", "--yes", "--certificate", str(cert)], vault)
    warnings["forget"] = res.stderr
    ok(res)
    raw["certificate.md"] = cert.read_text()
    raw["certificate verify"] = ok(run(["certificate", "verify", str(cert)], None, passphrase=None))
    for name, text in raw.items():
        if name.endswith(".md"):
            out[name] = md_text(text)
        elif name.endswith(".html"):
            out[name] = html_text(text)
        elif name.endswith(".txt"):
            out[name] = text
    return out, raw | {f"warning:{k}": w for k, w in warnings.items()}


def test_every_document_names_the_technician_exactly(vault_path: Path, tmp_path: Path) -> None:
    key = _client(vault_path, tmp_path)
    args = [arg for field, value in HOSTILE.items() for arg in (f"--{field}", value)]
    saved = ok(run(["profile", "set", *args], vault_path))
    assert saved.startswith("Technician profile saved:\n")
    shown = json.loads(ok(run(["profile", "show", "--json"], vault_path)))
    assert {k: shown[k] for k in HOSTILE} == HOSTILE
    raw_vault = vault_bytes(vault_path)
    assert [t for t in TOKENS if t.encode() in raw_vault] == []

    texts, raw = _documents(vault_path, tmp_path, key)
    assert set(texts) == {
        "letter.md", "letter.html", "report.md", "report.html", "HANDOVER.md", "index.html", "VERIFY.txt",
        "certificate.md", "receipt.md",
    }  # fmt: skip
    for name, text in texts.items():
        assert_carries(text, name)
    for name in (*texts, "certificate verify", "receipt verify"):
        assert "[your " not in raw[name], name
    for command in ("letter", "export", "forget", "check"):
        assert "technician profile" not in raw[f"warning:{command}"], command
    # Where the documents say it: the letter's signature, the bundle's call to confirm, the issuer.
    signature = [line for line in texts["letter.html"].split("\n") if line.strip()][-7:]
    assert signature == [
        "Kind regards,",
        *(one_line(HOSTILE[f]) for f in ("name", "company", "address", "phone", "email", "website")),
    ]
    call = (
        f"The outgoing technician is {HOSTILE['name']}, {HOSTILE['company']} ({HOSTILE['phone']}, "
        f"{HOSTILE['email']}); call them on a number you already know"
    )
    for name in ("HANDOVER.md", "index.html", "VERIFY.txt"):
        assert call in " ".join(texts[name].split()), name
    for name in ("certificate.md", "receipt.md"):
        facts = json.loads(raw[name].split("```json\n")[-1].split("\n```")[0])
        assert facts["issued_by"] == HOSTILE, name
    assert json.loads(raw["client.json"])["technician"] == HOSTILE
    # On a terminal, format characters such as the RTL mark are shown escaped (printable()).
    issued = printable(f"Issued by {HOSTILE['name']} ({HOSTILE['company']}) on {HOSTILE['phone']}.")
    assert issued in raw["certificate verify"] and issued in raw["receipt verify"]


def test_without_a_profile_commands_warn_and_documents_keep_blanks(vault_path: Path, tmp_path: Path) -> None:
    key = _client(vault_path, tmp_path)
    assert ok(run(["profile", "show"], vault_path)) == (
        "No technician profile set. Set it: "
        "handover profile set --name NAME --company COMPANY --email EMAIL --phone PHONE\n"
    )
    assert json.loads(ok(run(["profile", "show", "--json"], vault_path))) is None
    texts, raw = _documents(vault_path, tmp_path, key)
    warning = (
        "no technician profile: letters, bundles and certificates show blanks such as [your name] "
        "(set it: handover profile set --name NAME --company COMPANY --email EMAIL --phone PHONE)"
    )
    for command in ("letter", "export", "forget"):
        assert f"warning: {warning}\n" in raw[f"warning:{command}"], command
    assert f"warning   {warning}\n" in raw["warning:check"]
    for name in ("letter.md", "letter.html", "HANDOVER.md", "index.html", "certificate.md", "report.md",
                 "receipt.md"):  # fmt: skip
        assert "[your name]" in texts[name], name
    assert "[your telephone number and email address]" in texts["letter.md"]
    for name in ("HANDOVER.md", "index.html", "VERIFY.txt"):
        assert "Call the outgoing technician on a number you already know" in texts[name], name
    assert json.loads(raw["client.json"])["technician"] is None


def test_an_incomplete_profile_is_a_warning_naming_what_is_missing(vault_path: Path, tmp_path: Path) -> None:
    _client(vault_path, tmp_path)
    res = run(["profile", "set", "--company", "Kestrel IT"], vault_path)
    assert res.returncode == 0
    assert res.stderr == (
        "warning: the technician profile has no name and no telephone or email "
        "(set it: handover profile set --name NAME --phone PHONE --email EMAIL)\n"
    )
    check = run(["check", "acme"], vault_path)
    assert "warning   the technician profile has no name and no telephone or email" in check.stdout
    ok(run(["profile", "set", "--name", "Alex", "--phone", "+44 20 7946 0000"], vault_path))
    assert "technician profile" not in run(["check", "acme"], vault_path).stdout


def test_a_tampered_profile_is_an_integrity_failure(vault_path: Path, tmp_path: Path) -> None:
    _client(vault_path, tmp_path)
    ok(run(["profile", "set", "--name", "Alex Tech"], vault_path))
    db = sqlite3.connect(vault_path)
    with db:
        (blob,) = db.execute("SELECT value FROM meta WHERE key = 'profile'").fetchone()
        db.execute("UPDATE meta SET value = ? WHERE key = 'profile'", (blob[:-1] + bytes([blob[-1] ^ 1]),))
    db.close()
    res = run(["profile", "show"], vault_path)
    assert res.returncode == 4
    assert res.stderr == (
        "Error: the technician profile does not decrypt: tampered or corrupt\n"
        "hint: handover verify names every problem; restore the vault from a backup made before it\n"
    )
    again = run(["profile", "set", "--name", "Someone Else"], vault_path)
    assert again.returncode == 4  # not written over: its damaged value would go into the commitment


def test_a_profile_rolled_back_to_its_own_older_copy_is_refused(vault_path: Path, tmp_path: Path) -> None:
    """An older envelope of the profile decrypts (same key, same AAD): only the commitment notices."""
    _client(vault_path, tmp_path)
    ok(run(["profile", "set", "--name", "Alex Tech", "--phone", "+44 1"], vault_path))
    db = sqlite3.connect(vault_path)
    (old,) = db.execute("SELECT value FROM meta WHERE key = 'profile'").fetchone()
    db.close()
    ok(run(["profile", "set", "--phone", "+44 2"], vault_path))
    db = sqlite3.connect(vault_path)
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'profile'", (old,))
    db.close()
    for args in (["profile", "show"], ["letter", "acme", "--out", str(tmp_path / "letters")]):
        res = run(args, vault_path)
        assert res.returncode == 4, (args, res.stderr)
        assert "technician profile" in res.stderr and "+44 1" not in res.stdout + res.stderr
    assert not (tmp_path / "letters").exists() or not list((tmp_path / "letters").iterdir())
