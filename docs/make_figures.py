"""Make the README's pictures: ``python docs/make_figures.py`` writes, into docs/,

- circuit.png: f = (x + y) * z with every value and gradient,
- backprop.gif: the backward pass of the CS231n sigmoid neuron, one gate per frame,
- backprop_step.png: one of those frames (step 4), for print,
- tangents.png: forward mode through the same neuron (direction dw0 = 1),
- network.png: an MLP 3-4-2 with softmax cross-entropy on a batch of 2 (matrices,
  operand marks, labels without a gradient),
- overview.png: what Jupyter shows for a 4,501-node graph.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

import graphengine as ge  # noqa: E402

HERE = Path(__file__).resolve().parent
STABLE = {"metadata": {"Software": None}}       # no version stamp: stable bytes


def save(fig, name):
    fig.savefig(HERE / name, dpi=110, **STABLE)
    print(f"wrote {HERE / name}")


def circuit():
    g = ge.ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(x, y, name="q")
    g.mul(q, z, name="f")
    g.forward(x=-2.0, y=5.0, z=-4.0)
    g.backward()
    return g


def neuron():
    """f = 1 / (1 + exp(-(w0 x0 + w1 x1 + w2))), the CS231n example."""
    g = ge.ComputationalGraph()
    w0, x0, w1, x1, w2 = (g.input(n) for n in ("w0", "x0", "w1", "x1", "w2"))
    dot = g.add(g.add(w0 * x0, w1 * x1, name="s"), w2, name="dot")
    g.div(1.0, g.add(1.0, g.exp(g.neg(dot, name="m"), name="e"), name="d"), name="f")
    g.forward(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    return g


def network():
    g = ge.ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [3, 4, 2])
    g.softmax_cross_entropy(logits, g.input("labels"), name="loss")
    x = np.array([[0.5, -1.0, 0.25], [1.0, 0.5, -0.5]])
    g.forward(x=x, labels=np.array([0, 1]))
    g.backward()
    return g


def big():
    g = ge.ComputationalGraph()
    x = g.input("x")
    n = x
    while len(g) < 4501:
        n = g.tanh(n * 0.5 + x)
    g.forward(x=0.1)
    g.backward()
    return g


if __name__ == "__main__":
    save(ge.draw.figure(circuit(), title="f = (x + y) * z"), "circuit.png")
    g = neuron()
    ge.draw.animate_backward(g, HERE / "backprop.gif", interval=1800)
    print(f"wrote {HERE / 'backprop.gif'}")
    save(ge.draw.figure(g, step=4), "backprop_step.png")
    save(ge.draw.figure(g, tangents=g.jvp({"w0": 1.0})), "tangents.png")
    save(ge.draw.figure(network()), "network.png")
    save(ge.draw.figure(big()), "overview.png")
