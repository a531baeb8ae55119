"""A study's products from its finished runs: the tidy tables ``tasks.csv`` (one row per task of every run)
and ``pairs.csv`` (one row per task pair), and ``statistics.json`` (every test, ``analysis.stats``), with
the settings of the tests (:class:`StatisticsConfig`, the study file's ``statistics:``).

Runs come in loaded (``RunData``-like: what ``analysis.aggregate.task_rows`` reads) with their factors;
the report (``analysis.report.study``) renders these products and writes none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Sequence, Tuple

from pydantic import Field

from dncsim.common import StrictModel, atomic_write_bytes, json_text

__all__ = ["StatisticsConfig", "StudyProducts", "study_products", "write_study_products", "NO_RUNS_STATISTICS"]


class StatisticsConfig(StrictModel):
    """Which forgetting the hypothesis is tested on, and the resampling settings."""

    probe: Literal["ncc", "linear"] = Field("linear", description="the probe whose forgetting is the outcome")
    protocol: Literal["refit", "frozen"] = Field("frozen", description="the protocol whose forgetting is the outcome")
    forgetting: Literal["forgetting_max", "forgetting_last"] = Field("forgetting_max",
        description="forgetting_max: the largest drop after learning; forgetting_last: the drop at the end")
    bootstrap: int = Field(2000, ge=100, description="cluster-bootstrap resamples (of runs)")
    permutations: int = Field(2000, ge=100, description="permutations for the p-value")
    alpha: float = Field(0.05, gt=0, lt=1, description="level of the tests (1 - alpha intervals)")
    seed: int = Field(0, ge=0, lt=2 ** 32, description="seed of the permutations and bootstraps")
    include_unlearned: bool = Field(False, description="keep tasks that were never learned (accuracy within the "
                                                       "margin of chance right after their experience) in the tests")
    paper: Literal["auto", "always", "never"] = Field("auto", description="the paper's three claims over the "
                                                      "study's runs, per setting of the other factors (auto: when "
                                                      "every run is a joint stream)")


#: ``statistics.json`` of a study without a finished run
NO_RUNS_STATISTICS = {"tests": [], "notes": ["no finished runs"], "primary": None, "co_primary": {},
                      "classical": None, "joint": None, "pairs_primary": None,
                      "verdict": ["No finished runs: nothing to test."], "outcome": None, "interference": None}


@dataclass(frozen=True)
class StudyProducts:
    """The rows of ``tasks.csv`` and ``pairs.csv`` and the content of ``statistics.json``."""

    tasks: List[dict]
    pairs: List[dict]
    statistics: dict


def study_products(runs: Sequence[Tuple[object, Dict]], settings: StatisticsConfig) -> StudyProducts:
    """The tables of the loaded ``runs`` ((run, factors) pairs, in the study's order) and their statistics."""
    from dncsim.analysis.aggregate import pair_rows, task_rows          # numpy, scipy: only when computing
    from dncsim.analysis.stats import study_statistics
    if not isinstance(settings, StatisticsConfig):
        raise TypeError(f"settings: expected a StatisticsConfig, got {type(settings).__name__}")
    tasks, pairs = [], []
    for run, factors in runs:
        tasks += task_rows(run, factors)
        pairs += pair_rows(run, factors)
    stats = study_statistics(tasks, pairs, settings) if tasks else dict(NO_RUNS_STATISTICS)
    return StudyProducts(tasks, pairs, stats)


def write_study_products(study_dir: Path, runs: Sequence[Tuple[object, Dict]],
                         settings: StatisticsConfig) -> StudyProducts:
    """:func:`study_products`, written (atomically) to ``study_dir``/tasks.csv, pairs.csv and statistics.json."""
    from dncsim.analysis.aggregate import rows_to_csv
    products = study_products(runs, settings)
    atomic_write_bytes(Path(study_dir) / "tasks.csv", rows_to_csv(products.tasks).encode())
    atomic_write_bytes(Path(study_dir) / "pairs.csv", rows_to_csv(products.pairs).encode())
    atomic_write_bytes(Path(study_dir) / "statistics.json", json_text(products.statistics).encode())
    return products
