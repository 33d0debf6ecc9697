"""The package's import graph: layers import downwards only, and no module imports in a circle.

Every module under ``src/astrorestore`` is parsed with ``ast`` and every import of our own code
counts, including the ones inside functions (a lazy import hides a dependency from the reader,
not from the architecture). The layer order is the one the architecture page describes; a
module may import its own layer or any lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "astrorestore"
SOURCE = Path(__file__).resolve().parents[2] / "src" / PACKAGE

# Low -> high. A top-level module or package of astrorestore maps to the layer that names it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "checks", "filters", "colour", "medians", "elementwise"),
    ("io",),
    ("data",),
    ("metrics", "nets", "losses", "diffusion"),
    ("postprocess",),
    ("evaluation",),
    ("modules",),
    ("checkpoint",),
    ("callbacks",),
    ("inference",),
    ("train", "cli", "sweep_report", "sweep_review"),
)
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}

# Imports the layer order alone allows but the architecture does not: training must not reach
# into inference (both share the checkpoint module instead); callbacks are training hooks that
# nothing but the entry modules uses (the checkpoint format lives in ``checkpoint``); a network
# maps tensors to tensors without knowing the data package; a loss does not reach into a network
# (the noise model both use sits with the normaliser).
FORBIDDEN: dict[tuple[str, str], str] = {
    ("astrorestore.train", "astrorestore.inference"): "share it through a lower layer",
    ("astrorestore.inference", "astrorestore.callbacks"): "read checkpoints through checkpoint",
    ("astrorestore.nets", "astrorestore.data"): "pass numbers or tensors in, or move it lower",
    ("astrorestore.losses", "astrorestore.nets"): "move the shared piece to a lower layer",
}
# PENDING: known shortcuts and circles awaiting a fix; each entry needs an issue. Empty now.
PENDING_SHORTCUTS: set[tuple[str, str]] = set()
PENDING_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of our own code in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule when there is one, else pkg itself.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found += [(t, node.lineno) for t in targets if t == PACKAGE or t.startswith(PACKAGE + ".")]
    return found


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, known):
            # ``import astrorestore.a.b`` of a name that is not a module: its nearest module.
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None


def _where(module: str, line: int) -> str:
    return f"{_modules()[module].relative_to(SOURCE.parents[1])}:{line}"


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
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
                    components.append(sorted(component))
    return components


def test_every_top_level_module_has_a_layer() -> None:
    names = {m.split(".")[1] for m in _modules() if "." in m}
    missing = sorted(names - set(LAYER_OF))
    assert not missing, f"give these a layer in LAYERS (and on the architecture page): {missing}"


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    graph = _graph()
    wrong = []
    for module, edges in graph.items():
        for target, line in edges.items():
            low, high = _layer(module), _layer(target)
            if low is None or high is None or high <= low:
                continue
            wrong.append(
                f"{_where(module, line)}: {module} ({LAYERS[low][0]} layer) imports {target} "
                f"({LAYERS[high][0]} layer, higher)"
            )
    assert not wrong, "imports that run upwards:\n" + "\n".join(wrong)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _shortcuts(graph: dict[str, dict[str, int]]) -> dict[tuple[str, str], str]:
    found = {}
    for module, edges in graph.items():
        for target, line in edges.items():
            for (source, forbidden), fix in FORBIDDEN.items():
                if _within(module, source) and _within(target, forbidden):
                    found[(module, target)] = (
                        f"{_where(module, line)}: {module} imports {target} ({fix})"
                    )
    return found


def test_no_forbidden_shortcut() -> None:
    wrong = [m for pair, m in _shortcuts(_graph()).items() if pair not in PENDING_SHORTCUTS]
    assert not wrong, "imports the architecture forbids:\n" + "\n".join(wrong)


def test_pending_entries_still_exist() -> None:
    # A stale allowlist entry would hide a later import of the same pair: drop it instead.
    graph = _graph()
    stale = [pair for pair in PENDING_SHORTCUTS if pair not in _shortcuts(graph)]
    cycles = {frozenset(c) for c in _cycles(graph)}
    stale += [sorted(c) for c in PENDING_CYCLES if c not in cycles]
    assert not stale, f"remove these from the PENDING sets, they are fixed: {stale}"


def test_no_import_cycle() -> None:
    graph = _graph()
    found = [c for c in _cycles(graph) if frozenset(c) not in PENDING_CYCLES]
    messages = []
    for component in found:
        members = set(component)
        lines = [
            f"  {_where(m, line)}: {m} imports {t}"
            for m in component
            for t, line in graph[m].items()
            if t in members
        ]
        messages.append("circle between " + ", ".join(component) + ":\n" + "\n".join(lines))
    assert not messages, "\n".join(messages)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from astrorestore.inference.restorer import Restorer\n",
            "astrorestore.inference.restorer",
        ),
        ("def f():\n    import astrorestore.modules.base\n", "astrorestore.modules.base"),
        ("from ..modules import base\n", "astrorestore.modules.base"),
    ],
)
def test_imports_are_found_inside_functions_and_relative(
    tmp_path: Path, source: str, expected: str
) -> None:
    # The checker itself: a lazy or relative import must not slip past it (parsed as if it
    # were io/images.py, so the relative import resolves against astrorestore.io).
    fake = tmp_path / "images.py"
    fake.write_text(source)
    targets = [t for t, _ in _imports("astrorestore.io.images", fake, set(_modules()))]
    assert expected in targets, targets
