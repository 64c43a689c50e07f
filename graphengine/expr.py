"""Formulas as graphs: ``from_expression("max(x, y) * sigmoid(z)")``.

The text is parsed with Python's ``ast`` and its tree is walked with an explicit stack;
nothing in it is ever evaluated, compiled or imported. Names become inputs (in order of
first appearance), numbers become constants, operators and calls of registered gate
names become gates. Anything else is a GraphError naming the construct.

Names are read as Python reads them, NFKC-normalised: the fullwidth ``ｘ`` is the name
``x``. After that a name must be ASCII: a Cyrillic ``х`` or Greek ``α`` (look-alikes of
Latin letters, or letters a reader cannot type back) is a GraphError naming the
character; write ``x`` or ``alpha``.
"""

from __future__ import annotations

import ast
import unicodedata
import warnings

from . import gates as G
from .errors import GraphError
from .graph import ComputationalGraph, Node

MAX_CHARS = 2000
MAX_PARENS = 50

_BINARY = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "power"}

_NAMES = {  # what the user wrote, for error messages
    ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
    ast.ListComp: "list comprehension", ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension", ast.GeneratorExp: "generator expression",
    ast.IfExp: "conditional expression", ast.Compare: "comparison", ast.BoolOp: "and/or",
    ast.NamedExpr: "assignment expression (:=)", ast.Starred: "starred argument",
    ast.List: "list", ast.Tuple: "tuple", ast.Dict: "dict", ast.Set: "set",
    ast.JoinedStr: "f-string", ast.Await: "await", ast.Yield: "yield",
    ast.YieldFrom: "yield from", ast.Slice: "slice",
}

_OPS = {
    ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.Not: "not", ast.Invert: "~",
}


def _callable_gates() -> list[str]:
    return [op for op in G.GATES]


def _fail(node, what: str) -> GraphError:
    where = f" at column {node.col_offset + 1}" if hasattr(node, "col_offset") else ""
    return GraphError(f"expression: {what}{where} is not allowed; allowed are numbers, "
                      "names, + - * / **, unary -, and calls of the gates "
                      f"{', '.join(_callable_gates())}")


def _number(node):
    """The float of a numeric literal, or of a signed one such as ``-2``; else None."""
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(node, f"the constant {v!r}" if not isinstance(v, str)
                        else "a string")
        try:
            return sign * float(v)
        except OverflowError:
            raise _fail(node, "a number too large for a float") from None
    return None


def _check_text(text) -> ast.Expression:
    if not isinstance(text, str):
        raise GraphError(f"expression: expected a string, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise GraphError(f"expression: {len(text)} characters, expected at most {MAX_CHARS}")
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > MAX_PARENS:
        raise GraphError(f"expression: brackets nested {deepest} deep, expected at most "
                         f"{MAX_PARENS}")
    body = text.strip()
    if not body:
        raise GraphError("expression: the text is empty")
    indent = len(text) - len(text.lstrip())      # surrounding whitespace is allowed
    try:
        with warnings.catch_warnings():         # "1if x else 2": refused below, not warned
            warnings.simplefilter("ignore")
            tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset + indent}" if exc.offset else ""
        detail = "" if exc.msg == "invalid syntax" else f" ({exc.msg})"
        raise GraphError(f"expression: invalid syntax{where} in {text!r}{detail}") from None
    except (RecursionError, MemoryError):
        raise GraphError("expression: nested too deeply to parse") from None
    except ValueError as exc:       # e.g. a NUL character
        raise GraphError(f"expression: {exc}") from None
    # ast counts columns in UTF-8 bytes from the stripped text; messages count characters
    # of the text as given
    lines = body.split("\n")
    for node in ast.walk(tree):
        if hasattr(node, "col_offset"):
            line = lines[node.lineno - 1] if 0 < node.lineno <= len(lines) else ""
            col = len(line.encode()[:node.col_offset].decode(errors="ignore"))
            node.col_offset = col + (indent if node.lineno == 1 else 0)
    return tree


def _children(node) -> list:
    """The operands of an allowed node, left to right; raises on anything else."""
    if isinstance(node, ast.Name):
        if node.id.startswith("__"):
            raise _fail(node, f"the dunder name {node.id!r}")
        _ascii(node, node.id)
        return []
    if isinstance(node, ast.Constant):
        _number(node)
        return []
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise _fail(node, f"the unary operator {_OPS.get(type(node.op), '?')!r}")
        return [node.operand]
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise _fail(node, f"the operator {_OPS.get(type(node.op), '?')!r}")
        return [node.left, node.right]
    if isinstance(node, ast.Call):
        func = node.func
        if not isinstance(func, ast.Name):
            _raise_call(func)
        _ascii(func, func.id)
        if func.id not in G.GATES:
            raise _fail(node, f"a call of {func.id!r} (not a gate)")
        if node.keywords:
            kw = node.keywords[0]
            raise _fail(kw, f"the keyword argument {kw.arg or '**'}=" if kw.arg
                        else "a ** argument")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise _fail(a, "a starred argument")
        if func.id == "pow":
            if len(node.args) != 2:
                raise GraphError(f"expression: pow() at column {node.col_offset + 1} takes "
                                 f"two arguments, a formula and a number: pow(x, 3); got "
                                 f"{len(node.args)}")
            if _number(node.args[1]) is None:
                try:
                    power = ast.unparse(ast.BinOp(node.args[0], ast.Pow(), node.args[1]))
                except (RecursionError, ValueError, AttributeError):
                    power = "x ** y"
                raise GraphError(f"expression: pow() at column {node.col_offset + 1} takes a "
                                 f"number as exponent (pow(x, 3)); for an exponent that is a "
                                 f"formula write {power[:60]}")
            return [node.args[0]]
        arity = G.GATES[func.id].arity
        n = len(node.args)
        if arity is not None and n != arity:
            raise _fail(node, f"{func.id}() with {n} argument{'' if n == 1 else 's'} (it "
                        f"takes {arity})")
        return list(node.args)
    if isinstance(node, ast.Attribute):
        raise _fail(node, f"attribute access '.{node.attr}'")
    raise _fail(node, _NAMES.get(type(node), f"the construct {type(node).__name__}"))


