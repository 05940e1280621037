"""Thread harnesses for concurrency tests: readers while writers finish (history), and two
runs of one job where the second starts while the first is paused inside (store writers)."""

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


class PausedRace:
    """Run ``job`` twice: run "A" stops at :meth:`checkpoint` (called from the code under
    test through a patch) and run "B" starts then. A waits there until B has finished, or
    1.5 s if B is (rightly) waiting for A; so without the lock under test B runs entirely
    inside A's critical section, and with it the two run one after the other.
    """

    def __init__(self) -> None:
        self.a_at_checkpoint = threading.Event()
        self.b_done = threading.Event()

    def checkpoint(self) -> None:
        if threading.current_thread().name == "A":
            self.a_at_checkpoint.set()
            self.b_done.wait(1.5)

    def run(self, job: Callable[[], Any]) -> dict[str, Any]:
        """``{"A": result, "B": result}``; an exception in either run is re-raised here."""
        results: dict[str, Any] = {}
        errors: list[BaseException] = []

        def go(name: str) -> None:
            try:
                results[name] = job()
            except BaseException as exc:  # re-raised in the test's thread below
                errors.append(exc)
            finally:
                if name == "B":
                    self.b_done.set()

        a = threading.Thread(target=go, args=("A",), name="A")
        a.start()
        assert self.a_at_checkpoint.wait(30), "run A never reached the checkpoint"
        b = threading.Thread(target=go, args=("B",), name="B")
        b.start()
        a.join(60)
        b.join(60)
        if errors:
            raise errors[0]
        return results
