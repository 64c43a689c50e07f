"""The graph: building, the networkx structure, forward and backward."""

import math

import networkx as nx
import numpy as np
import pytest

import graphengine as ge
from graphengine import ComputationalGraph, Gate, GraphError, Node
from graphengine.gates import AddGate, MultiplyGate, SigmoidGate

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")


def circuit():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(x, y, name="q")
    f = g.mul(q, z, name="f")
    return g, x, y, z, q, f


# ---------------------------------------------------------------- background section 1

def test_the_circuit_example():
    g, x, y, z, q, f = circuit()
    assert g.forward({"x": -2.0, "y": 5.0, "z": -4.0}) == -12.0
    assert q.value == 3.0 and f.value == -12.0
    grads = g.backward()
    assert grads == {"x": -4.0, "y": -4.0, "z": 3.0, "q": -4.0, "f": 1.0}
    assert list(grads) == ["x", "y", "z", "q", "f"]
    assert (x.grad, y.grad, z.grad, q.grad, f.grad) == (-4.0, -4.0, 3.0, -4.0, 1.0)
    assert (x.value, g["q"].grad) == (-2.0, -4.0)


def test_add_distributes_the_upstream_gradient():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    s = g.add(a, b)
    g.mul(s, 7.0)
    g.forward(a=1.5, b=-20.0)
    grads = g.backward()
    assert grads["a"] == grads["b"] == grads[s.name] == 7.0


def test_max_routes_the_gradient_to_the_larger_input():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    m = g.max(a, b)
    g.mul(m, 2.0)
    g.forward(a=4.0, b=2.0)
    assert g.backward()["a"] == 2.0 and g.backward()["b"] == 0.0
    g.forward(a=4.0, b=4.0)
    grads = g.backward()
    assert (grads["a"], grads["b"]) == (1.0, 1.0)


def test_mul_switches_the_inputs():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    g.mul(a, b)
    g.forward(a=3.0, b=-5.0)
    grads = g.backward(seed=2.0)
    assert (grads["a"], grads["b"]) == (-10.0, 6.0)


# ---------------------------------------------------------------- fan-out and reuse

def test_fan_out_sums_the_branches():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    c, d = a + b, b + 1
    e = c * d
    assert g.forward(a=2.0, b=1.0) == 6.0
    grads = g.backward()
    assert grads["a"] == 2.0 and grads["b"] == 5.0
    assert (c.value, d.value, e.value) == (3.0, 2.0, 6.0)


def test_a_node_used_twice_by_one_gate_gets_both_contributions():
    g = ComputationalGraph()
    x = g.input("x")
    sq = x * x
    g.forward(x=3.0)
    assert sq.value == 9.0 and g.backward()["x"] == 6.0
    h = ComputationalGraph()
    y = h.input("y")
    twice = y + y
    h.forward(y=3.0)
    assert twice.value == 6.0 and h.backward()["y"] == 2.0
    assert g.dag.number_of_edges("x", sq.name) == 2
    assert sorted(s for *_, s in g.dag.edges(data="slot")) == [0, 1]


def test_backward_twice_gives_the_same_result():
    g, *_ = circuit()
    g.forward(x=-2.0, y=5.0, z=-4.0)
    first = g.backward()
    assert g.backward() == first
    g2 = ComputationalGraph()
    w = g2.parameter("w", np.array([1.0, 2.0]))
    out = g2.sum(w * w)
    g2.forward()
    np.testing.assert_array_equal(g2.backward()["w"], [2.0, 4.0])
    np.testing.assert_array_equal(g2.backward()["w"], [2.0, 4.0])
    assert out.grad == 1.0


def test_seed_scales_every_gradient():
    g, *_ = circuit()
    g.forward(x=-2.0, y=5.0, z=-4.0)
    assert g.backward(seed=3.0)["x"] == -12.0


# ---------------------------------------------------------------- shapes and broadcasting

