import io
import os
import sys

import numpy as np
import pytest

import graphengine as ge
from graphengine import GraphError
from graphengine.cli import main

# every test here runs through generated plan code and through the plan's loops
pytestmark = pytest.mark.usefixtures("plan_runner")


def classifier(hidden=8, seed=0):
    g = ge.ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [64, hidden, 10], seed=seed)
    g.softmax_cross_entropy(logits, g.input("y"), name="loss")
    return g


@pytest.fixture(scope="module")
def digits():
    return ge.datasets.digits()


def test_compiled_step_equals_forward_backward_step(digits):
    X, y = digits
    a, b = classifier(), classifier()
    opt_a, opt_b = ge.optim.SGD(a.parameters(), lr=0.3, momentum=0.5), \
        ge.optim.SGD(b.parameters(), lr=0.3, momentum=0.5)
    step = ge.train.compile_step(a, opt_a)
    for lo in (0, 32, 64):
        feed = {"x": X[lo:lo + 32], "y": y[lo:lo + 32]}
        loss_a = step(feed)
        loss_b = b.forward(feed)
        grads = b.backward()
        opt_b.step()
        assert loss_a == loss_b
        for p in a.parameters():
            np.testing.assert_array_equal(p.value, b[p.name].value)
            np.testing.assert_array_equal(p.grad, grads[p.name])
    assert a["x"].grad is None and a["x"].value is not None      # pruned: no d/dx of data


class Square(ge.Gate):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, upstream):
        return [2 * self.x * upstream]


def test_compiled_step_runs_users_gates_and_follows_structure_changes():
    g = ge.ComputationalGraph()
    w = g.parameter("w", 3.0)
    sq = g.apply(Square(), w * g.input("x"))
    step = ge.train.compile_step(g, ge.optim.SGD([w], lr=0.01))
    assert step({"x": 2.0}) == 36.0 and w.value == pytest.approx(3.0 - 0.01 * 24.0)
    g.set_output(sq + w)                                         # a new structure
    before = w.value
    assert step({"x": 2.0}) == pytest.approx(4 * before ** 2 + before)
    assert w.value == pytest.approx(before - 0.01 * (8 * before + 1))


def test_compiled_step_errors():
    g = ge.ComputationalGraph()
    w, v = g.parameter("w", np.ones(3)), g.parameter("v", 1.0)
    w * g.input("x")
    with pytest.raises(GraphError, match="does not depend on parameter 'v'"):
        ge.train.compile_step(g, ge.optim.SGD([w, v], lr=0.1))({"x": 1.0})
    step = ge.train.compile_step(g, ge.optim.SGD([w], lr=0.1))
    with pytest.raises(GraphError, match="input 'x' needs a value"):
        step({})
    with pytest.raises(GraphError, match="must be a scalar loss, got shape"):
        step({"x": 1.0})
    other = ge.ComputationalGraph()
    with pytest.raises(GraphError, match="belongs to another graph"):
        ge.train.compile_step(other, ge.optim.SGD([w], lr=0.1))
    with pytest.raises(GraphError, match=r"compile_step: optimizer must be an Optimizer such "
                                         r"as ge.optim.SGD\(g.parameters\(\), lr=0.1\), got int"):
        ge.train.compile_step(g, 5)
    with pytest.raises(GraphError, match=r"compile_step: g must be a ComputationalGraph, got "
                                         r"list"):
        ge.train.compile_step([w], ge.optim.SGD([w], lr=0.1))
    assert g.forward(x=1.0).shape == (3,)          # the graph is untouched


def test_fit_history_is_seeded_and_learns(digits):
    X, y = digits
    runs = []
    for _ in range(2):
        g = classifier(hidden=32)
        opt = ge.optim.SGD(g.parameters(), lr=0.2, momentum=0.9)
        runs.append(ge.train.fit(g, opt, X[:1000], y[:1000], epochs=5, batch_size=20,
                                 validation=(X[1000:1200], y[1000:1200]), seed=4))
    h = runs[0]
    assert h.loss == runs[1].loss and h.val_accuracy == runs[1].val_accuracy
    assert len(h.loss) == len(h.accuracy) == len(h.val_loss) == len(h.val_accuracy) == 5
    assert h.loss[0] > h.loss[-1] and h.val_accuracy[-1] > 0.8
    loss, acc = ge.train.evaluate(g, X[1000:1200], y[1000:1200])
    assert (loss, acc) == (h.val_loss[-1], h.val_accuracy[-1])


