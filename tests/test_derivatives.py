"""Derivatives: forward mode, Jacobians in both modes, gradients as sums over paths."""

import warnings

import numpy as np
import pytest

from graphengine import ComputationalGraph, Gate, GraphError, derivatives
from graphengine.derivatives import count_paths

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")


def circuit():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(x, y, name="q")
    g.mul(q, z, name="f")
    return g


def diamond_example():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    c = g.add(a, b, name="c")
    d = g.add(b, 1.0, name="d")
    g.mul(c, d, name="e")
    return g


AT = {"a": 2.0, "b": 1.0}
CIRCUIT_AT = {"x": -2.0, "y": 5.0, "z": -4.0}


class Square(Gate):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, upstream):
        return (2.0 * self.x * upstream,)


class SquareWithJvp(Square):
    def jvp(self, x_dot):
        return 2.0 * self.x * x_dot


# ---------------------------------------------------------------- worked examples, every route

def test_e_example_forward_mode_from_b_gives_every_tangent():
    g = diamond_example()
    t = g.jvp({"b": 1.0}, feed=AT)
    assert t == {"a": 0.0, "b": 1.0, "c": 1.0, "const_3": 0.0, "d": 1.0, "e": 5.0}
    assert g["e"].value == 6.0 and g["c"].value == 3.0 and g["d"].value == 2.0


def test_e_example_forward_mode_from_a():
    g = diamond_example()
    t = g.jvp({"a": 1.0}, feed=AT)
    assert (t["c"], t["d"], t["e"]) == (1.0, 0.0, 2.0)


def test_e_example_backward_and_jacobians():
    g = diamond_example()
    assert g.forward(AT) == 6.0
    grads = g.backward()
    assert (grads["a"], grads["b"]) == (2.0, 5.0)
    for mode in ("reverse", "forward"):
        assert g.jacobian(mode=mode) == {"a": 2.0, "b": 5.0}


def test_e_example_path_gradient_has_exactly_two_terms_for_b():
    g = diamond_example()
    g.forward(AT)
    total, terms = g.path_gradient("b")
    assert terms == [(["b", "c", "e"], 2.0), (["b", "d", "e"], 3.0)]
    assert total == 5.0 == g.backward()["b"]
    assert g.path_gradient("a") == (2.0, [(["a", "c", "e"], 2.0)])
    assert g.paths("b") == [["b", "c", "e"], ["b", "d", "e"]]


def test_circuit_every_route():
    g = circuit()
    g.forward(CIRCUIT_AT)
    grads = g.backward()
    for name, want in (("x", -4.0), ("y", -4.0), ("z", 3.0)):
        assert grads[name] == want
        assert g.jvp({name: 1.0})["f"] == want
        assert g.path_gradient(name)[0] == want
    assert g.jvp({"x": 1.0}) == {"x": 1.0, "y": 0.0, "z": 0.0, "q": 1.0, "f": -4.0}
    assert g.path_gradient("z") == (3.0, [(["z", "f"], 3.0)])
    assert g.path_gradient("q") == (-4.0, [(["q", "f"], -4.0)])
    assert g.jacobian(mode="forward") == g.jacobian() == {"x": -4.0, "y": -4.0, "z": 3.0}


# ---------------------------------------------------------------- paths

def test_a_node_used_twice_by_one_gate_gives_two_paths():
    g = ComputationalGraph()
    x = g.input("x")
    s = g.mul(x, x, name="s")
    g.mul(s, x, name="c")
    g.forward(x=3.0)
    assert g.paths("x") == [["x", "s", "c"], ["x", "s", "c"], ["x", "c"]]
    total, terms = g.path_gradient("x")
    assert [p for _, p in terms] == [9.0, 9.0, 9.0]
    assert total == 27.0 == g.backward()["x"]


