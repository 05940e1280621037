"""The ``jupycron`` command (also ``python -m jupycron``): a thin click layer over the library.

Options common to every command come before it (``jupycron --notebooks DIR tick``); they
override ``JUPYCRON_*`` variables and the TOML file (see :mod:`jupycron.config`).

Exit codes: 0 ok; 1 the run was not successful (run-now); 2 usage or configuration error
(bad option, bad path, unknown notebook); 3 the notebook is already running; 4 the history
cannot be read or written; 5 any other jupycron error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from .cli_common import install_alert_senders
from .cli_common import stop_on_signals as _stop_on_signals
from .config import Settings, apply_run_environment, load_settings
from .exceptions import (
    AlreadyRunning,
    ConfigError,
    HistoryError,
    JupycronError,
    NotebookNotFound,
    SpecError,
)
from .formatting import terminal_safe

log = logging.getLogger(__name__)

EXIT_NOT_SUCCESSFUL = 1
EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3
EXIT_HISTORY = 4
EXIT_OTHER = 5

_EXIT_CODES: list[tuple[type[JupycronError], int]] = [
    (ConfigError, EXIT_USAGE), (NotebookNotFound, EXIT_USAGE), (SpecError, EXIT_USAGE),
    (AlreadyRunning, EXIT_ALREADY_RUNNING), (HistoryError, EXIT_HISTORY),
]


class JupycronClickError(click.ClickException):
    """A :class:`JupycronError` shown as ``Error: ...`` with its own exit code."""

    def __init__(self, exc: JupycronError) -> None:
        super().__init__(str(exc))
        code = next((c for cls, c in _EXIT_CODES if isinstance(exc, cls)), EXIT_OTHER)
        self.exit_code = code  # type: ignore[misc]


def _fail(exc: JupycronError) -> NoReturn:
    raise JupycronClickError(exc) from exc


def _settings(ctx: click.Context) -> Settings:
    """The settings of this command, with the run environment applied (every run, alert check
    and child process of this command sees the config file's ``[ooniutils]`` values)."""
    obj = ctx.find_root().obj
    try:
        settings = load_settings(obj["overrides"], config_file=obj["config_file"])
        apply_run_environment(settings)
        install_alert_senders(settings)  # the scheduler's alert checks send through them
    except JupycronError as exc:
        _fail(exc)
    return settings


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except JupycronError as exc:
        _fail(exc)


def _drop_missing_alt_text(record: logging.LogRecord) -> bool:
    """Drop nbconvert's "Alternative text is missing on N image(s)": every chart a notebook
    draws is an image without a description, nbconvert then writes a generic ``alt`` itself,
    and the warning (one per run with a chart) only sends operators chasing nothing."""
    return not str(record.msg).startswith("Alternative text is missing")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--notebooks", type=click.Path(file_okay=False, path_type=Path),
              help="Folder scanned for **/*autorun*.ipynb [env JUPYCRON_NOTEBOOKS].")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="Outputs, history and summary.html [default <notebooks>/jupycron].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML settings file [env JUPYCRON_CONFIG].")
@click.option("--concurrency", type=click.IntRange(min=0),
              help="Max notebooks running at once (0 = CPU count).")
@click.option("--default-max-mem", "default_max_mem_mb", type=click.IntRange(min=1),
              help="MaxMem (MB) for notebooks that set none.")
@click.option("--max-mem", "max_mem_mb", type=click.IntRange(min=1),
              help="Upper bound (MB) on any notebook's MaxMem.")
@click.option("--default-max-runtime", "default_max_runtime_s", type=click.FloatRange(min=0, min_open=True),
              help="MaxRuntime (s) for notebooks that set none.")
@click.option("--max-runtime", "max_runtime_s", type=click.FloatRange(min=0, min_open=True),
              help="Upper bound (s) on any notebook's MaxRuntime.")
