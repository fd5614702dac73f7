"""Loss documents read as a student reads them (issue 13; the losses reader's findings).

Each test pins one defect found on the rendered pages, in pt and en, article and
beamer: the result is printed once, boxed, for the output k the derivation was taken
for; results read in ŷ − y (sgn(ŷ − y), tanh(ŷ − y)); the slides' left-hand side drops
the case index when the right-hand side does; the English names the loss before "loss";
log-cosh mentions no logits; and the bracket [k = t] is defined where it is used.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest

from derive import registry
from derive.latex.compile import compile_pdf
from derive.pipeline import document_for
from derive.spec import Loss

LANGS = ("pt", "en")
LOSSES = tuple(op.name for op in registry.all_ops() if isinstance(op, Loss))
PRED_MINUS_TARGET = r"({\hat{y}}_{k} - {y}_{k})"


@cache
def _document(name: str, lang: str, fmt: str = "article") -> str:
    return document_for(name, lang=lang, fmt=fmt).text


def _boxed(text: str) -> list[str]:
    return re.findall(r"\\boxed\{(.*)\}", text)


def _fits(text: str) -> list[str]:
    """The formula of each \\deriveFit (or the unbroken one of a \\deriveFitBroken)."""
    out = []
    for m in re.finditer(r"\\deriveFit(?:Broken)?\[[^]]*\]\{", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end():i - 1])
    return out


def _gradient_section(text: str) -> str:
    """The second section (definition, gradient, program)."""
    return text.split("\\section{")[2]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", LOSSES)
def test_the_result_is_printed_once_boxed_for_output_k(name, lang):
    text = _document(name, lang)
    section = _gradient_section(text)
    first = _boxed(section)[0]
    lhs, rhs = first.split(" = ", 1)
    # Not also the last line of the derivation just above the box.
    assert "{" + rhs + "}\n\\end{align*}" not in section
    assert section.count("\\boxed") == (2 if "[k = t]" in section else 1)
    assert lhs.endswith("_{k}}") and "_{j}" not in lhs
    for words in ("Voltando ao índice", "Returning to the index", "voltar ao índice",
                  "return to the index"):
        assert words not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", LOSSES)
def test_slides_have_one_result_slide_and_no_case_index_once_dropped(name, lang):
    text = _document(name, lang, "beamer")
    frames = text.split("\\begin{frame}")
    payloads = _fits(text)
    boxed = [p[len("\\boxed{"):-1] for p in payloads if p.startswith("\\boxed{")]
    assert boxed and "_{k}}" in boxed[0].split(" = ")[0]
    # The box is the only place with the final formula: no slide before repeats it.
    assert boxed[0] not in payloads
    # Once a right-hand side has dropped the case index c, so has its left-hand side.
    for frame in frames:
        for line in _fits(frame):
            if "_{c," in line.split(" = ", 1)[0] and " = " in line:
                assert "_{c," in line.split(" = ", 1)[1], line


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name, function", [("mae", r"\operatorname{sgn}"),
                                            ("huber", r"\delta \operatorname{sgn}"),
                                            ("log_cosh", r"\tanh")])
def test_results_read_in_prediction_minus_target(name, function, lang, fmt):
    text = _document(name, lang, fmt)
    boxed = " ".join(_boxed(text))
    assert function + PRED_MINUS_TARGET in boxed
    assert r"- \operatorname{sgn}({y}" not in boxed and r"- \tanh({y}" not in boxed
    # The error u = ŷ − y is named before the rules: no line turns f(y − ŷ) around.
    assert {"pt": "função ímpar", "en": "odd function"}[lang] not in text
    # Nor does an even function print its argument the other way: |ŷ − y|, cosh(ŷ − y).
    assert r"{y}_{k} - {\hat{y}}_{k}" not in text and r"{y}_{n,j} - {\hat{y}}_{n,j}" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_program_gradient_reads_in_prediction_minus_target(lang):
    text = _document("mae", lang)
    program = text[text.index("\\ell_n"):]
    assert r"\operatorname{sgn}({\hat{y}}_{n,j} - {y}_{n,j})" in program


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_log_cosh_mentions_no_logits(lang, fmt):
    text = _document("log_cosh", lang, fmt)
    assert "logit" not in text.lower()
    # A loss on logits still says so.
    assert "logit" in _document("binary_cross_entropy_with_logits", lang, fmt)


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name", LOSSES)
def test_english_names_the_loss_before_the_word_loss(name, fmt):
    text = _document(name, "en", fmt)
    # "The MSE loss", but "the loss E" / "the loss L": a letter is no name ("The L loss").
    assert "The loss $\\operatorname" not in text
    assert re.search(r"The (\$[^$]+\$ loss|loss \$[A-Z]\$) of a batch", text)
    assert not re.search(r"The \$[A-Z]\$ loss", text)
    assert "PyTorch's reduction" not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name", ["sparse_categorical_cross_entropy",
                                  "softmax_cross_entropy"])
def test_the_bracket_k_equals_t_is_defined_where_it_is_used(name, lang, fmt):
    text = _document(name, lang, fmt)
    assert "[j = t]" not in text
    defined = {"pt": "Escrevendo $[k = t]$ para esse número ($1$ se $k = t$, $0$ caso "
                     "contrário)",
               "en": "Writing $[k = t]$ for that number ($1$ if $k = t$, $0$ otherwise)"}
    # Defined in words before the formula that uses it.
    assert text.index(defined[lang]) < text.index(r"\left[k = t\right]")


SUBSTITUTE_BACK = {"pt": "substituímos de volta", "en": "we substitute back"}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_log_cosh_is_defined_as_ln_cosh_and_reaches_tanh_by_the_identity(lang, fmt):
    text = _document("log_cosh", lang, fmt)
    definition = _fits(text)[0]
    # The textbook definition, not the stable rewrite (which is the program's business).
    assert r"\ln \cosh(" in definition and "softplus" not in definition
    # ln cosh(·) with the function's own parentheses only, and in ŷ − y as declared.
    assert r"\ln(\cosh" not in text and r"\cosh({\hat{y}}_{n,j} - {y}_{n,j})" in definition
    # 1/cosh(ŷ − y) is a denominator, never cosh^{-1}(…), which reads as the inverse.
    assert r"\cosh^{-1}" not in text
    assert r"}{K N \cosh({\hat{y}}_{k} - {y}_{k})}" in text
    assert r"\operatorname{log\,cosh}" in text and r"\operatorname{logcosh}" not in text
    # One inner function per composition, all substituted back in one sentence.
    assert text.count(SUBSTITUTE_BACK[lang]) == 1
    assert "z = " not in text
    # sinh/cosh = tanh is a displayed identity of its own.
    identity = {"pt": "Usamos a identidade", "en": "We use the identity"}[lang]
    assert (identity + r" $\displaystyle \frac{\sinh(a)}{\cosh(a)} = \tanh(a)$") in text
    # The program's gradient is the boxed tanh: no σ left unexplained.
    program = text[text.index(r"\ell_n"):]
    assert r"\sigma" not in program and r"\tanh({\hat{y}}_{n,j} - {y}_{n,j})" in program


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_huber_uses_one_inner_function_and_reads_error_below_delta(lang, fmt):
    text = _document("huber", lang, fmt)
    assert r"u = {\hat{y}}_{k} - {y}_{k}" in text and "v = " not in text
    assert r"\delta >" not in text and r"\right| < \delta" in text
    # The cases block is a factor after 1/(KN), never a numerator over KN.
    assert r"\frac{1}{K N} \begin{cases}" in text
    assert not re.search(r"\\frac\{\\begin\{cases\}", text)
    assert text.count(SUBSTITUTE_BACK[lang]) == 1


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name", ["sse_half", "huber"])
def test_the_half_cancels_the_two_of_the_power_rule_aloud(name, lang, fmt):
    text = _document(name, lang, fmt)
    said = {"pt": "e os fatores se cancelam", "en": "and the factors cancel"}[lang]
    assert said + r", $\frac{1}{2} \cdot 2 u = u$" in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_bce_program_says_what_log1p_does_without_reusing_u(lang, fmt):
    text = _document("binary_cross_entropy", lang, fmt)
    program = text[text.index(r"\ell_n"):]
    assert r"\operatorname{log1p}(-u)" not in program and r"\ln(1 - u)" not in program
    assert r"\ln(1 + x)" in program and r"\ln(1 - {\hat{y}}_{n,j})" in program
    # The printed ℓ is the definition: the program adds safeguards, it does not rearrange.
    for words in ("reorganizada para ser numericamente", "rearranged to be numerically"):
        assert words not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_bce_with_logits_shows_the_cancellation_and_sigma(lang, fmt):
    text = _document("binary_cross_entropy_with_logits", lang, fmt)
    expanded = {"pt": "Expandimos os produtos", "en": "We multiply out the products"}[lang]
    cancel = {"pt": "Os termos opostos se cancelam", "en": "The opposite terms cancel"}[lang]
    assert text.index(expanded) < text.index(cancel)
    # The identities at the logit, not at a u that later names the inner function.
    assert r"\ln(1 + e^{u})" not in text and r"\ln(\sigma(u))" not in text
    assert (r"\frac{e^{{z}_{k}}}{1 + e^{{z}_{k}}} = \frac{1}{1 + e^{- {z}_{k}}} = "
            r"\sigma({z}_{k})") in text


def test_sparse_title_says_on_probabilities_in_both_languages():
    for lang, words in (("pt", "(sobre probabilidades)"), ("en", "(on probabilities)")):
        assert words in _document("sparse_categorical_cross_entropy", lang).split(
            "\\begin{document}")[0]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name", ["categorical_cross_entropy",
                                  "sparse_categorical_cross_entropy"])
def test_cross_entropy_writes_the_target_before_the_logarithm(name, lang, fmt):
    text = _document(name, lang, fmt)
    assert r"\ln({\hat{y}}_{k}) {y}_{k}" not in text
    assert r"\frac{{y}_{k} \ln({\hat{y}}_{k})}{N}" in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_sparse_cross_entropy_is_defined_with_the_integer_label(lang, fmt):
    text = _document("sparse_categorical_cross_entropy", lang, fmt)
    definition = _fits(text)[0]
    assert r"\ln({\hat{y}}_{n,{t}_{n}})" in definition and "{y}_{n,j}" not in definition
    # The one-hot form the derivation uses is said to be the same function, in words.
    said = {"pt": "igual a $1$ se $j = t_{n}$ e a $0$ caso contrário",
            "en": "equal to $1$ if $j = t_{n}$ and to $0$ otherwise"}[lang]
    assert said in text and text.index(said) < text.index(r"\frac{\partial}")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_log_cosh_program_explains_its_stable_rewrite(lang, fmt):
    text = _document("log_cosh", lang, fmt)
    program = text[text.index(r"\ell_n"):]
    assert r"|d| + \ln(1 + e^{-2|d|}) - \ln 2" in program
    assert r"\cosh d = e^{|d|}(1 + e^{-2|d|})/2" in program
    # A loss without ln cosh says nothing of it.
    assert r"\ln\cosh d" not in _document("mae", lang, fmt)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_bce_keeps_one_order_and_one_sign_through_the_derivation(lang, fmt):
    text = _document("binary_cross_entropy", lang, fmt)
    y, one_minus = "{y}_{k}", r"1 - {y}_{k}"
    lines = [line for line in _fits(text) if one_minus in line and "_{c," not in line]
    assert len(lines) >= 5
    for line in lines:
        # y's term first, then (1 − y)'s, on every line; (1 − y) never turned into −(y − 1).
        first_y = line.replace(one_minus, "").index(y)
        assert first_y < line.index(one_minus), line
        assert r"{y}_{k} - 1" not in line
    # The minus sign stays in front from the rules to the common denominator; the
    # sentence before the result says where it goes.
    assert sum(line.split(" = ", 1)[-1].lstrip().startswith("-") for line in lines) >= 4
    said = {"pt": "o sinal de menos da frente inverte a diferença",
            "en": "the minus sign in front reverses the difference"}[lang]
    assert said in text and r"-\left({y}_{k} - {\hat{y}}_{k}\right)" in text
    # The definition and the program's ℓ_n in the same order: y ln ŷ, then (1 − y) ln(1 − ŷ).
    definition, program = _fits(text)[0], text[text.index(r"\ell_n"):]
    assert r"\left({y}_{n,j} \ln {\hat{y}}_{n,j}" in definition or \
        r"\left({y}_{n,j} \ln({\hat{y}}_{n,j})" in definition
    assert program.index(r"{y}_{n,j} \ln") < program.index(r"\left(1 - {y}_{n,j}\right)")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name", ["sparse_categorical_cross_entropy",
                                  "softmax_cross_entropy"])
def test_the_programs_bracket_is_said_before_its_gradient(name, lang, fmt):
    text = _document(name, lang, fmt)
    program = text[text.rindex(r"\ell_n"):]
    said = {"pt": r"$[j = t_n]$ vale $1$ se $j = t_n$ e $0$ caso contrário",
            "en": r"$[j = t_n]$ is $1$ if $j = t_n$ and $0$ otherwise"}[lang]
    assert said in text
    assert text.index(said) < text.index(r"\left[j = {t}_{n}\right]")
    assert r"\left[j = {t}_{n}\right]" in program


@pytest.mark.parametrize("lang", LANGS)
def test_log_cosh_slides_point_to_no_earlier_slide(lang):
    text = _document("log_cosh", lang, "beamer")
    bullet = text[text.index(r"$\ln\cosh d$"):]
    bullet = bullet[:bullet.index("\\item")] if "\\item" in bullet else bullet
    assert {"pt": "acima", "en": "above"}[lang] not in bullet
    assert r"d = \hat{y}_{n,j} - y_{n,j}" in bullet


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["binary_cross_entropy", "categorical_cross_entropy"])
def test_an_opened_sum_keeps_the_minus_sign_in_front(name, lang):
    text = _document(name, lang)
    opened = next(line for line in _fits(text) if r"\cdots" in line)
    # −(1/KN)((y₁ ln ŷ₁ + …) + ⋯), as the line before: no term opens with its own minus.
    assert opened.split(r"\left[", 1)[1].startswith(r"-\frac{1}{")
    assert r"\left(- " not in opened and r"+ \cdots - " not in opened


@pytest.mark.parametrize("lang", LANGS)
def test_bce_on_logits_keeps_the_order_of_its_definition(lang):
    text = _document("binary_cross_entropy_with_logits", lang)
    definition, logs = _fits(text)[0], _fits(text)[2]
    # y ln σ(z) first, then (1 − y) ln(1 − σ(z)); the next line in the same order.
    assert definition.index(r"{y}_{n,j} \ln \sigma") < definition.index(r"\left(1 - {y}_{n,j}")
    assert logs.index(r"{y}_{n,j} \left({z}_{n,j}") < logs.index(r"\left(1 - {y}_{n,j}")


CONSTANT_FACTOR = {"pt": "Um fator constante sai da derivada",
                   "en": "A constant factor comes out of the derivative"}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_bce_takes_its_constant_factors_out_in_one_step(lang, fmt):
    text = _document("binary_cross_entropy", lang, fmt)
    # −1/(KN), y_k and 1 − y_k come out together, before the logarithms' rules: said once,
    # not again between the two logarithms.
    assert text.count(CONSTANT_FACTOR[lang]) == 1
    after = next(line for line in _fits(text) if r"\cdot \frac{\partial}" in line)
    assert r"{y}_{k} \cdot \frac{\partial}{\partial {\hat{y}}_{k}} \ln({\hat{y}}_{k})" in after
    assert (r"\left(1 - {y}_{k}\right) \cdot \frac{\partial}{\partial {\hat{y}}_{k}} "
            r"\ln(1 - {\hat{y}}_{k})") in after


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["categorical_cross_entropy", "sparse_categorical_cross_entropy"])
def test_the_kept_term_is_quoted_as_the_opened_sum_shows_it(name, lang):
    text = _document(name, lang)
    opened = next(line for line in _fits(text) if r"\cdots" in line)
    # The line shows −(1/N)(… + y_k ln ŷ_k + …): the sentence quotes y_k ln ŷ_k, no minus.
    assert r"+ {y}_{k} \ln({\hat{y}}_{k}) +" in opened
    sentence = text[text.index(opened):].split("\\intertext{", 1)[1].split("}\n", 1)[0]
    assert r"${y}_{k} \ln({\hat{y}}_{k})$" in sentence and r"$-{y}_{k}" not in sentence


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_the_reversed_difference_is_never_broken_at_the_line_end(lang, fmt):
    text = _document("binary_cross_entropy", lang, fmt)
    assert r"\mbox{$-\left({y}_{k} - {\hat{y}}_{k}\right) = {\hat{y}}_{k} - {y}_{k}$}" in text


@pytest.mark.parametrize("lang", LANGS)
def test_a_default_is_said_as_a_lecturer_says_it(lang):
    text = _document("huber", lang)
    assert {"pt": r"Por padrão, $\delta = 1$.", "en": r"By default, $\delta = 1$."}[lang] in text
    assert "default value" not in text and "valor padrão" not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_a_chain_rule_inside_another_differentiates_by_the_inner_function(lang, fmt):
    text = _document("log_cosh", lang, fmt)
    # v = cosh(u) is differentiated with respect to u, not to the prediction.
    assert (r"$\frac{\partial}{\partial u} F({v}) = \frac{dF}{dv} \cdot "
            r"\frac{\partial v}{\partial u}$") in text
    assert r"\frac{\partial v}{\partial {\hat{y}}_{k}}" not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["softmax_cross_entropy"])
def test_the_programs_second_form_opens_a_sentence(name, lang):
    text = _document(name, lang)
    # After "... = (ŷ − y)/N." the integer-label form starts a new sentence, capitalised
    # (in a block of its own, after the first form's).
    after = "\\end{equation*}\n\\end{minipage}\n\\noindent\\begin{minipage}{\\linewidth}\n"
    opening = after + {"pt": "Com rótulos inteiros $t_n$", "en": "With integer labels $t_n$"}[lang]
    assert opening in text
    assert {"pt": "\ncom rótulos inteiros", "en": "\nwith integer labels"}[lang] not in text


@pytest.mark.parametrize("lang", LANGS)
def test_the_constant_slope_chain_rule_is_never_broken_at_its_equals_sign(lang):
    text = _document("binary_cross_entropy", lang)
    # Set in display style inside the sentence, it broke after its '=' at the line end;
    # it is displayed now (as the quoted identities are), where no line can break it.
    assert (r"\[ \frac{\partial}{\partial {\hat{y}}_{k}} "
            r"\ln(1 - {\hat{y}}_{k}) = ") in text


def test_names_are_ordered_outer_derivative_first():
    import sympy as sp

    from derive.calculus.steps.records import outer_first

    u, v, w, x = sp.symbols("u v w x", real=True)
    # v inside u's derivative by x (u = h(k(x)), v = k(x)): issue order.
    assert outer_first([(u, sp.exp(sp.sin(x))), (v, sp.sin(x))]) == (u, v)
    # v = cosh(u) takes d/du ln cosh(u) apart: v's derivative is the outer one; w = g(v)
    # inside it again goes before v.
    assert outer_first([(u, x - 1), (v, sp.cosh(u)), (w, sp.sinh(v))]) == (w, v, u)
    # Names of other things (the function f(x)) are not inner functions.
    assert outer_first([(sp.Function("f")(x), x**2), (u, x)]) == (u,)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_softmax_ce_keeps_the_target_in_front_and_says_the_sign(lang, fmt):
    text = _document("softmax_cross_entropy", lang, fmt)
    # y_j (z_j − ln Σ), the target in front as in the definition's y_j ln ŷ_j.
    assert r"{y}_{n,j} \left({z}_{n,j} - \ln" in text
    assert r"{y}_{c,j} \left({z}_{c,j} - \ln" in text
    assert r"\right)\right) {y}_{" not in text
    # The next line has the minus sign distributed, (ln Σ Σy − Σ yz)/N: the sentence says so.
    said = {"pt": "o sinal de menos na frente troca o sinal dos dois termos, $-(a - b) = b - a$",
            "en": "the minus sign in front changes the sign of both terms, $-(a - b) = b - a$"}
    assert said[lang] in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_softplus_is_defined_where_the_program_first_uses_it(lang, fmt):
    text = _document("binary_cross_entropy_with_logits", lang, fmt)
    body = text[text.index("\\begin{document}"):]
    first = body.index(r"\operatorname{softplus}")
    # The first softplus is in ℓ_n; the sentence right after it defines it (the stability
    # slide, which defined it before, comes later, on a frame of its own).
    definition = {"pt": r"onde $\operatorname{softplus}(z) = \ln(1 + e^{z})$, e o custo",
                  "en": r"where $\operatorname{softplus}(z) = \ln(1 + e^{z})$, and the loss"}[lang]
    assert body.index(r"\ell_n") < first < body.index(definition) < body.index(r"\item")
    assert body.count(r"\operatorname{softplus}(z) = \ln(1 + e^{z})") == 1


needs_pdf_tools = pytest.mark.skipif(
    shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
    reason="pdflatex or pdftotext not installed")


def _pages(name: str, lang: str) -> list[str]:
    """The article compiled, as the text of each page."""
    with tempfile.TemporaryDirectory(prefix="derive-test-") as tmp:
        pdf = compile_pdf(_document(name, lang), Path(tmp) / "doc.pdf")
        text = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(pdf), "-"],
                              capture_output=True, text=True, check=True, timeout=60).stdout
    return [" ".join(page.split()) for page in text.split("\f") if page.strip()]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", LOSSES)
def test_each_form_of_the_program_is_one_block(name, lang):
    text = _document(name, lang)
    section = text.split("\\section{")[3]
    blocks = re.findall(r"\\begin\{minipage\}(.*?)\\end\{minipage\}", section, re.S)
    # ℓ_n, the total and the gradient of each form together; the first with the opening.
    assert blocks and len(blocks) == section.count(r"\ell_n = ")
    opening = {"pt": "O programa gerado calcula", "en": "The generated program computes"}[lang]
    assert opening in blocks[0]
    for block in blocks:
        assert r"\ell_n = " in block and block.count("\\begin{equation*}") == 2


@needs_pdf_tools
@pytest.mark.parametrize("lang", LANGS)
def test_the_programs_gradient_is_never_alone_on_a_last_page(lang):
    # Huber pt printed ℓ_n at the foot of page 2 and its gradient alone on page 3.
    heading = {"pt": "O que o programa calcula", "en": "What the program computes"}[lang]
    total = {"pt": "o gradiente que ele devolve", "en": "the gradient it returns"}[lang]
    pages = _pages("huber", lang)
    [where] = [k for k, page in enumerate(pages) if heading in page]
    assert total in pages[where] and r"sgn" in pages[where].split(total)[1]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_the_outer_derivative_comes_first_in_a_nested_chain(lang, fmt):
    text = _document("log_cosh", lang, fmt)
    # f′(g(u)) · g′(u) as the notes write it: d/dv ln(v) before d/du cosh(u) (v = cosh u),
    # and the rules are applied in that order, left to right.
    outer, inner = r"\frac{\partial}{\partial v} \ln(v)", r"\frac{\partial}{\partial u} \cosh(u)"
    assert f"{outer} \\cdot {inner}" in text
    assert f"{inner} \\cdot {outer}" not in text
    assert text.index(r"\ln(v) = \frac{1}{v}") < text.index(r"\cosh(u) = \sinh(u)")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("name", ["mse", "mae", "log_cosh", "softmax_cross_entropy"])
def test_the_programs_gradient_is_the_boxed_result_at_n_j(name, lang, fmt):
    text = _document(name, lang, fmt)
    boxed = _boxed(text)[0] if fmt == "article" else next(
        p[len("\\boxed{"):-1] for p in _fits(text) if p.startswith("\\boxed{"))
    rhs = boxed.split(" = ", 1)[1]
    # One form on the page: 2(ŷ − y)/(KN) in the box and in the program, not (2ŷ − 2y)/(KN).
    at_n_j = rhs.replace("_{k}", "_{n,j}")
    program = text[text.index(r"\ell_n"):]
    assert at_n_j in program
    assert r"2 {\hat{y}}_{n,j} - 2 {y}_{n,j}" not in program


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer", "markdown"))
def test_the_programs_row_writes_the_target_first_as_the_derivation(lang, fmt):
    text = _document("softmax_cross_entropy", lang, fmt)
    program = text[text.index(r"\ell_n"):]
    row = program[:program.index("\n")]
    # ℓ_n = −Σ_j y_{n,j} (z_{n,j} − ln Σ_i e^{z_{n,i}}), as the derivation's lines write it
    # (SymPy set the target last: −Σ_j (z_{n,j} − ln Σ) y_{n,j}).
    assert r"-\sum_{j=1}^{K} {y}_{n,j} \left({z}_{n,j} - \ln" in row
    assert r"\right) {y}_{n,j}" not in row


def test_an_element_is_written_before_the_sum_it_multiplies():
    import sympy as sp

    from derive.calculus.functions import Factors
    from derive.calculus.steps.loss import written

    y, z, yhat = (sp.IndexedBase(s, real=True) for s in ("y", "z", "yhat"))
    n, j = sp.symbols("n j", integer=True)
    a, b = z[n, j], sp.log(z[n, j + 1])
    assert written(-y[n, j] * (a - b), z) == -Factors(y[n, j], a - b)
    assert written(sp.Sum(3 * y[n, j] * (a - b), (j, 0, 2)), z) == sp.Sum(
        3 * Factors(y[n, j], a - b), (j, 0, 2))
    # Products with a function, or with no element, are the printer's to order.
    assert written(y[n, j] * sp.log(yhat[n, j]), yhat) == y[n, j] * sp.log(yhat[n, j])
    assert written(2 * (yhat[n, j] - y[n, j]), yhat) == 2 * (yhat[n, j] - y[n, j])
    assert written(y[n, j] * b * (a - b), z) == y[n, j] * b * (a - b)


def test_a_line_broken_after_a_sum_continues_with_its_summand_without_a_dot():
    from derive.latex.lines import aligned

    # Σ_{n} Σ_{j} at a line's end: the next line is the summand, not a second factor.
    broken = aligned([r"\frac{1}{K N} \sum_{n=1}^{N} \sum_{j=1}^{K}",
                      r"\begin{cases} a & b \end{cases}"])
    assert r"\\ &\quad \begin{cases}" in broken and r"\cdot" not in broken
    # Between two factors the dot stays.
    assert r"{}\cdot \frac{d}{dx}" in aligned([r"\frac{1}{K N}", r"\frac{d}{dx}"])


@pytest.mark.parametrize("lang", LANGS)
def test_huber_slides_never_set_a_dot_before_the_summand(lang):
    text = _document("huber", lang, "beamer")
    dot_after_sum = (r"\\sum_\{j=1\}\^\{K\}( \\vphantom\{[^}]*\}\{1\}\^\{1\}\})?"
                     r"( \\right\.)? \\\\ &(\\quad )+(\\left\. (\\vphantom\S* )?)?\{\}\\cdot")
    assert not re.search(dot_after_sum, text)
    assert r"\sum_{j=1}^{K} \\ &\quad \begin{cases}" in text
