"""The orthogonality report: every figure, numbers equal to the run's files, edge cases, errors."""
import base64
import json
import re

import numpy as np
import pytest

from dncsim.analysis import DncsimError
from dncsim.analysis import names
from dncsim.analysis.report import build_report
from dncsim.analysis.report.figures import FIGURES
from dncsim.rundir import load_run
from dncsim.simulator.cli import main
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.run import run
from tests.support.report_runs import BASE, make_run

SINGLE = ["collapse_curves", "accuracy_heatmaps", "forgetting_bars", "dircdnv_vs_forgetting", "fewshot_curves"]
PAIRWISE = ["orthogonality_heatmap", "orthogonality_over_stream", "prop42_scatter", "prop42_tightness",
            "interference_graph"]


def figure_files(out):
    """{file name: bytes} of a report's figures/ folder."""
    return {p.name: p.read_bytes() for p in sorted((out / "figures").iterdir())}


@pytest.fixture(scope="module")
def four_task_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "four")


@pytest.fixture(scope="module")
def report(four_task_run):
    return build_report(four_task_run)


@pytest.fixture(scope="module")
def supervised_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "supervised", objective={"name": "supervised"})


def test_every_figure_is_in_every_format(report):
    html = (report / "index.html").read_text()
    md = (report / "report.md").read_text()
    summary = json.loads((report / "summary.json").read_text())
    assert sorted(summary["figures"]) == sorted(SINGLE + PAIRWISE)
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == len(summary["figures"])
    for b64 in imgs:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    for name in summary["figures"]:
        assert f"figures/{name}.png" in md and (report / "figures" / f"{name}.png").stat().st_size > 5000
        assert FIGURES[name].caption in html            # every figure has its caption
    for section in ("Run", "Orthogonality of decision axes", "Proposition 4.2", "Directional collapse",
                    "Interference", "Interference graph", "Few-shot error", "Findings", "What happened to each task",
                    "Every per-task measurement"):
        assert f">{section}" in html and f"## {section}" in md
    assert '<nav class="toc">' in html and html.count('<li><a href="#') == 9       # no comparison, no paper
    assert "http://" not in html and "https://" not in html          # self-contained


