import io
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pydot  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

import graphengine as ge  # noqa: E402
from graphengine import ComputationalGraph, GraphError  # noqa: E402
from graphengine.draw import BLUE, GREEN, RED, fmt, repr_svg  # noqa: E402

# pydot's parser uses pyparsing names that newer pyparsing deprecates
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def circuit():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.mul(g.add(x, y, name="q"), z, name="f")
    g.forward(x=-2.0, y=5.0, z=-4.0)
    g.backward()
    return g


def square():
    g = ComputationalGraph.from_expression("x * x + sigmoid(max(x, y) * 2)")
    g.forward(x=1.0, y=0.5)
    g.backward()
    return g


def network():
    g = ComputationalGraph()
    x = g.input("x")
    w1 = g.parameter("W1", [[0.5, 0.3], [0.2, 0.4]])
    h = g.sigmoid(x @ w1 + g.parameter("b1", [0.1, 0.2]), name="h")
    o = g.sigmoid(h @ g.parameter("W2", [[0.6], [0.7]]) + 0.3, name="o")
    g.mse(o, g.constant([[0.8]], name="label"), name="loss")
    g.forward(x=np.array([[0.5, 0.3]]))
    g.backward()
    return g


def classifier():
    g = ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [3, 4, 2])
    g.softmax_cross_entropy(logits, g.input("labels"), name="loss")
    g.forward(x=np.ones((2, 3)), labels=np.array([0, 1]))
    g.backward()
    return g


def not_run():
    g = ComputationalGraph.from_expression("exp(a) / (b - 1) ** 2 + tanh(-a) - relu(b)")
    g.input("unused")
    return g


def two_outputs():
    g = ComputationalGraph()
    x = g.input("x")
    g.neg(x)
    g.exp(x)
    return g


def chain():
    g = ComputationalGraph()
    x = g.input("x")
    n = x
    for _ in range(40):
        n = g.sigmoid(n * 1.1 + x)
    g.forward(x=0.3)
    g.backward()
    return g


def weird_names():
    g = ComputationalGraph()
    a = g.input('a"b\\c')
    g.mul(a, g.parameter("<w> & {p}", 2.0), name="out\nput")
    g.forward({'a"b\\c': 1.0})
    return g


EXAMPLES = [circuit, square, network, classifier, not_run, two_outputs, chain, weird_names]


@pytest.mark.parametrize("make", EXAMPLES, ids=lambda f: f.__name__)
def test_every_example_renders(make):
    g = make()
    ax = g.draw()
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=40)
    assert buf.getvalue().startswith(b"\x89PNG")
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == min(g.dag.number_of_edges(), len(arrows)) > 0 or len(g) == 0


def test_an_empty_graph_draws_an_empty_picture():
    ax = ComputationalGraph().draw()
    assert [p for p in ax.patches if (p.get_gid() or "").startswith("node:")] == []


def texts(ax, color):
    return [t.get_text() for t in ax.texts if t.get_color() == color]


def by_gid(ax, gid):
    return [t.get_text() for t in ax.texts if t.get_gid() == gid]


def test_circuit_shows_values_green_and_gradients_red():
    ax = circuit().draw()
    assert sorted(texts(ax, GREEN)) == sorted(["-2", "5", "-4", "3", "-12"])
    assert sorted(texts(ax, RED)) == sorted(["-4", "-4", "3", "-4", "1"])
    assert by_gid(ax, "label:q") == ["+", "3", "q", "-4"]


def test_left_to_right_leaves_just_before_their_first_user():
    g = square()
    ax = g.draw()
    centre = {p.get_gid()[5:]: p.get_window_extent().x0 for p in ax.patches
              if (p.get_gid() or "").startswith("node:")}
    out = g.output.name
    assert all(centre[v] < centre[out] for v in g.dag if v != out)
    users = {v: min(centre[w] for w in g.dag.succ[v]) for v in g.dag if g.dag.succ[v]}
    for v in g.dag:
        if g[v].kind != "gate" and v in users:     # nothing between a leaf and its user
            between = [w for w in g.dag if centre[v] < centre[w] < users[v]]
            assert between == [], (v, between)


