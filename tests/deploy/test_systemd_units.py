"""deploy/: every deploy file a deploy file names exists (vector.toml named a log-shipping
unit that was never shipped), and the log-shipping unit is valid for systemd and calls the
command with options it has."""

from __future__ import annotations

import re
import shlex
import subprocess

from click.testing import CliRunner

from ooniutils.cli import cli
from tests.support.services import REPO, require_program

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "ooni-logship.service"


def test_every_deploy_path_mentioned_in_deploy_files_exists():
    mentioned = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for ref in re.findall(r"(?<![\w/])deploy/[\w./-]*\w\*?", text):
                mentioned.add((path.relative_to(REPO).as_posix(), ref))
    assert ("deploy/vector/vector.toml", "deploy/systemd/ooni-logship.service") in mentioned
    missing = [(where, ref) for where, ref in sorted(mentioned) if not list(REPO.glob(ref))]
    assert not missing, f"deploy files name paths that do not exist: {missing}"


def _exec_start() -> list[str]:
    (line,) = [ln for ln in UNIT.read_text().splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_logship_unit_runs_ooniutils_logs_ship_with_real_options():
    argv = _exec_start()
    assert argv[0] == "/opt/jupycron/venv/bin/ooniutils" and argv[1:3] == ["logs", "ship"]
    help_text = CliRunner().invoke(cli, ["logs", "ship", "--help"]).output
    for opt in (a for a in argv[3:] if a.startswith("--")):
        assert opt in help_text, f"{opt} is not an option of `ooniutils logs ship`"
    text = UNIT.read_text()
    state = re.search(r"^StateDirectory=(\S+)", text, re.M)
    assert state and argv[argv.index("--cursor-file") + 1].startswith(f"/var/lib/{state.group(1)}/")
    assert "SupplementaryGroups=systemd-journal" in text  # may read the whole journal


def test_logship_unit_verifies(tmp_path):
    analyze = require_program("systemd-analyze", "/usr/bin/systemd-analyze", package="systemd")
    ooniutils = REPO / ".venv" / "bin" / "ooniutils"
    unit = tmp_path / UNIT.name  # the same unit, with the binary of this checkout
    unit.write_text(UNIT.read_text().replace("/opt/jupycron/venv/bin/ooniutils", str(ooniutils)))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines() if unit.name in ln]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr
