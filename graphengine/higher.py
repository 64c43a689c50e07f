"""Higher-order derivatives: the backward pass built as a graph of gates.

``grad(g, wrt)`` walks ``g``'s gates from the output back to ``wrt`` once, asking each
gate for its backward written as gates (``Gate.backward_gates``), and returns a new
ComputationalGraph: the forward nodes the backward needs (same names), then the
backward nodes, named ``d<node>`` where a node's gradient is complete, with an
explicit add gate wherever gradients from several paths meet. Being a graph like any
other, it can be run, drawn, explained, saved and differentiated again.

``hessian`` and ``hvp`` build the gradient graph of every leaf once and run forward
mode through it (forward-over-reverse).
"""

from __future__ import annotations

import copy

import networkx as nx
import numpy as np

from . import gates as G
from .derivatives import _leaf_tangents, _wrt
from .errors import GraphError
from .gates import BroadcastToGate, SeedGate, zeros_like
from .graph import ComputationalGraph, Node
from .plan import as_value

__all__ = ["grad", "hessian", "hvp"]


def _build(g: ComputationalGraph, leaves: list):
    """A scratch graph holding g's forward nodes and the backward nodes of every leaf
    in ``leaves``; returns it, a dict leaf name -> its gradient's Node, the completed
    gradients as (Node, name of the node it is the gradient of), and the names of
    the forward nodes."""
    out = g.output
    plan = g.plan()
    vals = g.run.values_for(plan)
    if vals is not None and np.shape(vals[plan.out]) != ():
        raise GraphError(f"a gradient graph needs a scalar output: output {out.name!r} has "
                         f"shape {np.shape(vals[plan.out])} (sum it, or take one element)")
    h = ComputationalGraph()
    for n in g.nodes():                 # every input and parameter, and the leaves used
        if n.kind in ("input", "parameter") or (n.kind == "constant" and n.name in plan.slot):
            value = n._attrs.get("value")
            if isinstance(value, np.ndarray):
                value = value.copy()
            if n.kind == "input":
                h.input(n.name)
            elif n.kind == "parameter":
                h.parameter(n.name, value)
            else:
                h.constant(value, name=n.name)
    names = plan.names
    for gate, ins, o in plan.gates:
        h.apply(copy.copy(gate), *(h[names[i]] for i in ins), name=names[o])
    forward_names = {n.name for n in h}

    need = plan.downstream([plan.slot[n.name] for n in leaves if n.name in plan.slot])
    parts: dict[int, list] = {plan.out: [h.apply(SeedGate(), h[out.name])]}
    done: list[tuple[Node, str]] = []     # each completed gradient and its node's name

    def gradient(slot):
        nodes = parts.pop(slot, None)
        if not nodes:
            return None
        acc = nodes[0]
        for node in nodes[1:]:        # gradients meeting from several paths: their sum
            acc = h.add(acc, node)
        done.append((acc, names[slot]))
        return acc

    for gate, ins, o in reversed(plan.gates):
        if not need[o]:
            continue
        upstream = gradient(o)
        if upstream is None:          # no path with a nonzero local derivative
            continue
        rule = gate.backward_gates(h, tuple(h[names[i]] for i in ins), h[names[o]], upstream)
        if rule is NotImplemented:
            raise GraphError(
                f"node {names[o]!r}: gate {type(gate).__name__} has no backward as gates "
                "(a backward_gates method), so ge.grad cannot differentiate through it; "
                "see help(graphengine.Gate.backward_gates)")
        try:
            rule = tuple(rule)
        except TypeError:
            rule = None
        if rule is None or len(rule) != len(ins):
            raise GraphError(f"node {names[o]!r}: {type(gate).__name__}.backward_gates must "
                             f"return {len(ins)} Nodes or None, one per input")
        for i, node in zip(ins, rule, strict=True):
            if node is None or not need[i]:
                continue
            if not isinstance(node, Node) or node.graph is not h:
                raise GraphError(f"node {names[o]!r}: {type(gate).__name__}.backward_gates "
                                 f"returned {node!r}, not a Node of the gradient graph")
            parts.setdefault(i, []).append(node)
    result = {}
    for n in leaves:
        slot = plan.slot.get(n.name)
        node = gradient(slot) if slot is not None else None
        if node is None:              # the output does not depend on it: zeros of its shape
            node = h.apply(BroadcastToGate(), 0.0, h[n.name])
            done.append((node, n.name))
        result[n.name] = node
    return h, result, done, forward_names


