"""Pictures of a circuit: matplotlib drawings, Graphviz DOT text, the SVG Jupyter shows.

A drawing reads left to right: leaves (inputs in blue boxes, parameters in orange,
constants dashed) just before their first user, gates as ovals with their symbol, the
output with a thick rim. Above each node its value (green), below it its gradient
(red) or, given ``tangents``, its forward-mode tangent (blue); arrays of up to 9
numbers are written out, larger ones as shape and range. Arrows into a gate whose
inputs do not commute (``a-b``, ``a/b``, ``a**b``, ``a@b``, the losses) are marked
with their operand. Where the arrows go is computed in ``layout.py``; the backward
pass step by step and the animations live in ``animate.py``.

matplotlib and igraph are imported inside the functions that need them (extra
``draw``); without them a drawing is an ImportError that says what to install.
"""

from __future__ import annotations

import functools
import io

import numpy as np

from . import layout as L
from .animate import animate_backward, animate_tangents, replay_backward, replay_tangents, stepper
from .errors import GraphError

__all__ = ["draw", "figure", "to_dot", "repr_svg", "animate_backward", "animate_tangents",
           "stepper", "fmt"]

MAX_NODES = 60          # beyond this a drawing shows the nodes nearest the output:
OVERVIEW_DEPTH = 12     # at most this many steps of inputs away from it
COMPACT_AFTER = 150     # drawing more nodes than this leaves out the numbers
FULL_LIMIT = 2000       # no drawing has more nodes than this
MAX_INCHES = 60.0       # a figure larger than this is scaled down
MAX_WIDTH = 24.0        # a wider picture is drawn as an overview (unless max_nodes=None)
GREEN, RED, BLUE, GREY = "#1a8a1a", "#c62828", "#1565c0", "#666666"
ORANGE = "#ef6c00"      # the gate of the current step
FONT, SMALL, SYMBOL, MARK = 9.0, 7.5, 11.0, 8.0
MARK_LIFT = 0.07        # inches between a gate with operand marks and its labels
KINDS = {   # facecolor, edgecolor, linestyle
    "input": ("#dbe9fb", "#1f3b63", "-"),
    "parameter": ("#ffe0b2", "#8a4b00", "-"),
    "constant": ("#ffffff", "#777777", "--"),
    "gate": ("#ffffff", "#222222", "-"),
}
# gates whose inputs do not commute: the operand marks on their arrows, and what the
# node shows in place of its symbol
ROLES = {
    "sub": (("a", "b"), "a−b"),
    "div": (("a", "b"), "a/b"),
    "power": (("a", "b"), "a**b"),
    "matmul": (("a", "b"), "a@b"),
    "mse": (("pred", "target"), "MSE"),
    "softmax_cross_entropy": (("logits", "labels"), "CE"),
    # the gates of backward passes (ge.grad): which input is the upstream gradient u,
    # which the other factor, which gives only a shape
    "matmul_grad_a": (("u", "b", "shape"), "u@bᵀ"),
    "matmul_grad_b": (("a", "u", "shape"), "aᵀ@u"),
    "sum_to": (("u", "shape"), None),
    "broadcast_to": (("a", "shape"), None),
    "spread": (("u", "shape"), None),
    "max_mask": (("x", "y"), None),
    "one_hot": (("labels", "logits"), None),
}
BOX_TEXT = {"transpose": "(·)ᵀ"}    # a lone superscript T was too small to read
NO_GRADIENT = {("softmax_cross_entropy", 1), ("one_hot", 0)}   # integer labels: no gradient
HINT = "pip install 'graphengine[draw]' (matplotlib and igraph)"


class MissingLibrary(GraphError, ImportError):
    """matplotlib or igraph is not installed: an ImportError, and a GraphError so that
    the command line prints it as one line."""


def _need_libraries(what="drawing"):
    try:
        import igraph  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingLibrary(f"{what} needs {exc.name}: {HINT}") from None


# ---------------------------------------------------------------- numbers as text

def _num(x, digits=4) -> str:
    x = float(x)
    s = f"{x:.{digits}g}"
    return "0" if s == "-0" else s


