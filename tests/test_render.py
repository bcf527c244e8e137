"""vault/render.py: Markdown from the vault becomes HTML that runs nothing and fetches nothing."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handover_vault.render import (
    CSP,
    escape,
    html_page,
    html_section,
    html_table,
    is_safe_link,
    render_markdown,
)

FORBIDDEN_TAGS = {
    "script",
    "img",
    "iframe",
    "frame",
    "object",
    "embed",
    "style",
    "link",
    "meta",
    "base",
    "form",
    "svg",
}


class Tags(HTMLParser):
    """Every start tag with its attributes, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


def assert_inert(html: str) -> None:
    """No script, no event handler, no resource load, and only allow-listed link targets."""
    assert "<script" not in html.lower()
    for tag, attrs in tags(html):
        assert tag not in FORBIDDEN_TAGS, (tag, html)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "src" not in attrs and "srcset" not in attrs and "style" not in attrs, (tag, attrs)
        if "href" in attrs:
            assert tag == "a" and is_safe_link(attrs["href"] or ""), attrs
        if attrs.get("class") == "image-link":  # from an image: never a remote host, not even a link
            assert not re.match(r"[a-z][a-z0-9+.-]*:|//", attrs.get("href") or "", re.I), attrs


@pytest.mark.parametrize(
    "markdown",
    [
        "<script>alert(1)</script>",
        "<SCRIPT SRC=http://evil/x.js></SCRIPT>",
        "<img src=x onerror=alert(1)>",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src=https://evil></iframe>",
        "<svg onload=alert(1)>",
        "<style>body{background:url(http://evil)}</style>",
        "```\n<script>in code</script>\n```",
    ],
)
def test_raw_html_comes_out_as_text(markdown: str) -> None:
    html = render_markdown(markdown)
    assert_inert(html)
    assert "&lt;" in html  # shown to the reader, not interpreted


@pytest.mark.parametrize(
    "markdown",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "[x](&#x6A;avascript:alert(1))",
        "[x](<java\tscript:alert(1)>)",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](file:///etc/passwd)",
        "[x](//evil.example/path)",
        "<javascript:alert(1)>",
        "<data:text/html,hi>",
        "[x][r]\n\n[r]: javascript:alert(1)",
    ],
)
def test_unsafe_links_stay_unlinked_text(markdown: str) -> None:
    html = render_markdown(markdown)
    assert_inert(html)
    assert "<a " not in html


@pytest.mark.parametrize(
    ("markdown", "href"),
    [
        ("[mail](mailto:noc@example.com)", "mailto:noc@example.com"),
        ("[doc](docs/01-network.md)", "docs/01-network.md"),
        ("[top](#known-issues)", "#known-issues"),
    ],
)
def test_safe_links_are_kept_with_no_referrer(markdown: str, href: str) -> None:
    html = render_markdown(markdown)
    assert f'href="{href}"' in html and 'rel="noopener noreferrer"' in html
    assert_inert(html)


@pytest.mark.parametrize(
    ("markdown", "shown"),
    [
        (
            "[site](https://example.com/a?b=1&c=2)",
            'site</span> <span class="url">&lt;https://example.com/a?b=1&amp;c=2&gt;',
        ),
        ("[site](http://example.com)", 'site</span> <span class="url">&lt;http://example.com&gt;'),
        ("<https://example.com>", '<span class="external-link">https://example.com</span>'),
    ],
)
def test_external_links_are_shown_not_linked(markdown: str, shown: str) -> None:
    """The report never sends its reader to another site: the address is there to copy."""
    html = render_markdown(markdown)
    assert shown in html
    assert "href=" not in html
    assert_inert(html)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        (
            "![rack photo](http://intranet/rack.png)",
            '<span class="image-alt">[image: rack photo] &lt;http://intranet/rack.png&gt;</span>',
        ),
        (
            "![diagram](docs/net.svg)",
            '<a class="image-link" href="docs/net.svg" rel="noopener noreferrer">[image: diagram]</a>',
        ),
        ("![](https://x/y.png)", "[image: image]"),
        ('![a "quoted" <alt>](https://x/y.png)', "[image: a &quot;quoted&quot; &lt;alt&gt;]"),
        (
            "![pixel][p]\n\n[p]: https://tracker.example/p.gif",
            "[image: pixel] &lt;https://tracker.example/p.gif&gt;",
        ),
    ],
)
def test_images_never_load(markdown: str, expected: str) -> None:
    html = render_markdown(markdown)
    assert expected in html
    assert "<img" not in html and not re.search(r"href=\"(https?:)?//", html)
    assert_inert(html)


