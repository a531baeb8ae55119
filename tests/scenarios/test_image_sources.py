"""scenarios.digits and scenarios.torchvision_sources: real image sources that need no download.

The torchvision tests write tiny files in each dataset's own on-disk format and load them through
the real torchvision classes. CIFAR's MD5 checks are switched off here only, with monkeypatch.
"""
import pickle
import struct

import numpy as np
import pydantic
import pytest
import torch
from torchvision import datasets

from dncsim.common import DncsimError
from dncsim.scenarios.preprocessing import stratified_pick
from dncsim.scenarios.digits import DigitsConfig, load_digits_source
from dncsim.scenarios.torchvision_sources import (Cifar10Config, Cifar100Config, FashionMNISTConfig, KMNISTConfig,
                                           MNISTConfig, load_torchvision_source)

IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
MNIST_FAMILY = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "kmnist": datasets.KMNIST}
CONFIGS = {"mnist": MNISTConfig, "fashion_mnist": FashionMNISTConfig, "kmnist": KMNISTConfig,
           "cifar10": Cifar10Config, "cifar100": Cifar100Config}


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits():
    return load_digits_source(DigitsConfig(), seed=0)


def test_digits_shapes_range_and_names(digits):
    assert digits.train.x.shape[1:] == (1, 8, 8) and digits.train.x.dtype == torch.float32
    assert len(digits.train) + len(digits.test) == 1797
    x = torch.cat([digits.train.x, digits.test.x])
    assert x.min() == 0.0 and x.max() == 1.0
    assert torch.equal(torch.unique(x * 16), torch.arange(17, dtype=torch.float32))   # 0..16 / 16
    assert digits.labelings == ["class"] and digits.default_labeling == "class"
    assert digits.label_names["class"] == [str(k) for k in range(10)]
    assert digits.info["n_train"] == len(digits.train) and digits.info["n_test"] == len(digits.test)


@pytest.mark.parametrize("fraction", [0.25, 0.1, 0.5])
def test_digits_split_is_stratified(fraction):
    src = load_digits_source(DigitsConfig(test_fraction=fraction), seed=3)
    train = torch.bincount(src.train.labels["class"], minlength=10)
    test = torch.bincount(src.test.labels["class"], minlength=10)
    total = train + test
    assert (test - fraction * total).abs().max() < 1
    assert len(src.test) == round(fraction * 1797)


def test_digits_split_is_seeded(digits):
    again = load_digits_source(DigitsConfig(), seed=0)
    other = load_digits_source(DigitsConfig(), seed=1)
    assert torch.equal(again.train.x, digits.train.x) and torch.equal(again.test.labels["class"],
                                                                      digits.test.labels["class"])
    assert not torch.equal(other.test.x, digits.test.x)


def test_digits_upscaled():
    src = load_digits_source(DigitsConfig(image_size=32), seed=0)
    assert src.train.x.shape[1:] == (1, 32, 32) and src.input_shape == (1, 32, 32)
    assert src.train.x.min() >= 0 and src.train.x.max() <= 1


@pytest.mark.parametrize("bad", [{"image_size": 4}, {"image_size": 129}, {"test_fraction": 1.0},
                                 {"test_fraction": 0}, {"name": "mnist"}, {"size": 8}])
def test_digits_config_errors(bad):
    with pytest.raises(pydantic.ValidationError):
        DigitsConfig(**bad)


def test_stratified_pick_rounds_every_class_to_floor_or_ceil():
    labels = np.repeat(np.arange(4), [3, 5, 7, 1])
    for fraction in (0.1, 0.3, 0.5, 0.9):
        picked, rest = stratified_pick(labels, fraction, np.random.default_rng(0))
        assert len(picked) == round(fraction * len(labels))
        assert sorted(np.concatenate([picked, rest]).tolist()) == list(range(len(labels)))
        counts = np.bincount(labels[picked], minlength=4)
        assert np.all(np.abs(counts - fraction * np.bincount(labels)) < 1)


# ---------------------------------------------------------------- tiny files in the datasets' formats

def write_idx(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_pickle(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def balanced(n: int, k: int, rng) -> np.ndarray:
    return rng.permutation(np.arange(n) % k)


def make_idx(name, root, rng, n_train=40, n_test=20, size=28):
    """Four IDX files under root/<ClassName>/raw; returns {split: (uint8 N,1,H,W, labels)}, label names."""
    raw = root / MNIST_FAMILY[name].__name__ / "raw"
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = rng.integers(0, 256, (n, size, size), dtype=np.uint8), balanced(n, 10, rng)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        written[split] = (x[:, None], {"class": y})
    return written, {"class": list(MNIST_FAMILY[name].classes)}


def make_cifar10(root, rng, n_train=40, n_test=20):
    folder = root / "cifar-10-batches-py"
    names = [f"thing{k}" for k in range(10)]
    x, y = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8), balanced(n_train, 10, rng)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5)):
        write_pickle(folder / f"data_batch_{i + 1}", {"data": x[part], "labels": y[part].tolist()})
    xt, yt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), balanced(n_test, 10, rng)
    write_pickle(folder / "test_batch", {"data": xt, "labels": yt.tolist()})
    write_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 8})
    return ({"train": (x.reshape(-1, 3, 32, 32), {"class": y}), "test": (xt.reshape(-1, 3, 32, 32), {"class": yt})},
            {"class": names})


