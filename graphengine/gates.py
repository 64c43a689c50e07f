"""Gates: the operations of a graph, each with its forward, backward and jvp side by side.

A gate instance belongs to exactly one node. ``forward(*inputs)`` returns the output
and keeps what the derivatives need; ``backward(upstream)`` returns one gradient per
input (each with that input's shape and dtype); ``jvp(*tangents)`` returns the
output's tangent. Scalars stay Python floats and use the math module; arrays use numpy.

Numerics, one rule for both paths:

- Values are IEEE arithmetic as numpy computes the gate's formula: a Python float
  gives what a 0-d or 1-element float64 array gives (infinities with their signs,
  NaNs, signed zeros), where Python itself would raise, go complex or differ.
- Derivatives are the formulas in each gate's docstring, evaluated the same way, so a
  NaN or an infinity reaches every derivative whose formula reads it (an upstream
  inf times a zero partial is NaN, as in numpy). Where a formula is a comparison
  (max, relu) a NaN input gives NaN local derivatives; ties and kinks follow the
  documented conventions (max splits a tie, relu passes nothing at 0; x ** 0 is the
  constant 1, so its derivative is 0 everywhere).
- Silent: the array paths run with numpy's floating-point warnings off, as the float
  paths never warn; overflow, 0/0 and the like show up as inf and nan in the results.
- dtypes: Python numbers compute in float64; arrays keep their dtype (float32 stays
  float32) and mix by numpy's promotion; every gradient and tangent is cast to the
  dtype of the node it belongs to. A 0-d result is a Python float.

This module imports nothing of graphengine's but its error class: it is the bottom layer.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from .errors import GraphError

__all__ = [
    "Gate", "GATES", "register",
    "AddGate", "SubtractGate", "MultiplyGate", "DivideGate", "MaxGate", "PowerGate",
    "NegateGate", "PowGate", "ExpGate", "LogGate", "SigmoidGate", "TanhGate", "ReluGate",
    "MatMulGate", "TransposeGate", "SumGate", "MeanGate", "MSELoss", "SoftmaxCrossEntropy",
    "SumToGate", "BroadcastToGate", "SpreadGate", "RowSumGate", "StepGate", "MaxMaskGate",
    "SigmoidGradGate", "SoftmaxGate", "OneHotGate", "MatMulGradA", "MatMulGradB", "SeedGate",
    "sum_to",
]

_exp = math.exp
_inf = math.inf
_nan = math.nan

# The array paths run with numpy's floating-point warnings off: ``with _quiet():``, or
# in the paths a training step runs, ``t = _quiet_on()`` ... ``finally: _quiet_off(t)``
# (a third of the cost: no Python-level __enter__/__exit__). np.errstate costs about
# 1 us per use, more than a small array operation; numpy >= 2 keeps that state in a
# context variable, which these set directly.
try:
    from numpy._core._ufunc_config import _extobj_contextvar as _np_errors

    with np.errstate(all="ignore"):
        _quiet_on = partial(_np_errors.set, _np_errors.get())    # returns a token
    _quiet_off = _np_errors.reset
except (ImportError, AttributeError):       # a numpy that moved it: the public call
    def _quiet_on():
        return np.seterr(all="ignore")

    def _quiet_off(old):
        np.seterr(**old)


class _quiet:
    __slots__ = ("token",)

    def __enter__(self):
        self.token = _quiet_on()

    def __exit__(self, *exc):
        _quiet_off(self.token)


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

    def backward_gates(self, g, inputs, out, upstream):
        """The backward pass as gates, for ``ge.grad`` and higher derivatives.

        ``g`` is the gradient graph being built; ``inputs`` are the Nodes in it
        holding this gate's inputs, ``out`` the Node holding its output and
        ``upstream`` the Node holding d(result)/d(out), of ``out``'s shape. Add gates
        to ``g`` (its builders, ``g.apply``, or the operators on Nodes) and return one
        Node per input, each of that input's shape, or None for an input that gets
        no gradient. The default returns NotImplemented: ``ge.grad`` then raises a
        GraphError naming the node and the gate (first-order tools still work).

        Examples
        --------
        >>> import graphengine as ge
        >>> class Cube(ge.Gate):
        ...     def forward(self, x):
        ...         self.x = x
        ...         return x ** 3
        ...     def backward(self, upstream):
        ...         return (3 * self.x ** 2 * upstream,)
        ...     def backward_gates(self, g, inputs, out, upstream):
        ...         (x,) = inputs
        ...         return (upstream * 3.0 * x ** 2,)     # gates, built in g
        >>> g = ge.ComputationalGraph()
        >>> y = g.apply(Cube(), g.input("x"), name="y")
        >>> h = ge.grad(g, "x")                          # dy/dx = 3 x**2, as a graph
        >>> h.forward(x=2.0)
        12.0
        >>> ge.grad(h, "x").forward(x=2.0)               # d2y/dx2 = 6 x
        12.0
        """
        return NotImplemented


GATES: dict[str, type[Gate]] = {}


def register(cls: type[Gate] | None = None, *, replace: bool = False):
    """Add a gate class to the registry under ``cls.op`` (builders, JSON and
    expressions read it). Use as ``@register`` or ``register(cls)``.

    An op that is already taken (a built-in such as ``"add"``, or another gate) is a
    ``GraphError`` unless ``replace=True``; registering the same class again, or a
    class of the same module and name (a notebook cell run twice), replaces quietly.

    Examples
    --------
    >>> import graphengine as ge
    >>> @ge.register
    ... class Twice(ge.Gate):
    ...     op = "doc_twice"
    ...     def forward(self, x): return 2 * x
    ...     def backward(self, upstream): return (2 * upstream,)
    >>> ge.GATES["doc_twice"] is Twice
    True
    >>> class MyAdd(ge.gates.AddGate):
    ...     op = "add"
    >>> ge.register(MyAdd)
    Traceback (most recent call last):
    ...
    graphengine.errors.GraphError: gate op 'add' is taken by the built-in AddGate; \
