"""Import cycles among the modules of the packages under src/ (read with ``ast``, nothing is
imported).

Every ``import`` counts, at module level or inside a function (a lazy import is still a
dependency, and one that goes back up is a cycle), except those under
``if TYPE_CHECKING:``, which never run. ``from pkg import name`` depends on ``pkg.name`` when
that is a module, else on ``pkg`` itself. Importing ``a.b`` does not count as importing the
package ``a`` (its ``__init__``); that would make every package with re-exports a cycle.

A cycle is a strongly connected component of two or more modules (or a module importing
itself); each is printed as one line of its modules, sorted.

Usage: python scripts/import_graph.py [PACKAGE ...] [--src DIR] [--edges]
  (default: every package under src/); exit status 1 when there is a cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(src: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of ``package`` (a folder with ``__init__.py`` under src)."""
    root = src / package
    if not (root / "__init__.py").is_file():
        raise SystemExit(f"{root} is not a package (no __init__.py)")
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(not p.isidentifier() for p in parts):
            continue  # not importable (e.g. a template folder with a dash)
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def dependencies(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules in ``known`` that ``module`` (source ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            targets: Iterable[str] = (a.name for a in node.names)
        else:
            base = _resolve(module, is_package, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            # "import a.b.c" of a name that is not a module: its nearest module
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.add(target)
            elif target == module and isinstance(node, ast.ImportFrom) and node.level == 0:
                out.add(target)  # a module importing itself by name
    return out


def graph(src: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    files: dict[str, Path] = {}
    for package in packages:
        files.update(module_files(src, package))
    known = set(files)
    return {m: dependencies(m, p, known) for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
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
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", help="packages under --src (default: all)")
    parser.add_argument("--src", type=Path, default=SRC)
    parser.add_argument("--edges", action="store_true", help="also print every edge")
    args = parser.parse_args(argv)
    packages = args.packages or sorted(p.parent.name for p in args.src.glob("*/__init__.py"))
    edges = graph(args.src, packages)
    if args.edges:
        for m in sorted(edges):
            for d in sorted(edges[m]):
                print(f"{m} -> {d}")
    found = cycles(edges)
    for component in found:
        print("cycle: " + " <-> ".join(component))
    print(f"{len(edges)} modules in {', '.join(packages)}: "
          f"{len(found)} import cycle{'s' if len(found) != 1 else ''}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
