"""The drawings read back from matplotlib's artists: no arrow through a node or a text
it does not belong to, no text over a node it does not label or over another text,
everything inside the figure. Over a corpus: the left-fold sum, MLPs with a loss, the
2-2-1 and 2-4-1 scalar networks, a 30-node chain reusing its input, 1/(1+e), seeded
random DAGs of 10 to 60 nodes, every backward step of the circuit, forward mode."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

import graphengine as ge  # noqa: E402
from graphengine import ComputationalGraph  # noqa: E402

# ---------------------------------------------------------------- the corpus

def circuit():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.mul(g.add(x, y, name="q"), z, name="f")
    g.forward(x=-2.0, y=5.0, z=-4.0)
    g.backward()
    return g


def left_fold():
    g = ComputationalGraph()
    xs = [g.input(f"x{i}") for i in range(8)]
    s = xs[0]
    for x in xs[1:]:
        s = s + x
    g.forward({f"x{i}": float(i) for i in range(8)})
    g.backward()
    return g


def mlp_cross_entropy():
    g = ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [4, 3, 2])
    g.softmax_cross_entropy(logits, g.input("y"), name="loss")
    g.forward(x=np.random.default_rng(0).normal(size=(2, 4)), y=np.array([0, 1]))
    g.backward()
    return g


def mlp_mse():
    g = ComputationalGraph()
    out = ge.nn.mlp(g, g.input("x"), [2, 3, 3, 1], activation="tanh")
    g.mse(out, g.input("target"), name="loss")
    g.forward(x=np.array([[0.5, -0.2]]), target=np.array([[1.0]]))
    g.backward()
    return g


def scalar_network(hidden=2):
    g = ComputationalGraph()
    x1, x2 = g.input("x1"), g.input("x2")
    rng = np.random.default_rng(hidden)
    hs = []
    for j in range(hidden):
        a = x1 * g.parameter(f"w1{j}", rng.normal()) + x2 * g.parameter(f"w2{j}", rng.normal())
        hs.append(g.sigmoid(a + g.parameter(f"b{j}", 0.35), name=f"h{j}"))
    s = hs[0] * g.parameter("v0", 0.4)
    for j in range(1, hidden):
        s = s + hs[j] * g.parameter(f"v{j}", 0.45)
    o = g.sigmoid(s + g.parameter("c", 0.6), name="o")
    g.mse(o, g.input("target"), name="loss")
    g.forward(x1=0.05, x2=0.1, target=0.01)
    g.backward()
    return g


def network_221():
    return scalar_network(2)


def network_241():
    return scalar_network(4)


def chain_reusing_input(n=30):
    g = ComputationalGraph()
    x = g.input("x")
    node = x
    while len(g) < n:
        node = g.tanh(node + x) if len(g) % 3 else g.sigmoid(node * x)
    g.forward(x=0.3)
    g.backward()
    return g


def one_over_one_plus_e():
    g = ComputationalGraph()
    x = g.input("x")
    _ = 1 / (1 + g.exp(-x))
    g.forward(x=0.5)
    g.backward()
    return g


def random_dag(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(10, 61))
    shape = [(), (), (2,), (3,)][seed % 4]
    g = ComputationalGraph()
    nodes, feed = [], {}
    for k in range(int(rng.integers(2, 6))):
        value = rng.uniform(0.5, 1.5, shape)
        value = float(value) if shape == () else value
        if rng.integers(2):
            nodes.append(g.input(f"x{k}"))
            feed[f"x{k}"] = value
        else:
            nodes.append(g.parameter(f"w{k}", value))
    ops = ["add", "sub", "mul", "max", "div", "sigmoid", "tanh", "neg", "pow"]
    while len(g) < size - 3:
        op = ops[int(rng.integers(len(ops)))]
        a = nodes[int(rng.integers(max(0, len(nodes) - 6), len(nodes)))]
        b = a if rng.integers(6) == 0 else nodes[int(rng.integers(len(nodes)))]
        if op in ("sigmoid", "tanh", "neg"):
            nodes.append(getattr(g, op)(a))
        elif op == "pow":
            nodes.append(g.pow(a, 2))
        elif op == "div":
            nodes.append(g.div(a, g.sigmoid(b) + 1.0))
        else:
            nodes.append(getattr(g, op)(a, b))
    ends = [v for v in g.dag if not g.dag.succ[v] and g[v].kind == "gate"]
    out = g[ends[0]]
    for v in ends[1:]:
        out = g.add(out, g[v])
    g.set_output(g.sum(out) if shape else out)
    g.forward(feed)
    g.backward()
    return g


def neuron():
    """The CS231n sigmoid neuron, staged: f = 1 / (1 + exp(-(w0 x0 + w1 x1 + w2)))."""
    g = ComputationalGraph()
    w0, x0, w1, x1, w2 = (g.input(n) for n in ("w0", "x0", "w1", "x1", "w2"))
    dot = g.add(g.add(w0 * x0, w1 * x1, name="s"), w2, name="dot")
    g.div(1.0, g.add(1.0, g.exp(g.neg(dot, name="m"), name="e"), name="d"), name="f")
    return g, dict(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)


def mlp_loss():
    g = ComputationalGraph()
    out = ge.nn.mlp(g, g.input("x"), [2, 3, 1], activation="tanh")
    g.mse(out, g.input("target"), name="loss")
    return g, dict(x=np.array([[0.5, -0.2]]), target=np.array([[1.0]]))


def sigmoid_layer():
    """A sigmoid unit and a loss: its gradient graph has sigmoid_grad and a dsigmoid."""
    g = ComputationalGraph()
    x, w, b = g.input("x"), g.parameter("w", 0.7), g.parameter("b", -0.2)
    z = g.add(g.mul(x, w), b, name="z")
    g.mse(g.sigmoid(z) * 2.0 + z, g.input("t"), name="loss")
    return g, dict(x=0.5, t=0.3)


def notebook04():
    """Notebook 04's network: y - a2 into a square, 0.5 * sum (a y -> sub arrow was
    seen arcing past a sigmoid)."""
    rng = np.random.default_rng(0)
    g = ComputationalGraph()
    a = g.input("x")
    for k, (n_in, n_out) in enumerate([(3, 4), (4, 2)], start=1):
        z = g.add(g.parameter(f"W{k}", rng.normal(size=(n_out, n_in))) @ a,
                  g.parameter(f"b{k}", rng.normal(size=(n_out, 1))), name=f"z{k}")
        a = g.sigmoid(z, name=f"a{k}")
    g.mul(0.5, g.sum(g.pow(g.sub(g.input("y"), a), 2)), name="C")
    return _run(g, dict(x=rng.normal(size=(3, 1)), y=np.array([[1.0], [0.0]])))


def label_minus_out():
    """Notebook 03's output unit: err = 0.8 - out, the constant first."""
    g = ComputationalGraph()
    h = g.input("h")
    out = g.sigmoid(h @ g.parameter("W2", np.array([[0.6], [0.7]])) + g.parameter("b2", 0.3),
                    name="out")
    g.pow(g.sub(g.constant(0.8, name="label"), out, name="err"), 2, name="loss")
    return _run(g, dict(h=np.array([[0.6, 0.615]])))


