"""The report's figures (matplotlib, seaborn's theme and palettes). Each function returns a Figure with
a title, labelled axes (units in brackets; accuracies and cosines are fractions) and a legend where
needed.

matplotlib (Agg), seaborn and networkx are imported on first use, not when this module is imported, and
the heatmaps are drawn with plain matplotlib the way ``seaborn.heatmap`` draws them, without the
full-figure draw it makes to decide whether to rotate tick labels (one draw of the whole figure per
heatmap: most of a report's time when a figure holds eleven of them)."""
from __future__ import annotations

import io
import math
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dncsim.analysis.names import AXIS_BEYOND_NULL, AXIS_COS_MEDIAN, CDNV, CDNV_RATIO, DIR_CDNV
from dncsim.analysis.orthogonality import random_abs_cos
from dncsim.rundir import RunData

__all__ = ["png_bytes", "orthogonality_heatmap", "orthogonality_over_stream", "prop42_scatter", "prop42_tightness",
           "collapse_curves",
           "accuracy_heatmaps", "forgetting_bars", "dircdnv_vs_forgetting", "interference_graph", "fewshot_curves",
           "compare_collapse", "compare_orthogonality", "paper_claims_figure", "plotting", "subplots", "heatmap",
           "render", "can_fork", "default_processes"]

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


#: the figures :func:`render` draws in worker processes (set while they run; a forked worker inherits it)
_JOBS: List[Tuple[str, Callable]] = []
#: fewer figures than this are drawn in this process (a pool would cost more than it saves)
MIN_PARALLEL = 4


