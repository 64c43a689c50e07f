"""Import from other engines: a function or ``torch.nn.Module`` traced with
``torch.fx`` (``from_torch``), and an ONNX model (``from_onnx``), built into gates.

``from_torch`` traces the caller's own code symbolically, runs it once on the example
inputs (for shapes, and to check the gates give torch's output), and builds gates;
``from_onnx`` parses a file's protobuf, validates it and never executes an operator.
Each target's operations are one table here (operation -> builder); anything else is
a ``GraphError`` naming the operation and where it is. A failed import leaves
nothing behind: the graph is returned only when every node was built.
"""

from __future__ import annotations

import json
import math
import operator
import os

import numpy as np

from .errors import GraphError
from .export import need
from .graph import ComputationalGraph, Node

__all__ = ["from_torch", "from_onnx", "MAX_ONNX_BYTES", "MAX_ELEMENTS", "MAX_NODES"]

# bounds on what from_onnx accepts: a file's bytes, the elements of every initializer
# together and of any declared shape, and the operators of a graph
MAX_ONNX_BYTES = 256 * 2 ** 20
MAX_ELEMENTS = 2 ** 26
MAX_NODES = 100_000


# ================================================================ torch.fx

def _torch_table():
    import torch
    import torch.nn.functional as F

    def binary(op):
        def build(b, x, y, **kw):
            b.no_kwargs(kw, alpha=1, rounding_mode=None)
            return b.g.op(op, b.arg(x), b.arg(y), name=b.name)
        return build

    def unary(op):
        def build(b, x, **kw):
            b.no_kwargs(kw, inplace=False)
            return b.g.op(op, b.arg(x), name=b.name)
        return build

    def pow_(b, x, p, **kw):
        b.no_kwargs(kw)
        if isinstance(x, b.fx.Node) and isinstance(p, (int, float)) and not isinstance(p, bool):
            return b.g.pow(b.arg(x), p, name=b.name)          # a number exponent
        return b.g.power(b.arg(x), b.arg(p), name=b.name)

    def maximum(b, x, y=None, **kw):
        if not isinstance(y, b.fx.Node):       # torch.max(x) or torch.max(x, dim)
            b.unsupported("a reduction (torch.max without a second tensor)")
        b.no_kwargs(kw)
        return b.g.max(b.arg(x), b.arg(y), name=b.name)

    def reduce(op):
        def build(b, x, dim=None, keepdim=False, **kw):
            b.no_kwargs(kw, dtype=None)
            if keepdim:
                b.unsupported("keepdim=True")
            axis = None if dim is None else (tuple(dim) if isinstance(dim, (list, tuple))
                                             else dim)
            return b.g.op(op, b.arg(x), axis=axis, name=b.name)
        return build

    def linear(b, x, weight, bias=None):
        out = b.g.matmul(b.arg(x), b.g.op("transpose", b.arg(weight), name=b.aux("weight_T")),
                         name=b.name if bias is None else b.aux("matmul"))
        return out if bias is None else b.g.add(out, b.arg(bias), name=b.name)

    def transpose(b, x, dim0=-2, dim1=-1):
        nd = b.ndim(x)
        if nd < 2 or sorted((dim0 % nd, dim1 % nd)) != [nd - 2, nd - 1]:
            b.unsupported(f"transposing dimensions {dim0} and {dim1} (only the last two)")
        return b.g.op("transpose", b.arg(x), name=b.name)

    def cross_entropy(b, input, target, weight=None, size_average=None, ignore_index=-100,
                      reduce=None, reduction="mean", label_smoothing=0.0):
        if weight is not None or size_average is not None or reduce is not None or \
                reduction != "mean" or label_smoothing != 0.0:
            b.unsupported("arguments other than the defaults (mean over the batch, "
                          "no weights, no label smoothing)")
        if b.example(target).dtype.is_floating_point:
            b.unsupported("class probabilities as targets (integer class indices only)")
        return b.g.softmax_cross_entropy(b.arg(input), b.arg(target), name=b.name)

    def mse_loss(b, input, target, size_average=None, reduce=None, reduction="mean",
                 weight=None):
        if size_average is not None or reduce is not None or reduction != "mean" or \
                weight is not None:
            b.unsupported("a reduction other than the mean")
        return b.g.mse(b.arg(input), b.arg(target), name=b.name)

    functions = {
        operator.add: binary("add"), torch.add: binary("add"),
        operator.sub: binary("sub"), torch.sub: binary("sub"),
        operator.mul: binary("mul"), torch.mul: binary("mul"),
        operator.truediv: binary("div"), torch.div: binary("div"),
        operator.pow: pow_, torch.pow: pow_,
        operator.neg: unary("neg"), torch.neg: unary("neg"),
        operator.matmul: binary("matmul"), torch.matmul: binary("matmul"),
        torch.mm: binary("matmul"),
        torch.maximum: maximum, torch.max: maximum,
        torch.exp: unary("exp"), torch.log: unary("log"),
        torch.sigmoid: unary("sigmoid"), F.sigmoid: unary("sigmoid"),
        torch.tanh: unary("tanh"), F.tanh: unary("tanh"),
        torch.relu: unary("relu"), F.relu: unary("relu"),
        torch.sum: reduce("sum"), torch.mean: reduce("mean"),
        torch.transpose: transpose, torch.t: transpose,
        F.linear: linear, F.cross_entropy: cross_entropy, F.mse_loss: mse_loss,
    }
    methods = {
        "add": binary("add"), "sub": binary("sub"), "mul": binary("mul"),
        "div": binary("div"), "pow": pow_, "neg": unary("neg"), "matmul": binary("matmul"),
        "mm": binary("matmul"), "maximum": maximum, "exp": unary("exp"),
        "log": unary("log"), "sigmoid": unary("sigmoid"), "tanh": unary("tanh"),
        "relu": unary("relu"), "sum": reduce("sum"), "mean": reduce("mean"),
        "transpose": transpose, "t": transpose,
    }

    def module_linear(b, m, x):
        return linear(b, x, b.param(f"{b.target}.weight"),
                      None if m.bias is None else b.param(f"{b.target}.bias"))

    def module_loss(function):
        def build(b, m, input, target):
            if m.reduction != "mean" or getattr(m, "weight", None) is not None or \
                    getattr(m, "label_smoothing", 0.0) != 0.0:
                b.unsupported("settings other than the defaults")
            return function(b, input, target)
        return build

    modules = {
        torch.nn.Linear: module_linear,
        torch.nn.Sigmoid: lambda b, m, x: b.g.sigmoid(b.arg(x), name=b.name),
        torch.nn.Tanh: lambda b, m, x: b.g.tanh(b.arg(x), name=b.name),
        torch.nn.ReLU: lambda b, m, x: b.g.relu(b.arg(x), name=b.name),
        torch.nn.Identity: lambda b, m, x: b.arg(x),
        torch.nn.CrossEntropyLoss: module_loss(cross_entropy),
        torch.nn.MSELoss: module_loss(mse_loss),
    }
    return functions, methods, modules


