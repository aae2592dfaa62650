"""Bad input gets a clear 4xx JSON error and changes nothing: wrong content types, broken,
huge and decompression-bomb images, malformed JSON, non-UTF-8 text, unknown index, k out
of range, empty queries, oversized bodies; API key rules for binding."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest

from lexlens.errors import UsageError


def _png(w: int, h: int, payload: bytes = b"\x00") -> bytes:
    """A PNG whose header claims ``w x h`` pixels with a tiny (wrong) payload: cheap to send,
    huge if decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(payload))
        + chunk(b"IEND", b"")
    )


def _real_png(size=(8, 8)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _truncated_png() -> bytes:
    """The first half of a PNG of noise (its pixel data cut short)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _assert_error(resp, status: int, words: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and words in body["error"], body


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", JSON, 400, "malformed JSON"),
        (b'{"text": "\xff\xfe red"}', JSON, 400, "not UTF-8"),
        (json.dumps({"text": "\udc80"}).encode(), JSON, 422, "text"),
        (b'{"text": "red", "min_score": NaN}', JSON, 422, "min_score"),
        (json.dumps({"text": ""}).encode(), JSON, 422, "empty query"),
        (json.dumps({"text": "   "}).encode(), JSON, 422, "empty query"),
        (json.dumps({}).encode(), JSON, 422, "empty query"),
        (json.dumps({"text": "red", "item": 3}).encode(), JSON, 422, "one kind of query"),
        (json.dumps({"text": "red", "k": 0}).encode(), JSON, 422, "k"),
        (json.dumps({"text": "red", "k": 1001}).encode(), JSON, 422, "k"),
        (json.dumps({"text": "red", "k": "many"}).encode(), JSON, 422, "k"),
        (json.dumps({"text": "red", "weight": 2}).encode(), JSON, 422, "weight"),
        (json.dumps({"text": "red", "index": "nope"}).encode(), JSON, 404, "no index named 'nope'"),
        (json.dumps({"item": 2**70}).encode(), JSON, 422, "item"),
        (json.dumps({"item": 123456}).encode(), JSON, 404, "no item 123456"),
        (json.dumps({"embedding": [1.0, 2.0]}).encode(), JSON, 400, "dimensions"),
        (json.dumps({"embedding": [0.0] * 8}).encode(), JSON, 400, "all zeros"),
        (json.dumps({"text": "red", "where": "color"}).encode(), JSON, 400, "bad filter"),
        (json.dumps({"text": "red", "surprise": 1}).encode(), JSON, 422, "surprise"),
        (json.dumps(["text", "red"]).encode(), JSON, 422, "invalid request"),
        (json.dumps({"text": "red"}).encode(), {"content-type": "text/plain"}, 422, "invalid"),
        (json.dumps({"image": "@@not base64@@"}).encode(), JSON, 400, "not valid base64"),
        (json.dumps({"image": _b64(b"GIF89a garbage")}).encode(), JSON, 400, "image"),
        (json.dumps({"image": _b64(b"plain text")}).encode(), JSON, 400, "supported format"),
        (json.dumps({"image": _b64(_truncated_png())}).encode(), JSON, 400, "image"),
        (json.dumps({"image": _b64(_png(20000, 20000))}).encode(), JSON, 413, "pixels"),
        (json.dumps({"image": _b64(_png(70000, 70000))}).encode(), JSON, 413, "pixels"),
        (json.dumps({"image": ""}).encode(), JSON, 400, "empty"),
    ],
)
def test_bad_search_bodies(client, body, headers, status, words):
    _assert_error(client.post("/search", content=body, headers=headers), status, words)


def test_bad_uploads(client):
    def up(data: bytes, **form):
        return client.post(
            "/search/upload", files={"image": ("q.png", data, "image/png")}, data=form
        )

    _assert_error(up(_truncated_png()), 400, "image")
    _assert_error(up(b""), 400, "empty")
    _assert_error(up(_png(30000, 30000)), 413, "pixels")
    _assert_error(up(_real_png(), k="0"), 422, "k")
    _assert_error(up(_real_png(), index="nope"), 404, "nope")
    _assert_error(up(_real_png(), weight="1.5"), 422, "weight")
    _assert_error(client.post("/search/upload", data={"text": "red"}), 422, "image")
    _assert_error(client.post("/search/upload", json={"text": "red"}), 422, "image")
    # a text form field that is not UTF-8
    r = client.post(
        "/search/upload",
        content=(
            b'--XX\r\nContent-Disposition: form-data; name="text"\r\n\r\n\xff\xfe\xfa\r\n'
            b'--XX\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + _real_png() + b"\r\n--XX--\r\n"
        ),
        headers={"content-type": "multipart/form-data; boundary=XX"},
    )
    _assert_error(r, 400, "form field 'text' is not valid UTF-8")
    ok = up(_real_png(), text="café rouge")  # real UTF-8 text is fine
    assert ok.status_code == 200 and "café rouge" in ok.json()["query"]
    # a multipart body without its boundary
    r = client.post(
        "/search/upload", content=b"xx", headers={"content-type": "multipart/form-data"}
    )
    assert 400 <= r.status_code < 500 and "error" in r.json()


def test_size_limits_give_413(backend):
    from fastapi.testclient import TestClient

    from lexlens.server.app import Limits, create_app

    limits = Limits(max_upload_bytes=2000, max_image_pixels=10_000)
    c = TestClient(create_app(backend, limits=limits), raise_server_exceptions=False)
    big = _real_png((40, 40)) + b"\x00" * 3000  # > 2000 bytes
    _assert_error(
        c.post("/search/upload", files={"image": ("q.png", big, "image/png")}), 413, "bytes"
    )
    _assert_error(c.post("/search", json={"image": _b64(big)}), 413, "")
    _assert_error(c.post("/search", json={"image": _b64(_real_png((200, 200)))}), 413, "pixels")
    # a body past the limit: refused from its Content-Length, and while streaming (chunked)
    huge = b"{" + b" " * (limits.max_body_bytes + 10) + b"}"
    _assert_error(c.post("/search", content=huge, headers=JSON), 413, "request body larger")

    def chunks():
        for _ in range(limits.max_body_bytes // 4096 + 2):
            yield b" " * 4096

    _assert_error(c.post("/search", content=chunks(), headers=JSON), 413, "request body larger")
    ok = c.post("/search/upload", files={"image": ("q.png", _real_png(), "image/png")})
    assert ok.status_code == 200


def test_unknown_routes_and_methods_are_json(client):
    _assert_error(client.get("/nope"), 404, "Not Found")
    _assert_error(client.get("/search"), 405, "Method Not Allowed")
    _assert_error(client.put("/items", json={}), 405, "Method Not Allowed")


def test_knn_service_bad_input(client):
    def knn(body):
        return client.post("/knn-service", content=body)

    _assert_error(knn(b"{oops"), 400, "malformed JSON")
    _assert_error(knn(b'"a string"'), 400, "JSON object")
    _assert_error(knn(b"\xff\xfe"), 400, "malformed JSON")
    _assert_error(knn(json.dumps({"modality": "image"}).encode()), 400, "empty query")
    _assert_error(knn(json.dumps({"text": "red", "num_images": 0}).encode()), 422, "num_images")
    _assert_error(knn(json.dumps({"text": "red", "modality": "video"}).encode()), 422, "modality")
    _assert_error(knn(json.dumps({"image_url": "http://x/y.png"}).encode()), 400, "image_url")
    _assert_error(knn(json.dumps({"text": "red", "use_mclip": True}).encode()), 400, "mclip")
    _assert_error(knn(json.dumps({"image": _b64(_png(50000, 50000))}).encode()), 413, "pixels")


def test_bad_input_changes_nothing(tmp_path, built):
    """A burst of bad writes and queries leaves the index as it was, and it still answers."""
    import shutil

    from fastapi.testclient import TestClient
    from server_fakes import FakeEncoder

    from lexlens.server.app import create_app
    from lexlens.server.backend import Backend

    shutil.copytree(built[0], tmp_path / "idx")
    b = Backend.open([tmp_path / "idx"], names=["w"], encoder=FakeEncoder())
    c = TestClient(create_app(b), raise_server_exceptions=False)
    before = c.post("/search", json={"text": "red", "k": 36}).json()["hits"]
    bad_writes = [
        ("POST", {"source": str(tmp_path / "does-not-exist")}),
        ("POST", {"items": [{"path": str(tmp_path / "missing.png")}]}),
        ("POST", {"items": []}),
        ("POST", {"source": "x", "items": [{"path": "y"}]}),
        ("DELETE", {}),
        ("DELETE", {"ids": [-1]}),
        ("DELETE", {"ids": [10**6]}),
        ("DELETE", {"paths": [str(tmp_path / "nothing.png")]}),
        ("DELETE", {"index": "nope", "ids": [1]}),
    ]
    for method, body in bad_writes:
        r = c.request(method, "/items", json=body)
        assert r.status_code < 500, (method, body, r.text)
        assert (
            r.status_code >= 400
            or r.json().get("removed", 0) == 0
            or r.json()["report"]["added"] == 0
        )
    (tmp_path / "broken.png").write_bytes(_real_png()[:50])
    r = c.post("/items", json={"items": [{"path": str(tmp_path / "broken.png")}]})
    assert r.status_code == 200 and r.json()["report"]["added"] == 0
    assert r.json()["report"]["failed"] == 1
    info = c.get("/indexes/w").json()
    assert info["count"] == 36
    assert b.get("w").info(verify=True)["verified"]
    after = c.post("/search", json={"text": "red", "k": 36}).json()["hits"]
    assert [(h["id"], h["score"]) for h in after] == [(h["id"], h["score"]) for h in before]


def test_api_key_rules():
    from lexlens.server.app import check_bind, is_loopback

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"):
        assert is_loopback(host)
        check_bind(host, None)  # open on loopback
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(UsageError, match="--api-key"):
            check_bind(host, None)
        check_bind(host, "k")
