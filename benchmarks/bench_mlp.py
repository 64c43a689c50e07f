"""One training step of a 64-128-10 sigmoid MLP with softmax cross-entropy on the
digits, and micrograd's own demo, graphengine beside the baselines.

Run single-threaded, with the machine's OpenBLAS settings left to numpy:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/bench_mlp.py [--repeats 21] [--quick]

MLP step = forward + backward + SGD update, all float64, at batch 32, 256 and 1797:
  engine      ge.train.compile_step (the step ge.train.fit runs)
  engine-api  g.forward(feed); g.backward(); opt.step() (every node's gradient)
  numpy       a hand-written numpy forward and backward of the same network (the
              parameters' gradients only, as engine's pruned backward)
  numpy-all   the same, computing every gradient engine-api's backward returns: the
              data's d/dx too, each gradient its own array (add's pass-through
              copied, zeros for the labels), returned as a dict by node name
  torch       PyTorch eager on the CPU, when it is installed
micrograd demo: a scalar 2-16-16-1 ReLU MLP on 100 two-moons points with the
max-margin loss and L2 term of micrograd's demo notebook; graphengine builds it
once as a scalar graph and reruns it each step, micrograd rebuilds it each step.
Each figure is the best of --repeats short rounds (about 25 ms each) of the thread's
CPU time; rounds interleave the contenders. CPU time leaves out the time other
processes take, not the cache and memory bandwidth they share: many short rounds give
each contender quiet moments to be timed in, where a few long ones average the noise.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's graphengine

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import graphengine as ge  # noqa: E402

LR = 0.1


def best_per_call(fn, calls: int) -> float:
    start = time.thread_time()
    for k in range(calls):
        fn(k)
    return (time.thread_time() - start) / calls


def batches(X, y, size):
    # the steps cycle through the data: one batch stepped on thousands of times would
    # saturate the network, and subnormal floats would then time the CPU, not the code
    return [(X[lo:lo + size].copy(), y[lo:lo + size].copy())
            for lo in range(0, len(X) - size + 1, size)]


def engine_steps(data, W1, W2):
    def build():
        g = ge.ComputationalGraph()
        logits = ge.nn.mlp(g, g.input("x"), [64, 128, 10])
        g.softmax_cross_entropy(logits, g.input("y"))
        return g, ge.optim.SGD(g.parameters(), lr=LR)

    feeds = [{"x": Xb, "y": yb.astype(float)} for Xb, yb in data]
    g, opt = build()
    run = ge.train.compile_step(g, opt)
    g2, opt2 = build()

    def step(k):
        return run(feeds[k % len(feeds)])

    def api(k):
        loss = g2.forward(feeds[k % len(feeds)])
        g2.backward()
        opt2.step()
        return loss

    def reset():
        for h in (g, g2):
            h["W1"].value[...], h["W2"].value[...] = W1, W2
            h["b1"].value[...], h["b2"].value[...] = 0.0, 0.0

    return step, api, reset


def numpy_step(data, W1, W2, every=False):
    W1, W2 = W1.copy(), W2.copy()
    b1, b2 = np.zeros(128), np.zeros(10)
    init = (W1.copy(), W2.copy())
    rows = np.arange(len(data[0][0]))

    def step(k):
        nonlocal W1, b1, W2, b2            # updated in place
        X, y = data[k % len(data)]
        n = len(X)
        z1 = X @ W1 + b1
        h = 1.0 / (1.0 + np.exp(-z1))
        z2 = h @ W2 + b2
        e = np.exp(z2 - z2.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[rows, y]).mean()
        d2 = p
        d2[rows, y] -= 1.0
        d2 /= n
        dW2 = h.T @ d2
        db2 = d2.sum(axis=0)
        dh = d2 @ W2.T
        d1 = dh * h * (1.0 - h)
        dW1 = X.T @ d1
        db1 = d1.sum(axis=0)
        if every:                          # what the public backward returns
            grads = {"x": d1 @ W1.T, "W1": dW1, "b1": db1, "matmul_3": d1.copy(),
                     "add_4": d1, "sigmoid_5": dh, "W2": dW2, "b2": db2,
                     "matmul_8": d2.copy(), "add_9": d2, "y": np.zeros(n),
                     "softmax_cross_entropy_11": 1.0}
        W1 -= LR * dW1
        b1 -= LR * db1
        W2 -= LR * dW2
        b2 -= LR * db2
        return (loss, grads) if every else loss

    def reset():
        W1[...], W2[...] = init
        b1[...], b2[...] = 0.0, 0.0

    return step, reset


def torch_step(data, W1, W2):
    try:
        import torch
    except ImportError:
        return None, None, None
    torch.set_num_threads(1)
    tdata = [(torch.tensor(Xb), torch.tensor(yb)) for Xb, yb in data]
    params = [torch.tensor(W1.copy(), requires_grad=True),
              torch.zeros(128, dtype=torch.float64, requires_grad=True),
              torch.tensor(W2.copy(), requires_grad=True),
              torch.zeros(10, dtype=torch.float64, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=LR)
    W1t, b1t, W2t, b2t = params
    cross_entropy = torch.nn.functional.cross_entropy

    def step(k):
        Xt, yt = tdata[k % len(tdata)]
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(torch.sigmoid(Xt @ W1t + b1t) @ W2t + b2t, yt)
        loss.backward()
        opt.step()
        return loss.item()

    def reset():
        with torch.no_grad():
            W1t.copy_(torch.tensor(W1))
            W2t.copy_(torch.tensor(W2))
            b1t.zero_()
            b2t.zero_()

    return step, reset, torch.__version__


def bench_mlp(repeats: int, quick: bool):
    X, y = ge.datasets.digits()
    init = ge.ComputationalGraph()
    ge.nn.mlp(init, init.input("x"), [64, 128, 10])
    W1, W2 = init["W1"].value, init["W2"].value
    rows, tversion = [], None
    for batch in (32, 256, 1797):
        data = batches(X, y, batch)
        engine, api, engine_reset = engine_steps(data, W1, W2)
        ref, ref_reset = numpy_step(data, W1, W2)
        every, every_reset = numpy_step(data, W1, W2, every=True)
        tstep, treset, tversion = torch_step(data, W1, W2)
        # the same first loss everywhere: the implementations compute one network
        first = [engine(0), api(0), ref(0), every(0)[0]] + ([tstep(0)] if tstep else [])
        assert np.allclose(first, first[0], rtol=1e-9), first
        calls = max(3, int((0.008 if quick else 0.025) / (2e-6 * batch + 6e-5)))
        contenders = {"engine": (engine, engine_reset), "engine-api": (api, engine_reset),
                      "numpy": (ref, ref_reset), "numpy-all": (every, every_reset)}
        if tstep:
            contenders["torch"] = (tstep, treset)
        times = {k: [] for k in contenders}
        for _ in range(repeats):
            for name, (fn, reset) in contenders.items():
                reset()
                times[name].append(best_per_call(fn, calls))
        rows.append((batch, {k: min(v) for k, v in times.items()}))
    return rows, tversion


def make_moons(n=100, noise=0.1, seed=1):
    rng = np.random.default_rng(seed)
    n_out, n_in = n // 2, n - n // 2
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    X = np.vstack([np.c_[np.cos(t_out), np.sin(t_out)],
                   np.c_[1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5]])
    y = np.r_[np.zeros(n_out), np.ones(n_in)] * 2 - 1
    return X + rng.normal(scale=noise, size=X.shape), y


def micrograd_demo(model, X, y):
    from micrograd.engine import Value

    def loss():
        inputs = [list(map(Value, row)) for row in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores, strict=False)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        return data_loss + reg_loss

    def step(k):
        total = loss()
        model.zero_grad()
        total.backward()
        lr = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= lr * p.grad
        return total.data

    return step


def engine_demo(model, X, y):
    """micrograd's network and loss as one scalar graph of graphengine gates."""
    g = ge.ComputationalGraph()
    layers = []
    for li, layer in enumerate(model.layers):
        layers.append([([g.parameter(f"w{li}_{j}_{i}", float(w.data))
                         for i, w in enumerate(neuron.w)],
                        g.parameter(f"b{li}_{j}", float(neuron.b.data)), neuron.nonlin)
                       for j, neuron in enumerate(layer.neurons)])
    losses = []
    for row, yi in zip(X, y, strict=False):
        h = [g.constant(float(v)) for v in row]
        for layer in layers:
            out = []
            for ws, b, nonlin in layer:
                act = b
                for w, v in zip(ws, h, strict=False):
                    act = act + w * v
                out.append(g.relu(act) if nonlin else act)
            h = out
        losses.append(g.relu(1.0 + float(-yi) * h[0]))
    total = losses[0]
    for term in losses[1:]:
        total = total + term
    data_loss = total * (1.0 / len(losses))
    params = g.parameters()
    reg = params[0] * params[0]
    for p in params[1:]:
        reg = reg + p * p
    g.set_output(data_loss + 1e-4 * reg)
    opt = ge.optim.SGD(params, lr=1.0)
    run = ge.train.compile_step(g, opt)

    def step(k):
        opt.lr = 1.0 - 0.9 * k / 100
        return run({})

    return step, g


