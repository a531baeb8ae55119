"""The report's figures (matplotlib, seaborn's theme and palettes). Each figure function returns a
Figure with a title, labelled axes (units in brackets; accuracies and cosines are fractions) and a
legend where needed; matplotlib (Agg), seaborn and networkx are imported on first use.

``registry`` (the run report's figures as registered specs), ``pool`` (drawing them to PNG bytes, in
forked workers where that pays), ``plotting`` (the primitives), and the figures by subject:
``orthogonality``, ``geometry``, ``interference``, ``compare``, ``claims``."""
from dncsim.analysis.report.figures.plotting import heatmap, plotting, png_bytes, subplots
from dncsim.analysis.report.figures.pool import can_fork, default_processes, render
from dncsim.analysis.report.figures.registry import (FIGURES, FigureContext, FigureSpec, captions, figure_jobs,
                                                     figures_in, register_figure)

__all__ = ["plotting", "png_bytes", "subplots", "heatmap", "render", "can_fork", "default_processes", "FIGURES",
           "captions", "FigureContext", "FigureSpec", "figure_jobs", "figures_in", "register_figure"]
