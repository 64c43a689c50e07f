"""Gates: the operations of a graph, each with its forward, backward and jvp side by side.

A gate instance belongs to exactly one node. ``forward(*inputs)`` returns the output
and keeps what the derivatives need; ``backward(upstream)`` returns one gradient per
input (each with that input's shape); ``jvp(*tangents)`` returns the output's tangent.
Scalars stay Python floats and use the math module; arrays use numpy.

This module imports nothing of graphengine's: it is the bottom layer.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "Gate", "GATES", "register",
    "AddGate", "SubtractGate", "MultiplyGate", "DivideGate", "MaxGate", "PowerGate",
    "NegateGate", "PowGate", "ExpGate", "LogGate", "SigmoidGate", "TanhGate", "ReluGate",
    "MatMulGate", "SumGate", "MeanGate", "MSELoss", "SoftmaxCrossEntropy",
]

_exp = math.exp
_inf = math.inf


class Gate:
    """Base class of every operation; subclass it for your own gate.

    Override ``forward(*inputs)`` (keep what backward needs on ``self``),
    ``backward(upstream)`` (one gradient per input, in order) and, for forward mode,
    ``jvp(*tangents)``. ``arity`` fixes the number of inputs (None: read from the
    signature of ``forward``).

    Examples
    --------
    >>> import graphengine as ge
    >>> class Square(ge.Gate):
    ...     def forward(self, x):
    ...         self.x = x
    ...         return x * x
    ...     def backward(self, upstream):
    ...         return (2 * self.x * upstream,)
    >>> g = ge.ComputationalGraph()
    >>> y = g.apply(Square(), g.input("x"), name="y")
    >>> g.forward(x=3.0), g.backward()["x"]
    (9.0, 6.0)
    """

    arity: int | None = None
    op: str = ""          # the registry name of a built-in gate
    prunable: bool = False  # backward(upstream, need=...) can skip unwanted gradients
    symbol: str = ""      # short label for drawings

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, upstream):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def jvp(self, *tangents):
        raise NotImplementedError(f"{type(self).__name__}.jvp")

    def config(self) -> dict:
        """Constructor arguments that rebuild this gate (used by to_json)."""
        return {}

    @property
    def label(self) -> str:
        return self.symbol or self.op or type(self).__name__

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


GATES: dict[str, type[Gate]] = {}


def register(cls: type[Gate]) -> type[Gate]:
    """Add a gate class to the registry under ``cls.op`` (builders, JSON and
    expressions read it)."""
    if not cls.op:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'op'")
    GATES[cls.op] = cls
    return cls


def fit(grad, x):
    """Sum ``grad`` down to the shape of ``x``, undoing numpy broadcasting."""
    if grad.__class__ is float:
        return grad
    shape = x.shape if x.__class__ is np.ndarray else np.shape(x)
    gshape = grad.shape if grad.__class__ is np.ndarray else np.shape(grad)
    if gshape == shape:
        return grad
    if gshape[1:] == shape and shape:           # a bias added to rows: sum the rows
        return grad.sum(axis=0)
    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and gshape[lead + i] != 1)
    total = np.sum(grad, axis=axes)
    return float(total) if shape == () else total.reshape(shape)


def zeros_like(x):
    """0.0 for a float, else zeros of the array's shape (float64)."""
    return 0.0 if x.__class__ is float else np.zeros(np.shape(x))


# ---------------------------------------------------------------- elementwise, unary

class Unary(Gate):
    """An elementwise gate of one input: both modes use one local derivative."""

    arity = 1

    def partial(self):
        raise NotImplementedError

    def backward(self, upstream):
        return (upstream * self.partial(),)

    def jvp(self, x_dot):
        return x_dot * self.partial()


@register
class NegateGate(Unary):
    """neg: out = -x, d/dx = -1"""

    op, symbol = "neg", "neg"

    def forward(self, x):
        return -x

    def backward(self, upstream):
        return (-upstream,)

    def jvp(self, x_dot):
        return -x_dot


@register
class PowGate(Unary):
    """pow: out = x**p for a constant number p, d/dx = p x**(p-1)"""

    op = "pow"

    def __init__(self, p: float = 2.0):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise ValueError(f"pow needs a number as exponent, got {type(p).__name__}")
        self.p = float(p)

    @property
    def symbol(self):
        return f"**{self.p:g}"

    def config(self):
        return {"p": self.p}

    def forward(self, x):
        self.x = x
        if x.__class__ is float:
            try:
                out = x ** self.p
            except (OverflowError, ZeroDivisionError):
                out = _inf if x != 0.0 or self.p < 0 else 0.0
            return math.nan if out.__class__ is complex else out
        return np.power(x, self.p)

    def partial(self):
        p, x = self.p, self.x
        if p == 0.0:
            return zeros_like(x)
        if p == 1.0:
            return 1.0 if x.__class__ is float else np.ones(np.shape(x))
        if p == 2.0:
            return 2.0 * x
        if x.__class__ is float:
            try:
                d = p * x ** (p - 1.0)
            except (OverflowError, ZeroDivisionError):
                d = _inf
            return math.nan if d.__class__ is complex else d
        return p * np.power(x, p - 1.0)


