"""``jupycron notebook-server``: the editor (Jupyter Notebook 7) on the notebooks folder.

Registered in :mod:`jupycron.cli` like the web commands; see :mod:`jupycron.authoring`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from .cli_web import _common, _logging, _settings, _UsageError
from .exceptions import JupycronError

__all__ = ["nginx_site_command", "notebook_server_command"]


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


@click.command("nginx-site")
@click.option("--server-name", help="Public name of the site (and of its certificate).")
@click.option("--dashboard", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where `jupycron serve` listens.")
@click.option("--editor", default="127.0.0.1:8888", show_default=True, metavar="HOST:PORT",
              help="Where `jupycron notebook-server` listens.")
@click.option("--challenge-dir", default="/var/lib/dehydrated/acme-challenges", show_default=True,
              metavar="DIR", help="dehydrated's WELLKNOWN folder, served at /.well-known/acme-challenge/.")
@click.option("--listen", multiple=True, metavar="ADDR:PORT",
              help="Plain-HTTP listen address (repeatable; default 80 and [::]:80).")
@click.option("--listen-tls", multiple=True, metavar="ADDR:PORT",
              help="HTTPS listen address with --tls-cert (repeatable; default 443 and [::]:443).")
@click.option("--tls-cert", default="", metavar="FILE",
              help="Certificate chain deployed by deploy/dehydrated/hook.sh (none: HTTP only).")
@click.option("--tls-key", default="", metavar="FILE", help="Its private key (with --tls-cert).")
@click.option("--acme-only", is_flag=True,
              help="Print only the /.well-known/acme-challenge/ location, for another site.")
def nginx_site_command(server_name: str | None, dashboard: str, editor: str, challenge_dir: str,
                       listen: tuple[str, ...], listen_tls: tuple[str, ...], tls_cert: str,
                       tls_key: str, acme_only: bool) -> None:
    """Print the nginx site of the dashboard and the notebook editor (one login, ACME
    challenges) from the template shipped in the package; every placeholder is an option.

        jupycron nginx-site --server-name monitoring.example.org \\
            --tls-cert /etc/nginx/tls/monitoring.example.org/fullchain.pem \\
            --tls-key /etc/nginx/tls/monitoring.example.org/privkey.pem \\
            > /etc/nginx/conf.d/jupycron-notebooks.conf
    """
    from .nginx_site import render_acme_location, render_notebooks_site

    try:
        if acme_only:
            text = render_acme_location(challenge_dir)
        else:
            if not server_name:
                raise click.UsageError("--server-name is required (or --acme-only)")
            text = render_notebooks_site(
                server_name=server_name, dashboard=dashboard, editor=editor,
                challenge_dir=challenge_dir, listen=listen or ("80", "[::]:80"),
                listen_tls=listen_tls or ("443", "[::]:443"), tls_cert=tls_cert, tls_key=tls_key)
    except JupycronError as exc:
        raise _UsageError(str(exc)) from exc
    click.echo(text, nl=False)