register(MyAdd, replace=True) replaces it
    >>> del ge.GATES["doc_twice"]
    """
    if cls is None:                               # @register(replace=True)
        return lambda c: register(c, replace=replace)
    if not isinstance(cls, type) or not issubclass(cls, Gate):
        raise GraphError(f"register needs a Gate subclass, got {cls!r}")
    op = cls.op
    if not op or not isinstance(op, str):
        raise GraphError(f"{cls.__name__} needs a non-empty string class attribute 'op', "
                         f"got {op!r}")
    old = GATES.get(op)
    if old is not None and old is not cls and not replace and not (
            old.__module__ == cls.__module__ and old.__qualname__ == cls.__qualname__
            and old not in BUILTIN):
        whose = "the built-in" if old in BUILTIN else "the gate"
        raise GraphError(f"gate op {op!r} is taken by {whose} {old.__name__}; "
                         f"register({cls.__name__}, replace=True) replaces it")
    GATES[op] = cls
    return cls


BUILTIN: frozenset = frozenset()     # filled at the end of the module


_rowsum = np.add.reduce       # sum over an axis without ndarray.sum's Python wrapper
_rowmax = np.maximum.reduce   # ndarray.max's own reduction, without its wrapper
try:                          # np.count_nonzero's own C function, without its wrapper
    from numpy._core.multiarray import count_nonzero as _count_nonzero
except ImportError:           # a numpy that moved it: the public call
    _count_nonzero = np.count_nonzero


def fit(grad, x):
    """Sum ``grad`` down to the shape of ``x``, undoing numpy broadcasting, in the
    dtype of ``x`` (a float for a float)."""
    if grad.__class__ is float:
        if x.__class__ is float:
            return grad
        return np.full(np.shape(x), grad, dtype=_dtype(x))
    shape = x.shape if x.__class__ is np.ndarray else np.shape(x)
    gshape = grad.shape if grad.__class__ is np.ndarray else np.shape(grad)
    if gshape != shape:
        t = _quiet_on()
        try:
            if gshape[1:] == shape and shape:           # a bias added to rows: sum the rows
                grad = _rowsum(grad, 0)
            else:
                lead = len(gshape) - len(shape)
                axes = tuple(range(lead)) + tuple(
                    lead + i for i, n in enumerate(shape) if n == 1 and gshape[lead + i] != 1)
                grad = np.sum(grad, axis=axes)
                if shape == ():
                    return float(grad) if x.__class__ is float else \
                        np.asarray(grad, _dtype(x))
                grad = grad.reshape(shape)
        finally:
            _quiet_off(t)
    if x.__class__ is float:
        return float(grad)
    return grad if grad.dtype is x.dtype else _like(grad, x)


def _dtype(x):
    """The float dtype of a value: an array's own, float64 for anything else."""
    dtype = getattr(x, "dtype", None)
    return dtype if dtype is not None and dtype.kind == "f" else np.dtype(float)


def _like(grad, x):
    """``grad`` in the dtype of the array ``x`` (no copy when it already is)."""
    dtype = x.dtype
    if grad.dtype is dtype or grad.dtype == dtype or dtype.kind != "f":
        return grad
    return grad.astype(dtype)


def zeros_like(x):
    """0.0 for a float, else zeros of the value's shape and (float) dtype."""
    return 0.0 if x.__class__ is float else np.zeros(np.shape(x), dtype=_dtype(x))


def _powf(x, p):
    """x ** p for floats as ``np.power(x, p)`` gives it for a number ``p`` (numpy takes
    the square root at p = 0.5: (-inf) ** 0.5 is nan, not C's inf); Python's own **
    raises or goes complex at the edges."""
    if p != 0.5:
        try:
            out = x ** p
            if out.__class__ is float:
                return out
        except (OverflowError, ZeroDivisionError):
            pass
    with _quiet():
        return float(np.power(x, p))


def _cpow(x, y):
    """x ** y for floats as ``np.power`` gives it elementwise on arrays (C's pow)."""
    try:
        out = x ** y
        if out.__class__ is float:
            return out
    except (OverflowError, ZeroDivisionError):
        pass
    with _quiet():
        return float(np.power(np.array([x]), np.array([y]))[0])


def _power(x, y):
    """np.power(x, y) by C's pow for every element: numpy switches to a square root or
    a reciprocal when the exponent is a scalar (0.5, -1), but not when it is an array."""
    if np.ndim(y) == 0:
        y = np.full(1, y, dtype=np.result_type(x, y))
        return np.power(x, y).reshape(np.shape(x)) if np.ndim(x) == 0 else np.power(x, y)
    return np.power(x, y)


# ---------------------------------------------------------------- elementwise, unary

class Unary(Gate):
    """An elementwise gate of one input: both modes use one local derivative."""

    arity = 1

    def partial(self):
        raise NotImplementedError

    # partial() is silent itself; upstream and tangent have the output's type (a
    # float for a float input), so a float partial needs no silencing
    def backward(self, upstream):
        d = self.partial()
        if d.__class__ is float:
            return (upstream * d,)
        t = _quiet_on()
        try:
            return (upstream * d,)
        finally:
            _quiet_off(t)

    def jvp(self, x_dot):
        d = self.partial()
        if d.__class__ is float:
            return x_dot * d
        with _quiet():
            return x_dot * d


@register
class NegateGate(Unary):
    """neg: out = -x, d/dx = -1"""

    __slots__ = ()    # what forward keeps: no dict to make

    op, symbol = "neg", "neg"

    def forward(self, x):
        return -x

    def backward(self, upstream):
        return (-upstream,)

    def jvp(self, x_dot):
        return -x_dot

    def backward_gates(self, g, inputs, out, upstream):
        return (g.neg(upstream),)


@register
class PowGate(Unary):
    """pow: out = x**p for a constant number p, d/dx = p x**(p-1) (0 when p = 0)

    Values are numpy's ``np.power(x, p)`` for a number p, on floats too: a negative
    base with a fractional p is nan, (-1e200)**3 is -inf, and p = 0.5 is a square root
    ((-inf)**0.5 is nan, (-0.0)**0.5 is -0.0).
    """

    __slots__ = ("p", "x")    # what forward keeps: no dict to make

    op = "pow"

    def __init__(self, p: float = 2.0):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise ValueError(f"pow needs a number as exponent, got {type(p).__name__}")
        try:
            self.p = float(p)
        except OverflowError:
            digits = int(abs(int(p)).bit_length() * math.log10(2)) + 1
            raise ValueError(f"pow's exponent p is too large for a float: an integer of "
                             f"about {digits} digits (floats end near 1.8e308)") from None

    @property
    def symbol(self):
        return f"**{self.p:g}"

    def config(self):
        return {"p": self.p}

    def forward(self, x):
        self.x = x
        if x.__class__ is float:
            return x * x if self.p == 2.0 else _powf(x, self.p)
        with _quiet():
            return np.power(x, self.p)

    def partial(self):
        p, x = self.p, self.x
        if p == 0.0:
            return zeros_like(x)
        if p == 1.0:
            return 1.0 if x.__class__ is float else np.ones(np.shape(x), dtype=_dtype(x))
        if p == 2.0:
            if x.__class__ is float:
                return 2.0 * x
            with _quiet():
                return 2.0 * x
        if x.__class__ is float:
            return p * _powf(x, p - 1.0)
        with _quiet():
            return p * np.power(x, p - 1.0)

    def backward_gates(self, g, inputs, out, upstream):
        (x,) = inputs
        p = self.p
        if p == 0.0:
            return (None,)
        if p == 1.0:
            return (upstream,)
        local = x if p == 2.0 else g.pow(x, p - 1.0)
        return (g.mul(upstream, g.mul(p, local)),)


