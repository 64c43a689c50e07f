"""Export to other engines: a ``torch.nn.Module`` (``to_torch``) and an ONNX model
(``to_onnx``), for when a model outgrows graphengine (a GPU, several machines,
deployment).

Each target has one table here, gate name -> rule: ``TORCH`` rules take the gate and
its input tensors and return the output tensor; ``ONNX`` rules take an
``OnnxBuilder``, the gate and its input tensor names, and return the output's name.
The rules live here, not beside the gates, so that ``gates.py`` imports nothing and
knows nothing of torch or ONNX. A gate with no row (a user's own) exports through its
own method ``to_torch(self, *tensors)`` or ``to_onnx(self, builder, *names)``; without
one, exporting it is a ``GraphError`` naming the node and the gate.

torch and onnx are optional (extras ``torch`` and ``onnx``): they are imported when a
function needs them, and a missing one is an ``ImportError`` naming it.
"""

from __future__ import annotations

import copy
import json

import numpy as np

from . import gates as G
from .errors import GraphError

__all__ = ["to_torch", "to_onnx", "TORCH", "ONNX", "OnnxBuilder", "OPSET", "float_dtype"]

OPSET = 18          # the default; ReduceMean takes its axes as an input from 18 on
MIN_OPSET = 17


def need(module: str, what: str, extra: str):
    """Import ``module`` or raise an ImportError saying who needs it and how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {module.split('.')[0]}, which is not installed: "
                          f"pip install 'graphengine[{extra}]'") from None


def float_dtype(values) -> np.dtype:
    """float32 when every array among ``values`` is float32 (and there is one), else
    float64: Python floats follow the arrays, as in numpy and torch."""
    arrays = [v for v in values if isinstance(v, np.ndarray)]
    if arrays and all(a.dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _stored(g):
    leaves = [n.name for n in g if n.kind in ("parameter", "constant")]
    labels = _labels_only(g, leaves)
    return [g[n].value for n in leaves if n not in labels]


def _builtin(gate) -> bool:
    return bool(gate.op) and G.GATES.get(gate.op) is type(gate)


def _rule(table: dict, gate, name: str, target: str, hook: str):
    """The export rule of ``gate`` (node ``name``): its own method, else its row."""
    if callable(getattr(gate, hook, None)):
        return None
    if _builtin(gate) and gate.op in table:
        return table[gate.op]
    raise GraphError(f"node {name!r}: gate {type(gate).__name__} has no {target} rule; "
                     f"give it a method {hook}(self, ...) or export a graph of built-in gates")


# ---------------------------------------------------------------- torch

def _cross_entropy_torch(gate, logits, labels):
    from torch.nn.functional import cross_entropy

    z = logits if logits.ndim == 2 else logits.reshape(1, -1)
    return cross_entropy(z, labels.reshape(-1).long())


def _reduce_torch(method):
    def rule(gate, x):
        return getattr(x, method)() if gate.axis is None else getattr(x, method)(dim=gate.axis)
    return rule


def _sum_to_torch(u, shape):
    # numpy's broadcasting undone: leading axes and size-1 axes summed, as the gate does
    if tuple(u.shape) != tuple(shape):
        u = u.sum_to_size(tuple(shape))
        if u.ndim != len(shape):
            u = u.reshape(tuple(shape))
    return u


def _spread_torch(gate, u, x):
    shape = tuple(x.shape)
    if gate.axis is not None:
        axes = np.atleast_1d(gate.axis)
        for a in sorted(int(a) % (u.ndim + len(axes)) for a in axes):
            u = u.unsqueeze(a)
    out = u.broadcast_to(shape)
    if not gate.mean:
        return out
    n = float(np.prod(shape) if gate.axis is None
              else np.prod([shape[a] for a in np.atleast_1d(gate.axis)]))
    return out / n


def _sigmoid_grad_torch(gate, x):
    e = (-x.abs()).exp()                      # e^-|x| / (1 + e^-|x|)^2: stable at any x
    return e / ((1.0 + e) * (1.0 + e))


def _max_mask_torch(gate, x, y):
    return (x > y).to(x.dtype) + 0.5 * (x == y).to(x.dtype)


def _one_hot_torch(gate, labels, logits):
    from torch.nn.functional import one_hot

    idx = labels.reshape(-1).long()
    return one_hot(idx, logits.shape[-1]).to(logits.dtype).reshape(logits.shape)


def _matmul_parts(a, b, u):
    # numpy's matmul of vectors, as matrices: a (k,) is (1, k), b (k,) is (k, 1), and
    # the upstream u gets the axes the product dropped
    a2 = a.unsqueeze(0) if a.ndim == 1 else a
    b2 = b.unsqueeze(-1) if b.ndim == 1 else b
    u2 = u.unsqueeze(-1).unsqueeze(-1) if a.ndim == 1 and b.ndim == 1 else \
        u.unsqueeze(-2) if a.ndim == 1 else u.unsqueeze(-1) if b.ndim == 1 else u
    return a2, b2, u2


def _matmul_grad_a_torch(gate, u, b, a):
    a2, b2, u2 = _matmul_parts(a, b, u)
    return _sum_to_torch(u2.matmul(b2.transpose(-1, -2)), a2.shape).reshape(a.shape)


def _matmul_grad_b_torch(gate, a, u, b):
    a2, b2, u2 = _matmul_parts(a, b, u)
    return _sum_to_torch(a2.transpose(-1, -2).matmul(u2), b2.shape).reshape(b.shape)


def _seed_torch(gate, x):
    import torch

    if x.ndim:
        raise GraphError(f"seed: a gradient graph needs a scalar output, got shape "
                         f"{tuple(x.shape)}")
    return torch.ones_like(x)


# gate name -> rule(gate, *tensors) -> tensor; every built-in gate has one row
TORCH = {
    "add": lambda gate, x, y: x + y,
    "sub": lambda gate, x, y: x - y,
    "mul": lambda gate, x, y: x * y,
    "div": lambda gate, x, y: x / y,
    "max": lambda gate, x, y: x.maximum(y),
    "power": lambda gate, x, y: x.pow(y),
    "neg": lambda gate, x: -x,
    "pow": lambda gate, x: x.pow(gate.p),
    "exp": lambda gate, x: x.exp(),
    "log": lambda gate, x: x.log(),
    "sigmoid": lambda gate, x: x.sigmoid(),
    "tanh": lambda gate, x: x.tanh(),
    "relu": lambda gate, x: x.relu(),
    "matmul": lambda gate, a, b: a.matmul(b),
    "transpose": lambda gate, x: x.transpose(-1, -2),
    "sum": _reduce_torch("sum"),
    "mean": _reduce_torch("mean"),
    "mse": lambda gate, pred, target: ((pred - target) ** 2).mean(),
    "softmax_cross_entropy": _cross_entropy_torch,
    # the gates of backward passes (ge.grad), so gradient graphs export too
    "sum_to": lambda gate, u, x: _sum_to_torch(u, x.shape),
    "broadcast_to": lambda gate, a, x: a.broadcast_to(x.shape),
    "spread": _spread_torch,
    "rowsum": lambda gate, x: x.sum(dim=-1, keepdim=True),
    "step": lambda gate, x: (x > 0).to(x.dtype),
    "max_mask": _max_mask_torch,
    "sigmoid_grad": _sigmoid_grad_torch,
    "softmax": lambda gate, x: x.softmax(dim=-1),
    "one_hot": _one_hot_torch,
    "matmul_grad_a": _matmul_grad_a_torch,
    "matmul_grad_b": _matmul_grad_b_torch,
    "seed": _seed_torch,
}

_MODULE_CLASS = None


def _module_class():
    # the class derives from torch.nn.Module, so it is made once torch is imported;
    # module-level __getattr__ below finds it by name (pickling, torch.save)
    global _MODULE_CLASS
    if _MODULE_CLASS is not None:
        return _MODULE_CLASS
    import torch

    class GraphModule(torch.nn.Module):
        """A graphengine graph as a torch Module: ``module(**inputs)`` returns the output.

        Parameters are the graph's, by name (a name with dots sits in submodules, as
        torch names them); constants are buffers; the gates run in topological order.
        """

        def __init__(self, g, dtype):
            super().__init__()
            plan = g.plan()
            self.dtype = dtype
            self.input_names = tuple(n.name for n in g.inputs() if n.name in plan.slot)
            self.output_name = plan.names[plan.out]
            self._size = len(plan.names)
            self._out = plan.out
            self._inputs = tuple((plan.slot[n], n) for n in self.input_names)
            steps = []
            for gate, ins, out in plan.gates:
                name = plan.names[out]
                rule = _rule(TORCH, gate, name, "torch", "to_torch")
                fresh = type(gate)(**gate.config()) if rule is not None else copy.copy(gate)
                steps.append((gate.op if rule is not None else None, fresh, ins, out))
            self._steps = tuple(steps)
            self.constants = torch.nn.Module()
            leaves = []
            for node in g.nodes():
                if node.kind == "parameter":
                    value = torch.nn.Parameter(torch.as_tensor(np.asarray(node.value),
                                                               dtype=dtype).clone())
                    _register(self, node.name, value)
                    if node.name in plan.slot:
                        leaves.append((plan.slot[node.name], "p", node.name))
                elif node.kind == "constant" and node.name in plan.slot:
                    key = f"c{len(leaves)}"
                    self.constants.register_buffer(
                        key, torch.as_tensor(np.asarray(node.value), dtype=dtype).clone(),
                        persistent=False)
                    leaves.append((plan.slot[node.name], "c", key))
            self._leaves = tuple(leaves)

        def _tensor(self, name, v, device, dtype):
            if not torch.is_tensor(v):
                try:
                    v = torch.as_tensor(np.asarray(v, dtype=np.float64))
                except (TypeError, ValueError):
                    raise GraphError(f"input {name!r}: expected numbers, got "
                                     f"{type(v).__name__}") from None
            return v.to(device=device, dtype=dtype)

        def forward(self, *args, **inputs):
            if len(args) > len(self.input_names):
                raise GraphError(f"the module takes {len(self.input_names)} inputs "
                                 f"({', '.join(self.input_names)}), got {len(args)}")
            for name, v in zip(self.input_names, args, strict=False):
                if name in inputs:
                    raise GraphError(f"input {name!r} given twice")
                inputs[name] = v
            unknown = [k for k in inputs if k not in self.input_names]
            if unknown:
                raise GraphError(f"{unknown[0]!r} is not an input of the graph; its inputs "
                                 f"are {', '.join(self.input_names) or 'none'}")
            # inputs follow the parameters, wherever .to() has moved them
            ref = next(self.parameters(), next(self.buffers(), None))
            device = ref.device if ref is not None else torch.device("cpu")
            dtype = ref.dtype if ref is not None and ref.is_floating_point() else self.dtype
            vals = [None] * self._size
            for slot, name in self._inputs:
                if name not in inputs:
                    raise GraphError(f"input {name!r} needs a value: the output "
                                     f"{self.output_name!r} depends on it")
                vals[slot] = self._tensor(name, inputs[name], device, dtype)
            for slot, kind, key in self._leaves:
                vals[slot] = (self.get_parameter(key) if kind == "p"
                              else self.constants.get_buffer(key))
            for op, gate, ins, out in self._steps:
                args = [vals[i] for i in ins]
                vals[out] = TORCH[op](gate, *args) if op is not None else gate.to_torch(*args)
            return vals[self._out]

        def extra_repr(self):
            params = ", ".join(f"{k} {tuple(p.shape)}" for k, p in self.named_parameters())
            return (f"inputs: {', '.join(self.input_names)}; output: {self.output_name} "
                    f"({len(self._steps)} gates); parameters: {params or 'none'}")

    GraphModule.__module__ = __name__
    GraphModule.__qualname__ = "GraphModule"
    _MODULE_CLASS = GraphModule
    return GraphModule


def __getattr__(name):
    if name == "GraphModule":
        need("torch", "graphengine.export.GraphModule", "torch")
        return _module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register(module, name: str, param) -> None:
    # torch keeps dotted names as paths of submodules: "0.weight" is parameter
    # "weight" of submodule "0", which is how named_parameters() spells it back
    import torch

    *path, leaf = name.split(".")
    owner = module
    try:
        if "" in path or not leaf:
            raise KeyError("an empty part between dots")
        for part in path:
            sub = owner._modules.get(part)
            if sub is None:
                sub = torch.nn.Module()
                owner.add_module(part, sub)
            owner = sub
        owner.register_parameter(leaf, param)
    except (KeyError, TypeError) as exc:
        msg = exc.args[0] if exc.args else exc
        raise GraphError(f"parameter {name!r} cannot be a torch parameter name: {msg}") \
            from None


def to_torch(g, dtype=None):
    """The graph as a ``torch.nn.Module`` computing the same function with torch.

    ``module(**inputs)`` (tensors, arrays or numbers by input name, or positionally
    in the order of ``g.inputs()``) returns the output as a tensor equal to
    ``g.forward``. The graph's parameters are the module's ``nn.Parameter`` s,
    ``dict(module.named_parameters())`` keyed by the parameter names, so it trains
    with torch's optimizers, on a GPU (``module.to("cuda")``) or under
    ``DistributedDataParallel``; constants are buffers. Inputs are cast to the
    module's dtype: float64, or float32 when the graph's arrays are float32 (or
    ``dtype``, a ``torch.dtype``). Softmax cross-entropy takes its labels as
    numbers holding class indices, as graphengine does. Parameters the
    output does not depend on are there too (``DistributedDataParallel`` then needs
    ``find_unused_parameters=True``).

    Parameters
    ----------
    g : ComputationalGraph
    dtype : torch.dtype, optional

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> f = (g.input("x") + g.parameter("w", 2.0)) * g.input("z")
    >>> m = ge.export.to_torch(g)
    >>> m(x=1.0, z=3.0).item(), dict(m.named_parameters())["w"].item()
    (9.0, 2.0)
    """
    torch = need("torch", "to_torch", "torch")
    if dtype is None:
        dtype = torch.float32 if float_dtype(_stored(g)) == np.float32 else torch.float64
    elif dtype not in (torch.float32, torch.float64):
        raise GraphError(f"to_torch: dtype must be torch.float32 or torch.float64, got {dtype}")
    return _module_class()(g, dtype)


# ---------------------------------------------------------------- ONNX

class OnnxBuilder:
    """What an ONNX rule adds to the model: ``node(op, inputs, **attributes)`` adds
    an operator and returns its output's name (``out`` names it), ``const(value)``
    adds a constant tensor of the graph's float type (``int64=True`` for axes and
    shapes) and returns its name; ``elem`` is the graph's float element type,
    ``opset`` the model's, and ``values`` maps node names to their values (shapes)."""

    def __init__(self, elem: int, values: dict, opset: int = OPSET):
        from onnx import helper, numpy_helper

        self._helper, self._numpy_helper = helper, numpy_helper
        self.elem = elem
        self.opset = opset
        self.np_dtype = np.float32 if elem == 1 else np.float64
        self.values = values
        self.nodes = []
        self.initializers = []
        self._names: set = set()
        self.target = ""        # the node whose rule is running, for fresh names
        self.int64_inputs: set = set()     # inputs declared int64 (labels)

    def fresh(self, hint: str) -> str:
        name = f"{self.target}:{hint}"
        k = 1
        while name in self._names:
            k += 1
            name = f"{self.target}:{hint}{k}"
        self._names.add(name)
        return name

    def node(self, op: str, inputs, out: str | None = None, **attributes) -> str:
        out = out if out is not None else self.fresh(op.lower())
        self._names.add(out)
        self.nodes.append(self._helper.make_node(op, list(inputs), [out],
                                                 name=out, **attributes))
        return out

    def const(self, value, int64: bool = False, name: str | None = None) -> str:
        name = name if name is not None else self.fresh("const")
        self._names.add(name)
        array = np.asarray(value, dtype=np.int64 if int64 else self.np_dtype)
        tensor = self._numpy_helper.from_array(array, name="")
        self.nodes.append(self._helper.make_node("Constant", [], [name], name=name,
                                                 value=tensor))
        return name


