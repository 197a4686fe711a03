"""The source tree stays readable: no function over 80 lines (data tables are module-level constants, not functions)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def test_no_function_is_over_80_lines():
    files = [*ROOT.glob("*.py"), *(ROOT / "src").rglob("*.py"), *(ROOT / "spaces").glob("*.py"),
             *(ROOT / "benchmarks").glob("*.py")]
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in files for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert len(files) > 40 and long == []
