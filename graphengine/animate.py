"""Backprop step by step: the backward pass (and forward mode) replayed one gate at a
time, as frames of a drawing, an animation (GIF or HTML) or a Jupyter slider.

``replay_backward(g)`` reruns the backward pass of the last forward gate by gate and
keeps, for each step, what the gate received, its local derivatives and what it sent;
``draw(step=k)`` draws the state after k steps. Nothing here runs during training:
it is the plan's backward, unrolled for people to watch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GraphError
from .gates import fit, zeros_like


@dataclass
class Record:
    node: str           # the gate's node
    inputs: list        # its inputs' names, in slot order
    upstream: object    # backward: d(output)/d(node); forward mode: None
    local: list | None  # d(node)/d(input) per input, when it is a number or elementwise
    sent: list          # backward: the gradient sent to each input; forward: input tangents
    result: object = None   # forward mode: the node's tangent


def _refresh(plan, vals):
    # the gates keep what their derivatives need from their last forward, which may
    # have run on other values (gradcheck, jvp with a feed): run them once more on the
    # values on hand (the same values come out)
    for gate, ins, _ in plan.gates:
        gate.forward(*[vals[i] for i in ins])


def _local(gate, xs):
    if all(x.__class__ is float for x in xs):
        try:
            return [0.0 if p is None else float(p) for p in gate.backward(1.0)]
        except (TypeError, ValueError):
            return None
    try:
        if hasattr(gate, "partials"):
            return list(gate.partials())
        if hasattr(gate, "partial"):
            return [gate.partial()]
    except NotImplementedError:
        pass
    return {"add": [1.0, 1.0], "sub": [1.0, -1.0], "neg": [-1.0]}.get(gate.op)


def _vjp(gate, upstream, xs):
    parts = list(gate.backward(upstream))
    out = []
    for p, x in zip(parts, xs, strict=True):
        if p is None:
            p = zeros_like(x)
        elif np.shape(p) != np.shape(x):
            p = fit(p, x)
        out.append(p)
    return out


def _values(g, what):
    plan = g.plan()
    vals = g.run.values_for(plan)
    if vals is None:
        raise GraphError(f"{what} needs the values of a forward(): call g.forward(...) first "
                         f"(output {plan.names[plan.out]!r})")
    return plan, vals


def _wrap(items, first, width=100):
    lines, line = [], first
    for item in items:
        if len(line) + len(item) + 2 > width and line.strip():
            lines.append(line.rstrip(", "))
            line = "    "
        line += item + ", "
    lines.append(line.rstrip(", "))
    return lines


def _line(v):
    from .draw import fmt
    return fmt(v).replace(",\n ", ", ")


class BackwardReplay:
    """The backward pass of the last forward, one gate per step (see ``replay_backward``)."""

    def __init__(self, g):
        plan, vals = _values(g, "the backward pass step by step")
        _refresh(plan, vals)
        names = plan.names
        self.g, self.out = g, names[plan.out]
        out = vals[plan.out]
        self.seed = 1.0 if out.__class__ is float else np.ones(np.shape(out))
        self.uses = dict.fromkeys(names, 0)
        for _, ins, _ in plan.gates:
            for i in ins:
                self.uses[names[i]] += 1
        grads = {self.out: self.seed}
        self.history = {self.out: [self.seed]}
        self.steps = []
        for gate, ins, o in reversed(plan.gates):
            xs = [vals[i] for i in ins]
            up = grads[names[o]]
            rec = Record(names[o], [names[i] for i in ins], up, _local(gate, xs),
                         _vjp(gate, up, xs))
            self.steps.append(rec)
            for name, p in zip(rec.inputs, rec.sent, strict=True):
                grads[name] = p if name not in grads else grads[name] + p
                self.history.setdefault(name, []).append(grads[name])

    @property
    def count(self) -> int:
        return len(self.steps)

    def state(self, k: int):
        """The gradients after k steps, and whether each is complete (all users done)."""
        grads, done = {self.out: self.seed}, {}
        for rec in self.steps[:k]:
            for name, p in zip(rec.inputs, rec.sent, strict=True):
                grads[name] = p if name not in grads else grads[name] + p
                done[name] = done.get(name, 0) + 1
        return grads, {v: done.get(v, 0) == self.uses[v] for v in grads}

    def caption(self, k: int) -> list:
        from .draw import NO_GRADIENT, expression

        g, out = self.g, self.out
        if k == 0:
            first = f"; step 1 runs gate {self.steps[0].node}" if self.steps else ""
            return [f"step 0 of {self.count}: the output {out} gets the seed "
                    f"∂{out}/∂{out} = {_line(self.seed)}{first}"]
        rec = self.steps[k - 1]
        node = rec.node
        lines = [f"step {k} of {self.count}: gate {node} = {expression(g, node)} receives "
                 f"the upstream gradient ∂{out}/∂{node} = {_line(rec.upstream)}"]
        op = g[node].gate.op
        slots = [s for s, name in enumerate(rec.inputs)      # constants and labels get none
                 if (op, s) not in NO_GRADIENT and g[name].kind != "constant"]
        if not slots:
            return lines + ["its inputs are constants: it sends no gradient"]
        if rec.local is None:
            lines.append("local derivatives: a Jacobian, applied as a vector-Jacobian "
                         "product (not written out)")
        else:
            lines += _wrap([f"∂{node}/∂{rec.inputs[s]} = {_line(rec.local[s])}" for s in slots],
                           "local derivatives: ")
        scalar = rec.upstream.__class__ is float and rec.local is not None
        items = [f"{rec.inputs[s]}: {_line(rec.upstream)} × {_line(rec.local[s])} = "
                 f"{_line(rec.sent[s])}" if scalar else f"{rec.inputs[s]}: {_line(rec.sent[s])}"
                 for s in slots]
        lines += _wrap(items, "sends (upstream × local): " if scalar else "sends: ")
        return lines


class TangentReplay:
    """Forward mode, one gate per step, from a ``g.jvp(...)`` result."""

    def __init__(self, g, tangents):
        if not isinstance(tangents, dict):
            raise GraphError("tangents must be the dict that g.jvp(...) returns, got "
                             f"{type(tangents).__name__}")
        plan = g.plan()
        names = plan.names
        missing = [names[o] for _, _, o in plan.gates if names[o] not in tangents]
        if missing:
            raise GraphError(f"tangents: no tangent for gate {missing[0]!r}; pass the dict "
                             "that g.jvp(...) returns (it has every node)")
        vals = g.run.values_for(plan)
        if vals is not None:
            _refresh(plan, vals)
        self.g, self.out, self.tangents = g, names[plan.out], tangents
        leaves = [v for v in names if g[v].kind != "gate"]
        moved = [v for v in leaves if v in tangents and np.any(np.asarray(tangents[v]) != 0)]
        self.direction = ", ".join(f"d{v} = {_line(tangents[v])}" for v in moved) or "0"
        self.steps = [Record(names[o], [names[i] for i in ins], None,
                             _local(gate, [vals[i] for i in ins]) if vals is not None else None,
                             [tangents.get(names[i]) for i in ins], tangents[names[o]])
                      for gate, ins, o in plan.gates]

    @property
    def count(self) -> int:
        return len(self.steps)

    def known(self, k: int) -> set:
        if k == self.count:
            return set(self.tangents)
        return {v for v in self.tangents if self.g[v].kind != "gate"} | \
            {rec.node for rec in self.steps[:k]}

    def caption(self, k: int) -> list:
        from .draw import expression

        if k == 0:
            return [f"step 0 of {self.count}: forward mode starts at the leaves with the "
                    f"direction {self.direction}"]
        rec = self.steps[k - 1]
        node = rec.node
        lines = [f"step {k} of {self.count}: gate {node} = {expression(self.g, node)}"]
        moving = [s for s, v in enumerate(rec.inputs)      # a constant's tangent is 0
                  if self.g[v].kind != "constant"]
        if not moving:
            return lines + [f"its inputs are constants: d{node} = 0"]
        ins = [rec.inputs[s] for s in moving]
        sent = [rec.sent[s] for s in moving]
        if rec.local is not None and all(t.__class__ is float for t in sent) \
                and all(np.ndim(d) == 0 for d in rec.local):
            local = [rec.local[s] for s in moving]
            terms = " + ".join(f"{_line(d)} × d{v}" for d, v in zip(local, ins, strict=True))
            nums = " + ".join(f"{_line(d)} × {_line(t)}" for d, t in zip(local, sent, strict=True))
            lines.append(f"d{node} = {terms}")
            lines.append(f"     = {nums} = {_line(rec.result)}")
        else:
            lines += _wrap([f"d{v} = {_line(t)}" for v, t in zip(ins, sent, strict=True)],
                           "tangents in: ")
            lines.append(f"d{node} = {_line(rec.result)}")
        return lines


def replay_backward(g) -> BackwardReplay:
    """The backward pass of the last forward, replayed gate by gate.

    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph.from_expression("(x + y) * z")
    >>> g.forward(x=-2, y=5, z=-4)
    -12.0
    >>> r = replay_backward(g); r.count
    2
    >>> print("\\n".join(r.caption(2)))
    step 2 of 2: gate add_3 = x + y receives the upstream gradient ∂mul_4/∂add_3 = -4
    local derivatives: ∂add_3/∂x = 1, ∂add_3/∂y = 1
    sends (upstream × local): x: -4 × 1 = -4, y: -4 × 1 = -4
    """
    return BackwardReplay(g)


def replay_tangents(g, tangents) -> TangentReplay:
    """Forward mode replayed gate by gate from ``tangents = g.jvp(...)``."""
    return TangentReplay(g, tangents)


# ---------------------------------------------------------------- animations

def _frames(g, tangents, title):
    from .draw import _frame, _laid_out, _need_libraries, _render, _scene, _size

    _need_libraries("an animation")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = (replay_tangents(g, tangents) if tangents is not None else replay_backward(g)).count
    # one layout (and one choice of nodes): every frame made room for every text
    sc, lay, depth = _laid_out(g, step=0, tangents=tangents)
    frame = _frame(sc, lay, title)
    fig = Figure(figsize=_size(frame))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))

    def show(k):
        ax.clear()
        _render(_scene(g, step=k, tangents=tangents, depth=depth, why=sc.why), lay, frame,
                ax, title)
        return []

    return fig, show, count


class Animation:
    """The frames of ``draw(step=k)`` for every k, as matplotlib's FuncAnimation:
    ``save(path)`` writes a GIF or an HTML page, ``to_jshtml()`` gives the HTML, and in
    Jupyter the object shows itself as a player."""

    def __init__(self, g, tangents, interval, title):
        from .draw import _need_libraries

        _need_libraries("an animation")
        self.fig, self._show, self.count = _frames(g, tangents, title)
        self.interval = interval

    @property
    def anim(self):
        """The matplotlib ``FuncAnimation`` (made on first use)."""
        from matplotlib.animation import FuncAnimation

        if not hasattr(self, "_anim"):
            self._anim = FuncAnimation(self.fig, self._show, frames=range(self.count + 1),
                                       interval=self.interval, blit=False)
        return self._anim

    def frame(self, k: int):
        """The figure showing step k."""
        self._show(k)
        return self.fig

    def save(self, path) -> None:
        """Write a ``.gif`` (Pillow; loops) or a ``.html`` page with play controls."""
        path = _check_path(path)
        from matplotlib.animation import PillowWriter

        if path.lower().endswith(".gif"):
            self.anim.save(path, writer=PillowWriter(fps=1000.0 / self.interval), dpi=100)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.to_jshtml())

    def to_jshtml(self) -> str:
        return self.anim.to_jshtml(default_mode="once")

    def _repr_html_(self):
        return self.to_jshtml()


def _check_path(path):
    path = str(path)
    if not path.lower().endswith((".gif", ".html")):
        raise GraphError(f"animation {path}: expected a file name ending in .gif or .html")
    return path


def _animate(g, path, tangents, interval, title):
    if path is not None:
        _check_path(path)
    anim = Animation(g, tangents, interval, title)
    if path is not None:
        anim.save(path)
    return anim


def animate_backward(g, path=None, *, interval: int = 1500, title: str | None = None):
    """The backward pass as an animation, one frame per gate step (``draw(step=k)``).

    Parameters
    ----------
    g : ComputationalGraph
        After a forward (no backward needed).
    path : str or Path, optional
        Write a ``.gif`` (Pillow) or a ``.html`` page with play controls.
    interval : int
        Milliseconds per frame.
    title : str, optional

    Returns
    -------
    Animation
        ``.save(path)``, ``.to_jshtml()``, ``.frame(k)``, ``.anim`` (matplotlib's
        FuncAnimation); as a Jupyter cell's value it shows as a player.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph.from_expression("(x + y) * z")
    >>> g.forward(x=-2, y=5, z=-4)
    -12.0
    >>> anim = ge.draw.animate_backward(g)          # or animate_backward(g, "backprop.gif")
    >>> "<script" in anim.to_jshtml()
    True
    """
    return _animate(g, path, None, interval, title)


def animate_tangents(g, tangents, path=None, *, interval: int = 1500, title=None):
    """Forward mode as an animation: ``tangents = g.jvp(...)``, one frame per gate;
    as ``animate_backward`` otherwise."""
    return _animate(g, path, tangents, interval, title)


def stepper(g, tangents=None, *, interval: int = 1500):
    """A Jupyter widget that steps through the backward pass (or forward mode, given
    ``tangents = g.jvp(...)``): a play button and a slider over ``draw(step=k)``.
    Needs ipywidgets (``pip install 'graphengine[widgets]'``)."""
    try:
        import ipywidgets as W
    except ImportError:
        raise ImportError("the stepper needs ipywidgets: pip install "
                          "'graphengine[widgets]'") from None
    import io

    fig, show, count = _frames(g, tangents, None)
    cache = {}

    def png(k):
        if k not in cache:
            show(k)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            cache[k] = buf.getvalue()
        return cache[k]

    play = W.Play(value=0, min=0, max=count, step=1, interval=interval)
    slider = W.IntSlider(value=0, min=0, max=count, description="step")
    W.jslink((play, "value"), (slider, "value"))
    image = W.Image(value=png(0), format="png")
    slider.observe(lambda change: setattr(image, "value", png(change["new"])), names="value")
    return W.VBox([W.HBox([play, slider]), image])
