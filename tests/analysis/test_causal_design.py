"""The dose-design analysis on tables from a structural model with known effects: coverage of the mediated
effects, the rate of false findings, the direct-effect flag (placebo arm or Hansen J), the conditional F, the
wiring into study_statistics and the errors for designs that identify nothing."""
import json

import numpy as np
import pytest

from dncsim.analysis.causal_design import design_analysis, has_dose_design, simulate_design_table
from dncsim.analysis.stats import study_statistics
from dncsim.common import DncsimError
from dncsim.analysis.study import StatisticsConfig

STUDIES = 200
B = 0.05                              # effect per doubling of the mediator that carries it
SCENARIOS = {                         # name: (simulator keywords, true b_dir, true b_cdnv, direct effect present)
    "dir only": (dict(b_dir=B, confound=0.03), B, 0.0, False),
    "cdnv only": (dict(b_cdnv=B, confound=0.03), 0.0, B, False),
    # a direct effect of applying a penalty as large as the reduced form of "dir only" (b * a1 = 0.05 * 1.5)
    "direct": (dict(direct=0.075, confound=0.03), 0.0, 0.0, True),
    "none": (dict(), 0.0, 0.0, False),
    "confounded": (dict(confound=0.1), 0.0, 0.0, False),
}


def rates(name):
    kw, b_dir, b_cdnv, _ = SCENARIOS[name]
    cover = np.zeros(2)
    reject = np.zeros(2)
    flags = 0
    for s in range(STUDIES):
        res = design_analysis(simulate_design_table(10_000 * list(SCENARIOS).index(name) + s, **kw),
                              ["forgetting"], brief=True)
        for i, (label, true) in enumerate((("dir_cdnv", b_dir), ("cdnv", b_cdnv))):
            c = res["mediators"][label]["forgetting"]
            cover[i] += c["ci_low"] <= true <= c["ci_high"]
            reject[i] += c["p"] < 0.05
        flags += res["direct_effect"]["forgetting"]["flagged"]
    return cover / STUDIES, reject / STUDIES, flags / STUDIES


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_simulated_studies_hold_coverage_size_and_the_direct_effect_flag(name):
    _, b_dir, b_cdnv, direct = SCENARIOS[name]
    cover, reject, flag = rates(name)
    if direct:
        assert flag >= 0.80, flag                    # the direct effect is flagged
        return
    assert flag <= 0.10, flag                        # false flags
    assert cover.min() >= 0.90, cover                # coverage of the true b_dir and b_cdnv
    for i, true in enumerate((b_dir, b_cdnv)):
        if true == 0:
            assert reject[i] <= 0.07, reject         # no effect found where there is none
        else:
            assert reject[i] >= 0.80, reject         # and the real one is found


def test_first_stages_are_strong_and_the_conditional_f_sees_mediators_the_doses_cannot_separate():
    res = design_analysis(simulate_design_table(1, b_dir=B), ["forgetting"])
    fs = res["first_stages"]
    assert fs["dir_cdnv_learned"]["dose_dir"]["ci_high"] < 0 and fs["cdnv_learned"]["dose_orth"]["ci_high"] < 0
    assert all(f["conditional_F"] > 10 and not f["weak"] and f["instruments"] == 3 for f in fs.values())
    # both doses move both mediators alike: each is strong alone (F) but not given the other (conditional F)
    same = design_analysis(simulate_design_table(1, b_dir=B, first=(-1.5, -1.5, -1.5, -1.5)), ["forgetting"])
    for f in same["first_stages"].values():
        assert f["F"] > 10 and f["conditional_F"] < 10 and f["weak"]
    assert any("WEAK instrument" in s for s in same["sentences"])


def test_a_table_of_strings_gives_the_numbers_of_the_table_of_numbers_and_the_counts_of_the_design():
    a = design_analysis(simulate_design_table(5, b_cdnv=B), ["forgetting", "acc_learned"])
    b = design_analysis(simulate_design_table(5, b_cdnv=B, as_strings=True), ["forgetting", "acc_learned"])
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (a["n_rows"], a["n_runs"], a["n_placebo_runs"]) == (48, 12, 12)
    assert a["cells"]["real"] == {"dose_dir=0, dose_orth=0": 12, "dose_dir=0, dose_orth=5": 12,
                                  "dose_dir=5, dose_orth=0": 12, "dose_dir=5, dose_orth=5": 12}
    assert a["coding"]["dose_dir"] == "indicator of dose_dir = 5 (vs 0)"
    assert a["overidentification"]["forgetting"]["df"] == 1
    assert a["mediators"]["cdnv"]["forgetting"]["n_rows"] == 36          # forgetting: none at the last position
    assert a["reduced_forms"]["acc_learned"]["n_rows"] == 48
    pl = a["placebo"]
    assert pl["available"] and set(pl["mediators"]) == {"dir_cdnv_learned", "cdnv_learned"}
    # the placebo's labels carry no class structure: its doses do not move the mediators; the real arm's do
    assert abs(pl["mediators"]["cdnv_learned"]["dose_orth"]["estimate"]) < 0.3
    assert pl["difference"]["cdnv_learned"]["dose_orth"]["ci_high"] < 0