def _render_job(i: int) -> Tuple[int, bytes]:
    return i, png_bytes(_JOBS[i][1]())


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether this process may fork workers to draw figures: the ``fork`` start method exists and is
    safe here (not macOS, whose system libraries do not survive fork without exec), this is not a
    daemonic process (those may not have children), and no other Python thread runs (one could hold a
    lock the child would then wait for forever) but tqdm's monitor, which a training run leaves behind
    (it only ever takes tqdm's own lock, which the children never need). Library threads (OpenMP, BLAS)
    are idle and the children draw with matplotlib only, never torch."""
    import multiprocessing
    import threading

    tqdm_monitor = getattr(sys.modules.get("tqdm._monitor"), "TMonitor", ())
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    return ("fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"
            and not multiprocessing.current_process().daemon
            and threading.current_thread() is threading.main_thread()
            and all(isinstance(t, tqdm_monitor) for t in others))


def default_processes(n_figures: int) -> int:
    """How many processes :func:`render` uses by default: this one plus one per CPU nobody else is using
    (usable CPUs minus the 1-minute load average, which counts this process; ``make -l``'s rule: on a
    busy machine workers only add their start-up and compete with each other), at most 4 and at most
    one per figure; 1 (serial, in this process) for fewer than :data:`MIN_PARALLEL` figures, one CPU,
    or a process that cannot fork safely (:func:`can_fork`)."""
    cpus = _usable_cpus()
    if n_figures < MIN_PARALLEL or cpus < 2 or not can_fork():
        return 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(4, cpus, n_figures, 1 + int(max(0.0, cpus - load) + 0.5)))


def render(jobs: Sequence[Tuple[str, Callable]], processes: Optional[int] = None) -> Dict[str, bytes]:
    """``{name: PNG bytes}`` of each ``(name, make)`` job, ``make()`` returning a Figure. ``processes``:
    how many processes draw them (None: :func:`default_processes`); above 1, forked workers take the
    jobs in the given order (put the costly ones first) and the bytes are the same as drawn here. Falls
    back to drawing here when the process cannot fork safely or a pool cannot be started."""
    jobs = list(jobs)
    processes = default_processes(len(jobs)) if processes is None else min(processes, len(jobs))
    pngs = _render_forked(jobs, processes) if processes > 1 and can_fork() else None
    if pngs is None:
        pngs = {i: png_bytes(make()) for i, (_, make) in enumerate(jobs)}
    return {name: pngs[i] for i, (name, _) in enumerate(jobs)}


def _render_forked(jobs: List[Tuple[str, Callable]], processes: int) -> Optional[Dict[int, bytes]]:
    """The jobs drawn by a pool of forked workers (they inherit the jobs, nothing is pickled but the
    PNG bytes); None if the pool cannot start (no semaphores, a process limit)."""
    global _JOBS
    import multiprocessing
    import warnings

    plotting()                                   # import and theme once, here, for every worker
    _JOBS = jobs
    try:
        with warnings.catch_warnings():          # Python >= 3.12 warns on fork while library threads exist
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            try:
                pool = multiprocessing.get_context("fork").Pool(processes)
            except OSError:
                return None
        with pool:
            return dict(pool.imap_unordered(_render_job, range(len(jobs))))
    finally:
        _JOBS = []


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


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True)


def _short(name: str, width: int = 14) -> str:
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


def _grey_cells(ax, grey_cols: Sequence[bool], grey_rows: Sequence[bool] = ()) -> None:
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


def _wrap(text: str, width: int) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


def cos_matrix(run: RunData, exp: int, metric: str = AXIS_COS_MEDIAN) -> np.ndarray:
    """(T, T) symmetric matrix of a pairwise metric at one row (NaN diagonal and where unmeasured)."""
    m = np.full((run.T, run.T), np.nan)
    for r in run.rows:
        if r["metric"] == metric and r["exp"] == exp:
            m[r["task"], r["task_b"]] = m[r["task_b"], r["task"]] = r["value"]
    return m


def _references(d: int) -> dict:
    """The random-direction levels of |cos| in d dimensions: ``median`` (the one to compare a median
    |cos| with) and ``rms`` = 1/sqrt(d)."""
    return random_abs_cos(d)


def _mark_references(cb_ax, ref: dict) -> None:
    """The random-direction levels as lines across the colour bar (named by :func:`_reference_legend`)."""
    cb_ax.axhline(ref["median"], color="tab:blue", lw=2)
    cb_ax.axhline(ref["rms"], color="tab:cyan", lw=1.2, ls="--")


def _reference_legend(fig, ref: dict, greyed_any: bool = False, y: float = 0.0, ncol: int = 1,
                      beyond_any: bool = False) -> None:
    """A legend under the figure naming the colour bar's reference lines (and the greyed tasks, and the
    mark of pairs beyond the permutation null)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Line2D([], [], color="tab:blue", lw=2,
                      label=f"reference, not the test: random directions' median |cos| {ref['median']:.3f}"),
               Line2D([], [], color="tab:cyan", lw=1.2, ls="--", label=f"random: RMS 1/√d {ref['rms']:.3f}")]
    if beyond_any:
        handles.append(Line2D([], [], color="white", marker="o", markeredgecolor="black", ls="", markersize=5,
                              label="beyond the permutation null (null p ≤ 0.05)"))
    if greyed_any:
        handles.append(Patch(facecolor="#e8e8e8", edgecolor="grey", label=GREY_NOTE))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, y), fontsize=7, frameon=False,
               ncol=min(ncol, len(handles)))


def _heatmap(ax, m, labels, vmax, ref, cbar=True, annotate=True, grey: Sequence[bool] = ()):
    _, sns = plotting()
    mesh = heatmap(m, ax, vmin=0, vmax=vmax, cmap=sns.color_palette("rocket_r", as_cmap=True), square=True,
                   annot=annotate and len(labels) <= 8, fmt=".2f", xticklabels=labels, yticklabels=labels, cbar=cbar,
                   cbar_kws={"label": "median |cos| between decision axes"} if cbar else None)
    if cbar:
        _mark_references(mesh.colorbar.ax, ref)
    if any(grey):
        _grey_cells(ax, grey, grey)
    ax.set_xlabel("task b")
    ax.set_ylabel("task a")


def orthogonality_heatmap(run: RunData):
    """Median |cos| between every pair of tasks' decision axes after the last experience."""
    m = cos_matrix(run, run.last)
    ref = _references(run.feature_dim)
    fig, ax = subplots(figsize=(2.4 + 0.7 * run.T, 0.9 + 0.6 * run.T))
    labels = [_short(t) for t in run.tasks]
    grey = greyed(run)
    _heatmap(ax, m, labels, max(np.nanmax(m) if np.isfinite(m).any() else 0, ref["rms"]) * 1.05, ref, grey=grey)
    beyond = np.argwhere(cos_matrix(run, run.last, AXIS_BEYOND_NULL) == 1.0)
    if len(beyond):             # a corner mark on both cells of each pair beyond the permutation null
        ax.scatter(beyond[:, 1] + 0.85, beyond[:, 0] + 0.15, s=14, c="white", edgecolors="black", linewidths=0.6,
                   zorder=4)
    ax.set_title("Decision-axis overlap after the last experience")
    _reference_legend(fig, ref, any(grey), y=-0.02, beyond_any=bool(len(beyond)))
    return fig


