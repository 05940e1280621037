"""Cost of click_query_fsn over a bare chDB query on the same Parquet parts.

Builds N fastpath-like rows (default 10M) directly as Parquet parts of an embedded store
(numpy + pyarrow, columns typed as schema.py, the others left to their defaults), then
times an hourly GROUP BY count through ``click_query_fsn`` (binding, views, DataFrame)
and through a bare ``chdb`` session querying ``file(...)`` with the same structure.
Prints the median of each (≥5 runs, interleaved), wall and CPU, the overhead ratio and
the peak RSS.

    python bench/query_overhead.py [--rows 10000000] [--parts 20] [--runs 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

QUERY = ("SELECT toStartOfHour(measurement_start_time) AS hour, count() AS n FROM fastpath "
         "WHERE probe_cc IN %(ccs)s AND measurement_start_time >= %(since)s GROUP BY hour ORDER BY hour")
BARE = ("SELECT toStartOfHour(measurement_start_time) AS hour, count() AS n FROM file({path}, Parquet, {structure}) "
        "WHERE probe_cc IN ['IT', 'DE', 'US', 'RU'] AND measurement_start_time >= '2024-01-01 00:00:00' "
        "GROUP BY hour ORDER BY hour")


def build(store, rows: int, parts: int, seed: int = 1) -> None:
    from ooniutils.store import params as P
    from ooniutils.store.schema import FASTPATH

    rng = np.random.default_rng(seed)
    ccs = np.array(["IT", "DE", "US", "RU", "IR", "CN", "BR", "IN", "TR", "MM"])
    tests = np.array(["web_connectivity", "dnscheck", "signal", "telegram", "whatsapp"])
    start = np.datetime64("2024-01-01T00:00:00", "s").astype(np.int64)
    span = 90 * 86400
    per = rows // parts
    template = P.to_arrow(FASTPATH, pd.DataFrame({"probe_cc": ["IT"]}))  # defaults for other columns
    for i in range(parts):
        n = per if i < parts - 1 else rows - per * (parts - 1)
        t = np.sort(rng.integers(start, start + span, n)).astype("datetime64[s]")
        cols = {
            "measurement_uid": pa.array(np.char.add("uid", np.arange(i * per, i * per + n).astype(str))),
            "probe_cc": pa.array(ccs[rng.integers(0, len(ccs), n)]),
            "probe_asn": pa.array(rng.integers(1, 65000, n).astype(np.uint32)),
            "test_name": pa.array(tests[rng.integers(0, len(tests), n)]),
            "measurement_start_time": pa.array(t).cast(pa.timestamp("s", tz="UTC")),
            "anomaly": pa.array(np.where(rng.random(n) < 0.1, "t", "f")),
        }
        arrays = []
        for field in template.schema:
            if field.name in cols:
                arrays.append(cols[field.name].cast(field.type))
            else:
                arrays.append(pa.repeat(template.column(field.name)[0], n).cast(field.type))
        store.insert_arrow(FASTPATH, pa.Table.from_arrays(arrays, schema=template.schema))


def timed(fns, runs: int) -> tuple[list[list[float]], list[list[float]]]:
    """Times each function ``runs`` times, interleaved so machine noise hits both alike.

    Returns (wall times, CPU times) per function. CPU time is this process's (chDB's query
    threads run in it), which other processes' load disturbs far less than wall time.
    """
    for fn in fns:
        fn()  # warm-up (views, page cache)
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=None, help="data folder (default: a temp folder)")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="ooni-bench-") as tmp:
        data = args.dir or Path(tmp)
        os.environ["OONI_DATA_DIR"] = str(data)
        from chdb.session import Session
        from clickhouse_connect.driver.binding import format_str

        from ooniutils.clickhouse import click_query_fsn
        from ooniutils.store import get_store
        from ooniutils.store.params import structure
        from ooniutils.store.schema import FASTPATH

        store = get_store()
        if not store.parts("fastpath"):
            t0 = time.perf_counter()
            build(store, args.rows, args.parts)
            print(f"built {args.rows:,} rows in {args.parts} parts in {time.perf_counter() - t0:.1f}s")
        size = sum(p.stat().st_size for p in store.parts("fastpath"))
        print(f"data: {size / 2**20:.0f} MiB of Parquet in {data}")

        import datetime as dt

        params = {"ccs": ["IT", "DE", "US", "RU"], "since": dt.datetime(2024, 1, 1)}
        sess = Session()
        sess.query("SET session_timezone = 'UTC'")
        bare_sql = BARE.format(path=format_str(str(store.current_dir("fastpath") / "*.parquet")),
                               structure=format_str(structure(FASTPATH)))
        (ours, bare), (ours_cpu, bare_cpu) = timed([lambda: click_query_fsn(QUERY, **params),
                                                    lambda: sess.query(bare_sql, "DataFrame")], args.runs)
        res = click_query_fsn(QUERY, **params)
        check = sess.query(bare_sql, "DataFrame")
        assert int(check["n"].sum()) == int(res["n"].sum()), "both queries must count the same rows"

        m_ours, m_bare = statistics.median(ours), statistics.median(bare)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"rows counted: {int(res['n'].sum()):,} in {len(res)} hourly buckets")
        print(f"click_query_fsn median {m_ours * 1000:.1f} ms  (runs: {', '.join(f'{x * 1000:.0f}' for x in ours)})")
        print(f"bare chDB       median {m_bare * 1000:.1f} ms  (runs: {', '.join(f'{x * 1000:.0f}' for x in bare)})")
        print(f"overhead ratio {m_ours / m_bare:.3f}  (+{(m_ours - m_bare) * 1000:.1f} ms)")
        c_ours, c_bare = statistics.median(ours_cpu), statistics.median(bare_cpu)
        print(f"CPU time: click_query_fsn median {c_ours * 1000:.1f} ms, bare chDB {c_bare * 1000:.1f} ms, "
              f"ratio {c_ours / c_bare:.3f}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
