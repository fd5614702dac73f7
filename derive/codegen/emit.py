"""Kernel IR → module text → files (written atomically, and only when bytes change)."""

from __future__ import annotations

import hashlib
import re
import shlex
from functools import cache
from pathlib import Path

import jinja2
import sympy as sp

from derive.codegen.ir import (
    ActivationModule,
    ElementFunction,
    LayerKernel,
    LayerModule,
    LossModule,
    RowKernel,
    VectorModule,
)
from derive.codegen.loops import (
    Contraction,
    Scatter,
    loop_indices,
    statement_exprs,
    substitute,
)
from derive.codegen.lower import d_y, fold_constants
from derive.codegen.printer import NumbaPrinter
from derive.errors import OutputError
from derive.files import atomic_write, check_output_file
from derive.spec import x, y

_CODEGEN = Path(__file__).parent
_BLOCK = re.compile(
    r"^# --- begin embed: (?P<name>\w+)(?: \(needs: (?P<needs>[\w, ]+)\))? ---\n"
    r"(?P<body>.*?)^# --- end embed: (?P=name) ---\n",
    re.S | re.M,
)
#: Helper names provided by a block of another name.
_PROVIDED_BY = {"vexp": "vecmath"}
#: Element-level names of the per-element symbols.
_ELEMENT_NAMES = {x: "x_i", y: "y_i", d_y: "d_y_i"}
HASH_PREFIX = "# derive-hash: "


@cache
def _blocks() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Embeddable helper blocks: name → (source, names of the blocks it needs)."""
    blocks = {}
    for path in (_CODEGEN / "vecmath.py", _CODEGEN / "runtime.py"):
        for m in _BLOCK.finditer(path.read_text(encoding="utf-8")):
            needs = tuple(n.strip() for n in (m["needs"] or "").split(",") if n.strip())
            blocks[m["name"]] = (m["body"].strip("\n"), needs)
    return blocks


def helper_source(names: set[str]) -> tuple[str, tuple[str, ...]]:
    """Source of the helpers ``names`` and everything they need, dependencies first.

    Returns
    -------
    source : str
        The helper definitions, separated by blank lines.
    imports : tuple of str
        Import lines the helpers need beyond ``math``, ``numpy`` and ``numba``.

    """
    from derive.codegen.vecmath import EMBED_IMPORTS

    order: list[str] = []

    def visit(name):
        block = _PROVIDED_BY.get(name, name)
        if block in order:
            return
        for dep in _blocks()[block][1]:
            visit(dep)
        order.append(block)

    for name in sorted(names):
        visit(name)
    imports = EMBED_IMPORTS if "vecmath" in order else ()
    standard = {"from numba import njit", "import math", "import numpy as np"}
    return (
        "\n\n\n".join(_blocks()[b][0] for b in order),
        tuple(line for line in imports if line not in standard),
    )


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("derive", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["repr"] = repr
    # Every text that may come from a user goes through one of these in the templates.
    env.filters["doc"] = docstring_text
    env.filters["comment"] = comment_text
    return env


def _element_context(fn: ElementFunction, printer: NumbaPrinter) -> dict:
    return {
        "name": fn.name,
        "args": ", ".join(printer.doprint(s) for s in fn.inputs),
        "body": [f"{a.target} = {printer.doprint(a.expr)}" for a in fn.body],
        "returns": ", ".join(printer.doprint(e) for e in fn.outputs),
    }


def _draw_line(draw, printer: NumbaPrinter) -> str:
    def p(e):
        return printer.doprint(fold_constants(sp.sympify(e)))

    if draw.distribution == "uniform":
        printer.helpers.add("uniform01")
        drawn = f"{p(draw.low)} + ({p(draw.high - draw.low)}) * uniform01(seed, offset + i)"
    else:
        printer.helpers.add("normal01")
        drawn = "normal01(seed, offset + i)"
    return f"{draw.target} = {drawn} if training else {p(draw.eval_value)}"


def cache_name(folder: str, name: str) -> str:
    """The fixed module name a generated module registers itself under (see the template)."""
    return f"_derive_{folder}_{name}"


#: PEP 263: a comment in a file's first two lines matching this sets its source encoding.
_CODING = re.compile(r"(coding)([:=])")


def _escape_char(c: str) -> str:
    """Python's escape for one character (as ``repr`` writes it)."""
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def comment_text(value: object) -> str:
    r"""A user's text (a path, a formula, a command) made safe for one ``#`` comment line.

    Every character that is not printable — line breaks of any kind (``\n``, ``\r``,
    form feed, ``\x85``, U+2028/2029), NUL, other controls, bidirectional overrides — is
    written as its ``\xNN``/``\uNNNN`` escape, so the comment cannot end early and let the
    rest of the text run as code. ``coding:`` and ``coding=`` become ``coding\x3a`` and
    ``coding\x3d``: in a file's first two lines they would set its source encoding
    (PEP 263). Printable text comes back unchanged.
    """
    text = "".join(c if c.isprintable() else _escape_char(c) for c in str(value))
    return _CODING.sub(lambda m: m[1] + _escape_char(m[2]), text)


