"""The scenario section of a config: a data source and a stream type, validated before anything is built.

```yaml
scenario:
  seed: 0                             # data, splits, class order, domain shifts
  source: {name: shapes, ...}         # see docs, Reference, Configuration
  stream: {type: factor, hold: one}
```
Unknown keys, wrong types and out-of-range values raise a one-line DncsimError naming the key;
checks that need the data happen when the scenario is built. The accepted sources and stream types
are those of the registries in ``scenarios/registry.py`` (the stream configs below register
themselves; the source configs in ``scenarios/source_config.py``).
"""
from __future__ import annotations

from typing import Annotated, ClassVar, List, Literal, Optional

from pydantic import Field, ValidationError, field_validator

from dncsim.common import DncsimError, StrictModel, one_line_error, read_yaml
from dncsim.scenarios.registry import SOURCES, STREAMS, rebuild_dependents, register_stream
from dncsim.scenarios.source_config import ShapesConfig

__all__ = ["ScenarioConfig", "SourceConfig", "StreamConfig", "load_scenario_config", "scenario_from_mapping"]


@register_stream
class FactorStream(StrictModel):
    """One attribute per experience: experience k trains on data in which attribute k varies over all
    its values while the others are held (``hold: one`` -- each fixed at one value drawn by seed;
    ``subset`` -- restricted to a random ``hold_fraction`` of its values; ``none`` -- everything varies:
    the source's training data in every experience, the same inputs as a multilabel stream). The
    evaluation task of experience k is attribute k on the full evaluation data."""

    type: Literal["factor"] = "factor"
    builder: ClassVar[str] = "dncsim.scenarios.streams:factor_stream"
    attributes: Optional[List[str]] = Field(None, min_length=1, description="attributes in stream order "
                                                                             "(default: every labeling of the source)")
    hold: Literal["one", "subset", "none"] = Field("one",
        description="what the attributes other than the varying one do: one (each fixed at one seeded value), subset "
                    "(a random hold_fraction of its values), none (everything varies)")
    hold_fraction: float = Field(0.5, gt=0, lt=1, description="hold: subset -- share of each held attribute's "
                                                              "values kept (at least one, at most all but one)")
    samples_per_experience: Optional[int] = Field(None, ge=2, description="generated sources: training images "
                                                                          "per experience (default: the train "
                                                                          "split's size)")
    min_samples_per_class: int = Field(10, ge=1, description="sources read from disk: fewest samples per value of "
                                                             "the varying attribute an experience may have")
    allow_same_inputs: bool = Field(False, description="hold: none with an objective that ignores labels")

    @field_validator("attributes")
    @classmethod
    def _distinct(cls, v):
        if v is not None:
            dup = sorted({x for x in v if v.count(x) > 1})
            if dup:
                raise ValueError(f"attributes repeat {', '.join(dup)}")
        return v

    @property
    def same_inputs(self) -> bool:
        return self.hold == "none"


class _ClassSplitStream(StrictModel):
    """Classes of one labeling split over experiences (shared by class- and task-incremental)."""

    experiences: int = Field(ge=1, description="number of experiences; must divide the number of classes")
    labeling: Optional[str] = Field(None, description="labeling whose classes are split (default: the source's)")
    class_order: Optional[List[int]] = Field(None, description="explicit class order (a permutation of the class ids)")
    shuffle_classes: bool = Field(True, description="without class_order: shuffle the classes with the seed")

    @property
    def same_inputs(self) -> bool:
        return False


@register_stream
class ClassIncrementalStream(_ClassSplitStream):
    """New classes in every experience, one shared label space, no task labels (task label 0)."""

    type: Literal["class_incremental"] = "class_incremental"
    builder: ClassVar[str] = "dncsim.scenarios.streams:class_incremental_stream"


@register_stream
class TaskIncrementalStream(_ClassSplitStream):
    """New classes in every experience, with the experience index as task label (multi-head setting)."""

    type: Literal["task_incremental"] = "task_incremental"
    builder: ClassVar[str] = "dncsim.scenarios.streams:task_incremental_stream"


@register_stream
class DomainIncrementalStream(StrictModel):
    """The same labels in every experience, inputs shifted per experience."""

    type: Literal["domain_incremental"] = "domain_incremental"
    builder: ClassVar[str] = "dncsim.scenarios.streams:domain_stream"
    experiences: int = Field(ge=2, description="number of experiences, each a new domain of the same task")
    shift: Literal["permute", "rotate", "color"] = Field("permute",
        description="the domain change per experience: a fixed pixel permutation, a rotation or a color transform")
    labeling: Optional[str] = Field(None,
        description="the labeling every experience trains (default: the source's first)")
    include_identity: bool = Field(True, description="the first experience sees unshifted inputs")
    max_rotation: float = Field(180.0, gt=0, le=360, description="rotate: the last experience's angle in degrees")

    @property
    def same_inputs(self) -> bool:
        return False