def test_x_times_x_draws_two_arrows_into_two_ports():
    g = ComputationalGraph.from_expression("x * x")
    ax = g.draw()
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 2
    first, second = (a.get_path().vertices for a in arrows)
    assert first.shape != second.shape or not np.allclose(first, second)


def test_small_arrays_show_their_numbers_large_ones_shape_and_range():
    assert fmt(np.array([[0.5, 0.3], [0.2, 0.4]])) == "[[0.5, 0.3],\n [0.2, 0.4]]"
    assert fmt(np.arange(9.0)) == "[0, 1, 2, 3, 4, 5, 6, 7, 8]"
    assert fmt(np.arange(10.0)) == "10 in [0, 9]"
    assert fmt(np.full((2, 2, 2), 1 / 3)) == "2×2×2 [0.333, 0.333, 0.333, 0.333, 0.333, " \
                                             "0.333, 0.333, 0.333]"
    assert fmt(-0.0) == "0" and fmt(np.array(-0.0)) == "0"
    assert fmt(np.r_[np.arange(10.0), np.nan]) == "11 in [0, 9], 1 nan"
    assert fmt(np.full((3, 4), np.nan)) == "3×4, all nan"
    ax = network().draw()
    assert "[[0.5, 0.3],\n [0.2, 0.4]]" in texts(ax, GREEN)


def test_stale_gradients_are_not_drawn_as_current():
    g = circuit()
    g.forward(x=1.0, y=1.0, z=1.0)
    assert not g.run.grads_current
    ax = g.draw()
    assert texts(ax, RED) == []
    assert any("gradients not drawn" in t for t in by_gid(ax, "note"))
    assert sorted(texts(ax, GREEN)) == sorted(["1", "1", "1", "2", "2"])
    g.backward()
    assert sorted(texts(g.draw(), RED)) == ["1", "1", "1", "1", "2"]
    g.forward(x=3.0, y=1.0, z=1.0)
    assert "<font color=\"#c62828\">" not in g.to_dot()


def test_constants_and_integer_labels_get_no_gradient():
    ax = network().draw()
    assert by_gid(ax, "label:label")[0] == "label"
    assert len(by_gid(ax, "label:label")) == 2          # name and value, no gradient
    ax = classifier().draw()
    assert [t.get_color() for t in ax.texts if t.get_gid() == "label:labels"] == \
        ["black", GREEN]
    g = ComputationalGraph.from_expression("x * 2")
    g.forward(x=1.0)
    g.backward()
    const = next(v for v in g.dag if g[v].kind == "constant")
    assert by_gid(g.draw(), f"label:{const}") == ["2"]


@pytest.mark.parametrize("text, marks", [
    ("a - b", ["a", "b"]), ("a / b", ["a", "b"]), ("a ** b", ["a", "b"]),
])
def test_operands_of_gates_that_do_not_commute_are_marked(text, marks):
    g = ComputationalGraph.from_expression(text)
    ax = g.draw()
    out = g.output.name
    ports = [t for t in ax.texts if t.get_gid() == f"port:{out}"]
    assert sorted(t.get_text() for t in ports) == marks
    first = next(t for t in ports if t.get_text() == marks[0])
    second = next(t for t in ports if t.get_text() == marks[1])
    assert first.get_position()[1] > second.get_position()[1]        # slot 0 on top


