"""The import rules of DESIGN.md, checked on the source: mgpu_core imports nothing above it,
the master, the node agent and the clients never import one another, and no package has an
import cycle. Function-local imports count too: one that only dodges a cycle at import time
still ties the two modules together (STYLE.md's anti-pattern 1)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = "mgpu_core"
UPPER = ("mgpu_server", "mgpu_node", "mgpu_client")
PACKAGES = (CORE, *UPPER)


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the four packages."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            parts = list(path.relative_to(SRC).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _resolve(name: str) -> str | None:
    """The innermost src module that ``import name`` loads, or None outside src."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(module: str, tree: ast.Module) -> Iterator[str]:
    """Every dotted name ``module`` imports, at any depth (functions, TYPE_CHECKING blocks)."""
    is_package = MODULES[module].name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from pkg import sub` imports the submodule pkg.sub when there is one.
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in MODULES else base


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = {_resolve(name) for name in _imported_names(module, tree)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


GRAPH = _import_graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
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


def _package(module: str) -> str:
    return module.partition(".")[0]


def test_the_graph_sees_every_package_and_local_imports() -> None:
    # Guards the checks below against passing on an empty or half-read graph.
    assert {_package(m) for m in MODULES} == set(PACKAGES)
    assert "mgpu_core.errors" in GRAPH["mgpu_client.exits"]
    # A function-local import (srun.run imports steps inside the function).
    assert "mgpu_client.steps" in GRAPH["mgpu_client.srun"]


def test_core_imports_nothing_above_it() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if _package(module) == CORE
        for target in targets
        if _package(target) in UPPER
    )
    assert wrong == []


def test_master_node_and_clients_never_import_one_another() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if _package(module) in UPPER
        for target in targets
        if _package(target) in UPPER and _package(target) != _package(module)
    )
    assert wrong == []


# One test per package, so that one package's cycle can be marked xfail while it is removed
# without hiding the others'.
@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    cycles = [c for c in _cycles(GRAPH) if any(_package(m) == package for m in c)]
    assert cycles == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


# The master's layers, top to bottom (docs/architecture.md, CONTRIBUTING.md): a module may
# import its own layer and the ones below it, never one above.
SERVER_LAYERS = ("net", "api", "state", "storage", "records", "scheduling")


def _server_layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "mgpu_server" or len(parts) < 3 or parts[1] not in SERVER_LAYERS:
        return None
    return SERVER_LAYERS.index(parts[1])


def test_master_layers_import_downwards_only() -> None:
    layered = [m for m in GRAPH if _server_layer(m) is not None]
    assert {m.split(".")[1] for m in layered} == set(SERVER_LAYERS)
    upward = sorted(
        (module, target)
        for module in layered
        for target in GRAPH[module]
        if (layer := _server_layer(target)) is not None and layer < (_server_layer(module) or 0)
    )
    assert upward == [], f"imports running back up the master's layers: {upward}"
    # Below the request side, nothing awaits or touches a socket.
    for module in layered:
        if module.split(".")[1] in ("state", "scheduling", "records", "storage"):
            tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
            io = {n.partition(".")[0] for n in _imported_names(module, tree)}
            assert not io & {"asyncio", "socket", "ssl", "selectors"}, module
            assert not any(isinstance(n, ast.Await) for n in ast.walk(tree)), module
