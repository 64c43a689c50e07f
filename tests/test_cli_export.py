"""`graphengine export GRAPH.json --to model.onnx`, and `graphengine explain` of an
.onnx file."""

import numpy as np
import pytest
from interchange_graphs import circuit, digits_mlp, need

from graphengine.cli import main

onnx = need("onnx")
ort = need("onnxruntime")


def test_export_writes_a_model_that_onnxruntime_runs(tmp_path, capsys):
    g, feed = circuit()
    (tmp_path / "c.json").write_text(g.to_json())
    assert main(["export", str(tmp_path / "c.json"), "--to", str(tmp_path / "c.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out
    model = onnx.load(str(tmp_path / "c.onnx"))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {k: np.array(v) for k, v in feed.items()})[0] == -12.0


def test_export_takes_the_inputs_shapes(tmp_path, capsys):
    g, feed = digits_mlp(rows=5)
    (tmp_path / "mlp.json").write_text(g.to_json())
    out = str(tmp_path / "mlp.onnx")
    assert main(["export", str(tmp_path / "mlp.json"), "--to", out,
                 "--shape", "x=5x64", "y=5"]) == 0
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": feed["x"], "y": feed["y"].astype(np.int64)})[0]
    assert got == pytest.approx(g.forward(feed), rel=1e-12)


def test_explain_reads_an_onnx_file(tmp_path, capsys):
    g, _ = circuit()
    (tmp_path / "c.json").write_text(g.to_json())
    main(["export", str(tmp_path / "c.json"), "--to", str(tmp_path / "c.onnx")])
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "c.onnx"), "--at", "x=-2", "y=5", "z=-4"]) == 0
    text = capsys.readouterr().out
    assert "q     x + y     3      -4" in text
    assert "df/dx = -4  (1 path)" in text and "x -> q -> f: 1 * -4 = -4" in text


@pytest.mark.parametrize("args, message", [
    (["export", "{dir}/absent.json", "--to", "{dir}/m.onnx"], "cannot read"),
    (["export", "{dir}/c.json", "--to", "{dir}/m.txt"], "ending in .onnx"),
    (["export", "{dir}/c.json", "--to", "{dir}/m.onnx", "--shape", "w=3"], "no input 'w'"),
    (["export", "{dir}/c.json", "--to", "{dir}/m.onnx", "--shape", "x=3xa"], "NAME=D1xD2"),
    (["export", "{dir}/c.json", "--to", "{dir}/no/m.onnx"], "cannot write"),
    (["explain", "{dir}/absent.onnx", "--at", "x=1"], "cannot read"),
    (["explain", "{dir}/c.json", "--at", "x=1"], "error"),
])
def test_mistakes_print_one_line_and_exit_2(args, message, tmp_path, capsys):
    g, _ = circuit()
    (tmp_path / "c.json").write_text(g.to_json())
    assert main([a.format(dir=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
