"""The one-time import of ``.history.json`` (this product's format 1) and
``.alert-state.json`` into the run ledger: sound rows imported, damaged ones refused with a
logged reason, the file kept as ``.imported`` (or ``.corrupt-*`` when it is no history),
never imported twice; whatever the file holds, nothing crashes afterwards."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from jupycron.ledger import SqliteRunStore
from jupycron.models import KernelInfo, Run, RunStatus, Trigger
from jupycron.paths import history_file, output_html

NB = "team/daily_autorun.ipynb"
OTHER = "other_autorun.ipynb"
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
SRC = str(Path(__file__).resolve().parents[2] / "src")


def make_run(i: int, status: RunStatus = RunStatus.SUCCESS, nb: str = NB, **kw: Any) -> Run:
    start = T0 + timedelta(minutes=i)
    fields: dict[str, Any] = dict(notebook=nb, run_id=f"{start:%Y%m%dT%H%M%S}-{i:06x}",
                                  started_at=start, status=status, slot=start,
                                  trigger=Trigger.SCHEDULE)
    if status is not RunStatus.RUNNING:
        fields.update(finished_at=start + timedelta(seconds=30), duration_s=30.0)
    fields.update(kw)
    return Run(**fields)


def _entry(runs: list[Run], **kw: Any) -> dict[str, Any]:
    return {"runs": [r.to_json() for r in runs], "deleted_at": None,
            "last_success_output": None, "first_seen": T0.isoformat(), **kw}


def sound_history() -> dict[str, Any]:
    """Two notebooks, a RUNNING row among NB's runs (older rows keep the kernel's ids in
    ``extra``, as jupycron wrote them before the ledger), as ``.history.json`` held them."""
    me = dict(pid=os.getpid(), host=socket.gethostname())
    runs = [make_run(i, **me, extra={"kernel_pid": 123, "kernel_pgid": 123,
                                     "kernel_create_time": 1.5, "timing": {"total_s": 1.5}})
            for i in range(3)]
    runs.append(make_run(3, RunStatus.RUNNING, **me))
    return {"version": 1, "notebooks": {NB: _entry(runs[::-1]),
                                        OTHER: _entry([make_run(4, nb=OTHER)])}}


def write(folder: Path, doc: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = history_file(folder)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_a_history_is_imported_once_and_kept(tmp_path: Path, caplog) -> None:
    doc = sound_history()
    doc["notebooks"][OTHER]["deleted_at"] = (T0 + timedelta(days=1)).isoformat()
    path = write(tmp_path, doc)
    with caplog.at_level(logging.WARNING, logger="jupycron.ledger"):
        data = SqliteRunStore(tmp_path).load()
    assert [r.run_id for r in data[NB].runs] == [make_run(i).run_id for i in (3, 2, 1, 0)]
    assert data[NB].runs[0].status is RunStatus.RUNNING and data[NB].first_seen == T0
    assert data[NB].runs[1].kernel == KernelInfo(pid=123, pgid=123, create_time=1.5)
    assert data[NB].runs[1].extra["timing"] == {"total_s": 1.5}
    assert data[OTHER].deleted_at == T0 + timedelta(days=1)
    kept = tmp_path / ".history.json.imported"
    assert not path.exists() and json.loads(kept.read_text()) == doc
    assert any("imported" in m and "0 damaged" in m for m in caplog.messages)
    SqliteRunStore(tmp_path).record(make_run(9))
    assert len(SqliteRunStore(tmp_path).get(NB).runs) == 5   # not imported a second time


def test_processes_opening_the_ledger_at_once_import_once(tmp_path: Path) -> None:
    write(tmp_path, sound_history())
    code = textwrap.dedent("""
        import sys
        from jupycron.ledger import SqliteRunStore
        print(len(SqliteRunStore(sys.argv[1]).get("team/daily_autorun.ipynb").runs))
    """)
    env = {**os.environ, "PYTHONPATH": SRC}
    children = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env,
                                 stdout=subprocess.PIPE, text=True) for _ in range(4)]
    assert [c.communicate(timeout=120)[0].strip() for c in children] == ["4"] * 4
    assert len(list(tmp_path.glob(".history.json*"))) == 1   # the one .imported file


def test_alert_state_is_imported(tmp_path: Path) -> None:
    state = {"version": 1, "notebooks": {NB: {"failing": {"active": True, "channels": {}}}}}
    (tmp_path / ".alert-state.json").write_text(json.dumps(state))
    assert SqliteRunStore(tmp_path).alert_state("run_alerts") == state
    assert (tmp_path / ".alert-state.json.imported").exists()
    assert not (tmp_path / ".alert-state.json").exists()


@pytest.mark.parametrize("content", [
    "[]", '{"version": 1, "notebooks": []}', '{"version": 2, "notebooks": {}}', "{not json",
])
def test_a_file_that_is_no_history_is_moved_aside_and_outputs_rebuilt(tmp_path: Path,
                                                                      content: str) -> None:
    page = output_html(tmp_path, "a_autorun.ipynb")
    page.write_text("a page")
    write(tmp_path, content)
    data = SqliteRunStore(tmp_path).load()
    (aside,) = tmp_path.glob(".history.json.corrupt-*")
    assert aside.read_text() == content
    (run,) = data["a_autorun.ipynb"].runs
    assert run.extra["rebuilt_from_outputs"] is True and run.output == "a_autorun.html"


def _check_survives(tmp: Path, doc: Any, damaged: str | None) -> dict[str, Any]:
    """The ledger opens, what tick and list do next works, an untouched notebook keeps
    every run, the file is kept (imported or aside)."""
    from jupycron import scheduler, status
    from jupycron.config import Settings

    text = doc if isinstance(doc, str) else json.dumps(doc).replace("Infinity", "1e999")
    write(tmp, text)
    store = SqliteRunStore(tmp)
    data = store.load()
    kept = list(tmp.glob(".history.json.*"))
    assert len(kept) == 1 and kept[0].read_text() == text and not history_file(tmp).exists()
    if damaged is not None and damaged != OTHER and kept[0].name.endswith(".imported"):
        assert [r.run_id for r in data[OTHER].runs] == [make_run(4).run_id]
    scheduler.reap_orphans(store)
    settings_ = Settings(notebooks=tmp / "nbs", output=tmp)
    nbs = [scheduler.Notebook(rel, 0, 0, scheduler.schedule.JobSpec(every="1 hour"))
           for rel in data if not rel.startswith("/")]
    status.build_rows(settings_, nbs, store.load(), T0 + timedelta(hours=1))
    store.record(make_run(9, nb=OTHER))  # and the next write works
    return data


@pytest.mark.parametrize("field, value", [
    ("pid", "abc"), ("duration_s", "12"), ("duration_s", 10**400), ("peak_mem_mb", 1e308 * 10),
    ("started_at", 5), ("status", None), ("run_id", "../../x"), ("output", "../../etc/passwd"),
    ("extra", {"cgroup": "DECOY"}), ("extra", {"sockets": "DECOY"}),
    ("extra", {"kernel_pgid": "1"}), ("extra", [1]), ("error_cell", True),
    ("kernel", {"pid": 1, "pgid": 1, "create_time": 1.0, "sockets": "DECOY"}),
    ("kernel", {"pid": "1", "pgid": 1, "create_time": 1.0}), ("kernel", [1]),
    ("finding", {"level": "panic", "summary": "x"}), ("notebook", OTHER),
])
def test_a_run_with_a_wrong_field_is_refused_with_its_reason(tmp_path: Path, field: str,
                                                             value: object, caplog) -> None:
    """Such a row used to crash tick (the orphan check) or list; or worse, let the orphan
    clean-up kill a cgroup or delete a folder that is not jupycron's."""
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "keep").write_text("x")
    if isinstance(value, dict):
        value = {k: str(decoy) if v == "DECOY" else v for k, v in value.items()}
    doc = sound_history()
    running = next(r for r in doc["notebooks"][NB]["runs"] if r["status"] == "running")
    running[field] = value
    with caplog.at_level(logging.WARNING, logger="jupycron.ledger"):
        data = _check_survives(tmp_path / "out", doc, NB)
    assert [r.run_id for r in data[NB].runs] == [make_run(i).run_id for i in (2, 1, 0)]
    shown = make_run(3).run_id if field != "run_id" else value
    assert any("refused a run" in m and str(shown) in m for m in caplog.messages)
    assert (decoy / "keep").exists()


