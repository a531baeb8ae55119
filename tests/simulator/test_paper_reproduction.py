"""The shipped reproduction of the paper (configs/paper_multitask.yaml), run as shipped, claim by claim.

About 8 minutes on 2 cores, so it is left out of the default run (marker ``reproduction``; run it with
``python -m pytest -m reproduction``): the one test that trains for real. What reproduces at this scale
is asserted at the paper module's fixed levels (S1; the bound above the error everywhere); what does
not (S2's correlation pooled over points of training) or only by less than its block-to-block noise
(S3, whose shape pairs sit at the limit and cross it from block to block) is asserted as far as it
holds robustly, with a margin for other CPUs and BLAS builds (docs: Methods, The paper check).
"""
import json
from pathlib import Path

import pytest

from dncsim.analysis.report.paper import S1_FALL, S1_GAP, S3_MAX
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
    # S1: directional collapse -- reproduced
    assert s1["reproduced"] is True, paper["findings"][0]
    assert s1["fall"] >= S1_FALL and s1["gap_final"] >= S1_GAP and not s1["left_out"]
    # S2: the bound is above the error at every measured point and shot count where it is defined, and
    # across shot counts at each point it tracks the error; pooled over points the raw correlation is
    # dominated by the bound at initialisation (docs: Methods, The paper check), so the verdict is not asserted
    assert s2["points"] >= 4 * 11 * 3 and not s2["violations"], paper["findings"][1]
    assert min(p["rho_per_point_min"] for p in s2["per_attribute"]) >= 0.75
    # S3: the typical pair of attributes is near-orthogonal at the end; shape / size and shape / style
    # (2^-3 in the paper itself) sit at the limit here and move across it from block to block, so the
    # verdict (reproduced here, seed 0) is not asserted; no pair is far above the limit
    assert len(s3["pairs"]) == 6
    cos = sorted(p["median_abs_cos"] for p in s3["pairs"])
    assert (cos[2] + cos[3]) / 2 <= S3_MAX and cos[0] < s3["thresholds"]["limit"], cos
    assert cos[-1] <= 1.5 * s3["thresholds"]["limit"], cos
