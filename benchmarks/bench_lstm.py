"""LSTM forward + backward through time: derive against PyTorch's nn.LSTM and JAX.

Run from the repository root::

    python benchmarks/bench_lstm.py [--rounds 30] [--threads T] [--module PATH]

One LSTM layer at N = 32, T = 28, F = 28, H = 128 (a batch of 28 × 28 images read as
28 time steps of 28 pixels), float32 and float64, the whole sequence forward and back:

- derive: ``forward(x, None, None, W_ih, b_ih, W_hh, b_hh)`` then ``backward(..., d_h)``
  of ``generated/layers/lstm.py`` (``--module`` times another generated copy);
- torch: ``torch.nn.LSTM(batch_first=True)`` with the same weights, then
  ``torch.autograd.grad`` of its output sequence with the same ``d_h``;
- JAX: ``jax.jit`` of the same recurrence written with ``lax.scan``, forward alone and
  ``jax.vjp`` with ``d_h`` (skipped, with a note, when JAX is not installed).

Every contender's output and gradients (d_x, d_W_ih, d_b_ih, d_W_hh, d_b_hh) are checked
against derive's before anything is timed. Each round calls every contender once, in an
order shuffled each round (seeded); the report gives the best and the median over the
rounds of forward, backward and their sum, and each contender's time over derive's.
Goal (issue 15): derive's forward + backward at least as fast as torch's, in both dtypes;
printed, never asserted. Results go to ``benchmarks/results/lstm.json`` (no timestamps).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import busy_cpu_seconds, own_cpu_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "lstm.json"
MODULE = ROOT / "generated" / "layers" / "lstm.py"
SIZES = {"N": 32, "T": 28, "F": 28, "H": 128}
#: Agreement required before timing, relative and as a fraction of the result's scale.
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
#: Goal printed beside the results, never asserted: derive's time over torch's, at most.
GOAL = 1.0
GRADIENTS = ("d_x", "d_W_ih", "d_b_ih", "d_W_hh", "d_b_hh")


def problem(dtype, rng):
    """Input, weights (PyTorch's uniform ±1/√H initialisation) and d_h of one cell."""
    n, t, f, h = SIZES["N"], SIZES["T"], SIZES["F"], SIZES["H"]
    bound = 1.0 / math.sqrt(h)
    return {
        "x": rng.standard_normal((n, t, f)).astype(dtype),
        "W_ih": rng.uniform(-bound, bound, (4 * h, f)).astype(dtype),
        "b_ih": rng.uniform(-bound, bound, 4 * h).astype(dtype),
        "W_hh": rng.uniform(-bound, bound, (4 * h, h)).astype(dtype),
        "b_hh": rng.uniform(-bound, bound, 4 * h).astype(dtype),
        "d_h": rng.standard_normal((n, t, h)).astype(dtype),
    }


def derive_contender(module, p):
    """(forward, backward, result) of derive's generated module."""
    weights = (p["W_ih"], p["b_ih"], p["W_hh"], p["b_hh"])
    state = {}

    def forward():
        state["h"] = module.forward(p["x"], None, None, *weights)[0]

    def backward():
        state["grads"] = module.backward(p["x"], None, None, *weights, p["d_h"])

    def result():
        d_x, _, _, *d_weights = state["grads"]
        return [state["h"], d_x, *d_weights]

    return forward, backward, result


def torch_contender(p):
    """(forward, backward, result) of torch.nn.LSTM with autograd, the same weights."""
    dtype = torch.float64 if p["x"].dtype == np.float64 else torch.float32
    lstm = torch.nn.LSTM(SIZES["F"], SIZES["H"], batch_first=True).to(dtype)
    with torch.no_grad():
        for name in ("W_ih", "b_ih", "W_hh", "b_hh"):
            torch_name = ("weight_" if name[0] == "W" else "bias_") + name[2:] + "_l0"
            getattr(lstm, torch_name).copy_(torch.from_numpy(p[name]))
    leaves = [torch.from_numpy(p["x"]).requires_grad_(True), lstm.weight_ih_l0,
              lstm.bias_ih_l0, lstm.weight_hh_l0, lstm.bias_hh_l0]
    d_h = torch.from_numpy(p["d_h"])
    state = {}

    def forward():
        state["h"] = lstm(leaves[0])[0]

    def backward():
        state["grads"] = torch.autograd.grad(state["h"], leaves, d_h)

    def result():
        return [state["h"].detach().numpy()] + [g.numpy() for g in state["grads"]]

    return forward, backward, result


def jax_contender(p):
    """(forward, backward, result) of jax.jit over lax.scan, or None without JAX."""
    if importlib.util.find_spec("jax") is None:
        return None
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def layer(x, w_ih, b_ih, w_hh, b_hh):
        n, h = x.shape[0], w_hh.shape[1]

        def step(carry, x_t):
            h_prev, c_prev = carry
            s = x_t @ w_ih.T + b_ih + h_prev @ w_hh.T + b_hh
            i, f, g, o = jnp.split(s, 4, axis=1)  # PyTorch's gate order
            c = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(g)
            h_t = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h_t, c), h_t

        zero = jnp.zeros((n, h), x.dtype)
        _, hs = jax.lax.scan(step, (zero, zero), jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(hs, 0, 1)

    def gradients(args, d_h):
        _, pullback = jax.vjp(layer, *args)
        return pullback(d_h)

    forward_fn, backward_fn = jax.jit(layer), jax.jit(gradients)
    args = tuple(jnp.asarray(p[k]) for k in ("x", "W_ih", "b_ih", "W_hh", "b_hh"))
    d_h = jnp.asarray(p["d_h"])
    state = {}

    def forward():
        state["h"] = forward_fn(*args).block_until_ready()

    def backward():
        state["grads"] = jax.block_until_ready(backward_fn(args, d_h))

    def result():
        return [np.asarray(state["h"])] + [np.asarray(g) for g in state["grads"]]

    return forward, backward, result


def verify(cells):
    """Check every contender against derive; doubles as the warm-up (compiles, allocates)."""
    for forward, backward, _ in cells.values():
        for _ in range(3):
            forward()
            backward()
    for (dtype, impl), (_, _, result) in cells.items():
        tol = TOLERANCE[dtype]
        want = cells[dtype, "derive"][2]()
        for label, got, ref in zip(("h",) + GRADIENTS, result(), want, strict=True):
            # Sums over N·T products: compare to the scale of the result.
            scale = float(np.max(np.abs(ref)))
            if got.shape != ref.shape or not np.allclose(got, ref, rtol=tol, atol=tol * scale):
                worst = np.max(np.abs(got - ref)) if got.shape == ref.shape else got.shape
                raise SystemExit(f"{impl} {dtype} {label} disagrees with derive (max |diff| "
                                 f"{worst}); refusing to time it.")


def measure(cells, rounds, seed=0, clock=time.perf_counter):
    """Seconds of forward and backward of every call, interleaved in a shuffled order.

    ``clock`` is wall time by default; ``time.process_time`` counts only the CPU time
    of this process (every thread of it), which a loaded machine inflates far less.
    """
    samples = {key: {"forward": [], "backward": [], "total": []} for key in cells}
    order = list(cells)
    shuffle = random.Random(seed).shuffle
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    for _ in range(rounds):
        shuffle(order)
        for key in order:
            forward, backward, _ = cells[key]
            t0 = clock()
            forward()
            t1 = clock()
            backward()
            t2 = clock()
            s = samples[key]
            s["forward"].append(t1 - t0)
            s["backward"].append(t2 - t1)
            s["total"].append(t2 - t0)
    busy1 = busy_cpu_seconds()
    background = None
    if busy0 is not None and busy1 is not None:
        others = (busy1 - busy0) - (own_cpu_seconds() - own0)
        background = max(0.0, others / (time.perf_counter() - wall0))
    return samples, background


def summarise(samples, background, rounds, threads, notes):
    """The results document: best and median times, ratios over derive's, the goal."""
    doc = {
        "config": {"sizes": SIZES, "rounds": rounds, "threads": threads, "notes": notes,
                   "versions": {"numpy": np.__version__, "torch": torch.__version__}},
        "background_load_cores": background,
        "results": {},
    }
    for dtype in dict.fromkeys(d for d, _ in samples):
        times = {impl: {f"{part}_{stat}_s": fn(s[part])
                        for part in ("forward", "backward", "total")
                        for stat, fn in (("best", min), ("median", statistics.median))}
                 for (d, impl), s in samples.items() if d == dtype}
        ratios = {}
        for stat in ("best", "median"):
            mine = times["derive"][f"total_{stat}_s"]
            # The other's time over derive's: above 1, derive is faster.
            ratios[stat] = {impl: t[f"total_{stat}_s"] / mine
                            for impl, t in times.items() if impl != "derive"}
        value = 1.0 / ratios["median"]["torch"]
        doc["results"][dtype] = {
            "times": times, "ratios_over_derive": ratios,
            "goal": {"reference": "torch", "derive_over_torch_median": value,
                     "target": GOAL, "met": value <= GOAL}}
    return doc


def report(doc):
    """The plain-text table."""
    cfg = doc["config"]
    s = cfg["sizes"]
    lines = [f"LSTM N={s['N']} T={s['T']} F={s['F']} H={s['H']}, forward + backward through "
             f"time; {cfg['rounds']} rounds, {cfg['threads']} thread(s), {cfg['clock']} clock.",
             ""]
    head = (f"{'dtype':<8} {'impl':<7} {'fwd ms':>8} {'bwd ms':>8} {'f+b best':>9}"
            f" {'f+b median':>11} {'/derive':>8}")
    lines += [head, "-" * len(head)]
    for dtype, res in doc["results"].items():
        for impl, t in res["times"].items():
            ratio = res["ratios_over_derive"]["median"].get(impl)
            lines.append(
                f"{dtype:<8} {impl:<7} {t['forward_median_s'] * 1e3:8.2f}"
                f" {t['backward_median_s'] * 1e3:8.2f} {t['total_best_s'] * 1e3:9.2f}"
                f" {t['total_median_s'] * 1e3:11.2f} {'' if ratio is None else f'{ratio:.2f}':>8}")
    lines += ["", "fwd and bwd are medians; /derive is the contender's median forward + backward "
              "over derive's (above 1: derive is faster)."]
    background = doc["background_load_cores"]
    if background is not None and background > 0.1:
        lines += [f"WARNING: other processes kept {background:.1f} cores busy during the "
                  "timings: compare the ratios, not the times."]
    lines += cfg["notes"]
    lines += ["", f"Goal: derive's forward + backward at most {GOAL:.2f}x torch's (median):"]
    for dtype, res in doc["results"].items():
        g = res["goal"]
        lines.append(f"  {dtype:<8} {g['derive_over_torch_median']:.2f}x -> "
                     f"{'met' if g['met'] else 'MISSED'}")
    return "\n".join(lines)


def main(argv=None):
    """Parse arguments, check, time, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for PyTorch, Numba and BLAS (default: all cores)")
    parser.add_argument("--module", type=Path, default=MODULE,
                        help="the generated LSTM module to time (default: generated/)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (for a loaded machine)")
    args = parser.parse_args(argv)

    import numba

    # Imported from this checkout: derive need not be installed.
    sys.path.insert(0, str(ROOT))
    from derive.checks import load_module

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=args.threads, user_api="blas")
    except ImportError:
        pass
    module = load_module(args.module)
    rng = np.random.default_rng(0)
    cells, notes = {}, []
    for dtype in (np.float32, np.float64):
        p = problem(dtype, rng)
        name = dtype.__name__
        cells[name, "derive"] = derive_contender(module, p)
        cells[name, "torch"] = torch_contender(p)
        jax_cell = jax_contender(p)
        if jax_cell is None:
            notes = ["JAX is not installed: its column is left out."]
        else:
            cells[name, "jax"] = jax_cell
    verify(cells)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    samples, background = measure(cells, args.rounds, clock=clock)
    doc = summarise(samples, background, args.rounds, args.threads, notes)
    doc["config"]["clock"] = args.clock
    print(report(doc))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
