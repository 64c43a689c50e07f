"""The command line: a thin argparse layer over the library (``graphengine --help``).

Nothing in the package imports this module. ``main(argv)`` returns the exit code:
0 on success; 2 for a user's mistake or a file that cannot be written (one line on
stderr, checked before any work where it can be); 1 for a training run that diverged
(its loss became nan or infinite: a warning line on stderr) or a reader that closed
the pipe.

Output files (``--draw``, ``--plot``) are written exactly where they are named: the
name needs an extension of a format matplotlib can save (``.png``, ``.svg``,
``.pdf``, ...); an empty name, a directory, a missing directory or an unwritable place
is refused before the work starts.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

import numpy as np

from .errors import GraphError


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage before an error; one line is enough
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="graphengine",
        description="Computational graphs of gates: explain a formula's gradients, "
                    "or train a network on the digits data.")
    sub = parser.add_subparsers(dest="command", required=True)

    explain = sub.add_parser("explain", help="values and gradients of a formula, "
                                             "with each input's gradient as a sum over paths")
    explain.add_argument("expression", help='a formula such as "(x + y) * z", or an .onnx file')
    explain.add_argument("--at", nargs="+", default=[], metavar="NAME=VALUE",
                         help="a value for every input of the formula")
    explain.add_argument("--draw", metavar="FILE",
                         help="also draw the circuit to a file (.png, .svg, .pdf, ...)")
    explain.add_argument("--grad", metavar="NAME",
                         help="also print the gradient with respect to input NAME as its "
                              "own circuit of gates (ge.grad)")
    explain.add_argument("--grad-draw", metavar="FILE",
                         help="with --grad: draw that gradient circuit to a file")
    explain.set_defaults(run=cmd_explain)

    export = sub.add_parser("export", help="write a graph saved as JSON (g.to_json()) as an "
                                           "ONNX model")
    export.add_argument("graph", help="a .json file written by g.to_json()")
    export.add_argument("--to", required=True, metavar="FILE", help="the .onnx file to write")
    export.add_argument("--shape", nargs="+", default=[], metavar="NAME=D1xD2...",
                        help="an input's shape, such as x=32x64 (default: a scalar)")
    export.set_defaults(run=cmd_export)

    train = sub.add_parser("train", help="train an MLP on the 8x8 digits data")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--hidden", type=int, default=128)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--plot", metavar="FILE",
                       help="save the loss curve to a file (.png, .svg, .pdf, ...)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)
    return parser


# ---------------------------------------------------------------- explain

def _parse_at(items) -> dict:
    feed, given = {}, {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise GraphError(f"--at wants NAME=VALUE pairs such as x=-2, got {item!r}")
        if name in feed:
            raise GraphError(f"--at {name}: given twice ({given[name]} and {item}); give "
                             "each input one value")
        try:
            feed[name] = float(text)
        except ValueError:
            raise GraphError(f"--at {name}: {text!r} is not a number") from None
        given[name] = item
    return feed


def _num(v) -> str:
    from .explain import fmt
    return fmt(v)


def cmd_explain(args) -> int:
    if args.draw is not None:
        _check_output(args.draw, "--draw")
    if args.grad_draw is not None:
        _check_output(args.grad_draw, "--grad-draw")
    g = _load(args.expression)
    feed = _parse_at(args.at)
    names = [n.name for n in g.inputs()]
    unknown = [k for k in feed if k not in names]
    if unknown:
        raise GraphError(f"--at {unknown[0]}: the formula has no input {unknown[0]!r}; "
                         f"its inputs are {', '.join(names)}")
    missing = [k for k in names if k not in feed]
    if missing:
        raise GraphError(f"input {missing[0]!r} needs a value: add --at "
                         f"{' '.join(k + '=...' for k in missing)}")
    g.forward(feed)
    explained = g.explain()
    print(f"{explained.out} = {args.expression.strip()}  at  "
          + ", ".join(f"{k} = {_num(feed[k])}" for k in names))
    print()
    print(explained)
    if args.draw is not None:
        _draw_to(g, args.draw)
        print(f"\ndrew the circuit to {args.draw}")
    if args.grad is not None or args.grad_draw is not None:
        _explain_grad(g, feed, explained.out, args)
    return 0


def _explain_grad(g, feed, out, args) -> None:
    from .explain import _formulas, _table
    from .higher import grad

    if args.grad is None:
        raise GraphError("--grad-draw needs --grad NAME: the input to differentiate by")
    names = [n.name for n in g.inputs()]
    if args.grad not in names:
        raise GraphError(f"--grad {args.grad}: the formula has no input {args.grad!r}; its "
                         f"inputs are {', '.join(names)}")
    h = grad(g, args.grad)
    value = h.forward(feed)
    seed = next(n.name for n in h.nodes("gate") if n.gate.op == "seed")
    print(f"\nd{out}/d{args.grad} = {_num(value)} as its own circuit ({h.output.name}): the "
          f"forward nodes it needs, the seed {seed} = 1, and the backward pass as gates:\n")
    slots = h.plan().slot
    formulas = _formulas(list(h))
    rows = [("node", "computes", "value")]
    for node in h:
        what = formulas[node.name] if node.kind == "gate" else node.kind
        shown = _num(node.value) if node.name in slots else "(not needed)"
        rows.append((node.name, what, shown))
    print("\n".join(_table(rows)))
    if args.grad_draw is not None:
        _draw_to(h, args.grad_draw)
        print(f"\ndrew the gradient circuit to {args.grad_draw}")


def _load(text: str):
    # a formula, or an ONNX model's file (`graphengine explain model.onnx --at ...`)
    from .graph import ComputationalGraph

    if text.strip().lower().endswith(".onnx"):
        try:
            return ComputationalGraph.from_onnx(text.strip())
        except ImportError as exc:          # onnx is an extra: say how to get it
            raise GraphError(str(exc)) from None
    return ComputationalGraph.from_expression(text)


def _draw_to(g, path: str) -> None:
    _check_output(path, "--draw")
    from matplotlib.figure import Figure

    from .draw import _figsize, _layout, draw

    _, width, height = _layout(g)
    fig = Figure(figsize=_figsize(width, height, False))
    draw(g, ax=fig.add_subplot())
    _save(fig, path, "--draw", bbox_inches="tight", dpi=120)


# ---------------------------------------------------------------- output files

def _filetypes(option: str) -> dict:
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise GraphError(f"{option} needs matplotlib: pip install 'graphengine[draw]'") \
            from None
    return FigureCanvasBase.get_supported_filetypes()


def _check_output(path: str, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written where it is named:
    no name, a directory, no extension or one matplotlib cannot save, a missing
    directory, or a place that refuses a new file."""
    if not path:
        raise GraphError(f"{option}: the file name is empty")
    if os.path.isdir(path):
        raise GraphError(f"{option} {path}: is a directory; name a file in it, such as "
                         f"{os.path.join(path, 'out.png')}")
    types = _filetypes(option)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    known = ", ".join("." + t for t in sorted(types))
    if not ext:
        raise GraphError(f"{option} {path}: the file name needs an extension that names "
                         f"its format, such as {path}.png (one of {known})")
    if ext not in types:
        raise GraphError(f"{option} {path}: matplotlib cannot save .{ext} files; use one "
                         f"of {known}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise GraphError(f"{option} {path}: the directory {folder} does not exist")
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):          # appending changes nothing in a file that exists
            pass
    except OSError as exc:
        raise GraphError(f"{option} {path}: cannot write the file ({exc.strerror})") from None
    if not existed:
        os.remove(path)


