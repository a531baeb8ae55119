"""The config sections of the run's parts: ``backbone:``, ``objective:``, ``augment:`` and ``strategy:``.

Defined here, apart from the code they configure (``models.py``, ``objectives.py``, ``augment.py``,
``plugins.py``, ``regularizers.py``), and composed into the run config by ``simulator.config``, so that
validating a config imports neither torch nor Avalanche, kornia or lightly: validation only, nothing
here imports them. Objective, regulariser and strategy configs are registered
(``simulator/registry.py``) and name their builders (``builder = "module:function"``, imported when a
run is built); ``ObjectiveConfig``, ``RegularizerSpec``, ``StrategyConfig`` and the name lists derive
from the registries.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Dict, List, Literal, Optional, Tuple, Union

from pydantic import Field, PositiveInt, ValidationError, field_validator, model_serializer, model_validator

from dncsim.common import StrictModel, UserPath, did_you_mean, one_line_error
from dncsim.simulator.registry import OBJECTIVES_REGISTRY, REGULARIZERS_REGISTRY, STRATEGIES_REGISTRY

__all__ = ["MLPConfig", "ConvNetConfig", "ResNet18Config", "TimmConfig", "LastNBlocks", "BackboneConfig",
           "RESNET18_FEATURES", "SimCLRConfig",
           "VICRegConfig", "BarlowTwinsConfig",
           "DirVarianceConfig", "OrthVarianceConfig", "RegularizerSpec",
           "BYOLConfig", "SimSiamConfig", "SupervisedConfig", "NoneConfig",
           "ObjectiveConfig", "OBJECTIVES", "LABEL_FREE_OBJECTIVES", "AugmentConfig", "NaiveConfig", "ReplayConfig",
           "RegularizerConfig", "DistillConfig", "AxisDistillConfig", "CumulativeConfig", "JointConfig",
           "StrategyConfig",
           "STRATEGIES"]

RESNET18_FEATURES = 512


# --- backbone (the code: simulator/models.py) -----------------------------------------------------

class MLPConfig(StrictModel):
    """A multi-layer perceptron for vector inputs; image inputs are flattened."""

    name: Literal["mlp"] = "mlp"
    hidden: List[PositiveInt] = Field(default_factory=lambda: [256, 256],
                                      description="widths of the hidden layers, input side first")
    feature_dim: PositiveInt = Field(128, description="size of the representation")
    batchnorm: bool = Field(True, description="BatchNorm1d after every hidden Linear layer")


class ConvNetConfig(StrictModel):
    """A small 4-block convolutional network for small images (32x32 down to 8x8)."""

    name: Literal["convnet"] = "convnet"
    width: PositiveInt = Field(32, description="channels of the first block; each later block doubles them")
    feature_dim: PositiveInt = Field(128, description="size of the representation")


class ResNet18Config(StrictModel):
    """torchvision's ResNet-18 with a CIFAR-style stem, randomly initialised."""

    name: Literal["resnet18"] = "resnet18"
    feature_dim: PositiveInt = Field(RESNET18_FEATURES,
                                     description="size of the representation; other than 512 adds a Linear layer")


class LastNBlocks(StrictModel):
    """``trainable: {last_n_blocks: K}``: only the last K stages of a timm model train (see simulator/models.py)."""

    last_n_blocks: PositiveInt = Field(description="how many of the model's last stages train (timm's feature_info "
                                                   "stages: a ResNet's stem and layer1-4, a ViT's blocks)")


