"""Straight-line Python for a plan: its forward pass, its backward passes (full or
pruned) and ``compile_step``'s whole training step, each written out as one function
from the plan's own steps and compiled once.

The loops of ``plan.py`` dispatch on every step's kind, index lists, test for None and
toggle numpy's error state inside every gate. A generated function runs the same
steps in the same order with all of that resolved when it is written: values and
gradients live in local variables (``v3`` is slot 3's value, ``d3`` its gradient;
each value also goes into its slot as it is computed), the first gradient reaching a
slot is assigned and later ones added (fan-out sums as in the loop), numpy's warnings
are silenced once around the steps rather than in each gate, and the array paths of
the gates a training step runs (matmul, add, sigmoid, softmax cross-entropy's
gradient) are written in place, behind the very conditions their methods test, with
the method as the fallback. Every other gate is called. A user's gate runs with the
caller's error state and its results are checked, as in the loops. The training step
also does ``Graph.forward``'s common case of a feed (a dict of exactly the plan's
inputs to floats or float arrays) and hands any other feed back to it. For a network
of those four gates on float64 arrays, ``special_step`` writes the training step once
more for the shapes of its first feed and parameters: every slot's shape is then
known, each condition is decided when the code is written, and one check of the
signature at entry hands any other feed or parameter to the guarded step.

The source names slots and generated identifiers only: gates, messages, input names
and helpers reach it through the function's namespace, so no name or text of a
user's is ever part of it, and nothing a user wrote is evaluated. When a step fails,
the line it failed on gives the step and pass, and the error is the loop's:
``Plan._failure`` names the node, gate and input shapes.

Bounds: writing and compiling costs 60-90 µs a step, hundreds of runs of a scalar
step, so a plan is written out only after it has run ``HOT`` times and its loop has
taken as long as writing it would (``COST`` a step): a graph built and run a few
times never pays it, and whatever runs long enough pays it once, at most doubling
the time spent so far. Only plans of at most ``MAX_STEPS`` steps are written (256; a
training step counts its forward and backward steps), so the source stays a few
hundred lines; larger plans, and every plan's first runs, run the loops. The tests
run every plan through generated code from its first run and the gate, plan, error
and training tests through both.
"""

from __future__ import annotations

import numpy as np

from . import gates as G

HOT = 3              # runs of a plan (forward, or one kind of backward) before generating
COST = 80e-6         # seconds writing costs a step (60-90 us measured): a plan's loop
                     # must have run that long before its code is written
MAX_STEPS = 256      # plans with more steps are never generated: their source would be large


class _Source:
    """Lines of one function, each remembering the step (its slot, -1 for none) and
    the pass ("forward" or "backward") it belongs to."""

    def __init__(self):
        self.lines, self.marks = [], []
        self.phase = "forward"

    def add(self, text: str, slot: int = -1, indent: int = 1) -> None:
        for line in text.split("\n"):
            self.lines.append("    " * indent + line)
            self.marks.append((slot, self.phase))

    def build(self, name: str, namespace: dict, what: str):
        code = compile("\n".join(self.lines), f"<graphengine {what}>", "exec")
        exec(code, namespace)               # defines the function; runs nothing else
        fn = namespace[name]
        fn.source = "\n".join(self.lines)   # for reading and for tests
        return fn


def _namespace(plan, marks: list) -> dict:
    def fail(exc, vals, run=None):
        # the first traceback entry is the generated function's own frame: its line
        # gives the step
        tb = exc.__traceback__
        line = tb.tb_lineno if tb is not None else 0
        out, phase = marks[line - 1] if 0 < line <= len(marks) else (-1, "forward")
        if run is not None and phase == "forward":
            run.forget_values()             # as a failed Graph.forward leaves it
        return plan._failure(out, phase, vals, exc)

    return {"__name__": __name__, "nd": np.ndarray, "F64": np.dtype(np.float64),
            "on": G._quiet_on, "off": G._quiet_off, "rowsum": G._rowsum, "fit": G.fit,
            "like": G._like, "zeros_like": G.zeros_like, "negative": np.negative,
            "exp": np.exp, "divide": np.divide, "zeros": np.zeros, "own": _plan()._own,
            "log": np.log, "intp": np.intp, "uintp": np.uintp, "arange": np.arange,
            "count_nonzero": G._count_nonzero, "rowmax": G._rowmax, "PLAN": plan,
            "FAIL": fail}