def _save(fig, path: str, option: str, **options) -> None:
    try:
        fig.savefig(path, **options)
    except Exception as exc:
        # a backend may fail again while cleaning up after the OSError (the PDF writer
        # on a full disk): report the OSError underneath
        cause, seen = exc, set()
        while cause is not None and not isinstance(cause, OSError) and id(cause) not in seen:
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, OSError):
            raise GraphError(f"{option} {path}: cannot write the file "
                             f"({cause.strerror or cause})") from None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GraphError(f"{option} {path}: matplotlib could not save it: {first}") from None


# ---------------------------------------------------------------- export

MAX_JSON_BYTES = 64 * 2 ** 20


def cmd_export(args) -> int:
    from .export import to_onnx
    from .graph import ComputationalGraph

    if not args.to.lower().endswith(".onnx"):
        raise GraphError(f"--to {args.to}: expected a file name ending in .onnx")
    try:
        with open(args.graph, encoding="utf-8") as fh:
            text = fh.read(MAX_JSON_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"cannot read {args.graph}: {getattr(exc, 'strerror', exc)}") \
            from None
    if len(text) > MAX_JSON_BYTES:
        raise GraphError(f"{args.graph} is larger than {MAX_JSON_BYTES} bytes")
    g = ComputationalGraph.from_json(text)
    shapes = {}
    for item in args.shape:
        name, _, dims = item.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.split("x")) if dims else ()
        except ValueError:
            raise GraphError(f"--shape wants NAME=D1xD2..., such as x=32x64, got "
                             f"{item!r}") from None
        if any(d < 1 or d > 2 ** 20 for d in shapes[name]):
            raise GraphError(f"--shape {item}: dimensions must be from 1 to {2 ** 20}")
    names = [n.name for n in g.inputs()]
    unknown = [k for k in shapes if k not in names]
    if unknown:
        raise GraphError(f"--shape {unknown[0]}: the graph has no input {unknown[0]!r}; its "
                         f"inputs are {', '.join(names) or 'none'}")
    # example values of those shapes (ones: every class label 1 and every log finite)
    feed = {k: np.ones(shapes.get(k, ())) if shapes.get(k) else 1.0 for k in names
            if k in g.plan().slot}
    try:
        model = to_onnx(g, feed)
    except ImportError as exc:              # onnx is an extra: say how to get it
        raise GraphError(str(exc)) from None
    try:
        with open(args.to, "wb") as fh:
            fh.write(model.SerializeToString())
    except OSError as exc:
        raise GraphError(f"--to {args.to}: cannot write the file ({exc.strerror})") from None
    print(f"wrote {args.to}: {len(model.graph.node)} ONNX operators, inputs "
          + ", ".join(f"{i.name} {[d.dim_value for d in i.type.tensor_type.shape.dim]}"
                      for i in model.graph.input))
    return 0


