"""What a lecture says about an activation, computed rather than typed.

The limits at ±∞ come from ``sympy.limit`` (each ``Piecewise`` first replaced by the
branch that holds far out); the range, the maximum of f' and where it is reached, the
inputs beyond which |f'| < 10⁻³ (saturation: the vanishing gradients of the notes,
seed 004 §7.8), the one-sided values at the kinks and the graphs' coordinates are
computed from the same expressions the derivation ends with, in 50 digits
(:mod:`derive.latex.numeric`), at the declaration's default parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import mpmath
import numpy as np
import sympy as sp

from derive.calculus.functions import explicit
from derive.latex.numeric import DIGITS, compile_numeric
from derive.spec import Activation, x

#: |f'| below this counts as saturated (the notes' "muito próximos de zero").
SATURATION = sp.Rational(1, 1000)
#: The analysis grid: [−WINDOW, WINDOW] in steps of 1/4, then far probes out to ~10⁶.
WINDOW = 40
FAR = tuple(WINDOW * 2**k for k in range(1, 16))
#: Samples per graph.
PLOT_SAMPLES = 161
#: Values beyond this are left out of graphs (a break in the line).
PLOT_CLIP = 1e4


@dataclass(frozen=True)
class Limit:
    """The limit of a function as x → −∞ or +∞.

    Attributes
    ----------
    value : sympy.Expr or None
        The limit (possibly ±oo); None when there is none (oscillation).
    exact : bool
        Whether SymPy found it (else it was estimated numerically).

    """

    value: sp.Expr | None
    exact: bool

    @property
    def number(self) -> float | None:
        """The limit as a float (±inf included)."""
        return None if self.value is None else float(self.value)


@dataclass(frozen=True)
class Bound:
    """One end of the range of f: a number (reached or not) or ±∞."""

    value: float
    exact: sp.Expr | None
    closed: bool


@dataclass(frozen=True)
class Extremum:
    """The supremum of f' and where it is reached.

    ``lo == hi`` is a single point; ``lo < hi`` an interval (None for an infinite end);
    ``attained`` False means it is only approached as x → ``towards``·∞.
    """

    value: float
    lo: float | None
    hi: float | None
    lo_closed: bool = True
    hi_closed: bool = True
    attained: bool = True
    towards: int = 0
    exact_at: bool = True
    #: The location as an exact number when it is one the decimals do not show (√2, where
    #: GELU'' = φ(x)(2 − x²) vanishes), else None.
    at: sp.Expr | None = None


@dataclass(frozen=True)
class Saturation:
    """|f'(x)| < 10⁻³ for every x beyond ``threshold`` on one side.

    Attributes
    ----------
    side : int
        −1 for x → −∞, +1 for x → +∞.
    threshold : float
        Where saturation starts.
    zero : bool
        f' is exactly 0 there (units whose input stays there stop learning).

    """

    side: int
    threshold: float
    zero: bool


@dataclass(frozen=True)
class Kink:
    """A point where f is not differentiable: one-sided values of f and f'."""

    at: float
    f_left: float
    f_at: float
    f_right: float
    df_left: float
    df_at: float
    df_right: float

    @property
    def continuous(self) -> bool:
        """Whether f is continuous there (else it jumps)."""
        return _close(self.f_left, self.f_right)

    @property
    def smooth(self) -> bool:
        """Whether the one-sided derivatives agree (f is differentiable after all)."""
        return _close(self.df_left, self.df_right)

    @property
    def owner(self) -> int:
        """Which one-sided derivative f'(at) adopts: −1 the left, +1 the right, 0 neither."""
        if self.smooth:
            return 0
        if _close(self.df_at, self.df_left):
            return -1
        return 1 if _close(self.df_at, self.df_right) else 0