class TimmConfig(StrictModel):
    """A timm architecture (``pip install 'dncsim[timm]'``), its weights read from a local file.

    Built as ``timm.create_model(model, pretrained=False, num_classes=0)``: nothing is downloaded, and
    the features are timm's pooled features (``num_features`` wide). The model name is checked
    against ``timm.list_models()`` and the file against the architecture when the run is built, not
    here (validating a config imports neither timm nor torch).
    """

    name: Literal["timm"] = "timm"
    model: str = Field(min_length=1, description="a timm model name (resnet18, vit_small_patch16_224, ...); "
                                                 "a tag (vit_base_patch16_clip_224.openai) picks its mean/std")
    weights: Optional[UserPath] = Field(None, description="a local weights file: .safetensors, or a torch state dict "
                                                      "(read with torch.load(weights_only=True)); none: timm's "
                                                      "random initialisation")
    weights_key: Optional[str] = Field(None, description="the key of the file's checkpoint dict that holds the "
                                                         "state dict (teacher, state_dict, model, ...)")
    weights_prefix: Optional[str] = Field(None, description="strip this prefix from every key (module.backbone.); "
                                                            "keys without it are left out")
    trainable: Union[Literal["all", "head_only"], LastNBlocks] = Field(
        "all", description="all; head_only (the backbone stays frozen, only the objective's heads train); "
                           "{last_n_blocks: K}")
    input_size: Optional[PositiveInt] = Field(None, description="resize the images to input_size x input_size "
                                                                "(on the device, per batch); none: as the source "
                                                                "gives them")
    normalize: bool = Field(True, description="standardise the inputs with the mean/std timm records for the model")
    options: Dict[str, Any] = Field(default_factory=dict, description="more keyword arguments to timm.create_model "
                                                                      "({dynamic_img_size: true}, ...)")

    @field_validator("trainable", mode="before")
    @classmethod
    def _trainable(cls, v):
        if isinstance(v, str) and v not in ("all", "head_only"):
            raise ValueError(f"{v!r} is not one of all, head_only, {{last_n_blocks: K}}")
        if isinstance(v, dict):
            unknown = [k for k in v if k != "last_n_blocks"]
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r}{did_you_mean(unknown[0], ['last_n_blocks'])}; "
                                 "expected all, head_only or {last_n_blocks: K}")
            try:
                return LastNBlocks.model_validate(v)
            except ValidationError as exc:
                raise ValueError(one_line_error(exc, LastNBlocks)) from None
        if not isinstance(v, (str, LastNBlocks)):
            raise ValueError(f"expected all, head_only or {{last_n_blocks: K}}; got {v!r}")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v):
        fixed = sorted({"pretrained", "num_classes", "model_name", "pretrained_cfg_overlay"} & set(v))
        if fixed:
            raise ValueError(f"{fixed[0]!r} is set by dncsim (pretrained=False, num_classes=0); leave it out")
        return v


BackboneConfig = Annotated[Union[MLPConfig, ConvNetConfig, ResNet18Config, TimmConfig], Field(discriminator="name")]


# --- objective (the code: simulator/objectives.py) ------------------------------------------------

class _PenaltyConfig(StrictModel):
    """A batch penalty on the current task's labelled samples (simulator/regularizers.py), added to the
    objective's loss: ``weight`` in every experience, or, with ``doses``, the dose of the task an experience
    teaches (0 in the experiences of unlisted tasks). ``placebo``: the same penalty on labels permuted
    within each batch (class sizes kept; no class structure)."""

    weight: float = Field(..., description="strength LAMBDA >= 0 in every experience (below zero it would reward "
                                           "spreading the classes: not a stable objective); 0 is the control; "
                                           "must be 0 (or left out) when doses is given")
    labelled_fraction: float = Field(1.0, gt=0, le=1, description="fraction F of each experience's training samples "
                                                                  "whose labels the penalty may read (a fixed, "
                                                                  "seeded, class-stratified subset)")
    doses: Optional[Dict[str, float]] = Field(None, description="task name -> weight >= 0 applied only during the "
                                                                "experience that teaches that task (e.g. {size: "
                                                                "5}); unlisted tasks get 0")
    placebo: bool = Field(False, description="apply the penalty to the batch's labels permuted at random among the "
                                             "current task's labelled samples (seeded; class sizes kept)")

    @model_validator(mode="before")
    @classmethod
    def _weight_defaults_to_zero_with_doses(cls, data):
        if isinstance(data, dict) and "weight" not in data and data.get("doses") is not None:
            data = {**data, "weight": 0.0}
        return data

    @field_validator("weight")
    @classmethod
    def _stable(cls, v):
        if not v >= 0 or v == float("inf"):
            raise ValueError(f"must be a finite number >= 0 (a negative weight rewards spreading each class, "
                             f"which has no minimum: not a stable objective); got {v:g}")
        return v

    @field_validator("doses")
    @classmethod
    def _doses(cls, v, info):
        if v is None:
            return v
        for task, w in v.items():
            if not w >= 0 or w == float("inf"):
                raise ValueError(f"the dose of task {task!r} must be a finite number >= 0; got {w:g}")
        weight = info.data.get("weight")
        if weight:
            raise ValueError(f"doses replaces weight, so weight must be 0 (or left out); got weight {weight:g}")
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """``name`` first; ``doses`` and ``placebo`` only when set, so a run without them records what it did
        before they existed (and such a run resumes)."""
        out = handler(self)
        if self.doses is None:
            out.pop("doses", None)
        if not self.placebo:
            out.pop("placebo", None)
        return {"name": out.pop("name"), **out} if "name" in out else out

    @property
    def active(self) -> bool:
        """Whether the penalty applies in any experience (weight or some dose > 0); if not, it is the control."""
        return self.weight > 0 or any(w > 0 for w in (self.doses or {}).values())

    def dose(self, task: str) -> float:
        """The weight applied during the experience that teaches ``task``."""
        return self.weight if self.doses is None else float(self.doses.get(task, 0.0))


