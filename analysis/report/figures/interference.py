"""Figures of interference between tasks: the accuracy matrices, forgetting, directional CDNV against
forgetting, and the interference graph."""
from __future__ import annotations

import math
from typing import List

import numpy as np

from dncsim.analysis.report.figures.plotting import (GREY, grey_cells, greyed, greyed_summary, heatmap, plotting,
                                                     short, subplots)
from dncsim.rundir import RunData

__all__ = ["accuracy_heatmaps", "forgetting_bars", "dircdnv_vs_forgetting", "interference_graph"]


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
                xticklabels=[short(t, 12) for t in run.tasks], yticklabels=ylabels,
                cbar_kws={"label": "test accuracy (fraction)"})
        grey_cells(ax, grey)
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
                      [short(n) + (" (not learned)" if n in unlearned else "") for n in names])
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
        ax.annotate(short(name) + ("" if learned else " (not learned)"), (x, y), fontsize=7, xytext=(3, 3),
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
    nx.draw_networkx_labels(g, pos, ax=ax, labels={k: short(n, 10) + ("\n(not learned)" if grey[k] else "")
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
                          label="community: " + ", ".join(short(names[n], 8) for n in c))
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
