"""Losses: ∂L/∂pred[c, k] as the notes derive it, by the recipe the declaration names.

A loss declaration names its recipe (:attr:`derive.spec.Loss.recipe`); :data:`RECIPES`
maps each to the script that writes the steps. The notes' recipe (``"open_sum"``) drops
the sum over cases, opens the sum over outputs and keeps the one term that depends on
the prediction; losses on logits have scripts of their own, which show the logarithm of
the softmax or of the sigmoid taken apart first.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import sympy as sp

from derive.calculus.steps.checking import check_equal
from derive.calculus.steps.layer import TRIVIAL, fold_trivial_runs
from derive.calculus.steps.recording import Recorder, derivation_steps
from derive.calculus.steps.records import D, LossSteps, OpenSum, StepChain, sympified
from derive.calculus.steps.rules import named_identities
from derive.errors import DeriveError
from derive.spec import Loss

#: The case (batch element) and output a loss is differentiated at: ∂L/∂ŷ[c, k]. The sums
#: run over cases n and outputs j (the declaration's k, renamed so that k can be the
#: output we differentiate by, as in the notes); a softmax row sums over i.
CASE = sp.Symbol("c", integer=True, nonnegative=True)
ROW = sp.Symbol("i", integer=True, nonnegative=True)
#: The class label t_n of case n, as a loss for integer labels is defined with it.
LABEL = sp.IndexedBase("t", integer=True)
#: Sizes and indices at which loss derivations are checked.
LOSS_INSTANCE = {"N": 2, "K": 3, "case": 1, "k": 2}
#: Opening a sum term by term is shown when the summand is at most this long.
OPEN_SUM_OPS = 12


def loss_indices():
    """(n, j, k, N, K): the declaration's symbols the loss derivations print."""
    from derive.calculus.indexed import K, N, j, k, n

    return n, j, k, N, K


def printed_term(op) -> sp.Expr:
    """The declared summand with the printed indices: outputs j, softmax rows over i."""
    from derive.calculus.kinks import normalise_kinks

    n, j, k, _, _ = loss_indices()
    term = normalise_kinks(op.term, op.pred[n, k])
    return written(term.xreplace({j: ROW}).xreplace({k: j}), op.pred)


#: Even functions: SymPy writes f(ŷ − y) as f(y − ŷ), which is the same value.
EVEN = (sp.Abs, sp.cosh)


class Kept(sp.UnevaluatedExpr):
    """A difference kept as written (ŷ − y), that commutes like the numbers it stands for.

    A plain ``UnevaluatedExpr`` does not say it commutes: 1/cosh(ŷ − y) would then not
    count as a denominator, and would print cosh⁻¹(ŷ − y), which reads as the inverse.
    """

    is_commutative = True


def written(term: sp.Expr, pred) -> sp.Expr:
    """``term`` as a lecture writes it: −(a + b) with short terms first, f(ŷ − y).

    SymPy orders −y ln ŷ − (1 − y) ln(1 − ŷ) as it likes, and orders it differently again
    on every line of a derivation; written as −(y ln ŷ + (1 − y) ln(1 − ŷ)) in a
    :class:`~derive.calculus.functions.Terms`, the order and the sign stay put. An even
    function of y − ŷ is written of ŷ − y, as the declaration has it (kept unevaluated;
    :func:`plain` undoes it before differentiating). An element times a sum is written
    element first, y_j (z_j − ln Σ), as y_j ln ŷ_j is: SymPy sets the sum first.
    """
    from derive.calculus.functions import Terms

    term = elements_first(even_first(term, pred))
    if not isinstance(term, sp.Add) or not all(t.could_extract_minus_sign() for t in term.args):
        return term
    terms = sorted((-t for t in term.args),
                   key=lambda t: (sp.count_ops(t), sp.default_sort_key(t)))
    return -Terms(*terms)


