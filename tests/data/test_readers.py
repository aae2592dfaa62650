"""Dataset readers on tiny hand-made files of every format."""

import json
import os

import pytest
from PIL import Image

from lexlens.cli import main
from lexlens.data.readers import dataset_info, load_dataset
from lexlens.errors import DataError


def _img(path, colour=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return str(path.resolve())


def test_image_folder_recursive_sorted_known_extensions(tmp_path):
    want = [_img(tmp_path / n) for n in ("a.png", "b.JPG", "sub/c.webp", "sub/deep/d.bmp")]
    _img(tmp_path / "e.gif")
    Image.new("RGB", (4, 4)).save(tmp_path / "sub" / "f.tiff")
    (tmp_path / "notes.txt").write_text("x")
    _img(tmp_path / ".hidden" / "g.png")
    ds = load_dataset(tmp_path)
    names = sorted(
        [*want, str((tmp_path / "e.gif").resolve()), str((tmp_path / "sub/f.tiff").resolve())],
        key=lambda p: os.path.relpath(p, tmp_path),
    )
    assert ds.format == "folder" and ds.image_paths == names
    assert ds.captions == [[]] * 6 and ds.records is None and ds.fg is None
    assert all(os.path.isabs(p) for p in ds.images)


def test_captions_jsonl_folder_with_fg_and_records(tmp_path):
    a, b = _img(tmp_path / "images/0.png"), _img(tmp_path / "images/1.png")
    lines = [
        {
            "image": "images/0.png",
            "captions": ["a red square", "red"],
            "color": "red",
            "scene": {"kind": "single"},
            "caption_meta": [{"objects": []}, {"objects": []}],
        },
        {
            "image": b,
            "captions": ["another"],
            "color": "blue",
            "scene": {"kind": "pair"},
            "caption_meta": [{"objects": []}],
        },
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    fg = {"image": "images/0.png", "positive": "a red square", "negatives": ["a blue square"]}
    (tmp_path / "fg.jsonl").write_text(json.dumps(fg) + "\n")
    ds = load_dataset(tmp_path)
    assert ds.format == "jsonl" and ds.image_paths == [a, b]
    assert ds.captions == [["a red square", "red"], ["another"]]
    assert ds.records == [
        {"color": "red", "scene": {"kind": "single"}},
        {"color": "blue", "scene": {"kind": "pair"}},
    ]
    assert ds.scenes == [{"kind": "single"}, {"kind": "pair"}]
    assert ds.caption_meta == [[{"objects": []}, {"objects": []}], [{"objects": []}]]
    assert ds.fg == [{**fg, "image": a}]
    info = dataset_info(ds)
    assert (info["images"], info["captions"], info["fg_items"], info["missing_files"]) == (
        2,
        3,
        1,
        0,
    )
    assert info["scene_kinds"] == {"single": 1, "pair": 1}
    assert load_dataset(tmp_path / "captions.jsonl").image_paths == [a, b]


def test_generated_scenes_read_back(tmp_path):
    from lexlens.data.scenes import caption_fits, generate_scenes

    generate_scenes(tmp_path, 9, seed=4, split="val", workers=1, progress=False)
    ds = load_dataset(tmp_path, split="val")
    assert len(ds) == 9 and ds.split == "val" and all(os.path.isfile(p) for p in ds.images)
    assert all(len(c) == 5 for c in ds.captions) and len(ds.fg) == 9
    for rec, metas in zip(ds.records, ds.caption_meta, strict=True):
        assert all(caption_fits(m, rec) for m in metas)
    with pytest.raises(DataError, match="'val' split"):
        load_dataset(tmp_path, split="train")


def test_txt_list(tmp_path):
    a = _img(tmp_path / "x" / "a.png")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# images\nx/a.png\n\n{a}\nmissing.png\n")
    ds = load_dataset(lst)
    assert ds.format == "list"
    assert ds.image_paths == [a, a, str(tmp_path / "missing.png")]
    assert dataset_info(ds)["missing_files"] == 1


def test_csv_grouped_captions_and_columns(tmp_path):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.png")
    (tmp_path / "d.csv").write_text(
        "filepath,text,label\na.png,a red one,1\nb.png,a blue one,2\na.png,red again,1\n"
    )
    ds = load_dataset(tmp_path / "d.csv")
    assert ds.format == "table" and ds.image_paths == [a, b]
    assert ds.captions == [["a red one", "red again"], ["a blue one"]]
    assert ds.records == [{"label": 1}, {"label": 2}]
    (tmp_path / "e.csv").write_text('pic,words\na.png,"[""one"", ""two""]"\n')
    ds = load_dataset(tmp_path / "e.csv", image_column="pic", caption_column="words")
    assert ds.captions == [["one", "two"]]
    with pytest.raises(DataError, match="no image column"):
        load_dataset(tmp_path / "e.csv")
    with pytest.raises(DataError, match="no caption column 'nope'"):
        load_dataset(tmp_path / "e.csv", image_column="pic", caption_column="nope")


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a = _img(tmp_path / "imgs" / "a.png")
    table = pa.table({"image": ["a.png"], "captions": [["first", "second"]], "n": [3]})
    pq.write_table(table, tmp_path / "d.parquet")
    ds = load_dataset(tmp_path / "d.parquet", images_root=tmp_path / "imgs")
    assert (
        ds.image_paths == [a] and ds.captions == [["first", "second"]] and ds.records == [{"n": 3}]
    )


KARPATHY = {
    "images": [
        {
            "filename": "1.jpg",
            "split": "train",
            "imgid": 0,
            "sentences": [
                {"raw": "A dog runs.", "tokens": ["a", "dog", "runs"]},
                {"raw": "A dog."},
            ],
        },
        {"filename": "2.jpg", "split": "test", "imgid": 1, "sentences": [{"raw": "Two cats."}]},
        {"filename": "3.jpg", "split": "restval", "imgid": 2, "sentences": [{"raw": "A bird."}]},
    ],
    "dataset": "flickr30k",
}


def test_karpathy_json_splits_and_roots(tmp_path):
    for n in ("1", "2", "3"):
        _img(tmp_path / "flickr30k-images" / f"{n}.jpg")
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(KARPATHY))
    ds = load_dataset(path)
    assert ds.format == "karpathy"
    assert ds.image_paths == [str(tmp_path / "flickr30k-images" / f"{n}.jpg") for n in "123"]
    assert ds.captions == [["A dog runs.", "A dog."], ["Two cats."], ["A bird."]]
    assert ds.records[1] == {"split": "test", "imgid": 1}
    test = load_dataset(path, split="test")
    assert test.captions == [["Two cats."]] and test.split == "test"
    assert len(load_dataset(path, split="train,restval")) == 2
    other = tmp_path / "elsewhere"
    ds = load_dataset(path, split="train", images_root=other.parent / "flickr30k-images")
    assert ds.image_paths == [str(tmp_path / "flickr30k-images" / "1.jpg")]
    with pytest.raises(DataError, match="no images in split 'val'"):
        load_dataset(path, split="val")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset(path, split="dev")
    coco = {
        "images": [
            {
                "filepath": "val2014",
                "filename": "c.jpg",
                "split": "val",
                "sentences": [{"raw": "x"}],
            }
        ]
    }
    (tmp_path / "dataset_coco.json").write_text(json.dumps(coco))
    c = _img(tmp_path / "val2014" / "c.jpg")
    assert load_dataset(tmp_path / "dataset_coco.json", split="val").image_paths == [c]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing", None, "no such file"),
        ("x.yaml", "a: 1", "unknown dataset format"),
        ("bad.json", "{nope", "not valid JSON"),
        ("other.json", '{"foo": 1}', "not a Karpathy split file"),
        ("c.jsonl", '{"image": "a.png"}\n{oops\n', r"c.jsonl:2: not valid JSON"),
        ("d.jsonl", '{"captions": ["x"]}\n', 'missing the "image" path'),
        ("e.csv", "image\n", "no rows"),
        ("empty.txt", "\n# nothing\n", "empty"),
        ("r.txt", "https://example.com/a.jpg\n", "remote images are not supported"),
        ("emptydir", "", "no images found"),
    ],
)
def test_clear_errors(tmp_path, name, content, message):
    p = tmp_path / name
    if name == "emptydir":
        p.mkdir()
    elif content is not None:
        p.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        load_dataset(p)
    assert "\n" not in str(e.value)