# --------------------------------------------------------------- inlined fast paths
# Each writes the gate's array path as its method runs it, under the same condition,
# and calls the method otherwise. ``o`` is the output's variable, ``x, y`` the
# inputs', ``g`` the gate's; all run inside the silenced region.

def _forward_matmul(o, x, y, g):
    # a of two dimensions or more: the product is an array (the method makes a float
    # of two vectors' product)
    return (f"if {x}.__class__ is nd and {y}.__class__ is nd and {x}.ndim > 1 and {y}.ndim:\n"
            f"    {g}.a = {x}; {g}.b = {y}; {o} = {x} @ {y}\n"
            f"else:\n"
            f"    {o} = {g}.forward({x}, {y})")


def _forward_add(o, x, y, g):
    return (f"if {x}.__class__ is float and {y}.__class__ is float:\n"
            f"    {o} = {x} + {y}\n"
            f"else:\n"
            f"    {g}.x = {x}; {g}.y = {y}; {o} = {x} + {y}")


def _sigmoid_body(o, x, g):
    return (f"{o} = negative({x}); exp({o}, out={o}); {o} += 1.0; "
            f"divide(1.0, {o}, out={o}); {g}.out = {o}")


def _forward_sigmoid(o, x, g):
    # F64 first: the dtype's kind is the slower question (a float64 array's dtype is it)
    return (f"if {x}.__class__ is nd and ({x}.dtype is F64 or {x}.dtype.kind == 'f') "
            f"and {x}.ndim:\n"
            f"    {_sigmoid_body(o, x, g)}\n"
            f"else:\n"
            f"    {o} = {g}.forward({x})")


def _softmax_cross_entropy_body(o, x, y, g):
    # for float64 logits of shape (n, classes), n > 0, and float64 labels of shape (n,);
    # labels the method would refuse go to the method, which raises its error
    return (f"shape = {x}.shape; n = shape[0]; flat = {y}.astype(intp)\n"
            f"if count_nonzero(flat.view(uintp) >= shape[1]) or count_nonzero(flat != {y}):\n"
            f"    {o} = {g}.forward({x}, {y})\n"
            f"if {g}._key != shape: {g}._key, {g}._base = shape, "
            f"arange(0, n * shape[1], shape[1])\n"
            f"flat += {g}._base\n"
            f"s = {x} - rowmax({x}, 1, keepdims=True); e = exp(s); "
            f"total = rowsum(e, 1, keepdims=True)\n"
            f"{g}.labels = {y}; {g}.shape = shape; {g}.flat = flat; {g}.e = e; "
            f"{g}.total = total\n"
            f"{o} = float(rowsum(log(total), None) - rowsum(s.take(flat), None)) / n")


def _forward_softmax_cross_entropy(o, x, y, g):
    body = "\n".join("    " + line for line in
                     _softmax_cross_entropy_body(o, x, y, g).split("\n"))
    return (f"if {x}.__class__ is nd and {x}.dtype is F64 and {x}.ndim == 2 and "
            f"{y}.__class__ is nd and {y}.dtype is F64 and {y}.ndim == 1 and "
            f"{x}.shape[0] and {y}.shape[0] == {x}.shape[0]:\n"
            f"{body}\n"
            f"else:\n"
            f"    {o} = {g}.forward({x}, {y})")


FORWARD = {G.MatMulGate: _forward_matmul, G.AddGate: _forward_add,
           G.SigmoidGate: _forward_sigmoid, G.SoftmaxCrossEntropy: _forward_softmax_cross_entropy}


def _backward_matmul(p, q, up, g, need, own):
    # need: which of the two gradients to compute (a pruned step wants one); own: the
    # full backward, where every gradient must be its own array (fresh products here)
    lines = [f"a = {g}.a; b = {g}.b",
             "if a.ndim == 2 and b.ndim == 2:"]
    if need[0]:
        lines.append(f"    {p} = {up} @ b.T")
        lines.append(f"    if {p}.dtype is not a.dtype: {p} = like({p}, a)")
    if need[1]:
        lines.append(f"    {q} = a.T @ {up}")
        lines.append(f"    if {q}.dtype is not b.dtype: {q} = like({q}, b)")
    lines.append("else:")
    lines.append(f"    {p}, {q} = {g}.backward({up}, ({need[0]}, {need[1]}))")
    return "\n".join(lines)


