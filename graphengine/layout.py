"""Where every node, label and arrow of a drawing goes (geometry only, in inches).

The layers and the order within each layer come from igraph's Sugiyama layout
(``Graph.layout_sugiyama``: crossing minimisation by the barycenter heuristic, long
edges routed through dummy points), given our own layering: a gate one layer right of
its last gate input, a leaf in the layer just before its first user. Layers are
columns (left to right); each column is as wide as its widest node or label, so
labels stay inside their column, and arrows run:

- horizontally inside a column (out of a node's right side, into a port on its left
  side, or straight across at a dummy point's height, a row of its own), and
- as S-shaped cubic curves inside the gaps between columns, where nothing else is.

So no arrow crosses a node or a label it does not belong to. Nothing here draws;
``draw.py`` turns the result into matplotlib artists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import GraphError

MOVETO, LINETO, CURVE4 = 1, 2, 4          # matplotlib.path.Path codes
PAD = 0.04          # between a node and its labels
LANE = 0.16         # left of a column whose gates have marked operand slots
GAP = 0.5           # the least gap between columns
ROW_PAD = 0.14      # between the label blocks of two rows
HEAD = 0.1          # the straight piece an arrow ends with
MAX_DUMMIES = 50_000    # bend points of long arrows a layout may need


@dataclass
class Box:
    """A node's drawn shape and the label blocks above and below it (inches)."""

    w: float
    h: float
    above: tuple = (0.0, 0.0)     # width, height
    below: tuple = (0.0, 0.0)
    ellipse: bool = False
    marks: float = 0.0            # room left of the node for operand marks
    lift: float = 0.0             # extra room between the node and its labels


@dataclass
class Layout:
    pos: dict                     # name -> (x, y) centre
    boxes: dict                   # name -> Box
    edges: list                   # (u, v, slot, vertices, codes); u None for a cut input
    ports: dict                   # (v, slot) -> (x, y) where the arrow ends
    lanes: dict                   # layer -> x of its port lane's centre (None: no lane)
    layer: dict                   # name -> layer
    extent: tuple = field(default=(0.0, 0.0, 0.0, 0.0))   # xmin, xmax, ymin, ymax


def layers(nodes, preds, is_leaf) -> dict:
    """Layer of each node: a gate one right of its last gate input (0 with no inputs
    shown, 1 with only leaves), a leaf just before its first user (0 if unused).
    ``nodes`` in topological order; ``preds[v]`` the shown inputs of v."""
    layer = {}
    users = {v: [] for v in nodes}
    for v in nodes:
        if is_leaf(v):
            continue
        base = 1 if any(is_leaf(u) for u in preds[v]) else 0
        layer[v] = max([layer[u] + 1 for u in preds[v] if not is_leaf(u)] + [base])
        for u in preds[v]:
            users[u].append(v)
    for v in nodes:
        if is_leaf(v):
            layer[v] = min((layer[w] for w in users[v]), default=1) - 1
    return layer


def sugiyama(nodes, edges, layer):
    """igraph's Sugiyama layout with our layers: each node's position within its layer
    and each edge's dummy points, as (position, layer) pairs. The long edges are cut
    into chains of dummy vertices here, so igraph orders and places those too."""
    import igraph

    dummies = sum(layer[v] - layer[u] - 1 for u, v, _ in edges)
    if dummies > MAX_DUMMIES:
        raise GraphError(f"the drawing of these {len(nodes):,} nodes needs {dummies:,} bend "
                         f"points for its long arrows, beyond the limit of {MAX_DUMMIES:,}: "
                         "draw fewer nodes (max_nodes=...)")
    index = {v: i for i, v in enumerate(nodes)}
    layers = [layer[v] for v in nodes]
    pairs, chains = [], []
    for u, v, _ in edges:
        a, chain = index[u], []
        for k in range(layer[u] + 1, layer[v]):
            chain.append(len(layers))
            layers.append(k)
            pairs.append((a, chain[-1]))
            a = chain[-1]
        pairs.append((a, index[v]))
        chains.append(chain)
    graph = igraph.Graph(n=len(layers), edges=pairs, directed=True)
    coords = graph.layout_sugiyama(layers=layers, maxiter=100).coords
    place = {v: coords[index[v]][0] for v in nodes}
    return place, [[(coords[d][0], layers[d]) for d in chain] for chain in chains]


def port_offsets(n: int, h: float) -> list:
    """Heights, from the node's centre, where n arrows end on its left side: the
    first slot on top."""
    if n <= 1:
        return [0.0] * n
    step = min(0.13, 0.7 * h / (n - 1))
    return [((n - 1) / 2 - k) * step for k in range(n)]