# built-in gates whose output has the broadcast shape of their inputs (elementwise): a
# scalar output of one means scalar inputs, as numpy broadcasting never shrinks a shape
_ELEMENTWISE = frozenset(cls for cls in G.BUILTIN if issubclass(cls, (G.Unary, G.Binary))
                         and cls not in (G.RowSumGate, G.SoftmaxGate, G.SeedGate,
                                         G.OneHotGate, G.MSELoss))
_SHAPE_OF_SECOND = (G.SumToGate, G.BroadcastToGate, G.SpreadGate)   # out has x's shape


def _scalars(h: ComputationalGraph) -> set:
    """The nodes of ``h`` that are scalars whatever it is fed: scalar leaves, the
    outputs of full reductions, every seed's input (a seed refuses anything else),
    and what follows through elementwise gates, forward and backward."""
    order = list(nx.topological_sort(h.dag))
    ins = {v: [u.name for u in h[v].inputs] for v in order}
    gate = {v: h.dag.nodes[v]["gate"] for v in order}
    known = set()
    for v in order:
        g = gate[v]
        if g is None:
            if h.dag.nodes[v]["kind"] != "input" and np.ndim(h.dag.nodes[v]["value"]) == 0:
                known.add(v)
        elif type(g) is G.SeedGate:
            known.update((v, ins[v][0]))
        elif type(g) in (G.MSELoss, G.SoftmaxCrossEntropy) or (
                type(g) in (G.SumGate, G.MeanGate) and g.axis is None):
            known.add(v)
    while True:
        size = len(known)
        for v in reversed(order):         # a scalar out of an elementwise gate
            g = gate[v]
            if v in known and g is not None:
                if type(g) in _ELEMENTWISE:
                    known.update(ins[v])
                elif type(g) in _SHAPE_OF_SECOND:
                    known.add(ins[v][1])
        for v in order:                   # elementwise gates of scalars
            g = gate[v]
            if v in known or g is None:
                continue
            if type(g) in _ELEMENTWISE:
                if all(u in known for u in ins[v]):
                    known.add(v)
            elif type(g) in _SHAPE_OF_SECOND and ins[v][1] in known:
                known.add(v)
        if len(known) == size:
            return known


def _copy(h: ComputationalGraph, outputs: list, keep_leaves: list, done: list,
          forward_names: set):
    """A clean graph of the nodes ``outputs`` need (and the leaves in ``keep_leaves``),
    the first of ``outputs`` its output: sum_to gates between two scalars left out,
    each completed gradient in ``done`` ((node, of) pairs, first come first named)
    named ``d<of>``."""
    scalars = _scalars(h)
    same = {}                             # a sum_to that does nothing -> its input
    for v in nx.topological_sort(h.dag):
        node = h[v]
        if type(node.gate) is G.SumToGate:
            u, x = (w.name for w in node.inputs)
            if u in scalars and x in scalars:
                same[v] = same.get(u, u)
    rename, taken = {}, {n.name for n in h}
    for node, of in done:
        v = same.get(node.name, node.name)
        if v in forward_names or v in rename:
            continue
        name, k = "d" + of, 1
        while name in taken:
            name, k = f"d{of}_{k}", k + 1
        taken.add(name)
        rename[v] = name
    outputs = [same.get(v, v) for v in outputs]
    need = set(keep_leaves)
    stack = list(outputs)
    while stack:
        v = stack.pop()
        if v in need:
            continue
        need.add(v)
        stack.extend(same.get(u, u) for u in h.dag.predecessors(v))
    dag = nx.MultiDiGraph()
    for v, attrs in h.dag.nodes(data=True):
        if v in need:
            dag.add_node(rename.get(v, v), **attrs)
    for u, v, s in h.dag.edges(data="slot"):
        if v in need:
            u = same.get(u, u)
            dag.add_edge(rename.get(u, u), rename.get(v, v), slot=s)
    dag.graph["output"] = rename.get(outputs[0], outputs[0])
    return ComputationalGraph.from_dag(dag)