def _backward_add(p, q, up, g, need, own):
    # own: the upstream array passed through is copied, and a fit that hands it back
    # (or the first gradient) too, as the loop's _own does
    lines = [f"if {up}.__class__ is float:",
             f"    {p} = {q} = {up}",
             "else:",
             f"    x = {g}.x; y = {g}.y; shape = {up}.shape"]
    if need[0]:
        lines += [f"    if x.__class__ is nd and x.shape == shape and x.dtype is {up}.dtype:",
                  f"        {p} = {up}.copy()" if own else f"        {p} = {up}",
                  "    else:",
                  f"        {p} = fit({up}, x)"]
        if own:
            lines.append(f"        if {p} is {up}: {p} = {p}.copy()")
    if need[1]:
        lines += [f"    if y.__class__ is nd and y.dtype is {up}.dtype and y.ndim "
                  f"and shape[1:] == y.shape:",
                  f"        {q} = rowsum({up}, 0)",
                  "    else:",
                  f"        {q} = fit({up}, y)"]
        if own:
            lines.append(f"        if {q} is {up} or {q} is {p}: {q} = {q}.copy()")
    return "\n".join(lines)


def _backward_sigmoid(p, up, g):
    return (f"s = {g}.out\n"
            f"if s.__class__ is float:\n"
            f"    {p} = (1.0 - s) * s * {up}\n"
            f"else:\n"
            f"    {p} = 1.0 - s; {p} *= s; {p} *= {up}")


def _backward_softmax_cross_entropy(p, q, up, g, need, own):
    # _dlogits, then the upstream unless it is the literal seed 1.0 of a training step
    lines = [f"n = len({g}.flat); {p} = divide({g}.e, {g}.total * n, order='C')",
             f"{p}.reshape(-1)[{g}.flat] -= 1.0 / n; {p} = {p}.reshape({g}.shape)"]
    if up != "1.0":
        lines.append(f"if {up}.__class__ is not float or {up} != 1.0: {p} *= {up}")
    if need[1]:                        # zeros_like, a float64 array's first
        lines.append(f"y = {g}.labels; {q} = zeros(y.shape, F64) if y.__class__ is nd and "
                     f"y.dtype is F64 else zeros_like(y)")
    return "\n".join(lines)


BACKWARD = {G.MatMulGate: _backward_matmul, G.AddGate: _backward_add,
            G.SoftmaxCrossEntropy: _backward_softmax_cross_entropy}
BACKWARD_UNARY = {G.SigmoidGate: _backward_sigmoid}


# --------------------------------------------------------------- specialised to shapes
# A training step written for one signature (every input and leaf a float64 array of a
# given shape) knows every slot's shape, so each condition above is known when the
# code is written: the step runs only the branch each condition picks (the method's
# own fast path, or the method), after one check of the signature at entry. Only
# these four gates, whose outputs' types and shapes follow from their inputs', take
# part; a dtype conversion (like) is never needed between float64 arrays.

def _static_forward(t, o, x, y, g):
    if t is G.MatMulGate:
        return f"{g}.a = {x}; {g}.b = {y}; {o} = {x} @ {y}"
    if t is G.AddGate:
        return f"{g}.x = {x}; {g}.y = {y}; {o} = {x} + {y}"
    if t is G.SigmoidGate:
        return _sigmoid_body(o, x, g)
    return _softmax_cross_entropy_body(o, x, y, g)


def _static_backward(t, p, q, up, g, need, passes, rows):
    # passes: add's x has the output's shape (the upstream passes to it); rows: add's y
    # has the shape of the output's rows (it gets their sum)
    if t is G.MatMulGate:
        lines = [f"a = {g}.a; b = {g}.b"]
        if need[0]:
            lines.append(f"{p} = {up} @ b.T")
        if need[1]:
            lines.append(f"{q} = a.T @ {up}")
        return "\n".join(lines)
    if t is G.AddGate:
        lines = []
        if need[0]:
            lines.append(f"{p} = {up}" if passes else f"{p} = fit({up}, {g}.x)")
        if need[1]:
            lines.append(f"{q} = rowsum({up}, 0)" if rows else f"{q} = fit({up}, {g}.y)")
        return "\n".join(lines)
    if t is G.SigmoidGate:
        return f"s = {g}.out; {p} = 1.0 - s; {p} *= s; {p} *= {up}"
    return _backward_softmax_cross_entropy(p, q, up, g, need, False)


