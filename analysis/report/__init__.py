"""``dncsim report``: the orthogonality report of one run (and a comparison with others).

Reads only the run directory's files (``dncsim.rundir``), computes the numbers once (``summary.py``),
draws the figures (``figures/``, ``graph.py``) and fills two templates (jinja2): one
self-contained HTML file with embedded figures, and a Markdown file next to the PNGs; plus
``summary.json`` with every number shown.
"""
from dncsim.analysis.report.build import build_report

__all__ = ["build_report"]
