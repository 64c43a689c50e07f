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

__all__ = ["jvp", "jacobian", "paths", "path_gradient", "path_terms", "count_paths",
           "path_counts", "longest_paths"]

MODES = ("reverse", "forward")
MAX_JACOBIAN = 10_000_000       # elements of all the blocks of one jacobian() (80 MB)
MAX_PATHS = 1_000_000           # paths one paths() or path_gradient() lists
MAX_PATH_NODES = 10_000_000     # node names in all those paths together (80 MB)


def _forwarded(g, feed, what, takes_feed=True):
    if feed is not None:
        g.forward(feed)
    plan = g.plan()
    vals = g.run.values_for(plan)
    if vals is None:
        how = "pass feed=... or call forward()" if takes_feed else "call forward()"
        raise GraphError(f"{what} needs a forward first: {how} "
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
    if not isinstance(wrt, (list, tuple)):
        raise GraphError(f"wrt must be a leaf name, a Node or a list of them, got "
                         f"{type(wrt).__name__} {wrt!r:.40}")
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
        both are scalars); zeros of that shape for a leaf the output does not use.

    Raises
    ------
    GraphError
        For a bad ``wrt`` or ``mode``, no forward yet, or Jacobians of more than
        ``MAX_JACOBIAN`` (10,000,000) elements in all (80 MB; the message gives the
        size): take ``backward`` with a seed, or ``jvp``, for products with it.

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
        shapes.append(np.shape(vals[slot] if slot is not None else g._zeros(n.name)))
    out_size = math.prod(out_shape)
    size = out_size * sum(math.prod(s) for s in shapes)
    if size > MAX_JACOBIAN:
        raise GraphError(f"the Jacobian of output {plan.names[plan.out]!r} "
                         f"({_count(out_size, 'element')}) with respect to "
                         f"{', '.join(repr(n.name) for n in leaves[:5])}"
                         f"{', ...' if len(leaves) > 5 else ''} has {size} elements, more "
                         f"than the limit {MAX_JACOBIAN}; use backward(seed) or jvp for "
                         "its products with a vector")
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

def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in tuple('aeiou') else 'a'} {noun}"


def _check_limit(limit):
    if limit is None or (isinstance(limit, float) and limit == math.inf):
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
        raise GraphError(f"limit must be a non-negative whole number of paths (None or "
                         f"inf: at most MAX_PATHS = {MAX_PATHS}), got {limit!r:.40}")
    return int(limit)


def _counts(plan, start):
    """Paths from ``start`` to each slot, and from each slot to the output."""
    to = [0] * len(plan.names)
    to[start] = 1
    for _, ins, out in plan.gates:
        if out != start:
            to[out] = sum(to[i] for i in ins)
    on = [0] * len(plan.names)
    on[plan.out] = 1
    for _, ins, out in reversed(plan.gates):
        if on[out]:
            for i in ins:
                on[i] += on[out]
    return to, on


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
    return _counts(plan, start)[0][plan.out]


def _paths_on(g, source, limit):
    """The plan, the source's slot and, per slot, the number of paths through it;
    refuses more than ``limit`` (or ``MAX_PATHS``) paths or more than
    ``MAX_PATH_NODES`` names in all of them, with the size."""
    limit = _check_limit(limit)
    node = g._node(source, "path source")
    plan = g.plan()
    start = plan.slot.get(node.name)
    if start is None:
        return plan, None, None
    to, on = _counts(plan, start)
    total = to[plan.out]
    out = plan.names[plan.out]
    if total > (MAX_PATHS if limit is None else min(limit, MAX_PATHS)):
        bound = f"limit={limit}" if limit is not None and limit <= MAX_PATHS \
            else f"MAX_PATHS={MAX_PATHS}"
        raise GraphError(f"{_count(total, 'path')} lead{'s' if total == 1 else ''} from "
                         f"{node.name!r} to the output {out!r}, "
                         f"more than {bound}; backward sums them all in one pass")
    through = [a * b for a, b in zip(to, on, strict=True)]
    size = sum(through)
    if size > MAX_PATH_NODES:
        raise GraphError(f"the {_count(total, 'path')} from {node.name!r} to the output {out!r} "
                         f"hold{'s' if total == 1 else ''} {size} node names in all, more "
                         f"than MAX_PATH_NODES="
                         f"{MAX_PATH_NODES}; backward sums them all in one pass")
    return plan, start, through


def _walk(plan, start, through, weights=None):
    """Every path from ``start`` to the output as (slots, input positions, local
    derivatives), consumers in plan order; one depth-first pass with one shared path,
    copied at each arrival, so the time is linear in the total length of the paths."""
    live = [[] for _ in plan.names]            # consumers on some path, in plan order
    for _, ins, out in plan.gates:
        if through[out]:
            for k, i in enumerate(ins):
                if through[i]:
                    live[i].append((out, k))
    if start == plan.out:
        return [([start], [], [])]
    found = []
    path, ks, factors = [start], [], []     # node slots, input positions, local derivatives
    todo = [iter(live[start])]
    while todo:
        step = next(todo[-1], None)
        if step is None:                    # every way on from path[-1] is done
            todo.pop()
            path.pop()
            if ks:
                ks.pop()
                factors.pop()
            continue
        out, k = step
        path.append(out)
        ks.append(k)
        factors.append(weights[out][k] if weights is not None else 1.0)
        if out == plan.out:
            found.append((path[:], ks[:], factors[:]))
            path.pop()
            ks.pop()
            factors.pop()
        else:
            todo.append(iter(live[out]))
    return found


