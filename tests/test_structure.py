"""The package's shape: short modules and functions (the experiments' scripts too), no import cycle."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "rnn_jax"
EXPERIMENTS = PACKAGE.parent / "experiments"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 420, 80


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_or_function_is_too_long():
    long = []
    for path in modules() + sorted(EXPERIMENTS.glob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name}: {lines} lines")
    assert not long, long


def imports(path: pathlib.Path, known: set[str]) -> set[str]:
    """The package modules `path` imports (at any level, type-checking blocks aside)."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = [ast.Pass()]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
    return {name for name in found if name in known}


def test_no_import_cycle():
    known = {module_name(path) for path in modules()}
    graph = {module_name(path): imports(path, known) - {module_name(path)} for path in modules()}
    # A package's __init__ importing its own submodules is how packages are built; only other edges can cycle.
    for name in graph:
        graph[name] = {target for target in graph[name] if not target.startswith(name + ".")}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
