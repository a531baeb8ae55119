"""The one run configuration schema: every section and key of a ``dncsim run`` YAML file.

Unknown keys, wrong types and out-of-range values raise a one-line DncsimError naming the dotted key.
``--set a.b=value`` overrides any key; values are parsed as YAML within ``dncsim.common.YAML_LIMITS``.
:func:`run_from_mapping` also refuses a config that would not fit in memory (:func:`memory_needed`).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from dncsim.analysis.metrics.settings import AnalysisConfig, EvaluationConfig
from dncsim.common import (DncsimError, StrictModel, UserPath, did_you_mean, load_yaml_text, one_line_error,
                           read_yaml)
from dncsim.scenarios.config import ScenarioConfig
from dncsim.simulator.parts_config import (LABEL_FREE_OBJECTIVES, AugmentConfig, BackboneConfig, ConvNetConfig,
                                           NaiveConfig, ObjectiveConfig, SimCLRConfig, StrategyConfig)
from dncsim.simulator.registry import OBJECTIVES_REGISTRY, STRATEGIES_REGISTRY

__all__ = ["TrainingConfig", "EvaluationConfig", "AnalysisConfig", "OutputConfig", "RunConfig", "load_run_config",
           "apply_overrides", "set_values", "run_from_mapping", "memory_needed", "machine_memory", "MAX_THREADS"]

#: the most torch CPU threads a run may ask for
MAX_THREADS = 1024
#: the most parts of a dotted key path (``--set a.b.c=...``, a study's factors and ``set:``)
MAX_KEY_PARTS = 32


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

    dir: Optional[UserPath] = Field(None, description="run directory (default: runs/<config name>)")
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
    seed: int = Field(0, ge=0, lt=2 ** 32,
                      description="seeds model initialisation, shuffling, augmentation, probes and few-shot "
                                  "episodes; in [0, 2**32)")
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:N")
    threads: Optional[int] = Field(None, ge=1, le=MAX_THREADS,
                                   description="torch CPU threads (default: torch's choice)")
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
        """fp16 on the CPU (no fast fp16 kernels) is refused. With ``device: auto`` the device is known only
        when the run is built (``simulator.devices.check_precision``)."""
        if self.training.precision == "fp16" and self.device == "cpu":
            raise ValueError(FP16_ON_CPU)
        return self

    @model_validator(mode="after")
    def _experiences_must_differ_for_label_free_objectives(self):
        """A stream whose experiences share their training inputs gives an objective that never reads
        labels the same data every experience: refused unless the user says they mean it (a regulariser
        with a non-zero weight reads the labels, so the experiences differ to it)."""
        stream = self.scenario.stream
        reads_labels = any(r.active for r in getattr(self.objective, "regularizers", []))
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


OBJECTIVES_REGISTRY.bind(RunConfig, "objective")         # an objective or strategy registered later joins them
STRATEGIES_REGISTRY.bind(RunConfig, "strategy")


def _index(k: str, n: int) -> bool:
    """Whether ``k`` is an index into a list of ``n``: ASCII digits only (``str.isdigit`` takes '²' too)."""
    return k.isascii() and k.isdigit() and len(k) <= 9 and int(k) < n


def _set_path(data: dict, dotted: str, value) -> None:
    """Set ``value`` at a dotted path; sections are created as needed, and an integer key indexes an
    existing list (``objective.regularizers.0.weight``)."""
    keys = dotted.split(".")
    if len(keys) > MAX_KEY_PARTS:
        raise DncsimError(f"--set {dotted[:80]}...: a key path of {len(keys)} parts (at most {MAX_KEY_PARTS})")
    node = data
    for depth, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not _index(k, len(node)):
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
        if not _index(last, len(node)):
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
            value = load_yaml_text(raw, f"--set {key.strip()}") if raw.strip() else None
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
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise DncsimError(one_line_error(exc, RunConfig)) from None
    check_memory(cfg)
    return cfg


# --- what a config needs before it trains ------------------------------------------------------------

#: channels and side of the images of the sources whose sizes are known before they are read
_IMAGES = {"shapes": (3, 32), "digits": (1, 8), "mnist": (1, 28), "fashion_mnist": (1, 28), "kmnist": (1, 28),
           "cifar10": (3, 32), "cifar100": (3, 32)}


def machine_memory() -> Optional[int]:
    """Bytes of physical memory of this machine (None where the system does not say)."""
    import os
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if n >= size:
            return f"{n / size:.3g} {unit}" if n < 10 ** 6 * size else f"{n / size:.3e} {unit}"
    return f"{n} bytes"


def _params(cfg: RunConfig, channels: Optional[int], side: Optional[int]) -> int:
    """Parameters of the backbone and the objective's heads (a lower bound: what is known from the config)."""
    b, n = cfg.backbone, 0
    if b.name == "convnet":
        c = channels or 1
        for block in range(4):
            out = b.width * 2 ** block
            n += 9 * c * out + 2 * out
            c = out
        n += c * b.feature_dim + b.feature_dim
    elif b.name == "mlp":
        width = (channels * side * side) if channels and side else 0
        for h in list(b.hidden) + [b.feature_dim]:
            n += width * h + h
            width = h
    elif b.name == "resnet18":
        n += 11_000_000 + (512 * b.feature_dim if b.feature_dim != 512 else 0)
    feature_dim = getattr(b, "feature_dim", 0) or 0
    o = cfg.objective
    if hasattr(o, "hidden_dim"):
        n += feature_dim * o.hidden_dim + o.hidden_dim * o.projection_dim
        if o.name in ("byol", "simsiam"):
            n += 2 * o.hidden_dim * o.projection_dim
    return n


def memory_needed(cfg) -> List[Tuple[str, int, str]]:
    """What a run (a RunConfig) or a scenario (a ScenarioConfig) will certainly hold in memory, as (key,
    bytes, what) -- a lower bound from the config alone: the images a generated source renders (float32),
    and the backbone's and heads' parameters with their gradients (float32). Sources read from disk and
    timm models are not counted."""
    scenario = getattr(cfg, "scenario", cfg)
    src, parts = scenario.source, []
    channels, side = _IMAGES.get(src.name, (None, None))
    side = getattr(src, "image_size", None) or side
    image = 4 * channels * side * side if channels and side else 0
    if src.name == "shapes":
        cells = len(src.shapes) * len(src.colors) * len(src.sizes) * len(src.styles)
        n = cells * (src.train_repeats + src.probe_repeats + src.test_repeats)
        repeats = ("train_repeats", "probe_repeats", "test_repeats")
        key = "scenario.source." + max(repeats, key=lambda k: getattr(src, k))
        parts.append((key, n * image, f"{n} images of {channels}x{side}x{side} float32"))
        stream = scenario.stream
        if stream.type == "factor" and stream.samples_per_experience:
            k = len(stream.attributes or src.label_names())
            m = k * stream.samples_per_experience
            parts.append(("scenario.stream.samples_per_experience", m * image,
                          f"{m} training images over {k} experiences"))
    params = _params(cfg, channels, side) if isinstance(cfg, RunConfig) else 0
    if params:
        key = {"convnet": "backbone.width", "mlp": "backbone.hidden"}.get(cfg.backbone.name, "backbone.feature_dim")
        parts.append((key, 8 * params, f"{params} parameters with their gradients, float32"))
    return parts


def check_memory(cfg, available: Optional[int] = None) -> None:
    """DncsimError when :func:`memory_needed` exceeds ``available`` bytes (default: this machine's memory),
    naming the keys and what they would need."""
    available = machine_memory() if available is None else available
    parts = memory_needed(cfg)
    total = sum(b for _, b, _ in parts)
    if available is None or total <= available:
        return
    parts.sort(key=lambda p: -p[1])
    detail = "; ".join(f"{key}: {what} = {_gib(b)}" for key, b, what in parts if b)
    kind = "run" if isinstance(cfg, RunConfig) else "scenario"
    raise DncsimError(f"{parts[0][0]}: the {kind} would need at least {_gib(total)} of memory ({detail}), more than "
                      f"this machine's {_gib(available)}")


def load_run_config(path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate the run config at ``path``; ``name`` defaults to the file's stem."""
    data = apply_overrides(read_yaml(path), overrides)
    if data.get("name") is None:
        data["name"] = Path(path).stem
    return run_from_mapping(data)
