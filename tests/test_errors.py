"""Every mistake a user can make is a GraphError naming the node and what is wrong,
and the graph keeps working afterwards."""

import networkx as nx
import numpy as np
import pytest

from graphengine import ComputationalGraph, Gate, GraphError
from graphengine.gates import AddGate, SigmoidGate

FEED = {"x": -2.0, "y": 5.0, "z": -4.0}


@pytest.fixture
def g():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.mul(g.add(x, y, name="q"), z, name="f")
    return g


def still_works(g):
    assert g.forward(FEED) == -12.0
    grads = g.backward()
    assert {k: grads[k] for k in "xyzqf"} == {"x": -4.0, "y": -4.0, "z": 3.0, "q": -4.0, "f": 1.0}
    assert all(np.all(v == 0) for k, v in grads.items() if k not in "xyzqf")


def test_graph_error_is_a_value_error():
    assert issubclass(GraphError, ValueError)


def test_missing_feed(g):
    with pytest.raises(GraphError, match=r"input 'y' needs a value.*'f' depends on it.*'z'"):
        g.forward(x=1.0)
    still_works(g)


def test_unknown_feed_key(g):
    with pytest.raises(GraphError, match="feed key 'w' is not a node of the graph"):
        g.forward(FEED, w=1.0)
    with pytest.raises(GraphError, match="feed key 3 is not a node"):
        g.forward({3: 1.0, **FEED})
    still_works(g)


def test_feeding_a_gate_or_parameter(g):
    g.parameter("p", 1.0)
    with pytest.raises(GraphError, match=r"feed key 'q' is a gate, not an input"):
        g.forward(FEED, q=1.0)
    with pytest.raises(GraphError, match=r"feed key 'p' is a parameter.*set its .value"):
        g.forward(FEED, p=1.0)
    still_works(g)


def test_feed_must_be_a_dict(g):
    with pytest.raises(GraphError, match="feed must be a dict"):
        g.forward([1.0, 2.0])
    still_works(g)


@pytest.mark.parametrize("value, what", [("abc", "got str"), (None, "got NoneType"),
                                         (np.array(["a"]), "dtype <U1"),
                                         (np.array([1j]), "dtype complex128"),
                                         ([[1.0], [2.0, 3.0]], "not a rectangular array")])
def test_non_numeric_values(g, value, what):
    with pytest.raises(GraphError, match=f"feed for input 'x'.*{what}"):
        g.forward({**FEED, "x": value})
    with pytest.raises(GraphError, match=f"parameter 'w'.*{what}"):
        g.parameter("w", value)
    with pytest.raises(GraphError, match=f"constant.*{what}"):
        g.constant(value)
    still_works(g)


def test_shapes_that_do_not_fit(g):
    with pytest.raises(GraphError, match=r"node 'q' \(\+\) failed in forward on inputs "
                                         r"'x' \(3,\), 'y' \(4,\).*broadcast"):
        g.forward(x=np.ones(3), y=np.ones(4), z=1.0)
    with pytest.raises(GraphError, match="backward needs a forward first"):
        g.backward()
    still_works(g)


def test_matmul_shapes_name_the_node():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    g.matmul(a, b, name="prod")
    with pytest.raises(GraphError, match=r"node 'prod' \(@\).*'a' \(2, 3\), 'b' \(2, 3\)"):
        g.forward(a=np.ones((2, 3)), b=np.ones((2, 3)))
    assert g.forward(a=np.ones((2, 3)), b=np.ones((3, 2))).shape == (2, 2)


def test_bad_labels_name_the_node():
    g = ComputationalGraph()
    z, y = g.input("z"), g.input("y")
    g.softmax_cross_entropy(z, y, name="loss")
    with pytest.raises(GraphError, match=r"node 'loss'.*integer classes in \[0, 3\)"):
        g.forward(z=np.zeros((2, 3)), y=np.array([0, 5]))
    assert g.forward(z=np.zeros((2, 3)), y=np.array([0, 2])) == pytest.approx(np.log(3))


def test_duplicate_name(g):
    with pytest.raises(GraphError, match="duplicate name 'q': the graph already has a gate"):
        g.input("q")
    with pytest.raises(GraphError, match="duplicate name 'x': the graph already has an input"):
        g.sigmoid(g["x"], name="x")
    with pytest.raises(GraphError, match="a node name must be a non-empty string"):
        g.input("")
    with pytest.raises(GraphError, match="an input needs a name"):
        g.input(None)
    still_works(g)