class _FxBuilder:
    """The state of one from_torch import: the graph, the fx node at hand, and the
    engine node (or Python number) each fx node became."""

    def __init__(self, g, fx, root, examples):
        self.g, self.fx, self.root, self.examples = g, fx, root, examples
        self.env: dict = {}
        self.params: dict = {}
        self.node = None
        self.target = ""
        self.name = None

    def where(self) -> str:
        return f"at fx node {self.node.name!r} ({self.node.format_node()})"

    def unsupported(self, what: str):
        raise GraphError(f"from_torch: {what} has no matching gate, {self.where()}")

    def no_kwargs(self, kw, **allowed):
        for key, value in kw.items():
            if key not in allowed or value != allowed[key]:
                self.unsupported(f"argument {key}={value!r}")

    def aux(self, what: str) -> str:
        return f"{self.name}:{what}"

    def arg(self, a):
        if isinstance(a, Node):
            return a
        if isinstance(a, self.fx.Node):
            return self.env[a.name]
        if isinstance(a, (bool, int, float)):
            return self.g.constant(float(a), name=self.aux(f"c{len(self.g)}"))
        self.unsupported(f"an argument of type {type(a).__name__}")

    def param(self, name: str) -> Node:
        return self.params[name]

    def example(self, a):
        return self.examples[a.name]

    def ndim(self, a) -> int:
        return self.examples[a.name].ndim if isinstance(a, self.fx.Node) else 0