def stacked_diamonds(n):
    g = ComputationalGraph()
    d = g.input("x")
    for k in range(n):
        left = g.mul(d, 2.0, name=f"l{k}")
        right = g.mul(d, -0.5, name=f"r{k}")
        d = g.add(left, right, name=f"d{k}")
    return g


def test_twenty_stacked_diamonds_refuse_with_the_count_and_backward_is_exact():
    g = stacked_diamonds(20)
    g.forward(x=1.0)
    assert count_paths(g, "x") == 2 ** 20
    with pytest.raises(GraphError, match="1048576 paths lead from 'x' to the output 'd19'"):
        g.path_gradient("x")
    with pytest.raises(GraphError, match="1048576 paths"):
        g.paths("x")
    with pytest.raises(GraphError, match="1048576 paths.*limit=1000000"):
        g.path_gradient("x", limit=1_000_000)
    assert g.backward()["x"] == 3 ** 20 / 2 ** 20          # 1.5 ** 20, exact in float


def test_path_gradient_sums_many_paths_to_the_backward_gradient():
    g = stacked_diamonds(10)
    g.forward(x=1.0)
    total, terms = g.path_gradient("x", limit=1024)
    assert len(terms) == 1024
    assert total == 1.5 ** 10 == g.backward()["x"]
    assert sorted({p for _, p in terms}) == sorted(
        {2.0 ** k * (-0.5) ** (10 - k) for k in range(11)})
    with pytest.raises(GraphError, match="1024 paths.*limit=1023"):
        g.path_gradient("x", limit=1023)


def test_paths_from_the_output_and_from_unused_nodes():
    g = circuit()
    g.input("unused")
    g.forward(CIRCUIT_AT)
    assert g.paths("f") == [["f"]]
    assert g.path_gradient("f") == (1.0, [(["f"], 1.0)])
    assert g.paths("unused") == []
    assert g.path_gradient("unused") == (0.0, [])
    assert count_paths(g, g["unused"]) == 0


def test_path_gradient_uses_a_user_gates_backward_as_local_derivative():
    g = ComputationalGraph()
    x = g.input("x")
    y = g.apply(Square(), x, name="y")
    g.add(y, x, name="out")
    g.forward(x=3.0)
    assert g.path_gradient("x") == (7.0, [(["x", "y", "out"], 6.0), (["x", "out"], 1.0)])


def test_path_gradient_needs_a_scalar_graph_and_a_forward():
    g = ComputationalGraph()
    x = g.input("x")
    g.sum(x * x, name="s")
    with pytest.raises(GraphError, match=r"path_gradient needs a forward first: call "
                                         r"forward\(\) \(output .s.\)"):
        g.path_gradient("x")
    g.forward(x=np.array([1.0, 2.0]))
    with pytest.raises(GraphError, match="scalar graph: node 'x' has shape \\(2,\\)"):
        g.path_gradient("x")
    with pytest.raises(GraphError, match="path source 'nope' is not a node"):
        g.paths("nope")


def test_path_gradient_allows_array_nodes_off_the_paths():
    g = ComputationalGraph()
    x = g.input("x")
    w = g.parameter("w", [1.0, 2.0, 3.0])
    g.mul(x, g.sum(w), name="out")
    g.forward(x=2.0)
    assert g.path_gradient("x") == (6.0, [(["x", "out"], 6.0)])


def chain(n):
    g = ComputationalGraph()
    h = g.input("x")
    for _ in range(n - 1):
        h = g.tanh(h)
    g.forward(x=0.1)
    return g


def test_paths_take_time_linear_in_their_total_length():
    # one path through a chain: listing it costs its length, not its length squared
    # (a walk that copies the path at each step took 25 s at 100,000 nodes)
    import gc
    import time

    seconds = {}
    for n in (2_000, 20_000):
        g = chain(n)
        runs = []
        for _ in range(3):
            # the walk's own time: the cyclic collector's passes over a heap the tests
            # before have grown are not the walk's (they made this test flaky)
            gc.collect()
            gc.disable()
            try:
                start = time.process_time()      # this process's CPU time: others' load aside
                total, terms = g.path_gradient("x")
                runs.append(time.process_time() - start)
            finally:
                gc.enable()
        assert len(terms) == 1 and len(terms[0][0]) == n
        assert total == pytest.approx(g.backward()["x"], rel=1e-12)
        seconds[n] = min(runs)
    assert seconds[20_000] < 30 * seconds[2_000], seconds


