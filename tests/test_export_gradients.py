"""Gradient graphs carried to other engines: every gate ge.grad adds exports to torch
(values and gradients equal graphengine's) and to ONNX (onnxruntime's values equal),
and the gradient graphs of the circuit, the 2-2-1 network, a small MLP's loss and
random graphs do too: torch's autograd of an exported gradient graph gives the
Hessian's rows, and from_onnx reads the exported model back."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from interchange_graphs import circuit, need, net_221, random_dags, seed_for

import graphengine as ge
from graphengine import ComputationalGraph, export
from graphengine import gates as G

torch = need("torch")
onnx = need("onnx")
ort = need("onnxruntime")

RNG = np.random.default_rng(7)


def run_onnx(model, feed):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    dtypes = {"tensor(double)": np.float64, "tensor(float)": np.float32,
              "tensor(int64)": np.int64}
    args = {i.name: np.asarray(feed[i.name], dtype=dtypes[i.type])
            for i in session.get_inputs()}
    (out,) = session.run(None, args)
    return out


def torch_run(g, feed):
    """The exported module's output and its inputs and parameters, as tensors."""
    m = export.to_torch(g)
    inputs = {k: torch.tensor(np.asarray(v), dtype=m.dtype, requires_grad=True)
              for k, v in feed.items() if k in m.input_names}
    return m, inputs, m(**inputs)


def torch_grads(m, inputs, t_out, r):
    """d<r, out>/d leaf for every leaf, zeros where torch sees no dependence."""
    leaves = list(dict(m.named_parameters()).items()) + list(inputs.items())
    if not t_out.requires_grad:       # masks only: no derivative anywhere
        return {k: np.zeros(t.shape) for k, t in leaves}
    seed = torch.ones(()) if r is None else torch.tensor(r, dtype=m.dtype)
    got = torch.autograd.grad(t_out, [t for _, t in leaves], seed, allow_unused=True)
    return {k: np.zeros(t.shape) if d is None else d.numpy()
            for (k, t), d in zip(leaves, got, strict=True)}


def check_both(g, feed, rtol=1e-10, atol=1e-12):
    """graphengine, torch (values and gradients) and onnxruntime (values) agree."""
    out = g.forward(feed)
    r = seed_for(out)
    grads = g.backward(r)
    m, inputs, t_out = torch_run(g, feed)
    np.testing.assert_allclose(t_out.detach().numpy(), out, rtol=rtol, atol=atol)
    for name, got in torch_grads(m, inputs, t_out, r).items():
        np.testing.assert_allclose(got, grads[name], rtol=rtol, atol=atol, err_msg=name)
    model = export.to_onnx(g, feed)
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(run_onnx(model, feed), out, rtol=rtol, atol=atol)
    # and back: from_onnx reads it into gates with the same values and gradients
    h, back = read_back(model, feed, r)
    np.testing.assert_allclose(h.run.values_for(h.plan())[h.plan().out], out, rtol=rtol,
                               atol=atol)
    for name in back:
        if name in grads:
            np.testing.assert_allclose(back[name], grads[name], rtol=rtol, atol=atol,
                                       err_msg=f"{name} after from_onnx")
    return out, model


def read_back(model, feed, r):
    """from_onnx of ``model``, run forward and backward (seeded with ``r``)."""
    h = ComputationalGraph.from_onnx(model.SerializeToString())
    h.forward({k: v for k, v in feed.items() if k in h})
    return h, h.backward(r)


# ---------------------------------------------------------------- gate by gate

def _gate(op, *shapes, values=None, const=None, **config):
    """A graph applying gate ``op`` to inputs of ``shapes`` (``const``: the i-th
    input is that constant instead)."""
    def make():
        g = ComputationalGraph()
        feed, nodes = {}, []
        for k, shape in enumerate(shapes):
            if const is not None and k in const:
                nodes.append(g.constant(const[k], name=f"c{k}"))
                continue
            v = values[k] if values is not None and values[k] is not None else \
                RNG.standard_normal(shape)
            v = float(v) if np.shape(v) == () else np.asarray(v, dtype=float)
            nodes.append(g.input(f"x{k}"))
            feed[f"x{k}"] = v
        g.apply(G.GATES[op](**config), *nodes, name="out")
        return g, feed
    make.__name__ = f"{op}{config or ''}{shapes}"
    return make


