"""The graph's structure: g.dag always equals the engine's record (and refuses hand
edits), remove / prune / atomic, evaluate, and the memory a big graph takes."""

import copy
import gc
import tracemalloc
import weakref

import networkx as nx
import numpy as np
import pytest

import graphengine as ge
from graphengine import ComputationalGraph, Gate, GraphError
from graphengine.gates import AddGate, MultiplyGate


class Scale(Gate):
    """A user's gate of three inputs: a * b + c."""

    def forward(self, a, b, c):
        self.a, self.b = a, b
        return a * b + c

    def backward(self, upstream):
        return upstream * self.b, upstream * self.a, upstream

    def jvp(self, a_dot, b_dot, c_dot):
        return a_dot * self.b + self.a * b_dot + c_dot


def engine_structure(g):
    nodes = [(n.name, n.kind, n.gate, n.value if n.kind in ("parameter", "constant")
              else None) for n in g]
    edges = sorted((u.name, n.name, s) for n in g for s, u in enumerate(n.inputs))
    return nodes, edges


def dag_structure(dag):
    nodes = [(v, a["kind"], a["gate"], a.get("value")) for v, a in dag.nodes(data=True)]
    return nodes, sorted(dag.edges(data="slot"))


def assert_dag_is_the_graph(g, feed):
    """g.dag holds exactly the engine's nodes, gates, values and edges, and a graph
    rebuilt from it computes the same values and gradients."""
    dag = g.dag
    assert isinstance(dag, nx.MultiDiGraph)
    want_nodes, want_edges = engine_structure(g)
    got_nodes, got_edges = dag_structure(dag)
    assert [n[:3] for n in got_nodes] == [n[:3] for n in want_nodes]
    for (_, _, _, a), (_, _, _, b) in zip(got_nodes, want_nodes, strict=True):
        assert a is b or np.array_equal(a, b)
    assert got_edges == want_edges
    assert dag.graph.get("output") == (None if g._out is None else g._name(g._out))
    h = ComputationalGraph.from_dag(dag)
    assert h.output.name == g.output.name
    np.testing.assert_allclose(h.forward(feed), g.forward(feed), rtol=1e-15)
    want, got = g.backward(), h.backward()
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-14)


def built_by_builders():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    w = g.parameter("w", np.array([0.5, -1.0]))
    c = g.constant(2.0, name="c")
    h = g.tanh(g.add(g.mul(x, w), c))
    out = g.sum(g.max(g.sigmoid(h), g.relu(g.sub(h, y))), name="out")
    g.exp(x, name="unused")           # a second sink: the output is set below
    g.set_output(out)
    return g, {"x": np.array([0.3, -0.2]), "y": 0.1}


def built_by_operators():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    W = g.parameter("W", np.arange(6.0).reshape(2, 3) / 10)
    z = (x @ W + 1.0) * 2 - y / 4.0
    s = g.sum(x)
    _ = g.sum(-(z ** 2) + 3 * z) ** 1.0 + s * s       # s used twice by one gate
    return g, {"x": np.array([[1.0, 2.0]]), "y": np.array([[0.5, 0.25, 1.0]])}


def built_by_apply():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    s = g.apply(Scale(), a, b, 1.5, name="s")
    g.apply(MultiplyGate(), s, s, name="sq")
    return g, {"a": 2.0, "b": -3.0}


def built_by_from_dag():
    g, feed = built_by_operators()
    return ComputationalGraph.from_dag(g.dag), feed


def built_by_from_json():
    g, feed = built_by_builders()
    return ComputationalGraph.from_json(g.to_json()), feed


def built_by_from_expression():
    g = ComputationalGraph.from_expression("max(x, y) * sigmoid(z) + x * x - 2 ** y")
    return g, {"x": 0.5, "y": -1.0, "z": 2.0}


def built_by_mlp():
    g = ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [4, 3, 2])
    g.softmax_cross_entropy(logits, g.input("y"))
    return g, {"x": np.linspace(-1, 1, 8).reshape(2, 4), "y": np.array([0.0, 1.0])}


