"""Data sets shipped inside the package, loaded with no network access."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

__all__ = ["digits"]


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI 8x8 handwritten digits: 1797 samples, 64 features, 10 classes.

    Returns
    -------
    X : ndarray of shape (1797, 64)
        Grey levels scaled from 0..16 to [0, 1] (float64), one flattened 8x8 image a row.
    y : ndarray of shape (1797,)
        The digit of each row, an integer in 0..9.

    Notes
    -----
    The test set of the UCI "Optical Recognition of Handwritten Digits" data
    (E. Alpaydin and C. Kaynak, 1998; CC BY 4.0), as redistributed by scikit-learn
    (BSD-3-Clause) in ``sklearn/datasets/data/digits.csv.gz``; graphengine ships that
    57 kB file in ``graphengine/data/`` and parses it with numpy.

    Examples
    --------
    >>> import graphengine as ge
    >>> X, y = ge.datasets.digits()
    >>> X.shape, y.shape, float(X.min()), float(X.max()), sorted(set(y.tolist()))
    ((1797, 64), (1797,), 0.0, 1.0, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    source = resources.files("graphengine") / "data" / "digits.csv.gz"
    with source.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",")
    return table[:, :64] / 16.0, table[:, 64].astype(np.int64)