# ---------------------------------------------------------------- train

def _check_train_args(args):
    from .nn import MAX_PARAMETERS

    for name, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--hidden", args.hidden)):
        if value < 1:
            raise GraphError(f"{name} must be a positive integer, got {value}")
    if args.seed < 0:
        raise GraphError(f"--seed must be a non-negative integer, got {args.seed}")
    weights = 64 * args.hidden + args.hidden + args.hidden * 10 + 10
    if weights > MAX_PARAMETERS:
        raise GraphError(f"--hidden {args.hidden}: the network would have {weights} weights "
                         f"and biases, more than the limit {MAX_PARAMETERS}")
    if not (args.lr > 0 and args.lr < float("inf")):
        raise GraphError(f"--lr must be a positive number, got {args.lr}")
    if args.plot is not None:
        _check_output(args.plot, "--plot")


def _plot_history(history, path):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    epochs = range(1, len(history.loss) + 1)
    ax.plot(epochs, history.loss, label="training loss")
    ax.plot(epochs, history.val_loss, label="held-out loss")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("softmax cross-entropy")
    ax.legend()
    _save(fig, path, "--plot")


def cmd_train(args) -> int:
    import numpy as np

    from .train import train_digits

    _check_train_args(args)
    print(f"training a 64-{args.hidden}-10 sigmoid MLP on the digits: "
          f"{_count(args.epochs, 'epoch')}, "
          f"SGD lr {args.lr:g} momentum 0.9, batch {args.batch_size}, seed {args.seed}")
    # a run that diverges is reported once at the end, not by numpy at every overflow
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        history, _ = train_digits(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                  hidden=args.hidden, seed=args.seed, quiet=args.quiet,
                                  log=print)
    print(f"held-out accuracy {history.val_accuracy[-1]:.4f} "
          f"after {_count(len(history.loss), 'epoch')} in {history.seconds:.1f} s")
    if args.plot is not None:
        _plot_history(history, args.plot)
        print(f"loss curve saved to {args.plot}")
    bad = next((k for k, v in enumerate(history.loss, 1) if not math.isfinite(v)), None)
    if bad is not None:
        print(f"graphengine train: warning: the training diverged: the loss became "
              f"{history.loss[bad - 1]} in epoch {bad} (try a smaller --lr than "
              f"{args.lr:g})", file=sys.stderr)
        return 1
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------- entry point

_EXPLAIN_OPTIONS = ("-h", "--help", "--at", "--draw", "--grad", "--grad-draw")
_TAKES_ONE = ("--draw", "--grad", "--grad-draw")     # options followed by one value


def _formula_last(argv: list) -> list:
    # `graphengine explain "-x" --at x=2`: a formula may begin with "-", which argparse
    # takes for an option; move it behind "--", where argparse reads it as the formula
    if len(argv) < 2 or argv[0] != "explain" or "--" in argv:
        return argv
    rest = argv[1:]
    for k, arg in enumerate(rest):
        if k and rest[k - 1] in _TAKES_ONE:
            continue                              # the option's value, not the formula
        head = arg.split("=", 1)[0]
        if arg.startswith("-") and arg != "-" and not (
                head in _EXPLAIN_OPTIONS or (len(head) > 2 and any(
                    o.startswith(head) for o in _EXPLAIN_OPTIONS if o.startswith("--")))):
            return ["explain", *rest[:k], *rest[k + 1:], "--", arg]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); return the exit code."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_formula_last(argv))
    try:
        return args.run(args)
    except GraphError as exc:
        print(f"graphengine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader closed the pipe (`graphengine explain ... | head`): stop quietly,
        # pointing stdout at devnull so the interpreter's last flush does not fail too
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
