"""The attention document (issue 15): derive latex attention --lang pt|en.

What the pages must show: the definition with the causal mask, the softmax Jacobian
∂P_ij'/∂s_ij = ([j = j'] − P_ij) P_ij' substituted inside the score gradient, the score
gradient P ⊙ (∂E/∂P − Σ_j' P ∂E/∂P) and the gradients of Q, K and V, in both languages
and formats, with the Portuguese words a Brazilian student reads (no identifiers).
"""

import pytest

from derive.cli import main

JACOBIAN = (r"\frac{\partial {P}_{n,i,j'}}{\partial {s}_{n,i,j}} = \left(\left[j = j'\right] "
            r"- {P}_{n,i,j}\right) {P}_{n,i,j'}")
SCORE = (r"\frac{\partial E}{\partial {s}_{n,i,j}} = {P}_{n,i,j} \frac{\partial E}"
         r"{\partial P_{n,i,j}} - {P}_{n,i,j} \sum_{j'=1}^{S} {P}_{n,i,j'} \frac{\partial E}"
         r"{\partial P_{n,i,j'}}")
GRADIENTS = (
    r"\frac{\partial E}{\partial {Q}_{n,i,d}} = \frac{1}{\sqrt{D}} \sum_{j=1}^{S} {K}_{n,j,d} "
    r"\frac{\partial E}{\partial s_{n,i,j}}",
    r"\frac{\partial E}{\partial {K}_{n,j,d}} = \frac{1}{\sqrt{D}} \sum_{i=1}^{L} {Q}_{n,i,d} "
    r"\frac{\partial E}{\partial s_{n,i,j}}",
    r"\frac{\partial E}{\partial {V}_{n,j,e}} = \sum_{i=1}^{L} {P}_{n,i,j} {\delta}_{n,i,e}",
)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attention_tex")
    texts = {}
    for lang in ("pt", "en"):
        for form in ("article", "beamer"):
            out = folder / f"{lang}_{form}.tex"
            assert main(["latex", "attention", "--lang", lang, "--format", form,
                         "-o", str(out)]) == 0
            texts[lang, form] = out.read_text()
    return texts


@pytest.mark.parametrize("lang", ["pt", "en"])
@pytest.mark.parametrize("form", ["article", "beamer"])
def test_the_score_gradient_holds_the_softmax_jacobian(pages, lang, form):
    text = pages[lang, form]
    assert JACOBIAN in text
    assert SCORE in text
    # The Jacobian is substituted before the sums are multiplied out and the δ kept.
    assert text.index(JACOBIAN) < text.index(SCORE)
    for gradient in GRADIENTS:
        assert gradient in text


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_the_definition_names_the_mask_and_the_log_sum_exp(pages, lang):
    text = pages[lang, "article"]
    assert r"{M}_{i,j} &= " in text and r"-\infty & \text{" in text
    assert r"e^{{s}_{n,i,j} - \ln \sum_{k=1}^{S} e^{{s}_{n,i,k}}}" in text
    assert r"\frac{1}{\sqrt{D}} \sum_{d=1}^{D} {K}_{n,j,d} {Q}_{n,i,d} + {M}_{i,j}" in text


def test_portuguese_reads_as_portuguese(pages):
    article = pages["pt", "article"]
    assert r"\title{Atenção por produto escalar escalonado" in article
    assert "jacobiana da softmax" in article
    assert "a máscara causal $c$: com $c = 1$ a consulta $i$ vê apenas as chaves" in article
    assert "Distribuímos o produto; o fator que não depende de $j'$ sai da segunda soma" in article
    for internal in ("attention", "causal=", "lse(", "Jacobian", "texttt"):
        assert internal not in article.split(r"\begin{document}")[1], internal


def test_english_states_the_rules(pages):
    article = pages["en", "article"]
    assert "the softmax Jacobian" in article
    assert "the causal mask $c$: with $c = 1$ query $i$ sees only the keys $j \\le i$" in article
    assert "the factor that does not depend on $j'$ comes out" in article
