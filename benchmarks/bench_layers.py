"""Dense and conv2d layers, forward + backward: derive against NumPy's BLAS and PyTorch.

Run from the repository root::

    python benchmarks/bench_layers.py [--repeat 30] [--threads T]

Two workloads at realistic sizes, in float64 and float32, in one run:

- dense 256×784 → 128: derive's generated kernels against the same three GEMMs done
  directly by NumPy (``x @ W.T + b``; ``d_s @ W``, ``d_s.T @ x``, ``d_s.sum(0)``) and
  against PyTorch eager (``F.linear`` with autograd);
- conv2d 32×3×32×32, 16 filters of 3×3, padding 1, stride 1: derive against PyTorch's
  CPU ``F.conv2d`` with autograd.

Every implementation's output and gradients are checked against derive's before anything
is timed. Times are the best of ``--repeat`` rounds after a warm-up; the rounds
interleave the implementations so that a burst of load slows them alike. Results are
printed as a table with the goals beside them (never asserted) and written to
``benchmarks/results/layers.json`` (no timestamps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS Numba's np.dot calls)
import torch
import torch.nn.functional as F  # noqa: N812  (the name PyTorch documents)
from _machine import busy_cpu_seconds, own_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "layers.json"

#: Goals, printed next to the results rather than asserted: derive's forward + backward
#: time over the reference's, at most this.
GOALS = {"dense": ("numpy", 1.10), "conv2d": ("torch", 1.00)}
#: Differences smaller than this are flagged as within run-to-run noise.
NOISE = 0.03
#: Cores' worth of CPU time other processes may use during the timings before the
#: report warns that they competed with the benchmark's threads.
BUSY = 0.1
#: Agreement required before timing, per dtype: relative, and absolute as a fraction of
#: the result's largest element.
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}

DENSE = {"N": 256, "I": 784, "O": 128}
CONV = {"N": 32, "C": 3, "H": 32, "W": 32, "F": 16, "k": 3, "stride": 1, "padding": 1}


def load_generated(name):
    """Import ``generated/layers/<name>.py`` through derive's own loader."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from derive.checks import load_module

    return load_module(ROOT / "generated" / "layers" / f"{name}.py")


def limit_blas_threads(threads):
    """Give every loaded BLAS (NumPy's, and SciPy's that Numba calls) ``threads`` threads.

    Returns a description for the report; threadpoolctl is optional.
    """
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return "BLAS threads not set (install threadpoolctl)"
    threadpool_limits(limits=threads, user_api="blas")
    libs = sorted({os.path.basename(i["filepath"]).split("-")[0] for i in threadpool_info()
                   if i["user_api"] == "blas"})
    return f"BLAS threads {threads} ({', '.join(libs)})"


def torch_autograd(fn, arrays, n_diff):
    """(forward, backward, result) closures for PyTorch eager with autograd."""
    tensors = [torch.from_numpy(a) for a in arrays]
    leaves = [t.requires_grad_(True) for t in tensors[:n_diff]]
    state = {}

    def forward():
        state["out"] = fn(*tensors)

    def backward(d_out):
        state["grads"] = torch.autograd.grad(state["out"], leaves, d_out)

    def result():
        return [state["out"].detach().numpy()] + [g.numpy() for g in state["grads"]]

    return forward, backward, result


