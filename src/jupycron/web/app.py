"""The dashboard: a Starlette app over the history, the notebooks folder and the outputs.

Routes (all pages need a user, see :mod:`jupycron.web.auth`, except ``/static`` and, unless
``metrics_auth=True``, ``/metrics``; refused: 401, 429 with ``Retry-After`` after too many
failed logins from one address, 503 while the config file's users cannot be read):

===========================  =====================================================================
``GET /``                    every notebook (the rows of :func:`jupycron.status.build_rows`),
                             filter ``?state=failing|success|running|never|disabled|
                             interrupted|late`` and ``?finding=alarm|no_data|warning|ok|none``
                             (combinable), sort ``?sort=path|state|finding|last|next|duration|
                             failures&desc=1`` - all plain links, no JavaScript needed;
                             refreshes itself (meta refresh: 5 s while something runs, else 30 s)
``GET /notebook/<path>``     schedule, effective limits, next run, run history, outputs, run-now
``POST /run``                form ``notebook``, ``csrf_token``: starts ``python -m jupycron
                             ... run-now`` detached (:func:`run_now_argv`); 303 back to the
                             notebook page
``GET /output/<path>``       a file of the output folder (HTML outputs, summary.html)
``GET /metrics``             Prometheus metrics (:mod:`jupycron.metrics`)
===========================  =====================================================================

Output files: only regular, non-hidden files under the output folder are served. A path with
``..``, an empty or ``.``-part, a part starting with ``.`` (``.jupycron.sqlite``, ``.locks/``,
``.alert-state.json``, ...) or that resolves outside the folder (symlinks) is a 404, whatever
its encoding (the path is decoded once, by the server, and never again). Outputs are served
with ``Content-Security-Policy: sandbox allow-scripts ...``: a notebook's HTML runs in an
opaque origin, so its scripts cannot read dashboard pages or their CSRF tokens.

Cross-site request forgery: ``POST /run`` needs the user's token (an HMAC of the user name
under a random per-process secret, embedded in the form; a server restart makes old pages
stale: reload) *and* a same-origin request: ``Sec-Fetch-Site`` (when sent) must be
``same-origin`` or ``none`` and ``Origin`` (when sent) must match the ``Host`` header.

Errors: every error goes through :func:`error_response`, the one exception handler.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import quote, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..config import Settings, run_environment
from ..discovery import ScanCache
from ..environment import describe_data_source
from ..exceptions import JupycronError
from ..formatting import fmt_duration, fmt_mem, fmt_time_s, path_breaks
from ..ledger import NotebookHistory
from ..metrics import make_registry, render_metrics
from ..models import Run, RunStatus
from ..run_alerts import describe_finding_routing
from ..status import FINDING_ORDER, NotebookState, StatusRow, current_rows, finding_word
from ..status_icons import finding_icon, glyph, status_icon
from .auth import (
    AUTH_SCOPE_KEY,
    Authenticator,
    AuthMiddleware,
    AuthOutcome,
    Identity,
    check_csrf_token,
    csrf_token,
)
from .authoring import install as install_authoring
from .throttle import FailureThrottle

log = logging.getLogger(__name__)

__all__ = ["create_app", "error_response", "resolve_output", "run_now_argv"]

_HERE = Path(__file__).parent
FILTERS = ("failing", *(str(s) for s in NotebookState if not s.is_failure), "late")
FINDING_FILTERS = (*(str(level) for level in FINDING_ORDER), "none")
SORTS = ("path", "state", "finding", "last", "next", "duration", "failures")
HISTORY_STRIP = 20
RUN_LOG = ".web-run-now.log"
_STATE_ORDER = {str(s): i for i, s in enumerate(NotebookState)}   # declared most urgent first
_STATES = frozenset(str(s) for s in NotebookState)
_FINDING_ORDER = {str(level): i for i, level in enumerate(FINDING_ORDER)}
_OUTPUT_CSP = ("sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-downloads; "
               "frame-ancestors 'self'")
_PAGE_CSP = ("default-src 'self'; frame-src 'self'; style-src 'self'; script-src 'self'; "
             "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")


# --- helpers ---------------------------------------------------------------------------------

def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(utc=fmt_time_s, duration=fmt_duration, mem=fmt_mem,
                       urlpath=lambda p: quote(str(p)))
    env.globals.update(status_icon=status_icon, finding_icon=finding_icon, glyph=glyph,
                       finding_word=finding_word, wrap_path=path_breaks)
    return env


def resolve_output(output_dir: Path, rel: str) -> Path | None:
    """The file ``rel`` (already URL-decoded once) names inside ``output_dir``, or None.

    None for hidden parts, ``..``/``.``/empty parts, absolute paths, NUL bytes, backslashes,
    anything resolving (through symlinks) outside the folder, and non-regular files.
    """
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    root = Path(output_dir).resolve()
    try:
        full = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not full.is_relative_to(root) or not full.is_file():
        return None
    inside = full.relative_to(root).parts
    if any(p.startswith(".") for p in inside):  # a symlink pointing at a hidden file
        return None
    return full


def run_now_argv(settings: Settings, rel: str) -> list[str]:
    """``python -m jupycron --notebooks N --output O [--config C] <limits> run-now -- REL``.

    An argument list (no shell). The effective limits and kernel are passed as flags so the
    run uses the dashboard's settings even when they came from the dashboard's own flags; the
    environment (``JUPYCRON_*``, ``OONI_*``) is inherited.
    """
    argv = [sys.executable, "-m", "jupycron",
            "--notebooks", str(settings.notebooks), "--output", str(settings.output_dir)]
    if settings.config_file is not None:
        argv += ["--config", str(settings.config_file)]
    argv += ["--concurrency", str(settings.concurrency),
             "--default-max-mem", str(settings.default_max_mem_mb),
             "--max-mem", str(settings.max_mem_mb),
             "--default-max-runtime", repr(float(settings.default_max_runtime_s)),
             "--max-runtime", repr(float(settings.max_runtime_s)),
             "--kernel", settings.kernel_name]
    return argv + ["run-now", "--", rel]


LAUNCH_LOG_TAIL = 16 * 1024
"""Bytes of a failed Run now's output shown on the notebook page (its end)."""


