"""The worked examples of background.md sections 2, 3 and 5, each against values
computed independently (plain Python floats, or a numpy implementation of the
four backprop equations)."""

import math

import numpy as np
import pytest

import graphengine as ge


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


# ---------------------------------------------------------------- section 2: the 2-2-1 network

X = [0.5, 0.3]
W1 = [[0.5, 0.3], [0.2, 0.4]]        # rows = inputs, columns = hidden units
B1 = [0.1, 0.2]
W2 = [0.6, 0.7]
B2 = 0.3
LABEL = 0.8


def net_221():
    g = ge.ComputationalGraph()
    x = g.input("x")
    w1, b1 = g.parameter("W1", W1), g.parameter("b1", B1)
    w2, b2 = g.parameter("W2", W2), g.parameter("b2", B2)
    h = g.sigmoid(x @ w1 + b1, name="h")
    out = g.sigmoid(h @ w2 + b2, name="out")
    g.pow(LABEL - out, 2, name="loss")
    return g


def by_hand(w1, b1, w2, b2):
    """Forward values, loss and every parameter gradient of the 2-2-1 net, unit by unit."""
    z1 = [X[0] * w1[0][j] + X[1] * w1[1][j] + b1[j] for j in range(2)]
    h = [sigmoid(z) for z in z1]
    z2 = h[0] * w2[0] + h[1] * w2[1] + b2
    out = sigmoid(z2)
    loss = (LABEL - out) ** 2
    d2 = -2.0 * (LABEL - out) * out * (1.0 - out)             # dL/dz2
    d1 = [d2 * w2[j] * h[j] * (1.0 - h[j]) for j in range(2)]  # dL/dz1_j
    grads = {"W1": [[X[i] * d1[j] for j in range(2)] for i in range(2)], "b1": d1,
             "W2": [d2 * h[j] for j in range(2)], "b2": d2}
    return h, out, loss, grads


def test_221_forward_loss_and_gradients_are_the_true_values():
    g = net_221()
    loss = g.forward(x=X)
    h, out, want_loss, want = by_hand(W1, B1, W2, B2)
    np.testing.assert_allclose(g["h"].value, h, rtol=1e-14)
    assert g["out"].value == pytest.approx(out, rel=1e-14)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    # the true values (the text prints others): z1 = (0.41, 0.47), h = (0.60109, 0.61538),
    # z2 = 0.6 h1 + 0.7 h2 + 0.3 = 1.09142, out = 0.74865, loss = 0.0026369
    np.testing.assert_allclose(g["h"].value, [sigmoid(0.41), sigmoid(0.47)], rtol=1e-15)
    assert out == pytest.approx(0.74864928, abs=1e-8)
    assert loss == pytest.approx(0.00263690, abs=1e-8)
    grads = g.backward()
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-12, err_msg=name)


def test_221_one_sgd_step_lowers_the_loss_and_training_converges():
    g = net_221()
    opt = ge.optim.SGD(g.parameters(), lr=0.1)
    before = g.forward(x=X)
    g.backward()
    want = {p.name: p.value - 0.1 * p.grad for p in g.parameters()}
    opt.step()
    for p in g.parameters():
        np.testing.assert_allclose(p.value, want[p.name], rtol=1e-15)
    after = g.forward(x=X)
    assert after < before
    _, _, hand_after, _ = by_hand(want["W1"].tolist(), want["b1"].tolist(),
                                  want["W2"].tolist(), want["b2"])
    assert after == pytest.approx(hand_after, rel=1e-13)
    losses = [after]
    for _ in range(3000):
        g.backward()
        opt.step()
        losses.append(g.forward(x=X))
    assert all(b < a for a, b in zip(losses[:1000], losses[1:1000], strict=False))
    assert losses[-1] < 1e-20 and g["out"].value == pytest.approx(LABEL, abs=1e-3)


# ---------------------------------------------------------------- section 3: BP1-BP4