def fmt(v, digits: int = 3) -> str:
    """A value as the drawings write it: numbers for up to 9 elements, else shape and range.

    >>> fmt(-0.0), fmt(2.0 / 3), fmt([[0.5, 0.25], [1, 2]])
    ('0', '0.6667', '[[0.5, 0.25],\\n [1, 2]]')
    >>> fmt(np.arange(12.0).reshape(3, 4)), fmt(np.full(10, np.nan))
    ('3×4 in [0, 11]', '10, all nan')
    """
    if v is None:
        return ""
    a = np.asarray(v)
    if a.ndim == 0:
        return _num(a)
    shape = "×".join(str(n) for n in a.shape)
    if a.size == 0:
        return f"{shape} (empty)"
    if a.size <= 9:
        if a.ndim == 1:
            return "[" + ", ".join(_num(x, digits) for x in a) + "]"
        if a.ndim == 2:
            rows = ["[" + ", ".join(_num(x, digits) for x in r) + "]" for r in a]
            return "[" + ",\n ".join(rows) + "]"
        return f"{shape} [" + ", ".join(_num(x, digits) for x in a.ravel()) + "]"
    seen = a[~np.isnan(a)]
    if seen.size == 0:
        return f"{shape}, all nan"
    nans = f", {a.size - seen.size} nan" if seen.size < a.size else ""
    return f"{shape} in [{_num(seen.min(), digits)}, {_num(seen.max(), digits)}]{nans}"


def leaf_text(g, name) -> str:
    """What a leaf's box shows: its name, or its number for an unnamed scalar constant."""
    node = g[name]
    if node.kind == "constant" and name.startswith("const_") and np.ndim(node.value) == 0:
        return _num(node.value)
    return name


def expression(g, name, steps=None) -> str:
    """A gate as a short formula of its inputs' names: ``x + y``, ``sigmoid(q)``."""
    node = g[name]
    ins = [leaf_text(g, u.name) if u.kind != "gate" else u.name for u in node.inputs]
    label = node.gate.label
    if len(ins) == 2 and node.gate.op in ("add", "sub", "mul", "div", "power", "matmul"):
        return f"{ins[0]} {label} {ins[1]}"
    if node.gate.op == "pow":
        return f"{ins[0]}{label}"
    return f"{label}({', '.join(ins)})"


# ---------------------------------------------------------------- what to draw

def _output_name(g):
    try:
        return g.output.name
    except GraphError:          # an ambiguous or missing output only loses the highlight
        return None


def _select(g, max_nodes, depth=None):
    """The nodes to draw, in insertion (topological) order: all of them, or the
    max_nodes nearest the output (breadth first over inputs, at most ``depth`` or
    OVERVIEW_DEPTH steps away, so a long chain stays readable) with a note saying so.
    A ``depth`` is given when the whole graph would be too wide (``_laid_out``)."""
    dag = g.dag
    if max_nodes is None or (len(g) <= max_nodes and depth is None):
        if len(g) > FULL_LIMIT:
            raise GraphError(f"drawing all {len(g):,} nodes is beyond the limit of "
                             f"{FULL_LIMIT:,} (the picture could not be read): draw the "
                             "nearest ones with max_nodes=..., or give g.to_dot() to Graphviz")
        return list(dag), None
    out = _output_name(g)
    start = [out] if out is not None else [v for v, s in dag.succ.items() if not s][:max_nodes]
    chosen, frontier = dict.fromkeys(start), start
    limit = OVERVIEW_DEPTH if depth is None else depth
    depth = 0
    while frontier and len(chosen) < max_nodes and depth < limit:
        depth += 1
        nxt = []
        for v in frontier:
            for u in dag.pred[v]:
                if u not in chosen and len(chosen) < max_nodes:
                    chosen[u] = None
                    nxt.append(u)
        frontier = nxt
    nodes = [v for v in dag if v in chosen]
    more = ("g.draw(max_nodes=None) draws them all" if len(g) <= FULL_LIMIT else
            f"g.draw(max_nodes=N) draws the N nearest, up to {FULL_LIMIT:,}")
    note = (f"showing the {len(nodes)} nodes nearest the output (of {len(g):,}); a dashed "
            f"stub is an input from a node not shown; {more}")
    return nodes, note


