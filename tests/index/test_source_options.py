"""Reading an index's source (`--images`, `--image-column`, `--caption-column`), sources whose
images cannot be read at all, and user fields named like the item columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeEncoder, write_collection

from lexlens.cli import main
from lexlens.errors import DataError
from lexlens.index.index import Index
from lexlens.index.ingest import ReaderOptions, SourceItem

pytest.importorskip("lexlens.data.readers")


def _write_jsonl(folder: Path, records: list[dict], image=lambda r: r["image"]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "captions.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps({**r, "image": image(r)}) + "\n")
    return folder


def _error_line(capsys) -> str:
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lexlens: error: "), out.err
    return err[0]


def _build(source: Path, out: Path, model: str, *extra: str) -> list[str]:
    return ["index", "build", str(source), "--model", model, "--out", str(out), *extra]


# ----------------------------------------------------------------------------- nothing readable
def test_a_build_where_no_image_can_be_read_fails_in_one_line_and_writes_no_index(
    tmp_path, fake_backend, capsys
) -> None:
    recs = write_collection(tmp_path / "src" / "images", 5)
    src = _write_jsonl(tmp_path / "src", recs, lambda r: "images\\" + r["image"])  # Windows
    out = tmp_path / "idx"
    assert main(_build(src, out, fake_backend, "--spec", "flat")) == 1
    err = _error_line(capsys)
    assert "none of the 5 images" in err and "images\\img-0000.png" in err
    assert "backslashes" in err and "no index was written" in err
    assert not out.exists()
    # an empty folder given as --out stays an empty folder
    out.mkdir()
    assert main(_build(src, out, fake_backend, "--spec", "flat", "--json")) == 1
    _error_line(capsys)
    assert list(out.iterdir()) == []
    # from Python too
    with pytest.raises(DataError, match="none of the 5 images"):
        Index.build(src, FakeEncoder(), tmp_path / "py", progress=False, workers=0)
    assert not (tmp_path / "py").exists()


def test_an_add_where_no_image_can_be_read_fails_and_leaves_the_index_as_it_was(
    tmp_path, fake_backend, capsys
) -> None:
    good = _write_jsonl(tmp_path / "good", write_collection(tmp_path / "good", 4))
    idx = tmp_path / "idx"
    assert main(_build(good, idx, fake_backend, "--spec", "flat", "--json")) == 0
    capsys.readouterr()
    before = Index.open(idx).info()
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("a.png", "b.png"):
        (bad / name).write_bytes(b"not a png at all")
    assert main(["index", "add", str(idx), str(bad)]) == 1
    err = _error_line(capsys)
    assert "none of the 2 images" in err and "a.png" in err and f"{idx} is unchanged" in err
    after = Index.open(idx).info(verify=True)
    assert (after["count"], after["generation"], after["verified"]) == (
        before["count"],
        before["generation"],
        True,
    )
    # some readable, some not: the add goes through (exit 0) and says which failed and why
    write_collection(bad, 1, seed=3, start=9)
    assert main(["index", "add", str(idx), str(bad)]) == 0
    text = capsys.readouterr().out
    assert "added 1, updated 0, unchanged 0, failed 2" in text
    assert f"unreadable: {bad / 'a.png'} (" in text


def test_a_build_with_relative_paths_elsewhere_says_to_pass_images(
    tmp_path, fake_backend, capsys
) -> None:
    recs = write_collection(tmp_path / "pictures", 6)
    meta = _write_jsonl(tmp_path / "meta", recs)  # paths relative to another folder
    assert main(_build(meta, tmp_path / "idx", fake_backend)) == 1
    assert "--images DIR" in _error_line(capsys)
    argv = _build(meta, tmp_path / "idx", fake_backend, "--images", str(tmp_path / "pictures"))
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 6
    more = write_collection(tmp_path / "pictures", 2, seed=4, start=6)
    _write_jsonl(tmp_path / "meta", recs + more)
    add = ["index", "add", str(tmp_path / "idx"), str(meta), "--json"]
    assert main([*add, "--images", str(tmp_path / "pictures")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["skipped"], report["count"]) == (2, 6, 8)


# ----------------------------------------------------------------------------- table columns
def test_index_build_and_add_take_the_table_columns(tmp_path, fake_backend, capsys) -> None:
    recs = write_collection(tmp_path / "imgs", 4)
    table = tmp_path / "odd.csv"
    rows = ["img_file,sentence_text,colour"]
    rows += [f"imgs/{r['image']},{c},{r['color']}" for r in recs for c in r["captions"]]
    table.write_text("\n".join(rows) + "\n")
    idx = tmp_path / "idx"
    assert main(_build(table, idx, fake_backend)) == 1
    assert "--image-column" in _error_line(capsys)
    cols = ["--image-column", "img_file", "--caption-column", "sentence_text"]
    assert main([*_build(table, idx, fake_backend, "--spec", "flat", *cols), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 4
    row = Index.open(idx).rows([0])[0]
    assert row.captions == recs[0]["captions"] and row.fields == {"colour": recs[0]["color"]}
    assert main(["index", "add", str(idx), str(table), *cols, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 4


def test_reader_options_need_a_dataset_path(tmp_path) -> None:
    from lexlens.errors import UsageError
    from lexlens.index.ingest import read_source

    with pytest.raises(UsageError, match="dataset path"):
        read_source([SourceItem(str(tmp_path / "a.png"))], reader=ReaderOptions(images_root="x"))


# ----------------------------------------------------------------------------- shadowed fields
def test_a_filter_on_a_column_the_items_also_have_as_a_field_is_noted(
    tmp_path, fake_backend, capsys
) -> None:
    recs = write_collection(tmp_path / "src", 6)
    items = [
        SourceItem(
            str(tmp_path / "src" / r["image"]),
            None,
            r["captions"],
            {"size": "large", "id": 1000 + i, "color": r["color"]},
        )
        for i, r in enumerate(recs)
    ]
    idx = Index.build(items, fake_backend, tmp_path / "idx", spec="flat", progress=False)
    where = "size=large AND color=red AND id>3 AND mtime>0"
    assert idx.shadowed_fields(where) == ["size", "id"]
    assert idx.shadowed_fields("color=red") == [] and idx.shadowed_fields(None) == []
    assert main(["search", str(tmp_path / "idx"), "red", "--where", "size=large"]) == 0
    err = capsys.readouterr().err
    assert "'size' in --where is the item column (the image file's size in bytes)" in err
    assert "field 'size' of their own" in err
    # the user's value is kept with the item
    assert idx.rows([0])[0].fields["size"] == "large"
    # no note when no item has such a field
    plain = Index.build(
        [SourceItem(s.path, None, s.captions, {"color": s.fields["color"]}) for s in items],
        fake_backend,
        tmp_path / "plain",
        spec="flat",
        progress=False,
    )
    assert plain.shadowed_fields(where) == []
    assert main(["search", str(tmp_path / "plain"), "red", "--where", "size>0"]) == 0
    assert "item column" not in capsys.readouterr().err