def grad(g: ComputationalGraph, wrt) -> ComputationalGraph:
    """The gradient of ``g``'s scalar output with respect to one leaf, as a new graph.

    The new graph has the same inputs as ``g`` and ``g``'s parameters (same names and
    values, copied), the forward nodes the backward needs (same names and gates), and
    the backward nodes: a ``seed`` node ``d<output>`` = 1, then each gate's backward
    written as gates (``Gate.backward_gates``), with an explicit add gate wherever
    gradients from several paths meet; the completed gradient of a node ``v`` is named
    ``d<v>``. Its output is d(output)/d(wrt), of ``wrt``'s shape, for whatever values
    its inputs are fed. ``g`` is left unchanged. Being an ordinary graph, it can be
    drawn, explained, saved, and differentiated again: ``grad(grad(g, "x"), "x")`` is
    the second derivative, and ``backward()`` on it gives every mixed second derivative
    d2(output)/(d wrt d leaf) at once.

    Parameters
    ----------
    g : ComputationalGraph
        Its output must be a scalar (checked now if ``g`` has been run, else when the
        gradient graph runs).
    wrt : str or Node
        A leaf of ``g`` (input, parameter or constant).

    Returns
    -------
    ComputationalGraph

    Raises
    ------
    GraphError
        ``wrt`` unknown or a gate; a non-scalar output; a gate on the way without a
        ``backward_gates`` rule (named with its node).

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x, y, z = g.input("x"), g.input("y"), g.input("z")
    >>> q = g.add(x, y, name="q"); f = g.mul(q, z, name="f")
    >>> dx = ge.grad(g, "x")
    >>> dx.output.name, dx.forward(x=-2.0, y=5.0, z=-4.0)
    ('dx', -4.0)
    >>> h = ge.grad(ge.grad(g, "z"), "x")
    >>> h.forward(x=-2.0, y=5.0, z=-4.0)           # d2f/(dz dx) = 1
    1.0
    """
    leaf = g._node(wrt, "wrt") if isinstance(wrt, (str, Node)) else None
    if leaf is None:
        raise GraphError(f"ge.grad's wrt must be a leaf's name or Node, got {wrt!r}")
    if leaf.kind == "gate":
        raise GraphError(f"ge.grad's wrt {leaf.name!r} is a gate ({leaf.gate.label}); "
                         "expected a leaf (an input, parameter or constant)")
    h, result, done, forward_names = _build(g, [leaf])
    keep = [n.name for n in g.nodes() if n.kind in ("input", "parameter")]
    done.sort(key=lambda pair: pair[1] != leaf.name)      # the answer is d<wrt>
    return _copy(h, [result[leaf.name].name], keep, done, forward_names)


# ---------------------------------------------------------------- Hessians

def _prepared(g, leaves, feed, what):
    """The gradient graph of every leaf, run forward at ``feed`` (else at g's last
    forward): (plan, values, leaf name -> slot of its gradient)."""
    if feed is None:
        plan = g.plan()
        vals = g.run.values_for(plan)
        if vals is None:
            raise GraphError(f"{what} needs a point: pass feed=... or call forward() first "
                             f"(output {g.output.name!r})")
        feed = {name: vals[slot] for slot, name in plan.inputs}
    h, result, _, _ = _build(g, leaves)
    join = None
    for node in result.values():      # one output that needs every gradient
        s = h.sum(node)
        join = s if join is None else h.add(join, s)
    h.set_output(join)
    h.forward(feed)
    plan = h.plan()
    return plan, h.run.values, {name: plan.slot[node.name] for name, node in result.items()}, \
        {name: v for name, v in feed.items() if isinstance(name, str)}