def docstring_text(value: object) -> str:
    r"""A user's text made safe inside a triple-quoted docstring.

    Backslashes and double quotes are escaped (``\\``, ``\"``), so the text can neither
    close the docstring nor start an escape sequence; the rest is :func:`comment_text`.
    """
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return comment_text(text)


def _shell_char(c: str) -> str:
    if c in "\\'":
        return "\\" + c
    if c.isprintable():
        return c
    # Bash's \xNN is one byte, not a character: above 0x7f only \u and \U spell it.
    return f"\\x{ord(c):02x}" if ord(c) < 0x80 else _escape_char(c).replace("\\x", "\\u00")


def _shell_word(word: str) -> str:
    if all(c.isprintable() for c in word):
        return shlex.quote(word)
    # Bash's $'...' quoting spells the other characters as escapes, so the command stays
    # on one line and still regenerates the same file when pasted into a shell.
    return "$'" + "".join(_shell_char(c) for c in word) + "'"


def command_line(words: list[str]) -> str:
    """The shell command that regenerates a file, quoted word by word, on one line."""
    return " ".join(_shell_word(str(w)) for w in words)


def header_lines(source: str, command: str) -> str:
    """The comment lines every generated file starts with (no timestamp, by design).

    Both texts may hold a user's paths and formulas; they go through
    :func:`comment_text`, so the header stays exactly two comment lines.
    """
    return (f"# Generated by derive from {comment_text(source)}.\n"
            f"# Do not edit; regenerate with: {comment_text(command)}")


def param_name(name: str) -> str:
    """A parameter's name inside generated kernels: apart from every name of their own.

    Loop indices, locals, helpers, modules and builtins (``i``, ``lo``, ``out``,
    ``kernel``, ``math``, ``float``, ...) never start with ``p_``, so a user's parameter
    can be called anything; the public functions keep the user's name as the keyword.
    """
    return f"p_{name}"


def render_activation(m: ActivationModule, command: str) -> str:
    """Render the generated module of one activation.

    Parameters
    ----------
    m : ActivationModule
        The lowered op.
    command : str
        The command that regenerates the file, for its header.

    Returns
    -------
    str
        The module's text, hash line included.

    """
    # The element functions' inputs are (x, *params, *draws): the parameters' symbols.
    renamed = {s: param_name(p.name) for s, p in zip(m.forward.inputs[1:], m.params, strict=False)}
    printer = NumbaPrinter(_ELEMENT_NAMES | renamed)
    elements = [_element_context(fn, printer) for fn in (m.forward, m.backward)]
    draw_lines = [_draw_line(d, printer) for d in m.draws]
    helpers, extra_imports = helper_source(printer.helpers)
    names = [param_name(p.name) for p in m.params]
    mode = ["training", "seed"] if m.draws else []
    casts = [f'_scalar("{p.name}", {n})' for p, n in zip(m.params, names, strict=True)]
    casts += ["bool(training)", "int(seed)"] if m.draws else []
    sums = list(m.backward.output_names[1:])
    context = {
        "m": m,
        "cache_name": cache_name("activations", m.name),
        "header": header_lines(m.source, command),
        "param_sig": "".join(f", {p.name}={p.default!r}" for p in m.params),
        "mode_sig": ", training=False, seed=0" if m.draws else "",
        "public_args": "".join(f", {n}" for n in [p.name for p in m.params] + mode),
        "private_params": "".join(f", {n}" for n in names + mode),
        "kernel_params": "".join(f", {n}" for n in names + mode),
        "call_params": "".join(f", {c}" for c in casts),
        "element_params": "".join(f", {n}" for n in names + [str(d.target) for d in m.draws]),
        "draw_lines": draw_lines,
        "elements": elements,
        "backward_targets": ", ".join(f"{n}_i" for n in m.backward.output_names),
        "sums": sums,
        "backward_returns": f"({', '.join(['d_x', *sums])})" if sums else "d_x",
        "helpers": helpers,
        "extra_imports": extra_imports,
    }
    text = _environment().get_template("kernels/activation.py.jinja").render(context)
    return with_hash(text)


