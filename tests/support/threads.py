"""Running reader threads while writer threads finish (history concurrency tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


def readers_during_writers(reader: Callable[[threading.Event], None], readers: int,
                           writer: Callable[..., None], writer_args: Sequence[tuple[Any, ...]],
                           timeout: float = 60.0) -> None:
    """Start ``readers`` threads running ``reader(stop)`` and one writer thread per entry of
    ``writer_args``; once every writer has returned, set ``stop`` and join the readers.

    An exception in a thread is re-raised here (a thread that died silently would otherwise
    let the test pass on whatever was written before it died).
    """
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    rs = [threading.Thread(target=guarded, args=(reader, stop)) for _ in range(readers)]
    ws = [threading.Thread(target=guarded, args=(writer, *a)) for a in writer_args]
    for t in rs + ws:
        t.start()
    for t in ws:
        t.join(timeout)
    stop.set()
    for t in rs:
        t.join(timeout)
    if any(t.is_alive() for t in rs + ws):
        raise AssertionError(f"threads still running after {timeout} s")
    if errors:
        raise errors[0]
