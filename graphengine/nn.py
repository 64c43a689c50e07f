"""Networks built from gates: the multilayer perceptron."""

from __future__ import annotations

import numpy as np

from .errors import GraphError
from .graph import ComputationalGraph, Node

__all__ = ["mlp", "ACTIVATIONS"]

# activation name -> Glorot (fan_in + fan_out) or He (fan_in) initialisation
ACTIVATIONS = {"sigmoid": "glorot", "tanh": "glorot", "relu": "he"}


def mlp(g: ComputationalGraph, x: Node, sizes, activation: str = "sigmoid",
        seed: int = 0) -> Node:
    """Build a multilayer perceptron on ``x`` from matmul, add and activation gates.

    Layer k computes ``h @ Wk + bk`` with parameters named ``W1, b1, W2, b2, ...``;
    the activation sits between layers and the last layer is left linear (its
    output is the logits, or the prediction of a regression).

    Parameters
    ----------
    g : ComputationalGraph
        The graph to add the network to.
    x : Node
        The network's input: rows of samples ``(batch, sizes[0])`` or one sample.
    sizes : sequence of int
        Every layer's width including the input, e.g. ``[64, 128, 10]``.
    activation : {"sigmoid", "tanh", "relu"}
        The gate between layers.
    seed : int
        Seed of the numpy Generator that draws the weights.

    Returns
    -------
    Node
        The last layer's output.

    Notes
    -----
    Initialisation: biases are zero; ``Wk`` of shape ``(n_in, n_out)`` is uniform in
    ``[-a, a]`` with ``a = sqrt(6 / (n_in + n_out))`` (Glorot) for sigmoid and tanh,
    ``a = sqrt(6 / n_in)`` (He) for relu, drawn layer by layer from
    ``numpy.random.default_rng(seed)``.

    Examples
    --------
    >>> import numpy as np
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> out = ge.nn.mlp(g, g.input("x"), [4, 3, 2])
    >>> [(p.name, p.shape) for p in g.parameters()]
    [('W1', (4, 3)), ('b1', (3,)), ('W2', (3, 2)), ('b2', (2,))]
    >>> g.forward(x=np.ones((5, 4))).shape
    (5, 2)
    """
    if activation not in ACTIVATIONS:
        raise GraphError(f"mlp: unknown activation {activation!r}; expected one of "
                         f"{', '.join(ACTIVATIONS)}")
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                                 and n > 0 for n in sizes):
        raise GraphError(f"mlp: sizes must list at least two positive integer widths "
                         f"(input, ..., output), got {sizes!r}")
    rng = np.random.default_rng(seed)
    h = x
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False), start=1):
        fan = n_in + n_out if ACTIVATIONS[activation] == "glorot" else n_in
        a = np.sqrt(6.0 / fan)
        W = g.parameter(f"W{k}", rng.uniform(-a, a, size=(n_in, n_out)))
        b = g.parameter(f"b{k}", np.zeros(n_out))
        h = g.add(g.matmul(h, W), b)
        if k < len(sizes) - 1:
            h = g.op(activation, h)
    return h
