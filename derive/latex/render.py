"""Template context → document text, through the Jinja2 templates in templates/latex/.

The delimiters are chosen not to clash with LaTeX's braces and percent signs:
``((* block *))``, ``((( variable )))`` and ``((= comment =))``. Each language's
``words.tex.jinja`` defines the vocabulary (read by Python through the template's
module); its ``prose.tex.jinja`` holds the sentences; the files in ``shared/`` lay out
the four formats.
"""

from __future__ import annotations

from functools import cache

import jinja2

from derive.latex import (  # noqa: F401  (register their views)
    cell,
    example,
    gated,
    indexed,
    network,
    optimizer,
    penalty,
    recurrent,
)
from derive.latex.context import Language, document_view
from derive.latex.lines import fit
from derive.registry import declared_in

LANGUAGES = ("pt", "en")
FORMATS = ("article", "beamer", "fragment", "markdown")
#: File suffix of each format.
SUFFIXES = {"article": ".tex", "beamer": ".tex", "fragment": ".tex", "markdown": ".md"}

_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}",
}


def latex_text(value: str) -> str:
    """Escape a plain string (a name, a title) for LaTeX text mode."""
    return "".join(_SPECIAL.get(c, c) for c in str(value))


def comment_text(value: str) -> str:
    """A string made safe for one comment line (no line breaks)."""
    return " ".join(str(value).split())


@cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the LaTeX templates."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("derive", "templates"),
        block_start_string="((*",
        block_end_string="*))",
        variable_start_string="(((",
        variable_end_string=")))",
        comment_start_string="((=",
        comment_end_string="=))",
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["text"] = latex_text
    env.filters["comment"] = comment_text
    env.filters["fit"] = fit
    return env


@cache
def language(code: str) -> Language:
    """The vocabulary of a language, read from its ``words`` template."""
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {code!r}; choose one of {LANGUAGES}")
    module = environment().get_template(f"latex/{code}/words.tex.jinja").module
    words = {k: getattr(module, k) for k in dir(module) if not k.startswith("_")}
    return Language(code, words["decimal_separator"], words)


def default_source(op) -> str:
    """Where a catalogue declaration lives, for the generated file's header."""
    path = declared_in(op)
    return f"the declaration {op.name!r}" + (f" in {path}" if path else "")


def default_command(op, fmt: str, lang: str) -> str:
    """The command that regenerates a catalogue document."""
    return f"derive latex {op.name} --lang {lang} --format {fmt}"


def render(op, fmt: str = "article", lang: str = "pt", *, source: str | None = None,
           command: str | None = None) -> str:
    """Render the derivation document of a declaration.

    Parameters
    ----------
    op : Activation
        The declaration (other kinds raise :class:`~derive.errors.DeriveError`).
    fmt : str
        ``"article"``, ``"beamer"``, ``"fragment"`` or ``"markdown"``.
    lang : str
        ``"pt"`` or ``"en"``.
    source, command : str, optional
        For the header: where the declaration came from and how to regenerate the file.

    Returns
    -------
    str
        The document; the same bytes every time for the same inputs.

    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    words = language(lang)
    view = document_view(op, words)
    template = environment().get_template(f"latex/shared/document.{fmt}.jinja")
    return template.render(
        view=view,
        words=words.words,
        lang=lang,
        source=source or default_source(op),
        command=command or default_command(op, fmt, lang),
    )


def render_jupyter(op, lang: str = "en") -> str:
    r"""The derivation as ``$$\begin{aligned} ... \end{aligned}$$`` displays, for Jupyter.

    The view is the document's (:func:`~derive.latex.context.document_view`, chosen by
    the declaration's type) and the layout that of its kind, in
    ``templates/latex/shared/jupyter.<kind>.jinja``: an activation's derivative; a
    loss's definition and gradient; a layer's definition and one display per gradient.
    Only standard math is written (no sectioning, no preamble macros), as MathJax and
    KaTeX render no more.

    Parameters
    ----------
    op : Activation, Loss or Layer
        The declaration (other kinds raise :class:`~derive.errors.DeriveError`).
    lang : str
        ``"pt"`` or ``"en"``: the language of the rule names tagging the steps.

    Returns
    -------
    str
        One or more consecutive displays, starting and ending with ``$$``.

    """
    words = language(lang)
    view = document_view(op, words)
    template = environment().get_template("latex/shared/jupyter.jinja")
    # Trimmed so that the text is exactly its displays (no blank lines around them).
    return template.render(view=view, words=words.words, lang=lang).strip()
