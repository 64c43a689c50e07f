"""The graph: structure on a networkx MultiDiGraph, builder methods, Node handles.

networkx holds the structure (one node per engine node, one edge per argument with
its ``slot``); running is delegated to a Plan compiled from it once per structural
change. The derivative tools, drawing, file formats and expressions live in their
own modules; the methods here that reach them import them on use.
"""

from __future__ import annotations

import copy
import inspect

import networkx as nx
import numpy as np

from . import gates as G
from .errors import GraphError
from .plan import Plan, RunState, as_value, compile_plan

KINDS = ("input", "parameter", "constant", "gate")


class Node:
    """A handle on one node of a ComputationalGraph.

    Supports ``+ - * / ** @`` and unary ``-`` with Nodes, numbers or numpy arrays on
    either side; each operator adds the matching gate to the node's graph.

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x = g.input("x")
    >>> f = 3 * x ** 2 + 1
    >>> g.forward(x=2.0), g.backward()["x"]
    (13.0, 12.0)
    """

    __slots__ = ("graph", "name", "_attrs")
    __array_ufunc__ = None          # numpy defers to Node's reflected operators

    def __init__(self, graph: ComputationalGraph, name: str, attrs: dict):
        self.graph = graph
        self.name = name
        self._attrs = attrs

    @property
    def kind(self) -> str:
        """``"input"``, ``"parameter"``, ``"constant"`` or ``"gate"``."""
        return self._attrs["kind"]

    @property
    def gate(self) -> G.Gate | None:
        return self._attrs["gate"]

    @property
    def inputs(self) -> tuple[Node, ...]:
        """The nodes this node's gate reads, in slot order."""
        dag = self.graph.dag
        ins = sorted((s, u) for u, _, s in dag.in_edges(self.name, data="slot"))
        return tuple(self.graph._nodes[u] for _, u in ins)

    @property
    def value(self):
        """The node's value from the last forward (a parameter's or constant's own value)."""
        if "value" in self._attrs:
            return self._attrs["value"]
        return self.graph._value_of(self.name)

    @value.setter
    def value(self, v):
        if self.kind != "parameter":
            raise GraphError(f"node {self.name!r} is of kind {self.kind!r}: only a parameter's "
                             "value can be set (feed inputs to forward)")
        self._attrs["value"] = as_value(v, f"parameter {self.name!r}")

    @property
    def grad(self):
        """d(output)/d(node) from the last backward, with the node's shape."""
        return self.graph._grad_of(self.name)

    @property
    def shape(self) -> tuple:
        return np.shape(self.value)

    def __repr__(self):
        what = self.gate.label if self.kind == "gate" else self.kind
        return f"<Node {self.name!r} {what} value={self.value!r} grad={self.grad!r}>"

    def __add__(self, other):
        return self.graph.add(self, other)

    def __radd__(self, other):
        return self.graph.add(other, self)

    def __sub__(self, other):
        return self.graph.sub(self, other)

    def __rsub__(self, other):
        return self.graph.sub(other, self)

    def __mul__(self, other):
        return self.graph.mul(self, other)

    def __rmul__(self, other):
        return self.graph.mul(other, self)

    def __truediv__(self, other):
        return self.graph.div(self, other)

    def __rtruediv__(self, other):
        return self.graph.div(other, self)

    def __pow__(self, other):
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, bool):
            return self.graph.pow(self, other)
        return self.graph.power(self, other)

    def __rpow__(self, other):
        return self.graph.power(other, self)

    def __matmul__(self, other):
        return self.graph.matmul(self, other)

    def __rmatmul__(self, other):
        return self.graph.matmul(other, self)

    def __neg__(self):
        return self.graph.neg(self)


