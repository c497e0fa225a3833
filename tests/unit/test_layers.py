"""The package's layers, read from its source: no import cycle, and every import goes downward.

Every ``import`` counts, wherever it is: at module level, inside a function (a function-local import
that only hides a cycle is still a cycle) and under ``TYPE_CHECKING``. The layers, top to bottom:

    __init__ (the public API)
    integrations: cli/, mcp/, autogen/, frameworks/, __main__
    facades:      executor, pool, workspace, gc, settings
    _exec/:       protocol, languages, results, tar, transfer, dispatcher, session (+ _pod/, package data)
    _cluster/:    runner, kubectl, retry, labels, models, manifest, netpol, pod, claim_manifest,
                  claim_models, claim, gc
    base:         errors, boundary, defaults, _version

A module may import its own layer or any layer below it, never one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kubectl_executor

PKG = "kubectl_executor"
ROOT = Path(kubectl_executor.__file__).parent

LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "boundary", "defaults", "_version"}),
    ("cluster", {"_cluster"}),
    ("exec", {"_exec"}),
    ("facades", {"executor", "pool", "workspace", "gc", "settings"}),
    ("integrations", {"cli", "mcp", "autogen", "frameworks", "__main__"}),
    ("api", {""}),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        if "_pod" in path.relative_to(ROOT).parts:  # in-pod scripts: stdlib only, run by the image
            continue
        found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from x import y`` counts y when y is a module)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import module` depends on the module; `from pkg import name` on pkg itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def layer_of(name: str) -> int:
    rel = name[len(PKG) + 1 :] if name != PKG else ""
    head = rel.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if head in members:
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_reader_sees_every_module() -> None:
    edges = graph()
    assert {
        "kubectl_executor._cluster.runner",
        "kubectl_executor._exec.session",
        "kubectl_executor.cli",
    } <= set(edges)
    # relative, absolute, function-local and `from . import module` forms are all read
    assert "kubectl_executor._cluster.netpol" in edges["kubectl_executor._cluster.pod"]
    assert "kubectl_executor._cluster.runner" in edges["kubectl_executor._cluster.kubectl"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    assert find_cycle(graph()) is None


def test_every_module_is_in_a_layer() -> None:
    for name in graph():
        layer_of(name)


def test_imports_only_go_down_the_layers() -> None:
    upward = sorted(
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(name)
    )
    assert upward == []


def test_a_long_module_says_why_at_its_top() -> None:
    """The issue's bound: a module over ~600 lines states the reason in its docstring."""
    unexplained = sorted(
        name
        for name, path in modules().items()
        if len(path.read_text().splitlines()) > 650
        and "600 lines" not in (ast.get_docstring(ast.parse(path.read_text())) or "")
    )
    assert unexplained == []
