"""Run the app under uvicorn: ``lexlens serve`` and the end of ``lexlens demo``."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lexlens.errors import UsageError
from lexlens.server.app import Limits, check_bind, create_app
from lexlens.server.backend import Backend

__all__ = ["ServeConfig", "serve", "serve_indexes", "bind_socket"]


@dataclass
class ServeConfig:
    """Where and how to listen."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    log_level: str = "info"
    #: one search per index before the server reports it is listening (:meth:`Backend.warm_up`)
    warm_up: bool = True


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free port): connections made
    before the server loop starts wait in the backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(
    backend: Backend,
    config: ServeConfig | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``backend`` until Ctrl-C; ``on_ready(url)`` is called once the port is bound
    and every index has been warmed up (``config.warm_up``: :meth:`Backend.warm_up`, off the
    request path; connections made meanwhile wait in the socket's backlog).

    Refuses a non-loopback address without an API key (:func:`lexlens.server.app.check_bind`).
    """
    import uvicorn

    cfg = config or ServeConfig()
    check_bind(cfg.host, cfg.api_key)
    app = create_app(backend, api_key=cfg.api_key, limits=cfg.limits)
    sock = bind_socket(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    try:
        if cfg.warm_up:
            backend.warm_up()
        server = uvicorn.Server(
            uvicorn.Config(
                app, log_level=cfg.log_level, lifespan="off", timeout_graceful_shutdown=5
            )
        )
        if on_ready is not None:
            on_ready(f"http://{shown}:{port}")
        server.run(sockets=[sock])
    finally:
        sock.close()


def serve_indexes(
    paths: Sequence[str | Path],
    names: Sequence[str] | None = None,
    config: ServeConfig | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Open the indexes at ``paths`` (under ``names``) and :func:`serve` them."""
    cfg = config or ServeConfig()
    check_bind(cfg.host, cfg.api_key)  # before loading any model
    serve(Backend.open(paths, names), cfg, on_ready)