def from_torch(fn, example_inputs: dict) -> ComputationalGraph:
    """Trace a function or ``torch.nn.Module`` with ``torch.fx`` into a graph of gates.

    Called as ``ComputationalGraph.from_torch(fn, example_inputs)``; see there.
    """
    torch = need("torch", "from_torch", "torch")
    import torch.fx as fx

    if not callable(fn):
        raise GraphError(f"from_torch needs a function or a torch.nn.Module, got "
                         f"{type(fn).__name__}")
    if not isinstance(example_inputs, dict) or not all(isinstance(k, str)
                                                       for k in example_inputs):
        raise GraphError("from_torch: example_inputs must be a dict of argument names to "
                         "arrays or tensors")
    try:
        traced = fx.symbolic_trace(fn)
    except Exception as exc:       # fx raises many kinds for code it cannot trace
        raise GraphError(f"from_torch: torch.fx cannot trace {type(fn).__name__} "
                         f"({type(exc).__name__}: {exc})") from None
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    wanted = [n.target for n in placeholders]
    missing = [a for a in wanted if a not in example_inputs]
    unknown = [k for k in example_inputs if k not in wanted]
    if missing or unknown:
        raise GraphError(f"from_torch: example_inputs must name the arguments "
                         f"{', '.join(wanted) or '(none)'}; "
                         + (f"missing {', '.join(missing)}" if missing
                            else f"unknown {', '.join(unknown)}"))
    functions, methods, modules = _torch_table()
    b = _FxBuilder(None, fx, traced, {})
    for node in traced.graph.nodes:       # every operation has a gate, before running any
        b.node, b.target = node, getattr(node.target, "__name__", str(node.target))
        if node.op == "call_function" and node.target not in functions and not (
                node.target is getattr and node.args[1:] == ("T",)):
            b.unsupported(f"the function {b.target}")
        if node.op == "call_method" and node.target not in methods:
            b.unsupported(f"the tensor method .{node.target}()")
        if node.op == "call_module" and type(traced.get_submodule(node.target)) not in modules:
            b.unsupported(f"the module {node.target!r} of type "
                          f"{type(traced.get_submodule(node.target)).__name__}")
    # run once on the examples: every fx node's value (for shapes, and the check below)
    interp_values = {}

    class _Record(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            interp_values[n.name] = out
            return out

    examples = []
    for n in placeholders:
        v = example_inputs[n.target]
        examples.append(v if torch.is_tensor(v) else torch.as_tensor(np.asarray(v)))
    try:
        with torch.no_grad():
            _Record(traced).run(*examples)
    except Exception as exc:
        raise GraphError(f"from_torch: running the traced code on example_inputs failed "
                         f"({type(exc).__name__}: {exc})") from None
    g = ComputationalGraph()
    b = _FxBuilder(g, fx, traced, interp_values)
    for pname, p in (traced.named_parameters() if isinstance(fn, torch.nn.Module) else ()):
        b.params[pname] = g.parameter(pname, p.detach().cpu().numpy().copy())
    output = None
    for node in traced.graph.nodes:
        b.node, b.name = node, node.name
        if node.op == "call_module" and node.target not in g:
            b.name = node.target            # a module's output is named by its path
        b.target = getattr(node.target, "__name__", str(node.target))
        if node.op == "placeholder":
            b.env[node.name] = g.input(node.target)
        elif node.op == "get_attr":
            b.target = node.target
            if node.target in b.params:
                b.env[node.name] = b.params[node.target]
            else:
                value = interp_values[node.name]
                if not torch.is_tensor(value) or not value.dtype.is_floating_point and \
                        value.dtype not in (torch.int64, torch.int32):
                    b.unsupported(f"attribute of type {type(value).__name__}")
                b.env[node.name] = g.constant(value.detach().cpu().numpy().copy(),
                                              name=node.target)
        elif node.op == "call_function":
            rule = functions.get(node.target)
            if rule is None and node.target is getattr and node.args[1:] == ("T",):
                rule = methods["t"]
                node_args = node.args[:1]
            else:
                node_args = node.args
            if rule is None:
                b.unsupported(f"the function {b.target}")
            b.env[node.name] = _call(b, rule, node_args, node.kwargs)
        elif node.op == "call_method":
            rule = methods.get(node.target)
            if rule is None:
                b.unsupported(f"the tensor method .{node.target}()")
            b.env[node.name] = _call(b, rule, node.args, node.kwargs)
        elif node.op == "call_module":
            b.target = node.target
            module = traced.get_submodule(node.target)
            rule = modules.get(type(module))
            if rule is None:
                b.unsupported(f"the module {node.target!r} of type {type(module).__name__}")
            b.env[node.name] = _call(b, rule, node.args, node.kwargs, module)
        elif node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node):
                raise GraphError("from_torch: the function must return one tensor, got "
                                 f"{type(result).__name__}")
            output = b.env[result.name]
    if output is None or not isinstance(output, Node):
        raise GraphError("from_torch: the function returns no computed tensor")
    g.set_output(output)
    feed = {n.target: _numpy(example_inputs[n.target]) for n in placeholders}
    value = g.forward(feed)
    want = interp_values[result.name]
    want = want.detach().cpu().numpy() if torch.is_tensor(want) else np.asarray(want)
    close = np.shape(value) == want.shape and np.allclose(
        value, want, rtol=1e-4 if want.dtype == np.float32 else 1e-9, atol=1e-6, equal_nan=True)
    if not close:          # a mapping that missed a detail must not pass silently
        raise GraphError(f"from_torch: the gates give {value!r} where torch gives {want!r} "
                         f"on example_inputs; please report this as a bug")
    return g


def _numpy(v):
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _call(b, rule, args, kwargs, *lead):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, (list, tuple)) and any(isinstance(x, b.fx.Node) for x in a):
            b.unsupported("a list of tensors as argument")
    try:
        return rule(b, *lead, *args, **kwargs)
    except TypeError as exc:
        b.unsupported(f"a call with these arguments ({exc})")
    except GraphError as exc:
        if str(exc).startswith("from_torch"):
            raise
        raise GraphError(f"from_torch: {exc}, {b.where()}") from None


# ================================================================ ONNX

class _Static:
    """A tensor known when loading (a Constant operator, an integer initializer, or
    a graphengine constant): usable as an attribute-like argument (axes, exponent)."""

    def __init__(self, value, name):
        self.value, self.name = value, name


class _Labels:
    """A tensor only softmax cross-entropy may read: integer labels (a Cast to int,
    an int input, a Reshape to [-1]), or logits given a leading axis of 1."""

    def __init__(self, node, what, role="labels"):
        self.node, self.what, self.role = node, what, role


