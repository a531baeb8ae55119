"""Batched augmentation: shapes and ranges, per-sample randomness, seeding, vectors, and which
augmentations keep or destroy the attributes of the shapes data."""
import math

import kornia.augmentation as K
import pydantic
import pytest
import torch
from torch import nn

from dncsim.common import DncsimError, one_line_error
from dncsim.scenarios.shapes import ShapesConfig, ShapesNuisance, generate_shapes
from dncsim.simulator.augment import AugmentConfig, build_augment, two_views

EVERYTHING_ON = AugmentConfig(resized_crop=True, rotation=30, hue=0.2, grayscale_p=0.5, blur_p=0.5, noise_std=0.2,
                              brightness=1.0, contrast=1.0, saturation=1.0, jitter_p=1.0)


@pytest.mark.parametrize("cfg", [AugmentConfig(), EVERYTHING_ON], ids=["default", "everything"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 16, 16)], ids=str)
def test_view_keeps_shape_dtype_and_unit_range(cfg, shape):
    torch.manual_seed(0)
    x = torch.rand(8, *shape)
    view = build_augment(cfg, shape)(x)
    assert view.shape == x.shape and view.dtype == x.dtype
    assert view.min() >= 0 and view.max() <= 1
    assert not torch.equal(view, x)


def test_two_views_differ_and_each_sample_draws_its_own_parameters():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32).expand(16, -1, -1, -1).contiguous()     # 16 copies of one image
    v1, v2 = two_views(build_augment(AugmentConfig(), (3, 32, 32)), x)
    assert not torch.equal(v1, v2)
    for view in (v1, v2):
        distinct = {tuple(view[i].flatten()[::37].tolist()) for i in range(16)}
        assert len(distinct) >= 12


def test_same_seed_gives_identical_views():
    x = torch.rand(32, 3, 32, 32)
    augment = build_augment(EVERYTHING_ON, (3, 32, 32))
    torch.manual_seed(7)
    a = two_views(augment, x)
    torch.manual_seed(7)
    b = two_views(augment, x)
    torch.manual_seed(8)
    c = two_views(augment, x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (12,)], ids=str)
def test_disabled_is_the_identity(shape):
    x = torch.rand(4, *shape)
    augment = build_augment(AugmentConfig(enabled=False), shape)
    assert isinstance(augment, nn.Identity)
    v1, v2 = two_views(augment, x)
    assert torch.equal(v1, x) and torch.equal(v2, x)


def test_one_channel_images_skip_the_color_parts_and_keep_brightness_and_contrast():
    cfg = AugmentConfig(translate=0, flip=False, hue=0.5, grayscale_p=1.0, saturation=1.0, jitter_p=1.0)
    augment = build_augment(cfg, (1, 28, 28))
    jitter = [m for m in augment.modules() if isinstance(m, K.ColorJitter)]
    assert not any(isinstance(m, K.RandomGrayscale) for m in augment.modules())
    assert len(jitter) == 1 and (jitter[0].saturation, jitter[0].hue) == (0.0, 0.0)
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28) * 0.5 + 0.25
    view = augment(x)
    assert view.shape == x.shape
    gain = view.std((1, 2, 3)) / x.std((1, 2, 3))
    assert gain.std() > 0.05                                   # contrast factors differ between samples


def test_vectors_get_feature_scaled_noise():
    torch.manual_seed(0)
    scale = torch.tensor([1e-3, 1.0, 1e3])
    x = torch.randn(4000, 3) * scale
    view = build_augment(AugmentConfig(vector_noise_std=0.1, vector_dropout=0.0), (3,))(x)
    assert view.shape == x.shape
    relative = ((view - x) / x.std(0, unbiased=False)).std(0)
    assert torch.allclose(relative, torch.full((3,), 0.1), rtol=0.05)


def test_vectors_get_feature_masking_to_the_batch_mean():
    torch.manual_seed(0)
    x = torch.randn(1000, 20) + 5
    view = build_augment(AugmentConfig(vector_noise_std=0.0, vector_dropout=0.3), (20,))(x)
    masked = view != x
    assert torch.equal(view[masked], x.mean(0).expand_as(x)[masked])
    assert abs(masked.float().mean().item() - 0.3) < 0.02


def test_vector_views_differ_per_sample_and_between_views():
    torch.manual_seed(0)
    x = torch.randn(1, 16).expand(64, -1).contiguous() + torch.randn(64, 16) * 1e-3
    v1, v2 = two_views(build_augment(AugmentConfig(), (16,)), x)
    assert not torch.equal(v1, v2)
    assert (v1 - x).abs().sum(1).unique().numel() == 64


