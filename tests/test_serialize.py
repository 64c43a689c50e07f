import json
import os

import numpy as np
import pytest

import graphengine as ge
from graphengine import ComputationalGraph, GraphError, serialize
from graphengine import gates as G


def structure(g):
    nodes = []
    for v, a in g.dag.nodes(data=True):
        value = a.get("value")
        if isinstance(value, np.ndarray):
            value = (value.dtype.name, value.shape, value.tolist())
        nodes.append((v, a["kind"], a["gate"] and type(a["gate"]), a["gate"]
                      and a["gate"].config(), value))
    return nodes, sorted(g.dag.edges(data="slot")), g.dag.graph.get("output")


def circuit():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.mul(g.add(x, y, name="q"), z, name="f")
    return g, {"x": -2.0, "y": 5.0, "z": -4.0}


def square():
    g = ComputationalGraph()
    x = g.input("x")
    x * x + 3 * x
    return g, {"x": 1.5}


def network():
    g = ComputationalGraph()
    x = g.input("x")
    W1 = g.parameter("W1", [[0.5, 0.3], [0.2, 0.4]])
    b1 = g.parameter("b1", [0.1, 0.2])
    W2 = g.parameter("W2", [[0.6], [0.7]])
    b2 = g.parameter("b2", np.float32([0.3]))
    h = g.sigmoid(x @ W1 + b1, name="h")
    g.mse(g.sigmoid(h @ W2 + b2), g.constant([[0.8]], name="label"), name="loss")
    return g, {"x": np.array([[0.5, 0.3]])}


def every_gate():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    s = g.div(g.sub(g.max(a, b), g.neg(b)), g.exp(g.tanh(a)))
    t = g.power(g.relu(b) + g.sigmoid(a), g.log(g.pow(a, 2) + 1.0))
    W = g.op("transpose", g.parameter("W", np.ones((2, 3))))
    u = g.sum(g.mean(g.matmul(s * t, W), axis=(0,)))
    ce = g.softmax_cross_entropy(s, g.constant([0, 2, 1, 1], name="labels"))
    e = g.mse(g.mean(t, axis=1), g.constant(np.zeros(4)))
    g.add(u + ce, e, name="total")
    g.set_output("total")
    rng = np.random.default_rng(0)
    return g, {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(4, 3))}


GRAPHS = [circuit, square, network, every_gate]


@pytest.mark.parametrize("make", GRAPHS, ids=lambda f: f.__name__)
def test_round_trip_gives_identical_forward_and_backward(make):
    g, feed = make()
    text = g.to_json()
    h = ComputationalGraph.from_json(text)
    assert structure(h) == structure(g)
    out_g, out_h = g.forward(feed), h.forward(feed)
    assert out_h == out_g
    grads_g, grads_h = g.backward(), h.backward()
    assert list(grads_h) == list(grads_g)
    for name in grads_g:
        np.testing.assert_array_equal(grads_h[name], grads_g[name])
    assert h.to_json() == text


def test_every_builtin_gate_is_covered_by_the_round_trip():
    g, _ = every_gate()
    assert sorted({n.gate.op for n in g.nodes("gate")}) == sorted(c.op for c in G.BUILTIN)


def test_schema_of_the_circuit():
    g, _ = circuit()
    doc = json.loads(g.to_json())
    assert doc == {"format": "graphengine", "version": 1, "output": None, "nodes": [
        {"name": "x", "kind": "input"}, {"name": "y", "kind": "input"},
        {"name": "z", "kind": "input"},
        {"name": "q", "kind": "gate", "op": "add", "inputs": ["x", "y"]},
        {"name": "f", "kind": "gate", "op": "mul", "inputs": ["q", "z"]}]}


def test_non_finite_values_round_trip():
    g = ComputationalGraph()
    x = g.input("x")
    g.add(g.add(x, g.constant(float("inf"), name="big")), g.parameter("n", [np.nan, 1.0]))
    h = ComputationalGraph.from_json(g.to_json())
    assert h["big"].value == float("inf")
    assert np.isnan(h["n"].value[0]) and h["n"].value[1] == 1.0


class Cube(ge.Gate):
    arity = 1
    op = "test_cube"

    def __init__(self, scale=1.0):
        self.scale = scale

    def config(self):
        return {"scale": self.scale}

    def forward(self, x):
        self.x = x
        return self.scale * x ** 3

    def backward(self, upstream):
        return (3 * self.scale * self.x ** 2 * upstream,)


def test_a_users_gate_needs_registering(monkeypatch):
    g = ComputationalGraph()
    g.apply(Cube(2.0), g.input("x"), name="c")
    with pytest.raises(GraphError, match=r"node 'c': gate Cube is not in the registry"):
        g.to_json()
    monkeypatch.setitem(G.GATES, "test_cube", Cube)
    h = ComputationalGraph.from_json(g.to_json())
    assert h["c"].gate.scale == 2.0
    assert h.forward(x=2.0) == 16.0 and h.backward()["x"] == 24.0


def doc(nodes, **top):
    d = {"format": "graphengine", "version": 1, "nodes": nodes, "output": None}
    d.update(top)
    return json.dumps(d)


