"""Write docs/CONFIGURATION.md from the settings declared in code (jupycron.config and
ooniutils.config). tests/test_docs.py fails when the file is out of date:
    .venv/bin/python scripts/gen_config_doc.py
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields
from pathlib import Path

from jupycron.config import Settings, documented_settings, fmt_bound
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
        "Paths are made absolute when the settings are loaded: a relative path in the TOML file is",
        "relative to the file's folder, one from a flag or a variable to the working directory (so",
        "`jupycron --config demo/jupycron.toml serve` works from anywhere, and so does its Run now).",
        "Numbers outside the range shown (NaN and infinities included) are refused at load: exit",
        "status 2 and the key's name.",
        "",
        "**The run environment**: the `[ooniutils]` table of this file holds the ooniutils settings",
        "(keys of the second table below, e.g. `data_dir = \"data\"`, `slack_webhook_url = \"...\"`).",
        "jupycron puts them into its environment as `OONI_*` variables when it starts, replacing",
        "inherited values (with a warning naming the variable; a table naming `data_dir` and no",
        "`clickhouse_url` also clears an inherited `OONI_CLICKHOUSE_URL`, which would otherwise win",
        "over the folder — likewise `logs_data_dir`), so `tick`, `daemon`, `run-now`, the",
        "dashboard's Run now, the run-state alert checks and every kernel see the same data source,",
        "alert channels and output URL. `output_base_url` is passed as `OONI_OUTPUT_BASE_URL`, and",
        "`OONI_MONITORING_CONFIG` names this file, so ooniutils reads any other setting from this one",
        "file too (without the table, ooniutils keeps its own file). An interactive Jupyter kernel",
        "outside jupycron sees the same values when `OONI_MONITORING_CONFIG` names this file.",
        "jupycron does not interpret the table: ooniutils checks it (its `jupycron.run_environment`",
        "entry point) and a bad key or value stops jupycron at load. `jupycron list` and the",
        "dashboard show the effective data source.",
        "",
        "| TOML key | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    bounds = {f.name: f.metadata for f in fields(Settings) if "max" in f.metadata}
    for name, env, help_ in documented_settings():
        d = defaults.get(name)
        shown = "—" if d in (None, "", {}) else f"`{d}`"
        if name in bounds:
            m = bounds[name]
            low = f"> {fmt_bound(m['min'])}" if m.get("min_open") else fmt_bound(m["min"])
            help_ += f" Range: {low} to {fmt_bound(m['max'])}."
        key = "`[ooniutils]`" if name == "ooniutils" else f"`{name}`"
        lines.append(f"| {key} | `{env}` | {shown} | {help_} |")
    lines += [
        "",
        "## ooniutils (notebooks, the store, alert senders)",
        "",
        "Precedence: environment variable > `<NAME>_FILE` (a file holding the value, for secrets)",
        "> the TOML file named by `OONI_MONITORING_CONFIG` (key = the name in lower case without",
        "`OONI_`, e.g. `slack_webhook_url`, at the top level or in an `[ooniutils]` table; relative",
        "paths relative to the file's folder) > default. Runs started by jupycron get the",
        "`[ooniutils]` table of jupycron's config file as these variables (see above).",
        "",
        "No data source is configured by default: with neither `OONI_DATA_DIR` nor",
        "`OONI_CLICKHOUSE_URL`, or with an `OONI_DATA_DIR` that `ooniutils data init` never",
        "initialised, every query (and every `ooniutils data`/`logs` command but `data init`)",
        "fails with an error naming these settings; nothing creates an empty store silently.",
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
