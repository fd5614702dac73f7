"""LaTeX and Markdown derivations: printer, template context, rendering, compilation.

``render(op, fmt, lang)`` gives the document's text; ``compile_pdf(tex, path)`` its PDF.
"""

from derive.latex.compile import compile_pdf
from derive.latex.render import FORMATS, LANGUAGES, SUFFIXES, render, render_jupyter

__all__ = ["FORMATS", "LANGUAGES", "SUFFIXES", "compile_pdf", "render", "render_jupyter"]