def test_bias_added_to_a_batch_gets_the_batch_summed_gradient():
    g = ComputationalGraph()
    X = g.input("X")
    W = g.parameter("W", np.arange(6.0).reshape(3, 2))
    b = g.parameter("b", np.array([0.5, -0.5]))
    h = X @ W + b
    loss = g.sum(h * h)
    Xv = np.arange(12.0).reshape(4, 3) / 10
    g.forward(X=Xv)
    grads = g.backward()
    hv = Xv @ W.value + b.value
    np.testing.assert_allclose(grads["b"], (2 * hv).sum(axis=0))
    np.testing.assert_allclose(grads["W"], Xv.T @ (2 * hv))
    np.testing.assert_allclose(grads["X"], (2 * hv) @ W.value.T)
    assert grads[h.name].shape == (4, 2) and loss.grad == 1.0


def test_every_gradient_has_its_nodes_shape():
    g = ComputationalGraph()
    a = g.input("a")
    b = g.input("b")
    c = g.constant(2.0)
    out = g.mean((a * b + c) / (b - 5) - a ** 2)
    g.forward(a=np.ones((2, 3, 1)), b=np.arange(4.0))
    grads = g.backward()
    for node in g:
        assert np.shape(grads[node.name]) == np.shape(node.value), node.name
    assert np.shape(out.value) == ()


def test_array_output_with_default_and_explicit_seed():
    g = ComputationalGraph()
    x = g.input("x")
    y = x * 3.0
    g.forward(x=np.array([1.0, 2.0]))
    np.testing.assert_array_equal(g.backward()["x"], [3.0, 3.0])
    np.testing.assert_array_equal(g.backward(seed=np.array([1.0, -2.0]))["x"], [3.0, -6.0])
    assert y.value.shape == (2,)


# ---------------------------------------------------------------- operators

def test_operators_with_numbers_and_arrays_on_either_side():
    g = ComputationalGraph()
    x = g.input("x")
    parts = [x + 1, 1 + x, x - 1, 1 - x, 2 * x, x * 2, x / 2, 2 / x, x ** 2, 2 ** x, -x,
             np.array([1.0, 2.0]) * x, x * np.array([1.0, 2.0]), np.array([3.0, 4.0]) - x]
    total = parts[0]
    for k, p in enumerate(parts[1:], start=1):
        total = total + (g.sum(p) if k >= 11 else p)
    g.forward(x=3.0)
    expect = [4, 4, 2, -2, 6, 6, 1.5, 2 / 3, 9, 8, -3]
    for p, e in zip(parts[:11], expect, strict=True):
        assert p.value == pytest.approx(e)
    np.testing.assert_allclose(parts[11].value, [3.0, 6.0])
    np.testing.assert_allclose(parts[13].value, [0.0, 1.0])
    kinds = [g[p.name].gate.op for p in parts]
    assert kinds == ["add", "add", "sub", "sub", "mul", "mul", "div", "div", "pow", "power",
                     "neg", "mul", "mul", "sub"]
    dx = 1 + 1 + 1 - 1 + 2 + 2 + 0.5 - 2 / 9 + 6 + 8 * math.log(2) - 1 + 3 + 3 - 2
    assert g.backward()["x"] == pytest.approx(dx)


def test_matmul_operator():
    g = ComputationalGraph()
    A = g.input("A")
    v = np.array([1.0, -1.0])
    y = g.sum(A @ v) + g.sum(v @ A)
    Av = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert g.forward(A=Av) == pytest.approx((Av @ v).sum() + (v @ Av).sum())
    np.testing.assert_allclose(g.backward()["A"], np.outer([1, 1], v) + np.outer(v, [1, 1]))
    assert y.gate.op == "add"


def test_power_with_a_node_exponent():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    z = x ** y
    assert g.forward(x=2.0, y=3.0) == 8.0
    grads = g.backward()
    assert grads["x"] == pytest.approx(12.0) and grads["y"] == pytest.approx(8 * math.log(2))
    assert z.gate.op == "power"


# ---------------------------------------------------------------- the networkx structure

