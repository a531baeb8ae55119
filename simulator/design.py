"""The design of a study (``design:`` of a study file): seeds per run, a Latin square over the stream's task
order, per-task treatment cells on a Latin square orthogonal to it, placebo arms and replicate blocks.

Conventions: a block holds ``T`` runs (T = the stream's tasks) when the order or the treatments are
randomised, else one run. Row ``r`` of a block is one run: ``order[r][c]`` is the task at position ``c``
and ``cell[r][t]`` the treatment cell of task ``t``. With both randomised the two squares (indexed by run
and position) are orthogonal: task x position, task x cell and position x cell each meet once per block.
Randomisation permutes rows, columns and symbols, seeded by (``seed``, grid point, block); a point's arms
share its blocks' squares. Defaults give the plain grid: same run names, same run configs.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import re
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
from pydantic import Field, field_validator, model_validator

from dncsim.common import DncsimError, StrictModel

__all__ = ["TreatmentsConfig", "DesignConfig", "latin_square", "orthogonal_pair", "block_squares",
           "design_runs", "design_specs", "run_label", "design_summary", "per_run_seeds"]

#: the regularisers a treatment cell may dose (their entries in objective.regularizers)
REGULARIZERS = ("dir_variance", "orth_variance")
#: the most runs a study may have
MAX_RUNS = 100_000
#: the stream key whose list is the task order, per stream type
TASK_KEYS = {"factor": "attributes", "multilabel": "labelings", "joint": "labelings"}


class TreatmentsConfig(StrictModel):
    """Per-task treatment cells on a Latin square, and the placebo arms."""

    cells: List[Dict[str, float]] = Field(min_length=1, description="exactly one mapping per task, regulariser "
                                                                     "name -> weight, e.g. [{dir_variance: 0, "
                                                                     "orth_variance: 0}, {dir_variance: 5, "
                                                                     "orth_variance: 0}, ...]")
    placebo: List[bool] = Field(default_factory=lambda: [False], min_length=1,
                                description="arms, each with every block: true sets placebo: true on every "
                                            "regulariser of the run")

    @field_validator("cells")
    @classmethod
    def _cells(cls, v):
        for i, cell in enumerate(v):
            if not cell:
                raise ValueError(f"cell {i} is empty; expected regulariser name -> weight")
            for name, w in cell.items():
                if name not in REGULARIZERS:
                    raise ValueError(f"cell {i}: '{name}' is not a regulariser ({', '.join(REGULARIZERS)})")
                if not (w >= 0 and math.isfinite(w)):
                    raise ValueError(f"cell {i}: {name} weight must be a finite number >= 0; got {w:g}")
        return v

    @field_validator("placebo")
    @classmethod
    def _arms(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"arms repeat: {v}")
        return v


class DesignConfig(StrictModel):
    """How the runs of each grid point are drawn (every key optional; the defaults give the plain grid)."""

    seed: int = Field(0, ge=0, lt=2 ** 32, description="seeds the randomisation (squares and per-run seeds)")
    seeds: Literal["fixed", "per_run"] = Field("fixed", description="per_run: every run gets its own seed and "
                                                                    "scenario.seed (fresh images and held values)")
    order: Literal["fixed", "latin_square"] = Field("fixed", description="latin_square: the stream's task order "
                                                                         "permuted per run by a Latin square")
    treatments: Optional[TreatmentsConfig] = Field(None, description="per-task doses on a Latin square, and arms")
    replicates: int = Field(1, ge=1, le=10_000, description="blocks per grid point and arm")

    @property
    def active(self) -> bool:
        """Whether the design changes anything against the plain grid."""
        return self.seeds != "fixed" or self.order != "fixed" or self.treatments is not None or self.replicates > 1

    @property
    def arms(self) -> List[bool]:
        return list(self.treatments.placebo) if self.treatments else [False]

    @model_validator(mode="after")
    def _pair_exists(self):
        if self.order == "latin_square" and self.treatments is not None:
            T = len(self.treatments.cells)
            if T in (2, 6) or not _orthogonal_order(T):
                raise ValueError(f"order latin_square with {T} treatment cells needs a pair of orthogonal Latin "
                                 f"squares of order {T}, which {'does not exist' if T in (2, 6) else 'is not built in'}"
                                 f" (orders 1, 3, 4, 5, 7, 8, 9, 11, ...): drop one of order and treatments")
        return self


# --- Latin squares ------------------------------------------------------------------------------------

def _prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _prime_power(q: int) -> Optional[Tuple[int, int]]:
    """(p, n) with q = p**n, n in 1..3; None otherwise."""
    for n in (1, 2, 3):
        p = round(q ** (1 / n))
        for c in (p - 1, p, p + 1):
            if _prime(c) and c ** n == q:
                return c, n
    return None


def _orthogonal_order(T: int) -> bool:
    return T == 1 or (T > 2 and _prime_power(T) is not None)


def _gf(q: int) -> Tuple[np.ndarray, np.ndarray]:
    """Addition and multiplication tables of GF(q), q = p**n (n <= 3): elements are the base-p digit
    vectors of 0..q-1 (polynomials over GF(p)) modulo the first monic irreducible polynomial of degree n."""
    p, n = _prime_power(q)
    digits = [[(x // p ** i) % p for i in range(n)] for x in range(q)]
    value = lambda d: sum(c * p ** i for i, c in enumerate(d))  # noqa: E731
    add = np.array([[value([(a + b) % p for a, b in zip(digits[x], digits[y])]) for y in range(q)] for x in range(q)])
    # a monic polynomial of degree <= 3 without a root in GF(p) is irreducible
    modulus = next([*c, 1] for c in itertools.product(range(p), repeat=n)
                   if n == 1 or all(sum(ci * r ** i for i, ci in enumerate([*c, 1])) % p for r in range(p)))

    def mul(x, y):
        prod = [0] * (2 * n - 1)
        for i, a in enumerate(digits[x]):
            for j, b in enumerate(digits[y]):
                prod[i + j] = (prod[i + j] + a * b) % p
        for k in range(len(prod) - 1, n - 1, -1):        # reduce by the monic modulus
            c = prod[k]
            if c:
                for i, m in enumerate(modulus):
                    prod[k - n + i] = (prod[k - n + i] - c * m) % p
        return value(prod[:n])
    return add, np.array([[mul(x, y) for y in range(q)] for x in range(q)])


def latin_square(T: int) -> np.ndarray:
    """The cyclic Latin square L[i, j] = (i + j) mod T."""
    i = np.arange(T)
    return (i[:, None] + i[None, :]) % T


def orthogonal_pair(T: int) -> Tuple[np.ndarray, np.ndarray]:
    """Two orthogonal Latin squares of order T (every ordered pair of symbols once): L_k(i, j) = k i + j over
    GF(T), k = 1 and k = 2 (T a prime, or a prime's square or cube). DncsimError for other T."""
    if T == 1:
        return np.zeros((1, 1), int), np.zeros((1, 1), int)
    if not _orthogonal_order(T):
        raise DncsimError(f"no pair of orthogonal Latin squares of order {T} is built in (orders 1, 3, 4, 5, 7, 8, "
                          f"9, 11, ...)")
    add, mul = _gf(T)
    i = np.arange(T)
    return tuple(add[mul[k][i][:, None], i[None, :]] for k in (1, 2))


def _randomise(squares, rng: np.random.Generator):
    """Permute the rows and columns of every square alike, and each square's symbols independently."""
    T = squares[0].shape[0]
    rows, cols = rng.permutation(T), rng.permutation(T)
    return [rng.permutation(T)[s[rows][:, cols]] for s in squares]


def block_squares(T: int, order: bool, treat: bool, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One block: ``order`` (R, T) task index at each position and ``cell`` (R, T) cell index of each task
    (R = T runs when ``order`` or ``treat``, else 1; identity order, cell 0 where not randomised)."""
    if order and treat:
        order_sq, B = _randomise(orthogonal_pair(T), rng)      # B: the cell at (run, position)
    elif order:
        order_sq, = _randomise([latin_square(T)], rng)
        B = np.zeros((T, T), int)
    elif treat:
        B, = _randomise([latin_square(T)], rng)
        order_sq = np.tile(np.arange(T), (T, 1))
    else:
        return np.arange(T)[None, :], np.zeros((1, T), int)
    cell = np.empty_like(B)
    for r in range(T):
        cell[r, order_sq[r]] = B[r]
    return order_sq, cell


# --- the runs of a study --------------------------------------------------------------------------------

def run_label(key: str, value) -> str:
    """``factor=value`` of a run name: the key's last part (the section's for ``.name``), the value made
    file-name safe."""
    parts = key.split(".")
    short = parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return f"{short}={re.sub(r'[^A-Za-z0-9_.+-]', '_', text)}"


def _tasks(data: dict, what: str) -> Tuple[str, List[str]]:
    """(key path, task names) of a run config mapping's stream, for ``what`` (the design key that needs them)."""
    stream = (data.get("scenario") or {}).get("stream") or {}
    kind = stream.get("type", "factor")
    if kind not in TASK_KEYS:
        raise DncsimError(f"design.{what}: stream type '{kind}' has no task list to "
                          f"{'permute' if what == 'order' else 'dose'} (factor: attributes; multilabel, joint: "
                          f"labelings)")
    key = f"scenario.stream.{TASK_KEYS[kind]}"
    tasks = stream.get(TASK_KEYS[kind])
    if not isinstance(tasks, list) or not tasks:
        raise DncsimError(f"design.{what}: needs {key} listed in the study's base or set (the tasks, in order)")
    return key, [str(t) for t in tasks]


def _regularizers(data: dict) -> list:
    regs = (data.get("objective") or {}).get("regularizers")
    return regs if isinstance(regs, list) else []


def _apply(data: dict, d: DesignConfig, order: List[str], cells: Optional[Dict[str, int]], placebo: bool) -> dict:
    """Set the treatment of one run on its config mapping (in place): doses per task and weight 0 on each
    dosed regulariser, placebo on every regulariser of a placebo arm. Returns task -> {regulariser: weight}."""
    doses: Dict[str, Dict[str, float]] = {}
    regs = _regularizers(data)
    if d.treatments is not None:
        by_name = {r.get("name"): r for r in regs if isinstance(r, dict)}
        for name in dict.fromkeys(n for cell in d.treatments.cells for n in cell):
            if name not in by_name:
                raise DncsimError(f"design.treatments.cells: dose {name} needs an objective.regularizers entry "
                                  f"named {name} in the study's base or set")
            by_name[name]["doses"] = {t: float(d.treatments.cells[cells[t]].get(name, 0.0)) for t in order}
            by_name[name]["weight"] = 0
        doses = {t: {n: float(w) for n, w in d.treatments.cells[cells[t]].items()} for t in order}
    if placebo:
        if not regs:
            raise DncsimError("design.treatments.placebo: a placebo arm needs objective.regularizers in the study's "
                              "base or set")
        for r in regs:
            r["placebo"] = True
    return doses


def design_runs(d: DesignConfig, points: List[Tuple[Dict, dict]]):
    """Yield (name suffix, factors, run config mapping, design record) per run: for each grid point
    ((factors, mapping) with the study's set and factors applied), each arm, each block, each row.
    ``name`` excludes the leading index; the design record is None for the plain grid."""
    if not d.active:
        for factors, data in points:
            yield "", factors, data, None
        return
    for p, (factors, data) in enumerate(points):
        randomised = d.order == "latin_square" or d.treatments is not None
        task_key, tasks = _tasks(data, "order" if d.order == "latin_square" else "treatments") if randomised \
            else (None, None)
        if d.treatments is not None and len(d.treatments.cells) != len(tasks):
            raise DncsimError(f"design.treatments.cells: {len(d.treatments.cells)} cells for {len(tasks)} tasks "
                              f"({', '.join(tasks)}); expected exactly one cell per task")
        blocks = [block_squares(len(tasks), d.order == "latin_square", d.treatments is not None,
                                np.random.default_rng([d.seed, p, b])) if randomised else None
                  for b in range(d.replicates)]
        for placebo in d.arms:
            for b, squares in enumerate(blocks):
                for r in range(len(squares[0]) if squares else 1):
                    run = copy.deepcopy(data)
                    if squares:
                        order = [tasks[t] for t in squares[0][r]]
                        cells = {tasks[t]: int(squares[1][r, t]) for t in range(len(tasks))}
                    else:
                        order, cells = _listed(data), None
                    if d.order == "latin_square":
                        _set(run, task_key, order)
                    doses = _apply(run, d, order, cells, placebo)
                    yield ((f"-b{b}r{r}" if squares else (f"-b{b}" if d.replicates > 1 else ""))
                           + ("-placebo" if placebo else ""),
                           factors, run, {"block": b, "row": r, "order": order, "doses": doses, "placebo": placebo})


def _listed(data: dict) -> Optional[List[str]]:
    """The stream's task list as configured (None when it is not listed)."""
    try:
        return _tasks(data, "order")[1]
    except DncsimError:
        return None


def _set(data: dict, key: str, value) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def per_run_seeds(seed: int, index: int) -> Tuple[int, int]:
    """(seed, scenario.seed) of run ``index`` under ``seeds: per_run``: distinct draws of the design seed."""
    a, b = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(a), int(b)


def design_specs(cfg, base: dict) -> List[dict]:
    """The runs of study ``cfg`` (a StudyConfig) on run config mapping ``base``: one spec per run with
    ``name``, ``factors``, the validated run ``config`` mapping and, under an active design, ``design``
    (block, row, order, doses, placebo, seed, scenario_seed). DncsimError naming the run or design key."""
    from dncsim.simulator.config import run_from_mapping, set_values

    d: DesignConfig = cfg.design
    if d.seeds == "per_run":
        taken = [k for k in ("seed", "scenario.seed") if k in cfg.factors or k in cfg.set]
        if taken:
            raise DncsimError(f"design.seeds: per_run draws each run's seed and scenario.seed; remove "
                              f"{taken[0]} from {'factors' if taken[0] in cfg.factors else 'set'}")
    keys = list(cfg.factors)
    points = []
    for values in itertools.product(*(cfg.factors[k] for k in keys)):
        factors = dict(zip(keys, values))
        points.append((factors, set_values(json.loads(json.dumps(base)), copy.deepcopy({**cfg.set, **factors}))))
    specs = []
    for i, (suffix, factors, data, record) in enumerate(design_runs(d, points)):
        if i >= MAX_RUNS:
            raise DncsimError(f"design: the study has more than {MAX_RUNS} runs; at most {MAX_RUNS}")
        name = f"{i:03d}-" + "-".join(run_label(k, v) for k, v in factors.items()) + suffix
        seeds = dict(zip(("seed", "scenario.seed"), per_run_seeds(d.seed, i))) if d.seeds == "per_run" else {}
        data = set_values(data, {**seeds, "name": name})
        try:
            run_cfg = run_from_mapping(data)
        except DncsimError as exc:
            raise DncsimError(f"study run {name}: {exc}") from None
        if "wandb" in run_cfg.output.active_loggers and run_cfg.output.wandb_project is None:
            run_cfg.output.wandb_project = cfg.name          # the study's runs side by side in one project
        spec = {"name": name, "factors": factors, "config": run_cfg.model_dump(mode="json")}
        if record is not None:
            spec["design"] = {**record, "seed": run_cfg.seed, "scenario_seed": run_cfg.scenario.seed}
        specs.append(spec)
    return specs


def design_summary(d: DesignConfig, points: int, runs: int, tasks: Optional[int] = None) -> str:
    """One line: blocks, arms, runs (``tasks``: runs per block when the squares are on)."""
    parts = [f"{d.replicates} block(s) per grid point and arm"]
    if tasks and (d.order == "latin_square" or d.treatments is not None):
        parts.append(f"{tasks} runs per block")
    if d.order == "latin_square":
        parts.append("task order on a Latin square")
    if d.treatments is not None:
        parts.append(f"{len(d.treatments.cells)} treatment cells on a"
                     f"{' Graeco-' if d.order == 'latin_square' else ' '}Latin square")
    parts.append(f"arms: {', '.join('placebo' if a else 'active' for a in d.arms)}")
    if d.seeds == "per_run":
        parts.append("seed and scenario.seed per run")
    return f"design: {'; '.join(parts)}; {points} grid points x {len(d.arms)} arm(s) -> {runs} runs"