BUILDS = [built_by_builders, built_by_operators, built_by_apply, built_by_from_dag,
          built_by_from_json, built_by_from_expression, built_by_mlp]


@pytest.mark.parametrize("build", BUILDS, ids=lambda f: f.__name__)
def test_dag_equals_the_engine_after_every_kind_of_build(build):
    g, feed = build()
    assert_dag_is_the_graph(g, feed)


@pytest.mark.parametrize("build", BUILDS, ids=lambda f: f.__name__)
def test_dag_read_early_follows_every_later_change(build):
    g, feed = build()
    dag = g.dag                                   # read first, then change the graph
    out = g.output
    extra = g.sigmoid(out, name="extra")
    more = extra * 2.0
    assert g.dag is dag and "extra" in dag and dag.has_edge("extra", more.name)
    g.set_output(more)
    assert dag.graph["output"] == more.name
    assert_dag_is_the_graph(g, feed)
    g.remove(more)
    assert more.name not in dag and dag.graph.get("output") is None
    g.set_output(extra)
    for p in g.parameters():
        p.value = p.value * 0.5
        assert dag.nodes[p.name]["value"] is p.value
    assert_dag_is_the_graph(g, feed)
    pruned = g.prune()                            # 2.0 of extra * 2.0 and what set_output left
    assert more.inputs[1].name in pruned and g.prune() == []
    assert_dag_is_the_graph(g, feed)


def test_hand_edits_of_the_dag_are_refused_and_change_nothing():
    g, feed = built_by_builders()
    before = g.forward(feed)
    dag = g.dag
    edits = [lambda: dag.add_node("new", kind="input", gate=None),
             lambda: dag.add_edge("x", "out", slot=1),
             lambda: dag.remove_node("c"),
             lambda: dag.remove_edge("c", dag.successors("c").__next__()),
             lambda: dag.clear(),
             lambda: dag.update(nx.MultiDiGraph()),
             lambda: dag.nodes["w"].__setitem__("value", np.zeros(2)),
             lambda: dag.nodes["out"].update(gate=AddGate()),
             lambda: dag.nodes["c"].pop("value"),
             lambda: dag.graph.__setitem__("output", "unused"),
             lambda: dag.edges["x", next(iter(dag.succ["x"])), 0].__setitem__("slot", 1),
             lambda: nx.set_node_attributes(dag, 3.0, "value")]
    for edit in edits:
        with pytest.raises(GraphError, match="g.dag is read-only.*from_dag"):
            edit()
    assert nx.is_frozen(dag)
    assert g.forward(feed) == before                  # the graph still works, unchanged
    assert_dag_is_the_graph(g, feed)


def test_an_edited_copy_of_the_dag_rebuilds_a_new_graph():
    g, feed = built_by_builders()
    g.forward(feed)
    d = g.dag.copy()                                  # a plain, editable MultiDiGraph
    assert not nx.is_frozen(d)
    d.nodes["c"]["value"] = 10.0
    h = ComputationalGraph.from_dag(d)
    assert h["c"].value == 10.0 and g["c"].value == 2.0
    assert h.forward(feed) != g.forward(feed)
    deep = copy.deepcopy(g.dag)                       # copies are plain dicts
    deep.nodes["c"]["value"] = 3.0
    assert g["c"].value == 2.0


def test_from_dag_refuses_an_output_that_is_not_a_node_name():
    g, _ = built_by_builders()
    for bad in (3.0, [1, 2], "nope"):
        d = g.dag.copy()
        d.graph["output"] = bad
        with pytest.raises(GraphError, match=r"from_dag: dag.graph\['output'\] must name a node"):
            ComputationalGraph.from_dag(d)


# ---------------------------------------------------------------- remove, prune, atomic

def notebook_cell(g):
    """A cell that builds unnamed gates, as a learner reruns it."""
    return g.softmax_cross_entropy(g.input("x") @ g["W"], g["y"]) \
        if False else g.mse(g.sigmoid(g["x"] * g["w"]), g["t"])