def _reduce_onnx(op):
    def rule(b, gate, x, out):
        if np.ndim(b.values[x]) == 0:      # nothing to reduce on a scalar
            return b.node("Identity", [x], out)
        if gate.axis is None:
            return b.node(op, [x], out, keepdims=0)
        axes = [int(a) for a in np.atleast_1d(gate.axis)]
        if op == "ReduceMean" and b.opset < 18:   # an attribute before opset 18
            return b.node(op, [x], out, keepdims=0, axes=axes)
        return b.node(op, [x, b.const(axes, int64=True)], out, keepdims=0)
    return rule


def _mse_onnx(b, gate, pred, target, out):
    d = b.node("Sub", [pred, target])
    return b.node("ReduceMean", [b.node("Mul", [d, d])], out, keepdims=0)


def _cross_entropy_onnx(b, gate, logits, labels, out):
    if np.ndim(b.values[logits]) == 1:
        logits = b.node("Unsqueeze", [logits, b.const([0], int64=True)])
    if labels not in b.int64_inputs:           # labels as numbers: to class indices
        ndim = np.ndim(b.values[labels])
        labels = b.node("Cast", [labels], to=7)                  # 7: INT64
        if ndim != 1:
            labels = b.node("Reshape", [labels, b.const([-1], int64=True)])
    return b.node("SoftmaxCrossEntropyLoss", [logits, labels], out, reduction="mean")


