"""The test suite's own hygiene: an ``assert`` whose expression is always true checks nothing.

Caught here, by reading every test module's syntax tree: a path built with ``/`` (a ``Path``
is always true: ``.exists()`` was meant), a tuple (``assert (x, "why")``), a non-empty string
or f-string, and a list, set or dict display with items.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def always_true(test: ast.expr) -> str | None:
    """Why ``assert test`` can never fail, or None when it can."""
    if isinstance(test, ast.BinOp) and isinstance(test.op, ast.Div):
        return "a path built with '/' is always true (meant: .exists()?)"
    if isinstance(test, ast.Tuple) and test.elts:
        return "a non-empty tuple is always true (meant: assert x, 'message'?)"
    if isinstance(test, ast.JoinedStr) or (
        isinstance(test, ast.Constant) and isinstance(test.value, str) and test.value
    ):
        return "a non-empty string is always true"
    if isinstance(test, ast.List | ast.Set) and test.elts:
        return "a non-empty list or set display is always true"
    if isinstance(test, ast.Dict) and test.keys:
        return "a non-empty dict display is always true"
    return None


def vacuous(source: str) -> list[tuple[int, str]]:
    """(line, reason) of each assert in ``source`` that cannot fail."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assert) and (why := always_true(node.test)):
            found.append((node.lineno, why))
    return found


@pytest.mark.parametrize(
    "line",
    [
        "assert tmp / 'a' / 'b.done'",
        "assert (x == 1, 'why')",
        "assert f'{x}'",
        "assert 'text'",
        "assert [x]",
        "assert {'a': x}",
    ],
)
def test_an_assert_that_cannot_fail_is_found(line: str) -> None:
    assert vacuous(line), line


def test_an_assert_that_can_fail_is_not_flagged() -> None:
    source = "assert (tmp / 'a').exists()\nassert x == [1]\nassert not {}\nassert y, 'why'\n"
    assert vacuous(source) == []


def test_no_test_module_asserts_what_is_always_true() -> None:
    found = [
        f"{path.relative_to(TESTS)}:{line}: {why}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, why in vacuous(path.read_text())
    ]
    assert found == []
