"""Activation kernels against the machine's memory bandwidth, NumPy and PyTorch.

Run from the repository root::

    python benchmarks/bench_activations.py [--n 10000000] [--repeat 7]

Elementwise activations on arrays far larger than the caches are limited by memory
traffic, so the yardstick is a STREAM-style triad measured in the same run, on arrays of
the same size. Every implementation writes into preallocated outputs, is checked against
derive's result before it is timed, and is timed as the best of ``--repeat`` runs after
a warm-up (which also compiles the Numba kernels and touches every output page).
Results are printed as a table and written to ``benchmarks/results/activations.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import torch
from _machine import busy_cpu_seconds, own_cpu_seconds
from numba import njit, prange

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "activations.json"

#: Bytes counted per element: forward reads x and writes y; backward reads x, y, d_y and
#: writes d_x. This is the traffic of the generic interface; sigmoid's backward needs only
#: y and relu's only x, so a kernel that skips the unused input can exceed the triad.
BYTES_FORWARD = 16
BYTES_BACKWARD = 32
BYTES_TOTAL = BYTES_FORWARD + BYTES_BACKWARD
#: The triad reads b and c and writes a.
BYTES_TRIAD = 24

#: Targets, printed next to the results rather than asserted: timings vary with the
#: machine and its load, and a benchmark that fails would hide the numbers.
GOAL_FRACTION = {"relu": 0.90, "sigmoid": 0.80}
#: Differences smaller than this are flagged as within run-to-run noise.
NOISE = 0.03
#: Cores' worth of CPU time other processes may use during the timings before the
#: report warns that they competed with the benchmark's threads.
BUSY = 0.1

#: Bytes read between timed runs to evict the caches: several times a large last-level
#: cache (32 MB of L3 on the 2-core EPYC VM this was written on).
FLUSH_BYTES = 128 << 20

ACTIVATIONS = ("sigmoid", "relu")
IMPLEMENTATIONS = ("derive", "numpy", "torch")


@njit(parallel=True)
def triad(a, b, c, s):
    """STREAM triad ``a = b + s*c``, parallel over all Numba threads."""
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


def load_generated(name):
    """Import ``generated/activations/<name>.py`` through derive's own loader."""
    # Running ``python benchmarks/...`` puts benchmarks/ on sys.path, not the repository,
    # so an uninstalled checkout still needs the root to import derive.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from derive.checks import load_module

    return load_module(ROOT / "generated" / "activations" / f"{name}.py")


@dataclass
class Buffers:
    """Inputs and preallocated outputs shared by every implementation.

    Sharing them means every implementation reads and writes the same, already
    faulted-in pages, so no first-touch page faults are timed.
    """

    x: np.ndarray
    d_y: np.ndarray
    y: np.ndarray
    d_x: np.ndarray
    #: relu's NumPy backward needs its mask somewhere; preallocated like every output.
    mask: np.ndarray

    def torch_views(self):
        """Zero-copy tensors over the same memory."""
        return tuple(torch.from_numpy(a) for a in (self.x, self.d_y, self.y, self.d_x))


def implementations(buf):
    """For each activation and implementation, its (forward, backward) as closures.

    Each closure writes into ``buf.y`` / ``buf.d_x``; backward reads the ``y`` written by
    the same implementation's forward, as training would.
    """
    x, d_y, y, d_x, mask = buf.x, buf.d_y, buf.y, buf.d_x, buf.mask
    xt, d_yt, yt, d_xt = buf.torch_views()
    aten = torch.ops.aten

    def numpy_sigmoid_forward():
        # 1 / (1 + exp(-x)) in place, one pass per operation: NumPy has no fused sigmoid.
        np.negative(x, out=y)
        np.exp(y, out=y)
        np.add(y, 1.0, out=y)
        np.reciprocal(y, out=y)

    def numpy_sigmoid_backward():
        np.subtract(1.0, y, out=d_x)
        np.multiply(d_x, y, out=d_x)
        np.multiply(d_x, d_y, out=d_x)

    def numpy_relu_backward():
        np.greater(x, 0.0, out=mask)
        np.multiply(d_y, mask, out=d_x)

    table = {}
    for name in ACTIVATIONS:
        module = load_generated(name)
        table[name] = {
            "derive": (
                lambda m=module: m.forward(x, out=y),
                lambda m=module: m.backward(x, y, d_y, out=d_x),
            ),
        }
    table["sigmoid"]["numpy"] = (numpy_sigmoid_forward, numpy_sigmoid_backward)
    table["relu"]["numpy"] = (lambda: np.maximum(x, 0.0, out=y), numpy_relu_backward)
    # The out= overloads (sigmoid.out, sigmoid_backward.grad_input, clamp_min.out,
    # threshold_backward.grad_input) write into our buffers instead of allocating.
    table["sigmoid"]["torch"] = (
        lambda: torch.sigmoid(xt, out=yt),
        lambda: aten.sigmoid_backward.grad_input(d_yt, yt, grad_input=d_xt),
    )
    table["relu"]["torch"] = (
        lambda: torch.clamp_min(xt, 0.0, out=yt),
        lambda: aten.threshold_backward.grad_input(d_yt, xt, 0.0, grad_input=d_xt),
    )
    return table