def test_a_cell_run_twice_leaves_an_ambiguous_output_that_says_what_to_do():
    g = ComputationalGraph()
    g.input("x"), g.parameter("w", 0.5), g.input("t")
    first = notebook_cell(g)
    second = notebook_cell(g)
    with pytest.raises(GraphError, match=rf"ambiguous: 2 gates.*'{first.name}', "
                                         rf"'{second.name}'.*set_output.*prune.*remove"):
        g.forward(x=1.0, t=0.0)
    g.set_output(second)
    removed = g.prune()
    assert removed == [first.name, first.inputs[0].name, first.inputs[0].inputs[0].name][::-1]
    assert g.forward(x=1.0, t=0.0) == pytest.approx((1 / (1 + np.exp(-0.5))) ** 2)
    assert g.backward()["w"] == pytest.approx(2 * 0.6224593312 * 0.2350037122, rel=1e-9)


def test_remove_refuses_a_used_node_and_names_its_users():
    g = ComputationalGraph()
    x = g.input("x")
    a, b = g.exp(x, name="a"), g.log(x, name="b")
    out = g.add(a, b, name="out")
    with pytest.raises(GraphError, match=r"cannot remove 'x': 2 nodes use it \('a', 'b'\)"):
        g.remove(x)
    with pytest.raises(GraphError, match=r"cannot remove 'a': 1 node uses it \('out'\)"):
        g.remove("a")
    with pytest.raises(GraphError, match="remove: 'nope' is not a node"):
        g.remove("nope")
    assert g.forward(x=1.0) == pytest.approx(np.e)
    g.remove(out)
    with pytest.raises(GraphError, match="ambiguous: 2 gates.*'a', 'b'"):
        g.forward(x=1.0)
    g.remove(b)
    assert [n.name for n in g] == ["x", "a"] and g.forward(x=0.0) == 1.0
    assert "out" not in g and out not in g
    with pytest.raises(GraphError, match="removed from its graph"):
        out + 1.0
    with pytest.raises(GraphError, match="node 'b' was removed from the graph"):
        g.add(a, b)
    assert "removed" in repr(out)
    g.add(a, 1.0, name="out")                         # the name is free again
    assert g.forward(x=0.0) == 2.0


def test_remove_frees_a_user_gate_for_another_node():
    g = ComputationalGraph()
    x = g.input("x")
    gate = Scale()
    s = g.apply(gate, x, x, x, name="s")
    g.remove(s)
    t = g.apply(gate, x, 2.0, 1.0, name="t")
    assert t.gate is gate and g.forward(x=3.0) == 7.0


def test_atomic_adds_all_or_nothing():
    g = ComputationalGraph()
    x = g.input("x")
    kept = g.sigmoid(x, name="kept")
    g.set_output(kept)
    with pytest.raises(GraphError, match="got the string 'oops'"):
        with g.atomic():
            h = g.tanh(kept, name="h")
            g.set_output(h)
            g.add(h * 2.0, "oops")
    assert [n.name for n in g] == ["x", "kept"] and g.output is kept
    assert g.forward(x=0.0) == 0.5
    with g.atomic():
        g.set_output(g.tanh(kept, name="h"))
    assert g.forward(x=0.0) == pytest.approx(np.tanh(0.5))


# ---------------------------------------------------------------- evaluate

def classifier():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    W = g.parameter("W", np.array([[1.0, -1.0], [0.5, 2.0]]))
    logits = g.matmul(g.sigmoid(x @ W), W, name="logits")
    g.softmax_cross_entropy(logits, y, name="loss")
    return g, logits


def test_evaluate_computes_a_node_from_just_the_inputs_it_needs():
    g, logits = classifier()
    X = np.array([[0.2, -0.4], [1.0, 3.0], [0.0, 0.0]])
    W = g["W"].value
    h = 1 / (1 + np.exp(-(X @ W)))
    np.testing.assert_allclose(g.evaluate(logits, {"x": X}), h @ W)
    np.testing.assert_allclose(g.evaluate("logits", x=X, y=np.zeros(3)), h @ W)
    assert g.evaluate("W") is W
    plan = g._plans[logits._i]
    g.evaluate(logits, x=X)
    assert g._plans[logits._i] is plan                    # compiled once per node
    g.sigmoid(g["loss"], name="more")                   # adding nodes keeps it
    assert g._plans[logits._i] is plan
    with pytest.raises(GraphError, match="input 'x' needs a value: the output 'logits'"):
        g.evaluate(logits, y=np.zeros(3))
    with pytest.raises(GraphError, match="evaluate: 'nope' is not a node"):
        g.evaluate("nope")


