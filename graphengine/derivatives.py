"""Derivative tools on a graph: forward mode (jvp), full Jacobians in either mode, and
the gradient as an explicit sum over paths.

Everything here works on the compiled plan and the values of the last forward; none of
it runs forward again (so ``node.value`` and ``node.grad`` keep their meaning), except
``jvp`` and ``jacobian`` when they are given a ``feed``.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import GraphError
from .gates import zeros_like
from .plan import as_value

__all__ = ["jvp", "jacobian", "paths", "path_gradient", "count_paths"]

MODES = ("reverse", "forward")


def _forwarded(g, feed, what):
    if feed is not None:
        g.forward(feed)
    plan = g.plan()
    vals = g.run.values_for(plan)
    if vals is None:
        raise GraphError(f"{what} needs a forward first: pass feed=... or call forward() "
                         f"(output {plan.names[plan.out]!r})")
    return plan, vals


def _leaf(g, key, what):
    node = g._node(key, what)
    if node.kind == "gate":
        raise GraphError(f"{what} {node.name!r} is a gate ({node.gate.label}); "
                         "expected a leaf (an input, parameter or constant)")
    return node


def _leaf_tangents(plan, vals):
    tangents = [None] * len(vals)
    for slot, _ in plan.inputs:
        tangents[slot] = zeros_like(vals[slot])
    for slot, _ in plan.stored:
        tangents[slot] = zeros_like(vals[slot])
    return tangents


def jvp(g, tangents: dict, feed: dict | None = None) -> dict:
    """Forward mode: the tangent of every node for the given leaf directions.

    One forward pass carries d(node)/d(direction) from the leaves to the output.

    Parameters
    ----------
    g : ComputationalGraph
    tangents : dict
        Leaf names (or Nodes) to directions, each of the leaf's shape; leaves left
        out get zeros.
    feed : dict, optional
        Run ``g.forward(feed)`` first; without it the last forward's values are used.

    Returns
    -------
    dict
        Every node's name to its tangent (zeros for nodes the output does not use).

    Raises
    ------
    GraphError
        An unknown or non-leaf key, a tangent of the wrong shape, no forward yet, or
        a gate without ``jvp`` (named).

    Examples
    --------
    e = (a + b) * (b + 1) at a = 2, b = 1; the direction b gives de/db = 5 and the
    tangent of every intermediate node:

    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> a, b = g.input("a"), g.input("b")
    >>> c = g.add(a, b, name="c"); d = g.add(b, 1.0, name="d"); e = g.mul(c, d, name="e")
    >>> t = g.jvp({"b": 1.0}, feed={"a": 2.0, "b": 1.0})
    >>> t["a"], t["b"], t["c"], t["d"], t["e"]
    (0.0, 1.0, 1.0, 1.0, 5.0)
    """
    if not isinstance(tangents, dict):
        raise GraphError(f"jvp's tangents must be a dict of leaf names to directions, "
                         f"got {type(tangents).__name__}")
    plan, vals = _forwarded(g, feed, "jvp")
    given = {}
    for key, t in tangents.items():
        node = _leaf(g, key, "tangent key")
        t = as_value(t, f"tangent of {node.name!r}")
        slot = plan.slot.get(node.name)
        value = vals[slot] if slot is not None else node._attrs.get("value")
        if value is not None and np.shape(t) != np.shape(value):
            raise GraphError(f"tangent of {node.name!r} has shape {np.shape(t)}, expected "
                             f"the leaf's shape {np.shape(value)}")
        if t.__class__ is not float and value is not None and t.dtype != value.dtype:
            t = t.astype(value.dtype)               # a tangent has its leaf's dtype
        given[node.name] = t
    tlist = _leaf_tangents(plan, vals)
    for name, t in given.items():
        if name in plan.slot:
            tlist[plan.slot[name]] = t
    tlist = plan.jvp(vals, tlist)
    result = {}
    for name, t, v in zip(plan.names, tlist, vals, strict=True):
        if np.shape(t) != np.shape(v):      # a gate's tangent may come out broadcast
            t = np.broadcast_to(t, np.shape(v)).astype(getattr(v, "dtype", float))
            t = float(t) if t.ndim == 0 else t
        result[name] = t
    for name in plan.outside:
        result[name] = given[name] if name in given else g._zeros(name)
    return result


def _wrt(g, wrt):
    if wrt is None:
        return [n for n in g.nodes() if n.kind in ("input", "parameter")]
    if isinstance(wrt, str) or hasattr(wrt, "graph"):
        wrt = [wrt]
    leaves = [_leaf(g, key, "wrt entry") for key in wrt]
    names = [n.name for n in leaves]
    for k, name in enumerate(names):
        if name in names[:k]:
            raise GraphError(f"wrt names the leaf {name!r} twice")
    return leaves


def jacobian(g, wrt=None, feed: dict | None = None, mode: str = "reverse") -> dict:
    """The Jacobian of the output with respect to each leaf, in either mode.

    Reverse mode runs one backward per output element; forward mode runs one jvp per
    element of the chosen leaves. Both give the same arrays. The graph's values and
    gradients are left as they were.

    Parameters
    ----------
    g : ComputationalGraph
    wrt : list of str or Node, optional
        The leaves (default: every input and parameter).
    feed : dict, optional
        Run ``g.forward(feed)`` first; without it the last forward's values are used.
    mode : {"reverse", "forward"}

    Returns
    -------
    dict
        Leaf name to an array of shape ``output.shape + leaf.shape`` (a float when
        both are scalars).

    Examples
    --------
    >>> import numpy as np
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x = g.input("x")
    >>> y = x * x
    >>> J = g.jacobian(feed={"x": np.array([1.0, 2.0])}, mode="forward")
    >>> J["x"]
    array([[2., 0.],
           [0., 4.]])
    >>> np.array_equal(J["x"], g.jacobian(mode="reverse")["x"])
    True
    """
    if mode not in MODES:
        raise GraphError(f"unknown jacobian mode {mode!r}; expected 'reverse' or 'forward'")
    leaves = _wrt(g, wrt)
    plan, vals = _forwarded(g, feed, "jacobian")
    out_shape = np.shape(vals[plan.out])
    shapes = []
    for n in leaves:
        slot = plan.slot.get(n.name)
        v = vals[slot] if slot is not None else n._attrs.get("value")
        shapes.append(np.shape(v) if v is not None else ())
    result = {n.name: np.zeros(out_shape + s) for n, s in zip(leaves, shapes, strict=True)}
    used = [(n.name, plan.slot[n.name], s) for n, s in zip(leaves, shapes, strict=True)
            if n.name in plan.slot]
    if mode == "reverse":
        for idx in np.ndindex(*out_shape):
            if out_shape:
                seed = np.zeros(out_shape)
                seed[idx] = 1.0
            else:
                seed = 1.0
            grads = plan.backward(vals, seed)
            for name, slot, _ in used:
                if grads[slot] is not None:
                    result[name][idx] = grads[slot]
    else:
        for name, slot, shape in used:
            flat = result[name].reshape(out_shape + (-1,))
            for k, idx in enumerate(np.ndindex(*shape)):
                tlist = _leaf_tangents(plan, vals)
                if shape:
                    t = np.zeros(shape)
                    t[idx] = 1.0
                else:
                    t = 1.0
                tlist[slot] = t
                flat[..., k] = plan.jvp(vals, tlist)[plan.out]
            result[name] = flat.reshape(out_shape + shape)
    return {name: float(J) if J.ndim == 0 else J for name, J in result.items()}


# ---------------------------------------------------------------- paths

def _consumers(plan):
    succ = [[] for _ in plan.names]
    for _, ins, out in plan.gates:
        for k, i in enumerate(ins):
            succ[i].append((out, k))
    return succ


def count_paths(g, source) -> int:
    """The number of paths from ``source`` to the output, by dynamic programming over
    the plan (never by listing them); an input used twice by one gate counts twice.

    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph(); x = g.input("x"); y = x * x + x
    >>> count_paths(g, "x")
    3
    """
    node = g._node(source, "path source")
    plan = g.plan()
    start = plan.slot.get(node.name)
    if start is None:
        return 0
    count = [0] * len(plan.names)
    count[start] = 1
    for _, ins, out in plan.gates:
        if out != start:
            count[out] = sum(count[i] for i in ins)
    return count[plan.out]


def _refuse_many(g, node, plan, limit):
    total = count_paths(g, node.name)
    if limit is not None and total > limit:
        raise GraphError(f"{total} paths lead from {node.name!r} to the output "
                         f"{plan.names[plan.out]!r}, more than limit={limit}; backward "
                         "sums them all in one pass")
    return total


def _walk(plan, start, weights=None):
    succ = _consumers(plan)
    found = []
    # each entry: (slot, path of slots so far, product of local derivatives so far)
    stack = [(start, [start], 1.0)]
    while stack:
        slot, path, product = stack.pop()
        if slot == plan.out:
            found.append((path, product))
            continue
        for out, k in reversed(succ[slot]):
            w = weights[out][k] if weights is not None else 1.0
            stack.append((out, path + [out], product * w))
    return found


def paths(g, source, limit: int | None = 10_000) -> list[list[str]]:
    """Every path, as a list of node names, from ``source`` to the output.

    A node used twice by one gate (``x * x``) gives two paths. The paths are counted
    first; more than ``limit`` is a GraphError giving the count.

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> a, b = g.input("a"), g.input("b")
    >>> c = g.add(a, b, name="c"); d = g.add(b, 1.0, name="d"); e = g.mul(c, d, name="e")
    >>> g.paths("b")
    [['b', 'c', 'e'], ['b', 'd', 'e']]
    """
    node = g._node(source, "path source")
    plan = g.plan()
    if not _refuse_many(g, node, plan, limit):
        return []
    return [[plan.names[s] for s in path] for path, _ in _walk(plan, plan.slot[node.name])]


def _local_partials(plan, vals, needed):
    weights = {}
    for gate, ins, out in plan.gates:
        if not needed[out]:
            continue
        name = plan.names[out]
        for i in ins:
            if needed[i] and vals[i].__class__ is not float:
                raise GraphError(f"path_gradient needs a scalar graph: node "
                                 f"{plan.names[i]!r} has shape {np.shape(vals[i])}")
        if vals[out].__class__ is not float:
            raise GraphError(f"path_gradient needs a scalar graph: node {name!r} has "
                             f"shape {np.shape(vals[out])}")
        try:
            parts = list(gate.backward(1.0))
        except Exception as exc:
            raise GraphError(f"node {name!r} ({gate.label}): backward(1.0) failed while "
                             f"taking its local derivatives: {exc}") from exc
        if len(parts) != len(ins):
            raise GraphError(f"node {name!r}: backward returned {len(parts)} gradients "
                             f"for {len(ins)} inputs")
        weights[out] = [0.0 if p is None else float(p) for p in parts]
    return weights


def path_gradient(g, source, limit: int = 10_000):
    """The gradient of the output with respect to ``source`` as a sum over paths.

    Each path from ``source`` to the output contributes the product of the local
    derivatives along its edges; their sum equals what backward gives. The paths are
    counted first by dynamic programming; more than ``limit`` is a GraphError that
    gives the count. Scalar graphs only; needs a forward first.

    Returns
    -------
    (total, terms)
        ``terms`` is a list of ``(path, product)`` pairs, ``path`` a list of node names.

    Examples
    --------
    e = (a + b) * (b + 1) at a = 2, b = 1: de/db = 1*2 + 1*3 = 5.

    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> a, b = g.input("a"), g.input("b")
    >>> c = g.add(a, b, name="c"); d = g.add(b, 1.0, name="d"); e = g.mul(c, d, name="e")
    >>> g.forward(a=2.0, b=1.0)
    6.0
    >>> total, terms = g.path_gradient("b")
    >>> total
    5.0
    >>> terms
    [(['b', 'c', 'e'], 2.0), (['b', 'd', 'e'], 3.0)]
    """
    node = g._node(source, "path source")
    plan, vals = _forwarded(g, None, "path_gradient")
    if not _refuse_many(g, node, plan, limit):
        return 0.0, []
    start = plan.slot[node.name]
    # the nodes on some path from the source: only their gates need local derivatives
    needed = [False] * len(plan.names)
    needed[start] = True
    for _, ins, out in plan.gates:
        if any(needed[i] for i in ins):
            needed[out] = True
    weights = _local_partials(plan, vals, needed)
    terms = [([plan.names[s] for s in path], product)
             for path, product in _walk(plan, start, weights)]
    return math.fsum(p for _, p in terms), terms