def _body_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def with_hash(text: str) -> str:
    """Insert a hash of the file's body after its header, to detect hand edits later."""
    head, _, body = text.partition("\n\n")
    return f"{head}\n{HASH_PREFIX}{_body_hash(body)}\n\n{body}"


def edited_by_hand(text: str) -> bool:
    """Whether a generated file's body no longer matches the hash it was written with."""
    head, _, body = text.partition("\n\n")
    recorded = [ln[len(HASH_PREFIX):] for ln in head.splitlines() if ln.startswith(HASH_PREFIX)]
    return not recorded or recorded[0] != _body_hash(body)


def write_if_changed(path: Path, text: str, force: bool = False) -> bool:
    """Write ``text`` unless the file already holds exactly these bytes.

    Leaving an unchanged file untouched keeps its modification time, which is what
    Numba's on-disk cache keys on.

    Parameters
    ----------
    path : Path
        Destination.
    text : str
        Module text.
    force : bool
        Overwrite a file that was edited by hand.

    Returns
    -------
    bool
        True when the file was (re)written.

    Raises
    ------
    OutputError
        When the existing file was edited by hand and ``force`` is False.

    """
    path = check_output_file(path)
    if path.exists():
        try:
            old = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            old = ""  # not text, so not a generated file: treated as edited by hand
        except OSError as exc:
            raise OutputError(f"cannot read the existing file ({exc.strerror}).",
                              where=str(path), fix="Choose another -o/--out.") from None
        if old == text:
            return False
        if edited_by_hand(old) and not force:
            raise OutputError(
                "this generated file was edited by hand; regenerating would lose the edits.",
                where=str(path),
                fix="Move your changes into the declaration, or pass --force to overwrite.",
            )
    atomic_write(path, text)
    return True


def package_init(description: str, command: str) -> str:
    """The ``__init__.py`` of a generated package."""
    return with_hash(
        f"{header_lines('derive', command)}\n\n\"\"\"{description}\"\"\"\n"
    )




def _reduction_lines(r, printer: NumbaPrinter) -> list[str]:
    body = printer.doprint(r.body)
    t, i = r.target, r.index
    if r.kind == "sum":
        return [f"{t} = 0.0", f"for {i} in range(K):", f"    {t} += {body}"]
    printer.helpers.add("vexp")
    return [
        "# log-sum-exp with the row maximum subtracted: no exp can overflow",
        f"{t}_max = -math.inf",
        f"for {i} in range(K):",
        f"    {t}_max = max({t}_max, {body})",
        f"{t} = 0.0",
        f"for {i} in range(K):",
        f"    {t} += vexp({body} - {t}_max)",
        f"{t} = {t}_max + math.log({t})",
    ]


def _row_context(kernel: RowKernel, printer: NumbaPrinter) -> dict:
    """Lines of a row kernel: the per-row prologue and the per-value statements."""
    prologue = [line for r in kernel.reductions for line in _reduction_lines(r, printer)]
    body = [f"{a.target} = {printer.doprint(a.expr)}" for a in kernel.body]
    return {
        "prologue": prologue,
        "lines": body if kernel.col is not None else prologue + body,
        "value": printer.doprint(kernel.value),
    }


_FLAVOURS = [
    ("serial", 'njit(cache=True, error_model="numpy")', "range"),
    ("parallel", 'njit(cache=True, error_model="numpy", parallel=True)', "prange"),
]


def render_loss(m: LossModule, op_names: dict, command: str) -> str:
    """Render the generated module of one loss.

    Parameters
    ----------
    m : LossModule
        The lowered loss.
    op_names : dict
        IndexedBase → array name in the kernels (pred, target, labels), and each
        parameter's symbol → its :func:`param_name`.
    command : str
        The command that regenerates the file.
    """
    printer = NumbaPrinter(op_names)
    variants = []
    for v in m.variants:
        variants.append({
            "encoding": v.encoding,
            "forward": _row_context(v.forward, printer),
            "backward": _row_context(v.backward, printer),
        })
    helpers, extra_imports = helper_source(printer.helpers)
    encodings = [v.encoding for v in m.variants]
    target_doc = " or ".join(
        {"dense": "an array of pred's shape", "index": "integer class labels of shape (N,)"}[e]
        for e in encodings
    )
    names = [param_name(p.name) for p in m.params]
    context = {
        "m": m,
        "cache_name": cache_name("activations", m.name),
        "header": header_lines(m.source, command),
        "param_sig": "".join(f", {p.name}={p.default!r}" for p in m.params),
        "public_args": "".join(f", {p.name}" for p in m.params),
        "private_params": "".join(f", {n_}" for n_ in names),
        "kernel_params": "".join(f", {n_}" for n_ in names),
        "call_params": "".join(f', _scalar("{p.name}", {n_})'
                               for p, n_ in zip(m.params, names, strict=True)),
        "variants": variants,
        "flavours": _FLAVOURS,
        "encodings": encodings,
        "target_doc": target_doc,
        "helpers": helpers,
        "extra_imports": extra_imports,
    }
    text = _environment().get_template("kernels/loss.py.jinja").render(context)
    return with_hash(text)


