"""The compiled plan: what forward, backward and jvp actually run.

``compile_plan`` reads the networkx structure once per structural change and lowers it
to a flat tuple of steps ``(kind, forward, backward, a, b, out)`` over an
integer-indexed list of values: ``a`` and ``b`` are the input slots (``a`` is the tuple
of slots for a user's gate), ``out`` the gate's own slot. The loops below touch no
networkx, look up no names and recurse nowhere; backward adds each input's gradient
into its slot, so gradients arriving along several paths are summed for free.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from functools import partial

import networkx as nx
import numpy as np

from .errors import GraphError
from .gates import BUILTIN, Gate, fit, zeros_like

# step kinds: a built-in gate of one or two inputs (trusted to return correct
# gradients), or a user's gate of any arity, whose results are checked; a pruned
# backward also has binary steps that want only their first or only their second
# input's gradient (and a checked step's b is then the tuple of wanted inputs)
UNARY, BINARY, CHECKED, FIRST, SECOND = 1, 2, 0, 3, 4


def as_value(v, what: str):
    """A float or a float numpy array from a user's number or array, else GraphError."""
    if v.__class__ is float:
        return v
    if isinstance(v, (bool, int, float, np.integer, np.floating, np.bool_)):
        return float(v)
    if isinstance(v, (list, tuple)):
        try:
            v = np.asarray(v)
        except ValueError as exc:
            raise GraphError(f"{what}: not a rectangular array of numbers ({exc})") from None
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "biu":
            v = v.astype(float)
        elif v.dtype.kind != "f":
            raise GraphError(f"{what}: expected numbers, got an array of dtype {v.dtype}")
        return float(v) if v.ndim == 0 else v
    raise GraphError(f"{what}: expected a number or a numpy array, got {type(v).__name__}")


