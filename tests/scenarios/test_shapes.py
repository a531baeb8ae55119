"""scenarios.shapes: the factorial design, determinism, and that every attribute is in the pixels."""
import itertools
import math
from typing import get_args

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import ndimage
from scipy.spatial import ConvexHull

import dncsim.scenarios.shapes as shapes_mod
from dncsim.common import one_line_error
from dncsim.scenarios.shapes import (BACKGROUND, COLORS, LABELINGS, SHAPES, SIZES, STYLES, ColorName, ShapeName,
                              ShapesConfig, SizeName, generate_shapes, load_shapes)
from dncsim.scenarios.sources import SourceData

QUIET = {"position": False, "rotation": False, "noise_std": 0.0, "background_jitter": 0.0}
ODD = dict(shapes=["star", "circle", "heart"], colors=["cyan", "red", "orange", "purple", "green"],
           sizes=["xlarge", "small"], styles=["striped", "filled", "outline"])
EVERY = dict(shapes=list(SHAPES), colors=list(COLORS), sizes=list(SIZES), styles=list(STYLES))


def foreground(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: pixels whose colour is far from the image's background (the median border colour)."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    return (x - background).norm(dim=1) > 0.25


@pytest.fixture(scope="module")
def every():
    """Two images of every cell of the full catalogue with the default nuisance, 32x32."""
    return generate_shapes(ShapesConfig(**EVERY), 2, seed=1)


# --- the design ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,repeats", [({}, 3), (ODD, 2)])
def test_full_factorial_is_exactly_balanced_and_pairwise_independent(kwargs, repeats):
    cfg = ShapesConfig(**kwargs)
    x, labels = generate_shapes(cfg, repeats, seed=0)
    k = {name: len(v) for name, v in cfg.label_names().items()}
    assert list(labels) == list(LABELINGS)
    assert x.shape[0] == math.prod(k.values()) * repeats
    for name in LABELINGS:
        assert torch.bincount(labels[name], minlength=k[name]).tolist() == [x.shape[0] // k[name]] * k[name]
    for a, b in itertools.combinations(LABELINGS, 2):
        counts = torch.bincount(labels[a] * k[b] + labels[b], minlength=k[a] * k[b])
        assert counts.tolist() == [x.shape[0] // (k[a] * k[b])] * (k[a] * k[b]), (a, b)
    cells = torch.stack([labels[n] for n in LABELINGS], 1)
    assert torch.unique(cells, dim=0, return_counts=True)[1].eq(repeats).all()


def test_order_is_shuffled():
    _, labels = generate_shapes(ShapesConfig(), 2, seed=0)
    assert labels["shape"][:24].unique().numel() > 1 and labels["style"][:8].unique().numel() > 1


def test_shapes_dtypes_and_ranges():
    x, labels = generate_shapes(ShapesConfig(**ODD), 1, seed=3)
    assert x.shape == (3 * 5 * 2 * 3, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1 and x.min() < 0.1 and x.max() > 0.9
    assert all(v.dtype == torch.int64 and v.shape == (90,) for v in labels.values())
    assert [int(labels[n].max()) for n in LABELINGS] == [2, 4, 1, 2]
    big, _ = generate_shapes(ShapesConfig(image_size=48), 1, seed=3)
    small, _ = generate_shapes(ShapesConfig(image_size=16), 1, seed=3)
    assert big.shape == (96, 3, 48, 48) and small.shape == (96, 3, 16, 16)


def test_catalogue_matches_the_accepted_names():
    assert list(SHAPES) == list(get_args(ShapeName)) and len(SHAPES) >= 6
    assert list(COLORS) == list(get_args(ColorName)) and len(COLORS) >= 6
    assert list(SIZES) == list(get_args(SizeName)) and list(STYLES) == ["filled", "outline", "striped"]
    rgb = torch.tensor(list(COLORS.values()))
    assert torch.pdist(rgb).min() > 0.3 and (rgb - BACKGROUND).norm(dim=1).min() > 0.4
    radii = list(SIZES.values())
    assert radii == sorted(radii) and min(b / a for a, b in zip(radii, radii[1:])) > 1.2
    assert radii[0] * 32 >= 5


@pytest.mark.parametrize("name", list(SHAPES))
def test_shapes_have_about_equal_area_and_lie_within_their_extent(name):
    sdf, extent = SHAPES[name]
    g = torch.linspace(-2, 2, 801)
    v, u = torch.meshgrid(g, g, indexing="ij")
    d = sdf(u, v)
    inside = d <= 0
    area = inside.sum().item() * (4 / 800) ** 2
    assert 0.95 * math.pi < area < 1.03 * math.pi
    assert (u ** 2 + v ** 2)[inside].max().sqrt() <= extent
    assert max(SIZES.values()) * extent * 16 <= 16 / 2 - shapes_mod.EDGE_MARGIN   # fits even at 16x16
    dv, du = torch.gradient(d, spacing=(g, g))
    near = d.abs() < 0.2                                              # anti-aliasing needs true distances
    assert ((du ** 2 + dv ** 2).sqrt()[near] - 1).abs().quantile(0.95) < 0.05


# --- seeding ---------------------------------------------------------------------------------------

def test_deterministic_per_seed_and_global_rng_untouched():
    cfg = ShapesConfig(**ODD)
    state = torch.get_rng_state()
    x1, l1 = generate_shapes(cfg, 2, seed=7)
    x2, l2 = generate_shapes(cfg, 2, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(x1, x2) and all(torch.equal(l1[k], l2[k]) for k in LABELINGS)
    x3, l3 = generate_shapes(cfg, 2, seed=8)
    assert not torch.equal(x1, x3) and not torch.equal(l1["shape"], l3["shape"])


def test_chunking_does_not_change_the_images(monkeypatch):
    cfg = ShapesConfig(**ODD, nuisance={"noise_std": 0.0})
    whole, labels = generate_shapes(cfg, 3, seed=2)
    monkeypatch.setattr(shapes_mod, "CHUNK_PIXELS", 32 * 32 * 7)        # 7 images per chunk, 39 chunks
    chunked, labels2 = generate_shapes(cfg, 3, seed=2)
    assert torch.equal(whole, chunked) and torch.equal(labels["color"], labels2["color"])


def test_nuisance_switches():
    quiet, labels = generate_shapes(ShapesConfig(nuisance=QUIET), 2, seed=0)
    cells = torch.stack([labels[n] for n in LABELINGS], 1)
    first, second = (cells == cells[0]).all(1).nonzero().flatten().tolist()
    assert torch.equal(quiet[first], quiet[second])                    # no nuisance: one image per cell
    assert torch.equal(quiet[:, :, 0, 0], torch.full((192, 3), BACKGROUND))
    rotated, _ = generate_shapes(ShapesConfig(nuisance={**QUIET, "rotation": True}), 2, seed=0)
    moved, _ = generate_shapes(ShapesConfig(nuisance={**QUIET, "position": True}), 2, seed=0)
    ink = (quiet - BACKGROUND).abs().sum((1, 2, 3))                    # grows linearly with the covered area
    for x in (rotated, moved):
        assert not torch.equal(x[first], x[second])
        change = ((x - BACKGROUND).abs().sum((1, 2, 3)) / ink - 1).abs()
        assert change.mean() < 0.01 and change.max() < 0.06


def test_shapes_stay_inside_the_image():
    cfg = ShapesConfig(**{**EVERY, "sizes": ["large", "xlarge"]}, nuisance={"noise_std": 0, "background_jitter": 0})
    x, _ = generate_shapes(cfg, 3, seed=0)
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    assert torch.equal(border, torch.full_like(border, BACKGROUND))
    assert foreground(x).sum() > 0


def test_load_shapes_returns_a_source_with_different_train_and_test():
    cfg = ShapesConfig(train_repeats=2, test_repeats=2)
    src = load_shapes(cfg, seed=5)
    assert isinstance(src, SourceData) and src.name == "shapes" and src.is_image
    assert src.input_shape == (3, 32, 32) and src.default_labeling == "shape"
    assert src.labelings == ["shape", "color", "size", "style"]
    assert src.label_names == {"shape": ["circle", "square", "triangle", "cross"],
                               "color": ["red", "green", "blue", "yellow"],
                               "size": ["small", "medium", "large"], "style": ["filled", "outline"]}
    assert len(src.train) == len(src.test) == 192 and src.num_classes("size") == 3
    assert not torch.equal(src.train.x, src.test.x)
    assert src.info["cells"] == 96 and src.info["image_size"] == 32 and src.info["nuisance"]["rotation"] is True
    seeds = src.info["seeds"]
    assert (seeds["train"], seeds["test"]) == (10, 11) and seeds["probe"] not in (10, 11)
    # the probe-train split: its own balanced factorial render (probe_repeats = 10 per cell by default)
    assert len(src.probe) == 960 and not torch.equal(src.probe.x[:192], src.train.x)
    assert all(torch.bincount(src.probe.labels[lab]).unique().numel() == 1 for lab in src.labelings)
    x, labels = generate_shapes(cfg, 2, seed=10)
    assert torch.equal(src.train.x, x) and torch.equal(src.train.labels["size"], labels["size"])
    assert len(load_shapes(ShapesConfig(train_repeats=1, test_repeats=3), seed=0).test) == 288


# --- every attribute is in the pixels (default nuisance) --------------------------------------------

def test_foreground_area_grows_with_size(every):
    x, labels = every
    cnt = foreground(x).sum((1, 2)).float()
    filled = labels["style"] == STYLES.index("filled")
    for s in range(len(SHAPES)):
        m = filled & (labels["shape"] == s)
        means = [cnt[m & (labels["size"] == k)].mean().item() for k in range(len(SIZES))]
        assert means == sorted(means) and min(np.diff(means)) > 30, (list(SHAPES)[s], means)
    expected = torch.tensor([math.pi * (r * 32) ** 2 for r in SIZES.values()])
    guess = (cnt[filled, None].log() - expected.log()).abs().argmin(1)
    assert (guess == labels["size"][filled]).float().mean() > 0.97


def test_mean_foreground_colour_is_the_labelled_hue(every):
    x, labels = every
    fg = foreground(x)
    mean = (x * fg[:, None]).sum((2, 3)) / fg.sum((1, 2))[:, None]
    guess = torch.cdist(mean, torch.tensor(list(COLORS.values()))).argmin(1)
    assert (guess == labels["color"]).float().mean() > 0.99


def test_outline_covers_fewer_pixels_than_filled(every):
    x, labels = every
    cnt = foreground(x).sum((1, 2))
    for s, k in itertools.product(range(len(SHAPES)), range(len(SIZES))):
        m = (labels["shape"] == s) & (labels["size"] == k)
        filled, outline = (cnt[m & (labels["style"] == STYLES.index(st))] for st in ("filled", "outline"))
        assert outline.max() < filled.min(), (list(SHAPES)[s], list(SIZES)[k])


def guess_style(fg: torch.Tensor) -> torch.Tensor:
    """striped: several separate pieces; outline: one piece around a hole; filled: one solid piece."""
    out = []
    for mask in fg.numpy():
        parts, _ = ndimage.label(mask)
        pieces = int((np.bincount(parts.ravel())[1:] >= 4).sum())       # ignore 1-3 pixel specks at tips
        hole = 1 - mask.sum() / ndimage.binary_fill_holes(mask).sum()
        out.append(STYLES.index("striped") if pieces >= 2 else
                   STYLES.index("outline") if hole > 0.15 else STYLES.index("filled"))
    return torch.tensor(out)


def test_style_is_recoverable_from_pieces_and_holes(every):
    x, labels = every
    assert (guess_style(foreground(x)) == labels["style"]).float().mean() > 0.97


def moment_invariants(fg: torch.Tensor) -> torch.Tensor:
    """(N, 8) rotation-, scale- and translation-invariant magnitudes of complex moments of the mask."""
    w = fg.double()
    ys, xs = torch.meshgrid(*(torch.arange(n, dtype=torch.double) for n in w.shape[1:]), indexing="ij")
    area = w.sum((1, 2))
    cx, cy = (w * xs).sum((1, 2)) / area, (w * ys).sum((1, 2)) / area
    z = torch.complex(xs - cx[:, None, None], ys - cy[:, None, None])
    feats = []
    for p, q in [(1, 1), (2, 0), (2, 1), (3, 0), (4, 0), (2, 2), (5, 0), (3, 1)]:
        c = (w * z ** p * z.conj() ** q).sum((1, 2)).abs() / area ** ((p + q) / 2 + 1)
        feats.append(c ** (1 / (p + q)))
    return torch.stack(feats, 1)


def solidity(fg: torch.Tensor) -> torch.Tensor:
    """(N,) foreground area over the area of its convex hull (the hull of the pixel squares)."""
    out = []
    for mask in fg.numpy():
        ys, xs = np.nonzero(mask)
        corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
        out.append(mask.sum() / ConvexHull(corners).volume)
    return torch.tensor(out, dtype=torch.double)


def filled_shape_features(seed: int):
    """(features (n, 9), shape ids (n,)) of the filled images of every shape and size (two colors)."""
    cfg = ShapesConfig(**{**EVERY, "colors": ["red", "blue"], "styles": ["filled", "outline"]})
    x, labels = generate_shapes(cfg, 8, seed=seed)
    filled = labels["style"] == STYLES.index("filled")
    fg = foreground(x[filled])
    return torch.cat([moment_invariants(fg), solidity(fg)[:, None]], 1), labels["shape"][filled]


def test_shape_is_recoverable_from_moments_and_solidity():
    fit, y_fit = filled_shape_features(seed=1)
    held_out, y = filled_shape_features(seed=2)
    mu, sd = fit.mean(0), fit.std(0)
    centroids = torch.stack([((fit - mu) / sd)[y_fit == s].mean(0) for s in range(len(SHAPES))])
    guess = torch.cdist((held_out - mu) / sd, centroids).argmin(1)          # nearest class mean
    assert (guess == y).float().mean() > 0.97


# --- config errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,kind,text", [
    ({"shapes": ["circle", "hexagon"]}, "literal_error", "'hexagon' is not one of circle, square, triangle"),
    ({"colors": ["red", "pink"]}, "literal_error", "'pink' is not one of red, green, blue"),
    ({"sizes": ["small", "huge"]}, "literal_error", "is not one of small, medium, large, xlarge"),
    ({"styles": ["filled", "dotted"]}, "literal_error", "is not one of filled, outline, striped"),
    ({"colors": ["red", "blue", "red"]}, "value_error", "colors: values must be distinct; red repeated"),
    ({"shapes": ["circle"]}, "value_error", "shapes: needs at least 2 values to be a labeling; got 1"),
    ({"image_size": 8}, "greater_than_equal", "image_size"),
    ({"image_size": 256}, "less_than_equal", "image_size"),
    ({"train_repeats": 0}, "greater_than_equal", "train_repeats"),
    ({"nuisance": {"noise_std": 0.8}}, "less_than_equal", "nuisance.noise_std"),
    ({"colour": ["red", "blue"]}, "extra_forbidden", "unknown key 'colour' (did you mean 'colors'?)"),
    ({"nuisance": {"scale": True}}, "extra_forbidden", "nuisance: unknown key 'scale'"),
])
def test_config_errors(kwargs, kind, text):
    with pytest.raises(ValidationError) as err:
        ShapesConfig(**kwargs)
    assert err.value.errors()[0]["type"] == kind
    assert text in one_line_error(err.value, ShapesConfig, "source")


def test_config_defaults_and_discriminator():
    cfg = ShapesConfig.model_validate({"name": "shapes"})
    assert cfg.image_size == 32 and cfg.train_repeats == 30 and cfg.test_repeats == 10
    assert cfg.shapes == ["circle", "square", "triangle", "cross"] and cfg.styles == ["filled", "outline"]
    assert cfg.nuisance.position and cfg.nuisance.rotation and cfg.nuisance.noise_std == 0.05
    with pytest.raises(ValidationError):
        ShapesConfig(name="digits")
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        generate_shapes(cfg, 0, seed=0)