def _run(h, feed):
    h.forward(feed)
    h.backward()
    return h


def grad_circuit():
    g = circuit()
    return _run(ge.grad(g, "x"), dict(x=-2.0, y=5.0, z=-4.0))


def grad_neuron():
    g, feed = neuron()
    return _run(ge.grad(g, "w0"), feed)


def grad_mlp_loss():
    g, feed = mlp_loss()
    return _run(ge.grad(g, "W1"), feed)


def grad_grad_sigmoid():
    g = ComputationalGraph()
    g.sigmoid(g.input("x"), name="s")
    return _run(ge.grad(ge.grad(g, "x"), "x"), dict(x=0.5))


def imported_gradient_graph():
    """An exported gradient graph read back (``from_onnx``)."""
    g, feed = sigmoid_layer()
    h = ge.grad(g, "x")
    h.forward(feed)
    k = ComputationalGraph.from_onnx(ge.export.to_onnx(h))
    return _run(k, feed)


def imported_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    g = ComputationalGraph.from_torch(net, {"input": torch.zeros(2, 3)})
    g.set_output(g.sum(g.output))
    return _run(g, dict(input=np.random.default_rng(0).normal(size=(2, 3))))


CORPUS = [circuit, left_fold, mlp_cross_entropy, mlp_mse, network_221, network_241,
          chain_reusing_input, one_over_one_plus_e, grad_circuit, grad_neuron, grad_mlp_loss,
          grad_grad_sigmoid, imported_gradient_graph, imported_torch, notebook04,
          label_minus_out]


