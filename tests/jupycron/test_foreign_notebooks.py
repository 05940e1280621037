"""Notebooks written elsewhere: their own kernel, odd metadata, SVG, expected errors, widgets.

The notebooks run once, in a module fixture, with a kernel pool of one (python3) on: a second
kernelspec ("py-other", an IPython kernel that sets a marker variable) is installed in a
temporary ``JUPYTER_PATH``, so a test can tell which kernel ran a notebook.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from jupycron import discovery, export, kernelspecs, runner, status
from jupycron.kernels import KernelPool
from jupycron.ledger import SqliteRunStore
from jupycron.models import RunStatus, Trigger
from jupycron.paths import output_html
from tests.support.chromium import chromium_driver

LINE = '# jupycron: {"every": "1 hour"}\n'
MARKER = "JUPYCRON_TEST_KERNEL"
PROBE = f"import os; print('kernel marker:', os.environ.get({MARKER!r}, 'none'))"
# An R notebook's kernel; a host that has IRkernel installed gets a name nobody installs.
MISSING = "ir" if "ir" not in kernelspecs.installed_kernels() else "ir-not-installed-here"
SVG_NO_XMLNS = ('<svg width="120" height="80" viewBox="0 0 120 80">'
                '<defs><rect id="r" width="120" height="80"/></defs>'
                '<use xlink:href="#r" fill="rgb(200,30,30)"/></svg>')


def _nb(cells: list[nbformat.NotebookNode], kernelspec: dict[str, str] | None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LINE + "pass"), *cells]
    if kernelspec is not None:
        nb.metadata["kernelspec"] = kernelspec
    return nb


def _code(src: str, **metadata: object) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata.update(metadata)  # unchecked: some tests need metadata nbformat refuses
    return cell


NOTEBOOKS = {
    "other_kernel_autorun.ipynb": _nb([_code(PROBE)],
                                      {"name": "py-other", "display_name": "Py other",
                                       "language": "python"}),
    "python3_autorun.ipynb": _nb([_code(PROBE)],
                                 {"name": "python3", "display_name": "Python 3", "language": "python"}),
    "nameless_kernelspec_autorun.ipynb": _nb([_code(PROBE)], {"language": "python"}),
    "r_autorun.ipynb": _nb([_code("library(ggplot2)")],
                           {"name": MISSING, "display_name": "R", "language": "R"}),
    # A cell whose metadata breaks nbformat's schema: the cells run, the export refuses it.
    "bad_metadata_autorun.ipynb": _nb([_code("print('ran')", tags="not-a-list")],
                                      None),
    "expected_error_autorun.ipynb": _nb([
        _code("raise ValueError('this one is expected')", tags=["raises-exception"]),
        _code("print('after the expected error')"),
    ], None),
    "svg_autorun.ipynb": _nb([_code(
        f"from IPython.display import display\ndisplay({{'image/svg+xml': {SVG_NO_XMLNS!r}}}, raw=True)")],
        None),
    "widgets_autorun.ipynb": _nb([_code(
        "import ipywidgets as widgets\n"
        "from ipywidgets import interact\n"
        "slider = widgets.IntSlider(value=7, min=0, max=10, description='Level')\n"
        "display(slider)\n"
        "@interact(x=5)\n"
        "def square(x):\n"
        "    print('square is', x * x)\n")], None),
}


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, jc):
    tmp = tmp_path_factory.mktemp("foreign")
    kernels = tmp / "jupyter" / "kernels" / "py-other"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Py other", "language": "python", "env": {MARKER: "py-other"}}))
    settings = jc.make_settings(tmp)
    for rel, nb in NOTEBOOKS.items():
        (settings.notebooks / rel).write_text(json.dumps(nb))
    history = SqliteRunStore(settings.output_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
        mp.delenv(MARKER, raising=False)
        with KernelPool(settings, 1).start() as pool:
            runs = {rel: runner.run_notebook(settings, discovery.read_notebook(settings.notebooks / rel, rel),
                                             Trigger.MANUAL, None, history, kernels=pool)
                    for rel in NOTEBOOKS}
    return {"settings": settings, "runs": runs, "history": history}


def _html(foreign, rel: str) -> str:
    return output_html(foreign["settings"].output_dir, rel).read_text(encoding="utf-8")


@pytest.mark.integration
def test_notebook_runs_with_the_kernel_it_names(foreign):
    run = foreign["runs"]["other_kernel_autorun.ipynb"]
    assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
    assert run.extra["kernel"] == "py-other"
    assert run.extra["timing"]["pooled"] is False  # the pool serves python3 only
    assert "kernel marker: py-other" in _html(foreign, "other_kernel_autorun.ipynb")


@pytest.mark.integration
def test_default_kernel_when_named_or_unnamed(foreign):
    for rel in ("python3_autorun.ipynb", "nameless_kernelspec_autorun.ipynb"):
        run = foreign["runs"][rel]
        assert run.status is RunStatus.SUCCESS, (rel, run.error_name, run.error_value)
        assert run.extra["kernel"] == "python3", rel
        assert "kernel marker: none" in _html(foreign, rel), rel
    # One of the two took the pooled python3 kernel.
    assert any(foreign["runs"][rel].extra["timing"]["pooled"]
               for rel in ("python3_autorun.ipynb", "nameless_kernelspec_autorun.ipynb"))


@pytest.mark.integration
def test_nameless_kernelspec_still_gets_its_page(foreign):
    run = foreign["runs"]["nameless_kernelspec_autorun.ipynb"]
    assert run.output == "nameless_kernelspec_autorun.html"
    assert "html_error" not in run.extra


@pytest.mark.integration
def test_kernel_not_installed_is_a_clear_failure(foreign):
    run = foreign["runs"]["r_autorun.ipynb"]
    assert run.status is RunStatus.FAILED
    assert run.error_name == "KernelNotInstalled"
    assert f"'{MISSING}'" in (run.error_value or "") and "python3" in (run.error_value or "")
    assert run.kernel is None  # nothing was started in another language
    assert run.output is None


@pytest.mark.integration
def test_export_failure_is_no_success(foreign):
    run = foreign["runs"]["bad_metadata_autorun.ipynb"]
    assert run.status is RunStatus.FAILED
    assert run.error_name == "ExportError"
    assert "not of type 'array'" in (run.error_value or "")
    assert run.output is None


@pytest.mark.integration
def test_export_and_kernel_failures_show_red_on_the_summary(foreign):
    from datetime import UTC, datetime

    settings = foreign["settings"]
    notebooks = [discovery.read_notebook(settings.notebooks / rel, rel)
                 for rel in ("bad_metadata_autorun.ipynb", "r_autorun.ipynb")]
    rows = status.build_rows(settings, notebooks, foreign["history"].load(), datetime.now(UTC))
    for row, name in zip(rows, ("ExportError", "KernelNotInstalled"), strict=True):
        assert row.state == "failed" and row.state.shape == "fail", row
        assert (row.reason or "").startswith(name), row.reason


@pytest.mark.integration
def test_raises_exception_tag_is_expected(foreign):
    run = foreign["runs"]["expected_error_autorun.ipynb"]
    assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
    assert run.extra["expected_errors"] == [1]
    html = _html(foreign, "expected_error_autorun.ipynb")
    assert "this one is expected" in html and "after the expected error" in html


@pytest.mark.integration
def test_widget_notebook_has_text_fallback(foreign):
    run = foreign["runs"]["widgets_autorun.ipynb"]
    assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
    html = _html(foreign, "widgets_autorun.ipynb")
    assert "IntSlider(value=7, description='Level', max=10)" in html
    # interact's controls as text; what the function prints goes to its Output widget, whose
    # state the offline page does not carry.
    assert "IntSlider(value=5, description='x', max=15, min=-5), Output())" in html


@pytest.mark.integration
def test_svg_without_xmlns_renders_in_chromium(foreign, tmp_path):
    run = foreign["runs"]["svg_autorun.ipynb"]
    assert run.status is RunStatus.SUCCESS, (run.error_name, run.error_value)
    page = output_html(foreign["settings"].output_dir, "svg_autorun.ipynb")
    with chromium_driver(tmp_path) as driver:
        driver.get(page.as_uri())
        sizes = driver.execute_script(  # type: ignore[attr-defined]
            "return Array.from(document.querySelectorAll('.jp-RenderedSVG img'))"
            ".map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
    assert sizes == [[True, 120, 80]]


def test_fix_svg_adds_only_missing_namespaces():
    fixed = export.fix_svg(SVG_NO_XMLNS)
    assert fixed.startswith(f'<svg xmlns="{export.SVG_NS}" xmlns:xlink="{export.XLINK_NS}" width=')
    assert export.fix_svg(fixed) == fixed
    plain = '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><circle r="1"/></svg>'
    assert export.fix_svg(plain) == plain
    assert export.fix_svg("not an svg") == "not an svg"


def test_normalise_kernelspec_fills_what_nbformat_requires():
    meta: dict[str, object] = {"kernelspec": {"language": "python"}}
    export.normalise_kernelspec(meta, "python3")
    assert meta["kernelspec"] == {"language": "python", "name": "python3", "display_name": "python3"}
    kept = {"kernelspec": {"name": "ir", "display_name": "R"}}
    export.normalise_kernelspec(kept, "python3")
    assert kept["kernelspec"] == {"name": "ir", "display_name": "R"}


def test_choose_kernel(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    assert kernelspecs.choose_kernel({}, "python3") == kernelspecs.KernelChoice("python3", False)
    assert kernelspecs.choose_kernel({"kernelspec": {"language": "python"}}, "python3").named is False
    assert kernelspecs.choose_kernel({"kernelspec": {"name": "Python3"}}, "python3").name == "python3"
    with pytest.raises(kernelspecs.KernelNotInstalled, match=f"'{MISSING}'"):
        kernelspecs.choose_kernel({"kernelspec": {"name": MISSING}}, "python3")
    Path(tmp_path, "kernels", MISSING).mkdir(parents=True)
    Path(tmp_path, "kernels", MISSING, "kernel.json").write_text(
        json.dumps({"argv": ["R"], "display_name": "R", "language": "R"}))
    assert kernelspecs.choose_kernel({"kernelspec": {"name": MISSING}}, "python3").name == MISSING
