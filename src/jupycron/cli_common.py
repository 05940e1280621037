"""What every command entry point shares (:mod:`jupycron.cli`, :mod:`jupycron.cli_web`):
stopping on signals, and wiring the alert senders in.

It imports neither command module, so they need not import each other.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from . import senders
from .config import Settings

__all__ = ["install_alert_senders", "stop_on_signals"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (the handler only sets it: the
    runs notice, kill their kernels and record ``interrupted``). Restores the old handlers."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def install_alert_senders(settings: Settings, module: str = senders.DEFAULT_MODULE) -> None:
    """When ``alert_channels`` is set, load the senders of ``module`` (by name: jupycron does
    not import it) and install them for this process; ConfigError when it cannot be loaded."""
    if settings.alert_channels.strip():
        senders.install(senders.load(module))