@register
class ExpGate(Unary):
    """exp: out = e**x, d/dx = out"""

    __slots__ = ("out",)    # what forward keeps: no dict to make

    op, symbol = "exp", "exp"

    def forward(self, x):
        if x.__class__ is float:
            try:
                self.out = _exp(x)
            except OverflowError:
                self.out = _inf
        else:
            with _quiet():
                self.out = np.exp(x)
        return self.out

    def partial(self):
        return self.out

    def backward_gates(self, g, inputs, out, upstream):
        return (g.mul(upstream, out),)


@register
class LogGate(Unary):
    """log: out = ln x, d/dx = 1/x (log 0 = -inf, log of a negative = nan;
    d/dx at -0.0 is -inf)"""

    __slots__ = ("x",)    # what forward keeps: no dict to make

    op, symbol = "log", "log"

    def forward(self, x):
        self.x = x
        if x.__class__ is float:
            return math.log(x) if x > 0.0 else (-_inf if x == 0.0 else _nan)
        with _quiet():
            return np.log(x)

    def partial(self):
        x = self.x
        if x.__class__ is float:
            return 1.0 / x if x != 0.0 else math.copysign(_inf, x)
        with _quiet():
            return 1.0 / x

    def backward_gates(self, g, inputs, out, upstream):
        return (g.div(upstream, inputs[0]),)


@register
class SigmoidGate(Unary):
    """sigmoid: s = 1/(1+e^-x), ds/dx = s(1-s); stable at any x"""

    __slots__ = ("out",)    # what forward keeps: no dict to make

    op, symbol = "sigmoid", "σ"

    def forward(self, x):
        if x.__class__ is float:
            if x >= 0.0:
                s = 1.0 / (1.0 + _exp(-x))
            else:
                e = _exp(x)
                s = e / (1.0 + e)
        elif x.__class__ is np.ndarray and x.dtype.kind == "f" and x.ndim:
            # in place on one buffer; e^-x = inf below x = -709 gives s = 0, as it should
            s = np.negative(x)
            t = _quiet_on()
            try:
                np.exp(s, out=s)
                s += 1.0
                np.divide(1.0, s, out=s)
            finally:
                _quiet_off(t)
        else:
            with _quiet():
                e = np.exp(-np.abs(x))
                s = np.where(x >= 0, 1.0, e) / (1.0 + e)
        self.out = s
        return s

    def backward(self, upstream):
        s = self.out
        if s.__class__ is float:
            return ((1.0 - s) * s * upstream,)
        d = 1.0 - s
        d *= s
        t = _quiet_on()
        try:
            d *= upstream           # inf * 0 where s saturates: nan, silently
        finally:
            _quiet_off(t)
        return (d,)

    def partial(self):
        s = self.out
        return s * (1.0 - s)

    def backward_gates(self, g, inputs, out, upstream):
        # s(1-s) by its own stable gate, so the derivative graph stays exact at any x
        return (g.mul(upstream, g.apply(SigmoidGradGate(), inputs[0])),)


@register
class TanhGate(Unary):
    """tanh: t = tanh x, dt/dx = 1 - t**2"""

    __slots__ = ("out",)    # what forward keeps: no dict to make

    op, symbol = "tanh", "tanh"

    def forward(self, x):
        self.out = math.tanh(x) if x.__class__ is float else np.tanh(x)
        return self.out

    def partial(self):
        t = self.out
        return 1.0 - t * t

    def backward_gates(self, g, inputs, out, upstream):
        return (g.mul(upstream, g.sub(1.0, g.mul(out, out))),)


@register
class ReluGate(Unary):
    """relu: out = max(x, 0), d/dx = 1 if x > 0 else 0 (no gradient at 0; relu(nan) is
    nan, with d/dx nan)"""

    __slots__ = ("out",)    # what forward keeps: no dict to make

    op, symbol = "relu", "relu"

    def forward(self, x):
        if x.__class__ is float:
            out = x if x > 0.0 else (0.0 if x <= 0.0 else x)     # np.maximum: nan stays
        else:
            out = np.maximum(x, 0.0)
        self.out = out
        return out

    def partial(self):
        out = self.out
        if out.__class__ is float:
            return 1.0 if out > 0.0 else (0.0 if out == 0.0 else out)
        d = np.sign(out)       # 1, 0 or nan (the output is never negative)
        d += 0.0               # -0.0 (np.maximum(-0.0, 0.0) on some paths) becomes 0.0
        return d

    def backward_gates(self, g, inputs, out, upstream):
        return (g.mul(upstream, g.apply(StepGate(), inputs[0])),)


# ---------------------------------------------------------------- elementwise, binary

class Binary(Gate):
    """An elementwise gate of two inputs that broadcast as numpy does;
    both modes use the local partials (dx, dy)."""

    arity = 2

    def partials(self):
        raise NotImplementedError

    # partials() is silent itself; two float partials mean two float inputs, whose
    # upstream and tangents are floats too
    def backward(self, upstream):
        dx, dy = self.partials()
        if dx.__class__ is float and dy.__class__ is float:
            return upstream * dx, upstream * dy
        with _quiet():
            return fit(upstream * dx, self.x), fit(upstream * dy, self.y)

    def jvp(self, x_dot, y_dot):
        dx, dy = self.partials()
        if dx.__class__ is float and dy.__class__ is float:
            return x_dot * dx + y_dot * dy
        with _quiet():
            return x_dot * dx + y_dot * dy


@register
class AddGate(Binary):
    """add: out = x + y, d/dx = d/dy = 1 (a gradient distributor)"""

    __slots__ = ("x", "y")    # what forward keeps: no dict to make

    op, symbol = "add", "+"

    def forward(self, x, y):
        if x.__class__ is float and y.__class__ is float:
            return x + y         # keeps nothing: a float backward needs no shapes
        self.x = x
        self.y = y
        t = _quiet_on()
        try:
            return x + y
        finally:
            _quiet_off(t)

    def backward(self, upstream):
        if upstream.__class__ is float:
            return upstream, upstream
        x, y = self.x, self.y
        # the training case first: an array of the upstream's shape and dtype passes
        # it through, a bias added to its rows gets the rows' sum
        if x.__class__ is np.ndarray and x.shape == upstream.shape \
                and x.dtype is upstream.dtype:
            gx = upstream
        else:
            gx = fit(upstream, x)
        if y.__class__ is np.ndarray and y.dtype is upstream.dtype and y.ndim \
                and upstream.shape[1:] == y.shape:
            t = _quiet_on()
            try:
                gy = _rowsum(upstream, 0)
            finally:
                _quiet_off(t)
        else:
            gy = fit(upstream, y)
        return gx, gy

    def jvp(self, x_dot, y_dot):
        if x_dot.__class__ is float and y_dot.__class__ is float:
            return x_dot + y_dot
        with _quiet():
            return x_dot + y_dot

    def backward_gates(self, g, inputs, out, upstream):
        x, y = inputs
        return sum_to(g, upstream, x), sum_to(g, upstream, y)


