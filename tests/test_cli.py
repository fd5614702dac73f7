"""The command line: exit codes, messages, and that bad input writes nothing."""

import subprocess
import sys

import numpy as np
import pytest

from derive.checks import finite_difference_check, load_module
from derive.cli import main
from derive.pipeline import custom_activation

HOSTILE = [
    "__import__('os').system('echo hi')",
    "x.__class__",
    "(lambda: 1)()",
    "[x for x in ()]",
    "open('f').read()",
    "exec('1')",
    "x if x else 1",
    "x^2",
    "y + 1",
    "foo(x)",
    "x +",
    "",
    "\x00",
    "(" * 300 + "x" + ")" * 300,
    "-" * 5000 + "x",
    "2**10**10**10",
    "'x'",
    "x; import os",
    "f'{x}'",
    "globals()",
    "3",
]


def run(*argv):
    return subprocess.run([sys.executable, "cli.py", *argv], capture_output=True, text=True,
                          timeout=120)


def test_acceptance_hostile_formula_exits_2_and_writes_nothing(tmp_path):
    r = run("kernels", "--expr", "__import__('os').system('echo hi')", "--name", "bad",
            "-o", str(tmp_path))
    assert r.returncode == 2
    assert "hi" not in r.stdout
    assert "Traceback" not in r.stderr and "--expr" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("formula", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_formulas_are_refused_cleanly(formula, tmp_path, capsys):
    code = main(["kernels", f"--expr={formula}", "--name", "bad", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("derive: error:") and len(err) < 2000
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_suggests(capsys):
    assert main(["kernels", "sigmiod", "-o", "/nonexistent"]) == 2
    assert "sigmoid" in capsys.readouterr().err


def test_undeclared_parameter_is_named(capsys):
    assert main(["kernels", "--expr", "alpha*x", "--name", "a", "-o", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert "'alpha'" in err and "--param alpha=" in err


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["kernels", "--expr", "x*x", "--name", "sq", "-o", str(blocker / "sub")])
    assert code == 2
    assert "writable" in capsys.readouterr().err


def test_custom_formula_end_to_end(tmp_path, capsys):
    code = main(["kernels", "--expr", "x/(1+abs(x))", "--name", "my_softsign", "-o", str(tmp_path)])
    assert code == 0
    path = tmp_path / "my_softsign.py"
    text = path.read_text()
    assert "the formula 'x/(1+abs(x))'" in text and "--name my_softsign" in text
    module = load_module(path)
    op = custom_activation("x/(1+abs(x))", "my_softsign", {})
    assert all(r.passed for r in finite_difference_check(op, module))
    xs = np.array([-3.0, 0.0, 2.0])
    np.testing.assert_allclose(module.forward(xs), xs / (1 + np.abs(xs)), rtol=1e-15)


def test_custom_formula_with_parameter_and_stable_rewrite(tmp_path):
    assert main(["kernels", "--expr", "x/(1+exp(-beta*x))", "--param", "beta=1.5",
                 "--name", "swish", "-o", str(tmp_path)]) == 0
    module = load_module(tmp_path / "swish.py")
    xs = np.array([-1e4, -800.0, 0.5, 800.0])
    y = module.forward(xs)
    d = module.backward(xs, y, np.ones_like(xs))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(d))
    assert module.forward(np.array([1.0]), beta=2.0)[0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_list_shows_every_activation_with_formula(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sigmoid" in out and "wilson_cowan" in out and "erf" in out


def test_check_reports_a_table():
    r = run("check", "relu", "prelu")
    assert r.returncode == 0, r.stderr
    assert "d_alpha" in r.stdout and "2 passed" not in r.stdout and "5 passed, 0 failed" in r.stdout
    assert r.stdout.count("forward = declaration") == 2  # each module against its declaration


def test_check_fails_on_a_wrong_kernel(tmp_path, capsys):
    assert main(["kernels", "relu", "-o", str(tmp_path)]) == 0
    path = tmp_path / "activations" / "relu.py"
    path.write_text(path.read_text().replace("(d_y_i if (x_i > 0) else 0)", "(d_y_i * 0.5)"))
    assert main(["check", "relu", "-o", str(tmp_path)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_custom_loss_end_to_end(tmp_path):
    assert main(["kernels", "--kind", "loss", "--expr", "log(cosh(pred - target))",
                 "--name", "logcosh", "-o", str(tmp_path)]) == 0
    module = load_module(tmp_path / "logcosh.py")
    pred = np.array([[0.5, -1.0], [2.0, 0.0]])
    target = np.array([[0.0, 0.5], [1.0, -1.0]])
    assert module.forward(pred, target) == pytest.approx(np.mean(np.log(np.cosh(pred - target))))
    np.testing.assert_allclose(module.backward(pred, target), np.tanh(pred - target) / 4,
                               rtol=1e-14)
    assert "--kind loss" in (tmp_path / "logcosh.py").read_text()


def test_custom_loss_refuses_x_and_missing_pred(capsys):
    assert main(["kernels", "--kind", "loss", "--expr", "x**2", "--name", "a", "-o", "/tmp/a"]) == 2
    assert main(["kernels", "--kind", "loss", "--expr", "target**2", "--name", "a",
                 "-o", "/tmp/a"]) == 2
    assert "depend on pred" in capsys.readouterr().err


def test_check_of_a_module_not_generated_names_both_places(tmp_path, capsys):
    # A module generated with -o elsewhere is checked with -o too: the message says so.
    assert main(["check", "relu", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "derive kernels" in err and "-o DIR" in err and len(err.strip().splitlines()) == 1
