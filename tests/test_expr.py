import os

import pytest

from graphengine import ComputationalGraph, GraphError
from graphengine.expr import MAX_CHARS, MAX_PARENS


def structure(g):
    nodes = [(v, a["kind"], a["gate"] and a["gate"].op, a["gate"] and a["gate"].config(),
              a.get("value")) for v, a in g.dag.nodes(data=True)]
    edges = sorted(g.dag.edges(data="slot"))
    return nodes, edges, g.output.name


def circuit():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    (x + y) * z
    return g


def gates():
    g = ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.mul(g.max(x, y), g.sigmoid(z))
    return g


def powers():
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    -(x ** 3) + 2 ** y / (x - 1.5) * -2
    return g


def calls():
    g = ComputationalGraph()
    a, b = g.input("a"), g.input("b")
    g.op("tanh", g.op("exp", a) + g.relu(g.log(b))) - g.pow(a, 0.5)
    return g


@pytest.mark.parametrize("text, build", [
    ("(x + y) * z", circuit),
    ("max(x, y) * sigmoid(z)", gates),
    ("-(x ** 3) + 2 ** y / (x - 1.5) * -2", powers),
    ("tanh(exp(a) + relu(log(b))) - pow(a, 0.5)", calls),
])
def test_same_graph_as_the_builders(text, build):
    assert structure(ComputationalGraph.from_expression(text)) == structure(build())


def test_circuit_values_and_gradients():
    g = ComputationalGraph.from_expression("(x + y) * z")
    assert g.forward(x=-2, y=5, z=-4) == -12.0
    grads = g.backward()
    assert (grads["x"], grads["y"], grads["z"]) == (-4.0, -4.0, 3.0)


def test_a_name_used_twice_is_one_input_with_two_edges():
    g = ComputationalGraph.from_expression("x * x")
    assert [n.name for n in g.inputs()] == ["x"]
    assert sorted(g.dag.edges(data="slot")) == [("x", "mul_1", 0), ("x", "mul_1", 1)]
    g.forward(x=3.0)
    assert g.backward()["x"] == 6.0


def test_inputs_in_order_of_first_appearance():
    g = ComputationalGraph.from_expression("b * (a + b) + c")
    assert [n.name for n in g.inputs()] == ["b", "a", "c"]


def test_signed_literal_is_one_constant_and_a_number_exponent_is_pow():
    g = ComputationalGraph.from_expression("x * -2 + x ** -1 + x ** y")
    assert [n.value for n in g.nodes("constant")] == [-2.0]
    ops = [n.gate.op for n in g.nodes("gate")]
    assert ops == ["mul", "pow", "add", "power", "add"]
    assert g["pow_4"].gate.p == -1.0


def test_unary_plus_is_the_identity():
    g = ComputationalGraph.from_expression("+x * 2")
    assert [n.gate.op for n in g.nodes("gate")] == ["mul"]


HOSTILE = [
    ("__import__('os').system('touch x')", r"attribute access '\.system'"),
    ("__import__('os')", r"call of '__import__'"),
    ("x.__class__", r"attribute access '\.__class__'"),
    ("open('f')", r"call of 'open' \(not a gate\)"),
    ("(lambda: 1)()", r"call of a lambda"),
    ("lambda: x", r"lambda"),
    ("x[0]", r"subscript"),
    ("[x for x in y]", r"list comprehension"),
    ("sum(x for x in y)", r"generator expression"),
    ("sum(x, axis=1)", r"keyword argument axis="),
    ("max(*x)", r"starred argument"),
    ("max(x)", r"max\(\) with 1 argument \(it takes 2\)"),
    ("max(x, y, z)", r"max\(\) with 3 arguments \(it takes 2\)"),
    ("pow(x, y)", r"pow\(\) at column 1 takes a number as exponent \(pow\(x, 3\)\); for an "
                  r"exponent that is a formula write x \*\* y$"),
    ("2 * pow(x, y + 1)", r"pow\(\) at column 5 .* write x \*\* \(y \+ 1\)$"),
    ("pow(x)", r"pow\(\) at column 1 takes two arguments, a formula and a number: "
               r"pow\(x, 3\); got 1"),
    ("\u0445 * x", r"the name '\u0445' at column 1 has the non-ASCII letter '\u0445' "
                   r"\(CYRILLIC SMALL LETTER HA\); names are ASCII letters"),
    ("x * y + \u0445", r"the name '\u0445' at column 9"),
    ("\u03b1 * x", r"GREEK SMALL LETTER ALPHA"),
    ("sigm\u043eid(x)", r"the name 'sigm\u043eid' at column 1 has the non-ASCII letter "
                        r"'\u043e' \(CYRILLIC SMALL LETTER O\)"),
    ("  x +", r"invalid syntax"),
    ("  x // 2", r"operator '//' at column 3"),
    ("__x__ + 1", r"dunder name '__x__'"),
    ("x // 2", r"operator '//'"),
    ("x @ y", r"operator '@'"),
    ("~x", r"unary operator '~'"),
    ("x if y else z", r"conditional expression"),
    ("x < y", r"comparison"),
    ("'a' * x", r"a string"),
    ("True * x", r"constant True"),
    ("1j * x", r"constant 1j"),
    ("(x := 1) + x", r"assignment expression"),
    ("f'{x}'", r"f-string"),
    ("x +", r"invalid syntax"),
    ("import os", r"invalid syntax"),
    ("x\x00", r"null bytes"),
    ("x", r"no operation to compute"),
    ("   ", r"the text is empty"),
    ("x" * 10_000_000, r"10000000 characters, expected at most"),
    ("(" * 10_000 + "x" + ")" * 10_000, r"characters, expected at most"),
    ("(" * (MAX_PARENS + 1) + "x" + ")" * (MAX_PARENS + 1), r"brackets nested 51 deep"),
    ("-" * (MAX_CHARS - 1) + "x", None),
    ("+".join(["x"] * 999), None),
    (12, r"expected a string, got int"),
]


@pytest.mark.parametrize("text, match", HOSTILE, ids=lambda v: repr(v)[:30])
def test_hostile_text_is_a_graph_error_with_no_side_effect(text, match, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    if match is None:                      # long but legal: builds without recursion
        g = ComputationalGraph.from_expression(text)
        assert g.forward(x=1.0) in (1.0, -1.0, 999.0)
    else:
        with pytest.raises(GraphError, match=match):
            ComputationalGraph.from_expression(text)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text", [" x * y", "x * y ", "\t x * y\n", "\n(x *\n y)\n"])
def test_surrounding_whitespace_is_allowed(text):
    g = ComputationalGraph.from_expression(text)
    assert [n.name for n in g.inputs()] == ["x", "y"] and g.forward(x=2, y=3) == 6.0


def test_a_construct_python_warns_about_is_refused_without_a_warning():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(GraphError, match=r"conditional expression at column 1"):
            ComputationalGraph.from_expression("1if x else 2")
        with pytest.raises(GraphError, match=r"comparison"):
            ComputationalGraph.from_expression("x is 1")
    assert caught == []


def test_fullwidth_names_are_normalised_as_python_reads_them():
    # NFKC, as Python's parser: the fullwidth x (U+FF58) is the name x
    g = ComputationalGraph.from_expression("\uff58 * x + \uff59")
    assert [n.name for n in g.inputs()] == ["x", "y"]
    assert g.forward(x=3.0, y=1.0) == 10.0 and g.backward()["x"] == 6.0
