"""Strict equality (off by default): an assert that compares a value with a builtin
literal fails when the value's type brings its own ``__eq__`` from outside the standard
library.

Why: ``assert f(x) == 3`` passes for any object whose ``__eq__`` returns ``True``; no
runner check can tell that from a right answer, because the comparison itself is what
lies. With ``strict_equality: true`` the worker rewrites, before pytest's own assertion
rewriting, every ``assert`` whose comparison is ``==``/``!=`` with a literal (a constant,
or a list/tuple/set/dict display of literals) on one side, so the other side passes
through :func:`check` first. ``check`` walks builtin containers (bounded) and refuses a
value whose type's ``__eq__`` is defined by a class outside the standard library —
including subclasses of ``str``/``int``/``list`` that override it. Legitimate code can
do that too (numpy scalars compared with ``==``), which is why it is opt-in; its
agreement with the recorded KodCode verdicts is in docs/benchmarks.md.
"""
from __future__ import annotations

import ast
import sys
from typing import Any

HELPER = "@srscode_strict"  # not a valid identifier: cannot clash with the test's names
MAX_ITEMS = 10_000
MAX_DEPTH = 6
_STDLIB = frozenset(sys.stdlib_module_names) | {"builtins"}
_CONTAINERS = (list, tuple, set, frozenset)


def _eq_owner(t: type) -> type | None:
    for klass in t.__mro__:
        if "__eq__" in klass.__dict__:
            return klass
    return None


def _scan(value: Any, depth: int, budget: list[int]) -> None:
    t = type(value)
    owner = _eq_owner(t)
    if owner is not None and str(owner.__module__).split(".")[0] not in _STDLIB:
        raise AssertionError(
            f"strict equality: {t.__qualname__} defines its own __eq__ (in {owner.__module__}.{owner.__qualname__}); "
            "a comparison with it is not trusted"
        )
    if depth >= MAX_DEPTH or budget[0] <= 0:
        return
    if t in _CONTAINERS or t is dict:
        items = list(value.items()) if t is dict else value
        for x in items:
            budget[0] -= 1
            if budget[0] <= 0:
                return
            if t is dict:
                _scan(x[0], depth + 1, budget)
                _scan(x[1], depth + 1, budget)
            else:
                _scan(x, depth + 1, budget)


def check(value: Any) -> Any:
    """``value`` itself, after refusing a type with its own ``__eq__`` (see module doc)."""
    _scan(value, 0, [MAX_ITEMS])
    return value


def _is_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_literal(node.operand)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(_is_literal(v) for v in node.values)
    return False


class _Wrap(ast.NodeTransformer):
    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        test = node.test
        if isinstance(test, ast.Compare) and all(isinstance(op, (ast.Eq, ast.NotEq)) for op in test.ops):
            operands = [test.left, *test.comparators]
            if any(_is_literal(o) for o in operands):
                wrapped = [o if _is_literal(o) else ast.copy_location(ast.Call(ast.Name(HELPER, ast.Load()), [o], []), o) for o in operands]
                test.left, test.comparators = wrapped[0], wrapped[1:]
        return node


def rewrite(tree: ast.Module) -> ast.Module:
    """Wrap the non-literal side of literal comparisons in asserts; import the helper."""
    _Wrap().visit(tree)
    imp = ast.ImportFrom(module=__name__.rsplit(".", 1)[0] + ".strict_eq", names=[ast.alias("check", HELPER)], level=0)
    tree.body.insert(0, imp)
    ast.fix_missing_locations(tree)
    return tree
