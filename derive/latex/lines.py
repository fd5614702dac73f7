r"""Wide formulas broken over lines, not shrunk.

A printed formula is LaTeX text; it may break before a ``+``, ``-``, ``\odot`` or
``\cdot`` that stands outside every brace (not inside a fraction, a sub- or superscript,
a ``cases``), or before a ``cases`` that is a factor, preferably outside every
``\left``/``\right`` pair. When a formula is wider than its line, :func:`fit` offers
LaTeX a second version of it broken at those signs, in an ``aligned`` block, and the
``\deriveFit`` macro of the preamble keeps the one-line version whenever it fits (TeX
measures; the estimate here only chooses where to break). A break inside
``\left( ... \right)`` closes the open delimiters with ``\right.`` at the end of the line
and opens them again with ``\left.`` on the next.
"""

from __future__ import annotations

import re

#: Estimated width (in characters of ordinary math) a line of a broken formula aims at.
LINE = 46
#: The shortest last line a break may leave, as a fraction of :data:`LINE`.
SHORTEST = 0.3
#: A product is cut between its factors only when wider than this many lines.
FACTORS = 1.3
#: A parenthesis no wider than this (in characters) is never cut inside.
SHORT = 0.5 * LINE

_COMMAND = re.compile(r"\\([A-Za-z]+|.)")
#: Commands that print nothing (or only space) at their own width.
_SILENT = {"left", "right", "displaystyle", "quad", "qquad", "big", "Big", "bigg", "Bigg",
           "bigl", "bigr", "Bigl", "Bigr", "mathrm", "mathbf", "boxed", "limits"}
_NARROW = {",", ";", ":", "!", " "}


