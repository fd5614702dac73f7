"""LaTeX and Markdown derivations: printer, template context, rendering, compilation.

``render(op, fmt, lang)`` gives the document's text; ``compile_pdf(tex, path)`` its PDF.
Importing this package also makes derivation records display as LaTeX in Jupyter.
"""

from derive.calculus.derivation import register_jupyter_renderer
from derive.latex.compile import compile_pdf
from derive.latex.render import FORMATS, LANGUAGES, SUFFIXES, render, render_jupyter

# Derivation records show themselves in Jupyter through this stage; the calculus stage
# cannot import it (it comes first), so the LaTeX stage registers itself on import.
register_jupyter_renderer(render_jupyter)

__all__ = ["FORMATS", "LANGUAGES", "SUFFIXES", "compile_pdf", "render", "render_jupyter"]