class _Unsqueezed:
    """An Unsqueeze's output: the node with axes of length 1 inserted. Read as
    ``broadcast_to`` when the axes lead, else as ``spread`` over them (to the
    Unsqueeze's shape, or an Expand's), and as one sample's logits (axis 0) by
    SoftmaxCrossEntropyLoss."""

    def __init__(self, node, axes, name):
        self.node, self.axes, self.name = node, axes, name


class _Compare:
    """A Greater or Equal: booleans, read once a Cast makes them numbers (as the
    masks ``step`` and ``max_mask`` of gradient graphs are exported)."""

    def __init__(self, op, x, y, name):
        self.op, self.x, self.y, self.name = op, x, y, name


class _OnnxBuilder:
    def __init__(self, g, opset, node):
        self.g, self.opset, self.node = g, opset, node
        self.env: dict = {}
        self.shapes: dict = {}

    @property
    def out(self) -> str:
        return self.node.output[0]

    def where(self) -> str:
        label = f" {self.node.name!r}" if self.node.name else ""
        return f"ONNX node{label} ({self.node.op_type} -> {self.out!r})"

    def fail(self, what: str):
        raise GraphError(f"from_onnx: {self.where()}: {what}")

    def attrs(self) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in self.node.attribute}

    def tensor(self, name: str) -> Node:
        v = self.env.get(name)
        if v is None:
            self.fail(f"input {name!r} is not defined")
        if isinstance(v, _Static):
            node = self.constant(v)
            self.env[name] = node
            return node
        if isinstance(v, _Labels):
            self.fail(f"input {name!r} ({v.what}) can only be the "
                      f"{v.role} of SoftmaxCrossEntropyLoss")
        if isinstance(v, _Unsqueezed):     # axes of length 1 added: leading, or anywhere
            node = self.g.op("broadcast_to", v.node, self.zeros(name), name=name) \
                if v.axes == list(range(len(v.axes))) else \
                self.g.op("spread", v.node, self.zeros(name), axis=tuple(v.axes), name=name)
            self.env[name] = node
            return node
        if isinstance(v, _Compare):
            self.fail(f"input {name!r} ({v.op}) holds booleans; only a Cast to a float "
                      "type reads them")
        return v

    def labels(self, name: str, what: str) -> Node:
        """The node of integer tensor ``name`` (class labels or one-hot indices): a
        graph input read as labels, or a constant; ``what`` names it in the error."""
        y = self.env.get(name)
        if isinstance(y, _Labels) and y.role == "labels":
            return y.node
        if isinstance(y, _Static):
            return self.constant(y)
        self.fail(f"{what} {name!r} must be integers")

    def shape(self, name: str) -> tuple:
        """The static shape of tensor ``name``, from ONNX shape inference."""
        shape = self.shapes.get(name)
        if shape is None:
            self.fail(f"the shape of {name!r} is not known (it must be static here)")
        return shape

    def zeros(self, name: str) -> Node:
        """A constant of zeros of the shape of ``name``: the shape-giving input of
        ``sum_to``, ``broadcast_to``, ``spread`` and ``one_hot``."""
        shape = self.shape(name)
        _elements(shape, f"tensor {name!r}")
        return self.g.constant(np.zeros(shape), name=f"{name}:shape")

    def constant(self, v: _Static) -> Node:
        # one engine constant per ONNX tensor, named as the tensor it came from
        if v.name in self.g:
            return self.g[v.name]
        value = v.value.astype(float) if v.value.dtype.kind in "iub" else v.value
        return self.g.constant(value, name=v.name)

    def static(self, name: str) -> np.ndarray:
        v = self.env.get(name)
        if isinstance(v, _Static):
            return v.value
        self.fail(f"input {name!r} must be a constant (an initializer or Constant)")

    def aux(self, what):
        return f"{self.out}:{what}"