def test_dag_is_a_lossless_multidigraph():
    g, x, y, z, q, f = circuit()
    w = g.parameter("w", 0.5)
    c = g.constant(2.0)
    g.mul(f, w + c, name="out")
    dag = g.dag
    assert isinstance(dag, nx.MultiDiGraph)
    assert list(dag)[:5] == ["x", "y", "z", "q", "f"]
    assert dag.nodes["x"] == {"kind": "input", "gate": None}
    assert dag.nodes["w"]["kind"] == "parameter" and dag.nodes["w"]["value"] == 0.5
    assert dag.nodes[c.name]["kind"] == "constant" and dag.nodes[c.name]["value"] == 2.0
    assert isinstance(dag.nodes["q"]["gate"], AddGate)
    assert dag.nodes["q"]["kind"] == "gate"
    assert sorted((u, s) for u, _, s in dag.in_edges("f", data="slot")) == [("q", 0), ("z", 1)]
    h = ComputationalGraph.from_dag(dag)
    feed = {"x": -2.0, "y": 5.0, "z": -4.0}
    assert h.forward(feed) == g.forward(feed)
    assert h.backward() == g.backward()
    assert h.dag.nodes["q"]["gate"] is not g.dag.nodes["q"]["gate"]


def test_from_dag_keeps_the_output_and_orders_topologically():
    dag = nx.MultiDiGraph()
    dag.add_node("s", kind="gate", gate=MultiplyGate())
    dag.add_node("a", kind="input", gate=None)
    dag.add_node("k", kind="constant", gate=None, value=3.0)
    dag.add_edge("a", "s", slot=0)
    dag.add_edge("k", "s", slot=1)
    dag.graph["output"] = "s"
    g = ComputationalGraph.from_dag(dag)
    assert g.forward(a=2.0) == 6.0
    assert g.output.name == "s"


def test_names_are_generated_unique_and_looked_up():
    g = ComputationalGraph()
    x = g.input("x")
    nodes = [x + 1 for _ in range(5)]
    names = [n.name for n in nodes]
    assert len(set(names)) == 5 and all(isinstance(n, str) for n in names)
    assert g[names[2]] is nodes[2]
    assert names[0] in g and "nope" not in g
    assert len(g) == 11


def test_parameters_inputs_and_nodes_in_insertion_order():
    g = ComputationalGraph()
    w1 = g.parameter("w1", 1.0)
    x = g.input("x")
    w2 = g.parameter("w2", np.zeros(3))
    g.constant(1.0, name="one")
    assert g.parameters() == [w1, w2]
    assert g.inputs() == [x]
    assert [n.name for n in g.nodes("constant")] == ["one"]
    assert [n.name for n in g] == ["w1", "x", "w2", "one"]


def test_parameter_value_persists_and_can_be_set():
    g = ComputationalGraph()
    w = g.parameter("w", 2.0)
    x = g.input("x")
    y = w * x
    assert g.forward(x=3.0) == 6.0
    w.value = 5.0
    assert g.forward(x=3.0) == 15.0
    g.backward()
    assert w.grad == 3.0 and x.grad == 5.0 and y.grad == 1.0


def test_node_inputs_and_repr():
    g, x, y, z, q, f = circuit()
    assert f.inputs == (q, z) and q.inputs == (x, y) and x.inputs == ()
    g.forward(x=-2.0, y=5.0, z=-4.0)
    g.backward()
    assert repr(q) == "<Node 'q' + value=3.0 grad=-4.0>"
    assert isinstance(q, Node) and q.kind == "gate" and x.kind == "input"
    assert "5 nodes" in repr(g)


# ---------------------------------------------------------------- the output

def test_the_output_is_the_unique_unused_gate():
    g = ComputationalGraph()
    x = g.input("x")
    g.input("unused")
    g.parameter("also_unused", 1.0)
    y = g.sigmoid(x)
    assert g.output is y
    assert g.forward(x=0.0) == 0.5


