"""gradcheck and assert_gradients: they pass right derivatives and catch wrong ones."""

import numpy as np
import pytest

import graphengine as ge
from graphengine import ComputationalGraph, Gate, GraphError

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")


class Cube(Gate):
    """cube: out = x**3, d/dx = 3 x**2 (times ``factor`` to make it wrong)"""

    factor = 1.0

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, upstream):
        return (self.factor * 3.0 * self.x ** 2 * upstream,)


class CubeOffByTwo(Cube):
    factor = 2.0


class CubeWithJvp(Cube):
    def jvp(self, x_dot):
        return 3.0 * self.x ** 2 * x_dot


class CubeWithWrongJvp(Cube):
    def jvp(self, x_dot):
        return -3.0 * self.x ** 2 * x_dot


def user_graph(gate):
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    c = g.apply(gate, x, name="c")
    g.add(c * y, g.sigmoid(x), name="out")
    return g


FEED = {"x": 1.5, "y": -0.5}


def test_gradcheck_rejects_a_backward_off_by_a_factor_of_two():
    report = ge.gradcheck(user_graph(CubeOffByTwo()), FEED)
    assert not report
    x_row, y_row = report.rows
    assert (x_row.leaf, x_row.ok, y_row.ok) == ("x", False, True)
    sig = 1.0 / (1.0 + np.exp(-1.5))
    right = 3.0 * 1.5 ** 2 * -0.5 + sig * (1.0 - sig)
    assert x_row.numeric == pytest.approx(right, rel=1e-8)
    assert x_row.analytic == pytest.approx(2 * 3.0 * 1.5 ** 2 * -0.5 + sig * (1.0 - sig))
    assert report.errors["x"] == pytest.approx(abs(3.0 * 1.5 ** 2 * -0.5), rel=1e-6)
    text = str(report)
    assert "NO" in text.splitlines()[1] and "gradcheck FAILED" in text
    assert "not checked (node 'c' (CubeOffByTwo) has no jvp)" in text


def test_gradcheck_passes_a_correct_user_gate():
    report = ge.gradcheck(user_graph(Cube()), FEED)
    assert report
    assert all(row.ok for row in report.rows) and max(report.errors.values()) < 1e-8
    assert report.modes is None and "Cube" in report.skipped


def test_gradcheck_checks_forward_against_reverse_mode():
    report = ge.gradcheck(user_graph(CubeWithJvp()), FEED)
    assert report and report.modes[2]
    assert report.modes[0] == pytest.approx(report.modes[1], rel=1e-12)
    wrong = ge.gradcheck(user_graph(CubeWithWrongJvp()), FEED)
    assert all(row.ok for row in wrong.rows)
    assert not wrong and not wrong.modes[2]
    assert "DISAGREE" in str(wrong)


def test_gradcheck_on_an_array_network_with_labels():
    rng = np.random.default_rng(3)
    g = ComputationalGraph()
    x, labels = g.input("x"), g.input("labels")
    W = g.parameter("W", rng.standard_normal((4, 3)).astype(np.float32))
    b = g.parameter("b", np.zeros(3))
    g.softmax_cross_entropy(g.tanh(x @ W + b), labels, name="loss")
    feed = {"x": rng.standard_normal((5, 4)), "labels": np.array([0, 2, 1, 1, 0])}
    report = ge.gradcheck(g, feed, rtol=1e-6, atol=1e-9)
    assert report, str(report)
    assert [row.leaf for row in report.rows] == ["x", "W", "b"]       # labels left out
    assert report.rows[1].index in [(i, j) for i in range(4) for j in range(3)]
    assert W.value.dtype == np.float32


def test_gradcheck_on_an_array_output_uses_a_random_seed():
    g = ComputationalGraph()
    x = g.input("x")
    w = g.parameter("w", [0.5, -1.0, 2.0])
    g.exp(x * w) / (1.0 + x * x)
    report = ge.gradcheck(g, {"x": np.array([0.3, 0.1, -0.2])})
    assert report and [row.leaf for row in report.rows] == ["x", "w"]


def test_gradcheck_wrt_selects_leaves():
    g = user_graph(Cube())
    assert [row.leaf for row in ge.gradcheck(g, FEED, wrt=["y"]).rows] == ["y"]
    assert [row.leaf for row in ge.gradcheck(g, FEED, wrt="x").rows] == ["x"]
    with pytest.raises(GraphError, match="wrt entry 'c' is a gate"):
        ge.gradcheck(g, FEED, wrt=["c"])


def test_gradcheck_leaves_values_gradients_and_gate_state_as_they_were():
    g = user_graph(CubeWithJvp())
    g.forward(x=0.25, y=2.0)
    before = g.backward()
    values = {n.name: n.value for n in g}
    ge.gradcheck(g, FEED)
    assert {n.name: n.value for n in g} == values
    assert {n.name: n.grad for n in g} == before
    assert g.backward() == before               # the gates hold the old point again
    with pytest.raises(GraphError, match="input 'y' needs a value"):
        ge.gradcheck(g, {"x": 1.0})
    assert g.backward() == before


def test_gradcheck_before_any_forward_leaves_no_values():
    g = user_graph(Cube())
    assert ge.gradcheck(g, FEED)
    assert g["out"].value is None
    with pytest.raises(GraphError, match="backward needs a forward first"):
        g.backward()