@register
class ExpGate(Unary):
    """exp: out = e**x, d/dx = out"""

    op, symbol = "exp", "exp"

    def forward(self, x):
        if x.__class__ is float:
            try:
                self.out = _exp(x)
            except OverflowError:
                self.out = _inf
        else:
            self.out = np.exp(x)
        return self.out

    def partial(self):
        return self.out


@register
class LogGate(Unary):
    """log: out = ln x, d/dx = 1/x (log 0 = -inf, log of a negative = nan)"""

    op, symbol = "log", "log"

    def forward(self, x):
        self.x = x
        if x.__class__ is float:
            return math.log(x) if x > 0.0 else (-_inf if x == 0.0 else math.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)

    def partial(self):
        x = self.x
        if x.__class__ is float:
            return 1.0 / x if x != 0.0 else _inf
        with np.errstate(divide="ignore"):
            return 1.0 / x


@register
class SigmoidGate(Unary):
    """sigmoid: s = 1/(1+e^-x), ds/dx = s(1-s); stable at any x"""

    op, symbol = "sigmoid", "σ"

    def forward(self, x):
        if x.__class__ is float:
            if x >= 0.0:
                s = 1.0 / (1.0 + _exp(-x))
            else:
                e = _exp(x)
                s = e / (1.0 + e)
        elif x.__class__ is np.ndarray and x.dtype.kind == "f":
            # in place on one buffer; e^-x = inf below x = -709 gives s = 0, as it should
            s = np.negative(x)
            with np.errstate(over="ignore"):
                np.exp(s, out=s)
            s += 1.0
            np.divide(1.0, s, out=s)
        else:
            e = np.exp(-np.abs(x))
            s = np.where(x >= 0, 1.0, e) / (1.0 + e)
        self.out = s
        return s

    def backward(self, upstream):
        s = self.out
        d = 1.0 - s
        d *= s
        d *= upstream
        return (d,)

    def partial(self):
        s = self.out
        return s * (1.0 - s)


@register
class TanhGate(Unary):
    """tanh: t = tanh x, dt/dx = 1 - t**2"""

    op, symbol = "tanh", "tanh"

    def forward(self, x):
        self.out = math.tanh(x) if x.__class__ is float else np.tanh(x)
        return self.out

    def partial(self):
        t = self.out
        return 1.0 - t * t


@register
class ReluGate(Unary):
    """relu: out = max(x, 0), d/dx = 1 if x > 0 else 0 (no gradient at 0)"""

    op, symbol = "relu", "relu"

    def forward(self, x):
        self.x = x
        if x.__class__ is float:
            return x if x > 0.0 else 0.0
        return np.maximum(x, 0.0)

    def partial(self):
        x = self.x
        if x.__class__ is float:
            return 1.0 if x > 0.0 else 0.0
        return (x > 0).astype(np.result_type(x, np.float32))


# ---------------------------------------------------------------- elementwise, binary

class Binary(Gate):
    """An elementwise gate of two inputs that broadcast as numpy does;
    both modes use the local partials (dx, dy)."""

    arity = 2

    def partials(self):
        raise NotImplementedError

    def backward(self, upstream):
        dx, dy = self.partials()
        return fit(upstream * dx, self.x), fit(upstream * dy, self.y)

    def jvp(self, x_dot, y_dot):
        dx, dy = self.partials()
        return x_dot * dx + y_dot * dy


@register
class AddGate(Binary):
    """add: out = x + y, d/dx = d/dy = 1 (a gradient distributor)"""

    op, symbol = "add", "+"

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x + y

    def backward(self, upstream):
        if upstream.__class__ is float:
            return upstream, upstream
        return fit(upstream, self.x), fit(upstream, self.y)

    def jvp(self, x_dot, y_dot):
        return x_dot + y_dot


@register
class SubtractGate(Binary):
    """sub: out = x - y, d/dx = 1, d/dy = -1"""

    op, symbol = "sub", "-"

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x - y

    def backward(self, upstream):
        if upstream.__class__ is float:
            return upstream, -upstream
        return fit(upstream, self.x), fit(-upstream, self.y)

    def jvp(self, x_dot, y_dot):
        return x_dot - y_dot


