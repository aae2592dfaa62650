"""The CLI of indexes and search: `lexlens index ...`, `lexlens search`, `lexlens demo`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import write_collection

from lexlens.cli import main
from lexlens.index.index import Index
from lexlens.index.ingest import SourceItem
from lexlens.search import Query


@pytest.fixture
def built(tmp_path, fake_backend):
    src = tmp_path / "src"
    recs = write_collection(src, 24)
    items = [
        SourceItem(str(src / r["image"]), None, r["captions"], {"color": r["color"], "n": r["n"]})
        for r in recs
    ]
    Index.build(items, fake_backend, tmp_path / "idx", progress=False, workers=0)
    return tmp_path, src, recs


def _json(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_search_every_query_type_json(built, capsys):
    tmp, src, recs = built
    idx = str(tmp / "idx")
    ref = Index.open(idx)
    out = _json(capsys, ["search", idx, "red", "--k", "4", "--json"])
    hits = out["results"][0]["hits"]
    assert [h["id"] for h in hits] == ref.search(Query(text="red"), k=4).ids[0].tolist()
    assert all(h["fields"]["color"] == "red" for h in hits)
    # an image file given as QUERY is an image query
    img = str(src / "img-0003.png")
    out = _json(capsys, ["search", idx, img, "--k", "3", "--json"])
    assert out["results"][0]["hits"][0]["id"] == 3
    out = _json(
        capsys, ["search", idx, "--image", img, "--text", "red", "--weight", "0.7", "--json"]
    )
    assert [h["id"] for h in out["results"][0]["hits"]] == ref.search(
        Query(image=img, text="red", weight=0.7), k=10
    ).ids[0].tolist()
    out = _json(capsys, ["search", idx, "--item", "5", "--k", "2", "--json"])
    assert out["results"][0]["hits"][0]["id"] == 5
    np.save(tmp / "q.npy", ref.vectors([1, 2]).dense)
    out = _json(capsys, ["search", idx, "--embedding", str(tmp / "q.npy"), "--k", "1", "--json"])
    assert [r["hits"][0]["id"] for r in out["results"]] == [1, 2]
    out = _json(
        capsys,
        ["search", idx, "red", "--where", "color!=red AND n>=3", "--min-score", "0.5", "--json"],
    )
    assert all(
        h["fields"]["color"] != "red" and h["fields"]["n"] >= 3 and h["score"] >= 0.5
        for h in out["results"][0]["hits"]
    )


def test_search_human_output_and_errors(built, capsys):
    tmp, src, recs = built
    idx = str(tmp / "idx")
    assert main(["search", idx, "blue", "--k", "2"]) == 0
    text = capsys.readouterr().out
    assert "query: text 'blue'" in text and "img-" in text and "#" in text
    assert main(["search", idx]) == 2
    assert "no query" in capsys.readouterr().err
    assert main(["search", idx, "red", "--where", "color"]) == 2
    assert capsys.readouterr().err.startswith("lexlens: error: bad filter")
    assert main(["search", str(tmp / "nope"), "red"]) == 1
    assert "not a lexlens index" in capsys.readouterr().err


def test_index_info_remove_dups_add(built, capsys):
    tmp, src, recs = built
    idx = str(tmp / "idx")
    info = _json(capsys, ["index", "info", idx, "--verify", "--json"])
    assert (info["count"], info["model"], info["verified"]) == (24, "test:fake", True)
    out = _json(capsys, ["index", "remove", idx, str(src / "img-0000.png"), "--id", "1", "--json"])
    assert out == {"removed": 2, "count": 22, "not_found": []}
    gone = str(tmp / "no-such.png")
    out = _json(capsys, ["index", "remove", idx, gone, "--id", "1", "--id", "999", "--json"])
    assert out == {"removed": 0, "count": 22, "not_found": [gone, "1", "999"]}
    (src / "img-0002.png").unlink()
    assert _json(capsys, ["index", "remove", idx, "--missing", "--json"])["removed"] == 1
    assert main(["index", "remove", idx]) == 2
    capsys.readouterr()
    groups = _json(capsys, ["index", "dups", idx, "--threshold", "0.9999", "--json"])
    assert all(g["kind"] in ("exact", "near") and len(g["ids"]) >= 2 for g in groups)
    assert main(["index", "dups", idx, "--threshold", "0.99"]) == 0
    assert "near" in capsys.readouterr().out


def test_index_build_and_add_from_a_dataset_folder(tmp_path, fake_backend, capsys):
    pytest.importorskip("lexlens.data.readers")
    src = tmp_path / "src"
    recs = write_collection(src, 10)
    with open(src / "captions.jsonl", "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    out = _json(
        capsys,
        [
            "index",
            "build",
            str(src),
            "--model",
            fake_backend,
            "--out",
            str(tmp_path / "idx"),
            "--spec",
            "flat",
            "--json",
        ],
    )
    assert (out["added"], out["count"], out["spec"]) == (10, 10, "flat")
    more = write_collection(src, 2, seed=9, start=10)
    with open(src / "captions.jsonl", "a") as f:
        for r in more:
            f.write(json.dumps(r) + "\n")
    out = _json(capsys, ["index", "add", str(tmp_path / "idx"), str(src), "--json"])
    assert (out["added"], out["skipped"], out["count"]) == (2, 10, 12)
    res = _json(capsys, ["search", str(tmp_path / "idx"), "red", "--where", "color=red", "--json"])
    assert {h["fields"]["color"] for h in res["results"][0]["hits"]} == {"red"}
    caps = _json(
        capsys,
        [
            "index",
            "build",
            str(src),
            "--model",
            fake_backend,
            "--out",
            str(tmp_path / "caps"),
            "--items",
            "texts",
            "--json",
        ],
    )
    assert caps["count"] == 24
    res = _json(
        capsys, ["search", str(tmp_path / "caps"), str(src / "img-0000.png"), "--k", "3", "--json"]
    )
    assert all("red" in h["text"] for h in res["results"][0]["hits"])


def test_demo_without_the_model_is_one_clear_line(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--model", "native:no-such-model"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("lexlens: error:") and "native:no-such-model" in err and "\n" not in err