# ---------------------------------------------------------------- reading the artists back

def _points(path, transform, spacing=2.0):
    """Points along a path (flattened curves) every ``spacing`` pixels, in pixels."""
    pts = []
    for poly in path.to_polygons(transform, closed_only=False):
        for a, b in zip(poly[:-1], poly[1:], strict=True):
            n = max(2, int(np.hypot(*(b - a)) / spacing) + 1)
            pts.append(a + np.linspace(0, 1, n)[:, None] * (b - a))
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _inside(pts, boxes, ellipses, shrink=1.5):
    """Which points lie inside which node shape: (points, nodes) booleans."""
    x0, y0 = boxes[:, 0] + shrink, boxes[:, 1] + shrink
    x1, y1 = boxes[:, 2] - shrink, boxes[:, 3] - shrink
    px, py = pts[:, :1], pts[:, 1:]
    inside = (px > x0) & (px < x1) & (py > y0) & (py < y1)
    a, b = np.maximum((x1 - x0) / 2, 1e-9), np.maximum((y1 - y0) / 2, 1e-9)
    in_ellipse = ((px - (x0 + x1) / 2) / a) ** 2 + ((py - (y0 + y1) / 2) / b) ** 2 < 1
    return inside & (in_ellipse | ~ellipses)


def _extent(box):
    return [box.x0, box.y0, box.x1, box.y1]


def _ends(gid, nodes):
    """The two ends of an arrow from its gid ``edge:u:v:slot`` (names may hold ':')."""
    body = gid[len("edge:"):].rsplit(":", 1)[0]
    splits = [(body[:i], body[i + 1:]) for i, c in enumerate(body) if c == ":"]
    return next((u, v) for u, v in splits if (u == "" or u in nodes) and v in nodes)


