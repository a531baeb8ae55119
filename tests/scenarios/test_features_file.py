"""scenarios.features.load_feature_file: the .npz contract and its one-line errors."""
import numpy as np
import pytest

from dncsim.analysis import DncsimError
from dncsim.scenarios.features import load_feature_file


def write(tmp_path, name="f.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_label_arrays_are_found_in_file_order(tmp_path):
    x = np.zeros((6, 3), np.float32)
    p = write(tmp_path, features=x, shape=np.arange(6) % 2, color=np.arange(6) % 3,
              weights=np.ones(6), ids=np.arange(12))
    ff = load_feature_file(p)
    assert list(ff.labelings) == ["shape", "color"]            # float and wrong-length arrays are metadata
    assert ff.labelings["color"].dtype == np.int64 and ff.features.shape == (6, 3)
    assert list(load_feature_file(p, ["color"]).labelings) == ["color"]


@pytest.mark.parametrize("arrays,labels,message", [
    ({"feats": np.zeros((3, 2))}, None, "no array named 'features' \\(found: feats\\)"),
    ({"features": np.zeros(3)}, None, "'features' must be 2-D"),
    ({"features": np.zeros((3, 2))}, None, "no label array found"),
    ({"features": np.zeros((3, 2)), "color": np.arange(3)}, ["colour"],
     "label key 'colour' not in the file; available label arrays: color"),
    ({"features": np.zeros((3, 2)), "w": np.ones(3)}, ["w"], "'w' is not a label array"),
])
def test_bad_files(tmp_path, arrays, labels, message):
    p = write(tmp_path, **arrays)
    with pytest.raises(DncsimError, match=message) as err:
        load_feature_file(p, labels)
    assert str(p) in str(err.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DncsimError, match="no such file"):
        load_feature_file(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(DncsimError, match="not a readable .npz file"):
        load_feature_file(bad)
