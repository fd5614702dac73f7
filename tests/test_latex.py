"""LaTeX derivations: printer strings, content, determinism, the CLI, and that every
document of the catalogue compiles with pdflatex and states its results."""

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import sympy as sp

from derive.calculus.derivation import derive_activation
from derive.calculus.functions import sigmoid, softplus
from derive.calculus.steps import RULES
from derive.calculus.verify import evaluate
from derive.cli import main
from derive.latex import compile_pdf, render
from derive.latex.compile import LatexError
from derive.latex.context import document_view
from derive.latex.facts import activation_facts
from derive.latex.numeric import compile_numeric
from derive.latex.printer import WORDS, DerivePrinter, format_number
from derive.latex.render import environment, language
from derive.registry import all_ops, get
from derive.spec import x

ACTIVATIONS = all_ops("activation")
IDS = [op.name for op in ACTIVATIONS]
LANGS = ("pt", "en")
COMPILED = ("article", "beamer")
HAVE_TEX = shutil.which("pdflatex") is not None and shutil.which("pdftotext") is not None
needs_tex = pytest.mark.skipif(not HAVE_TEX, reason="pdflatex/pdftotext not installed")

#: Phrases a document must contain for each rule its derivation uses.
RULE_PHRASES = {
    "chain": {"pt": "regra da cadeia", "en": "chain rule"},
    "quotient": {"pt": "regra do quociente", "en": "quotient rule"},
    "product": {"pt": "regra do produto", "en": "product rule"},
    "sum": {"pt": "regra da soma", "en": "sum rule"},
    "piecewise": {"pt": "ramo a ramo", "en": "branch by branch"},
}


def printer(lang="en", **settings):
    words = language(lang).words
    return DerivePrinter({"words": {w: words[w] for w in WORDS},
                          "separator": language(lang).separator, **settings})


# --- the printer ------------------------------------------------------------------------


def test_printer_exact_strings():
    p = printer(symbols={"alpha": r"\alpha"}, functions={"f": r"\operatorname{ReLU}"})
    lam, theta = sp.Symbol("lambda_", positive=True), sp.Symbol("theta", real=True)
    assert p.doprint(lam * x) == r"\lambda x"
    assert p.doprint(theta) == r"\theta"
    # σ(1 − σ), as the notes write it (SymPy's order is (1 − σ) σ).
    assert p.doprint(sigmoid(x) * (1 - sigmoid(x))) == r"\sigma(x) \left(1 - \sigma(x)\right)"
    assert p.doprint(softplus(x)) == r"\operatorname{softplus}(x)"
    assert p.doprint(1 - sp.tanh(x) ** 2) == r"1 - \tanh^{2}(x)"
    assert p.doprint(sp.Function("f")(x)) == r"\operatorname{ReLU}(x)"
    assert p.doprint(sp.Derivative(sp.exp(-x), x, evaluate=False)) == r"\frac{d}{dx} e^{- x}"
    assert p.doprint(sp.Derivative(1 + x**2, x, evaluate=False)) == \
        r"\frac{d}{dx}\left[1 + x^{2}\right]"
    relu = sp.Piecewise((x, x > 0), (0, True))
    assert p.doprint(relu) == \
        r"\begin{cases} x & \text{if }x > 0 \\ 0 & \text{otherwise} \end{cases}"
    assert printer("pt").doprint(relu) == \
        r"\begin{cases} x & \text{se }x > 0 \\ 0 & \text{caso contrário} \end{cases}"
    assert p.doprint(sp.Or(x >= 3, x <= -3)) == r"x \leq -3 \text{ or } x \geq 3"
    assert p.doprint(sp.And(x > -3, x < 3)) == r"-3 < x < 3"
    assert p.doprint(sp.log(1 + sp.exp(x))) == r"\ln(1 + e^{x})"


def test_printer_reads_chain_rule_products_outer_derivative_first():
    u = sp.Symbol("u", real=True)
    expr = -sp.Derivative(sp.exp(u), u, evaluate=False) * sp.Derivative(-x, x, evaluate=False)
    assert printer().doprint(expr) == r"-\frac{d}{du} e^{u} \cdot \frac{d}{dx}\left[- x\right]"


