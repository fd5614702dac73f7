"""Softmax, log-softmax and softmax cross-entropy read as a student reads them (issue 13).

Each test pins one defect a reader found on the rendered pages, in pt and en: the
quotient rule displayed and followed in the order it states, no sign pulled out and put
back from one line to the next, products of named arrays set apart (softmax_j softmax_k,
not softmax_jsoftmax_k), the forward output not called y (the target of the losses), no
undefined case index m = n, the arriving gradient g_k and "checked numerically" said
once, fractions with a sum below them displayed, one meaning for u, ŷ in the program's
gradient as in the derivation, and the two forms of the targets on two slides.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache

import pytest
import sympy as sp

from derive.calculus.steps import StepError, check_chain, derivation_steps, with_step
from derive.pipeline import document_for
from derive.registry import get

LANGS = ("pt", "en")
VECTORS = ("softmax", "log_softmax")
ALL = (*VECTORS, "softmax_cross_entropy")
SM = r"{\operatorname{softmax}}"
CHECKED = {"pt": "verificado numericamente", "en": "checked numerically"}
needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex")


@cache
def _document(name: str, lang: str, fmt: str = "article") -> str:
    return document_for(name, lang=lang, fmt=fmt).text


def _sections(text: str) -> list[str]:
    return text.split("\\section{")


def _lines(align: str) -> list[str]:
    """The formulas of an align's lines (what follows &=)."""
    return [line.split("&=", 1)[1].strip() for line in align.splitlines() if "&=" in line]


def _aligns(text: str) -> list[str]:
    return re.findall(r"\\begin\{align\*\}(.*?)\\end\{align\*\}", text, re.S)


def _inline(text: str) -> list[str]:
    """The inline formulas ($...$) of the text."""
    return re.findall(r"(?<!\\)\$([^$]+)\$", text)


# --- softmax: the quotient rule ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
def test_the_quotient_rule_is_displayed_and_followed_in_its_order(lang, fmt):
    text = _document("softmax", lang, fmt)
    rule = (r"\[ \frac{\partial}{\partial {z}_{j}}\left[\frac{u}{v}\right] = \frac{1}{v^{2}}"
            r"\left(\frac{\partial u}{\partial {z}_{j}} \cdot v - u \cdot "
            r"\frac{\partial v}{\partial {z}_{j}}\right)\]")
    assert rule in text
    # No fraction inside a fraction in the running text (the rule was one, at script size).
    assert not [f for f in _inline(text) if re.search(r"\\frac\{[^$]*\\frac", f)]
    # The line after the rule: ∂u/∂z_j · v − u · ∂v/∂z_j, no minus sign pulled in front.
    after = text[text.index(rule):]
    over = r"\frac{1}{\left(\sum_{i=1}^{K} e^{{z}_{i}}\right)^{2}} \left("
    line = after[after.index(over) + len(over):].split("\n", 1)[0]
    assert line.startswith(r"\frac{\partial}{\partial {z}_{j}} e^{{z}_{k}} \cdot \sum")
    assert r"- e^{{z}_{k}} \cdot \frac{\partial}{\partial {z}_{j}}\left[\sum" in line


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", VECTORS)
def test_no_line_of_a_vector_function_pulls_a_minus_sign_out(name, lang):
    for align in _aligns(_document(name, lang)):
        for line in _lines(align):
            body = line.removeprefix(r"\deriveFit[0.8\linewidth]{")
            assert not body.startswith("-"), line


# --- named arrays side by side ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ALL)
def test_a_named_array_element_is_set_apart_from_its_neighbour(name, lang, fmt):
    text = _document(name, lang, fmt)
    # softmax_jsoftmax_k, g_ksoftmax_k: an element directly followed by a named one.
    assert not re.search(r"\}_\{[^{}]*\} \{\\(log)?\\?operatorname", text)
    after = r"operatorname\{softmax\}\}_\{[^{}]*\} (\{|\\(?!left|right|sum|cdot|,|\\))"
    assert not re.search(after, text)


@pytest.mark.parametrize("lang", LANGS)
def test_softmax_products_read_factor_by_factor(lang):
    text = _document("softmax", lang)
    assert rf"{SM}_{{k}} \, \delta_{{kj}} - {SM}_{{k}} \, {SM}_{{j}}" in text
    assert rf"{{g}}_{{k}} \, {SM}_{{k}}" in text
    # the common factor is seen before it is taken out: softmax_j g_j − softmax_j Σ ...
    assert rf"{SM}_{{j}} \, {{g}}_{{j}} - {SM}_{{j}} \sum_{{k=1}}^{{K}}" in text


