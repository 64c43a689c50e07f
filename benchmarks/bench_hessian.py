"""The Hessian of a small network's loss: ge.hessian beside PyTorch, JAX (when
installed) and n first-order gradient passes of graphengine's own backward.

Run single-threaded, with the machine's OpenBLAS settings left to numpy:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/bench_hessian.py [--repeats 5]

Two problems, float64:
  tiny     a 4-6-1 tanh MLP (37 parameters) with the MSE loss on 64 samples; the
           Hessian with respect to every parameter
  digits   a 64-16-10 sigmoid MLP with softmax cross-entropy on 128 digits; the
           Hessian with respect to the last layer (W2, b2: 170 parameters)
Contenders, each the best of --repeats:
  ge.hessian        builds the gradient graph once, runs it forward once and one
                    forward-mode pass per parameter (forward-over-reverse)
  n grad passes     n times g.forward + g.backward: what n first-order gradients cost
  torch             torch.autograd.functional.hessian (default, and vectorize=True)
  jax               jax.hessian (jit-compiled, compile time excluded), when installed
The Hessians are checked against PyTorch's before anything is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's graphengine

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import graphengine as ge  # noqa: E402


def best(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def tiny():
    rng = np.random.default_rng(0)
    g = ge.ComputationalGraph()
    x = g.input("x")
    pred = ge.nn.mlp(g, x, [4, 6, 1], activation="tanh", seed=1)
    g.mse(pred, g.input("y"), name="loss")
    X = rng.normal(size=(64, 4))
    feed = {"x": X, "y": np.sin(X.sum(axis=1, keepdims=True))}
    return g, feed, ["W1", "b1", "W2", "b2"], "tanh", "mse"


def digits():
    X, y = ge.datasets.digits()
    g = ge.ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [64, 16, 10], seed=0)
    g.softmax_cross_entropy(logits, g.input("y"), name="loss")
    feed = {"x": X[:128], "y": y[:128].astype(float)}
    return g, feed, ["W2", "b2"], "sigmoid", "ce"


def torch_loss(g, feed, wrt, activation, loss):
    """The same loss in PyTorch as a function of the flat parameters in ``wrt``."""
    import torch

    values = {p.name: torch.tensor(p.value) for p in g.parameters()}
    shapes = [values[n].shape for n in wrt]
    sizes = [int(np.prod(s)) for s in shapes]
    X = torch.tensor(feed["x"])
    act = torch.tanh if activation == "tanh" else torch.sigmoid

    def f(flat):
        p = dict(values)
        k = 0
        for name, shape, n in zip(wrt, shapes, sizes, strict=True):
            p[name] = flat[k:k + n].reshape(shape)
            k += n
        out = act(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        if loss == "mse":
            return torch.mean((out - torch.tensor(feed["y"])) ** 2)
        return torch.nn.functional.cross_entropy(out, torch.tensor(feed["y"]).long())

    flat = torch.cat([values[n].reshape(-1) for n in wrt])
    return f, flat, sizes


def jax_loss(g, feed, wrt, activation, loss):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    values = {p.name: jnp.asarray(p.value) for p in g.parameters()}
    shapes = [values[n].shape for n in wrt]
    sizes = [int(np.prod(s)) for s in shapes]
    X = jnp.asarray(feed["x"])
    act = jnp.tanh if activation == "tanh" else jax.nn.sigmoid

    def f(flat):
        p = dict(values)
        k = 0
        for name, shape, n in zip(wrt, shapes, sizes, strict=True):
            p[name] = flat[k:k + n].reshape(shape)
            k += n
        out = act(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        if loss == "mse":
            return jnp.mean((out - jnp.asarray(feed["y"])) ** 2)
        logp = jax.nn.log_softmax(out)
        return -jnp.mean(logp[jnp.arange(len(out)), jnp.asarray(feed["y"]).astype(int)])

    flat = jnp.concatenate([values[n].reshape(-1) for n in wrt])
    h = jax.jit(jax.hessian(f))
    h(flat).block_until_ready()
    return lambda: h(flat).block_until_ready()


def flat_hessian(H, wrt, g):
    shapes = [np.shape(g[n].value) for n in wrt]
    sizes = [int(np.prod(s)) for s in shapes]
    return np.block([[np.reshape(H[a, b], (na, nb)) for b, nb in zip(wrt, sizes, strict=True)]
                     for a, na in zip(wrt, sizes, strict=True)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import torch
    from torch.autograd.functional import hessian as torch_hessian

    torch.set_num_threads(1)
    have_jax = importlib.util.find_spec("jax") is not None
    print(f"Hessian of a network's loss, float64, best of {args.repeats}, times in ms")
    head = ["problem", "n", "ge.hessian", "n grad passes", "torch", "torch vectorized"]
    head += ["jax"] if have_jax else []
    head += ["ge / n passes", "ge / torch", "ge / torch vec."]
    print("  ".join(f"{h:>15}" for h in head))
    for make in (tiny, digits):
        g, feed, wrt, activation, loss = make()
        n = sum(int(np.size(g[name].value)) for name in wrt)
        f, flat, _ = torch_loss(g, feed, wrt, activation, loss)
        g.forward(feed)
        assert abs(float(f(flat)) - g.output.value) < 1e-12
        want = torch_hessian(f, flat).numpy()
        got = flat_hessian(ge.hessian(g, wrt=wrt, feed=feed), wrt, g)
        assert np.allclose(got, want, rtol=1e-9, atol=1e-12), np.abs(got - want).max()

        def passes(g=g, feed=feed, n=n):
            for _ in range(n):
                g.forward(feed)
                g.backward()

        t_ge, _ = best(lambda g=g, feed=feed, wrt=wrt: ge.hessian(g, wrt=wrt, feed=feed),
                       args.repeats)
        t_pass, _ = best(passes, args.repeats)
        t_torch, _ = best(lambda f=f, flat=flat: torch_hessian(f, flat), args.repeats)
        t_vec, _ = best(lambda f=f, flat=flat: torch_hessian(f, flat, vectorize=True),
                        args.repeats)
        row = [make.__name__, str(n)] + [f"{1e3 * t:.2f}" for t in (t_ge, t_pass, t_torch,
                                                                     t_vec)]
        if have_jax:
            t_jax, _ = best(jax_loss(g, feed, wrt, activation, loss), args.repeats)
            row.append(f"{1e3 * t_jax:.2f}")
        row += [f"{t_ge / t_pass:.2f}", f"{t_ge / t_torch:.2f}", f"{t_ge / t_vec:.2f}"]
        print("  ".join(f"{c:>15}" for c in row))
    if not have_jax:
        print("(jax is not installed: its column is left out)")


if __name__ == "__main__":
    main()