def test_fit_records_the_mean_loss_of_its_batches():
    g = ge.ComputationalGraph()
    w = g.parameter("w", 0.0)
    g.mse(g.input("x") * w, g.input("y"))
    X, y = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])
    h = ge.train.fit(g, ge.optim.SGD([w], lr=1e-9), X, y, epochs=1, batch_size=2, seed=0)
    order = np.random.default_rng(0).permutation(3)
    # w barely moves, so each batch's mse is about sum(y^2)/len, weighted by batch size
    want = (np.sum(y[order[:2]] ** 2) + np.sum(y[order[2:]] ** 2)) / 3
    assert h.loss[0] == pytest.approx(want, rel=1e-6) and h.accuracy == [None]


def test_fit_logs_one_line_per_epoch_and_shows_a_bar_only_on_a_terminal(digits, monkeypatch):
    X, y = digits
    lines = []
    g = classifier()
    ge.train.fit(g, ge.optim.SGD(g.parameters(), lr=0.1), X[:64], y[:64], epochs=2,
                 validation=(X[64:96], y[64:96]), log=lines.append)
    assert len(lines) == 2 and lines[1].startswith("epoch   2/2  loss ")
    assert "held-out loss" in lines[1]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for quiet in (False, True):
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        ge.train.fit(g, ge.optim.SGD(g.parameters(), lr=0.1), X[:64], y[:64], epochs=1,
                     quiet=quiet)
        assert ("batch" in term.getvalue()) is not quiet


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"validation": (np.zeros((2, 64)),)}, "validation must be a pair"),
    ({"validation": (np.zeros((2, 64)), np.zeros(3))}, "validation: expected X and y with"),
    ({"optimizer": None}, r"fit: optimizer must be an Optimizer .*got NoneType"),
    ({"log": 5}, r"fit: log must be a function of one line of text \(such as print\) or "
                 r"None, got int"),
    ({"seed": -1}, r"fit: seed must be a non-negative integer, got -1"),
    ({"seed": 0.5}, r"fit: seed must be a non-negative integer, got 0.5"),
    ({"X": "pixels"}, r"fit: X is text; expected an array of numbers"),
    ({"X": [[1.0, 2.0], [3.0]]}, r"fit: X must be an array of numbers, got a ragged array"),
    ({"X": np.array([["a"] * 64] * 10)}, r"fit: X must be an array of numbers, got an array "
                                         r"of dtype <U1"),
    ({"y": np.array(["1"] * 10)}, r"fit: y must be an array of numbers \(labels are class "
                                  r"indices, 0 to classes - 1\), got an array of dtype <U1"),
    ({"y": [None] * 10}, r"fit: y must be an array of numbers .*got a ragged array"),
    ({"validation": (np.zeros((2, 64)), ["a", "b"])}, r"fit: validation: y must be an array"),
])
def test_fit_rejects_bad_arguments(kwargs, match, digits):
    X, y = digits
    g = classifier()
    before = {p.name: p.value.copy() for p in g.parameters()}
    args = {"optimizer": ge.optim.SGD(g.parameters(), lr=0.1), "X": X[:10], "y": y[:10],
            **kwargs}
    with pytest.raises(GraphError, match=match):
        ge.train.fit(g, **args)
    assert all(np.array_equal(p.value, before[p.name]) for p in g.parameters())
    with pytest.raises(GraphError, match="fit: expected X and y with the same number"):
        ge.train.fit(g, ge.optim.SGD(g.parameters(), lr=0.1), X[:10], y[:9])


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, r"train_digits: seed must be a non-negative integer, got -1"),
    ({"seed": "0"}, r"train_digits: seed must be a non-negative integer, got '0'"),
    ({"hidden": 10_000_000}, r"mlp: sizes \[64, 10000000, 10\] need 750000010 weights and "
                             r"biases, more than the limit 20000000"),
    ({"hidden": 2.5}, r"train_digits: hidden must be a positive integer, got 2.5"),
    ({"test_fraction": "0.2"}, r"test_fraction must be a number in \(0, 1\), got '0.2'"),
    ({"epochs": 0}, r"fit: epochs must be a positive integer, got 0"),
])
def test_train_digits_rejects_bad_arguments(kwargs, match):
    with pytest.raises(GraphError, match=match):
        ge.train.train_digits(quiet=True, **kwargs)


def test_default_training_reaches_95_percent_held_out():
    history, g = ge.train.train_digits(quiet=True)
    assert len(history.loss) == 30 and history.val_accuracy[-1] >= 0.95
    assert [p.name for p in g.parameters()] == ["W1", "b1", "W2", "b2"]


# ---------------------------------------------------------------- the command line

