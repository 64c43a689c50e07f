"""Higher-order derivatives: ge.grad builds the backward pass as gates; ge.hessian and
ge.hvp run forward mode through it. Checked per gate against closed forms and central
differences, and on random DAGs against HIPS autograd's Hessians."""

import json
import math
import warnings

import autograd.numpy as anp
import numpy as np
import pytest
import test_gates
from autograd import grad as agrad
from autograd import hessian as ahessian
from hypothesis import HealthCheck, given, settings
from test_gates import ROWS, sample
from test_properties import oracle_function, random_dags

import graphengine as ge
from graphengine import ComputationalGraph, GraphError
from graphengine import gates as G


def circuit():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    f = g.mul(g.add(x, y, name="q"), z, name="f")
    return g, f


AT = {"x": -2.0, "y": 5.0, "z": -4.0}


# ---------------------------------------------------------------- the gradient graph

def test_the_circuit_backward_pass_as_its_own_circuit():
    g, _ = circuit()
    h = ge.grad(g, "x")
    assert [n.name for n in h.inputs()] == ["x", "y", "z"]
    assert h.output.name == "dx"
    # a scalar output makes every elementwise ancestor a scalar: no sum_to is needed
    assert [(n.name, n.gate and n.gate.op, [u.name for u in n.inputs]) for n in h] == [
        ("x", None, []), ("y", None, []), ("z", None, []), ("q", "add", ["x", "y"]),
        ("f", "mul", ["q", "z"]), ("df", "seed", ["f"]), ("dx", "mul", ["df", "z"])]
    assert h.forward(AT) == -4.0                      # df/dx = z
    assert ge.grad(g, "z").forward(AT) == 3.0         # df/dz = x + y
    assert ge.grad(g, "y").forward(x=1.0, y=2.0, z=7.0) == 7.0


def test_parameters_keep_their_names_and_values_as_copies():
    g = ComputationalGraph()
    x = g.input("x")
    w = g.parameter("w", np.array([1.0, 2.0]))
    c = g.constant(3.0, name="c")
    g.sum(w * x * c)
    h = ge.grad(g, "x")
    assert [p.name for p in h.parameters()] == ["w"]
    np.testing.assert_array_equal(h["w"].value, [1.0, 2.0])
    assert h["w"].value is not w.value
    assert h["c"].kind == "constant" and h["c"].value == 3.0
    np.testing.assert_array_equal(h.forward(x=np.ones(2)), [3.0, 6.0])


def test_g_is_unchanged_by_grad_and_hessian():
    g, _ = circuit()
    g.forward(AT)
    before_grads = g.backward()
    text, run = g.to_json(), g.run.save()
    for leaf in ("x", "y", "z"):
        ge.grad(g, leaf)
    ge.hessian(g, feed={"x": 1.0, "y": 2.0, "z": 3.0})
    ge.hvp(g, {"x": 1.0}, feed={"x": 1.0, "y": 2.0, "z": 3.0})
    assert g.to_json() == text and len(g) == 5
    assert g.run.save()[1] == run[1] and g.run.grads_current
    assert g["f"].value == -12.0 and g.backward() == before_grads


def test_gradients_meeting_from_several_paths_are_an_explicit_add():
    g = ComputationalGraph()
    x = g.input("x")
    g.add(x * x, x, name="f")           # three paths from x: x*x twice, and x
    h = ge.grad(g, "x")
    assert h.output.gate.op == "add"
    adds = [n for n in h.nodes("gate") if n.gate.op == "add" and n.name != "f"]
    assert len(adds) == 2               # three contributions meet: two adds
    assert h.forward(x=3.0) == 7.0


def test_second_and_third_derivatives_by_grad_of_grad():
    g = ComputationalGraph()
    x = g.input("x")
    x ** 3
    d1 = ge.grad(g, "x")
    d2 = ge.grad(d1, "x")
    d3 = ge.grad(d2, "x")
    assert (d1.forward(x=2.0), d2.forward(x=2.0), d3.forward(x=2.0)) == (12.0, 12.0, 6.0)
    assert ge.grad(d3, "x").forward(x=2.0) == 0.0