def render_vector(m: VectorModule, op_names: dict, command: str) -> str:
    """Render the generated module of a row-wise vector function (softmax, ...)."""
    printer = NumbaPrinter(op_names)
    forward = _row_context(m.forward, printer)
    backward = _row_context(m.backward, printer)
    helpers, extra_imports = helper_source(printer.helpers)
    context = {
        "m": m,
        "cache_name": cache_name("activations", m.name),
        "header": header_lines(m.source, command),
        "forward": forward,
        "backward": backward,
        "flavours": _FLAVOURS,
        "helpers": helpers,
        "extra_imports": extra_imports,
    }
    text = _environment().get_template("kernels/vector.py.jinja").render(context)
    return with_hash(text)


def _loop_lines(loops, printer: NumbaPrinter, first_parallel: bool) -> list[str]:
    lines = []
    for depth, lp in enumerate(loops):
        rng = "prange" if first_parallel and depth == 0 else "range"
        low, high = printer.doprint(lp.low), printer.doprint(lp.high + 1)
        bounds = high if low == "0" else f"{low}, {high}"
        lines.append("    " * depth + f"for {lp.index} in {rng}({bounds}):")
    return lines


def _accumulator_lines(acc, printer: NumbaPrinter) -> list[str]:
    inner = _loop_lines(acc.loops, printer, False)
    deep = "    " * len(acc.loops)
    body = printer.doprint(acc.body)
    if acc.kind == "sum":
        return [f"{acc.target} = 0.0", *inner, f"{deep}{acc.target} += {body}"]
    # First maximum in row-major window order wins a tie; a NaN is taken, as PyTorch does.
    position = sp.S.Zero
    for lp in acc.loops:
        position = position * (lp.high - lp.low + 1) + (lp.index - lp.low)
    return [
        f"{acc.target}_max = -math.inf",
        f"{acc.target} = 0",
        *inner,
        f"{deep}value = {body}",
        f"{deep}if value > {acc.target}_max or value != value:",
        f"{deep}    {acc.target}_max = value",
        f"{deep}    {acc.target} = {printer.doprint(position)}",
    ]


def _matrix(m, printer: NumbaPrinter) -> str:
    """A GEMM operand: ``y[n].reshape(F, OH*OW)``, ``K.reshape(F, C*KH*KW).T``, ``x``."""
    text = str(m.array)
    if m.fixed:
        text += f"[{', '.join(printer.doprint(e) for e in m.fixed)}]"
    if m.shape is not None:
        text += f".reshape({', '.join(printer.doprint(e) for e in m.shape)})"
    return text + (".T" if m.transposed else "")


def _unit_stride_lines(statement, printer: NumbaPrinter, hyper) -> list[str]:
    """A gather or scatter, after a copy of it with its strides set to 1.

    When the subscripts scale an index by a hyper-parameter, a constant unit stride lets
    LLVM vectorise the innermost loop; a run-time one does not.
    """
    subscripts = list(getattr(statement, "target_index", ()))
    for element in sp.sympify(statement.value).atoms(sp.Indexed):
        subscripts += list(element.indices)
    used = set().union(*(sp.sympify(e).free_symbols for e in subscripts))
    strides = [h for h in hyper if h in used]
    lines = _statement_lines(statement, printer, False)
    if not strides:
        return lines
    unit = _statement_lines(substitute(statement, {h: 1 for h in strides}), printer, False)
    test = " and ".join(f"{h} == 1" for h in strides)
    return [f"if {test}:  # the same loops with a constant unit stride, which vectorise",
            *("    " + line for line in unit), "else:", *("    " + line for line in lines)]


