"""Entry points: :func:`generate_frames` (pure, yields DataFrames) and :func:`generate`
(writes them into a store and returns the ground truth)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pandas as pd

from ..base import Store
from .fastpath import fastpath_chunk
from .plan import DEFAULT_CHUNK_ROWS, Plan, make_plan
from .priorities import url_priorities_frame
from .tables import changepoints_frame, citizenlab_frame, helpers_frame
from .truth import GroundTruth

log = logging.getLogger(__name__)


def generate_frames(days: int = 90, rows: int | None = None, seed: int = 0, end: datetime | None = None,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, plan: Plan | None = None,
                    ) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(table_name, DataFrame)`` pairs: citizenlab, test_helper_instances,
    event_detector_changepoints, url_priorities, then fastpath in chunks of about ``chunk_rows`` rows
    (whole hours, oldest first). Same arguments → identical frames.

    Pass ``plan`` (from :func:`make_plan`) to reuse one and read its ``truth``; the other
    arguments are then ignored. Memory is bounded by one chunk (the rows of one chunk while
    it is built), whatever the total.
    """
    plan = plan or make_plan(days, rows, seed, end, chunk_rows)
    yield "citizenlab", citizenlab_frame()
    yield "test_helper_instances", helpers_frame(plan)
    yield "event_detector_changepoints", changepoints_frame(plan)
    yield "url_priorities", url_priorities_frame()
    for i in range(len(plan.chunks)):
        yield "fastpath", fastpath_chunk(plan, i)


def generate(store: Store, days: int = 90, rows: int | None = None, seed: int = 0,
             end: datetime | None = None, progress: Callable[[int, int], None] | None = None,
             truth_path: Path | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> GroundTruth:
    """Fill ``store`` with ``days`` days of synthetic OONI data ending at ``end`` and return
    the ground truth of the injected incidents (also written to ``truth_path`` if given).

    Rows are appended (existing data is kept). ``rows`` is the expected fastpath row count
    (default 40,000 a day); ``end`` defaults to now rounded down to the hour (UTC).
    ``progress(hours_done, hours_total)`` is called after each fastpath chunk.

    Example::

        from ooniutils.store import get_store
        truth = generate(get_store(), days=14, seed=1, truth_path=Path("truth.json"))
        truth.get("country_outage").start
    """
    plan = make_plan(days, rows, seed, end, chunk_rows)
    truth = plan.truth
    total_hours = len(plan.hours)
    t0 = time.perf_counter()
    log.info("generating %d days ending %s: ~%d fastpath rows in %d chunks (seed %d)",
             days, plan.end.isoformat(), plan.rows, len(plan.chunks), seed)
    chunk = 0

    def record(table: str, written: int) -> None:
        nonlocal chunk
        truth.rows[table] = truth.rows.get(table, 0) + int(written)
        if table == "fastpath":
            done = plan.chunks[chunk][1]
            chunk += 1
            log.debug("chunk %d/%d: %d rows", chunk, len(plan.chunks), written)
            if progress is not None:
                progress(done, total_hours)

    # One insert in flight on a writer thread while the next frame is built: the Parquet
    # (or HTTP) write releases the GIL, so on two cores it overlaps generation. At most two
    # frames are alive at once, and frames are written in order.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate-insert") as writer:
        pending: tuple[str, Future[int]] | None = None
        for table, df in generate_frames(plan=plan):
            if pending is not None:
                record(pending[0], pending[1].result())
            pending = (table, writer.submit(store.insert, table, df))
            del df
        if pending is not None:
            record(pending[0], pending[1].result())
    log.info("generated %d fastpath rows in %.1f s", truth.rows.get("fastpath", 0), time.perf_counter() - t0)
    if truth_path is not None:
        truth.write(truth_path)
    return truth