def test_unknown_node_name(g):
    with pytest.raises(GraphError, match="no node named 'nope' in the graph"):
        g["nope"]
    with pytest.raises(GraphError, match="no node named"):
        g[["unhashable"]]
    still_works(g)


def test_ambiguous_output(g):
    g.sigmoid(g["x"], name="other")
    with pytest.raises(GraphError,
                       match=r"the output is ambiguous: 2 gates.*'f', 'other'.*set_output"):
        g.forward(FEED)
    g.set_output("f")
    still_works(g)


def test_no_output():
    g = ComputationalGraph()
    g.input("x")
    with pytest.raises(GraphError, match="no gate yet"):
        g.forward(x=1.0)
    g.set_output("x")
    assert g.forward(x=1.0) == 1.0
    assert g.backward() == {"x": 1.0}


def test_backward_before_forward(g):
    with pytest.raises(GraphError, match=r"backward needs a forward first.*no successful.*'f'"):
        g.backward()
    still_works(g)


def test_backward_after_the_graph_changed(g):
    g.forward(FEED)
    g.sigmoid(g["f"], name="s")
    with pytest.raises(GraphError, match="the graph changed since its last forward"):
        g.backward()
    assert g["q"].value == 3.0          # the last results stay readable
    g.forward(FEED)
    assert g.backward()["f"] == pytest.approx(0.0, abs=1e-5)


def test_seed_of_the_wrong_shape(g):
    g.forward(FEED)
    with pytest.raises(GraphError,
                       match=r"seed has shape \(2,\), expected the shape \(\) of output 'f'"):
        g.backward(seed=np.ones(2))
    still_works(g)


def test_wrong_number_of_inputs(g):
    with pytest.raises(GraphError, match=r"gate \+ of node 's' takes 2 inputs, got 3"):
        g.apply(AddGate(), g["x"], g["y"], g["z"], name="s")
    with pytest.raises(GraphError, match="gate sigmoid_x takes 1 inputs, got 2|σ.*takes 1"):
        g.apply(SigmoidGate(), g["x"], g["y"])

    class Two(Gate):
        def forward(self, a, b):
            return a + b

    with pytest.raises(GraphError, match="Two cannot take 3 inputs"):
        g.apply(Two(), 1.0, 2.0, 3.0)
    with pytest.raises(TypeError):
        g.add(g["x"])
    still_works(g)


def test_gate_reused_or_not_a_gate(g):
    gate = SigmoidGate()
    g.apply(gate, g["x"], name="s1")
    with pytest.raises(GraphError, match="already used by another node"):
        g.apply(gate, g["y"])
    with pytest.raises(GraphError, match="apply needs a gate instance, got the class AddGate"):
        g.apply(AddGate, g["x"], g["y"])
    with pytest.raises(GraphError, match="apply needs a Gate instance, got function"):
        g.apply(lambda a: a, g["x"])
    g.set_output("f")
    still_works(g)


def test_a_node_of_another_graph(g):
    other = ComputationalGraph()
    w = other.input("w")
    with pytest.raises(GraphError, match="node 'w' belongs to another graph"):
        g.add(g["x"], w)
    with pytest.raises(GraphError, match="feed key 'w' is a node of another graph"):
        g.forward({w: 1.0, **FEED})
    with pytest.raises(GraphError, match="node 'w' belongs to another graph"):
        g.set_output(w)
    with pytest.raises(GraphError, match="got the string 'x'"):
        g.add("x", 1.0)
    still_works(g)


def test_only_parameters_can_be_set(g):
    c = g.constant(1.0, name="c")
    with pytest.raises(GraphError, match="node 'c' is of kind 'constant': only a parameter"):
        c.value = 2.0
    with pytest.raises(GraphError, match="node 'x' is of kind 'input'"):
        g["x"].value = 2.0
    w = g.parameter("w", 1.0)
    with pytest.raises(GraphError, match="parameter 'w'.*got str"):
        w.value = "two"
    assert w.value == 1.0
    g.set_output("f")
    still_works(g)


