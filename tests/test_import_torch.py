"""torch.fx -> graphengine: ComputationalGraph.from_torch gives the values and
gradients torch gives, for plain functions and nn.Sequential models."""

import numpy as np
import pytest
from interchange_graphs import need

from graphengine import ComputationalGraph, GraphError, export

torch = need("torch")
F = torch.nn.functional


def check(fn, examples, rtol=1e-10, atol=1e-12, module=None):
    """from_torch(fn) forward and backward agree with torch on the examples; returns g."""
    g = ComputationalGraph.from_torch(fn, examples)
    tensors = {k: (v.clone() if torch.is_tensor(v) else torch.tensor(np.asarray(v)))
               for k, v in examples.items()}
    for t in tensors.values():
        if t.dtype.is_floating_point:
            t.requires_grad_(True)
    params = dict(module.named_parameters()) if module is not None else {}
    for p in params.values():
        p.grad = None
    out = fn(**tensors)
    value = g.forward({k: v.detach().numpy() for k, v in tensors.items()})
    np.testing.assert_allclose(value, out.detach().numpy(), rtol=rtol, atol=atol)
    r = np.random.default_rng(0).standard_normal(out.shape) if out.ndim else None
    out.backward(torch.ones(()) if r is None else torch.tensor(r, dtype=out.dtype))
    grads = g.backward(r)
    for name, t in list(tensors.items()) + list(params.items()):
        if t.grad is not None:
            np.testing.assert_allclose(grads[name], t.grad.numpy(), rtol=rtol, atol=atol,
                                       err_msg=name)
    return g


rng = np.random.default_rng(1)
A, B = rng.normal(size=(4, 3)), rng.uniform(0.5, 2.0, size=(4, 3))
W = rng.normal(size=(3, 5))


FUNCTIONS = {
    "arithmetic": (lambda x, y: (x + y) * x - y / 2.0 + torch.add(x, 1) * torch.mul(y, x)
                   - torch.sub(x, y) / torch.div(y, 3.0), {"x": A, "y": B}),
    "powers": (lambda x, y: x ** 2 + torch.pow(y, 0.5) + y ** x + 2.0 ** x - (-x) ** 3,
               {"x": A, "y": B}),
    "unary": (lambda x: torch.sigmoid(x) + torch.tanh(x) + torch.relu(x) + torch.exp(x)
              + torch.log(x * x + 1) + F.relu(x) + F.sigmoid(x) + F.tanh(x), {"x": A}),
    "methods": (lambda x, y: x.sigmoid().tanh().exp().add(y).mul(2).sub(y).div(y).pow(2).neg()
                + x.maximum(y) + x.relu() + y.log() + x.matmul(y.t()).sum(), {"x": A, "y": B}),
    "matmul": (lambda x, w: (x @ w).sum(dim=1) + torch.matmul(x, w).mean()
               + torch.mm(x, w).sum(), {"x": A, "w": W}),
    "reductions": (lambda x: x.sum() * x.mean() + torch.sum(x, dim=0).sum()
                   + torch.mean(x, (0, 1)) + x.sum(1).mean(), {"x": A}),
    "maximum": (lambda x, y: torch.maximum(x, y) + torch.max(x, y * 0.5), {"x": A, "y": B}),
    "linear": (lambda x, w, b: F.linear(x, w, b) + F.linear(x, w), {"x": A, "w": W.T,
                                                                    "b": rng.normal(size=5)}),
    "transpose": (lambda x, w: x @ w.T.t().T + (w @ x.t()).transpose(0, 1),
                  {"x": A, "w": W.T}),
    "cross_entropy": (lambda z, y: F.cross_entropy(z, y) + F.mse_loss(z, z * 0.5),
                      {"z": A, "y": torch.tensor([0, 2, 1, 1])}),
}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_plain_functions(name):
    fn, examples = FUNCTIONS[name]
    check(fn, examples)


def test_scalar_functions_and_their_names():
    g = check(lambda x, y, z: (x + y) * z, {"x": -2.0, "y": 5.0, "z": -4.0})
    assert [n.name for n in g.inputs()] == ["x", "y", "z"]
    assert g.backward() == {"x": -4.0, "y": -4.0, "z": 3.0, "add": -4.0, "mul": 1.0}


