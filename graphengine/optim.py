"""Optimizers: update parameters in place from the gradients of the last backward."""

from __future__ import annotations

import math

import numpy as np

from .errors import GraphError
from .graph import Node

__all__ = ["Optimizer", "SGD", "Adam"]


def _positive(value, what: str, upper: float = math.inf, closed: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (0 <= value if closed else 0 < value) and value < upper
    if not ok:
        low = "[0" if closed else "(0"
        raise GraphError(f"{what} must be a number in {low}, {upper:g}), got {value!r}")
    return float(value)


class Optimizer:
    """Base class: holds the parameters; ``step()`` updates each from its ``.grad``."""

    def __init__(self, params):
        if isinstance(params, Node):
            raise GraphError(f"{type(self).__name__} needs a list of parameters, got the "
                             f"single node {params.name!r}; write [{params.name}] or pass "
                             "g.parameters()")
        try:
            params = list(params)
        except TypeError:
            raise GraphError(f"{type(self).__name__} needs a list of parameter nodes (pass "
                             f"g.parameters()), got {type(params).__name__}") from None
        if not params:
            raise GraphError(f"{type(self).__name__} needs at least one parameter, got none")
        for p in params:
            if not isinstance(p, Node) or p.kind != "parameter":
                what = p.name if isinstance(p, Node) else type(p).__name__
                raise GraphError(f"{type(self).__name__}: {what!r} is not a parameter "
                                 "node (pass g.parameters())")
        names = [p.name for p in params]
        for k, p in enumerate(params):
            if p.name in names[:k] and p is params[names.index(p.name)]:
                raise GraphError(f"{type(self).__name__}: parameter {p.name!r} is listed "
                                 "twice; it would take two steps per update")
        self.params = params

    _slots = (None, ())     # the plan of the gradients last stepped from, and our slots in it

    def step(self) -> None:
        """Update every parameter in place from its ``.grad`` (of the last backward)."""
        if type(self).update in _TRUSTING and self._step_from_run():
            return
        grads = []
        for p in self.params:
            grad = p.grad
            if grad is None:
                raise GraphError(f"parameter {p.name!r} has no gradient: run forward "
                                 "and backward before step()")
            grads.append(grad)
        self.update(grads)

    def _step_from_run(self) -> bool:
        # the common case of step(): the parameters' gradients are those of the graph's
        # last backward, computed from the values on hand; read them by slot and let
        # _update_from_plan check what is left (False: step() reads each .grad)
        params = self.params
        graph = params[0].graph
        run = getattr(graph, "run", None)
        if run is None or not run.grads_current:
            return False
        plan = run.grads_plan
        cached, slots = self._slots
        if cached is not plan:
            slot = plan.slot
            slots = tuple(slot.get(p.name, -1) for p in params)
            self._slots = plan, slots
        if -1 in slots:
            return False
        for p in params:
            if p.graph is not graph:
                return False
        self._update_from_plan(run.grads, run.values, slots)
        return True

    def update(self, grads) -> None:
        """Update every parameter in place from ``grads``, one per parameter, in order."""
        raise NotImplementedError

    def _update(self, grads) -> None:
        # the update itself, from gradients already checked
        raise NotImplementedError

    def _update_from_plan(self, grads: list, vals: list, slots: tuple) -> None:
        """``update([grads[k] for k in slots])`` for the gradients a plan's backward
        computed from ``vals`` (the parameters' slots in order): while every parameter
        still holds the value in its slot, each gradient has that value's shape and
        dtype, so only a read-only array is left to check; otherwise ``update`` checks
        everything (and raises what it finds). Used by ``train.compile_step`` for the
        built-in optimizers."""
        ndarray = np.ndarray
        for p, k in zip(self.params, slots, strict=False):
            value = p._value
            if value is not vals[k] or value.__class__ is ndarray and not value.flags.writeable:
                self.update([grads[k] for k in slots])
                return
        self._update([grads[k] for k in slots])

    def _check(self, grads) -> list:
        """The gradients as a list after checking them all, before anything changes: one
        per parameter, each a number or an array of its parameter's shape, and every
        parameter array writable."""
        params = self.params
        # the training loop's case first, in few operations: a list of float arrays
        # of the parameters' shapes (or floats for floats), every parameter writable
        if grads.__class__ is list and len(grads) == len(params):
            ndarray = np.ndarray
            for p, grad in zip(params, grads, strict=False):
                value = p._value
                if grad.__class__ is ndarray:
                    if not (value.__class__ is ndarray and grad.shape == value.shape
                            and grad.dtype.kind == "f" and value.flags.writeable):
                        break
                elif not (grad.__class__ is float and value.__class__ is float):
                    break
            else:
                return grads
        return self._check_each(grads)

    def _check_each(self, grads) -> list:
        name = f"{type(self).__name__}.update"
        if not isinstance(grads, (list, tuple)):
            raise GraphError(f"{name}: expected a list of gradients (one per parameter), "
                             f"got {type(grads).__name__}")
        n = len(self.params)
        if len(grads) != n:
            raise GraphError(f"{name}: expected {n} gradient{'' if n == 1 else 's'} (one "
                             f"per parameter), got {len(grads)}")
        out = []
        for p, grad in zip(self.params, grads, strict=True):
            value = p._value
            # the training loop's case first, in few operations
            if grad.__class__ is np.ndarray and value.__class__ is np.ndarray:
                if grad.shape == value.shape and grad.dtype.kind == "f" \
                        and value.flags.writeable:
                    out.append(grad)
                    continue
            elif grad.__class__ is float and value.__class__ is float:
                out.append(grad)
                continue
            if isinstance(grad, (int, float, np.integer, np.floating)) \
                    and not isinstance(grad, bool):
                grad = float(grad)
            elif not (isinstance(grad, np.ndarray) and grad.dtype.kind in "fiu"):
                kind = "numpy array" if isinstance(grad, np.ndarray) else type(grad).__name__
                raise GraphError(f"{name}: the gradient of parameter {p.name!r} is "
                                 f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
                                 + (f" of dtype {grad.dtype}" if isinstance(grad, np.ndarray)
                                    else "") + "; expected a number or an array of numbers")
            if np.shape(grad) != np.shape(value):
                raise GraphError(f"{name}: the gradient of parameter {p.name!r} has shape "
                                 f"{np.shape(grad)}, expected the parameter's shape "
                                 f"{np.shape(value)}")
            if isinstance(value, np.ndarray) and not value.flags.writeable:
                raise GraphError(f"{name}: parameter {p.name!r} holds a read-only array, "
                                 "which a step updates in place; give it a writable one "
                                 f"({p.name}.value = numpy.array(...))")
            out.append(np.asarray(grad) if isinstance(grad, np.matrix) else grad)
        return out

    @staticmethod
    def _apply(p: Node, delta) -> None:
        value = p._value
        if value.__class__ is float:
            p.value = float(value - delta)
        else:
            value -= delta           # in place: the node keeps its array


class SGD(Optimizer):
    """Stochastic gradient descent with heavy-ball momentum, as PyTorch:
    ``v = momentum * v + grad; p -= lr * v`` (plain ``p -= lr * grad`` at momentum 0).

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> w = g.parameter("w", 3.0)
    >>> loss = w * w
    >>> opt = ge.optim.SGD(g.parameters(), lr=0.25)
    >>> g.forward(); g.backward()["w"]
    9.0
    6.0
    >>> opt.step(); w.value
    1.5
    """

    def __init__(self, params, lr: float, momentum: float = 0.0):
        super().__init__(params)
        self.lr = _positive(lr, "SGD: lr")
        self.momentum = _positive(momentum, "SGD: momentum", upper=1.0, closed=True)
        self.velocity = [None] * len(self.params)

    def update(self, grads) -> None:
        self._update(self._check(grads))

    def _update_from_plan(self, grads: list, vals: list, slots: tuple) -> None:
        # the training loop's case in one pass of checks and one of updates: no
        # momentum, every parameter the writable array its slot holds
        if not self.momentum:
            ndarray = np.ndarray
            for p, k in zip(self.params, slots, strict=False):
                value = p._value
                if value is not vals[k] or value.__class__ is not ndarray \
                        or not value.flags.writeable:
                    break
            else:
                lr = self.lr
                for k in slots:
                    value = vals[k]
                    value -= lr * grads[k]           # in place: the node keeps its array
                return
        super()._update_from_plan(grads, vals, slots)

    def _update(self, grads) -> None:
        lr, m = self.lr, self.momentum
        if m:
            grads = [grad * 1.0 if v is None else v * m + grad
                     for v, grad in zip(self.velocity, grads, strict=False)]
            self.velocity = grads
        ndarray = np.ndarray
        for p, grad in zip(self.params, grads, strict=False):
            value = p._value
            if value.__class__ is ndarray:
                value -= lr * grad           # in place: the node keeps its array
            else:
                self._apply(p, lr * grad)


class Adam(Optimizer):
    """Adam (Kingma and Ba), as PyTorch: moments ``m, v`` with bias correction,
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)``.

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> w = g.parameter("w", 3.0)
    >>> loss = w * w
    >>> opt = ge.optim.Adam(g.parameters(), lr=0.1)
    >>> g.forward(); _ = g.backward(); opt.step(); round(w.value, 6)
    9.0
    2.9
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params)
        self.lr = _positive(lr, "Adam: lr")
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise GraphError(f"Adam: betas must be a pair of numbers, got {betas!r}") from None
        self.betas = (_positive(b1, "Adam: betas[0]", 1.0, closed=True),
                      _positive(b2, "Adam: betas[1]", 1.0, closed=True))
        self.eps = _positive(eps, "Adam: eps")
        self.t = 0
        self.m = [None] * len(self.params)
        self.v = [None] * len(self.params)

    def update(self, grads) -> None:
        self._update(self._check(grads))

    def _update(self, grads) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for k, (p, grad) in enumerate(zip(self.params, grads, strict=False)):
            m, v = self.m[k], self.v[k]
            m = (1.0 - b1) * grad if m is None else b1 * m + (1.0 - b1) * grad
            v = (1.0 - b2) * grad * grad if v is None else b2 * v + (1.0 - b2) * grad * grad
            self.m[k], self.v[k] = m, v
            self._apply(p, self.lr * (m / c1) / ((v / c2) ** 0.5 + self.eps))


# the updates that _update_from_plan may stand in for (a subclass's own update may not)
_TRUSTING = (SGD.update, Adam.update)