@dataclass
class _Launch:
    proc: subprocess.Popen[bytes]
    started: float
    by: str
    output: IO[bytes]   # the process's stdout and stderr (an unnamed temporary file)
    header: str


@dataclass(frozen=True)
class LaunchFailure:
    """A Run now that did not succeed, shown to logged-in users on the notebook's page."""

    code: int
    message: str
    log: str            # the end of what the run-now process printed


class _Launcher:
    """Run-now subprocesses started by this server: tracked to show "starting" and reaped.

    Each process writes to its own temporary file; when it ends, its output is appended to
    ``<output>/.web-run-now.log`` (the record) and, when it did not succeed, kept in
    :attr:`failures` so the notebook page shows the log's end (the dashboard never serves
    the dot-file itself)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._active: dict[str, _Launch] = {}
        self.failures: dict[str, LaunchFailure] = {}   # rel -> the last launch that failed

    def poll(self) -> set[str]:
        """Reap finished processes; the notebooks whose run-now process is still alive."""
        with self._lock:
            for rel, launch in list(self._active.items()):
                code = launch.proc.poll()
                if code is None:
                    continue
                del self._active[rel]
                tail = self._finish(launch, code)
                if code != 0:
                    what = ("the run did not succeed (see its row below)" if code == 1 else
                            f"run-now exited with code {code} before or without recording a run")
                    self.failures[rel] = LaunchFailure(code, what, tail)
                    log.warning("run-now of %s exited with code %s", rel, code)
            return set(self._active)

    def _finish(self, launch: _Launch, code: int) -> str:
        """Append the launch's output to the run-now log; return its end (decoded)."""
        data = b""
        try:
            launch.output.seek(0)
            data = launch.output.read()
            with (self.settings.output_dir / RUN_LOG).open("ab") as logfh:
                logfh.write(launch.header.encode() + data + f"--- exit code {code}\n".encode())
        except OSError as exc:
            log.warning("cannot keep the output of a run-now: %s", exc)
        finally:
            launch.output.close()
        tail = data[-LAUNCH_LOG_TAIL:].decode("utf-8", "replace")
        return ("[...]\n" if len(data) > LAUNCH_LOG_TAIL else "") + tail

    def start(self, rel: str, user: str) -> None:
        argv = run_now_argv(self.settings, rel)
        out = self.settings.output_dir
        out.mkdir(parents=True, exist_ok=True)
        # the run environment again, for an app created without the CLI (which applied it)
        env = {**os.environ, **run_environment(self.settings)}
        with self._lock:
            if rel in self._active and self._active[rel].proc.poll() is None:
                raise HTTPException(409, f"{rel} is already starting")
            output = tempfile.TemporaryFile(prefix="jupycron-run-now-")
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        close_fds=True, cwd=str(out), env=env)
            except OSError:
                output.close()
                raise
            header = f"--- {datetime.now(UTC).isoformat()} {user}: {argv}\n"
            self._active[rel] = _Launch(proc, time.monotonic(), user, output, header)
            self.failures.pop(rel, None)
        log.info("run-now of %s started by %s (pid %d)", rel, user, proc.pid)


