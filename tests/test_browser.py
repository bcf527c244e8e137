"""The report in a real browser: Debian's headless Chromium reads index.html and acknowledgement.html
of a real bundle, and prints the demo client's report to PDF.

``--dump-dom`` is the document as Chromium parsed it (its HTML5 parser, not Python's): every cell's
text is compared with the stored values, hostile ones included. The PDF shows how the report
prints: the page count of the demo client stays small, and no URL, secret or date is broken
across lines.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need, run
from tests.test_bundle_exact import FIELDS, _Collect

# Chromium's shared memory in /dev/shm must not show in the hygiene test's check of that folder
# (tests/test_adversarial_hygiene.py): under pytest-xdist one worker runs the group.
pytestmark = [pytest.mark.interop, pytest.mark.xdist_group("dev-shm")]

# A small client prints on this many pages at most (the browser's default paper; measured: 4).
MAX_DEMO_PAGES = 5
HOSTILE = [
    {
        "label": "Firewall | admin *",
        "username": "CORP\\svc",
        "secret": "p|q\\\\`x``*_<b>&amp;\"' =1+1",
        "url": "https://fw1.acme.example/a_b?x=1&y=<2>|3",
        "notes": '=HYPERLINK("x")\n\tindented \\ back\\slash\n\u202eRTL\u200f mark: é 中 😀\n| a | b |\n\r\nend',
    },
    {
        "label": "Registrar",
        "username": "+admin@example",
        # C0 controls other than tab, LF and CR cannot be in the KeePass XML (XML 1.0 forbids them),
        # so the export refuses them; DEL and C1 controls are fine everywhere.
        "secret": "-\t\x7f\x85\x9b `` ` ",
        "url": "@https://registrar.example/#x",
        "notes": "  two leading spaces, trailing  ",
    },
]


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    exe = need("chromium")
    flags = [
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ]
    done = subprocess.run([exe, *flags, *args], capture_output=True, timeout=120, check=False)
    # Decoded by hand: text=True would turn the DOM's CRLF into LF (universal newlines).
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8", "replace")
    )


def dump_dom(page: Path, profile: Path) -> str:
    done = chromium("--dump-dom", page.as_uri(), profile=profile)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _open(bundle: Path, key: Path, into: Path) -> Path:
    from handover_vault.bundle.agefile import load_identity_file
    from handover_vault.bundle.format import open_sealed_bundle

    vb = open_sealed_bundle(bundle, into, identities=load_identity_file(key))
    return into / vb.root


@pytest.fixture
def hostile_bundle(v: Any, vault_path: Path, tmp_path: Path) -> Path:
    from handover_vault.bundle.export import export, set_successor

    v.clients.add("acme", name='ACME <Ltd> & "Co"')
    for cred in HOSTILE:
        v.creds.add("acme", category="firewall", **cred)
    v.issues.add(
        "acme",
        title="Core | switch <EOL>",
        severity="critical",
        risk="outage & \\ loss",
        workaround="`spare`",
    )
    key = tmp_path / "successor.txt"
    subprocess.run([need("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    public = re.search(r"public key: (age1\w+)", key.read_text()).group(1)  # type: ignore[union-attr]
    set_successor(v, "acme", "Next IT", [public])
    result = export(v, "acme", out=tmp_path / "acme.tar.age", force=True)
    return _open(result.path, key, tmp_path / "opened")


def test_chromium_shows_every_value_exactly(hostile_bundle: Path, tmp_path: Path) -> None:
    dom = dump_dom(hostile_bundle / "index.html", tmp_path / "profile")
    section = dom.split('<section id="credentials">', 1)[1].split("</section>", 1)[0]
    shown = {}
    for chunk in section.split('<div class="record credential"')[1:]:
        label = _Collect(None)
        title = re.search(r"<h3>(.*?)</h3>", chunk, re.S).group(1)  # type: ignore[union-attr]
        label.feed(f"<code>{title}</code>")
        p = _Collect("data-field")
        p.feed(chunk)
        shown[label.found[0][1]] = [(k, v) for k, v in p.found if k in FIELDS]
    assert shown == {c["label"]: [(f, c[f]) for f in FIELDS] for c in HOSTILE}
    # The same values as the successor's other files hold them.
    stored = json.loads((hostile_bundle / "credentials.json").read_text())
    assert {c["label"]: [(f, c[f]) for f in FIELDS] for c in stored} == shown
    # Nothing the page holds became markup: no element Chromium built came from a value.
    assert "<b>" not in section and "<script" not in dom.lower()


def test_chromium_shows_the_acknowledgement_form_cell_by_cell(hostile_bundle: Path, tmp_path: Path) -> None:
    dom = dump_dom(hostile_bundle / "acknowledgement.html", tmp_path / "profile")

    class Cells(_Collect):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.stack.append((tag, tag == "td", len(self.found)))
            if tag == "td":
                self.found.append(["td", ""])

    cells = Cells(None)
    cells.feed(dom.split("<tbody>", 1)[1])
    assert [t for _, t in cells.found] == [
        "critical",
        "Core | switch <EOL>",
        "outage & \\ loss",
        "`spare`",
        "Not acknowledged",
    ]


def test_the_demo_client_prints_on_a_few_pages_without_breaking_tokens(tmp_path: Path) -> None:
    import pypdf  # a test dependency (pyproject's [test] extra): never skipped

    need("chromium")
    work = tmp_path / "demo"
    done = run(["demo", "--keep", str(work)], passphrase=None, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (bundle,) = work.glob("*.tar.age")
    root = _open(bundle, work / "successor.key", tmp_path / "opened")
    pdf = tmp_path / "report.pdf"
    printed = chromium(
        "--no-pdf-header-footer",
        f"--print-to-pdf={pdf}",
        (root / "index.html").as_uri(),
        profile=tmp_path / "p",
    )
    assert printed.returncode == 0 and pdf.exists(), printed.stderr[-2000:]
    reader = pypdf.PdfReader(str(pdf))
    assert 1 <= len(reader.pages) <= MAX_DEMO_PAGES, f"{len(reader.pages)} pages"
    text = "\n".join(page.extract_text() for page in reader.pages)
    creds = json.loads((root / "credentials.json").read_text())
    tokens = [
        c[f] for c in creds for f in ("username", "secret", "url", "expires") if c.get(f) and " " not in c[f]
    ]
    with (root / "assets.csv").open(newline="") as fh:
        tokens += [row[f] for row in csv.DictReader(fh) for f in ("hostname", "ip", "serial") if row[f]]
    tokens += re.findall(r"\b\d{4}-\d{2}-\d{2}\b", (root / "HANDOVER.md").read_text())
    assert tokens
    # A token wrapped in print shows in the extracted text as its two halves on two lines.
    broken = [t for t in set(tokens) if any(f"{t[:i]}\n{t[i:]}" in text for i in range(1, len(t)))]
    assert not broken, f"split across lines in print: {broken}"
    assert os.path.getsize(pdf) > 1000
