"""The debiased estimator (the default): its kernel against a loop-by-class reference of its formulas, the
batched forms against the single ones, bias and interval coverage by simulation against exact population
values (isotropic classes; a balanced factorial with strata), the iid form's failure on the factorial, and
the plug-in's numbers unchanged."""
import itertools
import math

import numpy as np
import pytest
import torch

import dncsim.analysis.estimators as E
from dncsim.common import DncsimError

F64 = torch.float64


# --- a loop-by-class reference of the estimator's formulas (docs, Methods, Estimators) -------------------

def _hy(R, n):
    """Unbiased tr(Sigma^2) from residuals R (n, d) around the class mean (Himeno & Yamada 2014)."""
    S2 = (R.T @ R).square().sum() / (n - 1) ** 2
    trS = R.square().sum() / (n - 1)
    K = R.square().sum(1).square().sum() / (n - 1)
    return (n - 1) / (n * (n - 2) * (n - 3)) * ((n - 1) * (n - 2) * S2 + trS ** 2 - n * K)


def reference(x, y, strata=None):
    """dir (C, C), cdnv (C, C) by the formulas, one class and one pair at a time."""
    x = torch.as_tensor(x, dtype=F64)
    x = x - x.mean(0)
    y = torch.as_tensor(y)
    C = int(y.max()) + 1
    n = torch.bincount(y, minlength=C).to(F64)
    mu = torch.stack([x[y == c].mean(0) for c in range(C)])
    Sig, Om, g, h, h2 = [], [], [], [], []
    for c in range(C):
        r = x[y == c] - mu[c]
        if strata is None:
            w, kappa = r, torch.full((len(r),), 1.0 / (n[c] * (n[c] - 1)), dtype=F64)
        else:
            s = torch.as_tensor(strata)[y == c]
            w, kappa = torch.empty_like(r), torch.empty(len(r), dtype=F64)
            for k in s.unique():
                sel = s == k
                m = int(sel.sum())
                w[sel] = x[y == c][sel] - x[y == c][sel].mean(0)
                kappa[sel] = m / ((m - 1) * n[c] ** 2)
        Om.append((w * kappa[:, None]).T @ w)
        Sig.append(r.T @ r / n[c] + Om[-1])
        r2 = r.square().sum(1)
        g.append((r * r2[:, None]).sum(0))
        h.append(r2.sum())
        h2.append(r2.square().sum())
    tau = torch.tensor([[torch.trace(Sig[a] @ Om[b]) for b in range(C)] for a in range(C)], dtype=F64)
    oo = torch.tensor([[torch.trace(Om[a] @ Om[b]) for b in range(C)] for a in range(C)], dtype=F64)
    if strata is None:
        for c in range(C):
            tau[c, c] = _hy(x[y == c] - mu[c], n[c]) / n[c]
    dir_ = torch.full((C, C), float("nan"), dtype=F64)
    cd = torch.full((C, C), float("nan"), dtype=F64)
    for i, j in itertools.permutations(range(C), 2):
        dl = mu[j] - mu[i]
        trOi, trOj = torch.trace(Om[i]), torch.trace(Om[j])
        D = dl @ dl - trOi - trOj
        if strata is None:
            ni = n[i]
            loo = 2 * g[i] @ dl / (ni - 2) + h2[i] / (ni - 2) ** 2 - h[i] ** 2 / (ni * (ni - 2) ** 2)
            N = dl @ Sig[i] @ dl + loo / (ni - 1) - tau[i, j] - tau[i, i] * ni / (ni - 2)
        else:
            N = dl @ Sig[i] @ dl - tau[i, i] - tau[i, j]
        O2 = oo[i, i] + 2 * oo[i, j] + oo[j, j]
        w = max(0.0, float(dl @ Om[i] @ dl + dl @ Om[j] @ dl - O2))
        V = 4 * w + 2 * O2
        Cv = 4 * N * w / D + 2 * (tau[i, i] + tau[i, j]) * O2 / (trOi + trOj)
        Q = D ** 2 + 3 * V
        dir_[i, j] = N / Q + 2 * D * Cv / Q ** 2
        cd[i, j] = (torch.trace(Sig[i]) + torch.trace(Sig[j])) * D / (D ** 2 + V)
    return dir_, cd


