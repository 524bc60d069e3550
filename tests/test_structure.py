"""The package's shape: stage modules import downward only (no import cycle)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synthaug"


def _imports(path: Path) -> set[str]:
    """The synthaug modules a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("synthaug"):
            parts = node.module.split(".")
            found |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
    return found - {path.stem}


def _graph() -> dict[str, set[str]]:
    """Each module's synthaug imports; a subpackage counts as one module (its files' union)."""
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    for package in (p.parent for p in PACKAGE.glob("*/__init__.py")):
        files = list(package.glob("*.py"))
        graph[package.name] = set().union(*(_imports(f) for f in files)) - {package.name}
    return graph


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join((*stack, module))}"
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*stack, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert graph["flow"] <= {"config", "vocab", "families"}  # below every stage
    assert graph["families"] <= {"attention", "quiet", "vocab"}  # below every stage, too