def test_evaluate_leaves_the_last_run_as_it_was():
    g, logits = classifier()
    g.set_output("loss")
    feed = {"x": np.array([[0.2, -0.4], [1.0, 3.0]]), "y": np.array([1.0, 0.0])}
    loss = g.forward(feed)
    grads = g.backward()
    before = logits.value.copy()
    g.evaluate(logits, x=np.ones((5, 2)))               # runs the same gates on other data
    np.testing.assert_array_equal(logits.value, before)
    assert g["loss"].value == loss and g.run.grads_current
    again = g.backward()                                # the gates' state is the run's again
    for k in grads:
        np.testing.assert_allclose(again[k], grads[k], rtol=1e-15)
    g.evaluate(logits, x=np.ones((5, 2)))
    J = g.jacobian(["W"])["W"]                          # so are the derivative tools'
    np.testing.assert_allclose(J, grads["W"], rtol=1e-12)


# ---------------------------------------------------------------- memory

@pytest.mark.slow
def test_a_million_gate_chain_stays_under_700_bytes_a_node():
    gc.collect()
    tracemalloc.start()
    try:
        g = ComputationalGraph()
        h = x = g.input("x")
        for i in range(1_000_000):
            h = g.sigmoid(h) if i % 2 == 0 else h + 0.5
        g.forward(x=0.3)
        grads = g.backward()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nodes = len(g)
    assert nodes == 1_500_001 and grads["x"] == x.grad and h.value == g.output.value
    assert peak / nodes < 700, f"{peak / nodes:.0f} bytes per node"


# ---------------------------------------------------------------- the record and handles

def chain(n):
    g = ComputationalGraph()
    h = g.input("x")
    for i in range(n):
        h = g.sigmoid(h) if i % 2 == 0 else h + 0.5
    return g, h


def test_a_node_handle_is_the_same_object_while_it_lives():
    g = ComputationalGraph()
    x = g.input("x")
    y = x * 2.0                                    # a derived name, mul_2
    kept = g.sigmoid(y)
    h = kept
    for _ in range(3000):                          # past sweeps of the dead handles
        h = g.tanh(h)
    assert g["x"] is x and g[y.name] is y and g.output is h
    assert g[kept.name] is kept and kept.inputs[0] is y and y.inputs[0] is x
    assert [n for n in g.nodes() if n.name == y.name][0] is y
    name = kept.name
    del kept
    assert g[name].name == name and g[name] is g[name]   # a new handle, then kept


def test_a_dropped_graph_is_freed_without_the_cyclic_collector():
    # the graph holds no reference to its Node handles (only weak ones), and gates
    # hold none to their nodes: dropping the graph and its handles frees it at once
    paused = gc.isenabled()
    gc.disable()
    try:
        g, h = chain(1000)
        g.forward(x=0.3)
        g.backward()
        _ = g.dag
        g.set_output(h)
        w = g.parameter("w", np.ones(3))
        _ = w.gate, h.gate, g[h.name].inputs
        gone = weakref.ref(g)
        del g, h, w, _
        assert gone() is None
    finally:
        if paused:
            gc.enable()


def test_building_adds_no_object_per_node_for_the_cyclic_collector():
    gc.collect()
    before = len(gc.get_objects())
    g, h = chain(20_000)                           # 30,001 nodes
    grew = len(gc.get_objects()) - before
    assert grew < 2_000, grew                      # was one Node (and more) per node
    assert len(g) == 30_001 and h.name == "add_30000"


