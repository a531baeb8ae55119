"""Backbones: the networks whose output is the representation that analysis measures.

Every backbone maps a batch of inputs to a batch of features:

* images: x of shape (B, C, H, W), float32 (the sources give values in [0, 1]);
* vectors: x of shape (B, D), float32;
* output: (B, feature_dim), the representation itself, before any projector or classifier head.

Three architectures, chosen by ``backbone.name`` in the config:

* ``mlp``: flattens any input, then hidden Linear(-BatchNorm)-ReLU layers and a Linear to ``feature_dim``;
* ``convnet``: 4 blocks of conv3x3-BN-ReLU and a 2x2 max-pool (channels ``width``, 2x, 4x, 8x; a
  block pools only while the spatial size is at least 2), global average pooling, Linear to ``feature_dim``;
* ``resnet18``: torchvision's ResNet-18 with a CIFAR-style stem (3x3 conv, stride 1, no max-pool), built
  with ``weights=None`` (nothing is downloaded); its 512 pooled features, or a Linear to ``feature_dim``.

Weights are initialised from torch's global RNG, so ``torch.manual_seed`` makes them reproducible.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List

import torch
from torch import nn
from torchvision.models import resnet18

from dncsim.common import DncsimError
from dncsim.simulator.parts_config import RESNET18_FEATURES, BackboneConfig, ConvNetConfig, MLPConfig, ResNet18Config

# The config classes live in simulator/parts_config.py (torch-free, so that validating a config stays
# fast) and are re-exported here.
__all__ = ["MLPConfig", "ConvNetConfig", "ResNet18Config", "BackboneConfig", "Backbone", "build_backbone"]

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


_BUILDERS: Dict[str, Callable[..., nn.Module]] = {"mlp": _mlp, "convnet": _convnet, "resnet18": _resnet18}
_NEEDS_IMAGES = ("convnet", "resnet18")


def _check_input_shape(cfg, input_shape: tuple) -> None:
    """One-line DncsimError unless ``input_shape`` is (C, H, W) or (D,) and fits the architecture."""
    if len(input_shape) not in (1, 3) or any(int(s) < 1 for s in input_shape):
        raise DncsimError(f"backbone: inputs must be images (C, H, W) or vectors (D,); got shape {input_shape}")
    if cfg.name in _NEEDS_IMAGES and len(input_shape) == 1:
        raise DncsimError(f"backbone.name: {cfg.name!r} needs image inputs (C, H, W); the source gives vectors "
                          f"of shape {input_shape}: use mlp")


def build_backbone(cfg: BackboneConfig, input_shape: tuple) -> Backbone:
    """The backbone ``cfg`` describes for inputs of ``input_shape`` ((C, H, W) images or (D,) vectors).

    The result maps (B, *input_shape) to (B, cfg.feature_dim). Raises ``DncsimError`` (one line naming
    ``backbone.name``) when a convolutional backbone is asked to take vectors.
    """
    input_shape = tuple(int(s) for s in input_shape)
    _check_input_shape(cfg, input_shape)
    body = _BUILDERS[cfg.name](cfg, input_shape)
    return Backbone(body, cfg.feature_dim, input_shape)
