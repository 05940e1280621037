"""Classes the Jupyter server loads (by dotted name, see :func:`jupycron.authoring.server_argv`).

* :class:`ProxyUserIdentityProvider`: the user is the name nginx put in the
  ``X-Jupycron-User`` header after the dashboard's ``/auth/check`` accepted the browser's
  credentials (``auth_request``). A request without it is refused (403). This is only safe
  because the server listens on 127.0.0.1 and the nginx site overwrites the header: a local
  process that can reach the port can claim any name (see deploy/nginx/README.md).
* :class:`AuthoringContentsManager`: Jupyter's file contents manager plus a post-save hook that
  records who saved each notebook in ``<output>/.authors.json`` (:mod:`jupycron.authors`).
* :class:`EditorKernelManager`: every kernel starts without ``AUTORUN`` and the run markers
  (:func:`jupycron.authoring.without_run_markers`), whatever the server's environment or the
  request says, and in the notebooks folder, as scheduled runs do.

The hook receives no request, so the identity provider hands the user over in a context
variable: tornado runs each request in its own asyncio task, the provider runs in that task
(``prepare``) and the contents handler's ``save`` -> ``run_post_save_hooks`` in the same one.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
from pathlib import Path
from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Unicode

from .authoring import without_run_markers
from .authors import record_save

log = logging.getLogger(__name__)

__all__ = ["USER_HEADER", "AuthoringContentsManager", "EditorKernelManager",
           "ProxyUserIdentityProvider", "record_author_hook"]

USER_HEADER = "X-Jupycron-User"
# The dashboard's user-name rule (jupycron.web.auth.validate_user).
_USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_CURRENT_USER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jupycron_editor_user", default=None)


class ProxyUserIdentityProvider(IdentityProvider):
    """The user named by the login proxy's ``X-Jupycron-User`` header; no token, no login page."""

    token = Unicode("")

    def get_user(self, handler: Any) -> User | None:  # a tornado RequestHandler
        name = (handler.request.headers.get(USER_HEADER) or "").strip()
        if not _USER_RE.match(name):
            if name:
                self.log.warning("refusing %s: malformed %s header", handler.request.path,
                                 USER_HEADER)
            _CURRENT_USER.set(None)
            return None
        _CURRENT_USER.set(name)
        return User(username=name, name=name, display_name=name)

    @property
    def auth_enabled(self) -> bool:
        return True

    @property
    def login_available(self) -> bool:
        return False  # nginx asks for the password, not Jupyter

    @property
    def logout_available(self) -> bool:
        return False

    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        if app.ip not in ("127.0.0.1", "::1", "localhost"):
            app.log.warning("the notebook server trusts the %s header but listens on %r: anyone "
                            "who reaches it can claim a user; bind it to 127.0.0.1 behind nginx",
                            USER_HEADER, app.ip)
        app.log.info("users come from the %s header set by nginx (auth_request)", USER_HEADER)


def record_author_hook(model: dict[str, Any], os_path: str, contents_manager: Any) -> None:
    """Post-save hook: record the request's user as the notebook's last author."""
    if model.get("type") != "notebook":
        return
    authors_dir = getattr(contents_manager, "authors_dir", "")
    if not authors_dir:
        return
    root = Path(contents_manager.root_dir).resolve()
    rel = Path(os_path).resolve().relative_to(root).as_posix()
    user = _CURRENT_USER.get()
    if user is None:
        # Every request through nginx names a user; a save without one did not come from a
        # browser session. Say so rather than pin it on someone.
        log.warning("%s saved without a user: authorship not recorded", rel)
        return
    record_save(Path(authors_dir), rel, user)


class AuthoringContentsManager(AsyncLargeFileManager):
    """Jupyter's default contents manager plus :func:`record_author_hook`."""

    authors_dir = Unicode("", config=True,
                          help="jupycron output folder where .authors.json is kept ('' = off).")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_post_save_hook(record_author_hook)  # type: ignore[no-untyped-call]


class EditorKernelManager(AsyncMappingKernelManager):
    """Kernels for the editor: ``AUTORUN`` unset, cwd = the notebooks folder."""

    async def start_kernel(self, **kwargs: Any) -> str:  # type: ignore[override]
        kwargs["env"] = without_run_markers({**os.environ, **(kwargs.get("env") or {})})
        kernel: str = await super().start_kernel(**kwargs)
        return kernel

    def cwd_for_path(self, path: str, **kwargs: Any) -> str:
        # Scheduled runs start in the notebooks folder (jupycron.runner); so does the editor,
        # so a relative path in a notebook means the same thing in both.
        return str(self.root_dir)
