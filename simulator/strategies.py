"""The strategy factory: a strategy config becomes the plugins, modules and data mode of its strategy.

Each strategy config class names its builder (``builder`` in simulator/parts_config.py, registered in
``STRATEGIES_REGISTRY``); :func:`build_plugins` calls it with a :class:`StrategyContext` and gets
:class:`StrategyParts`. The template is simulator/template.py, the shipped plugins and builders
simulator/plugins.py, the divergence guard simulator/guard.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

from dncsim.simulator.parts_config import STRATEGIES, StrategyConfig
from dncsim.simulator.registry import STRATEGIES_REGISTRY

__all__ = ["StrategyConfig", "STRATEGIES", "StrategyContext", "StrategyParts", "build_plugins", "DATA_MODES"]

#: how a strategy feeds experiences: its own data, all data so far, or everything at once
DATA_MODES = ("current", "cumulative", "joint")


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy builder may read besides its config: the backbone's ``feature_dim``, and
    ``learned_tasks(k)``, the (x, y) probe-train data of every evaluation task learned at experience k."""

    feature_dim: int
    learned_tasks: Callable[[int], Sequence[Tuple[Any, Any]]]


@dataclass
class StrategyParts:
    """A strategy's contribution to the run: ``plugins`` (before the objective's regularisers),
    ``after_regularizers`` (plugins after them), ``extra`` modules trained with the model
    (``SimModel.extra``) and the ``data_mode`` (:data:`DATA_MODES`)."""

    plugins: List[Any] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    data_mode: str = "current"
    after_regularizers: List[Any] = field(default_factory=list)


def build_plugins(cfg: StrategyConfig, ctx: StrategyContext) -> StrategyParts:
    """The parts of strategy ``cfg``: its class's registered builder called with ``ctx``."""
    parts = STRATEGIES_REGISTRY.build(cfg, ctx)
    if parts.data_mode not in DATA_MODES:
        raise ValueError(f"strategy {cfg.name!r}: data_mode must be one of {', '.join(DATA_MODES)}; "
                         f"got {parts.data_mode!r}")
    return parts
