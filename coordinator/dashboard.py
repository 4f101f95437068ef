"""`coordinator dashboard`: optuna-dashboard on a zoomtune study, live and read-only.

optuna-dashboard's WSGI app reads the study through `ReadOnlyStorage`; in front of it,
`refuse_writes` answers every request that would change something (any method but GET, HEAD
and OPTIONS: a note, a tell, a rename, a delete) with 403 and the reason as JSON, the shape of
optuna-dashboard's own errors, before the app sees it. It is served by the standard library's
WSGI server, one thread per request.
"""

from __future__ import annotations

import json
import socketserver
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna_dashboard import wsgi

from common.errors import ConfigError
from coordinator.dashboard_storage import ReadOnlyStorage, read_only

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def refuse_writes(app: WsgiApp) -> WsgiApp:
    """`app`, but a request with any method other than GET, HEAD or OPTIONS gets 403 and
    {"reason": "the dashboard is read-only: ..."} without reaching it."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method in READ_METHODS:
            return app(environ, start_response)
        action = f"{method} {environ.get('PATH_INFO', '/')}"
        body = json.dumps({"reason": str(read_only(action))}).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return guarded


def dashboard_app(storage: ReadOnlyStorage) -> WsgiApp:
    """optuna-dashboard on `storage`, with writes refused."""
    app: WsgiApp = wsgi(storage)
    return refuse_writes(app)


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """Requests are not logged line by line (the browser polls every few seconds)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


def serve(storage: ReadOnlyStorage, address: str, port: int, ready: Callable[[str], None]) -> None:
    """Serve the dashboard until interrupted; `ready` gets the URL once it listens."""
    try:
        server = make_server(
            address,
            port,
            dashboard_app(storage),
            server_class=ThreadingServer,
            handler_class=QuietHandler,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {address}:{port} ({exc.strerror}): pick another --port"
        ) from exc
    with server:
        ready(f"http://{address}:{port}/dashboard")
        server.serve_forever()
