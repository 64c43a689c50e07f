"""Node handles: gates as methods, numpy functions on Nodes, and what a Node is not."""

import math

import numpy as np
import pytest

import graphengine as ge
from graphengine import GraphError

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")

X = np.array([[0.5, -1.2, 2.0], [0.3, 1.1, -0.4]])
POSITIVE = np.abs(X) + 0.1


def graph_of(build, value):
    g = ge.ComputationalGraph()
    x = g.input("x")
    out = build(g, x)
    g.set_output(out)
    g.forward(x=value)
    return g, out


def numeric_grad(fn, value, eps=1e-6):
    grad = np.zeros_like(value)
    for idx in np.ndindex(value.shape):
        up, down = value.copy(), value.copy()
        up[idx] += eps
        down[idx] -= eps
        grad[idx] = (np.sum(fn(up)) - np.sum(fn(down))) / (2 * eps)
    return grad


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


# (how the user writes it, the gate it must add, the closed form, an input)
CASES = [
    ("x.relu()", lambda g, x: x.relu(), "relu", lambda v: np.maximum(v, 0), X),
    ("x.sigmoid()", lambda g, x: x.sigmoid(), "sigmoid", sigmoid, X),
    ("x.tanh()", lambda g, x: x.tanh(), "tanh", np.tanh, X),
    ("x.exp()", lambda g, x: x.exp(), "exp", np.exp, X),
    ("x.log()", lambda g, x: x.log(), "log", np.log, POSITIVE),
    ("x.sum()", lambda g, x: x.sum(), "sum", np.sum, X),
    ("x.sum(axis=0)", lambda g, x: x.sum(axis=0), "sum", lambda v: v.sum(axis=0), X),
    ("x.mean()", lambda g, x: x.mean(), "mean", np.mean, X),
    ("x.mean(axis=1)", lambda g, x: x.mean(axis=1), "mean", lambda v: v.mean(axis=1), X),
    ("np.exp(x)", lambda g, x: np.exp(x), "exp", np.exp, X),
    ("np.log(x)", lambda g, x: np.log(x), "log", np.log, POSITIVE),
    ("np.tanh(x)", lambda g, x: np.tanh(x), "tanh", np.tanh, X),
    ("np.maximum(x, 0)", lambda g, x: np.maximum(x, 0), "max",
     lambda v: np.maximum(v, 0), X),
    ("np.maximum(0.5, x)", lambda g, x: np.maximum(0.5, x), "max",
     lambda v: np.maximum(0.5, v), X),
    ("np.sum(x)", lambda g, x: np.sum(x), "sum", np.sum, X),
    ("np.sum(x, axis=1)", lambda g, x: np.sum(x, axis=1), "sum", lambda v: v.sum(axis=1), X),
    ("np.sum(x, 0)", lambda g, x: np.sum(x, 0), "sum", lambda v: v.sum(axis=0), X),
    ("np.mean(x)", lambda g, x: np.mean(x), "mean", np.mean, X),
    ("np.mean(x, axis=0)", lambda g, x: np.mean(x, axis=0), "mean",
     lambda v: v.mean(axis=0), X),
    ("np.matmul(x, W)", lambda g, x: np.matmul(x, np.arange(6.0).reshape(3, 2)), "matmul",
     lambda v: v @ np.arange(6.0).reshape(3, 2), X),
    ("np.matmul(W, x)", lambda g, x: np.matmul(np.arange(4.0).reshape(2, 2), x), "matmul",
     lambda v: np.arange(4.0).reshape(2, 2) @ v, X),
    # numpy arrays and scalars on the left keep working as before
    ("A * x", lambda g, x: X * x, "mul", lambda v: X * v, X),
    ("A @ x", lambda g, x: np.ones((4, 2)) @ x, "matmul", lambda v: np.ones((4, 2)) @ v, X),
    ("A - x", lambda g, x: X - x * x, "sub", lambda v: X - v * v, X),
    ("A / x", lambda g, x: X / x, "div", lambda v: X / v, POSITIVE),
    ("A + x", lambda g, x: X + x, "add", lambda v: X + v, X),
    ("A ** x", lambda g, x: POSITIVE ** x, "power", lambda v: POSITIVE ** v, X),
    ("float64 * x", lambda g, x: np.float64(3.0) * x, "mul", lambda v: 3.0 * v, X),
    ("np.power(x, 3)", lambda g, x: np.power(x, 3), "pow", lambda v: v ** 3, X),
    ("-x via np.negative", lambda g, x: np.negative(x), "neg", lambda v: -v, X),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_methods_and_numpy_functions_add_the_matching_gate(case):
    _, build, op, closed, value = case
    g, out = graph_of(build, value)
    assert out.gate.op == op
    np.testing.assert_allclose(out.value, closed(value), rtol=1e-12)
    g.backward(seed=np.ones(np.shape(out.value)))
    np.testing.assert_allclose(g["x"].grad, numeric_grad(closed, value), rtol=1e-6, atol=1e-8)


def test_methods_take_a_name():
    g = ge.ComputationalGraph()
    x = g.input("x")
    assert x.relu(name="r").name == "r" and g["r"].gate.op == "relu"
    assert x.sum(axis=0, name="s").gate.axis == 0


@pytest.mark.parametrize("write, match", [
    (lambda x, y: np.sin(x), r"np.sin on node 'x': graphengine has no gate for it; on "
                             r"Nodes numpy builds gates for np.exp"),
    (lambda x, y: np.sqrt(x), r"np.sqrt on node 'x'.*write x \*\* 0.5 \(for its number, "
                              r"use x.value after forward\(\)\)"),
    (lambda x, y: np.abs(x), r"write g.relu\(x\) \+ g.relu\(-x\)"),
    (lambda x, y: np.minimum(x, y), r"write -g.max\(-x, -y\)"),
    (lambda x, y: np.dot(x, y), r"np.dot on node 'x'.*write x @ y"),
    (lambda x, y: np.exp(x, out=np.zeros(2)), r"in place .*write a = a \+ node"),
    (lambda x, y: np.add.reduce(x), r"np.add.reduce on node 'x'"),
    (lambda x, y: np.sum(x, keepdims=True), r"np.sum on node 'x' with keepdims="),
    (lambda x, y: np.clip(x, 0, 1), r"np.clip on node 'x'.*write a Gate"),
    (lambda x, y: np.greater(x, 0), r"for the larger of two nodes write g.max\(x, y\)"),
    (lambda x, y: max(x, y), r"node 'y' was compared .*write g.max\(x, y\)"),
    (lambda x, y: min(x, y), r"was compared \(>, <, builtin max or min\)"),
    (lambda x, y: 1 if x > 0 else 0, r"to branch on its number, use x.value after forward"),
    (lambda x, y: x <= y, r"node 'x' was compared"),
    (lambda x, y: math.exp(x), r"write x.exp\(\), x.log\(\) or np.exp\(x\)"),
    (lambda x, y: float(x), r"a number from node 'x' .*use x.value after forward\(\)"),
    (lambda x, y: int(y), r"a number from node 'y'"),
    (lambda x, y: bool(x), r"node 'x' has no truth value"),
    (lambda x, y: x and y, r"node 'x' has no truth value"),
    (lambda x, y: abs(x), r"abs\(\) of node 'x'.*g.relu\(x\) \+ g.relu\(-x\)"),
])
def test_what_a_node_is_not_says_what_to_write(write, match):
    g = ge.ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    with pytest.raises(GraphError, match=match):
        write(x, y)
    assert len(g) == 2                        # a failed call adds nothing


def test_in_place_on_an_array_is_refused():
    g = ge.ComputationalGraph()
    x = g.input("x")
    a = np.zeros(2)
    with pytest.raises(GraphError, match="in place"):
        a += x
    assert len(g) == 1 and not a.any()


def test_a_name_that_is_no_identifier_is_written_as_g_lookup():
    g = ge.ComputationalGraph()
    h = g.input("hidden layer")
    with pytest.raises(GraphError, match=r"use g\['hidden layer'\].value"):
        float(h)


def test_nodes_still_hash_and_compare_equal_by_identity():
    g = ge.ComputationalGraph()
    x = g.input("x")
    y = np.exp(x)
    assert x == x and x != y and {x: 1}[x] == 1
    assert g.forward({x: 0.0}) == 1.0
