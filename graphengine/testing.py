"""Assertions for users' own test suites."""

from __future__ import annotations

import inspect

from .errors import GraphError
from .gradcheck import gradcheck

__all__ = ["assert_gradients"]


def assert_gradients(g, feed: dict, **tolerances) -> None:
    """Assert that a graph's gradients are right at the point ``feed``.

    Runs :func:`graphengine.gradcheck` (central differences against backward, and
    forward against reverse mode where every gate has ``jvp``) and raises
    ``AssertionError`` carrying the report's table when anything disagrees.

    Parameters
    ----------
    g : ComputationalGraph
    feed : dict
        Values for the inputs.
    **tolerances
        ``wrt``, ``eps``, ``rtol``, ``atol``, passed on to gradcheck; any other name
        is a GraphError.

    Examples
    --------
    >>> import graphengine as ge
    >>> class Square(ge.Gate):
    ...     def forward(self, x):
    ...         self.x = x
    ...         return x * x
    ...     def backward(self, upstream):
    ...         return (3 * self.x * upstream,)     # wrong: should be 2 x
    >>> g = ge.ComputationalGraph()
    >>> y = g.apply(Square(), g.input("x"), name="y")
    >>> ge.testing.assert_gradients(g, {"x": 1.5})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: gradients disagree:
    leaf  worst element  analytic  numeric  error     ok
    x     ()             4.5       3        1.50e+00  NO
    ...
    """
    known = [k for k in inspect.signature(gradcheck).parameters if k not in ("g", "feed")]
    unknown = [k for k in tolerances if k not in known]
    if unknown:
        raise GraphError(f"assert_gradients: unknown option {unknown[0]!r}; the options are "
                         f"{', '.join(known)}")
    report = gradcheck(g, feed, **tolerances)
    if not report:
        raise AssertionError("gradients disagree:\n" + str(report))