TIES = np.array([[0.0, 1.0, -2.0], [3.0, 0.0, 0.5]])
CASES = [
    _gate("sum_to", (4, 2, 3), (2, 1)), _gate("sum_to", (3,), ()),
    _gate("sum_to", (2, 3), (2, 3)), _gate("sum_to", (5, 1, 3), (1, 3)),
    _gate("broadcast_to", (3,), (2, 3)), _gate("broadcast_to", (), (2, 3)),
    _gate("broadcast_to", (2, 1), (4, 2, 3)), _gate("broadcast_to", (), ()),
    _gate("spread", (), (2, 3)), _gate("spread", (), (2, 3), mean=True),
    _gate("spread", (3,), (2, 3), axis=0), _gate("spread", (2,), (2, 3), axis=-1, mean=True),
    _gate("spread", (3,), (2, 3, 4), axis=(0, 2), mean=True), _gate("spread", (), ()),
    _gate("rowsum", (2, 3)), _gate("rowsum", (4,)), _gate("rowsum", (2, 2, 3)),
    _gate("step", (2, 3), values=[TIES]), _gate("step", (), values=[0.0]),
    _gate("step", (), values=[2.0]),
    _gate("max_mask", (2, 3), (3,), values=[TIES, [0.0, 0.0, 0.5]]),
    _gate("max_mask", (), (), values=[1.0, 1.0]), _gate("max_mask", (), (2, 3)),
    _gate("sigmoid_grad", (6,), values=[[0.0, 1.5, -3.0, 40.0, -800.0, 800.0]]),
    _gate("sigmoid_grad", ()),
    _gate("softmax", (2, 3), values=[[[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]]]),
    _gate("softmax", (4,)), _gate("softmax", (2, 2, 3)),
    _gate("one_hot", (3,), (3, 4), const={0: np.array([0.0, 3.0, 1.0])}),
    _gate("one_hot", (), (4,), const={0: 2.0}),
    _gate("one_hot", (2, 1), (2, 3), const={0: np.array([[2.0], [0.0]])}),
    _gate("seed", ()),
]
# matmul's two vector-Jacobian products on every kind of operand: (u, b, a) for
# matmul_grad_a and (a, u, b) for matmul_grad_b, where a @ b has the shape of u
MATMULS = [((2, 3), (3, 4)), ((3,), (3, 4)), ((5, 2, 3), (3, 4)), ((2, 3), (3,)),
           ((3,), (3,)), ((3,), (5, 3, 4)), ((5, 2, 3), (5, 3, 4)), ((5, 2, 3), (3,)),
           ((1, 2, 3), (5, 3, 4))]
for sa, sb in MATMULS:
    su = np.matmul(np.ones(sa), np.ones(sb)).shape
    CASES += [_gate("matmul_grad_a", su, sb, sa), _gate("matmul_grad_b", sa, su, sb)]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_each_backward_gate_in_torch_and_onnxruntime(make):
    check_both(*make())


def test_the_cases_cover_every_backward_gate():
    from test_export_onnx import BACKWARD_GATES

    assert {f.__name__.split("{")[0].split("(")[0] for f in CASES} == BACKWARD_GATES
    assert BACKWARD_GATES == {op for op, cls in G.GATES.items() if cls in G.BUILTIN} - {
        "add", "sub", "mul", "div", "max", "power", "neg", "pow", "exp", "log", "sigmoid",
        "tanh", "relu", "matmul", "transpose", "sum", "mean", "mse",
        "softmax_cross_entropy"}


def test_masks_match_graphengine_at_ties_and_zero():
    g, feed = _gate("max_mask", (2, 3), (3,), values=[TIES, [0.0, 0.0, 0.5]])()
    out, _ = check_both(g, feed)
    assert out.tolist() == [[0.5, 1.0, 0.0], [1.0, 0.5, 0.5]]
    g, feed = _gate("step", (2, 3), values=[TIES])()
    out, _ = check_both(g, feed)
    assert out.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]