@dataclass(frozen=True)
class Curve:
    """A graph: line segments (broken at jumps), and the dots of a jump.

    ``filled`` dots mark the value at a jump (the owner branch's), ``hollow`` the
    one-sided limits that are not taken.
    """

    segments: tuple[tuple[tuple[float, float], ...], ...]
    filled: tuple[tuple[float, float], ...]
    hollow: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Facts:
    """Properties of f and f' at the default parameters."""

    limits: tuple[Limit, Limit]
    dlimits: tuple[Limit, Limit]
    lower: Bound
    upper: Bound
    dmax: Extremum | None
    increasing: bool
    decreasing: bool
    flat: bool
    saturation: tuple[Saturation, ...]
    kinks: tuple[Kink, ...]
    window: tuple[float, float]
    f_curve: Curve
    df_curve: Curve
    #: The values f takes when it is a step function (f' = 0 wherever it is defined), e.g.
    #: ("0", "1") for the Heaviside step: its range is that set, not the interval between.
    levels: tuple[str, ...] = ()
    #: f' > 0 at every sample, at the far probes and on both sides of every kink: f is
    #: (strictly) increasing, not merely non-decreasing.
    strictly_increasing: bool = False
    #: The limits of f' at ±∞ in the parameters' symbols where they depend on them
    #: (Leaky ReLU's α as x → −∞), else None: prose names the symbol, then its value.
    dlimits_symbolic: tuple[sp.Expr | None, sp.Expr | None] = (None, None)


def _close(a, b, tol=1e-9) -> bool:
    return abs(a - b) <= tol * (1 + abs(a))


def _levels(df: sp.Expr, fvals) -> tuple[str, ...]:
    """The LaTeX of each value a step function takes, in order; () unless f' is zero."""
    if df != 0:
        return ()
    found = sorted({float(v) for _, v in fvals if v is not None})
    return tuple(sp.latex(sp.nsimplify(v, rational=True)) for v in found) if len(found) > 1 else ()


def concrete_values(op: Activation) -> dict[sp.Symbol, sp.Expr]:
    """Default parameters as exact decimals, and noise at its evaluation-mode value."""
    values = {p.symbol: sp.Rational(repr(float(p.default))) for p in op.params}
    values |= {n.symbol: sp.sympify(n.eval_value).subs(values) for n in op.noise}
    return values


def _far_branch(expr: sp.Expr, sign: int) -> sp.Expr:
    """Replace each Piecewise by the branch that holds for x far out on one side."""
    far = sign * sp.Integer(10) ** 30

    def pick(*args):
        for e, c in args:
            if bool(c.subs(x, far)):
                return e
        return sp.nan

    return expr.replace(sp.Piecewise, lambda *a: pick(*a))


def limit_at(expr: sp.Expr, sign: int, value) -> Limit:
    """The limit of ``expr`` (in x only) as x → sign·∞: SymPy first, numbers if it fails.

    SymPy's answer is kept only when the numbers agree with it (SymPy 1.14 says
    2^x → ∞ as x → −∞); otherwise the limit is estimated from values far out.
    """
    a, b = value(sign * 1e3), value(sign * 1e6)
    try:
        found = sp.limit(explicit(_far_branch(expr, sign)), x, sign * sp.oo)
        if found.is_extended_real and not found.free_symbols and _plausible(found, a, b):
            return Limit(found, True)
    except (NotImplementedError, TypeError, ValueError, AttributeError):
        # SymPy gives up on some forms; the numbers below decide instead.
        pass
    if a is None or b is None:
        return Limit(None, False)
    if _close(float(a), float(b)):
        return Limit(sp.Float(float(b), 15), False)
    if abs(b) > abs(a) and (a > 0) == (b > 0):
        return Limit(sp.oo if b > 0 else -sp.oo, False)
    return Limit(None, False)


def symbolic_limit(expr: sp.Expr, sign: int) -> sp.Expr | None:
    """The limit of ``expr`` as x → sign·∞ when it depends on a parameter, else None.

    Only a limit SymPy finds in closed form counts (α, λ, the random slope r);
    one it cannot take is left to the numbers at the defaults.
    """
    try:
        found = sp.limit(explicit(_far_branch(expr, sign)), x, sign * sp.oo)
    except (NotImplementedError, ValueError, TypeError):
        return None
    if found.has(sp.Limit, sp.AccumBounds, sp.oo, -sp.oo, sp.zoo, sp.nan):
        return None
    return found if found.free_symbols else None


def _plausible(found: sp.Expr, a, b) -> bool:
    """Whether values at 10³ and 10⁶ (same side) are consistent with the limit ``found``."""
    if a is None or b is None:
        return True
    if found.is_infinite:
        return abs(b) > abs(a) and (b > 0) == (found > 0)
    return abs(float(b) - float(found)) <= 0.1 * (1 + abs(float(found)))


