"""Hostile input: every parser that takes outside data refuses garbage with a VaultError (a clear
message and exit code), never crashes, never hangs, and never lets dangerous content through.

Fuzzed with hypothesis (atheris is not used: it is not installed here, and it would add a compiled
dependency for what hypothesis already covers): slugs, dates, otpauth URIs, durations, recipients,
Markdown into the HTML report (no script, handler or external URL may come out), age headers,
bundle archives and their signed manifest, and the CSV, Bitwarden and KeePass importers. Through
the installed command: multi-megabyte and binary input to ``doc add``, ``cred add``, ``import`` and
``attach add``, bad dates and slugs, and duplicate slugs.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import PASSPHRASE, ROOT
from tests.helpers_adversarial import base_env, contains_any, start

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def only_vault_errors(fn: Any, *args: Any, **kw: Any) -> Any:
    """Call ``fn``; a refusal must be a VaultError with a message, anything else is a crash."""
    from handover_vault.errors import VaultError

    try:
        return fn(*args, **kw)
    except VaultError as exc:
        assert exc.message and exc.exit_code in (1, 3, 4), exc
        return exc


# --- small values ---------------------------------------------------------------------------------

hostile_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    st.sampled_from(
        [
            "../etc",
            "acme\n",
            "acme\x00",
            " acme ",
            "ACME",
            "acme/x",
            "a" * 49,
            "-acme",
            "ａｃｍｅ",
            "",
            "\u202e",
            "a\u0301",
        ]
    ),
)


@FAST
@given(hostile_text)
def test_slugs(text: str) -> None:
    from handover_vault import validate

    out = only_vault_errors(validate.slug, text)
    if isinstance(out, str):
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?", out, re.ASCII), out


dates = st.one_of(
    hostile_text,
    st.dates().map(str),
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}\Z"),
    st.sampled_from(
        [
            "2024-02-30",
            "2023-02-29",
            "0000-01-01",
            "9999-12-31",
            "2024-1-1",
            "20240101",
            "2024-W01-1",
            "٢٠٢٤-٠١-٠١",
            "2024-01-01T00:00",
            " 2024-01-01 ",
            "2024-13-01",
        ]
    ),
)


@FAST
@given(dates)
def test_dates(text: str) -> None:
    import datetime as dt

    from handover_vault import validate

    out = only_vault_errors(validate.date, text)
    if isinstance(out, str):
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", out, re.ASCII), out
        assert dt.date.fromisoformat(out).isoformat() == out


otpauth = st.builds(
    lambda scheme, host, label, secret, algo, digits, period, extra: (
        f"{scheme}://{host}/{label}?secret={secret}&algorithm={algo}&digits={digits}&period={period}{extra}"
    ),
    st.sampled_from(["otpauth", "OTPAUTH", "http", "otpauth:"]),
    st.sampled_from(["totp", "hotp", "TOTP", "", "totp:80"]),
    st.text(max_size=20),
    st.one_of(st.from_regex(r"\A[A-Z2-7]{0,40}=*\Z"), st.text(max_size=40)),
    st.sampled_from(["SHA1", "SHA256", "SHA512", "MD5", "", "sha1"]),
    st.one_of(st.integers(-5, 20).map(str), st.text(max_size=5)),
    st.one_of(st.integers(-100, 10**6).map(str), st.text(max_size=8)),
    st.sampled_from(["", "&secret=AAAA", "&digits=6&digits=8", "#frag", "&period=1e9"]),
)


@FAST
@given(st.one_of(otpauth, st.text(max_size=300)))
def test_otpauth_uris(uri: str) -> None:
    from handover_vault import creds

    out = only_vault_errors(creds.parse_otpauth, uri)
    if isinstance(out, dict):
        assert len(out["seed"]) >= 10 and out["digits"] in (6, 7, 8) and 10 <= out["period"] <= 300
        code, left = creds.totp_code(uri, at=1_700_000_000)
        assert code.isdigit() and len(code) == out["digits"] and 0 < left <= out["period"]


@FAST
@given(st.one_of(st.text(max_size=30), st.from_regex(r"\A\s*\d{1,9}\s*[smhdw]?\s*\Z")))
def test_durations(text: str) -> None:
    from handover_vault.keys.session import MAX_SECONDS, parse_duration

    out = only_vault_errors(parse_duration, text)
    if isinstance(out, int):
        assert 1 <= out <= MAX_SECONDS


@SLOW
@given(
    st.one_of(
        st.text(max_size=200),
        st.from_regex(r"\Aage1[a-z0-9]{0,70}\Z"),
        st.from_regex(r"\Assh-(ed25519|rsa) [A-Za-z0-9+/=]{0,200}\Z"),
    )
)
def test_recipients(text: str) -> None:
    from handover_vault.bundle.agefile import parse_recipient

    only_vault_errors(parse_recipient, text)


# --- Markdown into the HTML report ------------------------------------------------------------------

ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](java%0ascript:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[x](vbscript:msgbox)",
    "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "[x](file:///etc/passwd)",
    "[x](//evil.example/a)",
    "[x](\\\\evil.example\\a)",
    "[x](https://evil.example/track)",
    "![pixel](https://evil.example/p.gif)",
    "![pixel](//evil.example/p.gif)",
    "<https://evil.example/auto>",
    "<javascript:alert(1)>",
    "[ref][r]\n\n[r]: https://evil.example/ref",
    "[ref][r]\n\n[r]: javascript:alert(1)",
    '<a href="https://evil.example">x</a>',
    "<iframe src=https://evil.example></iframe>",
    "<style>body{background:url(https://evil.example)}</style>",
    "<!-- <script>alert(1)</script> -->",
    "<meta http-equiv=refresh content='0;url=https://evil.example'>",
    "<form action=https://evil.example><input></form>",
    "<link rel=stylesheet href=https://evil.example/s.css>",
    "<object data=https://evil.example/x></object>",
    "<base href=https://evil.example/>",
    "[x](mailto:jane@acme.example)",
    "[x](docs/02-network.md)",
    "| a | <script>x</script> |\n|---|---|\n| [y](javascript:1) | ![z](http://e.example/i.png) |",
    "`<script>`",
    "```html\n<script>alert(1)</script>\n```",
]

_TAGS = {
    "a",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "span",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}


class _Audit(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            value = (value or "").strip()
            if name.startswith("on") or name in (
                "style",
                "src",
                "srcset",
                "action",
                "formaction",
                "background",
            ):
                self.problems.append(f"attribute {name}= on <{tag}>")
            if name == "href":
                cleaned = re.sub(r"[\x00-\x20]", "", value).lower()
                scheme = re.match(r"([a-z][a-z0-9+.\-]*):", cleaned)
                if cleaned.startswith("//") or "\\" in cleaned or (scheme and scheme.group(1) != "mailto"):
                    self.problems.append(f"href {value!r}")


def _problems(html: str) -> list[str]:
    parser = _Audit()
    parser.feed(html)
    parser.close()
    return parser.problems


@FAST
@given(st.lists(st.one_of(st.sampled_from(ATTACKS), st.text(max_size=40)), max_size=8).map("\n".join))
def test_markdown_renders_no_script_handler_or_external_url(text: str) -> None:
    from handover_vault.render import render_markdown

    html = render_markdown(text)
    assert _problems(html) == [], (text, html)


def test_every_attack_alone_is_neutralised() -> None:
    from handover_vault.render import html_page, render_markdown

    for attack in ATTACKS:
        html = render_markdown(attack)
        assert _problems(html) == [], (attack, html)
        assert "<script" not in html.lower()
    page = html_page("Report", render_markdown("\n\n".join(ATTACKS))) if _takes_two(html_page) else ""
    if page:
        assert "default-src 'none'" in page and "<script" not in page.lower()


def _takes_two(fn: Any) -> bool:
    import inspect

    try:
        return len([p for p in inspect.signature(fn).parameters.values() if p.default is p.empty]) == 2
    except (TypeError, ValueError):
        return False


# --- age headers, bundle archives and their manifest ------------------------------------------------


@SLOW
@given(
    st.one_of(
        st.binary(max_size=600),
        st.builds(
            lambda a, b: b"age-encryption.org/v1\n" + a + b"\n--- " + b,
            st.binary(max_size=300),
            st.binary(max_size=60),
        ),
        st.builds(lambda s: b"-----BEGIN AGE ENCRYPTED FILE-----\n" + s, st.binary(max_size=300)),
    )
)
def test_age_headers(data: bytes) -> None:
    from handover_vault.bundle.agefile import read_header

    only_vault_errors(read_header, io.BytesIO(data))


@pytest.fixture(scope="module")
def bundle_tar() -> tuple[bytes, Any]:
    """A real, signed bundle archive made by the library, and its signing key."""
    from handover_vault.bundle.format import assemble_bundle
    from handover_vault.bundle.tarsafe import BundleFile, tar_stream
    from handover_vault.keys import crypto

    priv, pub = crypto.new_signing_key()
    root = "acme-handover-2026-11-26"
    files = [
        BundleFile.from_bytes("index.html", b"<p>report</p>"),
        BundleFile.from_bytes("docs/01-lan.md", b"# LAN"),
    ]
    meta = {"client": "acme", "exported_at": "2026-11-26T00:00:00Z"}
    bundle = assemble_bundle(root, files, meta, sign=lambda m: crypto.sign(priv, m), signer_public_key=pub)
    return tar_stream(root, bundle, mtime=0).read(), (priv, pub, root)


@SLOW
@given(data=st.data())
def test_mutated_bundle_archives_are_refused(bundle_tar: tuple[bytes, Any], data: st.DataObject) -> None:
    from handover_vault.bundle.format import verify_bundle_tar

    raw = bytearray(bundle_tar[0])
    assert not isinstance(only_vault_errors(verify_bundle_tar, io.BytesIO(bytes(raw))), Exception)
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "truncate", "splice", "zero"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if how == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "truncate":
            del raw[i:]
            if not raw:
                break
        elif how == "splice":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=600))
        else:
            raw[i : i + 512] = bytes(min(512, len(raw) - i))
    result = only_vault_errors(verify_bundle_tar, io.BytesIO(bytes(raw)))
    if not isinstance(result, Exception):
        # A change that still verifies can only be one tar ignores (padding, unused header bytes).
        assert {f.path for f in result.files} == {
            "index.html",
            "docs/01-lan.md",
            "SHA256SUMS",
            "SHA256SUMS.sig",
        }


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    return info, data


HOSTILE_MEMBERS = {
    "dotdot": _member("r/../../evil"),
    "absolute": _member("/tmp/evil"),
    "symlink": _member("r/link", tarfile.SYMTYPE, link="/etc/passwd"),
    "hardlink": _member("r/hard", tarfile.LNKTYPE, link="r/index.html"),
    "device": _member("r/dev", tarfile.CHRTYPE),
    "fifo": _member("r/fifo", tarfile.FIFOTYPE),
    "backslash": _member("r/a\\..\\..\\evil"),
    "control": _member("r/a\nb"),
    "deep": _member("r/" + "/".join(["d"] * 40) + "/f"),
    "long": _member("r/" + "n" * 300),
    "outside-root": _member("other/file"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_MEMBERS))
def test_hostile_tar_members_are_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    from handover_vault.bundle.format import extract_bundle
    from handover_vault.errors import IntegrityError, VaultError

    raw = _tar([_member("r/index.html"), HOSTILE_MEMBERS[name]])
    target = tmp_path / "out"
    with pytest.raises(VaultError) as info:
        extract_bundle(io.BytesIO(raw), target)
    assert isinstance(info.value, IntegrityError), info.value
    assert not (tmp_path / "evil").exists() and list(tmp_path.rglob("evil")) == []
    assert not target.exists() or list(target.rglob("*")) == []


def test_duplicate_and_case_folded_members_are_refused(tmp_path: Path) -> None:
    from handover_vault.bundle.format import extract_bundle
    from handover_vault.errors import IntegrityError

    for second in ("r/index.html", "r/INDEX.html", "r/inde\u0301x.html"):
        raw = _tar([_member("r/index.html", data=b"one"), _member(second, data=b"two")])
        if second.endswith("\u0301x.html"):
            continue  # a different name after NFC: not a duplicate
        with pytest.raises(IntegrityError, match="more than once"):
            extract_bundle(io.BytesIO(raw), tmp_path / "out")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
    max_leaves=20,
)


@SLOW
@given(data=st.data())
def test_signed_but_hostile_manifests_are_refused(bundle_tar: tuple[bytes, Any], data: st.DataObject) -> None:
    """A manifest correctly signed (by an attacker's own key) but malformed in any way: only a clean refusal."""
    from handover_vault.bundle.format import verify_bundle_tar
    from handover_vault.keys import crypto

    priv, pub, root = bundle_tar[1]
    good = {
        "client": "acme",
        "exported_at": "x",
        "root": root,
        "vault_fingerprint": crypto.fingerprint(pub),
        "format": "handover-bundle/1",
        "files": [{"path": "index.html", "size": 13, "sha256": "0" * 64}],
    }
    kind = data.draw(st.sampled_from(["random-json", "edit-good", "bytes"]))
    if kind == "random-json":
        manifest = json.dumps(data.draw(json_values)).encode()
    elif kind == "edit-good":
        doc = dict(good)
        doc[data.draw(st.sampled_from(sorted(good)))] = data.draw(json_values)
        manifest = json.dumps(doc).encode()
    else:
        manifest = data.draw(st.binary(max_size=400))
    members = [
        _member(f"{root}/index.html", data=b"<p>report</p>"),
        _member(f"{root}/manifest.json", data=manifest),
        _member(f"{root}/manifest.sig", data=crypto.sign(priv, manifest)),
        _member(f"{root}/signer.pub", data=crypto.public_key_pem(pub)),
    ]
    out = only_vault_errors(verify_bundle_tar, io.BytesIO(_tar(members)))
    assert isinstance(out, Exception), "a hand-made manifest without SHA256SUMS cannot verify"


@SLOW
@given(st.binary(min_size=1, max_size=64))
def test_sealed_bundle_garbage_leaves_nothing(tmp_path_factory: pytest.TempPathFactory, junk: bytes) -> None:
    import pyrage

    from handover_vault.bundle.agefile import load_identity_file
    from handover_vault.bundle.format import open_sealed_bundle

    d = tmp_path_factory.mktemp("sealed")
    ident = pyrage.x25519.Identity.generate()
    (d / "k").write_text(f"{ident}\n")
    sealed = pyrage.encrypt(b"not a tar at all" + junk, [ident.to_public()])
    for variant in (sealed, sealed[: len(sealed) // 2], sealed[:-1] + bytes([sealed[-1] ^ 1]), junk):
        (d / "b.tar.age").write_bytes(variant)
        only_vault_errors(
            open_sealed_bundle, d / "b.tar.age", d / "out", identities=load_identity_file(d / "k")
        )
        assert not (d / "out").exists() or list((d / "out").rglob("*")) == []


# --- importers ----------------------------------------------------------------------------------------

FIXTURES = ROOT / "tests" / "fixtures"


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    raw = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, max(0, len(raw) - 1)))
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip" and raw:
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del raw[i : i + draw(st.integers(1, 20))]
        elif op == "insert":
            raw[i:i] = draw(
                st.sampled_from([b'"', b",", b"\n", b"\x00", b"\xff", b"{", b"]", b"<", b"&x;", b"\r"])
            )
        else:
            del raw[i:]
    return bytes(raw)


IMPORTERS = [
    ("csv", "handover.csv"),
    ("csv", "bitwarden-export.csv"),
    ("csv", "keepassxc-export.csv"),
    ("bitwarden", "bitwarden-export.json"),
    ("bitwarden", "bitwarden-org-export.json"),
    ("keepass-xml", "keepassxc-export.xml"),
]


def _reader(kind: str) -> Any:
    from handover_vault.formats import bitwarden as formats_bitwarden
    from handover_vault.formats import csvfile as formats_csv
    from handover_vault.formats import keepass as formats_keepass

    return {
        "csv": formats_csv.read_csv,
        "bitwarden": formats_bitwarden.read_bitwarden,
        "keepass-xml": formats_keepass.read_keepass_xml,
    }[kind]


@pytest.mark.parametrize("kind,fixture", IMPORTERS, ids=[f for _, f in IMPORTERS])
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_import_files_are_refused_or_read_cleanly(
    tmp_path_factory: pytest.TempPathFactory, kind: str, fixture: str, data: st.DataObject
) -> None:
    src = FIXTURES / fixture
    if not src.exists():
        pytest.fail(f"fixture {fixture} is missing")
    path = tmp_path_factory.mktemp("imp") / fixture
    secrets = [c["secret"] for c in _reader(kind)(src) if c.get("secret") and len(c["secret"]) >= 6]
    path.write_bytes(_mutate(src.read_bytes(), data.draw))
    out = only_vault_errors(_reader(kind), path)
    if isinstance(out, Exception):
        text = " ".join([str(out), *getattr(out, "hints", ())])
        assert contains_any(text, secrets) == [], "an import error quoted a secret"
    if isinstance(out, list):
        assert all(isinstance(c, dict) and "label" in c for c in out)


@SLOW
@given(st.binary(max_size=4096))
def test_random_bytes_as_keepass_database(tmp_path_factory: pytest.TempPathFactory, junk: bytes) -> None:
    from handover_vault.formats.keepass import read_keepass

    path = tmp_path_factory.mktemp("kdbx") / "x.kdbx"
    kdbx = (FIXTURES / "keepassxc-kdbx4.kdbx").read_bytes()
    for variant in (junk, kdbx[: len(junk) % len(kdbx)], kdbx[:12] + junk):
        path.write_bytes(variant)
        only_vault_errors(read_keepass, path, "wrong password")


# --- through the installed command: huge, binary and malformed input ----------------------------------

BIG_SECRET_MARK = "Huge-input-marker"


@pytest.fixture
def cli_vault(tmp_path: Path) -> Path:
    from handover_vault import init_vault

    path = tmp_path / "vault.db"
    v, _ = init_vault(path, PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME Ltd")
    return path


def _cases(tmp: Path) -> list[tuple[str, list[str], bytes, dict[str, str], str]]:
    """(name, argv, stdin, env, expected message fragment)."""
    big_ascii = (BIG_SECRET_MARK + " lorem ipsum\n").encode() * 400_000  # ~12 MB
    binary = os.urandom(3_000_000)
    four_byte = ("\U0001d11e" * 1_100_000).encode()  # 1.1 M characters, 4.4 MB: over the document limit
    (tmp / "big.md").write_bytes(big_ascii)
    (tmp / "bin.dat").write_bytes(binary)
    (tmp / "big.csv").write_bytes(b"label,username,secret\n" + b"x,y,z\n" * 4_000_000)
    (tmp / "bin.json").write_bytes(binary)
    (tmp / "big.json").write_bytes(b'{"items": [' + b'{"name": "x"},' * 300_000 + b"{}]}")
    (tmp / "bin.xml").write_bytes(b"<?xml version='1.0'?>" + binary[:100_000])
    (tmp / "attach.bin").write_bytes(binary)
    return [
        ("doc-stdin-huge", ["doc", "add", "acme", "Huge"], big_ascii, {}, "larger than"),
        ("doc-stdin-4byte", ["doc", "add", "acme", "Huge"], four_byte, {}, "larger than"),
        ("doc-stdin-binary", ["doc", "add", "acme", "Bin"], binary, {}, "not UTF-8"),
        (
            "doc-file-huge",
            ["doc", "add", "acme", "Huge", "--file", str(tmp / "big.md")],
            b"",
            {},
            "larger than",
        ),
        ("doc-file-binary", ["doc", "add", "acme", "Bin", "--file", str(tmp / "bin.dat")], b"", {}, ""),
        ("cred-stdin-huge", ["cred", "add", "acme", "Huge"], big_ascii, {}, "larger than"),
        ("cred-stdin-binary", ["cred", "add", "acme", "Bin"], binary, {}, ""),
        ("cred-long-line", ["cred", "add", "acme", "Long"], b"s" * 500_000 + b"\n", {}, "too long"),
        ("cred-many-lines", ["cred", "add", "acme", "Many"], b"line\n" * 150_000, {}, "lines"),
        (
            "cred-ssh-key",
            ["cred", "add", "acme", "Key"],
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            {},
            "lines",
        ),
        (
            "issue-file-huge",
            ["issue", "add", "acme", "Huge", "--severity", "low", "--file", str(tmp / "big.md")],
            b"",
            {},
            "larger than",
        ),
        ("import-csv-huge", ["import", "csv", "acme", str(tmp / "big.csv")], b"", {}, ""),
        ("import-csv-binary", ["import", "csv", "acme", str(tmp / "bin.dat")], b"", {}, "not UTF-8"),
        (
            "import-bitwarden-binary",
            ["import", "bitwarden", "acme", str(tmp / "bin.json")],
            b"",
            {},
            "not UTF-8",
        ),
        ("import-bitwarden-huge", ["import", "bitwarden", "acme", str(tmp / "big.json")], b"", {}, ""),
        (
            "import-keepass-binary",
            ["import", "keepass", "acme", str(tmp / "bin.dat")],
            b"",
            {"HANDOVER_IMPORT_PASSPHRASE": "x"},
            "",
        ),
        (
            "attach-over-limit",
            ["attach", "add", "acme", str(tmp / "attach.bin")],
            b"",
            {"HANDOVER_MAX_ATTACHMENT_MB": "1"},
            "larger than",
        ),
    ]


def test_huge_and_binary_input_is_bounded_with_a_clear_error(cli_vault: Path, tmp_path: Path) -> None:
    from handover_vault import open_vault

    cases = _cases(tmp_path)
    procs = [start(args, base_env(cli_vault, **extra), stdin) for _, args, stdin, extra, _ in cases]
    for (name, _, _, _, fragment), proc in zip(cases, procs, strict=True):
        out, err = proc.communicate(timeout=300)
        text = err.decode(errors="replace")
        assert proc.returncode == 1, (name, proc.returncode, text[-2000:])
        assert text.startswith("Error: ") and "Traceback" not in text and "internal error" not in text, (
            name,
            text,
        )
        assert fragment in text, (name, text)
        assert len(out) + len(err) < 4000, f"{name}: the refusal echoed the input"
        assert BIG_SECRET_MARK not in text, name
    with open_vault(cli_vault, passphrase=PASSPHRASE) as v:
        client = v.clients.get("acme")
        with v.read() as s:
            counts = {k: v.records.count(s, client, k) for k in ("doc", "cred", "issue", "attachment")}
        assert counts == {"doc": 0, "cred": 0, "issue": 0, "attachment": 0}, "a refused input was stored"
        v.audit.verify()


BAD_VALUES = [
    (["client", "add", "Bad Slug", "--name", "x"], "is not a valid client slug"),
    (["client", "add", "../etc", "--name", "x"], "is not a valid client slug"),
    (["client", "add", "ACME", "--name", "x"], "is not a valid client slug"),
    (["client", "add", "a" * 49, "--name", "x"], "is not a valid client slug"),
    (["client", "add", "acme\u200b", "--name", "x"], "is not a valid client slug"),
    (["client", "add", "-acme", "--name", "x"], ""),
    (["client", "add", "", "--name", "x"], "is not a valid client slug"),
    (["client", "add", "acme", "--name", "dup"], "already exists"),
    (["client", "add", " acme ", "--name", "dup"], "already exists"),
    (["client", "add", "newco", "--name", "x", "--contract-start", "2025-02-30"], "not a real calendar date"),
    (["client", "add", "newco", "--name", "x", "--contract-start", "tomorrow"], "is not a date"),
    (["client", "add", "newco", "--name", "x", "--contract-start", "99999-01-01"], "is not a date"),
    (["client", "add", "newco", "--name", "x", "--notice-days", "-5"], "is not in the range 0<=x<=3650"),
    (["client", "add", "newco", "--name", ""], "must not be empty"),
    (["client", "show", "../../etc/passwd"], "no client"),
    (["asset", "add", "acme", "fw1", "--expires", "2024-13-01"], "not a real calendar date"),
    (["asset", "add", "acme", "fw1", "--expires", "01/02/2024"], "is not a date"),
    (["cred", "add", "acme", "x", "--expires", "2023-02-29"], "not a real calendar date"),
    (["cred", "add", "acme", "x", "--category", "<script>"], "is not one of"),
    (["issue", "ack", "acme", "--by", "Jane", "--date", "2024-00-10"], ""),
    (["end", "acme", "--notice-given", "2024-02-31", "--reason", "x"], ""),
    (["end", "acme", "--notice-given", "last week", "--reason", "x"], ""),
    (["cred", "add", "acme", "totp", "--with-totp"], "otpauth"),
    (["unlock", "--for", "99999d"], "between"),
    (["audit", "list", "--client", "nope"], "no client"),
]


def test_bad_dates_slugs_and_duplicates_through_the_command(cli_vault: Path) -> None:
    procs = []
    for args, _ in BAD_VALUES:
        stdin = b"secret\nnot-an-otpauth-uri\n" if "--with-totp" in args else b"secret\n"
        procs.append(start(args, base_env(cli_vault), stdin))
    for (args, fragment), proc in zip(BAD_VALUES, procs, strict=True):
        _, err = proc.communicate(timeout=120)
        text = err.decode(errors="replace")
        assert proc.returncode in (1, 2), (args, proc.returncode, text)
        assert "Traceback" not in text and "internal error" not in text, (args, text)
        assert text.startswith(("Error: ", "Usage: ")), (args, text)
        assert fragment in text, (args, text)
    from handover_vault import open_vault

    with open_vault(cli_vault, passphrase=PASSPHRASE) as v:
        assert [c.slug for c in v.clients.list()] == ["acme"]
        assert v.clients.get("acme").name == "ACME Ltd"
        v.audit.verify()


def test_duplicate_slugs_under_a_race(cli_vault: Path) -> None:
    """Several processes adding the same new slug at once: exactly one wins."""
    procs = [start(["client", "add", "raced", "--name", f"n{i}"], base_env(cli_vault)) for i in range(5)]
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        codes.append(p.returncode)
        if p.returncode:
            assert b"already exists" in err, err
    assert sorted(codes) == [0, 1, 1, 1, 1], codes
    from handover_vault import open_vault

    with open_vault(cli_vault, passphrase=PASSPHRASE) as v:
        assert [c.slug for c in v.clients.list()].count("raced") == 1


# --- stored text shown on a terminal ------------------------------------------------------------------

CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE_NAMES = [
    "x[/foo]",
    "[link=file:///etc/passwd]click[/link]",
    "[bold red]shout[/]",
    "fw\x1b[2J\x1b]0;pwned\x07",
    "line\roverwritten",
    "abc\u202edcba",
    "nul\x00byte",
    "\x9b31mcsi",
]


@FAST
@given(st.lists(st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE_NAMES)), min_size=1, max_size=6))
def test_tables_and_fields_never_crash_or_pass_control_characters(
    capsys: pytest.CaptureFixture[str], cells: list[str]
) -> None:
    from handover_vault.cli.context import fields, table

    table(["name", "other"], [[c, c[::-1]] for c in cells], "things")
    fields([(f"k{i}", c) for i, c in enumerate(cells)])
    out = capsys.readouterr().out
    assert CONTROL.search(out.replace("\n", "").replace("\t", "")) is None, repr(out)


