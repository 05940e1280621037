"""The dashboard's side of the editor (:mod:`jupycron.authoring`): one login for both.

* ``GET /auth/check`` - for nginx's ``auth_request``: 200 with the user name in the
  ``X-Jupycron-User`` response header when the request's credentials name a dashboard user
  (the same check, users and rules as every dashboard page), else 401 with the dashboard's
  ``WWW-Authenticate`` challenge, which nginx passes on to the browser. Anonymous readers
  (``web_anonymous_read``) are refused: the editor runs code.
* the notebook page's "last saved by" line: the template global ``last_saved(path)``
  (:func:`jupycron.authors.last_saved`).

:func:`install` adds both to the app made by :func:`jupycron.web.app.create_app`.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..authors import last_saved

__all__ = ["AUTH_CHECK_PATH", "USER_RESPONSE_HEADER", "install"]

AUTH_CHECK_PATH = "/auth/check"
USER_RESPONSE_HEADER = "X-Jupycron-User"


async def _auth_check(identity: Any, request: Request) -> Response:
    # identity() may verify an argon2 hash (tens of ms): not on the event loop.
    try:
        ident = await run_in_threadpool(identity, request)
        if inspect.isawaitable(ident):
            ident = await ident
    except HTTPException as exc:
        if exc.status_code == 401:
            raise
        # nginx's auth_request passes on only 401 and 403 (anything else becomes a 500):
        # a throttled client (429) or refused logins (503) get a 403 with the reason.
        return Response(f"editor login refused: {exc.detail}", status_code=403,
                        headers={"Cache-Control": "no-store", **(exc.headers or {})})
    if not ident.can_write:
        raise HTTPException(401, "log in with your team user name and password to edit notebooks")
    return Response(status_code=200, headers={USER_RESPONSE_HEADER: ident.user,
                                              "Cache-Control": "no-store"})


def install(app: Starlette) -> None:
    """Mount ``/auth/check`` and the ``last_saved`` template global on the dashboard ``app``."""
    dash = app.state.dashboard
    app.router.routes.insert(0, Route(AUTH_CHECK_PATH, partial(_auth_check, dash.identity),
                                      methods=["GET"]))
    dash.env.globals["last_saved"] = partial(last_saved, dash.settings.output_dir)
