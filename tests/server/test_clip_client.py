"""clip-retrieval compatibility: the real ``ClipClient`` (PyPI clip-retrieval 2.45, unchanged)
against a lexlens server on a loopback port, checked against a direct ``Index.search`` and a
naive implementation of clip-retrieval's de-duplication rule."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from server_fakes import FakeEncoder, live_server

from lexlens.search import Query


def _clip_client_module():
    """``clip_retrieval/clip_client.py`` loaded from its file: the package's ``__init__`` imports
    the whole back end (flask, torch, ...), which lexlens installs without (``--no-deps``);
    the client module itself needs only ``requests``."""
    spec = importlib.util.find_spec("clip_retrieval")
    assert spec is not None and spec.submodule_search_locations, (
        "clip-retrieval is not installed: `make install` installs it (--no-deps)"
    )
    path = Path(next(iter(spec.submodule_search_locations))) / "clip_client.py"
    mod_spec = importlib.util.spec_from_file_location("clip_retrieval_clip_client", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def _naive_dedup(ids: list[int], vecs: dict[int, list[float]], threshold: float = 0.94):
    """clip-retrieval's rule with plain loops: graph of cosine >= threshold, the first
    (best ranked) member of each connected component is kept."""

    def cos(a, b):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    seen: set[int] = set()
    keep = []
    for i in ids:
        if i in seen:
            continue
        keep.append(i)
        stack = [i]
        seen.add(i)
        while stack:
            a = stack.pop()
            for b in ids:
                if b not in seen and cos(vecs[a], vecs[b]) >= threshold:
                    seen.add(b)
                    stack.append(b)
    return keep


@pytest.fixture(scope="module")
def server(app):
    with live_server(app) as url:
        yield url


def _expected(idx, query: Query, k: int, dedup: bool) -> list[tuple[int, float]]:
    res = idx.search(query, k=k)
    ids = [h.id for h in res.hits[0]]
    scores = {h.id: h.score for h in res.hits[0]}
    if dedup:
        vecs = {i: idx.vectors([i]).dense[0].tolist() for i in ids}
        ids = _naive_dedup(ids, vecs)
    return [(i, scores[i]) for i in ids]


def _check(results: list[dict], expected: list[tuple[int, float]]) -> None:
    assert [r["id"] for r in results] == [i for i, _ in expected]
    assert [r["similarity"] for r in results] == pytest.approx([s for _, s in expected], abs=1e-6)


def test_clip_client_text_image_embedding(server, backend, built):
    import requests

    cc = _clip_client_module()
    idx = backend.get("pics")
    _, _, items = built
    for dedup in (True, False):
        client = cc.ClipClient(
            url=f"{server}/knn-service", indice_name="pics", num_images=12, deduplicate=dedup
        )
        # by text
        results = client.query(text="a blue picture")
        _check(results, _expected(idx, Query(text="a blue picture"), 12, dedup))
        first = results[0]
        row = idx.rows([first["id"]])[first["id"]]
        assert first["caption"] == row.captions[0] and first["color"] == "blue"
        thumb = requests.get(first["url"], timeout=10)
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        # by image file (the client base64-encodes it): the picture itself first
        results = client.query(image=items[4].path)
        _check(results, _expected(idx, Query(image=items[4].path), 12, dedup))
        assert results[0]["id"] == 4 and results[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
        # by embedding
        emb = FakeEncoder().encode_texts(["yellow"])[0]
        results = client.query(embedding_input=emb.tolist())
        _check(results, _expected(idx, Query(embedding=emb), 12, dedup))
    assert len(_expected(idx, Query(text="red"), 12, True)) < 12  # de-duplication bites here


def test_clip_client_text_modality_over_a_caption_index(tmp_path, built):
    from lexlens.index.index import Index
    from lexlens.server.app import create_app
    from lexlens.server.backend import Backend

    cc = _clip_client_module()
    _, _, items = built
    from lexlens.index.ingest import SourceItem

    captions = [SourceItem(i.path, c, [c], i.fields) for i in items[:12] for c in i.captions]
    Index.build(
        captions, FakeEncoder(), tmp_path / "caps", items="texts", progress=False, workers=0
    )
    b = Backend.open([tmp_path / "caps"], names=["caps"], encoder=FakeEncoder())
    with live_server(create_app(b)) as url:
        client = cc.ClipClient(
            url=f"{url}/knn-service",
            indice_name="caps",
            modality=cc.Modality.TEXT,
            num_images=5,
            deduplicate=False,
        )
        results = client.query(image=items[2].path)  # image -> captions
        _check(results, _expected(b.get("caps"), Query(image=items[2].path), 5, False))
        caps = b.get("caps")
        for r in results:
            assert r["caption"] == caps.rows([r["id"]])[r["id"]].text


def test_clip_client_errors_are_clear(server):
    import requests

    cc = _clip_client_module()
    client = cc.ClipClient(url=f"{server}/knn-service", indice_name="pics")
    out = client.query(image="http://example.com/cat.jpg")  # never fetched
    assert "image_url is not supported" in out["error"]
    out = cc.ClipClient(url=f"{server}/knn-service", indice_name="nope").query(text="red")
    assert "no index named 'nope'" in out["error"]
    out = cc.ClipClient(
        url=f"{server}/knn-service", indice_name="pics", modality=cc.Modality.TEXT
    ).query(text="red")
    assert "modality='text' needs an index of texts" in out["error"]
    assert requests.get(f"{server}/indices-list", timeout=10).json() == ["pics"]