@register
class MultiplyGate(Binary):
    """mul: out = x * y, d/dx = y, d/dy = x (a gradient switcher)"""

    op, symbol = "mul", "*"

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, upstream):
        x, y = self.x, self.y
        gx, gy = upstream * y, upstream * x
        if gx.__class__ is float and gy.__class__ is float:   # scalars: nothing to fit
            return gx, gy
        return fit(gx, x), fit(gy, y)

    def partials(self):
        return self.y, self.x


@register
class DivideGate(Binary):
    """div: out = x / y, d/dx = 1/y, d/dy = -x/y**2 (division by 0 gives inf or nan)"""

    op, symbol = "div", "/"

    def forward(self, x, y):
        self.x = x
        self.y = y
        if x.__class__ is float and y.__class__ is float:
            if y == 0.0:
                self.out = math.copysign(_inf, x) if x != 0.0 else math.nan
            else:
                self.out = x / y
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                self.out = np.divide(x, y)
        return self.out

    def partials(self):
        y = self.y
        if y.__class__ is float:
            if y == 0.0:
                return _inf, -self.out * _inf
            return 1.0 / y, -self.out / y
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / y
            return inv, -self.out * inv


@register
class MaxGate(Binary):
    """max: out = max(x, y); the gradient goes to the larger input, split equally
    on a tie (a gradient router)"""

    op, symbol = "max", "max"

    def forward(self, x, y):
        self.x = x
        self.y = y
        if x.__class__ is float and y.__class__ is float:
            return x if x >= y else y
        return np.maximum(x, y)

    def partials(self):
        x, y = self.x, self.y
        if x.__class__ is float and y.__class__ is float:
            return (1.0, 0.0) if x > y else (0.0, 1.0) if x < y else (0.5, 0.5)
        tie = 0.5 * (x == y)
        return (x > y) + tie, (x < y) + tie


@register
class PowerGate(Binary):
    """power: out = x ** y, d/dx = y x**(y-1), d/dy = out ln x (x > 0 for d/dy)"""

    op, symbol = "power", "**"

    def forward(self, x, y):
        self.x = x
        self.y = y
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.out = np.power(np.asarray(x, dtype=float), y)
        if self.out.ndim == 0:
            self.out = float(self.out)
        return self.out

    def partials(self):
        x, y = np.asarray(self.x, dtype=float), self.y
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            dx = y * np.power(x, np.subtract(y, 1.0))
            dy = np.where(x > 0, self.out * np.log(np.where(x > 0, x, 1.0)), 0.0)
        if np.ndim(dx) == 0:
            dx = float(dx)
        if np.ndim(dy) == 0:
            dy = float(dy)
        return dx, dy


@register
class MSELoss(Binary):
    """mse: out = mean((pred - target)**2), d/dpred = 2 (pred - target) / n"""

    op, symbol = "mse", "MSE"

    def forward(self, pred, target):
        self.x = pred
        self.y = target
        diff = pred - target
        self.n = np.size(diff)
        self.scaled = diff * (2.0 / self.n)
        return diff * diff if diff.__class__ is float else float(np.mean(diff * diff))

    def backward(self, upstream):
        d = upstream * self.scaled
        return fit(d, self.x), fit(-d, self.y)

    def jvp(self, pred_dot, target_dot):
        return float(np.sum(self.scaled * (pred_dot - target_dot)))


# ---------------------------------------------------------------- linear algebra, reductions

def _swap(a):
    return np.swapaxes(a, -1, -2)


@register
class MatMulGate(Gate):
    """matmul: out = a @ b (vectors, matrices, batched on the left);
    da = g @ b^T, db = a^T @ g"""

    arity = 2
    op, symbol = "matmul", "@"
    prunable = True     # backward takes need=(bool, bool) and skips an unwanted product

    def forward(self, a, b):
        if a.__class__ is np.ndarray and b.__class__ is np.ndarray and a.ndim and b.ndim:
            self.a = a
            self.b = b
            out = a @ b
            return out if out.ndim else float(out)
        if np.ndim(a) == 0 or np.ndim(b) == 0:
            raise ValueError("matmul needs arrays of at least one dimension, "
                             f"got shapes {np.shape(a)} and {np.shape(b)}")
        self.a = a
        self.b = b
        out = np.matmul(a, b)
        return float(out) if out.ndim == 0 else out

    def backward(self, upstream, need=(True, True)):
        # need: which inputs want a gradient (a pruned backward passes (False, True)
        # for x @ W on data x); an unwanted input gets None
        a, b, g = self.a, self.b, upstream
        if a.ndim == 2 and b.ndim == 2:
            return (g @ b.T if need[0] else None), (a.T @ g if need[1] else None)
        if b.ndim == 2:                       # a (..., k) or (..., n, k), b (k, m)
            ga = g @ b.T
            k, m = b.shape
            gb = a.reshape(-1, k).T @ np.reshape(g, (-1, m))
            return ga, gb
        if a.ndim == 1 and b.ndim == 1:
            return g * b, g * a
        # general case: promote vectors to matrices, then undo the promotion
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = np.asarray(g, dtype=np.result_type(a, b))
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        ga = fit(g2 @ _swap(b2), a2).reshape(a.shape)
        gb = fit(_swap(a2) @ g2, b2).reshape(b.shape)
        return ga, gb

    def jvp(self, a_dot, b_dot):
        out = np.matmul(a_dot, self.b) + np.matmul(self.a, b_dot)
        return float(out) if np.ndim(out) == 0 else out


