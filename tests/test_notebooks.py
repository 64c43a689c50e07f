"""Every notebook runs from top to bottom, short (GE_NOTEBOOK_STEPS), and is committed
without outputs."""

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_notebooks_are_there_each_with_its_own_number():
    prefixes = [p.name[:3] for p in PATHS]
    assert prefixes[:6] == ["01_", "02_", "03_", "04_", "05_", "06_"]
    assert all(p[:2].isdigit() and p[2] == "_" for p in prefixes)
    assert len(set(prefixes)) == len(prefixes)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:40]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("GE_NOTEBOOK_STEPS", "5")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel imports this checkout's graphengine, installed or not
    outer = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + outer if outer else ""))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:               # a notebook of an extra (torch, onnx) needs it
        for extra in re.findall(r"^\s*(?:import|from) (torch|onnx\w*)", cell.source,
                                flags=re.M):
            pytest.importorskip(extra)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()             # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