@REGULARIZERS_REGISTRY.register
class DirVarianceConfig(_PenaltyConfig):
    """``dir_variance``: the batch's directional CDNV of the current task's labelled samples
    (``analysis.penalties.directional_cdnv_penalty``)."""

    name: Literal["dir_variance"] = "dir_variance"
    builder: ClassVar[str] = "dncsim.simulator.regularizers:build_dir_variance"


@REGULARIZERS_REGISTRY.register
class OrthVarianceConfig(_PenaltyConfig):
    """``orth_variance``: the batch's within-class variance per dimension orthogonal to the span of the class-mean
    differences, over the squared mean gap (``analysis.penalties.orthogonal_variance_penalty``)."""

    name: Literal["orth_variance"] = "orth_variance"
    builder: ClassVar[str] = "dncsim.simulator.regularizers:build_orth_variance"


RegularizerSpec = REGULARIZERS_REGISTRY.union()


class _Regularized(StrictModel):
    """``regularizers``: penalties added to the objective's loss on every training batch."""

    regularizers: List[RegularizerSpec] = Field(default_factory=list,
                                                description="penalties added to the loss, e.g. [{name: dir_variance, "
                                                            "weight: 3, labelled_fraction: 0.1}]")

    @field_validator("regularizers")
    @classmethod
    def _once_each(cls, v):
        names = [r.name for r in v]
        if len(set(names)) != len(names):
            raise ValueError(f"each regularizer may appear once; got {names}")
        return v


class _SSLConfig(_Regularized):
    """Head sizes shared by the self-supervised objectives (the heads' input is the backbone's features)."""

    projection_dim: int = Field(64, ge=1, description="output size of the projection (and prediction) head")
    hidden_dim: int = Field(256, ge=1, description="hidden width of the projection (and prediction) head")


@OBJECTIVES_REGISTRY.register
class SimCLRConfig(_SSLConfig):
    """SimCLR: NT-Xent contrast between the projections of the two views."""

    name: Literal["simclr"] = "simclr"
    builder: ClassVar[str] = "dncsim.simulator.objectives:build_simclr"
    temperature: float = Field(0.2, gt=0, description="softmax temperature of NT-Xent")


@OBJECTIVES_REGISTRY.register
class VICRegConfig(_SSLConfig):
    """VICReg: invariance, variance and covariance terms (weights default to lightly's)."""

    name: Literal["vicreg"] = "vicreg"
    builder: ClassVar[str] = "dncsim.simulator.objectives:build_vicreg"
    lambda_param: float = Field(25.0, ge=0, description="weight of the invariance term")
    mu_param: float = Field(25.0, ge=0, description="weight of the variance term")
    nu_param: float = Field(1.0, ge=0, description="weight of the covariance term")


@OBJECTIVES_REGISTRY.register
class BarlowTwinsConfig(_SSLConfig):
    """Barlow Twins: cross-correlation of the two views' projections towards the identity."""

    name: Literal["barlow_twins"] = "barlow_twins"
    builder: ClassVar[str] = "dncsim.simulator.objectives:build_barlow_twins"
    lambda_param: float = Field(5e-3, ge=0, description="weight of the off-diagonal (redundancy) term")


