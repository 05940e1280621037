"""``ooniutils logs ship`` at the command line: the cursor file's folder is created (the
demo's first `logs ship` failed without it), and no store is created behind the user."""

from __future__ import annotations

from click.testing import CliRunner

from ooniutils.cli import cli
from ooniutils.journal_sample import journal_lines


def test_ship_creates_the_cursor_files_folder_and_says_so(store, tmp_path):
    src = tmp_path / "j.json"
    src.write_bytes(b"\n".join(journal_lines(5)) + b"\n")
    cursor = tmp_path / "state" / "deeper" / "logship.cursor"
    res = CliRunner().invoke(cli, ["logs", "ship", "--from-file", str(src), "--cursor-file", str(cursor)])
    assert res.exit_code == 0, res.output
    assert "inserted 5" in res.output and cursor.read_text().startswith("s=")
    help_text = " ".join(CliRunner().invoke(cli, ["logs", "ship", "--help"]).output.split())
    assert "Its folder is created when missing" in help_text


def test_ship_needs_an_initialised_store(tmp_path, monkeypatch):
    from ooniutils.store import reset_stores

    monkeypatch.setenv("OONI_DATA_DIR", str(tmp_path / "never-initialised"))
    reset_stores()
    src = tmp_path / "j.json"
    src.write_bytes(b"\n".join(journal_lines(5)) + b"\n")
    cursor = tmp_path / "state" / "logship.cursor"
    res = CliRunner().invoke(cli, ["logs", "ship", "--from-file", str(src), "--cursor-file", str(cursor)])
    assert res.exit_code != 0 and "ooniutils data init" in res.output
    assert not (tmp_path / "never-initialised").exists() and not cursor.parent.exists()
