"""The figure of the paper's three claims along training."""
from __future__ import annotations

from dncsim.analysis.report.figures.plotting import GREY, greyed, plotting, short, subplots
from dncsim.rundir import RunData

__all__ = ["paper_claims_figure"]


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
                       label=short(run.tasks[k]) + (" (greyed)" if greyed(run)[k] else ""))
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
            a4.plot(*zip(*pts), "-o", ms=3, color=colour, label=" / ".join(short(n, 8) for n in p["names"]))
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
