"""Generated plan code: the same results and errors as the plan's loops, on both sides
of its size bound and its run threshold, with no user text in its source."""

import re

import numpy as np
import pytest

import graphengine as ge
from graphengine import ComputationalGraph, Gate, GraphError, codegen


class Boom(Gate):
    """A user's gate that fails in the pass it is told to."""

    def __init__(self, where):
        self.where = where

    def forward(self, x):
        if self.where == "forward":
            raise ValueError("boom in forward")
        self.x = x
        return x * 2.0

    def backward(self, upstream):
        if self.where == "backward":
            raise ValueError("boom in backward")
        return (upstream * 2.0,)


def chain(n):
    g = ComputationalGraph()
    x = g.input("x")
    w = g.parameter("w", np.array([[0.5, -1.0], [2.0, 0.25]]))
    h = x
    for k in range(n):
        h = g.sigmoid(h) if k % 2 else h @ w
    return g


def run(g, feed, seed=None):
    out = g.forward(feed)
    grads = g.backward(seed)
    return out, grads


def same(a, b):
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        for u, v in zip(a, b, strict=True):
            same(u, v)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b or (a != a and b != b)


def generated(plan, key="forward"):
    return (plan._code or {}).get(key)


@pytest.mark.parametrize("n", [3, 4])
def test_plans_up_to_max_steps_are_generated_and_longer_ones_run_the_loops(n, monkeypatch):
    monkeypatch.setattr(codegen, "MAX_STEPS", 3)
    feed = {"x": np.array([[1.0, 2.0], [-3.0, 0.5]])}
    g = chain(n)
    got = run(g, feed)
    if n <= 3:
        assert callable(generated(g.plan())) and callable(generated(g.plan(), None))
    else:
        assert generated(g.plan()) is False and generated(g.plan(), None) is False
    monkeypatch.setattr(codegen, "MAX_STEPS", -1)             # the loops
    same(got, run(chain(n), feed))


def test_a_plan_is_generated_after_it_has_run_hot_times(monkeypatch):
    monkeypatch.setattr(codegen, "HOT", 2)
    g = chain(3)
    feeds = [{"x": np.full((2, 2), k / 3)} for k in range(4)]
    results = []
    for k, feed in enumerate(feeds):
        results.append(run(g, feed))
        assert callable(generated(g.plan())) == (k >= 2)
    monkeypatch.setattr(codegen, "MAX_STEPS", -1)
    h = chain(3)
    for feed, got in zip(feeds, results, strict=True):
        same(got, run(h, feed))


def test_a_plan_is_written_only_once_its_loops_took_as_long_as_writing_it(monkeypatch):
    monkeypatch.setattr(codegen, "COST", 1.0)        # a second a step: never, here
    g = chain(3)
    feed = {"x": np.ones((2, 2))}
    for _ in range(10):
        run(g, feed)
    assert generated(g.plan()) is None and generated(g.plan(), None) is None
    spent = min(g.plan()._spent["forward"], g.plan()._spent[None])
    assert 0.0 < spent < 1.0
    monkeypatch.setattr(codegen, "COST", spent / 3 / 2)   # half the time its loops took
    run(g, feed)
    assert callable(generated(g.plan())) and callable(generated(g.plan(), None))


def test_generated_source_holds_slots_not_user_text():
    g = ComputationalGraph()
    x = g.input("x'); import os; os.remove('z") # noqa: F841 (the name is the point)
    w = g.parameter("\n__import__('os')\n", np.ones(2))
    y = g.apply(Boom("nowhere"), x * w, name="\"\"\"; raise SystemExit; \"\"\"")
    g.sum(g.sigmoid(y) + 1.0, name="loss")
    g.forward({"x'); import os; os.remove('z": np.arange(2.0)})
    g.backward()
    plan = g.plan()
    sources = [fn.source for fn in (generated(plan), generated(plan, None))]
    for name in plan.names:
        for source in sources:
            assert name not in source
    for source in sources:
        # the only string literals: a dtype kind and numpy's memory order
        assert set(re.findall(r"'[^']*'|\"[^\"]*\"", source)) <= {"'f'", "'C'"}


def failure(g, feed, where):
    try:
        g.forward(feed)
        g.backward()
    except GraphError as exc:
        return str(exc)
    raise AssertionError("no error")