def _simple(op):
    return lambda b, gate, *names_out: b.node(op, list(names_out[:-1]), names_out[-1])


# ---- the gates of backward passes: shapes are static in an exported model, so the
# rules read them from the values (b.values) and spell them as constants

def _shape_of(b, name) -> tuple:
    return tuple(np.shape(b.values[name]))


def _sum_to_onnx(b, x, frm: tuple, to: tuple, out=None):
    """``x`` of shape ``frm`` summed down to ``to``, as the gate does: ReduceSum
    (keepdims=0) over the leading axes, then ReduceSum (keepdims=1) over the axes
    broadcast from length 1."""
    frm, to = tuple(frm), tuple(to)
    if frm == to:
        return b.node("Identity", [x], out)
    lead = len(frm) - len(to)
    ones = [i for i, n in enumerate(to) if n == 1 and frm[lead + i] != 1]
    if lead:
        x = b.node("ReduceSum", [x, b.const(list(range(lead)), int64=True)],
                   None if ones else out, keepdims=0)
    if ones:
        x = b.node("ReduceSum", [x, b.const(ones, int64=True)], out, keepdims=1)
    return x


def _expand_onnx(b, x, frm: tuple, to: tuple, out=None):
    if tuple(frm) == tuple(to):
        return b.node("Identity", [x], out)
    return b.node("Expand", [x, b.const(list(to), int64=True)], out)