def check_geometry(ax):
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    nodes = {p.get_gid()[5:]: p for p in ax.patches if (p.get_gid() or "").startswith("node:")}
    names = list(nodes)
    node_boxes = np.array([_extent(p.get_window_extent(renderer)) for p in nodes.values()]
                          ).reshape(-1, 4)
    ellipses = np.array([isinstance(p, Ellipse) for p in nodes.values()], bool)
    edges = [p for p in ax.patches if (p.get_gid() or "").startswith("edge:")]
    texts = [t for t in ax.texts if t.get_text()]
    gids = [t.get_gid() or "" for t in texts]
    text_boxes = np.array([_extent(t.get_window_extent(renderer)) for t in texts]).reshape(-1, 4)
    problems = []
    frame = fig.bbox
    for edge in edges:
        u, v = _ends(edge.get_gid(), nodes)
        *_, a, b = edge._path_original.vertices       # the piece the head points along
        if np.hypot(*(b - a)) < 0.02:
            problems.append(f"arrow {u} -> {v} has no direction at its head (drawn headless)")
        pts = _points(edge.get_path(), ax.transData)
        if (pts.min(axis=0) < (frame.x0 - 1, frame.y0 - 1)).any() or \
                (pts.max(axis=0) > (frame.x1 + 1, frame.y1 + 1)).any():
            problems.append(f"arrow {u} -> {v} leaves the figure")
        hit = _inside(pts, node_boxes, ellipses).any(axis=0)
        problems += [f"arrow {u} -> {v} crosses node {names[k]}" for k in np.flatnonzero(hit)
                     if names[k] not in (u, v)]
        hit = _inside(pts, text_boxes, np.zeros(len(texts), bool), shrink=1.0).any(axis=0)
        problems += [f"arrow {u} -> {v} crosses text {texts[k].get_text()!r} ({gids[k]})"
                     for k in np.flatnonzero(hit) if gids[k] != f"port:{v}"]

    def overlaps(a, b, tol=0.5):
        return ((a[:, None, 0] + tol < b[None, :, 2]) & (b[None, :, 0] + tol < a[:, None, 2])
                & (a[:, None, 1] + tol < b[None, :, 3]) & (b[None, :, 1] + tol < a[:, None, 3]))

    for i, k in zip(*np.nonzero(overlaps(text_boxes, node_boxes)), strict=True):
        owner = gids[i].split(":", 1)[1] if ":" in gids[i] else None
        if owner != names[k]:
            problems.append(f"text {texts[i].get_text()!r} ({gids[i]}) overlaps node {names[k]}")
    for i, k in zip(*np.nonzero(np.triu(overlaps(text_boxes, text_boxes), 1)), strict=True):
        problems.append(f"text {texts[i].get_text()!r} ({gids[i]}) overlaps text "
                        f"{texts[k].get_text()!r} ({gids[k]})")
    others = [p for p in ax.patches if not (p.get_gid() or "").startswith(("node:", "edge:"))]
    boxes = np.concatenate([node_boxes, text_boxes, np.array(
        [_extent(p.get_window_extent(renderer)) for p in others]).reshape(-1, 4)])
    labels = names + [t.get_text() for t in texts] + [p.get_gid() for p in others]
    out = (boxes[:, 0] < frame.x0 - 1) | (boxes[:, 1] < frame.y0 - 1) | \
        (boxes[:, 2] > frame.x1 + 1) | (boxes[:, 3] > frame.y1 + 1)
    problems += [f"{labels[k]!r} leaves the figure" for k in np.flatnonzero(out)]
    return problems, nodes, edges


def assert_clean(ax):
    problems, nodes, edges = check_geometry(ax)
    assert problems == [], "\n".join(problems[:20])
    return nodes, edges


# ---------------------------------------------------------------- the tests

@pytest.mark.parametrize("make", CORPUS, ids=lambda f: f.__name__)
def test_corpus_is_drawn_cleanly(make):
    g = make()
    nodes, edges = assert_clean(g.draw(max_nodes=None))      # every node, however wide
    assert set(nodes) == set(g.dag)
    assert len(edges) == g.dag.number_of_edges()


def long_chain():
    return chain_reusing_input(43)


@pytest.mark.parametrize("make", [long_chain,
                                  pytest.param(chain_reusing_input, marks=pytest.mark.slow),
                                  pytest.param(grad_mlp_loss, marks=pytest.mark.slow)],
                         ids=lambda f: f.__name__)
