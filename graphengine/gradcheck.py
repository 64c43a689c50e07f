"""Gradient checking: backward against central differences, forward mode against
reverse mode, with a report that reads as a table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .derivatives import _leaf_tangents, _wrt
from .errors import GraphError
from .gates import MaxGate, ReluGate, SoftmaxCrossEntropy

__all__ = ["gradcheck", "GradcheckReport", "Row"]


@dataclass(frozen=True)
class Row:
    """One leaf's result: its worst element and whether every element agreed."""

    leaf: str
    index: tuple
    analytic: float
    numeric: float
    error: float
    ok: bool


@dataclass
class GradcheckReport:
    """The outcome of :func:`gradcheck`: truthy when everything agreed.

    ``rows`` has one :class:`Row` per leaf, ``errors`` maps each leaf to its worst
    absolute error, ``modes`` is ``(<J v, u>, <v, J^T u>, ok)`` for the forward
    against reverse check (None when a gate has no jvp; ``skipped`` says which),
    and ``warnings`` names every probe that crossed a kink (a max tie or relu at 0).
    ``print(report)`` shows it as a table.
    """

    rows: list = field(default_factory=list)
    modes: tuple | None = None
    skipped: str = ""
    warnings: list = field(default_factory=list)
    tolerances: dict = field(default_factory=dict)

    @property
    def errors(self) -> dict:
        return {row.leaf: row.error for row in self.rows}

    @property
    def kinks(self) -> bool:
        return bool(self.warnings)

    def __bool__(self) -> bool:
        return all(row.ok for row in self.rows) and (self.modes is None or self.modes[2])

    def __str__(self) -> str:
        head = ("leaf", "worst element", "analytic", "numeric", "error", "ok")
        body = [(r.leaf, str(r.index), f"{r.analytic:.6g}", f"{r.numeric:.6g}",
                 f"{r.error:.2e}", "yes" if r.ok else "NO") for r in self.rows]
        widths = [max(len(line[k]) for line in [head] + body) for k in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                 for line in [head] + body]
        if self.modes is not None:
            lhs, rhs, ok = self.modes
            lines.append(f"forward vs reverse: <J v, u> = {lhs:.10g}, <v, J^T u> = "
                         f"{rhs:.10g}: {'agree' if ok else 'DISAGREE'}")
        elif self.skipped:
            lines.append(f"forward vs reverse: not checked ({self.skipped})")
        lines.extend(f"warning: {w}" for w in self.warnings)
        lines.append(("gradcheck passed" if self else "gradcheck FAILED") +
                     " ({})".format(", ".join(f"{k}={v:g}" for k, v in self.tolerances.items())))
        return "\n".join(lines)

    def __repr__(self) -> str:
        worst = max(self.errors.values(), default=0.0)
        return (f"<GradcheckReport {'passed' if self else 'FAILED'}: {len(self.rows)} "
                f"leaves, worst error {worst:.2e}>")


def _default_wrt(g, plan):
    # an input read only as the labels of softmax_cross_entropy holds class indices:
    # it has no derivative, and perturbing it would make the labels invalid
    labels_only = {}
    for gate, ins, _ in plan.gates:
        for k, i in enumerate(ins):
            is_label = isinstance(gate, SoftmaxCrossEntropy) and k == 1
            labels_only[i] = labels_only.get(i, True) and is_label
    leaves = []
    for n in g.nodes():
        slot = plan.slot.get(n.name)
        if n.kind in ("input", "parameter") and slot is not None and not labels_only[slot]:
            leaves.append(n)
    return leaves


def _as64(v):
    if v.__class__ is float or v is None:
        return v
    return np.array(v, dtype=np.float64)


def _objective(out, r):
    return out if r is None else float(np.sum(out * r))


def _kink_signs(kinks, vals):
    signs = []
    for gate, ins, _ in kinks:
        d = vals[ins[0]] - vals[ins[1]] if isinstance(gate, MaxGate) else vals[ins[0]]
        signs.append(np.sign(d))
    return signs


