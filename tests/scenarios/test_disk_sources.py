"""The disk sources (scenarios/disk_sources.py, dsprites, shapes3d, celeba, image_table) read from small files that
each test writes in the official format, with contents it knows (every image encodes its row number in
its pixels, so a loaded sample can be traced back to its line of the attribute table).

Per source: attribute decoding, exact balance (full factorial, or every class equally frequent), the
factor stream over it, and the bad-file cases (missing, wrong keys, wrong shapes or dtypes, a row naming
a missing image, an unknown attribute), each one DncsimError line naming the path."""
import itertools

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dncsim.analysis.orthogonality import labeling_independence
from dncsim.common import DncsimError
from dncsim.scenarios import build_scenario
from dncsim.scenarios.build import load_source
from dncsim.scenarios.config import scenario_from_mapping
from dncsim.scenarios.preview import describe
from dncsim.scenarios.source_config import CELEBA_ATTRIBUTES
from dncsim.scenarios.subsample import balanced_classes, balanced_combinations, stratified_take

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


def source(spec, seed=0):
    return load_source(scenario_from_mapping({"source": spec}).source, seed)


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def combination_counts(split, attributes):
    """Counter of attribute combinations in a split (as tuples of ids)."""
    codes = torch.stack([split.labels[a] for a in attributes], 1).tolist()
    out = {}
    for c in map(tuple, codes):
        out[c] = out.get(c, 0) + 1
    return out


def assert_full_factorial(src, attributes):
    sizes = [src.num_classes(a) for a in attributes]
    for split in (src.train, src.test):
        counts = combination_counts(split, attributes)
        assert len(counts) == int(np.prod(sizes)) and len(set(counts.values())) == 1, counts
        for a, b in itertools.combinations(attributes, 2):
            r = labeling_independence(split.labels[a], split.labels[b])
            assert r["independent"] and r["balanced_a"] and r["balanced_b"] and r["cramers_v"] == 0.0


def assert_classes_balanced(src, attributes):
    for split in (src.train, src.test):
        for a in attributes:
            counts = torch.bincount(split.labels[a], minlength=src.num_classes(a))
            assert len(set(counts.tolist())) == 1 and counts[0] > 0, (a, counts)


# ---------------------------------------------------------------- file writers (the official formats)

DS_LATENTS = {"shape": [0, 1, 2], "scale": [0, 3], "orientation": [0, 10, 20, 30], "pos_x": [0, 15, 31],
              "pos_y": [0, 31]}       # class indices present (a sparse subset of the official 3, 6, 40, 32, 32)


def row_bits(n: int, width: int = 12) -> np.ndarray:
    """(n, width) 0/1: row i's number in binary, written into the top image row."""
    return ((np.arange(n)[:, None] >> np.arange(width)[None]) & 1).astype(np.uint8)


def decode_bits(x: torch.Tensor, width: int = 12) -> np.ndarray:
    bits = x[:, 0, 0, :width].round().long().numpy()
    return (bits << np.arange(width)[None]).sum(1)


def write_dsprites(path, latents=DS_LATENTS, *, keep=None, rng=None, **override):
    """A dSprites-like .npz: the full factorial of ``latents`` (color class 0 constant) in a shuffled order,
    rows where ``keep`` is False dropped; returns latents_classes as written."""
    rng = rng or np.random.default_rng(0)
    grid = np.array(list(itertools.product([0], *latents.values())), dtype=np.int64)
    cls = grid[rng.permutation(len(grid))]
    if keep is not None:
        cls = cls[keep(cls, rng)]
    n = len(cls)
    imgs = np.zeros((n, 64, 64), np.uint8)
    imgs[:, 0, :12] = row_bits(n)
    imgs[:, 10:20, 10:20] = 1
    values = cls.astype(np.float64)
    values[:, 2] = 0.5 + 0.1 * cls[:, 2]                          # scale
    values[:, 3] = cls[:, 3] * (2 * np.pi / 39)                   # orientation, radians
    values[:, 4:] = cls[:, 4:] / 31                               # positions in [0, 1]
    arrays = {"imgs": imgs, "latents_classes": cls, "latents_values": values, **override}
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return cls


