"""Hostile text in generated files: each is escaped, renamed, refused, or checked on write.

Tables per entry point of ``derive kernels`` (and ``derive latex``): paths and formulas
that try to end a comment or set the file's encoding; parameter names the generated code
uses itself; module names that would replace or shadow another module; constants a float
cannot hold; and the catalogue kernels' public functions given arguments that make no
sense. Each asserts a clear error or a correct result.
"""

import ast
import math
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from derive.checks import load_module
from derive.cli import main
from derive.codegen.emit import docstring_text, header_lines
from derive.codegen.lower import fold_constants
from derive.codegen.printer import UnsupportedError, numba_code
from derive.errors import OutputError
from derive.files import command_line, comment_text
from derive.pipeline import Target, custom_activation, custom_loss, custom_target, write_targets
from derive.spec import x

#: PEP 263's pattern: a comment in line 1 or 2 that matches sets the source encoding.
CODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)
#: Run at import if an escape fails: it leaves a file named PWNED in the working folder.
PAYLOAD = 'import os; os.system("touch PWNED")'

# -- texts written into headers and docstrings -----------------------------------------
LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85",
               "\u2028", "\u2029"]
#: Texts that end a comment line early, set the file's encoding, or are no source at all.
COMMENT_BREAKERS = [f"a{b}{PAYLOAD}" for b in LINE_BREAKS] + [
    "# -*- coding: latin-1 -*-", "coding=utf-16", "vim: set fileencoding=ascii :",
    "x\x00y", "\u202eevil", "\udc85",
]
#: Texts that close a docstring or start an escape sequence in it.
DOCSTRING_BREAKERS = [
    'end"""' + PAYLOAD + '"""', 'a"', "trailing\\", "\\x0a", "\\", '"""', "\\N{bad}",
    "\\u12", "x\x00y", "a\nb",
]


@pytest.mark.parametrize("text", COMMENT_BREAKERS, ids=range(len(COMMENT_BREAKERS)))
def test_header_is_two_comment_lines_and_sets_no_encoding(text):
    header = header_lines(f"the formula {text}", f"derive kernels -o {text}")
    lines = header.splitlines()
    assert len(lines) == 2 and all(line.startswith("# ") for line in lines)
    assert all(line.isprintable() for line in lines)  # no NUL, no bidi override
    assert not any(CODING.match(line) for line in lines)
    compile(header.encode("utf-8"), "header", "exec")  # no lone surrogate either


@pytest.mark.parametrize("text", COMMENT_BREAKERS, ids=range(len(COMMENT_BREAKERS)))
def test_comment_text_is_printable_and_keeps_plain_text(text):
    assert comment_text(text).isprintable() and not CODING.match("#" + comment_text(text))
    assert comment_text("derive kernels --expr 'x*2' -o out/dir") == (
        "derive kernels --expr 'x*2' -o out/dir")


@pytest.mark.parametrize("text", DOCSTRING_BREAKERS, ids=range(len(DOCSTRING_BREAKERS)))
def test_docstring_text_cannot_close_the_docstring(text):
    escaped = docstring_text(text)
    assert len(escaped.splitlines()) == 1
    tree = ast.parse(f'"""{escaped}"""\n')
    assert len(tree.body) == 1  # one string statement: nothing after it runs
    assert tree.body[0].value.value == text  # and it still says exactly the text


@pytest.mark.parametrize("word", ["a\nb", "tab\there", "\x85", "\u2028", "a\rb'c\\"])
def test_command_line_is_one_line_that_bash_reads_back(word):
    line = command_line(["printf", "%s", word])
    assert line.isprintable() and len(line.splitlines()) == 1
    run = subprocess.run(["bash", "-c", line], capture_output=True, timeout=30)
    assert run.stdout.decode("utf-8") == word


def _module_is_safe(path: Path, cwd: Path) -> None:
    """The file's encoding is UTF-8, it starts with its two-line header, and importing it
    in a fresh process runs nothing else."""
    with open(path, "rb") as f:
        assert tokenize.detect_encoding(f.readline)[0] == "utf-8"
    text = path.read_text(encoding="utf-8")
    head = text.splitlines()[:3]
    assert [line[:2] for line in head] == ["# ", "# ", "# "] and "derive-hash" in head[2]
    code = ("import importlib.util, sys; "
            f"s = importlib.util.spec_from_file_location('m', {str(path)!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)")
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert not (cwd / "PWNED").exists()