def test_set_output_picks_a_node_and_others_get_zero_gradients():
    g = ComputationalGraph()
    x = g.input("x")
    w = g.parameter("w", np.array([1.0, 2.0]))
    a = x * 2
    b = g.sum(w * x)
    g.set_output(a)
    assert g.output is a
    assert g.forward(x=3.0) == 6.0
    grads = g.backward()
    assert grads["x"] == 2.0
    np.testing.assert_array_equal(grads["w"], [0.0, 0.0])
    assert grads[b.name] == 0.0 and b.value is None
    g.set_output(b.name)
    assert g.forward(x=3.0) == 9.0
    np.testing.assert_array_equal(g.backward()["w"], [3.0, 3.0])


def test_inputs_the_output_does_not_need_may_be_left_out():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    a = x * 2
    y + 1
    g.set_output(a)
    assert g.forward(x=1.0) == 2.0


def test_feed_by_node_and_by_keyword():
    g, x, y, z, q, f = circuit()
    assert g.forward({x: -2.0, "y": 5.0}, z=-4.0) == -12.0


def test_values_are_coerced_to_floats():
    g = ComputationalGraph()
    x = g.input("x")
    y = x * 2
    assert g.forward(x=3) == 6.0 and type(y.value) is float
    assert type(g.forward(x=np.float32(1.5))) is float
    out = g.forward(x=np.array([1, 2]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(g.forward(x=[1, 2, 3]), [2.0, 4.0, 6.0])
    assert type(g.forward(x=np.array(2.0))) is float


# ---------------------------------------------------------------- a user's own gate

class Cube(Gate):
    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, upstream):
        return (3 * self.x ** 2 * upstream,)


class ScaledSum(Gate):
    """a*x + b*y + c*z with a three-input forward: arity from the signature."""

    def forward(self, x, y, z):
        return 1 * x + 2 * y + 3 * z

    def backward(self, upstream):
        return upstream, 2 * upstream, 3 * upstream


def test_a_users_gate_works_in_the_graph():
    g = ComputationalGraph()
    x = g.input("x")
    y = g.apply(Cube(), x, name="cube")
    out = g.apply(ScaledSum(), y, x, 1.0)
    assert g.forward(x=2.0) == 8 + 4 + 3
    grads = g.backward()
    assert grads["x"] == 3 * 4 + 2 and grads["cube"] == 1.0 and out.grad == 1.0
    np.testing.assert_array_equal(g.forward(x=np.array([1.0, 2.0])), [1 + 2 + 3, 8 + 4 + 3])
    np.testing.assert_array_equal(g.backward()["x"], [3 + 2, 12 + 2])


def test_a_users_gate_gradient_is_unbroadcast_when_it_returns_the_upstream_shape():
    class Plus(Gate):
        def forward(self, x, y):
            return x + y

        def backward(self, upstream):
            return upstream, upstream

    g = ComputationalGraph()
    x, b = g.input("x"), g.input("b")
    g.sum(g.apply(Plus(), x, b))
    g.forward(x=np.ones((4, 3)), b=np.ones(3))
    np.testing.assert_array_equal(g.backward()["b"], [4.0, 4.0, 4.0])


def test_a_users_gate_may_return_none_for_no_gradient():
    class First(Gate):
        def forward(self, x, y):
            return x

        def backward(self, upstream):
            return upstream, None

    g = ComputationalGraph()
    g.apply(First(), g.input("x"), g.input("y"))
    g.forward(x=1.0, y=np.ones(2))
    grads = g.backward()
    assert grads["x"] == 1.0
    np.testing.assert_array_equal(grads["y"], [0.0, 0.0])


def test_apply_and_op_reach_every_registered_gate():
    g = ComputationalGraph()
    x = g.input("x")
    y = g.apply(SigmoidGate(), x)
    z = g.op("pow", y, p=2)
    assert g.forward(x=0.0) == 0.25
    assert g.backward()["x"] == pytest.approx(2 * 0.5 * 0.25)
    assert z.gate.config() == {"p": 2.0}


# ---------------------------------------------------------------- scale

def test_a_deep_chain_runs_without_recursion():
    # far past Python's recursion limit of 1000: h <- h + sigmoid(h), 20,000 times
    g = ComputationalGraph()
    h = g.input("x")
    for _ in range(20_000):
        h = h + g.sigmoid(h)
    g.forward(x=0.0)
    v, d = 0.0, 1.0
    for _ in range(20_000):
        s = 1 / (1 + math.exp(-v))
        v, d = v + s, d * (1 + s * (1 - s))
    assert h.value == pytest.approx(v, rel=1e-12)
    assert g.backward()["x"] == pytest.approx(d, rel=1e-9)


@pytest.mark.slow
def test_a_million_node_chain_builds_runs_forward_and_backward():
    g = ComputationalGraph()
    h = g.input("x")
    c = g.constant(-0.5, name="c")
    for i in range(1_000_000):
        h = g.sigmoid(h) if i % 2 == 0 else g.add(h, c)
    assert len(g) == 1_000_002
    out = g.forward(x=0.3)
    s, d = 0.3, 1.0
    for i in range(1_000_000):
        if i % 2 == 0:
            s = 1 / (1 + math.exp(-s))
            d *= s * (1 - s)
        else:
            s += -0.5
    assert out == pytest.approx(s, rel=1e-12)
    grads = g.backward()
    assert grads["x"] == pytest.approx(d, rel=1e-9)
    assert grads["c"] == pytest.approx(sum_c_grad(), rel=1e-9)


def sum_c_grad():
    # d out / d c for the chain above, by a hand loop from the output backwards
    s, vals = 0.3, []
    for i in range(1_000_000):
        s = 1 / (1 + math.exp(-s)) if i % 2 == 0 else s - 0.5
        vals.append(s)
    g, total = 1.0, 0.0
    for i in range(999_999, -1, -1):
        if i % 2 == 0:
            g *= vals[i] * (1 - vals[i])
        else:
            total += g
    return total


def test_package_exports():
    assert ge.ComputationalGraph is ComputationalGraph and ge.GraphError is GraphError
    assert issubclass(GraphError, ValueError)


# ---------------------------------------------------------------- issue 12: never silently wrong

@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")      # np.matrix itself
def test_numpy_matrices_become_plain_arrays_everywhere():
    m = np.asmatrix([[1.0, 2.0], [3.0, 4.0]])
    g = ComputationalGraph()
    x = g.input("x")
    w = g.parameter("w", m)
    c = g.constant(m, name="c")
    out = g.sum(x * x + w * w + c * c + x * m)
    elementwise = 2 * np.array([[1.0, 4.0], [9.0, 16.0]]) + np.array([[1.0, 4.0], [9.0, 16.0]]) \
        + np.array([[1.0, 4.0], [9.0, 16.0]])
    assert g.forward(x=m) == elementwise.sum()
    for node in (x, w, c, out.inputs[0]):
        assert type(node.value) is np.ndarray
    w.value = m
    assert type(w.value) is np.ndarray
    grads = g.backward()
    np.testing.assert_array_equal(grads["x"], 3 * np.asarray(m))     # d/dx (x * x + x * m)
    assert type(grads["w"]) is np.ndarray


def test_a_gate_used_by_two_graphs_is_copied_for_the_second():
    gate = MultiplyGate()
    g, h = ComputationalGraph(), ComputationalGraph()
    ga, gb = g.input("a"), g.input("b")
    g.apply(gate, ga, gb)
    p = h.apply(gate, h.input("a"), h.input("b"))
    assert p.gate is not gate and type(p.gate) is MultiplyGate
    g.forward(a=1.0, b=2.0)
    h.forward(a=10.0, b=20.0)                  # once overwrote the state g's backward needs
    assert g.backward() == {"a": 2.0, "b": 1.0, "mul_2": 1.0}
    assert h.backward() == {"a": 20.0, "b": 10.0, "mul_2": 1.0}
    with pytest.raises(GraphError, match=r"already used by another node \('mul_2'\)"):
        g.apply(gate, ga, 3.0)
    assert len(g) == 3


def _aliasing_case(op, fan_out):
    """One `op` gate on array leaves (its largest case in the gate table): alone (a
    gradient handed on arrives first), or with every input and the output used twice
    (gradients are summed)."""
    from test_gates import ROWS, sample

    cases = [p.values for p in ROWS if getattr(p.values[0](), "op", None) == op]
    make, samplers, _, _, diff = max(
        cases, key=lambda c: sum(np.ndim(x) for x in sample(c[1])))
    g = ComputationalGraph()
    ins = tuple(g.parameter(f"in{k}", x) if diff is None or k in diff
                else g.constant(x, name=f"in{k}")
                for k, x in enumerate(sample(samplers)))
    node = g.apply(make(), *ins, name="node")
    total = g.sum(node)
    if fan_out:
        total = g.add(total, g.sum(g.mul(node, 1.0)))
        for v in ins:
            total = g.add(total, g.sum(g.neg(v)))
    g.set_output(total)
    return g


@pytest.mark.parametrize("fan_out", [False, True])
@pytest.mark.parametrize("op", sorted(ge.GATES))
def test_no_two_gradients_share_an_array(op, fan_out):
    g = _aliasing_case(op, fan_out)
    g.forward()
    seed = 1.0
    grads = g.backward(seed)
    arrays = [(k, v) for k, v in grads.items() if isinstance(v, np.ndarray)]
    assert arrays or op == "seed"           # the seed gate takes only a scalar
    for i, (k1, v1) in enumerate(arrays):
        for k2, v2 in arrays[i + 1:]:
            assert not np.shares_memory(v1, v2), f"{op}: grads[{k1!r}] shares memory with {k2!r}"
    before = {k: np.array(v, copy=True) for k, v in arrays}
    for k, v in arrays:                               # mutating one touches no other
        others = {k2: v2.copy() for k2, v2 in arrays if k2 != k}
        v *= 10.0
        for k2, v2 in others.items():
            np.testing.assert_array_equal(grads[k2], v2)
    again = g.backward(seed)
    for k, v in before.items():
        np.testing.assert_array_equal(again[k], v)    # a later result is untouched too


def test_the_seed_and_a_users_in_place_backward_stay_apart():
    class InPlace(Gate):
        def forward(self, x, y):
            return x + y

        def backward(self, upstream):
            upstream *= 3.0                   # writes into the array it was handed
            return upstream, upstream

    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    s = g.apply(InPlace(), x, y, name="s")
    out = g.add(s, y, name="out")
    seed = np.ones(2)
    g.forward(x=np.zeros(2), y=np.zeros(2))
    grads = g.backward(seed)
    np.testing.assert_array_equal(seed, [1.0, 1.0])
    np.testing.assert_array_equal(grads["out"], [1.0, 1.0])
    np.testing.assert_array_equal(grads["s"], [1.0, 1.0])
    np.testing.assert_array_equal(grads["x"], [3.0, 3.0])
    np.testing.assert_array_equal(grads["y"], [4.0, 4.0])
    assert not np.shares_memory(grads["x"], grads["y"]) and out.grad is grads["out"]


def test_unused_leaves_get_zeros_of_their_own_shape():
    g = ComputationalGraph()
    x = g.input("x")
    g.input("y"), g.parameter("w", np.ones((2, 3))), g.constant(np.ones(4), name="c")
    never = g.input("never")
    g.set_output(g.sigmoid(x, name="s"))
    g.forward(x=0.0, y=np.ones((5, 2)))
    grads = g.backward()
    assert grads["s"] == 1.0 and grads["x"] == 0.25
    for name, shape in (("y", (5, 2)), ("w", (2, 3)), ("c", (4,))):
        assert isinstance(grads[name], np.ndarray) and grads[name].shape == shape
        assert not grads[name].any()
        assert g[name].grad.shape == shape
    assert grads["never"] == 0.0 and never.grad == 0.0     # never fed: no shape to know