@register_stream
class MultilabelStream(StrictModel):
    """The same inputs in every experience, each experience a different labeling (task label = index)."""

    type: Literal["multilabel"] = "multilabel"
    builder: ClassVar[str] = "dncsim.scenarios.streams:multilabel_stream"
    labelings: List[str] = Field(min_length=1, description="labeling specs, e.g. color, class:parity")
    allow_same_inputs: bool = Field(False, description="accept this stream with an objective that ignores labels "
                                                       "(its experiences are then identical to it)")

    @property
    def same_inputs(self) -> bool:
        """Several experiences train on the same inputs."""
        return len(self.labelings) > 1

    @field_validator("labelings")
    @classmethod
    def _distinct(cls, v):
        dup = sorted({x for x in v if v.count(x) > 1})
        if dup:
            raise ValueError(f"labelings repeat {', '.join(dup)}")
        return v


@register_stream
class JointStream(StrictModel):
    """Joint training measured along the way: every experience is one more block of ``training.epochs``
    epochs over the source's whole training data, and every labeling in ``labelings`` is an evaluation
    task probed after every block (watched: none is "learned" at one experience, so there is no
    forgetting to measure). The paper's multitask setting. A supervised objective trains the first
    labeling."""

    type: Literal["joint"] = "joint"
    builder: ClassVar[str] = "dncsim.scenarios.streams:joint_stream"
    labelings: Optional[List[str]] = Field(None, min_length=1, description="labelings measured (default: every "
                                                                            "labeling of the source)")
    blocks: int = Field(4, ge=1, le=10_000, description="experiences, each training.epochs epochs over all the data")
    allow_same_inputs: bool = Field(False, description="accept several blocks with an objective that ignores labels "
                                                       "(they are the same data by design)")

    @field_validator("labelings")
    @classmethod
    def _distinct(cls, v):
        if v is not None:
            dup = sorted({x for x in v if v.count(x) > 1})
            if dup:
                raise ValueError(f"labelings repeat {', '.join(dup)}")
        return v

    @property
    def same_inputs(self) -> bool:
        return self.blocks > 1


# The unions as registered when this module is imported; ScenarioConfig follows later registrations.
SourceConfig = Annotated[SOURCES.union(), Field(discriminator="name")]
StreamConfig = Annotated[STREAMS.union(), Field(discriminator="type")]


class ScenarioConfig(StrictModel):
    """A data source, a stream type and the seed that fixes every random choice in between."""

    seed: int = Field(0, ge=0, lt=2 ** 32,
                      description="fixes every random choice of the scenario: generated images, splits, class order, "
                                  "domain shifts; in [0, 2**32)")
    source: SourceConfig = Field(default_factory=ShapesConfig,
                                 description="where the samples and their labelings come from")
    stream: StreamConfig = Field(default_factory=FactorStream,
                                 description="how the samples are cut into a sequence of experiences")


def _rebuild() -> None:
    """Take the registries' classes into ScenarioConfig (and every config that holds it)."""
    ScenarioConfig.model_fields["source"].annotation = SOURCES.union()
    ScenarioConfig.model_fields["stream"].annotation = STREAMS.union()
    rebuild_dependents([ScenarioConfig])


SOURCES.on_change(_rebuild)
STREAMS.on_change(_rebuild)


def scenario_from_mapping(data, *, prefix: str = "scenario") -> ScenarioConfig:
    """Validate a mapping as a scenario section; DncsimError with one line naming the key otherwise."""
    if not isinstance(data, dict):
        raise DncsimError(f"{prefix}: expected a mapping of keys (source, stream, seed); got {type(data).__name__}")
    try:
        return ScenarioConfig.model_validate(data)
    except ValidationError as exc:
        raise DncsimError(one_line_error(exc, ScenarioConfig, prefix)) from None


def load_scenario_config(path) -> ScenarioConfig:
    """The ``scenario:`` section of the YAML file at ``path``, validated (other top-level keys are left to
    the run configuration)."""
    data = read_yaml(path)
    if "scenario" not in data:
        raise DncsimError(f"{path}: no 'scenario' section (top-level keys: {', '.join(map(str, data)) or 'none'})")
    return scenario_from_mapping(data["scenario"] if data["scenario"] is not None else {})