def test_a_long_graph_is_drawn_as_an_overview_no_wider_than_the_cap(make):
    # a 43-node chain reusing its input was drawn whole, 59 inches wide: unreadable
    g = make()
    whole = ge.draw.figure(g, max_nodes=None).get_size_inches()[0]
    assert whole > ge.draw.MAX_WIDTH
    ax = g.draw()
    nodes, _ = assert_clean(ax)
    width = ax.figure.get_size_inches()[0]
    assert width <= ge.draw.MAX_WIDTH + 1.0
    assert g.output.name in nodes and 8 <= len(nodes) < len(g)
    note = next(t.get_text() for t in ax.texts if t.get_gid() == "note")
    assert f"(of {len(g)}; the whole graph would be " in note
    assert "g.draw(max_nodes=None) draws them all" in note
    for k in (0, 3):            # the backward, step by step, is the same overview
        ax = g.draw(step=k)
        assert set(assert_clean(ax)[0]) == set(nodes)
        assert _note(ax).startswith(note.split(" would be")[0])     # steps: wider texts


@pytest.mark.parametrize("seed", [0, 3])
def test_random_dags_are_drawn_cleanly(seed):
    g = random_dag(seed)
    assert 10 <= len(g) <= 64
    assert_clean(g.draw())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2] + list(range(4, 40)))
def test_more_random_dags_are_drawn_cleanly(seed):
    assert_clean(random_dag(seed).draw())


def test_every_backward_step_of_the_circuit_is_drawn_cleanly():
    g = circuit()
    for k in range(3):
        assert_clean(g.draw(step=k))


def test_every_step_of_a_network_is_drawn_cleanly():
    g = network_221()
    assert_clean(g.draw(step=5))


def test_tangents_are_drawn_cleanly():
    g = one_over_one_plus_e()
    t = g.jvp({"x": 1.0})
    assert_clean(g.draw(tangents=t))
    assert_clean(g.draw(tangents=t, step=2))


def test_an_overview_of_a_big_graph_is_drawn_cleanly():
    g = chain_reusing_input(300)
    nodes, edges = assert_clean(g.draw())
    assert 10 < len(nodes) <= ge.draw.MAX_NODES


def test_drawn_into_a_small_axes_of_the_callers_figure():
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.plot([0, 1])
    g = mlp_cross_entropy()
    g.draw(ax=right)
    x0, x1 = right.get_xlim()
    texts = [t for t in right.texts if t.get_text()]
    assert texts and all(t.get_fontsize() < 9 for t in texts)     # scaled to fit
    assert x1 > x0


def test_the_checker_sees_texts_over_texts_and_nodes_and_outside_the_figure():
    ax = circuit().draw()
    q = next(t for t in ax.texts if t.get_gid() == "label:q" and t.get_text() == "3")
    q.set_position(next(p for p in ax.patches if p.get_gid() == "node:f").get_center())
    ax.text(1e3, 0, "far away", gid="note")
    problems, _, _ = check_geometry(ax)
    assert any("'3' (label:q) overlaps node f" in p for p in problems)
    assert any("'3' (label:q) overlaps text '*' (label:f)" in p
               or "overlaps text '3' (label:q)" in p for p in problems)
    assert any("'far away' leaves the figure" in p for p in problems)


def test_the_checker_sees_an_arrow_through_a_node():
    # the checker itself must fail on the defect it is there to catch
    g = left_fold()
    ax = g.draw()
    edge = next(p for p in ax.patches if p.get_gid() == "edge:x4:add_11:1")
    far = next(p for p in ax.patches if p.get_gid() == "node:add_8")
    (fx, fy) = far.get_center()
    from matplotlib.path import Path
    edge.set_positions = None
    edge._path_original = Path([(fx - 1, fy), (fx + 1, fy)])
    problems, _, _ = check_geometry(ax)
    assert any("crosses node add_8" in p for p in problems)


def test_every_arrow_ends_with_a_straight_piece_that_gives_its_head(monkeypatch):
    # the arrow into the seed of a gradient graph (the widest node of its column)
    # ended with a piece of length 0 and was drawn without its head
    g = grad_circuit()
    edge = next(p for p in g.draw().patches if p.get_gid() == "edge:f:df:0")
    *_, a, b = edge._path_original.vertices
    assert b[0] - a[0] >= ge.layout.HEAD * 0.99 and a[1] == b[1]
    monkeypatch.setattr(ge.layout, "HEAD", 0.0)
    problems, _, _ = check_geometry(g.draw())
    assert "arrow f -> df has no direction at its head (drawn headless)" in problems


