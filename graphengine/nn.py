"""Networks built from gates: the multilayer perceptron."""

from __future__ import annotations

import numpy as np

from .errors import GraphError
from .graph import ComputationalGraph, Node

__all__ = ["mlp", "ACTIVATIONS", "MAX_PARAMETERS"]

# activation name -> Glorot (fan_in + fan_out) or He (fan_in) initialisation
ACTIVATIONS = {"sigmoid": "glorot", "tanh": "glorot", "relu": "he"}
MAX_PARAMETERS = 20_000_000      # numbers in all the weights and biases of one mlp (160 MB)


def generator(seed, what: str) -> np.random.Generator:
    """``numpy.random.default_rng(seed)`` for a seed that is a non-negative integer,
    else a GraphError naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GraphError(f"{what}: seed must be a non-negative integer, got {seed!r:.40}")
    return np.random.default_rng(seed)


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
        Seed of the numpy Generator that draws the weights (a non-negative integer).

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

    At most ``MAX_PARAMETERS`` (20,000,000) weights and biases in all; more is a
    GraphError giving the count. Every argument is checked before anything is added,
    so a call that fails leaves the graph as it was.

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
    if not isinstance(g, ComputationalGraph):
        raise GraphError(f"mlp: g must be a ComputationalGraph, got {type(g).__name__}")
    if not isinstance(x, Node) or x.graph is not g:
        got = "a node of another graph" if isinstance(x, Node) else type(x).__name__
        raise GraphError(f"mlp: x must be a Node of the graph g (e.g. g.input('x')), "
                         f"got {got}")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise GraphError(f"mlp: unknown activation {activation!r:.40}; expected one of "
                         f"{', '.join(ACTIVATIONS)}")
    widths = list(sizes) if isinstance(sizes, (list, tuple, range, np.ndarray)) else None
    if widths is None or len(widths) < 2 or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
            for n in widths):
        raise GraphError(f"mlp: sizes must list at least two positive integer widths "
                         f"(input, ..., output), got {sizes!r:.60}")
    sizes = [int(n) for n in widths]
    count = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))
    if count > MAX_PARAMETERS:
        raise GraphError(f"mlp: sizes {sizes!r:.60} need {count} weights and biases, more "
                         f"than the limit {MAX_PARAMETERS}")
    rng = generator(seed, "mlp")
    layers = len(sizes) - 1
    taken = [n for k in range(1, layers + 1) for n in (f"W{k}", f"b{k}") if n in g]
    if taken:
        raise GraphError(f"mlp: duplicate name {taken[0]!r}: the graph already has nodes "
                         f"named {', '.join(map(repr, taken))}; build the second network "
                         "in its own graph")
    h = x
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        fan = n_in + n_out if ACTIVATIONS[activation] == "glorot" else n_in
        a = np.sqrt(6.0 / fan)
        W = g.parameter(f"W{k}", rng.uniform(-a, a, size=(n_in, n_out)))
        b = g.parameter(f"b{k}", np.zeros(n_out))
        h = g.add(g.matmul(h, W), b)
        if k < len(sizes) - 1:
            h = g.op(activation, h)
    return h