@register
class SubtractGate(Binary):
    """sub: out = x - y, d/dx = 1, d/dy = -1"""

    __slots__ = ("x", "y")    # what forward keeps: no dict to make

    op, symbol = "sub", "-"

    def forward(self, x, y):
        if x.__class__ is float and y.__class__ is float:
            return x - y         # keeps nothing: a float backward needs no shapes
        self.x = x
        self.y = y
        t = _quiet_on()
        try:
            return x - y
        finally:
            _quiet_off(t)

    def backward(self, upstream):
        if upstream.__class__ is float:
            return upstream, -upstream
        return fit(upstream, self.x), fit(-upstream, self.y)

    def jvp(self, x_dot, y_dot):
        if x_dot.__class__ is float and y_dot.__class__ is float:
            return x_dot - y_dot
        with _quiet():
            return x_dot - y_dot

    def backward_gates(self, g, inputs, out, upstream):
        x, y = inputs
        return sum_to(g, upstream, x), sum_to(g, g.neg(upstream), y)


@register
class MultiplyGate(Binary):
    """mul: out = x * y, d/dx = y, d/dy = x (a gradient switcher)"""

    __slots__ = ("x", "y")    # what forward keeps: no dict to make

    op, symbol = "mul", "*"

    def forward(self, x, y):
        self.x = x
        self.y = y
        if x.__class__ is float and y.__class__ is float:
            return x * y
        t = _quiet_on()
        try:
            return x * y
        finally:
            _quiet_off(t)

    def backward(self, upstream):
        x, y = self.x, self.y
        if x.__class__ is float and y.__class__ is float:
            return upstream * y, upstream * x          # scalars: nothing to fit
        t = _quiet_on()
        try:
            return fit(upstream * y, x), fit(upstream * x, y)
        finally:
            _quiet_off(t)

    def partials(self):
        return self.y, self.x

    def backward_gates(self, g, inputs, out, upstream):
        x, y = inputs
        return sum_to(g, g.mul(upstream, y), x), sum_to(g, g.mul(upstream, x), y)


@register
class DivideGate(Binary):
    """div: out = x / y, d/dx = 1/y, d/dy = -x/y**2 = -out/y (division by 0 gives a
    signed inf or nan, as IEEE: 1/-0.0 is -inf, nan/0 and 0/0 are nan)"""

    __slots__ = ("out", "x", "y")    # what forward keeps: no dict to make

    op, symbol = "div", "/"

    def forward(self, x, y):
        self.x = x
        self.y = y
        if x.__class__ is float and y.__class__ is float:
            if y == 0.0:
                with _quiet():
                    self.out = float(np.divide(x, y))
            else:
                self.out = x / y
        else:
            with _quiet():
                self.out = np.divide(x, y)
        return self.out

    def partials(self):
        # d/dy as -out * (1/y) on both paths (one division for arrays)
        y = self.y
        if y.__class__ is float:
            inv = 1.0 / y if y != 0.0 else math.copysign(_inf, y)
            return inv, -self.out * inv
        with _quiet():
            inv = 1.0 / y
            return inv, -self.out * inv

    def backward_gates(self, g, inputs, out, upstream):
        x, y = inputs
        return (sum_to(g, g.div(upstream, y), x),
                sum_to(g, g.neg(g.div(g.mul(upstream, out), y)), y))


@register
class MaxGate(Binary):
    """max: out = max(x, y); the gradient goes to the larger input, split equally
    on a tie (a gradient router). Values are np.maximum's: a nan input gives nan
    (with nan local derivatives for both inputs); on a tie of 0.0 and -0.0, y."""

    __slots__ = ("out", "x", "y")    # what forward keeps: no dict to make

    op, symbol = "max", "max"

    def forward(self, x, y):
        self.x = x
        self.y = y
        if x.__class__ is float and y.__class__ is float:
            out = x if x > y else (y if x <= y else x + y)      # x + y: the nan
        else:
            out = np.maximum(x, y)
        self.out = out
        return out

    def partials(self):
        x, y = self.x, self.y
        if x.__class__ is float and y.__class__ is float:
            return (1.0, 0.0) if x > y else (0.0, 1.0) if x < y else \
                (0.5, 0.5) if x == y else (_nan, _nan)
        with _quiet():
            half = np.equal(x, y).astype(_dtype(self.out))
            half *= 0.5
            dx, dy = np.greater(x, y) + half, np.less(x, y) + half
            nan = np.isnan(self.out)
            if nan.any():
                dx, dy = np.where(nan, _nan, dx), np.where(nan, _nan, dy)
        return dx, dy

    def backward_gates(self, g, inputs, out, upstream):
        x, y = inputs      # masks of 1, 0.5 (tie) or 0, with no derivative of their own
        return (sum_to(g, g.mul(upstream, g.apply(MaxMaskGate(), x, y)), x),
                sum_to(g, g.mul(upstream, g.apply(MaxMaskGate(), y, x)), y))


@register
class PowerGate(Binary):
    """power: out = x ** y, d/dx = y x**(y-1) (0 where y = 0), d/dy = out ln x (0 where
    x <= 0, where the real power has no derivative in y)

    Values are C's pow for every element, as numpy gives for an array exponent, on
    floats too ((-inf)**0.5 is inf, (-8)**(1/3) is nan).
    """

    __slots__ = ("out", "x", "y")    # what forward keeps: no dict to make

    op, symbol = "power", "**"

    def forward(self, x, y):
        self.x = x
        self.y = y
        if x.__class__ is float and y.__class__ is float:
            self.out = _cpow(x, y)
        else:
            if getattr(x, "dtype", np.dtype(float)).kind != "f":
                x = np.asarray(x, dtype=float)
            with _quiet():
                self.out = _power(x, y)
        return self.out

    def partials(self):
        x, y, out = self.x, self.y, self.out
        if x.__class__ is float and y.__class__ is float:
            dx = 0.0 if y == 0.0 else y * _cpow(x, y - 1.0)
            dy = 0.0 if x <= 0.0 else out * (math.log(x) if x == x else x)
            return dx, dy
        if getattr(x, "dtype", np.dtype(float)).kind != "f":
            x = np.asarray(x, dtype=float)
        with _quiet():
            dx = np.where(np.equal(y, 0), 0.0, y * _power(x, np.subtract(y, 1.0)))
            dy = np.where(x <= 0, 0.0, out * np.log(x))
        return dx, dy

    def backward_gates(self, g, inputs, out, upstream):
        x, y = inputs      # d/dy needs x > 0, as backward does
        dx = g.mul(upstream, g.mul(y, g.power(x, g.sub(y, 1.0))))
        return sum_to(g, dx, x), sum_to(g, g.mul(upstream, g.mul(out, g.log(x))), y)