def spread(prefs, gaps) -> list:
    """Positions closest (least squares) to ``prefs`` with position i+1 at least
    ``gaps[i]`` after position i: isotonic regression (pool adjacent violators)."""
    offset = [0.0] * len(prefs)
    for i, d in enumerate(gaps):
        offset[i + 1] = offset[i] + d
    blocks = []                          # [sum, count] of pooled values
    for p, c in zip(prefs, offset, strict=True):
        blocks.append([p - c, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            total, n = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += n
    fitted = [t / n for t, n in blocks for _ in range(n)]
    return [q + c for q, c in zip(fitted, offset, strict=True)]


def untangle(nodes, edges, routes, layer, pref, rounds=6, limit=3000) -> None:
    """Swap neighbours within a layer wherever that removes crossings (the transpose
    step of Gansner et al.), after igraph's barycenter sweeps, which leave some: a few
    rounds over graphs of up to ``limit`` nodes and dummy points."""
    if len(pref) > limit:
        return
    up = {k: [] for k in pref}          # neighbours in the layer to the left / right
    down = {k: [] for k in pref}
    for i, (u, v, _) in enumerate(edges):
        chain = [u] + [(i, j) for j in range(len(routes[i]))] + [v]
        for a, b in zip(chain, chain[1:], strict=False):
            down[a].append(b)
            up[b].append(a)
    columns = {}
    for k in pref:
        columns.setdefault(layer[k] if k in layer else int(routes[k[0]][k[1]][1]), []).append(k)
    orders = [sorted(c, key=pref.__getitem__) for c in columns.values()]
    at = {k: i for order in orders for i, k in enumerate(order)}

    def crossings(a, b):             # of a's and b's edges with a above b
        return sum(at[p] > at[q] for nb in (up, down) for p in nb[a] for q in nb[b])

    for _ in range(rounds):
        better = False
        for order in orders:
            for i in range(len(order) - 1):
                a, b = order[i], order[i + 1]
                if crossings(b, a) < crossings(a, b):
                    order[i], order[i + 1] = b, a
                    at[a], at[b] = i + 1, i
                    better = True
        if not better:
            break
    for order in orders:
        for k, p in zip(order, sorted(pref[k] for k in order), strict=True):
            pref[k] = p


def operand_order(edges, routes, pref, ordered) -> None:
    """Where the inputs of a gate in ``ordered`` (those whose inputs do not commute)
    come straight from the layer before it and feed nothing else, put them in slot
    order, first on top (so 1 of 1/(1+e) sits above 1+e), by swapping positions."""
    uses = {}
    for u, _, _ in edges:
        uses[u] = uses.get(u, 0) + 1
    into = {}
    for i, ((u, v, s), route) in enumerate(zip(edges, routes, strict=True)):
        last = (i, len(route) - 1) if route else u
        into.setdefault(v, []).append((s, last, bool(route) or uses[u] == 1))
    for v, ins in into.items():
        keys = [k for _, k, _ in ins]
        if v not in ordered:
            continue
        if len(ins) > 1 and all(own for *_, own in ins) and len(set(keys)) == len(keys):
            spots = sorted(pref[k] for k in keys)
            for (_, k, _), p in zip(sorted(ins, key=lambda t: t[0]), spots, strict=True):
                pref[k] = p


def arrange(nodes, edges, cut, boxes, layer, place, routes, lanes, ordered=()) -> Layout:
    """Coordinates in inches from a Sugiyama placement.

    ``edges`` are (u, v, slot) among ``nodes``; ``cut`` are (v, slot) inputs whose
    source is not shown (drawn as a short stub); ``routes[i]`` the dummy points of
    ``edges[i]`` as (position, layer); ``lanes`` the width of the port lane left of
    each layer that needs one; ``ordered`` the gates whose inputs go in slot order, top
    to bottom, where the layout allows. igraph gives the order within each
    layer and preferred positions; the positions are then spread so that every node
    with its labels, and every arrow passing through the layer, has room.
    """
    n_layers = 1 + max(layer.values(), default=0)
    col_w = [0.0] * n_layers
    for v in nodes:
        b = boxes[v]
        col_w[layer[v]] = max(col_w[layer[v]], b.w + 2 * b.marks, b.above[0], b.below[0])
    lane = [lanes.get(k, 0.0) for k in range(n_layers)]

    def reach(b):           # above and below a node's centre, labels included
        pad = b.h / 2 + PAD + b.lift
        return (max(pad + b.above[1], 0.28), max(pad + b.below[1], 0.28))

    sizes = sorted(sum(reach(boxes[v])) for v in nodes) or [0.6]
    unit = sizes[len(sizes) // 2] + ROW_PAD      # inches per unit of igraph's positions
    pref = dict(place)
    for i, route in enumerate(routes):
        for j, (p, _) in enumerate(route):
            pref[(i, j)] = p
    operand_order(edges, routes, pref, ordered)
    untangle(nodes, edges, routes, layer, pref)
    operand_order(edges, routes, pref, ordered)     # operands keep their order
    items = [[] for _ in range(n_layers)]        # (igraph position, key, up, down)
    for v in nodes:
        up, down = reach(boxes[v])
        items[layer[v]].append((pref[v], 0, v, up, down))
    for i, route in enumerate(routes):
        for j, (_, k) in enumerate(route):
            items[int(k)].append((pref[(i, j)], 1, (i, j), 0.05, 0.05))
    height = {}
    for column in items:
        column.sort(key=lambda it: (it[0], it[1]))
        gaps = [a[4] + b[3] + (ROW_PAD if a[1] == b[1] == 0 else 0.08)
                for a, b in zip(column, column[1:], strict=False)]
        for it, y in zip(column, spread([it[0] * unit for it in column], gaps), strict=True):
            height[it[2]] = -y
    # the gap after each column grows (a little) with the steepest arrow crossing it
    steep = [0.0] * n_layers
    for i, ((u, v, _), route) in enumerate(zip(edges, routes, strict=True)):
        ys = [height[u]] + [height[(i, j)] for j in range(len(route))] + [height[v]]
        for k, (a, b) in enumerate(zip(ys, ys[1:], strict=False)):
            gap = layer[u] + k
            steep[gap] = max(steep[gap], abs(a - b))
    left, x = [], 0.0
    for k in range(n_layers):
        left.append(x)
        x += lane[k] + col_w[k] + GAP + 0.12 * min(steep[k], 5.0)
    centre = [left[k] + lane[k] + col_w[k] / 2 for k in range(n_layers)]
    right = [centre[k] + col_w[k] / 2 for k in range(n_layers)]
    pos = {v: (centre[layer[v]], height[v]) for v in nodes}

    # the ports on each node's left side: by slot (first on top) for the gates in
    # ``ordered``, else in the order the arrows arrive, so they do not cross there
    ins = {}
    for i, ((u, v, s), route) in enumerate(zip(edges, routes, strict=True)):
        come = height[(i, len(route) - 1)] if route else height[u]
        ins.setdefault(v, []).append((s, -come))
    for v, s in cut:
        ins.setdefault(v, []).append((s, float("inf")))
    ports = {}
    for v, arrivals in ins.items():
        b = boxes[v]
        cx, cy = pos[v]
        arrivals.sort(key=(lambda t: t[0]) if v in ordered else (lambda t: (t[1], t[0])))
        for (s, _), dy in zip(arrivals, port_offsets(len(arrivals), b.h), strict=True):
            if b.ellipse:
                a, bb = b.w / 2, b.h / 2
                ex = cx - a * max(0.0, 1.0 - (dy / bb) ** 2) ** 0.5
            else:
                ex = cx - b.w / 2
            ports[(v, s)] = (ex, cy + dy)

    def curve(verts, codes, a, b):
        mid = (a[0] + b[0]) / 2
        verts += [(mid, a[1]), (mid, b[1]), b]
        codes += [CURVE4] * 3

    out = []
    for i, ((u, v, s), route) in enumerate(zip(edges, routes, strict=True)):
        (ux, uy), b = pos[u], boxes[u]
        verts, codes = [(ux + b.w / 2, uy), (right[layer[u]], uy)], [MOVETO, LINETO]
        for j, (_, k) in enumerate(route):
            y = height[(i, j)]
            curve(verts, codes, verts[-1], (left[int(k)], y))
            verts.append((right[int(k)], y))
            codes.append(LINETO)
        px, py = ports[(v, s)]
        # the curve ends a little before the port, so the last straight piece (which
        # gives the arrowhead its direction) is never of length 0
        curve(verts, codes, verts[-1], (min(left[layer[v]], px - HEAD), py))
        verts.append((px, py))
        codes.append(LINETO)
        out.append((u, v, s, verts, codes))
    for v, s in cut:
        px, py = ports[(v, s)]
        out.append((None, v, s, [(left[layer[v]] - GAP / 3, py), (px, py)], [MOVETO, LINETO]))

    xs = [x for _, _, _, verts, _ in out for x, _ in verts]
    ys = [y for _, _, _, verts, _ in out for _, y in verts]
    for v in nodes:
        (cx, cy), b = pos[v], boxes[v]
        w = max(b.w + 2 * b.marks, b.above[0], b.below[0]) / 2
        xs += [cx - w, cx + w]
        pad = b.h / 2 + PAD + b.lift
        ys += [cy + pad + b.above[1], cy - pad - b.below[1]]
    lanes_at = {k: (left[k] + lane[k] / 2 if lane[k] else None) for k in range(n_layers)}
    extent = (min(xs), max(xs), min(ys), max(ys)) if xs else (0.0, 1.0, 0.0, 1.0)
    return Layout(pos, boxes, out, ports, lanes_at, dict(layer), extent)
