"""Backbones: inputs (B, C, H, W) or (B, D) float32 -> features (B, feature_dim), before any head.

``backbone.name``: ``mlp`` (Linear(-BatchNorm)-ReLU layers); ``convnet`` (4 conv3x3-BN-ReLU-maxpool
blocks, global average pool, Linear); ``resnet18`` (torchvision, CIFAR stem, ``weights=None``);
``timm`` (``pretrained=False, num_classes=0``, weights from a local file; see :class:`TimmBody`
and :func:`timm_stages`). Nothing is downloaded. Initialisation uses torch's global RNG.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet18

from dncsim.common import DncsimError, did_you_mean
from dncsim.simulator.parts_config import (RESNET18_FEATURES, BackboneConfig, ConvNetConfig, LastNBlocks, MLPConfig,
                                           ResNet18Config, TimmConfig)

# The config classes live in simulator/parts_config.py (torch-free, so that validating a config stays
# fast) and are re-exported here.
__all__ = ["MLPConfig", "ConvNetConfig", "ResNet18Config", "TimmConfig", "LastNBlocks", "BackboneConfig", "Backbone",
           "TimmBody", "build_backbone", "load_weights_file", "timm_stages"]

CONVNET_BLOCKS = 4


class Backbone(nn.Module):
    """A feature extractor: ``forward(x)`` maps (B, *input_shape) to (B, feature_dim).

    ``input_shape`` is (C, H, W) for images or (D,) for vectors; the output is the representation
    that analysis measures.
    """

    def __init__(self, body: nn.Module, feature_dim: int, input_shape: tuple):
        super().__init__()
        self.body = body
        self.feature_dim = int(feature_dim)
        self.input_shape = tuple(input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *input_shape) -> (B, feature_dim)."""
        return self.body(x)


def _mlp(cfg: MLPConfig, input_shape: tuple) -> nn.Module:
    """(B, *input_shape) -> flatten -> [Linear(-BN)-ReLU] per hidden width -> Linear -> (B, feature_dim)."""
    layers: List[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in cfg.hidden:
        layers.append(nn.Linear(width, hidden))
        if cfg.batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU(inplace=True))
        width = hidden
    layers.append(nn.Linear(width, cfg.feature_dim))
    return nn.Sequential(*layers)


def _convnet(cfg: ConvNetConfig, input_shape: tuple) -> nn.Module:
    """(B, C, H, W) -> 4 conv blocks (pooling while H, W >= 2) -> global average pool -> Linear -> (B, feature_dim)."""
    channels, height, width = input_shape
    layers: List[nn.Module] = []
    for block in range(CONVNET_BLOCKS):
        out = cfg.width * 2 ** block
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, cfg.feature_dim)]
    return nn.Sequential(*layers)


def _resnet18(cfg: ResNet18Config, input_shape: tuple) -> nn.Module:
    """(B, C, H, W) -> ResNet-18, 3x3 stride-1 stem, no max-pool -> (B, 512) -> optional Linear -> (B, feature_dim)."""
    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")   # as torchvision does
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    if cfg.feature_dim == RESNET18_FEATURES:
        return net
    return nn.Sequential(net, nn.Linear(RESNET18_FEATURES, cfg.feature_dim))


# --- timm ----------------------------------------------------------------------------------------------

TIMM_EXTRA = "pip install 'dncsim[timm]'"


def _import_timm():
    try:
        import timm
    except ImportError:
        raise DncsimError(f"backbone.name: 'timm' needs the timm package: {TIMM_EXTRA}") from None
    return timm