def test_designs_that_identify_nothing_are_one_clear_error():
    rows = simulate_design_table(2)
    with pytest.raises(DncsimError, match="dose_orth: one level"):
        design_analysis([dict(r, dose_orth=0) for r in rows], ["forgetting"])
    with pytest.raises(DncsimError, match=r"2 run\(s\) in the real arm"):
        design_analysis([r for r in rows if r["placebo"] or r["run"] in ("run00", "run01")], ["forgetting"])
    with pytest.raises(DncsimError, match="no column position"):
        design_analysis([{k: v for k, v in r.items() if k != "position"} for r in rows], ["forgetting"])
    assert not has_dose_design([dict(r, dose_dir=0, dose_orth=0) for r in rows]) and has_dose_design(rows)


SETTINGS = StatisticsConfig(bootstrap=100, permutations=100)
Y, NORM, ACC = "forgetting_max/linear/frozen", "forgetting_norm/ncc/frozen", "acc_learned/linear/frozen"


def study_rows(seed=3, doses=True):
    rows = []
    for r in simulate_design_table(seed, b_dir=B):
        f = r.pop("forgetting")
        row = dict(r, objective="supervised", strategy="naive", learned=True, **{
            Y: f, NORM: None if f is None else 2 * f, ACC: r.pop("acc_learned")})
        if not doses:
            for k in ("dose_dir", "dose_orth", "placebo"):
                row.pop(k)
        rows.append(row)
    return rows


def test_study_statistics_reports_the_dose_design_under_causal_for_both_co_primary_outcomes():
    s = study_statistics(study_rows(), [], SETTINGS)
    c = s["causal"]
    assert {"reduced_forms", "first_stages", "mediators", "overidentification", "placebo"} <= set(c)
    assert set(c["reduced_forms"]) == {Y, NORM, ACC} and set(c["first_stages"]) == {"dir_cdnv_learned",
                                                                                    "cdnv_learned"}
    for label in ("dir_cdnv", "cdnv"):
        m = c["mediators"][label]
        assert {"estimate", "se", "df", "ci_low", "ci_high", "p"} <= set(m) and m["outcome"] == Y
        assert m["by_outcome"][NORM]["estimate"] == pytest.approx(2 * m["estimate"])
    assert c["mediators"]["dir_cdnv"]["ci_low"] < B < c["mediators"]["dir_cdnv"]["ci_high"]
    assert "directional" not in c and c["strategies"][0]["strategy"] == "naive"
    assert any(v.startswith("Mediators of forgetting_max/linear/frozen (2SLS") for v in s["verdict"])
    json.dumps(s)


def test_study_statistics_without_treatment_columns_runs_the_correlational_analysis_only():
    plain = study_statistics(study_rows(doses=False), [], SETTINGS)
    assert "causal" not in plain
    with_doses = study_statistics(study_rows(), [], SETTINGS)
    assert plain["primary"] is not None and plain["primary"]["n_rows"] == with_doses["primary"]["n_rows"] == 72
    assert plain["primary"]["estimate"] == with_doses["primary"]["estimate"]
    assert plain["verdict"] == with_doses["verdict"][:len(plain["verdict"])]


def test_three_dose_levels_enter_as_steps_with_one_dummy_per_cell():
    rows = [dict(r, dose_dir=10.0) if r["dose_dir"] and int(r["run"][3:]) % 2 else r
            for r in simulate_design_table(4, b_dir=B)]
    res = design_analysis(rows, ["forgetting"])
    assert res["coding"]["dose_dir"] == "dose step (index among the levels 0, 5, 10)"
    assert len(res["instruments"]) == 5 and res["overidentification"]["forgetting"]["df"] == 3
    assert res["first_stages"]["dir_cdnv_learned"]["instruments"] == 5
    c = res["mediators"]["dir_cdnv"]["forgetting"]
    assert c["ci_low"] < B < c["ci_high"]


def test_the_study_report_shows_the_dose_design_in_both_formats():
    """Both study templates render the per-task dose analysis: first stages with the conditional F, and per
    outcome the reduced forms, both mediators, Hansen's J and the placebo contrast (values as in the JSON)."""
    from dncsim.analysis.report.render import environment, fmt
    s = json.loads(json.dumps(study_statistics(study_rows(), [], SETTINGS)))
    c = s["causal"]
    summary = {"study": "s", "engine": "local", "factors": {}, "runs": [], "rows": {"tasks": 1, "pairs": 0},
               "statistics": s, "paper": None, "design": None, "figures": []}
    env = environment()
    html = env.get_template("study.html.j2").render(summary=summary, fmt=fmt, statistics=SETTINGS,
                                                    figure=lambda *a, **k: "")
    md = env.get_template("study.md.j2").render(summary=summary, fmt=fmt, statistics=SETTINGS)
    fs = c["first_stages"]["dir_cdnv_learned"]
    md_row = c["mediators"]["dir_cdnv"]["by_outcome"][NORM]
    for text in (html, md):
        assert "Per-task doses as randomised instruments" in text and "Dose response" not in text
        assert fmt(fs["conditional_F"]) in text and fmt(fs["dose_dir"]["estimate"]) in text
        assert fmt(md_row["estimate"]) in text and fmt(c["overidentification"][Y]["p"]) in text
        assert fmt(c["placebo"]["outcomes"][Y]["applied"]["estimate"]) in text
        assert text.count("not flagged") + text.count(">flagged<") + text.count("| flagged |") >= 3