OUT_DIRS = [f"a{b}{PAYLOAD}" for b in ("\n", "\r", "\x0c", "\u2028", "\x85")] + [
    "x\n# -*- coding: utf-16 -*-", "# coding=latin-1",
]


@pytest.mark.parametrize("folder", OUT_DIRS, ids=range(len(OUT_DIRS)))
def test_output_path_in_the_header_runs_nothing(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / folder
    assert main(["kernels", "--expr", "x*a", "--param", "a=2", "--name", "f",
                 "-o", str(out)]) == 0
    _module_is_safe(out / "f.py", tmp_path)


#: A formula spans lines only inside brackets, so its lines break the module (not run code).
FORMULAS = [
    "(x #\n+ 1 #\n)",
    "(x\r+ 1\r)",
    "(x # -*- coding: utf-16 -*-\n)",
    "(x # coding=latin-1\n)",
    '(x #"""\n)',
    "(x #\\\n)",
    "(x #\u2028import os\n)",
]


@pytest.mark.parametrize("formula", FORMULAS, ids=range(len(FORMULAS)))
def test_formula_in_the_header_runs_nothing(formula, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["kernels", "--expr", formula, "--name", "f", "-o", str(tmp_path)]) == 0
    _module_is_safe(tmp_path / "f.py", tmp_path)


def test_network_spec_path_in_header_and_docstring_runs_nothing(tmp_path, monkeypatch, repo):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / f"a\n{PAYLOAD}\n# coding=latin-1\n\"\"\"{PAYLOAD}\n\\"
    folder.mkdir()
    spec = folder / "mlp.toml"
    spec.write_text((repo / "examples" / "mlp_notes.toml").read_text())
    assert main(["kernels", str(spec), "-o", str(tmp_path / "out")]) == 0
    (module,) = (tmp_path / "out" / "networks").glob("*.py")
    _module_is_safe(module, tmp_path)


# -- LaTeX: a user's text never becomes TeX code ------------------------------------------
def test_latex_header_keeps_formula_and_path_in_comments(tmp_path):
    formula = "(x #a\n#\\input{/etc/passwd}\\write18{touch PWNED}-->\n)"
    out = tmp_path / "a\n\\input{/etc/passwd}\n\\write18{touch PWNED}.tex"
    assert main(["latex", "--expr", formula, "--name", "bad", "--lang", "en", "-o",
                 str(out)]) == 0
    for line in out.read_text(encoding="utf-8").splitlines():
        if "/etc/passwd" in line or "write18" in line:
            assert line.startswith("% ")
    md = tmp_path / "bad.md"
    assert main(["latex", "--expr", formula, "--name", "bad", "--lang", "en", "--format",
                 "markdown", "-o", str(md)]) == 0
    text = md.read_text(encoding="utf-8")
    assert text.count("-->") == 1  # only the header comment's own end


# -- parameter names the templates use themselves ---------------------------------------
#: Loop indices, locals, helpers, module names, builtins and decorators of the templates.
CLASHING = ["i", "c", "lo", "hi", "chunks", "x_i", "y_i", "d_y_i", "d_x", "d_x_i",
            "offset", "kernel", "float", "math", "np", "numba", "njit", "prange", "sys",
            "CHUNK", "PARAMS", "PARALLEL_MIN_SIZE", "ENCODINGS", "print", "range", "len",
            "min", "max_", "abs_", "int", "bool", "forward", "backward", "sums", "part",
            "total", "rows", "encoding", "serial", "parallel", "vexp", "sigmoid",
            "softplus", "sign", "p_i", "p_p_i", "value", "name", "like", "size", "a",
            "match", "case", "type", "self", "dtype", "shape", "reshape", "u", "v", "t", "r",
            "tau", "acc", "t_0"]
#: Above PARALLEL_MIN_SIZE elements: the parallel kernels run.
BIG = (1 << 16) + 41
#: At most 16 parameters per op (MAX_PARAMS): the names go in groups.
GROUPS = [CLASHING[i:i + 16] for i in range(0, len(CLASHING), 16)]


def _values(names):
    return {name: round(0.5 + 0.37 * k, 2) for k, name in enumerate(names)}


def _weighted_sum(names):
    return " + ".join(f"{k + 1}*{name}" for k, name in enumerate(names))


def _scale(params):
    return sum((k + 1) * v for k, v in enumerate(params.values())) / 1000


@pytest.mark.parametrize("names", GROUPS, ids=[g[0] for g in GROUPS])
def test_activation_parameters_named_like_generated_code_give_right_numbers(names, tmp_path):
    values = _values(names)
    formula = f"tanh(x*({_weighted_sum(values)})/1000)"
    op = custom_activation(formula, "clash", values)
    write_targets([custom_target(op, formula, values, tmp_path)], verify=True)
    module = load_module(tmp_path / "clash.py")
    x = np.linspace(-3, 3, BIG)  # the parallel kernels too: they have locals of their own
    d_y = np.cos(x)
    scale = _scale(values)
    y = module.forward(x)
    assert np.allclose(y, np.tanh(scale * x), rtol=1e-13, atol=0)
    assert np.allclose(module.backward(x, y, d_y), d_y * scale * (1 - np.tanh(scale * x)**2),
                       rtol=1e-12, atol=1e-15)
    # The public keywords are the user's names.
    other = {name: v + 1 for name, v in values.items()}
    assert np.allclose(module.forward(x, **other), np.tanh(_scale(other) * x), rtol=1e-13)


@pytest.mark.parametrize("names", GROUPS, ids=[g[0] for g in GROUPS])
def test_loss_parameters_named_like_generated_code_give_right_numbers(names, tmp_path):
    values = _values(names)
    formula = f"({_weighted_sum(values)})/1000*(pred - target)**2"
    op = custom_loss(formula, "clash_loss", values)
    write_targets([custom_target(op, formula, values, tmp_path)], verify=True)
    module = load_module(tmp_path / "clash_loss.py")
    rng = np.random.default_rng(0)
    for shape in [(5, 3), (BIG, 1)]:
        pred, target = rng.normal(size=shape), rng.normal(size=shape)
        scale = _scale(values)
        assert math.isclose(module.forward(pred, target),
                            np.mean(scale * (pred - target) ** 2), rel_tol=1e-12)
        expected = 2 * scale * (pred - target) / pred.size
        assert np.allclose(module.backward(pred, target), expected, rtol=1e-12,
                           atol=1e-12 * np.abs(expected).max())


def test_too_many_parameters_are_refused(tmp_path, capsys):
    names = [f"a{k}" for k in range(17)]
    argv = ["kernels", "--expr", "x*(" + "+".join(names) + ")", "--name", "f",
            "-o", str(tmp_path)]
    for name in names:
        argv += ["--param", f"{name}=1"]
    assert main(argv) == 2 and "at most 16" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["i", "lo", "hi", "c", "chunks", "offset", "kernel", "float"])
