"""The project's import graph, read statically with `ast`: no import loops, every import of a
project module resolves, and each deployable imports only what it ships.

Why static: importing the modules would hide a loop that an import inside a function dodges,
and would need torch/onnxruntime. Every import counts here, inside functions too (only
`if TYPE_CHECKING:` blocks are left out of the loop check, as they never run). Importing
`a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first, so a module depends on its parent
packages too. The layering rules are the "Layout" section of docs/layout.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stack import ROOT

PACKAGES = ("backend", "models", "serving", "ragctl", "ragstack_common", "benchmarks")
TOP_MODULES = ("service",)


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    # imported module names, with the line of each import
    runtime: dict[str, int] = field(default_factory=dict)
    type_only: dict[str, int] = field(default_factory=dict)
    unresolved: list[tuple[str, int]] = field(default_factory=list)


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def project_files() -> Iterator[Path]:
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))
    for top in TOP_MODULES:
        yield ROOT / f"{top}.py"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), type_only)
        else:
            yield from _imports(node, type_only)


def _is_project(name: str) -> bool:
    return name.split(".")[0] in (*PACKAGES, *TOP_MODULES)


def build_graph() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    trees = {}
    for path in project_files():
        name, is_pkg = module_name(path)
        modules[name] = Module(name, path, is_pkg)
        trees[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for name, tree in trees.items():
        mod = modules[name]
        package = name if mod.is_package else name.rpartition(".")[0]
        for node, type_only in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                assert isinstance(node, ast.ImportFrom)
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import sub` imports the submodule when there is one
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for target in targets:
                if not _is_project(target):
                    continue
                if target not in modules:
                    mod.unresolved.append((target, node.lineno))
                    continue
                chain = target.split(".")
                # the parent packages run first
                for i in range(1, len(chain) + 1):
                    dep = ".".join(chain[:i])
                    if dep in modules and dep != name:
                        edges = mod.type_only if type_only else mod.runtime
                        edges.setdefault(dep, node.lineno)
    # a module runs its own parent packages' __init__ first, too
    for name, mod in modules.items():
        chain = name.split(".")
        for i in range(1, len(chain)):
            parent = ".".join(chain[:i])
            if parent in modules:
                mod.runtime.setdefault(parent, 0)
    return modules


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm), leaving
    out the edge from a module to its own parent packages: Python has run them (or is running
    them) before the module, and a package `__init__` that imports its submodules is how
    packages are built, not a loop."""

    def deps(name: str) -> list[str]:
        own_parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        return [dep for dep in modules[name].runtime if dep not in own_parents]

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in deps(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found


def closure(modules: dict[str, Module], start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for dep in modules[todo.pop()].runtime:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


GRAPH = build_graph()


def test_the_graph_sees_the_project() -> None:
    assert {"service", "serving.engine", "models.runtime.embedder.onnx", "backend.app"} <= set(
        GRAPH
    )
    assert "models.runtime.settings" in GRAPH["serving.engine"].runtime


def test_every_project_import_resolves() -> None:
    bad = [
        f"{m.path.relative_to(ROOT)}:{line}: {target}"
        for m in GRAPH.values()
        for target, line in m.unresolved
    ]
    assert not bad, "imports of project modules that do not exist:\n" + "\n".join(bad)


def test_no_import_loops() -> None:
    loops = cycles(GRAPH)
    assert not loops, "import loops (break them; an import inside a function is no fix):\n" + (
        "\n".join(" <-> ".join(c) for c in loops)
    )


def test_the_ml_api_loads_only_the_runtime() -> None:
    """service.py's closure is what the bento ships (bentofile.yaml includes service.py,
    serving/ and models/runtime/): never the build side, the backend or the CLI."""
    loaded = closure(GRAPH, "service")
    outside = sorted(
        n
        for n in loaded
        if not under(n, "service", "serving", "models.runtime", "ragstack_common") and n != "models"
    )
    assert not outside, f"the ml-api imports {outside}"


def test_layers() -> None:
    rules = {
        # importer: prefixes it must not import
        "models": ("serving", "backend", "ragctl", "service", "benchmarks"),
        "models.runtime": ("models.build",),
        "serving": ("models.build", "backend", "ragctl", "service", "benchmarks"),
        "backend": ("models", "serving", "ragctl", "service", "benchmarks"),
        "ragctl": ("backend", "serving", "service", "benchmarks"),
        # shared by every deployable, so it depends on none of them
        "ragstack_common": ("backend", "models", "serving", "ragctl", "service", "benchmarks"),
    }
    bad = []
    for name, mod in GRAPH.items():
        for owner, banned in rules.items():
            if not under(name, owner):
                continue
            for dep in mod.runtime:
                if under(dep, *banned):
                    bad.append(f"{name} -> {dep}")
    assert not bad, "imports across layers:\n" + "\n".join(sorted(bad))


def test_the_benchmark_harness_imports_no_benchmark() -> None:
    """benchmarks/harness/ is what the benchmarks share; a benchmark script is no library."""
    bad = [
        f"{name} -> {dep}"
        for name, mod in GRAPH.items()
        if under(name, "benchmarks.harness")
        for dep in mod.runtime
        if under(dep, "benchmarks") and dep != "benchmarks" and not under(dep, "benchmarks.harness")
    ]
    assert not bad, "\n".join(bad)


def test_no_benchmark_imports_another() -> None:
    """Each benchmark script is an entry point, not a library: what two of them share lives in
    benchmarks/harness/, so changing one script cannot break another."""
    bad = [
        f"{name} -> {dep}"
        for name, mod in GRAPH.items()
        if under(name, "benchmarks")
        for dep in {**mod.runtime, **mod.type_only}
        if under(dep, "benchmarks")
        and dep not in ("benchmarks", name)
        and not under(dep, "benchmarks.harness")
    ]
    assert not bad, "benchmarks importing another benchmark:\n" + "\n".join(sorted(bad))