def _spread_onnx(b, gate, u, x, out):
    shape, ushape = _shape_of(b, x), _shape_of(b, u)
    if gate.axis is not None:
        axes = np.atleast_1d(gate.axis)
        rank = len(ushape) + len(axes)
        axes = sorted(int(a) % rank for a in axes)
        u = b.node("Unsqueeze", [u, b.const(axes, int64=True)])
        ushape = tuple(np.expand_dims(np.empty(ushape), axes).shape)
    if not gate.mean:
        return _expand_onnx(b, u, ushape, shape, out)
    n = float(np.prod(shape) if gate.axis is None
              else np.prod([shape[a] for a in np.atleast_1d(gate.axis)]))
    return b.node("Div", [_expand_onnx(b, u, ushape, shape), b.const(n)], out)


def _step_onnx(b, gate, x, out):
    return b.node("Cast", [b.node("Greater", [x, b.const(0.0)])], out, to=b.elem)


def _max_mask_onnx(b, gate, x, y, out):
    greater = b.node("Cast", [b.node("Greater", [x, y])], to=b.elem)
    tie = b.node("Cast", [b.node("Equal", [x, y])], to=b.elem)
    return b.node("Add", [greater, b.node("Mul", [tie, b.const(0.5)])], out)


def _sigmoid_grad_onnx(b, gate, x, out):
    e = b.node("Exp", [b.node("Neg", [b.node("Abs", [x])])])     # e^-|x|: stable
    d = b.node("Add", [e, b.const(1.0)])
    return b.node("Div", [e, b.node("Mul", [d, d])], out)