def test_cli_train_prints_the_losses_and_the_held_out_accuracy(capsys, tmp_path):
    plot = tmp_path / "loss.png"
    assert main(["train", "--epochs", "3", "--hidden", "16", "--plot", str(plot)]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].startswith("training a 64-16-10 sigmoid MLP on the digits: 3 epochs")
    assert [ln.split()[1] for ln in lines[1:4]] == ["1/3", "2/3", "3/3"]
    accuracy = float(lines[4].split()[2])
    assert lines[4].startswith("held-out accuracy ") and accuracy > 0.8
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.err == ""


def test_cli_train_one_epoch_is_singular(capsys):
    assert main(["train", "--epochs", "1", "--hidden", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "on the digits: 1 epoch, SGD" in out and " after 1 epoch in " in out
    assert "epochs" not in out


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--batch-size", "-3"], "--batch-size must be a positive integer, got -3"),
    (["--hidden", "0"], "--hidden must be a positive integer, got 0"),
    (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
    (["--lr", "inf"], "--lr must be a positive number, got inf"),
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
    (["--hidden", "10000000"], "--hidden 10000000: the network would have 750000010 weights "
                               "and biases, more than the limit 20000000"),
    (["--plot", ""], "--plot: the file name is empty"),
    (["--plot", "loss"], "--plot loss: the file name needs an extension that names its "
                         "format, such as loss.png (one of .avif, .eps"),
    (["--plot", "loss.txt"], "--plot loss.txt: matplotlib cannot save .txt files"),
    (["--plot", "."], "--plot .: is a directory; name a file in it, such as ./out.png"),
    (["--plot", "no/such/dir/loss.png"], "--plot no/such/dir/loss.png: the directory "),
])
def test_cli_train_rejects_bad_values_in_one_line(argv, message, capsys, tmp_path,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""                                   # refused before training
    assert err.startswith(f"graphengine train: error: {message}") and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_cli_train_reports_a_run_that_diverged(capsys):
    assert main(["train", "--lr", "1e308", "--epochs", "1", "--hidden", "4", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "loss nan" in out and "after 1 epoch in" in out
    assert out.startswith("training a 64-4-10 sigmoid MLP on the digits: 1 epoch, SGD")
    assert err == ("graphengine train: warning: the training diverged: the loss became nan "
                   "in epoch 1 (try a smaller --lr than 1e+308)\n")


def test_cli_train_plot_on_a_full_disk_is_one_line_and_exit_2(capsys, tmp_path):
    full = tmp_path / "loss.pdf"
    full.symlink_to("/dev/full")
    assert main(["train", "--epochs", "1", "--hidden", "4", "--quiet",
                 "--plot", str(full)]) == 2
    out, err = capsys.readouterr()
    assert "loss curve saved" not in out
    assert err == (f"graphengine train: error: --plot {full}: cannot write the file (No space "
                   "left on device)\n")


@pytest.mark.parametrize("argv", [["--batch-size", "abc"], ["--lr", "fast"], ["--epochs"]])
def test_cli_train_rejects_unparsable_values_with_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv])
    assert exc.value.code == 2
    assert "graphengine train: error: argument" in capsys.readouterr().err


def test_compiled_step_sums_a_node_used_twice_and_names_a_failing_gate():
    g = ge.ComputationalGraph()
    w = g.parameter("w", 3.0)
    w * w + w * g.input("x")                                     # d/dw = 2w + x
    step = ge.train.compile_step(g, ge.optim.SGD([w], lr=0.1))
    assert step({"x": 1.0}) == 12.0 and w.value == pytest.approx(3.0 - 0.1 * 7.0)
    assert w.grad == 7.0

    h = classifier()
    step = ge.train.compile_step(h, ge.optim.SGD(h.parameters(), lr=0.1))
    with pytest.raises(GraphError, match=r"node 'loss' \(CE\) failed in forward .*labels must"):
        step({"x": np.zeros((2, 64)), "y": np.array([0, 10])})


def test_compile_step_takes_a_users_own_optimizer():
    class Halving:                      # not an optim.Optimizer, but has what one has
        def __init__(self, params):
            self.params = params

        def update(self, grads):
            for p, grad in zip(self.params, grads, strict=True):
                p.value = p.value - 0.5 * grad

    g = ge.ComputationalGraph()
    w = g.parameter("w", 3.0)
    w * w
    step = ge.train.compile_step(g, Halving([w]))
    assert step({}) == 9.0 and w.value == 0.0
    with pytest.raises(GraphError, match=r"optimizer must be an Optimizer .*got Halving"):
        ge.train.compile_step(g, Halving(w))


def test_cli_train_plot_without_matplotlib_is_a_one_line_hint_before_training(capsys,
                                                                            monkeypatch):
    for name in ("matplotlib", "matplotlib.backend_bases", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["train", "--plot", "loss.png"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("graphengine train: error: --plot needs matplotlib: pip install "
                   "'graphengine[draw]'\n")