def _onnx_table():
    def simple(op):
        def build(b, *ins):
            if len(ins) != 2 and op in ("add", "sub", "mul", "div", "matmul"):
                b.fail(f"expected 2 inputs, got {len(ins)}")
            return b.g.op(op, *[b.tensor(i) for i in ins], name=b.out)
        return build

    def unary(op):
        return lambda b, x: b.g.op(op, b.tensor(x), name=b.out)

    def max_(b, *ins):
        if not ins:
            b.fail("no inputs")
        node = b.tensor(ins[0])
        if len(ins) == 1:
            return node
        for k, name in enumerate(ins[1:], start=2):
            node = b.g.max(node, b.tensor(name), name=b.out if k == len(ins) else
                           b.aux(f"max{k}"))
        return node

    def pow_(b, x, y):
        v = b.env.get(y)
        if isinstance(v, _Static) and v.value.size == 1:
            return b.g.pow(b.tensor(x), float(v.value.reshape(())), name=b.out)
        return b.g.power(b.tensor(x), b.tensor(y), name=b.out)

    def identity(b, x):
        return b.env[x] if x in b.env else b.tensor(x)

    def cast(b, x):
        to = b.attrs().get("to")
        v = b.env.get(x)
        if to in (1, 11) and isinstance(v, _Compare):
            return mask(b, v)
        if to in (1, 11):                      # FLOAT, DOUBLE
            if isinstance(v, _Static):
                return _Static(v.value.astype(np.float32 if to == 1 else np.float64), v.name)
            if isinstance(v, _Labels):
                b.fail("casting integer labels back to floats is not supported")
            return b.tensor(x)
        if to in (6, 7):                       # INT32, INT64: class labels
            if isinstance(v, _Static):
                if not np.all(np.abs(v.value) < 2.0 ** 62):       # NaN fails too
                    b.fail(f"{x!r} holds values that are no integers")
                return _Static(v.value.astype(np.int64), v.name)
            if isinstance(v, _Labels):
                return v
            return _Labels(b.tensor(x), "a Cast to integers")
        b.fail(f"a Cast to element type {to} is not supported")

    def mask(b, c):
        # x > y is step(x - y) (for floats, x - y > 0 exactly when x > y); x == y is
        # 1 - step(x - y) - step(y - x); no derivative either way, as the gates
        x = b.tensor(c.x)
        zero = isinstance(b.env.get(c.y), _Static) and not np.any(b.env[c.y].value)
        if c.op == "Greater" and zero:
            return b.g.op("step", x, name=b.out)
        y = b.tensor(c.y)
        up = b.g.op("step", b.g.sub(x, y, name=b.aux("x-y")), name=b.aux("x>y")
                    if c.op == "Equal" else b.out)
        if c.op == "Greater":
            return up
        down = b.g.op("step", b.g.sub(y, x, name=b.aux("y-x")), name=b.aux("x<y"))
        # the 1 is named: an unnamed constant's automatic name could be an ONNX tensor's
        one = b.g.constant(1.0, name=b.aux("one"))
        return b.g.sub(b.g.sub(one, up, name=b.aux("x>=y")), down, name=b.out)

    def reshape(b, x, shape):
        if list(b.static(shape)) != [-1]:
            b.fail("Reshape is supported only to [-1], for the labels of "
                   "SoftmaxCrossEntropyLoss")
        v = b.env.get(x)
        return v if isinstance(v, _Labels) and v.role == "labels" else \
            _Labels(b.tensor(x), "a Reshape to [-1]")

    def unsqueeze(b, x, axes=None):
        axes = b.static(axes) if axes is not None else b.attrs().get("axes")
        if axes is None or len(axes) == 0:
            b.fail("Unsqueeze needs axes")
        axes = [int(a) for a in np.ravel(axes)]
        if any(a < 0 for a in axes):
            rank = len(b.shape(b.out))
            axes = [a % rank for a in axes]
        return _Unsqueezed(b.tensor(x), sorted(axes), b.out)

    def kept_sum(b, x, axes):
        # a sum keeping its axes: rowsum over the last axis, else sum_to its shape
        a = b.attrs()
        if b.opset < 13:
            axes = a.get("axes")
        elif axes is not None and axes != "":
            axes = b.static(axes)
        if (axes is None or len(axes) == 0) and a.get("noop_with_empty_axes", 0):
            return b.tensor(x)
        if axes is not None and len(axes) == 1 and (
                int(np.ravel(axes)[0]) == -1 or x in b.shapes and
                int(np.ravel(axes)[0]) == len(b.shapes[x]) - 1):
            return b.g.op("rowsum", b.tensor(x), name=b.out)
        return b.g.op("sum_to", b.tensor(x), b.zeros(b.out), name=b.out)

    def reduce(op, attr_axes_before):
        def build(b, x, axes=None):
            a = b.attrs()
            if a.get("keepdims", 1) != 0 and op == "sum":
                return kept_sum(b, x, axes)
            if a.get("keepdims", 1) != 0:
                b.fail("keepdims=1 is not supported (graphengine's mean drops "
                       "the reduced axes)")
            if b.opset < attr_axes_before:
                axes = a.get("axes")
            elif axes is not None and axes != "":
                axes = b.static(axes)
            if axes is None or len(axes) == 0:
                if a.get("noop_with_empty_axes", 0):
                    return b.tensor(x)
                axis = None
            else:
                axis = tuple(int(k) for k in np.ravel(axes))
                axis = axis[0] if len(axis) == 1 else axis
            return b.g.op(op, b.tensor(x), axis=axis, name=b.out)
        return build

    def transpose(b, x):
        perm = b.attrs().get("perm")
        n = len(perm) if perm is not None else 2
        if perm is None or list(perm) != [*range(n - 2), n - 1, n - 2]:
            b.fail(f"perm {perm} is not supported (only swapping the last two axes)")
        return b.g.op("transpose", b.tensor(x), name=b.out)

    def gemm(b, A, B, C=None):
        a = b.attrs()
        alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        left, right = b.tensor(A), b.tensor(B)
        if a.get("transA", 0):
            left = b.g.op("transpose", left, name=b.aux("A_T"))
        if a.get("transB", 0):
            right = b.g.op("transpose", right, name=b.aux("B_T"))
        last = C is None or C == ""
        out = b.g.matmul(left, right, name=b.out if last and alpha == 1.0 else b.aux("matmul"))
        if alpha != 1.0:
            out = b.g.mul(out, b.g.constant(float(alpha), name=b.aux("alpha")),
                          name=b.out if last else b.aux("scaled"))
        if last:
            return out
        c = b.tensor(C)
        if beta != 1.0:
            c = b.g.mul(c, b.g.constant(float(beta), name=b.aux("beta")), name=b.aux("C"))
        return b.g.add(out, c, name=b.out)

    def cross_entropy(b, scores, labels, weights=None):
        a = b.attrs()
        if weights not in (None, "") or "ignore_index" in a or a.get("reduction", b"mean") \
                not in ("mean", b"mean"):
            b.fail("only reduction='mean' without weights or ignore_index is supported")
        if len(b.node.output) > 1 and b.node.output[1]:
            b.fail("the second output (log_prob) is not supported")
        s = b.env.get(scores)
        s = s.node if isinstance(s, _Unsqueezed) and s.axes == [0] else b.tensor(scores)
        return b.g.softmax_cross_entropy(s, b.labels(labels, "labels"), name=b.out)


    def abs_(b, x):              # |x| = max(x, -x): derivative 0 at 0, as torch's
        node = b.tensor(x)
        return b.g.max(node, b.g.neg(node, name=b.aux("neg")), name=b.out)

    def softmax(b, x):
        axis = b.attrs().get("axis", -1)
        if axis != -1 and (x not in b.shapes or axis != len(b.shapes[x]) - 1):
            b.fail(f"Softmax over axis {axis} is not supported (only the last axis)")
        return b.g.op("softmax", b.tensor(x), name=b.out)

    def expand(b, x, shape):
        b.static(shape)
        v = b.env.get(x)
        if isinstance(v, _Unsqueezed):       # copies along the new axes: spread
            return b.g.op("spread", v.node, b.zeros(b.out), axis=tuple(v.axes), name=b.out)
        return b.g.op("broadcast_to", b.tensor(x), b.zeros(b.out), name=b.out)

    def one_hot(b, labels, depth, values):
        a = b.attrs()
        if a.get("axis", -1) not in (-1, 1) or list(np.ravel(b.static(values))) != [0, 1]:
            b.fail("only OneHot on the last axis with values [0, 1] is supported")
        y = b.labels(labels, "indices")
        depth = np.ravel(b.static(depth))
        if depth.size != 1:
            b.fail(f"OneHot's depth must be one number, got {depth.size}")
        if len(b.shape(b.out)) != 2 or b.shape(b.out)[1] != depth[0]:
            b.fail("only one-dimensional indices are supported")
        return b.g.op("one_hot", y, b.zeros(b.out), name=b.out)

    def compare(op):
        return lambda b, x, y: _Compare(op, x, y, b.out)

    return {
        "Abs": abs_, "Softmax": softmax, "Expand": expand, "OneHot": one_hot,
        "Greater": compare("Greater"), "Equal": compare("Equal"),
        "Add": simple("add"), "Sub": simple("sub"), "Mul": simple("mul"),
        "Div": simple("div"), "MatMul": simple("matmul"), "Max": max_, "Pow": pow_,
        "Neg": unary("neg"), "Exp": unary("exp"), "Log": unary("log"),
        "Sigmoid": unary("sigmoid"), "Tanh": unary("tanh"), "Relu": unary("relu"),
        "Identity": identity, "Cast": cast, "Reshape": reshape, "Unsqueeze": unsqueeze,
        "ReduceSum": reduce("sum", 13), "ReduceMean": reduce("mean", 18),
        "Transpose": transpose, "Gemm": gemm, "SoftmaxCrossEntropyLoss": cross_entropy,
    }


