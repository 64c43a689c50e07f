import os
import subprocess
import sys

import matplotlib
import pytest

from graphengine import explain
from graphengine.cli import main

matplotlib.use("Agg")


def run(capsys, *argv):
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_circuit(capsys):
    code, out, err = run(capsys, "(x + y) * z", "--at", "x=-2", "y=5", "z=-4")
    assert code == 0 and err == ""
    assert out == """\
f = (x + y) * z  at  x = -2, y = 5, z = -4

node   computes     value  df/dnode
x      input        -2     -4
y      input        5      -4
z      input        -4     3
add_3  x + y        3      -4
mul_4  (x + y) * z  -12    1

f = mul_4 = -12. Each gradient below is the sum over the paths to mul_4
of the product of the local derivatives along the path:

df/dx = -4  (1 path)
  x -> add_3 -> mul_4: 1 * -4 = -4

df/dy = -4  (1 path)
  y -> add_3 -> mul_4: 1 * -4 = -4

df/dz = 3  (1 path)
  z -> mul_4: 3
"""


def test_fan_out_sums_two_paths(capsys):
    code, out, _ = run(capsys, "(a + b) * (b + 1)", "--at", "a=2", "b=1")
    assert code == 0
    assert "df/db = 5  (sum over 2 paths)\n  b -> add_2 -> mul_5: 1 * 2 = 2\n" \
           "  b -> add_4 -> mul_5: 1 * 3 = 3\n" in out
    assert "add_4    b + 1              2      3\n" in out


def test_a_node_used_twice_gives_two_paths(capsys):
    code, out, _ = run(capsys, "x * x + sigmoid(max(x, y))", "--at", "x=3", "y=0.5")
    assert code == 0
    lines = [line.split() for line in out.splitlines() if line.startswith("  x -")]
    assert lines == [["x", "-[0]->", "mul_2", "->", "add_5:", "3", "*", "1", "=", "3"],
                     ["x", "-[1]->", "mul_2", "->", "add_5:", "3", "*", "1", "=", "3"],
                     ["x", "->", "max_3", "->", "sigmoid_4", "->", "add_5:",
                      "1", "*", "0.0451767", "*", "1", "=", "0.0451767"]]
    assert "df/dx = 6.04518  (sum over 3 paths)" in out
    assert "max_3      max(x, y)                   3" in out


def test_input_named_f_renames_the_output(capsys):
    code, out, _ = run(capsys, "f * 2", "--at", "f=1.5")
    assert code == 0
    assert out.startswith("out = f * 2  at  f = 1.5\n")
    assert "dout/df = 2  (1 path)" in out


def test_too_many_paths_prints_only_the_total(capsys, monkeypatch):
    monkeypatch.setattr(explain, "PATHS_SHOWN", 1)
    code, out, _ = run(capsys, "x * x", "--at", "x=3")
    assert code == 0
    assert ("df/dx = 6  (2 paths, more than the 1 explain lists; backward sums them "
            "in one pass)") in out