def _one_hot_onnx(b, gate, labels, logits, out):
    shape, ndim = _shape_of(b, logits), len(_shape_of(b, labels))
    if labels not in b.int64_inputs:
        labels = b.node("Cast", [labels], to=7)                   # 7: INT64
    if ndim != 1:
        labels = b.node("Reshape", [labels, b.const([-1], int64=True)])
    # onnxruntime's OneHot makes integers for any index type; Cast to the float type
    hot = b.node("OneHot", [labels, b.const(shape[-1], int64=True),
                            b.const([0, 1], int64=True)], axis=-1)
    if len(shape) == 1:
        hot = b.node("Cast", [hot], to=b.elem)
        return _sum_to_onnx(b, hot, (1, shape[0]), shape, out)
    return b.node("Cast", [hot], out, to=b.elem)


def _transpose_last(b, x, ndim):
    return b.node("Transpose", [x], perm=[*range(ndim - 2), ndim - 1, ndim - 2])


def _matmul_operands(b, a, bb, u):
    """numpy's matmul of vectors as matrices: a (k,) is (1, k), b (k,) is (k, 1) and
    the upstream u gets the axes the product dropped. Names and shapes."""
    sa, sb, su = _shape_of(b, a), _shape_of(b, bb), _shape_of(b, u)
    if len(sa) == 1:
        a, sa = b.node("Unsqueeze", [a, b.const([0], int64=True)]), (1,) + sa
        u = b.node("Unsqueeze", [u, b.const([len(su) - 1 if su else 0], int64=True)])
        su = su[:-1] + (1,) + su[-1:]
    if len(sb) == 1:
        bb, sb = _column(b, bb, sb), sb + (1,)
        u, su = _column(b, u, su), su + (1,)
    return (a, sa), (bb, sb), (u, su)


