"""The runs of a study: one validated run config per cell of the grid (and of the design)."""
from __future__ import annotations

from pathlib import Path
from typing import List

from dncsim.common import read_yaml
from dncsim.simulator.design import design_specs
from dncsim.simulator.study_config import StudyConfig

__all__ = ["expand_grid"]


def expand_grid(cfg: StudyConfig) -> List[dict]:
    """One spec per run: ``name``, ``factors`` (key -> value), the validated run ``config`` mapping and,
    under an active ``design``, its record (``simulator.design.design_specs``).

    Every run config is validated here, so a bad grid stops the study before anything runs.
    """
    base = read_yaml(cfg.base) if isinstance(cfg.base, Path) else dict(cfg.base)
    return design_specs(cfg, base)


