"""Every built-in gate, one table row each: value and gradient against a closed form,
against central differences, and jvp against both; on scalars and on arrays."""

import math
import warnings

import numpy as np
import pytest

from graphengine import gates as G

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")

rng = np.random.default_rng(0)


def sig(x):
    return 1 / (1 + np.exp(-x))


def unbroadcast(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ce_value(z, y):
    # log softmax as z - logsumexp(z), not log(softmax): that underflows to log(0)
    z2 = np.atleast_2d(z)
    m = z2.max(axis=-1, keepdims=True)
    logp = z2 - m - np.log(np.exp(z2 - m).sum(axis=-1, keepdims=True))
    return -np.mean(logp[np.arange(len(z2)), np.atleast_1d(y).astype(int)])


def ce_grad(z, y):
    z2 = np.atleast_2d(z)
    d = softmax(z2)
    d[np.arange(len(z2)), np.atleast_1d(y).astype(int)] -= 1
    return (d / len(z2)).reshape(np.shape(z))


def normal(*shape):
    return lambda: rng.normal(size=shape) if shape else float(rng.normal())


def positive(*shape):
    return lambda: rng.uniform(0.5, 2.0, size=shape) if shape else float(rng.uniform(0.5, 2.0))


def away_from_zero(*shape):
    def draw():
        v = rng.uniform(0.3, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
        return v if shape else float(v)
    return draw


def distinct_pair(*shape):
    # two inputs that never tie (max) and are never near each other
    def x():
        v = rng.normal(size=shape)
        return v if shape else float(v)
    def y_from(x):
        off = rng.uniform(0.2, 1.0, size=np.shape(x)) * rng.choice([-1.0, 1.0], size=np.shape(x))
        return x + off if shape else float(x + off)
    return x, y_from


def labels(batch, classes):
    return lambda: rng.integers(0, classes, size=batch).astype(float) if batch else \
        float(rng.integers(0, classes))


# Row: id, gate factory, input samplers (a callable for dependent inputs gets the first
# input), value closed form, gradient closed form (inputs, upstream) -> gradients,
# which inputs are differentiable (for central differences).
ROWS = []


def row(id, make, samplers, value, grads, diff=None):
    ROWS.append(pytest.param(make, samplers, value, grads, diff, id=id))


def elementwise_unary(op, make, f, df, domain):
    for shape in [(), (3, 4)]:
        row(f"{op}-{'scalar' if not shape else 'array'}", make, [domain(*shape)],
            lambda x, f=f: f(x), lambda x, g, df=df: [g * df(x)])


elementwise_unary("neg", G.NegateGate, lambda x: -x, lambda x: -np.ones_like(x), normal)
elementwise_unary("pow3", lambda: G.PowGate(3), lambda x: x ** 3, lambda x: 3 * x ** 2, normal)
elementwise_unary("pow-half", lambda: G.PowGate(0.5), np.sqrt, lambda x: 0.5 / np.sqrt(x), positive)
elementwise_unary("pow-neg", lambda: G.PowGate(-2), lambda x: x ** -2.0,
                  lambda x: -2 * x ** -3.0, away_from_zero)
elementwise_unary("pow2", lambda: G.PowGate(2), lambda x: x * x, lambda x: 2 * x, normal)
elementwise_unary("pow1", lambda: G.PowGate(1), lambda x: x, np.ones_like, normal)
elementwise_unary("pow0", lambda: G.PowGate(0), np.ones_like, np.zeros_like, normal)
elementwise_unary("exp", G.ExpGate, np.exp, np.exp, normal)
elementwise_unary("log", G.LogGate, np.log, lambda x: 1 / x, positive)
elementwise_unary("sigmoid", G.SigmoidGate, sig, lambda x: sig(x) * (1 - sig(x)), normal)
elementwise_unary("tanh", G.TanhGate, np.tanh, lambda x: 1 - np.tanh(x) ** 2, normal)
elementwise_unary("relu", G.ReluGate, lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0,
                  away_from_zero)


def elementwise_binary(op, make, f, dfx, dfy, xs, ys, both_grow=True):
    for name, sx, sy in [("scalar", (), ()), ("array", (3, 4), (3, 4)),
                         ("broadcast", (3, 4), (4,)), ("broadcast-col", (3, 1), (1, 4)),
                         ("array-scalar", (2, 3), ())]:
        if name == "broadcast-col" and not both_grow:
            continue
        row(f"{op}-{name}", make, [xs(*sx), ys(*sy)],
            lambda x, y, f=f: f(x, y),
            lambda x, y, g, dfx=dfx, dfy=dfy: [
                unbroadcast(np.asarray(g * dfx(x, y)), np.shape(x)).reshape(np.shape(x)),
                unbroadcast(np.asarray(g * dfy(x, y)), np.shape(y)).reshape(np.shape(y))])


one = np.ones_like
elementwise_binary("add", G.AddGate, lambda x, y: x + y, lambda x, y: one(x + y),
                   lambda x, y: one(x + y), normal, normal)
elementwise_binary("sub", G.SubtractGate, lambda x, y: x - y, lambda x, y: one(x + y),
                   lambda x, y: -one(x + y), normal, normal)
elementwise_binary("mul", G.MultiplyGate, lambda x, y: x * y, lambda x, y: y + 0 * x,
                   lambda x, y: x + 0 * y, normal, normal)
elementwise_binary("div", G.DivideGate, lambda x, y: x / y, lambda x, y: 1 / y + 0 * x,
                   lambda x, y: -x / y ** 2, normal, away_from_zero)
elementwise_binary("power", G.PowerGate, lambda x, y: x ** y,
                   lambda x, y: y * x ** (y - 1), lambda x, y: x ** y * np.log(x),
                   positive, normal)
elementwise_binary("mse", G.MSELoss, lambda x, y: np.mean((x - y) ** 2),
                   lambda x, y: 2 * (x - y) / np.size(x - y),
                   lambda x, y: -2 * (x - y) / np.size(x - y), normal, normal, both_grow=False)
for shape in [(), (3, 4), (5,)]:
    xs, ys = distinct_pair(*shape)
    row(f"max-{shape}", G.MaxGate, [xs, ys], np.maximum,
        lambda x, y, g: [g * (x > y), g * (y > x)])

for id, sa, sb in [("mat-mat", (3, 4), (4, 2)), ("vec-mat", (4,), (4, 2)),
                   ("mat-vec", (3, 4), (4,)), ("vec-vec", (4,), (4,)),
                   ("batch-mat", (2, 3, 4), (4, 5)), ("batch-batch", (2, 3, 4), (2, 4, 5)),
                   ("mat-batch", (3, 4), (2, 4, 5))]:
    def mm_grads(a, b, g):
        if a.ndim == 1 and b.ndim == 1:
            return [g * b, g * a]
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = np.asarray(g)
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        ga = g2 @ np.swapaxes(b2, -1, -2)
        gb = np.swapaxes(a2, -1, -2) @ g2
        return [unbroadcast(ga, a2.shape).reshape(a.shape),
                unbroadcast(gb, b2.shape).reshape(b.shape)]
    row(f"matmul-{id}", G.MatMulGate, [normal(*sa), normal(*sb)], np.matmul, mm_grads)

for id, shape in [("matrix", (3, 4)), ("batch", (2, 3, 4))]:
    row(f"transpose-{id}", G.TransposeGate, [normal(*shape)],
        lambda x: np.swapaxes(x, -1, -2), lambda x, g: [np.swapaxes(g, -1, -2)])

for axis in [None, 0, 1, -1, (0, 2)]:
    shape = (2, 3, 4)
    def red_grad(x, g, axis=axis, mean=False):
        n = x.size if axis is None else np.prod([x.shape[a] for a in np.atleast_1d(axis)])
        g = np.asarray(g)
        if axis is not None:
            g = np.expand_dims(g, axis)
        return [np.broadcast_to(g, x.shape) / (n if mean else 1)]
    row(f"sum-axis{axis}", lambda axis=axis: G.SumGate(axis), [normal(*shape)],
        lambda x, axis=axis: np.sum(x, axis=axis), red_grad)
    row(f"mean-axis{axis}", lambda axis=axis: G.MeanGate(axis), [normal(*shape)],
        lambda x, axis=axis: np.mean(x, axis=axis),
        lambda x, g, red_grad=red_grad: red_grad(x, g, mean=True))
row("sum-scalar", G.SumGate, [normal()], lambda x: x, lambda x, g: [g])

for id, zs, ys in [("batch", normal(5, 4), labels(5, 4)), ("single", normal(3), labels(0, 3)),
                   ("large-logits", lambda: rng.normal(size=(4, 3)) * 300, labels(4, 3))]:
    row(f"softmax_ce-{id}", G.SoftmaxCrossEntropy, [zs, ys], ce_value,
        lambda z, y, g: [g * ce_grad(z, y), np.zeros(np.shape(y))], diff=[0])


# ---------------------------------------------------------------- gates of backward passes

def matmul_vjp(a, b, g):
    """The gradients of <g, a @ b> with respect to a and b, written out by cases."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 1 and b.ndim == 1:
        return [g * b, g * a]
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = np.asarray(g)
    if a.ndim == 1:
        g2 = np.expand_dims(g2, -2)
    if b.ndim == 1:
        g2 = np.expand_dims(g2, -1)
    ga = g2 @ np.swapaxes(b2, -1, -2)
    gb = np.swapaxes(a2, -1, -2) @ g2
    return [unbroadcast(ga, a2.shape).reshape(a.shape), unbroadcast(gb, b2.shape).reshape(b.shape)]


def zeros(x):
    return np.zeros(np.shape(x))


for id, su, sx in [("bias", (3, 4), (4,)), ("column", (3, 4), (3, 1)), ("scalar", (2, 3), ()),
                   ("same", (3, 4), (3, 4)), ("lead", (2, 3, 4), (1, 4))]:
    row(f"sum_to-{id}", G.SumToGate, [normal(*su), normal(*sx)],
        lambda u, x: unbroadcast(np.asarray(u), np.shape(x)).reshape(np.shape(x)),
        lambda u, x, g: [np.broadcast_to(g, np.shape(u)), zeros(x)])
    row(f"broadcast_to-{id}", G.BroadcastToGate, [normal(*sx), normal(*su)],
        lambda a, x: np.broadcast_to(a, np.shape(x)),
        lambda a, x, g: [unbroadcast(np.asarray(g), np.shape(a)).reshape(np.shape(a)),
                         zeros(x)])
for axis in [None, 0, -1, (0, 2)]:
    for mean in (False, True):
        shape = (2, 3, 4)
        reduced = np.shape(np.sum(np.zeros(shape), axis=axis))
        n = 24 if axis is None else np.prod([shape[a] for a in np.atleast_1d(axis)])
        k = n if mean else 1

        def expand(u, axis=axis):
            return u if axis is None else np.expand_dims(u, axis)
        row(f"spread-axis{axis}-{'mean' if mean else 'sum'}",
            lambda axis=axis, mean=mean: G.SpreadGate(axis, mean),
            [normal(*reduced), normal(*shape)],
            lambda u, x, expand=expand, k=k: np.broadcast_to(expand(u), np.shape(x)) / k,
            lambda u, x, g, axis=axis, k=k: [np.sum(g, axis=axis) / k, zeros(x)])
for shape in [(3, 4), (5,)]:
    row(f"rowsum-{shape}", G.RowSumGate, [normal(*shape)],
        lambda x: np.sum(x, axis=-1, keepdims=True),
        lambda x, g: [np.broadcast_to(g, np.shape(x))])
    row(f"softmax-{shape}", G.SoftmaxGate, [normal(*shape)], softmax,
        lambda x, g: [softmax(x) * (g - np.sum(softmax(x) * g, axis=-1, keepdims=True))])
elementwise_unary("step", G.StepGate, lambda x: (x > 0) * 1.0, lambda x: 0 * x, away_from_zero)
elementwise_unary("sigmoid_grad", G.SigmoidGradGate, lambda x: sig(x) * (1 - sig(x)),
                  lambda x: sig(x) * (1 - sig(x)) * (1 - 2 * sig(x)), normal)
for shape in [(), (5,)]:
    xs, ys = distinct_pair(*shape)
    row(f"max_mask-{shape}", G.MaxMaskGate, [xs, ys], lambda x, y: (x > y) * 1.0,
        lambda x, y, g: [zeros(x), zeros(y)])
for id, ys, zs in [("batch", labels(5, 4), normal(5, 4)), ("single", labels(0, 3), normal(3))]:
    row(f"one_hot-{id}", G.OneHotGate, [ys, zs],
        lambda y, z: np.eye(np.shape(z)[-1])[np.atleast_1d(y).astype(int)].reshape(np.shape(z)),
        lambda y, z, g: [zeros(y), zeros(z)], diff=[1])
row("seed", G.SeedGate, [normal()], lambda x: 1.0, lambda x, g: [0.0])
for id, sa, sb, so in [("mat-mat", (3, 4), (4, 2), (3, 2)), ("vec-mat", (4,), (4, 2), (2,)),
                       ("mat-vec", (3, 4), (4,), (3,)), ("vec-vec", (4,), (4,), ()),
                       ("batch-mat", (2, 3, 4), (4, 5), (2, 3, 5)),
                       ("mat-batch", (3, 4), (2, 4, 5), (2, 3, 5))]:
    row(f"matmul_grad_a-{id}", G.MatMulGradA, [normal(*so), normal(*sb), normal(*sa)],
        lambda u, b, a: matmul_vjp(a, b, u)[0],
        lambda u, b, a, g: [np.matmul(g, b), matmul_vjp(g, b, u)[1], zeros(a)])
    row(f"matmul_grad_b-{id}", G.MatMulGradB, [normal(*sa), normal(*so), normal(*sb)],
        lambda a, u, b: matmul_vjp(a, b, u)[1],
        lambda a, u, b, g: [matmul_vjp(a, g, u)[0], np.matmul(a, g), zeros(b)])


def covered_ops():
    return {p.values[0]().op for p in ROWS}


def test_every_registered_gate_has_a_row():
    missing = {op for op, cls in G.GATES.items() if cls in G.BUILTIN} - covered_ops()
    assert not missing, f"gates without a row in the table: {sorted(missing)}"


def sample(samplers):
    xs = []
    for s in samplers:
        try:
            xs.append(s())
        except TypeError:
            xs.append(s(xs[0]))
    return xs


def run(make, xs):
    gate = make()
    out = gate.forward(*[np.copy(x) if isinstance(x, np.ndarray) else x for x in xs])
    return gate, out


def numeric_grad(make, xs, k, upstream, eps=1e-6):
    x = np.array(xs[k], dtype=float)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        for sign in (1, -1):
            xp = x.copy()
            xp[idx] += sign * eps
            args = list(xs)
            args[k] = float(xp) if np.ndim(xs[k]) == 0 else xp
            _, out = run(make, args)
            grad[idx] += sign * np.sum(upstream * out) / (2 * eps)
    return grad


@pytest.mark.parametrize("make, samplers, value, grads, diff", ROWS)
def test_value_and_gradient(make, samplers, value, grads, diff):
    xs = sample(samplers)
    gate, out = run(make, xs)
    np.testing.assert_allclose(out, value(*xs), rtol=1e-12, atol=1e-12)
    assert np.shape(out) == np.shape(value(*xs))
    upstream = rng.normal(size=np.shape(out)) if np.ndim(out) else float(rng.normal())
    got = gate.backward(upstream)
    want = grads(*xs, upstream)
    assert len(got) == len(xs)
    for k, (gk, wk) in enumerate(zip(got, want, strict=True)):
        assert np.shape(gk) == np.shape(xs[k]), f"gradient {k} has the wrong shape"
        np.testing.assert_allclose(gk, wk, rtol=1e-10, atol=1e-12)
        if diff is None or k in diff:
            num = numeric_grad(make, xs, k, upstream)
            np.testing.assert_allclose(gk, num, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, samplers, value, grads, diff", ROWS)
def test_jvp_matches_backward_and_differences(make, samplers, value, grads, diff):
    xs = sample(samplers)
    gate, out = run(make, xs)
    tangents = [rng.normal(size=np.shape(x)) if np.ndim(x) else float(rng.normal()) for x in xs]
    for k in range(len(xs)):
        if diff is not None and k not in diff:
            tangents[k] = np.zeros(np.shape(xs[k])) if np.ndim(xs[k]) else 0.0
    out_dot = gate.jvp(*tangents)
    assert np.shape(out_dot) == np.shape(out)
    upstream = rng.normal(size=np.shape(out)) if np.ndim(out) else float(rng.normal())
    # <u, J t> = <J^T u, t>
    lhs = np.sum(upstream * out_dot)
    rhs = sum(np.sum(gk * tk)
              for gk, tk in zip(gate.backward(upstream), tangents, strict=True))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    eps = 1e-6
    plus = run(make, [x + eps * t for x, t in zip(xs, tangents, strict=True)])[1]
    minus = run(make, [x - eps * t for x, t in zip(xs, tangents, strict=True)])[1]
    np.testing.assert_allclose(out_dot, (np.asarray(plus) - minus) / (2 * eps),
                               rtol=1e-5, atol=1e-6)


def test_scalars_stay_python_floats():
    for make, args in [(G.SigmoidGate, [0.3]), (G.AddGate, [1.0, 2.0]),
                       (G.MultiplyGate, [1.0, 2.0]), (G.ExpGate, [1.0]), (G.LogGate, [2.0]),
                       (G.MaxGate, [1.0, 2.0]),
                       (G.TanhGate, [1.0]), (G.ReluGate, [1.0]), (G.DivideGate, [1.0, 2.0])]:
        gate = make()
        assert type(gate.forward(*args)) is float
        assert all(type(d) is float for d in gate.backward(1.0))


# ---------------------------------------------------------------- conventions at kinks

def test_max_tie_splits_the_gradient_equally():
    gate = G.MaxGate()
    assert gate.forward(2.0, 2.0) == 2.0
    assert gate.backward(1.0) == (0.5, 0.5)
    gate.forward(np.array([1.0, 3.0, 2.0]), np.array([1.0, 2.0, 5.0]))
    gx, gy = gate.backward(np.ones(3))
    np.testing.assert_array_equal(gx, [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(gy, [0.5, 0.0, 1.0])


def test_max_routes_the_gradient_to_the_larger_input():
    gate = G.MaxGate()
    gate.forward(4.0, -1.0)
    assert gate.backward(3.0) == (3.0, 0.0)
    gate.forward(-4.0, -1.0)
    assert gate.backward(3.0) == (0.0, 3.0)


def test_relu_passes_no_gradient_at_zero():
    gate = G.ReluGate()
    assert gate.forward(0.0) == 0.0
    assert gate.backward(1.0) == (0.0,)
    gate.forward(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(gate.backward(np.ones(3))[0], [0.0, 0.0, 1.0])


# ---------------------------------------------------------------- numerical stability

@pytest.mark.parametrize("x", [1000.0, -1000.0, 710.0, -745.5])
def test_sigmoid_is_stable(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gate = G.SigmoidGate()
        s = gate.forward(x)
        (d,) = gate.backward(1.0)
        assert math.isfinite(s) and math.isfinite(d)
        assert s == (1.0 if x > 0 else pytest.approx(0.0, abs=1e-300))
        s_arr = gate.forward(np.array([x, -x, 0.0]))
        (d_arr,) = gate.backward(np.ones(3))
        assert np.all(np.isfinite(s_arr)) and np.all(np.isfinite(d_arr))
        np.testing.assert_allclose(s_arr[2], 0.5)


def test_sigmoid_keeps_tiny_values():
    assert G.SigmoidGate().forward(-40.0) == pytest.approx(math.exp(-40.0), rel=1e-12)
    tiny = G.SigmoidGate().forward(np.array([-40.0]))[0]
    assert tiny == pytest.approx(math.exp(-40.0), rel=1e-12)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gate = G.SoftmaxCrossEntropy()
        z = np.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 0.0]])
        loss = gate.forward(z, np.array([0, 0]))
        assert loss == pytest.approx(1000.0)    # row 1 is right, row 2 is off by 2000 / 2
        (d, _) = gate.backward(1.0)
        assert np.all(np.isfinite(d))
        np.testing.assert_allclose(d.sum(axis=1), 0.0, atol=1e-12)


def test_scalar_overflow_follows_numpy_not_python():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert G.ExpGate().forward(1000.0) == math.inf
        assert G.PowGate(2).forward(1e300) == math.inf
        assert math.isnan(G.PowGate(0.5).forward(-4.0))
        assert G.LogGate().forward(0.0) == -math.inf
        assert math.isnan(G.LogGate().forward(-1.0))
        assert G.DivideGate().forward(1.0, 0.0) == math.inf
        assert G.DivideGate().forward(-1.0, 0.0) == -math.inf


def test_softmax_cross_entropy_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels must be integer classes"):
        G.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels must be integer classes"):
        G.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array([0.5, 1]))
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        G.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array([0, 1, 2]))


def test_softmax_cross_entropy_rejects_negative_nan_and_infinite_labels():
    for bad in ([0, -1], [-0.5, 1.0], [np.nan, 0.0], [np.inf, 0.0], [2.0, -np.inf]):
        with pytest.raises(ValueError, match="labels must be integer classes"):
            G.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array(bad))


def _ce_closed_form(z, y):
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    onehot = np.zeros_like(p)
    onehot[rows, y] = 1.0
    return -np.log(p[rows, y]).mean(), (p - onehot) / len(y)


def test_softmax_cross_entropy_of_strided_logits_and_changing_batches():
    # the gate indexes labels as offsets into the flattened logits: logits laid out in
    # Fortran order or as a transposed view, and batches of another size on the same
    # gate, still pick each row's own label
    rng = np.random.default_rng(3)
    gate = G.SoftmaxCrossEntropy()
    for z in (np.asfortranarray(rng.normal(size=(6, 4))), rng.normal(size=(4, 6)).T,
              rng.normal(size=(3, 4)), rng.normal(size=(6, 4))[::2]):
        y = rng.integers(0, 4, len(z))
        want_loss, want_d = _ce_closed_form(z, y)
        assert gate.forward(z, y.astype(float)) == pytest.approx(want_loss, rel=1e-12)
        d, dy = gate.backward(0.5)
        np.testing.assert_allclose(d, 0.5 * want_d, rtol=1e-12, atol=1e-15)
        assert d.shape == z.shape and np.array_equal(dy, np.zeros(len(z)))
        # a second backward of the same forward gives the same gradient
        np.testing.assert_array_equal(gate.backward(0.5)[0], d)


def test_add_hands_a_bias_the_sum_of_its_rows_in_its_own_dtype():
    gate = G.AddGate()
    x = np.ones((5, 3))
    for b in (np.arange(3.0), np.arange(3, dtype=np.float32), np.arange(3.0)[None, :]):
        gate.forward(x, b)
        up = np.arange(15.0).reshape(5, 3)
        gx, gb = gate.backward(up)
        assert gx.shape == x.shape and gb.shape == b.shape and gb.dtype == b.dtype
        np.testing.assert_array_equal(gx, up)
        np.testing.assert_allclose(gb, up.sum(axis=0).reshape(b.shape))


def test_config_rebuilds_each_gate():
    for op, cls in G.GATES.items():
        gate = cls(**{"p": 3.0} if op == "pow" else {})
        assert type(cls(**gate.config())) is cls
    assert G.SpreadGate((0, 2), mean=True).config() == {"axis": [0, 2], "mean": True}
    assert G.SumGate((0, 1)).config() == {"axis": [0, 1]}
    assert G.PowGate(3).config() == {"p": 3.0}


@pytest.mark.parametrize("make, samplers, value, grads, diff", ROWS)
def test_a_plan_runs_every_gate_as_its_methods_do(make, samplers, value, grads, diff):
    # one gate in a graph, run by the plan (generated code or the loops, by the module's
    # plan_runner) against the gate's own methods: the same values, bit for bit
    from graphengine import ComputationalGraph
    from graphengine.plan import as_value

    xs = [as_value(x, "x") for x in sample(samplers)]
    g = ComputationalGraph()
    node = g.apply(make(), *[g.input(f"i{k}") for k in range(len(xs))])
    feed = {f"i{k}": np.copy(x) if isinstance(x, np.ndarray) else x for k, x in enumerate(xs)}
    gate, out = run(make, xs)
    upstream = rng.normal(size=np.shape(out)).astype(np.result_type(out)) if np.ndim(out) \
        else float(rng.normal())
    want = gate.backward(np.copy(upstream) if np.ndim(out) else upstream)
    for _ in range(2):                       # the first run and a rerun of the same plan
        got = g.forward(feed)
        assert type(got) is type(out) and np.array_equal(got, out, equal_nan=True)
        grads_ = g.backward(upstream)
        for k, wk in enumerate(want):
            gk = grads_[f"i{k}"]
            wk = G.zeros_like(xs[k]) if wk is None else wk
            assert np.shape(gk) == np.shape(xs[k]) and np.result_type(gk) == np.result_type(wk)
            assert np.array_equal(gk, wk, equal_nan=True), (k, gk, wk)
        assert node.value is not None
