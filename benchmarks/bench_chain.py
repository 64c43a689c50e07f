"""Scalar chains: building and first run beside micrograd, PyTorch and HIPS autograd;
reruns beside a hand-written floor; stacked diamonds.

    python benchmarks/bench_chain.py [--sizes 1000 10000 100000 1000000] [--repeats 3]

Chain: N gates alternating sigmoid and add-a-constant, written as a learner writes it
(``h = g.sigmoid(h)`` and ``h = h + 0.5``: each ``+ 0.5`` adds a constant node, so
the graph has 1.5 N + 1 nodes). Each contender runs in a fresh subprocess per N (so
its memory is its own) and reports, in CPU time of the running thread (so the load
of other processes on a shared machine counts less):
  first   build + first forward + backward, from nothing to the input's gradient
          (graphengine also splits it into build, compile and run); the per-node
          build and compile columns are the best of that and of about 40,000 / N
          more fresh builds (one below 1e4 is too short a time to time)
  peak    peak resident memory of the process minus its size before building,
          per graphengine node (1.5 N + 1; per Value/tensor for the peers alike)
  rerun   forward + backward of a built chain whose adds share one constant (N + 2
          nodes), returning every node's gradient, best of about 400,000 / N runs
          (at least --repeats), beside the same computation as a hand-written
          Python loop over floats (the floor), timed alike
micrograd has no sigmoid, so relu stands in (its recursive sort runs in a thread
with a raised recursion limit); autograd gets sigmoid as one primitive. Peers stop
at 1e5.

Diamonds: k stacked diamonds (x -> x*c + x*c), 2^k paths from the input to the
output; backward must stay linear in k.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])       # this checkout's graphengine
C = 0.5


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
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


def chain(ge, n):
    """The chain as a learner writes it: the graph and its last node."""
    g = ge.ComputationalGraph()
    h = g.input("x")
    for i in range(n):
        h = g.sigmoid(h) if i % 2 == 0 else h + C
    return g, h


def engine_chain(n, repeats):
    sys.path.insert(0, ROOT)
    import graphengine as ge

    before = rss()
    t0 = time.thread_time()
    g, h = chain(ge, n)
    t1 = time.thread_time()
    g.plan()
    t2 = time.thread_time()
    g.forward(x=0.3)
    grads = g.backward()
    t3 = time.thread_time()
    grad = grads["x"]
    del grads
    mem = (peak() - before) / len(g)
    value, want = floor_chain(n)
    assert abs(h.value - value) < 1e-9 and abs(grad - want) <= 1e-9 * abs(want) + 1e-300
    out = {"build": t1 - t0, "compile": t2 - t1, "run1": t3 - t2, "first": t3 - t0,
           "bytes": mem, "nodes": len(g)}
    del g, h
    # build and compile again, best of a few: below 1e5 one cold build is a millisecond
    # or so, too short a time to say what a node costs
    builds, compiles = [out["build"]], [out["compile"]]
    for _ in range(max(1, 40_000 // n) if n <= 100_000 else 0):
        t0 = time.thread_time()
        g, h = chain(ge, n)
        t1 = time.thread_time()
        g.plan()
        builds.append(t1 - t0)
        compiles.append(time.thread_time() - t1)
        del g, h
    out["build_best"], out["compile_best"] = min(builds), min(compiles)
    # the rerun: N + 2 nodes (one shared constant), as the floor's N steps
    g = ge.ComputationalGraph()
    h = g.input("x")
    c = g.constant(C, name="c")
    for i in range(n):
        h = g.sigmoid(h) if i % 2 == 0 else g.add(h, c)

    def run():
        g.forward(x=0.3)
        return g.backward()

    run()
    out["rerun"] = best(run, max(repeats, reruns(n)))
    return out


def reruns(n) -> int:
    """How many times a run of n gates is repeated for its best: about 0.2 s of runs."""
    return max(1, 400_000 // n)


def deep(fn):
    """Run fn in a thread with a big stack and a raised recursion limit; return the
    thread's CPU time."""
    out = {}
    sys.setrecursionlimit(10 ** 7)
    threading.stack_size(1 << 30)

    def run():
        t = time.thread_time()
        fn()
        out["time"] = time.thread_time() - t

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "time" not in out:
        raise RuntimeError("failed")
    return out["time"]


def micrograd_chain(n):
    from micrograd.engine import Value

    def run():
        x = Value(0.3)
        h = x
        for i in range(n):
            h = h.relu() if i % 2 == 0 else h + C
        h.backward()

    return deep(run)


