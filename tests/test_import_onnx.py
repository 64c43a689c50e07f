"""ONNX -> graphengine: ComputationalGraph.from_onnx builds models written by hand (as
other exporters write them: Gemm, axes as inputs or attributes, n-ary Max, Constant
exponents) into gates with onnxruntime's values; hostile files are GraphErrors with
no side effect, and nothing in a file is executed."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from interchange_graphs import digits_mlp, need

from graphengine import ComputationalGraph, GraphError, export
from graphengine.interchange import MAX_ELEMENTS

onnx = need("onnx")
ort = need("onnxruntime")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
rng = np.random.default_rng(2)


def model_of(nodes, inputs, output, initializers=(), opset=18, elem=T.DOUBLE, shape=None):
    # the output's shape: given, else the first input's
    shape = inputs[0][2] if shape is None else shape
    graph = h.make_graph(nodes, "test",
                         [h.make_tensor_value_info(n, e, s) for n, e, s in inputs],
                         [h.make_tensor_value_info(output, elem, shape)],
                         initializer=[nh.from_array(np.asarray(v), name=k)
                                      for k, v in initializers])
    opsets = [h.make_opsetid("", opset)]
    return h.make_model(graph, opset_imports=opsets,
                        ir_version=h.find_min_ir_version_for(opsets))


def agree(model, feed, rtol=1e-12):
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (want,) = session.run(None, feed)
    g = ComputationalGraph.from_onnx(model)
    np.testing.assert_allclose(g.forward(feed), want, rtol=rtol, atol=1e-12)
    g.backward()
    return g


X = rng.normal(size=(4, 3))


def test_gemm_with_every_attribute():
    B, C = rng.normal(size=(5, 3)), rng.normal(size=(5,))
    model = model_of([h.make_node("Gemm", ["x", "B", "C"], ["y"], alpha=0.5, beta=2.0,
                                  transB=1),
                      h.make_node("Gemm", ["y", "y"], ["z"], transA=1)],
                     [("x", T.DOUBLE, [4, 3])], "z", [("B", B), ("C", C)], shape=[5, 5])
    g = agree(model, {"x": X})
    assert [p.name for p in g.parameters()] == ["B", "C"]
    assert g["B"].value.shape == (5, 3)            # as in the file; a transpose gate reads it


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_reductions_take_axes_as_the_opset_says(opset):
    axes = nh.from_array(np.array([1], np.int64), name="")
    if opset >= 18:
        mean = [h.make_node("Constant", [], ["ax"], value=axes),
                h.make_node("ReduceMean", ["x", "ax"], ["m"], keepdims=0)]
    else:
        mean = [h.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0)]
    nodes = mean + [h.make_node("Constant", [], ["ax0"], value=nh.from_array(
                        np.array([0], np.int64), name="")),
                    h.make_node("ReduceSum", ["x", "ax0"], ["s"], keepdims=0),
                    h.make_node("ReduceSum", ["m"], ["all"], keepdims=0),
                    h.make_node("ReduceSum", ["s"], ["all2"], keepdims=0),
                    h.make_node("Add", ["all", "all2"], ["out"])]
    g = agree(model_of(nodes, [("x", T.DOUBLE, [4, 3])], "out", opset=opset, shape=[]),
              {"x": X})
    assert g["m"].gate.axis == 1 and g["s"].gate.axis == 0 and g["all"].gate.axis is None


def test_max_of_several_pow_with_a_constant_exponent_and_unary_ops():
    c = nh.from_array(np.array(3.0), name="")
    nodes = [h.make_node("Constant", [], ["three"], value=c),
             h.make_node("Pow", ["x", "three"], ["cube"]),
             h.make_node("Pow", ["x", "w"], ["xw"]),
             h.make_node("Sigmoid", ["x"], ["s"]),
             h.make_node("Max", ["cube", "s", "xw"], ["m"]),
             h.make_node("Tanh", ["m"], ["t"]), h.make_node("Relu", ["t"], ["r"]),
             h.make_node("Neg", ["r"], ["n"]), h.make_node("Exp", ["n"], ["e"]),
             h.make_node("Log", ["e"], ["l"]), h.make_node("Identity", ["l"], ["i"]),
             h.make_node("Div", ["i", "s"], ["d"]), h.make_node("Sub", ["d", "x"], ["out"])]
    x = rng.uniform(0.5, 1.5, size=(4, 3))
    g = agree(model_of(nodes, [("x", T.DOUBLE, [4, 3])], "out", [("w", np.array(0.7))]),
              {"x": x})
    assert g["cube"].gate.op == "pow" and g["cube"].gate.p == 3.0
    assert g["xw"].gate.op == "power" and g["w"].kind == "parameter"


def test_softmax_cross_entropy_with_int64_labels():
    W = rng.normal(size=(3, 5))
    nodes = [h.make_node("MatMul", ["x", "W"], ["z"]),
             h.make_node("SoftmaxCrossEntropyLoss", ["z", "labels"], ["loss"],
                         reduction="mean")]
    model = model_of(nodes, [("x", T.DOUBLE, [4, 3]), ("labels", T.INT64, [4])], "loss",
                     [("W", W)], shape=[])
    g = agree(model, {"x": X, "labels": np.array([0, 4, 2, 2])})
    assert g["loss"].gate.op == "softmax_cross_entropy"


def test_the_file_forms_a_path_bytes_and_a_model(tmp_path):
    g, feed = digits_mlp(rows=5)
    model = export.to_onnx(g, feed)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(model.SerializeToString())
    want = g.forward(feed)
    for form in (model, model.SerializeToString(), str(path), path):
        assert ComputationalGraph.from_onnx(form).forward(feed) == pytest.approx(want, 1e-12)


# ---------------------------------------------------------------- hostile files

def good_model():
    g, feed = digits_mlp(rows=5, hidden=8)
    return export.to_onnx(g, feed)


def with_input_type(elem, op="Add"):
    return model_of([h.make_node(op, ["x", "x"][:1 if op == "Identity" else 2], ["y"])],
                    [("x", elem, [2])], "y", elem=elem)


def huge_input():
    return model_of([h.make_node("Relu", ["x"], ["y"])],
                    [("x", T.DOUBLE, [10 ** 6, 10 ** 6])], "y")


def huge_initializer():
    m = model_of([h.make_node("Add", ["x", "w"], ["y"])], [("x", T.DOUBLE, [2])], "y",
                 [("w", np.zeros(2))])
    w = m.graph.initializer[0]
    del w.dims[:]
    w.dims.extend([2 ** 20, 2 ** 20])         # declares 2**40 elements, holds 2
    return m


def lying_initializer():
    m = model_of([h.make_node("Add", ["x", "w"], ["y"])], [("x", T.DOUBLE, [2])], "y",
                 [("w", np.zeros(2))])
    m.graph.initializer[0].dims[0] = 1000   # declares 1000 elements, holds 2
    return m


def external_data():
    m = model_of([h.make_node("Add", ["x", "w"], ["y"])], [("x", T.DOUBLE, [2])], "y",
                 [("w", np.zeros(2))])
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = T.EXTERNAL
    w.external_data.add(key="location", value="/etc/passwd")
    return m


HOSTILE = {
    "unsupported op": (lambda: model_of([h.make_node("Sin", ["x"], ["y"])],
                                        [("x", T.DOUBLE, [2])], "y"),
                       "unsupported operator Sin"),
    "softmax not on the last axis": (
        lambda: model_of([h.make_node("Softmax", ["x"], ["y"], axis=0)],
                         [("x", T.DOUBLE, [2, 3])], "y", shape=[2, 3]),
        "Softmax over axis 0 is not supported"),
    "one-hot of other values": (
        lambda: model_of([h.make_node("Constant", [], ["d"], value=h.make_tensor(
                              "d", T.INT64, [], [3])),
                          h.make_node("Constant", [], ["v"], value=h.make_tensor(
                              "v", T.INT64, [2], [1, 0])),
                          h.make_node("OneHot", ["x", "d", "v"], ["y"])],
                         [("x", T.INT64, [2])], "y", shape=[2, 3], elem=T.INT64),
        "only OneHot on the last axis with values"),
    "one-hot without a depth": (
        lambda: model_of([h.make_node("Constant", [], ["d"], value=h.make_tensor(
                              "d", T.INT64, [0], [])),
                          h.make_node("Constant", [], ["v"], value=h.make_tensor(
                              "v", T.INT64, [2], [0, 1])),
                          h.make_node("OneHot", ["x", "d", "v"], ["y"])],
                         [("x", T.INT64, [2])], "y", shape=[2, 3], elem=T.INT64),
        "depth must be one number"),
    "huge Expand": (
        lambda: model_of([h.make_node("Constant", [], ["s"], value=h.make_tensor(
                              "s", T.INT64, [2], [2 ** 20, 2 ** 20])),
                          h.make_node("Expand", ["x", "s"], ["y"])],
                         [("x", T.DOUBLE, [1])], "y", shape=[2 ** 20, 2 ** 20]),
        f"the limit is {MAX_ELEMENTS}"),
    "a comparison read as a number": (
        lambda: model_of([h.make_node("Greater", ["x", "x"], ["c"]),
                          h.make_node("Add", ["c", "c"], ["y"])],
                         [("x", T.DOUBLE, [2])], "y"),
        "not valid ONNX|holds booleans"),
    "custom domain": (lambda: model_of([h.make_node("Run", ["x"], ["y"], domain="evil.ops")],
                                       [("x", T.DOUBLE, [2])], "y"),
                      "unsupported operator Run of domain 'evil.ops'"),
    "string input": (lambda: with_input_type(T.STRING, "Identity"), "element type STRING"),
    "int input to Add": (lambda: with_input_type(T.INT64), "can only be the labels"),
    "huge declared shape": (huge_input, f"the limit is {MAX_ELEMENTS}"),
    "huge initializer": (huge_initializer, f"the limit is {MAX_ELEMENTS}"),
    "initializer short of its shape": (lying_initializer, "initializer 'w'|not valid"),
    "external data": (external_data, "external file, which is never read"),
    "old opset": (lambda: model_of([h.make_node("Relu", ["x"], ["y"])],
                                   [("x", T.DOUBLE, [2])], "y", opset=11), "opset is 11"),
    "keepdims": (lambda: model_of([h.make_node("ReduceMean", ["x"], ["y"])],
                                  [("x", T.DOUBLE, [2])], "y", shape=[1]), "keepdims=1"),
    "undefined input": (lambda: model_of([h.make_node("Relu", ["nope"], ["y"])],
                                         [("x", T.DOUBLE, [2])], "y"), "not valid ONNX"),
}


def test_shapes_come_from_the_inputs_and_operators_not_the_files_claims():
    # the output claims (5,), value_info claims (7,): Expand of a (1,) to [3] is (3,)
    m = model_of([h.make_node("Constant", [], ["s"], value=h.make_tensor(
                      "s", T.INT64, [1], [3])),
                  h.make_node("Expand", ["x", "s"], ["e"]), h.make_node("Neg", ["e"], ["y"])],
                 [("x", T.DOUBLE, [1])], "y", shape=[5])
    m.graph.value_info.append(h.make_tensor_value_info("e", T.DOUBLE, [7]))
    g = ComputationalGraph.from_onnx(m)
    assert g.forward(x=np.array([2.0])).tolist() == [-2.0, -2.0, -2.0]
    assert g["e"].gate.op == "broadcast_to" and g["e:shape"].value.shape == (3,)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_models_are_graph_errors(name, tmp_path):
    make, match = HOSTILE[name]
    data = make().SerializeToString()
    before = sorted(os.listdir(tmp_path))
    for form in (data, tmp_path / "m.onnx"):
        if not isinstance(form, bytes):
            form.write_bytes(data)
            before = sorted(os.listdir(tmp_path))
        with pytest.raises(GraphError, match=match):
            ComputationalGraph.from_onnx(form)
        assert sorted(os.listdir(tmp_path)) == before             # nothing written


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_truncated_files_are_graph_errors(fraction):
    data = good_model().SerializeToString()
    with pytest.raises(GraphError, match="truncated|not valid|no graph"):
        ComputationalGraph.from_onnx(data[:int(len(data) * fraction)])


@pytest.mark.parametrize("data, match", [
    (b"", "no graph"), (b"\x00\xff" * 50, "not a valid ONNX file"),
    (b"definitely not protobuf \x8f\x8f\x8f", "not a valid ONNX file"),
    (12, "needs an onnx.ModelProto, bytes or a file path"),
])
def test_garbage_is_a_graph_error(data, match):
    with pytest.raises(GraphError, match=match):
        ComputationalGraph.from_onnx(data)


def test_a_missing_file_is_a_graph_error(tmp_path):
    with pytest.raises(GraphError, match="cannot read"):
        ComputationalGraph.from_onnx(tmp_path / "absent.onnx")


def test_loading_runs_nothing():
    # the importer never hands a model to a runtime: onnxruntime is not even imported
    code = """
