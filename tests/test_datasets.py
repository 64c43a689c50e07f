import gzip
from importlib import resources

import numpy as np

import graphengine as ge


def test_digits_shape_range_and_labels():
    X, y = ge.datasets.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype.kind == "i"
    assert X.min() == 0.0 and X.max() == 1.0
    counts = np.bincount(y)
    assert counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert counts.sum() == 1797


def test_digits_are_the_grey_levels_over_16():
    X, y = ge.datasets.digits()
    source = resources.files("graphengine") / "data" / "digits.csv.gz"
    with source.open("rb") as raw, gzip.open(raw, "rt") as text:
        first = [float(v) for v in text.readline().split(",")]
    assert np.array_equal(X[0] * 16, first[:64]) and y[0] == first[64] == 0
    assert np.array_equal(X * 16, np.round(X * 16))          # integer levels 0..16


def test_digits_returns_fresh_arrays():
    X, _ = ge.datasets.digits()
    X[:] = -1
    assert ge.datasets.digits()[0].min() == 0.0
