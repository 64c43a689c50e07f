import numpy as np
import pytest

import graphengine as ge
from graphengine import GraphError

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")


def quadratic(w0, b0):
    """loss = sum((x @ w + b - t)^2) on fixed data; returns the graph."""
    g = ge.ComputationalGraph()
    w, b = g.parameter("w", w0), g.parameter("b", b0)
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    t = np.array([1.0, -2.0, 0.5])
    g.sum((x @ w + b - t) ** 2)
    return g, x, t


def grads_by_hand(w, b, x, t):
    r = x @ w + b - t
    return 2 * x.T @ r, 2 * r.sum()


def run(opt_factory, hand_update, steps=4):
    g, x, t = quadratic(np.array([0.3, -0.2]), 0.1)
    opt = opt_factory(g.parameters())
    w, b = np.array([0.3, -0.2]), 0.1
    state = {}
    for _ in range(steps):
        g.forward()
        g.backward()
        opt.step()
        gw, gb = grads_by_hand(w, b, x, t)
        w, b = hand_update(state, w, b, gw, gb)
        np.testing.assert_allclose(g["w"].value, w, rtol=1e-13)
        assert g["b"].value == pytest.approx(b, rel=1e-13)
    return g


def test_sgd_is_p_minus_lr_grad():
    run(lambda ps: ge.optim.SGD(ps, lr=0.01),
        lambda s, w, b, gw, gb: (w - 0.01 * gw, b - 0.01 * gb))


def test_sgd_momentum_is_heavy_ball_as_pytorch():
    def hand(s, w, b, gw, gb):
        s["vw"] = gw if "vw" not in s else 0.9 * s["vw"] + gw
        s["vb"] = gb if "vb" not in s else 0.9 * s["vb"] + gb
        return w - 0.01 * s["vw"], b - 0.01 * s["vb"]
    run(lambda ps: ge.optim.SGD(ps, lr=0.01, momentum=0.9), hand)


def test_adam_matches_the_paper_with_bias_correction():
    b1, b2, eps, lr = 0.8, 0.99, 1e-6, 0.05

    def hand(s, w, b, gw, gb):
        s["t"] = s.get("t", 0) + 1
        out = []
        for key, p, grad in (("w", w, gw), ("b", b, gb)):
            m = b1 * s.get("m" + key, 0.0) + (1 - b1) * grad
            v = b2 * s.get("v" + key, 0.0) + (1 - b2) * grad ** 2
            s["m" + key], s["v" + key] = m, v
            mhat, vhat = m / (1 - b1 ** s["t"]), v / (1 - b2 ** s["t"])
            out.append(p - lr * mhat / (np.sqrt(vhat) + eps))
        return out
    run(lambda ps: ge.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps), hand)


def test_step_updates_arrays_in_place_and_floats_by_value():
    g, _, _ = quadratic(np.array([0.3, -0.2]), 0.1)
    w = g["w"].value
    opt = ge.optim.SGD(g.parameters(), lr=0.05)
    start = g.forward()
    g.backward()
    opt.step()
    assert g["w"].value is w and g["b"].value.__class__ is float
    assert g.forward() < start


def test_update_takes_gradients_in_parameter_order():
    g = ge.ComputationalGraph()
    a, b = g.parameter("a", 1.0), g.parameter("b", np.ones(2))
    g.sum(a * b)
    ge.optim.SGD([a, b], lr=0.5).update([2.0, np.array([1.0, -1.0])])
    assert a.value == 0.0 and b.value.tolist() == [0.5, 1.5]


def test_optimizers_converge_on_the_quadratic():
    for opt in (lambda ps: ge.optim.SGD(ps, lr=0.02, momentum=0.5),
                lambda ps: ge.optim.Adam(ps, lr=0.05)):
        g, _, _ = quadratic(np.zeros(2), 0.0)
        o = opt(g.parameters())
        start = g.forward()
        for _ in range(500):
            g.backward()
            o.step()
            g.forward()
        assert g.output.value < 0.02 * start


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0}, r"SGD: lr must be a number in \(0, inf\), got 0"),
    ({"lr": -1}, "SGD: lr must be"),
    ({"lr": float("nan")}, "SGD: lr must be"),
    ({"lr": "0.1"}, "SGD: lr must be"),
    ({"lr": 0.1, "momentum": 1.0}, r"SGD: momentum must be a number in \[0, 1\)"),
])
def test_sgd_rejects_bad_hyperparameters(kwargs, match):
    g, _, _ = quadratic(np.zeros(2), 0.0)
    with pytest.raises(GraphError, match=match):
        ge.optim.SGD(g.parameters(), **kwargs)