@pytest.mark.parametrize("make, gate", [(one_over_one_plus_e, None), (label_minus_out, "err"),
                                        (notebook04, None), (grad_neuron, "f")],
                         ids=["1/(1+e)", "0.8-out", "y-a2", "grad-neuron"])
def test_the_first_operand_comes_from_above_without_crossing(make, gate):
    # the constant of 1/(...) and of 0.8 - out was seen entering its gate from below
    g = make()
    ax = g.draw(max_nodes=None)
    gate = gate or next(v for v in g.dag if g[v].kind == "gate"
                        and g[v].gate.op in ("div", "sub"))
    arrows = {(p.get_gid().rsplit(":", 1)[1]): p._path_original.vertices
              for p in ax.patches if (p.get_gid() or "").startswith("edge:")
              and _ends(p.get_gid(), set(g.dag))[1] == gate}
    first, second = arrows["0"], arrows["1"]
    assert first[0][1] > second[0][1]           # its source sits higher
    assert first[-1][1] > second[-1][1]         # its port too: the arrows do not cross


def test_zero_gradients_are_written_0_never_minus_0():
    # d(dx)/dx of (x + y) * z is 0.0 * -4.0 = -0.0: every picture, caption and DOT label
    # writes 0
    import re

    h = grad_circuit()
    assert str(h["x"].grad) == "-0.0"
    minus_zero = re.compile(r"(?<![\d.e])-0(?![\d.])")
    axes = [h.draw()] + [h.draw(step=k) for k in range(4)]
    texts = [t.get_text() for ax in axes for t in ax.texts] + [h.to_dot()]
    assert any("0" == t for t in texts)
    assert not [t for t in texts if minus_zero.search(t)]


def random_gradient_graph(seed):
    g = random_dag(seed)
    leaf = next(v for v in g.dag if g[v].kind in ("input", "parameter")
                and g[v].value is not None)        # one the output depends on
    h = ge.grad(g, leaf)
    # an input the output does not use keeps no value; the gradient graph keeps it too
    return _run(h, {v: 1.0 if g[v].value is None else g[v].value
                    for v in h.dag if h[v].kind == "input"})


def _note(ax):
    return next(t.get_text() for t in ax.texts if t.get_gid() == "note")


def test_an_overview_too_wide_at_60_nodes_is_cut_further():
    # the 60 nodes nearest the output of this gradient graph (103 nodes) were 29 inches
    # wide: the overview goes back fewer steps until it fits
    h = random_gradient_graph(5)
    ax = h.draw()
    nodes, _ = assert_clean(ax)
    assert ax.figure.get_size_inches()[0] <= ge.draw.MAX_WIDTH + 1.0
    assert 10 < len(nodes) < ge.draw.MAX_NODES
    assert f"(of {len(h)}; cut to fit 24 inches)" in _note(ax)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_gradient_graphs_of_random_dags_are_drawn_cleanly(seed):
    h = random_gradient_graph(seed)
    ax = h.draw()
    assert_clean(ax)
    assert ax.figure.get_size_inches()[0] <= ge.draw.MAX_WIDTH + 1.0
    if len(h) <= 200:
        assert_clean(h.draw(max_nodes=None))


def test_an_imported_torch_network_reads_as_its_layers():
    g = imported_torch()
    ax = g.draw()
    symbols = sorted(t.get_text() for t in ax.texts if t.get_fontsize() == ge.draw.SYMBOL)
    assert symbols == ["(·)ᵀ", "(·)ᵀ", "+", "+", "a@b", "a@b", "tanh", "Σ"]
    assert sorted(t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("port:")) \
        == ["a", "a", "b", "b"]