@pytest.mark.parametrize("where", ["forward", "backward", "shapes"])
def test_a_failing_step_is_named_as_the_loops_name_it(where, monkeypatch):
    def build():
        g = ComputationalGraph()
        x = g.input("x")
        if where == "shapes":                 # a built-in gate: matmul of the wrong shapes
            h = g.matmul(g.sigmoid(x), g.parameter("w", np.ones((3, 2))), name="mm")
        else:
            h = g.apply(Boom(where), g.sigmoid(x), name="boom")
        g.sum(h * 3.0, name="loss")
        return g

    feed = {"x": np.ones((2, 2))}
    message = failure(build(), feed, where)
    assert ("'mm' (@) failed in forward on inputs" in message if where == "shapes"
            else f"'boom' (Boom) failed in {where}" in message)
    monkeypatch.setattr(codegen, "MAX_STEPS", -1)
    assert failure(build(), feed, where) == message
    g = build()                               # the graph stays usable after a failure
    monkeypatch.setattr(codegen, "MAX_STEPS", 256)
    assert failure(g, feed, where) == message
    if where == "shapes":
        assert g.forward({"x": np.ones((2, 3))}).__class__ is float and g.backward()
    elif where == "backward":
        assert g.forward(feed) == pytest.approx(24 / (1 + np.exp(-1.0)))


def classifier(seed=0):
    g = ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [4, 5, 3], seed=seed)
    g.softmax_cross_entropy(logits, g.input("y"), name="loss")
    return g


def batches(k):
    rng = np.random.default_rng(k)
    return {"x": rng.normal(size=(6, 4)), "y": rng.integers(0, 3, size=6).astype(float)}


def test_compile_step_runs_one_generated_step_as_forward_backward_and_step():
    a, b = classifier(), classifier()
    opt_a = ge.optim.SGD(a.parameters(), lr=0.5)
    opt_b = ge.optim.SGD(b.parameters(), lr=0.5)
    step = ge.train.compile_step(a, opt_a)
    for k in range(4):
        feed = batches(k)
        if k == 2:                           # labels as ints: the checking path, same step
            feed["y"] = feed["y"].astype(int)
        assert step(feed) == b.forward(feed)
        full = b.backward()
        opt_b.step()
        for p in a.parameters():
            np.testing.assert_array_equal(p.value, b[p.name].value)
            np.testing.assert_array_equal(p.grad, full[p.name])
        for n in a:
            same(n.value, b[n.name].value)
    assert any(isinstance(key, tuple) and key[0] == "step" and fn
               for key, fn in a.plan()._code.items())


def test_compile_step_errors_from_its_generated_step_are_forward_s():
    g = classifier()
    step = ge.train.compile_step(g, ge.optim.SGD(g.parameters(), lr=0.1))
    step(batches(0))
    step(batches(1))                          # the generated step from here on
    with pytest.raises(GraphError, match="input 'y' needs a value"):
        step({"x": batches(2)["x"]})
    bad = batches(2)
    bad["y"][0] = 7.0
    with pytest.raises(GraphError, match=r"node 'loss' \(CE\) failed in forward .*labels must"):
        step(bad)
    assert g["loss"].value is None            # a failed forward leaves no values
    w1 = g["W1"].value.copy()
    assert step(batches(3)) > 0 and not np.array_equal(g["W1"].value, w1)

    h = ComputationalGraph()                  # a failing backward keeps the forward's values
    w = h.parameter("w", np.ones(2))
    h.sum(h.apply(Boom("backward"), w * h.input("x"), name="boom"), name="loss")
    step = ge.train.compile_step(h, ge.optim.SGD([w], lr=0.1))
    h.forward(x=np.ones(2))
    with pytest.raises(GraphError, match=r"node 'boom' \(Boom\) failed in backward"):
        step({"x": np.ones(2)})
    assert h["loss"].value == 4.0 and w.value.tolist() == [1.0, 1.0]

    v = ComputationalGraph()                  # not a scalar loss
    u = v.parameter("u", np.ones(3))
    u * v.input("x")
    step = ge.train.compile_step(v, ge.optim.SGD([u], lr=0.1))
    v.forward(x=np.ones(3))
    with pytest.raises(GraphError, match="must be a scalar loss, got shape"):
        step({"x": np.ones(3)})


