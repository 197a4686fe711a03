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


def test_the_remote_code_is_split_by_role_into_readable_files():
    """Each root module of the model folder under 600 lines; `SAERadModel` coordinates (under 150 lines)."""
    remote = sorted(ROOT.glob("*_saerad.py"))
    assert {p.name for p in remote} >= {"configuration_saerad.py", "image_processing_saerad.py", "modeling_saerad.py"}
    long = {p.name: n for p in remote if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
    tree = ast.parse((ROOT / "modeling_saerad.py").read_text())
    (model,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "SAERadModel"]
    assert model.end_lineno - model.lineno + 1 < 150


def test_the_remote_code_encodes_in_one_place():
    """pool -> cast -> normalise -> encode is written once (`SAERadModel.encode_backbone_output`)."""
    calls = {p.name: p.read_text().count("sae.normalize(") for p in ROOT.glob("*_saerad.py")}
    assert sum(calls.values()) == 1 and calls["modeling_saerad.py"] == 1


def test_the_remote_code_passes_no_private_keyword_arguments():
    """Only the public transformers API: no `_name=` keyword argument in any call of the remote code."""
    private = [f"{p.name}:{node.lineno} {kw.arg}" for p in ROOT.glob("*_saerad.py")
               for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Call)
               for kw in node.keywords if kw.arg and kw.arg.startswith("_")]
    assert private == []


def test_no_module_of_the_toolkit_imports_one_that_imports_it():
    """No import cycles inside saerad (lazy imports in functions count): each pair of modules one way only."""
    package = ROOT / "src" / "saerad"
    imports = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                found.add(".".join(base + ([node.module] if node.module else [])))
        imports[name] = found
    cycles = sorted((a, b) for a in imports for b in imports[a] if a < b and a in imports.get(b, ()))
    assert cycles == []