def verify(table, buf):
    """Check every implementation against derive before anything is timed.

    Doubles as the warm-up: the first call compiles each Numba kernel and touches the
    output pages.
    """
    for name, impls in table.items():
        forward, backward = impls["derive"]
        forward()
        backward()
        y_ref, d_x_ref = buf.y.copy(), buf.d_x.copy()
        for impl, (forward, backward) in impls.items():
            forward()
            backward()
            for label, got, want in (("forward", buf.y, y_ref), ("backward", buf.d_x, d_x_ref)):
                if not np.allclose(got, want):
                    worst = np.max(np.abs(got - want))
                    raise SystemExit(
                        f"{impl} {name} {label} disagrees with derive (max |diff| {worst:.3g});"
                        " refusing to time it."
                    )


def measure(table, triad_args, repeat, flush):
    """Best-of-``repeat`` seconds for the triad and each forward/backward.

    Repeats are interleaved (round r times everything once, starting one step further
    along each round) so that a burst of load slows every implementation alike instead
    of one unlucky block of runs. Also returns the average number of cores other
    processes kept busy meanwhile: on a 2-core machine one busy neighbour halves every
    parallel result.
    """
    clock = time.perf_counter
    runs = [("triad", None)] + [(name, impl) for name, impls in table.items() for impl in impls]
    best = {run: {"forward": math.inf, "backward": math.inf, "total": math.inf}
            for run in runs}
    triad(*triad_args)  # compile and fault in the triad's pages
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), clock()
    for r in range(repeat):
        for run in runs[r % len(runs):] + runs[:r % len(runs)]:
            name, impl = run
            flush()
            if name == "triad":
                t0 = clock()
                triad(*triad_args)
                best[run]["total"] = min(best[run]["total"], clock() - t0)
                continue
            forward, backward = table[name][impl]
            t0 = clock()
            forward()
            t1 = clock()
            backward()
            t2 = clock()
            b = best[run]
            b["forward"] = min(b["forward"], t1 - t0)
            b["backward"] = min(b["backward"], t2 - t1)
            # The pair is also timed as one unit: a forward followed by its backward.
            b["total"] = min(b["total"], t2 - t0)
    busy1 = busy_cpu_seconds()
    background = None
    if busy0 is not None and busy1 is not None:
        others = (busy1 - busy0) - (own_cpu_seconds() - own0)
        background = max(0.0, others / (clock() - wall0))
    return best, background


def summarise(best, background, n, repeat, threads):
    """Turn the timings into the results document."""
    triad_s = best["triad", None]["total"]
    triad_gbs = BYTES_TRIAD * n / triad_s / 1e9
    doc = {
        "config": {
            "n": n, "repeat": repeat, "dtype": "float64", "threads": threads,
            "numba_threading_layer": numba.threading_layer(),
            "bytes_per_element": {"forward": BYTES_FORWARD, "backward": BYTES_BACKWARD,
                                  "total": BYTES_TOTAL, "triad": BYTES_TRIAD},
            "versions": {"numpy": np.__version__, "numba": numba.__version__,
                         "torch": torch.__version__},
        },
        "background_load_cores": background,
        "triad": {"seconds": triad_s, "gb_per_s": triad_gbs},
        "activations": {},
    }
    for name in ACTIVATIONS:
        entry = {}
        for impl in IMPLEMENTATIONS:
            b = best[name, impl]
            gbs = BYTES_TOTAL * n / b["total"] / 1e9
            entry[impl] = {
                "forward_s": b["forward"], "backward_s": b["backward"], "total_s": b["total"],
                "forward_gb_per_s": BYTES_FORWARD * n / b["forward"] / 1e9,
                "backward_gb_per_s": BYTES_BACKWARD * n / b["backward"] / 1e9,
                "gb_per_s": gbs, "fraction_of_triad": gbs / triad_gbs,
            }
        derive_s = entry["derive"]["total_s"]
        # Ratios are throughputs, derive over the other: above 1 means derive is faster.
        ratios = {f"derive/{impl}": entry[impl]["total_s"] / derive_s
                  for impl in IMPLEMENTATIONS if impl != "derive"}
        goals = {
            "fraction_of_triad": {"target": GOAL_FRACTION[name],
                                  "value": entry["derive"]["fraction_of_triad"],
                                  "met": entry["derive"]["fraction_of_triad"]
                                  >= GOAL_FRACTION[name]},
            "faster_than_torch": {"target": 1.0, "value": ratios["derive/torch"],
                                  "met": ratios["derive/torch"] > 1.0},
        }
        doc["activations"][name] = {"results": entry, "ratios": ratios, "goals": goals}
    return doc


