"""Fuzzing from_json: every value of valid documents replaced by hostile or ill-typed
values. Only GraphError may escape the loader, and a document it accepts builds a
graph that runs (or refuses with a GraphError) and saves again."""

import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphengine import ComputationalGraph, GraphError


def documents():
    """Valid documents (as Python objects) covering every kind, arrays and configs."""
    g = ComputationalGraph()
    x, y = g.input("x"), g.input("y")
    w = g.parameter("w", 0.5)
    W = g.parameter("W", np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    c = g.constant(2.0, name="c")
    h = g.sigmoid(g.matmul(x, W) + w, name="h")
    s = g.sum(h * c, axis=0, name="s")
    g.add(g.pow(g.mean(s), 3, name="p"), g.max(y, g.neg(y)), name="out")
    g.set_output("out")
    small = ComputationalGraph()
    a = small.input("a")
    small.mul(a, a, name="sq")
    return [json.loads(g.to_json()), json.loads(small.to_json())]


DOCS = documents()
FEED = {"x": np.array([[0.5, -1.0]]), "y": 0.25, "a": 1.5}


def positions(obj, path=()):
    """Every (path, value) in a JSON object: dict keys and list indices."""
    found = [(path, obj)]
    stack = [(path, obj)]
    while stack:
        where, v = stack.pop()
        items = v.items() if isinstance(v, dict) else enumerate(v) \
            if isinstance(v, list) else ()
        for k, child in items:
            found.append((where + (k,), child))
            stack.append((where + (k,), child))
    return found


HUGE = "@HUGE@"       # replaced in the text: json.dumps cannot write these integers

SPECIAL = [
    10 ** 400, -10 ** 400, 2 ** 63, 2 ** 64, -1, 0, 1, 7, 33, 1.5, -0.0, 1e308, 1e-320,
    float("nan"), float("inf"), float("-inf"), True, False, None, "", "x", "out", "add",
    "pow", "float64", "gate", "input", "nan", "inf", "Infinity", "1e400", "n" * 201,
    "\x00", "\u0445", [], {}, [[]], [1, 2], ["x", "x"], [None], [[1], [2, 3]],
    {"a": 1}, {"dtype": "float64", "shape": [1], "data": [1]},
    {"dtype": "float64", "shape": [2 ** 40, 2 ** 40], "data": []},
    {"dtype": "float32", "shape": [1], "data": [1e300]}, [0.7], [1] * 40, [[[[[[1]]]]]],
    HUGE,
]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)
hostile = st.one_of(st.sampled_from(SPECIAL), json_values)


def replace(doc, path, value):
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return doc


def text_of(doc):
    return json.dumps(doc).replace(f'"{HUGE}"', "1" + "0" * 5000)


def check(text):
    try:
        g = ComputationalGraph.from_json(text)
    except GraphError:
        return "refused"
    # accepted: it must run, or refuse with a GraphError, and save again
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)      # the gates' numerics
        feed = {n.name: FEED.get(n.name, 0.5) for n in g.inputs()}
        try:
            g.forward(feed)
            g.backward()
        except GraphError:
            pass
    again = g.to_json()
    assert ComputationalGraph.from_json(again).to_json() == again
    return "accepted"


@st.composite
def mutations(draw):
    doc = draw(st.sampled_from(DOCS))
    spots = positions(doc)
    path, _ = draw(st.sampled_from(spots))
    how = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
    value = draw(hostile)
    if how == "delete" and path:
        doc = json.loads(json.dumps(doc))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        del parent[path[-1]]
        return text_of(doc)
    if how == "add":
        where = dict(spots)[path]
        if isinstance(where, dict):
            key = draw(st.sampled_from(["value", "config", "inputs", "op", "name", "kind",
                                        "output", "zz", "data", "__class__"]))
            return text_of(replace(doc, path + (key,), value))
        if isinstance(where, list):
            return text_of(replace(doc, path, where + [value]))
    return text_of(replace(doc, path, value))


SETTINGS = dict(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=300, **SETTINGS)
@given(mutations())
def test_only_graph_errors_escape_from_json(text):
    check(text)


@pytest.mark.slow
@settings(max_examples=5000, **SETTINGS)
@given(mutations())
def test_only_graph_errors_escape_from_json_many(text):
    check(text)


def test_every_position_of_every_document_with_every_special_value():
    # the exhaustive sweep: both outcomes must turn up, or the fuzzing proves little
    outcomes = {"refused": 0, "accepted": 0}
    for doc in DOCS:
        for path, _ in positions(doc):
            for value in SPECIAL:
                outcomes[check(text_of(replace(doc, path, value)))] += 1
    assert outcomes["refused"] > 1000 and outcomes["accepted"] > 50, outcomes
