"""Imports flow one way (DESIGN.md, "Which part may import which").

Every module of derive, cli.py and every generated module is parsed with ``ast`` (nothing
is imported), each import resolved to the module it names, and checked against the rules
below. A violation reads ``file:line imports X: <rule>``. Imports inside functions count:
a deferred import is still an edge. A few checks import for real, in a fresh interpreter,
to see what a stage loads with everything it pulls in.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}

#: The stages above codegen and latex, which assemble them (DESIGN: pipeline.py and
#: network.py import codegen and latex; checks.py and the CLI import everything).
ASSEMBLY = ("derive.pipeline", "derive.network", "derive.checks", "derive.cli",
            "derive.demo", "derive.__main__", "cli")
#: What a generated module may import: the numeric stack and the runtime shipped beside it.
GENERATED_MAY_IMPORT = frozenset({"math", "numpy", "numba", "llvmlite", "derive_runtime"})
#: The standard library modules a generated module's shim uses to load that runtime by
#: path, whatever route imported the module.
RUNTIME_SHIM = frozenset({"hashlib", "importlib", "os", "sys"})
#: The runtime itself (written beside generated/ as derive_runtime.py) may use the
#: standard library as well, and nothing of derive.
RUNTIME = "derive_runtime.py"


@dataclass(frozen=True)
class Edge:
    """One import: the file and line it is written on, and the module it names."""

    path: Path
    line: int
    source: str  #: the importing module's dotted name
    target: str  #: the imported module's dotted name (a submodule where the name is one)
    names: tuple[str, ...] = ()  #: the names a ``from ... import`` takes

    def violation(self, rule: str) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line} imports {self.target}: {rule}"


def module_name(path: Path) -> str:
    """``derive/calculus/indexed.py`` → ``derive.calculus.indexed``; packages by folder."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def edges(path: Path, text: str | None = None) -> list[Edge]:
    """Every import written in ``path`` (or in ``text``, as if it were that file)."""
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    text = path.read_text(encoding="utf-8") if text is None else text
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found += [Edge(path, node.lineno, source, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = tuple(alias.name for alias in node.names)
            # `from derive import registry` imports the module derive.registry.
            submodules = [f"{base}.{n}" for n in names if _is_module(f"{base}.{n}")]
            for target in submodules or [base]:
                found.append(Edge(path, node.lineno, source, target, names))
    return found


def within(module: str, *prefixes: str) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def top(module: str) -> str:
    return module.partition(".")[0]


DERIVE_FILES = sorted(REPO.glob("derive/**/*.py")) + [REPO / "cli.py"]
GENERATED_FILES = sorted(p for p in (REPO / "generated").glob("**/*.py") if p.name != RUNTIME)
RUNTIME_FILES = sorted((REPO / "generated").glob(f"**/{RUNTIME}"))


def standalone_modules() -> frozenset[str]:
    """derive's modules that import the standard library only (errors, files, ...).

    Any stage may use them: they load nothing else.
    """
    imports = {module_name(p): edges(p) for p in DERIVE_FILES}
    leaves: set[str] = set()
    while True:
        more = {m for m, found in imports.items() if m not in leaves and all(
            top(e.target) in STDLIB or e.target in leaves for e in found)}
        if not more:
            return frozenset(leaves)
        leaves |= more


def layer_violations(edge: Edge, standalone: frozenset[str]) -> list[str]:
    """What is wrong with one import of derive's own code, by the rules of DESIGN.md."""
    s, t = edge.source, edge.target
    rules = []
    if within(s, "derive.errors", "derive.files"):
        if not (top(t) in STDLIB or (s == "derive.files" and t == "derive.errors")):
            rules.append("files.py and errors.py depend on the standard library only "
                         "(files.py on errors.py too)")
    if s == "derive.spec" and not (top(t) in STDLIB or top(t) == "sympy"):
        rules.append("spec.py holds the records: it imports the standard library and SymPy "
                     "only")
    if within(s, "derive.ops") and top(t) == "derive" and not within(
            t, "derive.ops", "derive.spec", "derive.registry", "derive.calculus"):
        rules.append("ops/ holds declarations: it imports spec, registry and calculus only")
    if within(s, "derive.calculus") and top(t) == "derive" and not within(
            t, "derive.calculus", "derive.spec", "derive.errors"):
        rules.append("calculus/ comes before codegen, latex, train, network and pipeline: "
                     "it imports spec and errors only")
    if within(s, "derive.codegen") and within(t, "derive.latex"):
        rules.append("codegen/ and latex/ never import each other")
    if within(s, "derive.latex") and within(t, "derive.codegen"):
        rules.append("codegen/ and latex/ never import each other")
    if within(s, "derive.codegen", "derive.latex") and within(t, *ASSEMBLY):
        rules.append("codegen/ and latex/ are assembled by pipeline.py, network.py, checks.py "
                     "and the CLI, and never import them")
    if within(s, "derive.codegen", "derive.latex", "derive.pipeline", "derive.network") \
            and within(t, "derive.train"):
        rules.append("only the CLI drives training: codegen/, latex/, pipeline.py and "
                     "network.py never import train/")
    if within(s, "derive.train"):
        if top(t) in ("sympy", "jinja2"):
            rules.append("train/ runs generated modules and never loads SymPy or Jinja2")
        elif top(t) == "derive" and not within(t, "derive.train") and t not in standalone:
            rules.append("train/ imports only derive's standalone modules (files, errors, "
                         "...), never codegen, latex or calculus")
    return rules


def private_violation(edge: Edge) -> str | None:
    """``from x import _private`` from another module (dunder names are public)."""
    private = [n for n in edge.names if n.startswith("_") and not n.startswith("__")]
    if private and edge.target != edge.source and top(edge.target) in ("derive", "cli"):
        return edge.violation(f"{', '.join(private)} is private to {edge.target}; "
                              "make it public or move it")
    return None


@pytest.mark.parametrize("path", DERIVE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_flow_one_way(path):
    standalone = standalone_modules()
    problems = []
    for edge in edges(path):
        problems += [edge.violation(rule) for rule in layer_violations(edge, standalone)]
        private = private_violation(edge)
        if private:
            problems.append(private)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", GENERATED_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_generated_modules_import_only_the_numeric_stack_and_the_runtime(path):
    problems = [
        e.violation("a generated module imports only "
                    + ", ".join(sorted(GENERATED_MAY_IMPORT)))
        for e in edges(path)
        if top(e.target) not in GENERATED_MAY_IMPORT | RUNTIME_SHIM
        and not within(e.target, "generated")
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", RUNTIME_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_runtime_imports_the_standard_library_and_the_numeric_stack_only(path):
    allowed = STDLIB | GENERATED_MAY_IMPORT - {"derive_runtime"}
    problems = [e.violation("the runtime imports the standard library, " + ", ".join(
                    sorted(GENERATED_MAY_IMPORT - {"derive_runtime"})) + " only")
                for e in edges(path) if top(e.target) not in allowed]
    assert not problems, "\n".join(problems)


# -- the rules themselves ---------------------------------------------------------------


def _edges_of(source: str, code: str) -> list[Edge]:
    """The edges of ``code`` as if it were the module ``source`` of this repository."""
    return edges(REPO.joinpath(*source.split(".")).with_suffix(".py"), textwrap.dedent(code))


@pytest.mark.parametrize(("source", "code", "broken"), [
    ("derive.calculus.kinks", "from derive.latex.render import render\n", "calculus/"),
    ("derive.calculus.kinks", "import derive.codegen.emit\n", "calculus/"),
    ("derive.ops.layers", "from derive.codegen.loops import Loop\n", "ops/"),
    ("derive.codegen.emit", "from derive.latex import render\n", "never import each other"),
    ("derive.latex.document", "from derive.codegen.emit import header_lines\n",
     "never import each other"),
    ("derive.latex.render", "from derive.pipeline import FOLDERS\n", "assembled"),
    ("derive.network", "from derive.train.data import Dataset\n", "only the CLI"),
    ("derive.train.loop", "import sympy as sp\n", "SymPy or Jinja2"),
    ("derive.train.report", "from derive.codegen.emit import render_layer\n", "standalone"),
    ("derive.files", "import numpy as np\n", "standard library only"),
    ("derive.spec", "def f():\n    from derive.calculus.indexed import K\n", "spec.py"),
])
def test_each_rule_catches_its_edge(source, code, broken):
    standalone = standalone_modules()
    found = [rule for e in _edges_of(source, code)
             for rule in layer_violations(e, standalone)]
    assert found and all(broken in rule for rule in found), found


def test_a_private_name_from_another_module_is_caught_and_a_dunder_is_not():
    found = _edges_of("derive.codegen.network", """
        from derive.codegen.emit import _environment, cache_name
        from derive import __name__ as name
        """)
    messages = [m for m in map(private_violation, found) if m]
    assert len(messages) == 1
    assert messages[0].startswith("derive/codegen/network.py:2 imports derive.codegen.emit: "
                                  "_environment is private to derive.codegen.emit")


def test_relative_imports_resolve_like_absolute_ones():
    found = _edges_of("derive.latex.context", "from ..codegen import emit\nfrom . import facts\n")
    assert [e.target for e in found] == ["derive.codegen.emit", "derive.latex.facts"]


def test_files_and_errors_are_standalone():
    assert {"derive.files", "derive.errors"} <= standalone_modules()


# -- what importing a stage loads, in a fresh interpreter ------------------------------


def _loaded(statement: str) -> set[str]:
    """The modules ``statement`` loads, beyond those the interpreter starts with."""
    code = (f"import sys\nbefore = set(sys.modules)\n{statement}\n"
            "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO, timeout=300).stdout
    return set(out.split())


def test_importing_train_loads_neither_sympy_nor_jinja2():
    loaded = _loaded("import derive.train")
    assert "derive.train" in loaded
    assert not {"sympy", "jinja2", "mpmath"} & loaded
    assert not {m for m in loaded if within(m, "derive.codegen", "derive.latex",
                                            "derive.calculus")}


def test_importing_files_loads_the_standard_library_only():
    loaded = _loaded("import derive.files")
    third_party = {m for m in loaded if top(m) not in STDLIB and top(m) != "derive"}
    assert not third_party
    assert {m for m in loaded if top(m) == "derive"} == {"derive", "derive.errors",
                                                          "derive.files"}


def test_calculus_loads_no_later_stage_and_latex_registers_the_jupyter_display():
    code = """
        from derive.registry import get
        from derive.calculus.derivation import derive_activation
        record = derive_activation(get("relu"))
        assert record._repr_latex_() is None, "typeset before derive.latex was imported"
        assert not [m for m in sys.modules if m.startswith(("derive.latex", "derive.codegen",
                                                             "jinja2"))]
        import derive.latex
        assert record._repr_latex_().startswith("$$")
    """
    assert "derive.latex" in _loaded(textwrap.dedent(code))
