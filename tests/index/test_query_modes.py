"""Lexical query modes (``encoder`` / ``inference-free``) reach the encoder from every entry
point: ``Index.search``, ``lexlens search --query-mode``, the HTTP API and ``lexlens eval``.

The encoder answers differently per mode (inference-free maps each colour word to the next
colour), so the results show which mode was used; expected results come from a brute-force
sparse dot product over the stored item vectors. The index kind is a naive test kind, so
these tests do not depend on the real sparse engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import VOCAB, FakeEncoder, write_collection

from lexlens.cli import main
from lexlens.errors import UsageError
from lexlens.index.base import KINDS, IndexKind, KindContext, SearchParams, Vectors
from lexlens.index.index import Index
from lexlens.models import registry
from lexlens.models.base import SparseBatch
from lexlens.search import Query


class NaiveLexicalKind(IndexKind):
    """Sparse dot products by a loop over stored dense rows (ties: lower id)."""

    kind = "naivelex"
    needs_sparse = True

    def __init__(self, vocab_size: int = 0) -> None:
        self.vocab_size = vocab_size
        self.rows: dict[int, np.ndarray] = {}

    @classmethod
    def from_spec(cls, spec, ctx: KindContext) -> NaiveLexicalKind:
        return cls(ctx.vocab_size)

    def add(self, ids: np.ndarray, vectors: Vectors) -> None:
        dense = vectors.sparse.to_dense()
        for i, row in zip(ids.tolist(), dense, strict=True):
            self.rows[int(i)] = row

    def remove(self, ids: np.ndarray) -> int:
        return sum(self.rows.pop(int(i), None) is not None for i in ids)

    def search(self, queries: Vectors, k: int, params: SearchParams | None = None):
        q = queries.sparse.to_dense()
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            hits = sorted(
                ((-float(q[r] @ x), i) for i, x in self.rows.items() if float(q[r] @ x) > 0)
            )[:k]
            for c, (s, i) in enumerate(hits):
                scores[r, c], ids[r, c] = -s, i
        return scores, ids

    def save(self, directory: Path) -> list[str]:
        keys = np.asarray(sorted(self.rows), np.int64)
        rows = np.stack([self.rows[int(i)] for i in keys]) if len(keys) else np.zeros((0, 0))
        np.savez(directory / "naivelex.npz", ids=keys, rows=rows, v=self.vocab_size)
        return ["naivelex.npz"]

    @classmethod
    def load(cls, directory: Path, options: dict[str, Any], mmap: bool = True):
        z = np.load(directory / "naivelex.npz")
        kind = cls(int(z["v"]))
        kind.rows = {int(i): r for i, r in zip(z["ids"], z["rows"], strict=True)}
        return kind

    @property
    def ntotal(self) -> int:
        return len(self.rows)


class ModeEncoder(FakeEncoder):
    """The index tests' fake encoder with both query modes; records the modes asked for."""

    seen: list[str] = []

    def __init__(self) -> None:
        super().__init__(name="modes:fake")

    @property
    def lexical_query_modes(self) -> tuple[str, ...]:
        return ("encoder", "inference-free")

    def encode_texts_lexical(self, texts, batch_size=256, progress=False, mode="encoder"):
        self.check_query_mode(mode)
        ModeEncoder.seen.append(mode)
        return SparseBatch.from_dense(query_weights(list(texts), mode), vocab=VOCAB)


def query_weights(texts: list[str], mode: str) -> np.ndarray:
    """Colour words weigh 1 (encoder); inference-free moves each to the next colour."""
    shift = 1 if mode == "inference-free" else 0
    x = np.zeros((len(texts), len(VOCAB)), np.float32)
    for r, t in enumerate(texts):
        for j, c in enumerate(VOCAB):
            if c in t.lower().split():
                x[r, (j + shift) % len(VOCAB)] = 1.0
    return x


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    registry.list_models()
    registry.register_backend("modes", lambda target: ModeEncoder(), lambda: ["fake"], "tests")
    KINDS[NaiveLexicalKind.kind] = NaiveLexicalKind  # for this module only
    tmp = tmp_path_factory.mktemp("modes")
    recs = write_collection(tmp / "src", 18)
    lines = [json.dumps({"image": r["image"], "captions": r["captions"]}) for r in recs]
    (tmp / "src" / "captions.jsonl").write_text("\n".join(lines) + "\n")
    Index.build(tmp / "src", ModeEncoder(), tmp / "idx", spec="naivelex", progress=False, workers=0)
    dense = Index.build(
        tmp / "src", ModeEncoder(), tmp / "flat", spec="flat", progress=False, workers=0
    )
    yield tmp, recs, dense
    KINDS.pop(NaiveLexicalKind.kind, None)
    registry.BACKENDS.pop("modes", None)