def test_sigmoid_grad_and_softmax_stay_finite_at_extremes():
    g, feed = _gate("sigmoid_grad", (3,), values=[[-800.0, 0.0, 800.0]])()
    out, model = check_both(g, feed)
    assert out.tolist() == [0.0, 0.25, 0.0]
    assert "Abs" in [n.op_type for n in model.graph.node]
    g, feed = _gate("softmax", (3,), values=[[1000.0, 999.0, -1000.0]])()
    out, model = check_both(g, feed)
    assert np.isfinite(out).all() and [n.op_type for n in model.graph.node] == ["Softmax"]


def test_seed_refuses_an_array_in_torch():
    g, feed = _gate("seed", ())()
    m = export.to_torch(g)
    with pytest.raises(ge.GraphError, match=r"seed: a gradient graph needs a scalar output, "
                                            r"got shape \(3,\)"):
        m(x0=np.ones(3))


# ---------------------------------------------------------------- gradient graphs

def small_mlp():
    g = ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [3, 4, 3], seed=1)
    g.softmax_cross_entropy(logits, g.input("y"), name="loss")
    rng = np.random.default_rng(3)
    return g, {"x": rng.standard_normal((5, 3)), "y": np.array([0.0, 2.0, 1.0, 1.0, 0.0])}


def leaves(g, feed):
    return [n.name for n in g if n.kind == "parameter" or n.name in feed and n.name != "y"]


@pytest.mark.parametrize("make", [circuit, net_221, small_mlp], ids=lambda f: f.__name__)
def test_gradient_graphs_export_and_torch_differentiates_them_to_the_hessian(make):
    g, feed = make()
    names = leaves(g, feed)
    hessian = ge.hessian(g, wrt=names, feed=feed)
    for a in names:
        h = ge.grad(g, a)
        want = h.forward(feed)
        m, inputs, t_out = torch_run(h, feed)
        np.testing.assert_allclose(t_out.detach().numpy(), want, rtol=1e-10, atol=1e-13)
        r = seed_for(want)
        got = torch_grads(m, inputs, t_out, r)
        for b in names:
            row = hessian[a, b]
            expect = row if r is None else np.tensordot(r, row, axes=np.ndim(r))
            np.testing.assert_allclose(got[b], expect, rtol=1e-9, atol=1e-12,
                                       err_msg=f"d2/d{a} d{b}")
        model = export.to_onnx(h, feed)
        onnx.checker.check_model(model, full_check=True)
        np.testing.assert_allclose(run_onnx(model, feed), want, rtol=1e-10, atol=1e-13)
        # read back by from_onnx: the same gradient, and its own gradients are the
        # Hessian's rows again
        k, back = read_back(model, feed, r)
        np.testing.assert_allclose(k.run.values_for(k.plan())[k.plan().out], want,
                                   rtol=1e-10, atol=1e-13)
        for b in names:
            row = hessian[a, b]
            expect = row if r is None else np.tensordot(r, row, axes=np.ndim(r))
            np.testing.assert_allclose(back.get(b, np.zeros(np.shape(row)[np.ndim(r):])),
                                       expect, rtol=1e-9, atol=1e-12,
                                       err_msg=f"d2/d{a} d{b} after from_onnx")


def test_the_mlp_gradient_graph_takes_int64_labels_in_onnx():
    g, feed = small_mlp()
    model = export.to_onnx(ge.grad(g, "W1"), feed)
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert types == {"x": onnx.TensorProto.DOUBLE, "y": onnx.TensorProto.INT64}
    ops = {n.op_type for n in model.graph.node}
    assert {"OneHot", "Softmax", "SoftmaxCrossEntropyLoss"} <= ops


# ---------------------------------------------------------------- random graphs

