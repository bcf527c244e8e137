"""The handover report as a small document, written out twice: ``index.html`` and ``HANDOVER.md``.

Content (vault/bundle/handover.py) builds a :class:`Report` of sections and blocks holding the *data*; each
writer escapes it once, for its own format, so no value passes through two escaping layers:

- :func:`to_html` escapes with :func:`vault.render.escape` only (the one HTML-escaping function);
  exact values sit in elements styled ``white-space: pre-wrap``, so the browser shows every space,
  tab and newline as stored;
- :func:`to_markdown` writes GFM: ordinary text with every character that can start or end
  Markdown syntax backslash-escaped (CommonMark makes an escaped ASCII punctuation character
  literal, and GFM's table splitter turns ``\\|`` back into ``|`` before inline parsing, so the same
  escape is right inside table cells), and a leading list, quote or heading marker escaped;
  exact values as code spans (fence longer than any backtick run inside, ``|`` escaped in table
  cells only, where the splitter removes that one backslash again); multi-line values and
  user-written Markdown as fenced blocks, which nothing inside can close early.

One thing Markdown cannot carry is a carriage return: CommonMark turns every CR into a line ending.
A value holding one is written with a note that credentials.json has it exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..render import escape, render_markdown

__all__ = [
    "Block",
    "Bullets",
    "Checklist",
    "Exact",
    "Link",
    "Markdown",
    "Nowrap",
    "Para",
    "Record",
    "Report",
    "Section",
    "Strong",
    "Table",
    "md_code",
    "md_fence",
    "md_text",
    "to_html",
    "to_markdown",
]


@dataclass(frozen=True)
class Exact:
    """A value the successor copies: shown exactly (code in Markdown, pre-wrap in HTML)."""

    text: str
    kind: str = ""  # "secret", "url", "username": a CSS class and a data-field for tests


@dataclass(frozen=True)
class Strong:
    text: str


@dataclass(frozen=True)
class Nowrap:
    """Ordinary text that must not wrap inside (dates, counts with units)."""

    text: str


@dataclass(frozen=True)
class Link:
    """A link to a section of this report."""

    text: str
    anchor: str


Inline = str | Exact | Strong | Nowrap | Link
Cell = Inline | tuple[Inline, ...] | None


@dataclass(frozen=True)
class Para:
    parts: tuple[Inline, ...]
    css: str = ""  # "warning" or "note": highlighted in HTML, bold lead-in in Markdown


@dataclass(frozen=True)
class Bullets:
    items: tuple[tuple[Inline, ...], ...]
    css: tuple[str, ...] = ()  # per item, e.g. "soon" or "critical"


@dataclass(frozen=True)
class Checklist:
    """Items for the reader to tick (``- [ ]`` in Markdown, a box in HTML)."""

    items: tuple[tuple[Inline, ...], ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    row_css: tuple[str, ...] = ()
    css: str = ""
    empty: str = "None recorded."


@dataclass(frozen=True)
class Record:
    """One item with labelled fields (a credential): a small two-column table kept on one page."""

    title: str
    fields: tuple[tuple[str, Cell], ...]
    notes: tuple[Para, ...] = ()
    anchor: str = ""
    css: str = ""


@dataclass(frozen=True)
class Block:
    """A multi-line exact value (a credential's notes)."""

    text: str
    kind: str = ""


@dataclass(frozen=True)
class Markdown:
    """Markdown written by the technician (documents, issue descriptions), untrusted. With ``ref``
    (the page's file in the bundle) HANDOVER.md links to that file instead of repeating it."""

    text: str
    ref: str = ""


BlockT = Para | Bullets | Checklist | Table | Record | Block | Markdown


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[BlockT, ...]
    anchor: str = ""
    subsections: tuple[Section, ...] = ()

    @property
    def ident(self) -> str:
        return self.anchor or slug(self.title)


@dataclass(frozen=True)
class Report:
    title: str
    sections: tuple[Section, ...] = field(default_factory=tuple)
    contents: bool = True


def slug(title: str) -> str:
    """GitHub's heading anchor for plain titles: lower case, spaces to dashes, punctuation dropped."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).strip().replace(" ", "-")


# --- Markdown --------------------------------------------------------------------------------------

# Emphasis, code, links and images, raw HTML and autolinks, entities, tables, strikethrough, headings.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>&|~#])")
# At the start of a block these begin a list, a quote or a setext underline: "- x", "1. x", "> x".
_MD_LEADING = re.compile(r"^(\s*)(?:([-+=>])|(\d{1,9})([.)]))")
_BACKTICKS = re.compile(r"`+")
_LINE_END = re.compile(r"\r\n|\r|\n")  # what CommonMark treats as a line ending, nothing else


def md_text(text: str) -> str:
    """Ordinary text for Markdown (paragraphs, headings, table cells, list items): Markdown's syntax
    characters backslash-escaped, line breaks as spaces. Leading and trailing spaces do not survive
    (Markdown trims them): exact values use :func:`md_code`."""
    text = _MD_SPECIAL.sub(r"\\\1", _LINE_END.sub(" ", text))
    # Leading tabs or spaces could indent a list item's text into a code block: as character
    # references they are the same characters, but no indentation.
    lead = len(text) - len(text.lstrip(" \t"))
    if "\t" in text[:lead] or lead > 1:
        text = "".join(f"&#{ord(ch)};" for ch in text[:lead]) + text[lead:]
    return _MD_LEADING.sub(
        lambda m: m.group(1) + ("\\" + m.group(2) if m.group(2) else m.group(3) + "\\" + m.group(4)),
        text,
        count=1,
    )


def md_code(text: str, in_table: bool = False) -> str:
    """``text`` as a code span that renders exactly (single-line text only, see :func:`inline_ok`)."""
    if not text:
        return ""
    fence = "`" * (max((len(m) for m in _BACKTICKS.findall(text)), default=0) + 1)
    # A space on each side keeps a backtick at either end apart from the fence; CommonMark strips
    # one space from each end when both ends are spaces (unless all are), so a value that itself
    # starts and ends with a space needs the padding too, and nothing else does.
    edge_tick = text[0] == "`" or text[-1] == "`"
    pad = " " if edge_tick or (text[0] == text[-1] == " " and text.strip(" ")) else ""
    body = text.replace("|", "\\|") if in_table else text
    return f"{fence}{pad}{body}{pad}{fence}"


def inline_ok(text: str) -> bool:
    """A code span holds text without line endings only (CommonMark turns them into spaces)."""
    return "\n" not in text and "\r" not in text


def md_fence(text: str, info: str = "text") -> str:
    """A fenced block that renders ``text`` exactly (plus one final newline); nothing in ``text``
    can close it early, since the fence is longer than any run of backticks inside."""
    fence = "`" * max(3, max((len(m) for m in _BACKTICKS.findall(text)), default=0) + 1)
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    return f"{fence}{info}\n{body}{'' if body.endswith(chr(10)) or not body else chr(10)}{fence}\n"


def _md_inline(part: Inline, in_table: bool = False) -> str:
    if isinstance(part, str):
        return md_text(part)
    if isinstance(part, Exact):
        if inline_ok(part.text):
            return md_code(part.text, in_table)
        return md_text("(several lines: see credentials.json)")
    if isinstance(part, Strong):
        # Spaces stay outside the ** (a closing ** after a space is not a delimiter at all).
        core = part.text.strip(" ")
        if not core:
            return md_text(part.text)
        lead, trail = (
            part.text[: len(part.text) - len(part.text.lstrip(" "))],
            part.text[len(part.text.rstrip(" ")) :],
        )
        return f"{lead}**{md_text(core)}**{trail}"
    if isinstance(part, Nowrap):
        return md_text(part.text)
    return f"[{md_text(part.text)}](#{part.anchor})"


def _md_cell(cell: Cell) -> str:
    if cell is None:
        return ""
    parts = cell if isinstance(cell, tuple) else (cell,)
    return "".join(_md_inline(p, in_table=True) for p in parts)


def _md_line(parts: tuple[Inline, ...]) -> str:
    return "".join(_md_inline(p) for p in parts)


def _md_block(b: BlockT) -> str:
    if isinstance(b, Para):
        lead = {"warning": "**Warning:** ", "note": "**Note:** "}.get(b.css, "")
        return lead + _md_line(b.parts) + "\n"
    if isinstance(b, Bullets):
        return "".join(f"- {_md_line(item)}\n" for item in b.items)
    if isinstance(b, Checklist):
        return "".join(f"- [ ] {_md_line(item)}\n" for item in b.items)
    if isinstance(b, Table):
        if not b.rows:
            return f"_{md_text(b.empty)}_\n"
        out = ["| " + " | ".join(md_text(h) for h in b.headers) + " |", "|" + "---|" * len(b.headers)]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        return "\n".join(out) + "\n"
    if isinstance(b, Record):
        lines, blocks = [f"### {md_text(b.title)}", ""], []
        for label, cell in b.fields:
            if cell is None or cell == "":
                continue
            parts = cell if isinstance(cell, tuple) else (cell,)
            multi = [p for p in parts if isinstance(p, Exact) and not inline_ok(p.text)]
            if multi:
                lines.append(f"- **{md_text(label)}:** (below)")
                blocks.append(f"{md_text(label)}:\n\n{_md_exact_block(multi[0].text)}")
            else:
                lines.append(f"- **{md_text(label)}:** {_md_line(parts)}")
        text = "\n".join(lines) + "\n"
        for para in b.notes:
            text += "\n" + _md_block(para)
        return text + "".join("\n" + blk for blk in blocks)
    if isinstance(b, Block):
        return _md_exact_block(b.text)
    if b.ref:
        return f"See [{md_text(b.ref)}]({b.ref}).\n"
    return md_fence(b.text, "markdown")


def _md_exact_block(text: str) -> str:
    out = md_fence(text)
    if "\r" in text:
        out += "\n" + md_text("(This value holds carriage returns, shown above as line breaks; ")
        out += md_text("credentials.json has it exactly.)") + "\n"
    return out


def _md_section(s: Section, level: int) -> list[str]:
    out = [f"{'#' * level} {md_text(s.title)}", ""]
    for b in s.blocks:
        out += [_md_block(b)]
    for sub in s.subsections:
        out += _md_section(sub, level + 1)
    return out


def to_markdown(r: Report) -> str:
    """HANDOVER.md: GFM that renders every value exactly (see the module's notes)."""
    out = [f"# {md_text(r.title)}", ""]
    if r.contents:
        out += ["**Contents:** " + " · ".join(f"[{md_text(s.title)}](#{s.ident})" for s in r.sections), ""]
    for s in r.sections:
        out += _md_section(s, 2)
    return "\n".join(out)


# --- HTML ------------------------------------------------------------------------------------------


def _cls(*names: str) -> str:
    joined = " ".join(n for n in names if n)
    return f' class="{escape(joined)}"' if joined else ""


# An exact value longer than this may not fit a printed line: it may wrap (class "long").
LONG_VALUE = 60
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2})?Z)?\b")