class Scene:
    """Every text and style of one drawing, and the texts its layout must make room
    for (every frame of a step-by-step drawing shares one layout)."""

    def __init__(self, g, nodes, note):
        self.g, self.nodes = g, nodes
        self.out = _output_name(g)
        shown = set(nodes)
        self.edges, self.cut = [], []
        for v in nodes:
            for u, _, s in g.dag.in_edges(v, data="slot"):
                (self.edges.append((u, v, s)) if u in shown else self.cut.append((v, s)))
        self.edges.sort(key=lambda e: e[2])
        self.box_text, self.above, self.name, self.below = {}, {}, {}, {}
        self.below_color, self.below_sizes = {}, {}
        self.highlight, self.hot_edges, self.bold = None, set(), set()
        self.caption, self.caption_sizes, self.notes = [], [], []
        self.lower_kind = "gradient"

    def slot_letters(self, v, s):
        node = self.g[v]
        roles = ROLES.get(node.gate.op) if node.kind == "gate" else None
        return roles[0][s] if roles and s < len(roles[0]) else ""


def _gradless(g, name) -> bool:
    node = g[name]
    if node.kind == "constant":
        return True
    users = g.dag.out_edges(name, data="slot")
    return bool(users) and all((g[v].gate.op, s) in NO_GRADIENT for _, v, s in users)


def _scene(g, step=None, tangents=None, values=True, max_nodes=MAX_NODES, compact=None,
           depth=None, why=None):
    nodes, note = _select(g, max_nodes, depth)
    if note and why:
        note = note.replace("); a dashed", f"; {why}); a dashed", 1)
    sc = Scene(g, nodes, note)
    if note:
        sc.notes.append(note)
    if compact is None:
        compact = len(nodes) > COMPACT_AFTER
    sc.compact = compact
    for v in nodes:
        node = g[v]
        if node.kind == "gate":
            roles = ROLES.get(node.gate.op)
            sc.box_text[v] = roles[1] if roles and roles[1] else \
                BOX_TEXT.get(node.gate.op, node.gate.label)
            sc.name[v] = v
        else:
            sc.box_text[v] = leaf_text(g, v)
    if compact or not values:
        if compact and len(nodes) > COMPACT_AFTER:
            sc.notes.append(f"{len(nodes)} nodes: values and gradients left out "
                            "(draw fewer with max_nodes=...)")
        sc.name = {}
        return sc
    for v in nodes:
        node = g[v]
        if not (node.kind == "constant" and sc.box_text[v] != v):
            sc.above[v] = fmt(node.value)
    run = g.run
    if tangents is not None:
        sc.lower_kind = "tangent"
        _tangent_scene(sc, g, tangents, step)
    elif step is not None:
        _backward_scene(sc, g, step)
    elif run.grads is not None:
        if run.grads_current:
            for v in nodes:
                if not _gradless(g, v):
                    sc.below[v] = fmt(g[v].grad)
                    sc.below_color[v] = RED
        else:
            sc.notes.append("gradients not drawn: the last backward() was run on other "
                            "values than these (call g.backward() to see them)")
    for v, text in sc.below.items():
        sc.below_sizes.setdefault(v, [text])
    return sc


def _backward_scene(sc, g, step):
    rep = replay_backward(g)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) \
            or not 0 <= step <= rep.count:
        raise GraphError(f"draw(step={step!r}): the backward pass of output {rep.out!r} "
                         f"has steps 0 to {rep.count} (one per gate it runs)")
    grads, complete = rep.state(int(step))
    shown = set(sc.nodes)
    for v, history in rep.history.items():        # every text a frame may show
        if v in shown and not _gradless(g, v):
            sc.below_sizes[v] = [fmt(x) + " + …" for x in history]
    for v, x in grads.items():
        if v in shown and not _gradless(g, v):
            sc.below[v] = fmt(x) + ("" if complete[v] else " + …")
            sc.below_color[v] = RED if complete[v] else "#d9534f"
    sc.caption = rep.caption(int(step))
    if step and rep.steps[step - 1].node not in shown:
        sc.caption[0] += " (not in this picture)"
    sc.caption_sizes = _captions(rep, shown)
    if step:
        rec = rep.steps[step - 1]
        op = g[rec.node].gate.op
        sends = {u for s, u in enumerate(rec.inputs)          # the arrows it sends along
                 if (op, s) not in NO_GRADIENT and g[u].kind != "constant"}
        sc.highlight = rec.node
        sc.hot_edges = {(u, rec.node) for u in sends}
        sc.bold = sends
    else:
        sc.highlight = rep.out
    sc.notes.append("red: a node's gradient; '+ …': a sum still waiting for more "
                    "of its users; orange: the gate of this step")