def _contraction_lines(st: Contraction, printer: NumbaPrinter, parallel: bool, hyper,
                       dtype_of: str) -> list[str]:
    # Each iteration writes its own slice of the target (or of a shared buffer) and
    # calls a GEMM too small for BLAS to split, so the batch loop runs in parallel.
    peeled = tuple(lp.index for lp in st.loops)
    target = st.unpack.target_index if isinstance(st.unpack, Scatter) else ()
    # A target the iterations scatter into is zeroed slice by slice when its leading
    # subscripts are the loop indices: in parallel, and just before the slice is used.
    by_slice = st.zero and bool(peeled) and tuple(target[: len(peeled)]) == peeled
    lines = [f"{st.unpack.array}.fill(0.0)"] if st.zero and not by_slice else []
    lines += _loop_lines(st.loops, printer, parallel)
    pad = "    " * len(st.loops)
    if by_slice:
        lines.append(f"{pad}{st.unpack.array}[{', '.join(map(str, peeled))}].fill(0.0)")
    for buffer, dims in st.local:
        shape = ", ".join(printer.doprint(d) for d in dims)
        lines.append(f"{pad}{buffer} = np.empty(({shape},), {dtype_of}.dtype)")
    for pack in st.packs:
        lines += [pad + line for line in _unit_stride_lines(pack, printer, hyper)]
    g = st.gemm
    operands = ", ".join(_matrix(m, printer) for m in (g.left, g.right, g.out))
    lines.append(f"{pad}np.dot({operands})  # BLAS")
    if st.unpack is not None:
        lines += [pad + line for line in _unit_stride_lines(st.unpack, printer, hyper)]
    for tail in st.epilogue:
        lines += [pad + line for line in _statement_lines(tail, printer, False)]
    if st.reduce is not None:
        lines += _statement_lines(st.reduce, printer, parallel)
    return lines


def _statement_lines(statement, printer: NumbaPrinter, parallel: bool, hyper=(),
                     dtype_of="") -> list[str]:
    if isinstance(statement, Contraction):
        return _contraction_lines(statement, printer, parallel, hyper, dtype_of)
    if isinstance(statement, Scatter):
        # Two iterations may add into the same element, so only an outer loop whose
        # index addresses the target unchanged (the batch) may run in parallel.
        lines = [f"{statement.array}.fill(0.0)"] if statement.zero else []
        safe = parallel and statement.loops[0].index in statement.target_index
        lines += _loop_lines(statement.loops, printer, safe)
        pad = "    " * len(statement.loops)
        target = printer.doprint(statement.array[statement.target_index])
        return lines + [f"{pad}{target} += {printer.doprint(statement.value)}"]
    lines = _loop_lines(statement.loops, printer, parallel)
    pad = "    " * len(statement.loops)
    for acc in statement.accumulators:
        lines += [pad + line for line in _accumulator_lines(acc, printer)]
    target = printer.doprint(statement.array[statement.index])
    op = "+=" if statement.accumulate else "="
    lines.append(f"{pad}{target} {op} {printer.doprint(statement.value)}")
    return lines


#: Floating-point freedoms the layer kernels take: reassociation (so sums vectorise) and
#: contraction into FMAs. Never "nnan"/"ninf": NaN and inf must propagate as in PyTorch.
_FASTMATH = '{"reassoc", "contract"}'


def _kernel_source(kernel: LayerKernel, op, printer: NumbaPrinter) -> str:
    from derive.codegen.lower import _declared

    args = [str(a) for a in kernel.arrays] + [str(h) for h in kernel.hyper]
    used = set()
    for st in kernel.statements:
        used |= set().union(*(sp.sympify(e).free_symbols for e in _exprs(st)))
    for _, dims, _ in kernel.allocations:
        used |= set().union(*(sp.sympify(d).free_symbols for d in dims))
    loop_vars = set().union(*(loop_indices(st) for st in kernel.statements))
    sizes = sorted((s for s in used if isinstance(s, sp.Symbol) and s not in loop_vars
                    and s not in kernel.hyper and not str(s).startswith("acc")), key=str)
    bind = []
    for size in sizes:
        for array in kernel.arrays:
            dims = op.shape(_declared(op, array))
            if size in dims:
                bind.append(f"    {size} = {array}.shape[{dims.index(size)}]")
                break
    dtype_of = str(kernel.arrays[0])
    for array, dims, integer in kernel.allocations:
        shape = ", ".join(printer.doprint(d) for d in dims)
        dtype = "np.int64" if integer else f"{dtype_of}.dtype"
        bind.append(f"    {array} = np.empty(({shape},), {dtype})")
    deco = (f'njit(cache=True, error_model="numpy", fastmath={_FASTMATH}'
            + (", parallel=True)" if kernel.parallel else ")"))
    body = [line for st in kernel.statements
            for line in _statement_lines(st, printer, kernel.parallel, kernel.hyper, dtype_of)]
    return "\n".join([f"@{deco}", f"def {kernel.name}({', '.join(args)}):", *bind,
                      *("    " + line for line in body)])


