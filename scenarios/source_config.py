"""The source sections of a scenario config (``scenario.source``), one class per data source.

Defined here, apart from the loaders that read them, so that validating a config imports neither
torch nor torchvision. Each class names its loader (``loader``, a lazy ``module:function`` path) and
is registered by ``@register_source`` (``scenarios/registry.py``); registration order is the order
of the names in the config union and its error messages.
"""
from __future__ import annotations

from typing import ClassVar, Dict, List, Literal, Optional, Union

from pydantic import Field, field_validator

from dncsim.common import StrictModel, UserPath
from dncsim.scenarios.registry import register_source

__all__ = ["ShapeName", "ColorName", "SizeName", "StyleName", "ShapesNuisance", "ShapesConfig", "DigitsConfig",
           "FeaturesSourceConfig", "TorchvisionConfig", "MNISTConfig", "FashionMNISTConfig", "KMNISTConfig",
           "Cifar10Config", "Cifar100Config", "DiskSourceConfig", "DSpritesAttribute", "DSpritesConfig",
           "Shapes3DAttribute", "Shapes3DConfig", "CelebAAttribute", "CELEBA_ATTRIBUTES", "CelebAAttributesConfig",
           "ImageTableConfig"]


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


@register_source
class ShapesConfig(StrictModel):
    """The ``shapes`` source: which values each labeling takes, the image size and samples per cell."""

    loader: ClassVar[str] = "dncsim.scenarios.shapes:load_shapes"
    name: Literal["shapes"] = "shapes"
    image_size: int = Field(32, ge=16, le=128, description="side of the square images in pixels")
    shapes: List[ShapeName] = Field(default_factory=lambda: ["circle", "square", "triangle", "cross"],
                                    description="values of the shape labeling (ids in list order)")
    colors: List[ColorName] = Field(default_factory=lambda: ["red", "green", "blue", "yellow"],
                                    description="values of the color labeling (ids in list order)")
    sizes: List[SizeName] = Field(default_factory=lambda: ["small", "medium", "large"],
                                  description="values of the size labeling (ids in list order)")
    styles: List[StyleName] = Field(default_factory=lambda: ["filled", "outline"],
                                    description="values of the style labeling (ids in list order)")
    train_repeats: int = Field(30, ge=1, description="training samples per (shape, color, size, style) cell")
    probe_repeats: int = Field(10, ge=1, description="probe-train samples per cell (evaluation data, rendered "
                                                     "independently of the training data)")
    test_repeats: int = Field(10, ge=1, description="test (probe-test) samples per (shape, color, size, style) cell")
    nuisance: ShapesNuisance = Field(default_factory=ShapesNuisance,
                                     description="variation that belongs to no labeling: position, rotation, noise, "
                                                 "background")

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

