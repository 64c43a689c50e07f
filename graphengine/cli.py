"""The command line: a thin argparse layer over the library (``graphengine --help``).

Nothing in the package imports this module. ``main(argv)`` returns the exit code;
a user's mistake prints one line to stderr and returns 2.
"""

from __future__ import annotations

import argparse
import sys

from .errors import GraphError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphengine",
        description="Computational graphs of gates: explain a formula's gradients, "
                    "or train a network on the digits data.")
    sub = parser.add_subparsers(dest="command", required=True)

    explain = sub.add_parser("explain", help="values and gradients of a formula, "
                                             "with each input's gradient as a sum over paths")
    explain.add_argument("expression", help='a formula such as "(x + y) * z"')
    explain.add_argument("--at", nargs="+", default=[], metavar="NAME=VALUE",
                         help="a value for every input of the formula")
    explain.add_argument("--draw", metavar="FILE", help="also draw the circuit to a .png or .svg")
    explain.set_defaults(run=cmd_explain)

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

def cmd_explain(args) -> int:
    raise NotImplementedError("graphengine explain")


# ---------------------------------------------------------------- train

def cmd_train(args) -> int:
    raise NotImplementedError("graphengine train")


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