def chain(v):
    return anp.tanh(anp.exp(0.5 * v) * (1.0 / (1.0 + anp.exp(-v))) - v * v) ** 2


def test_third_derivative_of_a_chain_against_autograd():
    g = ComputationalGraph()
    x = g.input("x")
    g.pow(g.tanh(g.exp(0.5 * x) * g.sigmoid(x) - x * x), 2)
    d3 = ge.grad(ge.grad(ge.grad(g, "x"), "x"), "x")
    want = agrad(agrad(agrad(chain)))
    for v in (-1.3, 0.2, 0.9):
        assert d3.forward(x=v) == pytest.approx(want(v), rel=1e-10, abs=1e-12)


def test_backward_on_a_gradient_graph_gives_mixed_second_derivatives():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    w = g.parameter("w", 0.7)
    g.mul(g.exp(x * y), w) + x * x * x * y
    h = ge.grad(g, "x")
    x0, y0, w0 = 0.4, -1.1, 0.7
    h.forward(x=x0, y=y0)
    d = h.backward()
    e = math.exp(x0 * y0)
    assert d["x"] == pytest.approx(w0 * y0 * y0 * e + 6 * x0 * y0)
    assert d["y"] == pytest.approx(w0 * (e + x0 * y0 * e) + 3 * x0 * x0)
    assert d["w"] == pytest.approx(y0 * e)


def test_broadcasting_gradients_are_summed_to_the_leaf_shape():
    rng = np.random.default_rng(1)
    g = ComputationalGraph()
    x = g.input("x")
    b = g.parameter("b", rng.normal(size=4))
    c = g.parameter("c", rng.normal(size=(3, 1)))
    g.sum(g.tanh(x * b + c) * b)
    xv = rng.normal(size=(3, 4))

    def f(x_, b_, c_):
        return anp.sum(anp.tanh(x_ * b_ + c_) * b_)

    args = [xv, b.value, c.value]
    for k, leaf in enumerate(["x", "b", "c"]):
        got = ge.grad(g, leaf).forward(x=xv)
        assert np.shape(got) == np.shape(args[k])
        np.testing.assert_allclose(got, agrad(f, k)(*args), rtol=1e-12)
    H = ge.hessian(g, feed={"x": xv})
    assert H["b", "c"].shape == (4, 3, 1) and H["x", "b"].shape == (3, 4, 4)
    from autograd import jacobian
    for i, a in enumerate(["x", "b", "c"]):
        for j, bb in enumerate(["x", "b", "c"]):
            np.testing.assert_allclose(H[a, bb], jacobian(agrad(f, i), j)(*args),
                                       rtol=1e-10, atol=1e-12)


def test_sum_to_stays_where_broadcasting_may_happen():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    g.sum((x + y) * 2.0)
    h = ge.grad(g, "y")
    assert [n.gate.op for n in h.nodes("gate")].count("sum_to") == 2
    np.testing.assert_array_equal(h.forward(x=np.ones((2, 3)), y=np.ones(3)), [4.0] * 3)
    assert h.forward(x=np.ones((2, 3)), y=1.0) == 12.0


def test_a_leaf_the_output_does_not_use_gets_zero_blocks_of_its_shape():
    g = ComputationalGraph()
    x = g.input("x")
    g.input("u")
    g.sum(x * x)
    feed = {"x": np.array([1.0, 2.0]), "u": np.ones((2, 3))}
    H = ge.hessian(g, feed=feed)
    np.testing.assert_array_equal(H["x", "x"], 2 * np.eye(2))
    assert H["x", "u"].shape == (2, 2, 3) and not H["u", "u"].any()
    np.testing.assert_array_equal(ge.grad(g, "u").forward(feed), np.zeros((2, 3)))
    hv = ge.hvp(g, {"x": np.ones(2)}, feed=feed)
    np.testing.assert_array_equal(hv["x"], [2.0, 2.0])
    np.testing.assert_array_equal(hv["u"], np.zeros((2, 3)))


