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
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna_dashboard import wsgi

from zoomtune.common.errors import ConfigError
from zoomtune.common.settings import Settings, redact_url
from zoomtune.common.store_reads import StudyReader
from zoomtune.coordinator.dashboard_source import BrokerSource, RunFolderSource
from zoomtune.coordinator.dashboard_storage import ReadOnlyStorage, read_only
from zoomtune.coordinator.run_folders import find_run_dir, study_store

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


def serve_study(
    study: str | None,
    broker: str | None,
    run_dir: Path | None,
    address: str,
    port: int,
    say: Callable[[str], None],
) -> None:
    """`coordinator dashboard`: serve STUDY from the broker (live) or a run folder (its
    study.json), found the way the other study commands find it, until interrupted."""
    storage: ReadOnlyStorage

    def ready(url: str) -> None:
        say(f"optuna-dashboard on {url} for {storage.source.describe()}")

    folder = find_run_dir("dashboard", study, broker, run_dir)
    if folder is not None:
        storage = ReadOnlyStorage(RunFolderSource(folder, study))
        storage.snapshot()  # a missing or unreadable study.json is an error now
        serve(storage, address, port, ready)
        return
    with study_store("dashboard", study, broker, None) as (store, _):
        reader = StudyReader(store.client, store.keys.prefix, store.study)
        url = Settings.from_env().with_broker(broker).broker_url or ""
        storage = ReadOnlyStorage(BrokerSource(reader, f"broker {redact_url(url)}"))
        storage.snapshot()
        serve(storage, address, port, ready)
