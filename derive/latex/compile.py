"""LaTeX text → PDF with pdflatex, in a temporary directory; errors quote the source line."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from derive.errors import DeriveError
from derive.files import atomic_write

#: pdflatex is run at most this many times (cross-references settle by the second run).
MAX_RUNS = 3
TIMEOUT = 300
#: Messages in the log asking for another run.
RERUN = re.compile(r"Rerun to get|Label\(s\) may have changed|rerunfilecheck")
#: "./doc.tex:12: Undefined control sequence." (with -file-line-error)
FILE_LINE_ERROR = re.compile(r"^\S*doc\.tex:(\d+): (.*)$", re.M)
#: "! LaTeX Error: File `lmodern.sty' not found." and "l.12 ..."
BANG_ERROR = re.compile(r"^! (.*)$", re.M)
LINE_MARK = re.compile(r"^l\.(\d+)", re.M)
#: A file LaTeX could not find: a package, class, language or font definition.
MISSING_FILE = re.compile(r"File `([^']+)' not found")

#: The Debian package that holds each TeX file the templates load, directly or through
#: an option (babel's languages, fontenc's T1 with lmodern). setup.sh installs them all;
#: tests/test_tex_packages.py checks that every file the templates name is listed here and
#: found by kpsewhich.
DEBIAN_PACKAGE = {
    "article.cls": "texlive-latex-base",
    "beamer.cls": "texlive-latex-recommended",
    "fontenc.sty": "texlive-latex-base",
    "inputenc.sty": "texlive-latex-base",
    "geometry.sty": "texlive-latex-base",
    "float.sty": "texlive-latex-recommended",
    "array.sty": "texlive-latex-base",
    "amsmath.sty": "texlive-latex-base",
    "amssymb.sty": "texlive-base",
    "babel.sty": "texlive-latex-base",
    "english.ldf": "texlive-latex-base",
    "brazilian.ldf": "texlive-lang-portuguese",
    "lmodern.sty": "lmodern",
    "t1lmr.fd": "lmodern",
    "adjustbox.sty": "texlive-latex-extra",
    "pgfplots.sty": "texlive-pictures",
    "tikz.sty": "texlive-pictures",
}


class LatexError(DeriveError):
    """pdflatex stopped on the generated document."""


def _first_error(log: str) -> tuple[str, int | None]:
    """LaTeX's own first error message in ``log`` and the source line it names, if any.

    Errors appear either as ``./doc.tex:N: message`` (with -file-line-error) or as
    ``! message`` followed later by an ``l.N`` mark; a missing package shows the second form
    and then ``./doc.tex:N: Emergency stop.``, which must not hide it.
    """
    found = [m for m in (FILE_LINE_ERROR.search(log), BANG_ERROR.search(log)) if m]
    if not found:
        return "pdflatex failed without an error message in its log", None
    first = min(found, key=lambda m: m.start())
    if first.re is FILE_LINE_ERROR:
        return first.group(2).strip(), int(first.group(1))
    mark = LINE_MARK.search(log, first.end())
    return first.group(1).strip(), int(mark.group(1)) if mark else None


def _fix(message: str) -> str:
    """How to get past ``message``: the package to install, or where to look."""
    missing = MISSING_FILE.search(message)
    if missing:
        name = missing.group(1)
        package = DEBIAN_PACKAGE.get(name)
        install = (f"sudo apt-get install {package}" if package
                   else f"the package holding it (`apt-file search {name}`)")
        return (f"TeX Live lacks {name}: install {install}, or run ./setup.sh, which installs "
                "every TeX package the documents use; then run the command again.")
    return ("Write the .tex with -o and compile it by hand to see the whole log; if the "
            "document came from a catalogue name, this is a bug in derive's templates.")


def latex_error(log: str, tex: str) -> LatexError:
    """LaTeX's first error in a pdflatex log, quoting the offending line of ``tex``.

    Parameters
    ----------
    log : str
        The contents of the ``.log`` file.
    tex : str
        The document that was compiled.

    Returns
    -------
    LatexError
        Its message is LaTeX's own (``LaTeX Error: File `lmodern.sty' not found.``); its
        fix names the Debian package when a file is missing.
    """
    lines = tex.splitlines()
    message, line = _first_error(log)
    where = "the generated LaTeX"
    if line is not None and 1 <= line <= len(lines):
        quoted = lines[line - 1].strip()
        if len(quoted) > 200:
            quoted = quoted[:200] + " ..."
        where = f"line {line} of the generated LaTeX ({quoted!r})"
    return LatexError(f"pdflatex stopped: {message.rstrip('.')}.", where=where,
                      fix=_fix(message))


def compile_pdf(tex: str, pdf: Path, *, runs: int = MAX_RUNS) -> Path:
    """Compile ``tex`` with pdflatex and move the PDF to ``pdf`` atomically.

    pdflatex runs in a temporary directory with ``-interaction=nonstopmode
    -halt-on-error``, again while the log asks for a rerun (at most ``runs`` times).

    Parameters
    ----------
    tex : str
        A complete LaTeX document.
    pdf : Path
        Where the PDF goes.
    runs : int
        The most pdflatex runs.

    Returns
    -------
    Path
        ``pdf``.

    Raises
    ------
    LatexError
        On a LaTeX error, quoting the offending line of ``tex``.
    DeriveError
        When pdflatex is not installed.

    """
    exe = shutil.which("pdflatex")
    if exe is None:
        raise DeriveError("pdflatex is not installed.", where="--pdf",
                          fix="Install TeX Live (e.g. apt-get install texlive-latex-extra "
                              "texlive-lang-portuguese), or drop --pdf and compile yourself.")
    with tempfile.TemporaryDirectory(prefix="derive-latex-") as tmp:
        work = Path(tmp)
        (work / "doc.tex").write_text(tex, encoding="utf-8")
        command = [exe, "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
                   "doc.tex"]
        for _ in range(runs):
            try:
                done = subprocess.run(command, cwd=work, capture_output=True, timeout=TIMEOUT,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise LatexError(f"pdflatex did not finish in {TIMEOUT} s.",
                                 where="the generated LaTeX") from None
            log_path = work / "doc.log"
            log = (log_path.read_text(encoding="utf-8", errors="replace")
                   if log_path.exists() else "")
            if done.returncode != 0 or not (work / "doc.pdf").exists():
                raise latex_error(log or done.stdout.decode(errors="replace"), tex)
            if not RERUN.search(log):
                break
        atomic_write(pdf, (work / "doc.pdf").read_bytes())
    return Path(pdf)
