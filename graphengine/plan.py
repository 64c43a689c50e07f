"""The compiled plan: what forward, backward and jvp actually run.

``compile_plan`` reads the graph's own record of its nodes (parallel lists in
insertion order, which is topological; see graph.py) once per structural change and
lowers the part the output depends on to
a flat tuple of steps ``(kind, gate, a, b, out)`` over an integer-indexed list of
values: ``a`` and ``b`` are the input slots (``a`` is the tuple of slots for a user's
gate), ``out`` the gate's own slot. The loops below touch no networkx, look up no
names and recurse nowhere; backward adds each input's gradient into its slot, so
gradients arriving along several paths are summed for free.
"""

from __future__ import annotations

import gc
from itertools import compress, repeat
from time import perf_counter

import numpy as np

from . import codegen
from .errors import GraphError
from .gates import BUILTIN, Gate, fit, zeros_like

# step kinds: a built-in gate of one or two inputs (trusted to return correct
# gradients), or a user's gate of any arity, whose results are checked; a pruned
# backward also has binary steps that want only their first or only their second
# input's gradient (and a checked step's b is then the tuple of wanted inputs)
UNARY, BINARY, CHECKED, FIRST, SECOND = 1, 2, 0, 3, 4
_LEAVES = frozenset(("parameter", "constant"))
# the record's encoding of a gate's inputs (see graph.py): no input, and a gate of
# another arity than 1 or 2 (its inputs are in the record's _many)
NONE, MANY = -1, -2


def derived_names(names, gates, indices) -> list:
    """The names of the record's nodes at ``indices``: a stored name, or one derived
    from the gate's op (``const`` for a constant) and the index."""
    get = names.get
    return [get(i) or f"{'const' if gates[i] is None else gates[i].op}_{i}" for i in indices]


def _describe(v) -> str:
    if isinstance(v, int):               # str() of a huge int is itself an error
        return f"the integer of about {int(v.bit_length() * 0.30103) + 1} digits"
    return repr(v)


def as_value(v, what: str):
    """A float or a float numpy array from a user's number or array, else GraphError.

    A ``numpy.matrix`` (or another ndarray subclass but a masked array) becomes a
    plain array, so ``*`` stays elementwise.
    """
    cls = v.__class__
    if cls is float:
        return v
    if cls is np.ndarray:
        return _array(v, what)
    if isinstance(v, (np.timedelta64, np.datetime64)):
        raise GraphError(f"{what}: expected a number, got a numpy {type(v).__name__}")
    if isinstance(v, (bool, int, float, np.integer, np.floating, np.bool_)):
        try:
            return float(v)
        except OverflowError:
            raise GraphError(f"{what}: {_describe(v)} is too large for a float64 "
                             "(at most about 1.8e308)") from None
    if isinstance(v, (list, tuple)):
        try:
            v = np.asarray(v)
        except (ValueError, TypeError, OverflowError) as exc:
            raise GraphError(f"{what}: not a rectangular array of numbers ({exc})") from None
        return _array(v, what)
    if isinstance(v, np.ndarray):
        if isinstance(v, np.ma.MaskedArray):
            raise GraphError(f"{what}: a masked array; pass .filled(value) or a plain array")
        return _array(np.asarray(v), what)
    raise GraphError(f"{what}: expected a number or a numpy array, got {type(v).__name__}")


def _array(v, what):
    kind = v.dtype.kind
    if kind in "biu":
        v = v.astype(float)
    elif kind != "f":
        raise GraphError(f"{what}: expected numbers, got an array of dtype {v.dtype}")
    return float(v) if v.ndim == 0 else v