@pytest.mark.slow
def test_one_path_through_a_hundred_thousand_nodes():
    g = chain(100_000)
    assert len(g.paths("x")[0]) == 100_000


def test_the_size_of_the_paths_is_bounded_and_refused_with_the_size(monkeypatch):
    g = diamond_example()
    g.forward(AT)
    monkeypatch.setattr(derivatives, "MAX_PATH_NODES", 5)
    with pytest.raises(GraphError, match=r"the 2 paths from 'b' to the output 'e' hold 6 "
                                         r"node names in all, more than MAX_PATH_NODES=5"):
        g.paths("b")
    with pytest.raises(GraphError, match=r"hold 6 node names in all"):
        g.path_gradient("b")
    monkeypatch.setattr(derivatives, "MAX_PATH_NODES", 6)
    assert g.paths("b") == [["b", "c", "e"], ["b", "d", "e"]]
    assert g.path_gradient("a") == (2.0, [(["a", "c", "e"], 2.0)])


@pytest.mark.parametrize("limit", [None, float("inf")])
def test_no_limit_means_the_documented_maximum(limit, monkeypatch):
    g = diamond_example()
    g.forward(AT)
    assert g.paths("b", limit=limit) == [["b", "c", "e"], ["b", "d", "e"]]
    monkeypatch.setattr(derivatives, "MAX_PATHS", 1)
    with pytest.raises(GraphError, match=r"2 paths lead from 'b' to the output 'e', more "
                                         r"than MAX_PATHS=1"):
        g.paths("b", limit=limit)
    with pytest.raises(GraphError, match=r"more than MAX_PATHS=1"):
        g.path_gradient("b", limit=limit)
    with pytest.raises(GraphError, match=r"more than MAX_PATHS=1"):
        g.paths("b", limit=10)
    with pytest.raises(GraphError, match=r"more than limit=1;"):
        g.paths("b", limit=1)


@pytest.mark.parametrize("limit", ["a", -1, 1.5, True, [3], float("nan")])
def test_a_limit_that_is_not_a_count_is_refused(limit):
    g = diamond_example()
    g.forward(AT)
    with pytest.raises(GraphError, match=r"limit must be a non-negative whole number of "
                                         r"paths \(None or inf: at most MAX_PATHS"):
        g.paths("b", limit=limit)
    with pytest.raises(GraphError, match=r"limit must be a non-negative whole number"):
        g.path_gradient("b", limit=limit)
    assert g.path_gradient("b", limit=np.int64(2))[0] == 5.0


def matrix(rows):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(rows)


class Returns(Gate):
    """A user gate whose backward returns whatever the test gives it."""

    def __init__(self, result):
        self.result = result

    def forward(self, x):
        return 2.0 * x

    def backward(self, upstream):
        return self.result


@pytest.mark.parametrize("result, match", [
    (("2",), r"backward returned a str as the local derivative for input 0 \('x'\); "
             r"expected a number"),
    ((matrix([[2.0]]),), r"backward returned an array of shape \(1, 1\) and dtype "
                            r"float64 as the local derivative for input 0"),
    ((np.array([2.0, 2.0]),), r"backward returned an array of shape \(2,\)"),
    ((np.array("2"),), r"backward returned an array of shape \(\) and dtype <U1"),
    ({"x": 2.0}, r"backward returned a dict; expected a list or tuple of 1 \(one per input\)"),
    ((2.0, 2.0), r"backward returned 2 gradients; expected a list or tuple of 1"),
    (2.0, r"backward returned a float; expected a list or tuple of 1"),
    ((True,), r"backward returned a bool as the local derivative"),
])
def test_path_gradient_checks_a_user_gates_local_derivatives(result, match):
    g = ComputationalGraph()
    x = g.input("x")
    y = g.apply(Returns(result), x, name="y")
    g.add(y, 1.0, name="out")
    g.forward(x=3.0)
    with pytest.raises(GraphError, match=r"node 'y' \(Returns\): " + match):
        g.path_gradient("x")
    y.gate.result = (np.float32(2.0),)         # the graph keeps working
    assert g.path_gradient("x") == (2.0, [(["x", "y", "out"], 2.0)])


