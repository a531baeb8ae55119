"""From a validated scenario config to a built Scenario: load the source, then build the stream."""
from __future__ import annotations

from typing import Sequence

from dncsim.scenarios.config import ScenarioConfig, scenario_from_mapping
from dncsim.scenarios.registry import SOURCES
from dncsim.scenarios.sources import SourceData
from dncsim.scenarios.streams import Scenario, build_stream

__all__ = ["load_source", "build_scenario"]


def load_source(cfg, seed: int) -> SourceData:
    """The SourceData for a registered source config, by the loader its class names (``loader``)."""
    return SOURCES.builder(cfg)(cfg, seed)


def build_scenario(config, *, watch: Sequence[str] = ()) -> Scenario:
    """Build a scenario from a ScenarioConfig (or a mapping, validated first): an Avalanche benchmark with
    a description of every experience and the evaluation tasks (plus the labelings in ``watch``, only
    watched). Deterministic for ``config.seed``."""
    if not isinstance(config, ScenarioConfig):
        config = scenario_from_mapping(config)
    return build_stream(config, load_source(config.source, config.seed), watch=watch)
