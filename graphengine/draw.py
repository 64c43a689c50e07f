"""Pictures of a circuit: matplotlib drawings, Graphviz DOT text, and the SVG Jupyter shows.

Layout: left to right by topological generation (leaves on the left, the output on the
right), ties in insertion order. Leaves are boxes with their names, gates circles with
their symbols; each node's value is written in green above it and its gradient in red
below, as in the texts' circuit figure. Every argument is its own arrow, so ``x * x``
shows two. matplotlib is imported inside the functions that need it (extra ``draw``).
"""

from __future__ import annotations

import io

import networkx as nx
import numpy as np

COMPACT_AFTER = 50          # nodes; beyond this the drawing leaves out the numbers
XS, YS = 1.7, 1.3           # column and row spacing, in node diameters of about 0.5
GREEN, RED, GREY = "#1a8a1a", "#c62828", "#666666"


def _fmt(v) -> str:
    if v is None:
        return ""
    if np.ndim(v) == 0:
        return f"{float(v):.4g}"
    if np.size(v) <= 3:
        return "[" + ", ".join(f"{x:.3g}" for x in np.ravel(v)) + "]"
    return "shape " + "×".join(str(n) for n in np.shape(v))


def _leaf_text(node) -> str:
    if node.kind == "constant" and node.name.startswith("const_") and np.ndim(node.value) == 0:
        return _fmt(node.value)          # an unnamed number reads better as itself
    return node.name


def _layout(g) -> tuple[dict, int, int]:
    dag = g.dag
    rank = {v: k for k, v in enumerate(dag)}
    kind = {v: a["kind"] for v, a in dag.nodes(data=True)}
    # column = topological generation of the gates, inputs in column 0; a parameter or
    # constant sits just left of its first user rather than far away on the left,
    # where its arrow would cross the whole picture
    col = {}
    for gen in nx.topological_generations(dag):
        for v in sorted(gen, key=rank.__getitem__):
            if kind[v] == "gate":
                col[v] = 1 + max((col[u] for u in dag.pred[v] if u in col), default=0)
            elif kind[v] == "input":
                col[v] = 0
    for v in dag:
        if v not in col:
            col[v] = max(min((col[w] for w in dag.succ[v]), default=1) - 1, 0)
    width = 1 + max(col.values(), default=-1)
    columns = [[] for _ in range(width)]
    for v in dag:
        columns[col[v]].append(v)
    pos, row = {}, {}
    for nodes in columns:        # order each column by the mean row of its inputs
        def key(v):
            near = [row[u] for u in dag.pred[v] if u in row]
            return (sum(near) / len(near) if near else float("inf"), rank[v])
        nodes.sort(key=key)
        top = (len(nodes) - 1) / 2
        for r, v in enumerate(nodes):
            row[v] = r - top
            pos[v] = (XS * col[v], YS * (top - r))
    return pos, width, max((len(c) for c in columns), default=0)


def _figsize(width, height, compact):
    scale = 0.45 if compact else 1.0
    return (min(1.5 + 1.25 * XS * width * scale, 60),
            min(1.2 + 1.25 * YS * max(height, 1) * scale, 40))


def _output_name(g):
    try:
        return g.output.name
    except Exception:  # an ambiguous or missing output only loses the highlight
        return None