class Total(G.Unary):
    # a user's reduction that subclasses Unary: its scalar output says nothing about
    # its input's shape, so no sum_to may be left out behind it
    def forward(self, x):
        self.x = x
        return float(np.sum(x))

    def backward(self, upstream):
        return (upstream * np.ones(np.shape(self.x)),)

    def backward_gates(self, g, inputs, out, upstream):
        return (g.apply(G.BroadcastToGate(), upstream, inputs[0]),)


def test_only_built_in_elementwise_gates_tell_that_a_value_is_a_scalar():
    g = ComputationalGraph()
    x, w = g.input("x"), g.input("w")
    g.apply(Total(), x * w)
    h = ge.grad(g, "w")
    assert h.forward(x=np.array([1.0, 2.0, 3.0]), w=2.0) == 6.0


def test_a_gradient_graph_works_for_other_shapes_than_the_last_forward():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    g.sum(x * y)
    g.forward(x=1.0, y=2.0)
    h = ge.grad(g, "y")
    assert h.forward(x=3.0, y=2.0) == 3.0
    np.testing.assert_array_equal(h.forward(x=np.array([1.0, 2.0]), y=1.0), 3.0)
    np.testing.assert_array_equal(h.forward(x=2.0, y=np.ones(3)), [2.0, 2.0, 2.0])


def test_max_splits_ties_and_relu_passes_nothing_at_zero():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    g.sum(g.max(x, y) * x + g.relu(y))
    dx, dy = ge.grad(g, "x"), ge.grad(g, "y")
    assert dx.forward(x=2.0, y=2.0) == 0.5 * 2.0 + 2.0       # tie: half of it
    assert dy.forward(x=2.0, y=2.0) == 0.5 * 2.0 + 1.0
    assert dy.forward(x=-1.0, y=0.0) == -1.0                  # max's share; relu at 0: 0
    np.testing.assert_array_equal(
        dx.forward(x=np.array([1.0, 3.0, 2.0]), y=np.array([1.0, 2.0, 5.0])),
        [0.5 * 1.0 + 1.0, 3.0 + 3.0, 0.0 + 5.0])
    H = ge.hessian(g, feed={"x": 2.0, "y": 1.0})
    assert H["x", "x"] == 2.0 and H["y", "y"] == 0.0


