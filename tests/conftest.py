"""Shared fixtures: the golden values computed with the authors' reference code (tests/data/), and the
hypothesis profiles: ``deterministic`` (the default: the same examples on every run, so that a green
suite stays green on another clone) and ``explore`` (``HYPOTHESIS_PROFILE=explore``: fresh random
examples on every run, for looking for new failures); ``tiny_run_config``, the
shared tiny run config (``tests.support.tiny``); ``study_dir``, a synthetic study's tables."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def golden():
    with open(DATA / "golden.json") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def load_npz():
    def load(name):
        with np.load(DATA / f"{name}.npz") as z:
            return {k: z[k] for k in z.files}
    return load



@pytest.fixture
def tiny_run_config():
    """``tests.support.tiny.tiny_config``: the shared tiny run config, changed by dotted keys."""
    from tests.support.tiny import tiny_config
    return tiny_config


@pytest.fixture
def study_dir(tmp_path):
    """A study directory of synthetic tables (``tests.support.study_tables``, effect 1, 2 unlearned tasks
    per run) with resampling settings small enough for a test."""
    from dncsim.analysis.aggregate import rows_to_csv
    from tests.support.study_tables import tables

    t, p = tables(effect=1.0, unlearned=2)
    d = tmp_path / "study"
    d.mkdir()
    (d / "tasks.csv").write_text(rows_to_csv(t))
    (d / "pairs.csv").write_text(rows_to_csv(p))
    (d / "study.yaml").write_text("statistics: {bootstrap: 200, permutations: 200}\n")
    return d


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Every test leaves torch's CPU thread count as it found it: a shipped run's numbers (the quickstart's
    claims) depend on the order of floating-point sums, and so on the thread count a later test inherits."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