@register
class MSELoss(Binary):
    """mse: out = mean((pred - target)**2), d/dpred = 2 (pred - target) / n

    ``pred`` and ``target`` must have the same shape, or one must broadcast to the
    other's: shapes that only broadcast by growing both ((3, 1) against (3,)) compare
    every prediction with every target, and are refused.
    """

    op, symbol = "mse", "MSE"

    def forward(self, pred, target):
        self.x = pred
        self.y = target
        if pred.__class__ is float and target.__class__ is float:
            diff = pred - target
            self.n = 1
            self.scaled = diff * 2.0
            return diff * diff
        sp, st = np.shape(pred), np.shape(target)
        if sp != st:
            try:
                both = np.broadcast_shapes(sp, st)
            except ValueError:
                both = None
            if both != sp and both != st:
                raise ValueError(
                    f"mse needs the prediction and the target in one shape (or one that "
                    f"broadcasts to the other's), got prediction {sp} and target {st}"
                    + ("" if both is None else f", which would compare every element of "
                       f"each in a {both} grid; reshape one to the other's shape"))
        with _quiet():
            diff = np.subtract(pred, target)
            self.n = diff.size
            if self.n == 0:
                raise ValueError(f"mse of empty arrays (shapes {sp} and {st})")
            self.scaled = diff * (2.0 / self.n)
            return float(np.mean(diff * diff))

    def backward(self, upstream):
        with _quiet():
            d = upstream * self.scaled
            return fit(d, self.x), fit(-d, self.y)

    def jvp(self, pred_dot, target_dot):
        with _quiet():
            return float(np.sum(self.scaled * (pred_dot - target_dot)))

    def backward_gates(self, g, inputs, out, upstream):
        pred, target = inputs
        diff = g.sub(pred, target)
        d = g.mul(g.apply(SpreadGate(None, mean=True), upstream, diff), g.mul(2.0, diff))
        return sum_to(g, d, pred), sum_to(g, g.neg(d), target)


# ---------------------------------------------------------------- linear algebra, reductions

def _swap(a):
    return np.swapaxes(a, -1, -2)


@register
class MatMulGate(Gate):
    """matmul: out = a @ b (vectors, matrices, batched on the left);
    da = g @ b^T, db = a^T @ g"""

    __slots__ = ("a", "b")    # what forward keeps: no dict to make

    arity = 2
    op, symbol = "matmul", "@"
    prunable = True     # backward takes need=(bool, bool) and skips an unwanted product

    def forward(self, a, b):
        if a.__class__ is np.ndarray and b.__class__ is np.ndarray and a.ndim and b.ndim:
            self.a = a
            self.b = b
            t = _quiet_on()
            try:
                out = a @ b
            finally:
                _quiet_off(t)
            return out if out.ndim else float(out)
        if np.ndim(a) == 0 or np.ndim(b) == 0:
            raise ValueError("matmul needs arrays of at least one dimension, "
                             f"got shapes {np.shape(a)} and {np.shape(b)}")
        self.a = a
        self.b = b
        with _quiet():
            out = np.matmul(a, b)
        return float(out) if out.ndim == 0 else out

    def backward(self, upstream, need=(True, True)):
        # need: which inputs want a gradient (a pruned backward passes (False, True)
        # for x @ W on data x); an unwanted input gets None
        a, b, g = self.a, self.b, upstream
        if a.ndim == 2 and b.ndim == 2:
            t = _quiet_on()
            try:
                ga = g @ b.T if need[0] else None
                gb = a.T @ g if need[1] else None
            finally:
                _quiet_off(t)
            if ga is not None and ga.dtype is not a.dtype:
                ga = _like(ga, a)
            if gb is not None and gb.dtype is not b.dtype:
                gb = _like(gb, b)
            return ga, gb
        with _quiet():
            if b.ndim == 2:                       # a (..., k) or (..., n, k), b (k, m)
                ga = g @ b.T
                k, m = b.shape
                gb = a.reshape(-1, k).T @ np.reshape(g, (-1, m))
                return _like(ga, a), _like(gb, b)
            if a.ndim == 1 and b.ndim == 1:
                return _like(g * b, a), _like(g * a, b)
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
        with _quiet():
            out = np.matmul(a_dot, self.b) + np.matmul(self.a, b_dot)
        return float(out) if np.ndim(out) == 0 else out

    def backward_gates(self, g, inputs, out, upstream):
        a, b = inputs
        return (g.apply(MatMulGradA(), upstream, b, a),
                g.apply(MatMulGradB(), a, upstream, b))


@register
class TransposeGate(Gate):
    """transpose: out = x with its last two axes swapped, d/dx = upstream swapped back"""

    arity = 1
    op, symbol = "transpose", "ᵀ"

    def forward(self, x):
        if np.ndim(x) < 2:
            raise ValueError(f"transpose needs at least two dimensions, got shape {np.shape(x)}")
        return _swap(x).copy()       # copies: no two nodes share an array

    def backward(self, upstream):
        return (_swap(upstream).copy(),)

    def jvp(self, x_dot):
        return _swap(x_dot).copy()

    def backward_gates(self, g, inputs, out, upstream):
        return (g.apply(TransposeGate(), upstream),)


def _check_axis(axis):
    if axis is None:
        return None
    one = not isinstance(axis, (list, tuple))
    for a in (axis,) if one else axis:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise ValueError(f"axis must be None, an int or a list of ints, got {axis!r}")
    return int(axis) if one else tuple(int(a) for a in axis)