def elements_first(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every product of array elements and sums written elements first.

    y_j (z_j − ln Σ), softmax_j (g_j − Σ g softmax), as a lecture writes a coefficient
    before the parentheses it multiplies; SymPy sets the sum first. The product is kept
    in a :class:`~derive.calculus.functions.Factors`, which prints its factors in order.

    Parameters
    ----------
    expr : sympy.Expr
        A formula to print.

    Returns
    -------
    sympy.Expr
        The same value; products with a function or with no element are left to the
        printer.
    """
    return expr.replace(_element_times_sum, _element_first)


def _element_times_sum(expr) -> bool:
    """Whether ``expr`` is a product of array elements and sums (and a number) alone."""
    if not isinstance(expr, sp.Mul):
        return False
    kinds = [isinstance(f, sp.Indexed) - isinstance(f, sp.Add)
             for f in sp.Mul.make_args(expr) if not f.is_Number]
    return 1 in kinds and -1 in kinds and 0 not in kinds


def _element_first(expr) -> sp.Expr:
    """The product :func:`_element_times_sum` matched, its elements before its sums."""
    from derive.calculus.functions import Factors

    coeff, rest = expr.as_coeff_Mul()
    factors = sp.Mul.make_args(rest)
    ordered = ([f for f in factors if isinstance(f, sp.Indexed)]
               + [f for f in factors if isinstance(f, sp.Add)])
    return coeff * Factors(*ordered)


def even_first(expr: sp.Expr, pred) -> sp.Expr:
    """``expr`` with every even f(y − ŷ) written f(ŷ − y), the argument kept unevaluated."""
    flipped = {e: e.func(Kept(-e.args[0])) for e in expr.atoms(*EVEN)
               if any(sp.diff(e.args[0], a).is_negative
                      for a in e.args[0].atoms(sp.Indexed) if a.base == pred)}
    return expr.xreplace(flipped)


def plain(expr: sp.Expr) -> sp.Expr:
    """``expr`` without the unevaluated arguments :func:`written` kept for the page."""
    return expr.replace(lambda e: isinstance(e, sp.UnevaluatedExpr), lambda e: e.args[0])


def _loss_recorder(op, var, name, whole, *, rows: bool):
    n, j, k, N, K = loss_indices()
    instance = {N: LOSS_INSTANCE["N"], K: LOSS_INSTANCE["K"], CASE: LOSS_INSTANCE["case"],
                k: LOSS_INSTANCE["k"]}
    samples = ((op.target, "rows"),) if rows else ()
    return Recorder(D(name, var), var, expansions=((name, whole),),
                    instance=tuple(instance.items()), samples=samples, case=CASE)


#: Odd functions a result may end in; f(y − ŷ) is finished as −f(ŷ − y).
ODD = (sp.sign, sp.tanh)


def prediction_first(expr: sp.Expr, var) -> sp.Expr | None:
    """``expr`` with every odd f(a) that falls as ``var`` grows written −f(−a), or None.

    A result read as a function of ŷ − y compares with the mean squared error's
    2(ŷ − y). SymPy would turn f(ŷ − y) straight back into −f(y − ŷ), so the argument
    is kept unevaluated; it prints as the plain difference.
    """
    odd = {e: -e.func(sp.UnevaluatedExpr(-e.args[0]))
           for e in expr.atoms(*ODD) if e.args[0].diff(var).is_negative}
    return expr.xreplace(odd) if odd else None


def _finish_loss(rec: Recorder, engine: sp.Expr, op=None) -> StepChain:
    """The declared algebra, then the engine's form when shorter.

    The declaration's :class:`~derive.spec.Rearrange` forms are derivatives of the
    summand; here they are multiplied by the scale and written for the case c. The
    chain ends at the output k it was taken for: that is the result the page boxes.
    """
    n, j, k, _, _ = loss_indices()
    for r in getattr(op, "rearrange", ()):
        rec.step(r.rule, op.scale * r.form.xreplace({n: CASE}),
                 identities=tuple(tuple(e.xreplace({n: CASE}) for e in identity)
                                  for identity in sympified(r.identities)))
    if sp.count_ops(engine) < sp.count_ops(rec.current) and engine != rec.current:
        rec.step("rewrite", engine, identities=named_identities(rec.current, engine))
    steps = fold_closing(fold_trivial_runs(rec.steps))
    rec.steps[:] = [_cancelled(s) for s in one_substitution(steps)]
    chain = rec.chain()
    check_equal(chain.steps[-1].after, engine, chain, f"the gradient of {rec.start}")
    return chain


#: Steps that set the derivation up, or whose line a student reads before the branches
#: are differentiated; a trivial step after them keeps its own line.
SETUP = ("definition", "drop_cases", "open_sum", "constant_terms", "log_sigmoid", "expand",
         "cancel", "piecewise")


def fold_closing(steps) -> list:
    """The steps with a trivial one that takes the last derivative said with the rule before.

    ∂/∂ŷ_k[ŷ_k − y_k] = 1 on a line of its own ("= u") teaches nothing: it becomes a
    clause of the rule before it (the power rule), whose line then shows the result.
    """
    out: list = []
    for s in steps:
        if (out and s.rule in TRIVIAL and out[-1].rule not in SETUP
                and not s.after.has(sp.Derivative)):
            said = {}
            for rule, node in out[-1].folded + ((s.rule, s.focus),) + s.folded:
                said.setdefault(rule, node)
            folded = tuple(sorted(said.items(), key=lambda item: item[0] == "identity"))
            out[-1] = replace(out[-1], after=s.after, folded=folded)
        else:
            out.append(s)
    return out


def one_substitution(steps) -> list:
    """The steps with consecutive substitutions back (u, then v, ...) made one step.

    Each alone would repeat the same sentence for a line that teaches nothing new.
    """
    out: list = []
    for s in steps:
        if out and s.rule == out[-1].rule == "substitute_back":
            out[-1] = replace(out[-1], after=s.after, inner=out[-1].inner + s.inner)
        else:
            out.append(s)
    return out


def _one_term(op, name, whole, var) -> Recorder:
    """Drop the cases, open the sum over outputs and keep its one term in ŷ_k."""
    n, j, k, N, K = loss_indices()
    term = printed_term(op).xreplace({n: CASE})
    rec = _loss_recorder(op, var, name, whole, rows=False)
    rec.step("definition", D(whole, var), inner=((name, whole),))
    rec.step("drop_cases", D(op.scale * sp.Sum(term, (j, 0, K - 1)), var))
    kept = (as_opened(term.xreplace({j: k})), sp.Eq(j, k, evaluate=False))
    if sp.count_ops(term) <= OPEN_SUM_OPS and not term.has(sp.Piecewise):
        rec.step("open_sum", D(op.scale * OpenSum(term, [(j, 0, K - 1)], [k]), var),
                 quote=kept)
    rec.step("constant_terms", D(op.scale * term.xreplace({j: k}), var), quote=kept)
    return rec


def as_opened(term: sp.Expr) -> sp.Expr:
    """The term ``term`` as an opened sum shows it, to be quoted in the sentence beside it.

    A summand with a minus sign, −y_k ln ŷ_k, is opened with the sign in front of the
    whole sum, −(1/N)(y₁ ln ŷ₁ + ⋯ + y_k ln ŷ_k + ⋯): the sentence quotes y_k ln ŷ_k,
    the term the line shows. A sum stays as it is: quoted inline, its terms would not read
    as one (the sentence then names the term by j = k).
    """
    from derive.calculus.functions import Terms

    if isinstance(term, sp.Mul) and term.could_extract_minus_sign() \
            and not (-term).could_extract_minus_sign() and not isinstance(-term, sp.Add | Terms):
        return -term
    return term


def _cancelled(step):
    """A power step whose n·u^{n−1} cancels the coefficient 1/n in front of it, saying so.

    ½ · d/du[u²] = ½ · 2u = u: the ½ of the definition is there to cancel that 2, and
    the line after the rule shows u alone; the step quotes ½ · 2u = u.
    """
    if step.rule != "power":
        return step
    n, _ = step.result.as_coeff_Mul()
    for node in sp.preorder_traversal(step.before):
        if isinstance(node, sp.Mul) and step.focus in node.args:
            coeff = sp.Mul(*[a for a in node.args if a.is_Rational])
            if n != 1 and coeff * n == 1:
                shown = sp.Mul(sp.UnevaluatedExpr(coeff), sp.UnevaluatedExpr(step.result),
                               evaluate=False)
                return replace(step, identities=step.identities
                               + ((shown, coeff * step.result),))
    return step


def _generic_loss_chain(op, name, whole, engine) -> StepChain:
    """Drop the cases, open the sum over outputs, drop its constant terms, then the rules."""
    var = op.pred[CASE, loss_indices()[2]]
    rec = _one_term(op, name, whole, var)
    rec.auto(factors_first=True)
    return _finish_loss(rec, engine, op)


def _difference_chain(op, name, whole, engine) -> StepChain:
    """As the notes' recipe, with the error ŷ_k − y_k named u once, before the rules.

    A piecewise summand (Huber) is then differentiated in the same u in every branch,
    not in ŷ − y in one and y − ŷ in the other.
    """
    n, j, k, N, K = loss_indices()
    var = op.pred[CASE, k]
    rec = _one_term(op, name, whole, var)
    term = printed_term(op).xreplace({n: CASE}).xreplace({j: k})
    error = var - op.target[CASE, k]
    u = rec.names.fresh(error)
    rec.step("constant_factor", op.scale * D(term, var))
    rec.step("chain", op.scale * D(plain(term).xreplace({var: u + op.target[CASE, k]}), u)
             * D(error, var), inner=((u, error),))
    rec.inners.append((u, error))
    rec.auto(factors_first=True)
    # Kept unevaluated, so that sgn(u), tanh(u), |u| read in ŷ − y, as u was defined.
    rec.step("substitute_back", rec.current.xreplace({u: Kept(error)}),
             inner=((u, error),))
    return _finish_loss(rec, engine, op)


def _softmax_ce_chain(op, name, whole, engine) -> StepChain:
    """CE of softmax: ln of a quotient, Σ_j y_j = 1, and ŷ − y at the end."""
    from derive.calculus.functions import Factors

    n, j, k, N, K = loss_indices()
    z, y = op.pred, op.target
    yhat = sp.IndexedBase("yhat", real=True)
    a, b = sp.symbols("a b", integer=True, nonnegative=True)
    row = sp.Sum(sp.exp(z[n, ROW]), (ROW, 0, K - 1))
    softmax = sp.Lambda((a, b), sp.exp(z[a, b]) / row.xreplace({n: a}))
    var = z[CASE, k]
    rec = _loss_recorder(op, var, name, whole, rows=True)
    rec.expansions += ((yhat, softmax),)
    ce = -sp.Sum(y[n, j] * sp.log(yhat[n, j]), (n, 0, N - 1), (j, 0, K - 1)) / N
    rec.step("definition", D(ce, var), inner=((name, ce),))
    rec.step("definition", D(ce.xreplace({yhat[n, j]: softmax(n, j)}), var),
             inner=((yhat[n, j], softmax(n, j)),))
    # y_j (z_j − ln Σ) as the definition's y_j ln ŷ_j: the target keeps its place in front.
    logs = -sp.Sum(Factors(y[n, j], z[n, j] - sp.log(row)), (n, 0, N - 1), (j, 0, K - 1)) / N
    rec.step("log_quotient", D(logs, var))
    case_row = row.xreplace({n: CASE})
    rec.step("drop_cases", D(-sp.Sum(Factors(y[CASE, j], z[CASE, j] - sp.log(case_row)),
                                      (j, 0, K - 1)) / N, var))
    linear = sp.Sum(y[CASE, j] * z[CASE, j], (j, 0, K - 1))
    targets = sp.Sum(y[CASE, j], (j, 0, K - 1))
    rec.step("factor_out", D(-(linear - sp.log(case_row) * targets) / N, var))
    rec.step("one_hot", D(-(linear - sp.log(case_row)) / N, var),
             identities=((targets, sp.S.One),))
    rec.auto(factors_first=True)
    # 1/N out, the sum rule, the minus sign out: one line, (1/N)(∂ ln Σ − ∂ Σ y z), so
    # that no line shows the two terms in the other order. The step's own rule is not
    # repeated in its clause.
    rec.steps[:] = [replace(s, folded=tuple(f for f in s.folded if f[0] != s.rule))
                    for s in fold_trivial_runs(rec.steps)]
    named = rec.current.xreplace({sp.exp(z[CASE, k]) / case_row: yhat[CASE, k]})
    if named == rec.current:
        named = rec.current.subs(sp.exp(z[CASE, k]) / case_row, yhat[CASE, k])
    rec.step("name_output", named, inner=((yhat[CASE, k], softmax(CASE, k)),))
    if named != (yhat[CASE, k] - y[CASE, k]) / N:
        rec.step("rewrite", (yhat[CASE, k] - y[CASE, k]) / N)
    chain = rec.chain()
    check_equal(chain.steps[-1].after, engine, chain, f"the gradient of {op.name}")
    return chain


def _bce_logits_chain(op, name, whole, engine) -> StepChain:
    """BCE of σ(z): the logarithms of σ written with ln(1 + e^z), ending in σ(z) − y."""
    from derive.calculus.functions import Factors, Terms, sigmoid

    n, j, k, N, K = loss_indices()
    z, y = op.pred, op.target
    var = z[CASE, k]
    rec = _loss_recorder(op, var, name, whole, rows=False)
    s = sigmoid(z[n, j])
    # y's term first, then (1 − y)'s, on every line (as the binary cross-entropy).
    bce = -op.scale * sp.Sum(Terms(y[n, j] * sp.log(s), (1 - y[n, j]) * sp.log(1 - s)),
                             (n, 0, N - 1), (j, 0, K - 1))
    rec.step("definition", D(bce, var), inner=((name, bce),))
    # The identities at the logit itself: u names the inner function further down.
    zj, yj = z[n, j], y[n, j]
    softplus_ = sp.log(1 + sp.exp(zj))
    logs = -op.scale * sp.Sum(Terms(Factors(yj, zj - softplus_), -Factors(1 - yj, softplus_)),
                              (n, 0, N - 1), (j, 0, K - 1))
    rec.step("log_sigmoid", D(logs, var), identities=(
        (sp.log(sigmoid(zj)), zj - softplus_), (sp.log(1 - sigmoid(zj)), -softplus_)))
    # Multiplied out, the two y·ln(1 + e^z) terms are opposite: they cancel.
    rec.step("expand", D(-op.scale * sp.Sum(Terms(yj * zj, -yj * softplus_, -softplus_,
                                                  yj * softplus_),
                                            (n, 0, N - 1), (j, 0, K - 1)), var))
    rec.step("cancel", D(whole, var))
    term = printed_term(op).xreplace({n: CASE})
    rec.step("drop_cases", D(op.scale * sp.Sum(term, (j, 0, K - 1)), var))
    kept = (term.xreplace({j: k}), sp.Eq(j, k, evaluate=False))
    rec.step("open_sum", D(op.scale * OpenSum(term, [(j, 0, K - 1)], [k]), var), quote=kept)
    rec.step("constant_terms", D(op.scale * term.xreplace({j: k}), var), quote=kept)
    rec.auto(factors_first=True)
    return _finish_loss(rec, engine, op)



#: The derivation scripts, by the recipe a loss declaration names.
RECIPES = {
    "open_sum": _generic_loss_chain,
    "named_difference": _difference_chain,
    "softmax_of_logits": _softmax_ce_chain,
    "sigmoid_of_logits": _bce_logits_chain,
}


def loss_script(op: Loss):
    """The script that derives ``op``'s gradient, chosen by its declared recipe.

    Raises
    ------
    DeriveError
        When the declaration names a recipe that has no script.
    """
    try:
        return RECIPES[op.recipe]
    except KeyError:
        raise DeriveError(
            f"the loss names the derivation recipe {op.recipe!r}, which has no script.",
            where=f"loss {op.name!r}",
            fix=f"Use one of {', '.join(sorted(RECIPES))}, or add a script to "
                "derive/calculus/steps/loss.py.",
        ) from None


def _printed(expr: sp.Expr, free: dict) -> sp.Expr:
    """An engine expression with the printed indices: p, q → the given symbols."""
    from derive.calculus.indexed import p, q

    n, j, k, _, _ = loss_indices()
    return expr.xreplace({j: ROW}).xreplace({p: free.get("p", p), q: free.get("q", q)})


@derivation_steps.register
def _(op: Loss) -> LossSteps:
    return _loss_steps(op)


@cache
def _loss_steps(op: Loss) -> LossSteps:
    from derive.calculus.derivation import derive_loss

    n, j, k, N, K = loss_indices()
    derivation = derive_loss(op)
    name = sp.Symbol("L")
    whole = op.scale * sp.Sum(printed_term(op), (n, 0, N - 1), (j, 0, K - 1))
    dense = next((v for v in derivation.variants if v.encoding == "dense"), None)
    at = {"p": CASE, "q": k}
    if dense is not None:
        engine = _printed(dense.gradient, at)
    else:
        # Integer labels only: the derivation is that of the dense (one-hot) targets.
        engine = _dense_gradient(op)
    chain = loss_script(op)(op, name, whole, engine)
    index = next((v for v in derivation.variants if v.encoding == "index"), None)
    index_gradient = None if index is None else _printed(index.gradient, {"p": CASE, "q": k})
    rows = tuple((v.encoding, v.row_value.xreplace({j: ROW}).xreplace({k: j}))
                 for v in derivation.variants)
    shown = chain.steps[0].inner[0][1] if chain.steps[0].inner else whole
    if index is not None and dense is None:
        # Declared for integer labels: defined with the label t_n of each case; the
        # derivation uses the one-hot form it equals.
        from derive.calculus.derivation import LABELS

        row = index.row_value.xreplace({LABELS: LABEL})
        shown = op.scale * sp.Sum(row, (n, 0, N - 1))
    return LossSteps(op, name, shown, chain, engine, index_gradient, rows)


def _dense_gradient(op: Loss) -> sp.Expr:
    """∂L/∂pred[c, k] of a loss declared for integer labels, with one-hot targets y."""
    from derive.calculus.derivation import tidy
    from derive.calculus.indexed import eliminate_deltas, p, q

    n, j, k, N, K = loss_indices()
    whole = op.scale * sp.Sum(op.term, (n, 0, N - 1), (k, 0, K - 1))
    gradient = tidy(eliminate_deltas(sp.diff(whole, op.pred[p, q])))
    return gradient.xreplace({p: CASE, q: k})