import sys
import graphengine as ge
from graphengine import export
g = ge.ComputationalGraph(); g.tanh(g.input("x") * 2.0, name="f")
h = ge.ComputationalGraph.from_onnx(export.to_onnx(g, {"x": 1.0}).SerializeToString())
assert h.forward(x=1.0) == g.forward(x=1.0)
print("onnxruntime" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_damaged_files_are_graph_errors_or_graphs():
    # random bytes changed in a model using most operators: whatever the damage,
    # loading gives a graph or a GraphError, never another exception or a warning
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    s = g.div(g.sub(g.max(a, b), g.neg(b)), g.exp(g.tanh(a)))
    t = g.power(g.relu(b) + g.sigmoid(a), g.log(g.pow(a, 2) + 1.0))
    u = g.sum(g.mean(g.matmul(s * t, g.op("transpose", g.parameter("W", np.ones((2, 3))))),
                     axis=0))
    g.add(u + g.softmax_cross_entropy(s, g.constant([0, 2, 1, 1])), g.mse(t, 0.5))
    data = export.to_onnx(g, {"a": X, "b": X}).SerializeToString()
    fuzz = np.random.default_rng(0)
    outcomes = {"graph": 0, "error": 0}
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(fuzz.integers(1, 4)):
            damaged[fuzz.integers(len(damaged))] = fuzz.integers(256)
        try:
            ComputationalGraph.from_onnx(bytes(damaged))
            outcomes["graph"] += 1
        except GraphError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["graph"] > 10
