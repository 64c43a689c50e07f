import numpy as np
import pytest

import graphengine as ge
from graphengine import GraphError


def sig(z):
    return 1 / (1 + np.exp(-z))


def test_mlp_names_shapes_and_forward_equal_numpy():
    g = ge.ComputationalGraph()
    out = ge.nn.mlp(g, g.input("x"), [5, 4, 3, 2], seed=1)
    assert [(p.name, p.shape) for p in g.parameters()] == [
        ("W1", (5, 4)), ("b1", (4,)), ("W2", (4, 3)), ("b2", (3,)), ("W3", (3, 2)), ("b3", (2,))]
    x = np.random.default_rng(0).normal(size=(7, 5))
    P = {p.name: p.value for p in g.parameters()}
    h = sig(sig(x @ P["W1"] + P["b1"]) @ P["W2"] + P["b2"])
    np.testing.assert_allclose(g.forward(x=x), h @ P["W3"] + P["b3"], rtol=1e-14)
    assert g.output is out
    np.testing.assert_allclose(g.forward(x=x[0]), (h @ P["W3"] + P["b3"])[0], rtol=1e-14)


@pytest.mark.parametrize("activation, fan", [("sigmoid", "glorot"), ("tanh", "glorot"),
                                             ("relu", "he")])
def test_mlp_initialisation_is_the_documented_scheme(activation, fan):
    g = ge.ComputationalGraph()
    ge.nn.mlp(g, g.input("x"), [64, 128, 10], activation=activation, seed=7)
    rng = np.random.default_rng(7)
    for k, (n_in, n_out) in enumerate([(64, 128), (128, 10)], start=1):
        a = np.sqrt(6 / (n_in + n_out if fan == "glorot" else n_in))
        np.testing.assert_array_equal(g[f"W{k}"].value, rng.uniform(-a, a, size=(n_in, n_out)))
        np.testing.assert_array_equal(g[f"b{k}"].value, np.zeros(n_out))
    ops = [n.gate.op for n in g.nodes("gate")]
    assert ops == ["matmul", "add", activation, "matmul", "add"]


def test_mlp_seed_changes_the_weights_only():
    def weights(seed):
        g = ge.ComputationalGraph()
        ge.nn.mlp(g, g.input("x"), [3, 2], seed=seed)
        return g["W1"].value
    assert np.array_equal(weights(0), weights(0)) and not np.array_equal(weights(0), weights(1))


def test_mlp_gradients_pass_gradcheck():
    g = ge.ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [3, 4, 3], activation="tanh", seed=2)
    g.softmax_cross_entropy(logits, g.input("y"))
    rng = np.random.default_rng(1)
    assert ge.gradcheck(g, {"x": rng.normal(size=(5, 3)), "y": np.array([0, 2, 1, 1, 0])},
                        wrt=["W1", "b1", "W2", "b2"])


@pytest.mark.parametrize("sizes", [[3], [], [3, 0], [3, 2.5], [3, True]])
def test_mlp_rejects_bad_sizes(sizes):
    g = ge.ComputationalGraph()
    with pytest.raises(GraphError, match="sizes must list at least two positive integer"):
        ge.nn.mlp(g, g.input("x"), sizes)


def test_mlp_rejects_unknown_activation_and_duplicate_parameters():
    g = ge.ComputationalGraph()
    x = g.input("x")
    with pytest.raises(GraphError, match="unknown activation 'softplus'"):
        ge.nn.mlp(g, x, [2, 2], activation="softplus")
    ge.nn.mlp(g, x, [2, 2])
    with pytest.raises(GraphError, match="duplicate name 'W1'"):
        ge.nn.mlp(g, x, [2, 2])
