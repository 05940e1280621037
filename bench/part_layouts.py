"""One part of a store re-laid out with other grouping steps and page sizes: what each
layout costs the suite's kinds of query (bare chDB on the file alone, the plain ``file()``
structure the store uses for scans; CPU ms of this process, medians of interleaved runs).

Takes the part with the latest rows of ``DIR``'s ``fastpath`` (e.g. a folder kept by
``bench/store_100m.py --keep``), writes it again under ``OUT`` once per layout (grouped by
``probe_cc`` within 1, 6 or 24 hours; pages of 8,192 or 2,048 rows), then times: 4
countries hourly, all rows hourly, the part's last hour by country, one country over its
last day; and each copy's size (the source part's encodings are chosen again for each copy,
as a compaction would). BENCHMARKS.md, "Fifth round", has the numbers at 100M density.

    .venv/bin/python bench/part_layouts.py --dir /work/wt/s100m --out /tmp/layouts [--runs 9]
"""

from __future__ import annotations

import argparse
import resource
import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from chdb import session

from ooniutils.store import params as P
from ooniutils.store import parts
from ooniutils.store.schema import FASTPATH

LAYOUTS = [("hour-8k", 1, 8192), ("6h-8k", 6, 8192), ("day-8k", 24, 8192), ("day-2k", 24, 2048), ("6h-2k", 6, 2048)]
KEY = "measurement_start_time"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, required=True, help="store folder (its fastpath parts)")
    ap.add_argument("--out", type=Path, required=True, help="where the re-laid-out copies go")
    ap.add_argument("--runs", type=int, default=9)
    a = ap.parse_args()
    key_type = P.arrow_schema(FASTPATH).field(KEY).type
    infos = [parts.part_info(p, KEY, key_type) for p in (a.dir / "fastpath" / "current").glob("*.parquet")]
    last = max(infos, key=lambda i: i.hi or 0)
    print(f"part {last.path.name}: {last.rows:,} rows, grouped within {last.group} key units")
    table = pq.read_table(last.path)
    # dense columns, as the store's writers see them: an Arrow dictionary column read from a
    # whole file holds every row group's values, and pyarrow would write that whole dictionary
    # into each row group (report_id 10x bigger) where the store unifies it per row group
    table = table.cast(pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                  for f in table.schema], metadata=table.schema.metadata))
    a.out.mkdir(parents=True, exist_ok=True)
    files = {}
    page_rows = parts.PAGE_ROWS
    file_type = table.schema.field(KEY).type  # the part's own unit (the generator writes ms)
    for name, hours, page in LAYOUTS:
        path = a.out / f"{name}.parquet"
        k = parts.key_ints(table.column(KEY))
        order = parts.sort_order(k, parts.sort_step(file_type) * hours, parts.cluster_ranks(table.column("probe_cc")))
        t = table.take(pa.array(order)) if order is not None else table
        parts.PAGE_ROWS = page
        try:
            pq.write_table(t, path, **parts.parquet_options(t, KEY))
        finally:
            parts.PAGE_ROWS = page_rows
        files[name] = path
    hi = int(parts.key_ints(table.column(KEY)).max()) // (parts.sort_step(file_type) // 3600)  # seconds
    src = "file('{f}', Parquet, '" + P.structure(FASTPATH, low_cardinality=False) + "')"
    queries = {
        "4 countries, hourly": f"SELECT toStartOfHour({KEY}) AS t, count() FROM {src} "
                               "WHERE probe_cc IN ('IT','DE','US','RU') GROUP BY t FORMAT Null",
        "all rows, hourly": f"SELECT toStartOfHour({KEY}) AS t, count() FROM {src} GROUP BY t FORMAT Null",
        "last hour, by country": f"SELECT probe_cc, count() FROM {src} WHERE {KEY} >= toDateTime({hi}) - 3600 "
                                 "GROUP BY probe_cc FORMAT Null",
        "IT, last day": f"SELECT toStartOfHour({KEY}) AS t, count() FROM {src} WHERE probe_cc = 'IT' "
                        f"AND {KEY} >= toDateTime({hi}) - 86400 GROUP BY t FORMAT Null",
    }
    sess = session.Session()
    cpu: dict[tuple[str, str], list[float]] = {(n, q): [] for n in files for q in queries}
    for _ in range(a.runs):
        for n, f in files.items():
            for q, sql in queries.items():
                c = _cpu()
                sess.query(sql.replace("{f}", str(f)))
                cpu[(n, q)].append((_cpu() - c) * 1000)
    print("| layout | MiB | " + " | ".join(queries) + " |")
    print("|---" * (len(queries) + 2) + "|")
    for n, f in files.items():
        size = f.stat().st_size / 2**20
        print(f"| {n} | {size:.0f} | " + " | ".join(f"{statistics.median(cpu[(n, q)]):.1f}" for q in queries) + " |")


if __name__ == "__main__":
    main()
