"""What ``graphengine explain`` prints, as an object: every node's value and gradient,
then each leaf's gradient as its sum over paths, each path with the local derivatives
along it and their product.

``g.explain()`` returns an :class:`Explanation`: ``str()`` of it is the text, and
Jupyter shows it as HTML tables. Everything is bounded: at most ``NODES_SHOWN`` rows,
paths for at most ``SOURCES_SHOWN`` leaves, at most ``PATHS_SHOWN`` paths per leaf and
none longer than ``EDGES_SHOWN`` edges (beyond that, their number and length). Paths
are listed for scalar graphs only (elsewhere the table still gives every gradient).
"""

from __future__ import annotations

import html
import re

import numpy as np

from .derivatives import longest_paths, path_counts, path_terms
from .errors import GraphError

__all__ = ["Explanation", "explain"]

NODES_SHOWN = 200       # rows of the node table
SOURCES_SHOWN = 20      # leaves whose paths are listed
PATHS_SHOWN = 64        # paths listed per leaf
EDGES_SHOWN = 24        # ... when none is longer than this
EXPR_WIDTH = 28         # a gate's formula inlines unnamed gates up to this length
ELEMENTS_SHOWN = 9      # arrays up to this size show their numbers

# precedence for parentheses: sums < products < unary minus < powers < calls and names
_INFIX = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2), "div": ("/", 2),
          "matmul": ("@", 2), "power": ("**", 4)}
_ATOM = 9


def fmt(v) -> str:
    """A number as explain prints it: 6 significant digits, 0 rather than -0; a small
    array as its rounded numbers, a larger one as its shape and range.

    >>> fmt(-0.0), fmt(1 / 3), fmt(np.array([[0.5, -0.0], [2.0, 1e-9]]))
    ('0', '0.333333', '[[0.5, 0], [2, 1e-09]]')
    """
    if v is None:
        return "-"
    if isinstance(v, (float, int, np.floating, np.integer)):
        return f"{float(v) + 0.0:.6g}"          # + 0.0 turns -0.0 into 0.0
    a = np.asarray(v)
    if a.ndim == 0:
        return fmt(float(a))
    shape = "x".join(str(n) for n in a.shape)
    if a.size == 0:
        return f"shape {shape}"
    if a.size <= ELEMENTS_SHOWN:
        text = np.array2string(a, separator=", ", max_line_width=10**6,
                               formatter={"all": lambda e: fmt(float(e))})
        return " ".join(text.split())           # one line: rows joined by ", "
    return f"shape {shape}, {fmt(np.min(a))} .. {fmt(np.max(a))}"


def _auto_named(node) -> bool:
    # graph._add names an unnamed node "<prefix>_<k>"; such names say nothing
    if node.kind == "constant":
        prefix = "const"
    elif node.kind == "gate":
        prefix = node.gate.op or type(node.gate).__name__.lower()
    else:
        return False
    return re.fullmatch(re.escape(prefix) + r"_\d+", node.name) is not None


def _formulas(nodes):
    """Each gate's formula over the names of its inputs, with unnamed gates (and
    unnamed scalar constants) written out inline where the result stays short."""
    inline = {}          # name -> (text, precedence) of nodes written out in formulas
    computes = {}
    for node in nodes:
        if node.kind == "constant" and _auto_named(node) and np.ndim(node.value) == 0:
            inline[node.name] = (fmt(node.value), _ATOM if node.value >= 0 else 3)
        if node.kind != "gate":
            continue
        ins = node.inputs
        named = [(u.name, _ATOM) for u in ins]
        full = [inline.get(u.name, (u.name, _ATOM)) for u in ins]
        text, prec = _formula(node, full)
        if len(text) > EXPR_WIDTH:
            text, prec = _formula(node, [inline.get(u.name, n) if u.kind == "constant" else n
                                         for u, n in zip(ins, named, strict=True)])
        computes[node.name] = text
        if _auto_named(node) and len(text) <= EXPR_WIDTH:
            inline[node.name] = (text, prec)
    return computes