def _ascii(node, name: str) -> None:
    odd = next((ch for ch in name if not ch.isascii()), None)
    if odd is not None:
        what = unicodedata.name(odd, f"U+{ord(odd):04X}")
        raise GraphError(f"expression: the name {name!r} at column {node.col_offset + 1} "
                         f"has the non-ASCII letter {odd!r} ({what}); names are ASCII "
                         "letters, digits and _ (write x, or alpha for a Greek letter)")


def _raise_call(func):
    if isinstance(func, ast.Attribute):
        raise _fail(func, f"attribute access '.{func.attr}'")
    what = _NAMES.get(type(func), type(func).__name__)
    raise _fail(func, f"a call of {'an' if what[0] in 'aeiou' else 'a'} {what}")


def _post_order(root) -> list:
    """Every node of the tree, operands before their operator, left to right."""
    order, stack = [], [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        stack.append((node, True))
        if isinstance(node, ast.UnaryOp) and _number(node) is not None:
            continue                      # a signed literal is one number
        for child in reversed(_children(node)):
            stack.append((child, False))
    return order


def _build(g: ComputationalGraph, node, args: list):
    if isinstance(node, ast.Name):
        return g[node.id]
    if isinstance(node, ast.Constant) or (isinstance(node, ast.UnaryOp)
                                          and _number(node) is not None):
        return _number(node)
    if isinstance(node, ast.UnaryOp):
        return args[0] if isinstance(node.op, ast.UAdd) else g.neg(args[0])
    if isinstance(node, ast.BinOp):
        x, y = args
        if isinstance(node.op, ast.Pow) and isinstance(x, Node) and not isinstance(y, Node):
            return g.pow(x, y)            # as Node.__pow__: a number exponent is pow(p)
        return g.op(_BINARY[type(node.op)], x, y)
    name = node.func.id
    if name == "pow":
        return g.pow(args[0], _number(node.args[1]))
    return g.op(name, *args)


def from_expression(text: str) -> ComputationalGraph:
    """The graph of a formula; its inputs are the names it uses, in order of appearance.

    Allowed: numbers, names, ``+ - * / **``, unary ``-``, and calls of registered gate
    names (``max(x, y)``, ``sigmoid(z)``, ``pow(x, 3)``, ...). Nothing is evaluated.

    Parameters
    ----------
    text : str
        The formula, at most ``MAX_CHARS`` characters.

    Returns
    -------
    ComputationalGraph
        Its output is the formula's outermost operation.

    Raises
    ------
    GraphError
        Naming the construct that is not allowed, or why the text cannot be parsed.

    Examples
    --------
    >>> from graphengine import ComputationalGraph
    >>> g = ComputationalGraph.from_expression("(x + y) * z")
    >>> g.forward(x=-2, y=5, z=-4), g.backward()["x"]
    (-12.0, -4.0)
    >>> ComputationalGraph.from_expression("open('f')")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    graphengine.errors.GraphError: expression: a call of 'open' (not a gate) at column 1 ...
    """
    tree = _check_text(text)
    order = _post_order(tree.body)
    g = ComputationalGraph()
    for node in order:
        if isinstance(node, ast.Name) and node.id not in g:
            g.input(node.id)
    if not any(isinstance(n, (ast.BinOp, ast.Call)) or (isinstance(n, ast.UnaryOp)
               and _number(n) is None and isinstance(n.op, ast.USub)) for n in order):
        raise GraphError(f"expression: {text.strip()!r} has no operation to compute; "
                         "write a formula such as 'x * y'")
    results = []
    for node in order:
        n_args = 0 if isinstance(node, (ast.Name, ast.Constant)) else len(
            [] if isinstance(node, ast.UnaryOp) and _number(node) is not None
            else _children(node))
        args = results[len(results) - n_args:] if n_args else []
        del results[len(results) - n_args:]
        try:
            results.append(_build(g, node, args))
        except GraphError as exc:
            raise GraphError(f"expression: at column {node.col_offset + 1}: {exc}") from None
    g.set_output(results[-1])
    return g