def check_random_gradient_graphs(g, feed):
    out = g.forward(feed)
    if np.shape(out) != ():
        g.set_output(g.sum(g[g.plan().names[g.plan().out]]))
    for name in leaves(g, feed):
        h = ge.grad(g, name)
        want = h.forward(feed)
        m, inputs, t_out = torch_run(h, feed)
        np.testing.assert_allclose(t_out.detach().numpy(), want, rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        model = export.to_onnx(h, feed)
        np.testing.assert_allclose(run_onnx(model, feed), want, rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        k, _ = read_back(model, feed, seed_for(want))
        np.testing.assert_allclose(k.run.values_for(k.plan())[k.plan().out], want,
                                   rtol=1e-9, atol=1e-12, err_msg=f"{name} after from_onnx")


SETTINGS = dict(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=30, **SETTINGS)
@given(random_dags())
def test_random_gradient_graphs_export_to_torch_and_onnx(case):
    check_random_gradient_graphs(*case)


@pytest.mark.slow
@settings(max_examples=400, **SETTINGS)
@given(random_dags())
def test_many_random_gradient_graphs_export_to_torch_and_onnx(case):
    check_random_gradient_graphs(*case)


@pytest.mark.parametrize("make, a, b", [(net_221, "W1", "x"), (small_mlp, "W1", "b1"),
                                        (small_mlp, "x", "W2")])
def test_gradient_graphs_of_gradient_graphs_export_and_read_back(make, a, b):
    # their backward gates (sum_to's broadcast_to, spread's sum, matmul_grad_b, ...)
    g, feed = make()
    h = ge.grad(g, a)
    h.set_output(h.sum(h[f"d{a}"]))
    k = ge.grad(h, b)
    out, _ = check_both(k, feed, rtol=1e-9, atol=1e-12)
    row = ge.hessian(g, wrt=[a, b], feed=feed)[a, b]        # a.shape + b.shape
    ndim_a = np.ndim(feed[a] if a in feed else g[a].value)
    np.testing.assert_allclose(out, row.sum(axis=tuple(range(ndim_a))), rtol=1e-9,
                               atol=1e-12)


def test_reading_masks_back_adds_no_constant_under_a_name_the_model_uses():
    # the importer's own constants are named after the ONNX node; an automatic name
    # (const_<n>) could be an initializer's that a later operator reads
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    out = g.op("max_mask", x, y)
    for k in range(12):
        out = g.add(out, g.mul(g.constant(float(k + 2), name=f"const_{k}"), x))
    g.set_output(out)
    check_both(g, {"x": np.array([1.0, 2.0, 3.0]), "y": np.array([1.0, 0.0, 4.0])})


def test_damaged_gradient_graph_models_are_graph_errors_or_graphs():
    # the operators of backward passes, read back, meet random damage as the others do
    g, feed = small_mlp()
    h = ge.grad(g, "W1")
    h.set_output(h.sum(h["dW1"]))
    k = ge.grad(h, "x")                  # every kind of operator the exporter writes
    data = export.to_onnx(k, feed).SerializeToString()
    fuzz = np.random.default_rng(1)
    outcomes = {"graph": 0, "error": 0}
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(fuzz.integers(1, 4)):
            damaged[fuzz.integers(len(damaged))] = fuzz.integers(256)
        try:
            ComputationalGraph.from_onnx(bytes(damaged))
            outcomes["graph"] += 1
        except ge.GraphError:
            outcomes["error"] += 1
    assert outcomes["error"] > 50 and outcomes["graph"] > 10, outcomes


def test_sigmoid_grad_reads_back_as_its_gate_unless_its_steps_are_read_elsewhere():
    g, feed = _gate("sigmoid_grad", (3,), values=[[-800.0, 0.0, 2.0]])()
    want = g.forward(feed)
    model = export.to_onnx(g, feed)
    h = ComputationalGraph.from_onnx(model)
    assert [n.gate.op for n in h.nodes("gate")] == ["sigmoid_grad"]
    assert h.forward(feed).tolist() == want.tolist()
    # another operator reads e^-|x|: the steps stay separate gates, the values the same
    exp = next(n.output[0] for n in model.graph.node if n.op_type == "Exp")
    model.graph.node.append(onnx.helper.make_node("Add", ["out", exp], ["both"]))
    model.graph.output[0].name = "both"
    h = ComputationalGraph.from_onnx(model)
    assert "sigmoid_grad" not in {n.gate.op for n in h.nodes("gate")}
    np.testing.assert_allclose(h.forward(feed), want + np.exp(-np.abs(feed["x0"])), rtol=1e-15)
