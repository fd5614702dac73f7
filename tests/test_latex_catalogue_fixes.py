"""Catalogue documents read as a student reads them (issue 13, the catalogue's pages).

Each test pins one defect found by looking at the rendered pages, in pt and en: a
convolution's index bounds read as one range per index, no internal word or identifier
in the text, a definition that is the lecture's (not the program's overflow-safe
spelling), a boxed result that is the plain derivative, and formulas that print at full
size whenever they fit the line.
"""

from __future__ import annotations

import re
from functools import cache

import pytest
import sympy as sp

from derive import registry
from derive.latex.printer import WORDS, DerivePrinter
from derive.latex.render import language
from derive.pipeline import document_for

LANGS = ("pt", "en")
FORMATS = ("article", "beamer", "markdown")


@cache
def _document(name: str, lang: str, fmt: str = "article") -> str:
    return document_for(name, lang=lang, fmt=fmt).text


def _printer(lang: str = "en") -> DerivePrinter:
    words = language(lang).words
    return DerivePrinter({"words": {w: words[w] for w in WORDS}})


# --- index ranges -------------------------------------------------------------------------


def test_two_bounds_on_one_index_print_as_one_range():
    r, h, u, w, S, KH, KW = sp.symbols("r h u w S k_h k_w", integer=True)
    x = sp.Symbol("x", real=True)
    p = _printer()
    # A window S h ≤ r ≤ S h + k_h − 1, whatever side SymPy keeps each bound on.
    window = sp.And(KH >= -S * h + r + 1, S * h - r <= 0)
    assert p.doprint(window) == r"S h \leq r \leq S h + k_{h} - 1"
    both = sp.And(KH >= -S * h + r + 1, KW >= -S * w + u + 1, S * h - r <= 0, S * w - u <= 0)
    tex = p.doprint(both)
    assert r"S h \leq r \leq S h + k_{h} - 1" in tex and r"S w \leq u \leq S w + k_{w} - 1" in tex
    assert r"\geq" not in tex
    # Numeric bounds as before; a condition with no partner stays as it is.
    assert p.doprint(sp.And(x > -3, x <= 3)) == r"-3 < x \leq 3"
    apart = p.doprint(sp.And(x > 0, r > 0))
    assert "x > 0" in apart and "r > 0" in apart and r"\text{ and }" in apart


#: The layers whose gradients hold a window's bounds, and the range each must show:
#: counted from 1 as in the notes, the offset inside the window (issue 13 item 7).
RANGES = {
    "conv2d": (r"1 \leq r - S \left(h - 1\right) \leq k_{h}",
               r"1 \leq u - S \left(w - 1\right) \leq k_{w}"),
    "avg_pool2d": (r"1 \leq r - S \left(h - 1\right) \leq k",
                   r"1 \leq u - S \left(w - 1\right) \leq k"),
    "conv1d": (r"1 \leq r - S \left(h - 1\right) \leq k",),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", sorted(RANGES))
def test_window_bounds_read_as_one_chained_range(name, lang, fmt):
    tex = _document(name, lang, fmt)
    for chained in RANGES[name]:
        assert chained in tex, (name, chained)
    # No bound left alone: no "k_h ≥ 1 + r − S h", no "S h − r ≤ 0".
    assert r"\geq" not in tex and r"- r \leq 0" not in tex and "KL" not in tex


# --- words ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_losses_and_vector_functions_speak_to_a_student(lang, fmt):
    ops = registry.all_ops("loss") + registry.all_ops("vector")
    assert ops
    for op in ops:
        tex = _document(op.name, lang, fmt)
        assert not re.search(r"\bkernels?\b", tex, re.I), (op.name, fmt)
        assert r"\texttt" not in tex, (op.name, fmt)


# --- the plain derivative boxed, the program's form mentioned ---------------------------


@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("lang", LANGS)
def test_bent_identity_boxes_the_plain_derivative(lang, fmt):
    tex = _document("bent_identity", lang, fmt)
    boxed = re.findall(r"\\boxed\{(.*)\}", tex)
    assert boxed
    assert all(r"\begin{cases}" not in b for b in boxed), boxed
    assert any(r"1 + \frac{x}{2 \sqrt{1 + x^{2}}}" in b for b in boxed), boxed
    # The branches the program computes are still on the page, after the result.
    said = {"pt": "O programa calcula", "en": "The program computes"}[lang]
    assert said in tex and tex.index(said) < tex.index(r"\begin{cases}")
