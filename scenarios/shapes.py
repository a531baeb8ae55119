"""``shapes``: the embedded default source, procedurally rendered labelled RGB images.

Labelings ``shape``, ``color``, ``size``, ``style`` form a balanced full factorial (``repeats`` per
combination): exactly balanced, pairwise independent. Nuisances (position, rotation, noise,
background) are drawn independently of the labels.

* images: (N, 3, H, W) float32 in [0, 1], H = W = ``image_size``;
* labels: name -> (N,) int64 ids 0..K-1 in config-list order;
* seeding: a private ``torch.Generator``; same inputs give identical tensors.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Tuple, get_args

import torch

from dncsim.common import DncsimError
from dncsim.scenarios.source_config import ColorName, ShapeName, ShapesConfig, ShapesNuisance, SizeName, StyleName
from dncsim.scenarios.sources import SourceData, Split, derived_seed

# The config classes and the catalogue's names live in scenarios/source_config.py (torch-free, so that
# validating a config stays fast) and are re-exported here.
__all__ = ["ShapesConfig", "ShapesNuisance", "generate_shapes", "render_shapes", "load_shapes",
           "LABELINGS", "SHAPES", "COLORS", "SIZES", "STYLES", "ShapeName", "ColorName", "SizeName", "StyleName"]

LABELINGS = ("shape", "color", "size", "style")

COLORS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.90, 0.08, 0.08),
    "green": (0.10, 0.72, 0.12),
    "blue": (0.10, 0.25, 0.95),
    "yellow": (0.96, 0.90, 0.08),
    "magenta": (0.92, 0.12, 0.88),
    "cyan": (0.08, 0.88, 0.92),
    "orange": (1.00, 0.52, 0.02),
    "purple": (0.45, 0.10, 0.70),
}
"""RGB of each hue, all far from the grey background."""

SIZES: Dict[str, float] = {"small": 0.16, "medium": 0.2, "large": 0.25, "xlarge": 0.32}
"""Nominal radius of each size as a fraction of the image side (small: 5.1 px at 32x32); consecutive
sizes differ by a factor of about 1.6 in area. Every shape of every size fits a 16x16 image."""

STYLES: Tuple[str, ...] = get_args(StyleName)

BACKGROUND = 0.45            # grey level of the background
OUTLINE_WIDTH = 0.28         # width of the outline band, in units of the nominal radius
STRIPE_PERIOD = 0.75         # one coloured plus one background stripe, in units of the nominal radius
STRIPE_FILL = 0.6            # fraction of a period that is coloured
EDGE_MARGIN = 1.0            # pixels kept free between a shape and the image border
CHUNK_PIXELS = 1 << 22       # pixels rendered at once: bounds each float buffer to ~16 MB


# --- signed distance functions in the shape frame (nominal radius 1; negative inside) ---------------

def _length(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(u * u + v * v)


def _circle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _length(u, v) - 1.0


def _square(u: torch.Tensor, v: torch.Tensor, half: float = 0.88) -> torch.Tensor:
    qu, qv = u.abs() - half, v.abs() - half
    return _length(qu.clamp(min=0), qv.clamp(min=0)) + torch.maximum(qu, qv).clamp(max=0)


def _star(u: torch.Tensor, v: torch.Tensor, points: int, tip: float, inner: float) -> torch.Tensor:
    """A ``points``-fold star, tips at radius ``tip`` (one pointing up), notches at radius ``inner``.

    The plane is folded into the half-sector between a tip ray and a notch ray, where the boundary
    is the single segment from the tip to the notch. A regular polygon is the star whose notches
    lie on its edges (``inner = tip * cos(pi / points)``).
    """
    sector = 2 * math.pi / points
    a = torch.remainder(torch.atan2(v, u) + math.pi / 2, sector)
    b = sector / 2 - (a - sector / 2).abs()                  # angle from the nearest tip ray
    r = _length(u, v)
    wu, wv = r * torch.cos(b) - tip, r * torch.sin(b)        # relative to the tip
    eu, ev = inner * math.cos(sector / 2) - tip, inner * math.sin(sector / 2)
    t = ((wu * eu + wv * ev) / (eu * eu + ev * ev)).clamp(0, 1)
    dist = _length(wu - t * eu, wv - t * ev)
    return torch.where(eu * wv - ev * wu > 0, -dist, dist)


def _triangle(u: torch.Tensor, v: torch.Tensor, radius: float = 1.18, rounding: float = 0.18) -> torch.Tensor:
    """Equilateral triangle, corners rounded by ``rounding`` (which keeps its extent close to the others')."""
    return _star(u, v, 3, radius, radius * math.cos(math.pi / 3)) - rounding


def _five_star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _star(u, v, 5, 1.35, 0.8)


def _cross(u: torch.Tensor, v: torch.Tensor, arm: float = 1.1, half_width: float = 0.46) -> torch.Tensor:
    """A plus sign: arms reach ``arm`` from the centre and are 2 * ``half_width`` wide."""
    x, y = u.abs(), v.abs()
    x, y = torch.maximum(x, y), torch.minimum(x, y)          # fold onto the horizontal arm
    qu, qv = x - arm, y - half_width
    k = torch.maximum(qu, qv)
    outside = k > 0
    wu = torch.where(outside, qu, half_width - x)
    wv = torch.where(outside, qv, -k)
    return torch.sign(k) * _length(wu.clamp(min=0), wv.clamp(min=0))


def _crescent(u: torch.Tensor, v: torch.Tensor, outer: float = 1.3, bite: float = 1.0,
              offset: float = 0.8) -> torch.Tensor:
    """The disc of radius ``outer`` minus the disc of radius ``bite`` centred ``offset`` to its right."""
    y = v.abs()
    a = (outer * outer - bite * bite + offset * offset) / (2 * offset)
    b = math.sqrt(outer * outer - a * a)                     # (a, b): the upper horn tip
    near_tip = u * b - y * a > offset * (b - y).clamp(min=0)
    body = torch.maximum(_length(u, y) - outer, bite - _length(u - offset, y))
    return torch.where(near_tip, _length(u - a, y - b), body)


def _heart(u: torch.Tensor, v: torch.Tensor, scale: float = 1.85, lift: float = 0.62) -> torch.Tensor:
    """Two lobes on top, the tip pointing down (image rows grow downwards)."""
    x, y = (u / scale).abs(), lift - v / scale
    lobe = _length(x - 0.25, y - 0.75) - math.sqrt(2) / 4
    m = (x + y).clamp(min=0) * 0.5
    body = torch.sqrt(torch.minimum(x * x + (y - 1) ** 2, (x - m) ** 2 + (y - m) ** 2)) * torch.sign(x - y)
    return torch.where(x + y > 1, lobe, body) * scale


Sdf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SHAPES: Dict[str, Tuple[Sdf, float]] = {
    "circle": (_circle, 1.0),
    "square": (_square, 1.245),
    "triangle": (_triangle, 1.36),
    "cross": (_cross, 1.193),
    "star": (_five_star, 1.35),
    "crescent": (_crescent, 1.3),
    "heart": (_heart, 1.18),
}
"""Each shape's signed distance function and extent (largest distance of a point from the centre),
both in units of the nominal radius; the areas are within 0.96..1.02 of the unit circle's."""


# --- generation ------------------------------------------------------------------------------------

def _factorial_labels(cfg: ShapesConfig, repeats: int, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """Every cell of the design ``repeats`` times, in a seeded random order: labeling -> (N,) int64."""
    counts = [len(v) for v in cfg.label_names().values()]
    cells = torch.arange(math.prod(counts)).repeat(repeats)
    cells = cells[torch.randperm(cells.numel(), generator=gen)]
    labels = {}
    for name, k in reversed(list(zip(LABELINGS, counts))):
        labels[name] = cells % k
        cells = cells // k
    return {name: labels[name] for name in LABELINGS}


def _nuisance(cfg: ShapesConfig, labels: Dict[str, torch.Tensor], gen: torch.Generator):
    """Per image: radius (px), rotation angle, centre offset (px, (N, 2) as x, y) and background level.

    The offset is uniform within the room the image's own shape and size leave inside the border.
    Disabled nuisances are still drawn (then zeroed), so switching one off leaves the others unchanged.
    """
    n, side = labels["shape"].numel(), cfg.image_size
    nu = cfg.nuisance
    radius = torch.tensor([SIZES[s] * side for s in cfg.sizes])[labels["size"]]
    extent = torch.tensor([SHAPES[s][1] for s in cfg.shapes])[labels["shape"]] * radius
    angle = torch.rand(n, generator=gen) * (2 * math.pi)
    room = (side / 2 - EDGE_MARGIN - extent).clamp(min=0)
    offset = (torch.rand(n, 2, generator=gen) * 2 - 1) * room[:, None]
    background = BACKGROUND + (torch.rand(n, generator=gen) * 2 - 1) * nu.background_jitter
    return (radius, angle if nu.rotation else torch.zeros(n),
            offset if nu.position else torch.zeros(n, 2), background)


def _coverage_from_distance(d_px: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] from a signed distance in pixels (one pixel wide ramp)."""
    return (0.5 - d_px).clamp(0, 1)


def _stripes(v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Coverage of stripes parallel to the shape frame's u axis, one through the centre.

    ``v`` is in nominal radii, ``radius`` in pixels; a fraction STRIPE_FILL of each period is coloured.
    """
    phase = torch.remainder(v / STRIPE_PERIOD + 0.5, 1.0)
    return _coverage_from_distance(((phase - 0.5).abs() - STRIPE_FILL / 2) * (STRIPE_PERIOD * radius))


def _alpha(cfg: ShapesConfig, labels: Dict[str, torch.Tensor], radius: torch.Tensor, angle: torch.Tensor,
           offset: torch.Tensor) -> torch.Tensor:
    """(n, H, W) foreground coverage of a chunk of images."""
    side = cfg.image_size
    grid = torch.arange(side, dtype=torch.float32) + 0.5 - side / 2           # pixel centres
    dx = grid[None, None, :] - offset[:, 0, None, None]
    dy = grid[None, :, None] - offset[:, 1, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    r = radius[:, None, None]
    u, v = (cos * dx + sin * dy) / r, (cos * dy - sin * dx) / r
    d = torch.empty_like(u)
    for k, name in enumerate(cfg.shapes):
        m = labels["shape"] == k
        d[m] = SHAPES[name][0](u[m], v[m])
    d_px = d * r
    alpha = _coverage_from_distance(d_px)
    for k, style in enumerate(cfg.styles):
        m = labels["style"] == k
        if style == "outline":
            alpha[m] = alpha[m] - _coverage_from_distance(d_px[m] + OUTLINE_WIDTH * r[m])
        elif style == "striped":
            alpha[m] = alpha[m] * _stripes(v[m], r[m])
    return alpha


def _render(cfg: ShapesConfig, labels: Dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
    """(N, 3, H, W) images of the given labels, nuisances and noise drawn from ``gen``."""
    radius, angle, offset, background = _nuisance(cfg, labels, gen)
    palette = torch.tensor([COLORS[c] for c in cfg.colors])
    n, side = radius.numel(), cfg.image_size
    images = torch.empty(n, 3, side, side)
    step = max(1, CHUNK_PIXELS // (side * side))
    for start in range(0, n, step):
        sl = slice(start, start + step)
        chunk = {k: v[sl] for k, v in labels.items()}
        alpha = _alpha(cfg, chunk, radius[sl], angle[sl], offset[sl])[:, None]
        color = palette[chunk["color"]][:, :, None, None]
        img = torch.lerp(background[sl, None, None, None].expand_as(color), color, alpha)
        if cfg.nuisance.noise_std > 0:
            img = img + torch.randn(img.shape, generator=gen) * cfg.nuisance.noise_std
        images[sl] = img.clamp_(0, 1)
    return images


def render_shapes(cfg: ShapesConfig, labels: Dict[str, torch.Tensor], seed: int) -> torch.Tensor:
    """Images (N, 3, H, W) float32 in [0, 1] of the given labels (every labeling of LABELINGS -> (N,) ids
    in the order of the config lists), nuisances drawn with ``torch.Generator().manual_seed(seed)``."""
    missing = [name for name in LABELINGS if name not in labels]
    if missing:
        raise ValueError(f"render_shapes needs labels for {missing}")
    return _render(cfg, {name: labels[name] for name in LABELINGS}, torch.Generator().manual_seed(int(seed)))


def generate_shapes(cfg: ShapesConfig, repeats: int, seed: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Render the balanced full factorial design of ``cfg`` with ``repeats`` images per cell.

    Returns ``(images, labels)``: images (N, 3, H, W) float32 in [0, 1] with
    N = len(shapes) * len(colors) * len(sizes) * len(styles) * repeats and H = W = ``cfg.image_size``;
    labels ``{"shape", "color", "size", "style"}`` -> (N,) int64 ids in the order of the config lists.
    The sample order is shuffled and every nuisance drawn with ``torch.Generator().manual_seed(seed)``;
    the same (cfg, repeats, seed) gives bit-identical tensors and the global RNG is not used.
    """
    if repeats < 1:
        raise DncsimError(f"repeats must be >= 1; got {repeats}")
    gen = torch.Generator().manual_seed(seed)
    labels = _factorial_labels(cfg, repeats, gen)
    return _render(cfg, labels, gen), labels


def _sub_seed(seed: int, split: str) -> int:
    """Seed of one split: train and test never share a generator, for any two seeds; the probe split's
    seed is derived apart (``derived_seed``)."""
    if split == "probe":
        return derived_seed(seed, "shapes-probe")
    return 2 * seed + (split == "test")


def load_shapes(cfg: ShapesConfig, seed: int) -> SourceData:
    """The ``shapes`` source: train, test and probe splits rendered with different sub-seeds of ``seed``.

    train: ``cfg.train_repeats`` per cell (seed 2 * seed); test: ``cfg.test_repeats`` (2 * seed + 1);
    probe: ``cfg.probe_repeats`` (a derived seed). Each split is its own balanced full factorial. See
    :func:`generate_shapes` for shapes and labels; the default labeling is shape; ``render`` draws new
    images for any labels (:func:`render_shapes`).
    """
    splits = {}
    for split, repeats in (("train", cfg.train_repeats), ("test", cfg.test_repeats), ("probe", cfg.probe_repeats)):
        splits[split] = Split(*generate_shapes(cfg, repeats, _sub_seed(seed, split)))
    values = cfg.label_names()
    info = {"image_size": cfg.image_size, "train_repeats": cfg.train_repeats, "test_repeats": cfg.test_repeats,
            "probe_repeats": cfg.probe_repeats,
            "cells": math.prod(len(v) for v in values.values()), "nuisance": cfg.nuisance.model_dump(),
            "seeds": {split: _sub_seed(seed, split) for split in splits}}
    return SourceData(name="shapes", train=splits["train"], test=splits["test"], label_names=values,
                      default_labeling="shape", info=info, probe=splits["probe"],
                      render=lambda labels, render_seed: render_shapes(cfg, labels, render_seed))
