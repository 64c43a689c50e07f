"""Every mistake a user can make is a GraphError naming the node and what is wrong,
and the graph keeps working afterwards."""

import networkx as nx
import numpy as np
import pytest

from graphengine import ComputationalGraph, Gate, GraphError
from graphengine.gates import AddGate, SigmoidGate

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")

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
    with pytest.raises(GraphError, match="gate σ takes 1 input, got 2"):
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
    (BadCount(), 2, r"node 'u': backward returned 1 gradient for 2 inputs", "backward"),
    (BadShape(), 1, r"node 'u': backward's gradient 0 has shape \(5,\), expected \(3,\) "
                    r"\(the shape of input 'x'\)", "backward"),
    (NotASequence(), 1, r"node 'u': backward must return a sequence of 1 gradient, got int",
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


# ---------------------------------------------------------------- issue 12: bad input

@pytest.mark.parametrize("value, match", [
    (10 ** 400, "feed for input 'x': the integer of about 401 digits is too large for a float64"),
    (np.timedelta64(5, "s"), "feed for input 'x': expected a number, got a numpy timedelta64"),
    (np.datetime64("2024-01-01"), "feed for input 'x': expected a number, got a numpy datetime64"),
    (np.array([1, 2], dtype="timedelta64[s]"), "got an array of dtype timedelta64"),
    (np.array(["2024-01-01"], dtype="datetime64[D]"), "got an array of dtype datetime64"),
    (np.array([1 + 2j]), "expected numbers, got an array of dtype complex128"),
    (1 + 2j, "expected a number or a numpy array, got complex"),
    (np.array([1, "a"], dtype=object), "expected numbers, got an array of dtype object"),
    (np.array(["a", "b"]), "expected numbers, got an array of dtype <U1"),
    ([10 ** 400], "expected numbers, got an array of dtype object"),
    (np.ma.masked_array([1.0, 2.0], mask=[0, 1]), "a masked array"),
])
def test_feeds_that_are_not_float_numbers(g, value, match):
    with pytest.raises(GraphError, match=match):
        g.forward(x=value, y=5.0, z=-4.0)
    with pytest.raises(GraphError, match=match.replace("feed for input 'x'", "parameter 'p'")):
        g.parameter("p", value)
    assert "p" not in g
    still_works(g)


def test_a_huge_seed_is_a_graph_error(g):
    g.forward(FEED)
    with pytest.raises(GraphError, match="backward's seed: the integer of about 401 digits"):
        g.backward(10 ** 400)
    with pytest.raises(GraphError, match="input of [*]: the integer of about 401 digits"):
        g["x"] * 10 ** 400
    still_works(g)


def test_set_output_needs_a_node_or_a_name(g):
    for bad in (3.0, [1, 2], np.array(1.0), None):
        with pytest.raises(GraphError, match="set_output needs a node of the graph or its name"):
            g.set_output(bad)
    with pytest.raises(GraphError, match="set_output: 'nope' is not a node of the graph"):
        g.set_output("nope")
    assert len(g) == 5
    still_works(g)


def test_odd_keys_and_names(g):
    assert ["x"] not in g and {"x": 1} not in g and np.array(["x"]) not in g
    assert 3 not in g and None not in g and "x" in g and g["x"] in g
    with pytest.raises(GraphError, match=r"no node named a numpy array of shape \(1,\): node "
                                         "names are strings"):
        g[np.array(["x"])]
    with pytest.raises(GraphError, match=r"no node named list \['x'\]: node names are strings"):
        g[["x"]]
    with pytest.raises(GraphError, match="a node name must be a non-empty string, got a numpy "
                                         "array"):
        g.input(np.array(["w"]))
    with pytest.raises(GraphError, match="a node name must be a non-empty string, got a numpy "
                                         "array"):
        g.add(g["x"], 1.0, name=np.array("s"))
    assert g.input(np.str_("w")).name.__class__ is str
    with pytest.raises(GraphError, match=r"unknown gate \[\]; known: add,"):
        g.op([], g["x"])
    with pytest.raises(GraphError, match=r"unknown gate \{\}; known: add,"):
        g.op({}, g["x"])
    with pytest.raises(GraphError, match="evaluate: a numpy array is not a node name"):
        g.evaluate(np.array(["x"]))
    assert len(g) == 6
    still_works(g)


class Symbol(Gate):
    symbol = 5

    def forward(self, x):
        return x


class StringArity(Gate):
    arity = "1"

    def forward(self, x):
        return x


class Keyword(Gate):
    def forward(self, x, *, scale):
        return x * scale


def test_bad_gate_classes_are_refused_at_apply(g):
    with pytest.raises(GraphError, match="gate Symbol: its 'symbol' must be a string, got int 5"):
        g.apply(Symbol(), g["x"])
    with pytest.raises(GraphError, match="gate StringArity: arity must be a whole number or "
                                         "None, got str '1'"):
        g.apply(StringArity(), g["x"])
    with pytest.raises(GraphError, match="Keyword cannot take 1 input: its forward takes a "
                                         "required keyword argument"):
        g.apply(Keyword(), g["x"])
    with pytest.raises(GraphError, match=r"gate σ takes 1 input, got 2$"):
        g.apply(SigmoidGate(), g["x"], g["y"])
    with pytest.raises(GraphError, match=r"gate \+ takes 2 inputs, got 1$"):
        g.apply(AddGate(), g["x"])
    assert len(g) == 5
    still_works(g)


def test_a_failed_builder_call_adds_nothing(g):
    before = [n.name for n in g]
    with pytest.raises(GraphError, match="got the string 'oops'"):
        g.add(g["x"], "oops")
    with pytest.raises(GraphError, match="got the string 'oops'"):
        g.add(2.0, "oops")
    with pytest.raises(GraphError, match="duplicate name 'q'"):
        g.mul(1.0, 2.0, name="q")
    with pytest.raises(GraphError, match="Two cannot take 3 inputs"):
        class Two(Gate):
            def forward(self, a, b):
                return a + b
        g.apply(Two(), 1.0, 2.0, 3.0)
    with pytest.raises(GraphError, match="input of [+]: expected numbers, got an array of dtype"):
        g.add(np.array([1.0]), np.array(["a"]))
    with pytest.raises(GraphError, match="belongs to another graph"):
        g.add(3.0, ComputationalGraph().input("w"))
    assert [n.name for n in g] == before
    still_works(g)


def test_a_name_a_constant_would_take_is_kept_for_the_gate():
    g = ComputationalGraph()
    x = g.input("x")
    s = g.add(x, 1.0, name="const_1")     # the new constant would be named const_1 too
    assert s.name == "const_1" and s.inputs[1].name != "const_1"
    assert g.forward(x=1.0) == 2.0


class DictGrads(Gate):
    def forward(self, x, y):
        return x + y

    def backward(self, upstream):
        return {"x": upstream, "y": upstream}


class RaisesGraphError(Gate):
    def forward(self, x):
        raise GraphError("I refuse")

    def backward(self, upstream):
        return (upstream,)


class BadJvp(Gate):
    def forward(self, x):
        return 2 * x

    def backward(self, upstream):
        return (2 * upstream,)

    def jvp(self, x_dot):
        return np.ones(7)


class StringJvp(BadJvp):
    def jvp(self, x_dot):
        return "fast"


class MatrixOut(Gate):
    def forward(self, x):
        return np.asmatrix(x)

    def backward(self, upstream):
        return (upstream,)


def test_a_users_gate_returning_a_dict_or_raising(g):
    u = g.apply(DictGrads(), g["x"], g["y"], name="u")
    g.set_output(u)
    g.forward(FEED)
    with pytest.raises(GraphError, match="node 'u': backward must return a sequence of 2 "
                                         r"gradients, got dict \(return a list or tuple\)"):
        g.backward()
    r = g.apply(RaisesGraphError(), g["x"], name="r")
    g.set_output(r)
    with pytest.raises(GraphError, match=r"node 'r' \(RaisesGraphError\) in forward: I refuse"):
        g.forward(FEED)
    g.set_output("f")
    still_works(g)


@pytest.mark.parametrize("gate, match", [
    (BadJvp(), r"node 'u': jvp returned a tangent of shape \(7,\), expected \(2, 2\)"),
    (StringJvp(), "node 'u': jvp returned: expected a number or a numpy array, got str"),
])
def test_a_bad_user_jvp_is_blamed_on_its_node(g, gate, match):
    u = g.apply(gate, g["x"], name="u")
    g.set_output(g.sigmoid(u, name="after"))
    g.forward({"x": np.ones((2, 2))})
    with pytest.raises(GraphError, match=match):
        g.jvp({"x": np.ones((2, 2))})
    g.set_output("f")
    still_works(g)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")      # np.matrix itself
def test_a_matrix_from_a_users_forward_becomes_an_array(g):
    u = g.apply(MatrixOut(), g["x"], name="u")
    sq = u * u
    g.set_output(sq)
    out = g.forward(x=np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert type(u.value) is np.ndarray
    np.testing.assert_array_equal(out, [[1.0, 4.0], [9.0, 16.0]])
    g.set_output("f")
    still_works(g)