def torch_chain(n):
    import torch

    torch.set_num_threads(1)
    x = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    h = x
    for i in range(n):
        h = torch.sigmoid(h) if i % 2 == 0 else h + C
    h.backward()


def autograd_chain(n):
    import autograd.numpy as anp
    from autograd import grad
    from autograd.extend import defvjp, primitive

    @primitive
    def sigmoid(v):
        return 1.0 / (1.0 + anp.exp(-v))

    defvjp(sigmoid, lambda ans, v: lambda g: g * ans * (1.0 - ans))

    def f(x):
        h = x
        for i in range(n):
            h = sigmoid(h) if i % 2 == 0 else h + C
        return h

    grad(f)(0.3)


def measure(kind, n, repeats):
    if kind == "floor":
        return {"rerun": best(lambda: floor_chain(n), max(repeats, reruns(n)))}
    if kind == "engine":
        return engine_chain(n, repeats)
    peer = {"micrograd": micrograd_chain, "torch": torch_chain,
            "autograd": autograd_chain}[kind]
    if kind == "torch":
        import torch  # noqa: F401  (its import is not the chain's cost)
    if kind == "autograd":
        import autograd  # noqa: F401
    before = rss()
    t = time.thread_time()
    took = peer(n)
    first = time.thread_time() - t if took is None else took
    return {"first": first, "bytes": (peak() - before) / (1.5 * n + 1)}


def diamonds(ks, repeats):
    sys.path.insert(0, ROOT)
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
    # found, not imported: a child's peak RSS starts from its parent's (Linux keeps
    # the high-water mark across exec), so the parent stays small
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def child(kind, n, repeats):
    cmd = [sys.executable, __file__, "--child", kind, str(n), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:40]}
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeats)))
        return

    peers = [k for k, m in (("micrograd", "micrograd.engine"), ("torch", "torch"),
                            ("autograd", "autograd")) if available(m)]
    print(f"chain of N sigmoid / add-a-constant gates (1.5 N + 1 nodes), python "
          f"{sys.version.split()[0]}; times per gate")
    print("| N | build s | compile s | first run s | build µs/node (best) | "
          "compile µs/node (best) | "
          "graphengine first µs | "
          + " | ".join(f"{p} first µs" for p in peers)
          + " | " + " | ".join(f"{p} / graphengine" for p in peers)
          + " | graphengine peak B/node | " + " | ".join(f"{p} B/node" for p in peers)
          + " | rerun µs | floor µs | rerun / floor |")
    print("|" + "---:|" * (11 + 3 * len(peers)))
    for n in args.sizes:
        e = child("engine", n, args.repeats)
        f = child("floor", n, args.repeats)
        res = {p: child(p, n, 1) if n <= 100_000 else {"error": "not run"} for p in peers}
        if "error" in e:
            print(f"| {n:,} | graphengine failed: {e['error']} |")
            continue
        cells = [f"{n:,}", f"{e['build']:.3f}", f"{e['compile']:.3f}", f"{e['run1']:.3f}",
                 f"{e['build_best'] / e['nodes'] * 1e6:.2f}",
                 f"{e['compile_best'] / e['nodes'] * 1e6:.2f}",
                 f"{e['first'] / n * 1e6:.2f}"]
        cells += [f"{res[p]['first'] / n * 1e6:.2f}" if "first" in res[p] else res[p]["error"]
                  for p in peers]
        cells += [f"{res[p]['first'] / e['first']:.2f}" if "first" in res[p] else "-"
                  for p in peers]
        big = n >= 100_000       # below, a few pages of RSS are most of the figure
        cells += [f"{e['bytes']:.0f}" if big else "-"]
        cells += [f"{res[p]['bytes']:.0f}" if big and "bytes" in res[p] else "-"
                  for p in peers]
        cells += [f"{e['rerun'] / n * 1e6:.3f}", f"{f['rerun'] / n * 1e6:.3f}",
                  f"{e['rerun'] / f['rerun']:.2f}"]
        print("| " + " | ".join(cells) + " |", flush=True)

    print()
    print("k stacked diamonds (2^k paths): forward + backward")
    print(f"{'k':>4} | {'paths':>10} | {'engine us':>10} {'floor us':>9} {'ratio':>6} "
          f"| {'engine us/k':>11}")
    for k, paths, engine, floor in diamonds([10, 20, 40, 80, 160], args.repeats):
        print(f"{k:>4} | {paths:>10.3g} | {engine * 1e6:>10.1f} {floor * 1e6:>9.1f} "
              f"{engine / floor:>6.2f} | {engine / k * 1e6:>11.3f}")


if __name__ == "__main__":
    main()
