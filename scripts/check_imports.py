"""Fail on an import cycle among groundwire's modules, or on an import across a layer.

Why a script of our own: the rule is short, it has to see imports inside functions (where a
cycle hides behind "imported here to avoid a cycle"), and it must read
the four distributions' trees at once. It parses every ``.py`` file under the
source roots with :mod:`ast` (nothing is imported or run) and builds the graph of
``groundwire`` modules.

Cycles: every import counts (module level and inside functions), except those under
``if TYPE_CHECKING:``, which never run. Importing ``a.b.c`` also runs ``a`` and ``a.b``, so an
import is an edge to the module and to its enclosing packages (not to the importer's own).

Layers (the most specific prefix of :data:`LAYERS` names a module's layer):

- ``contract`` (``groundwire.v1``) and ``sdk`` import neither server, clients, tools nor
  testing;
- ``clients`` imports no server, tools or testing;
- ``server`` imports no tools or testing;
- ``tools`` import no server; ``testing`` imports no server or tools.

A layer check counts every import, ``TYPE_CHECKING`` ones too (a type is a dependency of the
distribution). Tests are not scanned: they may use every layer.

Usage: ``python scripts/check_imports.py [ROOT ...]`` (default: the repository's source roots
that exist). Exit status 0 when clean, 1 with one line per cycle and per violation.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
#: Where ``groundwire`` packages live (each holds a ``groundwire/`` namespace folder).
SOURCE_ROOTS = ("server", "sdks/python", "tools", "testing")

#: Module name prefix → layer; the longest matching prefix wins. A layer is a distribution
#: (server: groundwire; sdk and contract: groundwire-sdk; tools; testing), except that the
#: server's distribution holds two layers: the client layer and the server over it.
LAYERS: Mapping[str, str] = {
    "groundwire.v1": "contract",
    "groundwire.sdk": "sdk",
    "groundwire.clients": "clients",
    "groundwire.server": "server",
    # The owner socket's admin contract: the server's own, never the SDK's.
    "groundwire.internal": "server",
    "groundwire.tools": "tools",
    "groundwire.testing": "testing",
}

#: Layer → the layers it may not import.
FORBIDDEN: Mapping[str, frozenset[str]] = {
    "contract": frozenset({"sdk", "clients", "server", "tools", "testing"}),
    "sdk": frozenset({"clients", "server", "tools", "testing"}),
    "clients": frozenset({"server", "tools", "testing"}),
    "server": frozenset({"tools", "testing"}),
    "tools": frozenset({"server"}),
    "testing": frozenset({"server", "tools"}),
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it stands, and whether it only serves typing."""

    importer: str
    target: str
    path: Path
    line: int
    typing_only: bool


def layer_of(module: str) -> str | None:
    """The layer of ``module`` (the longest prefix in :data:`LAYERS`), or None."""
    best: str | None = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return LAYERS[best] if best is not None else None


def find_modules(roots: Iterable[Path]) -> dict[str, Path]:
    """Module name → file, for every ``.py`` under ``<root>/groundwire``."""
    modules: dict[str, Path] = {}
    for root in roots:
        for path in sorted((root / "groundwire").rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST, typing_only: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement below ``tree`` and whether only ``TYPE_CHECKING`` runs it."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, typing_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _statements_of(child, True)
            for child in node.orelse:
                yield from _statements_of(child, typing_only)
        else:
            yield from _statements(node, typing_only)


def _statements_of(node: ast.stmt, typing_only: bool) -> Iterator[tuple[ast.stmt, bool]]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, typing_only
    else:
        yield from _statements(node, typing_only)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    """The ``groundwire`` modules ``module`` imports (a ``from package import name`` names
    the submodule when ``name`` is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node, typing_only in _statements(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else base)
        for target in targets:
            if target == "groundwire" or target.startswith("groundwire."):
                found.append(Import(module, target, path, node.lineno, typing_only))
    return found


def _known(target: str, modules: Mapping[str, Path]) -> str | None:
    """The scanned module ``target`` names, or its closest scanned enclosing package."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(imports: Iterable[Import], modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module → the modules importing it runs (its target and the target's packages, less
    the importer's own packages, which are running already)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for found in imports:
        if found.typing_only:
            continue
        target = _known(found.target, modules)
        own = {found.importer.rsplit(".", n)[0] for n in range(found.importer.count(".") + 1)}
        while target:
            if target not in own and target != found.importer:
                graph[found.importer].add(target)
            target = _known(target.rpartition(".")[0], modules) if "." in target else None
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted,
    listed in order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        # Iterative Tarjan: (node, iterator over its successors).
        work: list[tuple[str, Iterator[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(sorted(graph[start]))))
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def cycle_path(component: Sequence[str], graph: Mapping[str, set[str]]) -> list[str]:
    """One closed path through a cycle's modules, for the message (breadth-first from the
    component's first module back to itself)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    path = [start]
                    while node != start:
                        path.append(node)
                        node = previous[node]
                    return [start, *reversed(path[1:]), start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    return [start]


def violations(imports: Iterable[Import], root: Path) -> list[str]:
    """One line per import that crosses a layer it may not (once per statement and target)."""
    lines: list[str] = []
    for found in imports:
        source, target = layer_of(found.importer), layer_of(found.target)
        if source is None or target is None or target not in FORBIDDEN.get(source, ()):
            continue
        where = found.path.relative_to(root) if found.path.is_relative_to(root) else found.path
        crossing = f"{found.importer} ({source}) imports {found.target} ({target})"
        line = f"{where}:{found.line}: layer: {crossing}"
        if line not in lines:
            lines.append(line)
    return lines


def check(roots: Sequence[Path], display_root: Path) -> list[str]:
    """Every problem in the trees below ``roots``, one line each (empty when clean)."""
    modules = find_modules(roots)
    imports = [found for name, path in modules.items() for found in imports_of(name, path, modules)]
    problems = violations(imports, display_root)
    graph = import_graph(imports, modules)
    for component in cycles(graph):
        path = cycle_path(component, graph)
        rest = [m for m in component if m not in path]
        also = f" (the cycle also holds {', '.join(rest)})" if rest else ""
        problems.append(f"cycle of {len(component)} modules: {' -> '.join(path)}{also}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Check the roots; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="*", type=Path, help="source roots (default: ours)")
    args = parser.parse_args(argv)
    roots = args.roots or [REPOSITORY / r for r in SOURCE_ROOTS if (REPOSITORY / r).is_dir()]
    modules = find_modules(roots)
    problems = check(roots, Path.cwd())
    for line in problems:
        print(line)
    if problems:
        print(f"import check: {len(problems)} problem(s) in {len(modules)} modules")
        return 1
    print(f"import check: {len(modules)} modules, no cycle, no layer crossed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
