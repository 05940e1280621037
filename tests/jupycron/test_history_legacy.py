"""The old jupycron's ``.history.json`` ({"notebooks": {path: [time, status, elapsed]}}) is
imported into the run ledger as each notebook's last run, not moved aside as corrupt; a
damaged old-format file still is (and nothing crashes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupycron.history_legacy import LEGACY_NOTE, convert, parse_timestamp
from jupycron.ledger import SqliteRunStore
from jupycron.models import Run, RunStatus, Trigger
from jupycron.paths import output_html
from jupycron.retention import REBUILT_NOTE

T = datetime(2024, 3, 5, 7, 0, 12, tzinfo=UTC)
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(folder: Path, doc: object) -> Path:
    path = folder / ".history.json"
    path.write_text(json.dumps(doc))
    return path


def test_old_history_is_imported_as_last_runs(tmp_path: Path, caplog) -> None:
    original = {"notebooks": {
        "autorun_flow.ipynb": ["2024-03-05 07:00:12.345678", "success", 42.5],
        "team/autorun_tls.ipynb": ["2024-03-05T06:00:00", "failed", 3],
        "autorun_new.ipynb": ["2024-03-05 07:01:00", "not run", 0],
        "autorun_never.ipynb": [None, "not run", None],
    }}
    path = write(tmp_path, original)
    data = SqliteRunStore(tmp_path).load()

    assert not list(tmp_path.glob(".history.json.corrupt-*"))
    ok = data["autorun_flow.ipynb"].latest
    assert ok is not None and ok.status is RunStatus.SUCCESS
    assert ok.started_at == datetime(2024, 3, 5, 7, 0, 12, 345678, tzinfo=UTC)
    assert ok.duration_s == 42.5 and ok.finished_at == ok.started_at + timedelta(seconds=42.5)
    assert ok.output == "autorun_flow.html"  # <output>/<path>.html, as before
    assert ok.extra["note"] == LEGACY_NOTE and REBUILT_NOTE not in str(ok.to_json())
    failed = data["team/autorun_tls.ipynb"].latest
    assert failed is not None and failed.status is RunStatus.FAILED and failed.duration_s == 3
    assert "old jupycron" in (failed.error_value or "")
    assert data["team/autorun_tls.ipynb"].consecutive_failures == 1
    assert data["autorun_new.ipynb"].runs == []  # seen, never run
    assert data["autorun_new.ipynb"].first_seen == datetime(2024, 3, 5, 7, 1, tzinfo=UTC)
    assert data["autorun_never.ipynb"].runs == [] and data["autorun_never.ipynb"].first_seen is None
    backup = tmp_path / ".history.json.imported"
    assert not path.exists() and json.loads(backup.read_text()) == original
    assert any("imported" in m and backup.name in m for m in caplog.messages)

    # the next recorded run joins the imported ones; the file is not imported again
    new = Run(notebook="autorun_flow.ipynb", run_id="20240305T080000-abcdef",
              started_at=T + timedelta(hours=1), status=RunStatus.SUCCESS,
              trigger=Trigger.SCHEDULE, finished_at=T + timedelta(hours=1, seconds=5),
              duration_s=5.0)
    SqliteRunStore(tmp_path).record(new)
    again = SqliteRunStore(tmp_path).load()
    assert [r.run_id for r in again["autorun_flow.ipynb"].runs] == [new.run_id, ok.run_id]
    assert again["team/autorun_tls.ipynb"].latest == failed
    assert json.loads(backup.read_text()) == original  # the copy is never overwritten


def test_absolute_keys_become_relative(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    out = notebooks / "jupycron"  # the old default: output inside the notebooks folder
    out.mkdir(parents=True)
    data = convert({"notebooks": {
        f"{notebooks}/autorun_a.ipynb": ["2024-03-05 07:00", "success", 1],
        f"{notebooks}/sub/autorun_b.ipynb": ["2024-03-05 07:00", "success", 1]}}, out)
    assert set(data) == {"autorun_a.ipynb", "sub/autorun_b.ipynb"}
    # elsewhere: the deepest folder whose output exists, else the file name
    other = tmp_path / "out"
    (other / "team").mkdir(parents=True)
    (other / "team" / "autorun_c.html").write_text("x")
    data = convert({"notebooks": {"/srv/nb/team/autorun_c.ipynb": ["2024-03-05", "failed", 1],
                                  "/srv/nb/x/autorun_d.ipynb": ["2024-03-05", "failed", 1]}}, other)
    assert set(data) == {"team/autorun_c.ipynb", "autorun_d.ipynb"}


@pytest.mark.parametrize("text, expected", [
    ("2024-03-05 07:00:12", T), ("2024-03-05T07:00:12", T), ("2024-03-05T07:00:12Z", T),
    ("2024-03-05T09:00:12+02:00", T), ("2024-03-05 07:00:12.000000", T),
    (T.timestamp(), T), (int(T.timestamp()), T),
])
def test_timestamp_formats(text: object, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


# --- property tests ----------------------------------------------------------------------

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
rel_path = st.lists(segment, min_size=1, max_size=3).map(lambda p: "/".join(p) + ".ipynb")
moment = st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2035, 1, 1),
                      timezones=st.just(UTC))


@st.composite
def old_timestamp(draw: st.DrawFn) -> tuple[object, datetime]:
    """(what the old tool could have written, the instant it means)."""
    d = draw(moment)
    naive = d.replace(tzinfo=None)
    style = draw(st.sampled_from(["str", "iso", "iso_z", "minutes", "epoch", "epoch_int"]))
    if style == "str":
        return str(naive), d
    if style == "iso":
        return naive.isoformat(), d
    if style == "iso_z":
        return naive.isoformat() + "Z", d
    if style == "minutes":
        return naive.strftime("%Y-%m-%d %H:%M"), d.replace(second=0, microsecond=0)
    if style == "epoch_int":
        return int(d.timestamp()), datetime.fromtimestamp(int(d.timestamp()), UTC)
    return d.timestamp(), datetime.fromtimestamp(d.timestamp(), UTC)


elapsed = st.one_of(st.none(), st.integers(0, 86400), st.floats(0, 86400, allow_nan=False))
status = st.sampled_from(["success", "failed", "not run"])


@FAST
@given(rows=st.dictionaries(rel_path, st.tuples(old_timestamp(), status, elapsed), max_size=8))
def test_plausible_old_files_are_imported(tmp_path_factory, rows) -> None:
    folder = tmp_path_factory.mktemp("legacy")
    write(folder, {"notebooks": {k: [ts, s, e] for k, ((ts, _), s, e) in rows.items()}})
    data = SqliteRunStore(folder).load()
    assert not list(folder.glob(".history.json.corrupt-*"))
    assert set(data) == set(rows)
    for rel, ((_, when), s, e) in rows.items():
        entry = data[rel]
        if s == "not run":
            assert entry.runs == [] and entry.first_seen == when
            continue
        (run,) = entry.runs
        assert run.status is RunStatus(s) and run.started_at == when and run.duration_s == e
        assert folder / (run.output or "") == output_html(folder, rel)


bad_row = st.one_of(
    st.tuples(st.text(max_size=8).filter(lambda t: not _is_iso(t)), status, elapsed).map(list),
    st.tuples(st.none(), st.sampled_from(["success", "failed"]), elapsed).map(list),
    st.tuples(old_timestamp().map(lambda t: t[0]), st.text(max_size=8).filter(
        lambda s: s not in ("success", "failed", "not run")), elapsed).map(list),
    st.tuples(old_timestamp().map(lambda t: t[0]), st.sampled_from(["success", "failed"]),
              st.one_of(st.integers(max_value=-1), st.text(max_size=3), st.just(float("inf")))
              ).map(list),
    st.lists(st.integers(), max_size=5).filter(lambda r: len(r) != 3),
)


def _is_iso(text: str) -> bool:
    try:
        parse_timestamp(text)
    except ValueError:
        return False
    return True


@FAST
@given(good=st.dictionaries(rel_path, st.tuples(old_timestamp(), status, elapsed), max_size=3),
       bad_key=rel_path, bad=bad_row)
def test_damaged_old_files_are_moved_aside(tmp_path_factory, good, bad_key, bad) -> None:
    folder = tmp_path_factory.mktemp("damaged")
    rows = {k: [ts, s, e] for k, ((ts, _), s, e) in good.items()} | {bad_key: bad}
    text = json.dumps({"notebooks": rows})
    (folder / ".history.json").write_text(text)
    assert SqliteRunStore(folder).load() == {}  # rebuilt from outputs: none here
    (aside,) = folder.glob(".history.json.corrupt-*")
    assert aside.read_text() == text


@FAST
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                        lambda kids: st.lists(kids, max_size=3)
                        | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=10))
def test_any_json_loads_or_moves_aside(tmp_path_factory, doc) -> None:
    """Whatever JSON sits in the file, loading never raises: imported, or moved aside."""
    folder = tmp_path_factory.mktemp("any")
    (folder / ".history.json").write_text(json.dumps({"notebooks": doc}))
    data = SqliteRunStore(folder).load()
    assert isinstance(data, dict)
    assert data or list(folder.glob(".history.json.corrupt-*")) or doc == {}