@pytest.mark.parametrize("v", [1000.0, -1000.0, 40.0, -745.0])
def test_sigmoid_derivatives_stay_finite_and_exact(v):
    g = ComputationalGraph()
    x = g.input("x")
    g.sigmoid(x)
    d1 = ge.grad(g, "x")
    d2 = ge.grad(d1, "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = d1.forward(x=v), d2.forward(x=v)
        third = ge.grad(d2, "x").forward(x=v)
    e = math.exp(-abs(v))
    assert first == pytest.approx(e / (1 + e) ** 2, rel=1e-12, abs=0)
    s = 1 / (1 + math.exp(-v)) if v > -700 else 0.0
    assert second == pytest.approx(e / (1 + e) ** 2 * (1 - 2 * s), rel=1e-12, abs=0)
    assert math.isfinite(third)
    if v == 40.0:
        assert first > 0 and second < 0       # tiny, not rounded to zero


def test_softmax_cross_entropy_hessian_is_stable_for_huge_logits():
    g = ComputationalGraph()
    z = g.input("z")
    g.softmax_cross_entropy(z, g.constant([0.0, 1.0]))
    zv = np.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H = ge.hessian(g, feed={"z": zv})["z", "z"]
    assert np.all(np.isfinite(H)) and H.shape == (2, 3, 2, 3)
    zv = np.array([[0.3, -1.2, 0.5], [2.0, 0.1, -0.4]])
    H = ge.hessian(g, feed={"z": zv})["z", "z"]
    p = np.exp(zv) / np.exp(zv).sum(axis=1, keepdims=True)
    for i in range(2):
        want = (np.diag(p[i]) - np.outer(p[i], p[i])) / 2
        np.testing.assert_allclose(H[i, :, i, :], want, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(H[0, :, 1, :], 0.0)


def test_the_gradient_graph_round_trips_through_json():
    rng = np.random.default_rng(2)
    g = ComputationalGraph()
    x = g.input("x")
    logits = ge.nn.mlp(g, x, [3, 4, 3], activation="relu")
    g.softmax_cross_entropy(logits, g.input("y"))
    feed = {"x": rng.normal(size=(5, 3)), "y": np.array([0, 2, 1, 1, 0])}
    h = ge.grad(g, "W1")
    text = h.to_json()
    assert json.loads(text)["output"] == "dW1"
    back = ComputationalGraph.from_json(text)
    np.testing.assert_array_equal(back.forward(feed), h.forward(feed))
    assert back.to_json() == text


def test_draw_and_dot_of_a_gradient_graph():
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    g, _ = circuit()
    h = ge.grad(g, "x")
    h.forward(AT)
    h.backward()
    assert h.draw() is not None
    assert '"dx"' in h.to_dot() or "dx" in h.to_dot()


# ---------------------------------------------------------------- errors

def test_errors_name_what_is_wrong():
    g, f = circuit()
    with pytest.raises(GraphError, match="'q' is a gate"):
        ge.grad(g, "q")
    with pytest.raises(GraphError, match="'nope' is not a node"):
        ge.grad(g, "nope")
    with pytest.raises(GraphError, match="'q' is a gate"):
        ge.hessian(g, wrt=["x", "q"], feed=AT)
    with pytest.raises(GraphError, match="needs a point"):
        ge.hessian(ComputationalGraph.from_expression("x * y"))
    with pytest.raises(GraphError, match="shape"):
        ge.hvp(g, {"x": np.ones(2)}, feed=AT)
    with pytest.raises(GraphError, match="dict"):
        ge.hvp(g, [1.0], feed=AT)
    with pytest.raises(GraphError, match="leaf's name or Node"):
        ge.grad(g, 3)


def test_a_non_scalar_output_is_refused():
    g = ComputationalGraph()
    x = g.input("x")
    g.mul(x, 2.0, name="f")
    h = ge.grad(g, "x")           # not run yet: the shape is checked when h runs
    with pytest.raises(GraphError, match=r"'df'.*scalar output, got shape \(3,\)"):
        h.forward(x=np.ones(3))
    assert h.forward(x=1.0) == 2.0            # and h stays usable
    g.forward(x=np.ones(3))
    with pytest.raises(GraphError, match=r"scalar output: output 'f' has shape \(3,\)"):
        ge.grad(g, "x")
    with pytest.raises(GraphError, match="scalar output"):
        ge.hessian(g, feed={"x": np.ones(3)})
    with pytest.raises(GraphError, match="scalar output"):
        ge.hvp(g, {"x": np.ones(3)}, feed={"x": np.ones(3)})


class Square(ge.Gate):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, upstream):
        return (2 * self.x * upstream,)

    def jvp(self, x_dot):
        return 2 * self.x * x_dot


class SquareWithRule(Square):
    def backward_gates(self, g, inputs, out, upstream):
        return (upstream * 2.0 * inputs[0],)


def test_a_users_gate_without_a_rule_is_named():
    g = ComputationalGraph()
    x = g.input("x")
    g.apply(Square(), g.sigmoid(x), name="sq")
    with pytest.raises(GraphError, match="node 'sq': gate Square has no backward as gates"):
        ge.grad(g, "x")
    with pytest.raises(GraphError, match="node 'sq': gate Square"):
        ge.hessian(g, feed={"x": 0.3})
    g.forward(x=0.3)                          # first-order tools keep working
    s = 1 / (1 + math.exp(-0.3))
    assert g.backward()["x"] == pytest.approx(2 * s * s * (1 - s), rel=1e-12)


def test_a_users_gate_with_a_rule_is_differentiated_again():
    g = ComputationalGraph()
    x = g.input("x")
    g.apply(SquareWithRule(), x * 3.0)
    assert ge.grad(g, "x").forward(x=2.0) == 36.0
    assert ge.grad(ge.grad(g, "x"), "x").forward(x=2.0) == 18.0
    assert ge.hessian(g, feed={"x": 2.0})["x", "x"] == 18.0


def test_hessian_through_a_users_gate_without_jvp_is_named():
    class NoJvp(ge.Gate):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, upstream):
            return (2 * self.x * upstream,)

        def backward_gates(self, g, inputs, out, upstream):
            return (upstream * 2.0 * inputs[0],)

    g = ComputationalGraph()
    x = g.input("x")
    g.exp(g.apply(NoJvp(), x, name="n"))
    assert ge.grad(ge.grad(g, "x"), "x").forward(x=0.5) == pytest.approx(
        math.exp(0.25) * (2 + 1.0), rel=1e-12)             # reverse-over-reverse works
    with pytest.raises(GraphError, match="node 'n': gate NoJvp has no jvp"):
        ge.hessian(g, feed={"x": 0.5})
    with pytest.raises(GraphError, match="node 'n': gate NoJvp has no jvp"):
        ge.hvp(g, {"x": 1.0}, feed={"x": 0.5})