def test_cli_data_scenes_and_info(tmp_path, capsys):
    out = tmp_path / "sc"
    assert (
        main(
            [
                "data",
                "scenes",
                str(out),
                "--n",
                "12",
                "--seed",
                "3",
                "--size",
                "32",
                "--workers",
                "1",
                "--json",
            ]
        )
        == 0
    )
    stats = json.loads(capsys.readouterr().out)
    assert stats["n"] == 12 and stats["size"] == 32 and stats["images_per_second"] > 0
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["images"], info["captions"], info["fg_items"]) == (12, 60, 12)
    assert sum(info["scene_kinds"].values()) == 12
    assert main(["data", "info", str(out)]) == 0
    assert "images: 12" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "nope")]) == 1
    assert "lexlens: error:" in capsys.readouterr().err
    assert main(["data", "scenes", str(out), "--n", "0"]) == 2


def test_jsonl_same_image_on_two_lines_is_one_image_with_all_captions(tmp_path):
    a, b = _img(tmp_path / "images/0.png"), _img(tmp_path / "images/1.png")
    m = [{"objects": [{"shape": s}]} for s in ("circle", "star", "cross")]
    lines = [
        {"image": "images/0.png", "captions": ["a circle"], "caption_meta": [m[0]], "tag": "x"},
        {"image": "images/1.png", "captions": ["a star"], "caption_meta": [m[1]]},
        {"image": "./images/0.png", "captions": ["a red cross"], "caption_meta": [m[2]]},
    ]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ds = load_dataset(tmp_path)
    assert ds.image_paths == [a, b]
    assert ds.captions == [["a circle", "a red cross"], ["a star"]]
    assert ds.caption_meta == [[m[0], m[2]], [m[1]]]
    assert ds.records[0]["tag"] == "x"
    assert dataset_info(ds)["images"] == 2


def test_jsonl_nan_and_infinity_are_read_as_null(tmp_path):
    _img(tmp_path / "images/0.png")
    (tmp_path / "captions.jsonl").write_text(
        '{"image": "images/0.png", "captions": ["x"], "score": NaN, "big": -Infinity}\n'
    )
    ds = load_dataset(tmp_path)
    assert ds.records[0]["score"] is None and ds.records[0]["big"] is None
    json.dumps(ds.records[0], allow_nan=False)  # strict JSON from here on


def test_csv_numeric_looking_names_and_captions_stay_text(tmp_path):
    for name in ("1", "007"):  # file names without an extension, as some exports have
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    a, b = str((tmp_path / "1").resolve()), str((tmp_path / "007").resolve())
    (tmp_path / "t.csv").write_text("image,caption,n\n1,42,3\n007,3.50,4\n")
    ds = load_dataset(tmp_path / "t.csv")
    assert ds.image_paths == [a, b]
    assert ds.captions == [["42"], ["3.50"]]
    assert [r["n"] for r in ds.records] == [3, 4]  # other columns keep their types