def _factorial_sample(reps, g, levels=(3, 3, 2), d=8):
    cells = torch.tensor(list(itertools.product(*[range(L) for L in levels])))
    lab = cells.repeat_interleave(reps, 0)
    x = torch.randn(len(lab), d, generator=g, dtype=F64)
    for a, L in enumerate(levels):
        x += torch.randn(L, d, generator=g, dtype=F64)[lab[:, a]]
    return x, lab.T.contiguous()


@pytest.mark.parametrize("strata", [False, True])
def test_the_kernel_equals_the_reference_formulas(strata):
    g = torch.Generator().manual_seed(3)
    x, lab = _factorial_sample(4, g)
    s = lab[1] * 2 + lab[2] if strata else None
    want_dir, want_cd = reference(x, lab[0], s)
    est = E.debiased_geometry(x, lab[0], strata=s, design="strata" if strata else "iid")
    assert est.design == ("strata" if strata else "iid")
    torch.testing.assert_close(est.dir_cdnv, want_dir, rtol=1e-9, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(est.cdnv, want_cd, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_the_batched_tasks_and_masks_equal_the_single_calls():
    """Task t of a batch (strata: the other tasks' joint cells) equals the single call with those labelings
    as strata; a jackknife replicate equals the single call on the samples it keeps; a task that labels
    only some samples is estimated on those."""
    g = torch.Generator().manual_seed(5)
    x, lab = _factorial_sample(4, g)
    ests = E.debiased_geometry_tasks(x, lab)
    for t in range(3):
        others = torch.cat([lab[:t], lab[t + 1:]])
        single = E.debiased_geometry(x, lab[t], strata=others)
        assert ests[t].design == single.design == "strata"
        torch.testing.assert_close(ests[t].dir_cdnv, single.dir_cdnv, equal_nan=True)
        torch.testing.assert_close(ests[t].cdnv, single.cdnv, equal_nan=True)
    part = lab.clone()
    part[1, :10] = -1                          # task 1 on 62 of 72 samples: no balanced design, iid
    est = E.debiased_geometry_tasks(x, part)[1]
    single = E.debiased_geometry(x[10:], lab[1, 10:], design="iid")
    assert est.design == "iid"
    torch.testing.assert_close(est.dir_cdnv, single.dir_cdnv, equal_nan=True)
    # a replicate: the kernel on a mask equals the call on the kept samples
    from dncsim.analysis.estimators.debiased import debiased_kernel, task_designs
    from dncsim.analysis.task_batch import task_labels

    xc = x - x.mean(0)
    tl = task_labels(lab, x.shape[0])
    cells, use, K = task_designs(tl.idx, "iid")
    W = torch.ones(3, 2, x.shape[0], dtype=F64)
    W[:, 1, ::7] = 0
    kept = W[0, 1] > 0
    single = E.debiased_geometry(x[kept], lab[0, kept], design="iid")
    each = debiased_kernel(xc, tl.idx, cells, use, W, tl.C, K, traces="each")
    torch.testing.assert_close(each[0][0, 1], single.dir_cdnv, equal_nan=True)
    held = debiased_kernel(xc, tl.idx, cells, use, W, tl.C, K)      # the replicates' trace terms: mask 0's
    torch.testing.assert_close(held[0][:, 0], each[0][:, 0], equal_nan=True)
    assert not torch.allclose(held[0][0, 1], each[0][0, 1], equal_nan=True)


# --- bias and coverage by simulation ----------------------------------------------------------------------

def _truth(mus, sigmas):
    C = len(mus)
    dirs, cds = [], []
    for i, j in itertools.permutations(range(C), 2):
        dl = mus[j] - mus[i]
        g2 = dl @ dl
        dirs.append(dl @ sigmas[i] @ dl / g2 ** 2)
        if i < j:
            cds.append((np.trace(sigmas[i]) + np.trace(sigmas[j])) / g2)
    return float(np.mean(dirs)), float(np.mean(cds))


def isotropic(C=3, d=16, n=8, gap2=6.0):
    """C classes with identity covariance and every squared mean gap ``gap2`` (a regular simplex)."""
    rng = np.random.default_rng(11)
    Q = np.linalg.qr(rng.normal(size=(d, C)))[0]
    M = (np.eye(C) - 1.0 / C) @ Q.T * np.sqrt(gap2 / 2)
    truth = _truth(list(M), [np.eye(d)] * C)

    def draw(rng):
        y = np.repeat(np.arange(C), n)
        return M[y] + rng.normal(size=(C * n, d)), y, None
    return draw, truth


def factorial(reps=4, levels=(3, 3, 2), d=24, k=6, attr=0):
    """A balanced factorial (as examples/make_multitask_features.py): each attribute moves the features along
    k directions of its own; within-cell noise sd 0.3 along those, 0.5 elsewhere. Class ``attr``'s covariance
    as sampled = within-cell covariance + the between-cell scatter of its cells (equally weighted)."""
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    effects = [rng.normal(size=(L, k)) @ basis[:, a * k:(a + 1) * k].T * 1.5 for a, L in enumerate(levels)]
    scales = np.r_[np.full(k * len(levels), 0.3), np.full(d - k * len(levels), 0.5)]
    W = (basis * scales ** 2) @ basis.T
    cells = np.array(list(itertools.product(*[range(L) for L in levels])))
    cm = sum(effects[a][cells[:, a]] for a in range(len(levels)))
    mus, sigmas = [], []
    for c in range(levels[attr]):
        sel = cm[cells[:, attr] == c]
        mu = sel.mean(0)
        mus.append(mu)
        sigmas.append(W + (sel - mu).T @ (sel - mu) / len(sel))
    truth = _truth(mus, sigmas)
    others = [a for a in range(len(levels)) if a != attr]

    def draw(rng):
        lab = np.repeat(cells, reps, axis=0)
        x = cm[np.repeat(np.arange(len(cells)), reps)] + (rng.normal(size=(len(lab), d)) * scales) @ basis.T
        return x, lab[:, attr], lab[:, others].T
    return draw, truth


def simulate(draw, truth, design, draws=60):
    """(mean relative bias of the summary dir-CDNV, its Monte-Carlo error, coverage of dir-CDNV's and of
    CDNV's 95% intervals) over ``draws`` samples."""
    rng = np.random.default_rng(0)
    rel, cover_d, cover_c = [], 0, 0
    for r in range(draws):
        x, y, s = draw(rng)
        est = E.debiased_geometry(x, y, strata=s, design=design).summary()
        iv = E.jackknife_summaries(x, y, strata=s, design=design, seed=r)
        rel.append(est["dir_cdnv"] / truth[0] - 1)
        cover_d += iv["dir_cdnv"][0] <= truth[0] <= iv["dir_cdnv"][1]
        cover_c += iv["cdnv"][0] <= truth[1] <= iv["cdnv"][1]
    rel = np.array(rel)
    return rel.mean(), rel.std(ddof=1) / math.sqrt(draws), cover_d / draws, cover_c / draws


@pytest.mark.parametrize("design_name,draw_truth,design", [
    ("isotropic n/d 0.5", lambda: isotropic(d=32, n=16, gap2=10.0), "iid"),
    ("isotropic n/d 2", lambda: isotropic(d=16, n=32), "iid"),
    ("factorial, strata", lambda: factorial(attr=0), "auto"),
    ("factorial, strata, 2 classes", lambda: factorial(attr=2), "auto"),
])
def test_the_default_is_unbiased_and_its_intervals_cover(design_name, draw_truth, design):
    """|mean relative bias| <= 10% (beyond twice its Monte-Carlo error, which is itself under 5%) and 95%
    intervals covering the population value in >= 85% of 60 draws."""
    draw, truth = draw_truth()
    bias, se, cover_d, cover_c = simulate(draw, truth, design)
    assert se < 0.05, (design_name, se)
    assert abs(bias) <= 0.10 + 2 * se, (design_name, bias, se)
    assert cover_d >= 0.85 and cover_c >= 0.85, (design_name, cover_d, cover_c)


def test_the_design_matters_the_iid_form_fails_on_the_factorial():
    """Negative control: the same factorial samples without their strata (iid form) are biased far below
    the population value and its intervals miss it; 'auto' finds the strata."""
    draw, truth = factorial()
    x, y, s = draw(np.random.default_rng(0))
    assert E.debiased_geometry(x, y, strata=s).design == "strata"
    bias, se, cover_d, _ = simulate(draw, truth, "iid", draws=20)
    assert bias < -0.5 and cover_d < 0.5, (bias, cover_d)


# --- the plug-in, unchanged -------------------------------------------------------------------------------

def test_the_plugin_gives_the_numbers_it_gave():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(60, 5, generator=g, dtype=F64)
    y = torch.arange(60) % 3
    x[:, 0] += 2.0 * y
    s = E.plugin_geometry(x, y).summary()
    assert s["dir_cdnv"] == pytest.approx(0.2272222749449868, rel=1e-12)
    assert s["cdnv"] == pytest.approx(2.017601955244905, rel=1e-12)
    assert s["ratio"] == pytest.approx(0.1126199716224034, rel=1e-12)
    assert s["mean_gap"] == pytest.approx(2.789262359106458, rel=1e-12)
    assert E.plugin_geometry(x, y).dir_cdnv[0, 1] == pytest.approx(0.36278866282394057, rel=1e-12)
    assert E.estimate_geometry(x, y, "plugin").summary()["dir_cdnv"] == s["dir_cdnv"]
    iv = E.bootstrap_summaries(x, y, estimator="plugin", resamples=50, seed=3)
    assert iv["dir_cdnv"] == pytest.approx((0.08949239249662393, 0.29012373193209384), rel=1e-12)
    assert iv["cdnv"] == pytest.approx((1.177325175164002, 2.56837634146942), rel=1e-12)


# --- the boundary -----------------------------------------------------------------------------------------

def test_bad_settings_raise_one_clear_error_each():
    x = torch.randn(40, 3, dtype=F64)
    y = torch.arange(40) % 2
    for kw, word in [(dict(alpha=1.5), "alpha"), (dict(alpha=0), "alpha"), (dict(resamples=0), "resamples"),
                     (dict(estimator="debiased"), "jackknife")]:
        with pytest.raises(DncsimError, match=word):
            E.bootstrap_summaries(x, y, **kw)
    with pytest.raises(DncsimError, match="alpha"):
        E.bootstrap_median_abs_cos(x, y, (torch.arange(40) // 2) % 2, alpha=2)
    with pytest.raises(DncsimError, match="resamples"):
        E.bootstrap_median_abs_cos_tasks(x, torch.stack([y, y]), resamples=0)
    with pytest.raises(DncsimError, match="groups"):
        E.jackknife_summaries(x, y, groups=1)
    with pytest.raises(DncsimError, match="alpha"):
        E.jackknife_summaries(x, y, alpha=-0.1)
    with pytest.raises(DncsimError, match="estimator must be one of plugin, crossfit, debiased"):
        E.estimate_geometry(x, y, "median")
    with pytest.raises(DncsimError, match="design"):
        E.debiased_geometry(x, y, design="clustered")
    with pytest.raises(DncsimError, match="needs strata"):
        E.debiased_geometry(x, y, design="strata")


def test_lists_are_accepted_where_tensors_are():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g, dtype=F64)
    y = torch.arange(40) % 2
    x[:, 0] += 3 * y
    labels = torch.stack([y, (torch.arange(40) // 2) % 2])
    assert E.debiased_geometry(x.tolist(), y.tolist()).summary() == E.debiased_geometry(x, y).summary()
    a = E.bootstrap_summaries_tasks(x.tolist(), labels.tolist(), estimator="plugin", resamples=5)
    b = E.bootstrap_summaries_tasks(x, labels, estimator="plugin", resamples=5)
    assert a == b
    ja = E.jackknife_summaries_tasks(x.tolist(), labels.tolist())[1][0]
    assert ja == E.jackknife_summaries_tasks(x, labels)[1][0]
    assert 0 < ja["dir_cdnv"][0] < ja["dir_cdnv"][1]


# --- regime flags reach the run's closing notes and the report's findings ---------------------------------

def test_flagged_regimes_are_noted_not_hidden():
    from dncsim.analysis.closing import closing_notes
    from dncsim.analysis.names import BARELY_RESOLVED_PAIRS, CDNV, DIR_CDNV, NEGATIVE_NUMERATOR_PAIRS
    from dncsim.analysis.report.summary import regime_notes

    def row(metric, task, value, exp=1):
        return {"exp": exp, "task": task, "task_b": None, "metric": metric, "probe": None, "shots": None,
                "value": value}
    rows = [row(m, k, 0.1) for m in (DIR_CDNV, CDNV) for k in (0, 1)]
    rows += [row(BARELY_RESOLVED_PAIRS, 0, 3), row(NEGATIVE_NUMERATOR_PAIRS, 0, 0),
             row(BARELY_RESOLVED_PAIRS, 1, 0), row(NEGATIVE_NUMERATOR_PAIRS, 1, 1),
             row(BARELY_RESOLVED_PAIRS, 1, 5, exp=0)]
    notes = closing_notes(rows, ["color", "shape"]).strip().splitlines()
    assert notes == ["note: dir-CDNV of color: gap barely resolved for 3 class pair(s) (debiased estimator; read "
                     "it with its interval)",
                     "note: dir-CDNV of shape: axis variance below the noise floor for 1 class pair(s) (debiased "
                     "estimator; read it with its interval)"]
    found = regime_notes([{"name": "color", "regime_final": {BARELY_RESOLVED_PAIRS: 3.0}},
                          {"name": "shape", "regime_final": {BARELY_RESOLVED_PAIRS: 0.0}}])
    assert len(found) == 1 and "task 'color'" in found[0] and "barely resolved for 3 ordered" in found[0]


def test_the_trace_sketch_of_many_classes_agrees_with_the_exact_traces(monkeypatch):
    """Above SKETCH_ELEMENTS the trace terms come from 64 seeded Rademacher probes: the estimate moves by
    well under 1% (the traces are corrections), the same on every call."""
    import dncsim.analysis.estimators.debiased as DB

    g = torch.Generator().manual_seed(0)
    C, d, n = 20, 64, 40
    y = torch.arange(C * n) % C
    x = torch.randn(C * n, d, generator=g, dtype=F64) + 1.5 * torch.randn(C, d, generator=g, dtype=F64)[y]
    exact = E.debiased_geometry(x, y).summary()
    monkeypatch.setattr(DB, "SKETCH_ELEMENTS", 0)
    sketched = E.debiased_geometry(x, y).summary()
    assert sketched["dir_cdnv"] != exact["dir_cdnv"]
    assert sketched["dir_cdnv"] == pytest.approx(exact["dir_cdnv"], rel=1e-3)
    assert sketched["cdnv"] == pytest.approx(exact["cdnv"], rel=1e-6)
    assert E.debiased_geometry(x, y).summary() == sketched
