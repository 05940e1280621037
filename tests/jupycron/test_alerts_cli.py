"""`jupycron alerts` never exits 0 when it could not tell anyone."""

from __future__ import annotations

from click.testing import CliRunner

from jupycron import cli


def test_alerts_without_any_channel_is_an_error_not_a_quiet_exit_0(settings, jc):
    """Before: `jupycron alerts` with no alert_channels printed nothing and exited 0, with a
    notebook failing: a check that can tell no one looked like one with nothing to tell."""
    jc.copy_notebook("ok_autorun.ipynb", settings.notebooks)
    res = CliRunner().invoke(cli.main, ["--notebooks", str(settings.notebooks), "--output",
                                        str(settings.output_dir), "alerts"])
    assert res.exit_code == 2, res.output
    assert "alert_channels is not set" in res.output
