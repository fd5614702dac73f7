"""`derive minimize`: the notes' gradient-descent demo on any formula."""

import re
import subprocess
import sys
import time

import numpy as np
import pytest
import sympy as sp

from derive import registry, spec
from derive.calculus.verify import evaluate
from derive.cli import main
from derive.errors import DeriveError, FormulaError
from derive.minimize import (
    NEWTON,
    classify,
    header,
    methods,
    minimize,
    parse_objective,
    parse_start,
    step_line,
    trajectory_csv,
    variable_names,
    write_trajectory,
)

#: Seed 000's output for f(w) = w1² + w2², w = (10, 10), lr = 0.01, 10 steps.
NOTES = [
    ("192.0800000000004", "[9.8 9.8]"),
    ("184.4736320000004", "[9.604 9.604]"),
    ("177.1684761728", "[9.41192 9.41192]"),
    ("170.15260451635714", "[9.2236816 9.2236816]"),
    ("163.41456137750941", "[9.03920797 9.03920797]"),
    ("156.94334474696007", "[8.85842381 8.85842381]"),
    ("150.72838829498042", "[8.68125533 8.68125533]"),
    ("144.75954411849915", "[8.50763023 8.50763023]"),
    ("139.0270661714066", "[8.33747762 8.33747762]"),
    ("133.5215943510189", "[8.17072807 8.17072807]"),
]


def test_the_notes_sequence():
    run = minimize(parse_objective("w1**2 + w2**2"), [10, 10], method="gd", lr=0.01, steps=10)
    assert len(run.steps) == 11 and run.stopped == ""
    for step, (f, w) in zip(run.steps[1:], NOTES, strict=True):
        # The notes print 192.0800000000004 where Python prints 192.08000000000004.
        assert step.f == pytest.approx(float(f), rel=1e-14)
        assert np.array2string(np.array(step.w)) == w
    first = step_line(run.steps[1])
    assert "f = 192.08;" in first and "w = [9.8 9.8]" in first
    assert run.steps[1].w == (9.8, 9.8)
    assert run.steps[1].grad_norm == pytest.approx(np.hypot(19.6, 19.6))