@register
class SumGate(Gate):
    """sum: out = sum of x over axis (all elements when None), d/dx = 1

    ``axis`` is None, an int or a list of ints, as in numpy: negative counts from the
    end, an empty list reduces nothing.
    """

    arity = 1
    op, symbol = "sum", "Σ"

    def __init__(self, axis=None):
        self.axis = _check_axis(axis)

    def config(self):
        return {"axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis}

    def _reduce(self, x):
        with _quiet():
            out = np.sum(x, axis=self.axes)
        return float(out) if np.ndim(out) == 0 else out

    def forward(self, x):
        self.shape = shape = np.shape(x)
        self.dtype = _dtype(x)
        axis, ndim = self.axis, len(shape)
        if axis is None:
            self.axes, self.n = None, math.prod(shape)
            return self._reduce(x)
        axes = []
        for a in (axis,) if isinstance(axis, int) else axis:
            if not -ndim <= a < ndim:
                raise ValueError(f"axis {a} is out of range for an input of {ndim} "
                                 f"dimension{'' if ndim == 1 else 's'} (shape {shape})")
            a %= ndim
            if a in axes:
                raise ValueError(f"axis {axis!r} names axis {a} twice "
                                 f"(input of shape {shape})")
            axes.append(a)
        self.axes = tuple(axes)
        self.n = math.prod(shape[a] for a in axes)
        return self._reduce(x)

    def _spread(self, upstream):
        if self.axes is not None:
            upstream = np.expand_dims(upstream, self.axes)
        if not self.shape:
            return float(upstream)
        out = np.empty(self.shape, dtype=self.dtype)
        out[...] = upstream
        return out

    def backward(self, upstream):
        return (self._spread(upstream),)

    def jvp(self, x_dot):
        return self._reduce(np.broadcast_to(x_dot, self.shape))

    def backward_gates(self, g, inputs, out, upstream):
        return (g.apply(SpreadGate(self.axis), upstream, inputs[0]),)


@register
class MeanGate(SumGate):
    """mean: out = mean of x over axis (all elements when None), d/dx = 1/n
    (n the number of elements averaged; an empty mean is nan)"""

    op, symbol = "mean", "mean"

    def forward(self, x):
        total = super().forward(x)
        with _quiet():
            return total / self.n if self.n else total * _nan

    def backward(self, upstream):
        with _quiet():
            return (self._spread(upstream / self.n if self.n else upstream * _nan),)

    def jvp(self, x_dot):
        total = self._reduce(np.broadcast_to(x_dot, self.shape))
        with _quiet():
            return total / self.n if self.n else total * _nan

    def backward_gates(self, g, inputs, out, upstream):
        return (g.apply(SpreadGate(self.axis, mean=True), upstream, inputs[0]),)


@register
class SoftmaxCrossEntropy(Gate):
    """softmax_cross_entropy: out = mean over the batch of -log softmax(logits)[label];
    d/dlogits = (softmax - onehot) / batch; labels get no gradient"""

    arity = 2
    op, symbol = "softmax_cross_entropy", "CE"
    _key = None         # (rows, classes) of the offsets below
    _base = None        # k * classes for row k: a label's index into the flat logits

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
        t = _quiet_on()
        try:
            flat = y.astype(np.intp)            # a copy: nan and inf cast to the minimum
            # as unsigned, a negative label is huge: one comparison checks both ends;
            # count_nonzero is the cheapest reduction numpy has
            if _count_nonzero(flat.view(np.uintp) >= classes) or \
                    (y.dtype.kind == "f" and _count_nonzero(flat != y)):
                raise ValueError(f"labels must be integer classes in [0, {classes})")
            if self._key != (n, classes):
                self._key, self._base = (n, classes), np.arange(0, n * classes, classes)
            flat += self._base
            shifted = z2 - _rowmax(z2, 1, keepdims=True)  # log-sum-exp: large logits are safe
            e = np.exp(shifted)
            total = _rowsum(e, 1, keepdims=True)
            self.labels = labels
            self.shape = z.shape
            self.flat, self.e, self.total = flat, e, total
            return float(_rowsum(np.log(total), None) - _rowsum(shifted.take(flat), None)) / n
        finally:
            _quiet_off(t)

    def _dlogits(self):
        # cannot warn: e in [0, 1], total in [1, classes] (or nan, which numpy passes)
        n = len(self.flat)
        d = np.divide(self.e, self.total * n, order="C")   # C order: d's flat view is d's
        d.reshape(-1)[self.flat] -= 1.0 / n
        return d.reshape(self.shape)

    def backward(self, upstream):
        d = self._dlogits()
        if upstream.__class__ is not float or upstream != 1.0:
            with _quiet():
                d *= upstream
        return d, zeros_like(self.labels)

    def jvp(self, logits_dot, labels_dot):
        with _quiet():
            return float(np.sum(self._dlogits() * logits_dot))

    def backward_gates(self, g, inputs, out, upstream):
        logits, labels = inputs      # (softmax - onehot) * upstream / batch, stable
        onehot = g.apply(OneHotGate(), labels, logits)
        per_row = g.apply(SpreadGate(None, mean=True), upstream,
                          g.apply(RowSumGate(), onehot))
        return g.mul(g.sub(g.apply(SoftmaxGate(), logits), onehot), per_row), None


# ---------------------------------------------------------------- gates of backward passes
# The gates that ge.grad's rules add besides the ones above: undoing broadcasting,
# spreading a reduction's gradient, masks with no derivative, stable local
# derivatives, and matmul's two vector-Jacobian products. Each has its own rule, so
# a gradient graph can be differentiated again (and again). They follow the module's
# numerics: silent array paths, NaN through the masks as through relu's and max's
# partials, 0-d results as floats, and fresh arrays. A gate whose value is the
# gradient of one of its inputs (sum_to, broadcast_to and spread of x, matmul_grad_a
# of a, matmul_grad_b of b) computes it in that input's dtype, as ``fit`` and
# matmul's backward do, so a gradient graph's gradients have their nodes' dtypes.

def _shape(v):
    return v.shape if v.__class__ is np.ndarray else np.shape(v)


def _dtype_of(x, u):
    """The dtype of a result that is the gradient of ``x``: x's own for a float array,
    else the (float) dtype of ``u``."""
    if x.__class__ is np.ndarray and x.dtype.kind == "f":
        return x.dtype
    return _dtype(u)


def _reduce_to(u, shape, dtype):
    """A new array of ``u`` summed down to ``shape`` (undoing numpy broadcasting) in
    ``dtype``; a float for shape ()."""
    ushape = _shape(u)
    if ushape != shape:
        try:
            ok = np.broadcast_shapes(ushape, shape) == ushape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"cannot sum an array of shape {ushape} down to shape {shape}")
    t = _quiet_on()
    try:
        if shape == ():
            return float(np.sum(u)) if ushape != () else float(u)
        if ushape == shape:
            return np.array(u, dtype=dtype)
        lead = len(ushape) - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                          if n == 1 and ushape[lead + i] != 1)
        return np.sum(u, axis=axes).reshape(shape).astype(dtype, copy=False)
    finally:
        _quiet_off(t)


def _spread_to(u, shape, dtype):
    """``u`` broadcast to ``shape``, as a new array in ``dtype`` (a float for shape ())."""
    if shape == ():
        if _shape(u) != ():
            raise ValueError(f"cannot broadcast an array of shape {_shape(u)} to a scalar")
        return float(u)
    out = np.empty(shape, dtype=dtype)
    t = _quiet_on()
    try:
        out[...] = u           # float64 to float32 may overflow to inf: silently
    finally:
        _quiet_off(t)
    return out


def sum_to(g, u, x):
    """For ``backward_gates`` rules: the Node of ``u`` summed down to the shape of ``x``
    (undoing numpy broadcasting) in the dtype of ``x``, as ``fit`` gives a gradient."""
    return g.apply(SumToGate(), u, x)


