"""Make the README's pictures: ``python docs/make_figures.py`` writes docs/circuit.png."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import graphengine as ge  # noqa: E402

HERE = Path(__file__).resolve().parent


def circuit(path: Path) -> None:
    g = ge.ComputationalGraph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(x, y, name="q")
    g.mul(q, z, name="f")
    g.forward(x=-2.0, y=5.0, z=-4.0)
    g.backward()
    ax = g.draw(title="f = (x + y) * z: values in green, gradients in red")
    ax.figure.savefig(path, dpi=110, bbox_inches="tight",
                      metadata={"Software": None})    # no version stamp: stable bytes


if __name__ == "__main__":
    circuit(HERE / "circuit.png")
    print(f"wrote {HERE / 'circuit.png'}")
