"""``ooniutils cache``: the nginx API cache (deploy/nginx/)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import config
from ..edge import check_nginx_cache_dir, purge_nginx_cache
from ..exceptions import OoniUtilsError


@click.group(name="cache")
def group() -> None:
    """The nginx cache in front of the measurement API."""


@group.command()
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="nginx proxy_cache_path folder (default: setting OONI_NGINX_CACHE_DIR).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def purge(cache_dir: Path | None, yes: bool) -> None:
    """Empty the nginx API cache, so the next requests go to the API.

    Meant for test hosts: on a production host every client then hits the API at once. The
    folder is checked first (every file must be an nginx cache file) and nothing is deleted
    when it does not look like an nginx cache. nginx keeps the purged keys in memory and
    answers MISS for them (it finds the file gone); reload nginx to reset its size accounting.
    """
    try:
        folder = cache_dir or Path(config.get("OONI_NGINX_CACHE_DIR", required=True) or "")
        files, temp = check_nginx_cache_dir(folder)
        click.echo("ooniutils cache purge is meant for test hosts: on a production host every "
                   "request goes to the API until the cache fills again.", err=True)
        size = sum(p.stat().st_size for p in files if p.exists())
        click.echo(f"{folder}: {len(files)} cached entries ({size} bytes)"
                   + (f", {len(temp)} being written (left alone)" if temp else ""), err=True)
        if not yes:
            click.confirm(f"Delete the {len(files)} cached entries in {folder}?", abort=True)
        result = purge_nginx_cache(folder)
    except OoniUtilsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {result.files} cached entries ({result.bytes} bytes) from "
               f"{result.cache_dir}")
    if result.errors:
        raise click.ClickException("could not delete: " + "; ".join(result.errors[:5]))