def test_a_rule_returning_the_wrong_thing_is_named():
    class Bad(Square):
        def backward_gates(self, g, inputs, out, upstream):
            return (upstream, upstream)

    class Alien(Square):
        def backward_gates(self, g, inputs, out, upstream):
            return (3.0,)

    for cls, message in ((Bad, "must return 1 Nodes or None"), (Alien, "returned 3.0")):
        g = ComputationalGraph()
        g.apply(cls(), g.input("x"), name="b")
        with pytest.raises(GraphError, match=f"node 'b': .*{message}"):
            ge.grad(g, "x")


# ---------------------------------------------------------------- per gate: a table

def single_gate_graph(make, xs):
    """sum(r * gate(x0, x1, ...)) for a fixed random r, every input fed by name."""
    rng = np.random.default_rng(3)
    g = ComputationalGraph()
    leaves = [g.input(f"x{k}") for k in range(len(xs))]
    node = g.apply(make(), *leaves)
    feed = {f"x{k}": v for k, v in enumerate(xs)}
    out = g.forward(feed)
    r = rng.normal(size=np.shape(out)) if np.shape(out) else float(rng.normal())
    g.set_output(g.sum(g.mul(node, g.constant(r))))
    return g, feed, r


def _elementwise(f2):
    return lambda xs, r: {(0, 0): np.diag(np.ravel(r * f2(xs[0]))).reshape(
        np.shape(xs[0]) * 2) if np.ndim(xs[0]) else r * f2(xs[0])}


def _sig(v):
    return 1 / (1 + np.exp(-v))


