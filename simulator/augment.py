"""Batched random augmentation on tensors: the two views of self-supervised objectives.

:func:`build_augment` gives a module whose ``forward(x)`` returns one random view of a batch, drawn per
sample from torch's global RNG; :func:`two_views` calls it twice. Images (B, C, H, W) in [0, 1] use
``kornia.augmentation``; vectors (B, D) get noise and masking. The defaults keep every ``shapes``
attribute; ``resized_crop`` destroys size, ``hue``/``grayscale_p`` color, ``blur_p`` style (all off).
"""
from __future__ import annotations

from typing import List, Tuple

import kornia.augmentation as K
import torch
from torch import nn

from dncsim.common import DncsimError
from dncsim.simulator.parts_config import AugmentConfig

# The config class lives in simulator/parts_config.py (torch-free, so that validating a config stays
# fast) and is re-exported here.
__all__ = ["AugmentConfig", "build_augment", "two_views"]

BLUR_SIGMA = (0.1, 2.0)          # pixels, as in SimCLR
BLUR_KERNEL_FRACTION = 0.1       # kernel side about this fraction of the image side, at least 3


class _ImageAugment(nn.Module):
    """One random view of (B, C, H, W) images in [0, 1]: the kornia ops in order, clamped to [0, 1]."""

    def __init__(self, ops: List[nn.Module]):
        super().__init__()
        self.ops = nn.Sequential(*ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x).clamp(0, 1)


class _VectorAugment(nn.Module):
    """One random view of (B, D) vectors: feature-scaled Gaussian noise, then random feature masking.

    Noise on feature j has std ``noise_std * std_j`` and a masked feature is set to ``mean_j``, where
    ``mean_j`` and ``std_j`` are taken over the batch, so the view does not depend on feature scales.
    """

    def __init__(self, noise_std: float, dropout: float):
        super().__init__()
        self.noise_std = noise_std
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=0, keepdim=True)
        out = x
        if self.noise_std > 0:
            out = out + torch.randn_like(x) * (self.noise_std * x.std(dim=0, unbiased=False, keepdim=True))
        if self.dropout > 0:
            out = torch.where(torch.rand_like(x) < self.dropout, mean, out)
        return out


def _geometric_ops(cfg: AugmentConfig, height: int, width: int) -> List[nn.Module]:
    ops: List[nn.Module] = []
    if cfg.resized_crop:
        ops.append(K.RandomResizedCrop((height, width), scale=tuple(cfg.crop_scale)))
    if cfg.translate > 0:
        ops.append(K.RandomCrop((height, width), padding=cfg.translate, padding_mode="replicate"))
    if cfg.rotation > 0:
        ops.append(K.RandomAffine(cfg.rotation, padding_mode="border"))
    if cfg.flip:
        ops.append(K.RandomHorizontalFlip())
    return ops


def _color_ops(cfg: AugmentConfig, channels: int) -> List[nn.Module]:
    """Color jitter and grayscale; saturation, hue and grayscale only for RGB images."""
    rgb = channels == 3
    factors = (cfg.brightness, cfg.contrast, cfg.saturation if rgb else 0.0, cfg.hue if rgb else 0.0)
    ops: List[nn.Module] = []
    if cfg.jitter_p > 0 and any(factors):
        ops.append(K.ColorJitter(*factors, p=cfg.jitter_p))
    if rgb and cfg.grayscale_p > 0:
        ops.append(K.RandomGrayscale(p=cfg.grayscale_p))
    return ops


def _blur_kernel(height: int, width: int) -> Tuple[int, int]:
    side = max(3, 2 * round(BLUR_KERNEL_FRACTION * min(height, width) / 2) + 1)
    return side, side


def _pixel_ops(cfg: AugmentConfig, height: int, width: int) -> List[nn.Module]:
    ops: List[nn.Module] = []
    if cfg.blur_p > 0:
        ops.append(K.RandomGaussianBlur(_blur_kernel(height, width), BLUR_SIGMA, p=cfg.blur_p))
    if cfg.noise_std > 0:
        ops.append(K.RandomGaussianNoise(std=cfg.noise_std, p=1.0))
    return ops


def build_augment(cfg: AugmentConfig, input_shape: tuple) -> nn.Module:
    """A module whose ``forward(x)`` returns one random view of the batch ``x``, of the same shape.

    ``input_shape`` is one input's shape: (C, H, W) for images, x being (B, C, H, W) in [0, 1] (the
    view stays in [0, 1]), or (D,) for vectors, x being (B, D). ``cfg.enabled = False`` gives the identity.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (1, 3):
        raise DncsimError(f"augment: inputs must be images (C, H, W) or vectors (D,); got shape {input_shape}")
    if not cfg.enabled:
        return nn.Identity()
    if len(input_shape) == 1:
        return _VectorAugment(cfg.vector_noise_std, cfg.vector_dropout)
    channels, height, width = input_shape
    return _ImageAugment(_geometric_ops(cfg, height, width) + _color_ops(cfg, channels)
                         + _pixel_ops(cfg, height, width))


def two_views(augment: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views of the batch ``x``, each of x's shape."""
    return augment(x), augment(x)
