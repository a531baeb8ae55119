"""Shared fixtures: the golden values computed with the authors' reference code (tests/data/)."""
import json
from pathlib import Path

import numpy as np
import pytest

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