def _shapes(plan, shapes: dict) -> dict | None:
    """Every slot's shape from those of the inputs and leaves, when every step is one of
    the four gates on arrays their fast paths take; else None."""
    for kind, gate, a, b, out in zip(*plan.cols, strict=True):
        t = type(gate)
        if kind == 2 and t is G.MatMulGate:
            sa, sb = shapes[a], shapes[b]
            if len(sa) != 2 or len(sb) != 2 or sa[1] != sb[0]:
                return None
            shapes[out] = (sa[0], sb[1])
        elif kind == 2 and t is G.AddGate:
            try:
                shapes[out] = np.broadcast_shapes(shapes[a], shapes[b])
            except ValueError:
                return None
        elif kind == 1 and t is G.SigmoidGate and shapes[a]:
            shapes[out] = shapes[a]
        elif kind == 2 and t is G.SoftmaxCrossEntropy:
            sz, sy = shapes[a], shapes[b]
            if len(sz) != 2 or len(sy) != 1 or not sz[0] or sy != sz[:1]:
                return None
            shapes[out] = ()
        else:
            return None
    return shapes if shapes[plan.out] == () else None


# --------------------------------------------------------------- the passes

def _slots_read(kinds, A, B):
    return {s for k, a, b in zip(kinds, A, B, strict=True)
            for s in ((a,) if k == 1 else (a, b) if k == 2 else a)}


def _forward_steps(plan, src, ns, indent: int, shapes=None) -> None:
    """The forward steps into ``src``: every value read is in a local ``v{slot}``;
    ``shapes``: every slot's, for a step specialised to them."""
    kinds, gates, A, B, outs = plan.cols
    for kind, gate, a, b, out in zip(kinds, gates, A, B, outs, strict=True):
        g, o = f"f{out}", f"v{out}"
        ns[g] = gate
        if shapes is not None:
            body = _static_forward(type(gate), o, f"v{a}", f"v{b}" if kind == 2 else None, g)
        elif kind == 1:
            make = FORWARD.get(type(gate))
            body = make(o, f"v{a}", g) if make else f"{o} = {g}.forward(v{a})"
        elif kind == 2:
            make = FORWARD.get(type(gate))
            body = make(o, f"v{a}", f"v{b}", g) if make else f"{o} = {g}.forward(v{a}, v{b})"
        else:
            # a user's gate: run with the caller's error state, its result checked
            ns[f"m{out}"] = f"node {plan.names[out]!r}: forward returned"
            ns["as_value"] = _plan().as_value
            args = "".join(f"v{i}, " for i in a)
            body = (f"off(t); t = None\n"
                    f"{o} = as_value({g}.forward({args}), m{out})\n"
                    f"t = on()")
        src.add(body, out, indent)
        # into its slot now: the last run's value there goes back to the allocator
        # before the next step allocates (a batch of 1797 rows measured 5% slower
        # with every slot written at the end)
        src.add(f"vals[{out}] = {o}", out, indent)