@pytest.mark.parametrize("argv, message", [
    (["__import__('os').system('touch x')", "--at", "x=1"],
     "expression: attribute access '.system'"),
    (["x +", "--at", "x=1"], "expression: invalid syntax"),
    (["x * y", "--at", "x=1"], "input 'y' needs a value: add --at y=..."),
    (["x * y"], "input 'x' needs a value: add --at x=... y=..."),
    (["x * y", "--at", "x=1", "y=2", "w=3"], "--at w: the formula has no input 'w'"),
    (["x * 2", "--at", "x=abc"], "--at x: 'abc' is not a number"),
    (["x * 2", "--at", "x"], "--at wants NAME=VALUE pairs such as x=-2, got 'x'"),
    (["x * 2", "--at", "x=1", "--draw", "out.txt"], "--draw out.txt: matplotlib cannot save "
                                                     ".txt files; use one of .avif, .eps"),
])
def test_mistakes_are_one_line_and_exit_code_2(capsys, argv, message, tmp_path,
                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("graphengine explain: error: ")
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_draw_to_a_file(capsys, tmp_path, suffix, magic):
    path = tmp_path / ("circuit" + suffix)
    code, out, _ = run(capsys, "(x + y) * z", "--at", "x=-2", "y=5", "z=-4",
                       "--draw", str(path))
    assert code == 0
    assert out.endswith(f"\ndrew the circuit to {path}\n")
    assert path.read_bytes().startswith(magic)


def test_python_dash_m_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "graphengine", "explain", "max(x, y) * z",
                           "--at", "x=1", "y=2", "z=3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "df/dy = 3  (1 path)" in proc.stdout
    assert "df/dx = 0  (1 path)" in proc.stdout



def test_a_closed_pipe_ends_quietly(monkeypatch):
    # `graphengine explain ... | head -1`: the reader is gone before we write
    import os
    import sys
    read, write = os.pipe()
    os.close(read)
    out = os.fdopen(write, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["explain", "(x + y) * z", "--at", "x=-2", "y=5", "z=-4"]) == 1
    out.close()


def test_a_formula_that_begins_with_a_minus_is_the_formula_not_an_option(capsys):
    code, out, err = run(capsys, "-x", "--at", "x=2")
    assert (code, err) == (0, "")
    assert out.startswith("f = -x  at  x = 2\n")
    code, out, _ = run(capsys, "--at", "x=2", "y=3", "--", "-x * y")
    assert code == 0 and out.startswith("f = -x * y  at  x = 2, y = 3\n")
    assert "df/dy = -2  (1 path)" in out
    code, out, _ = run(capsys, "--at", "x=2", "-(x + 1)")
    assert code == 0 and out.startswith("f = -(x + 1)  at  x = 2\n")


def test_an_input_given_twice_is_refused(capsys):
    code, out, err = run(capsys, "x * 2", "--at", "x=1", "x=2")
    assert (code, out) == (2, "")
    assert err == ("graphengine explain: error: --at x: given twice (x=1 and x=2); give "
                   "each input one value\n")


def bad_outputs(tmp_path):
    (tmp_path / "folder").mkdir()
    return [
        ("", r"the file name is empty"),
        (str(tmp_path / "folder"), r"is a directory; name a file in it, such as .*out.png"),
        (str(tmp_path / "folder") + os.sep, r"is a directory"),
        (str(tmp_path / "circuit"), r"the file name needs an extension that names its "
                                    r"format, such as .*circuit.png \(one of .avif"),
        (str(tmp_path / "circuit.txt"), r"matplotlib cannot save .txt files; use one of"),
        (str(tmp_path / "nope" / "circuit.png"), r"the directory .*nope does not exist"),
    ]


def test_every_draw_path_is_checked_before_any_work(capsys, tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    for path, message in bad_outputs(tmp_path):
        # a formula that would fail: the path is refused first, so nothing ran
        code, out, err = run(capsys, "x +", "--draw", path)
        assert (code, out) == (2, "")
        where = " " + re.escape(path) if path else ""
        assert re.match(r"graphengine explain: error: --draw" + where + ": " + message,
                        err), err
        assert err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["folder"] and os.listdir("folder") == []


def unwritable(tmp_path):
    """A place that refuses a new file even to root."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
        return str(folder / "out.png")
    return "/sys/graphengine-test-out.png"          # sysfs refuses new files to root too


def test_a_file_that_cannot_be_written_is_one_line_and_exit_2(capsys, tmp_path):
    path = unwritable(tmp_path)
    code, out, err = run(capsys, "x * 2", "--at", "x=1", "--draw", path)
    assert (code, out) == (2, "")
    assert err.startswith(f"graphengine explain: error: --draw {path}: cannot write the "
                          "file (") and err.count("\n") == 1
    # a full disk: the check passes (the device takes an empty append), the write fails
    full = tmp_path / "full.png"
    full.symlink_to("/dev/full")
    code, out, err = run(capsys, "x * 2", "--at", "x=1", "--draw", str(full))
    assert code == 2 and "drew the circuit" not in out
    assert err == (f"graphengine explain: error: --draw {full}: cannot write the file "
                   "(No space left on device)\n")


def test_the_path_written_is_the_path_reported(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "x * 2", "--at", "x=1", "--draw", "c.PDF")
    assert code == 0 and out.endswith("\ndrew the circuit to c.PDF\n")
    assert os.listdir(tmp_path) == ["c.PDF"] and (tmp_path / "c.PDF").read_bytes()[:4] == b"%PDF"


def test_missing_matplotlib_is_a_one_line_hint(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backend_bases", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run(capsys, "x * 2", "--at", "x=1", "--draw", str(tmp_path / "c.png"))
    assert (code, out) == (2, "")
    assert err == ("graphengine explain: error: --draw needs matplotlib: pip install "
                   "'graphengine[draw]'\n")