def orthogonality_over_stream(run: RunData):
    """Small multiples of the median-|cos| heatmap, one per row of the stream, on one colour scale."""
    plt, sns = plotting()
    rows = sorted({r["exp"] for r in run.rows})
    mats = [cos_matrix(run, e) for e in rows]
    ref = _references(run.feature_dim)
    vmax = max([np.nanmax(m) for m in mats if np.isfinite(m).any()] + [ref["rms"]]) * 1.05
    n = len(rows)
    cols = min(n, 5)
    nrows = math.ceil(n / cols)
    fig, axes = subplots(nrows, cols + 1, figsize=(2.2 * cols + 0.6, 2.2 * nrows + 0.5), squeeze=False,
                          gridspec_kw={"width_ratios": [1] * cols + [0.06]})
    labels = [_short(t, 8) for t in run.tasks]
    grey = greyed(run)
    for i, (e, m) in enumerate(zip(rows, mats)):
        ax = axes[i // cols][i % cols]
        _heatmap(ax, m, labels, vmax, ref, cbar=False, annotate=False, grey=grey)
        ax.tick_params(labelsize=6)
        ax.set_title("before training" if e < 0 else f"after experience {e}", fontsize=8)
        if i % cols:
            ax.set_ylabel("")
    for j in range(n, nrows * cols):
        axes[j // cols][j % cols].axis("off")
    sm = plt.cm.ScalarMappable(cmap=sns.color_palette("rocket_r", as_cmap=True), norm=plt.Normalize(0, vmax))
    for r in range(nrows):
        axes[r][cols].axis("off")
    cb = fig.colorbar(sm, ax=axes[:, cols].tolist(), fraction=1.0, label="median |cos|")
    _mark_references(cb.ax, ref)
    fig.suptitle("Decision-axis overlap over the stream", fontsize=10)
    _reference_legend(fig, ref, any(grey), y=0.0, ncol=3)
    return fig


def prop42_scatter(points: List[dict], run: RunData):
    """Observed |u_a . u_b| against Prop. 4.2's right-hand side, one point per axis pair, with y = x.

    On exactly balanced independent labelings every point is below y = x whatever the features; the
    figure shows how far below (the bound's slack), not whether."""
    _, sns = plotting()
    fig, ax = subplots(figsize=(5.2, 4.4))
    palette = sns.color_palette("tab10", max(len(points), 1))
    lo, hi = 1.0, 1e-6
    for i, p in enumerate(points):
        cos = np.clip(np.array(p["cos"]), 1e-6, None)
        rhs = np.clip(np.array(p["bound"]), 1e-6, None)
        grey = greyed(run)
        dull = grey[p["a"]] or grey[p["b"]]
        ax.scatter(rhs, cos, s=12, alpha=0.7, color=GREY if dull else palette[i % len(palette)],
                   label=f"{_short(run.tasks[p['a']], 10)} / {_short(run.tasks[p['b']], 10)}"
                   + (" (greyed)" if dull else ""))
        lo = min(lo, cos.min(), rhs.min())
        hi = max(hi, cos.max(), rhs.max())
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="y = x (the bound)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Prop. 4.2 bound on |cos| (unitless)")
    ax.set_ylabel("observed |u_a · u_b| (unitless)")
    ax.set_title("Prop. 4.2 after the last experience: distance below y = x is the bound's slack", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def prop42_tightness(summary: dict, run: RunData):
    """Per pair of independent labelings along the stream: the median Prop. 4.2 bound over the median
    observed |cos| (left; 1 = tight), and over the median |cos| of random directions (right; below 1 the
    bound forces more orthogonality than chance). Log scale, with the level 1 marked."""
    _, sns = plotting()
    pairs = summary["prop42"]["pairs"]
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 3.8))
    palette = sns.color_palette("tab10", max(len(pairs), 1))
    grey = greyed(run)
    for i, p in enumerate(pairs):
        dull = grey[p["a"]] or grey[p["b"]]
        label = f"{_short(p['names'][0], 10)} / {_short(p['names'][1], 10)}" + (" (greyed)" if dull else "")
        for ax, key in ((a1, "tightness"), (a2, "bound_vs_random")):
            pts = [(q["exp"], q["value"]) for q in p[key] if q["value"] is not None and q["value"] > 0]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=GREY if dull else palette[i % len(palette)], label=label)
    for ax in (a1, a2):
        ax.axhline(1.0, color="black", lw=1, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel(EXP_LABEL)
        ax.xaxis.set_major_locator(_integer_ticks())
    a1.set_ylabel("median bound / median observed |cos|")
    a1.set_title("Slack of the bound (1 = tight)", fontsize=9)
    a2.set_ylabel("median bound / random median |cos|")
    a2.set_title(f"Bound against random directions (d = {run.feature_dim})", fontsize=9)
    a1.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _series(run: RunData, metric: str, k: int):
    s = run.series(metric, task=k)
    return [e for e, _ in s], [v for _, v in s]


def collapse_curves(run: RunData):
    """Directional CDNV and CDNV per task along the stream (log scale), and their ratio; a star where
    each task was learned; greyed tasks drawn grey; a task whose geometry is undefined at some row is
    named under the figure."""
    _, sns = plotting()
    from matplotlib.lines import Line2D
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 3.8))
    palette = sns.color_palette("tab10", run.T)
    grey = greyed(run)
    rows = sorted({r["exp"] for r in run.rows})
    gaps = []
    for k in range(run.T):
        colour = GREY if grey[k] else palette[k % 10]
        tag = " (not learned)" if run.learned(k) is False else (" (watched)" if grey[k] else "")
        x, y = _series(run, DIR_CDNV, k)
        a1.plot(x, y, marker="o", color=colour, label=f"{_short(run.tasks[k])}{tag} dir-CDNV")
        missing = [e for e in rows if e not in x]
        if missing:
            gaps.append(f"{run.tasks[k]}: undefined at row{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(str, missing))}")
        L = run.learned_at[k] if k < len(run.learned_at) else None
        if L is not None and L in x:
            a1.plot([L], [y[x.index(L)]], marker="*", ms=13, color=colour, mec="black", mew=0.8, ls="")
        x, y = _series(run, CDNV, k)
        a1.plot(x, y, marker="s", ls="--", color=colour, alpha=0.6, label=f"{_short(run.tasks[k])} CDNV")
        x, y = _series(run, CDNV_RATIO, k)
        a2.plot(x, y, marker="o", color=colour, label=_short(run.tasks[k]) + tag)
        if L is not None and L in x:
            a2.plot([L], [y[x.index(L)]], marker="*", ms=13, color=colour, mec="black", mew=0.8, ls="")
    for ax in (a1, a2):
        ax.set_yscale("log")
        ax.set_xlabel(EXP_LABEL)
        ax.xaxis.set_major_locator(_integer_ticks())
    a1.set_ylabel("variability (unitless, log scale)")
    a1.set_title("Directional CDNV (solid) and CDNV (dashed) per task")
    a2.set_ylabel("dir-CDNV / CDNV (log scale)")
    a2.set_title("Directional collapse: ratio of the two")
    a1.legend(fontsize=6, ncol=2, loc="best")
    star = Line2D([], [], marker="*", ms=10, color="white", mec="black", ls="", label="★ the task was learned here")
    h, lab = a2.get_legend_handles_labels()
    a2.legend(handles=h + [star], labels=lab + [star.get_label()], fontsize=7)
    if gaps:
        fig.text(0.01, -0.02, _wrap("Gaps: " + "; ".join(gaps) + " (no class pair resolved, or not measured: "
                                    "see the table).", 160), fontsize=7, va="top")
    fig.tight_layout()
    return fig