@register_source
class DigitsConfig(StrictModel):
    """``sklearn.datasets.load_digits``, split into train and test with the scenario seed."""

    loader: ClassVar[str] = "dncsim.scenarios.digits:load_digits_source"
    name: Literal["digits"] = "digits"
    image_size: Optional[int] = Field(None, ge=8, le=128,
                                      description="upscale bilinearly to image_size x image_size (default: 8x8)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="fraction of every class held out for testing")


# --- torchvision data sets (scenarios/torchvision_sources.py) --------------------------------------

class TorchvisionConfig(StrictModel):
    """Fields shared by the torchvision sources (each subclass adds its ``name``)."""

    loader: ClassVar[str] = "dncsim.scenarios.torchvision_sources:load_torchvision_source"
    data_root: UserPath = Field(description="folder holding the dataset's files in torchvision's layout")
    download: bool = Field(False, description="let torchvision download missing files (needs internet)")
    image_size: Optional[int] = Field(None, ge=8, le=256,
                                      description="resize bilinearly to image_size x image_size (default: native)")
    max_train: Optional[int] = Field(None, ge=1, description="a seeded stratified subset of this many train samples")
    max_test: Optional[int] = Field(None, ge=1, description="a seeded stratified subset of this many test samples")


@register_source
class MNISTConfig(TorchvisionConfig):
    """Handwritten digits, 28x28 grayscale, 10 classes."""

    name: Literal["mnist"] = "mnist"


@register_source
class FashionMNISTConfig(TorchvisionConfig):
    """Zalando clothing images, 28x28 grayscale, 10 classes."""

    name: Literal["fashion_mnist"] = "fashion_mnist"


@register_source
class KMNISTConfig(TorchvisionConfig):
    """Kuzushiji (cursive Japanese) characters, 28x28 grayscale, 10 classes."""

    name: Literal["kmnist"] = "kmnist"


@register_source
class Cifar10Config(TorchvisionConfig):
    """Natural images, 32x32 RGB, 10 classes."""

    name: Literal["cifar10"] = "cifar10"


@register_source
class Cifar100Config(TorchvisionConfig):
    """Natural images, 32x32 RGB, 100 fine classes grouped into 20 coarse superclasses."""

    name: Literal["cifar100"] = "cifar100"


# --- features (scenarios/features.py: the .npz format) ---------------------------------------------

@register_source
class FeaturesSourceConfig(StrictModel):
    """Precomputed embeddings as a source: ``path`` (an .npz in the format ``scenarios/features.py``
    describes); ``test_path`` a second file with the same arrays for the test split, or else a seeded
    split of ``test_fraction`` stratified by the first labeling; ``labelings`` the label arrays to use
    (default: all)."""

    loader: ClassVar[str] = "dncsim.scenarios.features:load_features_source"
    name: Literal["features"] = "features"
    path: UserPath = Field(description="an .npz with 'features' (N, d) and one integer label array per labeling")
    test_path: Optional[UserPath] = Field(None,
        description="a second .npz for the test split (default: a seeded split of test_fraction)")
    labelings: Optional[List[str]] = Field(None, min_length=1,
                                           description="label arrays to use, in order (default: every label array)")
    test_fraction: float = Field(0.25, gt=0, lt=1,
                                 description="share held out for testing when there is no test_path (seeded, "
                                             "stratified by the first labeling)")


# --- multi-attribute sources read from disk (scenarios/disk_sources.py, then one module each) -------

DSpritesAttribute = Literal["shape", "scale", "orientation", "pos_x", "pos_y"]
DSpritesBinnable = Literal["orientation", "pos_x", "pos_y"]
Shapes3DAttribute = Literal["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
Shapes3DBinnable = Literal["floor_hue", "wall_hue", "object_hue", "scale", "orientation"]
CelebAAttribute = Literal[
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young"]
CELEBA_ATTRIBUTES = tuple(CelebAAttribute.__args__)
"""CelebA's 40 binary attributes in the column order of ``list_attr_celeba.txt``."""


class DiskSourceConfig(StrictModel):
    """Keys shared by the multi-attribute sources read from disk (each subclass adds its ``name``, paths
    and ``attributes``). ``balance``: ``false`` (default), ``true`` = ``combinations`` (the same count for
    every combination of the chosen attributes), or ``classes`` (every class of every chosen attribute
    equally frequent, the joint left as the data allow)."""

    balance: Union[bool, Literal["combinations", "classes"]] = Field(
        False, description="false | true (= combinations) | combinations | classes: an exactly balanced "
                           "seeded subsample of each split")
    max_samples: Optional[int] = Field(None, ge=2, description="at most this many samples, train and test together "
                                                               "(shared in proportion to the splits' sizes)")
    image_size: Optional[int] = Field(None, ge=8, le=256, description="resize (batched, bilinear, antialiased) "
                                                                      "to image_size x image_size")

    @field_validator("attributes", check_fields=False)
    @classmethod
    def _distinct_attributes(cls, v):
        if v is not None:
            dup = sorted({x for x in v if v.count(x) > 1})
            if dup:
                raise ValueError(f"attributes repeat {', '.join(dup)}")
        return v

    @field_validator("bins", check_fields=False)
    @classmethod
    def _at_least_two_bins(cls, v):
        low = sorted(k for k, b in v.items() if b < 2)
        if low:
            raise ValueError(f"bins must be at least 2 (got {', '.join(f'{k}: {v[k]}' for k in low)})")
        return v

    @property
    def balance_mode(self) -> str:
        """``none``, ``combinations`` or ``classes``."""
        if self.balance is True:
            return "combinations"
        return "none" if self.balance is False else str(self.balance)


@register_source
class DSpritesConfig(DiskSourceConfig):
    """dSprites from its official ``.npz`` (``imgs``, ``latents_classes``, ``latents_values``): attributes
    shape, scale, orientation, pos_x, pos_y; orientation and the positions can be binned into fewer
    classes (equal-width bins over the class indices); a seeded train/test split of ``test_fraction``."""

    loader: ClassVar[str] = "dncsim.scenarios.dsprites:load_dsprites"
    name: Literal["dsprites"] = "dsprites"
    data_root: UserPath = Field(description="the .npz file, or a folder holding "
                                        "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz")
    attributes: List[DSpritesAttribute] = Field(
        default_factory=lambda: ["shape", "scale", "orientation", "pos_x", "pos_y"], min_length=1,
        description="attributes turned into labelings, in order (the first is the default labeling)")
    bins: Dict[DSpritesBinnable, int] = Field(default_factory=dict, description="attribute -> number of equal-width "
                                                                                "bins over its class indices")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="share of the samples held out for testing "
                                                               "(seeded, stratified by attribute combination)")
    chunk_mb: int = Field(64, ge=1, le=4096, description="most megabytes of raw images read from the file at once")


@register_source
class Shapes3DConfig(DiskSourceConfig):
    """3dshapes from its official ``.h5`` (``images``, ``labels``): attributes floor_hue, wall_hue,
    object_hue, scale, shape, orientation (float values -> class ids in sorted order); a seeded
    train/test split of ``test_fraction``."""

    loader: ClassVar[str] = "dncsim.scenarios.shapes3d:load_shapes3d"
    name: Literal["shapes3d"] = "shapes3d"
    data_root: UserPath = Field(description="the .h5 file, or a folder holding 3dshapes.h5")
    attributes: List[Shapes3DAttribute] = Field(
        default_factory=lambda: ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"],
        min_length=1, description="attributes turned into labelings, in order (the first is the default labeling)")
    bins: Dict[Shapes3DBinnable, int] = Field(default_factory=dict, description="attribute -> number of equal-width "
                                                                                "bins over its class indices")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="share of the samples held out for testing "
                                                               "(seeded, stratified by attribute combination)")
    chunk_mb: int = Field(64, ge=1, le=4096, description="most megabytes of raw images read from the file at once")


@register_source
class CelebAAttributesConfig(DiskSourceConfig):
    """CelebA in torchvision's layout (``<data_root>/celeba/list_attr_celeba.txt``,
    ``list_eval_partition.txt``, ``img_align_celeba/*.jpg``), read directly; chosen binary attributes as
    labelings; the official partition as train/test."""

    loader: ClassVar[str] = "dncsim.scenarios.celeba:load_celeba_attributes"
    name: Literal["celeba_attributes"] = "celeba_attributes"
    data_root: UserPath = Field(description="folder holding celeba/ (torchvision's layout), or the celeba folder "
                                            "itself")
    attributes: List[CelebAAttribute] = Field(min_length=1, description="the binary attributes used as labelings")
    validation: Literal["drop", "train", "test"] = Field("drop", description="the official validation partition: "
                                                                            "left out, or added to train or test")
    image_size: Optional[int] = Field(64, ge=8, le=256, description="center-crop to a square, then resize to "
                                                                    "image_size x image_size (none: 178x178)")


@register_source
class ImageTableConfig(DiskSourceConfig):
    """Any folder of images with a CSV ``path,attr1,attr2,...`` (an optional ``split`` column of
    ``train``/``test``; otherwise a seeded split of ``test_fraction``)."""

    loader: ClassVar[str] = "dncsim.scenarios.image_table:load_image_table"
    name: Literal["image_table"] = "image_table"
    root: UserPath = Field(description="folder the CSV's paths are relative to")
    table: UserPath = Field(description="the CSV: header path,attr1,attr2,... (optionally a split column)")
    attributes: Optional[List[str]] = Field(None, min_length=1, description="columns used as labelings "
                                                                             "(default: all but path and split)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="without a split column: share held out for "
                                                               "testing (seeded, stratified by combination)")
    grayscale: bool = Field(False, description="read the images as one grey channel (default: RGB)")
