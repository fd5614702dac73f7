"""Worked examples: the notes' single neuron (seed 000) and their PyTorch example, every
number computed from the derived expressions and checked against PyTorch's autograd."""

import shutil

import pytest
import sympy as sp

from derive.cli import main
from derive.example import parse_settings, worked_example
from derive.latex.example import render_text

HAVE_TEX = shutil.which("pdflatex") is not None
R = sp.Rational


def example(target, *settings, **options):
    return worked_example(target, parse_settings(list(settings)), **options)


def test_the_notes_single_neuron_example_exactly():
    # Seed 000: 2.1 → (1)(2.1) + (0) → 2.1 → (2.1 − 4)² → 3.61, η = 0.01. The slides print
    # ∂L/∂w = −7.68, a slip: their own update 1 − 0.01·(∂L/∂w) = 1.0798 needs −7.98.
    e = example("mse", "x=2.1", "w=1", "b=0", "y=4")
    assert (e.s, e.yhat, e.loss_value) == (R("2.1"), R("2.1"), R("3.61"))
    assert (e.grad_yhat, e.act_slope, e.ds_dw, e.ds_db) == (R("-3.8"), 1, R("2.1"), 1)
    assert (e.grad_w, e.grad_b) == (R("-7.98"), R("-3.8"))
    assert (e.w_new, e.b_new) == (R("1.0798"), R("0.038"))
    assert e.loss_new == R("2.8710591364")  # the slides' "2.87"
    assert e.lr == R("0.01") and e.activation.name == "identity"


def torch_neuron(activation, loss, x, w, b, y, lr=0.01, **params):
    """One neuron, one case, by PyTorch's autograd (float64)."""
    torch = pytest.importorskip("torch")
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    tx, ty = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    acts = {"identity": lambda s: s, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "relu": torch.relu, "softplus": torch.nn.functional.softplus,
            "elu": torch.nn.functional.elu,
            "leaky_relu": lambda s: torch.nn.functional.leaky_relu(s, params.get("alpha", 0.01))}
    losses = {"mse": lambda p, t: (p - t) ** 2, "sse_half": lambda p, t: (p - t) ** 2 / 2,
              "mae": lambda p, t: (p - t).abs(),
              "binary_cross_entropy": lambda p, t: torch.nn.functional.binary_cross_entropy(
                  p.reshape(1), t.reshape(1))}
    yhat = acts[activation](tw * tx + tb)
    value = losses[loss](yhat, ty)
    value.backward()
    with torch.no_grad():
        w1, b1 = tw - lr * tw.grad, tb - lr * tb.grad
        after = losses[loss](acts[activation](w1 * tx + b1), ty)
    return {"yhat": yhat.item(), "loss": value.item(), "dw": tw.grad.item(),
            "db": tb.grad.item(), "w": w1.item(), "b": b1.item(), "after": after.item()}


def assert_matches(e, ref, rel=1e-12):
    got = {"yhat": e.yhat, "loss": e.loss_value, "dw": e.grad_w, "db": e.grad_b, "w": e.w_new,
           "b": e.b_new, "after": e.loss_new}
    for key, value in ref.items():
        assert float(got[key]) == pytest.approx(value, rel=rel, abs=1e-15), key


def test_the_notes_pytorch_example():
    # Seed 000, "In [41]": w = 1, b = 0.5, x = 1.4, y = 2.1, loss (y − z)²:
    # dL/dw = −0.56, dL/db = −0.4.
    e = example("mse", "w=1", "b=0.5", "x=1.4", "y=2.1")
    assert (e.grad_w, e.grad_b, e.loss_value) == (R("-0.56"), R("-0.4"), R("0.04"))
    assert_matches(e, torch_neuron("identity", "mse", 1.4, 1.0, 0.5, 2.1))


def test_the_notes_example_against_pytorch():
    e = example("mse", "x=2.1", "w=1", "b=0", "y=4")
    assert_matches(e, torch_neuron("identity", "mse", 2.1, 1.0, 0.0, 4.0))


@pytest.mark.parametrize("activation, loss, values", [
    ("sigmoid", "sse_half", (1.4, 1.0, 0.5, 0.3)),      # seed 002's single neuron
    ("tanh", "mse", (0.7, -1.2, 0.1, 0.5)),
    ("relu", "mse", (2.0, 0.5, -0.25, 1.0)),
    ("softplus", "mae", (1.5, 0.4, 0.2, -1.0)),
    ("elu", "sse_half", (-1.3, 0.9, 0.05, 0.2)),
    ("sigmoid", "binary_cross_entropy", (0.8, -0.6, 0.3, 1.0)),
])
def test_other_neurons_against_pytorch(activation, loss, values):
    x, w, b, y = values
    e = example(activation, f"x={x}", f"w={w}", f"b={b}", f"y={y}", loss=loss)
    assert_matches(e, torch_neuron(activation, loss, x, w, b, y), rel=1e-10)


def test_activation_parameters_and_learning_rate():
    e = example("leaky_relu", "x=-2", "w=1", "b=0", "y=1", "alpha=0.1", lr="0.5")
    assert e.yhat == R("-0.2") and e.act_slope == R("0.1") and e.lr == R("0.5")
    assert_matches(e, torch_neuron("leaky_relu", "mse", -2.0, 1.0, 0.0, 1.0, lr=0.5, alpha=0.1))


