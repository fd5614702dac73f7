"""The notes' MLP (784-128-64-10) train_step: derive's generated module vs PyTorch eager.

One run, side by side, float32 and float64, batch 32 and 256: the time of one SGD step
(forward, softmax cross-entropy, backward, update) for derive and for PyTorch, their
ratio, and at batch 256 the time of the step's GEMMs alone done by NumPy (the floor any
implementation pays). The module runs twice: jitted, and with its kernels compiled ahead
of time (`derive compile`), which is what a fresh process starts fastest with.
Goals (issue 5): ≥ 1.5× PyTorch's throughput at float32 batch 32, ≥ 1.15× elsewhere, and
within 1.25× of the GEMMs' time at batch 256.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the name PyTorch documents)

from derive.checks import load_module

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "network.json"


def best(fn, repeat: int, number: int) -> float:
    """Best time per call over ``repeat`` rounds of ``number`` calls."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def torch_model(params, dtype):
    layers = []
    for k in range(0, len(params), 2):
        linear = torch.nn.Linear(params[k].shape[1], params[k].shape[0]).to(dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(params[k]))
            linear.bias.copy_(torch.from_numpy(params[k + 1]))
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def gemm_floor(params, x, repeat, number):
    """The step's matrix products alone: 3 forward, 2 per layer backward but the first's d_x."""
    ws = params[0::2]
    acts = [x]
    for w in ws:
        acts.append(np.empty((x.shape[0], w.shape[0]), x.dtype))
    deltas = [np.empty_like(a) for a in acts]
    grads = [np.empty_like(w) for w in ws]

    def run():
        for k, w in enumerate(ws):
            np.dot(acts[k], w.T, acts[k + 1])
        for k in reversed(range(len(ws))):
            np.dot(deltas[k + 1].T, acts[k], grads[k])
            if k > 0:
                np.dot(deltas[k + 1], ws[k], deltas[k])

    return best(run, repeat, number)


def load_both(path: Path):
    """The module twice: with its ahead-of-time compiled kernels (built here if missing),
    then with its jitted ones. The jitted copy is loaded last, so the name Numba's cache
    looks up refers to it."""
    from derive.codegen.compiled import compile_network_module, compiled_path

    if not compiled_path(path).is_file():
        print(f"compiling {path.name} ahead of time (derive compile) ...", flush=True)
        compile_network_module(path)
    os.environ.pop("DERIVE_JIT", None)
    compiled = load_module(path)
    assert compiled.COMPILED is not None
    os.environ["DERIVE_JIT"] = "1"
    try:
        jitted = load_module(path)
    finally:
        del os.environ["DERIVE_JIT"]
    assert jitted.COMPILED is None
    return compiled, jitted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    compiled, net = load_both(ROOT / "generated" / "networks" / "mlp_notes.py")
    rows = []
    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        for batch in (32, 256):
            rng = np.random.default_rng(0)
            x = rng.normal(size=(batch, 784)).astype(dtype)
            y = rng.integers(0, 10, batch)
            params = net.init_params(0, dtype)
            model = torch_model(params, tdtype)
            # Same starting point, same step: the losses must agree before timing.
            loss, _ = net.loss_and_grad(params, x, y)
            want = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).item()
            assert abs(loss - want) <= 1e-4 * abs(want), (loss, want)
            state = net.init_state(params)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)

            def torch_step(model=model, opt=opt, tx=tx, ty=ty):
                opt.zero_grad()
                F.cross_entropy(model(tx), ty).backward()
                opt.step()

            number = 200 if batch == 32 else 50
            def our_step(params=params, state=state, x=x, y=y):
                net.train_step(params, state, x, y, 0.01)

            c_params = net.init_params(0, dtype)
            c_state = net.init_state(c_params)
            c_loss, _ = compiled.loss_and_grad(c_params, x, y)
            assert abs(c_loss - loss) <= 1e-5 * abs(loss), (c_loss, loss)

            def compiled_step(params=c_params, state=c_state, x=x, y=y):
                compiled.train_step(params, state, x, y, 0.01)

            ours = best(our_step, args.repeat, number)
            ahead = best(compiled_step, args.repeat, number)
            theirs = best(torch_step, args.repeat, number)
            floor = gemm_floor(params, x, args.repeat, number) if batch == 256 else None
            rows.append({"dtype": np.dtype(dtype).name, "batch": batch,
                         "derive_ms": ours * 1e3, "torch_ms": theirs * 1e3,
                         "speedup": theirs / ours, "compiled_ms": ahead * 1e3,
                         "compiled_speedup": theirs / ahead,
                         "gemm_ms": None if floor is None else floor * 1e3,
                         "over_gemm": None if floor is None else ours / floor})
    print(f"{'dtype':8} {'batch':>5} {'derive ms':>10} {'torch ms':>9} {'speedup':>8} "
          f"{'compiled ms':>12} {'speedup':>8} {'GEMMs ms':>9} {'derive/GEMMs':>12}")
    for r in rows:
        gemm = f"{r['gemm_ms']:9.3f} {r['over_gemm']:12.2f}" if r["gemm_ms"] else ""
        print(f"{r['dtype']:8} {r['batch']:5d} {r['derive_ms']:10.3f} {r['torch_ms']:9.3f} "
              f"{r['speedup']:8.2f} {r['compiled_ms']:12.3f} {r['compiled_speedup']:8.2f} "
              f"{gemm}")
    print("\nGoals: speedup ≥ 1.5 at float32 batch 32, ≥ 1.15 elsewhere; derive/GEMMs ≤ 1.25 "
          "at batch 256. 'derive' is the jitted module, 'compiled' the same module with its "
          "kernels compiled ahead of time (derive compile).")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