def make_cifar100(root, rng, n_train=100, n_test=30):
    folder = root / "cifar-100-python"
    names = {"fine": [f"fine{k}" for k in range(100)], "coarse": [f"coarse{k}" for k in range(20)]}
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, fine = rng.integers(0, 256, (n, 3072), dtype=np.uint8), balanced(n, 100, rng)
        coarse = (fine * 7) % 20
        write_pickle(folder / split, {"data": x, "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist()})
        written[split] = (x.reshape(-1, 3, 32, 32), {"fine": fine, "coarse": coarse})
    write_pickle(folder / "meta", {"fine_label_names": names["fine"], "coarse_label_names": names["coarse"]})
    return written, names


MAKERS = {"mnist": lambda root, rng: make_idx("mnist", root, rng),
          "fashion_mnist": lambda root, rng: make_idx("fashion_mnist", root, rng),
          "kmnist": lambda root, rng: make_idx("kmnist", root, rng),
          "cifar10": make_cifar10, "cifar100": make_cifar100}
ALL = list(MAKERS)


@pytest.fixture
def no_md5(monkeypatch):
    """CIFAR classes that check file presence but not MD5 sums (tiny test files are not the real ones)."""
    for cls in (datasets.CIFAR10, datasets.CIFAR100):
        monkeypatch.setattr(cls, "train_list", [[f, None] for f, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[f, None] for f, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})


def load(name, root, seed=0, **kw):
    return load_torchvision_source(CONFIGS[name](data_root=root, **kw), seed)


# ---------------------------------------------------------------- torchvision sources

@pytest.mark.parametrize("name", ALL)
def test_files_come_back_exactly(name, tmp_path, no_md5):
    written, names = MAKERS[name](tmp_path, np.random.default_rng(1))
    src = load(name, tmp_path)
    assert src.name == name and src.label_names == names
    assert src.default_labeling == ("fine" if name == "cifar100" else "class")
    for split, (x, labels) in written.items():
        got = src.split(split)
        assert got.x.dtype == torch.float32 and got.x.shape == x.shape
        assert torch.equal(got.x, torch.from_numpy(x).float() / 255)
        assert set(got.labels) == set(labels)
        for labeling, y in labels.items():
            assert got.labels[labeling].dtype == torch.int64
            assert got.labels[labeling].tolist() == y.tolist()
    assert src.input_shape == ((3, 32, 32) if name.startswith("cifar") else (1, 28, 28))


def test_cifar100_coarse_names_and_labels(tmp_path, no_md5):
    make_cifar100(tmp_path, np.random.default_rng(2))
    src = load("cifar100", tmp_path)
    assert src.labelings == ["fine", "coarse"]
    assert src.num_classes("fine") == 100 and src.num_classes("coarse") == 20
    assert src.label_names["coarse"][3] == "coarse3"
    assert torch.equal(src.train.labels["coarse"], (src.train.labels["fine"] * 7) % 20)


def test_mnist_legacy_processed_layout(tmp_path):
    rng = np.random.default_rng(3)
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    data = {}
    for split, file, n in (("train", "training.pt", 12), ("test", "test.pt", 6)):
        x = torch.from_numpy(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        y = torch.from_numpy(balanced(n, 3, rng))
        torch.save((x, y), processed / file)
        data[split] = (x, y)
    src = load("mnist", tmp_path)
    assert torch.equal(src.test.x, data["test"][0][:, None].float() / 255)
    assert torch.equal(src.train.labels["class"], data["train"][1])


@pytest.mark.parametrize("name,limit_train,limit_test", [("mnist", 20, 10), ("cifar10", 10, 10)])
def test_subsets_are_stratified_and_seeded(name, limit_train, limit_test, tmp_path, no_md5):
    written, _ = MAKERS[name](tmp_path, np.random.default_rng(4))
    src = load(name, tmp_path, seed=5, max_train=limit_train, max_test=limit_test)
    assert (len(src.train), len(src.test)) == (limit_train, limit_test)
    for split, limit in (("train", limit_train), ("test", limit_test)):
        counts = torch.bincount(src.split(split).labels["class"], minlength=10)
        assert counts.tolist() == [limit // 10] * 10                       # the written sets are balanced
        full = torch.from_numpy(written[split][0]).float().flatten(1) / 255
        rows = (src.split(split).x.flatten(1)[:, None] == full[None]).all(-1).int().argmax(1)
        assert written[split][1]["class"][rows.numpy()].tolist() == src.split(split).labels["class"].tolist()
        assert rows.tolist() == sorted(rows.tolist())                     # file order kept
    again = load(name, tmp_path, seed=5, max_train=limit_train, max_test=limit_test)
    other = load(name, tmp_path, seed=6, max_train=limit_train, max_test=limit_test)
    assert torch.equal(again.train.x, src.train.x) and torch.equal(again.test.x, src.test.x)
    assert not torch.equal(other.train.x, src.train.x)


def test_limits_above_the_split_size_keep_everything(tmp_path):
    make_idx("kmnist", tmp_path, np.random.default_rng(5))
    src = load("kmnist", tmp_path, max_train=1000, max_test=20)
    assert (len(src.train), len(src.test)) == (40, 20)


@pytest.mark.parametrize("name,size", [("fashion_mnist", 14), ("cifar10", 48)])
def test_image_size(name, size, tmp_path, no_md5):
    MAKERS[name](tmp_path, np.random.default_rng(6))
    src = load(name, tmp_path, image_size=size)
    channels = 3 if name == "cifar10" else 1
    assert src.train.x.shape == (40, channels, size, size) and src.test.x.shape == (20, channels, size, size)
    assert src.train.x.min() >= 0 and src.train.x.max() <= 1
    native = load(name, tmp_path)
    assert torch.allclose(src.train.x.mean((2, 3)), native.train.x.mean((2, 3)), atol=0.05)


@pytest.mark.parametrize("name", ALL)
def test_missing_data_root(name, tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DncsimError) as err:
        load(name, root)
    msg = one_line(err)
    assert msg.startswith(f"{name}: data_root {root} does not exist")
    expected = "train-labels-idx1-ubyte" if name in MNIST_FAMILY else ("batches.meta" if name == "cifar10" else "meta")
    assert expected in msg and "download: true" in msg


@pytest.mark.parametrize("name,missing", [("mnist", "t10k-labels-idx1-ubyte"),
                                          ("fashion_mnist", "train-images-idx3-ubyte"),
                                          ("kmnist", "t10k-images-idx3-ubyte"),
                                          ("cifar10", "data_batch_3"), ("cifar100", "meta")])
def test_one_missing_file(name, missing, tmp_path):
    MAKERS[name](tmp_path, np.random.default_rng(7))
    next(tmp_path.rglob(missing)).unlink()
    with pytest.raises(DncsimError) as err:
        load(name, tmp_path)
    msg = one_line(err)
    assert msg.startswith(f"{name}: data_root {tmp_path} lacks")
    assert f"(missing: {missing})" in msg


def test_compressed_idx_files_are_named(tmp_path):
    make_idx("mnist", tmp_path, np.random.default_rng(8))
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-images-idx3-ubyte").rename(raw / "train-images-idx3-ubyte.gz")
    with pytest.raises(DncsimError, match=r"\(missing: train-images-idx3-ubyte\); .gz files found") as err:
        load("mnist", tmp_path)
    one_line(err)


def test_cifar_checksums_are_checked(tmp_path):
    make_cifar10(tmp_path, np.random.default_rng(9))                  # tiny files: not the real MD5 sums
    with pytest.raises(DncsimError) as err:
        load("cifar10", tmp_path)
    msg = one_line(err)
    assert f"{tmp_path / 'cifar-10-batches-py'} failed torchvision's integrity check" in msg


def test_unreadable_idx_file(tmp_path):
    make_idx("mnist", tmp_path, np.random.default_rng(10))
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0c\x01garbage")
    with pytest.raises(DncsimError, match="torchvision could not read the files under") as err:
        load("mnist", tmp_path)
    one_line(err)


@pytest.mark.parametrize("labels,message", [(np.array([3, 12] + [0] * 18), "must lie in 0..9; found 0..12"),
                                            (np.array([1, 2, 3]), "has 3 'class' labels for 20 images")])
def test_bad_label_files(labels, message, tmp_path):
    make_idx("fashion_mnist", tmp_path, np.random.default_rng(11))
    write_idx(tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DncsimError, match=message) as err:
        load("fashion_mnist", tmp_path)
    assert str(tmp_path / "FashionMNIST") in one_line(err)


@pytest.mark.parametrize("cls", list(CONFIGS.values()))
def test_config_errors(cls, tmp_path):
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        cls(data_root=tmp_path, max_trian=5)
    with pytest.raises(pydantic.ValidationError, match="data_root"):
        cls()
    for bad in ({"image_size": "big"}, {"max_train": 0}, {"image_size": 257}, {"download": "maybe"}):
        with pytest.raises(pydantic.ValidationError):
            cls(data_root=tmp_path, **bad)
    assert cls(data_root=str(tmp_path)).data_root == tmp_path and not cls(data_root=tmp_path).download
