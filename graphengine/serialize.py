"""Graphs as JSON text: ``g.to_json()`` and ``ComputationalGraph.from_json(text)``.

The schema, version 1::

    {"format": "graphengine", "version": 1,
     "nodes": [                                    # topological order
       {"name": "x", "kind": "input"},
       {"name": "w", "kind": "parameter", "value": 0.5},
       {"name": "W", "kind": "parameter",
        "value": {"dtype": "float64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}},
       {"name": "c", "kind": "constant", "value": 2.0},
       {"name": "s", "kind": "gate", "op": "sum", "config": {"axis": 0},
        "inputs": ["x"]}],                          # input names by slot; "x * x": ["x", "x"]
     "output": "s"}                                 # or null: the unique unused gate

A value is a JSON number (NaN and Infinity as Python's json writes them) or an array
``{"dtype", "shape", "data"}`` with ``data`` nested lists. ``op`` is a name in the gate
registry ``graphengine.GATES`` and ``config`` the arguments its ``config()`` returns.

Loading checks everything before building (keys, kinds, names, known ops and their
config keys, arity, references, cycles, shapes, dtypes and size limits) and raises a
GraphError naming the node; it never evaluates, imports or unpickles anything.
"""

from __future__ import annotations

import gc
import heapq
import inspect
import json

import networkx as nx
import numpy as np

from . import gates as G
from .errors import GraphError
from .graph import ComputationalGraph

FORMAT, VERSION = "graphengine", 1
MAX_CHARS = 64_000_000
MAX_NODES = 100_000
MAX_ELEMENTS = 10_000_000           # over all arrays of one document
MAX_NAME = 200                      # characters of a name (and of a config string)
MAX_DIGITS = 1000                   # digits of an integer in the text
MAX_NDIM = 32                       # dimensions of an array
MAX_LIST = 32                       # elements of a config list
DTYPES = ("float64", "float32", "float16")

_KEYS = {"input": {"name", "kind"}, "parameter": {"name", "kind", "value"},
         "constant": {"name", "kind", "value"}, "gate": {"name", "kind", "op", "inputs"}}


# ---------------------------------------------------------------- writing

def _value(v, name, budget):
    if isinstance(v, np.ndarray):
        if v.dtype.name not in DTYPES:
            raise GraphError(f"node {name!r}: cannot save an array of dtype {v.dtype}; "
                             f"expected one of {DTYPES}")
        if v.ndim > MAX_NDIM:
            raise GraphError(f"node {name!r}: cannot save an array of {v.ndim} dimensions; "
                             f"from_json reads at most {MAX_NDIM}")
        budget[0] += v.size
        if budget[0] > MAX_ELEMENTS:
            raise GraphError(f"cannot save the graph: its arrays hold {budget[0]} elements "
                             f"or more (reached at node {name!r}), more than the limit "
                             f"{MAX_ELEMENTS} that from_json reads")
        return {"dtype": v.dtype.name, "shape": list(v.shape), "data": v.tolist()}
    return float(v)


def _plain(v):
    return isinstance(v, (str, int, float, bool)) or v is None


def _config(gate, name):
    config = gate.config()
    out = {}
    for key, v in config.items():
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, (np.integer, np.floating)):
            v = v.item()
        if not (_plain_config(v) or (isinstance(v, list) and len(v) <= MAX_LIST
                                     and all(_plain_config(x) for x in v))):
            raise GraphError(f"node {name!r}: cannot save config {key!r} of gate "
                             f"{gate.op!r}: {_short(v)} is not a number (integers within "
                             f"64 bits), a string of at most {MAX_NAME} characters or a "
                             f"list of at most {MAX_LIST} of them, which from_json reads")
        out[key] = v
    return out


def _order(dag):
    rank = {v: k for k, v in enumerate(dag)}
    return list(nx.lexicographical_topological_sort(dag, key=rank.__getitem__))


