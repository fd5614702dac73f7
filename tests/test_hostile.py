"""Hostile and random input at every entry point that takes text from a user.

Each must either succeed or fail with a DeriveError (exit code 2 at the CLI): never a
traceback, never code executed, never a hang, never a file written on failure.
"""

import os
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derive.cli import main
from derive.errors import DeriveError
from derive.minimize import minimize, parse_objective, parse_start
from derive.network import parse_spec
from derive.pipeline import custom_activation, custom_loss

HOSTILE = [
    "__import__('os').system('touch /tmp/derive_pwned')",
    "open('/etc/passwd').read()", "x.__class__.__bases__", "(lambda: x)()", "exec('x')",
    "eval('1')", "globals()", "[x for x in ()]", "{x: 1}", "x if x else 1", "x; x",
    "x = 1", "import os", "f'{x}'", "b'x'", "'x' * 10", "x[0]", "x.real", "*x", "x ^ 2",
    "x @ x", "x // 2", "x % 2", "x << 1", "~x", "not x", "x and x", "x < 1", "await x",
    "yield x", "(x := 1)", "\x00", "\u202e", "x" * 3000, "(" * 500 + "x" + ")" * 500,
    "-" * 2000 + "x", "2**2**2**2**2**2", "9" * 400, "1e400", "exp(exp(exp(exp(1000))))",
    "tanh(" * 70 + "x" + ")" * 70, "sigmoid(x, x)", "max(x)", "log()", "x**1e9", "1/0",
]
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
formulas = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=string.printable, max_size=80),
    st.text(max_size=40),
    st.lists(st.sampled_from(HOSTILE + ["x", "+", "*", "(", ")", "exp", "log", "1"]),
             max_size=8).map("".join),
)


def bounded(call, seconds=20.0):
    """Run call; only DeriveError may escape, and it must not take long."""
    start = time.perf_counter()
    try:
        call()
    except DeriveError as exc:
        assert exc.message and "Traceback" not in exc.message
    assert time.perf_counter() - start < seconds


@SETTINGS
@given(formulas)
def test_activation_formulas(text):
    bounded(lambda: custom_activation(text, "f", {}))


@SETTINGS
@given(formulas)
def test_loss_formulas(text):
    bounded(lambda: custom_loss(text.replace("x", "pred"), "f", {}))


@SETTINGS
@given(formulas)
def test_minimize_formulas(text):
    def run():
        objective = parse_objective(text)
        start = parse_start(",".join(["1"] * len(objective.names)), objective)
        minimize(objective, start, steps=2)

    bounded(run)


spec_text = st.one_of(
    st.text(max_size=300),
    st.builds(lambda a, b: f'[network]\nname = "{a}"\ninput_shape = [{b}]\nloss = "mse"\n'
              '[[layers]]\ntype = "dense"\nunits = 3\n',
              st.text(string.printable, max_size=20), st.text(string.printable, max_size=10)),
    st.sampled_from(HOSTILE).map(lambda h: f'[network]\nname = "{h}"\n'),
)


@SETTINGS
@given(spec_text)
def test_spec_files(text):
    bounded(lambda: parse_spec(text, "hostile.toml"))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(HOSTILE) | st.text(string.printable, max_size=60))
def test_cli_never_writes_on_failure(tmp_path_factory, text):
    out = tmp_path_factory.mktemp("out")
    code = main(["kernels", f"--expr={text}", "--name", "f", "-o", str(out)])
    assert code in (0, 2)
    if code == 2:
        assert os.listdir(out) == []
    assert not os.path.exists("/tmp/derive_pwned")


@pytest.mark.parametrize("text", HOSTILE)
def test_latex_formulas(text, tmp_path, capsys):
    code = main(["latex", f"--expr={text}", "--name", "f", "-o", str(tmp_path / "f.tex")])
    assert code == 2 or (tmp_path / "f.tex").exists()
    if code == 2:
        assert os.listdir(tmp_path) == []
        assert "Traceback" not in capsys.readouterr().err
