"""Graphs and helpers shared by the interchange tests (export and import, torch and
ONNX): the README circuit, the 2-2-1 network, the digits MLP, and the random DAGs of
the property tests."""

import numpy as np
import pytest
from test_properties import random_dags  # noqa: F401  (re-exported for the tests)

import graphengine as ge


def need(module: str):
    """Import an optional engine; skip without it (CI sets GE_NO_SKIP=1, which turns
    the skip into a failure: see conftest.py)."""
    return pytest.importorskip(module)


def circuit():
    g = ge.ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.mul(g.add(x, y, name="q"), z, name="f")
    return g, {"x": -2.0, "y": 5.0, "z": -4.0}


def net_221():
    g = ge.ComputationalGraph()
    x = g.input("x")
    w1 = g.parameter("W1", [[0.5, 0.3], [0.2, 0.4]])
    b1 = g.parameter("b1", [0.1, 0.2])
    w2, b2 = g.parameter("W2", [0.6, 0.7]), g.parameter("b2", 0.3)
    h = g.sigmoid(x @ w1 + b1, name="h")
    out = g.sigmoid(h @ w2 + b2, name="out")
    g.pow(0.8 - out, 2, name="loss")
    return g, {"x": np.array([0.5, 0.3])}


def digits_mlp(hidden=32, rows=50, dtype=np.float64):
    X, y = ge.datasets.digits()
    g = ge.ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [64, hidden, 10])
    g.softmax_cross_entropy(logits, g.input("y"), name="loss")
    for p in g.parameters():
        p.value = p.value.astype(dtype)
    return g, {"x": X[:rows].astype(dtype), "y": y[:rows]}


GRAPHS = [circuit, net_221, digits_mlp]


def seed_for(out):
    """The upstream gradient the tests seed backward with: 1 for a scalar output,
    fixed random numbers for an array."""
    if np.shape(out) == ():
        return None
    return np.random.default_rng(0).standard_normal(np.shape(out))
