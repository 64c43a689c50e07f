"""Forward against reverse mode for a full Jacobian.

    python benchmarks/bench_jacobian.py [--size 1000] [--depth 10] [--repeats 5]

f: R^n -> R^m built from gates (``--depth`` layers of tanh, mul, add, sigmoid on
arrays), for (n, m) = (1, size) and (size, 1). ``g.jacobian(mode="forward")`` runs one
jvp per input element, ``mode="reverse"`` one backward per output element, so forward
mode should win when inputs are few and reverse mode when outputs are few
(background.md section 4). Prints the best of --repeats for each, both ratios, and
checks that the two Jacobians agree.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's graphengine

import graphengine as ge  # noqa: E402


def build(n, m, depth):
    """f(x) for x of n elements: an m-vector (n == 1) or a scalar sum (m == 1)."""
    g = ge.ComputationalGraph()
    x = g.input("x")
    width = max(n, m)
    c = g.constant(np.linspace(0.1, 1.0, width), name="c")
    h = x * c
    for _ in range(depth):
        h = g.sigmoid(g.tanh(h) * c + x)
    if m == 1:
        g.sum(h, name="f")
    else:
        g.set_output(h)
    return g


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    k = args.size
    print(f"Jacobian of f: R^n -> R^m, {args.depth} layers of 4 gates, best of "
          f"{args.repeats}")
    print(f"{'(n, m)':>12}  {'forward (ms)':>12}  {'reverse (ms)':>12}  "
          f"{'reverse/forward':>16}  {'forward/reverse':>16}")
    for n, m in ((1, k), (k, 1)):
        g = build(n, m, args.depth)
        g.forward(x=np.linspace(-1.0, 1.0, n))
        t_fwd, J_fwd = best(lambda g=g: g.jacobian(["x"], mode="forward"), args.repeats)
        t_rev, J_rev = best(lambda g=g: g.jacobian(["x"], mode="reverse"), args.repeats)
        assert J_fwd["x"].shape == J_rev["x"].shape == np.shape(g.output.value) + (n,)
        assert np.allclose(J_fwd["x"], J_rev["x"], rtol=1e-12, atol=1e-15)
        print(f"{str((n, m)):>12}  {1e3 * t_fwd:12.3f}  {1e3 * t_rev:12.3f}  "
              f"{t_rev / t_fwd:16.4g}  {t_fwd / t_rev:16.4g}")


if __name__ == "__main__":
    main()