def _golden_max(g, lo, hi, iterations=80):
    """Maximise g on [lo, hi] (unimodal there) by golden-section search."""
    with mpmath.workdps(DIGITS):
        r = (mpmath.sqrt(5) - 1) / 2
        a, b = mpmath.mpf(lo), mpmath.mpf(hi)
        c, d = b - r * (b - a), a + r * (b - a)
        for _ in range(iterations):
            if (g(c) or -mpmath.inf) > (g(d) or -mpmath.inf):
                b, d = d, c
                c = b - r * (b - a)
            else:
                a, c = c, d
                d = a + r * (b - a)
        best = (a + b) / 2
        return best, g(best)


def _bisect(pred, inside, outside, iterations=80):
    """The boundary between a point where ``pred`` holds and one where it does not."""
    with mpmath.workdps(DIGITS):
        a, b = mpmath.mpf(inside), mpmath.mpf(outside)
        for _ in range(iterations):
            m = (a + b) / 2
            if pred(m):
                a = m
            else:
                b = m
        return (a + b) / 2


def _tidy(t) -> float:
    """A location rounded to 6 decimals (so that 0.0000000001 reads as 0)."""
    v = round(float(t), 6)
    return v + 0.0


def _range_end(values, limits, side: int, F) -> Bound:
    """The lower (side −1) or upper (side +1) end of the range of f.

    Either a limit at ±∞ (reached if some input gives exactly that value) or, when the
    grid goes beyond every limit, an extremum at a finite input, refined.
    """
    pick = min if side < 0 else max
    nums = [lim.number for lim in limits if lim.number is not None]
    limit = pick(nums) if nums else None
    if limit is not None and limit == side * float("inf"):
        return Bound(limit, side * sp.oo, False)
    best_value, best_at = pick((float(v), t) for t, v in values if v is not None)
    past = limit is None or (side * (best_value - limit) > 0 and not _close(best_value, limit))
    if past:
        at, v = _golden_max(lambda t: None if F(t) is None else side * F(t),
                            best_at - 0.25, best_at + 0.25)
        # A minimum at x = 0 is found at x = 1e-18; the rounded location gives it exactly.
        snapped = F(_tidy(at))
        if snapped is not None and side * snapped >= v:
            v = side * snapped
        return Bound(side * float(v), None, True)
    exact = next(lim.value for lim in limits if lim.number == limit)
    with mpmath.workdps(DIGITS):
        target = mpmath.mpf(str(sp.N(exact, DIGITS + 5)))
        tol = mpmath.mpf(10) ** (5 - DIGITS) * (1 + abs(target))
        reached = any(v is not None and abs(v - target) <= tol for _, v in values)
    return Bound(limit, exact, reached)


def _plateau_end(dF, M, i, step, xs, limit) -> tuple[float | None, bool]:
    """Where the plateau of f' = M that contains xs[i] ends, walking by ``step``."""
    j = i
    while 0 <= j + step < len(xs) and _equal(dF(xs[j + step]), M):
        j += step
    if not 0 <= j + step < len(xs):
        if limit is not None and _close(limit, float(M)):
            return None, False
    inside, outside = xs[j], xs[j + step] if 0 <= j + step < len(xs) else xs[j] + step
    edge = _tidy(_bisect(lambda t: _equal(dF(t), M), inside, outside))
    return edge, _equal(dF(edge), M)


def _equal(v, M) -> bool:
    return v is not None and abs(v - M) <= mpmath.mpf(10) ** (10 - DIGITS) * (1 + abs(M))


