import io
import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

import graphengine as ge  # noqa: E402
from graphengine import ComputationalGraph  # noqa: E402
from graphengine.draw import GREEN, RED, repr_svg  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


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


EXAMPLES = [circuit, square, network, not_run, two_outputs, chain, weird_names,
            ComputationalGraph]


@pytest.mark.parametrize("make", EXAMPLES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("svg", b"<?xml")])
def test_every_example_renders(make, fmt, magic):
    g = make()
    ax = g.draw()
    buf = io.BytesIO()
    ax.figure.savefig(buf, format=fmt)
    assert buf.getvalue().startswith(magic)
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == g.dag.number_of_edges()


def texts(ax, color):
    return [t.get_text() for t in ax.texts if t.get_color() == color]


def test_circuit_shows_values_green_and_gradients_red():
    ax = circuit().draw()
    assert texts(ax, GREEN) == ["-2", "5", "-4", "3", "-12"]
    assert texts(ax, RED) == ["-4", "-4", "3", "-4", "1"]


def test_left_to_right_leaves_first_and_output_last():
    g = square()
    ax = plt.figure().add_subplot()
    ge.draw.draw(g, ax=ax)
    labels = {t.get_text(): t.get_position() for t in ax.texts}
    assert labels["x"][0] == labels["y"][0] == 0.0
    out = labels["add_7"][0]
    assert all(x < out for name, (x, _) in labels.items() if name in ("mul_2", "max_3",
                                                                       "sigmoid_6"))


def test_x_times_x_draws_two_arrows():
    g = ComputationalGraph.from_expression("x * x")
    ax = g.draw()
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 2
    assert sorted(a.get_connectionstyle().rad for a in arrows) == [-0.175, 0.175]


def test_compact_mode_beyond_fifty_nodes_leaves_out_the_numbers():
    g = chain()
    assert len(g) > 50
    ax = g.draw()
    assert texts(ax, GREEN) == texts(ax, RED) == []
    ax = circuit().draw(compact=True)
    assert texts(ax, GREEN) == []


def test_without_forward_there_are_no_numbers():
    g = not_run()
    ax = g.draw()
    assert texts(ax, RED) == [""] * len(g)
    assert sorted(texts(ax, GREEN)) == [""] * (len(g) - 1) + ["1"]   # the one constant


def test_repr_svg_for_jupyter():
    svg = circuit()._repr_svg_()
    assert svg.startswith("<?xml") and "<svg" in svg
    assert repr_svg(ComputationalGraph()) is None


def test_matplotlib_is_not_imported_by_the_module():
    code = "import graphengine.draw, sys; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


STRING = r'"(?:[^"\\]|\\.)*"'
NODE = re.compile(rf"^  ({STRING}) \[(.*)\];$")
EDGE = re.compile(rf"^  ({STRING}) -> ({STRING});$")


def parse_dot(text):
    lines = text.split("\n")
    assert lines[0] == "digraph graphengine {" and lines[-1] == "}"
    nodes, edges = [], []
    for line in lines[1:-1]:
        if m := EDGE.match(line):
            edges.append((m[1], m[2]))
        elif m := NODE.match(line):
            nodes.append(m[1])
        else:
            assert line in ("  rankdir=LR;", '  node [fontname="Helvetica"];'), line
    return nodes, edges


def unquote(s):
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], s[1:-1])


@pytest.mark.parametrize("make", EXAMPLES, ids=lambda f: f.__name__)
def test_to_dot_parses_with_one_statement_per_node_and_argument(make):
    g = make()
    nodes, edges = parse_dot(g.to_dot())
    assert [unquote(n) for n in nodes] == list(g.dag)
    assert sorted((unquote(u), unquote(v)) for u, v in edges) == sorted(g.dag.edges())


def test_to_dot_labels_of_the_circuit():
    dot = circuit().to_dot()
    assert '"q" [shape=circle, label="+", xlabel=<q<br/><font color="#1a8a1a">3</font>' \
           '<br/><font color="#c62828">-4</font>>];' in dot
    assert '"x" [shape=box, style=rounded, label="x", xlabel=<<font color="#1a8a1a">-2' \
           '</font><br/><font color="#c62828">-4</font>>];' in dot
    assert "penwidth=2" in dot.split('"f" [')[1].split("\n")[0]
