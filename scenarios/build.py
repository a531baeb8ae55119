"""From a validated scenario config to a built Scenario: load the source, then build the stream."""
from __future__ import annotations

from typing import Sequence

from dncsim.scenarios.config import ScenarioConfig, scenario_from_mapping
from dncsim.scenarios.digits import DigitsConfig, load_digits_source
from dncsim.scenarios.disk_sources import DiskSourceConfig, load_disk_source
from dncsim.scenarios.features import FeaturesSourceConfig, load_features_source
from dncsim.scenarios.shapes import ShapesConfig, load_shapes
from dncsim.scenarios.sources import SourceData
from dncsim.scenarios.streams import Scenario, build_stream
from dncsim.scenarios.torchvision_sources import TorchvisionConfig, load_torchvision_source

__all__ = ["load_source", "build_scenario"]


def load_source(cfg, seed: int) -> SourceData:
    """The SourceData for a source config (any member of ``scenarios.config.SourceConfig``)."""
    if isinstance(cfg, ShapesConfig):
        return load_shapes(cfg, seed)
    if isinstance(cfg, DigitsConfig):
        return load_digits_source(cfg, seed)
    if isinstance(cfg, TorchvisionConfig):
        return load_torchvision_source(cfg, seed)
    if isinstance(cfg, FeaturesSourceConfig):
        return load_features_source(cfg, seed)
    if isinstance(cfg, DiskSourceConfig):
        return load_disk_source(cfg, seed)
    raise TypeError(f"no loader for source config {type(cfg).__name__}")


def build_scenario(config, *, watch: Sequence[str] = ()) -> Scenario:
    """Build a scenario from a ScenarioConfig (or a mapping, validated first): an Avalanche benchmark with
    a description of every experience and the evaluation tasks (plus the labelings in ``watch``, only
    watched). Deterministic for ``config.seed``."""
    if not isinstance(config, ScenarioConfig):
        config = scenario_from_mapping(config)
    return build_stream(config, load_source(config.source, config.seed), watch=watch)