@dataclass(eq=False)
class Plan:
    names: list            # slot -> node name
    slot: dict             # node name -> slot
    steps: tuple           # (kind, forward, backward, a, b, out), topological order
    gates: tuple           # (gate, input slots, out) per step, same order
    inputs: tuple          # (slot, name) of each input leaf to feed
    stored: tuple          # (slot, attrs) of each parameter and constant
    out: int               # the output's slot
    outside: tuple         # names of nodes not upstream of the output

    def __post_init__(self):
        self._pruned = {}
        # Fresh copies of the names, allocated side by side, make building the result
        # dict of a huge graph cache-friendly (the originals are scattered in memory).
        self.keys = [(name + ".")[:-1] for name in self.names]
        self.template = dict.fromkeys(self.keys)
        self.no_jvp = next(((g, out) for g, _, out in self.gates
                            if type(g).jvp is Gate.jvp), None)

    def as_dict(self, values: list) -> dict:
        result = self.template.copy()
        result.update(zip(self.keys, values, strict=True))
        return result

    def forward(self, vals: list) -> None:
        out = -1
        try:
            for kind, fwd, _, a, b, out in self.steps:
                if kind == 1:                                  # UNARY
                    vals[out] = fwd(vals[a])
                elif kind == 2:                                # BINARY
                    vals[out] = fwd(vals[a], vals[b])
                else:
                    vals[out] = as_value(fwd(*[vals[i] for i in a]),
                                         f"node {self.names[out]!r}: forward returned")
        except Exception as exc:
            raise self._failure(out, "forward", vals, exc) from exc

    def backward(self, vals: list, seed, wrt: tuple | None = None) -> list:
        """Gradients by slot. With ``wrt`` (slots), only the steps between those
        slots and the output run; gradients nobody asked for may stay None."""
        grads = [None] * len(vals)
        grads[self.out] = seed
        out = -1
        try:
            for kind, _, bwd, a, b, out in reversed(self.steps if wrt is None
                                                    else self.pruned(wrt)):
                if kind == 1:                                  # UNARY
                    (p,) = bwd(grads[out])
                    cur = grads[a]
                    grads[a] = p if cur is None else cur + p
                elif kind == 2:                                # BINARY
                    p, q = bwd(grads[out])
                    cur = grads[a]
                    grads[a] = p if cur is None else cur + p
                    cur = grads[b]
                    grads[b] = q if cur is None else cur + q
                elif kind == 3:                                # FIRST
                    p = bwd(grads[out])[0]
                    cur = grads[a]
                    grads[a] = p if cur is None else cur + p
                elif kind == 4:                                # SECOND
                    q = bwd(grads[out])[1]
                    cur = grads[b]
                    grads[b] = q if cur is None else cur + q
                else:                                          # CHECKED
                    parts = self._checked(out, a, bwd(grads[out]), vals)
                    for i, p, want in zip(a, parts, b or (True,) * len(a), strict=True):
                        if want:
                            cur = grads[i]
                            grads[i] = p if cur is None else cur + p
        except Exception as exc:
            raise self._failure(out, "backward", vals, exc) from exc
        return grads

    def downstream(self, slots) -> list:
        """For every slot, whether it depends on one of ``slots``."""
        mark = [False] * len(self.names)
        for s in slots:
            mark[s] = True
        for _, ins, out in self.gates:
            if not mark[out]:
                mark[out] = any(mark[i] for i in ins)
        return mark

    def pruned(self, wrt: tuple) -> tuple:
        """The backward steps that the gradients of the slots ``wrt`` need (cached)."""
        steps = self._pruned.get(wrt)
        if steps is None:
            need = self.downstream(wrt)
            steps = []
            for kind, fwd, bwd, a, b, out in self.steps:
                if not need[out]:
                    continue
                if kind == BINARY and not (need[a] and need[b]):
                    if bwd.__self__.prunable:       # the gate skips the unwanted product
                        bwd = partial(bwd, need=(need[a], need[b]))
                    kind = FIRST if need[a] else SECOND
                elif kind == CHECKED:
                    b = tuple(need[i] for i in a)
                steps.append((kind, fwd, bwd, a, b, out))
            steps = self._pruned[wrt] = tuple(steps)
        return steps

    def jvp(self, vals: list, tangents: list) -> list:
        """Carry ``tangents`` (pre-filled for the leaves) forward through every step."""
        if self.no_jvp is not None:
            gate, out = self.no_jvp
            raise GraphError(f"node {self.names[out]!r}: gate {type(gate).__name__} "
                             "has no jvp, so forward mode cannot pass through it")
        out = -1
        try:
            for gate, ins, out in self.gates:
                tangents[out] = gate.jvp(*[tangents[i] for i in ins])
        except Exception as exc:
            raise self._failure(out, "jvp", vals, exc) from exc
        return tangents

    def _checked(self, out, ins, parts, vals):
        name = self.names[out]
        try:
            parts = list(parts)
        except TypeError:
            raise GraphError(f"node {name!r}: backward must return a sequence of "
                             f"{len(ins)} gradients, got {type(parts).__name__}") from None
        if len(parts) != len(ins):
            raise GraphError(f"node {name!r}: backward returned {len(parts)} gradients "
                             f"for {len(ins)} inputs")
        checked = []
        for k, (i, p) in enumerate(zip(ins, parts, strict=True)):
            x = vals[i]
            if p is None:
                checked.append(zeros_like(x))
                continue
            p = as_value(p, f"node {name!r}: backward's gradient {k}")
            want, got = np.shape(x), np.shape(p)
            if got != want:
                try:
                    ok = np.broadcast_shapes(want, got) == got
                except ValueError:
                    ok = False
                if not ok:
                    raise GraphError(f"node {name!r}: backward's gradient {k} has shape "
                                     f"{got}, expected {want} (the shape of input "
                                     f"{self.names[i]!r})")
                p = fit(p, x)
            checked.append(p)
        return checked

    def _failure(self, out, phase, vals, exc):
        if isinstance(exc, GraphError) or out < 0:
            return exc
        gate, ins, _ = next(step for step in self.gates if step[2] == out)
        shapes = ", ".join(f"{self.names[i]!r} {np.shape(vals[i])}" for i in ins)
        return GraphError(f"node {self.names[out]!r} ({gate.label}) failed in {phase} "
                          f"on inputs {shapes}: {exc}")


