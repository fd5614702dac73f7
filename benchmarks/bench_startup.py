"""Time to the first gradient in a fresh process: derive's network module vs PyTorch eager.

Each sample starts a new Python interpreter and stops the clock when the gradient of the
notes' MLP (784-128-64-10, float64, batch 32) has been computed: interpreter start-up,
imports, parameter set-up and the first call are all inside. Three contenders:

- derive, compiled ahead of time (``derive compile``): the module loads its extension
  module and no Numba at all;
- derive, jitted with a warm Numba cache (``DERIVE_JIT=1``): Numba's import and its
  first-call initialisation come before the cached kernel loads;
- PyTorch eager: ``import torch``, an ``nn.Sequential`` and one backward pass.

Goal (issue 5): a cached generated network module reaches its first gradient in under
0.6 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "generated" / "networks" / "mlp_notes.py"
RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
GOAL = 0.6

#: Child scripts. Each prints the wall-clock time (time.time) at which it had the gradient,
#: and the times of its own phases, as JSON.
DERIVE = textwrap.dedent("""
    import time
    started = time.perf_counter()
    import importlib.util, json, sys
    import numpy as np
    numpy_done = time.perf_counter()
    spec = importlib.util.spec_from_file_location("mlp_notes", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mlp_notes"] = module
    spec.loader.exec_module(module)
    import_done = time.perf_counter()
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 784)), rng.integers(0, 10, 32)
    loss, grads = module.loss_and_grad(params, x, y)
    now = time.time()
    done = time.perf_counter()
    print(json.dumps({"at": now, "numpy": numpy_done - started,
                      "module": import_done - numpy_done, "first_call": done - import_done,
                      "compiled": module.COMPILED is not None,
                      "numba": "numba" in sys.modules, "loss": loss}))
""")
TORCH = textwrap.dedent("""
    import time
    started = time.perf_counter()
    import json
    import numpy as np
    numpy_done = time.perf_counter()
    import torch
    import_done = time.perf_counter()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
        torch.nn.ReLU(), torch.nn.Linear(64, 10)).double()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((32, 784)))
    y = torch.from_numpy(rng.integers(0, 10, 32))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    now = time.time()
    done = time.perf_counter()
    print(json.dumps({"at": now, "numpy": numpy_done - started,
                      "module": import_done - numpy_done, "first_call": done - import_done,
                      "loss": float(loss)}))
""")


def sample(script: str, argv: list[str], env: dict) -> dict:
    """One fresh interpreter: seconds from launch to the gradient, and its phases."""
    launched = time.time()
    out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                         text=True, env=env, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    report["total"] = report.pop("at") - launched
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from derive.codegen.compiled import compile_network_module, compiled_path

    if not compiled_path(MODULE).is_file():
        print(f"compiling {MODULE.relative_to(ROOT)} ahead of time ...", flush=True)
        compile_network_module(MODULE)
    base = {k: v for k, v in os.environ.items() if k != "DERIVE_JIT"}
    contenders = {
        "derive compiled": (DERIVE, [str(MODULE)], base),
        "derive jit (cached)": (DERIVE, [str(MODULE)], base | {"DERIVE_JIT": "1"}),
        "pytorch eager": (TORCH, [], base),
    }
    for script, argv_, env in contenders.values():
        sample(script, argv_, env)  # warms Numba's cache and the OS's file cache
    samples = {name: [] for name in contenders}
    for _ in range(args.repeat):  # interleaved, so a slow moment hits every contender
        for name, (script, argv_, env) in contenders.items():
            samples[name].append(sample(script, argv_, env))
    rows = []
    torch_median = statistics.median(s["total"] for s in samples["pytorch eager"])
    print(f"{'':22}{'median s':>9}{'best s':>8}{'numpy':>7}{'import':>8}{'1st call':>9}"
          f"{'vs torch':>9}")
    for name, runs in samples.items():
        median = statistics.median(s["total"] for s in runs)
        phases = {k: statistics.median(s[k] for s in runs)
                  for k in ("numpy", "module", "first_call")}
        row = {"contender": name, "median_s": round(median, 3),
               "best_s": round(min(s["total"] for s in runs), 3),
               **{f"{k}_s": round(v, 3) for k, v in phases.items()},
               "speedup_vs_torch": round(torch_median / median, 2)}
        if "compiled" in runs[0]:
            row["compiled_used"] = runs[0]["compiled"]
            row["numba_imported"] = runs[0]["numba"]
        rows.append(row)
        print(f"{name:22}{median:9.3f}{row['best_s']:8.3f}{phases['numpy']:7.3f}"
              f"{phases['module']:8.3f}{phases['first_call']:9.3f}"
              f"{row['speedup_vs_torch']:8.2f}x")
    compiled = rows[0]
    verdict = "met" if compiled["median_s"] < GOAL else "NOT met"
    print(f"goal: first gradient in a fresh process under {GOAL} s -> {verdict} "
          f"(derive compiled, median {compiled['median_s']} s)")
    losses = {name: runs[0]["loss"] for name, runs in samples.items()}
    if abs(losses["derive compiled"] - losses["derive jit (cached)"]) > 1e-12:
        print(f"warning: the two derive runs disagree: {losses}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"goal_s": GOAL, "repeat": args.repeat, "rows": rows},
                                  indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
