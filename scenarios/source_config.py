"""The source sections of a scenario config (``scenario.source``), one class per data source.

Defined here, apart from the loaders that read them (``shapes.py``, ``digits.py``, ``features.py``,
``torchvision_sources.py``, each of which re-exports its own classes), so that validating a config
imports neither torch nor torchvision: validation only, nothing here imports either.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Literal, Optional

from pydantic import Field, field_validator

from dncsim.common import StrictModel

__all__ = ["ShapeName", "ColorName", "SizeName", "StyleName", "ShapesNuisance", "ShapesConfig", "DigitsConfig",
           "FeaturesSourceConfig", "TorchvisionConfig", "MNISTConfig", "FashionMNISTConfig", "KMNISTConfig",
           "Cifar10Config", "Cifar100Config"]


# --- shapes (scenarios/shapes.py: the catalogue and the renderer) -----------------------------------

ShapeName = Literal["circle", "square", "triangle", "cross", "star", "crescent", "heart"]
ColorName = Literal["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple"]
SizeName = Literal["small", "medium", "large", "xlarge"]
StyleName = Literal["filled", "outline", "striped"]


class ShapesNuisance(StrictModel):
    """Variation that belongs to no labeling, drawn independently of the labels for every image."""

    position: bool = Field(True, description="random offset of the centre, the shape staying inside the image")
    rotation: bool = Field(True, description="uniform random rotation in [0, 360) degrees")
    noise_std: float = Field(0.05, ge=0, le=0.5, description="std of Gaussian noise added to every pixel and channel")
    background_jitter: float = Field(0.05, ge=0, le=0.25,
                                     description="background grey level drawn uniformly within +-this of 0.45")


class ShapesConfig(StrictModel):
    """The ``shapes`` source: which values each labeling takes, the image size and samples per cell."""

    name: Literal["shapes"] = "shapes"
    image_size: int = Field(32, ge=16, le=128, description="side of the square images in pixels")
    shapes: List[ShapeName] = Field(default_factory=lambda: ["circle", "square", "triangle", "cross"])
    colors: List[ColorName] = Field(default_factory=lambda: ["red", "green", "blue", "yellow"])
    sizes: List[SizeName] = Field(default_factory=lambda: ["small", "medium", "large"])
    styles: List[StyleName] = Field(default_factory=lambda: ["filled", "outline"])
    train_repeats: int = Field(30, ge=1, description="training samples per (shape, color, size, style) cell")
    probe_repeats: int = Field(10, ge=1, description="probe-train samples per cell (evaluation data, rendered "
                                                     "independently of the training data)")
    test_repeats: int = Field(10, ge=1, description="test (probe-test) samples per (shape, color, size, style) cell")
    nuisance: ShapesNuisance = Field(default_factory=ShapesNuisance)

    @field_validator("shapes", "colors", "sizes", "styles")
    @classmethod
    def _distinct_values(cls, v: List[str]) -> List[str]:
        dup = sorted({x for x in v if v.count(x) > 1})
        if dup:
            raise ValueError(f"values must be distinct; {', '.join(dup)} repeated")
        if len(v) < 2:
            raise ValueError(f"needs at least 2 values to be a labeling; got {len(v)}")
        return v

    def label_names(self) -> Dict[str, List[str]]:
        """Labeling name -> its value names in label-id order (shape, color, size, style)."""
        return {"shape": list(self.shapes), "color": list(self.colors), "size": list(self.sizes),
                "style": list(self.styles)}


# --- digits (scenarios/digits.py) -------------------------------------------------------------------

class DigitsConfig(StrictModel):
    """``sklearn.datasets.load_digits``, split into train and test with the scenario seed."""

    name: Literal["digits"] = "digits"
    image_size: Optional[int] = Field(None, ge=8, le=128,
                                      description="upscale bilinearly to image_size x image_size (default: 8x8)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="fraction of every class held out for testing")


# --- features (scenarios/features.py: the .npz format) ---------------------------------------------

class FeaturesSourceConfig(StrictModel):
    """Precomputed embeddings as a source: ``path`` (an .npz in the format ``scenarios/features.py``
    describes); ``test_path`` a second file with the same arrays for the test split, or else a seeded
    split of ``test_fraction`` stratified by the first labeling; ``labelings`` the label arrays to use
    (default: all)."""

    name: Literal["features"] = "features"
    path: Path
    test_path: Optional[Path] = None
    labelings: Optional[List[str]] = Field(None, min_length=1)
    test_fraction: float = Field(0.25, gt=0, lt=1)


# --- torchvision data sets (scenarios/torchvision_sources.py) --------------------------------------

class TorchvisionConfig(StrictModel):
    """Fields shared by the torchvision sources (each subclass adds its ``name``)."""

    data_root: Path = Field(description="folder holding the dataset's files in torchvision's layout")
    download: bool = Field(False, description="let torchvision download missing files (needs internet)")
    image_size: Optional[int] = Field(None, ge=8, le=256,
                                      description="resize bilinearly to image_size x image_size (default: native)")
    max_train: Optional[int] = Field(None, ge=1, description="a seeded stratified subset of this many train samples")
    max_test: Optional[int] = Field(None, ge=1, description="a seeded stratified subset of this many test samples")


class MNISTConfig(TorchvisionConfig):
    """Handwritten digits, 28x28 grayscale, 10 classes."""

    name: Literal["mnist"] = "mnist"


class FashionMNISTConfig(TorchvisionConfig):
    """Zalando clothing images, 28x28 grayscale, 10 classes."""

    name: Literal["fashion_mnist"] = "fashion_mnist"


class KMNISTConfig(TorchvisionConfig):
    """Kuzushiji (cursive Japanese) characters, 28x28 grayscale, 10 classes."""

    name: Literal["kmnist"] = "kmnist"


class Cifar10Config(TorchvisionConfig):
    """Natural images, 32x32 RGB, 10 classes."""

    name: Literal["cifar10"] = "cifar10"


class Cifar100Config(TorchvisionConfig):
    """Natural images, 32x32 RGB, 100 fine classes grouped into 20 coarse superclasses."""

    name: Literal["cifar100"] = "cifar100"