def _column(b, x, shape):
    # a trailing axis of length 1: for a vector, as the transpose of a row
    if len(shape) == 1:
        return _transpose_last(b, b.node("Unsqueeze", [x, b.const([0], int64=True)]), 2)
    return b.node("Unsqueeze", [x, b.const([len(shape)], int64=True)])


def _matmul_shape(s1, s2):
    return tuple(np.broadcast_shapes(s1[:-2], s2[:-2])) + (s1[-2], s2[-1])


def _matmul_grad_a_onnx(b, gate, u, bb, a, out):
    target = _shape_of(b, a)
    if len(target) == 1 and len(_shape_of(b, bb)) == 1:        # u is a scalar: u * b
        return b.node("Mul", [u, bb], out)
    (_, _), (b2, sb), (u2, su) = _matmul_operands(b, a, bb, u)
    prod = b.node("MatMul", [u2, _transpose_last(b, b2, len(sb))])
    sp = _matmul_shape(su, sb[:-2] + (sb[-1], sb[-2]))
    return _sum_to_onnx(b, prod, sp, target, out)


def _matmul_grad_b_onnx(b, gate, a, u, bb, out):
    target = _shape_of(b, bb)
    if len(target) == 1 and len(_shape_of(b, a)) == 1:
        return b.node("Mul", [u, a], out)
    (a2, sa), (_, sb), (u2, su) = _matmul_operands(b, a, bb, u)
    if len(target) == 1:                # b^T's gradient, (..., 1, k), summed to (k,)
        prod = b.node("MatMul", [_transpose_last(b, u2, len(su)), a2])
        sp = _matmul_shape(su[:-2] + (su[-1], su[-2]), sa)
    else:
        prod = b.node("MatMul", [_transpose_last(b, a2, len(sa)), u2])
        sp = _matmul_shape(sa[:-2] + (sa[-1], sa[-2]), su)
    return _sum_to_onnx(b, prod, sp, target, out)


