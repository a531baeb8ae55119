"""The one run configuration schema: every section and key of a ``dncsim run`` YAML file.

Validated before anything runs: unknown keys, wrong types and out-of-range values raise a one-line
DncsimError naming the dotted key (with accepted values and a did-you-mean). ``--set a.b=value``
overrides any key by dotted path; values are parsed as YAML (``--set training.lr=0.01``,
``--set scenario.stream.labelings=[color,shape]``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional, Sequence

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from dncsim.analysis.metrics.settings import AnalysisConfig, EvaluationConfig
from dncsim.common import DncsimError, StrictModel, did_you_mean, one_line_error, read_yaml
from dncsim.scenarios.config import ScenarioConfig
from dncsim.simulator.parts_config import (LABEL_FREE_OBJECTIVES, AugmentConfig, BackboneConfig, ConvNetConfig,
                                           NaiveConfig, ObjectiveConfig, SimCLRConfig, StrategyConfig)

__all__ = ["TrainingConfig", "EvaluationConfig", "AnalysisConfig", "OutputConfig", "RunConfig", "load_run_config",
           "apply_overrides", "set_values", "run_from_mapping"]


FP16_ON_CPU = ("training.precision: 'fp16' needs a CUDA device (on the CPU fp16 autocast has no fast kernels and "
               "runs about 90x slower); use bf16 or fp32 on the CPU")


class TrainingConfig(StrictModel):
    """How each experience is trained."""

    epochs: int = Field(1, ge=1, description="epochs per experience")
    batch_size: int = Field(256, ge=2, description="mini-batch size (before replay samples are added)")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="the optimizer of the backbone and heads")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0, description="the optimizer's weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="number format of the training steps' forward pass and loss: fp32; bf16 or fp16 run "
                            "them under torch.autocast (fp16 with a gradient scaler, CUDA only); weights, optimizer, "
                            "augmentation and every evaluation and analysis stay in fp32/fp64")
    compile: bool = Field(False, description="torch.compile the backbone (needs a C++ compiler on CPU, triton on "
                                             "CUDA; the first batches pay the compilation)")
    deterministic: bool = Field(True, description="CUDA: deterministic algorithms (torch.use_deterministic_algorithms, "
                                                  "CUBLAS_WORKSPACE_CONFIG=:4096:8, cudnn.benchmark off); false lets "
                                                  "cuDNN pick the fastest kernels, not bit-identical from run to run. "
                                                  "No effect on CPU, which is deterministic")


class OutputConfig(StrictModel):
    """What a run writes besides its metrics."""

    dir: Optional[Path] = Field(None, description="run directory (default: runs/<config name>)")
    loggers: List[Literal["tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="where the metrics stream as the run goes: tensorboard (tb/), wandb (wandb/, offline unless "
                    "WANDB_MODE says otherwise)")
    tensorboard: bool = Field(True, description="false leaves tensorboard out of loggers (configs from before "
                                                "loggers)")
    wandb_project: Optional[str] = Field(None, description="wandb project (default: the study's name for a study "
                                                           "run, else dncsim)")
    checkpoints: bool = Field(True,
        description="write checkpoint.pt after every experience; without it an interrupted run restarts from scratch")
    report: bool = Field(True, description="write the orthogonality report (report/) when the run finishes")
    paper: Literal["auto", "always", "never"] = Field(
        "auto", description="the report's section on the paper's three claims (auto: for joint streams)")

    @field_validator("loggers")
    @classmethod
    def _loggers_once(cls, v):
        twice = sorted({name for name in v if v.count(name) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is listed twice")
        return v

    @property
    def active_loggers(self) -> List[str]:
        """``loggers``, less tensorboard when ``tensorboard`` is false."""
        return [name for name in self.loggers if name != "tensorboard" or self.tensorboard]


class RunConfig(StrictModel):
    """A whole run: the scenario, the model and how it is trained, evaluated and analysed."""

    name: Optional[str] = Field(None, description="run name (default: the config file's name)")
    seed: int = Field(0, ge=0,
                      description="seeds model initialisation, shuffling, augmentation, probes and few-shot episodes")
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:N")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig,
                                     description="the data source, the task stream and the evaluation tasks")
    backbone: BackboneConfig = Field(default_factory=ConvNetConfig,
                                     description="the shared representation; features before any projector are what "
                                                 "analysis measures")
    objective: ObjectiveConfig = Field(default_factory=SimCLRConfig, description="what trains the backbone")
    augment: AugmentConfig = Field(default_factory=AugmentConfig,
                                   description="two random views per batch for the self-supervised objectives "
                                               "(kornia, per sample)")
    strategy: StrategyConfig = Field(default_factory=NaiveConfig, description="the continual-learning method")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="how each experience is trained")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig,
                                         description="probes on frozen features after every experience")
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig,
                                     description="geometry and few-shot error after every experience")
    output: OutputConfig = Field(default_factory=OutputConfig, description="what the run writes besides its metrics")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        from dncsim.rundir import plain_name
        return v if v is None else plain_name(v, "--out or output.dir")

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        import re
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"'{v}' is not one of auto, cpu, cuda, cuda:N")
        return v

    @model_validator(mode="after")
    def _fp16_needs_cuda(self):
        """fp16 autocast on the CPU (no fast fp16 kernels) ran about 90x slower than fp32 on the convnet here:
        refused. With ``device: auto`` the device is only known when the run is built
        (``simulator.devices.check_precision``)."""
        if self.training.precision == "fp16" and self.device == "cpu":
            raise ValueError(FP16_ON_CPU)
        return self

    @model_validator(mode="after")
    def _experiences_must_differ_for_label_free_objectives(self):
        """A stream whose experiences share their training inputs gives an objective that never reads
        labels the same data every experience: refused unless the user says they mean it (a regulariser
        with a non-zero weight reads the labels, so the experiences differ to it)."""
        stream = self.scenario.stream
        reads_labels = any(r.weight > 0 for r in getattr(self.objective, "regularizers", []))
        if (stream.same_inputs and self.objective.name in LABEL_FREE_OBJECTIVES and not reads_labels
                and not stream.allow_same_inputs):
            what = {"multilabel": "type: multilabel", "joint": f"type: joint, blocks: {getattr(stream, 'blocks', '')}"
                    }.get(stream.type, f"type: {stream.type}, hold: none")
            raise ValueError(
                f"scenario.stream: every experience of this stream ({what}) trains on the same inputs, and "
                f"objective '{self.objective.name}' never reads labels, so its experiences are identical (more "
                "epochs on the same data, not a sequence of tasks); use type: factor (hold: one or subset), a "
                "supervised objective, or set scenario.stream.allow_same_inputs: true if that is what you mean")
        return self


def _set_path(data: dict, dotted: str, value) -> None:
    """Set ``value`` at a dotted path; sections are created as needed, and an integer key indexes an
    existing list (``objective.regularizers.0.weight``)."""
    keys = dotted.split(".")
    node = data
    for depth, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not (k.isdigit() and int(k) < len(node)):
                raise DncsimError(f"--set {dotted}: '{'.'.join(keys[:depth])}' is a list of {len(node)}; "
                                  f"'{k}' is not an index into it")
            nxt = node[int(k)]
        else:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
        if not isinstance(nxt, (dict, list)):
            raise DncsimError(f"--set {dotted}: '{'.'.join(keys[:depth + 1])}' is not a section")
        node = nxt
    last = keys[-1]
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            raise DncsimError(f"--set {dotted}: '{'.'.join(keys[:-1])}' is a list of {len(node)}; "
                              f"'{last}' is not an index into it")
        node[int(last)] = value
    else:
        node[last] = value


def set_values(data: dict, values: dict) -> dict:
    """Set ``{"key.path": value}`` entries in a config mapping (sections created as needed); returns it."""
    for key, value in values.items():
        _set_path(data, key, value)
    return data


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a config mapping, in order."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise DncsimError(f"--set expects KEY.PATH=VALUE; got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        top = key.strip().split(".")[0]
        if top not in RunConfig.model_fields:
            raise DncsimError(f"--set {key}: unknown section '{top}'{did_you_mean(top, list(RunConfig.model_fields))}; "
                              f"sections: {', '.join(RunConfig.model_fields)}")
        _set_path(data, key.strip(), value)
    return data


def run_from_mapping(data) -> RunConfig:
    """Validate a mapping as a run config; DncsimError with one line naming the key otherwise."""
    if not isinstance(data, dict):
        raise DncsimError(f"config: expected a mapping; got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise DncsimError(one_line_error(exc, RunConfig)) from None


def load_run_config(path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate the run config at ``path``; ``name`` defaults to the file's stem."""
    data = apply_overrides(read_yaml(path), overrides)
    if data.get("name") is None:
        data["name"] = Path(path).stem
    return run_from_mapping(data)
