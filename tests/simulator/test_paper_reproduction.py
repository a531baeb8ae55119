"""The shipped reproduction of the paper (configs/paper_multitask.yaml), run as shipped, claim by claim.

About 8 minutes on 2 cores, so it is left out of the default run (marker ``reproduction``; run it with
``python -m pytest -m reproduction``): the one test that trains for real. What reproduces at this scale
is asserted at the paper module's fixed levels (S1; the bound above the error where the theorem
holds); the verdicts of S2's tracking check and S3's permutation null are findings the documentation
states over seeds (configs/study_paper_seeds.yaml), asserted here only as far as they hold robustly,
with a margin for other CPUs and BLAS builds (docs: Methods, The paper check).
"""
import json
from pathlib import Path

import pytest

from dncsim.analysis.report.paper import S1_FALL, S3_PAPER_LEVEL
from dncsim.simulator.config import load_run_config
from dncsim.simulator.run import run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.reproduction
def test_the_shipped_paper_config_reproduces_the_papers_claims(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_run_config(ROOT / "configs" / "paper_multitask.yaml")
    assert cfg.scenario.stream.type == "joint" and cfg.objective.name == "simclr"
    out = run(cfg, tmp_path / "paper", quiet=True)
    summary = json.loads((out / "report" / "summary.json").read_text())
    paper = summary["paper"]
    s1, s2, s3 = paper["S1"], paper["S2"], paper["S3"]
    final = json.loads((out / "accuracy.json").read_text())["matrices"]["linear/refit"][-1]
    assert min(final) >= 0.95, final                           # every attribute is learned by the end
    # S1: directional collapse -- reproduced (the anisotropy index falls at least S1_FALL-fold by the end)
    assert s1["reproduced"] is True, paper["findings"][0]
    assert s1["fall"] >= S1_FALL and not s1["left_out"] and s1["fall_ci"][0] is not None
    # S2: the bound is never below the error where the theorem holds (m >= 10), and across shot counts at
    # each point the paper's statistic is high; whether the bound ranks the attributes' errors within a
    # point (the check) is the finding the documentation states, not asserted here
    assert s2["points"] >= 4 * 11 * 3 and not s2["violations"], paper["findings"][1]
    assert s2["paper_statistic"]["min"] >= 0.75 and s2["tracking"]["points"] >= 1
    # S3: every pair has its permutation null; the typical pair is near-orthogonal (below 2^-3) at the end;
    # the verdict against the null is the documentation's finding, not asserted here
    assert len(s3["pairs"]) == 6 and all(p["null_q05"] is not None for p in s3["pairs"]), paper["findings"][2]
    cos = sorted(p["median_abs_cos"] for p in s3["pairs"])
    assert (cos[2] + cos[3]) / 2 <= S3_PAPER_LEVEL, cos
