"""What ``derive latex`` does between parsing its arguments and printing.

Pick the declaration, render it, write it atomically, compile it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from derive import registry
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


def document_for(target: str | None, *, expr: str | None = None, name: str | None = None,
                 params: dict[str, float] | None = None, lang: str = "pt",
                 fmt: str = "article", out: Path | None = None, pdf: bool = False) -> Document:
    """Render the document ``derive latex`` asks for.

    Parameters
    ----------
    target : str or None
        A catalogue name or a network spec (a ``.toml`` file); None with ``expr``.
    expr, name, params : optional
        A custom activation (see :func:`derive.pipeline.custom_activation`).
    lang, fmt : str
        Language and format.
    out : Path, optional
        Where the document will be written (named in its header).
    pdf : bool
        Whether a PDF is wanted (checked against the format and ``out``).

    Raises
    ------
    DeriveError
        For contradictory options, unknown names and unacceptable formulas.

    """
    params = params or {}
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
    if expr is not None:
        from derive.pipeline import custom_activation

        if target is not None:
            raise DeriveError("give a catalogue name or --expr, not both.", where=where)
        if not name:
            raise DeriveError("--expr needs --name.", where=where, fix="Add e.g. --name my_act.")
        op = custom_activation(expr, name, params)
        words = ["--expr", expr, "--name", name]
        for p, v in params.items():
            words += ["--param", f"{p}={v!r}"]
        source = f"the formula {expr!r}"
    else:
        if name or params:
            raise DeriveError("--name and --param go with --expr.", where=where)
        if target is None:
            raise DeriveError("nothing to typeset.", where=where,
                              fix="Give a catalogue name (see `derive list`) or --expr.")
        if target.endswith(".toml") or os.sep in target:
            from derive.network import load_spec

            op = load_spec(target)
            source = f"the network spec {target}"
        else:
            op = registry.get(target)
            source = default_source(op)
        words = [target]
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