S3_VALUES = {"floor_hue": [0.0, 0.5], "wall_hue": [0.2, 0.9], "object_hue": [0.1, 0.6], "scale": [1.25, 0.75],
             "shape": [0.0, 1.0, 2.0], "orientation": [30.0, -30.0, 0.0]}


def write_shapes3d(path, *, images=None, labels=None, drop=None, rng=None):
    """A 3dshapes-like .h5: the full factorial of ``S3_VALUES`` (144 images), shuffled; image i holds
    (i % 256, i // 256) in its top-left pixel's red and green. Returns the labels written."""
    rng = rng or np.random.default_rng(1)
    grid = np.array(list(itertools.product(*S3_VALUES.values())), dtype=np.float64)
    lab = grid[rng.permutation(len(grid))]
    if drop is not None:
        lab = lab[drop(lab, rng)]
    n = len(lab)
    img = np.full((n, 64, 64, 3), 100, np.uint8)
    img[:, 0, 0, 0], img[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=img if images is None else images,
                         chunks=(8, 64, 64, 3) if images is None else True, compression="gzip")
        f.create_dataset("labels", data=lab if labels is None else labels)
    return lab


def write_celeba(root, n=48, *, rng=None, p=None, header=None, corrupt=None, missing_image=False):
    """torchvision's CelebA layout under root/celeba with ``n`` solid-colour 218x178 JPEGs (image i has red
    level 5 i mod 256) and random -1/1 attributes (probability ``p`` of 1 per attribute, default 0.5);
    partition: i % 4 == 3 -> test (2), i % 4 == 2 -> valid (1), else train (0). Returns (values (n, 40), part)."""
    rng = rng or np.random.default_rng(2)
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    probs = np.full(40, 0.5) if p is None else np.asarray(p)
    values = np.where(rng.random((n, 40)) < probs, 1, -1)
    part = np.array([0, 0, 1, 2])[np.arange(n) % 4]
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    lines = [str(n), " ".join(header or CELEBA_ATTRIBUTES)]
    lines += [f"{f} " + " ".join(f"{v:2d}" for v in row) for f, row in zip(names, values)]
    if corrupt:
        lines = corrupt(lines)
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{f} {k}\n" for f, k in zip(names, part)))
    for i, f in enumerate(names):
        if missing_image and i == n - 1:
            continue
        img = np.zeros((218, 178, 3), np.uint8)
        img[..., 0], img[..., 1] = (5 * i) % 256, 128
        Image.fromarray(img).save(folder / "img_align_celeba" / f, quality=95)
    return values, part


def write_table(root, rows, header="path,color,count", *, sizes=None, name="table.csv"):
    """PNG images under root/img and a CSV; rows are tuples (file, value, value, ...). Image i is
    (H, W) = sizes[i] (default 24x24) with red level 7 i mod 256 in its central square, green 255 outside it."""
    (root / "img").mkdir(exist_ok=True)
    for i, row in enumerate(rows):
        h, w = (sizes[i] if sizes else (24, 24))
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 1] = 255
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img[top:top + s, left:left + s] = ((7 * i) % 256, 0, 0)
        Image.fromarray(img).save(root / "img" / row[0])
    lines = [header] + [",".join(["img/" + row[0], *map(str, row[1:])]) for row in rows]
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


# ---------------------------------------------------------------- dsprites

def test_dsprites_attributes_are_decoded_from_latents_classes(tmp_path):
    cls = write_dsprites(tmp_path / "d.npz")
    src = source({"name": "dsprites", "data_root": str(tmp_path / "d.npz")})
    assert src.labelings == ["shape", "scale", "orientation", "pos_x", "pos_y"] and src.default_labeling == "shape"
    assert src.input_shape == (1, 64, 64) and src.train.x.dtype == torch.float32
    assert src.label_names["shape"] == ["square", "ellipse", "heart"]
    assert src.label_names["scale"] == ["0.5", "0.8"] and src.label_names["pos_x"] == ["0", "0.484", "1"]
    assert len(src.test) == round(0.25 * len(cls)) and len(src.train) + len(src.test) == len(cls)
    rows = []
    for split in (src.train, src.test):
        r = decode_bits(split.x)
        rows.append(r)
        assert np.all(np.diff(r) > 0)                        # file order kept
        for attr, col in zip(src.labelings, range(1, 6)):
            want = np.searchsorted(DS_LATENTS[attr], cls[r, col])
            assert np.array_equal(split.labels[attr].numpy(), want), attr
        assert set(torch.unique(split.x).tolist()) == {0.0, 1.0}
    assert sorted(np.concatenate(rows).tolist()) == list(range(len(cls)))
    assert "the attributes' frequencies as in the data" in src.info["selection"]