def numpy_bp(Ws, bs, xs, ys):
    """The four equations in the text's convention: W^l is (out, in), column vectors;
    gradients averaged over the samples (mini-batch SGD)."""
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    dW = [np.zeros_like(W) for W in Ws]
    db = [np.zeros_like(b) for b in bs]
    for x, y in zip(xs, ys, strict=False):
        a, zs, acts = x[:, None], [], [x[:, None]]
        for W, b in zip(Ws, bs, strict=False):
            zs.append(W @ a + b[:, None])
            a = sig(zs[-1])
            acts.append(a)
        sp = [sig(z) * (1 - sig(z)) for z in zs]
        delta = (a - y[:, None]) * sp[-1]                          # BP1
        for k in range(len(Ws) - 1, -1, -1):
            if k < len(Ws) - 1:
                delta = (Ws[k + 1].T @ delta) * sp[k]              # BP2
            db[k] += delta[:, 0] / len(xs)                         # BP3
            dW[k] += delta @ acts[k].T / len(xs)                   # BP4
    return dW, db


def test_engine_gradients_equal_the_four_equations():
    rng = np.random.default_rng(3)
    sizes, n = [4, 5, 3, 2], 6
    Ws = [rng.normal(size=(o, i)) for i, o in zip(sizes[:-1], sizes[1:], strict=False)]
    bs = [rng.normal(size=o) for o in sizes[1:]]
    xs, ys = rng.normal(size=(n, sizes[0])), rng.uniform(size=(n, sizes[-1]))

    g = ge.ComputationalGraph()
    a = g.input("x")
    for k, (W, b) in enumerate(zip(Ws, bs, strict=False), start=1):
        a = g.sigmoid(a @ g.parameter(f"W{k}", W.T) + g.parameter(f"b{k}", b))
    cost = g.sum((a - g.input("y")) ** 2) * (0.5 / n)          # C = 1/2 ||y - a^L||^2, mean
    g.forward(x=xs, y=ys)
    grads = g.backward()

    dW, db = numpy_bp(Ws, bs, xs, ys)
    for k in range(len(Ws)):
        np.testing.assert_allclose(grads[f"W{k + 1}"], dW[k].T, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(grads[f"b{k + 1}"], db[k], rtol=1e-12, atol=1e-15)
    assert cost.value == pytest.approx(
        0.5 * np.sum((ys - g[a.name].value) ** 2) / n, rel=1e-14)


# ---------------------------------------------------------------- section 5: y = 4x^2

def descend(lr, steps):
    g = ge.ComputationalGraph()
    x = g.parameter("x", 2.0)
    4 * x ** 2
    opt = ge.optim.SGD([x], lr=lr)
    xs, ys = [x.value], [g.forward()]
    for _ in range(steps):
        g.backward()
        opt.step()
        xs.append(x.value)
        ys.append(g.forward())
    return xs, ys


def recurrence(lr, steps):
    xs = [2.0]
    for _ in range(steps):
        xs.append(xs[-1] - lr * (8 * xs[-1]))                      # dy/dx = 8x
    return xs, [4 * v * v for v in xs]


@pytest.mark.parametrize("lr", [1, 0.26, 0.25, 0.24, 0.1])
def test_gradient_descent_trajectories_are_exact(lr):
    xs, ys = descend(lr, 12)
    assert (xs, ys) == recurrence(lr, 12)


def test_gradient_descent_on_4x2_as_the_text_tells():
    xs, ys = descend(1, 2)
    assert xs == [2.0, -14.0, 98.0] and ys == [16.0, 784.0, 38416.0]        # blows up
    xs, ys = descend(0.26, 40)                                              # diverges
    assert all(abs(b) > abs(a) for a, b in zip(xs, xs[1:], strict=False)) and abs(xs[-1]) > 20
    xs, ys = descend(0.25, 9)
    assert xs == [2.0, -2.0] * 5 and set(ys) == {16.0}                      # 2, -2 forever
    xs, _ = descend(0.24, 100)                                  # converges, oscillating
    assert all(a * b < 0 and abs(b) < abs(a) for a, b in zip(xs, xs[1:], strict=False))
    assert abs(xs[-1]) < 1e-3
    xs, _ = descend(0.1, 10)                                    # converges in a few steps
    assert all(0 < b < a for a, b in zip(xs, xs[1:], strict=False)) and xs[10] < 1e-6
