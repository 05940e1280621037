"""``jupycron notebook-server``: the editor (Jupyter Notebook 7) on the notebooks folder.

Registered in :mod:`jupycron.cli` like the web commands; see :mod:`jupycron.authoring`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from .cli_web import _common, _logging, _settings, _UsageError
from .exceptions import JupycronError

__all__ = ["notebook_server_command"]


@click.command("notebook-server")
@_common
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Keep it local: nginx in front checks the users.")
@click.option("--port", default=8888, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on (nginx proxies /jupyter/ to it).")
@click.option("--base-url", default="/jupyter/", show_default=True,
              help="URL prefix the server answers under (the nginx location).")
@click.option("--allow-root", is_flag=True,
              help="Let Jupyter run as root (containers, CI); the systemd unit uses a plain user.")
@click.option("--print-command", is_flag=True,
              help="Print the Jupyter command line instead of starting it.")
def notebook_server_command(notebooks: Path | None, output: Path | None, config: Path | None,
                            host: str, port: int, base_url: str, allow_root: bool,
                            print_command: bool) -> None:
    """Serve the notebooks folder for editing (Jupyter Notebook 7, behind nginx).

    Kernels get the scheduled runs' environment without AUTORUN; saves record their author
    (shown on the dashboard). No token or password: nginx asks for the dashboard's users.
    """
    from .authoring import serve_editor, server_argv

    _logging()
    settings = _settings(notebooks, output, config)
    try:
        if print_command:
            click.echo(shlex.join(server_argv(settings, host, port, base_url,
                                               allow_root=allow_root)))
            return
        serve_editor(settings, host, port, base_url, allow_root=allow_root)
    except (JupycronError, OSError) as exc:
        raise _UsageError(str(exc)) from exc