def test_cli_prints_the_notes_sequence(capsys):
    code = main(["minimize", "w1**2 + w2**2", "--start", "10,10", "--method", "gd",
                 "--lr", "0.01", "--steps", "10"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "minimise f(w1, w2) = w1**2 + w2**2 by gd, lr = 0.01"
    assert "start: f = 200; w = [10. 10.]" in out[1]
    assert "step 1: f = 192.08; w = [9.8 9.8]; |grad f| = 27.7186" in out[2]
    assert "step 10: f = 133.521594351; w = [8.17072807 8.17072807]" in out[11]
    assert len(out) == 12


def test_newton_converges_in_one_step_on_a_quadratic():
    obj = parse_objective("(x - 3)**2 + 2*(y + 1)**2 + x*y")
    run = minimize(obj, [10.0, -7.0], method="newton", steps=5)
    # ∇f = 0 ⇔ [[2, 1], [1, 4]] w = [6, -4]
    expected = np.linalg.solve([[2.0, 1.0], [1.0, 4.0]], [6.0, -4.0])
    np.testing.assert_allclose(run.steps[1].w, expected, rtol=1e-14)
    assert run.steps[1].grad_norm < 1e-12
    assert len(run.steps) == 2 and "converged at step 1" in run.stopped


def test_newton_on_a_non_quadratic_takes_several_steps():
    run = minimize(parse_objective("exp(x) - 2*x + y**4/4 + y**2"), [1.0, 1.0],
                   method="newton", steps=30)
    assert run.steps[-1].w[0] == pytest.approx(np.log(2), abs=1e-12)
    assert abs(run.steps[-1].w[1]) < 1e-9
    assert 2 < len(run.steps) < 30


def test_momentum_follows_polyaks_equations():
    run = minimize(parse_objective("w1**2 + w2**2"), [10, 10], method="momentum", lr=0.01,
                   momentum=0.9, steps=3)
    w, v = np.array([10.0, 10.0]), np.zeros(2)
    for step in run.steps[1:]:
        v = 0.9 * v - 0.01 * 2 * w
        w = w + v
        np.testing.assert_allclose(step.w, w, rtol=1e-15)
        assert step.f == pytest.approx(w @ w, rel=1e-15)


def test_singular_hessian_is_a_clear_error():
    with pytest.raises(DeriveError, match="Hessian is singular at w = \\[1. 2.\\]"):
        minimize(parse_objective("w1**2 + w2"), [1, 2], method="newton")
    with pytest.raises(DeriveError, match="singular"):
        minimize(parse_objective("(w1 + w2)**2"), [1, 2], method="newton")


def test_divergence_stops_with_the_notes_diagnosis():
    run = minimize(parse_objective("w**2"), [1.0], lr=1.5, steps=5000)
    assert "diverged" in run.stopped and "lower --lr" in run.stopped
    assert len(run.steps) < 5000


def test_variables_are_the_free_names_in_natural_order():
    assert variable_names("w10*w2 + w1 + exp(w3) + pi*e") == ["w1", "w2", "w3", "w10"]
    assert variable_names("y**2 + x + sin(x)") == ["x", "y"]
    assert variable_names("x +") == []
    obj = parse_objective("sigmoid(a) + softplus(b) + max(a, b) + abs(a - b)")
    assert obj.names == ("a", "b")
    assert all(isinstance(g, sp.Expr) for g in obj.gradient)


def test_kinks_differentiate_away_from_dirac():
    obj = parse_objective("abs(x) + heaviside(x) + y**2")
    assert not any(g.has(sp.DiracDelta) for g in obj.gradient)
    run = minimize(obj, [0.5, 1.0], lr=0.1, steps=2)
    assert run.steps[1].w[0] == pytest.approx(0.4)


@pytest.mark.parametrize("formula, words", [
    ("3 + pi", "no variables"),
    ("heaviside(x)", "gradient is zero everywhere"),
    ("x^2", "not a power"),
    ("__import__('os').system('echo hi')", "only named functions can be called"),
    ("__import__('os')", "'__import__' is not an allowed function"),
    ("x.real", "attribute access"),
    ("(lambda: 1)()", "lambda"),
    ("x +", "not a formula"),
    ("", "empty"),
    ("exp + 1", "is a function"),
    (" + ".join(f"v{i}**2" for i in range(25)), "limit is 20"),
])
def test_bad_formulas_are_formula_errors(formula, words):
    with pytest.raises(FormulaError, match=words):
        parse_objective(formula)


def test_start_must_match_the_variables():
    obj = parse_objective("w1**2 + w2**2")
    np.testing.assert_array_equal(parse_start(" 1, -2.5 ", obj), [1.0, -2.5])
    with pytest.raises(DeriveError, match="1 number\\(s\\) given but the formula has 2"):
        parse_start("1", obj)
    with pytest.raises(DeriveError, match="not a list of numbers"):
        parse_start("1,two", obj)
    with pytest.raises(DeriveError, match="not finite"):
        parse_start("1,inf", obj)


def test_start_outside_the_domain():
    with pytest.raises(DeriveError, match="not finite at the start"):
        minimize(parse_objective("log(x)"), [-1.0])


@pytest.mark.parametrize("options, words", [
    ({"method": "lbfgs"}, "unknown method"), ({"lr": -1}, "learning rate"),
    ({"steps": -3}, "steps"), ({"momentum": 1.0}, "momentum"),
    ({"momentum": 0.5}, "gd has no momentum"), ({"params": {"beta1": 0.9}}, "no parameter"),
    ({"method": "adam", "params": {"eps": 0.0}}, "eps = 0 must be positive"),
    ({"method": "adam", "params": {"beta1": -0.1}}, "must not be negative"),
    ({"noise": -1.0}, "noise"), ({"noise": float("inf")}, "noise"),
    ({"tol": -1e-3}, "tolerance"), ({"tol": float("nan")}, "tolerance"),
])
def test_bad_options(options, words):
    with pytest.raises(DeriveError, match=words):
        minimize(parse_objective("x**2"), [1.0], **options)


def test_csv_and_plot_are_written_atomically(tmp_path):
    run = minimize(parse_objective("w1**2 + w2**2"), [10, 10], steps=3)
    files = write_trajectory(run, tmp_path)
    assert [p.name for p in files] == ["path.csv", "path.png"]
    rows = (tmp_path / "path.csv").read_text().splitlines()
    assert rows[0] == "k,w1,w2,f,grad_norm"
    assert rows[2].startswith("1,9.8,9.8,192.0800000000000")
    assert (tmp_path / "path.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["path.csv", "path.png"]
    one = write_trajectory(minimize(parse_objective("(x-1)**2"), [3.0], steps=3),
                           tmp_path / "one")
    assert [p.name for p in one] == ["path.csv", "path.png"]
    three = minimize(parse_objective("a**2 + b**2 + c**2"), [1, 1, 1], steps=2)
    assert [p.name for p in write_trajectory(three, tmp_path / "three")] == ["path.csv"]
    assert trajectory_csv(three).splitlines()[0] == "k,a,b,c,f,grad_norm"


def test_a_failing_plot_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from derive import files

    run = minimize(parse_objective("w1**2 + w2**2"), [10, 10], steps=3)
    real = files.os.replace

    def crash(src, dst):
        if str(dst).endswith(".png"):
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_trajectory(run, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["path.csv"]


def test_cli_writes_the_path_with_out(tmp_path, capsys):
    assert main(["minimize", "x**2 + 3*y**2", "--start=-2,1", "--steps", "4",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'path.png'}" in out
    assert (tmp_path / "path.csv").exists()


@pytest.mark.parametrize("argv, words", [
    (["w1**2 + w2**2", "--start", "10"], "--start: 1 number(s) given"),
    (["w1**2 + w2**2", "--start", "a,b"], "not a list of numbers"),
    (["w1**2 + w2**2"], "no start point given for w1, w2"),
    (["w1**2 + w2**2", "--start", "1,1", "--method", "lbfgs"], "unknown method"),
    (["x**2", "--start", "1", "--method", "adam", "--param", "beta3=1"], "no parameter"),
    (["x**2", "--start", "1", "--param", "lr"], "NAME=NUMBER"),
    (["x**2", "--start", "1", "--momentum", "0.5"], "gd has no momentum"),
    (["x**2", "--start", "1", "--tol=-1"], "--tol"),
    (["x**2", "--start", "1", "--tol", "ten"], "invalid float value"),
    (["x**2", "--start", "1", "--noise=-2"], "--noise"),
    (["x**2", "--start", "1", "--seed", "1.5"], "invalid int value"),
    (["w1**2 + w2", "--start", "1,1", "--method", "newton"], "Hessian is singular"),
    (["open('f')", "--start", "1"], "'open' is not an allowed function"),
    (["x**", "--start", "1"], "not a formula"),
    (["7", "--start", "1"], "no variables"),
    (["log(x)", "--start=-1"], "not finite at the start"),
    (["x**2", "--start", "1", "--lr", "nan"], "learning rate"),
])
def test_cli_errors_exit_2_with_one_paragraph(argv, words, tmp_path, capsys):
    code = main(["minimize", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("derive: error:") and words in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_subprocess_has_no_traceback():
    r = subprocess.run([sys.executable, "cli.py", "minimize", "__import__('os').system('echo hi')",
                        "--start", "1"], capture_output=True, text=True, timeout=120,
                       cwd=__import__("pathlib").Path(__file__).resolve().parent.parent)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "hi" not in r.stdout


def test_deeply_nested_formulas_finish_in_bounded_time():
    nested = "tanh(" * 55 + "x*y" + ")" * 55
    start = time.perf_counter()
    run = minimize(parse_objective(nested), [0.5, 0.25], steps=5)
    assert len(run.steps) == 6 and np.isfinite(run.steps[-1].f)
    with pytest.raises(FormulaError, match="too large for a symbolic Hessian"):
        minimize(parse_objective(nested), [0.5, 0.25], method="newton")
    assert time.perf_counter() - start < 20


def test_variables_named_like_modules_do_not_shadow_them():
    run = minimize(parse_objective("numpy**2 + builtins**2 + scipy"), [1, 1, 1], steps=1)
    assert run.steps[1].w == pytest.approx((0.98, 0.98, 0.99))


def test_max_and_named_functions_evaluate_on_scalars_and_grids(tmp_path):
    run = minimize(parse_objective("max(x, y, x*y, 1) + x**2 + y**2"), [3.0, 2.0], lr=0.1,
                   steps=200)
    assert "converged" in run.stopped
    np.testing.assert_allclose(run.steps[-1].w, 0, atol=1e-10)
    run = minimize(parse_objective("softplus(x) + sigmoid(y) + normal_cdf(y)"), [800.0, 3.0],
                   lr=0.5, steps=3)
    assert np.isfinite(run.steps[0].f) and run.steps[0].f == pytest.approx(
        800 + 1 / (1 + np.exp(-3)) + 0.9986501019683699, rel=1e-14)
    assert [p.name for p in write_trajectory(run, tmp_path)] == ["path.csv", "path.png"]


def test_a_stationary_start_stops_at_once():
    run = minimize(parse_objective("x**2 + y**2"), [0, 0], steps=10)
    assert len(run.steps) == 1 and "stationary" in run.stopped


# --- every declared optimizer, noise, tolerance, divergence, stationary points ------------

G, T, W = spec.g, spec.t, spec.w

#: A tilted, stretched bowl: minimum at (1, -2), Hessian [[2, 1], [1, 8]].
BOWL = "(w1 - 1)**2 + 4*(w2 + 2)**2 + (w1 - 1)*(w2 + 2)"
#: Step sizes that suit each method on BOWL (adaptive methods take steps of about lr).
BOWL_LR = {"gd": 0.1, "momentum": 0.05, "momentum_rumelhart": 0.05, "nesterov": 0.05,
           "adagrad": 0.5, "rmsprop": 0.01, "adam": 0.05, "nadam": 0.05, "adamw": 0.05,
           NEWTON: 1.0}


def test_methods_are_the_declared_optimizers_and_newton():
    assert methods() == (*(op.name for op in registry.all_ops("optimizer")), NEWTON)
    assert set(BOWL_LR) == set(methods())  # a new optimizer needs a row here


@pytest.mark.parametrize("method", methods())
def test_every_method_reaches_the_minimum_of_a_quadratic(method):
    params = {"weight_decay": 0.0} if method == "adamw" else {}  # else the fixed point moves
    run = minimize(parse_objective(BOWL), [4.0, 3.0], method=method, lr=BOWL_LR[method],
                   steps=5000, tol=1e-9, params=params)
    np.testing.assert_allclose(run.steps[-1].w, [1.0, -2.0], atol=1e-8)
    assert run.steps[-1].grad_norm <= 1e-9 < run.steps[-2].grad_norm
    assert run.stopped.startswith(f"converged at step {len(run.steps) - 1}")
    assert run.point.kind == "minimum" and "It is a minimum" in run.stopped
    # The Hessian [[2, 1], [1, 8]]'s eigenvalues, computed independently.
    np.testing.assert_allclose(run.point.eigenvalues, np.linalg.eigvalsh([[2, 1], [1, 8]]))


@pytest.mark.parametrize("method, lr", [("nesterov", 1e-3), (NEWTON, 1.0)])
def test_rosenbrocks_valley(method, lr):
    run = minimize(parse_objective("(1 - x)**2 + 100*(y - x**2)**2"), [-1.2, 1.0],
                   method=method, lr=lr, steps=40_000, tol=1e-6)
    np.testing.assert_allclose(run.steps[-1].w, [1.0, 1.0], atol=1e-5)
    assert "converged" in run.stopped and run.point.kind == "minimum"


@pytest.mark.parametrize("method", [m for m in methods() if m != NEWTON])
def test_each_step_is_the_declared_update(method):
    """The path follows the declaration's equations, evaluated here in 30 digits."""
    op = registry.get(method, "optimizer")
    obj = parse_objective(BOWL)
    run = minimize(obj, [4.0, 3.0], method=method, lr=0.02, steps=4)
    grad = [sp.lambdify(obj.variables, gi) for gi in obj.gradient]
    state = [op.defaults | {p.symbol: 0.02 for p in op.params[:1]}
             | {s.symbol: s.init for s in op.state} for _ in range(2)]
    x = [4.0, 3.0]
    for k, step in enumerate(run.steps[1:], start=1):
        gk = [float(fn(*x)) for fn in grad]
        for i in range(2):
            state[i] |= {W: x[i], G: gk[i], T: k}
            for target, rhs in op.updates:
                state[i][target] = evaluate(rhs, state[i])
        x = [state[0][W], state[1][W]]
        np.testing.assert_allclose(step.w, x, rtol=1e-13)


def test_hyper_parameters_reach_the_update():
    obj = parse_objective("x**2")
    one = minimize(obj, [1.0], method="momentum", lr=0.1, momentum=0.5, steps=2)
    two = minimize(obj, [1.0], method="momentum", lr=0.1, params={"mu": 0.5}, steps=2)
    assert one.steps == two.steps and one.params == (("mu", 0.5),)
    three = minimize(obj, [1.0], method="momentum", params={"mu": 0.5, "lr": 0.1}, steps=2)
    assert three.steps == two.steps and three.lr == 0.1
    # v1 = -0.2, w1 = 0.8; v2 = 0.5 v1 - 0.1 * 1.6 = -0.26, w2 = 0.54
    assert two.steps[2].w == pytest.approx((0.54,), rel=1e-14)
    adam = minimize(obj, [1.0], method="adam", params={"beta1": 0.0, "beta2": 0.0}, lr=0.1,
                    steps=1)  # m̂ = g, ŝ = g²: one step of lr·sign(g)
    assert adam.steps[1].w[0] == pytest.approx(0.9, rel=1e-7)
    assert header(adam).endswith("by adam, lr = 0.1, beta1 = 0, beta2 = 0, eps = 1e-08")


def test_noise_is_seeded_and_only_enters_the_step():
    obj = parse_objective("w1**2 + w2**2")
    a = minimize(obj, [10, 10], lr=0.1, steps=20, noise=2.0, seed=7)
    b = minimize(obj, [10, 10], lr=0.1, steps=20, noise=2.0, seed=7)
    c = minimize(obj, [10, 10], lr=0.1, steps=20, noise=2.0, seed=8)
    exact = minimize(obj, [10, 10], lr=0.1, steps=20)
    assert a.steps == b.steps and a.steps != c.steps and a.steps != exact.steps
    assert minimize(obj, [10, 10], lr=0.1, steps=20, noise=0.0, seed=7).steps == exact.steps
    xi = np.random.default_rng(7).standard_normal(2)
    first = np.array([10.0, 10.0]) - 0.1 * (np.array([20.0, 20.0]) + 2.0 * xi)
    np.testing.assert_allclose(a.steps[1].w, first, rtol=1e-15)
    # |grad f| is the exact gradient's norm at the point reached, not the noisy one's.
    assert a.steps[1].grad_norm == pytest.approx(np.linalg.norm(2 * first), rel=1e-14)
    assert "gradient noise of standard deviation 2 (seed 7)" in header(a)


def test_noise_keeps_the_path_wandering_near_the_minimum():
    obj = parse_objective("w1**2 + w2**2")
    noisy = minimize(obj, [10, 10], lr=0.1, steps=300, noise=1.0, seed=0)
    exact = minimize(obj, [10, 10], lr=0.1, steps=300)
    assert "converged" in exact.stopped and noisy.stopped == ""
    tail = np.array([s.w for s in noisy.steps[-100:]])
    assert 0.05 < np.abs(tail).mean() < 1.0  # it hovers around 0, never settles


def test_tol_is_respected():
    obj = parse_objective(BOWL)
    runs = {tol: minimize(obj, [4.0, 3.0], lr=0.1, steps=5000, tol=tol)
            for tol in (1e-1, 1e-4, 1e-8)}
    for tol, run in runs.items():
        norms = [s.grad_norm for s in run.steps]
        assert norms[-1] <= tol and all(n > tol for n in norms[:-1])
        assert f"within --tol {tol:g}" in run.stopped
    assert len(runs[1e-1].steps) < len(runs[1e-4].steps) < len(runs[1e-8].steps)
    start = minimize(obj, [4.0, 3.0], steps=10, tol=1e3)
    assert len(start.steps) == 1 and "within --tol at the start" in start.stopped


def test_divergence_names_the_learning_rate_bound():
    obj = parse_objective("3*x**2 + x*y + 2*y**2")
    bound = 2 / np.linalg.eigvalsh([[6.0, 1.0], [1.0, 4.0]])[-1]
    over = minimize(obj, [1.0, 1.0], lr=1.05 * bound, steps=5000)
    assert over.stopped.startswith("diverged at step") and len(over.steps) < 5000
    assert f"η < 2/L = {bound:.4g}" in over.stopped and "lower --lr" in over.stopped
    under = minimize(obj, [1.0, 1.0], lr=0.95 * bound, steps=5000)
    assert under.stopped.startswith("converged")


def test_a_function_unbounded_below_is_not_blamed_on_the_learning_rate():
    run = minimize(parse_objective("x**3 + y**2"), [-1.0, 1.0], lr=0.1, steps=5000)
    assert run.stopped.startswith("diverged") and "decreases without bound" in run.stopped
    assert "lower --lr" not in run.stopped


def test_newton_at_a_saddle_is_not_converged():
    run = minimize(parse_objective("x**2 - y**2"), [1.0, 1.0], method=NEWTON, steps=5)
    assert run.steps[-1].w == (0.0, 0.0) and run.point.kind == "saddle"
    assert "saddle point, not a minimum" in run.stopped and "converged" not in run.stopped
    assert run.point.eigenvalues == (-2.0, 2.0)


def test_descent_on_a_ridge_ends_at_the_saddle_and_says_so():
    run = minimize(parse_objective("x**2 - y**2"), [1.0, 0.0], lr=0.1, steps=1000)
    assert run.point.kind == "saddle" and run.stopped.startswith("stopped at step")


@pytest.mark.parametrize("formula, kind", [
    ("x**2 + y**2", "minimum"), ("-(x**2) - 3*y**2", "maximum"), ("x*y", "saddle"),
    ("x**4 + y**2", "flat"), ("-(x**4) - y**2", "flat"), ("x**4 - y**2", "flat"),
    ("x**2 - y**2 + x**4", "saddle"),
])
def test_a_stationary_start_is_classified(formula, kind):
    run = minimize(parse_objective(formula), [0.0, 0.0])
    assert run.point.kind == kind and len(run.steps) == 1


def test_classify_by_eigenvalue_signs():
    assert classify([1e-3, 5.0]) == "minimum"
    assert classify([-5.0, -1e-3]) == "maximum"
    assert classify([-1.0, 0.0, 1.0]) == "saddle"
    assert classify([1e-17, 2.0]) == "flat"  # rounding noise is zero


def test_cli_new_options(tmp_path, capsys):
    assert main(["minimize", "x**2 - y**2", "--start", "1,1", "--method", "newton"]) == 0
    out = capsys.readouterr().out
    assert "saddle point, not a minimum" in out and "converged" not in out
    assert main(["minimize", "(x-1)**2 + 2*y**2", "--start", "3,1", "--method", "adam",
                 "--lr", "0.05", "--param", "beta1=0.8", "--tol", "1e-6",
                 "--steps", "5000"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("by adam, lr = 0.05, beta1 = 0.8, beta2 = 0.999, eps = 1e-08, "
                           "until |grad f| <= 1e-06")
    assert out[-1].startswith("converged at step") and "It is a minimum" in out[-1]
    assert main(["minimize", "w1**2 + 10*w2**2", "--start=-8,3", "--lr", "0.04", "--steps",
                 "30", "--noise", "2", "--seed", "1", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "path.png").read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "path.csv").read_text().splitlines()
    run = minimize(parse_objective("w1**2 + 10*w2**2"), [-8, 3], lr=0.04, steps=30,
                   noise=2.0, seed=1)
    assert rows[1:] == trajectory_csv(run).splitlines()[1:]


# --- --lang: the explanation in Portuguese ----------------------------------------------------

#: English words the Portuguese explanation must not contain.
ENGLISH = ("step", "the ", "minimise", "saddle", "converged", "diverged", "gradient ",
           "Hessian", "eigenvalue", "start")


@pytest.mark.parametrize(("argv", "words"), [
    (["x**2 - y**2", "--start=0.5,0", "--method", "newton"],
     ["minimizar f(x, y) = x**2 - y**2 com newton", "passo 1:", "parou no passo 1",
      "ponto de sela, não um mínimo", "autovalores da hessiana (-2, 2)"]),
    (["w1**2 + 10*w2**2", "--start=1,1", "--lr", "0.2", "--steps", "60"],
     ["divergiu no passo", "reduza --lr (agora 0.2)", "η < 2/L = 0.1"]),
    (["x**2", "--start=1", "--lr", "0.1", "--steps", "500", "--tol", "1e-3"],
     ["convergiu no passo", "está dentro de --tol 0.001", "É um mínimo"]),
    (["x**2 + y**2", "--start=0,0", "--noise", "0.1"],
     ["ruído gaussiano de desvio padrão 0.1", "o gradiente é zero no ponto inicial",
      "início:"]),
    (["x + y", "--start=0,0", "--lr", "1", "--steps", "10000"],
     []),
])
def test_cli_explains_in_portuguese_with_lang_pt(capsys, argv, words):
    assert main(["minimize", *argv, "--lang", "pt"]) == 0
    pt = capsys.readouterr().out
    for word in words:
        assert word in pt, (word, pt)
    for word in ENGLISH:
        assert word not in pt, (word, pt)
    # The same run in English (the default) says the same numbers in other words.
    assert main(["minimize", *argv]) == 0
    en = capsys.readouterr().out
    assert en != pt and en.count("\n") == pt.count("\n")
    numbers = [re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?", text)
               for text in (en, pt)]
    assert numbers[0] == numbers[1]


def test_an_unbounded_function_is_explained_in_portuguese():
    run = minimize(parse_objective("x**3"), [-1.0], lr=0.1, steps=10_000, lang="pt")
    assert run.stopped.startswith("divergiu no passo") and "decresce sem limite" in run.stopped
    assert header(run).startswith("minimizar f(x) = x**3 com gd")


def test_an_unknown_language_is_refused():
    with pytest.raises(DeriveError, match="--lang"):
        minimize(parse_objective("x**2"), [1.0], lang="fr")
    assert step_line(minimize(parse_objective("x**2"), [1.0]).steps[0]).strip().startswith(
        "start:")
