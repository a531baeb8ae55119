"""Names used in the metrics table, defined once (runs write them; reports and studies read them).

The metrics table is long-format, one row per measurement, with columns ``TABLE_COLUMNS``:
``exp`` (index of the experience just trained; -1 before training), ``task`` (index; empty for
stream-level rows), ``task_name``, ``task_b`` (second task of pairwise rows), ``metric``, ``probe``,
``protocol``, ``shots`` and ``value``.
"""

TABLE_COLUMNS = ("exp", "task", "task_name", "task_b", "metric", "probe", "protocol", "shots", "value")

# probes and protocols
NCC = "ncc"
LINEAR = "linear"
PROBES = (NCC, LINEAR)
REFIT = "refit"        # probe refit on the current features: is the information still there?
FROZEN = "frozen"      # probe fit right after the task was learned, then kept: does drift break it?
PROTOCOLS = (REFIT, FROZEN)

# per task, per experience
ACC = "acc"                      # probe accuracy on the task's test split
DIR_CDNV = "dir_cdnv"            # mean directional CDNV over ordered class pairs
CDNV = "cdnv"                    # mean CDNV over unordered class pairs
CDNV_RATIO = "cdnv_ratio"        # dir_cdnv / cdnv
MEAN_GAP = "mean_gap"            # mean distance between class means
AXIS_DRIFT = "axis_drift"        # mean signed cos(u_ij(now), u_ij(when learned)) over class pairs
FEWSHOT_ERR = "fewshot_err"      # few-shot NCC error at `shots`
BOUND = "bound"                  # Theorem 4.1 bound at `shots` on the same class subsets
BOUND_LIMIT = "bound_limit"      # its m -> infinity limit, (1/C') sum 4 dir-CDNV

# per task pair (task, task_b), per experience
AXIS_COS_MEDIAN = "axis_cos_median"   # median |cos| between the two tasks' decision axes
AXIS_COS_MAX = "axis_cos_max"
AXIS_COS2_VS_RANDOM = "axis_cos2_vs_random"   # mean cos^2 * d (1 = random directions)
PROP42_FRAC = "prop42_frac"           # share of axis pairs under Prop 4.2's bound (same samples only)
INTERFERENCE = "interference"         # drop of task's frozen-probe accuracy while task_b was learned

# from the accuracy matrix
FORGETTING_MAX = "forgetting_max"     # max over earlier rows since learned, minus now
FORGETTING_LAST = "forgetting_last"   # just after learning, minus now
BWT = "bwt"                           # mean over learned tasks of (now - just after learning)
FWT = "fwt"                           # just before learning minus the untrained backbone