def _dmax(dF, xs, dvals, dlimits, df: sp.Expr) -> Extremum | None:
    """The supremum of f' and where it is reached (None when f' is unbounded)."""
    lims = [lim.number for lim in dlimits]
    if float("inf") in lims:
        return None
    M, i = max(((v, i) for i, v in enumerate(dvals) if v is not None), key=lambda p: p[0])
    if sum(_equal(v, M) for v in dvals) >= 3:
        lo, lo_closed = _plateau_end(dF, M, i, -1, xs, lims[0])
        hi, hi_closed = _plateau_end(dF, M, i, +1, xs, lims[1])
        return Extremum(float(M), lo, hi, lo_closed, hi_closed)
    at, value = _golden_max(dF, xs[max(i - 1, 0)], xs[min(i + 1, len(xs) - 1)])
    for side, lim in ((-1, lims[0]), (1, lims[1])):
        if lim is not None and lim >= float(value) - 1e-12 * (1 + abs(lim)):
            # Only approached far out, e.g. softplus' = σ → 1 as x → +∞.
            return Extremum(lim, None, None, False, False, attained=False, towards=side)
    point = _tidy(at)
    # The rounded location is the maximiser if f' there is at least the maximum the search
    # found (to all 50 digits): σ' at x = 0, SELU' at its kink, S' at x = θ.
    with mpmath.workdps(DIGITS):
        # The decimal the location prints as (2.8, not the float nearest to it).
        there = dF(mpmath.mpf(repr(point)))
        exact = there is not None and there >= value - mpmath.mpf(10) ** (5 - DIGITS)
    if exact:
        return Extremum(float(there), point, point)
    root = _exact_root(df, point)
    if root is not None and abs(float(root) - float(at)) < 1e-6:
        return Extremum(float(value), float(root), float(root), at=root)
    return Extremum(float(value), point, point, exact_at=False)


def _exact_root(df: sp.Expr, near: float) -> sp.Expr | None:
    """The zero of f'' near ``near`` as a short exact number (√2, 7/3), if it is one.

    The root is refined in 50 digits, recognised by ``sympy.nsimplify`` (which finds
    low-degree algebraic numbers from their digits) and kept only if it is short and
    f'' vanishes there exactly (SymPy simplifies f''(candidate) to 0): a transcendental
    maximiser (SiLU's) comes back as a long fraction and is left as a decimal.
    """
    ddf = sp.diff(explicit(df), x)
    ddF = compile_numeric(ddf, x)
    with mpmath.workdps(DIGITS):
        try:
            root = mpmath.findroot(lambda t: ddF(t), mpmath.mpf(near))
        except (ValueError, TypeError, ZeroDivisionError):
            return None
        found = sp.nsimplify(sp.Float(root, DIGITS), tolerance=sp.Float(10) ** (10 - DIGITS))
    if found.has(sp.Float) or any(abs(q.p) > 100 or q.q > 100 for q in found.atoms(sp.Rational)):
        return None
    return found if sp.simplify(ddf.subs(x, found)) == 0 else None


def _saturation(dF, dlimits, side: int) -> Saturation | None:
    """Where |f'| drops below 10⁻³ for good on one side, if it does."""
    lim = dlimits[0 if side < 0 else 1].number
    if lim is None or abs(lim) >= float(SATURATION):
        return None
    probes = sorted({float(t) for t in np.linspace(0, WINDOW, 4 * WINDOW + 1)} | set(FAR))
    probes = [side * t for t in probes]

    def big(t):
        v = dF(t)
        return v is not None and abs(v) >= SATURATION

    last = max((k for k, t in enumerate(probes) if big(t)), default=None)
    if last is None:
        # |f'| is small all the way from 0: start at the first probe on the other side.
        inside = -side * WINDOW
        if not big(inside):
            return None
        threshold = _bisect(big, inside, 0)
    elif last + 1 == len(probes):
        return None
    else:
        threshold = _bisect(big, probes[last], probes[last + 1])
    beyond = [threshold + side * d for d in (1e-6, 0.5, 3, 40)]
    zero = all(dF(t) is not None and dF(t) == 0 for t in beyond)
    return Saturation(side, _tidy(threshold), zero)


def _positive(dF, dvals, kinks: tuple[Kink, ...]) -> bool:
    """Whether f' > 0 at every grid sample (|x| ≤ 40) and on both sides of every kink.

    Checked in 50 digits, so σ'(±40) ≈ 4·10⁻¹⁸ counts as positive, as it is. The far
    probes are left out: there σ(1 − σ) loses every digit to cancellation.
    """
    sides = [v for k in kinks for v in (k.df_left, k.df_at, k.df_right)]
    return all(v is not None and v > 0 for v in dvals) and all(v > 0 for v in sides)


def _kink(F, dF, k: float) -> Kink:
    with mpmath.workdps(DIGITS):
        eps = mpmath.mpf(10) ** -20
        k_ = mpmath.mpf(k)
        vals = [F(k_ - eps), F(k_), F(k_ + eps), dF(k_ - eps), dF(k_), dF(k_ + eps)]
    return Kink(k, *[float(v) if v is not None else float("nan") for v in vals])


