"""The command line: a thin argparse layer over the library (``graphengine --help``).

Nothing in the package imports this module. ``main(argv)`` returns the exit code;
a user's mistake prints one line to stderr and returns 2.
"""

from __future__ import annotations

import argparse
import os
import sys

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
    explain.add_argument("--draw", metavar="FILE", help="also draw the circuit to a .png or .svg")
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
    train.add_argument("--plot", metavar="FILE", help="save the loss curve to a .png")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)
    return parser


# ---------------------------------------------------------------- explain

PATHS_SHOWN = 64          # list the paths of an input when it has at most this many


def _parse_at(items) -> dict:
    feed = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise GraphError(f"--at wants NAME=VALUE pairs such as x=-2, got {item!r}")
        try:
            feed[name] = float(text)
        except ValueError:
            raise GraphError(f"--at {name}: {text!r} is not a number") from None
    return feed


def _num(v) -> str:
    if np.ndim(v):          # an array (a model's parameters): its numbers, abridged
        return np.array2string(np.asarray(v), precision=4, threshold=6, edgeitems=1,
                               max_line_width=10 ** 6)
    return f"{v:.6g}"


def _formula(node) -> str:
    names = [u.name for u in node.inputs]
    label = node.gate.label
    if label.startswith("**") and len(names) == 1:
        return f"{names[0]} ** {label[2:]}"
    if node.gate.op == "neg":
        return f"-{names[0]}"
    if label in ("+", "-", "*", "/", "**", "@") and len(names) == 2:
        return f" {label} ".join(names)
    return f"{node.gate.op or label}({', '.join(names)})"


def _table(rows) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def cmd_explain(args) -> int:
    from .derivatives import count_paths

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
    value = g.forward(feed)
    grads = g.backward()
    out = "f" if "f" not in names else "out"      # what the text calls the output
    print(f"{out} = {args.expression.strip()}  at  "
          + ", ".join(f"{k} = {_num(feed[k])}" for k in names))
    print()
    rows = [("node", "computes", "value", f"d{out}/dnode")]
    for node in g:
        what = _formula(node) if node.kind == "gate" else node.kind
        rows.append((node.name, what, _num(node.value), _num(grads[node.name])))
    print("\n".join(_table(rows)))
    print()
    print(f"{out} = {g.output.name} = {_num(value)}. Each input's gradient is the sum over "
          f"its paths to {g.output.name}\nof the product of the local derivatives along "
          "the path:")
    for name in names:
        count = count_paths(g, name)
        print()
        if count > PATHS_SHOWN:
            print(f"d{out}/d{name} = {_num(grads[name])}  ({count} paths, too many to "
                  f"list; backward sums them in one pass)")
            continue
        total, terms = g.path_gradient(name, limit=PATHS_SHOWN)
        plural = "path" if count == 1 else "paths"
        print(f"d{out}/d{name} = {_num(total)}  (sum over {count} {plural})")
        print("\n".join(_table([("  " + " -> ".join(path), _num(term))
                                for path, term in terms])))
    if args.draw:
        _draw_to(g, args.draw)
        print(f"\ndrew the circuit to {args.draw}")
    return 0


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
    if not path.lower().endswith((".png", ".svg")):
        raise GraphError(f"--draw {path}: expected a file name ending in .png or .svg")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise GraphError("--draw needs matplotlib: pip install 'graphengine[draw]'") from None
    from .draw import _figsize, _layout, draw

    _, width, height = _layout(g)
    fig = Figure(figsize=_figsize(width, height, False))
    draw(g, ax=fig.add_subplot())
    try:
        fig.savefig(path, bbox_inches="tight", dpi=120)
    except OSError as exc:
        raise GraphError(f"--draw {path}: cannot write the file ({exc.strerror})") from None


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
    for name, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--hidden", args.hidden)):
        if value < 1:
            raise GraphError(f"{name} must be a positive integer, got {value}")
    if not (args.lr > 0 and args.lr < float("inf")):
        raise GraphError(f"--lr must be a positive number, got {args.lr}")
    if args.plot is not None:
        try:
            import matplotlib
        except ImportError:
            raise GraphError("--plot needs matplotlib (pip install 'graphengine[draw]')") from None
        matplotlib.use("Agg")


def _plot_history(history, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = range(1, len(history.loss) + 1)
    ax.plot(epochs, history.loss, label="training loss")
    ax.plot(epochs, history.val_loss, label="held-out loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("softmax cross-entropy")
    ax.legend()
    try:
        fig.savefig(path)
    except (OSError, ValueError) as exc:
        raise GraphError(f"--plot: cannot write {path!r}: {exc}") from None
    finally:
        plt.close(fig)


def cmd_train(args) -> int:
    from .train import train_digits

    _check_train_args(args)
    print(f"training a 64-{args.hidden}-10 sigmoid MLP on the digits: {args.epochs} epochs, "
          f"SGD lr {args.lr:g} momentum 0.9, batch {args.batch_size}, seed {args.seed}")
    history, _ = train_digits(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                              hidden=args.hidden, seed=args.seed, quiet=args.quiet,
                              log=print)
    print(f"held-out accuracy {history.val_accuracy[-1]:.4f} "
          f"after {len(history.loss)} epochs in {history.seconds:.1f} s")
    if args.plot is not None:
        _plot_history(history, args.plot)
        print(f"loss curve saved to {args.plot}")
    return 0


# ---------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
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