def sequential(*layers):
    torch.manual_seed(0)
    return torch.nn.Sequential(*layers).double()


@pytest.mark.parametrize("act", [torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.ReLU])
def test_sequential_models(act):
    net = sequential(torch.nn.Linear(4, 6), act(), torch.nn.Linear(6, 3), act(),
                     torch.nn.Linear(3, 2, bias=False), torch.nn.Identity())
    g = check(net, {"input": rng.normal(size=(5, 4))}, module=net)
    assert [n.name for n in g.inputs()] == ["input"]
    assert [p.name for p in g.parameters()] == [n for n, _ in net.named_parameters()]
    for p in g.parameters():
        np.testing.assert_array_equal(p.value, net.get_parameter(p.name).detach().numpy())


def test_a_module_with_a_loss_trains_like_torch():
    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                            torch.nn.Linear(16, 4))
            self.loss = torch.nn.CrossEntropyLoss()

        def forward(self, x, labels):
            return self.loss(self.body(x), labels)

    torch.manual_seed(0)
    model = Classifier().double()
    x, labels = rng.normal(size=(10, 8)), torch.tensor(rng.integers(0, 4, size=10))
    g = ComputationalGraph.from_torch(model, {"x": x, "labels": labels})
    assert [p.name for p in g.parameters()] == ["body.0.weight", "body.0.bias",
                                                "body.2.weight", "body.2.bias"]
    loss = model(torch.tensor(x), labels)
    loss.backward()
    assert g.forward(x=x, labels=labels.numpy()) == pytest.approx(loss.item(), rel=1e-12)
    grads = g.backward()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-13)
    # and out again: the exported module has torch's own parameter names
    m = export.to_torch(g)
    assert list(dict(m.named_parameters())) == [n for n, _ in model.named_parameters()]
    assert m(x=x, labels=labels).item() == pytest.approx(loss.item(), rel=1e-12)


def test_float32_modules_stay_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Sigmoid())
    x = rng.normal(size=(4, 3)).astype(np.float32)
    g = ComputationalGraph.from_torch(net, {"input": x})
    assert g["0.weight"].value.dtype == np.float32
    np.testing.assert_allclose(g.forward(input=x), net(torch.tensor(x)).detach().numpy(),
                               rtol=1e-6)


@pytest.mark.parametrize("fn, examples, match", [
    (lambda x: torch.softmax(x, 0), {"x": A}, "the function softmax has no matching gate, "
                                              "at fx node 'softmax'"),
    (lambda x: x.view(-1), {"x": A}, r"the tensor method \.view\(\) has no matching gate"),
    (lambda x: x.sum(0, keepdim=True), {"x": A}, "keepdim=True has no matching gate"),
    (lambda x: torch.max(x), {"x": A}, "a reduction"),
    (lambda x: torch.max(x, 1), {"x": A}, "a reduction"),
    (lambda x: torch.max(x, 1)[0], {"x": A}, "a reduction|getitem"),
    (lambda x: torch.add(x, x, alpha=2), {"x": A}, "argument alpha=2"),
    (lambda z: F.cross_entropy(z, z), {"z": A}, "class probabilities as targets"),
    (torch.nn.Sequential(torch.nn.Conv1d(1, 1, 1)), {"input": np.ones((1, 1, 3))},
     "the module '0' of type Conv1d has no matching gate"),
    (lambda x: x + 1, {"y": A}, "missing x"),
    (lambda x: x + 1, {"x": A, "y": A}, "unknown y"),
    (lambda x: (x, x), {"x": A}, "must return one tensor"),
    (lambda x: x.reshape(2, 6).transpose(0, 1), {"x": A}, "reshape"),
    (42, {}, "needs a function or a torch.nn.Module"),
])
def test_what_has_no_gate_is_a_graph_error_naming_it(fn, examples, match):
    with pytest.raises(GraphError, match=match):
        ComputationalGraph.from_torch(fn, examples)


def test_code_that_cannot_be_traced_is_a_graph_error():
    def branchy(x):
        return x if x.sum() > 0 else -x

    with pytest.raises(GraphError, match="torch.fx cannot trace"):
        ComputationalGraph.from_torch(branchy, {"x": A})
