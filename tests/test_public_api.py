"""The public surface of ``import fades`` and the package's import layout.

``fades.__all__`` is pinned (changing it is an API change), every name imports, and
``import fades`` alone stays cheap. The layout checks read the import statements of every
module under src/fades: there is no import circle, infrastructure never reaches the demo, and
production code never imports the synthetic testbed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fades

SRC = Path(__file__).resolve().parents[1] / "src" / "fades"

PUBLIC = {
    "__version__",
    "Task",
    "parse_task",
    "load_task",
    "Node",
    "FadesClient",
    "Outcome",
    "SigningKey",
    "Artifact",
    "build_function",
    "build_runtime",
    "FadesError",
    "TaskError",
    "TaskValidationError",
    "ArtifactError",
    "SignatureError",
    "SandboxError",
    "MemoryLimitExceeded",
    "TimeLimitExceeded",
    "AccessDenied",
    "FabricError",
    "ControllerError",
}


def test_all_is_pinned() -> None:
    assert set(fades.__all__) == PUBLIC
    assert len(fades.__all__) == len(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_name_imports(name: str) -> None:
    value = getattr(fades, name)
    assert value is not None
    if name != "__version__":
        assert getattr(value, "__module__", "").startswith("fades."), value
    assert name in dir(fades)


def test_errors_are_one_tree() -> None:
    for name in PUBLIC:
        value = getattr(fades, name)
        if isinstance(value, type) and name.endswith(("Error", "Exceeded", "Denied")):
            assert issubclass(value, fades.FadesError), name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nope"):
        fades.nope  # noqa: B018


def test_from_fades_import_works_and_a_task_parses() -> None:
    from fades import Task, parse_task

    task = parse_task(
        {"credentials": {"tenant": "a"}, "data": [{"name": "t"}], "function": {"artifact": "f"}}
    )
    assert isinstance(task, Task)


def test_import_fades_alone_loads_nothing_heavy() -> None:
    code = (
        "import sys, fades\n"
        "heavy = ['wasmtime', 'numpy', 'scipy', 'httpx', 'fastapi', 'nats', 'pydantic']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert proc.stdout.strip() == "[]", proc.stdout


# --- layout -----------------------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the fades modules it imports (anywhere in it, except under TYPE_CHECKING)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for n in ast.walk(stmt)
        }
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package[: len(package) - (node.level - 1)]
                    base = ".".join([*parent, base] if base else parent)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_checker_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_is_no_import_circle() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("module", ["fades.cluster", "fades.node", "fades.controller.service"])
def test_infrastructure_does_not_import_the_demo(module: str) -> None:
    graph = import_graph()
    assert not {"fades.demo", "fades.demo_cluster"} & reach(graph, module)


def test_production_code_does_not_import_the_testbed() -> None:
    graph = import_graph()
    production = [
        m
        for m in graph
        if m.startswith(("fades.node", "fades.controller", "fades.fabric", "fades.broker"))
        or m in ("fades.sensors.ingest", "fades.client", "fades.task", "fades.outcome")
    ]
    assert production
    offenders = {m for m in production if any(t.startswith("fades.testbed") for t in graph[m])}
    assert not offenders
    assert not any(t.startswith("fades.testbed") for t in reach(graph, "fades.sensors.ingest"))