def gradcheck(g, feed: dict, wrt=None, eps: float = 1e-6, rtol: float = 1e-4,
              atol: float = 1e-6, order: int = 1) -> GradcheckReport:
    """Check backward against central differences (float64) for every leaf, and
    forward mode against reverse mode; with ``order=2``, second derivatives too.

    Each element x of each leaf is probed at x + eps and x - eps; the analytic
    gradient must satisfy ``|analytic - numeric| <= atol + rtol * |numeric|``. For an
    array output the checked function is ``sum(output * r)`` for a fixed random
    ``r``. When every gate has ``jvp``, ``<J v, u> = <v, J^T u>`` is checked on fixed
    random ``u`` and ``v``. A probe that crosses a kink (a max tie, relu at 0) is
    named in the report's warnings. The graph's values, gradients and gates are left
    as they were before the call.

    With ``order=2`` (scalar output), the gradient graph of each leaf a (what
    ``ge.grad(g, a)`` builds from the gates' ``backward_gates`` rules) is checked too:
    its value against backward (row ``da as gates``), and its own backward, the
    second derivatives d2(output)/(da db) for every leaf b contracted with a random
    r, against central differences of backward's gradient of a (rows ``d2/da db``).

    Parameters
    ----------
    g : ComputationalGraph
    feed : dict
        The point: values for the inputs, as for ``forward``.
    wrt : list of str or Node, optional
        The leaves to check (default: every input and parameter the output uses,
        except class labels).
    eps, rtol, atol : float
    order : {1, 2}

    Returns
    -------
    GradcheckReport

    Examples
    --------
    >>> import graphengine as ge
    >>> g = ge.ComputationalGraph()
    >>> x, y = g.input("x"), g.input("y")
    >>> f = g.sigmoid(x * y) + x
    >>> report = ge.gradcheck(g, {"x": 0.5, "y": -2.0})
    >>> bool(report), sorted(report.errors)
    (True, ['x', 'y'])
    >>> print(report)  # doctest: +ELLIPSIS
    leaf  worst element  analytic  numeric   error     ok
    x     ()             0.606776  0.606776  ...  yes
    y     ()             0.098306  0.098306  ...  yes
    forward vs reverse: <J v, u> = 0.04054093194, <v, J^T u> = 0.04054093194: agree
    gradcheck passed (eps=1e-06, rtol=0.0001, atol=1e-06)
    >>> second = ge.gradcheck(g, {"x": 0.5, "y": -2.0}, order=2)
    >>> bool(second), [row.leaf for row in second.rows][2:5]
    (True, ['dx as gates', 'd2/dx dx', 'd2/dx dy'])
    """
    for what, v in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            raise GraphError(f"gradcheck's {what} must be a number >= 0, got {v!r}")
    if not eps > 0:
        raise GraphError(f"gradcheck's eps must be > 0, got {eps!r}")
    if order not in (1, 2) or isinstance(order, bool):
        raise GraphError(f"gradcheck's order must be 1 or 2, got {order!r}")
    saved = g.run.save()
    try:
        report = _check(g, feed, wrt, float(eps), float(rtol), float(atol))
        if order == 2:
            _second_order(g, feed, report, float(eps), float(rtol), float(atol))
        return report
    finally:
        g.run.restore(saved)
        plan, vals = g.run.plan, g.run.values
        if vals is not None and plan is not None and plan is g._plan:
            plan.forward(vals)          # puts the gates' saved state back


def _check(g, feed, wrt, eps, rtol, atol):
    g.forward(feed)
    plan = g.plan()
    leaves = _default_wrt(g, plan) if wrt is None else _wrt(g, wrt)
    base = [_as64(v) for v in g.run.values]
    plan.forward(base)
    out = base[plan.out]
    rng = np.random.default_rng(0)
    r = None if out.__class__ is float else rng.standard_normal(np.shape(out))
    seed = 1.0 if r is None else r
    grads = plan.backward(base, seed)
    report = GradcheckReport(tolerances={"eps": eps, "rtol": rtol, "atol": atol})
    _modes(plan, base, leaves, rng, rtol, atol, report)
    kinks = [step for step in plan.gates if isinstance(step[0], (MaxGate, ReluGate))]
    for node in leaves:
        slot = plan.slot.get(node.name)
        if slot is None:                 # the output does not depend on it
            report.rows.append(Row(node.name, (), 0.0, 0.0, 0.0, True))
            continue
        x = base[slot]
        analytic = np.broadcast_to(grads[slot] if grads[slot] is not None else 0.0,
                                   np.shape(x))
        worst, max_err, crossed = None, 0.0, {}
        for idx in np.ndindex(*np.shape(x)):
            sides = []
            for step in (eps, -eps):
                probe = list(base)
                if x.__class__ is float:
                    probe[slot] = x + step
                else:
                    xp = x.copy()
                    xp[idx] += step
                    probe[slot] = xp
                plan.forward(probe)
                sides.append((_objective(probe[plan.out], r), _kink_signs(kinks, probe)))
            numeric = (sides[0][0] - sides[1][0]) / (2.0 * eps)
            a = float(analytic[idx])
            err = abs(a - numeric)
            bad = err / (atol + rtol * abs(numeric)) if err == err else np.inf
            if worst is None or not bad <= worst[0]:
                worst = (bad, idx, a, numeric)
            signs = zip(kinks, sides[0][1], sides[1][1], strict=True)
            for (gate, _, k_out), s_plus, s_minus in signs:
                if not np.array_equal(s_plus, s_minus):
                    crossed.setdefault(k_out, (idx, gate))
            max_err = err if not err <= max_err else max_err
        bad, idx, a, numeric = worst
        report.rows.append(Row(node.name, idx, a, numeric, max_err, bool(bad <= 1.0)))
        for k_out, (idx, gate) in crossed.items():
            report.warnings.append(
                f"leaf {node.name!r} element {idx}: the probe crossed a kink at node "
                f"{plan.names[k_out]!r} ({gate.label}); central differences are not "
                "meaningful there")
    return report