# --- the app ---------------------------------------------------------------------------------

class _Dashboard:
    def __init__(self, settings: Settings, metrics_auth: bool) -> None:
        self.settings = settings
        self.metrics_auth = metrics_auth
        self.cache = ScanCache()
        self.secret = secrets.token_bytes(32)
        self.env = _templates()
        self.launcher = _Launcher(settings)
        self.registry = make_registry(settings, self.cache)

    # auth ------------------------------------------------------------------------------
    def identity(self, request: Request) -> Identity:
        """The requester found by :class:`AuthMiddleware`, or an HTTP error (401, 429, 503)."""
        outcome = request.scope.get(AUTH_SCOPE_KEY)
        if not isinstance(outcome, AuthOutcome):
            raise JupycronError("the request was not authenticated (AuthMiddleware missing)")
        if outcome.error is not None:
            raise HTTPException(503, f"logins are refused: {outcome.error}")
        if outcome.retry_after is not None:
            raise HTTPException(429, "too many failed logins from your address; try again later",
                                headers={"Retry-After": FailureThrottle.retry_after_header(outcome.retry_after)})
        if outcome.identity is None:
            raise HTTPException(401, "log in with your team user name and password")
        return outcome.identity

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(base=request.scope.get("root_path", ""),
                                                      **ctx)
        return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": _PAGE_CSP})

    def rows(self, now: datetime) -> tuple[list[StatusRow], set[str]]:
        starting = self.launcher.poll()
        return current_rows(self.settings, now, self.cache), starting

    # pages -----------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        ident = self.identity(request)
        now = datetime.now(UTC)
        rows, starting = self.rows(now)
        late = {r.path for r in rows if r.late}
        state_filter = request.query_params.get("state", "")
        if state_filter and state_filter not in FILTERS and state_filter not in _STATES:
            raise HTTPException(400, f"unknown state filter {state_filter!r}; use one of "
                                f"{', '.join(FILTERS)}")
        finding_filter = request.query_params.get("finding", "")
        if finding_filter and finding_filter not in FINDING_FILTERS:
            raise HTTPException(400, f"unknown finding filter {finding_filter!r}; use one of "
                                f"{', '.join(FINDING_FILTERS)}")
        sort = request.query_params.get("sort", "path")
        if sort not in SORTS:
            raise HTTPException(400, f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
        desc = request.query_params.get("desc", "") in ("1", "true", "yes")
        counts = {f: sum(1 for r in rows if _matches(r, f, late, starting)) for f in FILTERS}
        finding_counts = {f: sum(1 for r in rows if _finding_key(r) == f) for f in FINDING_FILTERS}
        shown = [r for r in rows if (not state_filter or _matches(r, state_filter, late, starting))
                 and (not finding_filter or _finding_key(r) == finding_filter)]
        shown.sort(key=_sort_key(sort), reverse=desc)
        busy = any(r.state == "running" for r in rows) or bool(starting)
        return self.render(request, "dashboard.html", data_source=describe_data_source(), rows=shown, total=len(rows), counts=counts,
                           finding_filter=finding_filter, finding_filters=FINDING_FILTERS,
                           finding_counts=finding_counts,
                           state_filter=state_filter, sort=sort, desc=desc, late=late,
                           starting=starting, now=now, user=ident, filters=FILTERS,
                           refresh_s=5 if busy else 30, strip=HISTORY_STRIP)

    async def notebook(self, request: Request) -> Response:
        ident = self.identity(request)
        rel = request.path_params["path"]
        now = datetime.now(UTC)
        rows, starting = self.rows(now)
        row = next((r for r in rows if r.path == rel), None)
        if row is None:
            raise HTTPException(404, f"no autorun notebook {rel!r}")
        from ..runner import effective_limits  # the runner's own rule, not a copy of it
        mem_mb, runtime_s = effective_limits(self.settings, row.notebook)
        entry = row.history or NotebookHistory()
        latest_href = row.output_href
        kept_id = _kept_run_id(entry)
        runs = [_run_view(r, latest_href if r is _newest_with_output(entry) else None,
                          row.last_success_href if r.run_id == kept_id else None)
                for r in row.runs]
        return self.render(request, "notebook.html", row=row, runs=runs, now=now, user=ident,
                           mem_mb=mem_mb, runtime_s=runtime_s,
                           late=row.late_since,
                           starting=rel in starting,
                           launch_failure=self.launcher.failures.get(rel) if ident.can_write else None,
                           data_source=describe_data_source(),
                           finding_alerts=describe_finding_routing(self.settings, row.notebook),
                           csrf=csrf_token(self.secret, ident.user) if ident.user else "",
                           refresh_s=5 if (row.state == "running" or rel in starting) else 30)

    async def run(self, request: Request) -> Response:
        ident = self.identity(request)
        if not ident.can_write:
            raise HTTPException(401, "log in to run notebooks (anonymous access is read-only)")
        if not _same_origin(request):
            raise HTTPException(403, "cross-site request refused")
        form = await request.form()
        token = form.get("csrf_token")
        if not isinstance(token, str) or not check_csrf_token(self.secret, ident.user or "", token):
            raise HTTPException(403, "missing or stale form token: reload the page and try again")
        rel = form.get("notebook")
        if not isinstance(rel, str) or not rel:
            raise HTTPException(400, "the form has no notebook")
        rows, starting = self.rows(datetime.now(UTC))
        row = next((r for r in rows if r.path == rel), None)
        if row is None:
            raise HTTPException(404, f"no autorun notebook {rel!r}")
        if row.state == "running" or rel in starting:
            raise HTTPException(409, f"{rel} is already running")
        self.launcher.start(rel, ident.user or "")
        base = request.scope.get("root_path", "")
        return RedirectResponse(f"{base}/notebook/{quote(rel)}", status_code=303)

    async def output(self, request: Request) -> Response:
        self.identity(request)
        full = resolve_output(self.settings.output_dir, request.path_params["path"])
        if full is None:
            raise HTTPException(404, "no such output")
        ctype = mimetypes.guess_type(full.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/json", "image/svg+xml"):
            ctype += "; charset=utf-8"
        return FileResponse(full, media_type=ctype, headers={
            "Content-Security-Policy": _OUTPUT_CSP, "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache"})

    async def metrics(self, request: Request) -> Response:
        if self.metrics_auth:
            self.identity(request)
        return Response(render_metrics(self.registry),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    async def health(self, request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")


def _finding_key(row: StatusRow) -> str:
    """The finding filter ``row`` falls under: its level, or ``none`` (never reported)."""
    return str(row.finding.level) if row.finding is not None else "none"


def _matches(row: StatusRow, state: str, late: set[str], starting: set[str]) -> bool:
    if state == "failing":
        return row.state.is_failure
    if state == "late":
        return row.path in late
    if state == "running":
        return row.state == "running" or row.path in starting
    return row.state == state


def _sort_key(sort: str) -> Any:
    far = datetime.max.replace(tzinfo=UTC)
    keys = {
        "path": lambda r: r.path,
        "state": lambda r: (_STATE_ORDER.get(r.state, 99), r.path),
        "finding": lambda r: (_FINDING_ORDER.get(_finding_key(r), 99), r.path),
        "last": lambda r: (r.last_run_at or datetime.min.replace(tzinfo=UTC), r.path),
        "next": lambda r: (r.next_run or far, r.path),
        "duration": lambda r: (r.duration_s if r.duration_s is not None else -1.0, r.path),
        "failures": lambda r: (r.consecutive_failures, r.path),
    }
    return keys[sort]


def _same_origin(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return bool(parts.netloc) and parts.scheme in ("http", "https") and parts.netloc == host


def _newest_with_output(entry: NotebookHistory) -> Run | None:
    return next((r for r in entry.runs if r.output and r.status is not RunStatus.RUNNING), None)


def _kept_run_id(entry: NotebookHistory) -> str | None:
    kept = entry.last_success_output
    if not kept or ".success-" not in kept:
        return None
    return PurePosixPath(kept).name.rsplit(".success-", 1)[1].removesuffix(".html")


@dataclass(frozen=True)
class _RunView:
    run: Run
    latest_href: str | None
    kept_href: str | None


def _run_view(run: Run, latest: str | None, kept: str | None) -> _RunView:
    return _RunView(run, latest, kept)


async def error_response(request: Request, exc: Exception) -> Response:
    """The one exception handler: HTTP errors keep their status; jupycron errors are 500s
    with their message; anything else is a logged 500 without details."""
    headers: dict[str, str] = {}
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        headers.update(exc.headers or {})
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="jupycron", charset="UTF-8"'
    elif isinstance(exc, JupycronError):
        status, message = 500, str(exc)
        log.error("%s %s: %s", request.method, request.url.path, exc)
    else:
        status, message = 500, "internal error (see the server log)"
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    env: jinja2.Environment = request.app.state.dashboard.env
    html = env.get_template("error.html").render(status=status, message=message,
                                                 base=request.scope.get("root_path", ""))
    headers["Content-Security-Policy"] = _PAGE_CSP
    return HTMLResponse(html, status_code=status, headers=headers)


def create_app(settings: Settings, *, metrics_auth: bool = False) -> Starlette:
    """The dashboard app for ``settings`` (notebooks folder, output folder, web_* settings).

    ``metrics_auth``: require a user for ``/metrics`` too (default: open, as Prometheus
    scrapes without credentials; keep the port private or put the proxy in front).

    Example::

        uvicorn.run(create_app(load_settings()), host="127.0.0.1", port=8080)
    """
    dash = _Dashboard(settings, metrics_auth)
    routes = [
        Route("/", dash.index, methods=["GET"]),
        Route("/notebook/{path:path}", dash.notebook, methods=["GET"]),
        Route("/run", dash.run, methods=["POST"]),
        Route("/output/{path:path}", dash.output, methods=["GET"]),
        Route("/metrics", dash.metrics, methods=["GET"]),
        Route("/healthz", dash.health, methods=["GET"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Any] = {HTTPException: error_response, JupycronError: error_response,
                                Exception: error_response}
    app = Starlette(routes=routes, exception_handlers=handlers,
                    middleware=[Middleware(AuthMiddleware, authenticator=Authenticator(settings))])
    app.state.dashboard = dash
    install_authoring(app)  # /auth/check for nginx in front of the editor; "last saved by"
    if not settings.web_users and not settings.web_proxy_auth_header and not settings.web_anonymous_read:
        log.warning("no web users, no proxy auth header and no anonymous read: every page will "
                    "answer 401 (add a user with `jupycron passwd USER`)")
    return app