def to_json(g: ComputationalGraph) -> str:
    """The graph as versioned JSON text (schema in this module's docstring).

    Parameters
    ----------
    g : ComputationalGraph
        Its gates must be registered (every built-in gate is).

    Returns
    -------
    str
        Text that ``ComputationalGraph.from_json`` turns back into the same graph.

    Raises
    ------
    GraphError
        For a gate whose class is not in the registry, naming the node, and for
        anything ``from_json`` would refuse: more than ``MAX_NODES`` nodes, a name of
        more than ``MAX_NAME`` characters, more than ``MAX_ELEMENTS`` array elements
        in all, text of more than ``MAX_CHARS`` characters (each with its size).

    Examples
    --------
    >>> from graphengine import ComputationalGraph
    >>> g = ComputationalGraph(); x = g.input("x"); y = g.mul(x, x, name="y")
    >>> text = g.to_json()
    >>> h = ComputationalGraph.from_json(text); h.forward(x=3.0), h.backward()["x"]
    (9.0, 6.0)
    """
    if len(g) > MAX_NODES:
        raise GraphError(f"cannot save the graph: it has {len(g)} nodes, more than the "
                         f"limit {MAX_NODES} that from_json reads")
    for node in g:
        if len(node.name) > MAX_NAME:
            raise GraphError(f"cannot save node {_short(node.name)}: its name has "
                             f"{len(node.name)} characters, more than the limit {MAX_NAME} "
                             "that from_json reads")
    nodes, budget = [], [0]
    for name in _order(g.dag):
        node = g[name]
        entry = {"name": name, "kind": node.kind}
        if node.kind in ("parameter", "constant"):
            entry["value"] = _value(node.value, name, budget)
        elif node.kind == "gate":
            gate = node.gate
            if not gate.op or G.GATES.get(gate.op) is not type(gate):
                raise GraphError(f"node {name!r}: gate {type(gate).__name__} is not in the "
                                 "registry, so it cannot be saved; decorate its class with "
                                 "graphengine.register (and give it an 'op' name)")
            entry["op"] = gate.op
            config = _config(gate, name)
            if config:
                entry["config"] = config
            entry["inputs"] = [u.name for u in node.inputs]
        nodes.append(entry)
    lines = ",\n  ".join(json.dumps(entry) for entry in nodes)
    text = (f'{{"format": "{FORMAT}", "version": {VERSION},\n "nodes": [\n  {lines}\n ],\n'
            f' "output": {json.dumps(g.dag.graph.get("output"))}}}\n')
    if len(text) > MAX_CHARS:
        raise GraphError(f"cannot save the graph: its JSON text has {len(text)} characters, "
                         f"more than the limit {MAX_CHARS} that from_json reads")
    return text


# ---------------------------------------------------------------- reading

def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise GraphError(f"JSON: the key {k[:40]!r} appears twice in one object")
            seen.add(k)
    return out


def _parse_int(text):
    # json would hand anything past 4,300 digits to int() and fail with a ValueError
    if len(text) > MAX_DIGITS:
        raise GraphError(f"JSON: an integer of {len(text)} digits; a graphengine "
                         f"document's integers have at most {MAX_DIGITS}")
    return int(text)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_value(v, name, budget):
    if _is_number(v):
        try:
            return float(v)
        except OverflowError:
            raise GraphError(f"node {name!r}: value {_short(v)} ({len(str(abs(v)))} digits) "
                             "is too large for a float") from None
    if not isinstance(v, dict):
        raise GraphError(f"node {name!r}: 'value' must be a number or an array object "
                         f"{{dtype, shape, data}}, got {type(v).__name__}")
    if set(v) != {"dtype", "shape", "data"}:
        raise GraphError(f"node {name!r}: an array value needs exactly the keys dtype, "
                         f"shape, data; got {sorted(v)}")
    dtype, shape, data = v["dtype"], v["shape"], v["data"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise GraphError(f"node {name!r}: dtype {_short(dtype)} is not one of {DTYPES}")
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
            and all(_is_int(n) and n >= 0 for n in shape)):
        raise GraphError(f"node {name!r}: shape must be a list of at most {MAX_NDIM} "
                         f"non-negative ints, got {_short(shape)}")
    size = 1
    for n in shape:
        size *= n
    budget[0] -= size
    if budget[0] < 0:
        raise GraphError(f"the document's arrays hold more than {MAX_ELEMENTS} elements "
                         f"(at node {name!r})")
    try:
        arr = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise GraphError(f"node {name!r}: data is not a rectangular array") from None
    if arr.dtype.kind not in "iuf" or list(arr.shape) != shape:
        raise GraphError(f"node {name!r}: data must be numbers of "
                         f"shape {shape}, got {arr.dtype.name} of shape {list(arr.shape)}")
    with np.errstate(over="raise", invalid="ignore"):
        try:
            return arr.astype(dtype)
        except FloatingPointError:
            raise GraphError(f"node {name!r}: data holds a number too large for "
                             f"{dtype}") from None