def _check_axis(axis):
    if axis is None:
        return None
    if isinstance(axis, (list, tuple)):
        return tuple(int(a) for a in axis)
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        return int(axis)
    raise ValueError(f"axis must be None, an int or a tuple of ints, got {axis!r}")


@register
class SumGate(Gate):
    """sum: out = sum of x over axis (all elements when None), d/dx = 1"""

    arity = 1
    op, symbol = "sum", "Σ"

    def __init__(self, axis=None):
        self.axis = _check_axis(axis)

    def config(self):
        return {"axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis}

    def _reduce(self, x):
        out = np.sum(x, axis=self.axis)
        return float(out) if np.ndim(out) == 0 else out

    def forward(self, x):
        self.shape = np.shape(x)
        return self._reduce(x)

    def _spread(self, upstream):
        if self.axis is not None:
            upstream = np.expand_dims(upstream, self.axis)
        out = np.empty(self.shape, dtype=np.result_type(upstream, float))
        out[...] = upstream
        return float(out) if out.ndim == 0 else out

    def backward(self, upstream):
        return (self._spread(upstream),)

    def jvp(self, x_dot):
        return self._reduce(np.broadcast_to(x_dot, self.shape))


@register
class MeanGate(SumGate):
    """mean: out = mean of x over axis (all elements when None), d/dx = 1/n"""

    op, symbol = "mean", "mean"

    def forward(self, x):
        self.shape = np.shape(x)
        self.n = float(np.prod(self.shape) if self.axis is None
                       else np.prod(np.array(self.shape)[np.array(self.axis)]))
        return self._reduce(x) / self.n

    def backward(self, upstream):
        return (self._spread(upstream / self.n),)

    def jvp(self, x_dot):
        return self._reduce(np.broadcast_to(x_dot, self.shape)) / self.n


@register
class SoftmaxCrossEntropy(Gate):
    """softmax_cross_entropy: out = mean over the batch of -log softmax(logits)[label];
    d/dlogits = (softmax - onehot) / batch; labels get no gradient"""

    arity = 2
    op, symbol = "softmax_cross_entropy", "CE"
    rows = np.arange(0)

    def forward(self, logits, labels):
        z = logits if logits.__class__ is np.ndarray and logits.dtype.kind == "f" else \
            np.asarray(logits, dtype=np.result_type(logits, np.float32))
        if z.ndim not in (1, 2):
            raise ValueError("logits must have shape (classes,) or (batch, classes), "
                             f"got {z.shape}")
        z2 = z[None, :] if z.ndim == 1 else z
        y = labels if labels.__class__ is np.ndarray else np.asarray(labels)
        if y.ndim != 1:
            y = y.reshape(-1)
        n, classes = z2.shape
        if n == 0:
            raise ValueError("logits have no rows")
        if y.shape[0] != n:
            raise ValueError(f"{y.shape[0]} labels for {n} rows of logits")
        idx = y.astype(np.intp)
        # as unsigned, a negative label is huge: one max checks both ends
        if idx.astype(np.uintp).max() >= classes or (y.dtype.kind == "f" and (idx != y).any()):
            raise ValueError(f"labels must be integer classes in [0, {classes})")
        shifted = z2 - z2.max(axis=1, keepdims=True)   # log-sum-exp: large logits are safe
        e = np.exp(shifted)
        total = e.sum(axis=1, keepdims=True)
        rows = self.rows if len(self.rows) == n else np.arange(n)
        self.labels = labels
        self.shape = z.shape
        self.rows, self.idx = rows, idx
        self.e, self.total = e, total
        return float(np.log(total).sum() - shifted[rows, idx].sum()) / n

    def _dlogits(self):
        n = len(self.idx)
        d = self.e / (self.total * n)
        d[self.rows, self.idx] -= 1.0 / n
        return d.reshape(self.shape)

    def backward(self, upstream):
        d = self._dlogits()
        if upstream.__class__ is not float or upstream != 1.0:
            d *= upstream
        return d, zeros_like(self.labels)

    def jvp(self, logits_dot, labels_dot):
        return float(np.sum(self._dlogits() * logits_dot))


# The gates defined above; the plan trusts their gradients' count and shapes and
# checks those of every other gate (users' own, or registered later).
BUILTIN = frozenset(GATES.values())
