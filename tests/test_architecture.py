"""The shape of the code, checked from its source: one owner of status writes, imports that
run one way.

- Only ``executions/store/`` writes the status of an execution or a node run: an UPDATE with
  ``status=``, a ``status=`` in a create of an Execution or a NodeRun, an assignment to a
  NodeRun's ``status`` on the way to a bulk_create, or raw SQL ``SET status``.
- The modules of executions/, monitoring/ and weconnect/ import each other without a cycle,
  and none imports one of ours inside a function (the way circles are hidden).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("executions", "monitoring", "weconnect")
STORE = ROOT / "executions" / "store"
_SET_STATUS = re.compile(r"\bSET\s+status\b", re.IGNORECASE)

# Function-level imports of our own modules that are not about a circle: code that runs
# before Django is configured (the dev stack sets up Django, then loads the app) and the
# app's ready() hook, which loads the node types once the registry is complete.
_LATE_IMPORT_ALLOWED = {
    "executions.apps",
    "weconnect.devstack",
}


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            yield path


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _status_writes(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            keywords = {k.arg for k in node.keywords}
            if name == "update" and "status" in keywords:
                found.append((node.lineno, ".update(status=...)"))
            if name in ("create", "get_or_create", "update_or_create", "bulk_create") and (
                "status" in keywords
            ):
                found.append((node.lineno, f".{name}(status=...)"))
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and t.attr == "status":
                        found.append((node.lineno, "assignment to .status"))
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _SET_STATUS.search(node.value)
        ):
            found.append((node.lineno, "SQL SET status"))
    return found


def test_only_the_store_writes_a_status():
    offenders = []
    for path in _sources():
        if STORE in path.parents:
            continue
        for line, what in _status_writes(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert offenders == [], "status written outside executions/store/:\n" + "\n".join(offenders)


def test_the_status_write_check_sees_each_kind_of_write():
    """The scan must flag each way a status is written (and not a read), or the test above
    proves nothing."""
    source = """
NodeRun.objects.filter(id=1).update(status="queued")
Execution.objects.create(workflow=w, status="running")
NodeRun.objects.bulk_create(rows, status="x")
row.status, row.input = "queued", 1
execution.status = "failed"
SQL = "UPDATE executions_noderun SET status = 'running'"
NodeRun.objects.filter(status="queued").update(task_id="t")
x = run.status
"""
    lines = [line for line, _ in _status_writes(ast.parse(source))]
    assert sorted(set(lines)) == [2, 3, 4, 5, 6, 7]


def _imports():
    """(module, imported module of ours, line, inside a function) for every import."""
    modules = {_module(p): p for p in _sources()}

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    out = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]

        def visit(node, in_function: bool, module=module, package=package):
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                names: list[str] = []
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parts = package.split(".")
                        parts = parts[: len(parts) - (child.level - 1)]
                        base = ".".join(parts + ([base] if base else []))
                    names = [f"{base}.{a.name}" for a in child.names]
                for name in names:
                    target = ours(name)
                    if target and target != module:
                        out.append((module, target, child.lineno, inner))
                visit(child, inner)

        visit(tree, False)
    return out


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle():
    edges: dict[str, set[str]] = {}
    for module, target, _, _ in _imports():
        edges.setdefault(module, set()).add(target)
    assert _cycles(edges) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_level_import_of_our_modules():
    late = [
        f"{module} line {line}: imports {target}"
        for module, target, line, in_function in _imports()
        if in_function and module not in _LATE_IMPORT_ALLOWED
    ]
    assert late == [], "imports inside functions:\n" + "\n".join(late)


def test_node_types_reach_neither_the_engine_nor_the_services():
    """Node types get what they need (the predecessors that fired, starting a child
    execution) through Context, not by importing the layers above them."""
    reaching = [
        f"{module} imports {target}"
        for module, target, _, _ in _imports()
        if module.startswith("executions.nodes")
        and target.startswith(("executions.engine", "executions.services", "executions.store"))
    ]
    assert reaching == []


def test_the_store_is_below_the_engine():
    upward = [
        f"{module} imports {target}"
        for module, target, _, _ in _imports()
        if module.startswith("executions.store")
        and target.startswith(("executions.engine", "executions.services", "executions.nodes"))
    ]
    assert upward == []