@click.option("--kernel", "kernel_name", help="Jupyter kernel used for runs [default python3].")
@click.option("-v", "--verbose", count=True, help="Debug log output.")
@click.pass_context
def main(ctx: click.Context, /, config_file: Path | None, verbose: int, **overrides: Any) -> None:
    """jupycron: run Jupyter notebooks on the schedule written in their first code cell."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("traitlets").addFilter(_drop_missing_alt_text)
    ctx.obj = {"overrides": overrides, "config_file": config_file}


@main.command()
@click.pass_context
def tick(ctx: click.Context) -> None:
    """Run every notebook that is due now, wait for them, exit (for a timer every minute)."""
    from . import scheduler

    settings = _settings(ctx)
    with _stop_on_signals() as stop:
        runs = _guard(lambda: scheduler.tick(settings, stop_event=stop))
    for run in runs:
        click.echo(terminal_safe(f"{run.notebook}: {run.status} ({run.duration_s or 0:.1f} s)"))


@main.command()
@click.option("--serve", is_flag=True, help="Also serve the web dashboard.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Dashboard address (--serve).")
@click.option("--port", default=8080, show_default=True, type=int, help="Dashboard port (--serve).")
@click.pass_context
def daemon(ctx: click.Context, serve: bool, host: str, port: int) -> None:
    """Run notebooks at their slots until SIGTERM/SIGINT (then kill running kernels, exit 0)."""
    from . import scheduler

    settings = _settings(ctx)
    web = None
    if serve:
        from .web import start_in_thread

        web = _guard(lambda: start_in_thread(settings, host, port))
    try:
        with _stop_on_signals() as stop:
            _guard(lambda: scheduler.run_forever(settings, stop))
    finally:
        if web is not None:
            web.stop()


@main.command(name="list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Show every autorun notebook: schedule, next run, last status and duration."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from . import limits
    from .environment import describe_data_source
    from .formatting import terminal_safe
    from .status import current_rows, finding_word

    settings = _settings(ctx)
    now = datetime.now(UTC)
    found = _guard(lambda: current_rows(settings, now))
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze paths into 80 columns
        console.width = 200

    def cell(text: str) -> Text:  # data, never rich markup ("[/x]" would raise)
        return Text(terminal_safe(text))

    console.print(cell(f"memory limit method: {limits.describe_method()}  |  notebooks: "
                       f"{settings.notebooks}  |  output: {settings.output_dir}"))
    console.print(cell(f"data source: {describe_data_source()}"), soft_wrap=True)
    out = settings.output_dir
    unusable = _output_problem(out)
    if unusable:
        console.print(cell(f"ERROR: the outputs folder {out} {unusable}: no run can start or "
                           "be recorded (setting `output`)"), soft_wrap=True)
    elif (line := _scheduler_line(settings)) is not None:
        console.print(cell(line))
    else:
        console.print(cell(f"scheduler: no heartbeat in {out} (no tick or daemon has used this "
                           "outputs folder yet)"), soft_wrap=True)
    table = Table(show_lines=False)
    table.add_column("notebook", overflow="fold")
    for col in ("schedule", "next run (UTC)", "last status", "finding", "last duration"):
        table.add_column(col, no_wrap=col not in ("last status", "finding"))
    for r in found:
        nxt = r.next_run.strftime("%Y-%m-%d %H:%M") if r.next_run else "-"
        status = r.label + (f" - {r.reason}" if r.reason and r.state != "success" else "")
        if r.late_since is not None:
            status += f" (late since {r.late_since:%Y-%m-%d %H:%M})"
        finding = "—"
        if r.finding is not None:
            finding = finding_word(r.finding.level) + (f": {r.finding.summary}" if r.finding.summary else "")
        dur = f"{r.duration_s:.1f} s" if r.duration_s is not None else "-"
        table.add_row(cell(r.path), cell(r.schedule or "-"),
                      cell(nxt + (" (due)" if r.due_now else "")), cell(status), cell(finding),
                      cell(dur))
    console.print(table)
    if unusable:
        ctx.exit(EXIT_HISTORY)


def _output_problem(out: Path) -> str | None:
    """Why no run could be recorded in the outputs folder ``out``, or None when it can (or
    could be created)."""
    if out.exists():
        if not out.is_dir():
            return "is not a folder"
        if not os.access(out, os.W_OK | os.X_OK):
            return "cannot be written (a read-only file system or no permission)"
        return None
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"does not exist and cannot be created in {parent}"
    return None


def _scheduler_line(settings: Settings) -> str | None:
    """The last scheduler heartbeat and its kernel pool, from ``<output>/.scheduler.json``."""
    from .metrics import read_heartbeat

    beat = read_heartbeat(settings)
    if not beat:
        return None
    text = f"scheduler: {beat.get('mode', '?')} pid {beat.get('pid', '?')}, heartbeat {beat.get('heartbeat', '?')}"
    pool = beat.get("pool")
    if isinstance(pool, dict) and pool.get("size"):
        pre = ",".join(pool.get("preimport") or []) or "off"
        idle_mb = pool.get("idle_pss_mb", pool.get("idle_rss_mb", 0))
        text += f"  |  pool: {pool.get('idle', 0)}/{pool['size']} ready, {idle_mb:.0f} MB idle"
        if pool.get("templates"):
            text += f" + {pool.get('templates_pss_mb', 0):.0f} MB in {pool['templates']} kernel template(s)"
        text += f", preimport {pre}"
        problems = {k: pool.get(k) for k in ("died_idle", "refused") if pool.get(k)}
        if problems:
            text += " (" + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in problems.items()) + ")"
    return text


@main.command(name="run-now")
@click.argument("path")
@click.pass_context
def run_now(ctx: click.Context, path: str) -> None:
    """Run PATH now; exit 0 on success, 1 otherwise.

    PATH is relative to the notebooks folder, or a path from the working directory (or an
    absolute one) to a notebook inside that folder."""
    from . import scheduler

    settings = _settings(ctx)
    path = _notebook_rel(settings.notebooks, path)
    with _stop_on_signals() as stop:
        run = _guard(lambda: scheduler.run_now(settings, path, stop_event=stop))
    detail = f": {run.error_name}: {run.error_value}" if run.error_name else ""
    click.echo(terminal_safe(f"{run.notebook}: {run.status} in {run.duration_s or 0:.1f} s{detail}"))
    if run.output:
        click.echo(terminal_safe(f"output: {settings.output_dir / run.output}"))
    ctx.exit(0 if run.status == "success" else EXIT_NOT_SUCCESSFUL)


def _notebook_rel(notebooks: Path, path: str) -> str:
    """``path`` relative to ``notebooks``: as given when it names a file there, else the
    file it names from the working directory when that lies inside the folder (what a shell
    completes), else as given (the scheduler then says what is wrong with it)."""
    root = notebooks.resolve()
    if not Path(path).is_absolute() and (root / path).is_file():
        return path
    here = Path(path).absolute()
    try:
        rel = here.parent.resolve().relative_to(root) / here.name
    except ValueError:
        return path
    return rel.as_posix() if here.is_file() else path


def _register_web_commands() -> None:
    """`serve`, `passwd` and `alerts` live in cli_web.py (they pull in the web stack)."""
    from .cli_web import alerts_command, passwd_command, serve_command

    main.add_command(serve_command, "serve")
    main.add_command(passwd_command, "passwd")
    main.add_command(alerts_command, "alerts")
    from .cli_authoring import nginx_site_command, notebook_server_command

    main.add_command(notebook_server_command, "notebook-server")
    main.add_command(nginx_site_command, "nginx-site")


_register_web_commands()
