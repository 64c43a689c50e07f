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


def gradient_graph():
    # the gradient graph of a gradient graph: holds every gate of backward passes
    g, feed = every_gate()
    h = ge.grad(g, "a")
    h.set_output(h.sum(h.output))
    h = ge.grad(h, "b")
    h.set_output(h.sum(h.output))
    return h, feed


def weight_gradient_graph():
    g, feed = every_gate()
    h = ge.grad(g, "W")
    h.set_output(h.sum(h.output))
    return h, feed


GRAPHS = [circuit, square, network, every_gate, gradient_graph, weight_gradient_graph]


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
    ops = {n.gate.op for make in (every_gate, gradient_graph, weight_gradient_graph)
           for n in make()[0].nodes("gate")}
    assert sorted(ops) == sorted(c.op for c in G.BUILTIN)


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
     r"shape must be a list of at most 32 non-negative ints"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float64", "shape": [10**6, 10**6], "data": []}}]),
     r"more than 10000000 elements \(at node 'w'\)"),
    (doc([{"name": "w", "kind": "parameter", "value": {"dtype": "float64", "shape": [1],
                                                      "data": [1], "pickle": "x"}}]),
     r"needs exactly the keys dtype, shape, data"),
    (doc([{"name": "x", "kind": []}]), r"node 'x': unknown kind \[\]"),
    (doc([{"name": "x", "kind": {}}]), r"node 'x': unknown kind \{\}"),
    (doc([{"name": ["x"], "kind": "input"}]), r"nodes\[0\]: 'name' must be a string"),
    (doc([X], output=[]), r"'output' must be null or the name of a node, got \[\]"),
    (doc([X], output={"a": 1}), r"'output' must be null or the name of a node"),
    (doc([X, {"name": "s", "kind": "gate", "op": ["add"], "inputs": ["x"]}]),
     r"node 's': unknown gate type \['add'\]"),
    ('{"format": "graphengine", "version": 1, "nodes": [{"name": "w", "kind": "parameter", '
     '"value": 1' + "0" * 5000 + '}]}', r"an integer of 5001 digits; .* at most 1000"),
    ('{"format": "graphengine", "version": 1' + "0" * 4400 + '}',
     r"an integer of 4401 digits"),
    (doc([{"name": "w", "kind": "parameter", "value": 10 ** 400}]),
     r"node 'w': value 10000.* \(401 digits\) is too large for a float"),
    (doc([X, {"name": "p", "kind": "gate", "op": "pow", "config": {"p": 10 ** 400},
              "inputs": ["x"]}]), r"node 'p': config 'p' must be a number \(integers within"),
    (doc([X, {"name": "s", "kind": "gate", "op": "sum", "config": {"axis": [2 ** 70]},
              "inputs": ["x"]}]), r"node 's': config 'axis' must be a number"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float64", "shape": [1], "data": [10 ** 400]}}]),
     r"node 'w': data must be numbers of shape \[1\], got object"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float32", "shape": [1], "data": [1e300]}}]),
     r"node 'w': data holds a number too large for float32"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": ["float64"], "shape": [1], "data": [1]}}]),
     r"node 'w': dtype \['float64'\] is not one of"),
    (doc([{"name": "w", "kind": "parameter",
           "value": {"dtype": "float64", "shape": [1] * 33, "data": 1}}]),
     r"shape must be a list of at most 32"),
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


class Named(G.Gate):
    """A registered gate whose config holds whatever the test gives it."""

    op = "test_named"
    arity = 1

    def __init__(self, tag="a"):
        self.tag = tag

    def config(self):
        return {"tag": self.tag}

    def forward(self, x):
        return x

    def backward(self, upstream):
        return (upstream,)


def test_to_json_refuses_what_from_json_would_refuse_and_gives_the_size(monkeypatch):
    g = ComputationalGraph()
    x = g.input("n" * 201)
    g.neg(x, name="y")
    with pytest.raises(GraphError, match=r"cannot save node 'nnn.*: its name has 201 "
                                         r"characters, more than the limit 200"):
        g.to_json()
    g = ComputationalGraph()
    g.neg(g.parameter("W", np.zeros((3, 4))), name="y")
    g.constant(np.zeros(5), name="c")
    monkeypatch.setattr(serialize, "MAX_ELEMENTS", 16)
    with pytest.raises(GraphError, match=r"arrays hold 17 elements or more \(reached at "
                                         r"node 'c'\), more than the limit 16"):
        g.to_json()
    monkeypatch.setattr(serialize, "MAX_ELEMENTS", 17)
    ComputationalGraph.from_json(g.to_json())
    monkeypatch.setattr(serialize, "MAX_NODES", 2)
    with pytest.raises(GraphError, match=r"it has 3 nodes, more than the limit 2"):
        g.to_json()
    monkeypatch.setattr(serialize, "MAX_NODES", 3)
    monkeypatch.setattr(serialize, "MAX_CHARS", 100)
    with pytest.raises(GraphError, match=r"its JSON text has \d+ characters, more than the "
                                         r"limit 100"):
        g.to_json()
    monkeypatch.setitem(G.GATES, "test_named", Named)
    h = ComputationalGraph()
    h.apply(Named("t" * 201), h.input("x"), name="y")
    with pytest.raises(GraphError, match=r"node 'y': cannot save config 'tag' of gate "
                                         r"'test_named'"):
        h.to_json()
    h["y"].gate.tag = "short"
    monkeypatch.setattr(serialize, "MAX_CHARS", 10_000)
    assert ComputationalGraph.from_json(h.to_json())["y"].gate.tag == "short"
    assert g.forward().shape == (3, 4) and h.forward(x=2.0) == 2.0      # still usable


def test_a_registered_gate_that_raises_anything_on_its_config_is_a_graph_error(monkeypatch):
    class Fussy(Named):
        op = "test_fussy"

        def __init__(self, tag="a"):
            raise ZeroDivisionError("no")

    monkeypatch.setitem(G.GATES, "test_fussy", Fussy)
    text = doc([X, {"name": "f", "kind": "gate", "op": "test_fussy", "inputs": ["x"]}])
    with pytest.raises(GraphError, match=r"node 'f': gate 'test_fussy' rejects its config"):
        ComputationalGraph.from_json(text)


def test_nodes_out_of_order_load_in_topological_order_with_document_ties():
    text = doc([{"name": "s", "kind": "gate", "op": "add", "inputs": ["b", "a"]},
                {"name": "a", "kind": "input"}, {"name": "n", "kind": "gate", "op": "neg",
                                                 "inputs": ["a"]},
                {"name": "b", "kind": "input"}], output="s")
    g = ComputationalGraph.from_json(text)
    assert list(g.dag) == ["a", "n", "b", "s"]
    assert g.forward(a=1.0, b=2.0) == 3.0


def chain_text(n):
    g = ComputationalGraph()
    h = g.input("x")
    for k in range(n - 1):
        h = g.op(("sum", "sigmoid", "neg")[k % 3], h) if k % 3 else g.sum(h, axis=None)
    return g.to_json()


@pytest.mark.slow
def test_loading_is_linear_up_to_the_node_limit():
    import time

    small, big = chain_text(10_000), chain_text(serialize.MAX_NODES)
    times = []
    for text in (small, small, big):
        start = time.process_time()          # this process's CPU time: others' load aside
        g = ComputationalGraph.from_json(text)
        times.append(time.process_time() - start)
    assert len(g) == serialize.MAX_NODES
    # 10x the nodes: about 10x the time (the first small load warms the caches up)
    assert times[2] < 25 * min(times[:2]), times