def test_partial_derivatives_for_parameters():
    alpha = sp.Symbol("alpha", real=True)
    p = printer(partial=True, symbols={"alpha": r"\alpha"})
    assert p.doprint(sp.Derivative(alpha * x, alpha, evaluate=False)) == \
        r"\frac{\partial}{\partial \alpha}\left[\alpha x\right]"


def test_printer_never_prints_dirac_delta():
    with pytest.raises(ValueError, match="DiracDelta"):
        printer().doprint(sp.DiracDelta(x))


@pytest.mark.parametrize("value, sep, digits, expected", [
    (0.25, ".", None, "0.25"),
    (0.25, "{,}", None, "0{,}25"),
    (-6.905752, "{,}", 5, "-6{,}9058"),
    (3.0, ".", None, "3"),
    (-0.0, ".", None, "0"),
    (1.5e-7, ".", None, r"1.5 \cdot 10^{-7}"),
    (1e-3, ".", 5, "0.001"),
    (1.6732632423543772, ".", None, "1.6732632423543772"),
    (float("inf"), ".", None, r"\infty"),
])
def test_number_formatting(value, sep, digits, expected):
    assert format_number(value, sep, digits) == expected


# --- templates ------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_every_rule_and_word_has_its_text(lang):
    words = language(lang).words
    assert set(WORDS) <= set(words)
    prose = environment().get_template(f"latex/{lang}/prose.tex.jinja").module
    missing = [r for r in RULES if not hasattr(prose, f"rule_{r}")]
    assert missing == []
    assert set(words["rule_names"]) == set(RULES)
    if lang == "pt":
        assert {op.name for op in ACTIVATIONS} <= set(words["titles"])


