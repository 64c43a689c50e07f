"""graphengine -> PyTorch: ge.export.to_torch gives a Module with the same values and
gradients, whose parameters train as graphengine's do."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from interchange_graphs import GRAPHS, circuit, digits_mlp, need, random_dags, seed_for

import graphengine as ge
from graphengine import GraphError, export
from graphengine import gates as G

torch = need("torch")
ROOT = Path(__file__).resolve().parent.parent


def compare(g, feed, rtol=1e-10, atol=1e-12):
    """Forward and backward in graphengine and in the exported Module agree."""
    out = g.forward(feed)
    r = seed_for(out)
    grads = g.backward(r)
    m = export.to_torch(g)
    inputs = {k: torch.tensor(np.asarray(v), dtype=m.dtype, requires_grad=True)
              for k, v in feed.items() if k in m.input_names}
    t_out = m(**inputs)
    assert t_out.dtype == m.dtype
    np.testing.assert_allclose(t_out.detach().numpy(), out, rtol=rtol, atol=atol)
    t_out.backward(torch.ones(()) if r is None else torch.tensor(r, dtype=m.dtype))
    params = dict(m.named_parameters())
    assert sorted(params) == sorted(p.name for p in g.parameters())
    for name, t in list(params.items()) + list(inputs.items()):
        got = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        np.testing.assert_allclose(got, grads[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("make", GRAPHS, ids=lambda f: f.__name__)
def test_values_and_gradients_equal_graphengine(make):
    compare(*make())


def test_the_circuit_by_hand():
    g, feed = circuit()
    m = export.to_torch(g)
    ts = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in feed.items()}
    out = m(**ts)
    out.backward()
    assert out.item() == -12.0
    assert [ts[k].grad.item() for k in "xyz"] == [-4.0, -4.0, 3.0]
    assert m(-2.0, 5.0, -4.0).item() == -12.0           # positionally, in g.inputs() order


FAST = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(random_dags())
def test_random_graphs_equal_values_and_gradients(case):
    compare(*case)


@pytest.mark.slow
@settings(max_examples=1000, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_dags())
def test_many_random_graphs_equal_values_and_gradients(case):
    compare(*case)


def test_every_registered_gate_has_a_torch_rule():
    missing = {op for op, cls in G.GATES.items() if cls in G.BUILTIN} - set(export.TORCH)
    assert not missing, f"gates without a row in export.TORCH: {sorted(missing)}"


def test_float32_graphs_export_float32():
    g, feed = digits_mlp(dtype=np.float32)
    assert g.forward(feed).__class__ is float          # a scalar loss
    assert g["W1"].value.dtype == np.float32
    m = export.to_torch(g)
    assert {p.dtype for p in m.parameters()} == {torch.float32}
    compare(g, feed, rtol=1e-4, atol=1e-6)
    g2, feed2 = digits_mlp()
    assert {p.dtype for p in export.to_torch(g2).parameters()} == {torch.float64}


def test_twenty_sgd_steps_in_torch_and_graphengine_end_equal():
    X, y = ge.datasets.digits()
    g, _ = digits_mlp(hidden=16)
    m = export.to_torch(g)
    opt_ge = ge.optim.SGD(g.parameters(), lr=0.1, momentum=0.9)
    opt_t = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    step = ge.train.compile_step(g, opt_ge)
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows = rng.choice(len(X), 32, replace=False)
        loss_ge = step({"x": X[rows], "y": y[rows]})
        opt_t.zero_grad()
        loss_t = m(x=X[rows], y=y[rows])
        loss_t.backward()
        opt_t.step()
        assert loss_t.item() == pytest.approx(loss_ge, rel=1e-12)
    moved = np.abs(g["W1"].value - digits_mlp(hidden=16)[0]["W1"].value).max()
    assert moved > 1e-3                                   # the steps did something
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), g[name].value, rtol=1e-10,
                                   atol=1e-13, err_msg=name)


def test_parameters_with_dots_become_torch_paths():
    g = ge.ComputationalGraph()
    x = g.input("x")
    g.sigmoid(x * g.parameter("0.weight", 2.0) + g.parameter("0.bias", 1.0)
              + g.parameter("w", 3.0))
    m = export.to_torch(g)
    assert dict(m.named_parameters()).keys() == {"0.weight", "0.bias", "w"}
    assert m(x=1.0).item() == pytest.approx(1 / (1 + np.exp(-6.0)))


@pytest.mark.parametrize("name", ["a..b", "forward", "w."])
def test_a_name_torch_cannot_hold_is_a_graph_error(name):
    g = ge.ComputationalGraph()
    g.input("x") * g.parameter(name, 2.0)
    with pytest.raises(GraphError, match="cannot be a torch parameter name"):
        export.to_torch(g)


class Cube(ge.Gate):
    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, upstream):
        return (3 * self.x ** 2 * upstream,)


class TorchCube(Cube):
    def to_torch(self, x):
        return x ** 3


def test_a_users_gate_needs_a_rule_of_its_own():
    g = ge.ComputationalGraph()
    g.apply(Cube(), g.input("x"), name="cube")
    with pytest.raises(GraphError, match="node 'cube': gate Cube has no torch rule"):
        export.to_torch(g)
    h = ge.ComputationalGraph()
    h.apply(TorchCube(), h.input("x") + 1.0, name="cube")
    assert export.to_torch(h)(x=1.0).item() == 8.0


def test_a_subclass_of_a_builtin_gate_is_not_taken_for_it():
    class Doubled(G.AddGate):
        def forward(self, x, y):
            return 2 * super().forward(x, y)

    g = ge.ComputationalGraph()
    g.apply(Doubled(), g.input("x"), 1.0, name="d")
    with pytest.raises(GraphError, match="gate Doubled has no torch rule"):
        export.to_torch(g)


def test_wrong_inputs_are_graph_errors():
    g, _ = circuit()
    m = export.to_torch(g)
    with pytest.raises(GraphError, match="input 'z' needs a value"):
        m(x=1.0, y=2.0)
    with pytest.raises(GraphError, match="'w' is not an input"):
        m(x=1.0, y=2.0, z=3.0, w=4.0)
    with pytest.raises(GraphError, match="input 'x': expected numbers"):
        m(x="a", y=2.0, z=3.0)


def test_the_module_pickles_and_moves_its_parameters_with_it():
    g, feed = digits_mlp(hidden=8, rows=5)
    m = export.to_torch(g)
    again = pickle.loads(pickle.dumps(m))
    assert torch.equal(again(**feed), m(**feed))
    state = m.state_dict()
    assert sorted(state) == ["W1", "W2", "b1", "b2"]
    m.float()                                      # inputs follow the parameters' dtype
    assert m(**feed).dtype == torch.float32


def test_export_is_there_without_torch_and_onnx_and_names_them():
    # a fresh interpreter where importing torch or onnx fails
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "onnxruntime"):
            raise ImportError(f"blocked {name}")
sys.meta_path.insert(0, Block())
import graphengine as ge
g = ge.ComputationalGraph(); g.sigmoid(g.input("x"))
for call, needed in [(lambda: ge.export.to_torch(g), "torch"),
                     (lambda: ge.export.to_onnx(g, {"x": 1.0}), "onnx"),
                     (lambda: ge.ComputationalGraph.from_torch(abs, {"x": 1.0}), "torch"),
                     (lambda: ge.ComputationalGraph.from_onnx(b"x"), "onnx")]:
    try:
        call()
    except ImportError as exc:
        assert needed in str(exc) and "pip install" in str(exc), exc
    else:
        raise AssertionError("no ImportError")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_reaches_graphengine_trains_accuracy(monkeypatch):
    # examples/ddp_digits.py: the digits MLP exported to torch, trained with
    # DistributedDataParallel over two processes (gloo), brought back into graphengine;
    # the spawned processes import the example and graphengine by the same path
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.syspath_prepend(str(ROOT))
    import ddp_digits
    g, history = ddp_digits.train_ddp(2)                 # graphengine train's defaults
    reference, ref = ge.train.train_digits(quiet=True)
    assert len(history) == 30
    assert history[-1] == reference.val_accuracy[-1] >= 0.98
    np.testing.assert_allclose(history, reference.val_accuracy, atol=2 / 359)
    for p in g.parameters():                             # the same steps, summed in another order
        np.testing.assert_allclose(p.value, ref[p.name].value, rtol=1e-6, atol=1e-8)
    X, y, _, test = ddp_digits.split()
    assert ddp_digits.accuracy(g, X[test], y[test]) == history[-1]
    # back in graphengine: every value and gradient of one digit, drawn
    g.forward(x=X[test[:1]], y=y[test[:1]])
    grads = g.backward()
    assert grads["W1"].shape == (64, 128) and np.abs(grads["x"]).max() > 0
    import matplotlib
    matplotlib.use("Agg")
    ax = g.draw()
    assert len(ax.texts) > 0