def test_path_gradient_names_the_node_of_a_user_gate_that_raises():
    g = ComputationalGraph()
    x = g.input("x")

    class Refuses(Returns):
        def backward(self, upstream):
            raise GraphError("no local derivative here")

    g.apply(Refuses(None), x, name="y")
    g.forward(x=3.0)
    with pytest.raises(GraphError, match=r"node 'y' \(Refuses\): backward\(1.0\) failed "
                                         r"while taking its local derivatives: no local"):
        g.path_gradient("x")


# ---------------------------------------------------------------- jvp

def test_jvp_uses_the_last_forward_and_takes_node_keys():
    g = circuit()
    g.forward(CIRCUIT_AT)
    t = g.jvp({g["x"]: 1.0, "z": 2.0})
    assert t["q"] == 1.0 and t["f"] == 1.0 * -4.0 + 3.0 * 2.0


def test_jvp_on_arrays_with_parameters():
    g = ComputationalGraph()
    x = g.input("x")
    W = g.parameter("W", [[1.0, 2.0], [3.0, 4.0]])
    y = g.matmul(W, x, name="y")
    g.sum(y * y, name="s")
    xv = np.array([1.0, -1.0])
    t = g.jvp({"W": np.eye(2)}, feed={"x": xv})
    yv = np.array([-1.0, -1.0])
    assert np.array_equal(t["y"], np.eye(2) @ xv)
    assert t["s"] == float(2 * yv @ (np.eye(2) @ xv))
    assert np.array_equal(t["x"], [0.0, 0.0])


def test_jvp_errors_name_the_key():
    g = circuit()
    with pytest.raises(GraphError, match="jvp needs a forward first"):
        g.jvp({"x": 1.0})
    g.forward(CIRCUIT_AT)
    with pytest.raises(GraphError, match="tangent key 'w' is not a node"):
        g.jvp({"w": 1.0})
    with pytest.raises(GraphError, match="tangent key 'q' is a gate \\(\\+\\); expected a leaf"):
        g.jvp({"q": 1.0})
    with pytest.raises(GraphError, match="tangent of 'x' has shape \\(2,\\), expected the "
                                         "leaf's shape \\(\\)"):
        g.jvp({"x": [1.0, 2.0]})
    with pytest.raises(GraphError, match="tangent of 'x': expected a number"):
        g.jvp({"x": "one"})
    with pytest.raises(GraphError, match="must be a dict"):
        g.jvp([1.0])
    other = ComputationalGraph()
    with pytest.raises(GraphError, match="tangent key 'x' is a node of another graph"):
        g.jvp({other.input("x"): 1.0})
    g.add(g["f"], 1.0, name="g2")
    with pytest.raises(GraphError, match="jvp needs a forward first"):
        g.jvp({"x": 1.0})


def test_a_gate_without_jvp_is_named_by_forward_mode_and_nothing_else_breaks():
    g = ComputationalGraph()
    x = g.input("x")
    sq = g.apply(Square(), x, name="sq")
    g.mul(sq, 3.0, name="out")
    g.forward(x=2.0)
    with pytest.raises(GraphError, match="node 'sq': gate Square has no jvp"):
        g.jvp({"x": 1.0})
    with pytest.raises(GraphError, match="node 'sq': gate Square has no jvp"):
        g.jacobian(mode="forward")
    assert g.jacobian() == {"x": 12.0}
    assert g.backward()["x"] == 12.0
    assert g.path_gradient("x") == (12.0, [(["x", "sq", "out"], 12.0)])