def _curve(F, window, kinks: tuple[Kink, ...], use_df: bool) -> Curve:
    lo, hi = window
    xs = sorted({round(float(t), 6) for t in np.linspace(lo, hi, PLOT_SAMPLES)})
    inside = [k for k in kinks if lo < k.at < hi]
    jumps = {}
    for k in inside:
        left, at, right = (k.df_left, k.df_at, k.df_right) if use_df else (
            k.f_left, k.f_at, k.f_right)
        if _close(left, right):
            xs.append(k.at)
        else:
            jumps[k.at] = (left, at, right)
    xs = sorted(set(xs) - set(jumps))
    segments, current = [], []
    filled, hollow = [], []
    breaks = sorted(jumps)
    for t in xs:
        while breaks and breaks[0] < t:
            b = breaks.pop(0)
            left, at, right = jumps[b]
            current.append((b, left))
            segments.append(tuple(current))
            current = [(b, right)]
            filled.append((b, at))
            hollow += [(b, v) for v in (left, right) if not _close(v, at)]
        v = F(t)
        if v is None or abs(v) > PLOT_CLIP:
            if len(current) > 1:
                segments.append(tuple(current))
            current = []
            continue
        current.append((t, float(v)))
    if len(current) > 1:
        segments.append(tuple(current))
    return Curve(tuple(segments), tuple(filled), tuple(hollow))


def _window(op: Activation, saturation: tuple[Saturation, ...]) -> tuple[float, float]:
    """The declared domain, widened to show saturation when it starts nearby."""
    lo, hi = op.domain
    reach = 2.5 * max(abs(lo), abs(hi))
    for s in saturation:
        if abs(s.threshold) <= reach:
            if s.side < 0:
                lo = min(lo, float(np.floor(s.threshold - 1)))
            else:
                hi = max(hi, float(np.ceil(s.threshold + 1)))
    return (lo, hi)


@cache
def activation_facts(op: Activation, forward: sp.Expr, derivative: sp.Expr,
                     kinks: tuple[float, ...]) -> Facts:
    """The properties and graphs of an activation at its default parameters.

    Parameters
    ----------
    op : Activation
        The declaration (for its defaults and domain).
    forward, derivative : sympy.Expr
        f and f' as derived (the same expressions the derivation ends with).
    kinks : tuple of float
        Where f is not differentiable.

    Returns
    -------
    Facts
        Limits, range, maximum of f', saturation, kinks and graph coordinates.

    """
    values = concrete_values(op)
    f, df = forward.subs(values), derivative.subs(values)
    F, dF = compile_numeric(f, x), compile_numeric(df, x)
    limits = (limit_at(f, -1, F), limit_at(f, 1, F))
    dlimits = (limit_at(df, -1, dF), limit_at(df, 1, dF))
    xs = [float(t) for t in np.linspace(-WINDOW, WINDOW, 8 * WINDOW + 1)]
    fvals = [(t, F(t)) for t in xs]
    dvals = [dF(t) for t in xs]
    lower = _range_end(fvals, limits, -1, F)
    upper = _range_end(fvals, limits, +1, F)
    flat = all(v is None or abs(v) < SATURATION for v in dvals) and all(
        lim.number is not None and abs(lim.number) < float(SATURATION) for lim in dlimits)
    saturation = () if flat else tuple(
        s for s in (_saturation(dF, dlimits, -1), _saturation(dF, dlimits, 1)) if s)
    increasing = all(v is None or v >= 0 for v in dvals)
    decreasing = all(v is None or v <= 0 for v in dvals)
    kink_facts = tuple(_kink(F, dF, k) for k in kinks)
    levels = _levels(df, fvals)
    if levels:
        # f' = 0 wherever it exists says nothing about a step function's order: its
        # jumps do (the Heaviside step only rises).
        increasing = all(k.f_right >= k.f_left for k in kink_facts)
        decreasing = all(k.f_right <= k.f_left for k in kink_facts)
    strictly = increasing and _positive(dF, dvals, kink_facts)
    window = _window(op, saturation)
    return Facts(
        limits, dlimits, lower, upper, _dmax(dF, xs, dvals, dlimits, df), increasing, decreasing,
        flat,
        saturation, kink_facts, window,
        _curve(F, window, kink_facts, use_df=False), _curve(dF, window, kink_facts, use_df=True),
        levels, strictly,
        tuple(symbolic_limit(derivative, sign) for sign in (-1, 1)),
    )
