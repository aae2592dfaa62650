"""The typed routes against the library and a brute-force reference: every query type,
filters, thumbnails, index listing, add/remove, several indexes, metrics."""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pytest
from server_fakes import FakeEncoder, build_collection

from lexlens.models.base import l2_normalize
from lexlens.search import Query, fuse


def _b64(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def _brute(q: np.ndarray, x: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Reference top-k over all items: Python-sorted by (-score, id)."""
    scored = sorted((-float(np.dot(q, x[j])), j) for j in range(len(x)))
    return [(j, -s) for s, j in scored[:k]]


def _pairs(resp) -> list[tuple[int, float]]:
    assert resp.status_code == 200, resp.text
    return [(h["id"], h["score"]) for h in resp.json()["hits"]]


def _same(got, expected, tol=1e-5):
    assert len(got) == len(expected)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=tol)
    for (gi, gs), (ei, _) in zip(got, expected, strict=True):
        assert gi == ei or abs(gs - dict(expected)[ei]) < tol  # ids differ only inside ties


@pytest.fixture(scope="module")
def vectors(built):
    _, _, items = built
    return FakeEncoder().encode_images([s.path for s in items])


def test_text_image_item_embedding_match_brute_force(client, built, vectors):
    _, records, items = built
    enc = FakeEncoder()
    for text in ("red", "a blue picture", "purple"):
        got = _pairs(client.post("/search", json={"text": text, "k": 7}))
        _same(got, _brute(enc.encode_texts([text])[0], vectors, 7))
    # base64 image: the picture itself comes first, with cosine 1
    got = _pairs(client.post("/search", json={"image": _b64(items[9].path), "k": 5}))
    assert got[0][0] == 9 and got[0][1] == pytest.approx(1.0, abs=1e-5)
    _same(got, _brute(vectors[9], vectors, 5))
    got = _pairs(client.post("/search", json={"item": 14, "k": 4, "index": "pics"}))
    _same(got, _brute(vectors[14], vectors, 4))
    e = np.arange(8, dtype=np.float32) - 3.5
    got = _pairs(client.post("/search", json={"embedding": (e * 3).tolist(), "k": 6}))
    _same(got, _brute(l2_normalize(e[None])[0], vectors, 6))


def test_image_plus_text_json_and_upload_are_the_fusion(client, built, vectors):
    _, _, items = built
    enc = FakeEncoder()
    path = items[0].path  # a red picture
    for w in (0.0, 0.4, 1.0):
        q = fuse(enc.encode_images([path]), enc.encode_texts(["blue"]), w)[0]
        expected = _brute(q, vectors, 5)
        got = _pairs(
            client.post("/search", json={"image": _b64(path), "text": "blue", "weight": w, "k": 5})
        )
        _same(got, expected)
        with open(path, "rb") as f:
            up = client.post(
                "/search/upload",
                files={"image": ("q.png", f, "image/png")},
                data={"text": "blue", "weight": str(w), "k": "5"},
            )
        _same(_pairs(up), expected)
    with open(items[3].path, "rb") as f:  # upload without text: the image alone, itself first
        got = _pairs(client.post("/search/upload", files={"image": ("q.png", f, "image/png")}))
    assert got[0][0] == 3 and len(got) == 10


def test_same_answer_as_the_library_with_filters_and_cut_off(client, backend):
    idx = backend.get("pics")
    body = {"text": "a green picture", "k": 8, "where": "n>=2", "min_score": 0.1}
    resp = client.post("/search", json=body).json()
    direct = idx.search(Query(text="a green picture"), k=8, where="n>=2", min_score=0.1)
    assert [h["id"] for h in resp["hits"]] == [h.id for h in direct.hits[0]]
    assert all(h["fields"]["n"] >= 2 and h["score"] >= 0.1 for h in resp["hits"])
    hit = resp["hits"][0]
    assert hit["captions"] == direct.hits[0][0].captions and hit["rank"] == 1
    assert hit["thumbnail"] == f"/thumb/pics/{hit['id']}"
    assert set(resp["timings_ms"]) == {"encode", "search", "metadata"}
    assert all(v >= 0 for v in resp["timings_ms"].values())


def test_thumbnail_is_the_stored_image_and_only_known_items(client, built):
    from PIL import Image

    _, _, items = built
    r = client.get("/thumb/pics/5")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as got, Image.open(items[5].path) as src:
        np.testing.assert_array_equal(
            np.asarray(got.convert("RGB")), np.asarray(src.convert("RGB"))
        )
    for url in ("/thumb/pics/99999", "/thumb/nope/1"):
        r = client.get(url)
        assert r.status_code == 404 and "error" in r.json()
    for url in (
        "/thumb/pics/..%2F..%2F..%2Fetc%2Fpasswd",
        "/thumb/pics/-1",
        "/thumb/..%2F..%2Fetc/passwd",
        "/thumb/pics/1/../../../../etc/passwd",
        "/static/..%2F..%2Fapp.py",
    ):
        r = client.get(url)
        assert r.status_code in (404, 422), url
        assert b"root:" not in r.content and b"create_app" not in r.content


def test_indexes_health_info(client, built):
    assert client.get("/health").json() == {"status": "ok", "indexes": ["pics"]}
    [summary] = client.get("/indexes").json()
    assert summary["name"] == "pics" and summary["count"] == 36 and summary["model"] == "test:fake"
    info = client.get("/indexes/pics").json()
    assert info["count"] == 36 and info["spec"] == "flat" and info["path"] == str(built[0])
    assert client.get("/indexes/nope").status_code == 404
    assert client.get("/indices-list").json() == ["pics"]


def test_several_indexes_by_name(tmp_path, built):
    from fastapi.testclient import TestClient

    from lexlens.server.app import create_app
    from lexlens.server.backend import Backend

    other, _, _ = build_collection(tmp_path, n=12)
    b = Backend.open([built[0], other], names=["big", "small"], encoder=FakeEncoder())
    c = TestClient(create_app(b))
    assert c.get("/indices-list").json() == ["big", "small"]
    assert [i["count"] for i in c.get("/indexes").json()] == [36, 12]
    small = c.post("/search", json={"text": "red", "k": 50, "index": "small"}).json()
    assert small["index"] == "small" and len(small["hits"]) == 12
    default = c.post("/search", json={"text": "red", "k": 50}).json()
    assert default["index"] == "big" and len(default["hits"]) == 36
    assert c.post("/search", json={"text": "red", "index": "tiny"}).status_code == 404


def test_add_and_remove_with_api_key(tmp_path, built):
    from fastapi.testclient import TestClient
    from PIL import Image

    from lexlens.server.app import create_app
    from lexlens.server.backend import Backend

    shutil.copytree(built[0], tmp_path / "idx")
    b = Backend.open([tmp_path / "idx"], names=["w"], encoder=FakeEncoder())
    c = TestClient(create_app(b, api_key="s3cret"))
    new = tmp_path / "new.png"
    Image.new("RGB", (6, 6), (10, 250, 250)).save(new)
    body = {
        "items": [{"path": str(new), "captions": ["a cyan square"], "fields": {"color": "cyan"}}]
    }
    assert c.post("/items", json=body).status_code == 401
    assert c.post("/items", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    r = c.post("/items", json=body, headers={"X-API-Key": "s3cret"})
    assert r.status_code == 200 and r.json()["report"]["added"] == 1
    assert c.get("/indexes/w").json()["count"] == 37
    with open(new, "rb") as f:
        hit = c.post("/search/upload", files={"image": ("n.png", f, "image/png")}).json()["hits"][0]
    assert hit["path"] == str(new) and hit["fields"] == {"color": "cyan"}
    # read routes need no key; removing does
    rm = {"ids": [hit["id"]]}
    assert c.request("DELETE", "/items", json=rm).status_code == 401
    r = c.request("DELETE", "/items", json=rm, headers={"Authorization": "Bearer s3cret"})
    assert r.json() == {"index": "w", "removed": 1, "count": 36}
    assert c.get(f"/thumb/w/{hit['id']}").status_code == 404
    # by path, and a path the index does not hold removes nothing
    r = c.request(
        "DELETE", "/items", json={"paths": ["/etc/passwd"]}, headers={"X-API-Key": "s3cret"}
    )
    assert r.json()["removed"] == 0
    r = c.request(
        "DELETE", "/items", json={"paths": [built[2][0].path]}, headers={"X-API-Key": "s3cret"}
    )
    assert r.json()["removed"] == 1 and r.json()["count"] == 35


def test_metrics_count_requests_and_stages(app):
    from fastapi.testclient import TestClient

    c = TestClient(app)

    def value(text: str, prefix: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    before = c.get("/metrics").text
    for _ in range(3):
        c.post("/search", json={"text": "red"})
    c.post("/search", json={"text": "red", "index": "nope"})
    r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    after = r.text
    ok = 'lexlens_requests_total{method="POST",route="/search",status="200"}'
    missing = 'lexlens_requests_total{method="POST",route="/search",status="404"}'
    assert value(after, ok) - value(before, ok) == 3
    assert value(after, missing) - value(before, missing) == 1
    for stage in ("encode", "search", "metadata"):
        count = f'lexlens_stage_seconds_count{{index="pics",stage="{stage}"}}'
        assert value(after, count) - value(before, count) == 3
        inf = f'lexlens_stage_seconds_bucket{{index="pics",stage="{stage}",le="+Inf"}}'
        assert value(after, inf) == value(after, count)
    assert "# TYPE lexlens_request_seconds histogram" in after


def test_openapi_schema_lists_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in (
        "/search",
        "/search/upload",
        "/items",
        "/indexes",
        "/indexes/{name}",
        "/health",
        "/metrics",
        "/thumb/{index}/{item_id}",
        "/knn-service",
        "/indices-list",
    ):
        assert p in paths, p
    assert "delete" in paths["/items"] and "post" in paths["/items"]


def test_picks_up_a_generation_published_by_another_writer(tmp_path, built, monkeypatch):
    from fastapi.testclient import TestClient
    from PIL import Image

    from lexlens.index.index import Index
    from lexlens.server import backend as backend_mod
    from lexlens.server.app import create_app
    from lexlens.server.backend import Backend

    monkeypatch.setattr(backend_mod, "REFRESH_SECONDS", 0.0)
    shutil.copytree(built[0], tmp_path / "idx")
    c = TestClient(create_app(Backend.open([tmp_path / "idx"], encoder=FakeEncoder())))
    assert c.get("/indexes/idx").json()["count"] == 36
    new = tmp_path / "yellow.png"
    Image.new("RGB", (6, 6), (250, 240, 10)).save(new)
    Index.open(tmp_path / "idx", model=FakeEncoder()).add(
        [str(new)], progress=False
    )  # "lexlens index add"
    assert c.get("/indexes/idx").json()["count"] == 37
    with open(new, "rb") as f:
        hit = c.post("/search/upload", files={"image": ("y.png", f, "image/png")}).json()["hits"][0]
    assert hit["path"] == str(new) and hit["score"] == pytest.approx(1.0, abs=1e-5)