def test_text_report_in_both_languages():
    e = example("mse", "x=2.1", "w=1", "b=0", "y=4")
    pt, en = render_text(e, "pt"), render_text(e, "en")
    for number in ("3,61", "−7,98", "1,0798", "0,038", "2,87106"):
        assert number in pt
    for number in ("3.61", "−7.98", "1.0798", "0.038", "2.87106"):
        assert number in en
    assert "Regra da cadeia" in pt and "Chain rule" in en
    assert "∂L/∂w = ∂L/∂s · ∂s/∂w = −3.8 · 2.1 = −7.98" in en


def test_cli_prints_and_typesets(capsys, tmp_path):
    assert main(["example", "mse", "--set", "x=2.1", "w=1", "b=0", "y=4", "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "w ← w − η·∂L/∂w = 1 − 0.01·(−7.98) = 1.0798" in out
    assert main(["example", "sigmoid", "--loss", "sse_half", "--set", "x=1.4", "w=1", "b=0.5",
                 "y=0.3", "--latex", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("<!--") and "derive example sigmoid" in md and "$$" in md


@pytest.mark.parametrize("argv, message", [
    (["example", "mse", "--set", "x=1", "w=2"], "missing b, y"),
    (["example", "mse", "--set", "x=1", "w=2", "b=0", "y=one"], "is not a number"),
    (["example", "mse", "--set", "x=1", "w=2", "b=0", "y=1", "q=3"], "unknown name"),
    (["example", "dense", "--set", "x=1"], "is a layer"),
    (["example", "sigmod", "--set", "x=1"], "Did you mean sigmoid"),
    (["example", "mse", "--loss", "mae", "--set", "x=1"], "already the loss"),
    (["example", "mse", "--set", "x=1", "w=1", "b=0", "y=1", "-o", "e.tex"], "go with --latex"),
    (["example", "mse", "--set", "x=1", "x=2"], "set twice"),
    (["example", "binary_cross_entropy", "--activation", "identity", "--set", "x=2", "w=1",
      "b=0", "y=0.5"], "not a finite real number"),
])
def test_cli_refuses_bad_input(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAVE_TEX, reason="pdflatex not installed")
def test_cli_example_to_pdf(tmp_path, capsys):
    out = tmp_path / "neuron.tex"
    argv = ["example", "mse", "--set", "x=2.1", "w=1", "b=0", "y=4", "--latex", "--lang", "pt",
            "-o", str(out), "--pdf"]
    assert main(argv) == 0
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert "derive example mse --set x=2.1 w=1 b=0 y=4" in out.read_text()


@pytest.mark.parametrize("lang", ["pt", "en"])
@pytest.mark.parametrize("fmt", ["article", "beamer"])
def test_the_remark_on_the_slides_slip_says_why_and_what_it_would_give(lang, fmt):
    """Issue 13 item 7: the slides print −7.68; −7.98 gives their own w = 1.0798."""
    from derive.latex.context import document_view
    from derive.latex.document import example_document
    from derive.latex.render import language

    e = example("mse", "x=2.1", "w=1", "b=0", "y=4")
    view = document_view(e, language(lang))
    # the slip's update computed, not typed: 1 − 0.01·(−7.68)
    assert view.slides_w_new.text == ("1,0768" if lang == "pt" else "1.0768")
    tex = example_document(e, ["example", "mse"], lang=lang, fmt=fmt).text
    sep = "{,}" if lang == "pt" else "."
    remark = next(line for line in tex.splitlines() if r"slides \emph{" in line)
    # The article's paragraph opens with the word; the slides' frame is titled with it
    # and does not say it again ("Observações" then "Observação: ...").
    label = "Observação:" if lang == "pt" else "Remark:"
    assert remark.startswith(label) == (fmt == "article"), remark[:40]
    for number in (f"-7{sep}68", f"-7{sep}98", f"w = 1{sep}0798", f"w = 1{sep}0768"):
        assert number in remark
    title = "Gradiente Descendente e Backpropagation" if lang == "pt" else \
        "Gradient Descent and Backpropagation"
    assert rf"\emph{{{title}}}" in remark
    text = render_text(e, lang)
    assert ("w = 1,0768" if lang == "pt" else "w = 1.0768") in text
    assert ("erro de digitação" if lang == "pt" else "a typo") in text


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_the_example_keeps_its_blocks_whole_and_its_text_fractions_flat(lang):
    """The update of w and of b stay on one page (a line of a block ends in \\\\*, which
    forbids a page break after it), and ∂L/∂w inside a sentence is written with a slash,
    not as a small \\frac."""
    import re

    from derive.latex.document import example_document

    e = example("mse", "x=2.1", "w=1", "b=0", "y=4")
    tex = example_document(e, ["example", "mse"], lang=lang, fmt="article").text
    update = re.search(r"w &\\leftarrow .*?\n", tex).group(0)
    assert update.rstrip().endswith(r"\\*"), update
    inline = re.findall(r"(?<![\\$])\$([^$]+)\$", tex.split(r"\begin{document}")[1])
    assert not [m for m in inline if r"\frac{\partial L}" in m]
    assert any(r"\partial L/\partial w" in m for m in inline)