def test_dsprites_bins_are_equal_width_over_the_class_indices(tmp_path):
    latents = {"shape": [0, 1], "scale": [0], "orientation": list(range(40)), "pos_x": list(range(32)), "pos_y": [0]}
    write_dsprites(tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", latents)
    src = source({"name": "dsprites", "data_root": str(tmp_path), "attributes": ["orientation", "pos_x", "shape"],
                  "bins": {"orientation": 4, "pos_x": 3}, "test_fraction": 0.5})     # a folder: the official name
    both = {a: torch.cat([src.train.labels[a], src.test.labels[a]]) for a in src.labelings}
    assert torch.bincount(both["orientation"]).tolist() == [10 * 64] * 4          # 10 classes each x 2 x 32
    assert torch.bincount(both["pos_x"]).tolist() == [11 * 80, 11 * 80, 10 * 80]  # 11, 11, 10 of 32
    assert src.label_names["orientation"][0] == "0..1.45" and len(src.label_names["pos_x"]) == 3
    assert src.label_names["pos_x"][2] == "0.71..1"
    with pytest.raises(DncsimError, match=r"bins.pos_y: 2 bins for the 1 values"):
        source({"name": "dsprites", "data_root": str(tmp_path), "bins": {"pos_y": 2}})


@pytest.fixture(scope="module")
def sparse_dsprites(tmp_path_factory):
    """A dSprites-like file with a third of its rows dropped at random: unbalanced in every attribute."""
    path = tmp_path_factory.mktemp("ds") / "d.npz"
    cls = write_dsprites(path, keep=lambda c, rng: rng.random(len(c)) >= 0.35, rng=np.random.default_rng(5))
    return path, cls


@FAST
@given(seed=st.integers(0, 1000), attrs=st.sets(st.sampled_from(["shape", "scale", "orientation", "pos_x"]),
                                                min_size=1, max_size=3).map(sorted),
       bins=st.booleans(), cap=st.sampled_from([None, 60, 200]))
def test_dsprites_balance_is_an_exact_full_factorial_in_both_splits(sparse_dsprites, seed, attrs, bins, cap):
    path, cls = sparse_dsprites
    spec = {"name": "dsprites", "data_root": str(path), "attributes": attrs, "balance": True, "max_samples": cap,
            "bins": {"orientation": 2} if bins else {}, "test_fraction": 0.3}
    try:
        src = source(spec, seed)
    except DncsimError as exc:      # a combination lost with the dropped rows, or too few for a split: said so
        assert any(m in str(exc) for m in ("have no sample", "per combination", "fewer than the")), str(exc)
        return
    assert_full_factorial(src, attrs)
    if cap is not None:
        assert len(src.train) + len(src.test) <= cap
    m = src.info["per_combination"]
    assert len(src.train) == m["train"] * len(combination_counts(src.train, attrs))
    again = source(spec, seed)
    assert torch.equal(again.train.x, src.train.x) and torch.equal(again.test.labels[attrs[0]],
                                                                    src.test.labels[attrs[0]])


def test_dsprites_balance_names_a_missing_combination(sparse_dsprites):
    path, _ = sparse_dsprites
    with pytest.raises(DncsimError) as err:           # one row per combination of all five: some are gone
        source({"name": "dsprites", "data_root": str(path), "balance": "combinations"})
    msg = one_line(err)
    assert str(path) in msg and "have no sample (e.g. shape=" in msg and "balance: classes" in msg


def test_dsprites_reads_in_chunks_and_resizes_in_batch(tmp_path):
    write_dsprites(tmp_path / "d.npz")
    whole = source({"name": "dsprites", "data_root": str(tmp_path / "d.npz")})
    small = source({"name": "dsprites", "data_root": str(tmp_path / "d.npz"), "chunk_mb": 1})
    assert torch.equal(whole.train.x, small.train.x)
    resized = source({"name": "dsprites", "data_root": str(tmp_path / "d.npz"), "image_size": 32})
    assert resized.input_shape == (1, 32, 32) and 0 <= resized.train.x.min() and resized.train.x.max() <= 1
    assert torch.equal(resized.train.x[:, 0, 6:9, 6:9], torch.ones(len(resized.train), 3, 3))   # the block, halved


# ---------------------------------------------------------------- shapes3d

def test_shapes3d_float_labels_map_to_sorted_class_ids(tmp_path):
    lab = write_shapes3d(tmp_path / "3dshapes.h5")
    src = source({"name": "shapes3d", "data_root": str(tmp_path)})
    assert src.labelings == list(S3_VALUES) and src.input_shape == (3, 64, 64)
    assert src.label_names["orientation"] == ["-30", "0", "30"] and src.label_names["scale"] == ["0.75", "1.25"]
    assert src.label_names["shape"] == ["0", "1", "2"]
    for split in (src.train, src.test):
        px = (split.x[:, :2, 0, 0] * 255).round().long()
        r = (px[:, 0] + 256 * px[:, 1]).numpy()
        assert np.all(np.diff(r) > 0)
        for a, attr in enumerate(S3_VALUES):
            assert np.array_equal(split.labels[attr].numpy(), np.searchsorted(sorted(S3_VALUES[attr]), lab[r, a]))
        assert torch.allclose(split.x[:, :, 5, 5], torch.tensor(100 / 255))


def test_shapes3d_balance_chunks_and_max_samples(tmp_path):
    write_shapes3d(tmp_path / "s.h5", drop=lambda lab, rng: rng.random(len(lab)) >= 0.3)
    spec = {"name": "shapes3d", "data_root": str(tmp_path / "s.h5"), "attributes": ["shape", "orientation"],
            "balance": True, "test_fraction": 0.25}
    src = source(spec)
    assert_full_factorial(src, ["shape", "orientation"])
    tiny_chunks = source({**spec, "chunk_mb": 1})
    assert torch.equal(src.train.x, tiny_chunks.train.x)
    capped = source({**spec, "max_samples": 36})
    assert len(capped.train) + len(capped.test) == 36 and capped.info["per_combination"] == {"train": 3, "test": 1}
    assert_full_factorial(capped, ["shape", "orientation"])


def test_h5_rows_reads_sparse_and_dense_selections(tmp_path):
    from dncsim.scenarios.shapes3d import _h5_rows
    data = np.arange(200 * 6, dtype=np.uint8).reshape(200, 2, 3)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("a", data=data, chunks=(16, 2, 3))
    rows = np.array([0, 1, 2, 3, 50, 120, 121, 199])
    with h5py.File(tmp_path / "a.h5", "r") as f:
        for chunk in (6, 60, 6000):
            assert np.array_equal(_h5_rows(f["a"], rows, chunk), data[rows])


# ---------------------------------------------------------------- celeba_attributes

def test_celeba_attributes_and_the_official_partition(tmp_path):
    values, part = write_celeba(tmp_path)
    attrs = ["Smiling", "Male", "Eyeglasses"]
    src = source({"name": "celeba_attributes", "data_root": str(tmp_path), "attributes": attrs, "image_size": 32})
    assert src.labelings == attrs and src.label_names["Male"] == ["no", "yes"] and src.input_shape == (3, 32, 32)
    cols = [CELEBA_ATTRIBUTES.index(a) for a in attrs]
    for split, k in ((src.train, 0), (src.test, 2)):
        r = np.round(split.x[:, 0].mean((1, 2)).numpy() * 255 / 5).astype(int)     # red level 5 i
        assert r.tolist() == np.flatnonzero(part == k).tolist()
        for a, c in zip(attrs, cols):
            assert split.labels[a].tolist() == ((values[r, c] + 1) // 2).tolist()
    with_valid = source({"name": "celeba_attributes", "data_root": str(tmp_path / "celeba"), "attributes": attrs,
                         "validation": "train", "image_size": None})
    assert len(with_valid.train) == int((part != 2).sum()) and with_valid.input_shape == (3, 178, 178)


def test_celeba_balance_classes_and_combinations(tmp_path):
    p = np.full(40, 0.5)
    p[CELEBA_ATTRIBUTES.index("Smiling")], p[CELEBA_ATTRIBUTES.index("Male")] = 0.25, 0.7
    write_celeba(tmp_path, n=160, p=p)
    base = {"name": "celeba_attributes", "data_root": str(tmp_path), "attributes": ["Smiling", "Male"],
            "image_size": 16}
    unbalanced = source(base)
    assert torch.bincount(unbalanced.train.labels["Smiling"]).unique().numel() == 2
    assert_classes_balanced(source({**base, "balance": "classes"}), ["Smiling", "Male"])
    factorial = source({**base, "balance": True})
    assert_full_factorial(factorial, ["Smiling", "Male"])
    assert "exactly independent" in factorial.info["selection"]


# ---------------------------------------------------------------- image_table

TABLE_ROWS = [(f"{i:02d}.png", ["red", "green", "blue"][i % 3], [2, 10, 7][(i // 3) % 3], ["train", "test"][i % 2])
              for i in range(36)]


def test_image_table_values_ids_split_column_and_crop(tmp_path):
    sizes = [(24, 24) if i % 2 else (20, 30) for i in range(36)]
    table = write_table(tmp_path, TABLE_ROWS, "path,color,count,split", sizes=sizes)
    spec = {"name": "image_table", "root": str(tmp_path), "table": str(table)}
    with pytest.raises(DncsimError, match=r"set image_size"):
        source(spec)
    src = source({**spec, "image_size": 12})
    assert src.labelings == ["color", "count"] and src.input_shape == (3, 12, 12)
    assert src.label_names == {"color": ["blue", "green", "red"], "count": ["2", "7", "10"]}  # numeric order
    for split, name in ((src.train, "train"), (src.test, "test")):
        r = np.round(split.x[:, 0, 6, 6].numpy() * 255 / 7).astype(int)
        assert r.tolist() == [i for i, row in enumerate(TABLE_ROWS) if row[3] == name]
        assert split.labels["color"].tolist() == [["blue", "green", "red"].index(TABLE_ROWS[i][1]) for i in r]
        assert split.labels["count"].tolist() == [[2, 7, 10].index(TABLE_ROWS[i][2]) for i in r]
        assert split.x[:, 1].max() == 0                      # the green margins were cropped away
    grey = source({**spec, "image_size": 12, "grayscale": True, "attributes": ["count"]})
    assert grey.input_shape == (1, 12, 12) and grey.labelings == ["count"]


def test_image_table_seeded_split_and_balance(tmp_path):
    rows = [(f"{i:02d}.png", ["a", "b"][int(i % 5 == 0)], ["x", "y", "z"][i % 3]) for i in range(60)]
    table = write_table(tmp_path, rows, "path,kind,letter")
    spec = {"name": "image_table", "root": str(tmp_path), "table": str(table), "test_fraction": 0.25}
    a, b, c = source(spec, 0), source(spec, 0), source(spec, 1)
    assert len(a.test) == 15 and torch.equal(a.test.x, b.test.x) and not torch.equal(a.test.x, c.test.x)
    assert_classes_balanced(source({**spec, "balance": "classes"}), ["kind", "letter"])
    assert_full_factorial(source({**spec, "balance": "combinations"}), ["kind", "letter"])


# ---------------------------------------------------------------- the factor stream over each source

@pytest.fixture(scope="module")
def four_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("four")
    write_dsprites(root / "d.npz", {"shape": [0, 1, 2], "scale": [0, 5], "orientation": list(range(4)),
                                    "pos_x": [0, 31], "pos_y": [0, 31]})
    write_shapes3d(root / "s.h5")
    write_celeba(root / "c", n=160)
    rows = [(f"{i:03d}.png", ["red", "blue"][i % 2], [1, 2, 3][(i // 2) % 3]) for i in range(120)]
    (root / "t").mkdir()
    table = write_table(root / "t", rows)
    return {
        "dsprites": ({"name": "dsprites", "data_root": str(root / "d.npz"), "attributes": ["shape", "scale", "pos_x"],
                      "balance": True}, ["shape", "scale", "pos_x"]),
        "shapes3d": ({"name": "shapes3d", "data_root": str(root / "s.h5"), "image_size": 16,
                      "attributes": ["shape", "orientation", "scale"], "balance": True},
                     ["shape", "orientation", "scale"]),
        "celeba_attributes": ({"name": "celeba_attributes", "data_root": str(root / "c"), "image_size": 16,
                               "attributes": ["Smiling", "Male"], "validation": "train", "balance": True},
                              ["Smiling", "Male"]),
        "image_table": ({"name": "image_table", "root": str(root / "t"), "table": str(table), "image_size": 16},
                        ["color", "count"]),
    }


@pytest.mark.parametrize("name", ["dsprites", "shapes3d", "celeba_attributes", "image_table"])
def test_the_factor_stream_varies_one_attribute_of_a_disk_source(four_sources, name):
    spec, attrs = four_sources[name]
    sc = build_scenario({"seed": 3, "source": spec, "stream": {"type": "factor", "hold": "one",
                                                               "min_samples_per_class": 2}})
    src = sc.source
    assert [e.varying for e in sc.experiences] == attrs == [t.labeling for t in sc.eval_tasks]
    for k, e in enumerate(sc.experiences):
        x, y = sc.experience_data(k, "train")
        K = src.num_classes(e.varying)
        counts = torch.bincount(y, minlength=K)
        assert counts.min() == counts.max() >= 2
        for other in attrs:
            if other != e.varying:
                held = src.train.labels[other][e.train_idx].unique().tolist()
                assert [src.label_names[other][v] for v in held] == e.held[other]
    text = describe(sc)
    assert "Attributes (labelings of the source)" in text and "Pairwise Cramér's V" in text
    if spec.get("balance"):
        assert "exactly independent" in text


# ---------------------------------------------------------------- bad files: one line naming the path

def _ds(tmp_path, **override):
    write_dsprites(tmp_path / "d.npz", **override)
    return {"name": "dsprites", "data_root": str(tmp_path / "d.npz")}


def _s3(tmp_path, **kw):
    write_shapes3d(tmp_path / "s.h5", **kw)
    return {"name": "shapes3d", "data_root": str(tmp_path / "s.h5")}


def _s3_without(tmp_path, key):
    write_shapes3d(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "a") as f:
        del f[key]
    return {"name": "shapes3d", "data_root": str(tmp_path / "s.h5")}


def _cel(tmp_path, **kw):
    write_celeba(tmp_path, n=8, **kw)
    return {"name": "celeba_attributes", "data_root": str(tmp_path), "attributes": ["Smiling"], "image_size": 16}


def _tab(tmp_path, rows=TABLE_ROWS[:6], header="path,color,count,split", edit=None, **spec):
    table = write_table(tmp_path, rows, header)
    if edit:
        table.write_text(edit(table.read_text()))
    return {"name": "image_table", "root": str(tmp_path), "table": str(table), "image_size": 16, **spec}


def _no_partition(tmp_path):
    spec = _cel(tmp_path)
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    return spec


def _not_h5(tmp_path):
    (tmp_path / "s.h5").write_text("not hdf5")
    return {"name": "shapes3d", "data_root": str(tmp_path / "s.h5")}


def _not_npz(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 garbage")
    return {"name": "dsprites", "data_root": str(tmp_path / "d.npz")}


BAD = {
    "dsprites missing": (lambda t: {"name": "dsprites", "data_root": str(t / "nope.npz")}, "nope.npz: no such file"),
    "dsprites folder without the file": (lambda t: {"name": "dsprites", "data_root": str(t)},
                                         "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz: no such file"),
    "dsprites not a zip": (_not_npz, "not a readable .npz"),
    "dsprites no imgs": (lambda t: _ds(t, imgs=None), "no array 'imgs': expected the dSprites keys"),
    "dsprites no classes": (lambda t: _ds(t, latents_classes=None), "no array 'latents_classes'"),
    "dsprites 4-d imgs": (lambda t: _ds(t, imgs=np.zeros((144, 64, 64, 1), np.uint8)), "imgs must be (144, 64, 64)"),
    "dsprites float imgs": (lambda t: _ds(t, imgs=np.zeros((144, 64, 64), np.float32)), "dtype float32"),
    "dsprites short imgs": (lambda t: _ds(t, imgs=np.zeros((10, 64, 64), np.uint8)), "imgs must be (144, 64, 64)"),
    "dsprites 5 latents": (lambda t: _ds(t, latents_classes=np.zeros((144, 5), np.int64), latents_values=None),
                           "latents_classes must be (N, 6) integers"),
    "dsprites values shape": (lambda t: _ds(t, latents_values=np.zeros((144, 2))), "latents_values must be numbers"),
    "shapes3d missing": (lambda t: {"name": "shapes3d", "data_root": str(t / "x.h5")}, "x.h5: no such file"),
    "shapes3d not h5": (_not_h5, "not a readable HDF5 file"),
    "shapes3d no labels": (lambda t: _s3_without(t, "labels"), "no dataset 'labels'"),
    "shapes3d grey images": (lambda t: _s3(t, images=np.zeros((144, 64, 64), np.uint8)),
                             "images must be (144, 64, 64, 3) uint8"),
    "shapes3d 5 labels": (lambda t: _s3(t, labels=np.zeros((144, 5))), "labels must be (N, 6) numbers"),
    "shapes3d nan labels": (lambda t: _s3(t, labels=np.full((144, 6), np.nan)), "NaN"),
    "celeba no root": (lambda t: {"name": "celeba_attributes", "data_root": str(t / "none"), "attributes": ["Male"]},
                       "does not exist: expected"),
    "celeba no partition": (_no_partition, "list_eval_partition.txt: no such file"),
    "celeba attribute not in header": (lambda t: _cel(t, header=[a for a in CELEBA_ATTRIBUTES if a != "Smiling"]
                                                      + ["Smilling"]),
                                       "no attribute 'Smiling' in its header"),
    "celeba bad value": (lambda t: _cel(t, corrupt=lambda lines: lines[:2] + [lines[2].replace("-1", " 0")
                                                                              .replace(" 1", " 0")] + lines[3:]),
                         "line 3: attribute values must be -1 or 1"),
    "celeba wrong count": (lambda t: _cel(t, corrupt=lambda lines: ["9"] + lines[1:]), "says 9 images, 8 lines"),
    "celeba missing image": (lambda t: _cel(t, missing_image=True), "000008.jpg, which does not exist"),
    "table missing": (lambda t: {"name": "image_table", "root": str(t), "table": str(t / "x.csv")},
                      "x.csv: no such file"),
    "table no path column": (lambda t: _tab(t, edit=lambda s: s.replace("path,", "file,", 1)),
                             "expected a header 'path,attr1,attr2,...'"),
    "table unknown attribute": (lambda t: _tab(t, attributes=["colour"]), "no column 'colour'"),
    "table missing image": (lambda t: _tab(t, edit=lambda s: s.replace("img/03.png", "img/99.png")),
                            "line 5 names img/99.png, but"),
    "table empty value": (lambda t: _tab(t, edit=lambda s: s.replace(",red,", ",,", 1)), "line 2: empty color"),
    "table bad split": (lambda t: _tab(t, edit=lambda s: s.replace(",test", ",val", 1)),
                        "split must be 'train' or 'test'; got 'val'"),
    "table short row": (lambda t: _tab(t, edit=lambda s: s.replace(",2,", ",", 1)), "has 3 fields; the header has 4"),
    "table single value": (lambda t: _tab(t, rows=[(r[0], "red", r[2], r[3]) for r in TABLE_ROWS[:6]]),
                           "attribute 'color' takes a single value (red)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_one_line_naming_the_path(tmp_path, case):
    make, message = BAD[case]
    spec = make(tmp_path)
    with pytest.raises(DncsimError) as err:
        source(spec)
    msg = one_line(err)
    assert message in msg, msg
    assert str(tmp_path) in msg, msg


@pytest.mark.parametrize("spec,message", [
    ({"name": "dsprites", "data_root": "x", "attributes": ["color"]}, "scenario.source.attributes[0]"),
    ({"name": "dsprites", "data_root": "x", "bins": {"scale": 2}}, "scenario.source.bins"),
    ({"name": "celeba_attributes", "data_root": "x", "attributes": ["smiling"]}, "Smiling"),
    ({"name": "celeba_attributes", "data_root": "x"}, "attributes"),
    ({"name": "shapes3d", "data_root": "x", "balance": "maybe"}, "scenario.source.balance"),
    ({"name": "image_table", "root": "x"}, "table"),
])
def test_config_errors_name_the_key(spec, message):
    with pytest.raises(DncsimError) as err:
        scenario_from_mapping({"source": spec})
    assert message in one_line(err)


# ---------------------------------------------------------------- the subsampling itself

codes_strategy = st.integers(1, 3).flatmap(lambda a: st.tuples(
    st.lists(st.integers(2, 3), min_size=a, max_size=a),
    st.integers(0, 10_000), st.floats(0.0, 0.6)))


@FAST
@given(codes_strategy)
def test_balanced_classes_and_combinations_are_exact(params):
    sizes, seed, skew = params
    rng = np.random.default_rng(seed)
    n = 300
    codes = np.stack([np.minimum((rng.random(n) ** (1 + 3 * skew) * k).astype(int), k - 1) for k in sizes], 1)
    kw = dict(attributes=[f"a{i}" for i in range(len(sizes))], names=[[str(v) for v in range(k)] for k in sizes],
              where="test")
    pos = balanced_classes(codes, sizes, None, np.random.default_rng(0), **kw)
    for a, k in enumerate(sizes):
        counts = np.bincount(codes[pos, a], minlength=k)
        assert len(set(counts.tolist())) == 1 and counts[0] > 0
    assert np.all(np.diff(pos) > 0)
    if len(np.unique(codes, axis=0)) == int(np.prod(sizes)):
        pos, m = balanced_combinations(codes, sizes, 100, np.random.default_rng(0), **kw)
        _, counts = np.unique(codes[pos], axis=0, return_counts=True)
        assert len(counts) == int(np.prod(sizes)) and set(counts.tolist()) == {m}
        assert len(pos) <= 100
    picked = stratified_take(codes, 120, np.random.default_rng(seed))
    assert len(picked) == 120 and len(np.unique(picked)) == 120


def test_stratified_take_breaks_ties_at_random_not_by_combination():
    codes = np.arange(400)[:, None]                    # one sample per combination
    firsts = [stratified_take(codes, 100, np.random.default_rng(s)).min() for s in range(5)]
    assert len(set(firsts)) > 1 and max(firsts) > 0


# ---------------------------------------------------------------- the command

def test_dncsim_scenario_prints_attributes_and_saves_the_grid(tmp_path, capsys):
    from dncsim.simulator.cli import main
    write_dsprites(tmp_path / "d.npz")
    cfg = tmp_path / "ds.yaml"
    cfg.write_text(f"scenario:\n  source: {{name: dsprites, data_root: {tmp_path / 'd.npz'}, "
                   f"attributes: [shape, orientation], balance: true}}\n"
                   f"  stream: {{type: factor, hold: subset, min_samples_per_class: 2}}\n")
    assert main(["scenario", str(cfg), "--png", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "balance combinations: 9 train / 3 test samples per combination of shape x orientation" in out
    assert "square 36/12, ellipse 36/12, heart 36/12" in out and "shape - orientation    0.000   0.000  yes" in out
    assert (tmp_path / "grid.png").stat().st_size > 1000
    cfg.write_text(cfg.read_text().replace("d.npz", "gone.npz"))
    assert main(["scenario", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "gone.npz: no such file" in err
