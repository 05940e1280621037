"""An outputs folder that cannot be made: tick/run-now say so (exit 4), list says so.

Before: ``tick`` and ``run-now`` with ``output`` naming a file (or a path under /proc) died
with a Python traceback and exit status 1 (the code of "the run failed"), and ``list``
printed the notebooks as "never run" with exit 0, not a word about the folder.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from jupycron import cli


@pytest.fixture
def blocked(settings, jc, monkeypatch):
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks)
    settings.output_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.output_dir.write_text("a file where the outputs folder should be")
    monkeypatch.setenv("JUPYCRON_OUTPUT", str(settings.output_dir))  # as in a config file
    return ["--notebooks", str(settings.notebooks)]


@pytest.mark.parametrize("command", [["tick"], ["run-now", "ok_autorun.ipynb"], ["daemon"]])
def test_tick_run_now_and_daemon_exit_4_naming_the_folder(blocked, settings, command):
    res = CliRunner().invoke(cli.main, [*blocked, *command])
    assert res.exit_code == cli.EXIT_HISTORY, res.output
    assert f"cannot create the outputs folder {settings.output_dir}" in res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)


def test_list_says_the_folder_is_unusable_and_exits_4(blocked, settings):
    res = CliRunner().invoke(cli.main, [*blocked, "list"])
    assert res.exit_code == cli.EXIT_HISTORY, res.output
    assert "is not a folder: no run can start" in res.output
    assert "ok_autorun.ipynb" in res.output   # the notebooks are still listed


def test_list_without_a_heartbeat_says_no_scheduler_ran(settings, jc):
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks)
    res = CliRunner().invoke(cli.main, ["--notebooks", str(settings.notebooks), "--output",
                                        str(settings.output_dir), "list"])
    assert res.exit_code == 0, res.output
    assert "scheduler: no heartbeat in" in res.output


def test_a_read_only_outputs_folder_is_an_error_in_list_and_tick(settings, jc, small_disk):
    """Before: `list` printed the notebooks as "never run", exit 0, on a read-only mount."""
    import subprocess

    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks)
    assert small_disk == settings.output_dir
    r = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot remount the tmpfs read-only: {r.stderr.strip()}")
    base = ["--notebooks", str(settings.notebooks), "--output", str(settings.output_dir)]
    res = CliRunner().invoke(cli.main, [*base, "list"])
    assert res.exit_code == cli.EXIT_HISTORY, res.output
    assert "cannot be written (a read-only file system" in res.output
    res = CliRunner().invoke(cli.main, [*base, "tick"])
    assert res.exit_code == cli.EXIT_HISTORY, res.output