# --- the program's form: not y ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
def test_the_programs_form_names_the_output_by_the_softmax_not_y(lang, fmt):
    text = _document("softmax", lang, fmt)
    # The saved output in front, softmax_{n,j} (g_{n,j} − Σ …), as the boxed result has it
    # (SymPy printed (g_{n,j} − Σ …) softmax_{n,j}).
    kernel = (rf"{SM}_{{n,j}} \left({{g}}_{{n,j}} - \sum_{{k=1}}^{{K}} {{g}}_{{n,k}} \, "
              rf"{SM}_{{n,k}}\right)")
    assert kernel in text
    assert rf"\right) {SM}_{{n,j}}" not in text
    assert "{y}_{n," not in text and "$y$" not in text


# --- the gradient the layer returns: one case, g once, checked once -----------------------


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", VECTORS)
def test_the_vjp_sums_over_the_outputs_of_one_case(name, lang, fmt):
    text = _document(name, lang, fmt)
    assert r"\sum_{m=1}" not in text and "m = n" not in text
    assert r"\sum_{k=1}^{K} {g}_{k} \cdot \frac{\partial" in text
    # the other examples are said not to depend on z_j
    assert ("outros exemplos" if lang == "pt" else "other examples") in text


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", VECTORS)
def test_g_is_defined_once_and_the_check_said_once(name, lang, fmt):
    text = _document(name, lang, fmt)
    assert text.count(r"{g}_{k} = \frac{\partial E}") == 1
    assert text.count(CHECKED[lang]) == 1
    # the gradient a layer receives in a vector function's document is g, not δ
    assert r"gradiente $\delta$" not in text and r"gradient $\delta$" not in text


# --- fractions with a sum below them are displayed ----------------------------------------


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ALL)
def test_no_fraction_over_a_row_sum_is_inline(name, lang, fmt):
    text = _document(name, lang, fmt)
    inline = [f for f in _inline(text) if re.search(r"\\frac\{e\^", f)]
    assert inline == []


@pytest.mark.parametrize("lang", LANGS)
def test_the_named_softmax_is_displayed(lang):
    softmax = _document("softmax", lang)
    row = r"{\sum_{i=1}^{K} e^{{z}_{i}}}"
    assert rf"\[ {SM}_{{k}} = \frac{{e^{{{{z}}_{{k}}}}}}{row}, \qquad " in softmax
    log_softmax = _document("log_softmax", lang)
    assert (rf"\[ {SM}_{{j}} = \frac{{e^{{{{z}}_{{j}}}}}}{row} = "
            r"e^{{\log\operatorname{softmax}}_{j}} \]" in log_softmax)
    ce = _document("softmax_cross_entropy", lang)
    assert (r"\[ {\hat{y}}_{n,j} = \frac{e^{{z}_{n,j}}}{\sum_{i=1}^{K} e^{{z}_{n,i}}} \]"
            in ce)
    assert r"\[ {\hat{y}}_{k} = \frac{e^{{z}_{k}}}{\sum_{i=1}^{K} e^{{z}_{i}}} \]" in ce


# --- softmax cross-entropy ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
def test_cross_entropy_keeps_one_sign_on_every_line(lang, fmt):
    text = _document("softmax_cross_entropy", lang, fmt)
    lines = re.findall(r"\\frac\{1\}\{N\} \\left\((.*)\\right\)\}", text)
    assert len(lines) >= 8
    for line in lines:
        assert not line.startswith(r"{y}_{k}"), line
    # (1/N)(… − y_k) from the line that finds y_k to the last
    with_y = [line for line in lines if re.search(r"[-+] \{y\}_\{k\}$", line)]
    assert len(with_y) >= 6 and all(line.endswith(r"- {y}_{k}") for line in with_y), with_y
    assert r"-\frac{1}{N} \left(" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_cross_entropy_folds_the_sum_rule_into_one_line(lang):
    chain = derivation_steps(get("softmax_cross_entropy")).chain
    assert "sum" not in chain.rules()
    assert all(s.rule not in ("constant", "identity") for s in chain.steps)
    folded = [s for s in chain.steps if s.folded]
    assert [f[0] for s in folded for f in s.folded] == ["sum", "identity"]
    text = _document("softmax_cross_entropy", lang)
    clause = ("a derivada de uma soma é a soma das derivadas" if lang == "pt"
              else "the derivative of a sum is the sum of the derivatives")
    assert clause in text


