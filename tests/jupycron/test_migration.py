"""Moving a host from OONI's old jupycron: its notebooks (``# jupycron:`` line,
``%run ooniutils.ipynb``, ``autorun``), its output folder and its ``.history.json`` (imported into
the run ledger) work as they are. The shipped ``ooniutils.ipynb`` shim is what ``%run ooniutils.ipynb`` loads."""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest
from click.testing import CliRunner
from nbformat.v4 import new_code_cell, new_notebook

from jupycron import cli
from jupycron.ledger import SqliteRunStore
from jupycron.models import RunStatus
from tests.support.services import REPO

pytestmark = pytest.mark.integration

OLD_CELL = '''# jupycron: {"every": "1 hour", "MaxMem": 800}
%run ooniutils.ipynb
print("autorun is", autorun, "and click_query_fsn is", callable(click_query_fsn))'''


def test_old_host_layout_runs_unchanged(tmp_path):
    notebooks = tmp_path / "notebooks"
    out = notebooks / "jupycron"  # the old tool's default, and jupycron's
    (notebooks / "team").mkdir(parents=True)
    out.mkdir()
    shutil.copy(REPO / "notebooks" / "ooniutils.ipynb", notebooks / "ooniutils.ipynb")
    nb = new_notebook(cells=[new_code_cell(OLD_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "autorun_old.ipynb")
    nbformat.write(nb, notebooks / "team" / "autorun_team.ipynb")
    old = {"notebooks": {"autorun_old.ipynb": ["2024-03-05 07:00:12.345678", "failed", 12.5],
                         "team/autorun_team.ipynb": ["2024-03-05 07:00:30", "success", 3]}}
    (out / ".history.json").write_text(json.dumps(old))
    (out / "autorun_old.html").write_text("<html>old output</html>")

    base = ["--notebooks", str(notebooks)]
    listed = CliRunner().invoke(cli.main, [*base, "list"])
    assert listed.exit_code == 0, listed.output
    assert "failed under the old jupycron" in listed.output and "12.5 s" in listed.output
    assert "interrupted" not in listed.output and "corrupt" not in listed.output

    ran = CliRunner().invoke(cli.main, [*base, "run-now", "team/autorun_team.ipynb"])
    assert ran.exit_code == 0, ran.output
    html = (out / "team" / "autorun_team.html").read_text()  # the old URL layout
    assert "autorun is True and click_query_fsn is True" in html
    history = SqliteRunStore(out).load()
    runs = history["team/autorun_team.ipynb"].runs
    assert [r.status for r in runs] == [RunStatus.SUCCESS, RunStatus.SUCCESS]
    assert runs[1].extra.get("imported_from_legacy") is True
    assert history["autorun_old.ipynb"].latest.status is RunStatus.FAILED
    assert not (out / ".history.json").exists()   # imported into the ledger, once
    assert json.loads((out / ".history.json.imported").read_text()) == old