# gate name -> rule(builder, gate, *input names, out) -> output name
ONNX = {
    "add": _simple("Add"),
    "sub": _simple("Sub"),
    "mul": _simple("Mul"),
    "div": _simple("Div"),
    "max": _simple("Max"),
    "power": _simple("Pow"),
    "neg": _simple("Neg"),
    "pow": lambda b, gate, x, out: b.node("Pow", [x, b.const(gate.p)], out),
    "exp": _simple("Exp"),
    "log": _simple("Log"),
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "relu": _simple("Relu"),
    "matmul": _simple("MatMul"),
    "transpose": lambda b, gate, x, out: b.node(
        "Transpose", [x], out, perm=[*range(np.ndim(b.values[x]) - 2),
                                     np.ndim(b.values[x]) - 1, np.ndim(b.values[x]) - 2]),
    "sum": _reduce_onnx("ReduceSum"),
    "mean": _reduce_onnx("ReduceMean"),
    "mse": _mse_onnx,
    "softmax_cross_entropy": _cross_entropy_onnx,
    # the gates of backward passes (ge.grad), so gradient graphs export too
    "sum_to": lambda b, gate, u, x, out: _sum_to_onnx(b, u, _shape_of(b, u),
                                                      _shape_of(b, x), out),
    "broadcast_to": lambda b, gate, a, x, out: _expand_onnx(b, a, _shape_of(b, a),
                                                            _shape_of(b, x), out),
    "spread": _spread_onnx,
    "rowsum": lambda b, gate, x, out: b.node(
        "ReduceSum", [x, b.const([-1], int64=True)], out, keepdims=1),
    "step": _step_onnx,
    "max_mask": _max_mask_onnx,
    "sigmoid_grad": _sigmoid_grad_onnx,
    "softmax": lambda b, gate, x, out: b.node("Softmax", [x], out, axis=-1),
    "one_hot": _one_hot_onnx,
    "matmul_grad_a": _matmul_grad_a_onnx,
    "matmul_grad_b": _matmul_grad_b_onnx,
    "seed": lambda b, gate, x, out: b.const(1.0, name=out),     # d(x)/d(x), x a scalar
}


def _labels_only(g, names) -> set:
    # leaves read only as the labels of a softmax cross-entropy (or of the one_hot of
    # its gradient graph): they hold class indices, so their dtype says nothing of the
    # graph's (and inputs are int64 in ONNX)
    found = set()
    for name in names:
        uses = [(v, s) for _, v, s in g.dag.out_edges(name, data="slot")]
        if uses and all(isinstance(g[v].gate, G.SoftmaxCrossEntropy) and s == 1 or
                        isinstance(g[v].gate, G.OneHotGate) and s == 0 for v, s in uses):
            found.add(name)
    return found


