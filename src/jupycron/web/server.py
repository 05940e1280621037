"""Running the dashboard on uvicorn: in the foreground (``jupycron serve``) or in a thread
beside the scheduler (``jupycron daemon --serve``).

:func:`serve` also checks run-state alerts every :data:`ALERT_INTERVAL_S` seconds when
``alert_channels`` is set (see :mod:`jupycron.run_alerts`; delivered through the senders the
entry point installed, :mod:`jupycron.senders`), so a notebook turning late is
reported even while the scheduler is down; :func:`start_in_thread` does not by default,
because the daemon already checks after each tick.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import uvicorn

from ..config import Settings
from ..exceptions import JupycronError
from ..run_alerts import notify_changes, parse_channels
from .app import create_app

log = logging.getLogger(__name__)

__all__ = ["ALERT_INTERVAL_S", "ServerHandle", "serve", "start_in_thread"]

ALERT_INTERVAL_S = 60.0
START_TIMEOUT_S = 30.0


def _server(settings: Settings, host: str, port: int, metrics_auth: bool) -> uvicorn.Server:
    config = uvicorn.Config(create_app(settings, metrics_auth=metrics_auth), host=host, port=port,
                            log_level="warning", access_log=False, proxy_headers=False,
                            server_header=False, lifespan="off")
    return uvicorn.Server(config)


def _alert_loop(settings: Settings, stop: threading.Event, interval_s: float) -> None:
    while not stop.wait(interval_s):
        try:
            notify_changes(settings)
        except (JupycronError, OSError) as exc:
            log.error("run-state alert check failed: %s", exc)
        except Exception:  # an alert bug must not take the dashboard down
            log.exception("run-state alert check failed")


def _start_alerts(settings: Settings, stop: threading.Event,
                  interval_s: float) -> threading.Thread | None:
    if not parse_channels(settings.alert_channels):
        return None
    t = threading.Thread(target=_alert_loop, args=(settings, stop, interval_s),
                         name="jupycron-alerts", daemon=True)
    t.start()
    return t


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080, *,
          metrics_auth: bool = False, alerts: bool = True,
          alert_interval_s: float = ALERT_INTERVAL_S) -> None:
    """Serve the dashboard until SIGINT/SIGTERM (uvicorn handles the signals)."""
    server = _server(settings, host, port, metrics_auth)
    stop = threading.Event()
    if alerts:
        _start_alerts(settings, stop, alert_interval_s)
    log.info("dashboard on http://%s:%d/", host, port)
    try:
        server.run()
    finally:
        stop.set()
    if not server.started:
        raise JupycronError(f"the dashboard could not listen on {host}:{port} (see the log)")


@dataclass
class ServerHandle:
    """A dashboard running in a background thread; :meth:`stop` shuts it down."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int
    _stop_alerts: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting requests, finish the open ones (up to ``timeout`` s) and join."""
        self._stop_alerts.set()
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)


def start_in_thread(settings: Settings, host: str = "127.0.0.1", port: int = 8080, *,
                    metrics_auth: bool = False, alerts: bool = False,
                    alert_interval_s: float = ALERT_INTERVAL_S) -> ServerHandle:
    """Start the dashboard in a daemon thread; return once it listens (``port=0``: any free
    port, see :attr:`ServerHandle.port`). Raises JupycronError when it cannot start.

    Example (``jupycron daemon --serve``)::

        handle = start_in_thread(settings, "127.0.0.1", 8080)
        try:
            run_forever(settings, stop_event)
        finally:
            handle.stop()
    """
    server = _server(settings, host, port, metrics_auth)
    thread = threading.Thread(target=server.run, name="jupycron-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise JupycronError(f"the dashboard could not listen on {host}:{port} (see the log)")
        time.sleep(0.02)
    bound = port
    if port == 0 and server.servers and server.servers[0].sockets:
        bound = server.servers[0].sockets[0].getsockname()[1]
    handle = ServerHandle(server, thread, host, bound)
    if alerts:
        _start_alerts(settings, handle._stop_alerts, alert_interval_s)
    return handle
