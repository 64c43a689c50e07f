"""Define-by-run: micrograd's demo rebuilt from scratch every step, graphengine beside
micrograd and PyTorch eager on scalars.

    python benchmarks/bench_build.py [--steps 3] [--repeats 3]

The network and loss of micrograd's demo notebook: a 2-16-16-1 ReLU MLP on 100
two-moons points, the max-margin loss ``relu(1 - y * score)`` averaged, plus
``1e-4 * sum(p * p)``. Each step builds the whole expression again from Python floats
with Node operators (as micrograd's demo does with Values), runs forward and
backward, and updates the parameters by SGD. All three start from micrograd's own
initial weights, and the first losses agree. Figures are the best of --repeats rounds
of --steps steps each, in CPU time of the running thread (so the load of other
processes on a shared machine counts less); rounds interleave the contenders.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's graphengine

from bench_mlp import make_moons  # noqa: E402  (the same 100 points as the demo there)

ALPHA = 1e-4


def initial_weights():
    """micrograd's MLP(2, [16, 16, 1]) under random.seed(1337): per layer, per
    neuron, (weights, bias, nonlinear)."""
    from micrograd.nn import MLP

    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    return [[([w.data for w in n.w], n.b.data, n.nonlin) for n in layer.neurons]
            for layer in model.layers], model


def lr_at(k):
    return 1.0 - 0.9 * k / 100


def demo_loss(params, shape, rows, ys, relu):
    """micrograd's demo loss written with Python operators on ``params`` (graphengine
    Nodes or torch tensors, in micrograd's order), ``relu`` the library's."""
    it = iter(params)
    net = [[([next(it) for _ in range(n)], next(it), nonlin) for n, nonlin in layer]
           for layer in shape]
    losses = []
    for row, yi in zip(rows, ys, strict=True):
        h = row
        for layer in net:
            out = []
            for w, b, nonlin in layer:
                act = sum((wi * xi for wi, xi in zip(w, h, strict=True)), b)
                out.append(relu(act) if nonlin else act)
            h = out
        losses.append(relu(1 + -yi * h[0]))
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = ALPHA * sum(p * p for p in params)
    return data_loss + reg_loss


def engine_demo(layers, X, y):
    import graphengine as ge

    shape = [[(len(w), nonlin) for w, _, nonlin in layer] for layer in layers]
    flat = [v for layer in layers for w, b, _ in layer for v in (*w, b)]
    rows = [[float(a) for a in row] for row in X]
    ys = [float(v) for v in y]

    def step(k):
        g = ge.ComputationalGraph()
        params = [g.parameter(f"p{i}", v) for i, v in enumerate(flat)]
        total = demo_loss(params, shape, rows, ys, g.relu)
        loss = g.forward()
        grads = g.backward()
        lr = lr_at(k)
        for i, p in enumerate(params):
            flat[i] -= lr * grads[p.name]
        del total
        return loss, len(g)

    return step


def micrograd_demo(model, X, y):
    from micrograd.engine import Value

    def step(k):
        inputs = [list(map(Value, row)) for row in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores, strict=True)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = ALPHA * sum(p * p for p in model.parameters())
        total = data_loss + reg_loss
        model.zero_grad()
        total.backward()
        lr = lr_at(k)
        for p in model.parameters():
            p.data -= lr * p.grad
        return total.data

    return step


def torch_demo(layers, X, y):
    import torch

    torch.set_num_threads(1)
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for layer in layers for w, b, _ in layer for v in (*w, b)]
    shape = [[(len(w), nonlin) for w, _, nonlin in layer] for layer in layers]
    rows = [[float(a) for a in row] for row in X]
    ys = [float(v) for v in y]

    def step(k):
        total = demo_loss(params, shape, rows, ys, torch.relu)
        for p in params:
            p.grad = None
        total.backward()
        lr = lr_at(k)
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        return total.item()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    X, y = make_moons()
    layers, model = initial_weights()
    contenders = {"graphengine": engine_demo(layers, X, y),
                  "micrograd": micrograd_demo(model, X, y)}
    try:
        contenders["torch"] = torch_demo(layers, X, y)
    except ImportError:
        pass
    first = {}
    for name, fn in contenders.items():
        out = fn(0)
        first[name] = out[0] if isinstance(out, tuple) else out
    nodes = contenders["graphengine"](1)[1]
    assert all(abs(v - first["micrograd"]) < 1e-9 for v in first.values()), first
    times = {name: [] for name in contenders}
    k = 2
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            gc.collect()                # no contender pays for another's garbage
            start = time.thread_time()  # CPU time: other processes' load is not ours
            for j in range(args.steps):
                fn(k + j)
            times[name].append((time.thread_time() - start) / args.steps)
        k += args.steps
    best = {name: min(v) for name, v in times.items()}
    e = best["graphengine"]
    print(f"micrograd's demo rebuilt every step ({nodes} graphengine nodes per step); "
          f"best of {args.repeats} x {args.steps} steps")
    print("| contender | ms per step | µs per node | ratio to graphengine |")
    print("|---|---:|---:|---:|")
    for name, t in best.items():
        print(f"| {name} | {t * 1e3:.1f} | {t / nodes * 1e6:.2f} | {t / e:.2f} |")


if __name__ == "__main__":
    main()