def _formula(node, args):
    gate = node.gate
    op = gate.op

    def wrap(arg, need):
        text, prec = arg
        return f"({text})" if prec < need else text

    if op in _INFIX and len(args) == 2:
        symbol, prec = _INFIX[op]
        left, right = args
        if op == "power":           # right-associative
            return f"{wrap(left, prec + 1)} ** {wrap(right, prec)}", prec
        return f"{wrap(left, prec)} {symbol} {wrap(right, prec + 1)}", prec
    if op == "pow" and len(args) == 1:
        return f"{wrap(args[0], 5)} ** {gate.p:g}", 4
    if op == "neg" and len(args) == 1:
        return f"-{wrap(args[0], 3)}", 3
    extra = ""
    if op in ("sum", "mean") and getattr(gate, "axis", None) is not None:
        extra = f", axis={gate.axis}"
    name = op or type(gate).__name__
    return f"{name}({', '.join(text for text, _ in args)}{extra})", _ATOM


class Explanation:
    """The explanation of a graph's last run (see :func:`explain`); ``str()`` gives
    the text, Jupyter shows HTML tables. ``rows`` and ``sections`` hold the data:
    ``rows`` are ``(node, computes, value, gradient)`` texts, ``sections`` one dict per
    leaf with its gradient and, where listed, its paths."""

    def __init__(self, out, output, value, rows, hidden, sections, notes):
        self.out, self.output, self.value = out, output, value
        self.rows, self.hidden, self.sections, self.notes = rows, hidden, sections, notes

    # ------------------------------------------------------------ text

    def _intro(self) -> str:
        equals = self.out if self.out == self.output else f"{self.out} = {self.output}"
        return (f"{equals} = {self.value}. Each gradient below is the sum over the "
                f"paths to {self.output}\nof the product of the local derivatives "
                "along the path:")

    def __str__(self) -> str:
        head = ("node", "computes", "value", f"d{self.out}/dnode")
        lines = _table([head, *self.rows])
        if self.hidden:
            lines.append(f"... and {self.hidden} more nodes (explain lists the first "
                         f"{NODES_SHOWN})")
        lines.append("")
        if self.sections:
            lines.append(self._intro())
        for sec in self.sections:
            lines.append("")
            lines.append(f"d{self.out}/d{sec['name']} = {sec['grad']}  ({sec['count_text']})")
            if sec["paths"]:
                width = max(len(p) for p, _, _ in sec["paths"])
                lines += [f"  {(p + ':').ljust(width + 1)} {f}" + (f" = {t}" if t else "")
                          for p, f, t in sec["paths"]]
        if self.notes:
            if lines[-1]:
                lines.append("")
            lines += self.notes
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    # ------------------------------------------------------------ Jupyter

    def _repr_html_(self) -> str:
        e = html.escape
        cell = 'style="text-align:left; font-family:monospace"'
        head = ("node", "computes", "value", f"d{self.out}/dnode")
        parts = ["<div>", "<table>", "<thead><tr>"
                 + "".join(f"<th {cell}>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
        for row in self.rows:
            parts.append("<tr>" + "".join(f"<td {cell}>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
        if self.hidden:
            parts.append(f"<p>... and {self.hidden} more nodes (explain lists the first "
                         f"{NODES_SHOWN})</p>")
        if self.sections:
            parts.append(f"<p>{e(self._intro())}</p>")
            parts.append(f"<table><thead><tr><th {cell}>gradient</th><th {cell}>path</th>"
                         f"<th {cell}>local derivatives</th><th {cell}>product</th>"
                         "</tr></thead><tbody>")
            for sec in self.sections:
                title = f"d{self.out}/d{sec['name']} = {sec['grad']} ({sec['count_text']})"
                paths = sec["paths"] or [("", "", "")]
                for k, (p, f, t) in enumerate(paths):
                    first = (f'<td {cell} rowspan="{len(paths)}">{e(title)}</td>'
                             if k == 0 else "")
                    parts.append(f"<tr>{first}<td {cell}>{e(p)}</td><td {cell}>{e(f)}</td>"
                                 f"<td {cell}>{e(t or f)}</td></tr>")
            parts.append("</tbody></table>")
        parts += [f"<p>{e(n)}</p>" for n in self.notes if n]
        parts.append("</div>")
        return "\n".join(parts)


def _table(rows) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _path_text(path, slots, factors, twice):
    text = path[0]
    for k, (name, slot) in enumerate(zip(path[1:], slots, strict=True)):
        arrow = f" -[{slot}]-> " if (path[k], name) in twice else " -> "
        text += arrow + name
    if not factors:
        return text + " (the output itself)", "1", ""
    shown = " * ".join(fmt(w) for w in factors)
    return text, shown, (fmt(_prod(factors)) if len(factors) > 1 else "")


def _prod(factors):
    product = 1.0
    for w in factors:
        product *= w
    return product


def explain(g, source=None) -> Explanation:
    """Every node's value and gradient, and each leaf's gradient as a sum over paths.

    The explanation of the last forward: it needs one first, and runs ``backward``
    itself when the gradients on hand do not belong to the current values. Gate rows
    show their formula, with unnamed gates written out where short (``(x + y) * z``);
    each path shows the local derivative of every edge and their product; a path
    that enters a gate reading one node twice marks the input slot on its arrow
    (``x -[0]-> y`` and ``x -[1]-> y`` for ``y = x * x``). Paths are listed for
    scalar graphs only.

    Parameters
    ----------
    g : ComputationalGraph
    source : str or Node, optional
        List the paths of this node only (default: every input and parameter).

    Returns
    -------
    Explanation
        ``str()`` is the text ``graphengine explain`` prints; Jupyter shows HTML.

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x, y, z = g.input("x"), g.input("y"), g.input("z")
    >>> q = g.add(x, y, name="q"); f = g.mul(q, z, name="f")
    >>> g.forward(x=-2.0, y=5.0, z=-4.0)
    -12.0
    >>> print(g.explain(source="x"))
    node  computes  value  df/dnode
    x     input     -2     -4
    y     input     5      -4
    z     input     -4     3
    q     x + y     3      -4
    f     q * z     -12    1
    <BLANKLINE>
    f = -12. Each gradient below is the sum over the paths to f
    of the product of the local derivatives along the path:
    <BLANKLINE>
    df/dx = -4  (1 path)
      x -> q -> f: 1 * -4 = -4
    """
    plan = g.plan()
    run = g.run
    if run.values_for(plan) is None:
        raise GraphError(f"explain needs a forward first: call forward() with a value "
                         f"for every input (output {plan.names[plan.out]!r})")
    if not run.grads_current:
        g.backward()
    output = g.output
    names = set(plan.names) | {n.name for n in g}
    if not _auto_named(output):
        out = output.name
    else:
        out = next(s for s in ("f", "out", output.name) if s == output.name or s not in names)
    if source is None:
        sources = [n for n in g if n.kind in ("input", "parameter")]
    else:
        sources = [g._node(source, "explain's source")]

    nodes = list(g)
    shown = nodes[:NODES_SHOWN]
    computes = _formulas(shown)
    rows = []
    for node in shown:
        what = computes.get(node.name, node.kind)
        rows.append((node.name, what, fmt(node.value), fmt(node.grad)))

    sections, notes = [], []
    array = next((n for n in nodes if n.name in plan.slot and np.ndim(n.value) != 0), None)
    if array is not None:
        notes.append(f"Paths are listed for scalar graphs only (node {array.name!r} has "
                     f"shape {np.shape(array.value)}); the table gives every gradient.")
    else:
        counts, longest = path_counts(g), longest_paths(g)
        for k, node in enumerate(sources):
            count = counts.get(node.name, 0)
            sec = {"name": node.name, "grad": fmt(node.grad), "count": count, "paths": []}
            sections.append(sec)
            if count == 0:
                sec["count_text"] = f"no path to {output.name}"
                continue
            sec["count_text"] = "1 path" if count == 1 else f"sum over {count} paths"
            if count > PATHS_SHOWN:
                sec["count_text"] = (f"{count} paths, more than the {PATHS_SHOWN} explain "
                                     "lists; backward sums them in one pass")
                continue
            if longest[node.name] > EDGES_SHOWN:
                sec["count_text"] += (f", up to {longest[node.name]} edges long, longer than "
                                      f"the {EDGES_SHOWN} explain lists")
                continue
            if k >= SOURCES_SHOWN:
                sec["count_text"] += f"; paths listed for the first {SOURCES_SHOWN} leaves, " \
                                     "pass source= for another"
                continue
            terms = path_terms(g, node, limit=PATHS_SHOWN)
            twice = {(u, v) for v in {p for t in terms for p in t[0][1:]}
                     for u in _repeated(g[v])}
            sec["paths"] = [_path_text(*t, twice) for t in terms]
        if any("-[" in p for s in sections for p, _, _ in s["paths"]):
            notes.append("-[k]-> : the path enters the gate as its input k (a gate that "
                         "reads one node twice).")
    return Explanation(out, output.name, fmt(output.value), rows, len(nodes) - len(shown),
                       sections, notes)


def _repeated(node):
    ins = [u.name for u in node.inputs]
    return [u for k, u in enumerate(ins) if u in ins[:k]]