def _group(tex: str, i: int) -> int:
    """The index just after the brace group that starts at ``tex[i] == "{"``."""
    depth = 0
    for j in range(i, len(tex)):
        if tex[j] == "\\":
            continue
        if tex[j] == "{" and (j == 0 or tex[j - 1] != "\\"):
            depth += 1
        elif tex[j] == "}" and tex[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(tex)


def width(tex: str) -> float:
    r"""A rough width of math ``tex``, in characters of ordinary math.

    Fractions count their wider part, scripts 70 %, a command name one glyph.
    """
    total = 0.0
    i = 0
    while i < len(tex):
        c = tex[i]
        if c == "\\":
            m = _COMMAND.match(tex, i)
            name = m.group(1)
            i = m.end()
            if name in ("frac", "dfrac", "tfrac"):
                a_end = _group(tex, i)
                b_end = _group(tex, a_end)
                total += max(width(tex[i + 1:a_end - 1]), width(tex[a_end + 1:b_end - 1])) + 0.6
                i = b_end
            elif name in ("operatorname", "text", "mathrm", "texttt"):
                end = _group(tex, i)
                total += len(tex[i + 1:end - 1]) * 0.9
                i = end
            elif name in _SILENT or name in _NARROW:
                pass
            elif name in ("sum", "prod"):
                total += 1.6
            else:
                total += 1.0
        elif c in "_^":
            i += 1
            if i < len(tex) and tex[i] == "{":
                end = _group(tex, i)
                total += 0.7 * width(tex[i + 1:end - 1])
                i = end
            else:
                total += 0.7
                i += 1
        elif c in "{} ":
            i += 1
        else:
            total += 1.6 if c in "+-=<>" else 1.0
            i += 1
    return total


def _delimiter(tex: str, i: int) -> int:
    r"""The index after the delimiter of a ``\left`` or ``\right`` that ends at ``i``."""
    while i < len(tex) and tex[i] == " ":
        i += 1
    if tex.startswith("\\", i):
        m = _COMMAND.match(tex, i)
        return m.end()
    return i + 1


def _enter(groups: list, closed: bool = False) -> None:
    groups.append(([], [closed]))


def _leave(groups: list) -> None:
    """Close the innermost group: its breaks count unless it holds an equation."""
    if len(groups) > 1:
        inner, equation = groups.pop()
        if not equation[0]:
            groups[-1][0].extend(inner)


def _breaks(tex: str) -> list[tuple[int, int]]:
    r"""Where the formula may break: (index of a space, ``\left`` groups open there).

    Before a top-level sign or product, that is.

    Nothing inside a bracket that holds an equation (Iverson's [r = i + S h]) breaks,
    nor inside plain parentheses (a function's argument).
    """
    # One list of candidates per open \left group, and whether the group holds "=".
    groups: list[tuple[list, list]] = [([], [False])]
    depth = 0
    envs = 0
    i = 0
    while i < len(tex):
        c = tex[i]
        if c == "\\":
            m = _COMMAND.match(tex, i)
            name = m.group(1)
            if (name == "left" and depth == 0 and envs == 0
                    and tex[:i].rstrip().endswith(r"\right]") and tex[i - 1] == " "):
                # Between two brackets of a product ([c = c'] [r = i + S h]).
                groups[-1][0].append((i - 1, len(groups) - 1))
            if name in ("left", "right"):
                end = _delimiter(tex, m.end())
                if name == "left":
                    # A short parenthesis or bracket ((x_{n'} − μ_c)², ∂/∂μ [x − μ_c])
                    # is one piece of its term: never cut inside it.
                    short = (tex[m.end():end].strip() in ("(", "[")
                             and width(tex[end:_matching_right(tex, end)]) <= SHORT)
                    _enter(groups, closed=short)
                else:
                    _leave(groups)
                i = end
                continue
            if name == "begin":
                if (depth == 0 and envs == 0 and i > 0 and tex[i - 1] == " "
                        and tex.startswith(("{cases}", "{dcases}"), m.end())):
                    # Between a product's factors and a piecewise factor (Σ Σ Σ {cases}):
                    # the cases, as wide as the rest, get a line of their own.
                    groups[-1][0].append((i - 1, len(groups) - 1))
                envs += 1
            elif name == "end":
                envs -= 1
            elif (name in ("odot", "cdot", "times") and depth == 0 and envs == 0
                  and i > 0 and tex[i - 1] == " "):
                groups[-1][0].append((i - 1, len(groups) - 1))
            i = m.end()
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c in "([" and depth == 0:
            # Plain parentheses hold a function's argument (ln(1 − ŷ)): never cut.
            _enter(groups, closed=True)
        elif c in ")]" and depth == 0:
            _leave(groups)
        elif c == "=" and depth == 0:
            groups[-1][1][0] = True
        elif (c in "+-" and depth == 0 and envs == 0 and 0 < i < len(tex) - 1
              and tex[i - 1] == " " and tex[i + 1] == " "):
            groups[-1][0].append((i - 1, len(groups) - 1))
        i += 1
    out = [b for group, _ in groups for b in group]
    return sorted(out)


def _matching_right(tex: str, start: int) -> int:
    r"""The index of the ``\right`` that closes the ``\left`` whose content starts at ``start``."""
    depth = 1
    for m in re.finditer(r"\\(left|right)\b", tex[start:]):
        depth += 1 if m.group(1) == "left" else -1
        if depth == 0:
            return start + m.start()
    return len(tex)


def _is_factor_break(tex: str, pos: int) -> bool:
    """Whether the break at ``pos`` parts a factor from what it multiplies.

    Before a product's dot, a cases block or a bracket; not before a sign, nor before
    ⊙ or ×, which join two operands of their own (a Hadamard product of two blocks).
    """
    return not tex[pos + 1:].lstrip().startswith(("+", "-", r"\odot", r"\times"))


def _keep_factors_together(tex: str, candidates: list[tuple[int, int]]) -> list:
    """``candidates`` without the breaks inside a product that fits a line as it is.

    1/m ∂E/∂σ² · ∂/∂x [Σ (x − μ)²] stays whole, a factor never parted from what it
    multiplies, unless the term is much wider than a line (Σ Σ Σ · {cases}).
    """
    signs = [(pos, lv) for pos, lv in candidates if not _is_factor_break(tex, pos)]
    kept = []
    for pos, lv in candidates:
        if _is_factor_break(tex, pos):
            before = [p for p, v in signs if p < pos and v <= lv]
            after = [p for p, v in signs if p > pos and v <= lv]
            term = tex[before[-1] if before else 0:after[0] if after else len(tex)]
            if width(term) <= FACTORS * LINE:
                continue
        kept.append((pos, lv))
    return kept


def _open_delimiters(tex: str) -> int:
    return len(re.findall(r"\\left\b", tex)) - len(re.findall(r"\\right\b", tex))


def split(tex: str, line: float = LINE) -> list[str]:
    r"""``tex`` cut at its top-level signs into lines of about ``line`` characters.

    The breaks at the fewest open ``\\left`` delimiters are tried first (between the
    terms of the outer sum), deeper ones only when those lines are still too wide.
    One piece when there is nowhere to break.
    """
    candidates = _breaks(tex)
    if not candidates or width(tex) <= line:
        return [tex]
    # Between terms first, at any depth; between a factor and what it multiplies only
    # when that leaves a line too wide.
    signs = [(pos, lv) for pos, lv in candidates if not _is_factor_break(tex, pos)]
    pieces = _cut(tex, signs, line)
    if max(width(p) for p in pieces) <= line:
        return pieces
    return _cut(tex, _keep_factors_together(tex, candidates), line)


def _cut(tex: str, candidates: list[tuple[int, int]], line: float) -> list[str]:
    """``tex`` cut at ``candidates``, the shallowest levels first, greedily."""
    best = [tex]
    for level in sorted({lv for _, lv in candidates}):
        allowed = [pos for pos, lv in candidates if lv <= level]
        pieces, start, last = [], 0, None
        for pos in allowed:
            if width(tex[start:pos]) > line and last is not None and last > start:
                pieces.append(tex[start:last])
                start = last + 1
            last = pos
        if width(tex[start:]) > line and last is not None and last > start:
            pieces.append(tex[start:last])
            start = last + 1
        pieces.append(tex[start:])
        pieces = [p.strip() for p in pieces if p.strip()]
        # A last line of a few characters ("+ S h]") is a worse page than a formula
        # shrunk a little: such a cut is not offered, unless the line is a whole operand
        # of an outermost ⊙ (… ⊙ f'(s⁽¹⁾)), as the δ recursion writes it.
        if (len(pieces) > 1 and width(pieces[-1]) < SHORTEST * line
                and not (level == 0 and pieces[-1].startswith(r"\odot"))):
            continue
        best = pieces
        if max(width(p) for p in pieces) <= line:
            break
    return best


def _carried(pieces: list[str]) -> list[str]:
    r"""Per line, what the delimiters left open across its breaks enclose on that line.

    The text before the ``\right`` that closes a delimiter opened on an earlier line, and
    after the outermost ``\left`` still open at the line's end.
    """
    out, carry = [], 0
    for piece in pieces:
        events = [(m.start(), 1 if m.group(1) == "left" else -1)
                  for m in re.finditer(r"\\(left|right)\b", piece)]
        depth, depths = carry, []
        for _, step in events:
            depth += step
            depths.append(depth)
        inside = ""
        closes = [pos for (pos, step), d in zip(events, depths, strict=True)
                  if step < 0 and d < carry]
        if carry:
            inside += piece[:closes[-1]] if closes else piece
        lowest = min([carry, *depths])
        if depth > lowest:
            # The last \left that rose above the lowest depth and stayed there.
            opens = [pos for k, ((pos, step), d) in enumerate(zip(events, depths, strict=True))
                     if step > 0 and d == lowest + 1 and min(depths[k:]) > lowest]
            inside += " " + piece[opens[0]:]
        out.append(inside)
        carry = depth
    return out


def _strut(pieces: list[str]) -> str:
    r"""A phantom as tall as the tallest thing a delimiter broken across lines encloses.

    ``\left[ b_f \right.`` on one line and ``\left. + \sum … \right]`` on the next would
    open small and close tall; with the phantom on every line both halves match.
    """
    inside = " ".join(pieces)
    if r"\sum_" in inside or r"\prod_" in inside:
        return r"\vphantom{\sum_{1}^{1}}"
    if r"\frac" in inside or r"\begin{cases}" in inside:
        return r"\vphantom{\frac{1}{1}}"
    return ""


#: A piece that ends with a big operator and its limits (\sum_{j=1}^{K}): its operand follows.
_OPERATOR_LAST = re.compile(r"\\(?:sum|prod)_\{(?:[^{}]|\{[^{}]*\})*\}"
                            r"(?:\^\{(?:[^{}]|\{[^{}]*\})*\})?\s*$")


def aligned(pieces: list[str]) -> str:
    r"""Lines as an ``aligned`` block, ``\left``/``\right`` balanced on each line.

    The first line is flush, the others indented by ``\quad``, each with its sign, and by
    one ``\quad`` more for each bracket it continues. A delimiter broken across lines gets
    the same height on each of its lines.
    """
    lines, depths = [], []
    carry = 0
    strut = _strut(_carried(pieces))
    for k, piece in enumerate(pieces):
        if k and not piece.startswith(("+", "-", r"\odot", r"\cdot", r"\times")) and not (
                _OPERATOR_LAST.search(pieces[k - 1])):
            # A product cut between two factors; after Σ_{j=1}^{K} the line holds the
            # summand, which a dot would set apart as a second factor.
            piece = r"\cdot " + piece
        # "{}+ K…": a sign that opens a line is the binary operator it was, spaced as one.
        binary = k and piece.startswith(("+", "-", r"\odot", r"\cdot", r"\times"))
        opened = carry
        depths.append(opened)
        text = r"\left. " * carry + ("{}" if binary else "") + piece
        carry = _open_delimiters(text)
        if opened and strut:
            text = text.replace(r"\left. " * opened, r"\left. " * opened + strut + " ", 1)
        if carry and strut:
            text += " " + strut
        text += r" \right." * carry
        lines.append(text)
    # A line that continues inside a bracket opened on an earlier line is indented one
    # \quad more per open bracket: at the terms' indent it would read as a term of its own.
    body = r" \\ ".join(("&" if k == 0 else "&" + r"\quad " * (1 + d)) + t
                         for k, (t, d) in enumerate(zip(lines, depths, strict=True)))
    return r"\begin{aligned}[t] " + body + r" \end{aligned}"


def fit(tex: str, limit: str = r"\linewidth", lead: str = "", boxed: bool = False,
        line: float = LINE) -> str:
    r"""``\deriveFit[limit]{lead tex}``, or ``\deriveFitBroken`` with a broken version.

    LaTeX takes the version broken over lines when the one-line one is wider than
    ``limit``.

    Parameters
    ----------
    tex : str
        A printed formula (math mode, no enclosing ``$``).
    limit : str
        The widest the formula may be, a TeX dimension (``0.8\linewidth``).
    lead : str
        What comes before the formula on its first line (``f'(x) = ``).
    boxed : bool
        Frame the whole (a result).
    line : float
        The estimated width, in characters, a broken line aims at.

    Returns
    -------
    str
        LaTeX for the body of a display or of an ``align`` cell.

    """
    pieces = split(tex, line - width(lead))

    def frame(body):
        return rf"\boxed{{{body}}}" if boxed else body

    one = frame(lead + tex)
    if len(pieces) == 1:
        return rf"\deriveFit[{limit}]{{{one}}}"
    return rf"\deriveFitBroken[{limit}]{{{one}}}{{{frame(lead + aligned(pieces))}}}"
