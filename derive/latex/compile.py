"""LaTeX text → PDF with pdflatex, in a temporary directory; errors quote the source line."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from derive.codegen.emit import atomic_write
from derive.errors import DeriveError

#: pdflatex is run at most this many times (cross-references settle by the second run).
MAX_RUNS = 3
TIMEOUT = 300
#: Messages in the log asking for another run.
RERUN = re.compile(r"Rerun to get|Label\(s\) may have changed|rerunfilecheck")
#: "./doc.tex:12: Undefined control sequence." (with -file-line-error)
FILE_LINE_ERROR = re.compile(r"^\S*doc\.tex:(\d+): (.*)$", re.M)
#: "! Undefined control sequence." and "l.12 ..."
BANG_ERROR = re.compile(r"^! (.*)$", re.M)
LINE_MARK = re.compile(r"^l\.(\d+)", re.M)


class LatexError(DeriveError):
    """pdflatex stopped on the generated document."""


def latex_error(log: str, tex: str) -> LatexError:
    """The first error in a pdflatex log, quoting the offending line of ``tex``.

    Parameters
    ----------
    log : str
        The contents of the ``.log`` file.
    tex : str
        The document that was compiled.

    """
    lines = tex.splitlines()
    line, message = None, "pdflatex failed without an error message in its log"
    found = FILE_LINE_ERROR.search(log)
    if found:
        line, message = int(found.group(1)), found.group(2).strip()
    else:
        bang = BANG_ERROR.search(log)
        if bang:
            message = bang.group(1).strip()
            mark = LINE_MARK.search(log, bang.end())
            line = int(mark.group(1)) if mark else None
    where = "the generated LaTeX"
    if line is not None and 1 <= line <= len(lines):
        quoted = lines[line - 1].strip()
        if len(quoted) > 200:
            quoted = quoted[:200] + " ..."
        where = f"line {line} of the generated LaTeX ({quoted!r})"
    return LatexError(
        f"pdflatex stopped: {message}.",
        where=where,
        fix="Write the .tex with -o and compile it by hand to see the whole log; if the "
            "document came from a catalogue name, this is a bug in derive's templates.",
    )


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
