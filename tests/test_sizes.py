"""Size rules (issue 16, docs/development.md): no module of ``drwatch`` over 400 lines, no function over 60.

A module's size is its physical lines (what ``wc -l`` counts: docstrings, comments and blank lines included). A
function's size runs from its ``def`` line to its last line, inclusive (decorators not counted; a nested function
counts inside its parent and on its own). A function that is a table (data laid out one entry a line) may be
longer: it is named in ``TABLES`` with the reason, so an exception is a visible decision, never drift.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "drwatch"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# "path relative to daemon/:qualified name" -> why it may be longer (a table). Empty today.
TABLES: dict[str, str] = {}


def module_lines(source: str) -> int:
    return len(source.splitlines())


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, size in lines) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            yield f"{prefix}{node.name}", node.lineno, node.end_lineno - node.lineno + 1
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


SOURCES = sorted(PACKAGE.rglob("*.py"))


def where(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_no_module_over_the_limit() -> None:
    over = [f"{where(p)}: {n} lines" for p in SOURCES
            if (n := module_lines(p.read_text(encoding="utf-8"))) > MAX_MODULE_LINES]
    assert len(SOURCES) > 100  # the package is the real one
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n  " + "\n  ".join(over)


def test_no_function_over_the_limit() -> None:
    over, tables = [], set()
    for path in SOURCES:
        for name, line, size in functions(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            key = f"{where(path)}:{name}"
            if key in TABLES:
                tables.add(key)
            elif size > MAX_FUNCTION_LINES:
                over.append(f"{where(path)}:{line} {name}: {size} lines")
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines (steps of their own, or a table named in " \
                     "TABLES):\n  " + "\n  ".join(over)
    assert tables == set(TABLES), f"TABLES names functions that no longer exist: {set(TABLES) - tables}"


@pytest.mark.parametrize("body, expected", [
    ("def f():\n    return 1\n", [("f", 1, 2)]),
    ("@decorator\nasync def f():\n    x = 1\n\n    return x\n", [("f", 2, 4)]),
    ("class C:\n    def m(self):\n        def inner():\n            pass\n        return inner\n",
     [("C.m", 2, 4), ("C.m.inner", 3, 2)]),
    ("if True:\n    def g():\n        '''doc'''\n        # comment\n        pass\n", [("g", 2, 4)]),
])
def test_functions_are_measured_as_documented(body: str, expected: list[tuple[str, int, int]]) -> None:
    assert list(functions(ast.parse(body))) == expected


def test_modules_are_measured_as_wc_counts() -> None:
    assert module_lines('"""doc"""\n\nx = 1\n') == 3
    assert module_lines("x = 1") == 1