def _backward_steps(plan, steps, own: bool, src, ns, indent: int, seed: str, shapes=None):
    """The backward steps into ``src``, the output's gradient being ``seed`` (a name
    or the literal 1.0); returns the gradients' list display, or None when a step
    would get no gradient (left to the loop)."""
    src.phase = "backward"
    has = {plan.out}                 # slots holding a gradient so far

    def add_to(slot, part):
        if slot in has:
            return f"d{slot} = d{slot} + {part}"
        has.add(slot)
        return f"d{slot} = {part}"

    for kind, gate, a, b, out in reversed(steps):
        if out not in has:
            return None
        g, up = f"b{out}", seed if out == plan.out else f"d{out}"
        lines = []
        if kind in (2, 3, 4):                            # BINARY, FIRST, SECOND
            need = (kind != 4, kind != 3)
            real = gate.gate if isinstance(gate, _plan()._Wants) else gate
            make = BACKWARD.get(type(real))
            ns[g] = real if make else gate
            if shapes is not None:
                lines.append(_static_backward(
                    type(real), "p", "q", up, g, need, shapes[a] == shapes[out],
                    len(shapes[b]) > 0 and shapes[out][1:] == shapes[b]))
            elif make:
                lines.append(make("p", "q", up, g, need, own))
            elif kind == 2:
                lines.append(f"p, q = {g}.backward({up})")
            elif kind == 3:
                lines.append(f"p = {g}.backward({up})[0]")
            else:
                lines.append(f"q = {g}.backward({up})[1]")
            if own and kind == 2 and not make:
                lines.append(f"if {up}.__class__ is not float and "
                             f"(p is {up} or q is {up} or p is q): p, q = own(p, q, {up})")
            if need[0]:
                lines.append(add_to(a, "p"))
            if need[1]:
                lines.append(add_to(b, "q"))
        elif kind == 1:                                  # UNARY
            make = BACKWARD_UNARY.get(type(gate))
            ns[g] = gate
            if shapes is not None:
                lines.append(_static_backward(type(gate), "p", "q", up, g, (True, False),
                                              False, False))
            elif make:
                lines.append(make("p", up, g))
            else:
                lines.append(f"(p,) = {g}.backward({up})")
                if own:
                    lines.append(f"if p is {up} and {up}.__class__ is not float: p = p.copy()")
            lines.append(add_to(a, "p"))
        else:                                            # CHECKED: a user's gate
            ns[g], ns[f"a{out}"] = gate, a
            lines.append("off(t); t = None")
            lines.append(f"mine = {up}.copy() if {up}.__class__ is nd else {up}")
            lines.append(f"parts = PLAN._checked({out}, a{out}, {g}.backward(mine), vals)")
            lines.append("t = on()")
            for k, (i, want) in enumerate(zip(a, b or (True,) * len(a), strict=True)):
                if want:
                    lines.append(add_to(i, f"parts[{k}]"))
        src.add("\n".join(lines), out, indent)
    return "[" + ", ".join(seed if s == plan.out else f"d{s}" if s in has else "None"
                           for s in range(len(plan.names))) + "]"


def _open(src) -> None:
    # numpy's warnings off around the steps (t is None while a user's gate runs)
    src.add("t = on()")
    src.add("try:")


def _close(src, run: str = "") -> None:
    src.add("except Exception as exc:")
    src.add(f"raise FAIL(exc, vals{run}) from exc", indent=2)
    src.add("finally:")
    src.add("if t is not None: off(t)", indent=2)


def forward(plan):
    """The plan's forward pass as one function ``f(vals)``, or None past MAX_STEPS."""
    kinds, _, A, B, outs = plan.cols
    if not kinds or len(kinds) > MAX_STEPS:
        return None
    src = _Source()
    ns = _namespace(plan, src.marks)
    src.add("def forward(vals):", indent=0)
    for s in sorted(_slots_read(kinds, A, B) - set(outs)):
        src.add(f"v{s} = vals[{s}]")
    _open(src)
    _forward_steps(plan, src, ns, 2)
    _close(src)
    return src.build("forward", ns, "forward")


def backward(plan, steps, own: bool):
    """The backward pass over ``steps`` (the plan's, or a pruned list) as one function
    ``f(vals, seed) -> grads``, or None past MAX_STEPS. ``own``: every gradient is its
    own array (the full backward), as ``Plan.backward`` says."""
    if not steps or len(steps) > MAX_STEPS:
        return None
    src = _Source()
    ns = _namespace(plan, src.marks)
    src.add("def backward(vals, seed):", indent=0)
    _open(src)
    grads = _backward_steps(plan, steps, own, src, ns, 2, "seed")
    _close(src)
    if grads is None:
        return None
    src.add(f"return {grads}")
    return src.build("backward", ns, "backward")