def test_a_step_from_the_run_rechecks_a_parameter_changed_since_backward():
    g = classifier()
    opt = ge.optim.SGD(g.parameters(), lr=0.1)
    g.forward(batches(0))
    g.backward()
    g["b1"].value = np.zeros(5)               # a new array of the same shape: updated
    opt.step()
    assert np.all(g["b1"].value != 0.0)
    g.forward(batches(1))
    g.backward()
    g["b1"].value = np.zeros(4)
    with pytest.raises(GraphError, match=r"parameter 'b1' has shape \(5,\), expected the "
                                         r"parameter's shape \(4,\)"):
        opt.step()
    g["b1"].value = np.zeros(5)
    g.forward(batches(2))
    g.backward()
    g["W2"].value.flags.writeable = False
    with pytest.raises(GraphError, match=r"parameter 'W2' holds a read-only array"):
        opt.step()


@pytest.mark.parametrize("bound", [12, 11])
def test_a_training_step_is_generated_up_to_max_steps_of_both_passes(bound, monkeypatch):
    # the classifier's step: 6 forward steps and 6 backward steps pruned to the parameters
    monkeypatch.setattr(codegen, "MAX_STEPS", bound)
    g = classifier()
    step = ge.train.compile_step(g, ge.optim.SGD(g.parameters(), lr=0.5))
    losses = [step(batches(k)) for k in range(3)]
    plan = g.plan()
    assert len(plan.steps) == 6 and len(plan.pruned(tuple(sorted(
        plan.slot[p.name] for p in g.parameters())))) == 6
    (fused,) = [fn for key, fn in plan._code.items() if isinstance(key, tuple)
                and key[0] == "step"]
    assert callable(fused) if bound == 12 else fused is False
    monkeypatch.setattr(codegen, "MAX_STEPS", -1)
    h = classifier()
    step = ge.train.compile_step(h, ge.optim.SGD(h.parameters(), lr=0.5))
    assert losses == [step(batches(k)) for k in range(3)]


def counted_special_steps(monkeypatch):
    """Counts the calls of every specialised step compile_step gets from codegen."""
    made = []
    real = codegen.special_step

    def special_step(plan, wrt, feed, guarded):
        fn = real(plan, wrt, feed, guarded)
        if not fn:
            made.append(None)
            return fn

        def counted(vals, feed, run):
            calls[0] += 1
            return fn(vals, feed, run)
        calls = [0]
        made.append(calls)
        return counted

    monkeypatch.setattr(codegen, "special_step", special_step)
    return made


def test_a_step_specialised_to_its_shapes_equals_the_loops_and_leaves_any_other(monkeypatch):
    made = counted_special_steps(monkeypatch)
    feeds = [batches(k) for k in range(7)]
    feeds[3] = {"x": feeds[3]["x"][:4], "y": feeds[3]["y"][:4]}       # another batch size
    feeds[4]["y"] = feeds[4]["y"].astype(int)                         # labels to convert
    feeds[5] = {"x": feeds[5]["x"].astype(np.float32), "y": feeds[5]["y"]}   # float32 data
    results = []
    for runner in ("generated", "loops"):
        if runner == "loops":
            monkeypatch.setattr(codegen, "MAX_STEPS", -1)
        g = classifier()
        step = ge.train.compile_step(g, ge.optim.SGD(g.parameters(), lr=0.5))
        losses = []
        for k, feed in enumerate(feeds):
            if k == 6:                        # a parameter given a new array of its shape
                g["b2"].value = np.full(3, 0.1)
            losses.append(step(feed))
        results.append((losses, [g[n.name].value for n in g], [p.grad for p in g.parameters()]))
    same(results[0], results[1])
    (calls,) = made                           # one specialised step, for the first shapes
    assert calls[0] == 6                      # every step but the first (a forward first)


def test_no_step_is_specialised_for_a_users_gate_or_a_float32_network(monkeypatch):
    made = counted_special_steps(monkeypatch)
    g = ComputationalGraph()
    w = g.parameter("w", np.ones((2, 2)))
    g.sum(g.apply(Boom("nowhere"), g.input("x") @ w), name="loss")
    step = ge.train.compile_step(g, ge.optim.SGD([w], lr=0.1))
    h = ComputationalGraph()
    logits = ge.nn.mlp(h, h.input("x"), [4, 5, 3])
    for p in h.parameters():
        p.value = p.value.astype(np.float32)
    h.softmax_cross_entropy(logits, h.input("y"))
    step2 = ge.train.compile_step(h, ge.optim.SGD(h.parameters(), lr=0.1))
    for k in range(3):
        step({"x": np.full((3, 2), k + 1.0)})
        feed = batches(k)
        step2({"x": feed["x"].astype(np.float32), "y": feed["y"]})
    assert made == [None, None]
    assert h["W1"].value.dtype == np.float32