def _exprs(statement) -> list:
    return statement_exprs(statement)


def render_layer(m: LayerModule, command: str) -> str:
    """Render the generated module of one layer.

    Parameters
    ----------
    m : LayerModule
        The lowered layer.
    command : str
        The command that regenerates the file.
    """
    op = m.op
    printer = NumbaPrinter()
    kernels = [_kernel_source(m.forward, op, printer), _kernel_source(m.backward, op, printer)]
    helpers, extra_imports = helper_source(printer.helpers)
    context = {
        "m": m,
        "cache_name": cache_name("layers", m.name),
        "header": header_lines(m.source, command),
        "kernels": kernels,
        "helpers": helpers,
        "extra_imports": extra_imports,
        **_layer_wrappers(m),
    }
    text = _environment().get_template("kernels/layer.py.jinja").render(context)
    return with_hash(text)


def _layer_wrappers(m: LayerModule) -> dict:
    """Names and shape bookkeeping the public forward/backward of a layer need."""
    op = m.op
    padded, original, amount = op.padding or (None, None, None)
    public_inputs = [original if a == padded else a for a in op.inputs]
    arrays = public_inputs + list(op.weights) + list(op.buffers)
    shapes = dict(op.arrays)
    hyper = [(p_.name, p_.default, str(p_.symbol), _hyper_check(p_)) for p_ in op.hyper]

    def dims(array):
        return [str(d) if isinstance(d, sp.Symbol) else None for d in shapes[array]]

    size_printer = NumbaPrinter({s_: f'sizes["{s_}"]' for s_ in _all_sizes(op)})
    derived = [(str(sym), size_printer.doprint(expr)) for sym, expr in op.sizes]
    out_shape = ", ".join(size_printer.doprint(d) for d in shapes[op.out.base])
    view = ", ".join(size_printer.doprint(d) for d in op.view) if op.view else None
    return {
        "arrays": [(str(a), dims(a)) for a in arrays],
        "array_names": [str(a) for a in arrays],
        "hyper": hyper,
        "derived": derived,
        "out_name": str(op.out.base),
        "out_dims": dims(op.out.base),
        "out_shape": out_shape,
        "view": view,
        "padded": str(padded) if padded is not None else None,
        "original": str(original) if original is not None else None,
        "amount": str(amount) if amount is not None else None,
        "forward_call": _call(m.forward),
        "backward_call": _call(m.backward),
        "gradients": [
            (str(base), str(target), str(original) if base == padded else str(base))
            for base, target in m.gradients
        ],
        "upstream": f"d_{op.out.base}",
    }


def _hyper_check(param) -> str:
    """The call that checks a layer's hyper-parameter, from its symbol's assumptions.

    A stride or window size is an integer >= 1, a padding an integer >= 0, an epsilon a
    real > 0: what the declaration assumes is what the public function accepts.
    """
    symbol, name = param.symbol, param.name
    if symbol.is_integer:
        return f'_int("{name}", {name}, {1 if symbol.is_positive else 0})'
    # A declared upper bound (dropout's p < 1) is checked too; infinity is no bound.
    below = "" if param.below is None else f", {float(param.below)!r}"
    if symbol.is_positive:
        return f'_real("{name}", {name}, 0.0, True{below})'
    if symbol.is_nonnegative:
        return f'_real("{name}", {name}, 0.0, False{below})'
    return f'_real("{name}", {name}, -math.inf, False{below})'


def _call(kernel: LayerKernel) -> str:
    args = [str(a) for a in kernel.arrays] + [f'sizes["{h}"]' for h in kernel.hyper]
    return f"{kernel.name}({', '.join(args)})"


def _all_sizes(op) -> set:
    symbols = set()
    for _, dims in op.arrays:
        for d in dims:
            symbols |= sp.sympify(d).free_symbols
    for sym, expr in op.sizes:
        symbols |= {sym} | expr.free_symbols
    return symbols | {p_.symbol for p_ in op.hyper}