def _html_inline(part: Inline) -> str:
    if isinstance(part, str):
        # Dates inside ordinary text never break at their hyphens.
        return _DATE.sub(lambda m: f'<span class="nowrap">{m.group(0)}</span>', escape(part))
    if isinstance(part, Exact):
        field_attr = f' data-field="{escape(part.kind)}"' if part.kind else ""
        long = "long" if len(part.text) > LONG_VALUE else ""
        return f"<code{_cls('v', part.kind, long)}{field_attr}>{escape(part.text)}</code>"
    if isinstance(part, Strong):
        return f"<strong>{escape(part.text)}</strong>"
    if isinstance(part, Nowrap):
        return f'<span class="nowrap">{escape(part.text)}</span>'
    return f'<a href="#{escape(part.anchor)}">{escape(part.text)}</a>'


def _html_line(parts: tuple[Inline, ...]) -> str:
    return "".join(_html_inline(p) for p in parts)


def _html_cell(cell: Cell) -> str:
    if cell is None:
        return ""
    return _html_line(cell if isinstance(cell, tuple) else (cell,))


def _html_block(b: BlockT) -> str:
    if isinstance(b, Para):
        return f"<p{_cls(b.css)}>{_html_line(b.parts)}</p>\n"
    if isinstance(b, Bullets):
        css = list(b.css) + [""] * len(b.items)
        items = "".join(f"<li{_cls(c)}>{_html_line(i)}</li>\n" for i, c in zip(b.items, css, strict=False))
        return f"<ul>\n{items}</ul>\n"
    if isinstance(b, Checklist):
        items = "".join(f'<li><span class="box">&#9744;</span> {_html_line(i)}</li>\n' for i in b.items)
        return f'<ul class="checklist">\n{items}</ul>\n'
    if isinstance(b, Table):
        if not b.rows:
            return f'<p class="empty">{escape(b.empty)}</p>\n'
        head = "".join(f"<th>{escape(h)}</th>" for h in b.headers)
        css = list(b.row_css) + [""] * len(b.rows)
        body = "".join(
            f"<tr{_cls(c)}>" + "".join(f"<td>{_html_cell(x)}</td>" for x in row) + "</tr>\n"
            for row, c in zip(b.rows, css, strict=False)
        )
        return f"<table{_cls(b.css)}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
    if isinstance(b, Record):
        ident = f' id="{escape(b.anchor)}"' if b.anchor else ""
        rows = "".join(
            f"<tr><th>{escape(label)}</th><td>{_html_cell(cell)}</td></tr>\n"
            for label, cell in b.fields
            if cell not in (None, "")
        )
        notes = "".join(_html_block(p) for p in b.notes)
        return (
            f"<div{_cls('record', b.css)}{ident}>\n<h3>{escape(b.title)}</h3>\n"
            f'<table class="fields">\n<tbody>\n{rows}</tbody>\n</table>\n{notes}</div>\n'
        )
    if isinstance(b, Block):
        # A <div>, not a <pre>: an HTML parser drops a newline right after <pre>, and the value
        # may start with one.
        field_attr = f' data-field="{escape(b.kind)}"' if b.kind else ""
        return f"<div{_cls('v', 'block', b.kind)}{field_attr}>{escape(b.text)}</div>\n"
    source = f'<p class="source">From <code class="v path">{escape(b.ref)}</code>:</p>\n' if b.ref else ""
    return f'<div class="markdown">\n{source}{render_markdown(b.text, demote=2)}</div>\n'


def _html_section(s: Section, level: int) -> str:
    parts = [f'<section id="{escape(s.ident)}">\n<h{level}>{escape(s.title)}</h{level}>\n']
    parts += [_html_block(b) for b in s.blocks]
    parts += [_html_section(sub, level + 1) for sub in s.subsections]
    parts.append("</section>\n")
    return "".join(parts)


def to_html(r: Report) -> str:
    """index.html: every value escaped once, for HTML; self-contained (vault/render.py)."""
    from ..render import html_page

    body = ""
    if r.contents:
        links = "".join(f'<li><a href="#{escape(s.ident)}">{escape(s.title)}</a></li>' for s in r.sections)
        body += f'<nav class="toc" aria-label="Contents"><ul>{links}</ul></nav>\n'
    body += "".join(_html_section(s, 2) for s in r.sections)
    return html_page(r.title, body)
