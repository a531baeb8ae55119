"""Names used in the metrics table, defined once (metrics write them; reports and studies read them).

The table is long-format, columns ``TABLE_COLUMNS``: ``exp`` (-1 before training), ``task``,
``task_name``, ``task_b`` (pairwise rows), ``metric``, ``probe``, ``protocol``, ``shots``, ``value``;
every row is built by :func:`table_row`. A :class:`ProbeKey`'s text form is ``"<probe>/<protocol>"``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from dncsim.common import DncsimError

__all__ = ["TABLE_COLUMNS", "METHODS_REVISION", "LINEAR_STEPS", "table_row", "ProbeKey", "probe_keys"]

TABLE_COLUMNS = ("exp", "task", "task_name", "task_b", "metric", "probe", "protocol", "shots", "value")

#: The revision of how a run's numbers are computed, raised whenever a change alters what a run writes
#: for the same configuration and seed (an estimator or its default, a probe's solver, an interval scheme).
#: Every run records it in its manifest (``methods_revision``) and a resume refuses a run begun under
#: another revision: its rows before and after the resume would be computed in two ways in one table.
#: What each revision changed: documentation, Methods, Methods revisions.
METHODS_REVISION = 5

#: The default iteration budget of the linear probe, above what the preconditioned solve needs to
#: converge (measured iterations: docs, Benchmarks).
LINEAR_STEPS = 2000

# probes and protocols
NCC = "ncc"
LINEAR = "linear"
PROBES = (NCC, LINEAR)
REFIT = "refit"        # probe refit on the current features: is the information still there?
FROZEN = "frozen"      # probe fit right after the task was learned, then kept: does drift break it?
PROTOCOLS = (REFIT, FROZEN)

# per task, per experience
ACC = "acc"                      # probe accuracy on the task's test split
PROBE_CONVERGED = "probe_converged"  # linear/refit: 1 when the L-BFGS solve converged, 0 when it hit linear_steps
DIR_CDNV = "dir_cdnv"            # mean directional CDNV over ordered class pairs
CDNV = "cdnv"                    # mean CDNV over unordered class pairs
CDNV_RATIO = "cdnv_ratio"        # dir_cdnv / cdnv
MEAN_GAP = "mean_gap"            # mean distance between class means
RESOLVED_PAIRS = "resolved_pairs"  # debiased, crossfit: class pairs whose bias-corrected squared gap is positive
NEGATIVE_NUMERATOR_PAIRS = "negative_numerator_pairs"  # debiased: ordered pairs whose axis variance is below the noise
BARELY_RESOLVED_PAIRS = "barely_resolved_pairs"  # debiased: ordered pairs moved > 25% by the second-order terms
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"   # suffixes: the 95% interval of a summary (dir_cdnv_ci_low)
AXIS_DRIFT = "axis_drift"        # mean signed cos(u_ij(now), u_ij(when learned)) over class pairs
LEARNED = "learned"              # 1 when the task's accuracy right after its experience cleared chance + margin
ACC_SEEN = "acc_seen"            # accuracy over all classes seen so far (class- and task-incremental streams)
FEWSHOT_ERR = "fewshot_err"      # few-shot NCC error at `shots`
BOUND = "bound"                  # Theorem 4.1 bound at `shots` on the same class subsets
BOUND_LIMIT = "bound_limit"      # its m -> infinity limit, (1/C') sum 4 dir-CDNV

# per task pair (task, task_b), per experience
AXIS_COS_MEDIAN = "axis_cos_median"   # median |cos| between the two tasks' decision axes
AXIS_COS_MAX = "axis_cos_max"
AXIS_COS2_VS_RANDOM = "axis_cos2_vs_random"   # mean cos^2 * d (1 = random directions)
PROP42_FRAC = "prop42_frac"           # share of axis pairs under Prop 4.2's bound (independent labelings only)
PROP42_TIGHTNESS = "prop42_tightness"  # median Prop 4.2 bound / median observed |cos| (1 = tight; large = slack)
PROP42_VS_RANDOM = "prop42_bound_vs_random"   # median Prop 4.2 bound / random directions' median |cos|
LABELS_CRAMERS_V = "labels_cramers_v"  # Cramer's V of two labelings of the same samples (0 = independent)
AXIS_COS_NULL_MEDIAN = "axis_cos_null_median"   # median of the permutation null's median |cos| (same samples)
AXIS_COS_NULL_Q05 = "axis_cos_null_q05"         # the null's 5% quantile
AXIS_COS_NULL_P = "axis_cos_null_p"             # (1 + #null draws <= observed) / (1 + draws)
AXIS_BEYOND_NULL = "axis_beyond_null"           # 1 when axis_cos_null_p <= 0.05: more orthogonal than the null
AXIS_COS_PRE = "axis_cos_pre"         # median |cos|: a's axes when learned vs b's just before b trains
INTERFERENCE = "interference"         # drop of task's frozen-probe accuracy while task_b was learned

# from the accuracy matrix
FORGETTING_MAX = "forgetting_max"     # max over earlier rows since learned, minus now
FORGETTING_LAST = "forgetting_last"   # just after learning, minus now
FORGETTING_NORM = "forgetting_norm"   # forgetting_last over (just after learning minus chance)
BWT = "bwt"                           # mean over learned tasks of (now - just after learning)
FWT = "fwt"                           # just before learning minus the untrained backbone


class ProbeKey(NamedTuple):
    """A probe (``ncc`` | ``linear``) under a protocol (``refit`` | ``frozen``); ``str()`` is
    ``"<probe>/<protocol>"`` and :meth:`parse` reads it back."""

    probe: str
    protocol: str

    def __str__(self) -> str:
        return f"{self.probe}/{self.protocol}"

    @classmethod
    def parse(cls, text: str) -> "ProbeKey":
        """``"linear/frozen"`` -> ProbeKey("linear", "frozen"); DncsimError for anything else."""
        probe, sep, protocol = str(text).partition("/")
        if not sep or probe not in PROBES or protocol not in PROTOCOLS:
            raise DncsimError(f"'{text}' is not a probe/protocol key (probes {', '.join(PROBES)}; "
                              f"protocols {', '.join(PROTOCOLS)}; e.g. 'linear/frozen')")
        return cls(probe, protocol)


def probe_keys(probes=PROBES, protocols=PROTOCOLS) -> tuple:
    """Every ProbeKey of ``probes`` x ``protocols``, in the canonical order (protocol-major, as configured)."""
    return tuple(ProbeKey(p, q) for q in protocols for p in probes)


def table_row(exp: int, metric: str, value: float, *, task: Optional[int] = None, task_name: Optional[str] = None,
              task_b: Optional[int] = None, key: Optional[ProbeKey] = None, shots: Optional[int] = None) -> dict:
    """One row of the metrics table (a dict with exactly ``TABLE_COLUMNS``; None where not applicable)."""
    return {"exp": int(exp), "task": task, "task_name": task_name, "task_b": task_b, "metric": metric,
            "probe": None if key is None else key.probe, "protocol": None if key is None else key.protocol,
            "shots": shots, "value": float(value)}