def test_one_over_one_plus_e_marks_the_constant_as_numerator():
    g = ComputationalGraph()
    x = g.input("x")
    e = g.exp(x)
    s = 1 / (1 + e)
    ax = g.draw()
    arrows = {p.get_gid(): p for p in ax.patches if (p.get_gid() or "").startswith("edge:")}
    const = next(v for v in g.dag if g[v].kind == "constant" and "div" in str(g.dag.succ[v]))
    assert f"edge:{const}:{s.name}:0" in arrows and f"edge:add_2:{s.name}:1" not in arrows
    ports = {t.get_text(): t.get_position()[1] for t in ax.texts
             if t.get_gid() == f"port:{s.name}"}
    assert ports["a"] > ports["b"]            # the numerator's mark on top


def test_matmul_and_losses_mark_their_operands():
    ax = classifier().draw()
    ports = [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("port:")]
    assert sorted(ports) == ["a", "a", "b", "b", "labels", "logits"]


def test_negation_differs_from_subtraction():
    g = ComputationalGraph.from_expression("-a - b")
    ax = g.draw()
    symbols = [t.get_text() for t in ax.texts if t.get_fontsize() == ge.draw.SYMBOL]
    assert "neg" in symbols and "a−b" in symbols


def test_kinds_are_told_apart_with_a_legend():
    ax = network().draw()
    faces = {p.get_gid()[5:]: p.get_facecolor() for p in ax.patches
             if (p.get_gid() or "").startswith("node:")}
    assert len({faces["x"], faces["W1"], faces["label"]}) == 3
    assert by_gid(ax, "legend") == ["input", "parameter", "constant", "gate", "value",
                                    "gradient"]


# ---------------------------------------------------------------- step by step

def test_step_zero_shows_only_the_seed():
    g = circuit()
    g.forward(x=-2.0, y=5.0, z=-4.0)      # values, no backward
    ax = g.draw(step=0)
    assert texts(ax, RED) == ["1"]
    assert by_gid(ax, "caption")[0].startswith("step 0 of 2: the output f gets the seed")


def test_each_step_adds_the_gradients_one_gate_sends():
    g = circuit()
    ax = g.draw(step=1)
    assert sorted(texts(ax, RED)) == ["-4", "1", "3"]
    caption = by_gid(ax, "caption")[0]
    assert "gate f = q * z receives the upstream gradient ∂f/∂f = 1" in caption
    assert "local derivatives: ∂f/∂q = -4, ∂f/∂z = 3" in caption
    assert "q: 1 × -4 = -4, z: 1 × 3 = 3" in caption
    edges = {p.get_gid(): p.get_edgecolor() for p in ax.patches
             if (p.get_gid() or "").startswith("edge:")}
    orange = matplotlib.colors.to_rgba(ge.draw.ORANGE)
    assert [k for k, c in edges.items() if c == orange] == ["edge:q:f:0", "edge:z:f:1"]
    full = g.draw(step=2)
    assert sorted(texts(full, RED)) == sorted(texts(g.draw(), RED))


def test_a_partial_sum_is_marked_until_every_user_has_sent():
    g = ComputationalGraph()
    x = g.input("x")
    a = g.sigmoid(x, name="a")
    g.add(g.mul(x, 3.0, name="m"), a, name="s")
    g.forward(x=0.0)
    rep = ge.draw.replay_backward(g)
    assert [r.node for r in rep.steps] == ["s", "m", "a"]
    ax = g.draw(step=2)
    assert by_gid(ax, "label:x")[-1] == "3 + …"
    ax = g.draw(step=3)
    assert by_gid(ax, "label:x")[-1] == "3.25"


@pytest.mark.parametrize("step", [-1, 3, 2.0, True, "1"])
def test_a_step_out_of_range_is_a_graph_error(step):
    with pytest.raises(GraphError, match=r"has steps 0 to 2"):
        circuit().draw(step=step)


def test_step_needs_a_forward():
    g = ComputationalGraph.from_expression("x * y")
    with pytest.raises(GraphError, match="needs the values of a forward"):
        g.draw(step=0)