def bench_demo(repeats: int, quick: bool):
    try:
        from micrograd.nn import MLP
    except ImportError:
        return None
    X, y = make_moons()
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    start = time.perf_counter()
    estep, g = engine_demo(model, X, y)
    build = time.perf_counter() - start
    mstep = micrograd_demo(model, X, y)
    steps = 2 if quick else 5
    le, lm = estep(0), mstep(0)                  # same network, same first loss
    assert abs(le - lm) < 1e-9 * max(1.0, abs(lm)), (le, lm)
    times = {"engine": [], "micrograd": []}
    k = 1
    for _ in range(max(1, min(3, repeats // 2))):     # micrograd takes a second a step
        for name, fn in (("engine", estep), ("micrograd", mstep)):
            start = time.perf_counter()
            for j in range(steps):
                fn(k + j)
            times[name].append((time.perf_counter() - start) / steps)
        k += steps
    return {k: min(v) for k, v in times.items()}, build, len(g)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
    args = parser.parse_args()
    rows, tversion = bench_mlp(args.repeats, args.quick)
    print(f"numpy {np.__version__}, torch {tversion or 'not installed'}; "
          f"best of {args.repeats}, CPU time per step")
    print("| batch | engine | engine-api | numpy | numpy-all | torch | engine/numpy | "
          "engine-api/numpy | engine-api/numpy-all | engine/torch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch, t in rows:
        torch_t = t.get("torch")
        print(f"| {batch} | {t['engine'] * 1e6:.0f} µs | {t['engine-api'] * 1e6:.0f} µs | "
              f"{t['numpy'] * 1e6:.0f} µs | {t['numpy-all'] * 1e6:.0f} µs | "
              + (f"{torch_t * 1e6:.0f} µs" if torch_t else "-") + " | "
              f"{t['engine'] / t['numpy']:.3f} | {t['engine-api'] / t['numpy']:.3f} | "
              f"{t['engine-api'] / t['numpy-all']:.3f} | "
              + (f"{t['engine'] / torch_t:.2f}" if torch_t else "-") + " |")
    demo = bench_demo(args.repeats, args.quick)
    if demo is None:
        print("micrograd demo: micrograd not installed (pip install micrograd)")
        return
    t, build, nodes = demo
    print(f"\nmicrograd demo (scalar 2-16-16-1 ReLU MLP, 100 moons, {nodes} nodes built "
          f"once in {build:.1f} s):")
    print("| engine | micrograd | micrograd/engine |")
    print("|---:|---:|---:|")
    print(f"| {t['engine'] * 1e3:.1f} ms | {t['micrograd'] * 1e3:.1f} ms | "
          f"{t['micrograd'] / t['engine']:.1f}x |")


if __name__ == "__main__":
    main()
