"""Each run's kernel has a private temp folder, removed with the kernel however the run ends.

Real kernels (forked from the template, started normally, pooled). What a notebook, a
library or a child process leaves in ``$TMPDIR`` — chDB's session folder when the kernel
is killed, a spill file — would otherwise stay in /tmp, one per run.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupycron import discovery, runner
from jupycron.kernels import pooled as pool
from jupycron.models import RunStatus

PROBE = (
    "import json, os, subprocess, sys, tempfile\n"
    "t = tempfile.gettempdir()\n"
    "open(os.path.join(t, 'left-behind'), 'w').write('x')\n"
    "child = subprocess.run([sys.executable, '-c', 'import tempfile; print(tempfile.gettempdir())'],\n"
    "                       capture_output=True, text=True, check=True).stdout.strip()\n"
    "open(os.environ['JUPYCRON_NOTEBOOK'] + '.json', 'w').write(json.dumps(\n"
    "    {'tempdir': t, 'env': os.environ.get('TMPDIR'), 'child': child}))\n"
)


def _run(settings, name: str, extra: str = "", kernels=None):
    nbformat.write(new_notebook(cells=[new_code_cell(PROBE + extra)]), settings.notebooks / name)
    nb = discovery.read_notebook(settings.notebooks / name, name)
    run = runner.run_notebook(settings, nb, kernels=kernels)
    probe = json.loads((settings.notebooks / f"{name}.json").read_text())
    return run, probe


def _check(run, probe, jc) -> None:
    assert run.kernel is not None and run.kernel.sockets
    private = Path(run.kernel.sockets) / "tmp"
    assert probe == {"tempdir": str(private), "env": str(private), "child": str(private)}
    jc.assert_no_leftovers(run)
    assert not private.exists()


@pytest.mark.integration
@pytest.mark.parametrize("forked", [True, False], ids=["forked", "started"])
def test_a_runs_temp_folder_is_its_own_and_is_removed_after(settings, jc, forked):
    settings = replace(settings, kernel_forkserver=forked)
    ok, probe = _run(settings, "ok_autorun.ipynb")
    assert ok.status is RunStatus.SUCCESS, (ok.error_name, ok.error_value)
    assert ok.kernel is not None and ok.kernel.forked is forked
    _check(ok, probe, jc)
    killed, probe = _run(settings, "exit_autorun.ipynb", "os._exit(3)")  # no clean-up of its own
    assert killed.status is RunStatus.CRASHED
    _check(killed, probe, jc)


@pytest.mark.integration
def test_a_pooled_kernels_temp_folder_is_its_own_and_is_removed_after(settings, jc):
    with pool.KernelPool(settings, 1) as kernels:
        first, p1 = _run(settings, "a_autorun.ipynb", kernels=kernels)
        second, p2 = _run(settings, "b_autorun.ipynb", kernels=kernels)
    assert first.status is second.status is RunStatus.SUCCESS
    assert p1["tempdir"] != p2["tempdir"]
    _check(first, p1, jc)
    _check(second, p2, jc)
