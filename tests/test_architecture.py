"""The shape of the code (issue 13 §4): no import cycles, jupycron without the domain library,
safefiles a leaf on the standard library only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

import pytest

from tests.support.services import REPO

sys.path.insert(0, str(REPO / "scripts"))
import import_graph  # noqa: E402

SRC = REPO / "src"

FORBIDDEN_IN_JUPYCRON = ("ooniutils", "pandas", "chdb", "altair")


def _cycles(*packages: str) -> list[list[str]]:
    return import_graph.cycles(import_graph.graph(SRC, packages))


def test_the_cycle_finder_finds_a_cycle_and_a_lazy_import(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import p.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import e\n")
    (pkg / "e.py").write_text("from .d import x\n")
    assert import_graph.cycles(import_graph.graph(tmp_path, ["p"])) == [["p.a", "p.b", "p.sub.c"]]
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "import_graph.py"),
                          "--src", str(tmp_path), "p"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "cycle: p.a <-> p.b <-> p.sub.c" in res.stdout
    (pkg / "sub" / "c.py").write_text("import json\n")
    assert import_graph.main(["--src", str(tmp_path), "p"]) == 0


@pytest.mark.parametrize("package", ["jupycron", "ooniutils", "safefiles"])
def test_no_import_cycles(package):
    assert _cycles(package) == []


def test_no_import_cycle_across_the_packages():
    assert _cycles("jupycron", "ooniutils", "safefiles") == []


_IMPORT_ALL = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import jupycron
    forbidden = %r
    culprits = {}
    for info in pkgutil.walk_packages(jupycron.__path__, "jupycron."):
        if info.name.endswith(".__main__"):
            continue  # runs the CLI when imported
        before = {m.split(".")[0] for m in sys.modules}
        importlib.import_module(info.name)
        new = sorted({m.split(".")[0] for m in sys.modules} - before & set(forbidden))
        if new:
            culprits[info.name] = new
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(forbidden))
    print(json.dumps({"loaded": loaded, "culprits": culprits}))
""")


def _direct_ooniutils_importers() -> set[str]:
    out = set()
    for module, path in import_graph.module_files(SRC, "jupycron").items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n.split(".")[0] == "ooniutils" for n in names):
                out.add(module)
    return out


def test_jupycron_imports_without_the_domain_library():
    """Every jupycron module, imported in a fresh interpreter, loads none of ooniutils, pandas,
    chDB or Altair (so jupycron installs and runs without them)."""
    res = subprocess.run([sys.executable, "-c", _IMPORT_ALL % (FORBIDDEN_IN_JUPYCRON,)],
                         capture_output=True, text=True, timeout=240, cwd=REPO)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.splitlines()[-1])
    assert report == {"loaded": [], "culprits": {}}
    assert _direct_ooniutils_importers() == set()


def test_safefiles_imports_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for module, path in import_graph.module_files(SRC, "safefiles").items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            outside = [t for t in tops if t not in stdlib and t != "safefiles"]
            assert not outside, f"{module} imports {outside} (safefiles must stay a stdlib leaf)"
    # -S: no site-packages at all, so anything beyond the standard library fails to import
    res = subprocess.run([sys.executable, "-S", "-c",
                          f"import sys; sys.path.insert(0, {str(SRC)!r});"
                          "import safefiles, safefiles.atomic, safefiles.locks, safefiles.stamps;"
                          "print(sorted({m.split('.')[0] for m in sys.modules}"
                          " - set(sys.stdlib_module_names) - {'__main__'}))"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['safefiles']"
