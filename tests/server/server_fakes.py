"""Shared helpers of the server tests: the index tests' fake encoder and collection, a built
index, and a real uvicorn server on a free loopback port in a background thread."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "index"))

from fakes import COLORS, FakeEncoder, write_collection  # noqa: E402

from lexlens.index.index import Index  # noqa: E402
from lexlens.index.ingest import SourceItem  # noqa: E402

__all__ = ["COLORS", "FakeEncoder", "build_collection", "live_server", "register_test_backend"]


def build_collection(root: Path, n: int = 36) -> tuple[Path, list[dict], list[SourceItem]]:
    """``n`` fake pictures under ``root/src`` indexed (flat, the fake encoder) in ``root/idx``."""
    records = write_collection(root / "src", n)
    items = [
        SourceItem(
            str(root / "src" / r["image"]), None, r["captions"], {"color": r["color"], "n": r["n"]}
        )
        for r in records
    ]
    Index.build(items, FakeEncoder(), root / "idx", spec="flat", progress=False, workers=0)
    return root / "idx", records, items


def register_test_backend() -> None:
    """Make the model spec ``test:fake`` loadable (for code that opens indexes by path)."""
    from lexlens.models import registry

    registry._ensure_builtin_backends()
    registry.register_backend("test", lambda target: FakeEncoder(), lambda: ["fake"], "tests")


@contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 (a free port); yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