ONNX_OPS = ("Add, Sub, Mul, Div, MatMul, Max, Pow, Neg, Abs, Exp, Log, Sigmoid, Tanh, "
            "Relu, Softmax, Identity, Cast, Reshape, Unsqueeze, Expand, ReduceSum, "
            "ReduceMean, Transpose, Gemm, SoftmaxCrossEntropyLoss, OneHot, Greater, Equal, "
            "Constant")
MIN_OPSET = 13
FLOATS = {1: np.float32, 11: np.float64}
INTS = {6: np.int32, 7: np.int64}


def _read_model(model):
    onnx = need("onnx", "from_onnx", "onnx")
    if isinstance(model, onnx.ModelProto):
        size = model.ByteSize()
        if size > MAX_ONNX_BYTES:
            raise GraphError(f"from_onnx: the model has {size} bytes; the limit is "
                             f"{MAX_ONNX_BYTES}")
        return model
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            size = os.path.getsize(path)
            if size > MAX_ONNX_BYTES:
                raise GraphError(f"from_onnx: {path} has {size} bytes; the limit is "
                                 f"{MAX_ONNX_BYTES}")
            with open(path, "rb") as fh:
                data = fh.read(MAX_ONNX_BYTES + 1)
        except OSError as exc:
            raise GraphError(f"from_onnx: cannot read {path} ({exc.strerror})") from None
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    else:
        raise GraphError(f"from_onnx needs an onnx.ModelProto, bytes or a file path, got "
                         f"{type(model).__name__}")
    if len(data) > MAX_ONNX_BYTES:
        raise GraphError(f"from_onnx: the model has {len(data)} bytes; the limit is "
                         f"{MAX_ONNX_BYTES}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:          # protobuf's DecodeError, or its C++ twin
        raise GraphError(f"from_onnx: not a valid ONNX file, or a truncated one "
                         f"({type(exc).__name__}: {exc})") from None
    return proto


def _type_name(elem: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        return f"number {elem} (unknown)"


def _elements(dims, what: str) -> int:
    n = 1
    for d in dims:
        if d < 0:
            raise GraphError(f"from_onnx: {what} declares a negative dimension {d}")
        n *= d
        if n > MAX_ELEMENTS:
            raise GraphError(f"from_onnx: {what} declares the shape {list(dims)} "
                             f"({math.prod(dims)} elements); the limit is {MAX_ELEMENTS}")
    return n


def _check(model):
    import onnx

    graph = model.graph
    if not graph.output and not graph.node:
        raise GraphError("from_onnx: the model has no graph (an empty or truncated file?)")
    versions = {o.domain: o.version for o in model.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    top = onnx.defs.onnx_opset_version()
    if opset is None or not MIN_OPSET <= opset <= top:
        raise GraphError(f"from_onnx: the model's ONNX opset is {opset}; supported: "
                         f"{MIN_OPSET} to {top}")
    if len(graph.node) > MAX_NODES:
        raise GraphError(f"from_onnx: the model has {len(graph.node)} operators; the limit "
                         f"is {MAX_NODES}")
    total = 0
    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data:
            raise GraphError(f"from_onnx: initializer {t.name!r} keeps its data in an "
                             "external file, which is never read")
        if t.data_type not in FLOATS and t.data_type not in INTS:
            raise GraphError(f"from_onnx: initializer {t.name!r} has element type "
                             f"{_type_name(t.data_type)}; expected "
                             "FLOAT, DOUBLE, INT32 or INT64")
        total += _elements(t.dims, f"initializer {t.name!r}")
        if total > MAX_ELEMENTS:
            raise GraphError(f"from_onnx: the initializers hold {total} elements or more; "
                             f"the limit is {MAX_ELEMENTS}")
    if graph.sparse_initializer:
        raise GraphError("from_onnx: sparse initializers are not supported")
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        if not v.type.HasField("tensor_type"):
            raise GraphError(f"from_onnx: {v.name!r} is not a tensor")
        elem = v.type.tensor_type.elem_type
        if elem not in FLOATS and elem not in INTS:
            raise GraphError(f"from_onnx: {v.name!r} has element type "
                             f"{_type_name(elem)}; expected FLOAT, "
                             "DOUBLE, INT32 or INT64")
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim if d.HasField("dim_value")]
        _elements(dims, f"tensor {v.name!r}")
    for n in graph.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in _SUPPORTED:
            domain = f" of domain {n.domain!r}" if n.domain not in ("", "ai.onnx") else ""
            label = f" {n.name!r}" if n.name else ""
            raise GraphError(f"from_onnx: unsupported operator {n.op_type}{domain} (node"
                             f"{label} -> {list(n.output)}); supported: {ONNX_OPS}")
        for a in n.attribute:
            if a.g.ByteSize() or len(a.graphs):
                raise GraphError(f"from_onnx: node {n.name!r} has a subgraph attribute")
            if a.HasField("t"):
                _elements(a.t.dims, f"the tensor attribute of node {n.name or n.op_type!r}")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:      # onnx's ValidationError, and a few others
        raise GraphError(f"from_onnx: the model is not valid ONNX "
                         f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") \
            from None
    if len(graph.output) != 1:
        raise GraphError(f"from_onnx: the model has {len(graph.output)} outputs; a graph "
                         "has one")
    return opset


_SUPPORTED = set(ONNX_OPS.split(", "))
# operators whose gates need static shapes (of a shape-giving input), from inference
_SHAPED = {"Expand", "OneHot", "ReduceSum", "Unsqueeze", "Softmax"}


def _sigmoid_grads(graph):
    """The operators of ``sigmoid_grad`` as to_onnx writes them, e / ((e + 1)(e + 1))
    with e = Exp(Neg(Abs(x))) and nothing else reading the steps: the Div's output ->
    x, and the steps' outputs (read back as the one stable gate, not seven)."""
    from collections import Counter

    from onnx import numpy_helper

    producer = {o: n for n in graph.node for o in n.output}
    uses = Counter(i for n in graph.node for i in n.input)
    uses.update(v.name for v in graph.output)

    def made_by(name, op):
        n = producer.get(name)
        ok = n is not None and n.op_type == op and n.domain in ("", "ai.onnx") and \
            len(n.input) == (0 if op == "Constant" else 1 if op in ("Abs", "Neg", "Exp") else 2)
        return n if ok else None

    def is_one(name):
        n = made_by(name, "Constant")
        if n is None or [a.name for a in n.attribute] != ["value"]:
            return False
        try:
            v = numpy_helper.to_array(n.attribute[0].t)
        except Exception:
            return False
        return v.size == 1 and v.dtype.kind == "f" and float(v.reshape(())) == 1.0

    fused, inside = {}, set()
    for n in graph.node:
        if n.op_type != "Div" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        e, m = n.input
        exp, mul = made_by(e, "Exp"), made_by(m, "Mul")
        if exp is None or mul is None or mul.input[0] != mul.input[1]:
            continue
        neg = made_by(exp.input[0], "Neg")
        absx = neg and made_by(neg.input[0], "Abs")
        add = made_by(mul.input[0], "Add")
        if not absx or add is None or e not in add.input or \
                not is_one(add.input[1] if add.input[0] == e else add.input[0]):
            continue
        steps = {absx.output[0]: 1, neg.output[0]: 1, e: 2, add.output[0]: 2, m: 1}
        if all(uses[k] == count for k, count in steps.items()):
            fused[n.output[0]] = absx.input[0]
            inside.update(steps)
    return fused, inside


def _static_shapes(model) -> dict:
    """Tensor name -> shape, where ONNX shape inference finds every dimension. It
    reads the model's declared shapes and constants; it runs no operator."""
    import onnx

    # from the declared inputs and the operators only: a file's own claims about the
    # other tensors (value_info, the output's shape) are left out, so they cannot lie
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for v in bare.graph.output:
        v.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=False)
    except Exception:            # a model inference cannot follow: no shapes known
        return {}
    shapes = {}
    for v in list(inferred.graph.input) + list(inferred.graph.value_info) + \
            list(inferred.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[v.name] = tuple(d.dim_value for d in t.shape.dim)
    return shapes


def from_onnx(model) -> ComputationalGraph:
    """Build an ONNX model into a graph of gates.

    Called as ``ComputationalGraph.from_onnx(model)``; see there.
    """
    model = _read_model(model)
    opset = _check(model)
    from onnx import numpy_helper

    graph = model.graph
    props = {p.key: p.value for p in model.metadata_props}
    try:
        constants = set(json.loads(props.get("graphengine.constants", "[]")))
    except (ValueError, TypeError):
        constants = set()
    g = ComputationalGraph()
    env: dict = {}
    for t in graph.initializer:
        try:
            value = numpy_helper.to_array(t)
        except Exception as exc:
            raise GraphError(f"from_onnx: initializer {t.name!r} is malformed "
                             f"({type(exc).__name__}: {exc})") from None
        if value.size != math.prod(t.dims):
            raise GraphError(f"from_onnx: initializer {t.name!r} holds {value.size} "
                             f"elements for the shape {list(t.dims)}")
        value = value.reshape(tuple(t.dims)).copy()
        if t.data_type in INTS or t.name in constants:
            env[t.name] = _Static(value, t.name)
        else:
            env[t.name] = g.parameter(t.name, value)
    for v in graph.input:
        if v.name in env:
            continue                      # an input with a default: the initializer
        node = g.input(v.name)
        env[v.name] = _Labels(node, "an integer input") \
            if v.type.tensor_type.elem_type in INTS else node
    table = _onnx_table()
    shapes = _static_shapes(model) if any(n.op_type in _SHAPED for n in graph.node) else {}
    fused, inside = _sigmoid_grads(graph)
    for n in graph.node:
        b = _OnnxBuilder(g, opset, n)
        b.env, b.shapes = env, shapes
        if n.output and n.output[0] in inside:
            continue                   # a step of a sigmoid_grad, built as one gate below
        if n.output and n.output[0] in fused:
            env[b.out] = g.op("sigmoid_grad", b.tensor(fused[b.out]), name=b.out)
            continue
        if n.op_type == "Constant":
            attrs = b.attrs()
            if "value" not in attrs:
                b.fail("only a Constant with a tensor 'value' is supported")
            try:
                value = numpy_helper.to_array(attrs["value"]).copy()
            except Exception as exc:
                b.fail(f"a malformed tensor ({type(exc).__name__}: {exc})")
            env[b.out] = _Static(value, b.out)
            continue
        try:
            env[b.out] = table[n.op_type](b, *n.input)
        except TypeError as exc:
            b.fail(f"unexpected inputs ({exc})")
        except GraphError as exc:
            if str(exc).startswith("from_onnx"):
                raise
            b.fail(str(exc))
        for extra in n.output[1:]:
            if extra:
                b.fail(f"a second output {extra!r} is not supported")
    out = graph.output[0].name
    result = env.get(out)
    if result is None:
        raise GraphError(f"from_onnx: the output {out!r} is computed by no operator")
    if not isinstance(result, Node):
        last = _OnnxBuilder(g, opset, graph.node[-1])
        last.env, last.shapes = env, shapes
        result = last.tensor(out) if isinstance(result, (_Static, _Unsqueezed)) else None
        if result is None:
            raise GraphError(f"from_onnx: the output {out!r} is not a float tensor")
    if result.kind != "gate":
        result = g.add(result, 0.0, name=f"{out}:output")
    g.set_output(result)
    return g
