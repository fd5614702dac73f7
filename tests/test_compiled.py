"""Ahead-of-time compiled network modules: same numbers as the jitted kernels, no Numba
loaded in a fresh process, and never a stale build.

Building takes 20-60 s per module, so each example network is compiled once (in a copy
under a temporary folder) and shared by the tests of this file.
"""

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import GENERATED, REPO

from derive.checks import load_module
from derive.cli import main
from derive.codegen.compiled import (
    CompiledModule,
    _remove_stale,
    compiled_path,
    cpu_tag,
    parallel_kernels,
    serial_source,
)

NETWORKS = ["mlp_notes", "cnn_small"]
RUNTIME = GENERATED / "derive_runtime.py"
EXPORTS = [f"{entry}_{dtype}" for entry in ("forward", "loss_and_grad", "train_step")
           for dtype in ("float32", "float64")]

#: Run in a fresh interpreter: import the module from its file, report whether the
#: compiled kernels were used and whether Numba was imported, and save the numbers of a
#: few calls in both dtypes.
PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    import numpy as np

    path, out = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("probe_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["probe_module"] = module
    spec.loader.exec_module(module)
    results = {}
    rng = np.random.default_rng(7)
    for dtype in ("float32", "float64") if out != "-" else ():
        params = module.init_params(3, dtype)
        state = module.init_state(params)
        x = rng.standard_normal((5,) + module.INPUT_SHAPE).astype(dtype)
        y = rng.integers(0, module.N_CLASSES, 5)
        loss, grads = module.loss_and_grad(params, x, y)
        results[f"{dtype}_loss"] = np.array(loss)
        for i, g in enumerate(grads):
            results[f"{dtype}_grad{i}"] = g
        results[f"{dtype}_predict"] = module.predict(params, x)
        results[f"{dtype}_steps"] = np.array(
            [module.train_step(params, state, x, y, 0.05) for _ in range(3)])
        for i, p in enumerate(params):
            results[f"{dtype}_param{i}"] = p
    if results:
        np.savez(out, **results)
    print(json.dumps({"compiled": module.COMPILED is not None,
                      "numba": any(m == "numba" or m.startswith("numba.")
                                   for m in sys.modules)}))
""")


def _copy_module(source, path):
    """Copy a generated module, and the derive_runtime.py it imports, to path's folder."""
    shutil.copyfile(source, path)
    shutil.copyfile(RUNTIME, path.parent / RUNTIME.name)


def _probe(module_path, out, tmp_path, jit=False):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "DERIVE_JIT"}
    if jit:
        env["DERIVE_JIT"] = "1"
    result = subprocess.run([sys.executable, str(script), str(module_path), str(out)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report, (dict(np.load(out)) if out != "-" else None)


@pytest.fixture(scope="module", params=NETWORKS)
def built(request, tmp_path_factory):
    """Each example compiled through the command line: the MLP from its spec (written to a
    temporary folder first), the CNN from a copy of its committed module."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "mlp_notes":
        argv = [str(REPO / "examples" / "mlp_notes.toml"), "-o", str(folder)]
        module_path = folder / "networks" / "mlp_notes.py"
    else:
        module_path = folder / f"{request.param}.py"
        _copy_module(GENERATED / "networks" / f"{request.param}.py", module_path)
        argv = [str(module_path)]
    assert main(["compile", *argv]) == 0
    path = compiled_path(module_path)
    assert path.is_file()
    return CompiledModule(module_path, path, tuple(EXPORTS),
                          tuple(parallel_kernels(module_path.read_text())))


def test_compile_reports_what_it_built_and_which_loops_run_serially(built, capsys):
    assert main(["compile", str(built.source)]) == 0
    out = capsys.readouterr().out
    assert f"compiled {built.source} -> {built.path} (6 functions)" in out
    assert ("one core" in out) == bool(built.serial)


def test_compiled_kernels_match_the_jitted_ones_without_loading_numba(built, tmp_path):
    report, compiled = _probe(built.source, tmp_path / "compiled.npz", tmp_path)
    assert report == {"compiled": True, "numba": False}
    # The committed module has the same text; its Numba cache is shared with the other
    # tests of the session, where the copy's would be compiled from scratch.
    committed = GENERATED / "networks" / built.source.name
    assert committed.read_text() == built.source.read_text()
    report, jitted = _probe(committed, tmp_path / "jitted.npz", tmp_path, jit=True)
    assert report == {"compiled": False, "numba": True}
    assert compiled.keys() == jitted.keys()
    for key in compiled:
        # The serial build sums in another order than the parallel kernels, and LLVM
        # may contract differently: equal to rounding, not bit for bit.
        rtol, atol = (2e-4, 1e-5) if key.startswith("float32") else (1e-10, 1e-12)
        np.testing.assert_allclose(compiled[key], jitted[key], rtol=rtol, atol=atol,
                                   err_msg=key)
        assert compiled[key].dtype == jitted[key].dtype, key


def test_an_edited_module_ignores_its_old_build(built, tmp_path):
    folder = tmp_path / "edited"
    (folder / "__pycache__").mkdir(parents=True)
    edited = folder / built.source.name
    edited.write_text(built.source.read_text() + "\n# edited by hand\n")
    shutil.copyfile(RUNTIME, folder / RUNTIME.name)
    # The old build sits where the module looks, under the old text's digest.
    shutil.copyfile(built.path, folder / "__pycache__" / built.path.name)
    assert compiled_path(edited) != folder / "__pycache__" / built.path.name
    report, _ = _probe(edited, "-", tmp_path)
    assert report == {"compiled": False, "numba": True}


def test_the_module_and_derive_agree_where_the_build_lives(built, monkeypatch):
    monkeypatch.setenv("DERIVE_JIT", "1")
    module = load_module(built.source)
    assert module.COMPILED is None
    runtime = module.derive_runtime  # the copy beside the module, not derive's
    assert runtime.compiled_path(module.__file__) == str(built.path)
    assert built.path == compiled_path(built.source)
    assert (runtime.compiled_path(module.__file__, "generic")
            == str(compiled_path(built.source, "generic")))
    assert runtime.cpu_tag() == cpu_tag() and cpu_tag() in built.path.name
    assert built.path.is_file()
    # The extension exports every entry point in both dtypes, under the name the module
    # asks for.
    loader = importlib.machinery.ExtensionFileLoader(module.COMPILED_NAME, str(built.path))
    extension = loader.create_module(
        importlib.machinery.ModuleSpec(module.COMPILED_NAME, loader, origin=str(built.path)))
    loader.exec_module(extension)
    assert all(callable(getattr(extension, name)) for name in EXPORTS)


def test_a_build_removes_the_builds_of_earlier_texts_only(tmp_path):
    module_path = tmp_path / "mlp_notes.py"
    shutil.copyfile(GENERATED / "networks" / "mlp_notes.py", module_path)
    current = compiled_path(module_path)
    current.parent.mkdir()
    generic = compiled_path(module_path, "generic")  # same text, for any CPU: kept
    stale = current.with_name("mlp_notes.compiled-0123456789abcdef-0a1b2c3d.so")
    other = current.with_name("other.compiled-0123456789abcdef-0a1b2c3d.so")
    for path in (current, generic, stale, other):
        path.write_bytes(b"a build")
    _remove_stale(module_path, keep=current)
    assert current.exists() and generic.exists() and other.exists() and not stale.exists()


def test_a_generic_build_is_used_when_there_is_none_for_this_cpu(built, tmp_path):
    folder = tmp_path / "generic"
    (folder / "__pycache__").mkdir(parents=True)
    module_path = folder / built.source.name
    _copy_module(built.source, module_path)
    # The host build runs here, so under the generic name it stands in for a generic one.
    shutil.copyfile(built.path, compiled_path(module_path, "generic"))
    assert not compiled_path(module_path).exists()
    report, _ = _probe(module_path, "-", tmp_path)
    assert report == {"compiled": True, "numba": False}


def test_a_build_that_cannot_load_is_skipped_with_a_warning(built, tmp_path):
    folder = tmp_path / "broken"
    (folder / "__pycache__").mkdir(parents=True)
    module_path = folder / built.source.name
    _copy_module(built.source, module_path)
    compiled_path(module_path).write_bytes(b"not a shared object")
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent("""
        import importlib.util, sys, warnings
        warnings.simplefilter("always")
        spec = importlib.util.spec_from_file_location("m", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        sys.modules["m"] = module
        spec.loader.exec_module(module)
        print(module.COMPILED)
    """))
    env = {k: v for k, v in os.environ.items() if k != "DERIVE_JIT"}
    run = subprocess.run([sys.executable, str(script), str(module_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "None"
    assert "ignoring the compiled kernels" in run.stderr and "derive compile" in run.stderr


def test_serial_source_turns_off_parallel_decorators_only():
    text = (GENERATED / "networks" / "cnn_small.py").read_text()
    assert parallel_kernels(text)
    serial = serial_source(text)
    assert parallel_kernels(serial) == []
    assert serial.count("parallel=False") == len(parallel_kernels(text))
    assert serial.count("prange(") == text.count("prange(")
    mention = '# kernels may say parallel=True\n@njit(parallel=True)\ndef f(x):\n    pass\n'
    assert serial_source(mention) == mention.replace("@njit(parallel=True)",
                                                     "@njit(parallel=False)")
    assert parallel_kernels((GENERATED / "networks" / "mlp_notes.py").read_text()) == []


@pytest.mark.parametrize("argv, message", [
    ([], "give network specs or modules, or --all"),
    (["--all", "x.py"], "give network specs or modules, or --all"),
    (["missing.py"], "no such file"),
    (["README.md"], "not a network module"),
    (["generated/activations/relu.py"], "not a network module"),
    (["examples/missing.toml"], "missing.toml"),
])
def test_compile_refuses_bad_targets_with_exit_2(argv, message, capsys, repo, monkeypatch):
    monkeypatch.chdir(repo)
    assert main(["compile", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("derive: error:") and message in err and "Traceback" not in err


def test_compile_all_in_a_folder_without_networks_says_so(tmp_path, capsys):
    assert main(["compile", "--all", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no network modules to compile" in err and str(tmp_path / "networks") in err


def test_compile_refuses_a_binary_file(tmp_path, capsys):
    binary = tmp_path / "blob.py"
    binary.write_bytes(bytes(range(256)))
    assert main(["compile", str(binary)]) == 2
    assert "not a network module" in capsys.readouterr().err


REGRESSION = """
[network]
name = "tiny_dense"
input_shape = [4]
loss = "binary_cross_entropy"

[[layers]]
type = "dense"
units = 5
activation = "tanh"

[[layers]]
type = "dropout"
p = 0.3

[[layers]]
type = "dense"
units = 3
activation = "sigmoid"

[train]
optimizer = "adam"
lr = 0.01
"""


def test_dense_targets_dropout_and_per_step_optimizer_state_compile_too(tmp_path, monkeypatch):
    # One-hot-free targets (a float array shaped like the outputs) and Adam's per-step
    # slots give the compiled entry points other signatures than the examples'; dropout's
    # masks, drawn from (seed, step, index), must be the same in both forms.
    spec = tmp_path / "tiny.toml"
    spec.write_text(REGRESSION)
    assert main(["compile", str(spec), "-o", str(tmp_path)]) == 0
    path = tmp_path / "networks" / "tiny_dense.py"
    monkeypatch.delenv("DERIVE_JIT", raising=False)
    compiled = load_module(path)
    assert compiled.COMPILED is not None and compiled.TARGETS == "dense"
    monkeypatch.setenv("DERIVE_JIT", "1")
    jitted = load_module(path)
    assert jitted.COMPILED is None
    rng = np.random.default_rng(1)
    for dtype, rtol in (("float64", 1e-12), ("float32", 1e-5)):
        x = rng.standard_normal((6, 4)).astype(dtype)
        y = (rng.random((6, 3)) < 0.5).astype(dtype)
        runs = []
        for module in (compiled, jitted):
            params = module.init_params(2, dtype)
            state = module.init_state(params)
            loss, grads = module.loss_and_grad(params, x, y)
            steps = [module.train_step(params, state, x, y) for _ in range(3)]
            runs.append((loss, grads, steps, params, module.predict(params, x)))
        (loss_c, grads_c, steps_c, params_c, out_c), (loss_j, grads_j, steps_j, params_j,
                                                       out_j) = runs
        np.testing.assert_allclose(loss_c, loss_j, rtol=rtol)
        np.testing.assert_allclose(steps_c, steps_j, rtol=rtol)
        for a, b in zip(grads_c + params_c + [out_c], grads_j + params_j + [out_j],
                        strict=True):
            assert a.dtype == b.dtype == np.dtype(dtype)
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
        assert steps_c[2] < steps_c[0]  # Adam is descending, not just running
