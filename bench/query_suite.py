"""The queries notebooks and operators run: embedded store vs chDB MergeTree on the same rows.

Fills an embedded store the way the product does — ``generate`` for ``fastpath`` (90 days
ending 2025-03-10) and ``logs`` rows (realistic journald lines from
``ooniutils.journal_sample``, spread over 30 days, inserted in 50k-row batches as
``logs ship`` does) — then copies the same rows into chDB MergeTree tables (``fastpath``
``ORDER BY (measurement_start_time, probe_cc)``, ``logs`` ``ORDER BY
__REALTIME_TIMESTAMP``, ``OPTIMIZE ... FINAL``) in the same process and session, and
times each query through ``click_query_fsn`` (binding, views, DataFrame: what a notebook
pays) and through the session on the MergeTree table (same SQL, same bound parameters,
DataFrame too). Runs are interleaved; medians of wall and CPU time (CPU: this process,
chDB's threads included — less disturbed by other processes' load). Both sides must
return the same result.

``fixed`` is a query whose time range holds no row: what a query costs before it reads
any data (listing and opening parts, reading footers).

``--compare-views`` also times the store with part naming off (every query through the
views), ``--compare-lc`` with LowCardinality columns read as such in the named parts'
``file()`` (``store.prune.LOW_CARDINALITY``: what main did before issue 16's fourth round),
in the same rounds and process; both must return the same frames as the store.

Works with any ooniutils that has ``generate``, ``click_query_fsn`` and ``insert_arrow``,
so it can be run against an older commit with ``PYTHONPATH=<exported src>``.

    python bench/query_suite.py [--rows 10000000] [--log-lines 1000000] [--runs 7] [--dir DIR]
        [--compact] [--compare-views] [--compare-lc] [--mergetree-days N] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

END = dt.datetime(2025, 3, 10)  # naive UTC, the generator's `end`
LOG_DAYS = 30

QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "fixed (empty range)": (
        "SELECT count() AS n FROM fastpath WHERE measurement_start_time >= %(since)s",
        {"since": END + dt.timedelta(days=1)}),
    "last hour, by country": (
        "SELECT probe_cc, count() AS n FROM fastpath WHERE measurement_start_time >= %(since)s "
        "AND measurement_start_time < %(until)s GROUP BY probe_cc ORDER BY probe_cc",
        {"since": END - dt.timedelta(hours=1), "until": END}),
    "one country, last day, hourly": (
        "SELECT toStartOfHour(measurement_start_time) AS t, count() AS n FROM fastpath "
        "WHERE probe_cc = %(cc)s AND measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        "GROUP BY t ORDER BY t",
        {"cc": "IT", "since": END - dt.timedelta(days=1), "until": END}),
    "all countries, last 7 days, hourly": (
        "SELECT toStartOfHour(measurement_start_time) AS t, probe_cc, count() AS n FROM fastpath "
        "WHERE measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        "GROUP BY t, probe_cc ORDER BY t, probe_cc",
        {"since": END - dt.timedelta(days=7), "until": END}),
    "one URL, 30 days, daily": (
        "SELECT toStartOfDay(measurement_start_time) AS t, probe_cc, count() AS n, "
        "countIf(anomaly = 't') AS anomalies FROM fastpath WHERE input = %(url)s "
        "AND measurement_start_time >= %(since)s AND measurement_start_time < %(until)s "
        "GROUP BY t, probe_cc ORDER BY t, probe_cc",
        {"url": None, "since": END - dt.timedelta(days=30), "until": END}),
    "4 countries, 90 days, hourly": (
        "SELECT toStartOfHour(measurement_start_time) AS t, count() AS n FROM fastpath "
        "WHERE probe_cc IN %(ccs)s AND measurement_start_time >= %(since)s GROUP BY t ORDER BY t",
        {"ccs": ["IT", "DE", "US", "RU"], "since": END - dt.timedelta(days=90)}),
    "country x day, all rows": (
        "SELECT probe_cc, toDate(measurement_start_time) AS d, count() AS n FROM fastpath "
        "GROUP BY probe_cc, d ORDER BY probe_cc, d", {}),
    "logs: errors by unit, last 24 h": (
        "SELECT coalesce(_SYSTEMD_UNIT, UNIT, SYSLOG_IDENTIFIER, '') AS unit, count() AS n FROM logs "
        "WHERE __REALTIME_TIMESTAMP >= %(since)s AND __REALTIME_TIMESTAMP < %(until)s AND PRIORITY <= 3 "
        "GROUP BY unit ORDER BY unit", {"since": None, "until": None}),
}
SELECTIVE = {"last hour, by country", "one country, last day, hourly", "logs: errors by unit, last 24 h"}
WINDOW_DAYS = {"fixed (empty range)": 0, "last hour, by country": 1, "one country, last day, hourly": 1,
               "all countries, last 7 days, hourly": 7, "one URL, 30 days, daily": 30,
               "4 countries, 90 days, hourly": 90, "country x day, all rows": 10**6,
               "logs: errors by unit, last 24 h": 0}
"""Days of fastpath (before END) each query reads: ``--mergetree-days`` runs those that fit."""


def fill(store: Any, rows: int, log_lines: int) -> dict[str, float]:
    """Generate fastpath rows and insert logs rows (each only when the table is empty: a
    folder kept by ``bench/store_100m.py --keep`` gets its logs here); returns the seconds
    each took."""
    import numpy as np
    import pyarrow as pa

    from ooniutils.journal_sample import journal_lines
    from ooniutils.logship import ShipStats, parse_batch, to_logs
    from ooniutils.store.generator import generate

    out = {}
    if not store.parts("fastpath"):
        t0 = time.perf_counter()
        generate(store, days=90, rows=rows, seed=0, end=END.replace(tzinfo=dt.UTC))
        out["generate_s"] = time.perf_counter() - t0
    if store.parts("logs"):
        return out
    t0 = time.perf_counter()
    start_us = int((END - dt.timedelta(days=LOG_DAYS)).replace(tzinfo=dt.UTC).timestamp() * 1e6)
    step = LOG_DAYS * 86400 * 10**6 // max(log_lines, 1)
    batch = 50_000
    for first in range(0, log_lines, batch):
        n = min(batch, log_lines - first)
        lines = journal_lines(n, seed=first + 1)
        table = to_logs(parse_batch(lines, ShipStats()), ShipStats())
        ts = pa.array(start_us + (first + np.arange(n)) * step, pa.int64())
        table = table.set_column(table.schema.get_field_index("__REALTIME_TIMESTAMP"), "__REALTIME_TIMESTAMP", ts)
        store.insert_arrow("logs", table)
    out["logs_s"] = time.perf_counter() - t0
    return out


def build_mergetree(sess: Any, store: Any, days: int | None = None) -> None:
    """MergeTree copies of ``fastpath`` (only its last ``days`` days when given) and ``logs``."""
    from clickhouse_connect.driver.binding import format_str

    from ooniutils.store.params import structure
    from ooniutils.store.schema import get_table

    sess.query("CREATE DATABASE IF NOT EXISTS bench")
    for name, order in (("fastpath", "measurement_start_time, probe_cc"), ("logs", "__REALTIME_TIMESTAMP")):
        t = get_table(name)
        sess.query(f"DROP TABLE IF EXISTS bench.{name}")
        sess.query(f"CREATE TABLE bench.{name} ({structure(t)}) ENGINE = MergeTree ORDER BY ({order})")
        where = ""
        if days is not None and name == "fastpath":
            where = f" WHERE measurement_start_time >= '{END - dt.timedelta(days=days)}'"
        for part in store.parts(name):  # one file at a time: bounded memory
            sess.query(f"INSERT INTO bench.{name} SELECT * FROM file({format_str(str(part))}, Parquet, "
                       f"{format_str(structure(t))}){where} SETTINGS max_insert_threads = 1")
        sess.query(f"OPTIMIZE TABLE bench.{name} FINAL")


def run_suite(queries: dict[str, tuple[str, dict[str, Any]]], ours: Any, mergetree: Any, runs: int,
              when: str, views: Any = None, lc: Any = None) -> list[dict[str, Any]]:
    """Times every query on both sides (interleaved), prints a Markdown table, returns rows.
    ``views``: the embedded store with part naming off (every query through the views),
    ``lc``: with LowCardinality columns read as such; each timed in the same rounds when given."""
    results: list[dict[str, Any]] = []
    others = [(k, fn) for k, fn in (("views", views), ("lc", lc)) if fn is not None]
    extra = "".join(f" {k} (ms) | {k} wall / CPU ratio |" for k, _ in others)
    print(f"\n{when}:\n| query | embedded (ms) | MergeTree (ms) | wall ratio | CPU ratio | rows out |{extra}")
    print("|---|---|---|---|---|---|" + "---|---|" * len(others))
    sides = [("ours", ours), ("mt", mergetree)] + others
    for label, (sql, params) in queries.items():
        a, b = ours(sql, params), mergetree(sql, params)  # warm-up + check
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False,
                                      obj=label)
        for key, fn in others:
            pd.testing.assert_frame_equal(a, fn(sql, params), obj=f"{label} ({key})")
        wall: dict[str, list[float]] = {k: [] for k, _ in sides}
        cpu: dict[str, list[float]] = {k: [] for k, _ in sides}
        for _ in range(runs):
            for key, fn in sides:
                t0, c0 = time.perf_counter(), time.process_time()
                fn(sql, params)
                wall[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
        m = {k: statistics.median(v) for k, v in wall.items()}
        c = {k: statistics.median(v) for k, v in cpu.items()}
        row = {"query": label, "ours_ms": m["ours"] * 1000, "mergetree_ms": m["mt"] * 1000,
               "ratio": m["ours"] / m["mt"], "cpu_ratio": c["ours"] / max(c["mt"], 1e-6),
               "ours_cpu_ms": c["ours"] * 1000, "mergetree_cpu_ms": c["mt"] * 1000, "rows_out": len(a),
               "selective": label in SELECTIVE, "when": when, "load": os.getloadavg()[0]}
        more = ""
        for k, _ in others:
            row.update({f"{k}_ms": m[k] * 1000, f"{k}_cpu_ms": c[k] * 1000, f"{k}_ratio": m[k] / m["mt"],
                        f"{k}_cpu_ratio": c[k] / max(c["mt"], 1e-6)})
            more += f" {row[f'{k}_ms']:.1f} | {row[f'{k}_ratio']:.2f} / {row[f'{k}_cpu_ratio']:.2f} |"
        results.append(row)
        print(f"| {label} | {row['ours_ms']:.1f} | {row['mergetree_ms']:.1f} | {row['ratio']:.2f} | "
              f"{row['cpu_ratio']:.2f} | {len(a)} |{more}", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--log-lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=None, help="data folder (kept; reused when it holds data)")
    ap.add_argument("--compact", action="store_true", help="run the suite again after `data compact`")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--mergetree-days", type=int, default=None,
                    help="copy only the last N days of fastpath into MergeTree (a smaller MergeTree is no "
                         "slower: a lower bound on its time) and run only the queries within them")
    ap.add_argument("--compare-views", action="store_true",
                    help="also time the embedded store with part naming off (store.prune.ENABLED)")
    ap.add_argument("--compare-lc", action="store_true",
                    help="also time the embedded store reading LowCardinality columns as such "
                         "(store.prune.LOW_CARDINALITY)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ooni-suite-") as tmp:
        data = args.dir or Path(tmp)
        os.environ["OONI_DATA_DIR"] = str(data)
        import ooniutils
        from ooniutils.clickhouse import click_query_fsn
        from ooniutils.store import embedded, get_store
        from ooniutils.store import params as P

        try:
            store = get_store(create=True)
        except TypeError:  # an older ooniutils: get_store() created the folder
            store = get_store()
        store.init()
        cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name")), "?")
        print(f"ooniutils from {Path(ooniutils.__file__).parent}; load {os.getloadavg()} on {os.cpu_count()} CPUs "
              f"({cpu_model})")
        fill_times: dict[str, float] = {}
        if not store.parts("fastpath") or not store.parts("logs"):
            fill_times = fill(store, args.rows, args.log_lines)
            print("filled:", {k: round(v, 1) for k, v in fill_times.items()})
        for name in ("fastpath", "logs"):
            parts = store.parts(name)
            print(f"{name}: {len(parts)} parts, {sum(p.stat().st_size for p in parts) / 2**20:.0f} MiB")
        sess = embedded._session()
        t0 = time.perf_counter()
        build_mergetree(sess, store, args.mergetree_days)
        print(f"MergeTree built in {time.perf_counter() - t0:.1f} s")

        url = click_query_fsn("SELECT input, count() AS n FROM fastpath WHERE input != '' GROUP BY input "
                              "ORDER BY n DESC, input LIMIT 1")["input"].iloc[0]
        tmax = int(click_query_fsn("SELECT max(__REALTIME_TIMESTAMP) AS m FROM logs")["m"].iloc[0])
        queries = {}
        for label, (sql, params) in QUERIES.items():
            params = dict(params)
            if "url" in params:
                params["url"] = url
            if label.startswith("logs"):
                params.update(since=tmax - 86400 * 10**6, until=tmax + 1)
            if args.mergetree_days is None or WINDOW_DAYS[label] <= args.mergetree_days:
                queries[label] = (sql, params)

        def ours(sql: str, params: dict[str, Any]) -> pd.DataFrame:
            return click_query_fsn(sql, **params)

        def mergetree(sql: str, params: dict[str, Any]) -> pd.DataFrame:
            bound = P.bind(sql.replace("FROM fastpath", "FROM bench.fastpath").replace("FROM logs", "FROM bench.logs"),
                           params)
            with embedded._lock:
                return sess.query(bound.sql, "DataFrame", params=bound.escaped())

        def with_prune(setting: str, value: bool) -> Any:
            """``click_query_fsn`` with ``prune.<setting>`` set to ``value`` for the call
            (another path through the same store, timed in the same rounds)."""
            from ooniutils.store import prune

            def run(sql: str, params: dict[str, Any]) -> pd.DataFrame:
                setattr(prune, setting, value)
                try:
                    return click_query_fsn(sql, **params)
                finally:
                    setattr(prune, setting, not value)
            return run

        views = with_prune("ENABLED", False) if args.compare_views else None
        lc = with_prune("LOW_CARDINALITY", True) if args.compare_lc else None

        results = run_suite(queries, ours, mergetree, args.runs, "as loaded", views, lc)
        if args.compact and hasattr(store, "compact"):
            t0 = time.perf_counter()
            store.compact()
            print(f"\ndata compact: {time.perf_counter() - t0:.1f} s; fastpath now {len(store.parts('fastpath'))} parts, "
                  f"logs {len(store.parts('logs'))} parts")
            results += run_suite(queries, ours, mergetree, args.runs, "after data compact", views, lc)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nload after: {os.getloadavg()}; peak RSS {peak:.0f} MiB")
        if args.json:
            args.json.write_text(json.dumps({"rows": args.rows, "log_lines": args.log_lines, "runs": args.runs,
                                             "fill": fill_times, "results": results}, indent=1))


if __name__ == "__main__":
    main()
