"""Rendering helpers shared by the run report and the study report: number formats, templates and
embedded figures (files are written with ``dncsim.common.atomic_write_bytes``).

Every value a template prints is escaped for the template's format: HTML templates (``*.html.j2``)
are autoescaped, so only ``markupsafe.Markup`` built here from escaped parts (the embedded figures)
reaches the page as markup; Markdown templates (``*.md.j2``) pass every printed value through
:func:`md_escape`, so a name or label is shown as text and never read as Markdown or HTML."""
from __future__ import annotations

import base64
import functools
import html
import re
from typing import Dict

import jinja2
from markupsafe import Markup

__all__ = ["fmt", "pct", "environment", "figure_embedder", "md_escape", "md_code", "MarkdownText"]


def fmt(v) -> str:
    """A number for a table: 4 significant digits; n/a for a missing value."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


class MarkdownText(str):
    """Text that is already Markdown (built by the code, its data escaped with :func:`md_escape`):
    Markdown templates print it as it is."""


#: what Markdown (CommonMark, GitHub tables) would read in a value: emphasis, code, links, HTML, table
#: cells, headings, strike-through, entities, and the backslash itself
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~&])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def md_escape(value) -> str:
    """``value`` as Markdown text that shows exactly its characters: every character Markdown would
    interpret backslash-escaped, line breaks and other control characters made one space (a value
    never ends a table row or starts a block)."""
    if isinstance(value, MarkdownText):
        return value
    return _MD_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", str(value)))


def md_code(value) -> MarkdownText:
    """``value`` as a Markdown code span (shown verbatim): fenced by one backtick more than its longest
    run of backticks, control characters made spaces (the ``md_code`` filter of the templates)."""
    text = _CONTROL.sub(" ", str(value))
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip(" ") else ""
    return MarkdownText(f"{fence}{pad}{text}{pad}{fence}")


def _is_markdown(name) -> bool:
    return (name or "").endswith((".md.j2", ".md"))


@jinja2.pass_context
def _finalize(context, value):
    """Applied to every printed value: Markdown-escaped in Markdown templates (HTML templates escape
    through autoescaping, after this)."""
    return md_escape(value) if _is_markdown(context.name) else value


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The templates in analysis/report/templates (every template but Markdown ones autoescaped as
    HTML; Markdown ones escape each printed value with :func:`md_escape`; undefined names are errors).
    One environment per process, so each template is compiled once, not once per report."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("dncsim.analysis.report", "templates"),
                             autoescape=lambda name: not _is_markdown(name), finalize=_finalize,
                             undefined=jinja2.StrictUndefined)
    env.filters["md_code"] = md_code
    return env


def figure_embedder(pngs: Dict[str, bytes], captions: Dict[str, str]):
    """``figure(name)`` for templates: a <figure> with the PNG embedded as base64 (nothing if absent);
    the caption is escaped."""
    def figure(name):
        if name not in pngs:
            return ""
        b64 = base64.b64encode(pngs[name]).decode("ascii")
        caption = html.escape(captions[name], quote=False)
        return Markup(f'<figure><img src="data:image/png;base64,{b64}" alt="{caption.replace(chr(34), "&quot;")}">'
                      f"<figcaption>{caption}</figcaption></figure>")
    return figure
