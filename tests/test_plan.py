"""The compiled plan: one compile per structural change, and pruned backward."""

import numpy as np
import pytest

from graphengine import ComputationalGraph, Gate
from graphengine.plan import BINARY, CHECKED, FIRST, SECOND, UNARY

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")


class Twice(Gate):
    def forward(self, x, y):
        return 2 * x + y

    def backward(self, upstream):
        return 2 * upstream, upstream


def network():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    W = g.parameter("W", np.arange(6.0).reshape(3, 2) / 10)
    b = g.parameter("b", np.array([0.1, -0.2]))
    h = g.sigmoid(x @ W + b)
    u = g.apply(Twice(), h, x @ W, name="user")
    g.mse(u * 0.5, y, name="loss")
    feed = {"x": np.arange(12.0).reshape(4, 3) / 7, "y": np.ones((4, 2))}
    return g, feed


def test_the_plan_is_compiled_once_per_structural_change():
    g, feed = network()
    plan = g.plan()
    g.forward(feed)
    g.backward()
    assert g.plan() is plan
    g["W"].value = np.zeros((3, 2))           # values are not structure
    g.forward(feed)
    assert g.plan() is plan
    g.sigmoid(g["loss"])                      # a new node is
    assert g.plan() is not plan


def test_steps_are_specialised_by_arity_and_user_gates_are_checked():
    g, feed = network()
    kinds = {g.plan().names[out]: kind for kind, *_, out in g.plan().steps}
    assert kinds["user"] == CHECKED
    assert kinds["loss"] == BINARY
    assert UNARY in kinds.values()


@pytest.mark.parametrize("wrt", [("W",), ("b",), ("W", "b"), ("x",), ("y", "b")])
def test_pruned_backward_equals_the_full_one_on_what_it_keeps(wrt):
    g, feed = network()
    g.forward(feed)
    full = g.backward()
    plan = g.plan()
    slots = tuple(plan.slot[n] for n in wrt)
    grads = plan.backward(g.run.values, 1.0, slots)
    for name in wrt:
        np.testing.assert_allclose(grads[plan.slot[name]], full[name], rtol=1e-14)
    assert plan.pruned(slots) is plan.pruned(slots)          # cached


def test_pruning_skips_the_gradient_of_the_data():
    g, feed = network()
    g.forward(feed)
    plan = g.plan()
    wrt = (plan.slot["W"], plan.slot["b"])
    grads = plan.backward(g.run.values, 1.0, wrt)
    assert grads[plan.slot["x"]] is None and grads[plan.slot["y"]] is None
    kinds = [kind for kind, *_ in plan.pruned(wrt)]
    assert FIRST in kinds or SECOND in kinds
    assert len(plan.pruned(wrt)) < len(plan.steps) or SECOND in kinds


def test_downstream_marks_what_depends_on_the_slots():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    c = a * 2
    d = b + 1
    e = c * d
    plan = g.plan()
    mark = plan.downstream([plan.slot["a"]])
    assert [n for n, m in zip(plan.names, mark, strict=True) if m] == ["a", c.name, e.name]
    assert d.name in plan.names


def test_feeding_by_node_falls_back_to_the_validating_path():
    g, feed = network()
    by_node = {g["x"]: feed["x"], "y": feed["y"]}
    assert g.forward(by_node) == g.forward(feed)
    assert g.forward(x=[[0.0, 1.0, 2.0]], y=np.ones(2)) == g.forward(
        {"x": np.array([[0.0, 1.0, 2.0]]), "y": np.ones(2)})


def test_pruned_backward_to_gates_whose_inputs_are_not_wanted():
    # x @ w and tanh(w) both feed the loss; asking for the two gates once crashed
    # with "float + NoneType" (matmul's pruned step handed w a None)
    g = ComputationalGraph()
    x = g.input("x")
    w = g.parameter("w", np.array([[0.5, -1.0], [2.0, 0.25]]))
    mm, th = g.matmul(x, w, name="mm"), g.tanh(w, name="th")
    g.mse(mm, th, name="loss")
    g.forward(x=np.array([[1.0, 2.0], [3.0, -1.0]]))
    full = g.backward()
    plan = g.plan()
    for wrt in (("mm", "th"), ("th", "mm"), ("mm",), ("th",), ("mm", "w"), ("w",)):
        slots = tuple(plan.slot[n] for n in wrt)
        grads = plan.backward(g.run.values, 1.0, slots)
        for name in wrt:
            np.testing.assert_allclose(grads[plan.slot[name]], full[name], rtol=1e-14)
    kinds = [kind for kind, *_ in plan.pruned((plan.slot["mm"], plan.slot["th"]))]
    assert len(kinds) == 1                        # only the loss's step is needed


def test_plan_steps_and_gates_describe_the_same_program():
    g, _ = network()
    plan = g.plan()
    assert len(plan.steps) == len(plan.gates) == sum(n.kind == "gate" for n in g)
    for (kind, gate, a, b, out), (gate2, ins, out2) in zip(plan.steps, plan.gates, strict=True):
        assert gate is gate2 and out == out2
        assert plan.names[out] == next(n.name for n in g if n.gate is gate)
        assert ins == ((a,) if kind == UNARY else (a, b) if kind == BINARY else a)
        assert tuple(plan.slot[u.name] for u in g[plan.names[out]].inputs) == ins