def test_an_entry_named_with_dotdot_is_refused_and_never_purged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    victim = tmp_path / "victim_autorun.html"
    victim.write_text("keep me")
    doc = sound_history()
    doc["notebooks"]["../victim_autorun.ipynb"] = {
        "runs": [], "deleted_at": "2020-01-01T00:00:00+00:00", "last_success_output": None,
        "first_seen": "2020-01-01T00:00:00+00:00"}
    data = _check_survives(out, doc, "../victim_autorun.ipynb")
    assert "../victim_autorun.ipynb" not in data
    SqliteRunStore(out).purge(T0 + timedelta(days=3650), grace=0)
    assert victim.read_text() == "keep me"


def test_deep_nesting_is_no_history_not_a_crash(tmp_path: Path) -> None:
    deep = '{"version": 1, "notebooks": {"a_autorun.ipynb": ' + "[" * 200_000 + "]" * 200_000 + "}}"
    _check_survives(tmp_path, deep, None)
    assert len(list(tmp_path.glob(".history.json.corrupt-*"))) == 1


_JSON_VALUES = hst.recursive(
    hst.none() | hst.booleans() | hst.integers(min_value=-(10**400), max_value=10**400)
    | hst.floats(allow_nan=False, allow_infinity=False) | hst.text(max_size=20)
    | hst.sampled_from(["../x", "../x/y", "running", "2024-05-01T10:00:00+00:00", "a_autorun.ipynb"]),
    lambda children: hst.lists(children, max_size=3) | hst.dictionaries(hst.text(max_size=8),
                                                                        children, max_size=3),
    max_leaves=8)
_RUN_FIELDS = hst.sampled_from(["notebook", "run_id", "started_at", "status", "trigger", "slot",
                               "finished_at", "duration_s", "error_name", "error_value",
                               "error_cell", "peak_mem_mb", "output", "pid", "host",
                               "memory_limit", "extra", "kernel", "finding", "unknown_key"])
_ENTRY_FIELDS = hst.sampled_from(["runs", "deleted_at", "last_success_output", "first_seen"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=hst.sampled_from(["run", "entry", "key", "top"]), run_field=_RUN_FIELDS,
       entry_field=_ENTRY_FIELDS, value=_JSON_VALUES, index=hst.integers(0, 3))
def test_damaged_history_files_never_crash_and_lose_nothing_else(
        where: str, run_field: str, entry_field: str, value: object, index: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        doc = sound_history()
        damaged: str | None = NB
        if where == "run":
            doc["notebooks"][NB]["runs"][index][run_field] = value
        elif where == "entry":
            doc["notebooks"][NB][entry_field] = value
        elif where == "key":
            damaged = value if isinstance(value, str) else "../x_autorun.ipynb"
            doc["notebooks"][damaged] = doc["notebooks"].pop(NB)
        else:
            doc["version"] = value
            damaged = None
        _check_survives(Path(d), doc, damaged)