def test_every_step_of_a_matrix_network_has_a_caption():
    g = network()
    count = ge.draw.replay_backward(g).count
    assert count == sum(1 for v in g.dag if g[v].kind == "gate")
    for k in range(count + 1):
        assert by_gid(g.draw(step=k), "caption")


def test_the_step_highlighted_and_positional_step():
    g = circuit()
    ax = g.draw(None, 2)
    q = next(p for p in ax.patches if p.get_gid() == "node:q")
    assert q.get_edgecolor() == matplotlib.colors.to_rgba(ge.draw.ORANGE)


# ---------------------------------------------------------------- forward mode

def test_tangents_are_drawn_in_blue():
    g = circuit()
    t = g.jvp({"x": 1.0})
    ax = g.draw(tangents=t)
    assert sorted(texts(ax, BLUE)) == sorted(fmt(v) for v in t.values())
    ax = g.draw(tangents=t, step=1)
    assert sorted(texts(ax, BLUE)) == ["0", "0", "1", "1"]
    assert "dq = 1 × dx + 1 × dy" in by_gid(ax, "caption")[0]
    with pytest.raises(GraphError, match="no tangent for gate"):
        g.draw(tangents={"x": 1.0})


# ---------------------------------------------------------------- big graphs

def test_a_big_graph_shows_an_overview_and_says_how_to_draw_it_all():
    g = chain()
    assert len(g) > ge.draw.MAX_NODES
    ax = g.draw()
    nodes = [p for p in ax.patches if (p.get_gid() or "").startswith("node:")]
    assert 10 < len(nodes) <= ge.draw.MAX_NODES
    assert any("max_nodes=None" in t for t in by_gid(ax, "note"))
    assert g.output.name in {p.get_gid()[5:] for p in nodes}
    assert texts(ax, GREEN)                   # numbers stay
    ax = g.draw(max_nodes=None)
    assert len([p for p in ax.patches if (p.get_gid() or "").startswith("node:")]) == len(g)


def test_a_step_of_a_big_graph_draws_its_overview():
    g = chain()
    ax = g.draw(step=100)
    assert "(not in this picture)" in by_gid(ax, "caption")[0]
    assert len([p for p in ax.patches if (p.get_gid() or "").startswith("node:")]) <= 60
    first = by_gid(g.draw(step=1), "caption")[0]
    assert first.startswith("step 1 of 120: gate sigmoid_160 = σ(add_159)")


def test_drawing_everything_is_bounded(monkeypatch):
    g = chain()
    monkeypatch.setattr(ge.draw, "FULL_LIMIT", 100)
    with pytest.raises(GraphError, match=r"drawing all 161 nodes is beyond the limit of 100"):
        g.draw(max_nodes=None)
    assert g.draw()                      # the overview needs no permission
    monkeypatch.setattr(ge.draw, "FULL_LIMIT", 2000)
    monkeypatch.setattr(ge.layout, "MAX_DUMMIES", 50)
    with pytest.raises(GraphError, match=r"needs [0-9,]+ bend points .* beyond the limit of 50"):
        g.draw(max_nodes=200)


def test_jupyter_picture_of_a_4501_node_graph_is_fast_and_small():
    g = ComputationalGraph()
    x = g.input("x")
    n = x
    while len(g) < 4501:
        n = g.tanh(n * 0.5 + x)
    g.forward(x=0.1)
    g.backward()
    svg = g._repr_svg_()
    # fast by design, not by a timer: the picture is an overview of a bounded number
    # of nodes (benchmarks, not tests, give the time: about 0.3 s here)
    assert svg.startswith("<?xml") and len(svg) < 400_000
    assert "g.draw(max_nodes=N) draws the N nearest, up to 2,000" in svg


def test_repr_svg_for_jupyter():
    svg = circuit()._repr_svg_()
    assert svg.startswith("<?xml") and "<svg" in svg
    assert repr_svg(ComputationalGraph()) is None


# ---------------------------------------------------------------- missing libraries

