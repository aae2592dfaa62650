"""``lexlens serve`` warms every index up (one search each) before it says it is listening,
and the warm-up changes no result."""

from __future__ import annotations

import pytest
from server_fakes import FakeEncoder

from lexlens.server import run
from lexlens.server.backend import WARM_UP_TEXT, Backend


@pytest.fixture(scope="module")
def two_kinds(built, tmp_path_factory):
    """The package's flat index and a sparse index of the same items."""
    from lexlens.index.index import Index

    sparse = tmp_path_factory.mktemp("warm") / "sparse"
    Index.build(built[2], FakeEncoder(), sparse, spec="sparse", progress=False, workers=0)
    return [built[0], sparse]


def _backend(paths):
    return Backend.open(paths, names=["flat", "sparse"], encoder=FakeEncoder())


def _spy_searches(backend, events):
    """Record every Index.search of ``backend`` (index name, query text, k) in ``events``."""
    for name in backend.names:
        idx = backend._indexes[name]
        real = idx.search

        def spy(query, *args, _name=name, _real=real, **kwargs):
            events.append(("search", _name, query.text, kwargs.get("k")))
            return _real(query, *args, **kwargs)

        idx.search = spy


def test_serve_warms_each_index_once_before_it_is_ready(two_kinds, monkeypatch):
    import uvicorn

    backend = _backend(two_kinds)
    events: list[tuple] = []
    _spy_searches(backend, events)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: events.append(("run",)))
    run.serve(backend, run.ServeConfig(port=0), on_ready=lambda url: events.append(("ready",)))
    assert events == [
        ("search", "flat", WARM_UP_TEXT, 1),
        ("search", "sparse", WARM_UP_TEXT, 1),
        ("ready",),
        ("run",),
    ]
    # and not when switched off
    events.clear()
    run.serve(backend, run.ServeConfig(port=0, warm_up=False), on_ready=lambda url: None)
    assert events == [("run",)]


def test_a_failing_warm_up_is_logged_and_serving_goes_on(two_kinds, monkeypatch, caplog):
    import uvicorn

    backend = _backend(two_kinds)

    def broken(*args, **kwargs):
        raise RuntimeError("kernel trouble")

    backend._indexes["sparse"].search = broken
    ran: list[str] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append("run"))
    with caplog.at_level("WARNING", logger="lexlens.server"):
        run.serve(backend, run.ServeConfig(port=0), on_ready=ran.append)
    assert len(ran) == 2 and ran[0].startswith("http://127.0.0.1:") and ran[1] == "run"
    assert "sparse" in caplog.text and "kernel trouble" in caplog.text


def test_warm_up_changes_no_result(two_kinds):
    queries = ["red", "a blue picture", WARM_UP_TEXT, "green yellow"]

    def answers(backend):
        return [
            [(h.id, h.score, h.explain) for h in backend.search_text(name, q, k=5).hits]
            for name in backend.names
            for q in queries
        ]

    cold = answers(_backend(two_kinds))
    warmed = _backend(two_kinds)
    took = warmed.warm_up()
    assert set(took) == {"flat", "sparse"} and all(isinstance(t, float) for t in took.values())
    assert answers(warmed) == cold