def draw(g, ax=None, compact: bool | None = None, values: bool = True, title: str | None = None):
    """Draw the circuit with matplotlib: values in green above, gradients in red below.

    Parameters
    ----------
    g : ComputationalGraph
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure sized to the graph.
    compact : bool, optional
        Small nodes and no numbers; default True beyond ``COMPACT_AFTER`` nodes.
    values : bool
        Write each node's value and gradient (from the last forward and backward).
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes

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
    """
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    pos, width, height = _layout(g)
    if compact is None:
        compact = len(g) > COMPACT_AFTER
    if ax is None:
        import matplotlib.pyplot as plt
        _, ax = plt.subplots(figsize=_figsize(width, height, compact))
    out = _output_name(g)
    radius = 0.2 if compact else 0.24
    patches = {}
    for v, (x, y) in pos.items():
        node = g[v]
        if node.kind == "gate":
            patch = Circle((x, y), radius, facecolor="#fff7e0" if v == out else "white",
                           edgecolor="black", linewidth=2.0 if v == out else 1.2, zorder=2)
            text = node.gate.label
        else:
            patch = FancyBboxPatch((x - 0.3, y - 0.15), 0.6, 0.3,
                                   boxstyle="round,pad=0.02", facecolor="#e8f0fe",
                                   edgecolor="black", linewidth=1.0, zorder=2)
            text = _leaf_text(node)
        ax.add_patch(patch)
        patches[v] = patch
        size = 7 if compact else (11 if len(text) <= 3 else 8)
        ax.text(x, y, text if len(text) <= 10 else text[:9] + "…", ha="center",
                va="center", fontsize=size, zorder=3)
        if compact:
            continue
        if node.kind == "gate":
            ax.text(x + radius * 0.8, y + radius * 0.9, v, ha="left", va="bottom",
                    fontsize=7, color=GREY, zorder=3)
        if values:
            ax.text(x, y + 0.3, _fmt(node.value), ha="center", va="bottom", fontsize=9,
                    color=GREEN, zorder=3)
            ax.text(x, y - 0.3, _fmt(node.grad), ha="center", va="top", fontsize=9,
                    color=RED, zorder=3)
    seen = {}
    for u, v in g.dag.edges():
        count = g.dag.number_of_edges(u, v)
        i = seen[(u, v)] = seen.get((u, v), -1) + 1
        rad = 0.35 * (i - (count - 1) / 2) if count > 1 else \
            (-0.25 if _blocked(pos[u], pos[v], pos.values()) else 0.0)
        ax.add_patch(FancyArrowPatch(pos[u], pos[v], patchA=patches[u], patchB=patches[v],
                                     arrowstyle="-|>", mutation_scale=10 if compact else 14,
                                     connectionstyle=f"arc3,rad={rad}", color="#333333",
                                     linewidth=0.8 if compact else 1.1, zorder=1))
    ax.set_xlim(-0.8, XS * max(width - 1, 0) + 0.8)
    ax.set_ylim(-YS * (height - 1) / 2 - 0.7, YS * (height - 1) / 2 + 0.7)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)
    elif not compact and values:
        ax.set_title("value (green) above, gradient (red) below", fontsize=9, color=GREY)
    return ax


def _blocked(a, b, points) -> bool:
    # does the straight arrow a -> b pass through another node? then it is bent
    (ax_, ay), (bx, by) = a, b
    dx, dy = bx - ax_, by - ay
    length2 = dx * dx + dy * dy
    for px, py in points:
        t = ((px - ax_) * dx + (py - ay) * dy) / length2 if length2 else 0.0
        if 0.05 < t < 0.95:
            cx, cy = ax_ + t * dx - px, ay + t * dy - py
            if cx * cx + cy * cy < 0.45 ** 2:
                return True
    return False


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(g) -> str:
    """Graphviz DOT text of the circuit, with the drawing's labels and colours.

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
    >>> print(g.to_dot())
    digraph graphengine {
      rankdir=LR;
      node [fontname="Helvetica"];
      "x" [shape=box, style=rounded, label="x"];
      "mul_1" [shape=circle, label="*", xlabel="mul_1", penwidth=2];
      "x" -> "mul_1";
      "x" -> "mul_1";
    }
    """
    out = _output_name(g)
    lines = ["digraph graphengine {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for v in g.dag:
        node = g[v]
        value, grad = _fmt(node.value), _fmt(node.grad)
        if node.kind == "gate":
            attrs = f"shape=circle, label={_quote(node.gate.label)}, xlabel={_quote(v)}"
            if v == out:
                attrs += ", penwidth=2"
        else:
            attrs = f"shape=box, style=rounded, label={_quote(_leaf_text(node))}"
        if value or grad:
            html = (f'<font color="{GREEN}">{_html(value)}</font><br/>'
                    f'<font color="{RED}">{_html(grad)}</font>')
            attrs = attrs.replace(f"xlabel={_quote(v)}", f"xlabel=<{_html(v)}<br/>{html}>") \
                if node.kind == "gate" else attrs + f", xlabel=<{html}>"
        lines.append(f"  {_quote(v)} [{attrs}];")
    for u, v in g.dag.edges():
        lines.append(f"  {_quote(u)} -> {_quote(v)};")
    lines.append("}")
    return "\n".join(lines)


def _html(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", "<br/>"))


def repr_svg(g):
    """The drawing as SVG text, for Jupyter; None when matplotlib is missing or the
    graph is empty (Jupyter then shows the text repr)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    if len(g) == 0:
        return None
    _, width, height = _layout(g)
    compact = len(g) > COMPACT_AFTER
    fig = Figure(figsize=_figsize(width, height, compact))
    draw(g, ax=fig.add_subplot(), compact=compact)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return buf.getvalue()