class TimmBody(nn.Module):
    """A timm model behind the input handling its weights expect, on the device, per batch.

    ``forward(x)``: (B, C, H, W); 1 channel repeated to 3; resized to ``input_size`` (bilinear, antialiased
    when shrinking); standardised with ``mean``/``std`` when given; -> timm's pooled features (B, D).
    ``frozen``: names of submodules of ``net`` (``""`` = ``net``) whose parameters are frozen; they stay in
    eval mode while training, so their batch-norm statistics and dropout stay fixed too.
    """

    def __init__(self, net: nn.Module, in_chans: int, input_size: Optional[int], mean=None, std=None,
                 frozen: Tuple[str, ...] = ()):
        super().__init__()
        self.net = net
        self.in_chans, self.input_size = int(in_chans), input_size
        self.frozen = tuple(frozen)
        if mean is not None:           # non-persistent: the state dict keeps exactly timm's keys
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        else:
            self.mean = self.std = None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The images as the network takes them: channels, size and normalisation (see the class)."""
        if x.shape[1] == 1 and self.in_chans != 1:
            x = x.expand(-1, self.in_chans, -1, -1)
        size = self.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < min(x.shape[-2:]))
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for name in self.frozen:
                self.net.get_submodule(name).eval()
        return self


def load_weights_file(path: Path, key: Optional[str] = None, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The state dict in ``path``: a ``.safetensors`` file, or anything else through
    ``torch.load(weights_only=True)``; ``key`` picks the entry of a checkpoint dict that holds it, and
    ``prefix`` is stripped from the keys (keys without it are left out). One-line DncsimError naming
    ``backbone.weights`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DncsimError(f"backbone.weights: {path} does not exist (a local .safetensors or torch state-dict "
                          "file; dncsim never downloads weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise DncsimError(f"backbone.weights: reading {path.name} needs the safetensors package: "
                          f"{TIMM_EXTRA}") from None
    except Exception as exc:          # noqa: BLE001 - any unreadable file is the user's input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DncsimError(f"backbone.weights: cannot read {path} as safetensors or a torch state dict "
                          f"({type(exc).__name__}: {first[:200]})") from None
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            keys = list(state)[:8] if isinstance(state, dict) else []
            raise DncsimError(f"backbone.weights_key: {path} has no entry {key!r}"
                              f"{did_you_mean(key, [str(k) for k in keys])}; its keys: {', '.join(map(str, keys))}")
        state = state[key]
    if not isinstance(state, dict) or not state:
        raise DncsimError(f"backbone.weights: {path} does not hold a state dict (got {type(state).__name__})")
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
        if not state:
            raise DncsimError(f"backbone.weights_prefix: no key of {path} starts with {prefix!r}")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        nested = [k for k in not_tensors if isinstance(state[k], dict)]
        hint = (f"; set backbone.weights_key to the entry that holds the weights ({', '.join(map(str, nested[:6]))})"
                if nested else "")
        raise DncsimError(f"backbone.weights: {path} is not a state dict: entry {not_tensors[0]!r} is a "
                          f"{type(state[not_tensors[0]]).__name__}, not a tensor{hint}")
    return state


def _classifier_prefixes(net: nn.Module) -> Tuple[str, ...]:
    names = (getattr(net, "pretrained_cfg", None) or {}).get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _prefix_hint(unexpected: List[str], own: Dict[str, torch.Tensor]) -> str:
    """``; set backbone.weights_prefix: 'module.backbone.'`` when stripping a prefix would make the first
    unexpected key one of the model's."""
    if not unexpected:
        return ""
    parts = unexpected[0].split(".")
    for i in range(1, len(parts)):
        if ".".join(parts[i:]) in own:
            return f"; set backbone.weights_prefix: '{'.'.join(parts[:i])}.'"
    return ""


