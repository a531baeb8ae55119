"""Every bad input to class_geometry raises a ValueError (DncsimError) that names the problem."""
import numpy as np
import pytest
import torch

from dncsim.analysis import DncsimError, class_geometry, ncc_fewshot_error


def ok_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 3, generator=g), torch.tensor([0, 1, 2] * 4)


@pytest.mark.parametrize("make,message", [
    (lambda x, y: (x, y[:-1]), "labels has 11 entries but features have 12 rows"),
    (lambda x, y: (x[:, 0], y), r"features must be a 2-D array \(N, d\); got shape \(12,\)"),
    (lambda x, y: (x.reshape(12, 3, 1), y), "must be a 2-D array"),
    (lambda x, y: (x.index_put((torch.tensor([2, 5]), torch.tensor([0, 1])), torch.tensor(float("nan"))), y),
     r"NaN or inf values in 2 of 12 rows \(first at row 2\)"),
    (lambda x, y: (x.index_put((torch.tensor([7]),), torch.tensor(float("inf"))), y), r"in 1 of 12 rows \(first at row "
                                                                                      r"7\)"),
    (lambda x, y: (x, torch.zeros(12, dtype=torch.long)), "need at least 2 classes; got 1"),
    (lambda x, y: (x, y.double() + 0.5), "must be integer class labels"),
    (lambda x, y: (x[:0], y[:0]), "features is empty"),
    (lambda x, y: (torch.cat([x[:9], x[:1].repeat(3, 1)]),
                   torch.cat([torch.tensor([0, 1, 2] * 3), torch.tensor([3, 3, 3])])), None),
])
def test_bad_inputs_raise_value_error(make, message):
    x, y = make(*ok_data())
    if message is None:     # a fourth class is fine
        assert class_geometry(x, y).C == 4
        return
    with pytest.raises(ValueError, match=message):
        class_geometry(x, y)


def test_too_few_samples_for_ddof():
    x, y = ok_data()
    y = y.clone()
    y[0] = 9                                  # class 9 has one sample
    assert class_geometry(x, y, ddof=0).C == 4
    with pytest.raises(DncsimError, match="class 9 has 1 sample.*ddof=1 needs at least 2"):
        class_geometry(x, y, ddof=1)
    with pytest.raises(DncsimError, match="ddof must be 0"):
        class_geometry(x, y, ddof=2)


def test_coincident_means_are_named():
    x = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0], [5.0, 5.0], [6.0, 6.0]])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(DncsimError, match="classes 0 and 1 have coincident means"):
        class_geometry(x, y)


def test_numpy_inputs_and_summary_has_no_nan():
    x, y = ok_data()
    g = class_geometry(x.numpy(), y.numpy().astype(np.int32))
    assert all(np.isfinite(v) for v in g.summary().values())
    assert g.means.dtype == torch.float64


def test_fewshot_checks_inputs_too():
    x, y = ok_data()
    with pytest.raises(DncsimError, match="NaN or inf"):
        ncc_fewshot_error(x.index_put((torch.tensor([3]),), torch.tensor(float("nan"))), y, shots=1)
