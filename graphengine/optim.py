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
        params = list(params)
        if not params:
            raise GraphError(f"{type(self).__name__} needs at least one parameter, got none")
        for p in params:
            if not isinstance(p, Node) or p.kind != "parameter":
                what = p.name if isinstance(p, Node) else type(p).__name__
                raise GraphError(f"{type(self).__name__}: {what!r} is not a parameter "
                                 "node (pass g.parameters())")
        self.params = params

    def step(self) -> None:
        """Update every parameter in place from its ``.grad`` (of the last backward)."""
        grads = []
        for p in self.params:
            grad = p.grad
            if grad is None:
                raise GraphError(f"parameter {p.name!r} has no gradient: run forward "
                                 "and backward before step()")
            grads.append(grad)
        self.update(grads)

    def update(self, grads) -> None:
        """Update every parameter in place from ``grads``, one per parameter, in order."""
        raise NotImplementedError

    def _check(self, grads):
        if len(grads) != len(self.params):
            raise GraphError(f"{type(self).__name__}.update: expected {len(self.params)} "
                             f"gradients (one per parameter), got {len(grads)}")

    @staticmethod
    def _apply(p: Node, delta) -> None:
        value = p._value
        if value.__class__ is float:
            p.value = value - delta
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
        self._check(grads)
        lr, m = self.lr, self.momentum
        if m:
            grads = [grad * 1.0 if v is None else v * m + grad
                     for v, grad in zip(self.velocity, grads, strict=False)]
            self.velocity = grads
        for p, grad in zip(self.params, grads, strict=False):
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
        self._check(grads)
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for k, (p, grad) in enumerate(zip(self.params, grads, strict=False)):
            m, v = self.m[k], self.v[k]
            m = (1.0 - b1) * grad if m is None else b1 * m + (1.0 - b1) * grad
            v = (1.0 - b2) * grad * grad if v is None else b2 * v + (1.0 - b2) * grad * grad
            self.m[k], self.v[k] = m, v
            self._apply(p, self.lr * (m / c1) / ((v / c2) ** 0.5 + self.eps))
