import re
from html.parser import HTMLParser

import numpy as np
import pytest

import graphengine as ge
from graphengine import GraphError, explain
from graphengine.explain import fmt


def circuit():
    g = ge.ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(x, y, name="q")
    g.mul(q, z, name="f")
    g.forward(x=-2.0, y=5.0, z=-4.0)
    return g


def test_the_circuit():
    assert str(circuit().explain()) == """\
node  computes  value  df/dnode
x     input     -2     -4
y     input     5      -4
z     input     -4     3
q     x + y     3      -4
f     q * z     -12    1

f = -12. Each gradient below is the sum over the paths to f
of the product of the local derivatives along the path:

df/dx = -4  (1 path)
  x -> q -> f: 1 * -4 = -4

df/dy = -4  (1 path)
  y -> q -> f: 1 * -4 = -4

df/dz = 3  (1 path)
  z -> f: 3"""


def test_a_node_used_twice_gives_two_marked_paths():
    g = ge.ComputationalGraph()
    x = g.input("x")
    y = x * x
    g.forward(x=3.0)
    assert str(g.explain()) == f"""\
node   computes  value  df/dnode
x      input     3      6
{y.name}  x * x     9      1

f = {y.name} = 9. Each gradient below is the sum over the paths to {y.name}
of the product of the local derivatives along the path:

df/dx = 6  (sum over 2 paths)
  x -[0]-> {y.name}: 3
  x -[1]-> {y.name}: 3

-[k]-> : the path enters the gate as its input k (a gate that reads one node twice)."""


def test_source_limits_the_paths_to_one_leaf():
    text = str(circuit().explain(source="z"))
    assert "df/dz = 3  (1 path)\n  z -> f: 3" in text
    assert "df/dx =" not in text and "df/dy =" not in text
    assert str(circuit().explain(source=circuit()["q"].name)).endswith("  q -> f: -4")


def test_minus_zero_prints_as_zero():
    assert fmt(-0.0) == "0" and fmt(np.float64(-0.0)) == "0"
    assert fmt(np.array([-0.0, 1.5])) == "[0, 1.5]"
    g = ge.ComputationalGraph()
    a, w = g.input("a"), g.parameter("w", -2.0)
    g.mul(a, w, name="o")
    g.forward(a=-0.0)           # o = -0 * -2 = 0, do/dw = a = -0
    text = str(g.explain())
    assert "-0" not in text
    assert "do/dw = 0  (1 path)\n  w -> o: 0" in text


def test_parameters_and_unused_leaves():
    g = ge.ComputationalGraph()
    a, w = g.input("a"), g.parameter("w", 2.0)
    g.input("u")
    g.mul(a, w, name="o")
    g.forward(a=1.5)
    text = str(g.explain())
    assert "w     parameter  2      1.5" in text
    assert "u     input      -      0" in text        # not computed: not fed, not needed
    assert "do/du = 0  (no path to o)" in text


def test_formulas_write_unnamed_gates_out_with_the_right_parentheses():
    g = ge.ComputationalGraph.from_expression("x - (y - z) + (-x) ** 2 + 2 ** x / (y * z)")
    g.forward(x=1.0, y=2.0, z=3.0)
    computes = [re.split(r"  +", line)[1] for line in str(g.explain()).splitlines()[1:len(g) + 1]]
    assert "x - (y - z)" in computes
    assert "(-x) ** 2" in computes
    assert "2 ** x / (y * z)" in computes


def test_long_formulas_fall_back_to_the_names_of_their_inputs():
    g = ge.ComputationalGraph()
    x = g.input("x")
    s = x
    for _ in range(12):
        s = s * x
    g.forward(x=1.0)
    line = next(row for row in str(g.explain()).splitlines() if row.startswith(s.name))
    formula = re.split(r"  +", line)[1]
    assert formula.endswith(" * x") and len(formula) <= explain.EXPR_WIDTH


def test_arrays_get_the_table_and_a_note_instead_of_paths():
    g = ge.ComputationalGraph()
    x = g.input("x")
    W = g.parameter("W", [[0.5, 0.3], [0.2, 0.4]])
    g.sum(g.sigmoid(x @ W), name="L")
    g.forward(x=np.arange(20.0).reshape(10, 2))
    text = str(g.explain())
    assert "\nW          parameter            [[0.5, 0.3], [0.2, 0.4]]  " in text
    assert "\nx          input                shape 10x2, 0 .. 19  " in text
    assert text.endswith("Paths are listed for scalar graphs only (node 'x' has shape "
                         "(10, 2)); the table gives every gradient.")
    assert "->" not in text


def test_paths_nodes_and_leaves_are_bounded(monkeypatch):
    g = ge.ComputationalGraph()
    xs = [g.input(f"x{k}") for k in range(5)]
    node = xs[0]
    for _ in range(12):                      # 2**12 paths from x0
        node = node * 0.5 + node * 0.5
    for x in xs[1:]:
        node = node + x
    g.forward({f"x{k}": 1.0 for k in range(5)})
    monkeypatch.setattr(explain, "NODES_SHOWN", 10)
    monkeypatch.setattr(explain, "SOURCES_SHOWN", 3)
    text = str(g.explain())
    assert f"... and {len(g) - 10} more nodes (explain lists the first 10)" in text
    assert ("4096 paths, more than the 64 explain lists; backward sums them in one pass"
            in text)
    assert "x2 -> " in text and "x3 -> " not in text
    assert "1 path; paths listed for the first 3 leaves, pass source= for another" in text
    assert "x4 -> " in str(g.explain(source="x4"))


def test_html_renders_as_tables():
    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.cells, self.tags = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            if self.tags and self.tags[-1] in ("td", "th") and data.strip():
                self.cells.append(data)

    g = ge.ComputationalGraph()
    x = g.input("x")
    g.mul(x, x, name="x<y")                  # escaped, not markup
    g.forward(x=3.0)
    page = g.explain()._repr_html_()
    parser = Cells()
    parser.feed(page)
    assert page.count("<table>") == 2 and "x&lt;y" in page and "<y" not in page
    assert parser.cells[:4] == ["node", "computes", "value", "dx<y/dnode"]
    assert ["x -[0]-> x<y", "3", "3"] == parser.cells[-6:-3]


def test_gradients_follow_the_values_on_hand():
    g = circuit()
    g.backward()
    g.forward(x=1.0, y=1.0, z=1.0)           # the gradients on hand are stale
    text = str(g.explain())
    assert "x     input     1      1" in text and "q     x + y     2      1" in text
    assert g.run.grads_current


def test_mistakes():
    g = ge.ComputationalGraph()
    x = g.input("x")
    g.exp(x, name="e")
    with pytest.raises(GraphError, match="explain needs a forward first.*'e'"):
        g.explain()
    g.forward(x=0.0)
    with pytest.raises(GraphError, match="explain's source 'nope' is not a node"):
        g.explain(source="nope")
    assert "de/dx = 1  (1 path)" in str(g.explain())


def test_long_paths_are_counted_not_listed():
    g = ge.ComputationalGraph()
    x = g.input("x")
    h = x
    for _ in range(30):
        h = h.tanh()
    g.forward(x=0.1)
    text = str(g.explain())
    assert text.endswith(f"(1 path, up to 30 edges long, longer than the "
                         f"{explain.EDGES_SHOWN} explain lists)")
    assert "x -> " not in text
