"""The graph: its structure, builder methods, Node handles, and running it.

The graph keeps a compact record of its construction: parallel lists indexed by a
node's place in the record (``_kinds``, ``_gates``, ``_a``, ``_b``; the dicts
``_vals`` and ``_names`` hold only the leaves' values and the names given or moved),
in insertion order, which is topological (a node can only use nodes
that exist). Inputs are record indices, not objects; an auto-generated name
(``add_7``) is derived from the gate and the index when asked for, so building a
node stores a few references and makes no object the cyclic garbage collector must
keep scanning. A ``Node`` is a small handle (graph, index); the graph keeps a weak
reference to each handle it gave out, so ``g["x"] is x`` while ``x`` lives, and no
reference cycle ties the graph to its nodes: a dropped graph is freed at once.
``g.dag``, the networkx MultiDiGraph of api.md, is built from the record on first
read and kept in step from then on; it is read-only (hand edits are refused, see
README "The networkx graph"). Running is delegated to a Plan compiled from the
record once per structural change. The derivative tools, drawing, file formats and
expressions live in their own modules; the methods here that reach them import them
on use.
"""

from __future__ import annotations

import copy
import gc
import inspect
import math
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from . import gates as G
from .errors import GraphError
from .plan import MANY, NONE, Plan, RunState, _plural, as_value, compile_plan, derived_names

if TYPE_CHECKING:
    import networkx as nx

KINDS = ("input", "parameter", "constant", "gate")

_READ_ONLY = ("g.dag is read-only: it mirrors the engine's graph. Build with the graph's "
              "methods (g.remove, g.prune, g.set_output, node.value = ...), or edit a copy "
              "(d = g.dag.copy()) and rebuild it with ComputationalGraph.from_dag(d)")


class _ReadOnly(dict):
    """An attribute dict of ``g.dag`` (node, edge or graph): reads as a dict, refuses
    writes; the engine writes with ``dict.__setitem__``."""

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise GraphError(_READ_ONLY)

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse
    __ior__ = _refuse

    def __reduce__(self):                 # copies (deepcopy, pickle) are plain dicts
        return dict, (dict(self),)


def _refuse_edit(*args, **kwargs):
    raise GraphError(_READ_ONLY)


_EDITS = ("add_node", "add_nodes_from", "remove_node", "remove_nodes_from", "add_edge",
          "add_edges_from", "add_weighted_edges_from", "remove_edge", "remove_edges_from",
          "clear", "clear_edges", "update")


class _Removed:
    """What a removed Node's ``graph`` becomes: it still knows the node's name, kind,
    gate, value and inputs (for messages and repr); any other use says the node is
    gone."""

    def __init__(self, name, kind, gate, value, inputs):
        self.name, self.kind, self.gate, self.value = name, kind, gate, value
        self.inputs = inputs

    def __getattr__(self, attr):
        raise GraphError(f"node {self.name!r} was removed from its graph (g.remove or "
                         "g.prune); use a node of the graph")

    def __repr__(self):
        return "<removed>"


_SLOTTED = weakref.WeakValueDictionary()    # id of a gate without __dict__ -> its graph
_GRAPHS = weakref.WeakValueDictionary()     # id of a live graph -> it (gates' owner marks)
_ref = weakref.ref


def _operator(cls):
    """A Node operator (``__add__`` and the like) adding a gate of class ``cls``: by
    the builders' fast path when the other side is a Node of the same graph."""
    def operator(self, other):
        g = self.graph
        if other.__class__ is Node and other.graph is g:
            return g._gate2(cls, self._i, other._i)
        return g._binary(cls, self, other)

    operator.__name__ = f"__{cls.op}__"
    return operator