def accuracy_heatmaps(run: RunData):
    """Accuracy matrices R[t, k] for every probe and protocol (two per row)."""
    keys = run.probe_keys
    ncols = min(2, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = subplots(nrows, ncols, squeeze=False,
                          figsize=(ncols * (0.55 * run.T + 2.8), nrows * (0.38 * (run.experiences + 1) + 1.6)))
    ylabels = ["before"] + [f"after {t}" for t in range(run.experiences)]
    grey = greyed(run)
    for ax, key in zip(axes.flat, keys):
        m = run.matrices[key]
        heatmap(m, ax, vmin=0, vmax=1, cmap="viridis", annot=run.T <= 8, fmt=".2f",
                xticklabels=[_short(t, 12) for t in run.tasks], yticklabels=ylabels,
                cbar_kws={"label": "test accuracy (fraction)"})
        _grey_cells(ax, grey)
        ax.set_title(f"{key.probe} probe, {key.protocol} protocol")
        ax.set_xlabel("task evaluated")
        ax.set_ylabel("row (experience just trained)")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle("Accuracy matrices (blank: frozen probe not yet fitted"
                 + ("; veiled grey columns: tasks not learned or only watched)" if any(grey) else ")"), fontsize=10)
    fig.tight_layout()
    return fig


def forgetting_bars(summary: dict):
    """Final forgetting (best earlier minus final accuracy) per task, per probe and protocol."""
    rows = [(t["name"], key, v) for t in summary["tasks"] for key, v in t["forgetting_max"].items() if v is not None]
    fig, ax = subplots(figsize=(max(5, 1.1 * len(summary["tasks"]) + 2), 3.6))
    if rows:
        names = list(dict.fromkeys(r[0] for r in rows))
        keys = sorted({r[1] for r in rows})
        width = 0.8 / len(keys)
        unlearned = {t["name"] for t in summary["tasks"] if t.get("learned") is False}
        for j, key in enumerate(keys):
            vals = [next((v for n, k, v in rows if n == name and k == key), np.nan) for name in names]
            bars = ax.bar(np.arange(len(names)) + j * width, vals, width=width,
                          label=key.replace("/", " probe, ") + " protocol")
            for bar, name in zip(bars, names):
                if name in unlearned:                       # greyed: nothing was learned to forget
                    bar.set_color("lightgrey")
                    bar.set_hatch("//")
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2,
                      [_short(n) + (" (not learned)" if n in unlearned else "") for n in names])
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no task was followed by another: no forgetting to measure", ha="center",
                transform=ax.transAxes)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("task")
    ax.set_ylabel("forgetting (accuracy, fraction)")
    ax.set_title("Forgetting after the last experience (tasks learned before it)")
    return fig