class ComputationalGraph:
    """A DAG of gates held in a networkx MultiDiGraph, run forward and backward.

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
        self.dag = nx.MultiDiGraph()
        self._nodes: dict[str, Node] = {}
        self._gate_ids: set[int] = set()
        self._plan: Plan | None = None        # compiled for the current structure
        self.run = RunState()                 # values and gradients of the last run

    # ------------------------------------------------------------ structure

    def _changed(self):
        self._plan = None

    def _add(self, kind: str, name, prefix: str, gate=None, value=None, inputs=()) -> Node:
        if name is None:
            k = len(self._nodes)
            name = f"{prefix}_{k}"
            while name in self._nodes:
                k += 1
                name = f"{prefix}_{k}"
        elif not isinstance(name, str) or not name:
            raise GraphError(f"a node name must be a non-empty string, got {name!r}")
        elif name in self._nodes:
            raise GraphError(f"duplicate name {name!r}: the graph already has a "
                             f"{self._nodes[name].kind} of that name")
        attrs = {"kind": kind, "gate": gate}
        if kind in ("parameter", "constant"):
            attrs["value"] = value
        self.dag.add_node(name, **attrs)
        for s, node in enumerate(inputs):
            self.dag.add_edge(node.name, name, slot=s)
        node = Node(self, name, self.dag.nodes[name])
        self._nodes[name] = node
        if gate is not None:
            self._gate_ids.add(id(gate))
        self._changed()
        return node

    def _arg(self, x, gate_name: str) -> Node:
        if isinstance(x, Node):
            if x.graph is not self:
                raise GraphError(f"node {x.name!r} belongs to another graph and cannot "
                                 f"be an input of {gate_name} here")
            return x
        if isinstance(x, str):
            raise GraphError(f"{gate_name}: got the string {x!r}; pass the Node "
                             f"(g[{x!r}]) or a number")
        return self.constant(as_value(x, f"input of {gate_name}"))

    def input(self, name: str) -> Node:
        """Add a leaf whose value is fed to ``forward``.

        >>> g = ComputationalGraph(); x = g.input("x"); x.kind
        'input'
        """
        if name is None:
            raise GraphError("an input needs a name (it is the key of forward's feed)")
        return self._add("input", name, "input")

    def parameter(self, name: str, value) -> Node:
        """Add a trainable leaf that keeps its value between runs.

        >>> g = ComputationalGraph(); g.parameter("w", [1, 2]).value
        array([1., 2.])
        """
        if name is None:
            raise GraphError("a parameter needs a name")
        return self._add("parameter", name, "param",
                         value=as_value(value, f"parameter {name!r}"))

    def constant(self, value, name: str | None = None) -> Node:
        """Add a fixed leaf, never trainable.

        >>> g = ComputationalGraph(); g.constant(2, name="two").value
        2.0
        """
        where = f"constant {name!r}" if name is not None else "constant"
        return self._add("constant", name, "const", value=as_value(value, where))

    def apply(self, gate: G.Gate, *inputs, name: str | None = None) -> Node:
        """Add a node that runs ``gate`` (a Gate instance, used by this node only)
        on ``inputs`` (Nodes, numbers or arrays).

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
        label = f"gate {gate.label}" + (f" of node {name!r}" if name else "")
        if id(gate) in self._gate_ids:
            raise GraphError(f"{label}: this gate instance is already used by another "
                             "node; give each node its own instance")
        n = len(inputs)
        if gate.arity is not None:
            if gate.arity != n:
                raise GraphError(f"{label} takes {gate.arity} inputs, got {n}")
        else:
            try:
                inspect.signature(gate.forward).bind(*inputs)
            except TypeError as exc:
                raise GraphError(f"{label} cannot take {n} inputs: {exc}") from None
        args = [self._arg(x, gate.label) for x in inputs]
        return self._add("gate", name, gate.op or type(gate).__name__.lower(), gate, None, args)

    def op(self, op: str, *inputs, name: str | None = None, **config) -> Node:
        """Add a built-in gate by its registry name (``"add"``, ``"pow"``, ...).

        >>> g = ComputationalGraph(); y = g.op("pow", g.input("x"), p=3)
        >>> g.forward(x=2.0)
        8.0
        """
        cls = G.GATES.get(op)
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
        return self.apply(G.AddGate(), x, y, name=name)

    def sub(self, x, y, name=None) -> Node:
        """x - y."""
        return self.apply(G.SubtractGate(), x, y, name=name)

    def mul(self, x, y, name=None) -> Node:
        """x * y (gradient switcher)."""
        return self.apply(G.MultiplyGate(), x, y, name=name)

    def div(self, x, y, name=None) -> Node:
        """x / y."""
        return self.apply(G.DivideGate(), x, y, name=name)

    def max(self, x, y, name=None) -> Node:
        """max(x, y) elementwise (gradient router; ties split equally)."""
        return self.apply(G.MaxGate(), x, y, name=name)

    def neg(self, x, name=None) -> Node:
        """-x."""
        return self.apply(G.NegateGate(), x, name=name)

    def pow(self, x, p, name=None) -> Node:
        """x ** p for a constant number p."""
        if isinstance(p, Node):
            raise GraphError("pow takes a number as exponent; use x ** node (power) "
                             "for a node exponent")
        try:
            gate = G.PowGate(p)
        except ValueError as exc:
            raise GraphError(f"pow: {exc}") from None
        return self.apply(gate, x, name=name)

    def power(self, x, y, name=None) -> Node:
        """x ** y elementwise, both inputs nodes."""
        return self.apply(G.PowerGate(), x, y, name=name)

    def exp(self, x, name=None) -> Node:
        """e ** x."""
        return self.apply(G.ExpGate(), x, name=name)

    def log(self, x, name=None) -> Node:
        """Natural logarithm."""
        return self.apply(G.LogGate(), x, name=name)

    def sigmoid(self, x, name=None) -> Node:
        """1 / (1 + e^-x), stable at any x."""
        return self.apply(G.SigmoidGate(), x, name=name)

    def tanh(self, x, name=None) -> Node:
        """Hyperbolic tangent."""
        return self.apply(G.TanhGate(), x, name=name)

    def relu(self, x, name=None) -> Node:
        """max(x, 0); no gradient at 0."""
        return self.apply(G.ReluGate(), x, name=name)

    def matmul(self, a, b, name=None) -> Node:
        """a @ b: vectors, matrices, batched on the left."""
        return self.apply(G.MatMulGate(), a, b, name=name)

    def sum(self, x, axis=None, name=None) -> Node:
        """Sum over ``axis`` (every element when None)."""
        return self.op("sum", x, axis=axis, name=name)

    def mean(self, x, axis=None, name=None) -> Node:
        """Mean over ``axis`` (every element when None)."""
        return self.op("mean", x, axis=axis, name=name)

    def mse(self, pred, target, name=None) -> Node:
        """The loss mean((pred - target) ** 2)."""
        return self.apply(G.MSELoss(), pred, target, name=name)

    def softmax_cross_entropy(self, logits, labels, name=None) -> Node:
        """Mean over the batch of -log softmax(logits)[label]; labels are class indices."""
        return self.apply(G.SoftmaxCrossEntropy(), logits, labels, name=name)

    # ------------------------------------------------------------ reading

    def __getitem__(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except (KeyError, TypeError):
            raise GraphError(f"no node named {name!r} in the graph") from None

    def __contains__(self, name) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self):
        return iter(self._nodes.values())

    def __repr__(self):
        return f"<ComputationalGraph: {len(self)} nodes, {self.dag.number_of_edges()} edges>"

    def nodes(self, kind: str | None = None) -> list[Node]:
        """Every node in insertion order, or those of one kind."""
        if kind is not None and kind not in KINDS:
            raise GraphError(f"unknown node kind {kind!r}; expected one of {KINDS}")
        return [n for n in self._nodes.values() if kind is None or n.kind == kind]

    def parameters(self) -> list[Node]:
        """The trainable leaves, in insertion order."""
        return self.nodes("parameter")

    def inputs(self) -> list[Node]:
        """The leaves fed to forward, in insertion order."""
        return self.nodes("input")

    def set_output(self, node) -> Node:
        """Make ``node`` (a Node or a name) the output that forward returns."""
        node = self[node] if isinstance(node, str) else self._arg(node, "set_output")
        if node.graph is not self:
            raise GraphError(f"node {node.name!r} belongs to another graph")
        self.dag.graph["output"] = node.name
        self._changed()
        return node

    @property
    def output(self) -> Node:
        """The output: set by ``set_output``, else the one gate nothing else uses."""
        name = self.dag.graph.get("output")
        if name is not None:
            return self[name]
        nodes = self.dag.nodes
        sinks = [v for v, succ in self.dag.succ.items() if not succ
                 and nodes[v]["kind"] == "gate"]
        if len(sinks) == 1:
            return self._nodes[sinks[0]]
        if not sinks:
            raise GraphError("the graph has no gate yet, so no output; add a gate or "
                             "call set_output")
        shown = ", ".join(repr(s) for s in sinks[:5]) + (", ..." if len(sinks) > 5 else "")
        raise GraphError(f"the output is ambiguous: {len(sinks)} gates are used by no "
                         f"other node ({shown}); call set_output(node)")

    # ------------------------------------------------------------ running

    def plan(self) -> Plan:
        """The compiled plan for the current structure (compiled on first need)."""
        if self._plan is None:
            self._plan = compile_plan(self.dag, self.output.name)
        return self._plan

    def _node(self, key, what: str) -> Node:
        """The node ``key`` names (a name, or a Node of this graph), else GraphError."""
        if isinstance(key, Node):
            if key.graph is not self:
                raise GraphError(f"{what} {key.name!r} is a node of another graph")
            return key
        node = self._nodes.get(key) if isinstance(key, str) else None
        if node is None:
            raise GraphError(f"{what} {key!r} is not a node of the graph")
        return node

    def _feed(self, feed, named) -> dict:
        items = list((feed or {}).items()) if isinstance(feed, dict) or feed is None else None
        if items is None:
            raise GraphError(f"forward's feed must be a dict of input names or Nodes to "
                             f"values, got {type(feed).__name__}")
        fed = {}
        for key, v in items + list(named.items()):
            node = self._node(key, "feed key")
            key = node.name
            if node.kind != "input":
                hint = " (set its .value instead)" if node.kind == "parameter" else ""
                raise GraphError(f"feed key {key!r} is a {node.kind}, not an input{hint}")
            fed[key] = as_value(v, f"feed for input {key!r}")
        return fed

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
        vals = run.values_for(plan) or [None] * len(plan.names)
        run.forget_values()
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
        for slot, attrs in plan.stored:
            vals[slot] = attrs["value"]
        plan.forward(vals)
        run.set_values(plan, vals)
        return vals[plan.out]

    def backward(self, seed=None) -> dict:
        """Gradients of the output with respect to every node, as name -> array/float.

        ``seed`` is the upstream gradient of the output (default: ones of its shape).
        Paths add up; nodes the output does not depend on get zeros.

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
            seed = as_value(seed, "backward's seed")
            if np.shape(seed) != np.shape(out):
                raise GraphError(f"backward's seed has shape {np.shape(seed)}, expected the "
                                 f"shape {np.shape(out)} of output {plan.names[plan.out]!r}")
            if seed.__class__ is not float and seed.dtype != out.dtype:
                seed = seed.astype(out.dtype)       # a gradient has its node's dtype
        grads = plan.backward(vals, seed)
        run.set_grads(plan, grads)
        result = plan.as_dict(grads)
        for name in plan.outside:
            result[name] = self._zeros(name)
        return result

    def _zeros(self, name):
        v = self._nodes[name]._attrs.get("value")
        return 0.0 if v is None else G.zeros_like(v)

    def _value_of(self, name):
        return self.run.value(name)

    def _grad_of(self, name):
        run = self.run
        plan = run.grads_plan
        if plan is None:
            return None
        if name in plan.slot:
            return run.grads[plan.slot[name]]
        return self._zeros(name) if name in self._nodes else None

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

    # ------------------------------------------------------------ pictures and files

    def draw(self, ax=None, **options):
        """A matplotlib drawing of the circuit with values (green) and gradients (red)."""
        from .draw import draw
        return draw(self, ax=ax, **options)

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
    def from_dag(cls, dag: nx.MultiDiGraph) -> ComputationalGraph:
        """Rebuild an engine graph from a MultiDiGraph shaped like ``g.dag``.

        Nodes need ``kind``, ``gate`` (a Gate on gate nodes) and ``value`` on
        parameters and constants; edges need ``slot``; ``dag.graph["output"]`` is kept.
        Gates are copied, so the new graph shares no state with ``dag``.

        >>> g = ComputationalGraph(); x = g.input("x"); y = g.sigmoid(x, name="y")
        >>> h = ComputationalGraph.from_dag(g.dag); h.forward(x=0.0)
        0.5
        """
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
                g.apply(copy.copy(gate), *(g[u] for _, u in ins), name=v)
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
            g.set_output(dag.graph["output"])
        return g
