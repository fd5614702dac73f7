"""Every TeX file the documents load is installed, and setup.sh installs its package.

The templates are read as text: every ``\\documentclass``, ``\\usepackage``,
``\\RequirePackage``, ``\\usetikzlibrary`` and ``\\usepgfplotslibrary`` they can emit, and
babel's language of each language folder. A file kpsewhich cannot find fails with the
Debian package to install: this test does not skip when TeX is missing, because setup.sh
is meant to have installed it.
"""

import re
import shutil
import subprocess

import pytest
from conftest import REPO

from derive.latex.compile import DEBIAN_PACKAGE, compile_pdf, latex_error

TEMPLATES = REPO / "derive" / "templates" / "latex"
SOURCES = [*TEMPLATES.rglob("*.jinja"), *(REPO / "derive" / "latex").glob("*.py")]
COMMAND = re.compile(r"\\(documentclass|usepackage|RequirePackage|usetikzlibrary|"
                     r"usepgfplotslibrary)\s*(?:\[([^\]]*)\])?\s*\{([^}]*)\}")
SUFFIX = {"documentclass": "{}.cls", "usepackage": "{}.sty", "RequirePackage": "{}.sty",
          "usetikzlibrary": "tikzlibrary{}.code.tex",
          "usepgfplotslibrary": "pgfplotslibrary{}.code.tex"}
#: Files an option brings in: T1 text in Latin Modern needs its font definitions.
IMPLIED = {("fontenc", "T1"): ["t1lmr.fd"]}


def babel_languages() -> list[str]:
    """babel's language for each language folder (``((* set babel *))brazilian``)."""
    found = []
    for words in sorted(TEMPLATES.glob("*/words.tex.jinja")):
        match = re.search(r"set babel \*\)\)\s*(\w+)\s*\(\(\*", words.read_text())
        assert match, f"{words} sets no babel language"
        found.append(match.group(1))
    return found


def tex_files() -> dict[str, str]:
    """Every TeX file the templates can load, with where it is asked for."""
    files = {}
    for source in SOURCES:
        text = source.read_text(encoding="utf-8")
        for command, options, names in COMMAND.findall(text):
            for name in (n.strip() for n in names.split(",")):
                if "(((" in name or not name:
                    continue  # a placeholder filled in elsewhere (babel: see below)
                files.setdefault(SUFFIX[command].format(name), source.name)
                for option in (options or "").split(","):
                    for implied in IMPLIED.get((name, option.strip()), []):
                        files.setdefault(implied, source.name)
    for language in babel_languages():
        files.setdefault(f"{language}.ldf", "words.tex.jinja")
    return files


FILES = tex_files()


def test_the_scan_finds_the_preamble():
    # A guard against a regex that silently matches nothing.
    for expected in ("article.cls", "beamer.cls", "lmodern.sty", "babel.sty", "pgfplots.sty",
                     "brazilian.ldf", "english.ldf", "t1lmr.fd"):
        assert expected in FILES


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_tex_file_has_a_debian_package_setup_installs(name):
    assert name in DEBIAN_PACKAGE, (
        f"{FILES[name]} loads {name}: add it to DEBIAN_PACKAGE in derive/latex/compile.py "
        "with the Debian package that holds it (`dpkg -S $(kpsewhich NAME)`)")
    setup = (REPO / "setup.sh").read_text()
    listed = re.search(r'DEBIAN_PACKAGES="([^"]*)"', setup).group(1).split()
    listed = [word.strip("\\") for word in listed]
    package = DEBIAN_PACKAGE[name]
    # texlive-base comes with texlive-latex-base, which setup.sh names.
    assert package in listed or package == "texlive-base", (
        f"setup.sh does not install {package}, which holds {name}")


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_tex_file_is_installed(name):
    kpsewhich = shutil.which("kpsewhich")
    assert kpsewhich, ("TeX Live is not installed: run ./setup.sh (Debian packages: "
                       + " ".join(sorted(set(DEBIAN_PACKAGE.values()))) + ")")
    found = subprocess.run([kpsewhich, name], capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.strip(), (
        f"{name} (loaded by {FILES[name]}) is not installed: "
        f"apt-get install {DEBIAN_PACKAGE.get(name, '<see dpkg -S>')}")


#: The log of a document whose preamble asks for a package that is not installed, exactly
#: as pdflatex -file-line-error writes it in nonstop mode.
MISSING_LMODERN_LOG = """\
(/usr/share/texlive/texmf-dist/tex/latex/base/fontenc.sty
Package: fontenc 2021/04/29 v2.0v Standard LaTeX package
)

! LaTeX Error: File `lmodern.sty' not found.

Type X to quit or <RETURN> to proceed,
or enter new name. (Default extension: sty)

Enter file name:
./doc.tex:7: Emergency stop.
<read *>

l.7 \\usepackage
                [brazilian]{babel}^^M
"""


def test_a_missing_package_is_reported_by_latex_own_first_error():
    tex = "\n".join(["\\documentclass{article}", "\\usepackage[T1]{fontenc}", "", "",
                     "", "\\usepackage{lmodern}", "\\usepackage[brazilian]{babel}"])
    error = latex_error(MISSING_LMODERN_LOG, tex)
    assert "LaTeX Error: File `lmodern.sty' not found" in error.message
    assert "Emergency stop" not in error.message
    assert "apt-get install lmodern" in error.message
    assert "\n" not in error.message


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex")
def test_a_real_missing_package(tmp_path):
    tex = ("\\documentclass{article}\n\\usepackage{derivenosuchpackage}\n"
           "\\begin{document}\nx\n\\end{document}\n")
    with pytest.raises(Exception) as caught:
        compile_pdf(tex, tmp_path / "doc.pdf")
    message = caught.value.message
    assert "File `derivenosuchpackage.sty' not found" in message
    assert "apt-file search derivenosuchpackage.sty" in message
    assert not (tmp_path / "doc.pdf").exists()


def test_an_ordinary_error_keeps_its_line():
    log = "./doc.tex:4: Undefined control sequence.\nl.4 \\foo\n"
    error = latex_error(log, "a\nb\nc\n\\foo\n")
    assert "Undefined control sequence" in error.message and "line 4" in error.message