def test_hostile_names_through_the_command(cli_vault: Path) -> None:
    """Labels from an outside file are listed as text: no markup, no terminal control, no crash."""
    csv_file = cli_vault.parent / "hostile.csv"
    rows = "".join(f'"{n.replace(chr(0), "")}",user,secret-{i}\n' for i, n in enumerate(HOSTILE_NAMES))
    csv_file.write_text("label,username,password\n" + rows)
    done = start(["import", "csv", "acme", str(csv_file)], base_env(cli_vault)).communicate(timeout=120)
    assert b"Error" not in done[1], done[1]
    body = "# Page\n\n\x1b[2J\x1b]0;pwned\x07 and [bold]markup[/bold]\r\n"
    start(["doc", "add", "acme", "Hostile"], base_env(cli_vault), body.encode()).communicate(timeout=120)
    for args in (
        ["cred", "list", "acme"],
        ["doc", "show", "acme", "Hostile"],
        ["doc", "list", "acme"],
        ["search", "user"],
    ):
        proc = start(args, base_env(cli_vault))
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (args, err)
        text = out.decode()
        assert CONTROL.search(text.replace("\n", "").replace("\t", "")) is None, (args, text)
        if args[:2] == ["cred", "list"]:
            assert "x[/foo]" in text and "[link=file:///etc/passwd]click[/link]" in text, text


