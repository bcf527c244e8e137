"""Safe HTML for the handover report and printable forms (DESIGN §6).

Markdown written into the vault is untrusted as far as the report is concerned: a page pasted from
a client's wiki may contain ``<script>`` or a ``javascript:`` link. So:

- markdown-it-py's ``commonmark`` preset with raw HTML **disabled**: tags come out as text;
- links are allow-listed: ``http``, ``https``, ``mailto`` and scheme-less (relative or ``#anchor``)
  targets only; anything else (``javascript:``, ``data:``, ``vbscript:``, ``file:``) stays text;
  and only relative and ``mailto:`` links are clickable: an ``http(s)`` address is shown as text,
  so the report never sends its reader (and a Referer) to another site;
- images never become ``<img>``: the report must make no request of any kind when opened, so an
  image renders as ``[image: alt]`` text; only a relative source (a file in the bundle) is linked,
  a remote one is shown as text and never becomes an ``href``;
- :func:`html_page` wraps a body in a self-contained document whose Content-Security-Policy forbids
  scripts, external styles, fonts, frames and images other than ``data:``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

__all__ = ["CSP", "escape", "html_page", "html_section", "html_table", "is_safe_link", "render_markdown"]

# Schemes a link may use. Everything else could run code (javascript:, vbscript:), smuggle a document
# (data:), or reach local files (file:).
ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})
# What a browser treats as a scheme: RFC 3986 `scheme ":"` at the start.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# The WHATWG URL parser deletes tab, CR and LF anywhere and trims C0 controls and spaces, so
# "java\tscript:" *is* javascript:. We do the same before looking for the scheme.
_URL_NOISE = re.compile(r"[\t\r\n]")
_URL_TRIM = "".join(chr(c) for c in range(0x21))
# default-src 'none' forbids scripts, fetches, fonts and frames; inline styles are allowed for our
# own <style>; img-src data: leaves room for embedded images only. base-uri and form-action are not
# covered by default-src, so they are closed explicitly.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def escape(text: str) -> str:
    """HTML-escape text for element content and quoted attribute values (quotes included).

    The one HTML-escaping function of the report. A carriage return becomes ``&#13;``: an HTML
    parser turns a literal CR (and CRLF) into LF before anything else, a character reference it
    keeps. Other control characters pass as they are (the parser keeps them); NUL never reaches
    here (vault/validate.py refuses it).
    """
    return html.escape(text, quote=True).replace("\r", "&#13;")


def is_safe_link(url: str) -> bool:
    """True for http(s), mailto and scheme-less (relative, ``#anchor``) link targets.

    markdown-it percent-encodes a destination before validating it, so the percent-decoded form
    is checked too: ``java%09script:`` is harmless to a browser, but refusing it costs nothing.
    """
    return _safe_form(url) and _safe_form(unquote(url))


def _safe_form(url: str) -> bool:
    cleaned = _URL_NOISE.sub("", url).strip(_URL_TRIM)
    # A leading // or any backslash (browsers read "\" as "/") would reach another host from a
    # report opened as a local file; no legitimate relative link needs either.
    if cleaned.startswith("//") or "\\" in cleaned:
        return False
    match = _SCHEME.match(cleaned)
    return match is None or match.group(1).lower() in ALLOWED_SCHEMES


class _SafeMarkdown(MarkdownIt):
    """markdown-it with our link allow-list (it calls validateLink for links, images, autolinks)."""

    def validateLink(self, url: str) -> bool:
        return is_safe_link(url)


def _render_image(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """An image as text, never an <img>: opening the report must not make any request.

    A relative source (a file inside the bundle) stays a link; a remote one is shown as text only,
    so that a tracking pixel is not even one click away: ``[image: alt] <https://host/p.gif>``.
    """
    token = tokens[idx]
    alt = renderer.renderInlineAsText(token.children or [], options, env) or "image"
    label = f"[image: {escape(alt)}]"
    src = str(token.attrGet("src") or "")
    if src and is_safe_link(src) and not _SCHEME.match(src):
        return f'<a class="image-link" href="{escape(src)}" rel="noopener noreferrer">{label}</a>'
    shown = f" &lt;{escape(src)}&gt;" if src and is_safe_link(src) else ""
    return f'<span class="image-alt">{label}{shown}</span>'


def _render_link_open(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """Links within the bundle and mailto: stay links; a link to another site becomes text.

    The report holds every secret of the client: it never sends the reader anywhere, not even on a
    click, so an external address is shown (to copy) rather than linked.
    """
    token = tokens[idx]
    href = str(token.attrGet("href") or "")
    external = bool(_SCHEME.match(href)) and not href.lower().startswith("mailto:")
    stack = env.setdefault("_link_stack", [])
    stack.append(href if external and token.markup != "autolink" else ("" if external else None))
    if external:
        return '<span class="external-link">'
    # noreferrer: following a link from the report must not tell the site where it came from.
    token.attrSet("rel", "noopener noreferrer")
    return renderer.renderToken(tokens, idx, options, env)


def _render_link_close(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    href = env.get("_link_stack", [None]).pop() if env.get("_link_stack") else None
    if href is None:
        return renderer.renderToken(tokens, idx, options, env)
    return "</span>" + (f' <span class="url">&lt;{escape(href)}&gt;</span>' if href else "")


def _build() -> MarkdownIt:
    md = _SafeMarkdown("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])  # both ship with markdown-it-py's core rules
    md.add_render_rule("image", _render_image)
    md.add_render_rule("link_open", _render_link_open)
    md.add_render_rule("link_close", _render_link_close)
    return md


_MD = _build()


def render_markdown(text: str, demote: int = 0) -> str:
    """Render Markdown to an HTML fragment that contains no script, handler, or external resource.

    ``demote`` lowers every heading by that many levels (at most h6), so a page's own ``# Title``
    becomes a sub-heading of the report section that holds it (one H1 per report).
    """
    env: EnvType = {}
    tokens = _MD.parse(text, env)
    if demote:
        for token in tokens:
            if token.type in ("heading_open", "heading_close"):
                token.tag = f"h{min(6, int(token.tag[1]) + demote)}"
    return str(_MD.renderer.render(tokens, _MD.options, env))


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, css_class: str = "") -> str:
    """A table of plain-text cells (every cell escaped; None becomes empty)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row) + "</tr>\n"
        for row in rows
    )
    cls = f' class="{escape(css_class)}"' if css_class else ""
    return f"<table{cls}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def html_section(heading: str, body_html: str, *, anchor: str = "") -> str:
    """A report section (sections flow on when printed). ``body_html`` must be safe HTML."""
    ident = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{ident}>\n<h2>{escape(heading)}</h2>\n{body_html}</section>\n"