# closed-form second derivatives of sum(r * gate(...)), by the first part of a row's id
SECOND = {
    "neg": _elementwise(lambda x: 0 * x), "pow3": _elementwise(lambda x: 6 * x),
    "pow-half": _elementwise(lambda x: -0.25 * x ** -1.5),
    "pow-neg": _elementwise(lambda x: 6 * x ** -4.0), "pow2": _elementwise(lambda x: 2 + 0 * x),
    "pow1": _elementwise(lambda x: 0 * x), "pow0": _elementwise(lambda x: 0 * x),
    "exp": _elementwise(np.exp), "log": _elementwise(lambda x: -1 / x ** 2),
    "sigmoid": _elementwise(lambda x: _sig(x) * (1 - _sig(x)) * (1 - 2 * _sig(x))),
    "tanh": _elementwise(lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    "relu": _elementwise(lambda x: 0 * x), "step": _elementwise(lambda x: 0 * x),
    "sigmoid_grad": _elementwise(
        lambda x: _sig(x) * (1 - _sig(x)) * (1 - 6 * _sig(x) + 6 * _sig(x) ** 2)),
    "mul-scalar": lambda xs, r: {(0, 0): 0.0, (0, 1): r, (1, 1): 0.0},
    "add-scalar": lambda xs, r: {(0, 0): 0.0, (0, 1): 0.0, (1, 1): 0.0},
    "sub-scalar": lambda xs, r: {(0, 0): 0.0, (0, 1): 0.0, (1, 1): 0.0},
    "div-scalar": lambda xs, r: {(0, 0): 0.0, (0, 1): -r / xs[1] ** 2,
                                 (1, 1): 2 * r * xs[0] / xs[1] ** 3},
    "power-scalar": lambda xs, r: {
        (0, 0): r * xs[1] * (xs[1] - 1) * xs[0] ** (xs[1] - 2),
        (0, 1): r * xs[0] ** (xs[1] - 1) * (1 + xs[1] * np.log(xs[0])),
        (1, 1): r * xs[0] ** xs[1] * np.log(xs[0]) ** 2},
    "mse-scalar": lambda xs, r: {(0, 0): 2 * r, (0, 1): -2 * r, (1, 1): 2 * r},
    "max-()": lambda xs, r: {(0, 0): 0.0, (0, 1): 0.0, (1, 1): 0.0},
}


def _closed_form(param):
    if param.id in SECOND:
        return SECOND[param.id]
    base = param.id.rsplit("-", 1)[0]
    if param.id.endswith(("-scalar", "-array")) and base in SECOND:
        return SECOND[base]
    return None


def _swap_blocks(block, a_ndim):
    # H[b, a] is H[a, b] with a's axes and b's axes exchanged
    n = np.ndim(block)
    return np.transpose(block, list(range(a_ndim, n)) + list(range(a_ndim)))


def test_the_second_order_table_has_closed_forms():
    covered = [p.id for p in ROWS if _closed_form(p) is not None]
    assert len(covered) >= 30
    assert {"sigmoid-array", "pow3-scalar", "power-scalar", "div-scalar"} <= set(covered)


@pytest.mark.parametrize("param", [pytest.param(p, id=p.id) for p in ROWS])
def test_first_and_second_derivatives_of_each_gate(param, monkeypatch):
    make, samplers, value, grads, diff = param.values
    # the table's samplers draw from test_gates.rng: a generator of our own keeps
    # both files' draws independent of the order the tests run in
    monkeypatch.setattr(test_gates, "rng", np.random.default_rng(7))
    xs = sample(samplers)
    g, feed, r = single_gate_graph(make, xs)
    wrt = [k for k in range(len(xs)) if diff is None or k in diff]
    names = [f"x{k}" for k in wrt]
    want = grads(*xs, r)
    # first derivatives: each gradient graph against the gate's closed form
    for k in wrt:
        got = ge.grad(g, f"x{k}").forward(feed)
        assert np.shape(got) == np.shape(xs[k])
        np.testing.assert_allclose(got, want[k], rtol=1e-9, atol=1e-12)
    # second derivatives: forward-over-reverse against central differences of the
    # closed-form gradient, and against the closed form where the table has one
    H = ge.hessian(g, wrt=names, feed=feed)
    eps = 1e-6
    for j in wrt:
        for idx in np.ndindex(*np.shape(xs[j])):
            sides = []
            for step in (eps, -eps):
                moved = [np.array(x, dtype=float) for x in xs]
                moved[j][idx] += step
                moved = [float(m) if np.ndim(x) == 0 else m for m, x in zip(moved, xs,
                                                                            strict=True)]
                sides.append(grads(*moved, r))
            for i in wrt:
                numeric = (np.asarray(sides[0][i]) - sides[1][i]) / (2 * eps)
                block = np.asarray(H[f"x{i}", f"x{j}"])
                np.testing.assert_allclose(block[(Ellipsis,) + idx], numeric,
                                           rtol=1e-5, atol=1e-6)
    closed = _closed_form(param)
    if closed is not None:
        for (i, j), block in closed(xs, r).items():
            np.testing.assert_allclose(H[f"x{i}", f"x{j}"], block, rtol=1e-10, atol=1e-12)
    for i in wrt:                                  # symmetric
        for j in wrt:
            np.testing.assert_allclose(H[f"x{j}", f"x{i}"],
                                       _swap_blocks(H[f"x{i}", f"x{j}"], np.ndim(xs[i])),
                                       rtol=1e-9, atol=1e-12)
    # reverse-over-reverse: backward on each gradient graph gives the same rows
    rng = np.random.default_rng(4)
    for i in wrt:
        h = ge.grad(g, f"x{i}")
        h.forward(feed)
        seed = rng.normal(size=np.shape(xs[i])) if np.ndim(xs[i]) else float(rng.normal())
        back = h.backward(seed)
        for j in wrt:
            block = H[f"x{i}", f"x{j}"]
            np.testing.assert_allclose(back[f"x{j}"],
                                       np.tensordot(seed, block, axes=np.ndim(seed)),
                                       rtol=1e-9, atol=1e-12)


def test_every_registered_gate_has_a_rule():
    missing = [op for op, cls in G.GATES.items() if cls in G.BUILTIN
               and cls.backward_gates is G.Gate.backward_gates]
    assert missing == []


# ---------------------------------------------------------------- random DAGs vs autograd

def check_hessian(g, feed):
    out = g.forward(feed)
    if np.shape(out) != ():
        r = np.random.default_rng(5).standard_normal(np.shape(out))
        g.set_output(g.sum(g.mul(g.output, g.constant(r))))
    f, names = oracle_function(g, None)
    values = [feed[n] if n in feed else g[n].value for n in names]
    shapes = [np.shape(v) for v in values]
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.cumsum([0] + sizes)

    def flat_f(flat):
        parts = [flat[o:o + n].reshape(s) if s else flat[o]
                 for o, n, s in zip(offsets, sizes, shapes, strict=False)]
        return f(parts)

    flat = np.concatenate([np.ravel(v) for v in values])
    want = ahessian(flat_f)(flat)
    H = ge.hessian(g, wrt=names, feed=feed)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            block = want[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]]
            got = H[a, b]
            assert np.shape(got) == shapes[i] + shapes[j]
            np.testing.assert_allclose(np.reshape(got, block.shape), block,
                                       rtol=1e-8, atol=1e-10, err_msg=f"{a}, {b}")
    v = np.random.default_rng(6).standard_normal(len(flat))
    vectors = {n: (v[o:o + k].reshape(s) if s else float(v[o]))
               for n, o, k, s in zip(names, offsets, sizes, shapes, strict=False)}
    hv = ge.hvp(g, vectors, feed=feed)
    want_hv = want @ v
    for n, o, k in zip(names, offsets, sizes, strict=False):
        np.testing.assert_allclose(np.ravel(hv[n]), want_hv[o:o + k], rtol=1e-8, atol=1e-10)