class Node:
    """A handle on one node of a ComputationalGraph.

    Supports ``+ - * / ** @`` and unary ``-`` with Nodes, numbers or numpy arrays on
    either side; each operator adds the matching gate to the node's graph, as do the
    methods ``relu() sigmoid() tanh() exp() log() sum(axis) mean(axis)`` and numpy's
    ``np.exp np.log np.tanh np.maximum np.sum np.mean np.matmul`` applied to Nodes.
    A Node is a place in the graph, not a number: comparing it, ``float()`` of it
    (and so ``math.exp``) or ``if node:`` is a GraphError saying what to write.

    Examples
    --------
    >>> import numpy as np
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x = g.input("x")
    >>> f = 3 * x ** 2 + np.exp(x).log()
    >>> g.forward(x=2.0), g.backward()["x"]
    (14.0, 13.0)
    """

    # a handle: the graph and the node's index in the graph's record (the graph's
    # lists hold the node itself). A removed node's graph becomes a _Removed that
    # remembers the node's name, kind, gate and value.
    __slots__ = ("graph", "_i", "__weakref__")

    def __init__(self, graph, i):
        self.graph = graph
        self._i = i

    @property
    def name(self) -> str:
        g = self.graph
        return g.name if g.__class__ is _Removed else g._name(self._i)

    @property
    def _kind(self) -> str:
        g = self.graph
        return g.kind if g.__class__ is _Removed else g._kinds[self._i]

    @property
    def _value(self):
        # a parameter's or constant's own value (None for inputs and gates)
        g = self.graph
        return g.value if g.__class__ is _Removed else g._vals.get(self._i)

    @property
    def _args(self) -> tuple:
        g = self.graph
        if g.__class__ is _Removed:
            return g.inputs
        return tuple(map(g._handle, g._ins(self._i)))

    @property
    def kind(self) -> str:
        """``"input"``, ``"parameter"``, ``"constant"`` or ``"gate"``."""
        return self._kind

    @property
    def gate(self) -> G.Gate | None:
        g = self.graph
        return g.gate if g.__class__ is _Removed else g._gate_of(self._i)

    @property
    def inputs(self) -> tuple[Node, ...]:
        """The nodes this node's gate reads, in slot order."""
        return self._args

    @property
    def _attrs(self) -> dict:
        # the node's attributes as g.dag holds them (a fresh dict; kept for readers)
        attrs = {"kind": self._kind, "gate": self.gate}
        if self._kind in ("parameter", "constant"):
            attrs["value"] = self._value
        return attrs

    @property
    def value(self):
        """The node's value from the last forward (a parameter's or constant's own value)."""
        if self._kind in ("parameter", "constant"):
            return self._value
        return self.graph._value_of(self._i)

    @value.setter
    def value(self, v):
        if self._kind != "parameter":
            raise GraphError(f"node {self.name!r} is of kind {self._kind!r}: only a parameter's "
                             "value can be set (feed inputs to forward)")
        g = self.graph
        v = as_value(v, f"parameter {self.name!r}")
        g._vals[self._i] = v                  # a removed node's _Removed refuses
        dag = g._dag
        if dag is not None:
            dict.__setitem__(dag._node[self.name], "value", v)

    @property
    def grad(self):
        """d(output)/d(node) from the last backward, with the node's shape."""
        return self.graph._grad_of(self._i)

    @property
    def shape(self) -> tuple:
        return np.shape(self.value)

    def __repr__(self):
        what = self.gate.label if self._kind == "gate" else self._kind
        if self.graph.__class__ is _Removed:
            return f"<Node {self.name!r} {what} (removed)>"
        return f"<Node {self.name!r} {what} value={self.value!r} grad={self.grad!r}>"

    __add__ = _operator(G.AddGate)

    def __radd__(self, other):
        return self.graph._binary(G.AddGate, other, self)

    __sub__ = _operator(G.SubtractGate)

    def __rsub__(self, other):
        return self.graph._binary(G.SubtractGate, other, self)

    __mul__ = _operator(G.MultiplyGate)

    def __rmul__(self, other):
        return self.graph._binary(G.MultiplyGate, other, self)

    __truediv__ = _operator(G.DivideGate)

    def __rtruediv__(self, other):
        return self.graph._binary(G.DivideGate, other, self)

    def __pow__(self, other):
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, bool):
            return self.graph.pow(self, other)
        return self.graph.power(self, other)

    def __rpow__(self, other):
        return self.graph.power(other, self)

    __matmul__ = _operator(G.MatMulGate)

    def __rmatmul__(self, other):
        return self.graph._binary(G.MatMulGate, other, self)

    def __neg__(self):
        return self.graph._unary(G.NegateGate, self)

    # ------------------------------------------------------------ gates as methods

    def relu(self, name=None) -> Node:
        """max(x, 0) as a new gate node: ``x.relu()`` is ``g.relu(x)``.

        >>> import graphengine as ge
        >>> g = ge.ComputationalGraph(); r = g.input("x").relu()
        >>> g.forward(x=[-1.0, 2.0])
        array([0., 2.])
        """
        return self.graph.relu(self, name=name)

    def sigmoid(self, name=None) -> Node:
        """1 / (1 + e^-x) as a new gate node.

        >>> import graphengine as ge
        >>> g = ge.ComputationalGraph(); s = g.input("x").sigmoid()
        >>> g.forward(x=0.0), g.backward()["x"]
        (0.5, 0.25)
        """
        return self.graph.sigmoid(self, name=name)

    def tanh(self, name=None) -> Node:
        """tanh(x) as a new gate node.

        >>> import graphengine as ge
        >>> g = ge.ComputationalGraph(); t = g.input("x").tanh()
        >>> g.forward(x=0.0), g.backward()["x"]
        (0.0, 1.0)
        """
        return self.graph.tanh(self, name=name)

    def exp(self, name=None) -> Node:
        """e ** x as a new gate node.

        >>> import graphengine as ge
        >>> g = ge.ComputationalGraph(); e = g.input("x").exp()
        >>> g.forward(x=0.0), g.backward()["x"]
        (1.0, 1.0)
        """
        return self.graph.exp(self, name=name)

    def log(self, name=None) -> Node:
        """The natural logarithm as a new gate node.

        >>> import graphengine as ge
        >>> g = ge.ComputationalGraph(); lg = g.input("x").log()
        >>> g.forward(x=1.0), g.backward()["x"]
        (0.0, 1.0)
        """
        return self.graph.log(self, name=name)

    def sum(self, axis=None, name=None) -> Node:
        """The sum over ``axis`` (every element when None) as a new gate node.

        >>> import graphengine as ge
        >>> g = ge.ComputationalGraph(); x = g.input("x"); s = x.sum(axis=0)
        >>> g.forward(x=[[1, 2], [3, 4]])
        array([4., 6.])
        """
        return self.graph.sum(self, axis=axis, name=name)

    def mean(self, axis=None, name=None) -> Node:
        """The mean over ``axis`` (every element when None) as a new gate node.

        >>> import graphengine as ge
        >>> g = ge.ComputationalGraph(); m = g.input("x").mean(axis=1)
        >>> g.forward(x=[[1, 2], [3, 5]])
        array([1.5, 4. ])
        """
        return self.graph.mean(self, axis=axis, name=name)

    # ------------------------------------------------------------ numpy on Nodes

    # numpy ufuncs that build a gate: np.exp(x), a_array * x, a_array @ x, ...
    _UFUNCS = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "div",
               "negative": "neg", "power": "power", "matmul": "matmul", "exp": "exp",
               "log": "log", "tanh": "tanh", "maximum": "max"}
    _HINTS = {"absolute": "g.relu({x}) + g.relu(-{x})", "sqrt": "{x} ** 0.5",
              "square": "{x} ** 2", "reciprocal": "1 / {x}", "minimum": "-g.max(-x, -y)",
              "fmax": "g.max(x, y)", "dot": "x @ y", "max": "g.max(x, y) for two nodes",
              "amax": "g.max(x, y) for two nodes"}

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__
        if name in ("greater", "greater_equal", "less", "less_equal"):
            self._compared()
        op = self._UFUNCS.get(name)
        if op is None or method != "__call__" or kwargs:
            self._no_numpy(f"np.{name}" + (f".{method}" if method != "__call__" else ""),
                           kwargs)
        if op == "power" and not isinstance(inputs[1], Node):
            p = np.asarray(inputs[1])
            if p.ndim == 0 and p.dtype.kind in "iuf":
                return self.graph.pow(inputs[0], float(p))
        return getattr(self.graph, op)(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        if name in ("sum", "mean") and args and isinstance(args[0], Node):
            extra = {k: v for k, v in kwargs.items() if k != "axis"}
            if len(args) == 1 and not extra:
                return getattr(self.graph, name)(args[0], axis=kwargs.get("axis"))
            if len(args) == 2 and not extra and "axis" not in kwargs:
                return getattr(self.graph, name)(args[0], axis=args[1])
        self._no_numpy(f"np.{name}", kwargs)

    def _no_numpy(self, what, kwargs):
        if "out" in kwargs:
            raise GraphError(f"{what} on node {self.name!r} in place (a += node, or out=): "
                             "an array cannot hold a graph node; write a = a + node")
        if kwargs:
            raise GraphError(f"{what} on node {self.name!r} with {', '.join(kwargs)}=: "
                             "numpy's keyword arguments have no meaning for a graph "
                             "node; call it without them")
        hint = self._HINTS.get(what[3:].split(".")[0], "").format(x=self._ref)
        raise GraphError(f"{what} on node {self.name!r}: graphengine has no gate for it"
                         + (f"; write {hint}" if hint else
                            "; on Nodes numpy builds gates for np.exp, np.log, np.tanh, "
                            "np.maximum, np.sum, np.mean, np.matmul and the arithmetic "
                            "operators; for anything else write a Gate (see ge.Gate)")
                         + f" (for its number, use {self._ref}.value after forward())")

    # ------------------------------------------------------------ not a number

    @property
    def _ref(self) -> str:
        # how a message writes this node in code: its name, else g["name"]
        return self.name if self.name.isidentifier() else f"g[{self.name!r}]"

    def _compared(self):
        raise GraphError(f"node {self.name!r} was compared (>, <, builtin max or min): a "
                         "Node is a place in the graph, not a number; for the larger of "
                         "two nodes write g.max(x, y) (g.relu(x) for max(x, 0)); to "
                         f"branch on its number, use {self._ref}.value after forward()")

    def __gt__(self, other):
        self._compared()

    __ge__ = __lt__ = __le__ = __gt__

    def __bool__(self):
        raise GraphError(f"node {self.name!r} has no truth value (if node: ...): a Node "
                         f"is a place in the graph; to branch on its number, use "
                         f"{self._ref}.value after forward()")

    def __float__(self):
        x = self._ref
        raise GraphError(f"a number from node {self.name!r} (float(), int() or math.exp "
                         "and the like ask for one): a Node is a place in the graph, not "
                         f"a number; to build a gate write {x}.exp(), {x}.log() or "
                         f"np.exp({x}); for its number use {x}.value after forward()")

    __int__ = __complex__ = __float__

    def __abs__(self):
        raise GraphError(f"abs() of node {self.name!r}: graphengine has no abs gate; "
                         f"write g.relu({self._ref}) + g.relu(-{self._ref})")


_ARITY: dict = {}          # gate class -> (least, most) inputs its forward takes


def _forward_arity(fn, bound: bool):
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 0, math.inf
    if not bound:
        params = params[1:]                       # self
    P = inspect.Parameter
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    least = sum(p.default is P.empty for p in positional)
    most = math.inf if any(p.kind is P.VAR_POSITIONAL for p in params) else len(positional)
    if any(p.kind is P.KEYWORD_ONLY and p.default is P.empty for p in params):
        most = -1                                 # a required keyword: never callable
    return least, most


def _warm(classes) -> None:
    # A CPython 3.11 trap: an instance's attribute values live inline only if its
    # class had already seen those attribute names when the instance was made;
    # otherwise each instance grows a dict of its own (about 200 bytes, and one
    # object more for the cyclic collector), which a big graph's first forward would
    # do to every gate. One throwaway run per built-in gate teaches the classes.
    x, m = np.array([[0.5, -1.0], [2.0, 0.25]]), np.array([0.0, 1.0])
    for cls in classes:
        for args in ((0.5, 0.25), (x, x), (x, m)):
            gate = cls()
            gate._ge_node = None
            try:
                out = gate.forward(*args[:cls.arity or 1])
                gate.backward(np.ones(np.shape(out)) if np.ndim(out) else 1.0)
            except Exception:       # noqa: S110 (a sample an op does not take)
                pass


_warm(sorted(G.BUILTIN, key=lambda c: c.__name__))


class ComputationalGraph:
    """A DAG of gates, run forward and backward; ``g.dag`` shows it as a networkx
    MultiDiGraph.

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x, y, z = g.input("x"), g.input("y"), g.input("z")
    >>> q = g.add(x, y, name="q")
    >>> f = g.mul(q, z, name="f")
    >>> g.forward({"x": -2.0, "y": 5.0, "z": -4.0})
    -12.0
    >>> g.backward()
    {'x': -4.0, 'y': -4.0, 'z': 3.0, 'q': -4.0, 'f': 1.0}
    """

    def __init__(self):
        # the record: one entry per node, in insertion order (topological). _kinds[i]
        # is None once node i is removed; _a[i], _b[i] are a gate's first and second
        # input (NONE, -1, when it has fewer; both NONE for a leaf), or NONE and MANY
        # (-2) with the tuple of its inputs in _many[i]: lists of ints, which append
        # fast and compiling reads into numpy arrays in one pass each. _gates
        # holds a built-in gate's class until the gate is needed (see _gate_of);
        # a name not in _names is derived from the gate and i (see _name)
        self._kinds: list = []
        self._gates: list = []
        self._a: list = []
        self._b: list = []
        self._many: dict = {}                 # index -> inputs of a gate of MANY
        self._vals: dict = {}                 # index -> a parameter's or constant's value
        self._names: dict = {}                # index -> a name given (or moved by a clash)
        self._index: dict[str, int] = {}      # every stored name -> its node
        self._claimed: set[int] = set()       # k of each stored name ending in _k
        self._gone = 0                        # removed nodes still in the lists
        self._handles: dict = {}              # index -> weak reference to its Node
        self._sweep = 64                      # drop dead references past this many
        _GRAPHS[id(self)] = self              # what a gate's owner mark refers to
        self._out: int | None = None          # the node given to set_output
        self._dag: nx.MultiDiGraph | None = None   # built on first read of g.dag
        self._plan: Plan | None = None        # compiled for the current structure
        self._plans: dict = {}                # evaluate's plans, by node index
        self.run = RunState()                 # values and gradients of the last run

    def __getstate__(self) -> dict:
        # copy.deepcopy and pickle: the weak references to the handles this graph
        # gave out are its own (a copy gives out its own), and the copy's gates are
        # marked as the copy's in __setstate__
        state = self.__dict__.copy()
        state["_handles"], state["_sweep"] = {}, 64
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        _GRAPHS[id(self)] = self
        for i, gate in enumerate(self._gates):  # the copied gates are this copy's
            if getattr(gate, "_ge_node", None) is not None:
                self._mark(gate, i)

    # ------------------------------------------------------------ the record

    def _name(self, i: int) -> str:
        name = self._names.get(i)
        if name is None:                      # derived: the gate's op (const) and i
            gate = self._gates[i]
            name = f"{'const' if gate is None else gate.op}_{i}"
        return name

    def _names_of(self, indices) -> list:
        """The names of the nodes at ``indices``, in one pass."""
        return derived_names(self._names, self._gates, indices)

    def _find(self, name: str) -> int | None:
        """The index of the node named ``name``, or None."""
        i = self._index.get(name)
        if i is not None:
            return i
        prefix, _, digits = name.rpartition("_")      # a derived name: op_k
        if not (prefix and digits.isascii() and digits.isdigit()):
            return None
        k = int(digits)
        if k >= len(self._kinds) or k in self._names or self._kinds[k] is None \
                or str(k) != digits:
            return None
        gate = self._gates[k]
        return k if prefix == ("const" if gate is None else gate.op) else None

    def _store_name(self, i: int, name: str) -> None:
        self._names[i] = name
        self._index[name] = i
        digits = name.rpartition("_")[2]
        if digits.isascii() and digits.isdigit():
            self._claimed.add(int(digits))

    def _auto_name(self, prefix: str, k: int, avoid=None) -> str:
        # the first free prefix_k, k counting up from the node's index
        name = f"{prefix}_{k}"
        while name == avoid or self._find(name) is not None:
            k += 1
            name = f"{prefix}_{k}"
        return name

    def _alive(self, i: int) -> bool:
        return i < len(self._kinds) and self._kinds[i] is not None

    def _ins(self, i: int) -> tuple:
        """The indices of node i's inputs, in slot order."""
        b = self._b[i]
        if b >= 0:
            return (self._a[i], b)
        if b == MANY:
            return self._many[i]
        a = self._a[i]
        return () if a < 0 else (a,)

    def _handle(self, i: int) -> Node:
        """The Node of index i: the one given out before if it is still alive."""
        ref = self._handles.get(i)
        node = None if ref is None else ref()
        if node is None:
            node = self._give(i)
        return node

    def _give(self, i: int) -> Node:
        # a new handle, remembered weakly (the graph holds no reference to its handles,
        # so no cycle ties it to them); dead references are dropped now and then
        node = Node(self, i)
        handles = self._handles
        handles[i] = _ref(node)
        if len(handles) > self._sweep:
            self._sweep_handles()
        return node

    def _sweep_handles(self) -> None:
        # soon (past 2 x live + 64 references, amortized O(1) a node): a dead reference
        # still held when the collector looks at the young objects is promoted, and
        # enough promotions set off full collections, each walking the whole record
        # (a 1e6 chain built with an allowance of 1024 paid 6 of them, 0.15 us a node)
        handles = self._handles
        for k in [k for k, r in handles.items() if r() is None]:
            del handles[k]
        self._sweep = 2 * len(handles) + 64

    def _gate_of(self, i: int):
        """The gate of node i, made now if the record holds only its class (the
        builders' fast path defers making a built-in gate until it is needed), and
        marked as this node's (see ``apply``)."""
        gate = self._gates[i]
        if gate.__class__ is type:
            gate = self._gates[i] = gate()
        if gate is not None:
            self._mark(gate, i)
        return gate

    def _mark(self, gate, i: int) -> None:
        # marks gate as node i's, so that apply refuses it for another node
        try:
            gate._ge_node = (id(self), i)
        except AttributeError:                # a gate with __slots__
            _SLOTTED[id(gate)] = self

    def _append(self, kind, gate, a, b, value, name) -> int:
        k = len(self._kinds)
        self._kinds.append(kind)
        self._gates.append(gate)
        self._a.append(a)
        self._b.append(b)
        if value is not None:
            self._vals[k] = value
        if name is not None:
            self._store_name(k, name)
        self._plan = None
        if self._dag is not None:
            _dag_add(self._dag, self, k)
        return k

    # ------------------------------------------------------------ structure

    @property
    def dag(self) -> nx.MultiDiGraph:
        """The graph as a read-only ``networkx.MultiDiGraph`` (see api.md): one node
        per engine node, keyed by name, with attributes ``kind``, ``gate`` and, on
        parameters and constants, ``value``; one edge per argument with its ``slot``;
        ``dag.graph["output"]`` when ``set_output`` was called. Built on first read
        and kept in step with the graph from then on; edits are refused.

        >>> g = ComputationalGraph(); x = g.input("x"); y = g.mul(x, x, name="y")
        >>> sorted(g.dag.edges(data="slot"))
        [('x', 'y', 0), ('x', 'y', 1)]
        """
        dag = self._dag
        if dag is None:
            # imported on first read: a graph that is only built and run never needs it
            import networkx as nx

            dag = nx.MultiDiGraph()
            dag.graph = _ReadOnly()
            if self._out is not None:
                dict.__setitem__(dag.graph, "output", self._name(self._out))
            paused = gc.isenabled()          # many small dicts and no cycles among them
            gc.disable()
            try:
                for i in self._indices():
                    _dag_add(dag, self, i)
            finally:
                if paused:
                    gc.enable()
            for method in _EDITS:
                setattr(dag, method, _refuse_edit)
            dag.frozen = True                # networkx's nx.is_frozen(g.dag) says so
            self._dag = dag
        return dag

    def _indices(self):
        """The indices of the nodes not removed, in insertion order."""
        kinds = self._kinds
        if not self._gone:
            return range(len(kinds))
        return [i for i, kind in enumerate(kinds) if kind is not None]

    def _new(self, kind, name, prefix, gate, args, value, avoid=None) -> Node:
        k = len(self._kinds)
        if name is None:
            name = self._auto_name(prefix, k, avoid)
        n = len(args)
        a, b = ((args[0], NONE) if n == 1 else args if n == 2
                else (NONE, NONE) if kind != "gate" else (NONE, MANY))
        if b == MANY:
            self._many[k] = tuple(args)
        self._append(kind, gate, a, b, value, name)
        if gate is not None:
            self._mark(gate, k)
        return self._give(k)

    def _gate2(self, cls, a: int, b) -> Node:
        # the builders' fast path: a built-in gate of inputs a and b (indices; b NONE
        # for one input), no name. The record holds the gate's class until the gate
        # is needed, and the name is derived from the class's op and the index (a
        # stored name ending in _k for this k makes it a stored one instead)
        kinds = self._kinds
        k = len(kinds)
        kinds.append("gate")
        self._gates.append(cls)
        self._a.append(a)
        self._b.append(b)
        if k in self._claimed:
            self._store_name(k, self._auto_name(cls.op, k))
        self._plan = None
        if self._dag is not None:
            _dag_add(self._dag, self, k)
        node = Node(self, k)                  # _give, inline
        handles = self._handles
        handles[k] = _ref(node)
        if len(handles) > self._sweep:
            self._sweep_handles()
        return node

    def _const(self, v: float) -> int:
        kinds = self._kinds
        k = len(kinds)
        kinds.append("constant")
        self._gates.append(None)
        self._a.append(NONE)
        self._b.append(NONE)
        self._vals[k] = v
        if k in self._claimed:
            self._store_name(k, self._auto_name("const", k))
        if self._dag is not None:
            _dag_add(self._dag, self, k)
        return k

    def _binary(self, cls, x, y, name=None) -> Node:
        if name is None:
            if x.__class__ is Node and x.graph is self:
                if y.__class__ is Node and y.graph is self:
                    return self._gate2(cls, x._i, y._i)
                if y.__class__ is float:
                    return self._gate2(cls, x._i, self._const(y))
            elif x.__class__ is float and y.__class__ is Node and y.graph is self:
                return self._gate2(cls, self._const(x), y._i)
        return self._build(cls(), (x, y), name)

    def _unary(self, cls, x, name=None) -> Node:
        if name is None and x.__class__ is Node and x.graph is self:
            return self._gate2(cls, x._i, NONE)
        return self._build(cls(), (x,), name)

    def _check_name(self, name) -> str:
        if not isinstance(name, str) or not name:
            raise GraphError(f"a node name must be a non-empty string, got {name!r}"
                             if not isinstance(name, np.ndarray) else
                             f"a node name must be a non-empty string, got a numpy array "
                             f"of shape {name.shape}")
        name = str(name)                      # a str subclass (numpy.str_) becomes str
        i = self._find(name)
        if i is not None:
            kind = self._kinds[i]
            raise GraphError(f"duplicate name {name!r}: the graph already has "
                             f"{'an' if kind == 'input' else 'a'} {kind} of that name")
        return name

    def _check_arg(self, x, label: str):
        """A Node of this graph, or a 1-tuple holding a value for a new constant."""
        if isinstance(x, Node):
            if x.graph is not self:
                if x.graph.__class__ is _Removed:
                    raise GraphError(f"node {x.name!r} was removed from the graph and "
                                     f"cannot be an input of {label}")
                raise GraphError(f"node {x.name!r} belongs to another graph and cannot "
                                 f"be an input of {label} here")
            return x
        if isinstance(x, str):
            raise GraphError(f"{label}: got the string {x!r}; pass the Node "
                             f"(g[{x!r}]) or a number")
        return (as_value(x, f"input of {label}"),)

    def _build(self, gate, inputs, name) -> Node:
        # every check first, then the constants, then the node: a failed call adds nothing
        if name is not None:
            name = self._check_name(name)
        args = [self._check_arg(x, gate.label) for x in inputs]
        args = tuple(a._i if a.__class__ is Node else
                     self._new("constant", None, "const", None, (), a[0], avoid=name)._i
                     for a in args)
        prefix = gate.op or type(gate).__name__.lower()
        return self._new("gate", name, prefix, gate, args, None)

    def _leaf(self, kind, name, value=None) -> Node:
        name = self._check_name(name)
        return self._new(kind, name, kind, None, (), value)

    def input(self, name: str) -> Node:
        """Add a leaf whose value is fed to ``forward``.

        >>> g = ComputationalGraph(); x = g.input("x"); x.kind
        'input'
        """
        if name is None:
            raise GraphError("an input needs a name (it is the key of forward's feed)")
        return self._leaf("input", name)

    def parameter(self, name: str, value) -> Node:
        """Add a trainable leaf that keeps its value between runs.

        >>> g = ComputationalGraph(); g.parameter("w", [1, 2]).value
        array([1., 2.])
        """
        if name is None:
            raise GraphError("a parameter needs a name")
        name = self._check_name(name)
        return self._new("parameter", name, None, None, (),
                         as_value(value, f"parameter {name!r}"))

    def constant(self, value, name: str | None = None) -> Node:
        """Add a fixed leaf, never trainable.

        >>> g = ComputationalGraph(); g.constant(2, name="two").value
        2.0
        """
        where = f"constant {name!r}" if name is not None else "constant"
        value = as_value(value, where)
        if name is not None:
            name = self._check_name(name)
        return self._new("constant", name, "const", None, (), value)

    def apply(self, gate: G.Gate, *inputs, name: str | None = None) -> Node:
        """Add a node that runs ``gate`` (a Gate instance) on ``inputs`` (Nodes,
        numbers or arrays).

        A gate instance belongs to one node: using it twice in one graph is a
        GraphError; an instance already used by another graph is copied
        (``copy.copy``), so the two graphs share no state.

        >>> from graphengine.gates import AddGate
        >>> g = ComputationalGraph(); s = g.apply(AddGate(), g.input("a"), 1.0)
        >>> g.forward(a=2.0)
        3.0
        """
        if isinstance(gate, type) and issubclass(gate, G.Gate):
            raise GraphError(f"apply needs a gate instance, got the class {gate.__name__}; "
                             f"write {gate.__name__}()")
        if not isinstance(gate, G.Gate):
            raise GraphError(f"apply needs a Gate instance, got {type(gate).__name__}")
        cls = type(gate)
        for attr in ("symbol", "op"):
            v = getattr(gate, attr, "")
            if not isinstance(v, str):
                raise GraphError(f"gate {cls.__name__}: its {attr!r} must be a string, "
                                 f"got {type(v).__name__} {v!r}")
        label = f"gate {gate.label}" + (f" of node {name!r}" if isinstance(name, str) else "")
        owner = self._owner(gate)
        if owner is not None:
            if owner.graph is self:
                raise GraphError(f"{label}: this gate instance is already used by another "
                                 f"node ({owner.name!r}); give each node its own instance")
            gate = copy.copy(gate)            # another graph's: this one gets its own
        n = len(inputs)
        arity = gate.arity
        if arity is not None:
            if isinstance(arity, bool) or not isinstance(arity, (int, np.integer)):
                raise GraphError(f"gate {cls.__name__}: arity must be a whole number or None, "
                                 f"got {type(arity).__name__} {arity!r}")
            if arity != n:
                raise GraphError(f"{label} takes {_plural(arity, 'input')}, got {n}")
        else:
            if "forward" in getattr(gate, "__dict__", ()):
                least, most = _forward_arity(gate.forward, True)
            else:
                least, most = _ARITY.get(cls) or _ARITY.setdefault(
                    cls, _forward_arity(cls.forward, False))
            if not least <= n <= most:
                takes = ("takes a required keyword argument" if most < 0 else
                         f"takes at least {least}" if most == math.inf else
                         f"takes {least}" if least == most else f"takes {least} to {most}")
                raise GraphError(f"{label} cannot take {_plural(n, 'input')}: its forward "
                                 f"{takes}")
        return self._build(gate, inputs, name)

    def _owner(self, gate):
        # the node (of any live graph) that uses this gate instance, or None
        mark = getattr(gate, "_ge_node", None)
        if mark is not None:
            graph = _GRAPHS.get(mark[0])
            i = mark[1]
            ok = graph is not None and i < len(graph._gates) and graph._gates[i] is gate
            return graph._handle(i) if ok else None
        if gate.__class__ is type:
            return None
        graph = _SLOTTED.get(id(gate))
        if graph is not None:
            i = next((i for i, v in enumerate(graph._gates) if v is gate), None)
            return None if i is None else graph._handle(i)
        return None

    def op(self, op: str, *inputs, name: str | None = None, **config) -> Node:
        """Add a built-in gate by its registry name (``"add"``, ``"pow"``, ...).

        >>> g = ComputationalGraph(); y = g.op("pow", g.input("x"), p=3)
        >>> g.forward(x=2.0)
        8.0
        """
        cls = G.GATES.get(op) if isinstance(op, str) else None
        if cls is None:
            raise GraphError(f"unknown gate {op!r}; known: {', '.join(sorted(G.GATES))}")
        try:
            gate = cls(**config)
        except (TypeError, ValueError) as exc:
            raise GraphError(f"gate {op!r}: {exc}") from None
        return self.apply(gate, *inputs, name=name)

    # the builders named by the API, one line each; g.op reaches every registered gate
    def add(self, x, y, name=None) -> Node:
        """x + y (gradient distributor)."""
        return self._binary(G.AddGate, x, y, name)

    def sub(self, x, y, name=None) -> Node:
        """x - y."""
        return self._binary(G.SubtractGate, x, y, name)

    def mul(self, x, y, name=None) -> Node:
        """x * y (gradient switcher)."""
        return self._binary(G.MultiplyGate, x, y, name)

    def div(self, x, y, name=None) -> Node:
        """x / y."""
        return self._binary(G.DivideGate, x, y, name)

    def max(self, x, y, name=None) -> Node:
        """max(x, y) elementwise (gradient router; ties split equally)."""
        return self._binary(G.MaxGate, x, y, name)

    def neg(self, x, name=None) -> Node:
        """-x."""
        return self._unary(G.NegateGate, x, name)

    def pow(self, x, p, name=None) -> Node:
        """x ** p for a constant number p."""
        if isinstance(p, Node):
            raise GraphError("pow takes a number as exponent; use x ** node (power) "
                             "for a node exponent")
        try:
            gate = G.PowGate(p)
        except (ValueError, OverflowError) as exc:
            raise GraphError(f"pow: {exc}") from None
        return self._build(gate, (x,), name)

    def power(self, x, y, name=None) -> Node:
        """x ** y elementwise, both inputs nodes."""
        return self._binary(G.PowerGate, x, y, name)

    def exp(self, x, name=None) -> Node:
        """e ** x."""
        return self._unary(G.ExpGate, x, name)

    def log(self, x, name=None) -> Node:
        """Natural logarithm."""
        return self._unary(G.LogGate, x, name)

    def sigmoid(self, x, name=None) -> Node:
        """1 / (1 + e^-x), stable at any x."""
        return self._unary(G.SigmoidGate, x, name)

    def tanh(self, x, name=None) -> Node:
        """Hyperbolic tangent."""
        return self._unary(G.TanhGate, x, name)

    def relu(self, x, name=None) -> Node:
        """max(x, 0); no gradient at 0."""
        return self._unary(G.ReluGate, x, name)

    def matmul(self, a, b, name=None) -> Node:
        """a @ b: vectors, matrices, batched on the left."""
        return self._binary(G.MatMulGate, a, b, name)

    def sum(self, x, axis=None, name=None) -> Node:
        """Sum over ``axis`` (every element when None)."""
        return self.op("sum", x, axis=axis, name=name)

    def mean(self, x, axis=None, name=None) -> Node:
        """Mean over ``axis`` (every element when None)."""
        return self.op("mean", x, axis=axis, name=name)

    def mse(self, pred, target, name=None) -> Node:
        """The loss mean((pred - target) ** 2)."""
        return self._binary(G.MSELoss, pred, target, name)

    def softmax_cross_entropy(self, logits, labels, name=None) -> Node:
        """Mean over the batch of -log softmax(logits)[label]; labels are class indices."""
        return self._binary(G.SoftmaxCrossEntropy, logits, labels, name)

    # ------------------------------------------------------------ removing

    def _users(self, i: int) -> list:
        return [k for k in self._indices() if i in self._ins(k)]

    def _drop(self, i: int) -> None:
        name, kind, gate, value = self._name(i), self._kinds[i], self._gates[i], self._vals.get(i)
        ref = self._handles.pop(i, None)
        node = None if ref is None else ref()
        if node is not None:                  # a Node still held says it was removed
            node.graph = _Removed(name, kind, gate, value,
                                  tuple(map(self._handle, self._ins(i))))
        if gate is not None and gate.__class__ is not type:
            _SLOTTED.pop(id(gate), None)
            if getattr(gate, "_ge_node", None) is not None:
                gate.__dict__.pop("_ge_node", None)
        self._index.pop(name, None)
        self._kinds[i] = self._gates[i] = None
        self._a[i] = self._b[i] = NONE
        self._many.pop(i, None)
        self._vals.pop(i, None)
        self._names.pop(i, None)
        self._gone += 1
        kinds = self._kinds
        while kinds and kinds[-1] is None:    # the last nodes gone: their places too
            for column in (kinds, self._gates, self._a, self._b):
                column.pop()
            self._gone -= 1
        if self._out == i:
            self._set_output(None)
        dag = self._dag
        if dag is not None:
            for u in dag._pred[name]:
                del dag._succ[u][name]
            del dag._pred[name], dag._succ[name], dag._node[name]
        self._plan = None
        self._plans.clear()

    def remove(self, node) -> None:
        """Remove ``node`` (a Node or a name), which no other node may use.

        >>> g = ComputationalGraph(); x = g.input("x"); y = g.sigmoid(x, name="y")
        >>> z = g.exp(x, name="z")      # a cell run twice leaves an extra gate
        >>> g.remove(z); [n.name for n in g]
        ['x', 'y']
        """
        node = self._node(node, "remove:")
        users = self._names_of(self._users(node._i))
        if users:
            shown = ", ".join(map(repr, users[:5])) + (", ..." if len(users) > 5
                                                                 else "")
            raise GraphError(f"cannot remove {node.name!r}: {_plural(len(users), 'node')} "
                             f"use{'s' if len(users) == 1 else ''} it ({shown}); remove "
                             "them first, or call g.prune() to drop what the output does "
                             "not use")
        self._drop(node._i)

    def prune(self) -> list[str]:
        """Remove every node the output does not depend on; return their names.

        >>> g = ComputationalGraph(); x = g.input("x"); y = g.sigmoid(x, name="y")
        >>> old = g.exp(x, name="old"); _ = g.set_output(y)
        >>> g.prune()
        ['old']
        """
        plan = self.plan()
        gone = [self._find(name) for name in plan.outside]
        for i in reversed(gone):
            self._drop(i)
        return list(plan.outside)

    @contextmanager
    def atomic(self):
        """A block that adds all of its nodes or none: if it raises, the nodes it
        added are removed (and the output it set is put back).

        >>> g = ComputationalGraph(); x = g.input("x")
        >>> try:
        ...     with g.atomic():
        ...         h = g.sigmoid(x)
        ...         g.add(h, "oops")
        ... except GraphError:
        ...     pass
        >>> [n.name for n in g]
        ['x']
        """
        before, output = len(self._kinds), self._out
        try:
            yield self
        except BaseException:
            for i in reversed(range(before, len(self._kinds))):
                if self._alive(i):
                    self._drop(i)
            if self._out != output and (output is None or self._alive(output)):
                self._set_output(output)
            raise

    # ------------------------------------------------------------ reading

    def __getitem__(self, name: str) -> Node:
        i = self._find(name) if isinstance(name, str) else None
        if i is None:
            what = (f"a numpy array of shape {name.shape}" if isinstance(name, np.ndarray)
                    else f"{type(name).__name__} {name!r}") if not isinstance(name, str) \
                else None
            if what is not None:
                raise GraphError(f"no node named {what}: node names are strings")
            raise GraphError(f"no node named {name!r} in the graph")
        return self._handle(i)

    def __contains__(self, key) -> bool:
        """A name (str) or a Node of this graph; anything else is not in it."""
        if isinstance(key, str):
            return self._find(key) is not None
        if isinstance(key, Node):
            return key.graph is self
        return False

    def __len__(self) -> int:
        return len(self._kinds) - self._gone

    def __iter__(self):
        return iter(self.nodes())

    def __repr__(self):
        edges = sum(len(self._ins(i)) for i in self._indices())
        return f"<ComputationalGraph: {len(self)} nodes, {edges} edges>"

    def nodes(self, kind: str | None = None) -> list[Node]:
        """Every node in insertion order, or those of one kind."""
        if kind is not None and (not isinstance(kind, str) or kind not in KINDS):
            raise GraphError(f"unknown node kind {kind!r}; expected one of {KINDS}")
        kinds, handle = self._kinds, self._handle
        return [handle(i) for i in self._indices() if kind is None or kinds[i] == kind]

    def parameters(self) -> list[Node]:
        """The trainable leaves, in insertion order."""
        return self.nodes("parameter")

    def inputs(self) -> list[Node]:
        """The leaves fed to forward, in insertion order."""
        return self.nodes("input")

    def _set_output(self, i) -> None:
        self._out = i
        self._plan = None
        dag = self._dag
        if dag is not None:
            if i is None:
                dict.pop(dag.graph, "output", None)
            else:
                dict.__setitem__(dag.graph, "output", self._name(i))

    def set_output(self, node) -> Node:
        """Make ``node`` (a Node of this graph or its name) the output that forward
        returns.

        >>> g = ComputationalGraph(); x = g.input("x"); a, b = g.exp(x), g.log(x)
        >>> g.set_output(a).name
        'exp_1'
        """
        if not isinstance(node, (str, Node)):
            raise GraphError(f"set_output needs a node of the graph or its name, got "
                             f"{type(node).__name__} {node!r}")
        if isinstance(node, Node) and node.graph is not self and \
                node.graph.__class__ is not _Removed:
            raise GraphError(f"node {node.name!r} belongs to another graph")
        node = self._node(node, "set_output:")
        self._set_output(node._i)
        return node

    def _sinks(self) -> list:
        used = set()
        for i in self._indices():
            used.update(self._ins(i))
        kinds = self._kinds
        return [self._handle(i) for i in self._indices()
                if kinds[i] == "gate" and i not in used]

    def _implicit_output(self, sinks=None) -> Node:
        if sinks is None:
            sinks = self._sinks()
        if len(sinks) == 1:
            return sinks[0]
        if not sinks:
            raise GraphError("the graph has no gate yet, so no output; add a gate or "
                             "call set_output")
        names = [s.name for s in sinks]
        shown = ", ".join(map(repr, names[:5])) + (", ..." if len(names) > 5 else "")
        raise GraphError(f"the output is ambiguous: {len(sinks)} gates are used by no "
                         f"other node ({shown}); call g.set_output(node) to choose one, "
                         f"then g.prune() to drop what it does not use, or g.remove(node) "
                         f"an extra one (a cell run twice leaves such copies)")

    @property
    def output(self) -> Node:
        """The output: set by ``set_output``, else the one gate nothing else uses."""
        if self._out is not None:
            return self._handle(self._out)
        return self._implicit_output()

    # ------------------------------------------------------------ running

    def plan(self) -> Plan:
        """The compiled plan for the current structure (compiled on first need)."""
        plan = self._plan
        if plan is None:
            if self._out is not None:
                plan = compile_plan(self, self._out)
            else:
                # the last gate uses no later node; when the output needs every node
                # it is the only gate nothing uses, else count the unused gates
                kinds = self._kinds
                last = len(kinds) - 1
                while last >= 0 and kinds[last] != "gate":
                    last -= 1
                if last < 0:
                    self._implicit_output([])
                plan = compile_plan(self, last)
                if plan.outside:
                    self._implicit_output()
            self._plan = plan
        return plan

    def _node(self, key, what: str) -> Node:
        """The node ``key`` names (a name, or a Node of this graph), else GraphError."""
        if isinstance(key, Node):
            if key.graph is not self:
                if key.graph.__class__ is _Removed:
                    raise GraphError(f"{what} {key.name!r} was removed from the graph")
                raise GraphError(f"{what} {key.name!r} is a node of another graph")
            return key
        i = self._find(key) if isinstance(key, str) else None
        if i is None:
            if isinstance(key, np.ndarray):
                raise GraphError(f"{what} a numpy array is not a node name")
            raise GraphError(f"{what} {key!r} is not a node of the graph")
        return self._handle(i)

    def _feed(self, feed, named) -> dict:
        items = list((feed or {}).items()) if isinstance(feed, dict) or feed is None else None
        if items is None:
            raise GraphError(f"forward's feed must be a dict of input names or Nodes to "
                             f"values, got {type(feed).__name__}")
        fed = {}
        for key, v in items + list(named.items()):
            node = self._node(key, "feed key")
            key = node.name
            if node._kind != "input":
                hint = " (set its .value instead)" if node._kind == "parameter" else ""
                raise GraphError(f"feed key {key!r} is a {node._kind}, not an input{hint}")
            fed[key] = as_value(v, f"feed for input {key!r}")
        return fed

    def _load(self, plan, vals, feed, named) -> None:
        fed = feed
        if fed.__class__ is not dict or named or len(fed) != len(plan.inputs):
            fed = self._feed(feed, named)       # validates every key and value
        try:                                    # the common case: names to floats or arrays
            for slot, name in plan.inputs:
                v = fed[name]
                if not (v.__class__ is float or (v.__class__ is np.ndarray
                                                 and v.dtype.kind == "f" and v.ndim)):
                    v = as_value(v, f"feed for input {name!r}")
                vals[slot] = v
        except KeyError:                        # Nodes as keys, or an input left out
            fed = self._feed(feed, named)
            missing = [n for _, n in plan.inputs if n not in fed]
            if missing:
                raise GraphError(f"input {missing[0]!r} needs a value: the output "
                                 f"{plan.names[plan.out]!r} depends on it (missing: "
                                 f"{', '.join(map(repr, missing))})") from None
            for slot, name in plan.inputs:
                vals[slot] = fed[name]
        if fed is not feed and plan is self._plan:
            self.run.fed = {k: v for k, v in fed.items() if k in plan.outside}
        plan.load(vals)

    def forward(self, feed: dict | None = None, **named):
        """Run every gate the output needs, in topological order; return the output's value.

        ``feed`` maps input names (or Nodes) to numbers or arrays; keyword arguments
        feed by name too.

        >>> g = ComputationalGraph(); x = g.input("x"); y = x * x
        >>> g.forward(x=3.0)
        9.0
        """
        plan = self.plan()
        run = self.run
        vals = run.values if run.plan is plan else None
        if vals is None:
            vals = [None] * len(plan.names)
        run.forget_values()
        if run.fed:
            run.fed = {}
        self._load(plan, vals, feed, named)
        plan.forward(vals)
        run.set_values(plan, vals)
        return vals[plan.out]

    def evaluate(self, node, feed: dict | None = None, /, **named):
        """The value of ``node`` computed from just the inputs it needs.

        Only the gates ``node`` depends on run (their plan is compiled once per
        node and kept until the graph loses a node); inputs it does not need may be
        fed or left out. The last forward's values and gradients stay as they were.

        >>> import numpy as np
        >>> g = ComputationalGraph()
        >>> logits = g.input("x") @ np.eye(2)
        >>> loss = g.softmax_cross_entropy(logits, g.input("y"))
        >>> g.evaluate(logits, x=np.array([[1.0, 2.0]]))     # no labels needed
        array([[1., 2.]])
        """
        node = self._node(node, "evaluate:")
        if node._kind in ("parameter", "constant"):
            return node._value
        plan = self._plans.get(node._i)
        if plan is None:
            plan = self._plans[node._i] = compile_plan(self, node._i)
        vals = [None] * len(plan.names)
        self._load(plan, vals, feed, named)
        run = self.run
        run.stale = run.values is not None and bool(plan.cols[0]) or run.stale
        plan.forward(vals)
        return vals[plan.out]

    def backward(self, seed=None) -> dict:
        """Gradients of the output with respect to every node, as name -> array/float.

        ``seed`` is the upstream gradient of the output (default: ones of its shape).
        Paths add up; nodes the output does not depend on get zeros of their own
        shape (a parameter's or constant's value's, an input's as last fed; 0.0 for
        an input never fed and for a gate that did not run). Every array returned is
        its own (none is another's, the seed, or a gate's).

        >>> g = ComputationalGraph(); x = g.input("x"); y = x * x + x
        >>> g.forward(x=3.0); g.backward()["x"]
        12.0
        7.0
        """
        plan = self._plan
        run = self.run
        vals = run.values_for(plan) if plan is not None else None
        if vals is None:
            why = ("the graph changed since its last forward()"
                   if run.plan is not None and plan is None
                   else "there has been no successful forward() since the graph last changed")
            raise GraphError(f"backward needs a forward first: {why} "
                             "(output " + repr(self.output.name) + ")")
        out = vals[plan.out]
        if seed is None:
            seed = 1.0 if out.__class__ is float else np.ones(np.shape(out), dtype=out.dtype)
        else:
            given = seed
            seed = as_value(seed, "backward's seed")
            if np.shape(seed) != np.shape(out):
                raise GraphError(f"backward's seed has shape {np.shape(seed)}, expected the "
                                 f"shape {np.shape(out)} of output {plan.names[plan.out]!r}")
            if seed.__class__ is not float and seed.dtype != out.dtype:
                seed = seed.astype(out.dtype)       # a gradient has its node's dtype
            elif seed is given and seed.__class__ is not float:
                seed = seed.copy()              # the caller's array stays the caller's
        grads = plan.backward(vals, seed)
        run.set_grads(plan, grads)
        result = plan.as_dict(grads)
        for name in plan.outside:
            result[name] = self._zeros(name)
        return result

    def _zeros(self, name):
        i = self._find(name)
        kind = self._kinds[i]
        if kind in ("parameter", "constant"):
            return G.zeros_like(self._vals.get(i))
        v = self.run.fed.get(name) if kind == "input" else None
        return 0.0 if v is None else G.zeros_like(v)

    def _slot_in(self, plan, i):
        # node i's slot in plan (which may be of an earlier structure), or None
        s = None if plan is None else plan.slot_of(i)
        return s if s is not None and plan.names[s] == self._name(i) else None

    def _value_of(self, i):
        run = self.run
        s = self._slot_in(run.plan, i)
        return None if s is None else run.values[s]

    def _grad_of(self, i):
        run = self.run
        plan = run.grads_plan
        if plan is None:
            return None
        s = self._slot_in(plan, i)
        if s is not None:
            return run.grads[s]
        return self._zeros(self._name(i)) if self._alive(i) else None

    # ------------------------------------------------------------ derivative tools

    def jvp(self, tangents: dict, feed: dict | None = None) -> dict:
        """Forward mode: every node's tangent for the leaf directions in ``tangents``.

        >>> g = ComputationalGraph(); a, b = g.input("a"), g.input("b")
        >>> e = (a + b) * (b + 1)
        >>> g.jvp({"b": 1.0}, feed={"a": 2.0, "b": 1.0})[e.name]
        5.0
        """
        from .derivatives import jvp
        return jvp(self, tangents, feed)

    def jacobian(self, wrt=None, feed: dict | None = None, mode: str = "reverse") -> dict:
        """d(output)/d(leaf) for each leaf in ``wrt``, shaped output.shape + leaf.shape."""
        from .derivatives import jacobian
        return jacobian(self, wrt, feed, mode)

    def paths(self, source, limit: int = 10_000) -> list[list[str]]:
        """Every path (a list of node names) from ``source`` to the output; more than
        ``limit`` paths is a GraphError giving their count."""
        from .derivatives import paths
        return paths(self, source, limit)

    def path_gradient(self, source, limit: int = 10_000):
        """``(total, [(path, product), ...])``: the gradient as a sum over paths."""
        from .derivatives import path_gradient
        return path_gradient(self, source, limit)

    def explain(self, source=None):
        """Every node's value and gradient, and each leaf's gradient as a sum over
        paths with the local derivatives along each (see ``graphengine.explain``);
        ``str()`` of it is the text ``graphengine explain`` prints.

        >>> g = ComputationalGraph(); x = g.input("x"); y = g.mul(x, x, name="y")
        >>> g.forward(x=3.0)
        9.0
        >>> print(g.explain())
        node  computes  value  dy/dnode
        x     input     3      6
        y     x * x     9      1
        <BLANKLINE>
        y = 9. Each gradient below is the sum over the paths to y
        of the product of the local derivatives along the path:
        <BLANKLINE>
        dy/dx = 6  (sum over 2 paths)
          x -[0]-> y: 3
          x -[1]-> y: 3
        <BLANKLINE>
        -[k]-> : the path enters the gate as its input k (a gate that reads one node twice).
        """
        from .explain import explain
        return explain(self, source)

    # ------------------------------------------------------------ pictures and files

    def draw(self, ax=None, step=None, **options):
        """A matplotlib drawing of the circuit with values (green) and gradients (red);
        ``step=k``: the backward pass after k gate steps (see ``graphengine.draw.draw``)."""
        from .draw import draw
        return draw(self, ax=ax, step=step, **options)

    def to_dot(self) -> str:
        """Graphviz DOT text of the circuit."""
        from .draw import to_dot
        return to_dot(self)

    def _repr_svg_(self):
        from .draw import repr_svg
        return repr_svg(self)

    def to_json(self) -> str:
        """The structure, names, gates, values and output as versioned JSON text."""
        from .serialize import to_json
        return to_json(self)

    @classmethod
    def from_json(cls, text: str) -> ComputationalGraph:
        """Rebuild a graph from ``to_json`` text; never runs code from the file."""
        from .serialize import from_json
        return from_json(text)

    @classmethod
    def from_expression(cls, text: str) -> ComputationalGraph:
        """The graph of a formula such as ``"max(x, y) * sigmoid(z)"``; never evaluated."""
        from .expr import from_expression
        return from_expression(text)

    @classmethod
    def from_torch(cls, fn, example_inputs: dict) -> ComputationalGraph:
        """Trace a function or ``torch.nn.Module`` with ``torch.fx`` into a graph of gates.

        ``example_inputs`` maps the argument names of ``fn`` (or of its ``forward``;
        ``input`` for an ``nn.Sequential``) to example arrays or tensors; they become
        inputs of those names, fed with the examples. A module's parameters become
        parameters named as in its ``named_parameters()``. Values and gradients equal
        torch's; an operation with no matching gate is a GraphError naming it and its
        fx node. Needs torch (``pip install 'graphengine[torch]'``).

        >>> import torch
        >>> g = ComputationalGraph.from_torch(lambda x: torch.sigmoid(x) * 2, {"x": 0.0})
        >>> g.forward(x=0.0)
        1.0
        """
        from .interchange import from_torch
        return from_torch(fn, example_inputs)

    @classmethod
    def from_onnx(cls, model) -> ComputationalGraph:
        """Build an ONNX model (a ``ModelProto``, bytes or a file path) into gates.

        Initializers become parameters (constants, for a model from ``to_onnx``),
        graph inputs become inputs, and each operator its gates (Add, Sub, Mul, Div,
        Pow, Max, Neg, Exp, Log, Sigmoid, Tanh, Relu, MatMul, Gemm, Transpose,
        ReduceSum, ReduceMean, SoftmaxCrossEntropyLoss, ...). The model is parsed and
        validated (``onnx.checker``, opset 13 or later, element types, sizes within
        ``interchange.MAX_ONNX_BYTES`` and ``MAX_ELEMENTS``); nothing in it is ever
        executed. An unsupported operator or a malformed file is a GraphError.
        Needs onnx (``pip install 'graphengine[onnx]'``).

        >>> import graphengine as ge
        >>> g = ComputationalGraph(); f = g.tanh(g.input("x") * 2.0, name="f")
        >>> h = ComputationalGraph.from_onnx(ge.export.to_onnx(g, feed={"x": 0.0}))
        >>> h.forward(x=0.0), [n.kind for n in h.nodes()]
        (0.0, ['input', 'constant', 'gate', 'gate'])
        """
        from .interchange import from_onnx
        return from_onnx(model)

    @classmethod
    def from_dag(cls, dag: nx.MultiDiGraph) -> ComputationalGraph:
        """Rebuild an engine graph from a MultiDiGraph shaped like ``g.dag``.

        Nodes need ``kind``, ``gate`` (a Gate on gate nodes) and ``value`` on
        parameters and constants; edges need ``slot``; ``dag.graph["output"]`` is kept.
        Gates are copied, so the new graph shares no state with ``dag``.

        >>> g = ComputationalGraph(); x = g.input("x"); y = g.sigmoid(x, name="y")
        >>> h = ComputationalGraph.from_dag(g.dag); h.forward(x=0.0)
        0.5
        """
        import networkx as nx

        if not isinstance(dag, nx.MultiDiGraph):
            raise GraphError(f"from_dag needs a networkx.MultiDiGraph, got {type(dag).__name__}")
        rank = {v: k for k, v in enumerate(dag)}
        try:
            order = list(nx.lexicographical_topological_sort(dag, key=rank.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = " -> ".join(str(u) for u, *_ in nx.find_cycle(dag))
            raise GraphError(f"the graph has a cycle through nodes {cycle}") from None
        except TypeError:
            raise GraphError("node names must be strings") from None
        g = cls()
        for v in order:
            attrs = dag.nodes[v]
            kind = attrs.get("kind")
            ins = [(s, u) for u, _, s in dag.in_edges(v, data="slot")]
            slots = sorted(s for s, _ in ins if isinstance(s, int) and not isinstance(s, bool))
            if slots != list(range(len(ins))):
                raise GraphError(f"node {v!r}: input edge slots must be 0..{len(ins) - 1} "
                                 f"once each, got {[s for s, _ in ins]}")
            ins.sort()
            if kind == "gate":
                gate = attrs.get("gate")
                if not isinstance(gate, G.Gate):
                    raise GraphError(f"node {v!r}: a gate node needs a Gate instance as "
                                     f"attribute 'gate', got {type(gate).__name__}")
                gate = copy.copy(gate)
                getattr(gate, "__dict__", {}).pop("_ge_node", None)
                g.apply(gate, *(g[u] for _, u in ins), name=v)
                continue
            if ins:
                raise GraphError(f"node {v!r}: {kind!r} nodes are leaves and cannot have inputs")
            if kind == "input":
                g.input(v)
            elif kind in ("parameter", "constant"):
                if "value" not in attrs:
                    raise GraphError(f"node {v!r}: a {kind} needs a 'value'")
                value = np.array(attrs["value"], copy=True) \
                    if isinstance(attrs["value"], np.ndarray) else attrs["value"]
                (g.parameter(v, value) if kind == "parameter" else g.constant(value, name=v))
            else:
                raise GraphError(f"node {v!r}: unknown kind {kind!r}; expected one of {KINDS}")
        if "output" in dag.graph:
            out = dag.graph["output"]
            if not isinstance(out, str) or out not in g:
                raise GraphError(f"from_dag: dag.graph['output'] must name a node of the "
                                 f"graph, got {type(out).__name__} {out!r}")
            g.set_output(out)
        return g


def _dag_add(dag, g, i) -> None:
    # networkx's own dicts, written in bulk: node -> attributes, successors and
    # predecessors; one key dict per (u, v) shared by both sides, as networkx keeps it
    name = g._name(i)
    kind = g._kinds[i]
    if kind == "gate":
        attrs = _ReadOnly(kind=kind, gate=g._gate_of(i))
    elif kind == "input":
        attrs = _ReadOnly(kind=kind, gate=None)
    else:
        attrs = _ReadOnly(kind=kind, gate=None, value=g._vals.get(i))
    dag._node[name] = attrs
    dag._succ[name] = {}
    pred = dag._pred[name] = {}
    for s, u in enumerate(g._ins(i)):
        u = g._name(u)
        keyed = pred.get(u)
        if keyed is None:
            keyed = pred[u] = {}
            dag._succ[u][name] = keyed
        keyed[len(keyed)] = _ReadOnly(slot=s)
