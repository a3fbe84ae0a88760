"""``confessional review serve``: the reviewers' web page (the ``review-web`` extra).

:func:`create_app` builds the Starlette app; :func:`serve` runs it with uvicorn on a
loopback address by default. See :mod:`confessional.review.web._app` for the pages and
their security rules.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from typing import Any

from confessional.errors import require_extra

for _module in ("starlette", "uvicorn", "jinja2", "python_multipart"):
    require_extra(_module, extra="review-web", feature="confessional review serve")

from confessional.review.web._app import SESSION_COOKIE, create_app  # noqa: E402

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "SESSION_COOKIE", "create_app", "new_token", "serve"]

DEFAULT_HOST = "127.0.0.1"
"""Loopback only: put a reverse proxy with TLS in front to serve other machines."""
DEFAULT_PORT = 8765


def new_token() -> str:
    """A fresh access token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def serve(
    app: Any,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` until interrupted (SIGINT or SIGTERM).

    Args:
        app: the ASGI app from :func:`create_app`.
        host: the address to bind. Default ``127.0.0.1``.
        port: the port; ``0`` picks a free one. Default 8765.
        started: called with the base URL once the socket is bound.
    """
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    if started is not None:
        started(f"http://{shown}:{bound}")
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
