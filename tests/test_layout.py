"""The package's shape (BUILD_NOTES.md, "Module map"): the top of sn_tf/ holds the commands,
the library sits in one folder per stage, and imports run only down the stages, without cycles.
Read from the source with ``ast`` (nothing is imported)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "sn_tf"
COMMANDS = {"convert", "train", "predict", "export", "score", "polygonize", "sample", "demo"}
# stages of the data's walk, in order; a module may import its own stage and earlier ones
STAGES = ("utils", "spacenet", "dataset", "input", "modeling", "head", "training", "configs",
          "serving")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names)
    return {m for m in found if m in modules and m != name}


def _rank(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return -1  # sn_tf itself: the version and lazily imported public names
    if parts[1] in STAGES:
        return STAGES.index(parts[1])
    return len(STAGES)  # the commands


def test_the_top_of_the_package_is_the_commands():
    top = {p.stem for p in ROOT.glob("*.py")} - {"__init__"}
    assert top == COMMANDS
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(STAGES)


def test_imports_run_down_the_stages_without_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    upward = sorted((a, b) for a, deps in graph.items() for b in deps if _rank(b) > _rank(a))
    assert upward == []
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for dep in graph[node]:
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(stack + [node, dep])}"
            if dep not in state:
                visit(dep, stack + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