def _values(g, feed) -> dict:
    """Every node's value (by name) from a run on ``feed``, or from the last forward.
    A run on ``feed`` is made on a copy, so ``g`` keeps its own last run."""
    from .graph import ComputationalGraph

    if feed is None:
        plan = g.plan()
        vals = g.run.values_for(plan)
        if vals is None:
            raise GraphError("to_onnx needs the inputs' shapes: pass feed= (a dict of "
                             "input names to example values) or run g.forward first")
        return dict(zip(plan.names, vals, strict=True))
    h = ComputationalGraph.from_dag(g.dag)
    h.forward(feed)
    plan = h.plan()
    return dict(zip(plan.names, h.run.values, strict=True))


def to_onnx(g, feed=None, *, opset: int = OPSET):
    """The graph as an ONNX model (``onnx.ModelProto``) that onnxruntime runs.

    The model's inputs are the graph's inputs that the output depends on, by name,
    with the shapes of ``feed`` (a dict as ``forward`` takes; default: the last
    forward's); parameters and constants are initializers (the constants' names are
    listed in the metadata ``graphengine.constants``, so ``from_onnx`` makes them
    constants again); the output keeps its node's name. Every gate becomes its ONNX
    operators (the ``ONNX`` table); softmax cross-entropy becomes
    ``SoftmaxCrossEntropyLoss``, and an input used only as its labels is an int64
    input. Elements are float64 (DOUBLE), or float32 when the graph's arrays are.

    Parameters
    ----------
    g : ComputationalGraph
    feed : dict, optional
        Example values of the inputs, for their shapes.
    opset : int
        The ONNX opset, 17 or later (default 18).

    Returns
    -------
    onnx.ModelProto

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> f = g.sigmoid(g.input("x") * g.parameter("w", 2.0), name="f")
    >>> model = ge.export.to_onnx(g, feed={"x": 0.5})
    >>> [n.op_type for n in model.graph.node], [i.name for i in model.graph.input]
    (['Mul', 'Sigmoid'], ['x'])
    """
    onnx = need("onnx", "to_onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    if isinstance(opset, bool) or not isinstance(opset, int) or \
            not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise GraphError(f"to_onnx: opset must be an integer from {MIN_OPSET} to "
                         f"{onnx.defs.onnx_opset_version()}, got {opset!r}")
    plan = g.plan()
    rules = [(gate, ins, out, _rule(ONNX, gate, plan.names[out], "ONNX", "to_onnx"))
             for gate, ins, out in plan.gates]
    values = _values(g, feed)
    names = plan.names
    labels = _labels_only(g, [names[k] for k, _ in plan.inputs + plan.stored])
    dtype = float_dtype([values[names[k]] for k, _ in plan.inputs + plan.stored
                         if names[k] not in labels])
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    b = OnnxBuilder(elem, values, opset)
    b.int64_inputs = {name for _, name in plan.inputs if name in labels}
    b._names.update(names)
    inputs = []
    for _, name in plan.inputs:
        kind = TensorProto.INT64 if name in b.int64_inputs else elem
        inputs.append(helper.make_tensor_value_info(name, kind, list(np.shape(values[name]))))
    constants = []
    for slot, attrs in plan.stored:
        name = names[slot]
        b.initializers.append(numpy_helper.from_array(
            np.asarray(attrs["value"], dtype=dtype), name=name))
        if attrs["kind"] == "constant":
            constants.append(name)
    for gate, ins, out, rule in rules:
        b.target = names[out]
        args = [names[i] for i in ins]
        if rule is not None:
            rule(b, gate, *args, names[out])
        else:
            got = gate.to_onnx(b, *args)
            if got != names[out]:
                b.node("Identity", [got], names[out])
    out = names[plan.out]
    graph = helper.make_graph(
        b.nodes, "graphengine", inputs,
        [helper.make_tensor_value_info(out, elem, list(np.shape(values[out])))],
        initializer=b.initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, producer_name="graphengine", opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, {"graphengine.constants": json.dumps(constants)})
    return model
