"""Dependencies point one way (docs/architecture.md): the import graph of ``drwatch``, built from the source with
``ast`` (every import at any level: module top, inside functions, under ``TYPE_CHECKING``), has no cycle, and no
module imports a layer above its own."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "drwatch"

# The layers, lowest first: a module may import its own layer and the layers below it, never one above.
# A module belongs to the layer of the longest package prefix that names it (every module must have one; the
# root package ``drwatch``, which holds the version, is named by itself only).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("drwatch", "drwatch.core")),
    ("io", ("drwatch.formats", "drwatch.storage", "drwatch.inference")),  # formats, storage, the inference worker
    ("validators", ("drwatch.validators",)),
    ("config", ("drwatch.config", "drwatch.cluster.config")),  # above the validators: it holds their configs
    ("store", ("drwatch.store",)),
    ("state", ("drwatch.state",)),
    ("engine", ("drwatch.engine", "drwatch.cluster")),  # the scheduler or the cluster engine, the runner
    ("exposition", ("drwatch.metrics", "drwatch.http", "drwatch.reporting")),  # projections of the stored state
    ("app", ("drwatch.engine.daemon", "drwatch.cli", "drwatch.__main__")),  # the wiring: everything below
)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({module_path(self.source)}:{self.line})"


def module_names() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = module_names()


def module_path(name: str) -> str:
    return str(MODULES[name].relative_to(PACKAGE.parent.parent))


def _known(name: str) -> str:
    """The module an imported name lives in: the longest prefix that is a drwatch module."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(name: str) -> Iterator[Edge]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` the package itself
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for target in targets:
            if target == "drwatch" or target.startswith("drwatch."):
                resolved = _known(target)
                if resolved != name:
                    yield Edge(name, resolved, node.lineno)


GRAPH: dict[str, list[Edge]] = {name: list(imports_of(name)) for name in MODULES}


def layer_of(name: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = name == prefix or (prefix != "drwatch" and name.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        where = module_path(name) if name in MODULES else "not a module"
        raise LookupError(f"{name} ({where}) is in no layer: add its package to LAYERS and docs/architecture.md")
    return best[1]


def find_cycle(graph: dict[str, list[Edge]]) -> list[Edge] | None:
    """One cycle of the graph as its edges, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path: list[Edge] = []
        stack: list[tuple[str, Iterator[Edge]]] = [(root, iter(graph[root]))]
        state[root] = 1
        while stack:
            node, edges = stack[-1]
            edge = next(edges, None)
            if edge is None:
                state[node] = 2
                stack.pop()
                if path:
                    path.pop()
                continue
            if state.get(edge.target) == 1:  # back on the path: path[i] leaves stack[i]
                start = next(i for i, (on_path, _) in enumerate(stack) if on_path == edge.target)
                return [*path[start:], edge]
            if edge.target not in state:
                state[edge.target] = 1
                path.append(edge)
                stack.append((edge.target, iter(graph[edge.target])))
    return None


def test_the_graph_is_read() -> None:
    """The graph is the real one: known edges of each kind of import are found."""
    edges = {(e.source, e.target) for es in GRAPH.values() for e in es}
    assert ("drwatch.engine.runner", "drwatch.validators.base") in edges  # top-level import
    assert ("drwatch.validators.copies.replica", "drwatch.validators.copies.verification") in edges
    assert ("drwatch.config.references", "drwatch.config.web") in edges  # inside a function
    assert ("drwatch.validators.base", "drwatch.validators.groups") in edges  # under TYPE_CHECKING
    assert ("drwatch.metrics.collector", "drwatch.validators") in edges  # a name from a package's __init__
    assert len(MODULES) > 100


def test_no_import_cycles() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle:\n  " + "\n  ".join(str(e) for e in cycle or [])


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = sorted({f"{e}: {LAYERS[layer_of(e.source)][0]} imports {LAYERS[layer_of(e.target)][0]}"
                     for edges in GRAPH.values() for e in edges if layer_of(e.target) > layer_of(e.source)})
    assert not upward, "imports against the layers (docs/architecture.md):\n  " + "\n  ".join(upward)


@pytest.mark.parametrize("graph, expected", [
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
    ({"a": ["b"], "b": ["c"], "c": ["b"]}, ["b", "c", "b"]),
    ({"a": ["b", "c"], "b": ["c"], "c": []}, None),
    ({"a": ["a2"], "a2": [], "b": ["a"]}, None),
])
def test_find_cycle_reports_the_cycle(graph: dict[str, list[str]], expected: list[str] | None) -> None:
    edges = {s: [Edge(s, t, 1) for t in ts] for s, ts in graph.items()}
    cycle = find_cycle(edges)
    assert (None if cycle is None else [cycle[0].source, *(e.target for e in cycle)]) == expected


def test_layers_cover_every_module_and_forbid_what_the_design_forbids() -> None:
    for name in MODULES:
        layer_of(name)  # raises for a module outside the table
    with pytest.raises(LookupError):
        layer_of("drwatch.newpackage")  # the root package is no catch-all
    below = {name: layer_of(f"drwatch.{name}") for name in ("core", "formats", "storage", "validators.base")}
    for above in ("config.model", "store.base", "state.snapshot", "engine.runner", "metrics.collector",
                  "http.server", "cli.main"):
        assert all(layer_of(f"drwatch.{above}") > layer for layer in below.values()), above