def _row(name, analytic, numeric, rtol, atol):
    analytic, numeric = np.broadcast_arrays(np.asarray(analytic, float), numeric)
    err = np.abs(analytic - numeric)
    bad = np.where(err == err, err / (atol + rtol * np.abs(numeric)), np.inf)
    idx = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.size else ()
    idx = tuple(int(i) for i in idx)
    return Row(name, idx, float(analytic[idx]), float(numeric[idx]), float(np.max(err)),
               bool(bad[idx] <= 1.0))


def _second_order(g, feed, report, eps, rtol, atol):
    # the gradient graph of each leaf a: its value against backward, and its own
    # backward (row of the Hessian, contracted with a random r) against central
    # differences of <r, backward's gradient of a>, which no rule of a gate touches
    from .higher import _build

    leaves = [g[row.leaf] for row in report.rows]
    g.forward(feed)
    plan = g.plan()
    base = [_as64(v) for v in g.run.values]
    plan.forward(base)
    first = plan.backward(base, 1.0)
    h, grads, _, _ = _build(g, leaves)
    rng = np.random.default_rng(1)
    for a in leaves:
        sa = plan.slot.get(a.name)
        h.set_output(grads[a.name])
        value = h.forward(feed)
        want = first[sa] if sa is not None and first[sa] is not None else 0.0
        report.rows.append(_row(f"d{a.name} as gates", value, want, rtol, atol))
        r = rng.standard_normal(np.shape(value)) if np.shape(value) else 1.0
        analytic = h.backward(r)
        for b in leaves:
            sb = plan.slot.get(b.name)
            shape = np.shape(analytic[b.name])
            numeric = np.zeros(shape)
            for idx in np.ndindex(*shape):
                if sb is None or sa is None:
                    break
                sides = []
                for step in (eps, -eps):
                    probe = list(base)
                    if shape:
                        probe[sb] = base[sb].copy()
                        probe[sb][idx] += step
                    else:
                        probe[sb] = base[sb] + step
                    plan.forward(probe)
                    ga = plan.backward(probe, 1.0)[sa]
                    sides.append(float(np.sum(r * (0.0 if ga is None else ga))))
                numeric[idx] = (sides[0] - sides[1]) / (2.0 * eps)
            report.rows.append(_row(f"d2/d{a.name} d{b.name}", analytic[b.name], numeric,
                                    rtol, atol))


def _modes(plan, base, leaves, rng, rtol, atol, report):
    if plan.no_jvp is not None:
        gate, out = plan.no_jvp
        report.skipped = f"node {plan.names[out]!r} ({type(gate).__name__}) has no jvp"
        return
    used = [(n.name, plan.slot[n.name]) for n in leaves if n.name in plan.slot]
    tangents = _leaf_tangents(plan, base)
    for _, slot in used:
        shape = np.shape(base[slot])
        tangents[slot] = rng.standard_normal(shape) if shape else float(rng.standard_normal())
    vs = [(slot, tangents[slot]) for _, slot in used]
    shape = np.shape(base[plan.out])
    u = rng.standard_normal(shape) if shape else float(rng.standard_normal())
    lhs = float(np.sum(plan.jvp(base, tangents)[plan.out] * u))
    grads = plan.backward(base, u)
    rhs = float(sum(np.sum(v * (grads[slot] if grads[slot] is not None else 0.0))
                    for slot, v in vs))
    ok = abs(lhs - rhs) <= atol + rtol * max(abs(lhs), abs(rhs))
    report.modes = (lhs, rhs, bool(ok))
