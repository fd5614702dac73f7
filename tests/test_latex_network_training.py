"""A network's document shows what training adds to its gradients (issue 14).

A spec with a penalty, clipping or AdamW's decoupled decay gets a section that shows the
penalty term added to the loss, its derivative added to each weight's gradient and the
clipping step; a batch_norm layer gets a paragraph on what evaluation mode uses.
"""

import re
import shutil

import pytest
from conftest import spec_text, write_spec

from derive.latex.compile import compile_pdf
from derive.pipeline import document_for

LANGS = ("pt", "en")
needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
LAYERS = ['type = "dense"\nunits = 8\nactivation = "relu"',
          'type = "dense"\nunits = 10\nactivation = "softmax"']
HEADING = {"pt": "Regularização e limitação do gradiente", "en": "Regularisation and clipping"}


def document(tmp_path, train: str, lang: str, fmt: str = "article", layers=LAYERS) -> str:
    spec = write_spec(tmp_path, spec_text("reg_doc", layers, train=train))
    return document_for(str(spec), lang=lang, fmt=fmt).text


@pytest.mark.parametrize("lang", LANGS)
def test_l2_and_clip_norm_show_the_penalty_its_gradient_and_the_clipping(tmp_path, lang):
    tex = document(tmp_path, 'optimizer = "gd"\nl2 = 1e-4\nclip_norm = 0.5', lang)
    section = tex[tex.index(HEADING[lang]):]
    assert r"R(w) = \frac{1}{2} \lambda w^{2}" in section
    assert r"\frac{\partial E}{\partial w} + \lambda w" in section  # added to each gradient
    assert "$W^{(1)}$, $W^{(2)}$" in section and "b^{(1)}" not in section  # weights only
    assert r"\lVert g \rVert = \sqrt{\sum g^{2}}" in section
    # the tolerance after the norm it guards, as clip_grad_norm_ writes it, and said what it is
    assert r"g \leftarrow" in section and r"\frac{c}{\lVert g \rVert + 10^{-6}}" in section
    assert "10^{-6} +" not in section
    assert {"pt": "só evita uma divisão por zero", "en": "only avoids a division by zero"}[lang] \
        in section
    assert r"c = 0" in section  # its value, with the language's separator


@pytest.mark.parametrize("lang", LANGS)
def test_l1_clip_value_and_biases(tmp_path, lang):
    tex = document(tmp_path, 'optimizer = "gd"\nl1 = 0.001\nclip_value = 0.1\n'
                             'regularise_biases = true', lang, fmt="markdown")
    assert r"\lambda \operatorname{sgn}(w)" in tex
    assert r"\min\left(" in tex and r"\max\left(" in tex
    assert "$b^{(1)}$" in tex  # the biases are penalised too


@pytest.mark.parametrize("lang", LANGS)
def test_adamw_shows_its_decoupled_decay(tmp_path, lang):
    tex = document(tmp_path, 'optimizer = "adamw"\nweight_decay = 0.02', lang)
    assert r"$-\eta \lambda w$" in tex
    assert {"pt": r"\lambda = 0{,}02", "en": r"\lambda = 0.02"}[lang] in tex


@pytest.mark.parametrize("lang", LANGS)
def test_without_settings_there_is_no_such_section(tmp_path, lang):
    assert HEADING[lang] not in document(tmp_path, 'optimizer = "gd"', lang)


@pytest.mark.parametrize("lang", LANGS)
def test_batch_norm_says_what_evaluation_uses(tmp_path, lang):
    layers = [LAYERS[0], 'type = "batch_norm"\nmomentum = 0.2', LAYERS[1]]
    tex = document(tmp_path, 'optimizer = "gd"', lang, layers=layers)
    words = {"pt": ("modo de avaliação", "0{,}8"), "en": ("evaluation mode", "0.8")}[lang]
    assert r"\bar{\mu}" in tex and r"\bar{\sigma}^{2}" in tex
    assert words[0] in tex and rf"\bar{{\mu}} \leftarrow {words[1]}\," in tex


@pytest.mark.parametrize("lang", LANGS)
def test_batch_norm_in_a_network_prints_its_variance_and_every_gradient_it_reads(tmp_path, lang):
    layers = [LAYERS[0], 'type = "batch_norm"', LAYERS[1]]
    tex = document(tmp_path, 'optimizer = "gd"', lang, layers=layers)
    body = tex.split(r"\begin{document}", 1)[1]
    # the variance is (σ⁽²⁾_c)², not σ²⁽²⁾ (the layer's number colliding with the square)
    assert r"\left(\sigma^{(2)}_{c}\right)^{2} &=" in body
    assert r"{\sigma^{2}}^{(" not in body and r"\sigma^{2(" not in body
    # the input's gradient reads ∂E/∂x̂, ∂E/∂σ², ∂E/∂μ: each is given first, no d_mu on the page
    # (after a dense layer the arrays have no image axes: x⁽¹⁾_{n,c}, not x⁽¹⁾_{n,c,h,w})
    for wrt in (r"\hat{x}^{(2)}_{n,c}", r"\left(\sigma^{(2)}_{c}\right)^{2}",
                r"\mu^{(2)}_{c}"):
        given = body.index(rf"\frac{{\partial E}}{{\partial {wrt}}} &=")
        assert given < body.index(r"\frac{\partial E}{\partial x^{(1)}_{n,c}} &=")
    assert "d_{" not in body and r"{d_" not in body
    # the count m is this network's batch N, not an undefined m
    assert r"\frac{1}{m}" not in body and r"\frac{1}{N} \sum_{n=1}^{N}" in body
    # after a dense layer the map is 1 × 1: no sum of one term over h or w
    assert not re.search(r"\\sum_\{[hw]=1\}\^\{1\}", body)
    # ε after σ², as the layer's own document and the papers write it
    assert r"\sqrt{\left(\sigma^{(2)}_{c}\right)^{2} + 10^{-5}}" in body
    assert r"10^{-5} + \left(\sigma" not in body


@needs_tex
@pytest.mark.parametrize("fmt", ["article", "beamer"])
@pytest.mark.parametrize("lang", LANGS)
def test_the_documents_compile(tmp_path, lang, fmt):
    layers = [LAYERS[0], 'type = "batch_norm"', LAYERS[1]]
    tex = document(tmp_path, 'optimizer = "adamw"\nl2 = 1e-4\nl1 = 1e-5\nclip_norm = 1.0',
                   lang, fmt, layers)
    assert HEADING[lang] in tex
    assert compile_pdf(tex, tmp_path / "net.pdf").stat().st_size > 0