def test_matplotlib_is_not_imported_by_the_module():
    code = "import graphengine.draw, sys; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("missing", ["matplotlib", "igraph"])
def test_a_missing_library_is_a_one_line_hint(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)
    g = circuit()
    with pytest.raises(ImportError, match=r"needs .*pip install 'graphengine\[draw\]'") as exc:
        g.draw()
    assert isinstance(exc.value, GraphError)          # the CLI prints it in one line
    assert "\n" not in str(exc.value)
    with pytest.raises(ImportError, match="pip install"):
        ge.draw.animate_backward(g)
    assert g._repr_svg_() is None
    assert "digraph" in g.to_dot()


# ---------------------------------------------------------------- animation and widget

def test_animation_as_gif_and_html(tmp_path):
    g = circuit()
    anim = ge.draw.animate_backward(g, tmp_path / "backprop.gif", interval=500)
    from PIL import Image
    with Image.open(tmp_path / "backprop.gif") as im:
        assert im.n_frames == 3
    ge.draw.animate_tangents(g, g.jvp({"y": 1.0}), tmp_path / "forward.html")
    assert "<script" in (tmp_path / "forward.html").read_text()
    assert "<script" in anim._repr_html_()
    with pytest.raises(GraphError, match=r"\.gif or \.html"):
        ge.draw.animate_backward(g, tmp_path / "x.mp3")


def test_each_frame_has_its_own_caption_at_the_same_size():
    anim = ge.draw.animate_backward(network())
    sizes = set()
    for k in (0, 3, anim.count):
        ax = anim.frame(k).axes[0]
        caption = by_gid(ax, "caption")[0]
        assert caption.startswith(f"step {k} of {anim.count}")
        sizes |= {t.get_fontsize() for t in ax.texts if t.get_gid() == "caption"}
    assert sizes == {ge.draw.FONT}


def test_stepper_widget_steps_through_the_frames():
    g = circuit()
    box = ge.draw.stepper(g)
    (play, slider), image = box.children[0].children, box.children[1]
    assert (play.max, slider.max) == (2, 2)
    first = image.value
    slider.value = 2
    assert bytes(image.value) != bytes(first)
    assert bytes(image.value).startswith(b"\x89PNG")


# ---------------------------------------------------------------- Graphviz

@pytest.mark.parametrize("make", [m for m in EXAMPLES if m is not chain],
                         ids=lambda f: f.__name__)
def test_to_dot_parses_with_one_statement_per_node_and_argument(make):
    g = make()
    (graph,) = pydot.graph_from_dot_data(g.to_dot())
    names = [n.get_name() for n in graph.get_nodes() if n.get_name() not in ("node", "edge")]
    assert len(names) == len(g)
    assert len(graph.get_edges()) == g.dag.number_of_edges()


def test_to_dot_puts_value_and_gradient_inside_the_node_label():
    g = circuit()
    (graph,) = pydot.graph_from_dot_data(g.to_dot())
    q = graph.get_node('"q"')[0].get("label")
    assert "<b>+</b>" in q and f'<font color="{GREEN}">3</font>' in q
    assert f'<font color="{RED}">-4</font>' in q
    x = graph.get_node('"x"')[0].get("label")
    assert f'<font color="{GREEN}">-2</font>' in x and f'<font color="{RED}">-4</font>' in x
    assert 'border="3"' in graph.get_node('"f"')[0].get("label")        # the output


def test_to_dot_marks_operands():
    g = ComputationalGraph.from_expression("a / b")
    dot = g.to_dot()
    assert '"a" -> "div_2" [headlabel="a"];' in dot
    assert '"b" -> "div_2" [headlabel="b"];' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("make", [circuit, network, weird_names], ids=lambda f: f.__name__)
def test_dot_renders_it(make, tmp_path):
    out = subprocess.run(["dot", "-Tsvg"], input=make().to_dot(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "<svg" in out.stdout and "Warning" not in out.stderr
