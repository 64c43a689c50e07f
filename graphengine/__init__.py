"""graphengine: computational graphs of gates for learning, teaching and exploring backprop.

>>> import graphengine as ge
>>> g = ge.ComputationalGraph()
>>> x, y, z = g.input("x"), g.input("y"), g.input("z")
>>> f = (x + y) * z
>>> g.forward(x=-2.0, y=5.0, z=-4.0)
-12.0
"""

from . import datasets, draw, export, nn, optim, testing, train
from .errors import GraphError
from .gates import GATES, Gate, register
from .gradcheck import gradcheck
from .graph import ComputationalGraph, Node
from .higher import grad, hessian, hvp

__version__ = "0.1.0"

__all__ = ["ComputationalGraph", "Node", "Gate", "GraphError", "GATES", "register",
           "gradcheck", "grad", "hessian", "hvp", "datasets", "draw", "export", "nn",
           "optim", "testing", "train"]