@register
class SumToGate(Gate):
    """sum_to: out = u summed down to the shape of x (undoing broadcasting), in x's
    dtype; d/du = upstream broadcast back to u's shape; x gives only its shape"""

    arity = 2
    op, symbol = "sum_to", "sum_to"

    def forward(self, u, x):
        self.u = u
        self.x = x
        self.dtype = _dtype_of(x, u)
        return _reduce_to(u, _shape(x), self.dtype)

    def backward(self, upstream):
        u = self.u
        return _spread_to(upstream, _shape(u), _dtype_of(u, upstream)), zeros_like(self.x)

    def jvp(self, u_dot, x_dot):
        if _shape(u_dot) != _shape(self.u):
            u_dot = np.broadcast_to(u_dot, _shape(self.u))
        return _reduce_to(u_dot, _shape(self.x), self.dtype)

    def backward_gates(self, g, inputs, out, upstream):
        return g.apply(BroadcastToGate(), upstream, inputs[0]), None


@register
class BroadcastToGate(Gate):
    """broadcast_to: out = a broadcast to the shape of x, in x's dtype; d/da = upstream
    summed back to a's shape; x gives only its shape"""

    arity = 2
    op, symbol = "broadcast_to", "broadcast"

    def forward(self, a, x):
        self.a = a
        self.x = x
        self.dtype = _dtype_of(x, a)
        return _spread_to(a, _shape(x), self.dtype)

    def backward(self, upstream):
        a = self.a
        return _reduce_to(upstream, _shape(a), _dtype_of(a, upstream)), zeros_like(self.x)

    def jvp(self, a_dot, x_dot):
        return _spread_to(a_dot, _shape(self.x), self.dtype)

    def backward_gates(self, g, inputs, out, upstream):
        return sum_to(g, upstream, inputs[0]), None


@register
class SpreadGate(Gate):
    """spread: out = u copied along axis to the shape of x, divided by the count when
    mean (the backward of sum and mean), in x's dtype; d/du = sum (mean) of upstream
    over axis"""

    arity = 2
    op = "spread"

    def __init__(self, axis=None, mean=False):
        self.axis = _check_axis(axis)
        self.mean = bool(mean)

    @property
    def symbol(self):
        return "spread/n" if self.mean else "spread"

    def config(self):
        axis = list(self.axis) if isinstance(self.axis, tuple) else self.axis
        return {"axis": axis, "mean": self.mean}

    def _spread(self, u):
        shape = self.shape
        if self.axis is not None:
            u = np.expand_dims(u, self.axis)
        out = _spread_to(u, shape, self.dtype)
        if not self.mean:
            return out
        if out.__class__ is float:
            return out / self.n if self.n else out * _nan
        with _quiet():
            out /= self.n          # n = 0 (an empty spread) divides nothing
        return out

    def forward(self, u, x):
        self.u = u
        self.x = x
        self.shape = shape = _shape(x)
        self.dtype = _dtype_of(x, u)
        self.n = float(np.prod(shape) if self.axis is None
                       else np.prod([shape[a] for a in np.atleast_1d(self.axis)]))
        return self._spread(u)

    def backward(self, upstream):
        with _quiet():
            reduced = (np.mean if self.mean else np.sum)(upstream, axis=self.axis)
        if np.ndim(reduced) == 0:
            return float(reduced), zeros_like(self.x)
        return reduced.astype(_dtype_of(self.u, upstream), copy=False), zeros_like(self.x)

    def jvp(self, u_dot, x_dot):
        return self._spread(u_dot)

    def backward_gates(self, g, inputs, out, upstream):
        reduce = g.mean if self.mean else g.sum
        return reduce(upstream, axis=self.axis), None


@register
class RowSumGate(Unary):
    """rowsum: out = sum of x over its last axis, kept with length 1; d/dx = 1"""

    op, symbol = "rowsum", "Σrow"

    def forward(self, x):
        if np.ndim(x) == 0:
            raise ValueError("rowsum needs an array of at least one dimension")
        self.x = x
        with _quiet():
            return np.sum(x, axis=-1, keepdims=True)

    def backward(self, upstream):
        return (_spread_to(upstream, self.x.shape, _dtype(self.x)),)

    def jvp(self, x_dot):
        with _quiet():
            return np.sum(np.broadcast_to(x_dot, self.x.shape), axis=-1, keepdims=True)

    def backward_gates(self, g, inputs, out, upstream):
        return (g.apply(BroadcastToGate(), upstream, inputs[0]),)


@register
class StepGate(Unary):
    """step: out = 1 where x > 0, else 0 (relu's local derivative: 0 at 0, nan at a
    nan, as relu's backward gives); d/dx = 0"""

    op, symbol = "step", "x>0"

    def forward(self, x):
        self.x = x
        if x.__class__ is float:
            return 1.0 if x > 0.0 else (0.0 if x <= 0.0 else x)       # x: the nan
        if getattr(x, "dtype", None) is None or x.dtype.kind != "f":
            x = np.asarray(x, dtype=float)
        d = np.sign(np.maximum(x, 0.0))     # 1, 0 or nan (relu's partial)
        if d.ndim == 0:
            return float(d) + 0.0
        d += 0.0                            # -0.0 becomes 0.0
        return d

    def backward(self, upstream):
        return (zeros_like(self.x),)

    def jvp(self, x_dot):
        return zeros_like(self.x)

    def backward_gates(self, g, inputs, out, upstream):
        return (None,)


@register
class MaxMaskGate(Binary):
    """max_mask: out = 1 where x > y, 0.5 where x == y, 0 where x < y (x's share of
    max's gradient, split equally on a tie; nan where x or y is nan, as max's
    backward gives); d/dx = d/dy = 0"""

    op, symbol = "max_mask", "x>y"

    def forward(self, x, y):
        self.x = x
        self.y = y
        if x.__class__ is float and y.__class__ is float:
            self.out = 1.0 if x > y else 0.0 if x < y else 0.5 if x == y else _nan
            return self.out
        dtype = np.result_type(x, y)
        if dtype.kind != "f":
            dtype = np.dtype(float)
        with _quiet():
            out = np.array(np.greater(x, y), dtype=dtype)       # arrays, also for 0-d
            half = np.array(np.equal(x, y), dtype=dtype)
            half *= 0.5
            out += half
            nan = np.isnan(x) | np.isnan(y)
            if nan.any():
                out[nan] = _nan
        self.out = float(out) if out.ndim == 0 else out
        return self.out

    def backward(self, upstream):
        return zeros_like(self.x), zeros_like(self.y)

    def jvp(self, x_dot, y_dot):
        return zeros_like(self.out)

    def backward_gates(self, g, inputs, out, upstream):
        return None, None