def test_data_and_script_images_are_plain_text() -> None:
    for src in ("data:image/png;base64,iVBORw0KGgo=", "javascript:alert(1)"):
        html = render_markdown(f"![x]({src})")
        assert "<img" not in html and "<a " not in html
        assert_inert(html)


def test_tables_and_strikethrough_render() -> None:
    html = render_markdown("| host | ip |\n|---|---|\n| fw1 | 10.0.0.1 |\n\n~~old~~")
    assert "<table>" in html and "<td>fw1</td>" in html and "<s>old</s>" in html


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://example.com", True),
        ("HTTP://EXAMPLE.COM", True),
        ("mailto:a@b.c", True),
        ("docs/a.md", True),
        ("#anchor", True),
        ("?q=1", True),
        ("./a:b", True),
        ("", True),
        ("javascript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("\x01javascript:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("java\nscript:alert(1)", False),
        ("data:text/html,x", False),
        ("vbscript:x", False),
        ("file:///etc/passwd", False),
        ("ftp://example.com", False),
        ("//evil.example", False),
        ("\\\\evil.example\\share", False),
        ("/\\evil.example", False),
        ("c:\\windows", False),
        ("java%09script:alert(1)", False),
        ("%6Aavascript:alert(1)", False),
        ("%2F%2Fevil.example", False),
        ("docs/a%20b.md", True),
    ],
)
def test_is_safe_link(url: str, safe: bool) -> None:
    assert is_safe_link(url) is safe


def test_escape_covers_markup_and_quotes() -> None:
    assert escape("<b class='x'>\"&") == "&lt;b class=&#x27;x&#x27;&gt;&quot;&amp;"


def test_html_table_escapes_every_cell() -> None:
    html = html_table(["Label", "<Secret>"], [["fw", "p<a>ss\"'"], ["wifi", None]], css_class="creds")
    assert '<table class="creds">' in html
    assert "<th>&lt;Secret&gt;</th>" in html and "<td>p&lt;a&gt;ss&quot;&#x27;</td>" in html
    assert "<td></td>" in html
    assert_inert(html)


def test_html_page_is_self_contained_and_locked_down() -> None:
    body = html_section(
        "Known issues <3",
        render_markdown("<script>x</script>\n\n![p](https://t.example/p.gif)"),
        anchor="issues",
    )
    page = html_page('Acme "handover" <2026>', body)
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    assert CSP.startswith("default-src 'none'; style-src 'unsafe-inline'; img-src data:")
    # The CSP comes before anything it must govern.
    assert page.index("Content-Security-Policy") < page.index("<style>") < page.index("<body>")
    assert "<title>Acme &quot;handover&quot; &lt;2026&gt;</title>" in page
    assert '<section id="issues">\n<h2>Known issues &lt;3</h2>' in page
    assert "@media print" in page and "break-inside: avoid" in page and "break-before: page" not in page
    # Nothing that could fetch: no src, no CSS url() or @import, no script, no external stylesheet.
    assert not re.search(r"\bsrc=|url\(|@import|<script|<link", page, re.I)
    assert_inert(page.split("<body>", 1)[1])


markdown_bits = st.sampled_from(
    [
        "<script>",
        "</script>",
        "<img src=x onerror=alert(1)>",
        " onload=",
        "javascript:",
        "JAVASCRIPT:",
        "data:text/html,",
        "vbscript:",
        "&#106;",
        "\t",
        "\n",
        "[",
        "](",
        ")",
        "![",
        "<",
        ">",
        '"',
        "'",
        "`",
        "|",
        "---",
        "http://evil.example/x.png",
        "https://ok.example",
        "//evil.example",
        "[r]: ",
        "\\",
        "*",
        "#",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(markdown_bits, st.text(max_size=8)), max_size=40).map("".join))
def test_no_markdown_produces_active_content(text: str) -> None:
    assert_inert(render_markdown(text))


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_produces_no_active_content(text: str) -> None:
    html = render_markdown(text)
    assert_inert(html)
    assert not re.search(r"<[^>]*\son\w+=", html)
