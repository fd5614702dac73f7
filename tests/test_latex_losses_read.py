"""Loss documents read as a student reads them (issue 13; the losses reader's findings).

Each test pins one defect found on the rendered pages, in pt and en, article and
beamer: the result is printed once, boxed, for the output k the derivation was taken
for; results read in ŷ − y (sgn(ŷ − y), tanh(ŷ − y)); the slides' left-hand side drops
the case index when the right-hand side does; the English names the loss before "loss";
log-cosh mentions no logits; and the bracket [k = t] is defined where it is used.
"""

from __future__ import annotations

import re
from functools import cache

import pytest

from derive import registry
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
    payloads = re.findall(r"\\deriveFit\[[^]]*\]\{(.*)\}", text)
    boxed = [p[len("\\boxed{"):-1] for p in payloads if p.startswith("\\boxed{")]
    assert boxed and "_{k}}" in boxed[0].split(" = ")[0]
    # The box is the only place with the final formula: no slide before repeats it.
    assert boxed[0] not in payloads
    # Once a right-hand side has dropped the case index c, so has its left-hand side.
    for frame in frames:
        for line in re.findall(r"\\deriveFit\[[^]]*\]\{(.*)\}", frame):
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
    # The step says why: the function is odd.
    assert {"pt": "função ímpar", "en": "odd function"}[lang] in text


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
    assert "The loss $" not in text
    assert re.search(r"The \$[^$]+\$ loss of a batch", text)
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
