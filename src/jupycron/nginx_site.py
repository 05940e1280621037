"""Rendering ``site_templates/jupycron-notebooks.conf.j2`` (dashboard + editor + ACME
challenges) and ``site_templates/acme-challenge.conf.j2`` (the challenge location alone, for
other sites).

The templates ship inside the package (package data, the only copy), so an installed
jupycron renders them with no source tree: ``jupycron nginx-site --help`` prints the site
from the command line; the tests start the real nginx on what these return, so the file an
operator installs is the file that was tested::

    from jupycron.nginx_site import render_notebooks_site
    text = render_notebooks_site(server_name="monitoring.example.org",
                                 dashboard="127.0.0.1:8080", editor="127.0.0.1:8888",
                                 challenge_dir="/var/lib/dehydrated/acme-challenges",
                                 tls_cert="/etc/nginx/tls/monitoring.example.org/fullchain.pem",
                                 tls_key="/etc/nginx/tls/monitoring.example.org/privkey.pem")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jinja2

from .exceptions import ConfigError

__all__ = ["ACME_TEMPLATE", "NGINX_DIR", "SITE_TEMPLATE", "render_acme_location",
           "render_notebooks_site"]

NGINX_DIR = Path(__file__).resolve().parent / "site_templates"
SITE_TEMPLATE = NGINX_DIR / "jupycron-notebooks.conf.j2"
ACME_TEMPLATE = NGINX_DIR / "acme-challenge.conf.j2"


def _safe(name: str, value: str | os.PathLike[str]) -> str:
    # A newline, ';', brace or quote would let a value inject directives.
    text = str(value)
    if not text or any(c in text for c in "\n;{}\"'$") or text != text.strip():
        raise ConfigError(f"{name}={text!r} is empty or holds a character not allowed in an "
                          f"nginx config (newline, ';', braces, quotes, '$', edge spaces)", name)
    return text


def _render(template: Path, **values: object) -> str:
    if not template.is_file():
        raise ConfigError(f"template {template} not found (a broken installation: it ships "
                          f"as package data of jupycron)", "template")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template.parent),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    try:
        return env.get_template(template.name).render(**values)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{template.name}: {exc}", "template") from exc


def render_acme_location(challenge_dir: str | os.PathLike[str]) -> str:
    """The ``location /.well-known/acme-challenge/`` snippet (server context) serving
    dehydrated's ``WELLKNOWN`` folder, for a site not rendered from the notebooks template."""
    return _render(ACME_TEMPLATE, challenge_dir=_safe("challenge_dir",
                                                      str(challenge_dir).rstrip("/")))


def render_notebooks_site(*, server_name: str, dashboard: str, editor: str,
                          challenge_dir: str | os.PathLike[str],
                          listen: Sequence[str] = ("80", "[::]:80"),
                          listen_tls: Sequence[str] = ("443", "[::]:443"),
                          tls_cert: str | os.PathLike[str] = "",
                          tls_key: str | os.PathLike[str] = "",
                          template: Path = SITE_TEMPLATE) -> str:
    """The dashboard + editor site (an http-context snippet); placeholders as documented in
    deploy/nginx/README.md. Without ``tls_cert`` one plain-HTTP server serves everything;
    with it, HTTP serves only the ACME challenges and redirects the rest to HTTPS."""
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("tls_cert and tls_key go together", "tls_cert")
    if not listen or (tls_cert and not listen_tls):
        raise ConfigError("nothing to listen on", "listen")
    return _render(
        template, server_name=_safe("server_name", server_name),
        dashboard=_safe("dashboard", dashboard), editor=_safe("editor", editor),
        challenge_dir=_safe("challenge_dir", str(challenge_dir).rstrip("/")),
        listen=[_safe("listen", a) for a in listen],
        listen_tls=[_safe("listen_tls", a) for a in listen_tls],
        tls_cert=_safe("tls_cert", tls_cert) if tls_cert else "",
        tls_key=_safe("tls_key", tls_key) if tls_key else "")