def dircdnv_vs_forgetting(summary: dict):
    """Each task's directional CDNV when learned against its final forgetting (primary probe/protocol)."""
    key = summary["primary"]["key"]
    pts = [(t.get("dir_cdnv_learned"), t["forgetting_max"].get(key), t["name"], t.get("learned") is not False)
           for t in summary["tasks"]]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    fig, ax = subplots(figsize=(5, 3.8))
    for x, y, name, learned in pts:
        ax.scatter([x], [y], s=30, color=None if learned else "lightgrey", edgecolors="grey" if not learned else None)
        ax.annotate(_short(name) + ("" if learned else " (not learned)"), (x, y), fontsize=7, xytext=(3, 3),
                    textcoords="offset points", color="black" if learned else "grey")
    if not pts:
        ax.text(0.5, 0.5, "no task was followed by another", ha="center", transform=ax.transAxes)
    else:
        ax.set_xscale("log")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("directional CDNV when learned (unitless, log scale)")
    ax.set_ylabel(f"final forgetting ({key.replace('/', ' ')}, fraction)")
    ax.set_title("Low directional variability vs later forgetting")
    return fig


def interference_graph(summary: dict, communities: List[List[int]]):
    """Tasks as nodes; edge width = measured interference, edge colour = axis overlap; communities coloured."""
    plt, sns = plotting()
    import networkx as nx

    g = nx.Graph()
    names = [t["name"] for t in summary["tasks"]]
    g.add_nodes_from(range(len(names)))
    for p in summary["pairs"]:
        g.add_edge(p["a"], p["b"], overlap=p["axis_cos_median_final"] or 0.0,
                   interference=max(p["interference"] or 0.0, 0.0))
    fig, ax = subplots(figsize=(5.6, 4.6))
    pos = nx.circular_layout(g)
    palette = sns.color_palette("Set2", max(len(communities), 1))
    colour = {n: palette[i % len(palette)] for i, c in enumerate(communities) for n in c}
    grey_nodes = greyed_summary(summary)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=[GREY if grey_nodes[n] else colour.get(n, "lightgrey")
                                                      for n in g.nodes], node_size=900)
    grey = greyed_summary(summary)
    nx.draw_networkx_labels(g, pos, ax=ax, labels={k: _short(n, 10) + ("\n(not learned)" if grey[k] else "")
                                                   for k, n in enumerate(names)}, font_size=7)
    edges = list(g.edges(data=True))
    if edges:
        inter = np.array([d["interference"] for _, _, d in edges])
        overlap = np.array([d["overlap"] for _, _, d in edges])
        widths = 1 + 12 * inter / max(inter.max(), 1e-9)
        coll = nx.draw_networkx_edges(g, pos, ax=ax, width=widths, edge_color=overlap, edge_cmap=plt.cm.plasma,
                                      edge_vmin=0, edge_vmax=max(overlap.max(), 1e-9))
        fig.colorbar(coll, ax=ax, label="median |cos| between the tasks' axes (final)")
    ax.set_title("Interference graph: edge width = accuracy drop\nwhile the later task was learned", fontsize=9)
    handles = [plt.Line2D([], [], marker="o", ls="", color=palette[i % len(palette)],
                          label="community: " + ", ".join(_short(names[n], 8) for n in c))
               for i, c in enumerate(communities)]
    width_keys = []
    if edges:
        top = float(inter.max())
        width_keys = ([plt.Line2D([], [], color="black", lw=1 + 12 * f, solid_capstyle="butt",
                              label=f"drop {f * top:.2f}") for f in (1.0, 0.5, 0.1)] if top > 0 else
                  [plt.Line2D([], [], color="black", lw=1, label="no accuracy drop on any edge")])
    if handles:
        first = ax.legend(handles=handles, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2,
                          frameon=False)
        ax.add_artist(first)
    if width_keys:
        ax.legend(handles=width_keys, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  ncol=len(width_keys),
                  frameon=False, handlelength=4, handletextpad=1.0, columnspacing=2.5,
                  title="edge width: accuracy drop", title_fontsize=6)
    ax.axis("off")
    return fig


