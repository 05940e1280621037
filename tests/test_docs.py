"""Documentation that must stay true: every setting documented, README commands real."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.services import REPO


def test_configuration_reference_is_up_to_date():
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_config_doc.py"), "--check"],
                         timeout=60)
    assert res.returncode == 0, "docs/CONFIGURATION.md is stale: run scripts/gen_config_doc.py"


def test_readme_gives_the_two_make_targets_and_they_exist():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_cli_command_in_the_readme_exists():
    readme = (REPO / "README.md").read_text()
    for tool in ("jupycron", "ooniutils"):
        mentioned = set(re.findall(rf"`{tool} ([a-z][a-z-]+)", readme))
        for cmd in mentioned:
            res = subprocess.run([sys.executable, "-m", tool, *cmd.split(), "--help"],
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, f"{tool} {cmd}: {res.stderr}"