@OBJECTIVES_REGISTRY.register
class BYOLConfig(_SSLConfig):
    """BYOL: predict an EMA target network's projection of the other view."""

    name: Literal["byol"] = "byol"
    builder: ClassVar[str] = "dncsim.simulator.objectives:build_byol"
    momentum: float = Field(0.99, ge=0, lt=1, description="EMA factor of the target network per update")


@OBJECTIVES_REGISTRY.register
class SimSiamConfig(_SSLConfig):
    """SimSiam: predict the stop-gradient projection of the other view."""

    name: Literal["simsiam"] = "simsiam"
    builder: ClassVar[str] = "dncsim.simulator.objectives:build_simsiam"


@OBJECTIVES_REGISTRY.register
class SupervisedConfig(_Regularized):
    """Cross-entropy on the current labels through one linear head per task label."""

    name: Literal["supervised"] = "supervised"
    builder: ClassVar[str] = "dncsim.simulator.objectives:build_supervised"

    @field_validator("regularizers")
    @classmethod
    def _every_label_known(cls, v):
        for r in v:
            if r.labelled_fraction != 1:
                raise ValueError(f"{r.name}: a supervised objective reads every label, so labelled_fraction must be 1; "
                                 f"got {r.labelled_fraction:g}")
        return v


@OBJECTIVES_REGISTRY.register
class NoneConfig(StrictModel):
    """No training: the backbone stays at its random initialisation (the floor)."""

    name: Literal["none"] = "none"
    builder: ClassVar[str] = "dncsim.simulator.objectives:build_none"


ObjectiveConfig = OBJECTIVES_REGISTRY.union()
OBJECTIVES: Tuple[str, ...] = OBJECTIVES_REGISTRY.names
#: the objectives that train the backbone without ever reading a label (their experiences differ only
#: where the inputs do)
LABEL_FREE_OBJECTIVES: Tuple[str, ...] = tuple(cls.model_fields["name"].default for cls in _SSLConfig.__subclasses__())


# --- augment (the code, and what each augmentation does to the data: simulator/augment.py) --------

class AugmentConfig(StrictModel):
    """Random augmentations that make the views of self-supervised objectives (see simulator/augment.py)."""

    enabled: bool = Field(True, description="false: every view is the input itself")
    translate: int = Field(4, ge=0, description="images: random shift by up to this many pixels "
                                                "(replicate-pad, then crop back to size); 0 = off")
    resized_crop: bool = Field(False, description="images: random resized crop; rescaling destroys the size "
                                                  "attribute of the shapes data")
    crop_scale: List[float] = Field(default_factory=lambda: [0.5, 1.0], min_length=2, max_length=2,
                                    description="images: [low, high] fraction of the area a resized crop keeps")
    flip: bool = Field(True, description="images: horizontal flip with probability 0.5")
    rotation: float = Field(0.0, ge=0, le=180, description="images: random rotation by up to +-this many degrees")
    brightness: float = Field(0.3, ge=0, le=1, description="images: brightness factor drawn from [1-b, 1+b]")
    contrast: float = Field(0.3, ge=0, le=1, description="images: contrast factor drawn from [1-c, 1+c]")
    saturation: float = Field(0.3, ge=0, le=1, description="RGB images: saturation factor drawn from [1-s, 1+s]")
    hue: float = Field(0.0, ge=0, le=0.5, description="RGB images: hue shift by up to +-this many turns; "
                                                      "destroys a color task")
    jitter_p: float = Field(0.8, ge=0, le=1, description="images: probability of the color jitter "
                                                         "(brightness, contrast, saturation, hue)")
    grayscale_p: float = Field(0.0, ge=0, le=1, description="RGB images: probability of grayscale; destroys color")
    blur_p: float = Field(0.0, ge=0, le=1, description="images: probability of a Gaussian blur (sigma 0.1 to 2 px)")
    noise_std: float = Field(0.0, ge=0, le=1, description="images: std of Gaussian pixel noise")
    vector_noise_std: float = Field(0.1, ge=0, description="vectors: Gaussian noise, as a fraction of each "
                                                           "feature's std over the batch")
    vector_dropout: float = Field(0.1, ge=0, lt=1, description="vectors: probability that a feature is masked "
                                                               "(set to its batch mean)")

    @field_validator("crop_scale", mode="before")
    @classmethod
    def _pair(cls, v):
        return list(v) if isinstance(v, tuple) else v          # a Python caller's (low, high)

    @field_validator("crop_scale")
    @classmethod
    def _ordered_scale(cls, v: List[float]) -> List[float]:
        low, high = v
        if not 0 < low <= high <= 1:
            raise ValueError(f"needs 0 < low <= high <= 1; got [{low}, {high}]")
        return v