def test_summary_numbers_equal_the_run_files(four_task_run, report):
    s = json.loads((report / "summary.json").read_text())
    rows = [json.loads(line) for line in (four_task_run / "metrics.jsonl").read_text().splitlines()]
    last = max(r["exp"] for r in rows)
    ix = {(r["metric"], r["exp"], r["task"], r["task_b"], r["probe"], r["protocol"], r["shots"]): r["value"]
          for r in rows}
    checked = resolved = 0
    for k, t in enumerate(s["tasks"]):
        for key, v in t["final_acc"].items():
            probe, proto = key.split("/")
            assert v == ix[(names.ACC, last, k, None, probe, proto, None)]
            checked += 1
            f = ix.get((names.FORGETTING_MAX, last, k, None, probe, proto, None))
            assert t["forgetting_max"][key] == f
        # (crossfit, the default estimator, leaves a task out while no class pair is resolved: None, both sides)
        assert t["dir_cdnv_learned"] == ix.get((names.DIR_CDNV, k, k, None, None, None, None))
        assert t["cdnv_init"] == ix.get((names.CDNV, -1, k, None, None, None, None))
        assert t["dir_cdnv_final"] == ix.get((names.DIR_CDNV, last, k, None, None, None, None))
        assert t["resolved_pairs_final"] == ix[(names.RESOLVED_PAIRS, last, k, None, None, None, None)]
        if t["dir_cdnv_final"] is not None:
            resolved += 1
            assert t["dir_cdnv_ci_low_final"] < t["dir_cdnv_final"] < t["dir_cdnv_ci_high_final"]
        for f in t["fewshot"]:
            assert f["error"] == ix[(names.FEWSHOT_ERR, last, k, None, None, None, f["shots"])]
    for p in s["pairs"]:
        assert p["axis_cos_median_final"] == ix[(names.AXIS_COS_MEDIAN, last, p["a"], p["b"], None, None, None)]
        assert p["interference"] == ix[(names.INTERFERENCE, p["b"], p["a"], p["b"], "linear", "frozen", None)]
        for key, metric in (("axis_cos_null_median_final", names.AXIS_COS_NULL_MEDIAN),
                            ("axis_cos_null_q05_final", names.AXIS_COS_NULL_Q05),
                            ("axis_cos_null_p_final", names.AXIS_COS_NULL_P)):
            assert p[key] == ix[(metric, last, p["a"], p["b"], None, None, None)]
        beyond = ix[(names.AXIS_BEYOND_NULL, last, p["a"], p["b"], None, None, None)]
        assert p["beyond_null_final"] is (beyond == 1.0) and beyond == float(p["axis_cos_null_p_final"] <= 0.05)
        checked += 2
    n_beyond = sum(p["beyond_null_final"] for p in s["pairs"])
    assert (f"After the last experience {n_beyond} of 6 task pairs on the same samples had decision axes more "
            "orthogonal than the permutation null") in " ".join(s["findings"])
    md = (report / "report.md").read_text()
    assert "| null median | null 5% | null p | verdict |" in md and "Reference, not the test" in md
    assert md.count("beyond the null |") + md.count("not beyond |") == 6
    acc = json.loads((four_task_run / "accuracy.json").read_text())["matrices"]["linear/frozen"]
    assert [t["final_acc"]["linear/frozen"] for t in s["tasks"]] == acc[-1]
    assert s["stream"]["bwt"]["linear/frozen"] == ix[(names.BWT, last, None, None, "linear", "frozen", None)]
    # the Prop 4.2 points, recomputed from the geometry files, agree with each pair's metric row
    from dncsim.analysis.report.summary import prop42_points
    for p in prop42_points(load_run(four_task_run)):
        frac = float(np.mean(np.array(p["cos"]) <= np.array(p["bound"])))
        assert frac == ix[(names.PROP42_FRAC, last, p["a"], p["b"], None, None, None)]
    assert s["prop42"]["fraction"] == 1.0            # balanced independent labelings: true of any features
    # ... so the report's number is the bound's tightness, equal to the geometry files' medians
    from dncsim.analysis.orthogonality import random_abs_cos
    chance = random_abs_cos(s["run"]["feature_dim"])["median"]
    by_pair = {(p["a"], p["b"]): p for p in s["prop42"]["pairs"]}
    assert len(by_pair) == 6 and s["prop42"]["dependent"] == []
    for p in prop42_points(load_run(four_task_run)):
        med_bound = float(np.median(p["bound"]))            # true medians (even counts: the middle two's mean)
        med_cos = float(np.median(p["cos"]))
        entry = by_pair[(p["a"], p["b"])]
        assert entry["tightness_final"] == pytest.approx(med_bound / med_cos, rel=1e-9)
        assert entry["bound_vs_random_final"] == pytest.approx(med_bound / chance, rel=1e-9)
        assert entry["tightness_final"] >= 1.0 and entry["cramers_v"] == 0.0
        assert [q["exp"] for q in entry["tightness"]] == list(range(-1, last + 1))
    text = " ".join(s["findings"])
    assert "times the observed median |cos|" in text and "under the Prop. 4.2 bound" not in text
    # the linear-probe solves: one per task and row, counted from the table, and said when any hit the budget
    flags = [r for r in rows if r["metric"] == names.PROBE_CONVERGED]
    lp = s["linear_probe"]
    assert lp["fits"] == len(flags) == len(s["tasks"]) * (last + 2)
    assert lp["at_budget"] == sum(r["value"] == 0 for r in flags) == sum(lp["tasks_at_budget"].values())
    assert ("linear-probe fits stopped at the step budget" in text) == (lp["at_budget"] > 0)
    assert checked > 20 and len(s["findings"]) >= 3
    assert resolved >= 2
    both = [t for t in s["tasks"] if all(t[f"{m}_{w}"] for m in ("dir_cdnv", "cdnv") for w in ("init", "final"))]
    assert s["stream"]["geometry_task_set"]["tasks"] == [t["name"] for t in both]
    for m in ("dir_cdnv", "cdnv"):
        for w in ("init", "final"):
            geo = np.exp(np.mean(np.log([t[f"{m}_{w}"] for t in both])))
            assert s["stream"][f"geomean_{m}_{w}"] == pytest.approx(geo)


