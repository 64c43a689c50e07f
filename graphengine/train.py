"""Training: a compiled training step, the minibatch loop ``fit``, evaluation,
and ``train_digits``, the MLP on the digits data that ``graphengine train`` runs."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import codegen, datasets, nn, optim
from .errors import GraphError
from .gates import SoftmaxCrossEntropy
from .graph import ComputationalGraph, Node

__all__ = ["History", "compile_step", "evaluate", "fit", "train_digits"]


@dataclass
class History:
    """Per-epoch records of ``fit``: mean training loss and accuracy, and the
    held-out loss and accuracy when validation data is given (accuracies are None
    when the loss is not a softmax cross-entropy)."""

    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: float = 0.0


def _is_optimizer(optimizer) -> bool:
    # an optim.Optimizer, or any object that has its two members (a user's own)
    params = getattr(optimizer, "params", None)
    return (isinstance(params, (list, tuple)) and all(isinstance(p, Node) for p in params)
            and callable(getattr(optimizer, "update", None)))


def compile_step(g: ComputationalGraph, optimizer: optim.Optimizer):
    """A function ``step(feed) -> loss`` that runs one training step on ``g``.

    One step is a forward pass, a backward pass pruned to what the optimizer's
    parameters need (no gradients for the data, so ``x @ W1`` never computes
    ``d/dx``) and ``optimizer.update``. The output must be a scalar loss. Values
    stay readable as ``node.value``, and parameters' gradients as ``node.grad``
    (nodes no parameter depends on get ``grad`` None).

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> w = g.parameter("w", 3.0)
    >>> loss = (w * g.input("x") - 1.0) ** 2
    >>> step = ge.train.compile_step(g, ge.optim.SGD([w], lr=0.1))
    >>> step({"x": 1.0}), w.value
    (4.0, 2.6)
    """
    if not isinstance(g, ComputationalGraph):
        raise GraphError(f"compile_step: g must be a ComputationalGraph, got "
                         f"{type(g).__name__}")
    if not _is_optimizer(optimizer):
        raise GraphError(f"compile_step: optimizer must be an Optimizer such as "
                         f"ge.optim.SGD(g.parameters(), lr=0.1), got {type(optimizer).__name__}")
    for p in optimizer.params:
        if p.graph is not g:
            raise GraphError(f"compile_step: parameter {p.name!r} belongs to another graph")
    # the plan, the parameters' slots, its generated step, that step specialised to
    # the first signature it ran (codegen.special_step)
    compiled = [None, (), None, None]
    # a built-in optimizer's update trusts what the plan's backward computed
    update = optimizer._update_from_plan if type(optimizer).update in optim._TRUSTING \
        else None

    def step(feed: dict) -> float:
        plan = g.plan()
        if compiled[0] is not plan:
            for p in optimizer.params:
                if p.name not in plan.slot:
                    raise GraphError(f"compile_step: the loss {plan.names[plan.out]!r} does "
                                     f"not depend on parameter {p.name!r}")
            compiled[:] = plan, tuple(plan.slot[p.name] for p in optimizer.params), None, None
        _, wrt, fused, special = compiled
        run = g.run
        # the last step's arrays go back to the allocator before this step allocates
        run.clear_grads()
        if special is None:
            if fused is None:
                fused = compiled[2] = plan.code(("step", wrt))
            if fused:
                special = compiled[3] = codegen.special_step(plan, wrt, feed, fused) or False
        vals = run.values
        # the generated step does g.forward's common case itself (None: any other feed)
        step_fn = special or fused
        done = step_fn(vals, feed, run) if step_fn and run.plan is plan else None
        if done is not None:
            loss, grads = done
        else:
            loss = g.forward(feed)
            vals = run.values
            grads = None if loss.__class__ is not float else plan.backward(vals, 1.0, wrt)
        if grads is None:
            raise GraphError(f"compile_step: the output {plan.names[plan.out]!r} must be a "
                             f"scalar loss, got shape {np.shape(loss)}")
        run.set_grads(plan, grads)
        if update is not None:
            update(grads, vals, wrt)
        else:
            optimizer.update([grads[s] for s in wrt])
        return loss

    return step


def _logits_of(g: ComputationalGraph, logits) -> Node | None:
    if logits is not None:
        return g._node(logits, "fit: logits")
    out = g.output
    if isinstance(out.gate, SoftmaxCrossEntropy):
        return out.inputs[0]
    return None


def evaluate(g: ComputationalGraph, X, y, *, x="x", labels="y", logits=None):
    """The loss and accuracy of ``g`` on ``(X, y)`` in one forward pass.

    Returns ``(loss, accuracy)``; accuracy is the fraction of rows whose largest
    logit is the label, or None when the loss has no logits (see ``fit``).

    Examples
    --------
    >>> import numpy as np
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> z = g.input("x") @ np.eye(2)
    >>> loss = g.softmax_cross_entropy(z, g.input("y"))
    >>> ge.train.evaluate(g, np.array([[0.0, 5.0], [1.0, 0.0]]), np.array([1, 1]))[1]
    0.5
    """
    xn, yn = g._node(x, "evaluate: x"), g._node(labels, "evaluate: labels")
    out = _logits_of(g, logits)
    loss = g.forward({xn: X, yn: y})
    acc = None
    if out is not None:
        acc = float(np.mean(np.argmax(np.atleast_2d(out.value), axis=1) == np.ravel(y)))
    return loss, acc


def _check_data(X, y, what: str):
    arrays = []
    for name, v in (("X", X), ("y", y)):
        if isinstance(v, (str, bytes)):
            raise GraphError(f"{what}: {name} is text; expected an array of numbers")
        try:
            v = np.asarray(v)
        except ValueError:
            v = None
        if v is None or v.dtype.kind not in "biuf":
            got = "a ragged array (rows of different lengths)" if v is None or \
                v.dtype.kind == "O" else f"an array of dtype {v.dtype}"
            labels = " (labels are class indices, 0 to classes - 1)" if name == "y" else ""
            raise GraphError(f"{what}: {name} must be an array of numbers{labels}, got {got}")
        arrays.append(v.astype(float))
    X, y = arrays
    if X.ndim < 1 or y.ndim < 1 or len(X) != len(y) or len(X) == 0:
        raise GraphError(f"{what}: expected X and y with the same number of rows (at least "
                         f"one), got shapes {X.shape} and {y.shape}")
    return X, y


def _progress(total: int, quiet: bool, desc: str):
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=False)


def fit(g: ComputationalGraph, optimizer: optim.Optimizer, X, y, *, epochs: int = 10,
        batch_size: int = 32, validation=None, seed: int = 0, x="x", labels="y",
        logits=None, quiet: bool = False, log=None) -> History:
    """Train ``g`` (whose output is the loss) on ``(X, y)`` with minibatches.

    Each epoch shuffles the rows with ``numpy.random.default_rng(seed)``, runs one
    ``compile_step`` per minibatch (the last one may be smaller), and records the
    mean loss and accuracy; with ``validation=(X_val, y_val)`` it then evaluates the
    held-out data. A tqdm progress bar is shown on stderr when it is a terminal,
    tqdm is installed and ``quiet`` is false.

    Parameters
    ----------
    g : ComputationalGraph
        A graph whose output is a scalar loss of inputs ``x`` and ``labels``.
    optimizer : Optimizer
        Updates the parameters (e.g. ``ge.optim.SGD(g.parameters(), lr=0.1)``).
    X, y : array_like
        Rows of samples and their targets (class indices for a cross-entropy loss).
    epochs, batch_size : int
        Passes over the data, and rows per step.
    validation : tuple of (X_val, y_val), optional
        Held-out data evaluated after every epoch.
    seed : int
        Seed of the shuffling (a non-negative integer).
    x, labels : str or Node
        The input nodes fed with the rows of ``X`` and ``y``.
    logits : str or Node, optional
        The node whose row-wise argmax is the predicted class; by default the first
        input of a softmax cross-entropy output (no accuracy for other losses).
    quiet : bool
        No progress bar.
    log : callable, optional
        Called with one line of text per epoch (epoch, losses, accuracies).

    Returns
    -------
    History

    Examples
    --------
    >>> import numpy as np
    >>> import graphengine as ge
    >>> X, y = ge.datasets.digits()
    >>> g = ge.ComputationalGraph()
    >>> logits = ge.nn.mlp(g, g.input("x"), [64, 32, 10])
    >>> loss = g.softmax_cross_entropy(logits, g.input("y"))
    >>> opt = ge.optim.SGD(g.parameters(), lr=0.1, momentum=0.9)
    >>> h = ge.train.fit(g, opt, X[:1500], y[:1500], epochs=5, validation=(X[1500:], y[1500:]))
    >>> h.val_accuracy[-1] > 0.8
    True
    """
    for value, what in ((epochs, "epochs"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise GraphError(f"fit: {what} must be a positive integer, got {value!r:.40}")
    if not _is_optimizer(optimizer):
        raise GraphError(f"fit: optimizer must be an Optimizer such as "
                         f"ge.optim.SGD(g.parameters(), lr=0.1), got {type(optimizer).__name__}")
    if log is not None and not callable(log):
        raise GraphError(f"fit: log must be a function of one line of text (such as print) "
                         f"or None, got {type(log).__name__}")
    rng = nn.generator(seed, "fit")
    X, y = _check_data(X, y, "fit")
    if validation is not None:
        try:
            Xv, yv = validation
        except (TypeError, ValueError):
            raise GraphError("fit: validation must be a pair (X_val, y_val)") from None
        Xv, yv = _check_data(Xv, yv, "fit: validation")
    xn, yn = g._node(x, "fit: x"), g._node(labels, "fit: labels")
    out = _logits_of(g, logits)
    step = compile_step(g, optimizer)
    n = len(X)
    batches = math.ceil(n / batch_size)
    history = History()
    bar = _progress(epochs * batches, quiet, "train")
    start = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            order = rng.permutation(n)
            total = correct = 0.0
            for lo in range(0, n, batch_size):
                rows = order[lo:lo + batch_size]
                yb = y[rows]
                total += step({xn.name: X[rows], yn.name: yb}) * len(rows)
                if out is not None:
                    # the logits of this forward, before the update
                    correct += np.count_nonzero(np.argmax(out.value, axis=-1) == yb)
                if bar is not None:
                    bar.update()
            history.loss.append(total / n)
            history.accuracy.append(correct / n if out is not None else None)
            line = f"epoch {epoch:>3}/{epochs}  loss {total / n:.4f}"
            if out is not None:
                line += f"  accuracy {correct / n:.4f}"
            if validation is not None:
                vloss, vacc = evaluate(g, Xv, yv, x=xn, labels=yn, logits=out)
                history.val_loss.append(vloss)
                history.val_accuracy.append(vacc)
                line += f"  held-out loss {vloss:.4f}"
                if vacc is not None:
                    line += f"  accuracy {vacc:.4f}"
            if bar is not None:
                bar.set_postfix(loss=f"{total / n:.4f}")
            if log is not None:
                if bar is not None:
                    bar.clear()
                log(line)
                if bar is not None:
                    bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    history.seconds = time.perf_counter() - start
    return history


def train_digits(*, epochs: int = 30, lr: float = 0.1, batch_size: int = 32,
                 hidden: int = 128, seed: int = 0, momentum: float = 0.9,
                 test_fraction: float = 0.2, quiet: bool = False, log=None):
    """Train a 64-hidden-10 sigmoid MLP on the digits with SGD; what ``graphengine
    train`` runs.

    The rows are split once (seeded) into a training set and a held-out set of
    ``test_fraction`` of them; the network is ``nn.mlp`` with softmax
    cross-entropy, trained by ``fit`` with ``optim.SGD(lr, momentum)``. Every
    argument is checked before training starts (``hidden`` within ``nn.mlp``'s
    ``MAX_PARAMETERS``, ``seed`` a non-negative integer); a run whose loss becomes
    nan or infinite is not stopped: ``history.loss`` shows it (``graphengine train``
    reports it and exits with status 1).

    Returns
    -------
    (History, ComputationalGraph)
        ``history.val_accuracy[-1]`` is the final held-out accuracy.

    Examples
    --------
    >>> import graphengine as ge
    >>> history, g = ge.train.train_digits(epochs=2, hidden=16, quiet=True)
    >>> len(history.loss), history.val_accuracy[-1] > 0.8
    (2, True)
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0.0 < test_fraction < 1.0:
        raise GraphError(f"train_digits: test_fraction must be a number in (0, 1), got "
                         f"{test_fraction!r:.40}")
    if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 1:
        raise GraphError(f"train_digits: hidden must be a positive integer, got {hidden!r:.40}")
    rng = nn.generator(seed, "train_digits")
    X, y = datasets.digits()
    order = rng.permutation(len(X))
    cut = len(X) - round(test_fraction * len(X))
    train, test = order[:cut], order[cut:]
    g = ComputationalGraph()
    logits = nn.mlp(g, g.input("x"), [X.shape[1], hidden, 10], seed=seed)
    g.softmax_cross_entropy(logits, g.input("y"), name="loss")
    opt = optim.SGD(g.parameters(), lr=lr, momentum=momentum)
    history = fit(g, opt, X[train], y[train], epochs=epochs, batch_size=batch_size,
                  validation=(X[test], y[test]), seed=seed, quiet=quiet, log=log)
    return history, g
