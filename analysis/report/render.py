"""Rendering helpers shared by the run report and the study report: number formats, templates and
embedded figures (files are written with ``dncsim.common.atomic_write_bytes``)."""
from __future__ import annotations

import base64
import functools
from typing import Dict

import jinja2
from markupsafe import Markup

__all__ = ["fmt", "pct", "environment", "figure_embedder"]


def fmt(v) -> str:
    """A number for a table: 4 significant digits; n/a for a missing value."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The templates in analysis/report/templates (HTML autoescaped; undefined names are errors). One
    environment per process, so each template is compiled once, not once per report."""
    return jinja2.Environment(loader=jinja2.PackageLoader("dncsim.analysis.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)


def figure_embedder(pngs: Dict[str, bytes], captions: Dict[str, str]):
    """``figure(name)`` for templates: a <figure> with the PNG embedded as base64 (nothing if absent)."""
    def figure(name):
        if name not in pngs:
            return ""
        b64 = base64.b64encode(pngs[name]).decode()
        return Markup(f'<figure><img src="data:image/png;base64,{b64}" alt="{captions[name]}">'
                      f"<figcaption>{captions[name]}</figcaption></figure>")
    return figure
