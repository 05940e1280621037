"""A finding survives ``clear_output`` in its cell (real kernel, nbclient).

Before: ``report_finding("alarm", ...)`` followed by ``clear_output()`` in the same cell
left no finding in the executed notebook: the run read as "never reported" ("—"), the
alarm was gone.
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from jupycron.findings import FINDING_MIME, last_finding

pytestmark = pytest.mark.integration


def _run(*cells: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True).execute()
    return nb


def _findings_per_cell(nb: nbformat.NotebookNode) -> list[int]:
    return [sum(FINDING_MIME in o.get("data", {}) for o in c.outputs) for c in nb.cells]


@pytest.mark.parametrize("after", [
    "clear_output()",
    "clear_output(wait=True)\nprint('redrawn')",
    "for i in range(3):\n    clear_output(wait=True)\n    print(i)",
    "clear_output()\nraise RuntimeError('later')",
])
def test_a_cleared_finding_is_shown_again_at_the_end_of_its_cell(after):
    nb = _run("from IPython.display import clear_output\nfrom ooniutils import report_finding",
              f"report_finding('alarm', 'IR down')\n{after}")
    found = last_finding(nb)
    assert found is not None and found.level.value == "alarm" and found.summary == "IR down"
    assert _findings_per_cell(nb) == [0, 1]


def test_nothing_is_shown_twice_without_a_clear_nor_by_another_cell():
    nb = _run("from IPython.display import clear_output\nfrom ooniutils import report_finding",
              "report_finding('warning', 'first')",
              "clear_output()\nprint('another cell')",
              "report_finding('ok', 'last')\nprint('no clear')")
    assert _findings_per_cell(nb) == [0, 1, 0, 1]
    found = last_finding(nb)
    assert found is not None and found.summary == "last"


def test_a_later_report_after_the_clear_is_the_one_kept():
    nb = _run("from IPython.display import clear_output\nfrom ooniutils import report_finding\n"
              "report_finding('alarm', 'old')\nclear_output()\nreport_finding('ok', 'new')")
    found = last_finding(nb)
    assert found is not None and found.summary == "new" and _findings_per_cell(nb) == [1]