_CONFIG_KEYS = {}       # gate class -> its constructor's keyword names


def _config_keys(cls):
    keys = _CONFIG_KEYS.get(cls)
    if keys is None:
        keys = _CONFIG_KEYS[cls] = [
            p.name for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return keys


def _plain_config(v):
    if _is_int(v):
        return -2 ** 63 <= v < 2 ** 63
    return _plain(v) and not (isinstance(v, str) and len(v) > MAX_NAME)


def _read_config(cls, config, name):
    if not isinstance(config, dict):
        raise GraphError(f"node {name!r}: config must be an object, got "
                         f"{type(config).__name__}")
    params = _config_keys(cls)
    for key, v in config.items():
        if key not in params:
            raise GraphError(f"node {name!r}: gate {cls.op!r} has no config {key[:40]!r}; "
                             f"expected keys among {params}")
        if not (_plain_config(v) or (isinstance(v, list) and len(v) <= MAX_LIST
                                     and all(_plain_config(x) for x in v))):
            raise GraphError(f"node {name!r}: config {key!r} must be a number (integers "
                             f"within 64 bits), a string of at most {MAX_NAME} characters "
                             f"or a list of at most {MAX_LIST} of them, got {_short(v)}")
    return config


def _check_node(entry, k, names):
    if not isinstance(entry, dict):
        raise GraphError(f"nodes[{k}] must be an object, got {type(entry).__name__}")
    name, kind = entry.get("name"), entry.get("kind")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise GraphError(f"nodes[{k}]: 'name' must be a string of 1 to {MAX_NAME} "
                         f"characters, got {_short(name)}")
    if name in names:
        raise GraphError(f"nodes[{k}]: duplicate name {name!r}")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise GraphError(f"node {name!r}: unknown kind {_short(kind)}; expected one "
                         f"of {list(_KEYS)}")
    allowed = _KEYS[kind] | ({"config"} if kind == "gate" else set())
    extra = [key for key in entry if key not in allowed]
    missing = [key for key in sorted(_KEYS[kind]) if key not in entry]
    if extra or missing:
        raise GraphError(f"node {name!r}: {kind} nodes have keys {sorted(_KEYS[kind])}"
                         + (" and optionally 'config'" if kind == "gate" else "")
                         + f"; unexpected {[key[:40] for key in extra]}, missing {missing}")
    if kind != "gate":
        return ()
    op, inputs = entry["op"], entry["inputs"]
    cls = G.GATES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise GraphError(f"node {name!r}: unknown gate type {_short(op)}; known: "
                         f"{', '.join(G.GATES)}")
    if not isinstance(inputs, list) or not all(isinstance(u, str) for u in inputs):
        raise GraphError(f"node {name!r}: 'inputs' must be a list of node names")
    arity = cls.arity
    if _is_int(arity) and len(inputs) != arity:
        raise GraphError(f"node {name!r}: gate {op!r} takes {arity} "
                         f"input{'' if arity == 1 else 's'}, got {len(inputs)}")
    return inputs


def _topological(entries, by_name):
    """Node names in topological order, ties by document order; linear when the
    document is already in order (as to_json writes it)."""
    rank = {name: k for k, name in enumerate(by_name)}
    if all(rank[u] < k for k, e in enumerate(entries) for u in e.get("inputs", ())):
        return list(by_name)
    waiting = {name: len(set(e.get("inputs", ()))) for name, e in by_name.items()}
    users = {name: [] for name in by_name}
    for name, e in by_name.items():
        for u in set(e.get("inputs", ())):
            users[u].append(name)
    ready = [rank[name] for name, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    names, order = list(by_name), []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for v in users[name]:
            waiting[v] -= 1
            if waiting[v] == 0:
                heapq.heappush(ready, rank[v])
    if len(order) < len(names):
        # every node left waits on another node left: follow inputs until one repeats
        name = next(n for n in names if waiting[n])
        seen, path = {}, []
        while name not in seen:
            seen[name] = len(path)
            path.append(name)
            name = next(u for u in by_name[name]["inputs"] if waiting[u])
        cycle = path[seen[name]:][::-1]
        raise GraphError(f"the document's graph has a cycle through nodes "
                         f"{' -> '.join(c[:40] for c in cycle)}")
    return order


def from_json(text: str) -> ComputationalGraph:
    """Rebuild a graph from ``to_json`` text, validating everything first.

    Parameters
    ----------
    text : str
        A version-1 document (schema in this module's docstring).

    Returns
    -------
    ComputationalGraph
        The same structure, names, gates, parameter and constant values and output.

    Raises
    ------
    GraphError
        For malformed or oversized text, an unknown format, version, kind or gate type,
        a wrong arity, a reference to a missing node, a cycle, or a bad value. The
        limits: ``MAX_CHARS`` characters, ``MAX_NODES`` nodes, ``MAX_ELEMENTS`` array
        elements in all, names of at most ``MAX_NAME`` characters, integers of at most
        ``MAX_DIGITS`` digits.

    Notes
    -----
    Time is linear in the size of the text (a 100,000-node document loads in about a
    second or two, most of it building the graph).

    Examples
    --------
    >>> from graphengine import ComputationalGraph
    >>> ComputationalGraph.from_json('{"format": "graphengine", "version": 2}')
    Traceback (most recent call last):
    ...
    graphengine.errors.GraphError: unsupported graphengine JSON version 2; this version reads 1
    """
    if isinstance(text, (bytes, bytearray)):
        raise GraphError("from_json needs text (str); decode the bytes first")
    if not isinstance(text, str):
        raise GraphError(f"from_json needs a str, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise GraphError(f"the JSON text has {len(text)} characters, more than the limit "
                         f"{MAX_CHARS}")
    # Loading allocates a few objects per node and frees none of them, so the cyclic
    # collector's passes over the growing heap are pure cost (half the time at 100,000
    # nodes); pause it for the duration of the load.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _load(text)
    finally:
        if paused:
            gc.enable()


def _load(text: str) -> ComputationalGraph:
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise GraphError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise GraphError("not a graphengine document: JSON nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GraphError('not a graphengine document: expected an object with '
                         f'"format": "{FORMAT}"')
    if doc.get("version") != VERSION or not _is_int(doc.get("version")):
        raise GraphError(f"unsupported graphengine JSON version {_short(doc.get('version'))}"
                         f"; this version reads {VERSION}")
    extra = sorted(set(doc) - {"format", "version", "nodes", "output"})
    if extra or "nodes" not in doc:
        raise GraphError(f"the document needs keys format, version, nodes and optionally "
                         f"output; unexpected {[k[:40] for k in extra]}"
                         + ("" if "nodes" in doc else ", missing ['nodes']"))
    entries, output = doc["nodes"], doc.get("output")
    if not isinstance(entries, list):
        raise GraphError(f"'nodes' must be a list, got {type(entries).__name__}")
    if len(entries) > MAX_NODES:
        raise GraphError(f"the document has {len(entries)} nodes, more than the limit "
                         f"{MAX_NODES}")
    by_name = {}
    for k, entry in enumerate(entries):
        _check_node(entry, k, by_name)
        by_name[entry["name"]] = entry
    for name, entry in by_name.items():
        for u in entry.get("inputs", ()):
            if u not in by_name:
                raise GraphError(f"node {name!r}: input {u[:40]!r} is not a node of the "
                                 "document")
    if output is not None and not (isinstance(output, str) and output in by_name):
        raise GraphError(f"'output' must be null or the name of a node, got "
                         f"{_short(output)}")
    order = _topological(entries, by_name)
    budget = [MAX_ELEMENTS]
    values, configs = {}, {}
    for name in order:           # check every value and config before building anything
        entry = by_name[name]
        if "value" in entry:
            values[name] = _read_value(entry["value"], name, budget)
        if entry["kind"] == "gate":
            configs[name] = _read_config(G.GATES[entry["op"]], entry.get("config", {}), name)
    g = ComputationalGraph()
    for name in order:
        entry = by_name[name]
        kind = entry["kind"]
        if kind == "input":
            g.input(name)
        elif kind == "parameter":
            g.parameter(name, values[name])
        elif kind == "constant":
            g.constant(values[name], name=name)
        else:
            try:
                gate = G.GATES[entry["op"]](**configs[name])
            except Exception as exc:      # a registered gate's own checks, any kind
                raise GraphError(f"node {name!r}: gate {entry['op']!r} rejects its config "
                                 f"{_short(configs[name])}: {exc}") from None
            g.apply(gate, *(g[u] for u in entry["inputs"]), name=name)
    if output is not None:
        g.set_output(output)
    return g
