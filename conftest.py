"""Test-wide settings (for tests/ and the docstring examples in graphengine/).

Tests of optional features (torch, ONNX, widgets, Graphviz's ``dot``) skip when
their extra is not installed, so ``pytest`` works after a light install. CI sets
``GE_NO_SKIP=1``: there a skipped test fails, so nothing CI should check goes
unchecked quietly.
"""

import importlib
import os
import re
import sys

import pytest
from _pytest.doctest import DoctestItem

from graphengine import codegen

EXTRA = re.compile(r"torch|onnxruntime|onnx")      # the extras' modules, wherever named


def pytest_collection_modifyitems(config, items):
    # a docstring example that uses an extra (torch, onnx) skips without it
    for item in items:
        if not isinstance(item, DoctestItem):
            continue
        code = "\n".join(example.source for example in item.dtest.examples)
        for extra in sorted(set(EXTRA.findall(code))):
            try:
                importlib.import_module(extra)
            except ImportError:
                item.add_marker(pytest.mark.skip(reason=f"needs the optional {extra}"))
                break


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("GE_NO_SKIP") == "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and GE_NO_SKIP=1 forbids skips: {reason}"


@pytest.fixture(autouse=True)
def generated_plans(monkeypatch):
    # a plan of up to codegen.MAX_STEPS steps runs its generated code from its first
    # run (users' plans once their loops have run long enough), so every test runs it
    monkeypatch.setattr(codegen, "HOT", 0)
    monkeypatch.setattr(codegen, "COST", 0.0)


@pytest.fixture(params=["generated", "loops"])
def plan_runner(request, monkeypatch):
    """Runs a test twice: through generated code, and through the plan's loops (what
    a plan past the size bound runs). Modules take it with
    ``pytestmark = pytest.mark.usefixtures("plan_runner")``."""
    if request.param == "loops":
        monkeypatch.setattr(codegen, "MAX_STEPS", -1)
    return request.param


@pytest.fixture(autouse=True)
def close_figures():
    # every test starts without the figures of the one before (pyplot keeps them all)
    yield
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")