def fewshot_curves(summary: dict):
    """Few-shot NCC error and the Theorem 4.1 bound against shots per class, per task (final row), with
    y = 1 (a bound above it says nothing: an error is at most 1) and a note naming the tasks whose bound
    is undefined; greyed tasks drawn grey."""
    _, sns = plotting()
    fig, ax = subplots(figsize=(6.4, 4.2))
    palette = sns.color_palette("tab10", len(summary["tasks"]))
    grey = greyed_summary(summary)
    drew, undefined = False, []
    for k, t in enumerate(summary["tasks"]):
        fs = [f for f in t["fewshot"] if f["error"] is not None]
        if not fs:
            continue
        colour = GREY if grey[k] else palette[k % 10]
        tag = " (not learned)" if t.get("learned") is False else (" (watched)" if grey[k] else "")
        m = [f["shots"] for f in fs]
        ax.plot(m, [max(f["error"], 1e-4) for f in fs], marker="o", color=colour,
                label=f"{_short(t['name'])}{tag} error")
        b = [(f["shots"], f["bound"]) for f in fs if f["bound"] is not None]
        if b:
            ax.plot(*zip(*b), marker="^", ls="--", color=colour, label=f"{_short(t['name'])} bound")
        if len(b) < len(fs):
            gone = [f["shots"] for f in fs if f["bound"] is None]
            undefined.append(f"{t['name']} (m = {', '.join(map(str, gone))})" if b else f"{t['name']} (every m)")
        drew = True
    ax.axvspan(0.8, 10, color="grey", alpha=0.12, label="m < 10: outside the theorem")
    ax.axhline(1.0, color="black", lw=1.2, label="1: a bound above is vacuous")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("shots per class m (log scale)")
    ax.set_ylabel("NCC error (fraction, log scale)")
    ax.set_title("Few-shot error (solid) and Theorem 4.1 bound (dashed), after the last experience", fontsize=9)
    if drew:
        ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    notes = ["Every value above 1 is vacuous (an error is at most 1)."]
    if undefined:
        notes.append("Bound undefined (a class pair's margin is not positive) for: " + "; ".join(undefined) + ".")
    fig.text(0.01, -0.01, _wrap(" ".join(notes), 110), fontsize=7, va="top")
    return fig


