"""The jupycron web dashboard: :func:`create_app` (Starlette), :func:`serve` and
:func:`start_in_thread` (uvicorn). See :mod:`jupycron.web.app` for the routes and
:mod:`jupycron.web.auth` for who may do what."""

from __future__ import annotations

from .app import create_app
from .auth import Identity, hash_password, set_password, verify_password
from .server import ServerHandle, serve, start_in_thread

__all__ = [
    "Identity",
    "ServerHandle",
    "create_app",
    "hash_password",
    "serve",
    "set_password",
    "start_in_thread",
    "verify_password",
]