def _captions(rep, shown):
    # the captions the frames may show (room is made for the largest): those of the
    # gates on screen, so a big graph's overview does not write thousands
    return [rep.caption(0)] + [rep.caption(k) for k in range(1, rep.count + 1)
                               if rep.steps[k - 1].node in shown]


def _tangent_scene(sc, g, tangents, step):
    rep = replay_tangents(g, tangents)
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))
                             or not 0 <= step <= rep.count):
        raise GraphError(f"draw(step={step!r}, tangents=...): forward mode through output "
                         f"{rep.out!r} has steps 0 to {rep.count} (one per gate)")
    k = rep.count if step is None else int(step)
    known = rep.known(k)
    for v in sc.nodes:
        if v in tangents and not _gradless(g, v):
            text = fmt(tangents[v])
            sc.below_sizes[v] = [text]
            if v in known:
                sc.below[v] = text
                sc.below_color[v] = BLUE
    if step is not None:
        sc.caption = rep.caption(k)
        sc.caption_sizes = _captions(rep, set(sc.nodes))
        if k:
            rec = rep.steps[k - 1]
            sc.highlight = rec.node
            sc.hot_edges = {(u, rec.node) for u in rec.inputs}
            sc.bold = {rec.node}
    sc.notes.append(f"blue: each node's tangent, d(node)/d(direction) for the direction "
                    f"{rep.direction}")


# ---------------------------------------------------------------- sizes and layout

@functools.lru_cache(maxsize=4096)
def _measure(text: str, size: float) -> tuple:
    """(width, height) of a text in inches, as matplotlib will draw it."""
    if not text:
        return (0.0, 0.0)
    fig = _measuring_figure()
    t = fig.text(0, 0, text, fontsize=size)
    box = t.get_window_extent(fig.canvas.get_renderer())
    t.remove()
    return (box.width / 72.0, box.height / 72.0)


@functools.lru_cache(maxsize=1)
def _measuring_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(dpi=72)
    FigureCanvasAgg(fig)
    return fig


def _widest(texts, size):
    sizes = [_measure(t, size) for t in texts if t]
    return (max((w for w, _ in sizes), default=0.0), max((h for _, h in sizes), default=0.0))


def _place(sc):
    g, nodes = sc.g, sc.nodes
    boxes = {}
    for v in nodes:
        gate = g[v].kind == "gate"
        tw, th = _measure(sc.box_text[v], SYMBOL if gate else FONT)
        above = [_measure(sc.above.get(v, ""), FONT), _measure(sc.name.get(v, ""), SMALL)]
        aw = max(w for w, _ in above)
        ah = sum(h for _, h in above) + 0.03
        below = _widest(sc.below_sizes.get(v, []), FONT)
        if gate:
            boxes[v] = L.Box(max(0.42, tw + 0.16), 0.42, (aw, ah), below, ellipse=True)
        else:
            boxes[v] = L.Box(max(0.42, tw + 0.16), 0.3, (aw, ah), below)
    kind = {v: g[v].kind for v in nodes}
    preds = {v: [] for v in nodes}
    for u, v, _ in sc.edges:
        preds[v].append(u)
    seen, order = set(), nodes
    for v in nodes:                 # insertion order is topological for builders
        if any(u not in seen for u in preds[v]):
            import networkx as nx
            order = list(nx.topological_sort(g.dag.subgraph(nodes)))
            break
        seen.add(v)
    layer = L.layers(order, preds, lambda v: kind[v] != "gate")
    place, routes = L.sugiyama(nodes, [(u, v, s) for u, v, s in sc.edges], layer)
    lanes = {}
    for _, v, s in sc.edges:
        letter = sc.slot_letters(v, s)
        if letter:             # operand marks sit just left of the node's ports
            b = boxes[v]
            b.marks = max(b.marks, _measure(letter, MARK)[0] + 0.14)
            b.lift = MARK_LIFT
    for v, _ in sc.cut:
        lanes[layer[v]] = max(lanes.get(layer[v], 0.0), L.LANE)
    ordered = {v for v in nodes if kind[v] == "gate" and g[v].gate.op in ROLES}
    return L.arrange(nodes, sc.edges, sc.cut, boxes, layer, place, routes, lanes, ordered)


