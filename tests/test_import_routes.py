"""Generated modules load whatever way they are imported (issue 11, point 5).

Numba's on-disk cache is written by one process and read by others, and it records the
name of the module its functions were compiled in. Whichever route wrote a module's cache,
every route must read it: `import` from sys.path, importlib with or without sys.modules,
derive.checks.load_module, a copy of the folder elsewhere. A cache entry that cannot be
loaded makes the kernel compile again, never an error.

A process only writes a cache entry it had to compile, so "route A, then route B" means a
cache written by A and read by B. Each route writes its own slot (a copy of the modules,
told apart by a comment so that their texts, hence their cache names, differ); then four
reader processes each read all five slots, every slot by a route other than its writer's,
so that together they read every slot by every other route: all 20 ordered pairs, in nine
processes, with five modules loaded by five routes in each reader.
"""

import itertools
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from derive.cli import main

#: How a process imports a module. "copy" is "import" from a copy of the slot's folder,
#: __pycache__ included, made by the test just before.
ROUTES = ("import", "importlib", "importlib_registered", "load_module", "copy")
#: The runtime every generated module imports, written beside the modules.
RUNTIME = "derive_runtime.py"

#: Run in a fresh interpreter with a JSON list of [route, path]: import each module by its
#: route, call its kernels, and print per module the results and Numba's cache hits and
#: misses.
PROBE = textwrap.dedent("""
    import importlib, importlib.util, json, os, sys
    import numpy as np

    def load(route, path):
        folder, stem = os.path.split(path)
        stem = stem[:-3]
        if route in ("import", "copy"):
            sys.path.insert(0, folder)
            return importlib.import_module(stem)
        if route == "load_module":
            from derive.checks import load_module
            return load_module(path)
        spec = importlib.util.spec_from_file_location("any_name_" + stem, path)
        module = importlib.util.module_from_spec(spec)
        if route == "importlib_registered":
            sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    def use(module):
        if hasattr(module, "loss_and_grad"):
            params = module.init_params(0)
            rng = np.random.default_rng(1)
            x = rng.standard_normal((6,) + module.INPUT_SHAPE)
            y = rng.integers(0, module.N_CLASSES, 6)
            loss, grads = module.loss_and_grad(params, x, y)
            return [loss] + [float(g.sum()) for g in grads]
        x = np.linspace(-4.0, 4.0, 9)
        y = module.forward(x)
        return list(y) + list(module.backward(x, y, np.ones_like(x)))

    report = []
    for route, path in json.loads(sys.argv[1]):
        module = load(route, path)
        values = use(module)
        stats = [v.stats for v in vars(module).values() if hasattr(v, "_cache_hits")]
        report.append({"path": path, "values": values,
                       "hits": sum(sum(s.cache_hits.values()) for s in stats),
                       "misses": sum(sum(s.cache_misses.values()) for s in stats)})
    print(json.dumps(report))
""")


