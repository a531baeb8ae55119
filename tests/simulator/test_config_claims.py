"""What the shipped configs' headers state about their runs cannot go stale: the numbers are in
``# expect:`` lines (benchmarks/config_claims.py reads them), and the quickstart's are checked against a
run of it here."""
import importlib.util
import re
from pathlib import Path

import pytest

from dncsim.simulator.config import load_run_config

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("config_claims", ROOT / "benchmarks" / "config_claims.py")
claims = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(claims)

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_claim_line_parses_and_names_what_the_config_measures(path):
    found = claims.parse_claims(path)
    if path.name.startswith("study_"):
        assert found == []
        return
    cfg = load_run_config(path)
    attributes = list(cfg.scenario.stream.attributes or []) if cfg.scenario.stream.type == "factor" else None
    for c in found:
        names = c["learned"] + c["not_learned"] if c["kind"] == "learned" else [c["task"]]
        assert attributes is not None and set(names) <= set(attributes), c
        if c["kind"] == "accuracy":
            assert c["probe"] in cfg.evaluation.probes and c["protocol"] in cfg.evaluation.protocols, c
            assert c["after"] in attributes + ["the last experience", "before training"] and 0 < c["tol"] <= 0.1, c


def test_the_quickstart_header_states_its_results_as_claims():
    found = claims.parse_claims(QUICKSTART)
    assert [c["kind"] for c in found].count("learned") == 1 and len(found) >= 6
    header = [line for line in QUICKSTART.read_text().splitlines() if line.startswith("#")]
    prose = [line for line in header if not line.startswith(claims.PREFIX)]
    assert not [line for line in prose if re.search(r"\d\.\d", line)], "a measured number outside '# expect:'"


def test_every_result_the_quickstart_page_states_is_a_checked_claim():
    """The documentation's walk-through of the quickstart states only results that the config's header
    claims (and the slow test below checks against a run); chance (0.25), the learned threshold (0.40)
    and the random-direction constant (0.674) are not results."""
    page = (ROOT / "docs" / "getting-started" / "quickstart.md").read_text(encoding="utf-8")
    stated = {float(x) for x in re.findall(r"(?<![\d.])[01]\.\d{2,3}(?!\d|\.\d)", page)}
    claimed = {c["value"] for c in claims.parse_claims(QUICKSTART) if c["kind"] == "accuracy"}
    assert stated - claimed - {0.25, 0.40, 0.674} == set()
    assert {0.61, 0.29, 0.23} <= stated          # the story the page tells: color's frozen probe falling


def test_a_claim_is_checked_against_the_run_and_fails_when_off(tmp_path):
    measured = {"tasks": ["color", "shape"], "experiences": ["color", "shape"], "learned": [True, False],
                "matrices": {"linear/frozen": [[0.5, 0.3], [1.0, 0.3], [0.25, 0.4]]}}
    parsed = [{"kind": "accuracy", "probe": "linear", "protocol": "frozen", "task": "color", "after": after,
               "value": value, "tol": 0.05} for after, value in [("color", 0.98), ("the last experience", 0.32)]]
    parsed.append({"kind": "learned", "learned": ["color"], "not_learned": ["shape"]})
    parsed.append({"kind": "learned", "learned": ["color", "shape"], "not_learned": []})
    result = claims.check(parsed, measured)
    assert [(r["measured"], r["ok"]) for r in result] == [(1.0, True), (0.25, False), ((["color"], ["shape"]), True),
                                                         ((["color"], ["shape"]), False)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("# expect: color falls to about 0.4\nseed: 0\n")
    with pytest.raises(ValueError, match=r"bad.yaml:1: not a claim this checker reads: 'color falls to about 0.4'"):
        claims.parse_claims(bad)


@pytest.mark.slow
def test_the_quickstart_gives_what_its_header_says(tmp_path):
    """The one full run of a shipped config in the suite: a few minutes on 2 CPU cores."""
    from dncsim.simulator.run import run
    out = run(load_run_config(QUICKSTART, ["output.report=false"]), tmp_path / "run", quiet=True)
    result = claims.check(claims.parse_claims(QUICKSTART), claims.measurements(out))
    assert [(r["line"], r["text"], r["measured"]) for r in result if not r["ok"]] == []