def _expected_ids(idx: Index, text: str, mode: str, k: int) -> list[int]:
    ids = sorted(int(i) for i in idx._state.meta.select_ids("1=1", []))
    items = idx.vectors(ids).sparse.to_dense()
    q = query_weights([text], mode)[0]
    scored = sorted((-float(q @ x), i) for i, x in zip(ids, items, strict=True) if q @ x > 0)
    return [i for _, i in scored[:k]]


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
def test_index_search_uses_the_query_mode(built, mode):
    tmp, recs, _ = built
    idx = Index.open(tmp / "idx")
    assert idx.encoder is not None  # loaded and checked (its probe encodes a text) first
    ModeEncoder.seen.clear()
    res = idx.search(Query(text="a red picture"), k=3, query_mode=mode)
    assert ModeEncoder.seen == [mode]
    assert res.ids[0][res.ids[0] >= 0].tolist() == _expected_ids(idx, "a red picture", mode, 3)
    colour = "red" if mode == "encoder" else VOCAB[(VOCAB.index("red") + 1) % len(VOCAB)]
    assert {recs[h.id]["color"] for h in res.hits[0]} == {colour}


def test_cli_search_query_mode_json(built, capsys):
    tmp, _, _ = built
    idx = Index.open(tmp / "idx")
    for mode in ("encoder", "inference-free"):
        argv = ["search", str(tmp / "idx"), "blue", "--k", "4", "--query-mode", mode, "--json"]
        assert main(argv) == 0
        hits = json.loads(capsys.readouterr().out)["results"][0]["hits"]
        assert [h["id"] for h in hits] == _expected_ids(idx, "blue", mode, 4)


def test_bad_modes_are_one_line_errors(built, capsys):
    tmp, _, _ = built
    with pytest.raises(SystemExit):  # argparse refuses an unknown choice
        main(["search", str(tmp / "idx"), "blue", "--query-mode", "psychic"])
    capsys.readouterr()
    # a dense index has no lexical queries
    code = main(["search", str(tmp / "flat"), "blue", "--query-mode", "inference-free"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "applies to lexical indexes" in err and "\n" not in err
    assert main(["search", str(tmp / "flat"), "blue", "--json"]) == 0  # the default is fine
    capsys.readouterr()
    # a model with only the encoder mode
    with pytest.raises(UsageError, match="cannot encode inference-free queries"):
        FakeEncoder().check_query_mode("inference-free")
    with pytest.raises(UsageError, match="unknown query mode"):
        Index.open(tmp / "idx").search("red", query_mode="nope")


def test_server_search_query_mode(built):
    from fastapi.testclient import TestClient

    from lexlens.server.app import create_app
    from lexlens.server.backend import Backend

    tmp, _, _ = built
    idx = Index.open(tmp / "idx")
    backend = Backend.open(
        [tmp / "idx", tmp / "flat"], names=["lex", "dense"], encoder=ModeEncoder()
    )
    with TestClient(create_app(backend), raise_server_exceptions=False) as client:
        for mode in ("encoder", "inference-free"):
            ModeEncoder.seen.clear()
            body = {"index": "lex", "text": "green", "k": 3, "query_mode": mode}
            r = client.post("/search", json=body)
            assert r.status_code == 200, r.text
            assert [h["id"] for h in r.json()["hits"]] == _expected_ids(idx, "green", mode, 3)
            assert ModeEncoder.seen == [mode]
        r = client.post("/search", json={"index": "lex", "text": "green", "query_mode": "x"})
        assert r.status_code == 422
        r = client.post(
            "/search", json={"index": "dense", "text": "green", "query_mode": "inference-free"}
        )
        assert r.status_code == 400 and "lexical indexes" in r.json()["error"]
        assert client.post("/search", json={"index": "lex", "text": "green"}).status_code == 200


def test_eval_query_mode(built, tmp_path, capsys):
    tmp, _, _ = built
    from lexlens.eval.protocol import evaluate, load_eval_set

    data = load_eval_set(str(tmp / "src"))
    ModeEncoder.seen.clear()
    res = {
        m: evaluate(ModeEncoder(), data, progress=False, query_mode=m)
        for m in ("encoder", "inference-free")
    }
    assert set(ModeEncoder.seen) == {"encoder", "inference-free"}
    assert res["encoder"]["query_mode"] == "encoder"
    assert res["inference-free"]["query_mode"] == "inference-free"
    # shifted colours find the wrong pictures: lexical recall drops, dense recall does not
    assert res["inference-free"]["lexical"]["rsum"] < res["encoder"]["lexical"]["rsum"]
    assert res["inference-free"]["rsum"] == res["encoder"]["rsum"]
    argv = ["eval", "--model", "modes:fake", "--data", str(tmp / "src"), "--json", "-"]
    assert main([*argv, "--query-mode", "inference-free"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query_mode"] == "inference-free"
    assert out["lexical"]["rsum"] == pytest.approx(res["inference-free"]["lexical"]["rsum"])
    with pytest.raises(UsageError, match="cannot encode inference-free"):
        evaluate(FakeEncoder(), data, progress=False, query_mode="inference-free")