def test_adam_rejects_bad_hyperparameters():
    g, _, _ = quadratic(np.zeros(2), 0.0)
    with pytest.raises(GraphError, match="Adam: betas must be a pair"):
        ge.optim.Adam(g.parameters(), betas=0.9)
    with pytest.raises(GraphError, match=r"Adam: betas\[1\] must be"):
        ge.optim.Adam(g.parameters(), betas=(0.9, 1.0))
    with pytest.raises(GraphError, match="Adam: eps must be"):
        ge.optim.Adam(g.parameters(), eps=0)


def test_optimizer_errors_name_the_node():
    g = ge.ComputationalGraph()
    x, w = g.input("x"), g.parameter("w", 1.0)
    x * w
    with pytest.raises(GraphError, match="'x' is not a parameter node"):
        ge.optim.SGD([x, w], lr=0.1)
    with pytest.raises(GraphError, match="needs at least one parameter"):
        ge.optim.SGD([], lr=0.1)
    with pytest.raises(GraphError, match="parameter 'w' has no gradient: run forward and"):
        ge.optim.SGD([w], lr=0.1).step()


def test_update_needs_one_gradient_per_parameter():
    g = ge.ComputationalGraph()
    a = g.parameter("a", 1.0)
    a * a
    for opt in (ge.optim.SGD([a], lr=0.1), ge.optim.Adam([a])):
        with pytest.raises(GraphError, match=r"update: expected 1 gradient \(one per "
                                             r"parameter\), got 2"):
            opt.update([1.0, 2.0])


@pytest.mark.parametrize("params, match", [
    (None, r"SGD needs a list of parameter nodes \(pass g.parameters\(\)\), got NoneType"),
    (5, r"SGD needs a list of parameter nodes .*got int"),
    ("w", r"SGD: 'str' is not a parameter node"),
])
def test_optimizer_needs_a_list_of_parameters(params, match):
    with pytest.raises(GraphError, match=match):
        ge.optim.SGD(params, lr=0.1)


def test_optimizer_refuses_a_single_node_or_one_listed_twice():
    g, _, _ = quadratic(np.zeros(2), 0.0)
    with pytest.raises(GraphError, match=r"SGD needs a list of parameters, got the single "
                                         r"node 'w'; write \[w\]"):
        ge.optim.SGD(g["w"], lr=0.1)
    with pytest.raises(GraphError, match=r"Adam: parameter 'w' is listed twice"):
        ge.optim.Adam([g["w"], g["w"]])


@pytest.mark.parametrize("grads, match", [
    (None, r"(SGD|Adam).update: expected a list of gradients \(one per parameter\), got NoneType"),
    (np.zeros(2), r"expected a list of gradients .*got ndarray"),
    ([np.zeros(3), 0.0], r"the gradient of parameter 'w' has shape \(3,\), expected the "
                         r"parameter's shape \(2,\)"),
    ([np.zeros((2, 1)), 0.0], r"parameter 'w' has shape \(2, 1\)"),
    ([np.zeros(2), np.zeros(1)], r"parameter 'b' has shape \(1,\), expected the "
                                 r"parameter's shape \(\)"),
    ([np.zeros(2), "0.1"], r"the gradient of parameter 'b' is a str; expected a number"),
    ([np.array(["a", "b"]), 0.0], r"parameter 'w' is a numpy array of dtype <U1; expected"),
    ([np.zeros(2), None], r"the gradient of parameter 'b' is a NoneType"),
])
def test_update_checks_every_gradient_before_changing_anything(grads, match):
    g, _, _ = quadratic(np.array([1.0, 2.0]), 0.5)
    for opt in (ge.optim.SGD(g.parameters(), lr=0.1, momentum=0.9),
                ge.optim.Adam(g.parameters())):
        with pytest.raises(GraphError, match=match):
            opt.update(grads)
        assert g["w"].value.tolist() == [1.0, 2.0] and g["b"].value == 0.5
        opt.update([np.ones(2), 1.0])             # the optimizer still works
        assert g["w"].value[0] < 1.0 and g["b"].value < 0.5
        g["w"].value, g["b"].value = [1.0, 2.0], 0.5


def test_a_step_on_a_read_only_parameter_array_is_refused():
    g, _, _ = quadratic(np.zeros(2), 0.0)
    frozen = np.array([1.0, 2.0])
    frozen.flags.writeable = False
    g["w"].value = frozen
    opt = ge.optim.SGD(g.parameters(), lr=0.1)
    g.forward()
    g.backward()
    with pytest.raises(GraphError, match=r"parameter 'w' holds a read-only array, which a "
                                         r"step updates in place"):
        opt.step()
    assert g["b"].value == 0.0                 # nothing moved
    g["w"].value = np.array([1.0, 2.0])
    g.forward()
    g.backward()
    opt.step()
    assert g["b"].value != 0.0