def _load_into(net: nn.Module, state: Dict[str, torch.Tensor], cfg: TimmConfig) -> None:
    """Load ``state`` into ``net`` exactly, or one line naming the first missing or unexpected key (or
    the first tensor of another shape). Classifier weights (timm's ``pretrained_cfg['classifier']``)
    the model does not have with ``num_classes=0`` are left out, as timm itself does."""
    own = net.state_dict()
    heads = _classifier_prefixes(net)
    state = {k: v for k, v in state.items()
             if k in own or not any(k == h or k.startswith(h + ".") for h in heads)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    where = f"backbone.weights: {cfg.weights} does not match timm model {cfg.model!r}"
    if missing or unexpected:
        first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        counts = f" ({len(missing)} missing, {len(unexpected)} unexpected of {len(own)} keys)"
        raise DncsimError(f"{where}: {first}{counts}{_prefix_hint(unexpected, own)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise DncsimError(f"{where}: tensor {k!r} has shape {list(v.shape)} in the file but "
                              f"{list(own[k].shape)} in the model")
    net.load_state_dict(state, strict=True)


def timm_stages(net: nn.Module) -> List[Tuple[str, List[str]]]:
    """The stages of a timm model, input side first, as (stage module name, its parameter names).

    The stages are the modules timm's ``feature_info`` names (a ResNet: ``act1`` -- the stem --,
    ``layer1`` ... ``layer4``; a ConvNeXt: ``stages.0`` ...; a ViT: every ``blocks.i``). Parameters are
    taken in registration order (timm registers them input side first): stage i holds those after
    stage i-1's and up to the end of its own module, so the first stage includes the stem or the patch
    embedding. Parameters after the last stage (a final norm) come as a last entry named ``""``.
    """
    info = getattr(net, "feature_info", None)
    names = [f["module"] for f in info] if info else []
    if not names:
        return []
    ordered, ends = [], {}
    for mod_name, module in net.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            ordered.append(f"{mod_name}.{p_name}" if mod_name else p_name)
        for stage in names:
            if mod_name == stage or mod_name.startswith(stage + "."):
                ends[stage] = len(ordered)
    out, start = [], 0
    for stage in names:
        end = max(start, ends.get(stage, start))
        out.append((stage, ordered[start:end]))
        start = end
    if start < len(ordered):
        out.append(("", ordered[start:]))
    return out


def _freeze(net: nn.Module, cfg: TimmConfig) -> Tuple[str, ...]:
    """Apply ``cfg.trainable``; returns the maximal submodules whose parameters are all frozen."""
    if cfg.trainable == "all":
        return ()
    if cfg.trainable == "head_only":
        net.requires_grad_(False)
        return ("",)
    k = cfg.trainable.last_n_blocks
    stages = timm_stages(net)
    blocks = [s for s in stages if s[0]]
    if not blocks:
        raise DncsimError(f"backbone.trainable: timm model {cfg.model!r} lists no stages (feature_info); use all or "
                          "head_only")
    if k > len(blocks):
        raise DncsimError(f"backbone.trainable.last_n_blocks: {k} is more than the {len(blocks)} stages of timm "
                          f"model {cfg.model!r} ({', '.join(s[0] for s in blocks)})")
    train = {n for _, params in stages[len(blocks) - k:] for n in params}
    for n, p in net.named_parameters():
        p.requires_grad_(n in train)
    frozen = []
    for name, module in net.named_modules():
        params = list(module.parameters())
        if name and params and not any(p.requires_grad for p in params) \
                and not any(name.startswith(f + ".") for f in frozen):
            frozen.append(name)
    return tuple(frozen)


def _timm(cfg: TimmConfig, input_shape: tuple) -> nn.Module:
    """(B, C, H, W) -> TimmBody: channels, resize, normalise -> timm model with num_classes=0 -> (B, num_features)."""
    timm = _import_timm()
    arch = cfg.model.split(".", 1)[0]
    known = timm.list_models()
    if arch not in known:
        raise DncsimError(f"backbone.model: {cfg.model!r} is not a timm model{did_you_mean(arch, known)} "
                          f"(timm {timm.__version__}; see timm.list_models())")
    if cfg.weights is not None and not Path(cfg.weights).is_file():     # before building a large model
        load_weights_file(cfg.weights)
    try:
        net = timm.create_model(cfg.model, pretrained=False, num_classes=0, **cfg.options)
    except (RuntimeError, TypeError, ValueError, KeyError, AssertionError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        given = f" with options {cfg.options}" if cfg.options else ""
        raise DncsimError(f"backbone.{'options' if given else 'model'}: timm cannot build {cfg.model!r}{given}: "
                          f"{why[:200]}") from None
    if cfg.weights is not None:
        _load_into(net, load_weights_file(cfg.weights, cfg.weights_key, cfg.weights_prefix), cfg)
    in_chans = int(cfg.options.get("in_chans", 3))
    channels = input_shape[0]
    if channels not in (in_chans, 1):
        raise DncsimError(f"backbone.model: timm model {cfg.model!r} takes {in_chans}-channel images; the source "
                          f"gives {channels} channels (1-channel images are repeated; other counts need "
                          "backbone.options.in_chans)")
    mean = std = None
    if cfg.normalize:
        pc = getattr(net, "pretrained_cfg", None) or {}
        mean, std = list(pc.get("mean", (0.485, 0.456, 0.406))), list(pc.get("std", (0.229, 0.224, 0.225)))
        if len(mean) != in_chans:                 # statistics of RGB on a model of other channels
            mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
    body = TimmBody(net, in_chans, cfg.input_size, mean, std, frozen=_freeze(net, cfg))
    was_training = body.training
    body.eval()
    try:
        with torch.no_grad():
            out = body(torch.zeros(1, *input_shape))
    except Exception as exc:        # noqa: BLE001 - an input size the architecture cannot take
        size = f"{cfg.input_size}x{cfg.input_size}" if cfg.input_size else f"{input_shape[1]}x{input_shape[2]}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DncsimError(f"backbone: timm model {cfg.model!r} cannot take {size} images ({first[:160]}); set "
                          "backbone.input_size to the size it was trained at, or options: {dynamic_img_size: true} "
                          "for a ViT") from None
    finally:
        body.train(was_training)
    if out.dim() != 2:
        raise DncsimError(f"backbone.model: timm model {cfg.model!r} gives features of shape {tuple(out.shape)} "
                          "with num_classes=0, not (B, D) pooled features")
    body.feature_dim = int(out.shape[1])
    return body


_BUILDERS: Dict[str, Callable[..., nn.Module]] = {"mlp": _mlp, "convnet": _convnet, "resnet18": _resnet18,
                                                  "timm": _timm}
_NEEDS_IMAGES = ("convnet", "resnet18", "timm")


def _check_input_shape(cfg, input_shape: tuple) -> None:
    """One-line DncsimError unless ``input_shape`` is (C, H, W) or (D,) and fits the architecture."""
    if len(input_shape) not in (1, 3) or any(int(s) < 1 for s in input_shape):
        raise DncsimError(f"backbone: inputs must be images (C, H, W) or vectors (D,); got shape {input_shape}")
    if cfg.name in _NEEDS_IMAGES and len(input_shape) == 1:
        raise DncsimError(f"backbone.name: {cfg.name!r} needs image inputs (C, H, W); the source gives vectors "
                          f"of shape {input_shape}: use mlp")


def build_backbone(cfg: BackboneConfig, input_shape: tuple) -> Backbone:
    """The backbone ``cfg`` describes for inputs of ``input_shape`` ((C, H, W) images or (D,) vectors).

    The result maps (B, *input_shape) to (B, feature_dim): ``cfg.feature_dim``, or for ``timm`` the
    model's pooled feature width. Raises ``DncsimError`` (one line naming the key) when a convolutional
    backbone is asked to take vectors, and for a timm model: timm not installed, an unknown model name,
    a missing or mismatched weights file, an input size it cannot take.
    """
    input_shape = tuple(int(s) for s in input_shape)
    _check_input_shape(cfg, input_shape)
    body = _BUILDERS[cfg.name](cfg, input_shape)
    feature_dim = getattr(cfg, "feature_dim", None) or body.feature_dim
    return Backbone(body, feature_dim, input_shape)