def compare_task_set(runs: List[RunData], metrics=(DIR_CDNV, CDNV)) -> List[str]:
    """The task names every run has, with every ``metrics`` value positive at every row the run measured."""
    common = [n for n in runs[0].tasks if all(n in r.tasks for r in runs)]
    keep = []
    for name in common:
        ok = True
        for run in runs:
            k = run.tasks.index(name)
            rows = sorted({r["exp"] for r in run.rows})
            for metric in metrics:
                got = dict(run.series(metric, task=k))
                ok = ok and all(got.get(e) is not None and got[e] > 0 for e in rows)
        if ok:
            keep.append(name)
    return keep


def compare_collapse(runs: List[RunData]):
    """Geometric-mean directional CDNV and CDNV along the stream, one line per run, over one task set
    (the tasks every run defines at every row; named in the title)."""
    _, sns = plotting()
    fig, ax = subplots(figsize=(6.5, 4))
    palette = sns.color_palette("tab10", len(runs))
    names = compare_task_set(runs)
    for i, run in enumerate(runs):
        ks = [run.tasks.index(n) for n in names]
        for metric, ls in ((DIR_CDNV, "-"), (CDNV, "--")):
            series = [dict(run.series(metric, task=k)) for k in ks]
            xs = sorted(set.intersection(*(set(s) for s in series))) if series else []
            if xs:
                ax.plot(xs, [float(np.exp(np.mean([np.log(s[x]) for s in series]))) for x in xs], ls=ls,
                        marker="o", color=palette[i], label=f"{_short(run.label, 40)} "
                        f"{'dir-CDNV' if metric == DIR_CDNV else 'CDNV'}")
    ax.set_yscale("log")
    ax.set_xlabel(EXP_LABEL)
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("geometric mean over tasks (unitless, log scale)")
    over = (f"over the {len(names)} tasks every run defines throughout: {', '.join(names)}" if names
            else "no task is defined throughout in every run")
    ax.set_title(_wrap("Directional CDNV (solid) and CDNV (dashed) per run, " + over, 70), fontsize=9)
    if names:
        ax.legend(fontsize=6)
    return fig


def compare_orthogonality(runs: List[RunData]):
    """The final median-|cos| heatmap of each run, side by side on one colour scale, tasks by name."""
    mats = [cos_matrix(r, r.last) for r in runs]
    refs = [_references(r.feature_dim) for r in runs]
    vmax = max([np.nanmax(m) for m in mats if np.isfinite(m).any()] + [r["rms"] for r in refs]) * 1.05
    fig, axes = subplots(1, len(runs), figsize=(4.0 * len(runs), 3.8), squeeze=False)
    grey_any = False
    for ax, run, m, ref in zip(axes[0], runs, mats, refs):
        grey = greyed(run)
        grey_any = grey_any or any(grey)
        _heatmap(ax, m, [_short(t, 8) for t in run.tasks], vmax, ref, cbar=True, annotate=run.T <= 6, grey=grey)
        ax.set_title(_wrap(run.label, 34), fontsize=8)
    fig.suptitle("Decision-axis overlap after the last experience, per run", fontsize=10)
    fig.tight_layout()
    _reference_legend(fig, refs[0], grey_any, y=0.0, ncol=3 if len(runs) > 1 else 1)
    return fig


