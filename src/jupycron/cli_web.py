"""Click commands for the dashboard and alerts; registered in :mod:`jupycron.cli`.

``serve``, ``passwd`` and ``alerts`` are standalone :class:`click.Command` objects so the CLI
group adds them with ``main.add_command(serve_command, "serve")`` etc. Each takes the common
``--notebooks/--output/--config`` options and maps errors to exit code 2 (usage/config).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from .cli_common import install_alert_senders, stop_on_signals
from .config import Settings, apply_run_environment, load_settings
from .exceptions import JupycronError
from .formatting import terminal_safe

__all__ = ["alerts_command", "passwd_command", "serve_command"]

log = logging.getLogger(__name__)


class _UsageError(click.ClickException):
    exit_code = 2


def _settings(notebooks: Path | None, output: Path | None, config: Path | None) -> Settings:
    """Settings from this command's options over the group's (``jupycron --notebooks ... serve``:
    the group keeps ``{"overrides": {...}, "config_file": ...}`` in the root context's obj)."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    group = root if isinstance(root, dict) else {}
    overrides = {**(group.get("overrides") or {})}
    overrides.update({k: v for k, v in (("notebooks", notebooks), ("output", output)) if v is not None})
    try:
        settings = load_settings(overrides, config_file=config or group.get("config_file"))
        apply_run_environment(settings)  # the run environment of every Run now and alert check
        install_alert_senders(settings)  # the alert checks of `serve` and `alerts` send through them
    except JupycronError as exc:
        raise _UsageError(str(exc)) from exc
    return settings


def _common(fn: Any) -> Any:
    fn = click.option("--config", "config", type=click.Path(path_type=Path), default=None,
                      help="TOML settings file (default $JUPYCRON_CONFIG).")(fn)
    fn = click.option("--output", type=click.Path(path_type=Path), default=None,
                      help="Output folder (default <notebooks>/jupycron).")(fn)
    fn = click.option("--notebooks", type=click.Path(path_type=Path), default=None,
                      help="Notebooks folder.")(fn)
    return fn


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command("serve")
@_common
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--metrics-auth/--no-metrics-auth", default=False, show_default=True,
              help="Require a user for /metrics too (Prometheus scrapes without by default).")
@click.option("--alerts/--no-alerts", default=True, show_default=True,
              help="Check run-state alerts every minute when alert_channels is set.")
def serve_command(notebooks: Path | None, output: Path | None, config: Path | None, host: str,
                  port: int, metrics_auth: bool, alerts: bool) -> None:
    """Serve the web dashboard (status, history, outputs, run now, /metrics)."""
    from .web.server import serve

    _logging()
    settings = _settings(notebooks, output, config)
    try:
        serve(settings, host, port, metrics_auth=metrics_auth, alerts=alerts)
    except JupycronError as exc:
        raise _UsageError(str(exc)) from exc


@click.command("passwd")
@click.argument("user")
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="TOML settings file to edit (default $JUPYCRON_CONFIG); created if missing.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input (no prompt).")
def passwd_command(user: str, config: Path | None, password_stdin: bool) -> None:
    """Add USER to the dashboard's users, or change their password (argon2 hash in the
    [web_users] table of the config file)."""
    from .web.auth import set_password

    ctx = click.get_current_context()
    root = ctx.find_root().obj
    group_config = root.get("config_file") if isinstance(root, dict) else None
    target = config or group_config or (
        Path(os.environ["JUPYCRON_CONFIG"]) if os.environ.get("JUPYCRON_CONFIG") else None)
    if target is None:
        raise _UsageError("no config file: pass --config FILE or set JUPYCRON_CONFIG")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(f"Password for {user}", hide_input=True,
                                confirmation_prompt=True)
    try:
        is_new = set_password(target, user, password)
    except JupycronError as exc:
        raise _UsageError(str(exc)) from exc
    click.echo(f"{'added' if is_new else 'changed the password of'} {user} in {target}")


@click.command("alerts")
@_common
def alerts_command(notebooks: Path | None, output: Path | None, config: Path | None) -> None:
    """Check run-state and finding alerts once (failing, late, finding, recovered) and send
    what changed."""
    from .run_alerts import notify_changes

    _logging()
    settings = _settings(notebooks, output, config)
    if not settings.alert_channels.strip():
        # A check that can tell no one must not look like one that found nothing to tell.
        raise _UsageError("alert_channels is not set: run-state and finding alerts have no "
                          "channel to go to (set alert_channels = \"alertmanager,slack,ntfy\" "
                          "or some of them, with their [ooniutils] endpoints)")
    try:
        # SIGTERM/SIGINT cancel the delivery in flight; what was not sent is kept for the
        # next check (recorded in the alert state) and the exit code is 1.
        with stop_on_signals() as stop:
            deliveries = notify_changes(settings, cancel=stop)
    except JupycronError as exc:
        raise _UsageError(str(exc)) from exc
    for d in deliveries:
        click.echo(terminal_safe(f"{d.channel}\t{d.action}\t{d.kind}\t{d.notebook}\t"
                                 f"{'ok' if d.ok else 'error: ' + (d.error or '')}"))
    if any(not d.ok for d in deliveries):
        sys.exit(1)
