"""The one exception the engine raises for a user's mistake."""


class GraphError(ValueError):
    """A mistake in building, feeding or running a graph; the message names the node.

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> g["nope"]
    Traceback (most recent call last):
    ...
    graphengine.errors.GraphError: no node named 'nope' in the graph
    """
