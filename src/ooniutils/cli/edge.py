"""``ooniutils edge render nginx|haproxy``: the shipped proxy templates, rendered to stdout.

One option per template placeholder (``--server-name`` fills ``server_name``, …; list
placeholders take the option several times). The templates are package data, so this works
from an installed package::

    ooniutils edge render nginx --upstream 127.0.0.1:8000 --server-name api.example.org \\
        --cache-dir /var/cache/nginx/ooni-api --outputs-dir /var/lib/jupycron/output \\
        | sudo tee /etc/nginx/conf.d/ooni-api-cache.conf
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from ..edge import Backend, render_haproxy_config, render_nginx_config
from ..exceptions import OoniUtilsError

PASSWORD_ENV = "OONI_HAPROXY_STATS_PASSWORD"


@click.group("edge")
def group() -> None:
    """The edge proxies in front of the API and the test helpers (nginx, HAProxy)."""


@group.group("render")
def render() -> None:
    """Print a shipped proxy config, its placeholders filled from the options."""


def _emit(make: Callable[[], str]) -> None:
    try:
        text = make()
    except OoniUtilsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(text, nl=False)


@render.command("nginx")
@click.option("--upstream", required=True, metavar="HOST:PORT", help="The API back-end.")
@click.option("--server-name", required=True, help="Public name(s) of the site.")
@click.option("--cache-dir", required=True, metavar="DIR",
              help="proxy_cache_path folder (the same as OONI_NGINX_CACHE_DIR).")
@click.option("--outputs-dir", required=True, metavar="DIR",
              help="jupycron's outputs folder, served at /outputs/.")
@click.option("--listen", multiple=True, metavar="ADDR:PORT",
              help="Address to listen on; repeat for several.  [default: 80, [::]:80]")
@click.option("--access-log", default="/var/log/nginx/ooni-api.access.log", show_default=True,
              help="Access-log path (client addresses anonymised).")
@click.option("--cache-max-size", default="1g", show_default=True, help="Size cap of the cache.")
@click.option("--cache-valid", default="10s", show_default=True,
              help="How long a 200 answer stays fresh.")
@click.option("--real-ip-from", multiple=True, metavar="CIDR",
              help="Trusted proxy whose X-Forwarded-For is believed; repeat for several.")
def nginx_cmd(upstream: str, server_name: str, cache_dir: str, outputs_dir: str,
              listen: tuple[str, ...], access_log: str, cache_max_size: str, cache_valid: str,
              real_ip_from: tuple[str, ...]) -> None:
    """The nginx http-context snippet (caching API proxy + outputs), for /etc/nginx/conf.d/."""
    _emit(lambda: render_nginx_config(
        upstream=upstream, server_name=server_name, cache_dir=cache_dir, outputs_dir=outputs_dir,
        listen=listen or ("80", "[::]:80"), access_log=access_log, cache_max_size=cache_max_size,
        cache_valid=cache_valid, real_ip_from=real_ip_from))


def _backends(values: tuple[str, ...]) -> list[Backend]:
    out = []
    for v in values:
        name, sep, address = v.partition("=")
        if not sep or not name or not address:
            raise click.BadParameter(f"{v!r}: give NAME=HOST:PORT, e.g. th1=10.0.0.11:8080",
                                     param_hint="--server")
        out.append(Backend(name.strip(), address.strip()))
    return out


@render.command("haproxy")
@click.option("--bind", required=True, metavar="ADDR:PORT", help="Where probes connect.")
@click.option("--server", "servers", multiple=True, required=True, metavar="NAME=HOST:PORT",
              help="A test helper; repeat for each.")
@click.option("--stats-bind", required=True, metavar="ADDR:PORT", help="The stats page.")
@click.option("--stats-user", required=True, help="User of the stats page.")
@click.option("--stats-password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"File holding the stats password (else ${PASSWORD_ENV}; never on the "
                   "command line, where `ps` shows it).")
@click.option("--stats-allow", multiple=True, metavar="CIDR",
              help="Network allowed to open the stats page; repeat.  [default: 127.0.0.1/32, ::1/128]")
@click.option("--run-as", default="haproxy", show_default=True,
              help="User and group HAProxy drops to; '' when it runs unprivileged.")
@click.option("--chroot", default="/var/lib/haproxy", show_default=True,
              help="chroot folder; '' for none.")
@click.option("--log-target", default="/dev/log", show_default=True, help="Syslog target.")
@click.option("--maxconn", default=4096, show_default=True, type=click.IntRange(1),
              help="Connection cap (needs twice as many file descriptors).")
def haproxy_cmd(bind: str, servers: tuple[str, ...], stats_bind: str, stats_user: str,
                stats_password_file: Path | None, stats_allow: tuple[str, ...], run_as: str,
                chroot: str, log_target: str, maxconn: int) -> None:
    """A whole haproxy.cfg balancing the test helpers (keep the file 0640 root:haproxy)."""
    if stats_password_file is not None:
        password = stats_password_file.read_text().strip()
    else:
        password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        raise click.UsageError(f"give the stats password in --stats-password-file or ${PASSWORD_ENV}")
    backends = _backends(servers)
    _emit(lambda: render_haproxy_config(
        bind=bind, servers=backends, stats_bind=stats_bind,
        stats_user=stats_user, stats_password=password,
        stats_allow=stats_allow or ("127.0.0.1/32", "::1/128"), run_as=run_as or None,
        chroot=chroot or None, log_target=log_target, maxconn=maxconn))