def paper_claims_figure(claims: dict, run: RunData):
    """The paper's three claims along training (x: epochs trained, 0 = before training):
    (1) geometric-mean dir-CDNV and CDNV over attributes (log2), (2) the anisotropy index with S1's level
    and the isotropic value 1, (3) few-shot NCC error against the Theorem 4.1 bound per shot count and
    point, with y = x, (4) median |cos| between attributes' axes with each pair's permutation-null 5%
    quantile (dashed), the random level and 2^-3 (references)."""
    _, sns = plotting()
    from dncsim.analysis.report.paper import S1_FALL, S3_PAPER_LEVEL

    epochs = claims["epochs_per_point"]
    fig, axes = subplots(2, 2, figsize=(11, 8))
    (a1, a2), (a3, a4) = axes
    traj = claims["S1"]["trajectory"]
    x = [(t["exp"] + 1) * epochs for t in traj]
    for key, style, label in (("dir_cdnv", "-o", "directional CDNV"), ("cdnv", "--s", "CDNV")):
        pts = [(xi, t[key]) for xi, t in zip(x, traj) if t[key]]
        if pts:
            a1.plot(*zip(*pts), style, label=label)
    a1.set_yscale("log", base=2)
    a1.set_title("Geometric mean over attributes (paper: dir-CDNV 2^-1 to 2^-5, CDNV 2^1 to 2^3)", fontsize=8)
    a1.set_ylabel("variability (unitless, log2)")
    pts = [(xi, t["index"]) for xi, t in zip(x, traj) if t.get("index")]
    if pts:
        a2.plot(*zip(*pts), "-o", color="C2", label="anisotropy index (dir-CDNV / CDNV x 2d)")
        r0 = pts[0][1]
        a2.axhline(r0 / S1_FALL, color="grey", ls="--", lw=1, label=f"{S1_FALL:g}x below its start")
        a2.axhline(1.0, color="black", ls=":", lw=1, label="isotropic (1)")
    a2.set_yscale("log", base=2)
    a2.set_title("S1: directional collapse", fontsize=9)
    a2.set_ylabel("anisotropy index (log2)")
    for ax in (a1, a2):
        ax.set_xlabel("epochs trained")
        ax.legend(fontsize=7)
    per = {}
    for r in run.rows:
        if r["metric"] in ("fewshot_err", "bound") and r["shots"] is not None:
            per.setdefault((r["task"], r["exp"], r["shots"]), {})[r["metric"]] = r["value"]
    palette = sns.color_palette("tab10", max(run.T, 1))
    lo, hi = 1.0, 1e-3
    for k in range(run.T):
        pts = [(v["bound"], max(v["fewshot_err"], 1e-4)) for (t, _, _), v in per.items()
               if t == k and "bound" in v and "fewshot_err" in v]
        if pts:
            a3.scatter(*zip(*pts), s=14, alpha=0.7, color=GREY if greyed(run)[k] else palette[k % 10],
                       label=_short(run.tasks[k]) + (" (greyed)" if greyed(run)[k] else ""))
            lo, hi = min(lo, *(min(p) for p in pts)), max(hi, *(max(p) for p in pts))
    a3.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="error = bound")
    a3.set_xscale("log", base=2)
    a3.set_yscale("log", base=2)
    a3.set_xlabel("Theorem 4.1 bound (every m where defined; m < 10 extrapolated; log2)")
    a3.set_ylabel("few-shot NCC error (log2; 0 drawn at 2^-13)")
    a3.set_title("S2: error against bound, every shot count and point of training", fontsize=9)
    a3.legend(fontsize=7)
    s3 = claims["S3"]
    for i, p in enumerate(s3["pairs"]):
        colour = sns.color_palette("tab10", 10)[i % 10]
        pts = [((q["exp"] + 1) * epochs, q["value"]) for q in p["trajectory"] if q["value"] and q["value"] > 0]
        if pts:
            a4.plot(*zip(*pts), "-o", ms=3, color=colour, label=" / ".join(_short(n, 8) for n in p["names"]))
        pts = [((q["exp"] + 1) * epochs, q["value"]) for q in p.get("null_trajectory", []) if q["value"]
               and q["value"] > 0]
        if pts:
            a4.plot(*zip(*pts), "--", lw=1, color=colour)
    a4.axhline(s3["random_median"], color="C0", lw=1, ls="-", alpha=0.6, label=f"random ({s3['random_median']:.3f})")
    a4.axhline(S3_PAPER_LEVEL, color="black", lw=1, ls=":", label="2^-3 (the paper's largest)")
    a4.plot([], [], "--", color="grey", lw=1, label="permutation null, 5% quantile (S3 passes below)")
    a4.set_yscale("log", base=2)
    a4.set_xlabel("epochs trained")
    a4.set_ylabel("median |cos| between axes (log2)")
    a4.set_title("S3: near-orthogonality of attributes' axes (paper: 2^-5 to 2^-3)", fontsize=9)
    a4.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
