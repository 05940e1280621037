"""A notebooks folder and history with every dashboard state, for layout checks.

:func:`build_status_site` creates notebooks (copies of ``tests/notebooks/ok_autorun.ipynb``
with realistic, longish paths) whose history puts each in one state: success (with its
output pages), failed with a very long error, timeout, oom, crashed, interrupted, running
(recorded with this process's pid, so it counts as alive), never run, late, disabled and
an invalid ``# jupycron:`` line; four of them reported a finding (:data:`FINDINGS`, one
of each level). ``python -m tests.support.status_site DIR`` builds one in
DIR and writes its ``out/summary.html`` (for screenshots by hand).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jupycron.config import Settings
from jupycron.ledger import SqliteRunStore
from jupycron.models import Finding, FindingLevel, Run, RunStatus, Trigger

FIXTURE = Path(__file__).resolve().parents[1] / "notebooks" / "ok_autorun.ipynb"
LONG_ERROR_CHARS = 2000


def long_error(chars: int = LONG_ERROR_CHARS) -> str:
    """A ClickHouse-like error message of ``chars`` characters with few break points."""
    head = "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 9.31 GiB: "
    body = "while executing 'FUNCTION groupArray(measurement_uid)' at stage AggregatingTransform; "
    text = head
    while len(text) < chars:
        text += body
    return text[:chars]


# path -> (jupycron line or None for a notebook without one, state it will show)
NOTEBOOKS = {
    "flow/flow_per_country_measurements_autorun.ipynb": ('{"every": "1 hour"}', "failed"),
    "flow/flow_global_measurements_autorun.ipynb": ('{"every": "1 hour"}', "success"),
    "releases/android_release_rollout_autorun.ipynb": ('{"every": "1 hour"}', "timeout"),
    "duplicates/duplicate_measurement_uids_autorun.ipynb": ('{"every": "1 day"}', "oom"),
    "tls/tls_certificate_expiry_autorun.ipynb": ('{"every": "1 day"}', "crashed"),
    "events/blocking_events_autorun.ipynb": ('{"every": "1 hour"}', "interrupted"),
    "logs/journal_error_rate_autorun.ipynb": ('{"every": "1 hour"}', "running"),
    "test_helpers/test_helper_reachability_autorun.ipynb": ('{"every": "1 day"}', "never"),
    "long_term/long_term_country_trends_autorun.ipynb": ('{"every": "1 hour"}', "late"),
    "research/manual_research_notebook_autorun.ipynb": ('{"every": "1 day", "enabled": false}',
                                                        "disabled"),
    "broken_line_autorun.ipynb": ('{"every": "1 fortnight"}', "disabled"),
}


# path -> the finding its newest finished run that reported one gave (the others never reported)
FINDINGS = {
    "flow/flow_global_measurements_autorun.ipynb": Finding(
        FindingLevel.ALARM, "IR: measurements down 40 % since 14:00 UTC on ooniprobe-android "
        "and ooniprobe-ios, AS197207 and AS44244 (MCI, Irancell)", [{"country": "IR", "drop": "40 %"}]),
    "flow/flow_per_country_measurements_autorun.ipynb": Finding(
        FindingLevel.WARNING, "RU: web_connectivity down 18 % (below the 30 % alarm threshold)"),
    "releases/android_release_rollout_autorun.ipynb": Finding(FindingLevel.OK, "rollout on track"),
    "duplicates/duplicate_measurement_uids_autorun.ipynb": Finding(
        FindingLevel.NO_DATA, "no measurements in the last 6 hours"),
}


def _copy(notebooks: Path, rel: str, line: str) -> None:
    nb = json.loads(FIXTURE.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and cell["source"][0].startswith("# jupycron:"):
            cell["source"][0] = f"# jupycron: {line}\n"
            break
    dest = notebooks / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(nb))


def build_status_site(root: Path, **settings_kw: object) -> Settings:
    """Notebooks under ``root/notebooks``, outputs and history under ``root/out``."""
    notebooks = root / "notebooks"
    out = root / "out"
    notebooks.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for rel, (line, _) in NOTEBOOKS.items():
        _copy(notebooks, rel, line)
    now = datetime.now(UTC).replace(microsecond=0)
    h = SqliteRunStore(out)
    never = [rel for rel, (_, st) in NOTEBOOKS.items() if st == "never"]
    h.mark_deleted([rel for rel in NOTEBOOKS if rel not in never], now - timedelta(days=3))
    n = 0

    def rec(rel: str, status: RunStatus, ago: timedelta, **kw: object) -> None:
        nonlocal n
        n += 1
        start = now - ago
        fields: dict[str, object] = dict(finished_at=start + timedelta(seconds=75),
                                         duration_s=75.0)
        if status is RunStatus.RUNNING:
            fields = {"pid": os.getpid()}
        fields.update(kw)
        h.record(Run(rel, f"{start:%Y%m%dT%H%M%S}-{n:06x}", start, status, trigger=Trigger.SCHEDULE,
                     slot=start.replace(minute=0, second=0), **fields))  # type: ignore[arg-type]

    for rel, (_, state) in NOTEBOOKS.items():
        if state == "never":
            continue
        html = Path(rel).with_suffix(".html").as_posix()
        (out / html).parent.mkdir(parents=True, exist_ok=True)
        for i in range(12):   # a history strip: mostly successes
            if i % 5:
                rec(rel, RunStatus.SUCCESS, timedelta(hours=40 - i))
            else:
                rec(rel, RunStatus.FAILED, timedelta(hours=40 - i), error_name="ValueError",
                    error_value="no rows")
        if rel in FINDINGS:
            rec(rel, RunStatus.SUCCESS, timedelta(hours=28), finding=FINDINGS[rel])
        if state in ("success", "failed"):
            (out / html).write_text("<p>output</p>")
        if state == "success":
            rec(rel, RunStatus.SUCCESS, timedelta(minutes=20), output=html)
        elif state == "failed":
            rec(rel, RunStatus.FAILED, timedelta(minutes=20), output=html,
                error_name="OperationalError", error_value=long_error(), error_cell=7)
        elif state in ("timeout", "oom", "crashed"):
            err = {"timeout": ("Timeout", "MaxRuntime 3600 s exceeded"),
                   "oom": ("MemoryError", "killed by the 4000 MB memory cap"),
                   "crashed": ("DeadKernelError", "kernel died (signal 11)")}[state]
            rec(rel, RunStatus(state), timedelta(minutes=20), error_name=err[0], error_value=err[1])
        elif state == "interrupted":
            rec(rel, RunStatus.INTERRUPTED, timedelta(minutes=20), error_name="Interrupted",
                error_value="scheduler shut down")
        elif state == "running":
            rec(rel, RunStatus.RUNNING, timedelta(minutes=2))
        elif state == "late":
            rec(rel, RunStatus.SUCCESS, timedelta(hours=5))
    h.mark_deleted(list(NOTEBOOKS), now - timedelta(minutes=5))   # the new one: 5 min ago
    return Settings(notebooks=notebooks, output=out, jupyter_base_url="https://lab.example.org/jupyter/",
                    **settings_kw)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover - a by-hand helper
    from jupycron.status import current_rows
    from jupycron.summary import write_summary

    site = build_status_site(Path(sys.argv[1]))
    page = write_summary(site, current_rows(site, datetime.now(UTC)), datetime.now(UTC))
    sys.stdout.write(f"{page}\n")