def _plural(n, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Wants:
    """A pruned step's gate: backward skips the product for an unwanted input."""

    __slots__ = ("gate", "need")

    def __init__(self, gate, need):
        self.gate, self.need = gate, need

    def backward(self, upstream):
        return self.gate.backward(upstream, need=self.need)


def _broadcasts(a, b, to) -> bool:
    """Whether shapes ``a`` and ``b`` broadcast together to the shape ``to``."""
    try:
        return np.broadcast_shapes(a, b) == to
    except ValueError:
        return False


def _own(p, q, up):
    # a gate that passes its upstream through (add, sub) would otherwise hand one
    # array to two nodes: every gradient is its own array
    if p is up:
        p = p.copy()
    if q is up or q is p:
        q = q.copy()
    return p, q


class Plan:
    """A graph lowered for running: ``names`` (slot to node name); the steps as
    parallel lists ``kinds, gates, a, b, outs`` (``steps`` gives them as tuples);
    ``inputs`` ``(slot, name)`` to feed; ``leaf_slots`` and ``leaf_idx`` (their
    indices in the graph's record) of parameters and constants, whose values are
    read from the record's dict ``values`` at every run; the output's slot ``out``;
    the names of the nodes ``outside`` it. ``rec`` is the record index of each slot
    (None when slot and index agree). ``names``, ``slot`` (name to slot) and
    ``gates`` ``(gate, input slots, out)`` are built on first use. Parallel lists
    cost a few bytes a step and nothing to the cyclic garbage collector, which a
    tuple per step would cost at every collection; the plan holds no reference to
    the graph."""

    def __init__(self, kinds, gates, a, b, outs, inputs, leaf_slots, leaf_idx, trainable,
                 values, out, outside, rec, names_from):
        self.cols = (kinds, gates, a, b, outs)
        self.inputs = inputs
        self.leaf_slots = leaf_slots
        self.leaf_idx = leaf_idx
        self.trainable = trainable        # per leaf: a parameter (else a constant)
        self.values = values
        self.size = len(inputs) + len(leaf_slots) + len(outs)     # slots
        self.out = out
        self.outside = outside
        self.rec = rec
        self._names_from = names_from     # (names, gates) of the record when compiled
        self._names = self._slot = self._index = self._gates = self._template = None
        self._no_jvp = False
        self._pruned = {}

    @property
    def names(self) -> list:
        """The node name of every slot."""
        names = self._names
        if names is None:
            rec_names, rec_gates = self._names_from
            names = self._names = derived_names(
                rec_names, rec_gates, range(self.size) if self.rec is None else self.rec)
            self._names_from = None
        return names

    def slot_of(self, i: int):
        """The slot of the record's node ``i``, or None when the plan has none."""
        if self.rec is None:
            return i if i < self.size else None
        index = self._index
        if index is None:
            index = self._index = {r: k for k, r in enumerate(self.rec)}
        return index.get(i)

    @property
    def steps(self) -> tuple:
        """``(kind, gate, a, b, out)`` per step, in topological order."""
        return tuple(zip(*self.cols, strict=True))

    @property
    def slot(self) -> dict:
        if self._slot is None:
            self._slot = {name: k for k, name in enumerate(self.names)}
        return self._slot

    @property
    def gates(self) -> tuple:
        if self._gates is None:
            self._gates = tuple(
                (gate, (a,) if kind == UNARY else (a, b) if kind == BINARY else a, out)
                for kind, gate, a, b, out in zip(*self.cols, strict=True))
        return self._gates

    @property
    def stored(self) -> tuple:
        """``(slot, {"kind", "value"})`` of each parameter and constant."""
        values = self.values
        return tuple((k, {"kind": "parameter" if kind else "constant", "value": values[i]})
                     for k, i, kind in zip(self.leaf_slots, self.leaf_idx, self.trainable,
                                           strict=True))

    @property
    def no_jvp(self):
        """``(gate, slot)`` of the first gate without jvp, or None."""
        if self._no_jvp is False:
            _, gates, _, _, outs = self.cols
            self._no_jvp = next(((g, out) for g, out in zip(gates, outs, strict=False)
                                 if type(g).jvp is Gate.jvp), None)
        return self._no_jvp

    def as_dict(self, values: list) -> dict:
        template = self._template
        if template is None:                  # the first call builds; later ones copy
            self._template = False
            return dict(zip(self.names, values, strict=True))
        if template is False:
            template = self._template = dict.fromkeys(self.names)
        result = template.copy()
        result.update(zip(self.names, values, strict=True))
        return result

    def load(self, vals: list) -> None:
        """Put the parameters' and constants' values into their slots."""
        values = self.values
        for k, i in zip(self.leaf_slots, self.leaf_idx, strict=False):
            vals[k] = values[i]

    # generated code (codegen.py): the functions written so far, by key ("forward",
    # or a backward's wrt, None for the full one), False where none will be; and runs
    # so far of each key not yet written
    _code = _runs = _spent = None

    def __getstate__(self) -> dict:
        # copies and pickles run the loops until their own code is written
        state = self.__dict__.copy()
        for key in ("_code", "_runs", "_spent"):
            state.pop(key, None)
        return state

    def code(self, key):
        """The generated function for ``key`` (``"forward"``, the ``wrt`` of a backward,
        None for the full backward, or ``("step", wrt)`` for ``codegen.train_step``)
        once it pays: after the plan has run it ``codegen.HOT`` times (counting this
        call) and its loop has taken as long as writing it is estimated to take
        (``codegen.COST`` a step); a training step once its pruned backward is written.
        None until then, False when it will not be written (past MAX_STEPS)."""
        code = self._code
        if code is None:
            code = self._code = {}
            self._runs, self._spent = {}, {}
        fn = code.get(key)
        if fn is None:
            runs = self._runs[key] = self._runs.get(key, 0) + 1
            step = key.__class__ is tuple and key and key[0] == "step"
            if step:
                if not code.get(key[1]):
                    return None
            elif runs <= codegen.HOT or \
                    self._spent.get(key, 0.0) < codegen.COST * len(self.cols[0]):
                return None
            if key == "forward":
                fn = codegen.forward(self)
            elif step:
                fn = codegen.train_step(self, key[1])
            else:
                fn = codegen.backward(self, self.pruned(key) if key is not None
                                      else self.steps, own=key is None)
            fn = code[key] = fn or False
        return fn

    def _timed(self, key, loop, *args):
        # a loop run while its code is not written: its time counts toward writing it
        start = perf_counter()
        try:
            return loop(*args)
        finally:
            self._spent[key] = self._spent.get(key, 0.0) + perf_counter() - start

    def forward(self, vals: list) -> None:
        code = self._code
        fn = code.get("forward") if code is not None else None
        if fn is None:
            fn = self.code("forward")
            if fn is None:
                self._timed("forward", self._forward, vals)
                return
        if fn:
            fn(vals)
        else:
            self._forward(vals)

    def _forward(self, vals: list) -> None:
        out = -1
        try:
            for kind, gate, a, b, out in zip(*self.cols, strict=False):
                if kind == 1:                                  # UNARY
                    vals[out] = gate.forward(vals[a])
                elif kind == 2:                                # BINARY
                    vals[out] = gate.forward(vals[a], vals[b])
                else:
                    vals[out] = as_value(gate.forward(*[vals[i] for i in a]),
                                         f"node {self.names[out]!r}: forward returned")
        except Exception as exc:
            raise self._failure(out, "forward", vals, exc) from exc

    def backward(self, vals: list, seed, wrt: tuple | None = None) -> list:
        """Gradients by slot, each array its own. With ``wrt`` (slots), only the
        steps between those slots and the output run (a training step's backward):
        gradients nobody asked for may stay None, and a gate that passes its upstream
        through (add) hands the same array on instead of a copy. ``seed`` becomes
        the output's gradient as it is."""
        code = self._code
        fn = code.get(wrt) if code is not None else None
        if fn is None:
            fn = self.code(wrt)
            if fn is None:
                return self._timed(wrt, self._backward, vals, seed, wrt)
        if fn:
            return fn(vals, seed)
        return self._backward(vals, seed, wrt)

    def _backward(self, vals: list, seed, wrt: tuple | None) -> list:
        grads = [None] * len(vals)
        grads[self.out] = seed
        out = -1
        own = wrt is None
        steps = (zip(*map(reversed, self.cols), strict=False) if own
                 else reversed(self.pruned(wrt)))
        try:
            for kind, gate, a, b, out in steps:
                up = grads[out]
                if kind == 1:                                  # UNARY
                    (p,) = gate.backward(up)
                    if p is up and own and up.__class__ is not float:
                        p = p.copy()
                    cur = grads[a]
                    grads[a] = p if cur is None else cur + p
                elif kind == 2:                                # BINARY
                    p, q = gate.backward(up)
                    if own and up.__class__ is not float and (p is up or q is up or p is q):
                        p, q = _own(p, q, up)
                    cur = grads[a]
                    grads[a] = p if cur is None else cur + p
                    cur = grads[b]
                    grads[b] = q if cur is None else cur + q
                elif kind == 3:                                # FIRST
                    p = gate.backward(up)[0]
                    cur = grads[a]
                    grads[a] = p if cur is None else cur + p
                elif kind == 4:                                # SECOND
                    q = gate.backward(up)[1]
                    cur = grads[b]
                    grads[b] = q if cur is None else cur + q
                else:                                          # CHECKED
                    # a user's gate gets its own copy: writing into it harms nobody
                    mine = up.copy() if up.__class__ is np.ndarray else up
                    parts = self._checked(out, a, gate.backward(mine), vals)
                    for i, p, want in zip(a, parts, b or (True,) * len(a), strict=True):
                        if want:
                            cur = grads[i]
                            grads[i] = p if cur is None else cur + p
        except Exception as exc:
            raise self._failure(out, "backward", vals, exc) from exc
        return grads

    def downstream(self, slots) -> list:
        """For every slot, whether it depends on one of ``slots``."""
        mark = [False] * self.size
        for s in slots:
            mark[s] = True
        for _, ins, out in self.gates:
            if not mark[out]:
                mark[out] = any(mark[i] for i in ins)
        return mark

    def pruned(self, wrt: tuple) -> tuple:
        """The backward steps that the gradients of the slots ``wrt`` need (cached):
        those of a gate that depends on ``wrt`` through one of its inputs."""
        steps = self._pruned.get(wrt)
        if steps is None:
            need = self.downstream(wrt)
            steps = []
            for kind, gate, a, b, out in zip(*self.cols, strict=False):
                if not need[out]:
                    continue
                if kind == BINARY:
                    if not (need[a] or need[b]):
                        continue
                    if not (need[a] and need[b]):
                        if gate.prunable:           # the gate skips the unwanted product
                            gate = _Wants(gate, (need[a], need[b]))
                        kind = FIRST if need[a] else SECOND
                elif kind == UNARY:
                    if not need[a]:
                        continue
                else:
                    b = tuple(need[i] for i in a)
                    if not any(b):
                        continue
                steps.append((kind, gate, a, b, out))
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
            for kind, gate, a, b, out in zip(*self.cols, strict=False):
                if kind == 1:
                    tangents[out] = gate.jvp(tangents[a])
                elif kind == 2:
                    tangents[out] = gate.jvp(tangents[a], tangents[b])
                else:
                    tangents[out] = self._tangent(out, gate.jvp(*[tangents[i] for i in a]),
                                                  vals)
        except Exception as exc:
            raise self._failure(out, "jvp", vals, exc) from exc
        return tangents

    def _tangent(self, out, t, vals):
        name = self.names[out]
        t = as_value(t, f"node {name!r}: jvp returned")
        want, got = np.shape(vals[out]), np.shape(t)
        if got != want:
            if not _broadcasts(want, got, to=want):
                raise GraphError(f"node {name!r}: jvp returned a tangent of shape {got}, "
                                 f"expected {want} (the shape of its value)")
            t = np.broadcast_to(t, want).copy()
        return t

    def _checked(self, out, ins, parts, vals):
        name = self.names[out]
        if not isinstance(parts, (list, tuple)):
            raise GraphError(f"node {name!r}: backward must return a sequence of "
                             f"{_plural(len(ins), 'gradient')}, got {type(parts).__name__} "
                             "(return a list or tuple)")
        if len(parts) != len(ins):
            raise GraphError(f"node {name!r}: backward returned "
                             f"{_plural(len(parts), 'gradient')} for "
                             f"{_plural(len(ins), 'input')}")
        checked = []
        for k, (i, p) in enumerate(zip(ins, parts, strict=True)):
            x = vals[i]
            if p is None:
                checked.append(zeros_like(x))
                continue
            p = as_value(p, f"node {name!r}: backward's gradient {k}")
            want, got = np.shape(x), np.shape(p)
            if got != want:
                if not _broadcasts(want, got, to=got):
                    raise GraphError(f"node {name!r}: backward's gradient {k} has shape "
                                     f"{got}, expected {want} (the shape of input "
                                     f"{self.names[i]!r})")
                p = fit(p, x)
            if p.__class__ is np.ndarray and any(
                    q.__class__ is np.ndarray and np.may_share_memory(p, q) for q in checked):
                p = p.copy()
            checked.append(p)
        return checked

    def _failure(self, out, phase, vals, exc):
        if out < 0:
            return exc
        name = self.names[out]
        step = self.steps[self.cols[4].index(out)]
        gate = step[1]
        if isinstance(exc, GraphError):
            if f"node {name!r}" in str(exc):
                return exc
            return GraphError(f"node {name!r} ({gate.label}) in {phase}: {exc}")
        ins = (step[2],) if step[0] == UNARY else (step[2], step[3]) if step[0] == BINARY \
            else step[2]
        shapes = ", ".join(f"{self.names[i]!r} {np.shape(vals[i])}" for i in ins)
        return GraphError(f"node {name!r} ({gate.label}) failed in {phase} "
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

    __slots__ = ("plan", "values", "grads", "grads_plan", "forwards", "grads_from",
                 "stale", "fed")

    def __init__(self):
        self.plan = None          # the plan ``values`` belong to
        self.values = None
        self.stale = False        # the gates ran on other values since (g.evaluate)
        self.fed = {}             # values fed to inputs outside the plan (for zeros)
        self.grads = None
        self.grads_plan = None    # the plan ``grads`` belong to
        self.forwards = 0         # successful forwards so far
        self.grads_from = -1      # the forward ``grads`` were computed from

    def values_for(self, plan):
        """The last values if they belong to ``plan``, else None. The gates' saved
        state is theirs too (rerun first if another evaluation used the gates)."""
        if self.plan is not plan:
            return None
        if self.stale:
            self.stale = False
            plan.forward(self.values)
        return self.values

    def set_values(self, plan, values) -> None:
        self.plan, self.values, self.stale = plan, values, False
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

    def save(self) -> tuple:
        """A snapshot that ``restore`` puts back (values copied, as a run reuses the list)."""
        vals = None if self.values is None else list(self.values)
        return (self.plan, vals, self.grads, self.grads_plan, self.forwards, self.grads_from,
                self.stale)

    def restore(self, saved: tuple) -> None:
        (self.plan, self.values, self.grads, self.grads_plan,
         self.forwards, self.grads_from, self.stale) = saved




def compile_plan(g, output: int) -> Plan:
    """Lower the part of graph ``g`` that its node ``output`` (an index into the
    record) depends on to a Plan."""
    # Compiling allocates a few small objects per node and no reference cycles; the
    # cyclic collector would rescan the whole (huge) heap many times over.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _compile(g, output)
    finally:
        if paused:
            gc.enable()


def _compile(g, output: int) -> Plan:
    kinds_r, gates_r, many = g._kinds, g._gates, g._many
    n = len(kinds_r)
    # the record's inputs as numpy arrays: one pass of each question at C speed, then
    # lists for the plan's Python loops
    A_r = np.fromiter(g._a, dtype=np.int64, count=n)
    B_r = np.fromiter(g._b, dtype=np.int64, count=n)
    count = 0
    if output == n - 1 and not g._gone:
        # the usual case: every node but the output has a user, so the output (the
        # one node nothing uses) depends on every node (NONE and MANY mark the spare
        # places n + 1 and n)
        used = np.zeros(n + 2, dtype=bool)
        used[A_r] = True
        used[B_r] = True
        for ins in many.values():
            used[list(ins)] = True
        if used[:n - 1].all():
            count = n
    if count != n:
        # the output's ancestors, by one reverse pass (insertion order is topological)
        a_r, b_r = g._a, g._b
        need = bytearray(n)
        need[output] = 1
        for i in range(output, -1, -1):
            if need[i]:
                b = b_r[i]
                if b < 0:
                    if b == MANY:
                        for u in many[i]:
                            need[u] = 1
                        continue
                else:
                    need[b] = 1
                a = a_r[i]
                if a >= 0:
                    need[a] = 1
        needed = np.frombuffer(need, dtype=np.uint8).astype(bool)
        count = int(needed.sum())
    gate = (A_r >= 0) | (B_r == MANY)          # a leaf has NONE for both
    if count == n:                              # every node: slot i is node i
        rec, slot, where = None, None, range(n)
        at_np = np.flatnonzero(gate)
        leaves = np.flatnonzero(~gate).tolist()
    else:
        order_np = np.flatnonzero(needed)
        rec = order_np.tolist()
        slot = np.full(n + 2, NONE, dtype=np.int64)     # NONE and MANY map to themselves
        slot[order_np] = np.arange(len(order_np))
        slot[n], slot[n + 1] = MANY, NONE
        where = slot
        at_np = order_np[gate[order_np]]
        leaves = order_np[~gate[order_np]].tolist()
    at = at_np.tolist()
    gates = list(map(gates_r.__getitem__, at))
    for k in list(compress(range(len(gates)), map(isinstance, gates, repeat(type)))):
        gates[k] = gates_r[at[k]] = gates[k]()  # a built-in gate made now (see graph.py)
    kinds = np.where(B_r[at_np] == NONE, UNARY, BINARY).tolist()
    if slot is None:
        # the record's own int objects: a million new ones would cost their memory
        A, B = list(map(g._a.__getitem__, at)), list(map(g._b.__getitem__, at))
        outs = at
    else:
        A, B = slot[A_r[at_np]].tolist(), slot[B_r[at_np]].tolist()
        outs = slot[at_np].tolist()
    if many or not BUILTIN.issuperset(map(type, gates)):
        # a user's gate, or one of another arity: a checked step of its input tuple
        builtin = BUILTIN
        for k, gate_k in enumerate(gates):
            if B[k] == MANY or type(gate_k) not in builtin:
                ins = g._ins(at[k])
                kinds[k] = CHECKED
                A[k] = ins if slot is None else tuple([int(slot[u]) for u in ins])
                B[k] = None
    # the leaves, in order: inputs to feed, parameters and constants to load
    leaf_kinds = list(map(kinds_r.__getitem__, leaves))
    inputs = [(int(where[i]), g._name(i))
              for i in compress(leaves, map("input".__eq__, leaf_kinds))]
    stored = list(map(_LEAVES.__contains__, leaf_kinds))
    leaf_idx = list(compress(leaves, stored))
    leaf_slots = leaf_idx if slot is None else slot[leaf_idx].tolist()
    trainable = list(map("parameter".__eq__, compress(leaf_kinds, stored)))
    outside = () if count == len(g) else \
        tuple(g._names_of([i for i in g._indices() if not need[i]]))
    return Plan(kinds, gates, A, B, outs, tuple(inputs), leaf_slots, leaf_idx, trainable,
                g._vals, int(where[output]), outside, rec,
                (dict(g._names), list(gates_r)))