def test_a_user_gate_with_jvp_works_in_forward_mode():
    g = ComputationalGraph()
    x = g.input("x")
    g.apply(SquareWithJvp(), x, name="sq")
    assert g.jvp({"x": 1.0}, feed={"x": 2.0})["sq"] == 4.0
    assert g.jacobian(mode="forward") == {"x": 4.0}


# ---------------------------------------------------------------- jacobian

def test_jacobian_shapes_and_values_in_both_modes():
    g = ComputationalGraph()
    x = g.input("x")
    W = g.parameter("W", [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    g.matmul(W, x, name="y")
    xv = np.array([1.0, -2.0, 0.5])
    rev = g.jacobian(feed={"x": xv})
    fwd = g.jacobian(mode="forward")
    assert list(rev) == ["x", "W"]
    assert rev["x"].shape == (2, 3) and rev["W"].shape == (2, 2, 3)
    assert np.array_equal(rev["x"], W.value)
    want_W = np.zeros((2, 2, 3))
    want_W[0, 0] = want_W[1, 1] = xv
    assert np.array_equal(rev["W"], want_W)
    for name in rev:
        assert np.array_equal(rev[name], fwd[name])


def test_jacobian_of_a_scalar_output_against_an_array_leaf_is_the_gradient():
    g = ComputationalGraph()
    x = g.input("x")
    g.sum(g.tanh(x) * x, name="s")
    xv = np.array([[0.1, -0.3], [0.7, 2.0]])
    J = g.jacobian("x", feed={"x": xv})
    assert J["x"].shape == (2, 2)
    assert np.array_equal(J["x"], g.backward()["x"])
    assert np.allclose(g.jacobian([x], mode="forward")["x"], J["x"], rtol=1e-15, atol=0)


def test_jacobian_leaves_values_and_gradients_as_they_were():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    m = g.max(x * y, g.sigmoid(y), name="m")
    g.mul(m, x, name="out")
    g.forward(x=2.0, y=-1.0)
    before = g.backward()
    values = {n.name: n.value for n in g}
    for mode in ("reverse", "forward"):
        g.jacobian(mode=mode)
    assert {n.name: n.value for n in g} == values
    assert {n.name: n.grad for n in g} == before
    assert g.backward() == before


def test_jacobian_of_unused_leaves_is_zero():
    g = circuit()
    g.parameter("w", [1.0, 2.0])
    J = g.jacobian(feed=CIRCUIT_AT)
    assert list(J) == ["x", "y", "z", "w"]
    assert np.array_equal(J["w"], [0.0, 0.0])


def test_jacobian_of_unused_leaves_has_the_output_and_leaf_shapes():
    g = ComputationalGraph()
    x = g.input("x")
    g.parameter("w", [1.0, 2.0])
    g.parameter("s", 3.0)
    g.mul(x, 2.0, name="out")
    for feed, out_shape in (({"x": 1.0}, ()), ({"x": np.ones(3)}, (3,))):
        for mode in ("reverse", "forward"):
            J = g.jacobian(feed=feed, mode=mode)
            assert J["w"].shape == out_shape + (2,) and not J["w"].any()
            assert np.shape(J["s"]) == out_shape and not np.any(J["s"])


def test_jacobian_size_is_bounded_before_anything_is_allocated(monkeypatch):
    g = ComputationalGraph()
    x = g.input("x")
    g.mul(x, 2.0, name="y")
    with pytest.raises(GraphError, match=r"the Jacobian of output 'y' \(10000 elements\) "
                                         r"with respect to 'x' has 100000000 elements, more "
                                         r"than the limit 10000000; use backward\(seed\)"):
        g.jacobian(feed={"x": np.ones(10_000)})
    monkeypatch.setattr(derivatives, "MAX_JACOBIAN", 9)
    with pytest.raises(GraphError, match=r"has 16 elements, more than the limit 9"):
        g.jacobian(feed={"x": np.ones(4)}, mode="forward")
    assert g.jacobian(feed={"x": np.ones(3)})["x"].shape == (3, 3)


def test_jacobian_errors():
    g = circuit()
    with pytest.raises(GraphError, match="unknown jacobian mode 'sideways'"):
        g.jacobian(mode="sideways")
    with pytest.raises(GraphError, match="jacobian needs a forward first"):
        g.jacobian()
    with pytest.raises(GraphError, match="wrt entry 'q' is a gate"):
        g.jacobian(["q"], feed=CIRCUIT_AT)
    with pytest.raises(GraphError, match="wrt entry 'nope' is not a node"):
        g.jacobian(["nope"])
    with pytest.raises(GraphError, match="wrt names the leaf 'x' twice"):
        g.jacobian(["x", "x"])
    with pytest.raises(GraphError, match="input 'z' needs a value"):
        g.jacobian(feed={"x": 1.0, "y": 2.0})
    with pytest.raises(GraphError, match=r"wrt must be a leaf name, a Node or a list of "
                                         r"them, got int 5"):
        g.jacobian(wrt=5, feed=CIRCUIT_AT)
    with pytest.raises(GraphError, match=r"wrt entry \['x'\] is not a node"):
        g.jacobian(wrt=[["x"]])
    assert g.jacobian(wrt=("x",), feed=CIRCUIT_AT)["x"] == -4.0


def test_forward_and_reverse_jacobians_agree_on_a_network():
    rng = np.random.default_rng(1)
    g = ComputationalGraph()
    x = g.input("x")
    W1 = g.parameter("W1", rng.standard_normal((3, 4)))
    b1 = g.parameter("b1", rng.standard_normal(4))
    W2 = g.parameter("W2", rng.standard_normal((4, 2)))
    h = g.sigmoid(x @ W1 + b1)
    g.tanh(h @ W2, name="out")
    feed = {"x": rng.standard_normal((5, 3))}
    rev = g.jacobian(feed=feed)
    fwd = g.jacobian(mode="forward")
    assert rev["W1"].shape == (5, 2, 3, 4)
    for name in rev:
        assert np.allclose(rev[name], fwd[name], rtol=1e-12, atol=1e-14)
    seed = rng.standard_normal((5, 2))
    grads = g.backward(seed)
    for name in rev:
        assert np.allclose(np.tensordot(seed, rev[name], axes=2), grads[name],
                           rtol=1e-12, atol=1e-14)



def test_messages_count_in_good_grammar(monkeypatch):
    g = diamond_example()
    g.forward(AT)
    with pytest.raises(GraphError, match=r"^1 path leads from 'a' to the output 'e', more "
                                         r"than limit=0;"):
        g.paths("a", limit=0)
    monkeypatch.setattr(derivatives, "MAX_PATH_NODES", 2)
    with pytest.raises(GraphError, match=r"^the 1 path from 'a' to the output 'e' holds 3 "):
        g.paths("a")
    monkeypatch.undo()
    monkeypatch.setattr(derivatives, "MAX_JACOBIAN", 0)
    with pytest.raises(GraphError, match=r"output 'e' \(1 element\) with respect to 'a', 'b' "
                                         r"has 2 elements"):
        g.jacobian()
    monkeypatch.undo()
    y = g.apply(Returns(5), g["e"], name="y")
    g.set_output(y)
    g.forward(AT)
    with pytest.raises(GraphError, match=r"backward returned an int; expected a list"):
        g.path_gradient("a")
    y.gate.result = ((), ())
    with pytest.raises(GraphError, match=r"backward returned 2 gradients; expected a list or "
                                         r"tuple of 1 \(one per input\)"):
        g.path_gradient("a")