def dense_implementations(dtype, rng):
    """Each implementation's (forward, backward, result) for the dense workload."""
    n, i, o = DENSE["N"], DENSE["I"], DENSE["O"]
    x = rng.standard_normal((n, i)).astype(dtype)
    w = (rng.standard_normal((o, i)) / math.sqrt(i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    d_s = rng.standard_normal((n, o)).astype(dtype)
    module = load_generated("dense")
    impls = {}

    state = {}
    impls["derive"] = (
        lambda: state.__setitem__("s", module.forward(x, w, b)),
        lambda: state.__setitem__("grads", module.backward(x, w, b, d_s)),
        lambda: [state["s"], *state["grads"]],
    )

    np_state = {}

    def numpy_forward():
        s = x @ w.T
        s += b
        np_state["s"] = s

    def numpy_backward():
        np_state["grads"] = (d_s @ w, d_s.T @ x, d_s.sum(axis=0))

    impls["numpy"] = (numpy_forward, numpy_backward,
                      lambda: [np_state["s"], *np_state["grads"]])

    forward, backward, result = torch_autograd(F.linear, [x, w, b], 3)
    d_s_t = torch.from_numpy(d_s)
    impls["torch"] = (forward, lambda: backward(d_s_t), result)
    return impls


def conv_implementations(dtype, rng):
    """Each implementation's (forward, backward, result) for the conv2d workload."""
    c = CONV
    x = rng.standard_normal((c["N"], c["C"], c["H"], c["W"])).astype(dtype)
    fan_in = c["C"] * c["k"] * c["k"]
    k = (rng.standard_normal((c["F"], c["C"], c["k"], c["k"])) / math.sqrt(fan_in)).astype(dtype)
    b = rng.standard_normal(c["F"]).astype(dtype)
    out_h = (c["H"] + 2 * c["padding"] - c["k"]) // c["stride"] + 1
    out_w = (c["W"] + 2 * c["padding"] - c["k"]) // c["stride"] + 1
    d_y = rng.standard_normal((c["N"], c["F"], out_h, out_w)).astype(dtype)
    hyper = {"stride": c["stride"], "padding": c["padding"]}
    module = load_generated("conv2d")
    impls = {}

    state = {}
    impls["derive"] = (
        lambda: state.__setitem__("y", module.forward(x, k, b, **hyper)),
        lambda: state.__setitem__("grads", module.backward(x, k, b, d_y, **hyper)),
        lambda: [state["y"], *state["grads"]],
    )

    forward, backward, result = torch_autograd(
        lambda *t: F.conv2d(*t, **hyper), [x, k, b], 3)
    d_y_t = torch.from_numpy(d_y)
    impls["torch"] = (forward, lambda: backward(d_y_t), result)
    return impls


def verify(workloads):
    """Check every implementation against derive before anything is timed.

    Doubles as the warm-up: the first calls compile the Numba kernels (or load them from
    the cache) and let every library allocate its workspaces.
    """
    for (layer, dtype), impls in workloads.items():
        results = {}
        for impl, (forward, backward, result) in impls.items():
            for _ in range(3):
                forward()
                backward()
            results[impl] = result()
        tol = TOLERANCE[dtype]
        for impl, got in results.items():
            for label, a, want in zip(("output", "d_input", "d_weight", "d_bias"), got,
                                      results["derive"], strict=True):
                # Sums over 32768 products: compare to the scale of the result.
                scale = float(np.max(np.abs(want))) if want.size else 1.0
                if a.shape != want.shape or not np.allclose(a, want, rtol=tol,
                                                            atol=tol * scale):
                    worst = np.max(np.abs(a - want)) if a.shape == want.shape else a.shape
                    raise SystemExit(
                        f"{impl} {layer} {dtype} {label} disagrees with derive "
                        f"(max |diff| {worst}); refusing to time it.")


def measure(workloads, repeat, burst):
    """Best-of-``repeat`` seconds of forward, backward and the pair, per implementation.

    Each round runs every implementation ``burst`` times in a row, starting one step
    further along each round: the first run of a burst absorbs the switch from the
    previous library (its worker threads still spinning, its data in the caches), and a
    burst of load from elsewhere slows every implementation alike.
    """
    clock = time.perf_counter
    runs = [(key, impl) for key, impls in workloads.items() for impl in impls]
    best = {run: {"forward": math.inf, "backward": math.inf, "total": math.inf}
            for run in runs}
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), clock()
    for r in range(repeat):
        for run in runs[r % len(runs):] + runs[:r % len(runs)]:
            key, impl = run
            forward, backward, _ = workloads[key][impl]
            for _ in range(burst):
                t0 = clock()
                forward()
                t1 = clock()
                backward()
                t2 = clock()
                b = best[run]
                b["forward"] = min(b["forward"], t1 - t0)
                b["backward"] = min(b["backward"], t2 - t1)
                b["total"] = min(b["total"], t2 - t0)
    busy1 = busy_cpu_seconds()
    background = None
    if busy0 is not None and busy1 is not None:
        others = (busy1 - busy0) - (own_cpu_seconds() - own0)
        background = max(0.0, others / (clock() - wall0))
    return best, background


def summarise(best, background, repeat, burst, threads, blas):
    """Turn the timings into the results document."""
    doc = {
        "config": {
            "repeat": repeat, "burst": burst, "threads": threads, "blas": blas,
            "numba_threading_layer": numba.threading_layer(),
            "dense": DENSE, "conv2d": CONV,
            "versions": {"numpy": np.__version__, "numba": numba.__version__,
                         "torch": torch.__version__},
        },
        "background_load_cores": background,
        "results": {},
    }
    keys = list(dict.fromkeys(key for key, _ in best))
    for layer, dtype in sorted(keys, key=lambda k: (list(GOALS).index(k[0]), k[1] != "float64")):
        entry = {impl: {f"{part}_s": b[part] for part in ("forward", "backward", "total")}
                 for (key, impl), b in best.items() if key == (layer, dtype)}
        derive_s = entry["derive"]["total_s"]
        # derive's time over the other's: at most the goal is good, below 1 is faster.
        ratios = {f"derive/{impl}": derive_s / e["total_s"]
                  for impl, e in entry.items() if impl != "derive"}
        reference, target = GOALS[layer]
        value = ratios[f"derive/{reference}"]
        goal = {"reference": reference, "target": target, "value": value,
                "met": value <= target}
        doc["results"].setdefault(layer, {})[dtype] = {
            "times": entry, "ratios": ratios, "goal": goal}
    return doc


def verdict(goal):
    """"met"/"MISSED", flagged when the margin is within run-to-run noise."""
    text = "met" if goal["met"] else "MISSED"
    if abs(goal["value"] / goal["target"] - 1.0) < NOISE:
        text += f" (margin < {NOISE:.0%}: within run-to-run noise)"
    return text


REFERENCE_NAMES = {"numpy": "NumPy BLAS", "torch": "PyTorch"}


def report(doc):
    """The plain-text table."""
    cfg = doc["config"]
    d, c = cfg["dense"], cfg["conv2d"]
    lines = [
        f"dense {d['N']}x{d['I']} -> {d['O']}; conv2d {c['N']}x{c['C']}x{c['H']}x{c['W']},"
        f" {c['F']} filters {c['k']}x{c['k']}, stride {c['stride']}, padding {c['padding']}.",
        f"Best of {cfg['repeat']} rounds x {cfg['burst']}, {cfg['threads']} threads (Numba"
        f" '{cfg['numba_threading_layer']}', PyTorch intra-op; {cfg['blas']}).",
        "",
        f"{'layer':<7} {'dtype':<8} {'impl':<7} {'fwd ms':>8} {'bwd ms':>8} {'f+b ms':>8}"
        f" {'derive/impl':>12}",
    ]
    lines.append("-" * len(lines[-1]))
    for layer, by_dtype in doc["results"].items():
        for dtype, res in by_dtype.items():
            for impl, t in res["times"].items():
                ratio = res["ratios"].get(f"derive/{impl}")
                lines.append(
                    f"{layer:<7} {dtype:<8} {impl:<7} {t['forward_s'] * 1e3:8.3f}"
                    f" {t['backward_s'] * 1e3:8.3f} {t['total_s'] * 1e3:8.3f}"
                    f" {'' if ratio is None else f'{ratio:.2f}x':>12}")
    lines += [
        "",
        "derive/impl is derive's forward + backward time over impl's: below 1 means derive",
        "is faster. Forward and backward columns are each the best of their own runs.",
    ]
    background = doc["background_load_cores"]
    idle = (os.cpu_count() or cfg["threads"]) - cfg["threads"]
    if background is not None and background > idle + BUSY:
        lines += [
            "",
            f"WARNING: other processes kept {background:.1f} cores busy during the timings;"
            f" with {cfg['threads']} threads",
            "the parallel results are unreliable. Rerun on an idle machine.",
        ]
    lines += ["", "Goals (forward + backward, derive's time over the reference's):"]
    for layer, by_dtype in doc["results"].items():
        for dtype, res in by_dtype.items():
            g = res["goal"]
            lines.append(
                f"  {layer:<7} {dtype:<8} <= {g['target']:.2f}x {REFERENCE_NAMES[g['reference']]}:"
                f" {g['value']:.2f}x -> {verdict(g)}")
    return "\n".join(lines)


def main(argv=None):
    """Parse arguments, verify, time, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed rounds; the best is kept")
    parser.add_argument("--threads", type=int, default=numba.get_num_threads(),
                        help="threads for Numba, PyTorch and BLAS (default: all cores)")
    parser.add_argument("--burst", type=int, default=3,
                        help="consecutive runs of one implementation per round")
    args = parser.parse_args(argv)

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    blas = limit_blas_threads(args.threads)

    rng = np.random.default_rng(0)
    workloads = {}
    for dtype in (np.float64, np.float32):
        workloads["dense", dtype.__name__] = dense_implementations(dtype, rng)
        workloads["conv2d", dtype.__name__] = conv_implementations(dtype, rng)
    verify(workloads)
    best, background = measure(workloads, args.repeat, args.burst)
    doc = summarise(best, background, args.repeat, args.burst, args.threads, blas)
    print(report(doc))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