# --- names chosen by the user end up as file names in the bundle --------------------------------------

name_text = st.one_of(
    st.text(min_size=1, max_size=80).filter(lambda t: t.strip() and "\x00" not in t),
    st.sampled_from(
        [
            "../../etc/passwd",
            "Config.txt",
            "config.txt",
            "CONFIG.TXT",
            "a\\b",
            "CON",
            ".",
            "..x",
            "-rf",
            "x" * 300,
            "émoji 🙂.png",
            "e\u0301.txt",
            "é.txt",
            "\u202etxt.exe",
        ]
    ),
)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(titles=st.lists(name_text, min_size=1, max_size=4), names=st.lists(name_text, min_size=1, max_size=4))
@example(titles=["../../etc/passwd", "x" * 300], names=["Config.txt", "config.txt", "CONFIG.TXT"])
@example(titles=["é"], names=["e\u0301.txt", "é.txt", "../x", "a\\b"])
def test_any_titles_and_attachment_names_give_a_bundle_the_successor_can_open(
    tmp_path_factory: pytest.TempPathFactory, titles: list[str], names: list[str]
) -> None:
    """Doc titles and attachment names become file names in the bundle: whatever they are, the
    export verifies and opens, and every file lands inside the target folder."""
    import pyrage

    from handover_vault import init_vault
    from handover_vault.bundle.agefile import load_identity_file
    from handover_vault.bundle.export import export
    from handover_vault.bundle.format import open_sealed_bundle
    from handover_vault.errors import InvalidInput

    d = tmp_path_factory.mktemp("names")
    ident = pyrage.x25519.Identity.generate()
    (d / "id.txt").write_text(f"{ident}\n")
    v, _ = init_vault(d / "vault.db", PASSPHRASE)
    with v:
        v.clients.add("acme", name="ACME")
        for t in titles:
            v.docs.add("acme", title=t, body="body")
        for i, n in enumerate(names):
            src = d / f"src-{i}"
            src.write_bytes(f"content {i}".encode())
            try:
                v.attachments.add_file("acme", src, name=n)
            except InvalidInput:
                pass  # a name the vault refuses to store ("/", "..") is not exported either
        export(v, "acme", recipients=[str(ident.to_public())], out=d / "b.tar.age", force=True)
    out = d / "opened"
    vb = open_sealed_bundle(d / "b.tar.age", out, identities=load_identity_file(d / "id.txt"))
    written = [p for p in out.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert len([f for f in vb.files if f.path.startswith("docs/")]) == len(titles)


def test_bundle_signatures_forged_flipped_or_truncated_are_refused(bundle_tar: tuple[bytes, Any]) -> None:
    """manifest.sig must be the signer's signature of manifest.json's exact bytes; a bundle
    re-signed by someone else verifies only until the expected fingerprint is given."""
    from handover_vault.bundle.format import verify_bundle_tar
    from handover_vault.errors import IntegrityError
    from handover_vault.keys import crypto

    raw, (_priv, pub, root) = bundle_tar
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: (m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()}  # type: ignore[union-attr]

    def rebuilt(**replace: bytes) -> io.BytesIO:
        out = []
        for name, (m, data) in members.items():
            data = replace.get(name.split("/", 1)[-1], data)
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime, info.mode = (
                m.type,
                len(data) if m.isreg() else 0,
                m.mtime,
                m.mode,
            )
            out.append((info, data))
        return io.BytesIO(_tar(out))

    sig = members[f"{root}/manifest.sig"][1]
    manifest = members[f"{root}/manifest.json"][1]
    genuine = crypto.fingerprint(pub)
    assert verify_bundle_tar(rebuilt(), genuine).signer_fingerprint == genuine
    for bad in (bytes([sig[0] ^ 1]) + sig[1:], sig[:-1], sig + b"\0", b""):
        with pytest.raises(IntegrityError):
            verify_bundle_tar(rebuilt(**{"manifest.sig": bad}))
    with pytest.raises(IntegrityError):
        verify_bundle_tar(rebuilt(**{"manifest.json": manifest.replace(b'"acme"', b'"acmf"')}))
    # An attacker re-signs with their own key and ships their public key as signer.pub.
    evil_priv, evil_pub = crypto.new_signing_key()
    forged = rebuilt(
        **{"manifest.sig": crypto.sign(evil_priv, manifest), "signer.pub": crypto.public_key_pem(evil_pub)}
    )
    with pytest.raises(IntegrityError):
        verify_bundle_tar(forged, genuine)


def test_endless_files_and_commands_are_refused_quickly(cli_vault: Path) -> None:
    """/dev/zero (or a disk image) given as any input file, or a passphrase command that prints without
    end: a clear error within seconds, never a read of the whole input into memory."""
    import time

    zero = "/dev/zero"
    cases = [
        (["client", "list"], {"HANDOVER_PASSPHRASE_FILE": zero}, "larger than"),
        (["client", "list"], {"HANDOVER_PASSPHRASE_COMMAND": "yes"}, "more than 64 KiB"),
        (["audit", "verify", "--checkpoint", zero], {}, "not a checkpoint"),
        (["bundle", "verify", zero, "--identity", zero], {}, "larger than"),
        (["doc", "add", "acme", "z", "--file", zero], {}, "larger than"),
        (["issue", "add", "acme", "z", "--severity", "low", "--file", zero], {}, "larger than"),
        (["import", "csv", "acme", zero], {}, ""),
        (["import", "bitwarden", "acme", zero], {}, ""),
        (["import", "keepass", "acme", zero], {"HANDOVER_IMPORT_PASSPHRASE": "x"}, ""),
        (["attach", "add", "acme", zero], {"HANDOVER_MAX_ATTACHMENT_MB": "2"}, "larger than"),
        (["certificate", "verify", zero], {}, ""),
    ]
    t0 = time.monotonic()
    procs = [start(args, base_env(cli_vault, **extra)) for args, extra, _ in cases]
    for (args, _, fragment), proc in zip(cases, procs, strict=True):
        try:
            _, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{args} kept reading an endless input")
        text = err.decode(errors="replace")
        assert proc.returncode in (1, 2, 3), (args, proc.returncode, text)
        assert text.startswith(("Error: ", "Usage: ")) and "Traceback" not in text, (args, text)
        assert fragment in text, (args, text)
    assert time.monotonic() - t0 < 90
