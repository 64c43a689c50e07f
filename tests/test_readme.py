"""The README's code runs, and the circuit example prints what the README says."""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_readme_python_blocks_run(k):
    # blocks build on one another (the gate example uses the circuit's g and x)
    for block in BLOCKS[: k + 1]:       # a block of an extra (torch, onnx) needs it
        for extra in re.findall(r"^\s*(?:import|from) (torch|onnx\w*)", block, flags=re.M):
            pytest.importorskip(extra)
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        for block in BLOCKS[: k + 1]:
            exec(compile(block, f"README.md block {k}", "exec"), namespace)
    assert "Traceback" not in out.getvalue()


def test_the_circuit_prints_what_the_readme_shows():
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(BLOCKS[0], "README.md block 0", "exec"), {})
    shown = re.search(r"prints\n\n```text\n(.*?)```", README, flags=re.S).group(1)
    assert out.getvalue() == shown


def test_the_explain_example_prints_what_the_readme_shows(capsys):
    from graphengine.cli import main

    block = re.search(r"```text\n\$ graphengine explain (.*?)\n(.*?)```", README,
                      flags=re.S)
    argv = shlex.split(block.group(1))
    assert main(["explain", *argv]) == 0
    assert capsys.readouterr().out == block.group(2)