def test_bad_gate_arguments(g):
    with pytest.raises(GraphError, match="pow takes a number as exponent"):
        g.pow(g["x"], g["y"])
    with pytest.raises(GraphError, match="pow: pow needs a number as exponent, got str"):
        g.pow(g["x"], "2")
    with pytest.raises(GraphError, match=r"unknown gate 'nope'; known: add,"):
        g.op("nope", g["x"])
    with pytest.raises(GraphError, match="gate 'sum': axis must be None"):
        g.sum(g["x"], axis="rows")
    with pytest.raises(GraphError, match="unknown node kind"):
        g.nodes("leaf")
    still_works(g)


class BadCount(Gate):
    def forward(self, x, y):
        return x + y

    def backward(self, upstream):
        return (upstream,)


class BadShape(Gate):
    def forward(self, x):
        return x * 2

    def backward(self, upstream):
        return (np.ones(5),)


class NotASequence(Gate):
    def forward(self, x):
        return x

    def backward(self, upstream):
        return 3


class Fails(Gate):
    def forward(self, x):
        raise ZeroDivisionError("boom")


class Stringy(Gate):
    def forward(self, x):
        return "abc"


@pytest.mark.parametrize("gate, inputs, match, phase", [
    (BadCount(), 2, r"node 'u': backward returned 1 gradients for 2 inputs", "backward"),
    (BadShape(), 1, r"node 'u': backward's gradient 0 has shape \(5,\), expected \(3,\) "
                    r"\(the shape of input 'x'\)", "backward"),
    (NotASequence(), 1, r"node 'u': backward must return a sequence of 1 gradients, got int",
     "backward"),
    (Fails(), 1, r"node 'u' \(Fails\) failed in forward on inputs 'x' \(3,\): boom", "forward"),
    (Stringy(), 1, r"node 'u': forward returned: expected a number or a numpy array, got str",
     "forward"),
])
def test_a_users_gate_that_misbehaves(g, gate, inputs, match, phase):
    u = g.apply(gate, *[g["x"], g["y"]][:inputs], name="u")
    g.set_output(u)
    feed = {"x": np.ones(3), "y": np.ones(3)}
    if phase == "forward":
        with pytest.raises(GraphError, match=match):
            g.forward(feed)
    else:
        g.forward(feed)
        with pytest.raises(GraphError, match=match):
            g.backward()
    g.set_output("f")
    still_works(g)


def test_a_cycle_is_refused():
    dag = nx.MultiDiGraph()
    dag.add_node("a", kind="gate", gate=SigmoidGate())
    dag.add_node("b", kind="gate", gate=SigmoidGate())
    dag.add_edge("a", "b", slot=0)
    dag.add_edge("b", "a", slot=0)
    with pytest.raises(GraphError, match="cycle through nodes"):
        ComputationalGraph.from_dag(dag)


@pytest.mark.parametrize("attrs, edges, match", [
    ({"kind": "leaf", "gate": None}, [], "unknown kind 'leaf'"),
    ({"kind": "gate", "gate": "add"}, [], "needs a Gate instance"),
    ({"kind": "parameter", "gate": None}, [], "a parameter needs a 'value'"),
    ({"kind": "input", "gate": None}, [("x", 0)], "'input' nodes are leaves and cannot"),
    ({"kind": "gate", "gate": AddGate()}, [("x", 0), ("x", 0)], r"slots must be 0..1"),
    ({"kind": "gate", "gate": AddGate()}, [("x", 0)], r"takes 2 inputs, got 1"),
])
def test_from_dag_validates(attrs, edges, match):
    dag = nx.MultiDiGraph()
    dag.add_node("x", kind="input", gate=None)
    dag.add_node("n", **attrs)
    for u, s in edges:
        dag.add_edge(u, "n", slot=s)
    with pytest.raises(GraphError, match=match):
        ComputationalGraph.from_dag(dag)
    with pytest.raises(GraphError, match="needs a networkx.MultiDiGraph"):
        ComputationalGraph.from_dag(nx.DiGraph())


def test_assert_gradients_names_an_unknown_option(g):
    import graphengine as ge

    with pytest.raises(GraphError, match=r"assert_gradients: unknown option 'tol'; the "
                                         r"options are wrt, eps, rtol, atol"):
        ge.testing.assert_gradients(g, FEED, tol=1e-3)
    ge.testing.assert_gradients(g, FEED, rtol=1e-5)      # the known ones still work
