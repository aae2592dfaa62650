"""Dataset readers on awkward inputs: encodings, blank captions, fine-grained lines, tables
with repeated or numbered caption columns, partial splits (one test per reader bug)."""

import json

import pytest
from PIL import Image

from lexlens.cli import main
from lexlens.data.readers import load_dataset
from lexlens.errors import DataError
from lexlens.eval.protocol import as_eval_set

BOM = b"\xef\xbb\xbf"


def _img(path, colour=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return str(path.resolve())


def _jsonl(path, rows, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding)


def _folder(tmp_path, n=2):
    """``n`` images with two captions each in ``captions.jsonl``; their absolute paths."""
    paths = [_img(tmp_path / "images" / f"{i}.png") for i in range(n)]
    _jsonl(
        tmp_path / "captions.jsonl",
        [{"image": f"images/{i}.png", "captions": [f"cap {i}a", f"cap {i}b"]} for i in range(n)],
    )
    return paths


def _notes(capsys) -> list[str]:
    err = capsys.readouterr().err.strip()
    return err.splitlines() if err else []


# ----------------------------------------------------------------------------- 1. BOM
def test_utf8_bom_is_read_in_every_text_format(tmp_path, capsys):
    a = _img(tmp_path / "images" / "a.png")
    line = {"image": "images/a.png", "captions": ["a red one"], "split": "test"}
    (tmp_path / "captions.jsonl").write_bytes(BOM + (json.dumps(line) + "\n").encode())
    fg = {"image": "images/a.png", "positive": "a red one", "negatives": ["a blue one"]}
    (tmp_path / "fg.jsonl").write_bytes(BOM + (json.dumps(fg) + "\n").encode())
    ds = load_dataset(tmp_path, split="test")
    assert ds.image_paths == [a] and ds.captions == [["a red one"]]
    assert ds.fg == [{**fg, "image": a}]

    karpathy = {"images": [{"filename": "a.png", "filepath": "images", "split": "test",
                            "sentences": [{"raw": "a red one"}]}]}  # fmt: skip
    (tmp_path / "k.json").write_bytes(BOM + json.dumps(karpathy).encode())
    assert load_dataset(tmp_path / "k.json").captions == [["a red one"]]

    (tmp_path / "list.txt").write_bytes(BOM + b"images/a.png\n")
    assert load_dataset(tmp_path / "list.txt").image_paths == [a]

    (tmp_path / "t.csv").write_bytes(BOM + b"image,caption\nimages/a.png,a red one\n")
    assert load_dataset(tmp_path / "t.csv").captions == [["a red one"]]

    d = tmp_path / "withinfo"
    _jsonl(d / "captions.jsonl", [{"image": a, "captions": ["x"]}])
    (d / "dataset.json").write_bytes(BOM + b'{"split": "val"}')
    assert load_dataset(d, split="val").split == "val"
    assert _notes(capsys) == []


# ----------------------------------------------------------------------------- 2. not UTF-8
LATIN1 = "a caf\u00e9 scene".encode("latin-1")


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("captions.jsonl", b'{"image": "a.png", "captions": ["x"]}\n{"image": "a.png", '
         b'"captions": ["' + LATIN1 + b'"]}\n', "captions.jsonl:2: not valid UTF-8 (byte 0xe9)"),
        ("u16.jsonl", '{"image": "a.png", "captions": ["x"]}\n'.encode("utf-16"),
         "u16.jsonl: UTF-16 text"),
        ("fg.jsonl", b'{"image": "a.png", "positive": "' + LATIN1 + b'", "negatives": []}\n',
         "fg.jsonl:1: not valid UTF-8"),
        ("k.json", b'{"images": [{"filename": "a.png", "sentences": [{"raw": "' + LATIN1
         + b'"}]}]}', "k.json:1: not valid UTF-8"),
        ("t.csv", b"image,caption\na.png,x\na.png," + LATIN1 + b"\n", "t.csv:3: not valid UTF-8"),
        ("t.tsv", "image\tcaption\na.png\tx\n".encode("utf-16"), "t.tsv: UTF-16 text"),
        ("l.txt", b"a.png\n" + LATIN1 + b".png\n", "l.txt:2: not valid UTF-8"),
    ],
)  # fmt: skip
def test_text_that_is_not_utf8_is_a_one_line_error_naming_file_and_line(
    tmp_path, name, content, where
):
    _img(tmp_path / "a.png")
    if name == "fg.jsonl":  # next to a good captions.jsonl
        _jsonl(tmp_path / "captions.jsonl", [{"image": "a.png", "captions": ["x"]}])
        target = tmp_path
    else:
        target = tmp_path / name
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match="must be UTF-8") as e:
        load_dataset(target)
    assert where in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_a_latin1_captions_file_in_one_line(tmp_path, capsys):
    _img(tmp_path / "a.png")
    (tmp_path / "captions.jsonl").write_bytes(
        b'{"image": "a.png", "captions": ["' + LATIN1 + b'"]}\n'
    )
    assert main(["data", "info", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lexlens: error: ") and "UTF-8" in err[0]


# ----------------------------------------------------------------------------- 3. blank captions
def test_blank_jsonl_captions_are_dropped_with_their_meanings_and_a_note(tmp_path, capsys):
    a, b = _img(tmp_path / "images/0.png"), _img(tmp_path / "images/1.png")
    m = [{"k": i} for i in range(4)]
    _jsonl(
        tmp_path / "captions.jsonl",
        [
            {"image": "images/0.png", "captions": ["", "a red one", " \t"],
             "caption_meta": m[:3]},
            {"image": "images/1.png", "captions": ["\n", "  "], "caption_meta": m[:2]},
            {"image": "images/0.png", "captions": "   ", "caption_meta": m[3:]},
        ],
    )  # fmt: skip
    ds = load_dataset(tmp_path)
    assert ds.image_paths == [a, b]
    assert ds.captions == [["a red one"], []]
    assert ds.caption_meta == [[m[1]], []]
    notes = _notes(capsys)
    assert len(notes) == 1 and "dropped 5 blank captions" in notes[0] and "line 1" in notes[0]
    assert notes[0].startswith("lexlens: note: ")
    with pytest.raises(DataError, match=r"1\.png has no caption"):  # the image left with none
        as_eval_set(ds)
    quiet = load_dataset(tmp_path, log=None)
    assert _notes(capsys) == [] and quiet.notes == ds.notes


def test_blank_captions_are_dropped_in_tables_karpathy_and_fg(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a = _img(tmp_path / "a.png")
    (tmp_path / "t.csv").write_text('image,caption\na.png,one\na.png, \na.png,"[""two"", """"]"\n')
    assert load_dataset(tmp_path / "t.csv").captions == [["one", "two"]]
    assert "dropped 2 blank captions" in " ".join(_notes(capsys))

    pq.write_table(
        pa.table({"image": ["a.png"], "captions": [["one", "", "  "]]}), tmp_path / "p.pq"
    )
    assert load_dataset(tmp_path / "p.pq").captions == [["one"]]
    assert "dropped 2 blank captions" in " ".join(_notes(capsys))

    karpathy = {"images": [{"filename": "a.png", "sentences": [{"raw": " "}, {"raw": "one "}]}]}
    (tmp_path / "k.json").write_text(json.dumps(karpathy))
    assert load_dataset(tmp_path / "k.json").captions == [["one"]]
    assert "dropped 1 blank caption " in " ".join(_notes(capsys))

    _jsonl(tmp_path / "captions.jsonl", [{"image": "a.png", "captions": ["one"]}])
    _jsonl(
        tmp_path / "fg.jsonl",
        [
            {"image": "a.png", "positive": "one", "negatives": ["", "two"]},
            {"image": "a.png", "positive": " ", "negatives": ["three"]},
        ],
    )
    ds = load_dataset(tmp_path)
    assert ds.fg == [{"image": a, "positive": "one", "negatives": ["two"]}]
    notes = " ".join(_notes(capsys))
    assert "dropped 1 blank caption" in notes and "1 line with a blank positive" in notes


# ----------------------------------------------------------------------------- 4. fg images
def test_fg_bare_file_names_match_the_dataset_images(tmp_path, capsys):
    a, b = _folder(tmp_path)
    _jsonl(
        tmp_path / "fg.jsonl",
        [
            {"image": "0.png", "positive": "cap 0a", "negatives": ["x"]},
            {"image": "./images/1.png", "positive": "cap 1a", "negatives": ["y"]},
        ],
    )
    ds = load_dataset(tmp_path)
    assert [f["image"] for f in ds.fg] == [a, b]
    assert _notes(capsys) == []
    assert [f.image for f in as_eval_set(ds).fg] == [0, 1]


def test_fg_lines_of_no_dataset_image_are_noted_and_none_matching_is_an_error(tmp_path, capsys):
    a, _ = _folder(tmp_path)
    _img(tmp_path / "other" / "0.png")  # a file, but not an image of the dataset
    _jsonl(
        tmp_path / "fg.jsonl",
        [
            {"image": "images/0.png", "positive": "cap 0a", "negatives": ["x"]},
            {"image": "images/nothere.png", "positive": "a", "negatives": ["b"]},
            {"image": "other/0.png", "positive": "a", "negatives": ["b"]},
        ],
    )
    ds = load_dataset(tmp_path)
    assert [f["image"] for f in ds.fg] == [a]
    notes = _notes(capsys)
    assert len(notes) == 1 and "skipped 2 of 3 lines naming no image" in notes[0]
    assert "line 2 (images/nothere.png)" in notes[0] and "line 3 (other/0.png)" in notes[0]

    _jsonl(tmp_path / "fg.jsonl", [{"image": "nope.png", "positive": "a", "negatives": ["b"]}])
    with pytest.raises(DataError, match=r"none of its 1 line names an image") as e:
        load_dataset(tmp_path)
    assert "\n" not in str(e.value)


def test_fg_bare_name_of_two_images_is_ambiguous(tmp_path, capsys):
    a = _img(tmp_path / "x" / "0.png")
    b = _img(tmp_path / "y" / "0.png")
    _jsonl(tmp_path / "captions.jsonl", [{"image": p, "captions": ["c"]} for p in (a, b)])
    _jsonl(
        tmp_path / "fg.jsonl",
        [
            {"image": "0.png", "positive": "c", "negatives": ["d"]},
            {"image": "y/0.png", "positive": "c", "negatives": ["d"]},
        ],
    )
    ds = load_dataset(tmp_path)
    assert [f["image"] for f in ds.fg] == [b]
    assert "line 1 (0.png, which 2 images end with)" in " ".join(_notes(capsys))


# ----------------------------------------------------------------------------- 5. fg grouping
def test_fg_lines_of_one_image_and_positive_are_merged(tmp_path):
    a, b = _folder(tmp_path)
    _jsonl(
        tmp_path / "fg.jsonl",
        [
            {"image": "images/0.png", "positive": "cap 0a", "negatives": ["n1"], "kind": "c"},
            {"image": "images/1.png", "positive": "cap 1a", "negatives": ["m1"]},
            {"image": "images/0.png", "positive": "cap 0a", "negatives": ["n2", "n1"]},
            {"image": "images/0.png", "positive": "cap 0b", "negatives": ["n3"]},
            {"image": "images/0.png", "positive": "cap 0a", "negatives": ["n3"]},
        ],
    )
    ds = load_dataset(tmp_path)
    assert ds.fg == [
        {"image": a, "positive": "cap 0a", "negatives": ["n1", "n2", "n3"], "kind": "c"},
        {"image": b, "positive": "cap 1a", "negatives": ["m1"]},
        {"image": a, "positive": "cap 0b", "negatives": ["n3"]},
    ]
    assert len(as_eval_set(ds).fg) == 3


# ----------------------------------------------------------------------------- 6. table duplicates
def test_table_keeps_repeated_captions_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    caps = ["a red one", "a red one", "red", "a red one"]
    _img(tmp_path / "a.png")
    _jsonl(tmp_path / "captions.jsonl", [{"image": "a.png", "captions": caps}])
    (tmp_path / "t.csv").write_text("image,caption\n" + "".join(f"a.png,{c}\n" for c in caps))
    pq.write_table(pa.table({"image": ["a.png"] * 4, "caption": caps}), tmp_path / "t.parquet")
    want = load_dataset(tmp_path).captions
    assert want == [caps]
    assert load_dataset(tmp_path / "t.csv").captions == want
    assert load_dataset(tmp_path / "t.parquet").captions == want


# ----------------------------------------------------------------------------- 7. wide tables
def test_numbered_caption_columns_are_read_in_order(tmp_path, capsys):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.png")
    head = "image,caption_10,caption_2,Caption_0,n,caption_1"
    (tmp_path / "w.csv").write_text(f"{head}\na.png,k,c,a,5,b\nb.png,,y,x,6,\n")
    ds = load_dataset(tmp_path / "w.csv")
    assert ds.image_paths == [a, b]
    assert ds.captions == [["a", "b", "c", "k"], ["x", "y"]]
    assert ds.records == [{"n": 5}, {"n": 6}]
    (tmp_path / "v.csv").write_text("image,text1,text2\na.png,one,two\n")
    assert load_dataset(tmp_path / "v.csv").captions == [["one", "two"]]
    capsys.readouterr()


def test_table_without_caption_column_says_how_to_name_it(tmp_path, capsys):
    _img(tmp_path / "a.png")
    (tmp_path / "u.csv").write_text("image,words\na.png,a red one\n")
    assert load_dataset(tmp_path / "u.csv").captions == [[]]
    notes = _notes(capsys)
    assert len(notes) == 1 and "no caption column among words" in notes[0]
    assert "caption_0" in notes[0] and "--caption-column" in notes[0]
    (tmp_path / "only.csv").write_text("image\na.png\n")
    load_dataset(tmp_path / "only.csv")
    assert _notes(capsys) == []  # an image list: nothing to say


# ----------------------------------------------------------------------------- 8. partial splits
def test_split_of_some_lines_only_is_a_clear_error(tmp_path):
    _folder(tmp_path, 3)
    rows = [json.loads(x) for x in (tmp_path / "captions.jsonl").read_text().splitlines()]
    rows[1]["split"] = rows[2]["split"] = "test"
    _jsonl(tmp_path / "captions.jsonl", rows)
    with pytest.raises(DataError, match=r'1 of 3 images have no "split" field') as e:
        load_dataset(tmp_path, split="test")
    assert "images/0.png" in str(e.value) and "no splits" not in str(e.value)
    (tmp_path / "dataset.json").write_text('{"split": "train"}')  # the others' split
    assert len(load_dataset(tmp_path, split="test")) == 2
    assert len(load_dataset(tmp_path, split="train")) == 1


def test_table_rows_with_a_blank_split_cell_are_an_error_too(tmp_path):
    _img(tmp_path / "a.png"), _img(tmp_path / "b.png")
    (tmp_path / "t.csv").write_text("image,caption,split\na.png,x,test\nb.png,y,\n")
    with pytest.raises(DataError, match=r'1 of 2 images have no "split" field \(first: b.png\)'):
        load_dataset(tmp_path / "t.csv", split="test")


# ----------------------------------------------------------------------------- own keys
def test_a_records_own_path_or_caption_key_is_kept_beside_image_and_captions(tmp_path):
    img = _img(tmp_path / "images" / "0.png")
    row = {"image": "images/0.png", "path": "/orig/0.png", "captions": ["a"], "caption": "b"}
    _jsonl(tmp_path / "captions.jsonl", [row, {"path": "images/1.png", "caption": "c"}])
    _img(tmp_path / "images" / "1.png")
    ds = load_dataset(tmp_path)
    assert ds.images[0] == img and ds.captions == [["a"], ["c"]]
    assert ds.records[0] == {"path": "/orig/0.png", "caption": "b"}
    assert ds.records[1] == {}  # the keys read as image and caption are not the record's
