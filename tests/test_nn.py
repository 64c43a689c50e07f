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


@pytest.mark.parametrize("sizes", [[3], [], [3, 0], [3, 2.5], [3, True], None, 5, "34",
                                   {3: 4}, [3, -1]])
def test_mlp_rejects_bad_sizes(sizes):
    g = ge.ComputationalGraph()
    x = g.input("x")
    with pytest.raises(GraphError, match="sizes must list at least two positive integer"):
        ge.nn.mlp(g, x, sizes)
    assert [n.name for n in g] == ["x"]


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": []}, r"mlp: unknown activation \[\]; expected one of sigmoid, tanh"),
    ({"activation": "softplus"}, r"unknown activation 'softplus'"),
    ({"seed": -1}, r"mlp: seed must be a non-negative integer, got -1"),
    ({"seed": 1.5}, r"mlp: seed must be a non-negative integer, got 1.5"),
    ({"seed": "0"}, r"mlp: seed must be a non-negative integer, got '0'"),
    ({"seed": True}, r"mlp: seed must be a non-negative integer, got True"),
    ({"sizes": [64, 10_000_000, 10]}, r"mlp: sizes \[64, 10000000, 10\] need 750000010 "
                                      r"weights and biases, more than the limit 20000000"),
    ({"x": 3.0}, r"mlp: x must be a Node of the graph g .*got float"),
    ({"x": ge.ComputationalGraph().input("x")}, r"x must be a Node .*got a node of another"),
])
def test_a_failed_mlp_call_adds_nothing(kwargs, match):
    g = ge.ComputationalGraph()
    x = g.input("x")
    args = {"x": x, "sizes": [3, 4, 2], **kwargs}
    with pytest.raises(GraphError, match=match):
        ge.nn.mlp(g, **args)
    assert [n.name for n in g] == ["x"]
    out = ge.nn.mlp(g, x, [3, 4, 2])           # the graph is as good as new
    assert g.forward(x=np.ones((1, 3))).shape == (1, 2) and g.output is out


def test_mlp_refuses_a_graph_that_is_not_one():
    with pytest.raises(GraphError, match=r"mlp: g must be a ComputationalGraph, got NoneType"):
        ge.nn.mlp(None, None, [2, 2])


def test_mlp_rejects_unknown_activation_and_duplicate_parameters():
    g = ge.ComputationalGraph()
    x = g.input("x")
    with pytest.raises(GraphError, match="unknown activation 'softplus'"):
        ge.nn.mlp(g, x, [2, 2], activation="softplus")
    ge.nn.mlp(g, x, [2, 2])
    with pytest.raises(GraphError, match="duplicate name 'W1'"):
        ge.nn.mlp(g, x, [2, 2])
    before = [n.name for n in g]
    with pytest.raises(GraphError, match=r"mlp: duplicate name 'W1': the graph already has "
                                         r"nodes named 'W1', 'b1'"):
        ge.nn.mlp(g, g["add_4"], [2, 3, 2])     # W2 and b2 are free, W1 and b1 are not
    assert [n.name for n in g] == before