def _run(jobs):
    """Run the probe over jobs [(route, path), ...] in a fresh process; its reports."""
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps([[r, str(p)] for r, p in jobs])],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (
        "; ".join(f"{p.parent.name}/{p.name} by {r}" for r, p in jobs) + f":\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def _expected_sigmoid():
    x = np.linspace(-4.0, 4.0, 9)
    y = 1 / (1 + np.exp(-x))
    return list(y) + list(y * (1 - y))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The texts of a freshly generated catalogue module and network module."""
    out = tmp_path_factory.mktemp("generated")
    assert main(["kernels", "sigmoid", "-o", str(out)]) == 0
    assert main(["kernels", "examples/mlp_notes.toml", "-o", str(out)]) == 0
    return {"sigmoid": (out / "activations" / "sigmoid.py").read_text(encoding="utf-8"),
            "mlp_notes": (out / "networks" / "mlp_notes.py").read_text(encoding="utf-8"),
            RUNTIME: (out / RUNTIME).read_text(encoding="utf-8")}


def _slot(folder, sources, tag):
    """A folder holding both modules, their texts made distinct by `tag`, and beside them
    the runtime they import."""
    folder.mkdir()
    for stem, text in sources.items():
        if stem == RUNTIME:
            (folder / RUNTIME).write_text(text, encoding="utf-8")
        else:
            (folder / f"{stem}_{tag}.py").write_text(f"{text}# slot {tag}\n", encoding="utf-8")
    return folder


def _jobs(folder, route, copies):
    """The probe's jobs that import the modules of `folder` by `route`, and the folder used.

    "copy" copies the folder, cache and all, to a new one (file times kept, as Numba's
    index compares them) and imports from there.
    """
    if route == "copy":
        copy = folder.with_name(f"{folder.name}_copy{next(copies)}")
        shutil.copytree(folder, copy)
        folder = copy
    return [(route, path) for path in sorted(folder.glob("*.py")) if path.name != RUNTIME], folder


def _check(report, reference):
    """Each module's results are the reference's; returns (hits, misses) per module."""
    for entry in report:
        kind = "mlp_notes" if "mlp_notes" in entry["path"] else "sigmoid"
        np.testing.assert_allclose(entry["values"], reference[kind], rtol=1e-12,
                                   err_msg=entry["path"])
    return [(e["hits"], e["misses"]) for e in report]


def test_a_cache_written_by_any_route_is_read_by_every_other(sources, tmp_path):
    copies = itertools.count()
    slots = [_slot(tmp_path / f"slot{k}", sources, k) for k in range(len(ROUTES))]
    reference = {"sigmoid": _expected_sigmoid()}
    # Writers: slot k compiled and cached by route k, one process each.
    for k, route in enumerate(ROUTES):
        jobs, slots[k] = _jobs(slots[k], route, copies)
        report = _run(jobs)
        network = next(e for e in report if "mlp_notes" in e["path"])
        reference.setdefault("mlp_notes", network["values"])
        for _, misses in _check(report, reference):
            assert misses > 0, f"route {route} compiled nothing: the slot was not fresh"
    # Readers: in process j, slot k is read by route k + j, so every slot meets every
    # other route; each module's kernels all come from the cache.
    for j in range(1, len(ROUTES)):
        jobs = []
        for k in range(len(ROUTES)):
            route = ROUTES[(k + j) % len(ROUTES)]
            slot_jobs, slots[k] = _jobs(slots[k], route, copies)
            jobs += slot_jobs
        counts = _check(_run(jobs), reference)
        for (route, path), (hits, misses) in zip(jobs, counts, strict=True):
            assert hits > 0 and misses == 0, (
                f"{path} by {route}: {misses} kernels compiled again, {hits} from the cache")


@pytest.mark.parametrize("garbage_in", ["nbc", "nbi"])
def test_an_unusable_cache_entry_compiles_again(sources, tmp_path, garbage_in):
    """Garbage in the cache's data (*.nbc) or index (*.nbi) files: the kernels compile
    again, give the right numbers, and rewrite the cache for the next process."""
    slot = _slot(tmp_path / "slot", {"sigmoid": sources["sigmoid"], RUNTIME: sources[RUNTIME]}, 0)
    jobs = [("load_module", slot / "sigmoid_0.py")]
    reference = {"sigmoid": _expected_sigmoid()}
    _check(_run(jobs), reference)
    entries = sorted((slot / "__pycache__").glob(f"*.{garbage_in}"))
    assert entries
    for path in entries:
        path.write_bytes(b"\x80\x04garbage, not a pickle" * 7)
    [(hits, misses)] = _check(_run([("import", slot / "sigmoid_0.py")]), reference)
    assert misses > 0
    [(hits, misses)] = _check(_run([("importlib", slot / "sigmoid_0.py")]), reference)
    assert hits > 0 and misses == 0


#: Load sigmoid and mlp_notes of a generated tree as a package, by runpy, and from a
#: copy of the tree; print their results.
PACKAGE_PROBE = textwrap.dedent("""
    import importlib, json, runpy, sys
    import numpy as np

    root, package, copy = sys.argv[1:]
    sys.path.insert(0, root)
    x = np.linspace(-4.0, 4.0, 9)
    results = []
    for name in ("activations.sigmoid", "activations.sigmoid"):
        results.append(list(importlib.import_module(f"{package}.{name}").forward(x)))
    results.append(list(runpy.run_path(f"{root}/{package}/activations/sigmoid.py")["forward"](x)))
    network = runpy.run_path(f"{copy}/networks/mlp_notes.py")
    params = network["init_params"](0)
    results.append([float(network["predict"](params, np.ones((2, 784))).sum())])
    print(json.dumps(results))
""")


def test_a_tree_loads_as_a_package_by_runpy_and_from_a_copy(tmp_path):
    tree = tmp_path / "gen"
    assert main(["kernels", "sigmoid", "-o", str(tree)]) == 0
    assert main(["kernels", "examples/mlp_notes.toml", "-o", str(tree)]) == 0
    assert (tree / RUNTIME).is_file() and not (tree / "activations" / RUNTIME).exists()
    copy = tmp_path / "elsewhere"
    shutil.copytree(tree, copy)
    run = subprocess.run([sys.executable, "-c", PACKAGE_PROBE, str(tmp_path), "gen", str(copy)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    *sigmoids, [total] = json.loads(run.stdout.splitlines()[-1])
    for values in sigmoids:
        np.testing.assert_allclose(values, _expected_sigmoid()[:9], rtol=1e-12)
    assert total == pytest.approx(2.0)  # two rows of softmax probabilities
