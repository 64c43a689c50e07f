"""Property tests: random DAGs of gates, checked against HIPS autograd as an oracle.

Each example is a DAG of 5 to 60 gates over 2 to 6 leaves (inputs and parameters,
scalars and small arrays) with fan-out and reuse (``x * x``). Its gradients from
backward must agree with autograd's on the same expression (built by walking the
plan's gates), with gradcheck, with the Jacobian in both modes, and, on scalar graphs
with few paths, with the sum over paths. Domains keep every function smooth: log
only of ``u*u + 1`` or of a sigmoid, division only by values away from 0, exp and
power only where they stay small.
"""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import graphengine as ge
from graphengine import gates as G
from graphengine.derivatives import count_paths

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")

SHAPES = [(), (3,), (2, 3)]
BOUND = 20.0            # values beyond this are squashed by tanh, to keep derivatives tame


def _sigmoid(x):
    return 1.0 / (1.0 + anp.exp(-x))


def _cross_entropy(z, labels):
    idx = np.asarray(labels, dtype=int)
    shifted = z - anp.max(z, axis=1, keepdims=True)
    logp = shifted - anp.log(anp.sum(anp.exp(shifted), axis=1, keepdims=True))
    return -anp.mean(logp[np.arange(len(idx)), idx])


# the oracle: each built-in gate class as an autograd.numpy expression
ORACLE = {
    G.AddGate: lambda gate, a, b: a + b,
    G.SubtractGate: lambda gate, a, b: a - b,
    G.MultiplyGate: lambda gate, a, b: a * b,
    G.DivideGate: lambda gate, a, b: a / b,
    G.MaxGate: lambda gate, a, b: anp.maximum(a, b),
    G.PowerGate: lambda gate, a, b: anp.power(a, b),
    G.NegateGate: lambda gate, a: -a,
    G.PowGate: lambda gate, a: a ** gate.p,
    G.ExpGate: lambda gate, a: anp.exp(a),
    G.LogGate: lambda gate, a: anp.log(a),
    G.SigmoidGate: lambda gate, a: _sigmoid(a),
    G.TanhGate: lambda gate, a: anp.tanh(a),
    G.ReluGate: lambda gate, a: anp.maximum(a, 0.0),
    G.MatMulGate: lambda gate, a, b: anp.matmul(a, b),
    G.SumGate: lambda gate, a: anp.sum(a, axis=gate.axis),
    G.MeanGate: lambda gate, a: anp.mean(a, axis=gate.axis),
    G.MSELoss: lambda gate, a, b: anp.mean((a - b) ** 2),
    G.SoftmaxCrossEntropy: lambda gate, z, labels: _cross_entropy(z, labels),
}


def oracle_function(g, r):
    """The graph's output (dotted with r when it is an array) as a function of the
    list of its input and parameter values, written in autograd.numpy."""
    plan = g.plan()
    leaves = [slot for slot, _ in plan.inputs] + [
        slot for slot, attrs in plan.stored if attrs["kind"] == "parameter"]
    constants = [(slot, attrs["value"]) for slot, attrs in plan.stored
                 if attrs["kind"] == "constant"]

    def f(values):
        env = [None] * len(plan.names)
        for slot, v in zip(leaves, values, strict=True):
            env[slot] = v
        for slot, v in constants:
            env[slot] = v
        for gate, ins, out in plan.gates:
            env[out] = ORACLE[type(gate)](gate, *[env[i] for i in ins])
        out = env[plan.out]
        return out if r is None else anp.sum(out * r)

    return f, [plan.names[s] for s in leaves]


# ---------------------------------------------------------------- random DAGs

def _safe(v):
    return bool(np.all(np.isfinite(v))) and float(np.max(np.abs(v))) <= BOUND


def _away_from_zero(v, margin=0.3):
    return float(np.min(np.abs(v))) >= margin


def _shape_fits(*vals):
    try:
        np.broadcast_shapes(*[np.shape(v) for v in vals])
    except ValueError:
        return False
    return True