def test_log_softmax_takes_the_delta_without_a_sum_rule_line():
    # ∂/∂z_j [z_k − ln Σ] goes straight to δ_kj − ∂/∂z_j ln Σ: "the derivative of a sum is
    # the sum of the derivatives" on a line of its own teaches nothing.
    steps = derivation_steps(get("log_softmax")).jacobian.steps
    assert [s.rule for s in steps][:3] == ["definition", "delta", "chain"]


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
def test_u_has_one_meaning_in_the_cross_entropy(lang, fmt):
    text = _document("softmax_cross_entropy", lang, fmt)
    assert r"\ln e^{u} = u" not in text and r"\ln e^{a} = a" in text
    assert text.count(r"u = \sum_{i=1}^{K} e^{{z}_{i}}") == 2  # named, then substituted back


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
def test_the_programs_gradient_is_written_with_y_hat(lang, fmt):
    text = _document("softmax_cross_entropy", lang, fmt)
    assert r"\operatorname{softmax}(z)" not in text
    assert r"\frac{{\hat{y}}_{n,j} - {y}_{n,j}}{N}" in text
    assert r"\frac{{\hat{y}}_{n,j} - \left[j = {t}_{n}\right]}{N}" in text
    # the bracket is said in words before the program's gradient uses it
    bracket = text.index(r"[k = t]")
    assert bracket < text.index(r"\left[j = {t}_{n}\right]")
    said = text[bracket - 200:bracket + 200]
    assert ("caso contrário" if lang == "pt" else "otherwise") in said


@pytest.mark.parametrize("lang", LANGS)
def test_the_program_slides_show_one_form_of_the_targets_each(lang):
    text = _document("softmax_cross_entropy", lang, "beamer")
    heading = "O que o programa calcula" if lang == "pt" else "What the program computes"
    frames = [f for f in text.split(r"\begin{frame}")[1:] if f.startswith("{" + heading)]
    assert len(frames) == 2
    assert "({cont.})" in frames[1].split("\n", 1)[0]
    for frame in frames:
        assert frame.count(r"\ell_n =") == 1 and frame.count(r"\partial L") == 1
    assert r"\left[j = {t}_{n}\right]" in frames[1]
    # the second frame opens with a capital letter
    first_text = frames[1].split(r"\begingroup\small", 1)[1].strip()
    assert first_text[0].isupper(), first_text[:30]


# --- English -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name", ALL)
def test_english_writes_softmax_in_lower_case_mid_sentence(name, fmt):
    text = _document(name, "en", fmt)
    body = text.split(r"\begin{document}", 1)[1]
    body = re.sub(r"\\(title|subtitle)\{[^}]*\}", "", body)
    assert not re.search(r"[a-z,;:] Softmax", body)


# --- every step still checked ----------------------------------------------------------------


@pytest.mark.parametrize("name", VECTORS)
def test_a_wrong_step_of_the_gradient_is_caught(name):
    """The sum over one case's outputs is checked against E's sum over the whole batch."""
    steps = derivation_steps(get(name))
    first = steps.vjp.steps[0].after
    # only the first output of the case: the others depend on z_j as well
    k = sp.Symbol("k", integer=True, nonnegative=True)
    wrong = first.replace(lambda e: isinstance(e, sp.Sum),
                          lambda e: sp.Sum(e.function, (k, 0, 0)))
    with pytest.raises(StepError):
        check_chain(with_step(steps.vjp, 0, after=wrong))


def test_the_quotient_step_is_checked_in_the_order_it_is_printed():
    steps = derivation_steps(get("softmax"))
    quotient = steps.jacobian.steps[1]
    assert quotient.rule == "quotient"
    # swapping the two terms (the sign a reader thought lost) is caught
    factors = quotient.after.args
    terms = factors[1]
    swapped = type(quotient.after)(factors[0], type(terms)(-terms.args[1], -terms.args[0]))
    with pytest.raises(StepError):
        check_chain(with_step(steps.jacobian, 1, after=swapped))


# --- they compile ---------------------------------------------------------------------------


@needs_tex
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ALL)
def test_the_documents_compile_with_nothing_shrunk_or_overfull(name, lang, fmt, tmp_path):
    (tmp_path / "doc.tex").write_text(_document(name, lang, fmt))
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                   cwd=tmp_path, capture_output=True, timeout=300, check=False)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert (tmp_path / "doc.pdf").exists(), log[-2000:]
    assert re.findall(r"derive-fit: ([0-9.]+)", log) == []
    assert "Overfull \\hbox" not in log


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name, jacobian", [
    ("softmax", SM + r"_{k} \left(\delta_{kj} - " + SM + "_{j}\\right)"),
    ("log_softmax", r"\delta_{kj} - " + SM + "_{j}")])
def test_the_jacobian_is_quoted_where_it_is_substituted(name, jacobian, lang, fmt):
    text = _document(name, lang, fmt)
    # On the slides the Jacobian is on another frame: "found above" pointed at nothing there.
    said = {"pt": "Substituímos a jacobiana, $", "en": "We substitute the Jacobian, $"}[lang]
    sentence = text[text.index(said):].split("\n", 1)[0]
    assert r"}{\partial {z}_{j}} = " + jacobian + "$:" in sentence
    body = text[text.index("\\begin{document}"):]
    assert "acima" not in body and "above" not in body