def _laid_out(g, step=None, tangents=None, values=True, max_nodes=MAX_NODES, compact=None):
    """The scene and its layout, and the overview depth chosen (None: not cut).

    A picture wider than MAX_WIDTH inches (a long chain: 43 nodes made 59 inches) is
    not drawn whole unless ``max_nodes=None``: the overview shows the nodes nearest the
    output, as many steps back (the largest depth, found by bisection) as fit in that
    width, and its note says so."""
    sc = _scene(g, step, tangents, values, max_nodes, compact)
    lay = _place(sc)

    def width(lay):
        return lay.extent[1] - lay.extent[0]

    sc.depth = sc.why = None
    if max_nodes is None or width(lay) <= MAX_WIDTH or len(sc.nodes) <= 3:
        return sc, lay, None
    why = (f"the whole graph would be {width(lay):.0f} inches wide"
           if len(sc.nodes) == len(g) else
           f"cut to fit {MAX_WIDTH:.0f} inches")
    best, lo, hi = None, 1, OVERVIEW_DEPTH      # the largest depth that fits is in (lo, hi]
    while hi > lo:
        depth = (lo + hi + 1) // 2
        trial = _scene(g, step, tangents, values, max_nodes, compact, depth, why)
        trial_lay = _place(trial)
        if width(trial_lay) <= MAX_WIDTH:
            best, lo = (trial, trial_lay, depth), depth
        else:
            hi = depth - 1
    if best is None:            # not even one step back fits: the output and its inputs
        best = (_scene(g, step, tangents, values, max_nodes, compact, 1, why), None, 1)
        best = (best[0], _place(best[0]), 1)
    sc, lay, depth = best
    sc.depth, sc.why = depth, why
    return sc, lay, depth


# ---------------------------------------------------------------- matplotlib

MARGIN = 0.15


def _legend(sc):
    """The legend's entries: the kinds of node drawn, then the colours of the numbers."""
    legend = [k for k in ("input", "parameter", "constant", "gate")
              if any(sc.g[v].kind == k for v in sc.nodes)]
    if sc.above:
        legend.append("value")
    if sc.below_sizes:
        legend.append(sc.lower_kind)
    return legend


def _frame(sc, lay, title):
    """Positions of the title, caption, notes and legend, and the whole extent."""
    x0, x1, y0, y1 = lay.extent
    widths = [x1 - x0]
    top = y1 + MARGIN
    title_at = None
    if title:
        tw, th = _measure(title, 11.0)
        widths.append(tw)
        title_at = top + th * 0.15
        top += th * 1.3
    y = y0 - 0.2
    lines = []
    caps = sc.caption_sizes or ([sc.caption] if sc.caption else [])
    if caps:
        ch = max(_measure("\n".join(c), FONT)[1] for c in caps if c)
        cw = max(_measure("\n".join(c), FONT)[0] for c in caps if c)
        widths.append(cw)
        lines.append(("caption", 0, y, FONT, "#000000"))
        y -= ch + 0.12
    for i, note in enumerate(sc.notes):
        w, h = _measure(note, SMALL)
        widths.append(w)
        lines.append(("note", i, y, SMALL, GREY))
        y -= h + 0.06
    items, lx = [], x0
    for label in _legend(sc):
        w, h = _measure(label, SMALL)
        items.append((label, lx))
        lx += 0.3 + w + 0.2
    widths.append(lx - x0)
    legend_y = y - 0.1
    bottom = legend_y - 0.12 - MARGIN
    width = max(widths) + 2 * MARGIN
    return dict(title_at=title_at, lines=lines, legend=items, legend_y=legend_y,
                xlim=(x0 - MARGIN, x0 - MARGIN + width), ylim=(bottom, top))