def verdict(goal):
    """"met"/"MISSED", flagged when the margin is within run-to-run noise."""
    text = "met" if goal["met"] else "MISSED"
    if abs(goal["value"] / goal["target"] - 1.0) < NOISE:
        text += f" (margin < {NOISE:.0%}: within run-to-run noise)"
    return text


def report(doc):
    """The plain-text table."""
    cfg = doc["config"]
    lines = [
        f"n = {cfg['n']:,} float64 elements, best of {cfg['repeat']}, {cfg['threads']} threads"
        f" (Numba '{cfg['numba_threading_layer']}', PyTorch); NumPy is single-threaded.",
        f"Triad a = b + s*c: {doc['triad']['seconds'] * 1e3:.2f} ms, "
        f"{doc['triad']['gb_per_s']:.1f} GB/s ({BYTES_TRIAD} B/element).",
        "",
        f"{'activation':<10} {'impl':<7} {'fwd ms':>7} {'bwd ms':>7} {'f+b ms':>7}"
        f" {'GB/s':>6} {'% triad':>8} {'derive/impl':>12}",
    ]
    lines.append("-" * len(lines[-1]))
    for name, act in doc["activations"].items():
        for impl, r in act["results"].items():
            ratio = act["ratios"].get(f"derive/{impl}")
            lines.append(
                f"{name:<10} {impl:<7} {r['forward_s'] * 1e3:7.2f} {r['backward_s'] * 1e3:7.2f}"
                f" {r['total_s'] * 1e3:7.2f} {r['gb_per_s']:6.1f} {r['fraction_of_triad']:8.0%}"
                f" {'' if ratio is None else f'{ratio:.2f}x':>12}"
            )
    lines += [
        "",
        f"GB/s counts {BYTES_TOTAL} B/element for forward + backward: {BYTES_FORWARD} forward"
        f" (x, y), {BYTES_BACKWARD} backward",
        "(x, y, d_y, d_x). sigmoid's backward reads only y and d_y and relu's only x and d_y,",
        "so they move fewer bytes than counted and can exceed 100% of the triad.",
        "derive/impl is impl's time over derive's: above 1 means derive is faster.",
    ]
    background = doc["background_load_cores"]
    if background is not None and background > BUSY:
        lines += [
            "",
            f"WARNING: other processes kept {background:.1f} cores busy during the timings;"
            f" with {cfg['threads']} threads",
            "the parallel results are unreliable. Rerun on an idle machine.",
        ]
    lines += [
        "",
        "Goals (derive, forward + backward):",
    ]
    for name, act in doc["activations"].items():
        frac, torch_goal = act["goals"]["fraction_of_triad"], act["goals"]["faster_than_torch"]
        lines.append(f"  {name:<8} >= {frac['target']:.0%} of triad: {frac['value']:.0%}"
                     f" -> {verdict(frac)}")
        lines.append(f"  {name:<8} faster than PyTorch: {torch_goal['value']:.2f}x"
                     f" -> {verdict(torch_goal)}")
    return "\n".join(lines)


def main(argv=None):
    """Parse arguments, verify, time, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="elements per array")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs; the best is kept")
    args = parser.parse_args(argv)

    # Every parallel implementation gets the same threads: Numba's pool (all cores by
    # default) and PyTorch's intra-op pool.
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)

    rng = np.random.default_rng(0)
    # Standard normal inputs put half of relu's elements on each side of the kink, in
    # random order, so a kernel that branched per element would pay for mispredictions.
    x = rng.standard_normal(args.n)
    buf = Buffers(x=x, d_y=rng.standard_normal(args.n), y=np.empty_like(x),
                  d_x=np.empty_like(x), mask=np.empty(args.n, dtype=bool))
    # The triad gets arrays of its own so it never disturbs the activations' buffers.
    triad_args = (np.empty_like(x), rng.standard_normal(args.n),
                  rng.standard_normal(args.n), 3.0)

    table = implementations(buf)
    verify(table, buf)
    # Reading FLUSH_BYTES before each timed run evicts (and writes back) whatever the
    # previous run left in the caches, so no run inherits a warm tail of its inputs or
    # pays for writing back another's dirty lines.
    scratch = np.ones(FLUSH_BYTES // 8)
    best, background = measure(table, triad_args, args.repeat, flush=scratch.sum)
    doc = summarise(best, background, args.n, args.repeat, threads)
    print(report(doc))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