UNARY_OPS = ["neg", "exp", "sigmoid", "tanh", "relu", "pow2", "pow3", "sqrt", "log_sq",
             "log_sigmoid", "sum", "mean", "sum0", "scale"]
BINARY_OPS = ["add", "sub", "mul", "div", "max", "power", "dot", "mse", "cross_entropy"]


def _apply(g, op, a, b, av, bv, c):
    """Add op's gate(s) to g on nodes a, b (values av, bv), or None when op does not
    fit these inputs. Returns the new node."""
    if op == "neg":
        return g.neg(a)
    if op == "exp":
        return g.exp(a) if np.max(av) <= 2.0 else None
    if op == "sigmoid":
        return g.sigmoid(a)
    if op == "tanh":
        return g.tanh(a)
    if op == "relu":
        return g.relu(a) if _away_from_zero(av, 1e-3) else None
    if op == "pow2":
        return g.pow(a, 2)
    if op == "pow3":
        return g.pow(a, 3) if np.max(np.abs(av)) <= 2.5 else None
    if op == "sqrt":
        return g.pow(a, 0.5) if np.min(av) >= 0.3 else None
    if op == "log_sq":
        return g.log(a * a + 1.0)
    if op == "log_sigmoid":
        return g.log(g.sigmoid(a))
    if op == "sum":
        return g.sum(a)
    if op == "mean":
        return g.mean(a)
    if op == "sum0":
        return g.sum(a, axis=0) if np.ndim(av) >= 1 else None
    if op == "scale":
        return a * c
    if not _shape_fits(av, bv):
        return None
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / b if _away_from_zero(bv) else None
    if op == "max":
        return g.max(a, b)
    if op == "power":
        ok = np.min(av) >= 0.3 and np.max(np.abs(bv)) <= 2.0
        return g.power(a, b) if ok else None
    if op == "dot":
        return g.matmul(a, b) if np.shape(av) == np.shape(bv) == (3,) else None
    if op == "mse":
        return g.mse(a, b)
    if op == "cross_entropy":
        if np.shape(av) != (2, 3):
            return None
        return g.softmax_cross_entropy(a, g.constant(np.array([0.0, 2.0])))
    raise AssertionError(op)


