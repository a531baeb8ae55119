"""The run report's figures as registered specs: what draws each, its caption, the report section that
shows it, when it applies and how costly it is to draw. ``report/build.py`` draws every spec that
applies and both templates loop over the specs of each section, so a new figure is a function plus one
:func:`register_figure` line; a section shows its figures in registration order."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Sequence, Tuple

from dncsim.analysis.report.figures import claims, compare, geometry, interference, orthogonality
from dncsim.analysis.report.render import MarkdownText, md_escape
from dncsim.common import DncsimError
from dncsim.rundir import RunData

__all__ = ["FigureContext", "FigureSpec", "FIGURES", "SECTIONS", "register_figure", "figures_in", "figure_jobs",
           "captions"]

#: the report sections that show figures (their ids in the templates), in page order
SECTIONS = ("orthogonality", "prop42", "collapse", "interference", "graph", "fewshot", "compare", "paper")


@dataclass(frozen=True)
class FigureContext:
    """What a figure may draw from: the run, its report summary (``summary.json``'s numbers), the
    interference communities (task indices), the runs compared with it and Prop. 4.2's axis pairs."""

    run: RunData
    summary: dict
    communities: List[List[int]] = field(default_factory=list)
    others: Sequence[RunData] = ()
    points: List[dict] = field(default_factory=list)

    @property
    def runs(self) -> List[RunData]:
        """This run, then the compared ones."""
        return [self.run, *self.others]


def _always(ctx: FigureContext) -> bool:
    return True


@dataclass(frozen=True)
class FigureSpec:
    """One report figure: ``draw(ctx)`` returns a matplotlib Figure; ``caption`` (HTML ``figcaption``
    and alt text); ``section`` (one of :data:`SECTIONS`); ``applies(ctx)``: whether the run gets it;
    ``cost``: rough relative drawing time (the render pool starts the costliest first); ``alt``: the
    Markdown image text (default: the name, spaced). ``name`` is the file ``figures/<name>.png``."""

    name: str
    draw: Callable[[FigureContext], object]
    caption: str
    section: str
    applies: Callable[[FigureContext], bool] = _always
    cost: float = 0.0
    alt: str = ""

    @property
    def markdown(self) -> MarkdownText:
        """The Markdown image of the figure's file."""
        return MarkdownText(f"![{md_escape(self.alt or self.name.replace('_', ' '))}](figures/{self.name}.png)")


#: name -> spec, in registration order (read through the functions below, at call time)
FIGURES: Dict[str, FigureSpec] = {}


def register_figure(spec: FigureSpec) -> FigureSpec:
    """Add ``spec`` to the run report (a DncsimError for a name already taken or not a plain file
    stem, or an unknown section)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", spec.name):
        raise DncsimError(f"report figure {spec.name!r}: a name is lower-case letters, digits and '_'")
    if spec.name in FIGURES:
        raise DncsimError(f"report figure {spec.name!r} is already registered")
    if spec.section not in SECTIONS:
        raise DncsimError(f"report figure {spec.name!r}: section {spec.section!r} is not one of {', '.join(SECTIONS)}")
    FIGURES[spec.name] = spec
    return spec


def captions() -> Dict[str, str]:
    """Every registered figure's name -> caption."""
    return {name: spec.caption for name, spec in FIGURES.items()}


def figures_in(section: str) -> List[FigureSpec]:
    """The specs a section shows, in registration order (the templates loop over them)."""
    return [s for s in FIGURES.values() if s.section == section]


def figure_jobs(ctx: FigureContext) -> List[Tuple[str, Callable]]:
    """``(name, make)`` for every figure that applies, ``make()`` drawing it; costliest first."""
    specs = [s for s in FIGURES.values() if s.applies(ctx)]
    return [(s.name, partial(s.draw, ctx)) for s in sorted(specs, key=lambda s: -s.cost)]


def _pairs(ctx: FigureContext) -> bool:
    return bool(ctx.summary["pairs"])


register_figure(FigureSpec(
    "orthogonality_heatmap", lambda c: orthogonality.orthogonality_heatmap(c.run),
    "Median |cos| between the decision axes of every pair of tasks after the last experience.",
    "orthogonality", _pairs, alt="decision-axis overlap"))
register_figure(FigureSpec(
    "orthogonality_over_stream", lambda c: orthogonality.orthogonality_over_stream(c.run),
    "The same overlap before training and after every experience.",
    "orthogonality", _pairs, cost=7, alt="overlap over the stream"))
register_figure(FigureSpec(
    "prop42_tightness", lambda c: orthogonality.prop42_tightness(c.summary, c.run),
    "How tight Prop. 4.2's bound is along the stream: median bound over median observed |cos|, "
    "and over random directions' median |cos|, per pair of independent tasks.",
    "prop42", lambda c: any(p["tightness"] for p in c.summary["prop42"]["pairs"]), cost=2,
    alt="Prop 4.2 tightness"))
register_figure(FigureSpec(
    "prop42_scatter", lambda c: orthogonality.prop42_scatter(c.points, c.run),
    "Observed |u_a · u_b| against the Prop. 4.2 bound, one point per pair of class-pair axes.",
    "prop42", lambda c: bool(c.summary["prop42"]["axis_pairs"]), alt="Prop 4.2"))
register_figure(FigureSpec(
    "collapse_curves", lambda c: geometry.collapse_curves(c.run),
    "Directional CDNV and CDNV per task along the stream, and their ratio.",
    "collapse", cost=3, alt="collapse"))
register_figure(FigureSpec(
    "accuracy_heatmaps", lambda c: interference.accuracy_heatmaps(c.run),
    "Accuracy matrices R[t, k] for every probe and protocol.",
    "interference", cost=5, alt="accuracy matrices"))
register_figure(FigureSpec(
    "forgetting_bars", lambda c: interference.forgetting_bars(c.summary),
    "Forgetting per task after the last experience.",
    "interference", alt="forgetting"))
register_figure(FigureSpec(
    "dircdnv_vs_forgetting", lambda c: interference.dircdnv_vs_forgetting(c.summary),
    "Each task's directional CDNV when learned against its later forgetting.",
    "interference", alt="dir-CDNV vs forgetting"))
register_figure(FigureSpec(
    "interference_graph", lambda c: interference.interference_graph(c.summary, c.communities),
    "Tasks as nodes; edge width: interference, edge colour: axis overlap; colours: communities.",
    "graph", _pairs, alt="interference graph"))
register_figure(FigureSpec(
    "fewshot_curves", lambda c: geometry.fewshot_curves(c.summary),
    "Few-shot NCC error and the Theorem 4.1 bound against shots per class.",
    "fewshot", cost=1, alt="few-shot"))
register_figure(FigureSpec(
    "compare_collapse", lambda c: compare.compare_collapse(c.runs),
    "Mean directional CDNV and CDNV over tasks along the stream, per run.",
    "compare", lambda c: bool(c.others), alt="compare collapse"))
register_figure(FigureSpec(
    "compare_orthogonality", lambda c: compare.compare_orthogonality(c.runs),
    "Final decision-axis overlap of each run.",
    "compare", lambda c: bool(c.others), cost=4, alt="compare orthogonality"))
register_figure(FigureSpec(
    "paper_claims", lambda c: claims.paper_claims_figure(c.summary["paper"], c.run),
    "The paper's three claims along training: dir-CDNV and CDNV (geometric means over attributes), "
    "their ratio (S1), few-shot NCC error against the Theorem 4.1 bound at every shot count where "
    "it is defined and point of training (S2), and the median |cos| between attributes' axes (S3).",
    "paper", lambda c: bool(c.summary.get("paper")), cost=6, alt="paper claims"))