def test_one_task_run_renders_the_sections_that_apply(tmp_path):
    single = make_run(tmp_path / "one",
                      scenario={**BASE["scenario"], "stream": {"type": "multilabel", "labelings": ["color"]}})
    out = build_report(single)
    s = json.loads((out / "summary.json").read_text())
    assert sorted(s["figures"]) == sorted(SINGLE) and s["pairs"] == []
    assert set(figure_files(out)) == {f"{name}.png" for name in SINGLE}
    html = (out / "index.html").read_text()
    assert "One task: no pairs of tasks to compare." in html and "One task: no graph." in html
    assert "One task: there are no task pairs" in " ".join(s["findings"])


def test_dependent_labelings_are_left_out_of_prop42_with_the_reason(tmp_path):
    """color:parity is a function of color (Cramer's V = 1): Prop. 4.2's assumption fails for that pair,
    which the run records and the report lists, while the independent pairs keep their section."""
    dep = make_run(tmp_path / "dep", objective={"name": "supervised"},
                   scenario={**BASE["scenario"], "stream": {"type": "multilabel",
                                                            "labelings": ["color", "color:parity", "shape"]}})
    rows = [json.loads(line) for line in (dep / "metrics.jsonl").read_text().splitlines()]
    v = {(r["task"], r["task_b"]): r["value"] for r in rows if r["metric"] == names.LABELS_CRAMERS_V}
    assert v[(0, 1)] == pytest.approx(1.0) and v[(0, 2)] == 0.0 and v[(1, 2)] == 0.0
    for metric in (names.PROP42_FRAC, names.PROP42_TIGHTNESS, names.PROP42_VS_RANDOM):
        assert {(r["task"], r["task_b"]) for r in rows if r["metric"] == metric} == {(0, 2), (1, 2)}
    out = build_report(dep)
    s = json.loads((out / "summary.json").read_text())
    assert [(p["a"], p["b"]) for p in s["prop42"]["dependent"]] == [(0, 1)]
    assert "dependent (Cramer's V = 1.00 > 0.1)" in s["prop42"]["dependent"][0]["reason"]
    assert [(p["a"], p["b"]) for p in s["prop42"]["pairs"]] == [(0, 2), (1, 2)]
    html, md = (out / "index.html").read_text(), (out / "report.md").read_text()
    for text in (html, md):
        assert "color / color:parity: the labelings are dependent" in text
    assert "left out of the Prop. 4.2 check: color / color:parity (V = 1.00)" in " ".join(s["findings"])


def test_compare_sets_runs_side_by_side(four_task_run, supervised_run, tmp_path):
    out = build_report(four_task_run, tmp_path / "cmp", compare=[supervised_run])
    s = json.loads((out / "summary.json").read_text())
    assert {"compare_collapse", "compare_orthogonality"} <= set(s["figures"])
    labels = [r["label"] for r in s["comparison"]["rows"]]
    assert "simclr" in labels[0] and "supervised" in labels[1]
    assert ">Comparison</h2>" in (out / "index.html").read_text()


