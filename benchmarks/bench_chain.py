"""Scalar graphs: a long chain and stacked diamonds, beside a hand-written floor.

    python benchmarks/bench_chain.py [--sizes 1000 10000 100000 1000000] [--repeats 5]

Chain: N nodes alternating sigmoid and add-a-constant. For each N, in a fresh
subprocess (so peak memory is its own): time to build, to compile, and for one
forward + backward (best of --repeats), per node, and peak RSS. The floor is the
same computation as a hand-written Python loop over floats; micrograd and PyTorch
eager run beside it when installed.

Diamonds: k stacked diamonds (x -> x*a + x*b), 2^k paths from the input to the
output; backward must stay linear in k.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

C = 0.5


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def floor_chain(n, x=0.3):
    exp = math.exp
    vals = [0.0] * (n + 1)
    vals[0] = x
    for i in range(n):
        v = vals[i]
        vals[i + 1] = 1.0 / (1.0 + exp(-v)) if i % 2 == 0 else v + C
    g = 1.0
    for i in range(n - 1, -1, -1):
        if i % 2 == 0:
            s = vals[i + 1]
            g = g * s * (1.0 - s)
    return vals[n], g


def floor_diamonds(k, x=1.0, c=0.5):
    # the same per-node work as the engine: every value and every gradient is kept
    vals = [0.0] * (3 * k + 1)
    vals[0] = x
    for i in range(k):
        v = vals[3 * i]
        vals[3 * i + 1] = v * c
        vals[3 * i + 2] = v * c
        vals[3 * i + 3] = vals[3 * i + 1] + vals[3 * i + 2]
    grads = [0.0] * (3 * k + 1)
    grads[3 * k] = 1.0
    for i in range(k - 1, -1, -1):
        g = grads[3 * i + 3]
        grads[3 * i + 1] += g
        grads[3 * i + 2] += g
        grads[3 * i] += grads[3 * i + 1] * c + grads[3 * i + 2] * c
    return vals[3 * k], grads[0]


def engine_chain(n, repeats):
    import graphengine as ge

    t = time.perf_counter()
    g = ge.ComputationalGraph()
    h = x = g.input("x")
    c = g.constant(C, name="c")
    for i in range(n):
        h = g.sigmoid(h) if i % 2 == 0 else g.add(h, c)
    build = time.perf_counter() - t
    t = time.perf_counter()
    g.plan()
    compile_ = time.perf_counter() - t
    g.forward(x=0.3)

    def run():
        g.forward(x=0.3)
        return g.backward()

    step = best(run, repeats)
    value, grad = floor_chain(n)
    assert abs(h.value - value) < 1e-9 and abs(x.grad - grad) <= 1e-9 * abs(grad) + 1e-300
    return {"build": build, "compile": compile_, "run": step}


def micrograd_chain(n, repeats):
    from micrograd.engine import Value

    def run():
        x = Value(0.3)
        h = x
        for i in range(n):
            # micrograd's PyPI release has no exp, so no sigmoid: relu in its place
            h = h.relu() if i % 2 == 0 else h + C
        h.backward()
        return x.grad

    return best(run, repeats)


def torch_chain(n, repeats):
    import torch

    torch.set_num_threads(1)

    def run():
        x = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        h = x
        for i in range(n):
            h = torch.sigmoid(h) if i % 2 == 0 else h + C
        h.backward()
        return x.grad

    return best(run, repeats)


def measure(kind, n, repeats):
    try:
        if kind == "floor":
            out = {"run": best(lambda: floor_chain(n), repeats)}
        elif kind == "engine":
            out = engine_chain(n, repeats)
        else:
            peer = micrograd_chain if kind == "micrograd" else torch_chain
            out = {"run": peer(n, repeats)}
    except RecursionError:            # micrograd's recursive topological sort
        out = {"error": "RecursionError"}
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def diamonds(ks, repeats):
    import graphengine as ge

    rows = []
    for k in ks:
        g = ge.ComputationalGraph()
        h = x = g.input("x")
        half = g.constant(0.5, name="half")
        for _ in range(k):
            h = g.add(h * half, h * half)   # 2 paths per diamond, each of weight 1/2
        g.plan()
        g.forward(x=1.0)
        engine = best(lambda g=g: (g.forward(x=1.0), g.backward()), repeats)
        floor = best(lambda k=k: floor_diamonds(k), repeats)
        assert x.grad == 1.0 == floor_diamonds(k)[1]     # 2^k paths, each 2^-k
        rows.append((k, 2.0 ** k, engine, floor))
    return rows


def available(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeats)))
        return

    kinds = ["floor", "engine"] + [k for k, m in (("micrograd", "micrograd.engine"),
                                                  ("torch", "torch")) if available(m)]
    print(f"chain of sigmoid / add-a-constant nodes, python {sys.version.split()[0]}")
    head = (f"{'N':>9} | {'build s':>8} {'compile s':>9} | {'engine us/node':>14} "
            f"{'floor us/node':>13} {'ratio':>6} | {'peak MB':>8}")
    others = [k for k in kinds if k not in ("floor", "engine")]
    head += "".join(f" | {k + ' us/node':>17}" for k in others)
    print(head)
    print("-" * len(head))
    for n in args.sizes:
        res = {}
        for kind in kinds:
            if kind in ("micrograd", "torch") and n > 100_000:
                res[kind] = {"error": "skipped"}
                continue
            cmd = [sys.executable, __file__, "--child", kind, str(n),
                   "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode or not lines:
                res[kind] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:40]}
            else:
                res[kind] = json.loads(lines[-1])
        e, f = res["engine"], res["floor"]
        line = (f"{n:>9} | {e['build']:>8.2f} {e['compile']:>9.2f} | {e['run'] / n * 1e6:>14.3f} "
                f"{f['run'] / n * 1e6:>13.3f} {e['run'] / f['run']:>6.2f} | {e['peak_mb']:>8.0f}")
        for k in others:
            r = res[k]
            line += f" | {r['run'] / n * 1e6:>17.3f}" if "run" in r else f" | {r['error']:>17}"
        print(line, flush=True)

    print()
    print("k stacked diamonds (2^k paths): forward + backward")
    print(f"{'k':>4} | {'paths':>10} | {'engine us':>10} {'floor us':>9} {'ratio':>6} "
          f"| {'engine us/k':>11}")
    for k, paths, engine, floor in diamonds([10, 20, 40, 80, 160], args.repeats):
        print(f"{k:>4} | {paths:>10.3g} | {engine * 1e6:>10.1f} {floor * 1e6:>9.1f} "
              f"{engine / floor:>6.2f} | {engine / k * 1e6:>11.3f}")


if __name__ == "__main__":
    main()
