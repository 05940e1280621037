"""The editor: a Jupyter Notebook 7 server on the notebooks folder, behind nginx.

``jupycron notebook-server`` (and ``deploy/systemd/jupycron-notebook-server.service``) replaces
itself (``exec``) with ``python -m notebook`` and the flags of :func:`server_argv`:

* root = the notebooks folder, base URL ``/jupyter/``, listening on 127.0.0.1 only; no token
  and no Jupyter password: nginx asks for the dashboard's user and password
  (``auth_request`` to the dashboard's ``/auth/check``) and passes the user name in the
  ``X-Jupycron-User`` header (:mod:`jupycron.authoring_jupyter`);
* kernels get the environment scheduled runs get (:func:`editor_env`: the same
  :func:`jupycron.kernels.env.kernel_env`, so the same data source, alert channels and state
  folder) minus ``AUTORUN`` and the run markers, start in the notebooks folder and use the
  runs' kernel (``kernel_name``);
* each save of a notebook records its author in ``<output>/.authors.json``
  (:mod:`jupycron.authors`), shown on the dashboard's notebook page;
* nothing contacts the network: no news or update check, the extension manager is read-only
  and its panel and the announcements plugin are disabled (``jupyter_config/``), no terminals.

Example::

    argv = server_argv(settings, port=8888)
    os.execve(argv[0], argv, editor_env(settings))
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from .config import Settings
from .exceptions import ConfigError

log = logging.getLogger(__name__)

__all__ = ["BASE_URL", "DEFAULT_PORT", "EDITOR_UNSET", "JUPYTER_CONFIG_DIR", "editor_env",
           "serve_editor", "server_argv", "without_run_markers"]

BASE_URL = "/jupyter/"
DEFAULT_PORT = 8888
# What marks a process as a scheduled run: an editor kernel must have none of it, so
# `ooniutils.autorun` is False there and nothing is alerted from a half-written notebook.
EDITOR_UNSET = ("AUTORUN", "JUPYCRON_RUN_ID", "JUPYCRON_NOTEBOOK")
JUPYTER_CONFIG_DIR = Path(__file__).parent / "jupyter_config"


def without_run_markers(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without :data:`EDITOR_UNSET`."""
    return {k: v for k, v in env.items() if k not in EDITOR_UNSET}


def editor_env(settings: Settings) -> dict[str, str]:
    """The environment of the server and so of every kernel it starts: what a scheduled run's
    kernel gets (:func:`jupycron.kernels.env.kernel_env`) without the run markers, plus our
    Jupyter configuration folder first on ``JUPYTER_CONFIG_PATH``."""
    from .kernels.env import kernel_env  # the runs' own rule, not a copy of it

    env = without_run_markers(kernel_env("editor", "", settings.output_dir))
    paths = [str(JUPYTER_CONFIG_DIR)] + [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(
        os.pathsep) if p]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(paths)
    return env


def server_argv(settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                base_url: str = BASE_URL, *, allow_root: bool = False) -> list[str]:
    """The ``python -m notebook`` command line (every setting as a flag: flags win over any
    Jupyter config file on the host). ``allow_root``: Jupyter refuses to run as root
    otherwise (containers, CI); the systemd unit runs it as the unprivileged ``jupyter``."""
    if not base_url.startswith("/") or not base_url.endswith("/"):
        raise ConfigError(f"base URL {base_url!r} must start and end with '/'", "base_url")
    if not 0 <= port < 65536:
        raise ConfigError(f"port {port} is not a TCP port", "port")
    glue = "jupycron.authoring_jupyter"
    return [
        sys.executable, "-m", "notebook", "--no-browser",
        f"--ServerApp.ip={host}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={settings.notebooks}",
        f"--ServerApp.base_url={base_url}",
        # nginx forwards the public Host header; the server still listens on `host` only
        "--ServerApp.allow_remote_access=True",
        f"--ServerApp.identity_provider_class={glue}.ProxyUserIdentityProvider",
        f"--ServerApp.contents_manager_class={glue}.AuthoringContentsManager",
        f"--AuthoringContentsManager.authors_dir={settings.output_dir}",
        f"--ServerApp.kernel_manager_class={glue}.EditorKernelManager",
        f"--EditorKernelManager.default_kernel_name={settings.kernel_name}",
        "--ServerApp.terminals_enabled=False",
        # no network: no news, no update check, no PyPI look-ups from the extension manager
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ] + (["--ServerApp.allow_root=True"] if allow_root else [])


def serve_editor(settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 base_url: str = BASE_URL, *, allow_root: bool = False) -> None:
    """Replace this process with the Jupyter server (never returns on success)."""
    if not settings.notebooks.is_dir():
        raise ConfigError(f"notebooks folder {settings.notebooks} does not exist", "notebooks")
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    argv = server_argv(settings, host, port, base_url, allow_root=allow_root)
    env = editor_env(settings)
    log.info("notebook server on http://%s:%d%s for %s", host, port, base_url, settings.notebooks)
    os.execve(argv[0], argv, env)