def train_step(plan, wrt: tuple):
    """A training step's passes as one function ``f(vals, feed, run)``: ``Graph.forward``'s
    common case (a dict of exactly the plan's inputs to floats or float arrays; else
    it returns None having done nothing), the forward, the loss (returned alone as
    ``(value, None)`` when it is not a float) and the backward pruned to ``wrt`` with
    seed 1.0, as ``compile_step`` runs them; returns ``(loss, grads)``. ``run`` is the
    graph's RunState, told of the values as ``Graph.forward`` tells it (a failed
    forward leaves it without values)."""
    steps = plan.pruned(wrt)
    kinds = plan.cols[0]
    if not kinds or not steps or len(kinds) + len(steps) > MAX_STEPS:
        return None
    src = _Source()
    ns = _namespace(plan, src.marks)
    out = plan.out
    src.add("def step(vals, feed, run):", indent=0)
    src.add(f"if feed.__class__ is not dict or len(feed) != {len(plan.inputs)}: return None")
    for slot, name in plan.inputs:
        ns[f"k{slot}"] = name
        v = f"v{slot}"
        src.add(f"{v} = feed.get(k{slot})")
        src.add(f"if {v}.__class__ is not float and ({v}.__class__ is not nd or "
                f"{v}.dtype is not F64 and {v}.dtype.kind != 'f' or not {v}.ndim): return None")
    src.add("if run.fed: run.fed = {}")
    ns["leaves"] = plan.values                 # the record's values of the leaves
    for slot, i in zip(plan.leaf_slots, plan.leaf_idx, strict=True):
        src.add(f"v{slot} = vals[{slot}] = leaves[{i}]")
    for slot, _ in plan.inputs:
        src.add(f"vals[{slot}] = v{slot}")
    _open(src)
    _forward_steps(plan, src, ns, 2)
    src.add("run.set_values(PLAN, vals)", indent=2)
    src.add(f"if v{out}.__class__ is not float: return v{out}, None", indent=2)
    grads = _backward_steps(plan, steps, False, src, ns, 2, "1.0")
    _close(src, ", run")
    if grads is None:
        return None
    src.add(f"return v{out}, {grads}")
    return src.build("step", ns, "training step")


def special_step(plan, wrt: tuple, feed, guarded):
    """``train_step`` specialised to the signature of ``feed`` and of the leaves' values
    now (each a float64 array of its shape), for plans of matmul, add, sigmoid and
    softmax cross-entropy only: the same steps with every condition decided, after one
    check of the signature at entry; any other feed or leaf goes to ``guarded`` (the
    plan's ``train_step``) untouched. None when the plan or the signature does not fit."""
    if not guarded or feed.__class__ is not dict:
        return None
    F64 = np.dtype(np.float64)
    slots = [(slot, feed.get(name)) for slot, name in plan.inputs] + \
        [(slot, plan.values[i]) for slot, i in zip(plan.leaf_slots, plan.leaf_idx,
                                                   strict=True)]
    if not all(v.__class__ is np.ndarray and v.dtype is F64 for _, v in slots):
        return None
    shapes = _shapes(plan, {slot: v.shape for slot, v in slots})
    steps = plan.pruned(wrt)
    if shapes is None or not all(
            kind in (1, 2, 3, 4) and type(gate.gate if kind in (3, 4) and isinstance(
                gate, _plan()._Wants) else gate) in FORWARD for kind, gate, *_ in steps):
        return None
    src = _Source()
    ns = _namespace(plan, src.marks)
    ns["GUARDED"] = guarded
    out = plan.out
    back = "return GUARDED(vals, feed, run)"
    src.add("def step(vals, feed, run):", indent=0)
    src.add(f"if feed.__class__ is not dict or len(feed) != {len(plan.inputs)}: {back}")
    for slot, name in plan.inputs:
        ns[f"k{slot}"] = name
        src.add(f"v{slot} = feed.get(k{slot})")
    ns["leaves"] = plan.values                 # the record's values of the leaves
    for slot, i in zip(plan.leaf_slots, plan.leaf_idx, strict=True):
        src.add(f"v{slot} = leaves[{i}]")
    for slot, _ in slots:
        ns[f"s{slot}"] = shapes[slot]
        v = f"v{slot}"
        src.add(f"if {v}.__class__ is not nd or {v}.dtype is not F64 or {v}.shape != s{slot}: "
                f"{back}")
    src.add("if run.fed: run.fed = {}")
    for slot, _ in slots:
        src.add(f"vals[{slot}] = v{slot}")
    _open(src)
    _forward_steps(plan, src, ns, 2, shapes)
    src.add("run.set_values(PLAN, vals)", indent=2)
    grads = _backward_steps(plan, steps, False, src, ns, 2, "1.0", shapes)
    _close(src, ", run")
    if grads is None:
        return None
    src.add(f"return v{out}, {grads}")
    return src.build("step", ns, "specialised training step")


def _plan():
    from . import plan  # plan.py imports this module
    return plan