# autograd warns when a random graph's output happens not to depend on its leaves
pytestmark = pytest.mark.filterwarnings("ignore:Output seems independent of input")

DAGS = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@DAGS
@given(random_dags(max_gates=14))
def test_hessians_of_random_dags_agree_with_autograd(case):
    check_hessian(*case)


@settings(max_examples=25, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_dags())
def test_hessians_of_larger_random_dags_agree_with_autograd(case):
    check_hessian(*case)


@pytest.mark.slow
@settings(max_examples=2000, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_dags())
def test_many_hessians_of_random_dags_agree_with_autograd(case):
    check_hessian(*case)


# ---------------------------------------------------------------- the command line

def test_explain_prints_and_draws_the_gradient_circuit(capsys, tmp_path):
    from graphengine.cli import main

    path = tmp_path / "grad.png"
    code = main(["explain", "(x + y) * z", "--at", "x=-2", "y=5", "z=-4", "--grad", "x",
                 "--grad-draw", str(path)])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    tail = out[out.index("df/dx = -4 as its own circuit"):].splitlines()
    assert tail[0].startswith("df/dx = -4 as its own circuit (dx): the forward nodes")
    assert tail[2].split() == ["node", "computes", "value"]
    assert [line.split() for line in tail[-5:-2]] == [
        ["mul_4", "(x", "+", "y)", "*", "z", "-12"],
        ["dmul_4", "seed((x", "+", "y)", "*", "z)", "1"],
        ["dx", "dmul_4", "*", "z", "-4"]]
    assert tail[-1] == f"drew the gradient circuit to {path}"
    assert path.stat().st_size > 1000


def test_explain_grad_errors(capsys):
    from graphengine.cli import main

    assert main(["explain", "x * y", "--at", "x=1", "y=2", "--grad", "z"]) == 2
    assert "--grad z: the formula has no input 'z'" in capsys.readouterr().err
    assert main(["explain", "x * y", "--at", "x=1", "y=2", "--grad-draw", "a.png"]) == 2
    assert "--grad-draw needs --grad NAME" in capsys.readouterr().err