def test_issue_example_one_parameter_at_a_time(name, tmp_path):
    """`derive kernels --expr "x*i" --param i=2` computed x*index instead of 2*x."""
    assert main(["kernels", "--expr", f"x*{name}", "--param", f"{name}=2", "--name", "f",
                 "-o", str(tmp_path)]) == 0
    module = load_module(tmp_path / "f.py")
    for size in (5, BIG):  # the serial kernel, and the parallel one with its chunk locals
        x = np.linspace(-1, 1, size)
        assert np.array_equal(module.forward(x), 2 * x)
        assert np.array_equal(module.backward(x, 2 * x, np.ones(size)), np.full(size, 2.0))


#: The public functions' own arguments, the module's private names, the lowering's
#: temporaries. (x, y, d_y, pred, target, pi, e, t0, r0 and names that are not
#: identifiers were refused before too.)
RESERVED_PARAMS = ["out", "seed", "_array", "_forward", "_scalar", "__init__", "acc1"]


@pytest.mark.parametrize("name", RESERVED_PARAMS)
def test_reserved_or_invalid_parameter_names_are_refused(name, tmp_path, capsys):
    code = main(["kernels", "--expr", f"x*{name}", "--param", f"{name}=2", "--name", "f",
                 "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--param" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# -- module names -------------------------------------------------------------------------
#: (Keywords and names that are not identifiers were refused before too.)
BAD_NAMES = ["numpy", "math", "numba", "derive", "sys", "os", "json", "typing", "scipy",
             "llvmlite", "__init__", "__main__", "sigmoid", "relu", "mse", "softmax",
             "dense", "adam"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_module_names_that_replace_or_shadow_a_module_are_refused(name, tmp_path, capsys):
    code = main(["kernels", "--expr", "x*x", "--name", name, "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--name" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_loss_name_is_checked_too(tmp_path, capsys):
    code = main(["kernels", "--kind", "loss", "--expr", "(pred-target)**2", "--name", "numpy",
                 "-o", str(tmp_path)])
    assert code == 2 and "--name" in capsys.readouterr().err


# -- constants and values a float64 cannot hold -------------------------------------------
BAD_CONSTANTS = ["x**sqrt(-1)", "x*(-1)**0.5", "x*sqrt(-1)", "log(-1)*x", "x*(-8)**(1/3)",
                 "x*1e300*1e300", "x*exp(800)", "exp(710)*x", "1e200*x*1e200"]


@pytest.mark.parametrize("formula", BAD_CONSTANTS)
def test_complex_or_overflowing_constants_are_refused(formula, tmp_path, capsys):
    code = main(["kernels", "--expr", formula, "--name", "f", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--expr" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


BAD_VALUES = ["nan", "inf", "-inf", "1e999", "-1e400", "NaN"]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("kind", ["activation", "loss"])
def test_non_finite_parameter_values_are_refused(value, kind, tmp_path, capsys):
    formula = "a*x" if kind == "activation" else "a*(pred-target)**2"
    code = main(["kernels", "--kind", kind, "--expr", formula, "--param", f"a={value}",
                 "--name", "f", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--param" in err and "finite" in err
    assert list(tmp_path.iterdir()) == []


PRINTER_REFUSES = [sp.Float("1e400") * x, sp.Float("-1e309"), sp.I * x, sp.Integer(10)**400,
                   sp.exp(800, evaluate=False) + x]


@pytest.mark.parametrize("expr", PRINTER_REFUSES, ids=range(len(PRINTER_REFUSES)))
def test_printer_refuses_constants_a_float64_kernel_cannot_hold(expr):
    """Whatever reaches the printer (a derivative's constant too) is checked there last:
    `inf`, `nan` or `1j` in a kernel is a name error or a complex kernel."""
    with pytest.raises(UnsupportedError):
        numba_code(fold_constants(expr))


# -- what derive kernels writes, it imports -------------------------------------------------
def test_a_module_that_does_not_import_is_not_left_behind(tmp_path):
    broken = Target(tmp_path / "new.py", "def f(:\n")
    with pytest.raises(OutputError, match="does not import"):
        write_targets([broken], verify=True)
    assert not broken.path.exists()


def test_a_broken_rewrite_puts_the_previous_file_back(tmp_path):
    path = tmp_path / "old.py"
    good = "VALUE = 1\n"
    write_targets([Target(path, good)], verify=True)
    with pytest.raises(OutputError, match="NameError"):
        write_targets([Target(path, "VALUE = nan\n")], force=True, verify=True)
    assert path.read_text() == good


def test_only_the_broken_file_of_several_is_removed(tmp_path):
    good, bad = Target(tmp_path / "good.py", "A = 1\n"), Target(tmp_path / "bad.py", "1/0\n")
    with pytest.raises(OutputError, match="ZeroDivisionError"):
        write_targets([good, bad], verify=True)
    assert good.path.exists() and not bad.path.exists()


# -- the catalogue kernels refuse arguments that make no sense --------------------------------
CATALOGUE = ["relu", "prelu", "softmax", "mse", "dense", "conv2d", "max_pool2d", "avg_pool2d",
             "flatten", "batch_norm", "dropout", "adam", "gd"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalogue")
    assert main(["kernels", *CATALOGUE, "-o", str(out)]) == 0
    folders = {"relu": "activations", "prelu": "activations", "softmax": "activations",
               "mse": "losses", "adam": "optimizers", "gd": "optimizers"}
    return {name: load_module(out / folders.get(name, "layers") / f"{name}.py")
            for name in CATALOGUE}


X = np.linspace(-1, 1, 12).reshape(3, 4)
IMG = np.linspace(-1, 1, 2 * 3 * 6 * 6).reshape(2, 3, 6, 6)
K, B = np.ones((4, 3, 3, 3)), np.ones(4)
W = [np.ones(3)]

#: (name, call, error type, words the message must hold). Integer or complex x, pred and
#: parameters, x/y/d_y of different shapes for elementwise ops, labels out of range and
#: misshapen layer inputs were refused before; these were not.
BAD_CALLS = [
    ("relu", lambda m: m.forward(X, out=[0.0] * 12), ValueError, "out must be"),
    ("prelu", lambda m: m.forward(X, 1j), TypeError, "alpha must be a real number"),
    ("prelu", lambda m: m.forward(X, "0.1"), TypeError, "alpha must be a real number"),
    ("prelu", lambda m: m.forward(X, math.nan), ValueError, "alpha"),
    ("softmax", lambda m: m.backward(X, X.astype(np.float32), X), TypeError, "one dtype"),
    ("softmax", lambda m: m.forward(X, out=[0.0]), ValueError, "out must be"),
    ("mse", lambda m: m.forward(X, X + 1j), TypeError, "target must be an array of real"),
    ("mse", lambda m: m.forward(X, np.full((3, 4), "a")), TypeError, "target must be"),
    ("mse", lambda m: m.backward(X, X, out=[0.0]), ValueError, "out must be"),
    ("dense", lambda m: m.backward(np.ones((2, 4)), np.ones((3, 4)), np.ones(3),
                                   np.ones((3, 2))), ValueError, "d_s"),
    ("dense", lambda m: m.forward(X, np.ones((2, 4)), np.ones(2), out=np.ones((9, 3, 2))),
     ValueError, "out must be"),
    ("conv2d", lambda m: m.forward(IMG, K, B, padding=0.5), ValueError, "padding"),
    ("conv2d", lambda m: m.forward(IMG, K, B, padding=-1), ValueError, "padding"),
    ("conv2d", lambda m: m.forward(IMG, K, B, stride=0), ValueError, "stride"),
    ("conv2d", lambda m: m.forward(IMG, K, B, stride=math.nan), ValueError, "stride"),
    ("conv2d", lambda m: m.forward(IMG, K, B, stride="2"), ValueError, "stride"),
    ("max_pool2d", lambda m: m.forward(IMG, kernel_size=0), ValueError, "kernel_size"),
    ("max_pool2d", lambda m: m.forward(IMG, kernel_size=-1), ValueError, "kernel_size"),
    ("max_pool2d", lambda m: m.forward(IMG, kernel_size=2.5), ValueError, "kernel_size"),
    ("max_pool2d", lambda m: m.forward(IMG, stride=1.5), ValueError, "stride"),
    ("max_pool2d", lambda m: m.forward(IMG, stride=0), ValueError, "stride"),
    ("avg_pool2d", lambda m: m.forward(IMG, kernel_size=0), ValueError, "kernel_size"),
    ("avg_pool2d", lambda m: m.forward(IMG, stride=math.inf), ValueError, "stride"),
    ("flatten", lambda m: m.backward(IMG, np.ones((4, 54))), ValueError, "d_y"),
    ("batch_norm", lambda m: m.forward(IMG, np.ones(3), np.ones(3), eps=-1), ValueError,
     "eps"),
    ("batch_norm", lambda m: m.forward(IMG, np.ones(3), np.ones(3), eps=math.nan),
     ValueError, "eps"),
    ("dropout", lambda m: m.forward(X, p=-0.5), ValueError, "p must"),
    ("dropout", lambda m: m.forward(X, seed=-1), ValueError, "seed"),
    ("adam", lambda m: m.step(W, [np.ones(3)], m.init_state(W), lr=math.nan, t=1),
     ValueError, "lr"),
    ("adam", lambda m: m.step(W, [np.ones(3)], m.init_state(W), lr=-1.0, t=1),
     ValueError, "lr"),
    ("adam", lambda m: m.step(W, [np.ones(3)], m.init_state(W), t=1.5), ValueError, "t"),
    ("adam", lambda m: m.step(W, [np.ones(3)], m.init_state(W), t=1, beta1=math.inf),
     ValueError, "beta1"),
    ("gd", lambda m: m.step(W, [np.ones(3)], m.init_state(W), lr="0.1"), ValueError, "lr"),
]


@pytest.mark.parametrize("name, call, error, words", BAD_CALLS,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_CALLS)])
def test_catalogue_kernels_refuse_what_makes_no_sense(catalogue, name, call, error, words):
    with pytest.raises(error) as info:
        call(catalogue[name])
    message = str(info.value)
    assert words in message and "\n" not in message


def test_catalogue_kernels_still_accept_integral_floats_and_numpy_scalars(catalogue):
    pool = catalogue["max_pool2d"]
    assert np.array_equal(pool.forward(IMG, kernel_size=2.0, stride=np.int64(2)),
                          pool.forward(IMG))
    flat = catalogue["flatten"]
    (d_x,) = flat.backward(IMG, np.ones((2, 108)))
    assert d_x.shape == IMG.shape