X = {"name": "x", "kind": "input"}
HOSTILE = [
    ("", r"not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, r"nested too deeply|not valid JSON"),
    ('{"format": "graphengine", "format": "graphengine"}', r"key 'format' appears twice"),
    ("[]", r"not a graphengine document"),
    ('{"format": "pickle", "version": 1, "nodes": []}', r"not a graphengine document"),
    ('{"format": "graphengine", "version": 2, "nodes": []}', r"version 2"),
    ('{"format": "graphengine", "version": true, "nodes": []}', r"version True"),
    ('{"format": "graphengine", "version": 1}', r"missing \['nodes'\]"),
    ('{"format": "graphengine", "version": 1, "nodes": [], "py/object": "os.system"}',
     r"unexpected \['py/object'\]"),
    (doc({"name": "x"}), r"'nodes' must be a list"),
    (doc([3]), r"nodes\[0\] must be an object"),
    (doc([{"name": "", "kind": "input"}]), r"'name' must be a string"),
    (doc([{"name": "n" * 201, "kind": "input"}]), r"'name' must be a string of 1 to 200"),
    (doc([X, X]), r"nodes\[1\]: duplicate name 'x'"),
    (doc([{"name": "x", "kind": "module"}]), r"node 'x': unknown kind 'module'"),
    (doc([{"name": "x", "kind": "input", "value": 1}]), r"unexpected \['value'\]"),
    (doc([{"name": "w", "kind": "parameter"}]), r"missing \['value'\]"),
    (doc([X, {"name": "s", "kind": "gate", "op": "os.system", "inputs": ["x"]}]),
     r"node 's': unknown gate type 'os.system'"),
    (doc([X, {"name": "s", "kind": "gate", "op": "__import__", "inputs": ["x"]}]),
     r"unknown gate type '__import__'"),
    (doc([X, {"name": "s", "kind": "gate", "op": "add", "inputs": ["x"]}]),
     r"node 's': gate 'add' takes 2 inputs, got 1"),
    (doc([X, {"name": "s", "kind": "gate", "op": "add", "inputs": "xx"}]),
     r"'inputs' must be a list of node names"),
    (doc([X, {"name": "s", "kind": "gate", "op": "neg", "inputs": ["nope"]}]),
     r"node 's': input 'nope' is not a node"),
    (doc([{"name": "a", "kind": "gate", "op": "neg", "inputs": ["b"]},
          {"name": "b", "kind": "gate", "op": "neg", "inputs": ["a"]}]),
     r"cycle through nodes a -> b|cycle through nodes b -> a"),
    (doc([{"name": "a", "kind": "gate", "op": "add", "inputs": ["a", "a"]}]),
     r"cycle through nodes a"),
    (doc([X, {"name": "p", "kind": "gate", "op": "pow", "config": {"p": "rm -rf"},
              "inputs": ["x"]}]), r"node 'p': gate 'pow' rejects its config"),
    (doc([X, {"name": "p", "kind": "gate", "op": "pow", "config": {"q": 2},
              "inputs": ["x"]}]), r"node 'p': gate 'pow' has no config 'q'"),
    (doc([X, {"name": "p", "kind": "gate", "op": "sum", "config": {"axis": {"a": 1}},
              "inputs": ["x"]}]), r"config 'axis' must be a number"),
    (doc([X, {"name": "p", "kind": "gate", "op": "sum", "config": [1], "inputs": ["x"]}]),
     r"config must be an object"),
    (doc([X], output="nope"), r"'output' must be null or the name of a node"),
    (doc([{"name": "w", "kind": "parameter", "value": "1.0"}]),
     r"node 'w': 'value' must be a number or an array"),
    (doc([{"name": "w", "kind": "parameter", "value": True}]),
     r"'value' must be a number or an array object \{dtype, shape, data\}, got bool"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "object", "shape": [1], "data": [1]}}]),
     r"dtype 'object' is not one of"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float64", "shape": [2], "data": [1]}}]),
     r"data must be numbers of shape \[2\], got int64 of shape \[1\]"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float64", "shape": [2], "data": ["1", "2"]}}]),
     r"data must be numbers of shape \[2\]"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float64", "shape": [2, 1], "data": [[1], [2, 3]]}}]),
     r"not a rectangular array"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float64", "shape": [-1], "data": []}}]),
     r"shape must be a list of non-negative ints"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float64", "shape": [10**6, 10**6], "data": []}}]),
     r"more than 10000000 elements \(at node 'w'\)"),
    (doc([{"name": "w", "kind": "parameter", "value": {"dtype": "float64", "shape": [1],
                                                      "data": [1], "pickle": "x"}}]),
     r"needs exactly the keys dtype, shape, data"),
    (b'{"format": "graphengine"}', r"decode the bytes first"),
    (None, r"from_json needs a str, got NoneType"),
]


@pytest.mark.parametrize("text, match", HOSTILE, ids=lambda v: repr(v)[:40])
def test_hostile_json_is_a_graph_error_with_no_side_effect(text, match, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphError, match=match):
        ComputationalGraph.from_json(text)
    assert os.listdir(tmp_path) == []


def test_size_limits(monkeypatch):
    monkeypatch.setattr(serialize, "MAX_CHARS", 100)
    with pytest.raises(GraphError, match=r"more than the limit 100"):
        ComputationalGraph.from_json(" " * 101)
    monkeypatch.setattr(serialize, "MAX_CHARS", 10_000)
    monkeypatch.setattr(serialize, "MAX_NODES", 2)
    with pytest.raises(GraphError, match=r"has 3 nodes, more than the limit 2"):
        ComputationalGraph.from_json(doc([X, X, X]))


def test_ten_megabytes_of_junk_is_refused_quickly():
    with pytest.raises(GraphError, match=r"not valid JSON"):
        ComputationalGraph.from_json("x" * 10_000_000)
