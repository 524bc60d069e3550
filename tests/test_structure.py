"""The package's shape: stage modules import downward only (no import cycle), and the
study's science apart from the machinery that runs it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synthaug"


RUNNERS = {
    "study",
    "lock",
    "slurm",
    "kernels",
    "book",
    "browser",
    "export",
    "cards",
    "hub",
    "ship",
    "cli",
}
SERVICES = {"provenance", "progress", "quiet", "compiling", "tracking"}


def _imports(path: Path) -> set[str]:
    """The synthaug modules a module imports, at the top or inside functions; a module of
    `machinery` by its own name, another subpackage by the subpackage's."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("synthaug"):
            parts = node.module.split(".")
            if len(parts) == 1 or parts[1] == "machinery":
                found |= set(parts[2:3]) or {a.name for a in node.names}
            else:
                found.add(parts[1])
    return found - {path.stem}


def _graph() -> dict[str, set[str]]:
    """Each module's synthaug imports; a subpackage other than `machinery` counts as one
    module (its files' union)."""
    modules = [*PACKAGE.glob("*.py"), *(PACKAGE / "machinery").glob("*.py")]
    graph = {p.stem: _imports(p) for p in modules if p.stem != "__init__"}
    for package in (p.parent for p in PACKAGE.glob("*/__init__.py")):
        if package.name != "machinery":
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


def test_the_science_never_imports_the_machinery_that_runs_it() -> None:
    """The stages (data, design, models, lora, generate, classify, metrics, analysis, ...)
    may call the machinery's services but never its runners; the services know nothing of
    the stages."""
    graph = _graph()
    machinery = {p.stem for p in (PACKAGE / "machinery").glob("*.py")} - {"__init__"}
    assert machinery == RUNNERS | SERVICES
    science = set(graph) - machinery
    assert {"data", "design", "models", "lora", "generate", "classify", "metrics"} <= science
    assert "analysis" in science
    for module in science:
        assert not graph[module] & RUNNERS, f"{module} imports {graph[module] & RUNNERS}"
    for service in SERVICES:
        assert graph[service] <= {"config", "paths", "io"} | SERVICES, (service, graph[service])