_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
       background: #fff; margin: 0; }
main { max-width: 62rem; margin: 0 auto; padding: 1.5rem 1.5rem 4rem; }
h1, h2, h3, h4, h5, h6 { line-height: 1.25; margin: 1.3em 0 0.45em; }
h1 { font-size: 1.8rem; border-bottom: 2px solid #1b1b1b; padding-bottom: 0.3rem; }
h2 { font-size: 1.35rem; border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; }
h3 { font-size: 1.1rem; }
section { margin-top: 1.8rem; }
table { border-collapse: collapse; width: 100%; margin: 0.6rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #bbb; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
/* Words wrap between each other, never inside: a URL, a secret or a date breaks only if it alone is
   wider than the whole line (break-word, unlike anywhere, leaves table columns their width). */
th, td, p, li { overflow-wrap: break-word; word-break: normal; hyphens: none; }
table.fields th { width: 9rem; white-space: nowrap; font-weight: 600; }
/* Exact values keep every space and never wrap: a line break after the "-" of a host name or a
   secret is one a reader would copy. Prose-like values (notes) and values too long for any line
   (class long, set by the writer) wrap at spaces, and the long ones anywhere. */
.v { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.9em;
     white-space: pre; background: #f4f4f4; padding: 0 0.15em; }
.v.notes, .v.field, .v.block { white-space: pre-wrap; }
.v.long { white-space: pre-wrap; overflow-wrap: anywhere; }
.v.block { display: block; padding: 0.4rem 0.6rem; margin: 0.3rem 0; }
.nowrap { white-space: nowrap; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.75rem; overflow-x: auto; white-space: pre-wrap; }
blockquote { border-left: 4px solid #ccc; margin: 1rem 0; padding: 0.1rem 1rem; color: #444; }
nav.toc ul { list-style: none; padding: 0; margin: 0.5rem 0; display: flex; flex-wrap: wrap; gap: 0.2rem 1.2rem; }
ul.checklist { list-style: none; padding-left: 0.5rem; }
.box { font-size: 1.1em; }
.record { margin: 0.8rem 0 1rem; }
.record h3 { margin: 0.6rem 0 0.2rem; }
.warning, li.critical, tr.critical { color: #900; font-weight: 600; }
li.soon, tr.soon, .soon { background: #fff3c4; }
li.expired, tr.expired { background: #ffd9d6; }
p.note { background: #eef4ff; border-left: 4px solid #6b8fd6; padding: 0.3rem 0.6rem; }
.image-alt, .image-link { font-style: italic; color: #555; }
.severity-critical { color: #a00; font-weight: 700; }
.severity-high { color: #c50; font-weight: 700; }
.tick { width: 3rem; }
.signature-line { border-bottom: 1px solid #000; height: 2.5rem; margin: 1.5rem 0 0.3rem; }
@page { margin: 14mm 13mm; }
@media print {
  body { font-size: 9.5pt; line-height: 1.35; }
  main { max-width: none; padding: 0; }
  section { margin-top: 1rem; }            /* sections flow on: no page break of their own */
  h1, h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  tr, .record, pre, blockquote, .v.block { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  nav.toc { display: none; }
  a { color: inherit; text-decoration: none; }
}
"""


def html_page(title: str, body_html: str, *, heading: bool = True) -> str:
    """A complete, self-contained HTML5 document: inline CSS, no JavaScript, a closed CSP.

    ``body_html`` must already be safe (from :func:`render_markdown`, :func:`escape` and friends).
    """
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{f'<h1>{escape(title)}</h1>' if heading else ''}\n{body_html}</main>\n</body>\n</html>\n"
    )
