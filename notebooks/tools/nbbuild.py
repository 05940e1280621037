"""What every notebook builder shares: a notebook from its cells with stable cell ids, and
the command line that writes the notebooks or (``--check``) fails when one is stale."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1]
Builders = dict[str, Callable[[], list]]


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding does not churn the diff
        cell["id"] = f"{Path(name).stem[:40]}-{i}"
    return nb


def main(builders: Builders, script: str, description: str, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true", help="fail if a committed notebook is stale")
    args = ap.parse_args(argv)
    stale = []
    for name, cells in builders.items():
        nb = build(name, cells())
        nbformat.validate(nb)
        text = nbformat.writes(nb) + "\n"
        path = NOTEBOOKS / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale notebooks (rebuild with notebooks/tools/{script}):", *stale)
        return 1
    return 0