def test_no_prose_in_python():
    """The Python side of the LaTeX stage holds no sentences in either language."""
    from pathlib import Path

    import derive.latex as package

    for path in Path(package.__file__).parent.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\\text\{[A-Za-z]", text), path.name
        for phrase in ("regra", "derivada", "caso contrário", "Pela ", "By the "):
            assert phrase not in text, (path.name, phrase)


@pytest.mark.parametrize("fmt", ["article", "beamer", "fragment", "markdown"])
def test_rendering_is_deterministic_and_has_a_header(fmt):
    op = get("elu")
    first, second = render(op, fmt, "pt"), render(op, fmt, "pt")
    assert first == second
    head = "\n".join(first.splitlines()[:4])
    assert "Generated by derive from the declaration 'elu'" in head
    assert "derive latex elu --lang pt --format " + fmt in head
    assert r"\today" not in first and r"\date{\today}" not in first
    if fmt == "beamer":
        assert "\\date{}" in first
    if fmt == "article":
        # The article's title block prints the title alone: no date, no author line.
        assert "\\date{" not in first and "\\author{" not in first
        assert "{\\LARGE \\@title\\par}" in first


def test_markdown_has_dollar_blocks_and_the_results():
    text = render(get("sigmoid"), "markdown", "en")
    assert "\\begin{document}" not in text and "\\documentclass" not in text
    # Six steps, the definition and the two boxed results (the sum rule is a clause since).
    assert text.count("$$") % 2 == 0 and text.count("$$") >= 2 * 9
    assert r"\boxed{\sigma'(x) = \sigma(x) \left(1 - \sigma(x)\right)}" in text
    assert r"\boxed{\sigma'(x) = y \left(1 - y\right)}" in text
    assert "## The derivative, step by step" in text
    # The sum rule after the quotient rule only drops the constant: a clause of step 2.
    assert "**2.** By the quotient rule" in text and "By the sum rule" not in text
    assert "the derivative of a sum is the sum of the derivatives of its terms" in text
    assert "chain rule" in text and r"\frac{d}{dx} e^{- x} = - e^{- x}" in text


def test_markdown_in_portuguese():
    text = render(get("relu"), "markdown", "pt")
    assert "# Unidade linear retificada (ReLU): derivada passo a passo" in text
    assert "caso contrário" in text and "adotamos por convenção" in text
    assert "a derivada é exatamente zero" in text


def test_fragment_is_a_body_that_names_its_packages():
    text = render(get("tanh"), "fragment", "pt")
    assert "\\documentclass" not in text and "\\begin{document}" not in text
    assert "\\section{Tangente hiperbólica}" in text and "\\subsection{Definição}" in text
    needs = re.findall(r"^%\s+(\\usepackage.*|\\pgfplotsset.*)$", text, re.M)
    assert any("pgfplots" in n for n in needs) and any("babel" in n for n in needs)


def test_repr_latex_for_jupyter():
    text = derive_activation(get("sigmoid"))._repr_latex_()
    assert text.startswith("$$\\begin{aligned}") and text.rstrip().endswith("\\end{aligned}$$")
    assert r"\text{quotient rule}" in text and r"y \left(1 - y\right)" in text


@pytest.mark.parametrize("name", [op.name for op in all_ops("vector")])
def test_every_vector_function_is_typeset(name, capsys, tmp_path):
    # softmax and log-softmax both declare the derivation of their Jacobian
    # (tests/test_steps_teaching.py); none may fall back to "not available yet".
    assert main(["latex", name, "--format", "markdown", "-o", str(tmp_path / "notes.md")]) == 0
    assert "not available yet" not in capsys.readouterr().err


# --- properties ---------------------------------------------------------------------------


def facts(name):
    op = get(name)
    d = derive_activation(op)
    return activation_facts(op, d.forward, d.derivative, d.kinks)


def test_sigmoid_properties():
    f = facts("sigmoid")
    assert (f.lower.value, f.lower.closed, f.upper.value, f.upper.closed) == (0, False, 1, False)
    assert f.dmax.value == pytest.approx(0.25) and f.dmax.lo == f.dmax.hi == 0
    # σ' = 1e-3  ⇔  σ = (1 + √(1 − 4e-3))/2
    root = sp.sqrt(1 - sp.Rational(4, 1000))
    edge = float(sp.log((1 + root) / (1 - root)))
    assert [s.threshold for s in f.saturation] == [pytest.approx(-edge, abs=1e-6),
                                                     pytest.approx(edge, abs=1e-6)]


def test_saturation_thresholds_match_closed_forms():
    softsign = facts("softsign").saturation[1].threshold
    assert softsign == pytest.approx(1000 ** 0.5 - 1, abs=1e-6)
    tanh = facts("tanh").saturation[1].threshold
    assert tanh == pytest.approx(float(sp.atanh(sp.sqrt(1 - sp.Rational(1, 1000)))), abs=1e-6)


def test_relu_dies_on_the_left_and_its_derivative_jumps():
    f = facts("relu")
    assert [(s.side, s.threshold, s.zero) for s in f.saturation] == [(-1, 0.0, True)]
    assert f.df_curve.filled == ((0.0, 0.0),) and f.df_curve.hollow == ((0.0, 1.0),)
    assert len(f.df_curve.segments) == 2
    assert f.f_curve.filled == () and len(f.f_curve.segments) == 1


def test_heaviside_is_flat_and_jumps():
    f = facts("heaviside")
    assert f.flat and f.saturation == ()
    assert f.f_curve.filled == ((0.0, 1.0),) and f.f_curve.hollow == ((0.0, 0.0),)


def test_hard_sigmoid_derivative_is_a_sixth_on_an_open_interval():
    view = document_view(get("hard_sigmoid"), language("en"))
    m = view.properties.dmax
    assert (m.kind, m.value.tex, m.lo.tex, m.hi.tex, m.lo_closed, m.hi_closed) == \
        ("interval", r"\frac{1}{6}", "-3", "3", False, False)


def test_softplus_derivative_approaches_one_without_reaching_it():
    m = facts("softplus").dmax
    assert (m.value, m.attained, m.towards) == (1.0, False, 1)


@pytest.mark.parametrize("op", ACTIVATIONS, ids=IDS)
def test_fast_evaluation_agrees_with_sympy(op):
    from derive.latex.facts import concrete_values

    d = derive_activation(op)
    values = concrete_values(op)
    for expr in (d.forward, d.derivative):
        concrete = expr.subs(values)
        fast = compile_numeric(concrete, x)
        for t in (-4.3, -0.7, 0.35, 2.9):
            expected = evaluate(concrete, {x: t})
            assert float(fast(t)) == pytest.approx(expected, rel=1e-12, abs=1e-300)


# --- the command line -------------------------------------------------------------------


def test_cli_prints_to_stdout(capsys):
    assert main(["latex", "tanh", "--lang", "en", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<!--") and r"1 - \tanh^{2}(x)" in out


def test_cli_writes_atomically_and_identically(tmp_path, capsys):
    out = tmp_path / "sub" / "gelu.tex"
    assert main(["latex", "gelu", "-o", str(out)]) == 0
    first = out.read_bytes()
    assert main(["latex", "gelu", "-o", str(out)]) == 0
    assert out.read_bytes() == first
    assert f"-o {out}" in first.decode().splitlines()[1]
    assert [p.name for p in out.parent.iterdir()] == ["gelu.tex"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would, not mkstemp's 0600


def test_cli_unknown_name_suggests(capsys):
    assert main(["latex", "sigmod"]) == 2
    assert "Did you mean sigmoid" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["latex", "relu", "--format", "markdown", "--pdf", "-o", "r.md"], "nothing to compile"),
    (["latex", "relu", "--pdf"], "--pdf needs -o"),
    (["latex", "relu", "-o", "relu.pdf"], "PDF is written beside it"),
    (["latex", "relu", "--expr", "x"], "not both"),
    (["latex", "--expr", "x*x"], "--expr needs --name"),
    (["latex"], "nothing to typeset"),
    (["latex", "--expr", "__import__('os')", "--name", "bad"], "--expr"),
])
def test_cli_refuses_contradictions(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@needs_tex
def test_cli_custom_activation_to_pdf(tmp_path, capsys):
    out = tmp_path / "bent.tex"
    argv = ["latex", "--expr", "x*tanh(a*x)", "--name", "bent", "--param", "a=0.5",
            "--lang", "en", "-o", str(out), "--pdf"]
    assert main(argv) == 0
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    tex = out.read_text()
    assert "the formula 'x*tanh(a*x)'" in tex and "--param a=0.5" in tex
    text = pdftotext(out.with_suffix(".pdf"))
    assert "chainrule" in squash(text) and "bent" in text


@needs_tex
def test_latex_errors_quote_the_offending_line(tmp_path):
    tex = ("\\documentclass{article}\n\\begin{document}\nfine\n\\nosuchmacro{here}\n"
           "\\end{document}\n")
    with pytest.raises(LatexError) as caught:
        compile_pdf(tex, tmp_path / "broken.pdf")
    message = caught.value.message
    assert "line 4" in message and "\\\\nosuchmacro{here}" in message
    assert "Undefined control sequence" in message
    assert not (tmp_path / "broken.pdf").exists()


# --- every document compiles and states its results ----------------------------------------


def squash(text: str) -> str:
    """Text without whitespace (pdftotext spaces math unpredictably) or end-of-line hyphens."""
    return "".join(text.replace("-\n", "").split())


def pdftotext(pdf) -> str:
    done = subprocess.run(["pdftotext", "-raw", "-enc", "UTF-8", str(pdf), "-"],
                          capture_output=True, check=True)
    return done.stdout.decode("utf-8")


def _compile(folder, fmt_file=None):
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
    if fmt_file is not None:
        command.append(f"-fmt={fmt_file}")
    done = subprocess.run([*command, "doc.tex"], cwd=folder, capture_output=True, timeout=300)
    log = (folder / "doc.log").read_text(encoding="utf-8", errors="replace")
    errors = re.findall(r"^\S*doc\.tex:\d+: .*$", log, re.M) or [log[-1500:]]
    text = pdftotext(folder / "doc.pdf") if done.returncode == 0 else ""
    return done.returncode, errors, text


def _precompile(folder, name):
    """A pdflatex format of a document's preamble (up to its \\endofdump line), or None
    when mylatexformat is not available (the documents then compile from scratch)."""
    done = subprocess.run(["pdftex", "-ini", "-interaction=nonstopmode", f"-jobname={name}",
                           "&pdflatex", "mylatexformat.ltx", "doc.tex"], cwd=folder,
                          capture_output=True, timeout=300)
    return folder / name if done.returncode == 0 and (folder / f"{name}.fmt").exists() else None


def _write(folder, tex):
    folder.mkdir(parents=True)
    (folder / "doc.tex").write_text(tex, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every activation × language × (article, beamer), compiled two at a time.

    The preamble (identical for all documents of a language and format) is precompiled
    once per group with mylatexformat, which halves the time; the documents are rendered
    while earlier ones compile. The CLI and fragment tests compile without a format.
    """
    if not HAVE_TEX:
        pytest.skip("pdflatex/pdftotext not installed")
    root = tmp_path_factory.mktemp("latex")
    groups = [(lang, fmt) for lang in LANGS for fmt in COMPILED]
    with ThreadPoolExecutor(max_workers=2) as pool:
        formats = {
            (lang, fmt): pool.submit(
                _precompile,
                _write(root / f"format-{lang}-{fmt}", render(ACTIVATIONS[0], fmt, lang)),
                f"derive-{lang}-{fmt}")
            for lang, fmt in groups
        }
        formats = {k: f.result() for k, f in formats.items()}
        jobs = {}
        for op in ACTIVATIONS:
            for lang, fmt in groups:
                folder = _write(root / f"{op.name}-{lang}-{fmt}", render(op, fmt, lang))
                jobs[(op.name, lang, fmt)] = pool.submit(_compile, folder, formats[(lang, fmt)])
        return {key: job.result() for key, job in jobs.items()}


def _plain(number) -> str | None:
    """A number as pdftotext shows it, if it is a plain decimal."""
    if number is None or not re.fullmatch(r"-?\d+(\{,\}|\.)\d+", number.tex):
        return None
    return number.tex.replace("{,}", ",").replace("-", "\u2212")


def key_results(op, lang) -> list[str]:
    words = language(lang).words
    view = document_view(op, language(lang))
    props = view.properties
    phrases = [words["titles"].get(op.name, op.title), words["heading_derivative"],
               words["heading_properties"]]
    shown = [props.symmetric] if props.symmetric is not None else [
        s.threshold for s in props.saturation]
    numbers = [props.dmax.value, *shown]
    phrases += [p for p in map(_plain, numbers) if p]
    rules = {s.rule for s in view.derivative.steps}
    phrases += [RULE_PHRASES[r][lang] for r in sorted(rules & set(RULE_PHRASES))]
    return phrases


@needs_tex
@pytest.mark.parametrize("fmt", COMPILED)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("op", ACTIVATIONS, ids=IDS)
def test_document_compiles_and_states_its_results(compiled, op, lang, fmt):
    returncode, errors, text = compiled[(op.name, lang, fmt)]
    assert returncode == 0, errors
    flat = squash(text)
    for phrase in key_results(op, lang):
        assert squash(phrase) in flat, phrase


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_sigmoid_document_reaches_sigma_one_minus_sigma(compiled, lang):
    for fmt in COMPILED:
        flat = squash(compiled[("sigmoid", lang, fmt)][2])
        assert "\u03c3(x)(1\u2212\u03c3(x))" in flat
        assert "y(1\u2212y)" in flat


@needs_tex
def test_fragment_compiles_with_the_packages_it_names(tmp_path):
    body = render(get("elu"), "fragment", "en")
    needs = re.findall(r"^%\s+(\\usepackage.*|\\pgfplotsset.*)$", body, re.M)
    (tmp_path / "elu.tex").write_text(body, encoding="utf-8")
    host = "\\documentclass{article}\n" + "\n".join(needs) + \
        "\n\\begin{document}\n\\input{elu}\n\\end{document}\n"
    (tmp_path / "host.tex").write_text(host, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "host.tex"],
                          cwd=tmp_path, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Exponential linear unit" in pdftotext(tmp_path / "host.pdf")


def test_fraction_numbers_are_exact():
    from derive.latex.context import number

    assert number(1 / 6, language("en")).tex == r"\frac{1}{6}"
    assert number(0.25, language("pt")).tex == "0{,}25"
    assert number(6.905752, language("en")).approx
    assert number(-1 / 3, language("en")).tex == r"-\frac{1}{3}"
