"""The house's floors hold: imports go down, never up, and never in a circle.

docs/ARCHITECTURE.md draws the floors; this test reads every module's imports (the AST, so
imports inside functions and under TYPE_CHECKING count too) and fails on an import that runs
from a lower floor up to a higher one, between two capabilities, from production code into the
simulators, or round a circle of modules or packages.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "floor_agent"

# floor of each top-level part of floor_agent; a module may import its own floor or lower ones
FLOORS: dict[str, int] = {
    "common": 0,
    "protocol": 1,
    "config": 2, "service": 2, "sftp": 2, "private_db": 2,
    "audit": 3,
    "usb_guard": 4, "netlock": 4, "access": 4, "cctv": 4, "retention": 4,
    "simulated": 5, "ws_policy": 5,  # ws_policy steers two capabilities: above both
    "store": 6,
    "collector": 7,
    "dashboard": 8,
    "privacy": 9, "report": 9, "roles": 9, "cli": 9, "demo": 9,
    "__init__": 0,  # floor_agent itself: the version string only
}
CAPABILITIES = frozenset({"usb_guard", "netlock", "access", "cctv", "retention"})
# Modules whose floor is not their part's (none today; say why beside each entry).
MODULE_FLOORS: dict[str, int] = {}
# Who may start a simulated world: the demo and the simulators themselves (and the tests).
MAY_IMPORT_SIMULATORS = frozenset({"simulated", "demo"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every floor_agent module `path` imports, resolved to module names."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("floor_agent"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("floor_agent"):
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {m for m in found if m != name}


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH: dict[str, set[str]] = {
    name: {m for m in imports_of(path, name) if m in MODULES or m == "floor_agent"}
    for name, path in MODULES.items()
}


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def floor(module: str) -> int:
    if module in MODULE_FLOORS:
        return MODULE_FLOORS[module]
    name = part(module)
    if name not in FLOORS:
        raise AssertionError(f"{module}: its part {name!r} has no floor in tests/test_layers.py "
                             "FLOORS (and none in docs/ARCHITECTURE.md)")
    return FLOORS[name]


def test_every_module_has_a_floor() -> None:
    for module in MODULES:
        floor(module)


def test_no_import_runs_up_a_floor() -> None:
    upward = sorted(
        f"{source} (floor {floor(source)}) imports {target} (floor {floor(target)})"
        for source, targets in GRAPH.items() for target in targets
        if floor(target) > floor(source))
    assert not upward, "\n".join(upward)


def test_capabilities_do_not_import_each_other() -> None:
    across = sorted(
        f"{source} imports {target}" for source, targets in GRAPH.items() for target in targets
        if part(source) in CAPABILITIES and part(target) in CAPABILITIES
        and part(source) != part(target))
    assert not across, "\n".join(across)


def test_production_code_never_imports_a_simulator() -> None:
    leaks = sorted(
        f"{source} imports {target}" for source, targets in GRAPH.items() for target in targets
        if part(target) == "simulated" and part(source) not in MAY_IMPORT_SIMULATORS)
    assert not leaks, "\n".join(leaks)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the circles of a graph (components of more than one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_no_circle_of_modules() -> None:
    assert strongly_connected(GRAPH) == []


def test_no_circle_of_packages() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in GRAPH.items():
        packages[part(source)].update(part(t) for t in targets if part(t) != part(source))
        packages.setdefault(part(source), set())
    assert strongly_connected(packages) == []


@pytest.mark.parametrize("module, expected", [
    ("floor_agent.protocol.event", 1),
    ("floor_agent.config.loader", 2),
    ("floor_agent.roles.run", 9),
    ("floor_agent.cli", 9),
])
def test_floors_are_read_the_way_the_document_draws_them(module: str, expected: int) -> None:
    assert floor(module) == expected


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The test would fail on a real upward import: an audit module importing the collector."""
    source = tmp_path / "floor_agent" / "audit" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("from floor_agent.collector import core\nfrom . import y\n")
    (source.parent / "__init__.py").write_text("")
    found = imports_of(source, "floor_agent.audit.x")
    assert "floor_agent.collector.core" in found or "floor_agent.collector" in found
    assert floor("floor_agent.collector.core") > floor("floor_agent.audit.x")
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
