"""graphengine -> ONNX -> onnxruntime, and back: ge.export.to_onnx gives a model that
onnx.checker accepts and onnxruntime runs to graphengine's values; from_onnx of it
gives the same values and gradients again."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from interchange_graphs import GRAPHS, circuit, digits_mlp, need, random_dags, seed_for

import graphengine as ge
from graphengine import ComputationalGraph, GraphError, export
from graphengine import gates as G

onnx = need("onnx")
# the gates ge.grad adds; test_export_gradients.py checks them one by one
BACKWARD_GATES = {"sum_to", "broadcast_to", "spread", "rowsum", "step", "max_mask",
                  "sigmoid_grad", "softmax", "one_hot", "matmul_grad_a", "matmul_grad_b",
                  "seed"}
ort = need("onnxruntime")


def run_onnx(model, feed):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1            # small models; the machine is shared
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    dtypes = {"tensor(double)": np.float64, "tensor(float)": np.float32,
              "tensor(int64)": np.int64}
    args = {k: np.asarray(feed[k], dtype=dtypes[t]) for k, t in types.items()}
    (out,) = session.run(None, args)
    return out


def round_trip(g, feed, rtol=1e-12, atol=1e-12, opset=18):
    out = g.forward(feed)
    grads = g.backward(seed_for(out))
    model = export.to_onnx(g, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    np.testing.assert_allclose(run_onnx(model, feed), out, rtol=rtol, atol=atol)
    # and back: the same values, and the same gradients for every leaf
    h = ComputationalGraph.from_onnx(model.SerializeToString())
    np.testing.assert_allclose(h.forward({k: v for k, v in feed.items() if k in h}), out,
                               rtol=rtol, atol=atol)
    back = h.backward(seed_for(out))
    for node in g:
        if node.kind in ("input", "parameter") and node.name in h:
            np.testing.assert_allclose(back[node.name], grads[node.name], rtol=1e-10,
                                       atol=1e-12, err_msg=node.name)
    assert [p.name for p in h.parameters()] == [p.name for p in g.parameters()
                                                if p.name in g.plan().slot]
    return model, h


@pytest.mark.parametrize("make", GRAPHS, ids=lambda f: f.__name__)
def test_onnxruntime_gives_graphengines_values_and_back(make):
    round_trip(*make())


def test_the_circuits_model():
    g, feed = circuit()
    model, h = round_trip(g, feed)
    assert [n.op_type for n in model.graph.node] == ["Add", "Mul"]
    assert [i.name for i in model.graph.input] == ["x", "y", "z"]
    assert model.graph.output[0].name == "f"
    assert [n.name for n in h] == ["x", "y", "z", "q", "f"]
    assert h.backward() == {"x": -4.0, "y": -4.0, "q": -4.0, "z": 3.0, "f": 1.0}


def test_the_digits_mlp_uses_the_standard_cross_entropy():
    g, feed = digits_mlp()
    model, h = round_trip(g, feed)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["MatMul", "Add", "Sigmoid", "MatMul", "Add", "SoftmaxCrossEntropyLoss"]
    labels = next(i for i in model.graph.input if i.name == "y")
    assert labels.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert sorted(t.name for t in model.graph.initializer) == ["W1", "W2", "b1", "b2"]
    assert [n.kind for n in h.nodes("parameter")] == ["parameter"] * 4


FAST = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(random_dags())
def test_random_graphs_round_trip(case):
    round_trip(*case, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@settings(max_examples=1000, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_dags())
def test_many_random_graphs_round_trip(case):
    round_trip(*case, rtol=1e-10, atol=1e-12)


def test_every_registered_gate_has_an_onnx_rule():
    missing = {op for op, cls in G.GATES.items() if cls in G.BUILTIN} - set(export.ONNX)
    assert not missing, f"gates without a row in export.ONNX: {sorted(missing)}"


@pytest.mark.parametrize("opset", [17, 18, 21])
def test_every_gate_in_one_graph(opset):
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    s = g.div(g.sub(g.max(a, b), g.neg(b)), g.exp(g.tanh(a)))
    t = g.power(g.relu(b) + g.sigmoid(a), g.log(g.pow(a, 2) + 1.0))
    W = g.op("transpose", g.parameter("W", np.ones((2, 3))))
    u = g.sum(g.mean(g.matmul(s * t, W), axis=(0,)))
    ce = g.softmax_cross_entropy(s, g.constant([0, 2, 1, 1], name="labels"))
    one = g.softmax_cross_entropy(g.sum(s, axis=0), 1.0)          # logits of one sample
    e = g.mse(g.mean(t, axis=1), g.constant(np.zeros(4)))
    g.add(u + ce + one, e, name="total")
    rng = np.random.default_rng(0)
    feed = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(4, 3))}
    assert {n.gate.op for n in g.nodes("gate")} >= set(export.ONNX) - BACKWARD_GATES
    model, h = round_trip(g, feed, opset=opset)
    assert model.opset_import[0].version == opset
    assert {n.kind for n in h if n.name == "labels"} == {"constant"}


def test_float32_graphs_export_float32():
    g, feed = digits_mlp(dtype=np.float32)
    model = export.to_onnx(g, feed)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out = run_onnx(model, feed)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, g.forward(feed), rtol=1e-5)
    h = ComputationalGraph.from_onnx(model)
    assert h["W1"].value.dtype == np.float32


def test_shapes_come_from_the_feed_or_the_last_forward():
    g, feed = digits_mlp(rows=7)
    with pytest.raises(GraphError, match="to_onnx needs the inputs' shapes"):
        export.to_onnx(g)
    g.forward(feed)
    dims = [d.dim_value for d in export.to_onnx(g).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [7, 64]
    X, y = ge.datasets.digits()
    before = g["loss"].value
    model = export.to_onnx(g, {"x": X[:3], "y": y[:3]})
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [3, 64]
    assert g["loss"].value == before and g.run.values is not None   # g's last run kept


class Cube(ge.Gate):
    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, upstream):
        return (3 * self.x ** 2 * upstream,)


class OnnxCube(Cube):
    def to_onnx(self, builder, x):
        return builder.node("Mul", [builder.node("Mul", [x, x]), x])


def test_a_users_gate_needs_a_rule_of_its_own():
    g = ComputationalGraph()
    g.apply(Cube(), g.input("x"), name="cube")
    with pytest.raises(GraphError, match="node 'cube': gate Cube has no ONNX rule"):
        export.to_onnx(g, {"x": 2.0})
    h = ComputationalGraph()
    h.apply(OnnxCube(), h.input("x"), name="cube")
    model = export.to_onnx(h, {"x": 2.0})
    onnx.checker.check_model(model, full_check=True)
    assert run_onnx(model, {"x": 2.0}) == 8.0


@pytest.mark.parametrize("opset", [16, 10 ** 6, "18", True])
def test_opset_is_checked(opset):
    g, feed = circuit()
    with pytest.raises(GraphError, match="opset must be an integer from 17"):
        export.to_onnx(g, feed, opset=opset)
