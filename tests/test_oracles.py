"""Every declared op has a PyTorch reference in tests/oracles.py, or says it has none.

The one place a missing reference fails: the tests that use an oracle look it up lazily
and skip an op without one, so declaring an op never breaks collection.
"""

from oracles import TABLES, missing

from derive.registry import all_ops


def test_every_op_has_an_oracle_or_says_none():
    messages = missing(all_ops())
    assert not messages, "\n".join(messages)


def test_every_oracle_names_a_declared_op():
    # An entry whose op was renamed or removed would otherwise never run.
    declared = {(op.kind, op.name) for op in all_ops()}
    stale = sorted(f"{kind} {name!r}" for kind, table in TABLES.items() for name in table
                   if (kind, name) not in declared)
    assert not stale, f"tests/oracles.py has entries for undeclared ops: {', '.join(stale)}"
