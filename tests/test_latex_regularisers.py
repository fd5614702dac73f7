"""Regularisers in the catalogue: the penalty, its derivative step by step, the update.

Each regulariser is a declaration (derive/ops/regularisers.py) in the catalogue like any
other op: `derive list` shows it, `derive latex NAME` typesets its penalty R(w), the
derivative recorded rule by rule (each step checked) and the modified gradient-descent
update, in Portuguese and English; it has no kernel module of its own.
"""

import dataclasses
import shutil

import pytest
import sympy as sp
import torch
from conftest import one_error_line
from oracles import reference

from derive import registry
from derive.calculus.regularise import penalty_gradient
from derive.calculus.steps import StepError, check_chain, derivation_steps
from derive.cli import main
from derive.latex.compile import compile_pdf
from derive.pipeline import document_for
from derive.spec import w

REGULARISERS = [op.name for op in registry.all_ops("regulariser")]
LANGS = ("pt", "en")
needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")


def test_the_catalogue_holds_l2_l1_and_elastic_net(capsys):
    assert set(REGULARISERS) == {"l2", "l1", "elastic_net"}
    assert main(["list"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in REGULARISERS:
        assert "regulariser" in listed[name]


@pytest.mark.parametrize("name", REGULARISERS)
def test_the_recorded_derivative_ends_in_the_penalty_gradient(name):
    op = registry.get(name)
    chain = derivation_steps(op).derivative
    assert chain.steps[0].rule == "definition"
    assert sp.simplify(chain.steps[-1].after - penalty_gradient(op)) == 0
    assert sp.simplify(penalty_gradient(op) - sp.diff(op.penalty, w)) == 0


def test_the_step_recorder_refuses_a_wrong_step():
    chain = derivation_steps(registry.get("l2")).derivative
    last = chain.steps[-1]
    wrong = dataclasses.replace(last, after=2 * last.after)  # the ½ convention forgotten
    with pytest.raises(StepError):
        check_chain(dataclasses.replace(chain, steps=(*chain.steps[:-1], wrong)))


@pytest.mark.parametrize("name", REGULARISERS)
def test_the_penalty_gradient_is_pytorchs_autograd(name):
    op = registry.get(name)
    strengths = {p.name: value for p, value in zip(op.strengths, (0.3, 0.7), strict=False)}
    values = [-1.5, -0.2, 0.0, 0.4, 2.0]
    weights = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    reference(op)(weights, strengths).backward()
    at = {p.symbol: strengths[p.name] for p in op.strengths}
    ours = [float(penalty_gradient(op).subs(at).subs(w, v)) for v in values]
    assert ours == pytest.approx(weights.grad.tolist(), rel=1e-12, abs=0)


@pytest.mark.parametrize("lang", LANGS)
def test_the_l2_document_states_the_half_convention_and_the_decay(lang):
    tex = document_for("l2", lang=lang).text
    assert r"R(w) = \frac{1}{2} \lambda w^{2}" in tex
    assert r"\boxed{R'(w) = \lambda w}" in tex
    assert r"w - \eta \left(g + \lambda w\right)}" in tex
    assert r"\left(1 - \eta \lambda\right) w - \eta g" in tex
    assert r"-\eta \lambda w" in tex  # AdamW's decoupled decay, from its declaration


@pytest.mark.parametrize("lang", LANGS)
def test_the_l1_document_says_what_sgn_0_is(lang):
    tex = document_for("l1", lang=lang).text
    assert r"\boxed{R'(w) = \lambda \operatorname{sgn}(w)}" in tex
    assert r"\operatorname{sgn}(0) = 0" in tex and "w = 0" in tex
    assert r"\mbox{$\operatorname{sgn}(0) = 0$}" in tex  # never broken at "="
    assert r"\left(1 - \eta" not in tex  # no decay: the penalty's push is fixed


@needs_tex
@pytest.mark.parametrize("fmt", ["article", "beamer"])
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", REGULARISERS)
def test_every_regulariser_document_compiles(tmp_path, name, lang, fmt):
    doc = document_for(name, lang=lang, fmt=fmt)
    assert "R'(w)" in doc.text
    pdf = compile_pdf(doc.text, tmp_path / f"{name}.pdf")
    assert pdf.stat().st_size > 0


@pytest.mark.parametrize("lang", LANGS)
def test_the_markdown_shows_the_penalty_and_its_derivative(lang):
    text = document_for("elastic_net", lang=lang, fmt="markdown").text
    assert r"R(w) = \lambda_1 \left|{w}\right| + \frac{1}{2} \lambda_2 w^{2}" in text
    assert r"\boxed{R'(w) = \lambda_1 \operatorname{sgn}(w) + \lambda_2 w}" in text


@pytest.mark.parametrize("command", [["kernels", "l2"], ["check", "l1"]])
def test_a_regulariser_has_no_module_of_its_own(command, tmp_path, capsys):
    assert main([*command, "-o", str(tmp_path)]) == 2
    err = one_error_line(capsys)
    assert "no module of its own" in err and "[train]" in err


def _decimal(tex: str, lang: str) -> float:
    return float(tex.replace("{,}", ".") if lang == "pt" else tex)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", REGULARISERS)
def test_the_worked_step_is_pytorchs_arithmetic(name, lang):
    """R(w), R'(w) and the step on the page agree with autograd on the stated numbers."""
    import re

    tex = document_for(name, lang=lang).text
    op = registry.get(name)
    sep = r"\{,\}" if lang == "pt" else r"\."
    num = rf"-?\d+(?:{sep}\d+)?"
    stated = dict(re.findall(rf"\$(\\lambda(?:_\d)?|\\eta|w|g) = ({num})\$", tex))
    strengths = {p.name: _decimal(stated[p.latex], lang) for p in op.strengths}
    eta, w0, g0 = (_decimal(stated[k], lang) for k in (r"\eta", "w", "g"))
    weight = torch.tensor([w0], dtype=torch.float64, requires_grad=True)
    penalty = reference(op)(weight, strengths)
    penalty.backward()
    slope = weight.grad.item()
    lines = re.search(r"\\begin\{align\*\}\nR\((.*?)\\end\{align\*\}", tex, re.S).group(0)
    values = [_decimal(v, lang) for v in re.findall(rf"= ({num})\s*(?=\\\\|\n)", lines)]
    assert values == pytest.approx([penalty.item(), slope, w0 - eta * (g0 + slope)], abs=1e-12)
    assert values[-1] != pytest.approx(w0 - eta * g0)  # the penalty changed the step


@pytest.mark.parametrize("fmt", ["article", "beamer", "markdown"])
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", REGULARISERS)
def test_the_rules_read_at_full_size(name, lang, fmt):
    """No rule stated as an inline fraction of fractions, no 1/2 as a small inline fraction,
    no g as a generic function where g is the loss gradient, and AdamW's λ defined."""
    import re

    tex = document_for(name, lang=lang, fmt=fmt).text
    inline = [m for m in re.findall(r"(?<![\\$])\$([^$]+)\$", tex)]
    assert not [m for m in inline if r"\kappa" in m or r"\frac{1}{2}" in m or r"\frac{d}{du}" in m]
    assert r"\cdot 0" in tex or r"\cdot \left" in tex  # the worked step's products are marked
    if r"\eta \lambda w" in tex and "AdamW" in tex:
        # AdamW's decay strength is set to the penalty's λ, so λ keeps one meaning.
        assert re.search(r"(decaimento igual a|decay strength set to) \$\\lambda\$", tex)


@pytest.mark.parametrize("lang", LANGS)
def test_the_worked_step_follows_the_update_on_the_slides(lang):
    """The update's '(cont.)' frame comes right after the update, the worked step after it."""
    import re

    tex = document_for("elastic_net", lang=lang, fmt="beamer").text
    titles = re.findall(r"\\begin\{frame\}\{([^\n]*)\}\n", tex)
    heads = {"pt": ("A atualização modificada", "Um exemplo numérico"),
             "en": ("The modified update", "A worked step")}[lang]
    update, cont, example = (titles.index(heads[0]), titles.index(heads[0] + " ({cont.})"),
                             titles.index(heads[1]))
    assert update + 1 == cont < example


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
def test_the_elastic_net_keeps_the_order_of_its_penalty(lang, fmt):
    """R(w) = λ₁|w| + ½λ₂w² is derived to λ₁ sgn(w) + λ₂w, in that order on every line
    (the derivative, the update, the worked step), not reordered to λ₂w + λ₁ sgn(w)."""
    tex = document_for("elastic_net", lang=lang, fmt=fmt).text
    sgn, lin = r"\lambda_1 \operatorname{sgn}(w)", r"\lambda_2 w"
    assert rf"R'(w) = {sgn} + {lin}" in tex
    assert rf"g + {sgn} + {lin}" in tex
    assert rf"{lin} + {sgn}" not in tex
    assert r"\cdot \operatorname{sgn}(0{,}5) + 0{,}3" in tex or \
        r"\cdot \operatorname{sgn}(0.5) + 0.3" in tex


@pytest.mark.parametrize("lang", LANGS)
def test_the_elastic_net_takes_both_strengths_out_in_one_step(lang):
    """λ₁ and λ₂/2 leave their derivatives on one line: the constant-factor rule is said
    once, then the absolute value's rule and the power rule."""
    steps = derivation_steps(registry.get("elastic_net", "regulariser")).derivative.steps
    rules = [s.rule for s in steps]
    assert rules.count("constant_factor") == 1, rules
    assert rules.index("constant_factor") < rules.index("abs") < rules.index("power")
    tex = document_for("elastic_net", lang=lang, fmt="article").text
    said = {"pt": "Um fator constante sai da derivada", "en": "A constant factor comes out"}
    assert tex.count(said[lang]) == 1