# --- the attributes of the shapes data ------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes():
    """384 noise-free 32x32 shapes images (4 shapes, 4 colors, 3 sizes, 2 styles, 4 repeats)."""
    return generate_shapes(ShapesConfig(nuisance=ShapesNuisance(noise_std=0.0)), repeats=4, seed=0)


def _chroma(images):
    """Each pixel's position in the chroma plane, (N, H, W) twice; grey pixels are at the origin."""
    r, g, b = images.unbind(1)
    return r - (g + b) / 2, math.sqrt(3) / 2 * (g - b)


def _hue(images):
    """(N,) hue angle of each image's summed chroma (the grey background adds nothing)."""
    a, b = _chroma(images)
    return torch.atan2(b.sum((1, 2)), a.sum((1, 2)))


def _foreground_pixels(images):
    """(N,) number of clearly colored pixels of each image."""
    a, b = _chroma(images)
    return ((a * a + b * b).sqrt() > 0.1).sum((1, 2)).float()


def _color_accuracy(view, images, color):
    """Fraction of images whose hue is nearest to the mean hue of their color in the clean images."""
    clean = _hue(images)
    centres = torch.stack([torch.atan2(clean[color == k].sin().mean(), clean[color == k].cos().mean())
                           for k in range(int(color.max()) + 1)])
    gap = (_hue(view)[:, None] - centres[None]).remainder(2 * math.pi)
    nearest = torch.minimum(gap, 2 * math.pi - gap).argmin(1)
    return (nearest == color).float().mean().item()


def _view(cfg, images, seed=0):
    torch.manual_seed(seed)
    return build_augment(cfg, tuple(images.shape[1:]))(images)


def test_default_augmentation_keeps_the_color(shapes):
    images, labels = shapes
    assert _color_accuracy(images, images, labels["color"]) == 1.0
    assert _color_accuracy(_view(AugmentConfig(), images), images, labels["color"]) >= 0.99


@pytest.mark.parametrize("cfg", [AugmentConfig(hue=0.5), AugmentConfig(grayscale_p=1.0)], ids=["hue", "grayscale"])
def test_hue_jitter_and_grayscale_destroy_the_color(shapes, cfg):
    images, labels = shapes
    assert _color_accuracy(_view(cfg, images), images, labels["color"]) < 0.6     # 4 colors: chance is 0.25


def test_default_augmentation_keeps_the_size(shapes):
    images, labels = shapes
    filled = labels["style"] == 0
    before, after = _foreground_pixels(images)[filled], _foreground_pixels(_view(AugmentConfig(), images))[filled]
    ratio = after / before
    assert (ratio - 1).abs().median() < 0.03 and ((ratio - 1).abs() < 0.15).float().mean() > 0.9
    size = labels["size"][filled]
    means = [after[size == k].mean().item() for k in range(3)]
    assert means[0] * 1.3 < means[1] and means[1] * 1.3 < means[2]


def test_resized_crop_changes_the_size(shapes):
    images, labels = shapes
    filled = labels["style"] == 0
    cfg = AugmentConfig(resized_crop=True, crop_scale=[0.3, 0.5])
    ratio = _foreground_pixels(_view(cfg, images))[filled] / _foreground_pixels(images)[filled]
    assert ratio.median() > 1.5


# --- configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [{"translte": 4}, {"jitter_p": 1.5}, {"grayscale_p": -0.1}, {"hue": 0.6},
                                  {"translate": -1}, {"translate": "four"}, {"crop_scale": [0.8, 0.5]},
                                  {"crop_scale": [0.0, 1.0]}, {"crop_scale": [0.5, 1.2]}, {"crop_scale": [0.5]},
                                  {"crop_scale": [0.2, 0.5, 1.0]}, {"vector_dropout": 1.0}, {"rotation": 200},
                                  {"brightness": -0.3}, {"enabled": "sometimes"}])
def test_bad_configs_raise_validation_errors(data):
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig.model_validate(data)


def test_config_errors_read_as_one_line_naming_the_key():
    with pytest.raises(pydantic.ValidationError) as info:
        AugmentConfig.model_validate({"crop_scale": [0.8, 0.5]})
    assert one_line_error(info.value, AugmentConfig, "augment") == (
        "augment.crop_scale: needs 0 < low <= high <= 1; got [0.8, 0.5]")


def test_crop_scale_accepts_a_tuple_and_stays_a_list():
    assert AugmentConfig(crop_scale=(0.2, 0.9)).crop_scale == [0.2, 0.9]


def test_inputs_of_other_rank_fail_in_one_line():
    with pytest.raises(DncsimError, match=r"^augment: inputs must be images .* got shape \(3, 4\)$"):
        build_augment(AugmentConfig(), (3, 4))