class RunState:
    """The values and gradients of a graph's last run, by slot of the plan they
    belong to: the one place Node.value, Node.grad, the derivative tools, training,
    drawing and gradcheck read them from (``g.run``).

    ``values`` are those of the last successful forward (None after a failed one or
    a structural change); ``grads`` those of the last backward, which may come from
    an earlier forward than the current values: ``grads_current`` says whether they
    belong to the values on hand.
    """

    __slots__ = ("plan", "values", "grads", "grads_plan", "forwards", "grads_from")

    def __init__(self):
        self.plan = None          # the plan ``values`` belong to
        self.values = None
        self.grads = None
        self.grads_plan = None    # the plan ``grads`` belong to
        self.forwards = 0         # successful forwards so far
        self.grads_from = -1      # the forward ``grads`` were computed from

    def values_for(self, plan):
        """The last values if they belong to ``plan``, else None."""
        return self.values if self.plan is plan else None

    def set_values(self, plan, values) -> None:
        self.plan, self.values = plan, values
        self.forwards += 1

    def forget_values(self) -> None:
        self.plan = None

    def set_grads(self, plan, grads) -> None:
        self.grads, self.grads_plan, self.grads_from = grads, plan, self.forwards

    def clear_grads(self) -> None:
        self.grads = self.grads_plan = None

    @property
    def grads_current(self) -> bool:
        """Whether the gradients were computed from the values on hand."""
        return (self.grads_plan is not None and self.grads_plan is self.plan
                and self.grads_from == self.forwards)

    def value(self, name):
        plan = self.plan
        if plan is None or name not in plan.slot:
            return None
        return self.values[plan.slot[name]]

    def save(self) -> tuple:
        """A snapshot that ``restore`` puts back (values copied, as a run reuses the list)."""
        vals = None if self.values is None else list(self.values)
        return (self.plan, vals, self.grads, self.grads_plan, self.forwards, self.grads_from)

    def restore(self, saved: tuple) -> None:
        (self.plan, self.values, self.grads, self.grads_plan,
         self.forwards, self.grads_from) = saved


def _order(dag: nx.MultiDiGraph, pred: dict, output) -> list:
    """The output's ancestors and itself, topologically, ties by insertion order."""
    keep = {output}
    stack = [output]
    while stack:
        for u in pred[stack.pop()]:
            if u not in keep:
                keep.add(u)
                stack.append(u)
    order = [v for v in dag if v in keep]
    seen = set()
    for v in order:                       # insertion order is topological for builders
        if any(u not in seen for u in pred[v]):
            break
        seen.add(v)
    else:
        return order
    sub = dag.subgraph(order)
    rank = {v: k for k, v in enumerate(order)}
    try:
        return list(nx.lexicographical_topological_sort(sub, key=rank.__getitem__))
    except nx.NetworkXUnfeasible:
        cycle = " -> ".join(str(u) for u, *_ in nx.find_cycle(sub))
        raise GraphError(f"the graph has a cycle through nodes {cycle}") from None


def compile_plan(dag: nx.MultiDiGraph, output) -> Plan:
    """Lower the part of ``dag`` that ``output`` depends on to a Plan."""
    # Compiling allocates a few small objects per node and no reference cycles; the
    # cyclic collector would rescan the whole (huge) networkx heap many times over.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _compile(dag, output)
    finally:
        if paused:
            gc.enable()


def _compile(dag: nx.MultiDiGraph, output) -> Plan:
    # networkx's own adjacency dicts (node -> predecessor -> edge key -> attributes),
    # read only: its view objects cost more than the rest of compiling a node
    pred = dag._pred
    nodes = dag._node
    order = _order(dag, pred, output)
    slot = {v: k for k, v in enumerate(order)}
    steps, gates, inputs, stored = [], [], [], []
    for k, v in enumerate(order):
        attrs = nodes[v]
        kind = attrs.get("kind")
        if kind == "input":
            inputs.append((k, v))
            continue
        if kind in ("parameter", "constant"):
            stored.append((k, attrs))
            continue
        gate = attrs.get("gate")
        if kind != "gate" or not isinstance(gate, Gate):
            raise GraphError(f"node {v!r}: kind {kind!r} with gate {gate!r} is not a "
                             "valid node (expected input, parameter, constant or gate)")
        edges = [(u, e.get("slot")) for u, keyed in pred[v].items() for e in keyed.values()]
        arity = len(edges)
        ins = [None] * arity
        for u, s in edges:
            if not isinstance(s, int) or not 0 <= s < arity or ins[s] is not None:
                raise GraphError(f"node {v!r}: its {arity} input edges must have slots "
                                 f"0..{arity - 1} once each, got slot {s!r} from {u!r}")
            ins[s] = slot[u]
        if gate.arity is not None and gate.arity != arity:
            raise GraphError(f"node {v!r}: gate {gate.label} takes {gate.arity} inputs, "
                             f"has {arity}")
        ins = tuple(ins)
        gates.append((gate, ins, k))
        if type(gate) in BUILTIN and arity in (UNARY, BINARY):
            b = ins[1] if arity == BINARY else None
            steps.append((arity, gate.forward, gate.backward, ins[0], b, k))
        else:
            steps.append((CHECKED, gate.forward, gate.backward, ins, None, k))
    outside = tuple(v for v in dag if v not in slot)
    return Plan(order, slot, tuple(steps), tuple(gates), tuple(inputs), tuple(stored),
                slot[output], outside)