def figure(g, step=None, *, tangents=None, values=True, max_nodes=MAX_NODES,
           compact=None, title=None):
    """A matplotlib Figure (not registered with pyplot) holding ``draw``'s picture,
    sized so that the text is at its natural size; takes ``draw``'s options.

    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph.from_expression("x * y")
    >>> g.forward(x=2, y=3); fig = ge.draw.figure(g); fig.savefig(io.BytesIO(), format="png")
    6.0
    """
    _need_libraries()
    from matplotlib.figure import Figure

    sc, lay, _ = _laid_out(g, step, tangents, values, max_nodes, compact)
    frame = _frame(sc, lay, title)
    fig = Figure(figsize=_size(frame))
    _render(sc, lay, frame, fig.add_axes((0, 0, 1, 1)), title)
    return fig


def _size(frame):
    w = frame["xlim"][1] - frame["xlim"][0]
    h = frame["ylim"][1] - frame["ylim"][0]
    s = min(1.0, MAX_INCHES / w, MAX_INCHES / h)
    return (w * s, h * s)


def draw(g, ax=None, step=None, *, tangents=None, values=True, max_nodes=MAX_NODES,
         compact=None, title=None):
    """Draw the circuit with matplotlib: values in green above, gradients in red below.

    Parameters
    ----------
    g : ComputationalGraph
    ax : matplotlib.axes.Axes, optional
        Where to draw (the picture is scaled to fit); default a new figure sized so
        the text is at its natural size.
    step : int, optional
        Draw the backward pass after its first ``step`` gate steps: 0 shows only the
        output's seed, the number of gates the output depends on shows the whole
        backward. The gate of that step is highlighted, and a caption writes out its
        upstream gradient, its local derivatives and the gradients it sends. Needs
        the values of a forward (no backward needed). With ``tangents``: forward mode
        after its first ``step`` gates.
    tangents : dict, optional
        The result of ``g.jvp(...)``: draw each node's tangent (blue) below it
        instead of its gradient.
    values : bool
        Write values and gradients (default True).
    max_nodes : int or None
        Beyond this many nodes, or where the whole picture would be wider than
        ``MAX_WIDTH`` (24) inches, draw the nodes nearest the output (at most
        ``max_nodes``, as many steps back as fit) and say so (None: every node, however
        wide; more than 150 are drawn without numbers, more than 2,000 is a
        GraphError).
    compact : bool, optional
        Leave out the numbers (default: only beyond 150 nodes).
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes

    Notes
    -----
    Gradients of a backward that was run on other values than those on hand (a
    forward since) are not drawn; a note says so. Constants and integer labels
    get no gradient. Arrows never cross a node or a label they do not belong to:
    the layout is igraph's Sugiyama layout, long arrows routed through its dummy
    points (``graphengine/layout.py``).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph.from_expression("(x + y) * z")
    >>> g.forward(x=-2, y=5, z=-4); grads = g.backward()
    -12.0
    >>> ax = g.draw()
    >>> sorted(t.get_text() for t in ax.texts if t.get_color() == "#c62828")
    ['-4', '-4', '-4', '1', '3']
    >>> ax = g.draw(step=1)          # the multiply gate has run
    >>> print(next(t.get_text() for t in ax.texts if t.get_gid() == "caption"))
    step 1 of 2: gate mul_4 = add_3 * z receives the upstream gradient ∂mul_4/∂mul_4 = 1
    local derivatives: ∂mul_4/∂add_3 = -4, ∂mul_4/∂z = 3
    sends (upstream × local): add_3: 1 × -4 = -4, z: 1 × 3 = 3
    """
    _need_libraries()
    sc, lay, _ = _laid_out(g, step, tangents, values, max_nodes, compact)
    frame = _frame(sc, lay, title)
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure(figsize=_size(frame)).add_axes((0, 0, 1, 1))
    _render(sc, lay, frame, ax, title)
    return ax


