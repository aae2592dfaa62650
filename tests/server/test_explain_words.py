"""``POST /search`` on a sparse index of a tiny native model: each hit's ``explain`` pieces carry
their ``query_word`` and ``explain_words`` groups them, the same as the library's answer."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import test_browser  # noqa: E402

driver = test_browser.driver  # the headless Chromium fixture of the page tests

QUERY = "a big red circle left of two small blue squares"


@pytest.fixture(scope="module")
def native_client(tmp_path_factory):
    """(test client, index dir) serving a sparse index of a tiny native model."""
    import torch
    from fastapi.testclient import TestClient

    from lexlens.data.scenes import generate_scenes
    from lexlens.index.index import Index
    from lexlens.models.native import build_native
    from lexlens.server.app import create_app
    from lexlens.server.backend import Backend

    d = tmp_path_factory.mktemp("srv-explain")
    generate_scenes(d / "scenes", 12, seed=4, size=32, workers=1, progress=False)
    torch.manual_seed(6)
    build_native("tiny", texts=[QUERY]).save(d / "model")
    Index.build(d / "scenes", f"native:{d / 'model'}", d / "idx", spec="sparse", progress=False)
    with TestClient(create_app(Backend.open([d / "idx"], names=["lex"]))) as c:
        yield c, d / "idx"


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
def test_search_returns_pieces_with_query_words_and_groups(native_client, mode) -> None:
    from lexlens.index.index import Index

    client, path = native_client
    r = client.post("/search", json={"text": QUERY, "k": 4, "query_mode": mode})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    lib = Index.open(path).search(QUERY, k=4, explain=True, query_mode=mode).hits[0]
    assert [h["id"] for h in hits] == [h.id for h in lib]
    for got, ref in zip(hits, lib, strict=True):
        assert got["explain"] == ref.explain and got["explain_words"] == ref.explain_words
        assert got["explain_words"] and all(e["query_word"] for e in got["explain"])
        total = sum(g["contribution"] for g in got["explain_words"])
        assert total == pytest.approx(got["score"], rel=1e-5, abs=1e-5)
    r = client.post("/search", json={"text": QUERY, "k": 2, "explain": False})
    assert all(h["explain"] is None and h["explain_words"] is None for h in r.json()["hits"])


def test_openapi_documents_the_word_groups(native_client) -> None:
    schema = native_client[0].get("/openapi.json").json()["components"]["schemas"]
    assert set(schema["WordMatch"]["properties"]) == {"query_word", "contribution", "pieces"}
    assert "explain_words" in schema["HitModel"]["properties"]


def test_page_shows_the_query_words(native_client, driver) -> None:
    """The web page shows one chip per query word: its share of the score and its pieces."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    from server_fakes import live_server

    client, path = native_client
    groups = client.post("/search", json={"text": QUERY, "k": 24}).json()["hits"][0]
    with live_server(client.app) as url:
        driver.get(url + "/")
        driver.find_element(By.ID, "text").send_keys(QUERY, Keys.ENTER)
        card = WebDriverWait(driver, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, f"#results .hit[data-id='{groups['id']}']")
        )[0]
        chips = card.find_elements(By.CSS_SELECTOR, ".word")
        assert len(chips) == len(groups["explain_words"])
        for chip, g in zip(chips, groups["explain_words"], strict=True):
            assert chip.text.startswith(g["query_word"] + " ")
            pieces = chip.find_element(By.CSS_SELECTOR, ".pieces").text
            assert pieces == f"({', '.join(g['pieces'])})"