@register
class SigmoidGradGate(Unary):
    """sigmoid_grad: out = s(1 - s) for s = sigmoid(x), as e^-|x| / (1 + e^-|x|)^2
    (stable at any x); d/dx = out (1 - 2 s) = -out tanh(x/2)"""

    op, symbol = "sigmoid_grad", "σ'"

    def forward(self, x):
        self.x = x
        if x.__class__ is float:
            e = _exp(-abs(x))                # never overflows: -|x| <= 0
            self.out = e / ((1.0 + e) * (1.0 + e))
        else:
            with _quiet():
                e = np.exp(-np.abs(x))
                self.out = e / ((1.0 + e) * (1.0 + e))
        return self.out

    def partial(self):
        x = self.x
        if x.__class__ is float:
            return -self.out * math.tanh(0.5 * x)
        with _quiet():
            return -self.out * np.tanh(0.5 * x)

    def backward_gates(self, g, inputs, out, upstream):
        slope = g.neg(g.mul(out, g.tanh(g.mul(0.5, inputs[0]))))
        return (g.mul(upstream, slope),)


@register
class SoftmaxGate(Unary):
    """softmax: out = e^x / sum(e^x) over the last axis (shifted by the max: stable);
    d/dx = out * (upstream - sum(out * upstream over the last axis))"""

    op, symbol = "softmax", "softmax"

    def forward(self, x):
        if np.ndim(x) == 0:
            raise ValueError("softmax needs an array of at least one dimension")
        with _quiet():
            e = np.exp(x - np.max(x, axis=-1, keepdims=True))
            self.out = e / np.sum(e, axis=-1, keepdims=True)
        return self.out

    def _product(self, v):          # the Jacobian is symmetric: one product, both modes
        with _quiet():
            sv = self.out * v
            return sv - self.out * np.sum(sv, axis=-1, keepdims=True)

    def backward(self, upstream):
        return (self._product(upstream),)

    def jvp(self, x_dot):
        return self._product(x_dot)

    def backward_gates(self, g, inputs, out, upstream):
        sv = g.mul(out, upstream)
        return (g.sub(sv, g.mul(out, g.apply(RowSumGate(), sv))),)


@register
class OneHotGate(Binary):
    """one_hot: out[i, label_i] = 1, else 0, shaped like the logits ((classes,) or
    (batch, classes)) and in their dtype; no derivative"""

    op, symbol = "one_hot", "onehot"

    def forward(self, labels, logits):
        shape = _shape(logits)
        if len(shape) not in (1, 2):
            raise ValueError(f"one_hot needs logits of shape (classes,) or (batch, classes), "
                             f"got {shape}")
        n, classes = (1, shape[0]) if len(shape) == 1 else shape
        y = np.asarray(labels).reshape(-1)
        if y.shape[0] != n:
            raise ValueError(f"{y.shape[0]} labels for {n} rows of logits")
        with _quiet():
            idx = y.astype(np.intp)
        if n and (idx.astype(np.uintp).max() >= classes or (idx != y).any()):
            raise ValueError(f"labels must be integer classes in [0, {classes})")
        out = np.zeros((n, classes), dtype=_dtype(logits))
        out[np.arange(n), idx] = 1.0
        self.labels = labels
        self.logits = logits
        self.out = out.reshape(shape)
        return self.out

    def backward(self, upstream):
        return zeros_like(self.labels), zeros_like(self.logits)

    def jvp(self, labels_dot, logits_dot):
        return zeros_like(self.out)

    def backward_gates(self, g, inputs, out, upstream):
        return None, None


def _matmul_vjp(a, b, u, k):
    """The gradient of <u, a @ b> with respect to a (k = 0) or b (k = 1), in the dtype
    of that one (silent: matmul's backward is)."""
    gate = MatMulGate()
    gate.a, gate.b = np.asarray(a), np.asarray(b)
    return gate.backward(u, need=(k == 0, k == 1))[k]


def _matmul_like(p, q, like):
    """p @ q in the dtype of ``like`` (a float for a 0-d product), silently."""
    with _quiet():
        out = np.matmul(p, q)
        if np.ndim(out) == 0:
            return float(out)
        return out.astype(_dtype_of(like, out), copy=False)


@register
class MatMulGradA(Gate):
    """matmul_grad_a: out = u @ b^T (summed to a's shape, in a's dtype), the gradient
    of <u, a @ b> with respect to a; bilinear in u and b, a gives only its shape"""

    arity = 3
    op, symbol = "matmul_grad_a", "@bᵀ"

    def forward(self, u, b, a):
        self.u, self.b, self.a = u, b, a
        return _matmul_vjp(a, b, u, 0)

    def backward(self, upstream):
        return (_matmul_like(upstream, self.b, self.u),
                _matmul_vjp(upstream, self.b, self.u, 1), zeros_like(self.a))

    def jvp(self, u_dot, b_dot, a_dot):
        with _quiet():
            return _matmul_vjp(self.a, self.b, u_dot, 0) + _matmul_vjp(self.a, b_dot, self.u, 0)

    def backward_gates(self, g, inputs, out, upstream):
        u, b, _ = inputs
        return g.matmul(upstream, b), g.apply(MatMulGradB(), upstream, u, b), None


@register
class MatMulGradB(Gate):
    """matmul_grad_b: out = a^T @ u (summed to b's shape, in b's dtype), the gradient
    of <u, a @ b> with respect to b; bilinear in a and u, b gives only its shape"""

    arity = 3
    op, symbol = "matmul_grad_b", "aᵀ@"

    def forward(self, a, u, b):
        self.a, self.u, self.b = a, u, b
        return _matmul_vjp(a, b, u, 1)

    def backward(self, upstream):
        return (_matmul_vjp(self.a, upstream, self.u, 0),
                _matmul_like(self.a, upstream, self.u), zeros_like(self.b))

    def jvp(self, a_dot, u_dot, b_dot):
        with _quiet():
            return _matmul_vjp(a_dot, self.b, self.u, 1) + _matmul_vjp(self.a, self.b, u_dot, 1)

    def backward_gates(self, g, inputs, out, upstream):
        a, u, _ = inputs
        return g.apply(MatMulGradA(), u, upstream, a), g.matmul(a, upstream), None


@register
class SeedGate(Unary):
    """seed: out = 1, d(x)/d(x), where the backward pass of the scalar x starts;
    x must be a scalar; no derivative"""

    op, symbol = "seed", "seed"

    def forward(self, x):
        if _shape(x) != ():
            raise ValueError(f"a gradient graph needs a scalar output, got shape {_shape(x)}")
        self.x = x
        return 1.0

    def backward(self, upstream):
        return (zeros_like(self.x),)

    def jvp(self, x_dot):
        return 0.0

    def backward_gates(self, g, inputs, out, upstream):
        return (None,)


# The gates defined above; the plan trusts their gradients' count and shapes and
# checks those of every other gate (users' own, or registered later).
BUILTIN = frozenset(GATES.values())
