"""dncsim.scenarios: data sources and Avalanche task streams. Knows nothing of training.

``build_scenario(config)`` returns a :class:`~scenarios.streams.Scenario`: the Avalanche benchmark
(``train_stream``, ``test_stream``) plus a description of every experience (labeling, classes,
task label, sample indices into the source tensors).

Each name below is imported on first use: importing ``dncsim.scenarios.config`` (validation) loads
neither torch nor Avalanche.
"""
from dncsim.common import lazy_import

__all__ = ["build_scenario", "load_source", "ScenarioConfig", "load_scenario_config", "scenario_from_mapping",
           "SourceData", "Split", "ExperienceInfo", "EvaluationTaskInfo", "Scenario", "register_source",
           "register_stream"]

_WHERE = {
    "build_scenario": "dncsim.scenarios.build",
    "load_source": "dncsim.scenarios.build",
    "ScenarioConfig": "dncsim.scenarios.config",
    "load_scenario_config": "dncsim.scenarios.config",
    "scenario_from_mapping": "dncsim.scenarios.config",
    "SourceData": "dncsim.scenarios.sources",
    "Split": "dncsim.scenarios.sources",
    "ExperienceInfo": "dncsim.scenarios.streams",
    "EvaluationTaskInfo": "dncsim.scenarios.streams",
    "Scenario": "dncsim.scenarios.streams",
    "register_source": "dncsim.scenarios.registry",
    "register_stream": "dncsim.scenarios.registry",
}


def __getattr__(name: str):
    return lazy_import(globals(), _WHERE, name)


def __dir__():
    return sorted(list(globals()) + __all__)
