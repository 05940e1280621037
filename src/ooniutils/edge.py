"""Edge proxies: rendering the shipped nginx / HAProxy templates, and emptying the nginx cache.

The templates are package data (``ooniutils/edge_templates/``, the single copy; their notes
stay in ``deploy/nginx/README.md`` and ``deploy/haproxy/README.md``), so an installed package
renders them with ``ooniutils edge render nginx|haproxy``. The renderers below are what the
tests use to start the real proxies, so the file an operator installs is the file that was
tested::

    from ooniutils.edge import render_nginx_config
    text = render_nginx_config(upstream="127.0.0.1:8000", server_name="api.example.org",
                               cache_dir="/var/cache/nginx/ooni-api",
                               outputs_dir="/var/lib/jupycron/output")

:func:`purge_nginx_cache` deletes the cached entries under a ``proxy_cache_path`` folder,
after checking that every file there really is an nginx cache file (see its docstring).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from .exceptions import ConfigError

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "edge_templates"
NGINX_TEMPLATE = TEMPLATES_DIR / "ooni-api-cache.conf.j2"
HAPROXY_TEMPLATE = TEMPLATES_DIR / "ooni-test-helpers.cfg.j2"

# nginx names a cache entry after the MD5 of its key; with use_temp_path=off the entry is
# first written under a 10-digit temporary name in the same folder, then renamed.
_CACHE_NAME = re.compile(r"^[0-9a-f]{32}$")
_TEMP_NAME = re.compile(r"^[0-9]{10}$")
_LEVEL_NAME = re.compile(r"^[0-9a-f]{1,2}$")
# The binary header (version, validity, ETag, ...) is a few hundred bytes; "\nKEY: " follows it.
_KEY_MARKER = b"\nKEY: "
_HEADER_SCAN = 4096
_REFUSED_DIRS = {Path(p) for p in ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib",
                                   "/proc", "/root", "/sbin", "/sys", "/tmp", "/usr", "/var",
                                   "/var/cache", "/var/cache/nginx", "/var/lib")}


def _render(template: Path, **values: object) -> str:
    """Render ``template`` with Jinja2; a missing placeholder raises :class:`ConfigError`."""
    if not template.is_file():
        raise ConfigError(f"template {template} not found (a broken install? reinstall the "
                          f"package: it ships them under ooniutils/edge_templates/)")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    try:
        return env.from_string(template.read_text()).render(**values)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{template.name}: {exc}") from exc


def _safe_value(name: str, value: str) -> str:
    # A newline, ';' or brace would let a value inject directives into the generated file.
    if not value or any(c in value for c in "\n;{}\"'") or value != value.strip():
        raise ConfigError(f"{name}={value!r} is empty or holds a character not allowed in a "
                          f"proxy config (newline, ';', braces, quotes, edge spaces)")
    return value


def render_nginx_config(*, upstream: str, server_name: str, cache_dir: str | os.PathLike[str],
                        outputs_dir: str | os.PathLike[str],
                        listen: Sequence[str] = ("80", "[::]:80"),
                        access_log: str | os.PathLike[str] = "/var/log/nginx/ooni-api.access.log",
                        cache_max_size: str = "1g", cache_valid: str = "10s",
                        real_ip_from: Sequence[str] = (),
                        template: Path = NGINX_TEMPLATE) -> str:
    """Render ``ooniutils/edge_templates/ooni-api-cache.conf.j2`` (an http-context snippet).

    Each argument fills the placeholder of the same name (documented in deploy/nginx/README.md).
    ``outputs_dir`` loses any trailing slash (the template adds one for ``alias``).
    Raises :class:`ConfigError` naming the argument when a value could inject directives.
    """
    values = {
        "upstream": _safe_value("upstream", upstream),
        "server_name": _safe_value("server_name", server_name),
        "cache_dir": _safe_value("cache_dir", str(cache_dir)),
        "outputs_dir": _safe_value("outputs_dir", str(outputs_dir).rstrip("/") or "/"),
        "listen": [_safe_value("listen", a) for a in listen],
        "access_log": _safe_value("access_log", str(access_log)),
        "cache_max_size": _safe_value("cache_max_size", cache_max_size),
        "cache_valid": _safe_value("cache_valid", cache_valid),
        "real_ip_from": [_safe_value("real_ip_from", n) for n in real_ip_from],
    }
    if not values["listen"]:
        raise ConfigError("listen: give at least one address:port")
    return _render(template, **values)


@dataclass(frozen=True)
class Backend:
    """One HAProxy server line: ``name`` (letters, digits, ``-_.``) and ``address`` host:port."""

    name: str
    address: str


def render_haproxy_config(*, bind: str, servers: Sequence[Backend], stats_bind: str,
                          stats_user: str, stats_password: str,
                          stats_allow: Sequence[str] = ("127.0.0.1/32", "::1/128"),
                          run_as: str | None = "haproxy", chroot: str | None = "/var/lib/haproxy",
                          log_target: str = "/dev/log", maxconn: int = 4096,
                          template: Path = HAPROXY_TEMPLATE) -> str:
    """Render ``ooniutils/edge_templates/ooni-test-helpers.cfg.j2`` (a whole haproxy.cfg).

    ``run_as`` / ``chroot`` are None when HAProxy runs unprivileged (the tests); ``stats_allow``
    lists the source networks that may open the stats page (it also needs ``stats_user`` and
    ``stats_password``). ``maxconn`` needs twice as many file descriptors (ulimit -n). Raises :class:`ConfigError` naming the bad argument.
    """
    if not servers:
        raise ConfigError("servers: give at least one test helper")
    names = [s.name for s in servers]
    for s in servers:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", s.name):
            raise ConfigError(f"server name {s.name!r} may only hold letters, digits, '-_.'")
        _safe_value(f"address of {s.name}", s.address)
    if not isinstance(maxconn, int) or maxconn < 1:
        raise ConfigError(f"maxconn must be a positive integer, got {maxconn!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"server names must be unique, got {names}")
    for n, v in (("stats_user", stats_user), ("stats_password", stats_password)):
        if not v or any(c.isspace() or c in ":#\"'\\" for c in v):
            raise ConfigError(f"{n} must be non-empty, without spaces, ':', '#', quotes or '\\'")
    return _render(
        template, bind=_safe_value("bind", bind), servers=list(servers),
        stats_bind=_safe_value("stats_bind", stats_bind), stats_user=stats_user,
        stats_password=stats_password,
        stats_allow=[_safe_value("stats_allow", n) for n in stats_allow] or ["127.0.0.1/32"],
        run_as=run_as and _safe_value("run_as", run_as), chroot=chroot and _safe_value("chroot", chroot),
        log_target=_safe_value("log_target", log_target), maxconn=maxconn,
    )


@dataclass
class PurgeResult:
    """What :func:`purge_nginx_cache` did: files removed, their bytes, temp files left alone."""

    cache_dir: Path
    files: int = 0
    bytes: int = 0
    skipped_temp: int = 0
    dirs: int = 0
    errors: list[str] = field(default_factory=list)


def _looks_like_cache_file(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEADER_SCAN)
    except OSError:
        return False
    return _KEY_MARKER in head


def check_nginx_cache_dir(cache_dir: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """Check that ``cache_dir`` looks like an nginx ``proxy_cache_path`` folder.

    Returns (cache files, temporary files). Raises :class:`ConfigError` (setting
    ``OONI_NGINX_CACHE_DIR``) naming what is wrong: a system folder, a missing folder, a
    symlink, or the first entry that is not nginx's: a sub-folder not named like a cache level
    (1-2 hex digits), or a file that is neither ``<32 hex>`` starting with nginx's binary
    header and a ``KEY:`` line, nor a 10-digit temporary file.
    """
    setting = "OONI_NGINX_CACHE_DIR"
    raw = Path(cache_dir)
    if not raw.is_absolute():
        raise ConfigError(f"cache folder {raw} must be an absolute path", setting)
    root = Path(os.path.normpath(raw))
    if root in _REFUSED_DIRS or root == Path.home():
        raise ConfigError(f"refusing to purge {root}: a system folder, not a cache folder", setting)
    if root.is_symlink():
        raise ConfigError(f"refusing to purge {root}: it is a symlink; give the real folder", setting)
    if not root.is_dir():
        raise ConfigError(f"cache folder {root} does not exist or is not a folder", setting)
    cache_files: list[Path] = []
    temp_files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        for d in dirnames:
            if depth >= 3 or not _LEVEL_NAME.fullmatch(d) or (here / d).is_symlink():
                raise ConfigError(f"refusing to purge {root}: {here / d} is not an nginx cache "
                                  f"level folder (1-2 hex digits, at most 3 levels)", setting)
        for f in filenames:
            p = here / f
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"refusing to purge {root}: {p} is not a regular file", setting)
            if _TEMP_NAME.fullmatch(f):
                temp_files.append(p)
            elif _CACHE_NAME.fullmatch(f) and _looks_like_cache_file(p):
                cache_files.append(p)
            else:
                raise ConfigError(f"refusing to purge {root}: {p} is not an nginx cache file "
                                  f"(name not 32 hex digits, or no 'KEY: ' line after nginx's "
                                  f"binary header)", setting)
    return cache_files, temp_files


def purge_nginx_cache(cache_dir: str | os.PathLike[str]) -> PurgeResult:
    """Delete every cached entry under ``cache_dir`` (checked first, see
    :func:`check_nginx_cache_dir`; nothing is deleted when the check fails).

    Temporary files (entries nginx is writing right now) are left alone, and so is the folder
    itself; emptied level folders are removed (nginx recreates them). Caveat: a running nginx
    keeps the keys of deleted entries in its shared-memory zone until they go ``inactive``;
    such a key is served as a MISS (nginx finds the file gone and fetches it again), and the
    cache manager's size accounting lags until those keys expire. Reloading nginx resets it.
    """
    root = Path(os.path.normpath(Path(cache_dir)))
    cache_files, temp_files = check_nginx_cache_dir(root)
    result = PurgeResult(cache_dir=root, skipped_temp=len(temp_files))
    for p in cache_files:
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            continue  # nginx's cache manager got there first
        except OSError as exc:
            result.errors.append(f"{p}: {exc.strerror}")
            continue
        result.files += 1
        result.bytes += size
    for dirpath, _dirnames, _files in os.walk(root, topdown=False):
        here = Path(dirpath)
        if here != root:
            try:
                here.rmdir()
                result.dirs += 1
            except OSError:
                pass  # not empty (a temp file) or just refilled by nginx
    log.info("purged %d files (%d bytes) from %s", result.files, result.bytes, root)
    return result
