"""The shape of the code, checked: no import cycles, each axis of the cluster tools behind its
interface, and no question of "which manager is it?" outside the managers.

Imports are read from the source (every ``import`` statement, at module level or inside a
function), not from what happens to be loaded, so a lazy import counts like any other.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("replication", "service", "loadtests")
# The composition root: the one module that knows every driver and every manager.
COMPOSITION_ROOT = "replication.cluster"
# Asking which manager a cluster has: a comparison with a manager kind or a type check on
# a manager class, or the old flags that did it.
MANAGER_TEST = re.compile(
    r"(\bis|\bis not|==|!=)\s+Manager\.\w+|Manager\.\w+\s+(is\b|==|!=|in\b)"
    r"|managed_by_patroni|patroni_in_containers"
    r"|isinstance\([^)]*,\s*\(?\s*(NativeManager|LocalPatroniManager|ContainerPatroniManager)"
    r"|\.manager\s+(is|==|!=)\s"
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project modules ``path`` imports (``from a import b`` counts as ``a.b`` when that
    is a module, else as ``a``)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                yield name


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {
        name: {target for target in imported(path, modules) if target != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def importers_of(graph: dict[str, set[str]], prefix: str) -> set[str]:
    return {
        name
        for name, targets in graph.items()
        if not name.startswith(prefix) and any(t.startswith(prefix) for t in targets)
    }


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("service", "replication"),  # the service knows nothing of how nodes are built
        ("service", "loadtests"),
        ("replication.drivers", "replication.managers"),  # where nodes run ≠ who moves
        ("replication.managers", "replication.cluster"),  # only the root pairs them
        ("replication.managers", "replication.cli"),
        ("replication.drivers", "replication.cluster"),
        ("replication.managers.native", "replication.managers.patroni"),
        ("replication.managers.patroni", "replication.managers.native"),
    ],
)
def test_a_layer_does_not_import_the_one_above(lower: str, upper: str) -> None:
    graph = import_graph()
    offenders = sorted(
        name
        for name, targets in graph.items()
        if (name == lower or name.startswith(lower + "."))
        and any(t == upper or t.startswith(upper + ".") for t in targets)
    )
    assert offenders == [], f"{lower} must not import {upper}: {offenders}"


def test_only_the_composition_root_knows_every_manager() -> None:
    graph = import_graph()
    native = importers_of(graph, "replication.managers.native")
    patroni = importers_of(graph, "replication.managers.patroni")
    both = sorted((native & patroni) - {COMPOSITION_ROOT})
    assert both == [], f"only {COMPOSITION_ROOT} may pick among the managers: {both}"


def test_nobody_asks_which_manager_it_is_outside_the_managers() -> None:
    offenders = []
    for name, path in project_modules().items():
        if name.startswith("replication.managers") or name == COMPOSITION_ROOT:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if MANAGER_TEST.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)


def test_the_manager_test_pattern_sees_what_it_forbids() -> None:
    for line in (
        "if state.manager is Manager.PATRONI:",
        "if cluster.managed_by_patroni:",
        "if isinstance(cluster.manager, LocalPatroniManager):",
        "if cluster.manager == other:",
        "chosen = manager if recorded is Manager.NATIVE else None",
    ):
        assert MANAGER_TEST.search(line), line
    for line in (
        "promotes_by_itself = manager_class(chosen)",
        "manager: Manager = Manager.NATIVE",  # naming a kind is not asking which one it is
    ):
        assert not MANAGER_TEST.search(line), line
