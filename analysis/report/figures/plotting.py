"""Plotting primitives shared by every report figure: matplotlib and seaborn imported on first use (Agg,
the report's theme), figures on their own canvas, PNG bytes, the heatmap, and the greying of tasks not
learned.

The heatmaps are drawn with plain matplotlib the way ``seaborn.heatmap`` draws them, without the
full-figure draw it makes to decide whether to rotate tick labels (one draw of the whole figure per
heatmap: most of a report's time when a figure holds eleven of them)."""
from __future__ import annotations

import io
import sys
from typing import List, Sequence

import numpy as np

from dncsim.rundir import RunData

__all__ = ["plotting", "png_bytes", "subplots", "heatmap", "integer_ticks", "short", "wrap", "GREY", "GREY_NOTE",
           "greyed", "greyed_summary", "grey_cells", "EXP_LABEL"]

EXP_LABEL = "experience just trained (-1 = before training)"
_THEMED = False


def plotting():
    """``(pyplot, seaborn)``, imported on first use with the Agg backend (unless the process already
    chose a backend through pyplot) and the report's seaborn theme (whitegrid, paper), set once per
    process."""
    global _THEMED
    if not _THEMED:
        import matplotlib
        if "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    if not _THEMED:
        sns.set_theme(style="whitegrid", context="paper")
        _THEMED = True
    return plt, sns


def png_bytes(fig, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes, cropped to its tight bounding box (``bbox_inches="tight"``), and
    close it. The box is measured here and handed to ``savefig``, which then skips the layout-only draw
    it makes before measuring it itself: the same bytes, one pass over the figure fewer."""
    import matplotlib as mpl
    from matplotlib.layout_engine import PlaceHolderLayoutEngine
    plt, _ = plotting()
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):     # left by a finished tight_layout()
        fig.set_layout_engine(None)
    bbox, pad = "tight", mpl.rcParams["savefig.pad_inches"]
    if (hasattr(fig.canvas, "get_renderer") and fig.dpi == dpi and fig.get_layout_engine() is None
            and isinstance(pad, (int, float))):
        bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(pad)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches=bbox)
    plt.close(fig)
    return buf.getvalue()


def subplots(*args, **kwargs):
    """``pyplot.subplots`` without pyplot: a Figure on an Agg canvas (whatever backend pyplot uses), not
    registered with pyplot, so nothing has to close it and nothing else sees it."""
    plotting()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig_kw = {k: kwargs.pop(k) for k in ("figsize", "dpi") if k in kwargs}
    fig = Figure(**fig_kw)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def _labels_overlap(labels) -> bool:
    """Whether any two of the tick labels' boxes overlap (``seaborn.utils.axis_ticklabels_overlap``)."""
    if not labels:
        return False
    boxes = [t.get_window_extent() for t in labels]
    return max(b.count_overlaps(boxes) for b in boxes) > 1


def heatmap(m, ax, *, vmin, vmax, cmap, annot=False, fmt=".2g", xticklabels, yticklabels, cbar=True,
            cbar_kws=None, square=False):
    """``seaborn.heatmap(m, ax=ax, mask=np.isnan(m), ...)`` with list tick labels, drawn the same way
    (spines off, cells as a pcolormesh with row 0 at the top, a borderless colorbar taken from ``ax``,
    x labels turned vertical and y labels horizontal where they would overlap, annotations dark or
    white by the cell's luminance), but laying out only ``ax`` to test the overlap, not the whole
    figure. Returns the mesh."""
    import matplotlib as mpl
    plt, _ = plotting()
    m = np.asarray(m, dtype=float)
    data = np.ma.masked_where(np.isnan(m), m)
    if square:
        ax.set_aspect("equal")
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    cmap = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    mesh = ax.pcolormesh(data, cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0, edgecolor="white")
    ax.set(xlim=(0, m.shape[1]), ylim=(0, m.shape[0]))
    ax.invert_yaxis()
    if cbar:
        cb = ax.figure.colorbar(mesh, None, ax, **(cbar_kws or {}))
        cb.outline.set_linewidth(0)
    ax.set(xticks=np.arange(len(xticklabels)) + .5 if len(xticklabels) else [],
           yticks=np.arange(len(yticklabels)) + .5 if len(yticklabels) else [])
    xtl = ax.set_xticklabels(xticklabels)
    ytl = ax.set_yticklabels(yticklabels, rotation="vertical")
    plt.setp(ytl, va="center")
    ax.get_tightbbox(ax.figure.canvas.get_renderer())        # places this axes' tick labels (aspect applied)
    if _labels_overlap(xtl):
        plt.setp(xtl, rotation="vertical")
    if _labels_overlap(ytl):
        plt.setp(ytl, rotation="horizontal")
    ax.set(xlabel="", ylabel="")
    if annot:
        mesh.update_scalarmappable()
        rows, cols = m.shape
        xs, ys = np.meshgrid(np.arange(cols) + .5, np.arange(rows) + .5)
        rgb = mpl.colors.to_rgba_array(mesh.get_facecolors())[:, :3]
        lum = np.where(rgb <= .03928, rgb / 12.92, ((rgb + .055) / 1.055) ** 2.4).dot([.2126, .7152, .0722])
        for x, y, masked, lu, val in zip(xs.flat, ys.flat, np.ma.getmaskarray(mesh.get_array()).flat, lum,
                                        m.flat):
            if not masked:
                ax.text(x, y, ("{:" + fmt + "}").format(val), color=".15" if lu > .408 else "w", ha="center",
                        va="center")
    return mesh


def integer_ticks():
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True)


def short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


#: the colour of a task that was not learned or only watched, in every figure
GREY = "#b5b5b5"
GREY_NOTE = "greyed: tasks not learned or only watched"


def greyed(run: RunData) -> List[bool]:
    """Per task: whether figures grey it out (not learned, or only watched)."""
    return [run.learned(k) is not True for k in range(run.T)]


def greyed_summary(summary: dict) -> List[bool]:
    return [t.get("learned") is not True for t in summary["tasks"]]


def _grey_ticks(labels, grey: Sequence[bool]) -> None:
    for text, g in zip(labels, grey):
        if g:
            text.set_color("grey")
            text.set_fontstyle("italic")


def grey_cells(ax, grey_cols: Sequence[bool], grey_rows: Sequence[bool] = ()) -> None:
    """Veil the heatmap columns (and rows) of greyed tasks, and grey their tick labels."""
    for j, g in enumerate(grey_cols):
        if g:
            ax.axvspan(j, j + 1, color="white", alpha=0.65, lw=0, zorder=3)
    for i, g in enumerate(grey_rows):
        if g:
            ax.axhspan(i, i + 1, color="white", alpha=0.65, lw=0, zorder=3)
    _grey_ticks(ax.get_xticklabels(), grey_cols)
    if len(grey_rows):
        _grey_ticks(ax.get_yticklabels(), grey_rows)


def wrap(text: str, width: int) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width))