@st.composite
def random_dags(draw, min_gates=5, max_gates=60):
    n_leaves = draw(st.integers(2, 6))
    # one step adds at most 5 gates and one node nothing uses yet; joining those
    # nodes at the end adds the rest, so the final count stays within the bounds
    n_gates = draw(st.integers(min_gates, max_gates - 5))
    shape = draw(st.sampled_from(SHAPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    g = ge.ComputationalGraph()
    feed, nodes = {}, []
    for k in range(n_leaves):
        leaf_shape = shape if draw(st.booleans()) else SHAPES[SHAPES.index(shape) // 2]
        value = rng.uniform(0.3, 1.5, leaf_shape) * rng.choice([-1.0, 1.0], leaf_shape)
        value = float(value) if leaf_shape == () else value
        if draw(st.booleans()):
            node = g.input(f"x{k}")
            feed[node.name] = value
        else:
            node = g.parameter(f"w{k}", value)
        nodes.append(node)
    values = {n.name: feed[n.name] if n.kind == "input" else n.value for n in nodes}

    def pick():
        recent = draw(st.booleans())
        if recent:
            return nodes[-1 - draw(st.integers(0, min(len(nodes), 4) - 1))]
        return nodes[draw(st.integers(0, len(nodes) - 1))]

    def sinks():
        return [n.name for n in g if g.dag.out_degree(n.name) == 0]

    def final_gate_count():
        return sum(1 for n in g if n.kind == "gate") + len(sinks()) - 1

    while final_gate_count() < n_gates:
        op = draw(st.sampled_from(UNARY_OPS + BINARY_OPS))
        a = pick()
        b = a if draw(st.integers(0, 4)) == 0 else pick()      # reuse: x * x
        c = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0))
        node = _apply(g, op, a, b, values[a.name], values[b.name], c)
        event("fallback to tanh" if node is None else f"op {op}")
        node = g.tanh(a) if node is None else node
        g.set_output(node)
        value = g.forward(feed)
        assert np.all(np.isfinite(value)), (op, value)
        if not _safe(value):          # squash an overlarge result
            node = g.tanh(g.mul(node, 1.0 / float(np.max(np.abs(value)))))
            g.set_output(node)
            value = g.forward(feed)
        values[node.name] = value
        nodes.append(node)
    # join every node nothing uses (and unused leaves) into the output
    ends = sinks()
    out = g[ends[0]]
    for name in ends[1:]:
        out = g.add(out, g[name])
    g.set_output(out)
    return g, feed


# ---------------------------------------------------------------- the properties

CHECKED = {"graphs": 0, "kinks": 0, "path_sums": 0}


def check_graph(g, feed):
    out = g.forward(feed)
    rng = np.random.default_rng(0)
    r = None if np.shape(out) == () else rng.standard_normal(np.shape(out))
    grads = g.backward(None if r is None else r)

    # the oracle: the same expression in autograd
    f, names = oracle_function(g, r)
    leaf_values = [feed[n] if n in feed else g[n].value for n in names]
    expected_out = f(leaf_values) if r is None else None
    if expected_out is not None:
        assert np.allclose(expected_out, out, rtol=1e-12, atol=1e-12)
    expected = grad(f)(leaf_values)
    for name, want in zip(names, expected, strict=True):
        assert np.shape(grads[name]) == np.shape(want)
        assert np.allclose(grads[name], want, rtol=1e-9, atol=1e-12), name

    # central differences, forward against reverse mode
    report = ge.gradcheck(g, feed)
    assert report or report.warnings, str(report)
    assert report.modes is not None and report.modes[2], str(report)
    CHECKED["kinks"] += bool(report.warnings)

    # Jacobians in both modes, contracted with the seed, give backward's gradients
    rev = g.jacobian()
    fwd = g.jacobian(mode="forward")
    assert list(rev) == list(fwd)
    for name in rev:
        assert np.allclose(rev[name], fwd[name], rtol=1e-10, atol=1e-12), name
        contracted = rev[name] if r is None else np.tensordot(r, rev[name], axes=r.ndim)
        assert np.allclose(contracted, grads[name], rtol=1e-10, atol=1e-12), name

    # the sum over paths, where the graph is scalar and the paths are few
    if all(np.shape(n.value) == () for n in g):
        for name in rev:
            if count_paths(g, name) <= 2000:
                total, terms = g.path_gradient(name, limit=2000)
                assert len(terms) == count_paths(g, name)
                assert np.isclose(total, grads[name], rtol=1e-9, atol=1e-12), name
                CHECKED["path_sums"] += 1
    CHECKED["graphs"] += 1


FAST = settings(max_examples=60, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(random_dags())
def test_random_dags_agree_with_autograd_and_every_route(case):
    check_graph(*case)


@FAST
@given(random_dags(max_gates=15))
def test_small_random_dags_agree_with_autograd_and_every_route(case):
    check_graph(*case)


@pytest.mark.slow
@settings(max_examples=2000, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_dags())
def test_many_random_dags_agree_with_autograd_and_every_route(case):
    check_graph(*case)


def test_the_generator_covers_every_oracle_gate():
    # a strategy that never builds a gate proves nothing about it: every gate class
    # of the oracle table must turn up in the generated graphs
    seen, sizes = {}, []

    @settings(max_examples=200, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(random_dags())
    def collect(case):
        for n in case[0]:
            if n.kind == "gate":
                seen[type(n.gate)] = seen.get(type(n.gate), 0) + 1
        leaves = [n for n in case[0] if n.kind in ("input", "parameter")]
        assert 2 <= len(leaves) <= 6
        assert 5 <= sum(n.kind == "gate" for n in case[0]) <= 60
        sizes.append(sum(n.kind == "gate" for n in case[0]))

    collect()
    assert [cls.__name__ for cls in ORACLE if cls not in seen] == []
    assert min(sizes) <= 10 and max(sizes) >= 50
