"""derive_runtime.py: the one module generated code may import besides Python, NumPy and
Numba, written byte for byte beside every generated tree."""

import ast
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import GENERATED

from derive.cli import main
from derive.codegen import runtime
from derive.codegen.emit import RUNTIME_NAME, runtime_text

#: What a generated module may import: the numeric stack, and the standard library
#: modules of the shim that finds derive_runtime.py by path. The runtime itself may use
#: the whole standard library, and llvmlite (for vexp's intrinsics).
GENERATED_MAY_IMPORT = {"math", "numpy", "numba", "hashlib", "importlib", "os", "sys"}
RUNTIME_MAY_IMPORT = set(sys.stdlib_module_names) | {"numpy", "numba", "llvmlite"}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A fresh `derive kernels --all -o DIR`."""
    out = tmp_path_factory.mktemp("gen")
    assert main(["kernels", "--all", "-o", str(out)]) == 0
    return out


def _modules(folder):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(tree):
    """Top-level package of every import statement, wherever it stands."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            yield node.module.split(".")[0]


def test_generated_files_import_only_the_numeric_stack_and_the_runtime(fresh):
    paths = _modules(fresh)
    assert len(paths) > 40
    for path in paths:
        allowed = RUNTIME_MAY_IMPORT if path.name == RUNTIME_NAME else GENERATED_MAY_IMPORT
        found = set(_imports(ast.parse(path.read_text(encoding="utf-8"))))
        assert found <= allowed, f"{path.relative_to(fresh)} imports {sorted(found - allowed)}"


def test_generated_files_use_every_name_they_import(fresh):
    for path in _modules(fresh):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {(alias.asname or alias.name).split(".")[0]
                    for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                    for alias in node.names}
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert imported <= used, f"{path.relative_to(fresh)}: unused {imported - used}"


def test_the_runtime_beside_every_tree_is_the_shipped_one(fresh, tmp_path):
    shipped = runtime_text()
    assert (fresh / RUNTIME_NAME).read_text(encoding="utf-8") == shipped
    assert (GENERATED / RUNTIME_NAME).read_text(encoding="utf-8") == shipped
    # A single module written elsewhere with -o gets the same file beside its tree.
    assert main(["kernels", "sigmoid", "-o", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / RUNTIME_NAME).read_bytes() == shipped.encode()
    # The runtime is derive/codegen/runtime.py under a generated file's header.
    source = runtime.__file__
    with open(source, encoding="utf-8") as file:
        assert shipped.endswith("\n\n" + file.read())


def test_a_module_without_its_runtime_says_what_is_missing(fresh, tmp_path):
    lone = tmp_path / "relu.py"
    shutil.copyfile(fresh / "activations" / "relu.py", lone)
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('m', {str(lone)!r}); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert "ImportError" in run.stderr and "derive_runtime.py" in run.stderr
    # Beside it, a runtime of another text is not taken for the one it was written with.
    (tmp_path / RUNTIME_NAME).write_text(runtime_text() + "# edited\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1 and "derive_runtime.py" in run.stderr
    shutil.copyfile(fresh / RUNTIME_NAME, tmp_path / RUNTIME_NAME)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr


def test_importing_the_runtime_loads_no_numba():
    # A network module running ahead-of-time compiled kernels imports the runtime only.
    code = ("import sys; import derive.codegen.runtime; "
            "print(any(m.split('.')[0] in ('numba', 'llvmlite') for m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "normal_cdf", "sign"])
def test_jitted_helpers_match_numpy(name):
    helper = runtime.jitted(name)
    x = np.array([-1000.0, -30.0, -1.5, 0.0, 2.0, 30.0, 1000.0])
    got = np.array([helper(v) for v in x])
    with np.errstate(over="ignore"):
        expected = {
            "sigmoid": 1.0 / (1.0 + np.exp(-x)),
            "softplus": np.logaddexp(0.0, x),
            "normal_cdf": np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x]),
            "sign": np.sign(x),
        }[name]
    # erfc far in the tail magnifies the rounding of v / √2 a thousandfold.
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)


def test_draws_are_pure_functions_of_seed_and_index():
    uniform01, normal01 = runtime.jitted("uniform01"), runtime.jitted("normal01")
    u = np.array([uniform01(7, i) for i in range(2000)])
    assert ((0.0 <= u) & (u < 1.0)).all() and abs(u.mean() - 0.5) < 0.03
    assert uniform01(7, 3) == uniform01(7, 3) != uniform01(8, 3)
    z = np.array([normal01(7, i) for i in range(2000)])
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1