def _render(sc, lay, frame, ax, title):
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch, Rectangle
    from matplotlib.path import Path

    fig = ax.figure
    (xa, xb), (ya, yb) = frame["xlim"], frame["ylim"]
    bbox = ax.get_position(original=True)
    fw, fh = fig.get_size_inches()
    s = min(bbox.width * fw / (xb - xa), bbox.height * fh / (yb - ya))
    g = sc.g

    def text(x, y, t, size, gid, **kw):
        if size * s < 1.0:        # a text scaled below 1 pt cannot be read (or drawn)
            return None
        kw.setdefault("ha", "center")
        return ax.text(x, y, t, fontsize=size * s, gid=gid, zorder=4, **kw)

    for v in sc.nodes:
        (x, y), b = lay.pos[v], lay.boxes[v]
        node = g[v]
        face, edge, style = KINDS[node.kind]
        width = 1.1
        if v == sc.out:
            face, width = "#fff7e0", 2.2
        if v == sc.highlight:
            face, edge, width = "#ffe0b2", ORANGE, 3.0
        if b.ellipse:
            patch = Ellipse((x, y), b.w, b.h)
        else:
            patch = FancyBboxPatch((x - b.w / 2 + 0.03, y - b.h / 2 + 0.03), b.w - 0.06,
                                   b.h - 0.06, boxstyle="round,pad=0.03")
        patch.set(facecolor=face, edgecolor=edge, linestyle=style, linewidth=width * s,
                  zorder=3, gid=f"node:{v}")
        ax.add_patch(patch)
        text(x, y, sc.box_text[v], SYMBOL if b.ellipse else FONT, f"label:{v}", va="center",
             color="#555555" if node.kind == "constant" else "black")
        top = y + b.h / 2 + L.PAD + b.lift
        if sc.above.get(v):
            text(x, top, sc.above[v], FONT, f"label:{v}", va="bottom", color=GREEN)
            top += _measure(sc.above[v], FONT)[1] + 0.03
        if sc.name.get(v):
            text(x, top, sc.name[v], SMALL, f"label:{v}", va="bottom", color=GREY)
        if sc.below.get(v):
            text(x, y - b.h / 2 - L.PAD - b.lift, sc.below[v], FONT, f"label:{v}", va="top",
                 color=sc.below_color.get(v, RED),
                 fontweight="bold" if v in sc.bold else "normal")
    for u, v, slot, verts, codes in lay.edges:
        hot = (u, v) in sc.hot_edges
        arrow = FancyArrowPatch(path=Path(verts, codes), arrowstyle="-|>",
                                mutation_scale=(9 if sc.compact else 12) * s,
                                color=ORANGE if hot else ("#999999" if u is None else "#333333"),
                                linewidth=(2.2 if hot else 1.0) * s,
                                linestyle="--" if u is None else "-", zorder=2,
                                gid=f"edge:{u or ''}:{v}:{slot}")
        ax.add_patch(arrow)
        letter = sc.slot_letters(v, slot)
        if letter:
            px, py = lay.ports[(v, slot)]
            upper = py >= lay.pos[v][1]
            text(px - 0.11, py + (0.015 if upper else -0.015), letter, MARK, f"port:{v}",
                 va="bottom" if upper else "top", ha="right", color="#5d4037",
                 style="italic")
    if frame["title_at"] is not None:
        text((xa + xb) / 2, frame["title_at"], title, 11.0, "title", va="bottom")
    x0 = lay.extent[0]
    for gid, i, y, size, color in frame["lines"]:     # this scene's texts, the frame's places
        t = "\n".join(sc.caption) if gid == "caption" else sc.notes[i]
        text(x0, y, t, size, gid, va="top", ha="left", color=color)
    ly = frame["legend_y"]
    for label, lx in frame["legend"]:
        if label in KINDS:
            face, edge, style = KINDS[label]
            shape = Ellipse((lx + 0.12, ly), 0.24, 0.16) if label == "gate" else \
                Rectangle((lx, ly - 0.07), 0.24, 0.14)
            shape.set(facecolor=face, edgecolor=edge, linestyle=style, linewidth=s,
                      gid="legend")
            ax.add_patch(shape)
        else:
            color = {"value": GREEN, "gradient": RED, "tangent": BLUE}[label]
            ax.add_patch(Rectangle((lx, ly - 0.07), 0.24, 0.14, facecolor=color,
                                   edgecolor="none", gid="legend"))
        text(lx + 0.3, ly, label, SMALL, "legend", va="center", ha="left", color=GREY)
    ax.set_xlim(xa, xb)
    ax.set_ylim(ya, yb)
    ax.set_aspect("equal")
    ax.axis("off")