def path_counts(g) -> dict:
    """Every node's number of paths to the output, in one reverse pass over the plan
    (never by listing them); nodes the output does not depend on are left out.

    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph(); x = g.input("x"); y = x * x + x
    >>> path_counts(g)["x"]
    3
    """
    plan = g.plan()
    count = [0] * len(plan.names)
    count[plan.out] = 1
    for _, ins, out in reversed(plan.gates):
        for i in ins:
            count[i] += count[out]
    return dict(zip(plan.names, count, strict=True))


def longest_paths(g) -> dict:
    """Every node's longest path to the output, in edges, in one reverse pass over the
    plan; nodes the output does not depend on are left out.

    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph(); x = g.input("x"); y = x.exp().exp() + x
    >>> longest_paths(g)["x"]
    3
    """
    plan = g.plan()
    longest = [-1] * len(plan.names)
    longest[plan.out] = 0
    for _, ins, out in reversed(plan.gates):
        for i in ins:
            longest[i] = max(longest[i], longest[out] + 1)
    return dict(zip(plan.names, longest, strict=True))


def paths(g, source, limit: int | None = 10_000) -> list[list[str]]:
    """Every path, as a list of node names, from ``source`` to the output.

    A node used twice by one gate (``x * x``) gives two paths. The paths are counted
    first; more than ``limit`` is a GraphError giving the count. ``limit=None`` (or
    ``inf``) means the most this lists, ``MAX_PATHS`` (1,000,000); the paths may also
    hold at most ``MAX_PATH_NODES`` (10,000,000) names in all, refused with the size
    beyond. Time and memory are linear in that size.

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> a, b = g.input("a"), g.input("b")
    >>> c = g.add(a, b, name="c"); d = g.add(b, 1.0, name="d"); e = g.mul(c, d, name="e")
    >>> g.paths("b")
    [['b', 'c', 'e'], ['b', 'd', 'e']]
    """
    plan, start, through = _paths_on(g, source, limit)
    if start is None:
        return []
    names = plan.names
    return [[names[s] for s in path] for path, _, _ in _walk(plan, start, through)]


def _local_partials(plan, vals, through):
    weights = {}
    for gate, ins, out in plan.gates:
        if not through[out]:
            continue
        name = plan.names[out]
        for i in ins:
            if through[i] and vals[i].__class__ is not float:
                raise GraphError(f"path_gradient needs a scalar graph: node "
                                 f"{plan.names[i]!r} has shape {np.shape(vals[i])}")
        if vals[out].__class__ is not float:
            raise GraphError(f"path_gradient needs a scalar graph: node {name!r} has "
                             f"shape {np.shape(vals[out])}")
        where = f"node {name!r} ({gate.label})"
        try:
            parts = gate.backward(1.0)
        except Exception as exc:
            raise GraphError(f"{where}: backward(1.0) failed while taking its local "
                             f"derivatives: {exc}") from exc
        if not isinstance(parts, (list, tuple)) or len(parts) != len(ins):
            got = (_count(len(parts), "gradient") if isinstance(parts, (list, tuple))
                   else _a(type(parts).__name__))
            raise GraphError(f"{where}: backward returned {got}; expected a list or tuple "
                             f"of {len(ins)} (one per input)")
        weights[out] = [_local(p, where, plan.names[i], k)
                        for k, (p, i) in enumerate(zip(parts, ins, strict=True))]
    return weights


def _local(p, where, input_name, k):
    if p is None:
        return 0.0
    if isinstance(p, (float, int, np.floating, np.integer)) and not isinstance(p, bool):
        return float(p)
    if (isinstance(p, np.ndarray) and not isinstance(p, np.matrix) and p.shape == ()
            and p.dtype.kind in "fiu"):
        return float(p)
    what = (f"an array of shape {p.shape} and dtype {p.dtype}" if isinstance(p, np.ndarray)
            else _a(type(p).__name__))
    raise GraphError(f"{where}: backward returned {what} as the local derivative for input "
                     f"{k} ({input_name!r}); expected a number (the graph is scalar)")


def path_gradient(g, source, limit: int = 10_000):
    """The gradient of the output with respect to ``source`` as a sum over paths.

    Each path from ``source`` to the output contributes the product of the local
    derivatives along its edges; their sum equals what backward gives. The paths are
    counted first by dynamic programming; more than ``limit`` is a GraphError that
    gives the count (``limit`` and the size bounds as for ``paths``). Scalar graphs
    only; needs a forward first. A gate's local derivatives are its ``backward(1.0)``:
    a user gate that returns anything but one number per input is a GraphError
    naming the node.

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
    terms = [(path, _product(factors)) for path, _, factors in path_terms(g, source, limit)]
    return math.fsum(p for _, p in terms), terms


def _product(factors) -> float:
    product = 1.0
    for w in factors:
        product *= w
    return product


def path_terms(g, source, limit: int = 10_000) -> list:
    """The paths from ``source`` to the output with their local derivatives: a list
    of ``(path, slots, factors)``, ``path`` the node names, ``slots[k]`` the input
    position by which the path enters ``path[k + 1]``, ``factors[k]`` that edge's local
    derivative. Scalar graphs only; more than ``limit`` paths is a GraphError.

    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph(); x = g.input("x"); y = g.mul(x, x, name="y")
    >>> g.forward(x=3.0)
    9.0
    >>> path_terms(g, "x")
    [(['x', 'y'], [0], [3.0]), (['x', 'y'], [1], [3.0])]
    """
    g._node(source, "path source")
    plan, vals = _forwarded(g, None, "path_gradient", takes_feed=False)
    plan, start, through = _paths_on(g, source, limit)
    if start is None:
        return []
    # only the gates on some path from the source need their local derivatives
    weights = _local_partials(plan, vals, through)
    names = plan.names
    return [([names[s] for s in path], ks, factors)
            for path, ks, factors in _walk(plan, start, through, weights)]
