"""The two config sections that say what the evaluation measures (``evaluation:`` and ``analysis:``).

They are defined here, next to the metrics that read them, and composed into the run config by
``simulator.config``: one definition, no copies. Validation only: nothing here imports torch.
"""
from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field, field_validator

from dncsim.analysis.names import LINEAR_STEPS
from dncsim.common import StrictModel

__all__ = ["EvaluationConfig", "AnalysisConfig"]


class EvaluationConfig(StrictModel):
    """Probes on frozen backbone features after every experience, for every task."""

    probes: List[Literal["ncc", "linear"]] = Field(default_factory=lambda: ["ncc", "linear"], min_length=1,
                                                   description="ncc: nearest class mean; linear: multinomial "
                                                               "logistic regression solved to its optimum")
    protocols: List[Literal["refit", "frozen"]] = Field(default_factory=lambda: ["refit", "frozen"], min_length=1,
                                                        description="refit: a probe fit on the current features; "
                                                                    "frozen: the probe fit right after the task was "
                                                                    "learned, kept")
    linear_steps: int = Field(LINEAR_STEPS, ge=1, description="most L-BFGS iterations of the linear probe")
    linear_weight_decay: float = Field(1e-4, ge=0, description="L2 penalty of the linear probe")
    batch_size: int = Field(1024, ge=1, description="batch size of feature extraction")
    max_train_samples: Optional[int] = Field(None, ge=2, description="probe training subset per task (seeded)")
    learned_margin: float = Field(0.2, ge=0, lt=1, description="a task is learned when, right after its "
                                  "experience, probe accuracy > chance + learned_margin x (1 - chance)")
    watch: List[str] = Field(default_factory=list, description="labelings watched along the stream as extra "
                             "evaluation tasks that are never learned (geometry, orthogonality, refit probes)")


class AnalysisConfig(StrictModel):
    """Geometry measured after every experience (see docs, Methods, Conventions)."""

    shots: List[int] = Field(default_factory=lambda: [1, 5, 10, 20], min_length=1,
                             description="support samples per class of the few-shot episodes and the Theorem 4.1 "
                                         "bound")
    ways: int = Field(2, ge=2, description="classes per few-shot episode")
    episodes: int = Field(100, ge=1, description="few-shot episodes per shot count")
    ddof: Literal[0, 1] = Field(0,
        description="delta degrees of freedom of the within-class variances: 0 population, 1 unbiased")
    split: Literal["train", "test"] = Field("test", description="split the geometry and few-shot episodes use")
    normalize: Literal["none", "l2"] = Field("none", description="features every probe and measurement sees: as "
                                                                 "the backbone gives them, or scaled to unit L2 "
                                                                 "norm (the paper's from-scratch figures)")
    estimator: Literal["debiased", "plugin", "crossfit"] = Field("debiased", description="estimator of the "
                                                                 "per-task dir-CDNV, CDNV, ratio and mean gap: "
                                                                 "'debiased' (default), 'plugin' (the authors'), "
                                                                 "'crossfit' (docs, Methods, Estimators)")
    design: Literal["auto", "iid", "strata"] = Field("auto", description="debiased estimator: how a task's "
                                                     "samples were drawn; 'strata' takes the joint cells of the "
                                                     "other tasks labelling the same samples as fixed strata, "
                                                     "'iid' an iid draw per class, 'auto' strata where they form "
                                                     "an exactly balanced design with >= 2 samples per cell")
    interval_groups: int = Field(20, ge=0, le=1000, description="debiased estimator: groups of the delete-a-group "
                                                                "jackknife for the 95% intervals of the per-task "
                                                                "summaries (fewer when a class has fewer samples; "
                                                                "0: no intervals; 1 is not allowed)")
    crossfit_splits: int = Field(2, ge=1, le=64, description="random half-splits per class of the crossfit estimator")
    bootstrap: int = Field(100, ge=0, le=10000, description="bootstrap resamples for the 95% intervals of the "
                                                            "median |cos| between two tasks' axes and, under the "
                                                            "plugin and crossfit estimators, of the per-task "
                                                            "summaries (0: none)")
    pair_bootstrap: Literal["auto", "joint", "wild", "iid"] = Field("auto", description="resampling of the "
                                                                    "interval of the median |cos| between two "
                                                                    "tasks' axes: 'joint' resamples within the "
                                                                    "pair's joint classes, pair by pair (cost "
                                                                    "grows with T^2); 'wild' one wild bootstrap "
                                                                    "for all pairs (linear in T); both hold the "
                                                                    "joint cells fixed; 'iid' resamples the "
                                                                    "samples, for all pairs (linear in T), "
                                                                    "letting the cells vary; 'auto' per pair: "
                                                                    "iid unless the pair is an exactly balanced "
                                                                    "design, then joint below 190 pairs on the "
                                                                    "same samples (20 tasks), wild from there on "
                                                                    "(docs, Methods, Estimators)")

    @field_validator("ddof", mode="before")
    @classmethod
    def _not_a_boolean(cls, v):
        if isinstance(v, bool):             # True == 1 would pass the literal
            raise ValueError(f"expected 0 or 1, not a boolean; got {v}")
        return v

    @field_validator("interval_groups")
    @classmethod
    def _groups(cls, v):
        if v == 1:
            raise ValueError("a jackknife needs at least 2 groups (0: no intervals)")
        return v

    @field_validator("shots")
    @classmethod
    def _positive(cls, v):
        if min(v) < 1:
            raise ValueError(f"shot counts must be >= 1; got {v}")
        return sorted(set(v))
