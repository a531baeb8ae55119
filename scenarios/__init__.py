"""dncsim.scenarios: data sources and Avalanche task streams. Knows nothing of training.

``build_scenario(config)`` returns a :class:`~scenarios.streams.Scenario`: the Avalanche benchmark
(``train_stream``, ``test_stream``) plus a description of every experience (labeling, classes,
task label, sample indices into the source tensors).
"""
from dncsim.scenarios.build import build_scenario, load_source
from dncsim.scenarios.config import ScenarioConfig, load_scenario_config, scenario_from_mapping
from dncsim.scenarios.sources import SourceData, Split
from dncsim.scenarios.streams import EvaluationTaskInfo, ExperienceInfo, Scenario

__all__ = ["build_scenario", "load_source", "ScenarioConfig", "load_scenario_config", "scenario_from_mapping",
           "SourceData", "Split", "ExperienceInfo", "EvaluationTaskInfo", "Scenario"]