def test_missing_files_are_one_line_errors(four_task_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("config.yaml", "manifest.json", "accuracy.json"):
        (broken / f).write_bytes((four_task_run / f).read_bytes())
    with pytest.raises(DncsimError, match=r"broken: missing metrics.jsonl \(not a dncsim run directory"):
        build_report(broken)
    assert main(["report", str(broken)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "missing metrics.jsonl" in err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_report_command_and_end_of_run_report(four_task_run, tmp_path, capsys):
    assert main(["report", str(four_task_run), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").is_file()
    assert "wrote" in capsys.readouterr().out
    out = tmp_path / "auto"
    run(run_from_mapping({**BASE, "output": {"report": True, "tensorboard": False},
                          "scenario": {**BASE["scenario"],
                                       "stream": {"type": "factor", "attributes": ["color", "style"]}}}), out)
    assert (out / "report" / "index.html").is_file() and (out / "report" / "summary.json").is_file()


def test_the_figure_files_are_the_expected_ones(four_task_run, supervised_run, report, tmp_path):
    """The figures/ folder holds exactly one PNG per figure that applies (four tasks; with a second run;
    one task: test_one_task_run_renders_the_sections_that_apply), and nothing else."""
    assert set(figure_files(report)) == {f"{name}.png" for name in SINGLE + PAIRWISE}
    out = build_report(four_task_run, tmp_path / "cmp", compare=[supervised_run])
    assert set(figure_files(out)) == {f"{name}.png" for name in SINGLE + PAIRWISE
                                      + ["compare_collapse", "compare_orthogonality"]}
    assert set(FIGURES) == set(SINGLE + PAIRWISE) | {"compare_collapse", "compare_orthogonality", "paper_claims"}


def test_serial_and_parallel_figures_are_the_same_files(four_task_run, tmp_path, monkeypatch):
    """Figures drawn by forked workers are byte for byte the ones drawn in this process, and so is every
    other file of the report."""
    from dncsim.analysis.report.figures import pool

    monkeypatch.setattr(pool, "can_fork", lambda: True)     # whatever threads pytest's plugins run
    forked = []
    render_forked = pool._render_forked
    monkeypatch.setattr(pool, "_render_forked", lambda *a: forked.append(render_forked(*a)) or forked[-1])
    outs = {}
    for processes in (1, 2):
        monkeypatch.setattr(pool, "default_processes", lambda n, k=processes: k)
        outs[processes] = build_report(four_task_run, tmp_path / f"p{processes}")
    assert len(forked) == 1 and forked[0] is not None and len(forked[0]) == len(SINGLE + PAIRWISE)
    assert figure_files(outs[1]) == figure_files(outs[2])
    for name in ("index.html", "report.md", "summary.json"):
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes()


def test_a_process_that_cannot_fork_safely_draws_the_figures_itself(four_task_run, report):
    """With another thread running (it could hold a lock a forked child would wait for), the report
    draws every figure in this process, and they are the same."""
    import threading

    from dncsim.analysis.report import figures
    from dncsim.analysis.report.graph import interference_communities
    from dncsim.analysis.report.summary import prop42_points

    run_data = load_run(four_task_run)
    summary = json.loads((report / "summary.json").read_text())
    jobs = figures.figure_jobs(figures.FigureContext(run_data, summary, interference_communities(summary), [],
                                                     prop42_points(run_data)))
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not figures.can_fork() and figures.default_processes(len(jobs)) == 1
        pngs = figures.render(jobs, processes=2)
    finally:
        stop.set()
        thread.join()
    assert {f"{name}.png": png for name, png in pngs.items()} == figure_files(report)


@pytest.mark.parametrize("rows,cols,annot", [
    (["a", "b", "c", "d"], ["a", "b", "c", "d"], True),                      # square, annotated
    (["0", "1", "2"], [f"a long task name {k}" for k in range(12)], False),   # x labels overlap: turned
    (["before"] + [f"after {t}" for t in range(8)], ["0", "1"], True),       # y labels overlap: turned
])
def test_the_heatmap_draws_what_seaborn_heatmap_draws(rows, cols, annot):
    """figures.heatmap (no full-figure draw per heatmap) gives the PNG seaborn.heatmap gives: masked
    NaN cells, tick labels turned where they would overlap, annotations, the colorbar."""
    from dncsim.analysis.report import figures

    _, sns = figures.plotting()
    m = np.random.default_rng(0).uniform(0, 1, (len(rows), len(cols)))
    m[0, 0] = np.nan
    kw = dict(vmin=0, vmax=1, cmap="viridis", annot=annot, fmt=".2f", xticklabels=cols, yticklabels=rows,
              cbar_kws={"label": "value"}, square=len(rows) == len(cols))
    pngs = []
    for seaborn in (True, False):
        fig, ax = figures.subplots(figsize=(4, 3))
        if seaborn:
            sns.heatmap(m, ax=ax, mask=np.isnan(m), **kw)
        else:
            figures.heatmap(m, ax, **kw)
        ax.set_title("heatmap")
        pngs.append(figures.png_bytes(fig))
    assert pngs[0] == pngs[1]


# --- one task set for every aggregate --------------------------------------------------------------------

def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _write_rows(path, rows):
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def undefined_final_geometry(src, dst, task: int):
    """A copy of run ``src`` in which ``task``'s geometry after the last experience is undefined, as the
    crossfit estimator leaves it when no class pair is resolved (no dir-CDNV, CDNV or ratio rows, and
    ``resolved_pairs`` = 0)."""
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report", "checkpoint*", "tb"))
    rows = _rows(dst)
    last = max(r["exp"] for r in rows)
    geometry = (names.DIR_CDNV, names.CDNV, names.CDNV_RATIO, names.MEAN_GAP)
    kept = []
    for r in rows:
        if r["exp"] == last and r["task"] == task and r["task_b"] is None and (
                r["metric"] in geometry or r["metric"].startswith(tuple(m + "_ci" for m in geometry))):
            continue
        if r["exp"] == last and r["task"] == task and r["metric"] == names.RESOLVED_PAIRS:
            r = dict(r, value=0)
        kept.append(r)
    _write_rows(dst, kept)
    return dst


def test_every_aggregate_is_over_one_stated_task_set(four_task_run, tmp_path):
    """Task 2 ('size') has no geometry after the last experience: the findings' change, summary.json's
    geometric means and the comparison's means are all over the tasks defined at both ends (in every
    run), say how many, and name the task left out with the reason; the closing table says why n/a."""
    from dncsim.analysis.closing import closing_notes
    broken = undefined_final_geometry(four_task_run, tmp_path / "broken", task=2)
    out = build_report(broken, tmp_path / "rep", compare=[four_task_run])
    s = json.loads((out / "summary.json").read_text())
    tasks = {t["name"]: t for t in s["tasks"]}
    assert tasks["size"]["dir_cdnv_final"] is None
    assert "no class pair resolved" in tasks["size"]["undefined"]["dir_cdnv_final"]
    ts = s["stream"]["geometry_task_set"]
    keep = [n for n, t in tasks.items() if all(t[f"{m}_{w}"] for m in ("dir_cdnv", "cdnv") for w in ("init", "final"))]
    assert "size" not in keep and ts["tasks"] == keep and ts["n"] == len(keep) >= 2
    assert [x["task"] for x in ts["left_out"]] == [n for n in tasks if n not in keep]
    for m in ("dir_cdnv", "cdnv"):
        for w in ("init", "final"):        # before and after over the same tasks
            assert s["stream"][f"geomean_{m}_{w}"] == pytest.approx(
                np.exp(np.mean(np.log([tasks[n][f"{m}_{w}"] for n in keep]))), rel=1e-12)
    sentence = next(f for f in s["findings"] if f.startswith("Directional CDNV (geometric mean over"))
    assert f"the {len(keep)} of 4 tasks defined both before and after training: {', '.join(keep)}" in sentence
    assert "size: dir_cdnv and cdnv after the last experience undefined (no class pair resolved" in sentence
    before, after = s["stream"]["geomean_dir_cdnv_init"], s["stream"]["geomean_dir_cdnv_final"]
    assert f"from {before:.3g} before training to {after:.3g}" in sentence
    # the comparison: the same task set for both runs, though the other run defines size
    comp = s["comparison"]
    assert comp["task_sets"]["geometry"] == [n for n in keep]
    assert [x["task"] for x in comp["left_out"]][:1] == [n for n in tasks if n not in keep][:1]
    other = {t["name"]: t for t in json.loads((build_report(four_task_run, tmp_path / "o") / "summary.json")
                                              .read_text())["tasks"]}
    assert other["size"]["dir_cdnv_final"] is not None
    for row, by in zip(comp["rows"], (tasks, other)):
        assert row["dir_cdnv"] == pytest.approx(np.exp(np.mean(np.log([by[n]["dir_cdnv_final"] for n in keep]))))
    html, md = (out / "index.html").read_text(), (out / "report.md").read_text()
    for text in (html, md):
        assert f"n={len(keep)}" in text and "undefined" in text
    run_data = load_run(broken)
    notes = closing_notes(run_data.rows, run_data.tasks)
    assert "n/a: size's dir-CDNV and CDNV undefined after the last experience: no class pair resolved" in notes


def test_the_story_leads_with_each_task_and_its_gain_over_init(four_task_run, report):
    s = json.loads((report / "summary.json").read_text())
    rows = _rows(four_task_run)
    ix = {(r["metric"], r["exp"], r["task"], r["probe"], r["protocol"]): r["value"] for r in rows}
    for k, t in enumerate(s["tasks"]):
        assert s["findings"][k].startswith(f"'{t['name']}'")           # one sentence per task, first
        for key in t["final_acc"]:
            probe, proto = key.split("/")
            init = ix[(names.ACC, -1, k, probe, "refit")]
            assert t["acc_init"][key] == init
            assert t["gain_over_init"][key] == pytest.approx(t["acc_learned"][key] - init)
    html = (report / "index.html").read_text()
    assert html.count("<th>gain over init</th>") == len(s["tasks"][0]["final_acc"])


def test_a_frozen_fall_with_a_refit_kept_reads_as_an_axis_that_moved():
    from dncsim.analysis.report.summary import task_story
    t = {"name": "color", "learned_at": 0, "learned": True,
         "acc_init": {"linear/frozen": 0.5, "linear/refit": 0.5},
         "acc_learned": {"linear/frozen": 1.0, "linear/refit": 1.0},
         "gain_over_init": {"linear/frozen": 0.5, "linear/refit": 0.5},
         "final_acc": {"linear/frozen": 0.23, "linear/refit": 1.0}}
    assert task_story(t, 4).endswith("frozen probe then fell 1.00 \u2192 0.23 while a refit probe still reads "
                                     "1.00: the information stays, the axis moved.")
    t["final_acc"]["linear/refit"] = 0.4
    assert task_story(t, 4).endswith("a refit probe reads only 0.40 (from 1.00) and the frozen one 0.23: "
                                     "the information was lost.")


def test_compare_pools_seeds_of_one_config_with_an_interval(four_task_run, tmp_path):
    """A copy of the run under another seed, with one task's final accuracy moved, is pooled with it:
    per task, the mean and its 95% t interval over the two seeds."""
    import shutil

    import yaml
    from scipy.stats import t as student
    twin = tmp_path / "seed2"
    shutil.copytree(four_task_run, twin, ignore=shutil.ignore_patterns("report", "checkpoint*", "tb"))
    cfg = yaml.safe_load((twin / "config.yaml").read_text())
    cfg["seed"] = 2
    (twin / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = _rows(twin)
    last = max(r["exp"] for r in rows)
    for r in rows:
        if (r["metric"], r["exp"], r["task"], r["probe"], r["protocol"]) == (names.ACC, last, 1, "linear", "frozen"):
            r["value"] = r["value"] - 0.1
    _write_rows(twin, rows)
    out = build_report(four_task_run, tmp_path / "rep", compare=[twin])
    comp = json.loads((out / "summary.json").read_text())["comparison"]
    assert len(comp["groups"]) == 1 and comp["groups"][0]["runs"] == 2 and "2 seeds: 1, 2" in comp["groups"][0]["label"]
    first = json.loads((build_report(four_task_run, tmp_path / "o") / "summary.json").read_text())["tasks"][1]
    a = first["final_acc"]["linear/frozen"]
    cell = comp["groups"][0]["tasks"][first["name"]]["final_acc"]
    vals = np.array([a, a - 0.1])
    half = student.ppf(0.975, 1) * vals.std(ddof=1) / np.sqrt(2)
    assert cell["value"] == pytest.approx(vals.mean()) and cell["n"] == 2
    assert (cell["low"], cell["high"]) == pytest.approx((vals.mean() - half, vals.mean() + half))
    assert f"[{cell['low']:.4g}, {cell['high']:.4g}]" in (out / "index.html").read_text()


def test_the_measurements_table_is_a_csv_and_a_transposed_view(four_task_run, report):
    import csv
    s = json.loads((report / "summary.json").read_text())
    table = list(csv.DictReader((report / "measurements.csv").read_text().splitlines()))
    assert [r["task"] for r in table] == [t["name"] for t in s["tasks"]]
    assert len(table[0]) == 3 + 3 * len(s["task_scalars"])
    assert float(table[1]["dir_cdnv_init"]) == s["tasks"][1]["dir_cdnv_init"]
    html, md = (report / "index.html").read_text(), (report / "report.md").read_text()
    assert 'download="measurements.csv" href="data:text/csv;base64,' in html
    widest = max(line.count("|") for line in md.splitlines() if line.startswith("|"))
    assert widest - 1 <= 9                  # no 40-column table: the widest is the task pairs' (overlap and its null)


@pytest.mark.parametrize("name,section,says", [
    ("collapse_curves", "collapse", "'collapse_curves' is already registered"),
    ("Bad-Name", "collapse", "a name is lower-case letters, digits and '_'"),
    ("new_figure", "appendix", "section 'appendix' is not one of orthogonality, prop42, collapse"),
])
def test_a_figure_registration_with_a_taken_name_a_bad_name_or_an_unknown_section_is_refused(name, section, says):
    from dncsim.analysis.report.figures import registry

    before = dict(registry.FIGURES)
    with pytest.raises(DncsimError, match=re.escape(says)):
        registry.register_figure(registry.FigureSpec(name, lambda ctx: None, "a caption", section))
    assert registry.FIGURES == before