# --- strategy (the code: simulator/plugins.py; the factory: simulator/strategies.py) ---------------

@STRATEGIES_REGISTRY.register
class NaiveConfig(StrictModel):
    """Sequential fine-tuning: each experience trains on its own data only."""

    name: Literal["naive"] = "naive"
    builder: ClassVar[str] = "dncsim.simulator.plugins:build_naive"


@STRATEGIES_REGISTRY.register
class ReplayConfig(StrictModel):
    """A buffer of past inputs, balanced over experiences, mixed into every training batch."""

    name: Literal["replay"] = "replay"
    builder: ClassVar[str] = "dncsim.simulator.plugins:build_replay"
    mem_size: int = Field(500, ge=1, description="samples kept in the buffer")
    replay_batch_size: Optional[int] = Field(None, ge=1, description="buffer samples per batch (default: batch size)")


@STRATEGIES_REGISTRY.register
class RegularizerConfig(StrictModel):
    """A quadratic anchor on the backbone, strength/2 * sum_i importance_i (theta_i - theta*_i)^2.

    ewc: mean squared gradient of the objective's loss (empirical Fisher); mas: mean absolute gradient;
    si: path integral of -gradient x update over the experience over (squared total change + ``si_damping``).
    Each experience's importances are rescaled to mean 1, then added to the earlier ones times ``decay``;
    the anchor is the latest weights.
    """

    name: Literal["ewc", "mas", "si"]
    builder: ClassVar[str] = "dncsim.simulator.plugins:build_importance"
    strength: float = Field(100.0, ge=0, description="lambda: weight of the penalty (importances have mean 1)")
    importance_batches: int = Field(20, ge=1, description="ewc/mas: mini-batches used to estimate importance")
    decay: float = Field(1.0, ge=0, le=1, description="factor on earlier importances when a new one is added")
    si_damping: float = Field(0.1, gt=0, description="si: xi in omega / (delta^2 + xi)")


@STRATEGIES_REGISTRY.register
class DistillConfig(StrictModel):
    """CaSSLe-style distillation: a predictor maps current features to the frozen previous backbone's."""

    name: Literal["distill"] = "distill"
    builder: ClassVar[str] = "dncsim.simulator.plugins:build_distill"
    weight: float = Field(1.0, ge=0, description="weight of the distillation loss")
    predictor_hidden: int = Field(256, ge=1, description="hidden width of the 2-layer predictor")


@STRATEGIES_REGISTRY.register
class AxisDistillConfig(StrictModel):
    """Distillation along the learned tasks' decision axes only (simulator/plugins.py)."""

    name: Literal["axis_distill"] = "axis_distill"
    builder: ClassVar[str] = "dncsim.simulator.plugins:build_axis_distill"
    weight: float = Field(1.0, ge=0, description="weight of the axis-distillation loss (same scale as distill's: "
                                                 "docs, Guide, Strategies)")


@STRATEGIES_REGISTRY.register
class CumulativeConfig(StrictModel):
    """Each experience trains on the data of every experience so far."""

    name: Literal["cumulative"] = "cumulative"
    builder: ClassVar[str] = "dncsim.simulator.plugins:build_cumulative"


@STRATEGIES_REGISTRY.register
class JointConfig(StrictModel):
    """One training phase on all experiences at once (the non-continual upper bound)."""

    name: Literal["joint"] = "joint"
    builder: ClassVar[str] = "dncsim.simulator.plugins:build_joint"


StrategyConfig = STRATEGIES_REGISTRY.union()
STRATEGIES: Tuple[str, ...] = STRATEGIES_REGISTRY.names

for _cls in OBJECTIVES_REGISTRY.classes:        # a regulariser registered later joins every objective's list
    if "regularizers" in _cls.model_fields:
        REGULARIZERS_REGISTRY.bind(_cls, "regularizers", lambda u: List[Annotated[u, Field(discriminator="name")]])