def test_gradcheck_warns_when_a_probe_crosses_relu_at_zero():
    g = ComputationalGraph()
    x = g.input("x")
    g.relu(x, name="r")
    report = ge.gradcheck(g, {"x": 0.0})
    assert not report                     # analytic 0 (no gradient at 0), numeric 0.5
    assert report.rows[0].analytic == 0.0 and report.rows[0].numeric == 0.5
    assert report.warnings == ["leaf 'x' element (): the probe crossed a kink at node 'r' "
                               "(relu); central differences are not meaningful there"]
    assert ge.gradcheck(g, {"x": 0.5}).warnings == []


def test_gradcheck_warns_on_a_max_tie_but_the_split_agrees():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    g.max(x, y, name="m")
    report = ge.gradcheck(g, {"x": 1.0, "y": 1.0})
    assert report and [r.analytic for r in report.rows] == [0.5, 0.5]
    assert len(report.warnings) == 2 and "node 'm' (max)" in report.warnings[0]
    arr = ge.gradcheck(g, {"x": np.array([1.0, 2.0]), "y": np.array([0.0, 2.0])})
    assert arr.warnings[0].startswith("leaf 'x' element (1,): the probe crossed a kink")


def test_max_of_a_node_with_itself_is_no_kink():
    g = ComputationalGraph()
    x = g.input("x")
    g.max(x * 2.0, x * 2.0, name="m")
    report = ge.gradcheck(g, {"x": 1.0})
    assert report and report.warnings == [] and report.rows[0].analytic == 2.0


def test_gradcheck_rejects_bad_tolerances():
    g = user_graph(Cube())
    with pytest.raises(GraphError, match="eps must be > 0, got 0"):
        ge.gradcheck(g, FEED, eps=0)
    with pytest.raises(GraphError, match="rtol must be a number >= 0, got -1"):
        ge.gradcheck(g, FEED, rtol=-1)


def test_report_prints_as_a_table():
    report = ge.gradcheck(user_graph(CubeWithJvp()), FEED)
    lines = str(report).splitlines()
    assert lines[0].split() == ["leaf", "worst", "element", "analytic", "numeric",
                                "error", "ok"]
    assert lines[1].split()[:2] == ["x", "()"] and lines[1].split()[-1] == "yes"
    assert lines[-1] == "gradcheck passed (eps=1e-06, rtol=0.0001, atol=1e-06)"
    assert repr(report).startswith("<GradcheckReport passed: 2 leaves, worst error")


def test_assert_gradients_raises_with_the_table_and_passes_right_gates():
    ge.testing.assert_gradients(user_graph(CubeWithJvp()), FEED)
    ge.testing.assert_gradients(user_graph(Cube()), FEED, rtol=1e-6)
    with pytest.raises(AssertionError, match="(?s)gradients disagree:\nleaf .*x +\\(\\) .*NO"):
        ge.testing.assert_gradients(user_graph(CubeOffByTwo()), FEED)
    with pytest.raises(AssertionError, match="DISAGREE"):
        ge.testing.assert_gradients(user_graph(CubeWithWrongJvp()), FEED)


# ---------------------------------------------------------------- order=2

class CubeWithRule(Cube):
    """cube with its backward as gates: d/dx = 3 x**2 (times ``slope`` to make the
    second derivative wrong while the first stays right)"""

    slope = 1.0

    def jvp(self, x_dot):
        return 3.0 * self.x ** 2 * x_dot

    def backward_gates(self, g, inputs, out, upstream):
        (x,) = inputs
        # right value at the point x = 1 for any slope: 3 x**2 -> 3 (x**2)**slope
        return (upstream * 3.0 * (x * x) ** self.slope,)


class CubeWithWrongRule(CubeWithRule):
    slope = 1.5


def test_order_two_checks_second_derivatives():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    w = g.parameter("w", np.array([0.3, -0.2]))
    g.sum(g.tanh(x * w) * y + g.sigmoid(w * y))
    feed = {"x": 0.7, "y": np.array([1.5, -0.4])}
    report = ge.gradcheck(g, feed, order=2)
    assert report, str(report)
    names = [row.leaf for row in report.rows]
    assert names[:3] == ["x", "y", "w"] and "d2/dx dw" in names and "d2/dw dy" in names
    assert "dw as gates" in names and len(names) == 3 + 3 + 9
    assert "d2/dy dw" in str(report)


def test_order_two_catches_a_wrong_second_derivative():
    feed = {"x": 1.0, "y": 0.5}
    assert ge.gradcheck(user_graph(CubeWithRule()), feed, order=2)
    wrong = user_graph(CubeWithWrongRule())
    assert ge.gradcheck(wrong, feed)                 # first derivatives agree at x = 1
    report = ge.gradcheck(wrong, feed, order=2)
    assert not report
    bad = [row.leaf for row in report.rows if not row.ok]
    assert bad == ["d2/dx dx"], str(report)


def test_order_must_be_one_or_two():
    with pytest.raises(GraphError, match="order must be 1 or 2, got 3"):
        ge.gradcheck(user_graph(CubeWithRule()), FEED, order=3)
