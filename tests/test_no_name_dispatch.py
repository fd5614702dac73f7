"""No code chooses what to do by an op's name (DESIGN: per-op facts live with the declaration).

Behaviour is chosen by type (singledispatch, printer methods) or by a field of the
declaration. Comparing an op's ``.name``, ``.type``, ``.loss`` or ``.activation`` with a
string literal (``op.name == "softmax"``, ``spec.loss in ("mse", ...)``,
``layer.type.startswith("conv")``) is the pattern that makes a new op need edits far from
its declaration; these tests find it in derive/'s Python and templates.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import sympy as sp

from derive import registry
from derive.calculus.derivation import derive_activation
from derive.codegen.emit import render_activation
from derive.codegen.lower import lower_activation
from derive.latex.render import default_source
from derive.spec import DRAW_MODE

REPO = Path(__file__).resolve().parents[1]
DERIVE = REPO / "derive"
#: Attributes that hold an op's catalogue name (a declaration's, or a network spec's
#: reference to one).
NAME_FIELDS = {"name", "type", "loss", "activation"}
PY_FILES = sorted(DERIVE.rglob("*.py"))
TEMPLATES = sorted(DERIVE.rglob("*.jinja"))
FIX = ("choose by a field of the declaration (add one to its record in derive/spec.py) or "
       "by type (functools.singledispatch), not by the op's name")


def _name_literal(node: ast.AST) -> bool:
    """A string that could be an op's name: a word (not a file name like a.py, not "_")."""
    return isinstance(node, ast.Constant) and isinstance(node.value, str) \
        and node.value.isidentifier() and node.value[0].isalpha()


def _literals(node: ast.AST) -> bool:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_name_literal(e) for e in node.elts)
    return _name_literal(node)


def _name_field(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in NAME_FIELDS


def name_dispatch(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, code) of every comparison of a name field with a string literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_name_field(s) for s in sides) and any(_literals(s) for s in sides):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith")
              and _name_field(node.func.value) and any(_literals(a) for a in node.args)):
            found.append((node.lineno, ast.unparse(node)))
    return found


#: The same in Jinja: ``x.name == "gd"``, ``op.loss in ("mse", ...)``, ``.startswith('conv')``.
TEMPLATE_PATTERN = re.compile(
    r"\.(?:name|type|loss|activation)\s*(?:(?:==|!=)\s*[\"']\w+[\"']"
    r"|(?:not\s+)?in\s*[\(\[]\s*[\"']"
    r"|\|?\s*\.?(?:startswith|endswith)\(\s*[\"'])"
)


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_python_never_dispatches_on_an_op_name(path):
    hits = name_dispatch(ast.parse(path.read_text(), str(path)))
    rel = path.relative_to(REPO)
    assert not hits, "\n".join(f"{rel}:{line}: `{code}` dispatches on a name: {FIX}."
                               for line, code in hits)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(REPO)))
def test_templates_never_dispatch_on_an_op_name(path):
    rel = path.relative_to(REPO)
    hits = [f"{rel}:{i}: `{line.strip()}` dispatches on a name: {FIX} (the view carries it)."
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if TEMPLATE_PATTERN.search(line)]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("code", [
    'if op.name == "softmax": pass',
    'x = spec.loss in ("mse", "bce")',
    'y = "dense" != layer.type',
    'z = layer.type.startswith("conv")',
    'w = [a for a in ops if a.activation not in ["relu"]]',
])
def test_the_python_check_finds_name_dispatch(code):
    assert name_dispatch(ast.parse(code))


@pytest.mark.parametrize("code", [
    'if op.matrix_form: pass',
    'keep = path.name != "__init__.py"',  # a file's name, not an op's
    'same = op.name == other.name',
    'title = f"{op.name}"',
    'private = symbol.name.endswith("_")',  # a printing convention, not a name
])
def test_the_python_check_lets_fields_and_file_names_pass(code):
    assert not name_dispatch(ast.parse(code))


@pytest.mark.parametrize("line, flagged", [
    ('{% if op.name == "gd" %}', True),
    ("((( 'a' if view.loss in ('mse', 'sse') else 'b' )))", True),
    ("{% if layer.type.startswith('conv') %}", True),
    ("{% if view.dense_only %}", False),
    ("((( view.name|text )))", False),
])
def test_the_template_check(line, flagged):
    assert bool(TEMPLATE_PATTERN.search(line)) is flagged


# -- the fields that replaced name checks --------------------------------------------------


@pytest.mark.parametrize("op", registry.all_ops(), ids=lambda op: op.name)
def test_the_source_named_in_a_header_is_the_file_that_declares_the_op(op):
    path = registry.declared_in(op)
    assert path is not None and path.startswith("derive/ops/"), path
    assert re.search(rf"""name=["']{op.name}["']""", (REPO / path).read_text()), path
    assert default_source(op) == f"the declaration {op.name!r} in {path}"


def test_an_op_outside_the_catalogue_names_no_file():
    op = dataclasses.replace(registry.get("sigmoid"), name="not_registered")
    assert registry.declared_in(op) is None
    assert default_source(op) == "the declaration 'not_registered'"


@pytest.mark.parametrize("op", [op for op in registry.all_ops("layer") if op.matrix_form],
                         ids=lambda op: op.name)
def test_a_layer_declaring_the_matrix_form_is_s_equals_w_x_plus_b(op):
    """The notes' matrix formulas (latex/network.py) are right only for such a layer."""
    (x_,), (W, b) = op.inputs, op.weights
    assert len(op.shape(x_)) == len(op.shape(W)) == 2 and len(op.shape(b)) == 1
    n_, i_ = op.out.indices[0], sp.Dummy("i")
    o_ = op.out.indices[1]
    (size,) = {op.shape(x_)[1], op.shape(W)[1]}
    expected = sp.Sum(W[o_, i_] * x_[n_, i_], (i_, 0, size - 1)) + b[o_]
    written_out = (op.expr - expected).subs(size, 3).doit()
    assert sp.expand(written_out) == 0


@pytest.mark.parametrize("op", registry.all_ops("activation"), ids=lambda op: op.name)
def test_the_draw_mode_arguments_come_from_the_declaration(op):
    module = lower_activation(derive_activation(op), "test")
    assert module.mode == op.per_call == (DRAW_MODE if op.noise else ())
    text = render_activation(module, "derive kernels test")
    assert (", *, training=False, seed=0, out=None)" in text) == bool(op.noise)