def test_derived_names_give_way_to_stored_ones_both_ways():
    g = ComputationalGraph()
    x = g.input("x")
    g.input("sigmoid_2")                           # takes the name node 2 would derive
    s = g.sigmoid(x)
    assert s.name == "sigmoid_3" and g["sigmoid_3"] is s
    t = g.sigmoid(s)                               # node 3's derived name is taken too
    assert t.name == "sigmoid_4" and g["sigmoid_4"] is t and g["sigmoid_2"].kind == "input"
    e = g.exp(t)
    with pytest.raises(GraphError, match=r"duplicate name 'exp_5': the graph already has "
                                         "a gate of that name"):
        g.input("exp_5")
    assert e.name == "exp_5" and "exp_5" in g and "exp_05" not in g and "exp_6" not in g
    g.remove(e)
    assert "exp_5" not in g and g.input("exp_5").kind == "input"
    assert [n.name for n in g] == ["x", "sigmoid_2", "sigmoid_3", "sigmoid_4", "exp_5"]
    for text in ("", "_", "sigmoid_", "sigmoid_x", "sigmoid_²", "const_1"):
        assert text not in g


def test_a_removed_node_keeps_its_name_kind_value_and_inputs_and_refuses_the_rest():
    g = ComputationalGraph()
    x, w = g.input("x"), g.parameter("w", 2.0)
    y = g.mul(x, w, name="y")
    z = g.exp(y, name="z")
    g.remove(z)
    assert z.name == "z" and z.kind == "gate" and z.inputs == (y,) and "removed" in repr(z)
    with pytest.raises(GraphError, match="node 'z' was removed from its graph"):
        z + 1.0
    g.remove(y)
    g.remove(w)
    assert w.value == 2.0 and w.kind == "parameter"
    with pytest.raises(GraphError, match="node 'w' was removed"):
        w.value = 3.0
    assert [n.name for n in g] == ["x"] and len(g) == 1


def test_a_deep_copy_or_pickle_of_a_graph_is_a_graph_of_its_own():
    import pickle

    g = ComputationalGraph()
    x, w = g.input("x"), g.parameter("w", np.array([1.0, 2.0]))
    y = g.apply(Scale(), x, w, 1.0, name="y")
    g.forward(x=3.0)
    for h in (copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        hx = h["x"]
        assert hx is h["x"] and hx is not x and hx.graph is h and h["y"].inputs[0] is hx
        z = h.sigmoid(h["y"], name="z")
        assert "z" in h and "z" not in g and h.output is z and g.output is y
        with pytest.raises(GraphError, match="already used by another node"):
            h.apply(h["y"].gate, hx, hx, hx)
        h["w"].value = [0.0, 0.0]
        assert h.forward(x=3.0) == pytest.approx([0.7310585786] * 2)
        assert np.array_equal(g.forward(x=3.0), [4.0, 7.0])


@pytest.mark.parametrize("removed", [False, True])
def test_a_plan_of_part_of_the_graph_renumbers_every_kind_of_input(removed):
    # the output needs only some nodes, so the plan's slots are not the record's
    # indices: a three-input gate's tuple, a pair's inputs and a one-input gate's are
    # all mapped, around unused nodes (and removed ones)
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    spare = g.sigmoid(x)                             # nothing the output needs
    junk = g.exp(y, name="junk")
    s = g.apply(Scale(), x, y, 2.0, name="s")       # x y + 2
    t = g.mul(s, g.relu(x), name="t")               # (x y + 2) x, for x > 0
    after = g.sigmoid(t)
    if removed:
        g.remove(junk)
    g.set_output(t)
    assert g.forward(x=3.0, y=4.0) == 42.0
    grads = g.backward()
    assert (grads["x"], grads["y"], grads["s"], grads["t"]) == (26.0, 9.0, 3.0, 1.0)
    assert grads[s.inputs[2].name] == 3.0            # the constant 2.0
    assert grads[spare.name] == grads[after.name] == 0.0
    assert ("junk" in grads) is not removed
    plan = g.plan()
    assert plan.rec == [0, 1, 4, 5, 6, 7]            # x, y, 2.0, s, relu, t
