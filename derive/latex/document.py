"""What ``derive latex`` does between parsing its arguments and printing.

Pick the declaration, render it, write it atomically, compile it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from derive.errors import DeriveError
from derive.files import atomic_write, command_line, comment_text
from derive.latex.compile import compile_pdf
from derive.latex.render import default_source, render


@dataclass(frozen=True)
class Document:
    """A rendered document and the format it is in."""

    name: str
    fmt: str
    text: str


def _command(words: list[str], lang: str, fmt: str, out: Path | None) -> str:
    words = ["derive", "latex", *words, "--lang", lang, "--format", fmt]
    if out is not None:
        words += ["-o", str(out)]
    return command_line(words)


def _header_text(text: str, fmt: str) -> str:
    r"""A user's text (formula, path) as the header's comment lines may hold it.

    One line of printable characters (:func:`comment_text`): a line break would end a
    TeX comment early and make the rest TeX code (``\input``, ``\write18``). Markdown's
    header is an HTML comment, which a ``>`` after ``--`` would close.
    """
    text = comment_text(text)
    return text.replace(">", "&gt;") if fmt == "markdown" else text


def check_options(fmt: str, out: Path | None, pdf: bool) -> None:
    """Refuse contradictory output options of ``derive latex``.

    Parameters
    ----------
    fmt : str
        The format asked for.
    out : Path or None
        Where the document is to be written.
    pdf : bool
        Whether a PDF is wanted.

    Raises
    ------
    DeriveError
        For a PDF of a Markdown file or a fragment, ``-o`` naming the PDF, or ``--pdf``
        without ``-o``.

    """
    where = "derive latex"
    if pdf and fmt == "markdown":
        raise DeriveError("--pdf compiles LaTeX; the markdown format has nothing to compile.",
                          where=where, fix="Drop --pdf or choose --format article or beamer.")
    if pdf and fmt == "fragment":
        raise DeriveError("a fragment is not a whole document, so it cannot be compiled.",
                          where=where, fix="Use --format article or beamer with --pdf.")
    if out is not None and Path(out).suffix.lower() == ".pdf":
        raise DeriveError("-o names the LaTeX or Markdown file; the PDF is written beside it.",
                          where=where, fix="Write e.g. -o sigmoid.tex --pdf.")
    if pdf and out is None:
        raise DeriveError("--pdf needs -o FILE: the PDF is written beside it.", where=where,
                          fix="Add e.g. -o sigmoid.tex.")


def typeset(op, words: list[str], source: str | None = None, *, lang: str = "pt",
            fmt: str = "article", out: Path | None = None, pdf: bool = False) -> Document:
    """Render the document of a declaration or a network (``derive latex``).

    The caller picks the record (a catalogue entry, a custom activation, a network spec:
    :func:`derive.pipeline.document_for`); this renders it with its header.

    Parameters
    ----------
    op : record
        The declaration or network to typeset.
    words : list of str
        The arguments of ``derive latex`` before the options, for the header's
        regeneration line.
    source : str, optional
        Where ``op`` came from; by default, the catalogue file that declares it.
    lang, fmt : str
        Language and format.
    out : Path, optional
        Where the document will be written (named in its header).
    pdf : bool
        Whether a PDF is wanted (checked against the format and ``out``).

    Raises
    ------
    DeriveError
        For contradictory options.

    """
    check_options(fmt, out, pdf)
    source = source or default_source(op)
    text = render(op, fmt, lang, source=_header_text(source, fmt),
                  command=_header_text(_command(words, lang, fmt, out), fmt))
    return Document(op.name, fmt, text)


def _check_output(fmt: str, out: Path | None, pdf: bool, where: str) -> None:
    if pdf and fmt in ("markdown", "fragment"):
        raise DeriveError(f"--pdf compiles a whole LaTeX document, not a {fmt}.", where=where,
                          fix="Drop --pdf or choose --format article or beamer.")
    if out is not None and Path(out).suffix.lower() == ".pdf":
        raise DeriveError("-o names the LaTeX or Markdown file; the PDF is written beside it.",
                          where=where, fix="Write e.g. -o example.tex --pdf.")
    if pdf and out is None:
        raise DeriveError("--pdf needs -o FILE: the PDF is written beside it.", where=where,
                          fix="Add e.g. -o example.tex.")


def example_document(example, words: list[str], *, lang: str = "pt", fmt: str = "article",
                     out: Path | None = None, pdf: bool = False) -> Document:
    """Typeset a worked example (:func:`derive.example.worked_example`).

    Parameters
    ----------
    example : Example
        The computed example.
    words : list of str
        The command's arguments after ``derive`` (for the header's regeneration line).
    lang, fmt, out, pdf
        As for :func:`document_for`.
    """
    _check_output(fmt, out, pdf, "derive example")
    command = ["derive", *words, "--lang", lang, "--format", fmt]
    if out is not None:
        command += ["-o", str(out)]
    source = (f"the activation {example.activation.name!r} and the loss "
              f"{example.loss.name!r} of the catalogue")
    text = render(example, fmt, lang, source=_header_text(source, fmt),
                  command=_header_text(command_line(command), fmt))
    return Document(example.name, fmt, text)


def write_document(doc: Document, out: Path, pdf: bool = False) -> list[Path]:
    """Write the document to ``out`` (atomically) and, with ``pdf``, its PDF beside it.

    Returns
    -------
    list of Path
        The files written.

    """
    out = Path(out)
    atomic_write(out, doc.text)
    # Readable before the PDF is tried: when pdflatex fails, the .tex is what the user
    # compiles by hand.
    _readable(out)
    written = [out]
    if pdf:
        written.append(compile_pdf(doc.text, out.with_suffix(".pdf")))
        _readable(written[-1])
    return written


def _readable(path: Path) -> None:
    """Give a written file the usual permissions (the atomic write's temp file is 0600).

    Lecture notes are meant to be shared; this applies the umask as ``open`` would.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