def _layout(g):
    # for callers that make a figure before drawing into its default subplot (the
    # CLI): the picture's natural width and height in inches
    sc, lay, _ = _laid_out(g)
    w, h = _size(_frame(sc, lay, None))
    return None, w, h


def _figsize(width, height, compact=False):
    return (width / 0.775, height / 0.77)      # a default subplot's share of its figure


# ---------------------------------------------------------------- Jupyter

def repr_svg(g):
    """The drawing as SVG text, for Jupyter: at most ``MAX_NODES`` nodes (the ones
    nearest the output), so it stays fast at any size; None when matplotlib or igraph
    is missing or the graph is empty (Jupyter then shows the text repr)."""
    try:
        _need_libraries()
    except ImportError:
        return None
    if len(g) == 0:
        return None
    import matplotlib

    fig = figure(g)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):   # text as text: small files
        fig.savefig(buf, format="svg")
    return buf.getvalue()


# ---------------------------------------------------------------- Graphviz

def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _html(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\n", "<br/>"))


def to_dot(g) -> str:
    """Graphviz DOT text of the circuit: each node's value and gradient inside its own
    label, operand marks on the arrows of gates whose inputs do not commute.

    Parameters
    ----------
    g : ComputationalGraph

    Returns
    -------
    str
        One statement per node and one ``->`` per argument (``x * x`` has two).

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph.from_expression("x * x")
    >>> g.forward(x=3.0); grads = g.backward()
    9.0
    >>> dot = g.to_dot()
    >>> print("\\n".join(line for line in dot.splitlines() if "->" in line))
      "x" -> "mul_1";
      "x" -> "mul_1";
    >>> x_line = next(line for line in dot.splitlines() if line.startswith('  "x" ['))
    >>> '<font color="#1a8a1a">3</font>' in x_line, '<font color="#c62828">6</font>' in x_line
    (True, True)
    """
    out = _output_name(g)
    run = g.run
    grads = run.grads is not None and run.grads_current
    lines = ["digraph graphengine {", '  rankdir=LR; ordering=in; fontname="Helvetica";',
             '  node [fontname="Helvetica", shape=plain];',
             '  edge [fontname="Helvetica", labelfontsize=10, labelfontcolor="#5d4037", '
             "arrowsize=0.7];"]
    for v in g.dag:
        node = g[v]
        face, _, style = KINDS[node.kind]
        if node.kind == "gate":
            roles = ROLES.get(node.gate.op)
            head = (f"<b>{_html(roles[1] if roles and roles[1] else node.gate.label)}</b>  "
                    f'<font color="{GREY}">{_html(v)}</font>')
        else:
            head = f"<b>{_html(leaf_text(g, v))}</b>"
        rows = [head]
        value = "" if node.kind == "constant" and leaf_text(g, v) != v else fmt(node.value)
        if value:
            rows.append(f'<font color="{GREEN}">{_html(value)}</font>')
        if grads and not _gradless(g, v):
            rows.append(f'<font color="{RED}">{_html(fmt(node.grad))}</font>')
        style = "rounded,dashed" if style == "--" else "rounded"
        body = "".join(f"<tr><td>{r}</td></tr>" for r in rows)
        lines.append(f'  {_quote(v)} [label=<<table border="{3 if v == out else 1}" '
                     f'cellborder="0" cellspacing="0" cellpadding="3" style="{style}" '
                     f'bgcolor="{face}">{body}</table>>];')
    for u, v, s in sorted(g.dag.edges(data="slot"), key=lambda e: e[2]):
        node = g[v]
        roles = ROLES.get(node.gate.op)
        mark = f" [headlabel={_quote(roles[0][s])}]" if roles else ""
        lines.append(f"  {_quote(u)} -> {_quote(v)}{mark};")
    if not grads and run.grads is not None:
        lines.append('  label="gradients not shown: the last backward() was run on '
                     'other values";')
    lines.append("}")
    return "\n".join(lines)
