"""The package's shape: three floors (runtime services, the science, the machinery that
runs it), no import cycle between its modules and subpackages, short functions, imports
at the top, and `import synthaug` without side effects."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synthaug"
RUNNERS = {
    "study",
    "stages",
    "lock",
    "slurm",
    "kernels",
    "executed",
    "book",
    "browser",
    "export",
    "cards",
    "hub",
    "ship",
    "cli",
}
SERVICES = {"provenance", "progress", "quiet", "compiling", "tracking"}
LEAVES = {"io", "paths"}  # below the services: they import nothing of synthaug
LONGEST_FUNCTION = 60


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _node(module: str) -> str:
    """A module's node in the graph: a top-level module by its name, a subpackage's
    module by its subpackage's (`synthaug.analysis.tables` -> `analysis`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "synthaug"


def _type_only(tree: ast.Module) -> set[ast.AST]:
    """The statements under `if TYPE_CHECKING:` (for type hints; never run)."""
    return {
        inner
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for inner in node.body
    }


def _imports(path: Path) -> set[str]:
    """The synthaug modules `path` imports (dotted), at the top or inside functions;
    imports for type hints alone left out."""
    tree = ast.parse(path.read_text())
    hints = _type_only(tree)
    found = set()
    for node in (n for n in ast.walk(tree) if n not in hints):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synthaug"):
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("synthaug")}
    return found


def _dotted(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(p for p in relative.parts if p != "__init__")


def _graph() -> dict[str, set[str]]:
    """Each node's synthaug imports, by node: a subpackage counts as one node."""
    graph: dict[str, set[str]] = {}
    for path in _modules():
        node = _node(_dotted(path))
        targets = {_node(m) for m in _imports(path) if m.count(".") >= 1}
        graph.setdefault(node, set()).update(targets - {node, "synthaug"})
    return graph


def test_no_import_cycle_between_modules_and_subpackages() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join((*stack, node))}"
        if node in done:
            return
        for imported in graph.get(node, ()):
            visit(imported, (*stack, node))
        done.add(node)

    for node in graph:
        visit(node, ())
    assert graph["flow"] <= {"config", "vocab", "families"}  # below every stage
    assert graph["families"] <= {"attention", "runtime", "vocab"}  # below every stage, too


def _imported_modules(folder: str) -> dict[str, set[str]]:
    """For each module of `synthaug/<folder>/`, the dotted synthaug modules it imports."""
    return {p.stem: _imports(p) for p in (PACKAGE / folder).glob("*.py") if p.stem != "__init__"}


def test_runners_above_the_science_services_below_it() -> None:
    """`machinery/` holds only the runners, and nothing outside it imports them; the
    services in `runtime/` import nothing but each other and the leaves."""
    assert set(_imported_modules("machinery")) == RUNNERS
    assert set(_imported_modules("runtime")) == SERVICES
    for path in _modules():
        if "machinery" not in path.parts:
            runners = {m for m in _imports(path) if m.startswith("synthaug.machinery")}
            assert not runners, f"{_dotted(path)} imports the runners {runners}"
    for service, imported in _imported_modules("runtime").items():
        below = {m for m in imported if _node(m) not in {"runtime", *LEAVES}}
        assert not below, f"runtime.{service} imports {below}, above the ground floor"
    for leaf in LEAVES:
        assert not _imports(PACKAGE / f"{leaf}.py"), f"{leaf} imports synthaug"


def test_importing_synthaug_changes_nothing() -> None:
    """No logging filters, warning filters or handlers appear on `import synthaug`: the
    quiet set-up happens where a run starts (the CLI, a notebook's config)."""
    probe = (
        "import logging, warnings; before = (len(warnings.filters), "
        "sum(len(l.filters) for l in logging.root.manager.loggerDict.values() "
        "if isinstance(l, logging.Logger))); import synthaug; "
        "after = (len(warnings.filters), sum(len(l.filters) for l in "
        "logging.root.manager.loggerDict.values() if isinstance(l, logging.Logger))); "
        "print(before == after)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "True", result.stderr


def test_no_function_longer_than_a_screen() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{_dotted(path)}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)


def _deferred_imports(path: Path) -> list[tuple[int, str]]:
    """Imports inside functions, in line order: (line, the line above it)."""
    lines = path.read_text().splitlines()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.add((inner.lineno, lines[inner.lineno - 2].strip()))
    return sorted(found)


def test_imports_inside_functions_say_why() -> None:
    """Imports sit at the top of each module; the few a function defers (heavy libraries
    the CLI must not load to print its help) are each a block under a `# deferred:` line."""
    unexplained = []
    for path in _modules():
        block_reason = None
        for line, above in _deferred_imports(path):
            if above.startswith("# deferred:"):
                block_reason = line
            elif not (above.startswith(("from ", "import ")) and block_reason):
                unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not unexplained, "imports inside functions without a reason:\n" + "\n".join(unexplained)
