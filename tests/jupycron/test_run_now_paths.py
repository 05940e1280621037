"""`jupycron run-now PATH`: the paths an operator types name the notebook the scan knows.

Before: ``run-now ./x_autorun.ipynb`` ran the notebook but recorded the run under
``./x_autorun.ipynb``, a name the scheduler never lists (the notebook stayed "never run"
and the ledger grew an orphan); ``run-now nb/x_autorun.ipynb`` from the config's folder
(what a shell completes) was "no notebook"; an absolute path inside the folder was refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jupycron import cli, scheduler
from jupycron.cli import _notebook_rel


def _nb(folder: Path, rel: str) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dots=st.lists(st.sampled_from(["./", "/", ""]), min_size=1, max_size=3))
def test_a_path_with_dots_or_doubled_slashes_resolves_to_the_scanned_name(settings, dots):
    _nb(settings.notebooks, "sub/x_autorun.ipynb")
    rel = "".join(dots) + "sub/" + "".join(dots) + "x_autorun.ipynb"
    if rel.startswith("/"):
        rel = "." + rel
    assert scheduler.resolve_notebook(settings, rel).path == "sub/x_autorun.ipynb"


def test_a_path_from_the_working_directory_or_absolute_inside_the_folder(settings, monkeypatch):
    path = _nb(settings.notebooks, "sub/x_autorun.ipynb")
    monkeypatch.chdir(settings.notebooks.parent)
    from_cwd = f"{settings.notebooks.name}/sub/x_autorun.ipynb"
    assert _notebook_rel(settings.notebooks, from_cwd) == "sub/x_autorun.ipynb"
    assert _notebook_rel(settings.notebooks, str(path)) == "sub/x_autorun.ipynb"
    assert _notebook_rel(settings.notebooks, "sub/x_autorun.ipynb") == "sub/x_autorun.ipynb"
    monkeypatch.chdir(path.parent)
    assert _notebook_rel(settings.notebooks, "x_autorun.ipynb") == "sub/x_autorun.ipynb"


def test_a_path_outside_the_folder_is_still_refused(settings, monkeypatch):
    outside = _nb(settings.notebooks.parent, "elsewhere/y_autorun.ipynb")
    assert _notebook_rel(settings.notebooks, str(outside)) == str(outside)
    res = CliRunner().invoke(cli.main, ["--notebooks", str(settings.notebooks), "--output",
                                        str(settings.output_dir), "run-now", str(outside)])
    assert res.exit_code == 2 and "relative" in res.output


@pytest.mark.integration
def test_run_now_with_a_dot_path_records_under_the_scanned_name(settings, jc, monkeypatch):
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks)
    monkeypatch.chdir(settings.notebooks)
    base = ["--notebooks", str(settings.notebooks), "--output", str(settings.output_dir), "run-now"]
    res = CliRunner().invoke(cli.main, [*base, "./ok_autorun.ipynb"])
    assert res.exit_code == 0, res.output
    from jupycron.ledger import open_store

    store = open_store(settings)
    try:
        names = set(store.load())
    finally:
        store.close()
    assert names == {"ok_autorun.ipynb"}
