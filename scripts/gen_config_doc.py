"""Write docs/CONFIGURATION.md from the settings declared in code (jupycron.config and
ooniutils.config). tests/test_docs.py fails when the file is out of date:
    .venv/bin/python scripts/gen_config_doc.py
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields
from pathlib import Path

from jupycron.config import Settings, documented_settings
from ooniutils.config import SETTINGS

OUT = Path(__file__).resolve().parents[1] / "docs" / "CONFIGURATION.md"


def render() -> str:
    defaults = {}
    for f in fields(Settings):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            defaults[f.name] = f.default_factory()  # type: ignore[misc]
    lines = [
        "# Configuration reference",
        "",
        "Generated from the code by `scripts/gen_config_doc.py`; do not edit by hand.",
        "",
        "## jupycron",
        "",
        "Precedence: command-line flag > environment variable (or `<VAR>_FILE` holding the value)",
        "> TOML file given by `--config` / `JUPYCRON_CONFIG` (key = the name below) > default.",
        "",
        "| TOML key | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, env, help_ in documented_settings():
        d = defaults.get(name)
        shown = "—" if d in (None, "", {}) else f"`{d}`"
        lines.append(f"| `{name}` | `{env}` | {shown} | {help_} |")
    lines += [
        "",
        "## ooniutils (notebooks, the store, alert senders)",
        "",
        "Precedence: environment variable > `<NAME>_FILE` (a file holding the value, for secrets)",
        "> the TOML file named by `OONI_MONITORING_CONFIG` (key = the name in lower case without",
        "`OONI_`, e.g. `slack_webhook_url`) > default.",
        "",
        "| environment | default | secret | meaning |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        shown = "—" if not s.default else f"`{s.default}`"
        lines.append(f"| `{s.name}` | {shown} | {'yes' if s.secret else ''} | {s.help} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