def hessian(g: ComputationalGraph, wrt=None, feed: dict | None = None) -> dict:
    """Every second derivative of ``g``'s scalar output with respect to pairs of leaves.

    Forward-over-reverse: the gradient graph of every leaf in ``wrt`` is built once
    (:func:`grad`'s construction) and run forward once at the point; then one
    forward-mode pass through it per element of the leaves gives one column of the
    Hessian. A Hessian of n leaf elements costs one build and n passes of the
    gradient graph, each about the cost of a first-order backward. ``g`` is unchanged.

    Parameters
    ----------
    g : ComputationalGraph
    wrt : list of str or Node, optional
        The leaves (default: every input and parameter).
    feed : dict, optional
        The point (input values); default: the inputs of ``g``'s last forward.

    Returns
    -------
    dict
        ``(a, b) -> d2(output)/(da db)`` for every pair of leaves, an array of shape
        ``a.shape + b.shape`` (a float when both are scalars).

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x, y = g.input("x"), g.input("y")
    >>> f = x * x * y
    >>> H = ge.hessian(g, feed={"x": 3.0, "y": 2.0})
    >>> H["x", "x"], H["x", "y"], H["y", "x"], H["y", "y"]
    (4.0, 6.0, 6.0, 0.0)
    """
    leaves = _wrt(g, wrt)
    plan, vals, grads, fed = _prepared(g, leaves, feed, "hessian")
    shapes = {n.name: _leaf_shape(n, plan, vals, fed) for n in leaves}
    H = {(a.name, b.name): np.zeros(shapes[a.name] + shapes[b.name])
         for a in leaves for b in leaves}
    if plan.no_jvp is not None:
        gate, out = plan.no_jvp
        raise GraphError(f"node {plan.names[out]!r}: gate {type(gate).__name__} has no jvp, "
                         "so hessian cannot run forward mode through the gradient graph")
    zeros = [zeros_like(v) for v in vals]
    for b in leaves:
        slot = plan.slot.get(b.name)
        if slot is None:              # the gradients do not depend on it
            continue
        # only the gates downstream of b carry a nonzero tangent
        down = plan.downstream([slot])
        steps = [(gate.jvp, ins, out) for gate, ins, out in plan.gates if down[out]]
        shape = shapes[b.name]
        for idx in np.ndindex(*shape):
            if shape:
                t = np.zeros(shape)
                t[idx] = 1.0
            else:
                t = 1.0
            tangents = list(zeros)
            tangents[slot] = t
            try:
                for jvp, ins, out in steps:
                    tangents[out] = jvp(*[tangents[i] for i in ins])
            except Exception as exc:
                raise plan._failure(out, "jvp", vals, exc) from exc
            for a in leaves:
                H[a.name, b.name][(Ellipsis,) + idx] = tangents[grads[a.name]]
    return {k: float(v) if v.ndim == 0 else v for k, v in H.items()}


def _leaf_shape(node, plan, vals, fed):
    slot = plan.slot.get(node.name)
    if slot is not None:
        return np.shape(vals[slot])
    return np.shape(fed.get(node.name, node._attrs.get("value")))


def hvp(g: ComputationalGraph, vectors: dict, feed: dict | None = None) -> dict:
    """The Hessian-vector product of ``g``'s scalar output: for every input and
    parameter a, ``sum_b H[a, b] . v[b]``.

    Forward-over-reverse: the gradient graph is built once and one forward-mode pass
    through it carries the directions ``v`` to every gradient. This needs no graph of
    ``v`` (reverse-over-reverse would build the gradient of ``<grad, v>`` for each
    ``v``) and costs about two gradient passes, without storing a second backward.

    Parameters
    ----------
    g : ComputationalGraph
    vectors : dict
        Leaf names (or Nodes) to directions of the leaf's shape; leaves left out get
        zeros.
    feed : dict, optional
        The point; default: the inputs of ``g``'s last forward.

    Returns
    -------
    dict
        Every input's and parameter's name (and any other leaf in ``vectors``) to its
        component of H v, of the leaf's shape.

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x, y = g.input("x"), g.input("y")
    >>> f = x * x * y
    >>> ge.hvp(g, {"x": 1.0}, feed={"x": 3.0, "y": 2.0})    # the column H[:, x]
    {'x': 4.0, 'y': 6.0}
    """
    if not isinstance(vectors, dict):
        raise GraphError(f"hvp's vectors must be a dict of leaf names to directions, got "
                         f"{type(vectors).__name__}")
    given = {}
    for key, v in vectors.items():
        node = _wrt(g, [key])[0]
        given[node.name] = (node, as_value(v, f"hvp vector of {node.name!r}"))
    leaves = [n for n in g.nodes() if n.kind in ("input", "parameter")]
    leaves += [node for node, _ in given.values() if node not in leaves]
    plan, vals, grads, fed = _prepared(g, leaves, feed, "hvp")
    tangents = _leaf_tangents(plan, vals)
    for name, (node, v) in given.items():
        shape = _leaf_shape(node, plan, vals, fed)
        if np.shape(v) != shape:
            raise GraphError(f"hvp vector of {name!r} has shape {np.shape(v)}, expected the "
                             f"leaf's shape {shape}")
        if name in plan.slot:
            tangents[plan.slot[name]] = v
    tangents = plan.jvp(vals, tangents)
    result = {}
    for n in leaves:
        t = tangents[grads[n.name]]
        result[n.name] = float(t) if np.ndim(t) == 0 else np.asarray(t)
    return result
