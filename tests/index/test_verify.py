"""``index info --verify`` inspects an index that is too damaged to open and lists every problem.

Each test damages a copy of one small ``hybrid(sparse,flat)`` index (truncated, changed or
missing files) and checks :func:`lexlens.index.index.index_info` and the CLI on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fakes import FakeEncoder, write_collection

from lexlens.cli import main
from lexlens.errors import DataError
from lexlens.index.index import Index, index_info
from lexlens.index.ingest import SourceItem


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    records = write_collection(root / "src", 12)
    items = [SourceItem(str(root / "src" / r["image"]), None, r["captions"]) for r in records]
    Index.build(
        items, FakeEncoder(), root / "idx", spec="hybrid(sparse,flat)", progress=False, workers=0
    )
    return root / "idx"


@pytest.fixture
def copy(built, tmp_path) -> Path:
    out = tmp_path / "idx"
    shutil.copytree(built, out)
    return out


def _gen(idx: Path) -> Path:
    return idx / "generations" / (idx / "CURRENT").read_text().strip()


def _manifest_size(idx: Path, name: str) -> int:
    return json.loads((_gen(idx) / "manifest.json").read_text())["files"][name]["size"]


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_intact_index_verifies(built):
    info = index_info(built, verify=True)
    assert (info["verified"], info["problems"]) == (True, [])
    assert info == {**Index.open(built).info(), "verified": True, "problems": []}
    assert index_info(built) == Index.open(built).info()


def test_a_truncated_array_is_listed(copy):
    size = _manifest_size(copy, "dense.npy")
    with open(_gen(copy) / "dense.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DataError, match="--verify"):
        Index.open(copy)
    info = index_info(copy, verify=True)
    assert info["verified"] is False
    assert info["problems"] == [f"dense.npy: size 1000, manifest says {size}"]
    # the manifest's facts are still shown; the structure was not loaded
    assert (info["count"], info["spec"], info["memory_bytes"]) == (12, "hybrid(sparse,flat)", None)


def test_a_changed_byte_is_listed(copy):
    target = _gen(copy) / "sparse_values.npy"
    size = target.stat().st_size
    _flip_last_byte(target)
    assert target.stat().st_size == size
    with pytest.raises(DataError, match="sparse_values.npy"):
        Index.open(copy)
    info = index_info(copy, verify=True)
    assert info["problems"] == ["sparse_values.npy: sha256 differs from the manifest"]
    assert info["verified"] is False


def test_a_missing_file_is_listed(copy):
    (_gen(copy) / "ids.npy").unlink()
    info = index_info(copy, verify=True)
    assert info["problems"] == ["ids.npy: missing"] and info["verified"] is False


def test_every_problem_is_listed(copy):
    gen = _gen(copy)
    kind_file = sorted(p for p in (gen / "kind").rglob("*") if p.is_file())[0]
    kind_name = kind_file.relative_to(gen).as_posix()
    kind_file.unlink()
    _flip_last_byte(gen / "ids.npy")
    with open(gen / "dense.npy", "r+b") as f:
        f.truncate(10)
    problems = index_info(copy, verify=True)["problems"]
    assert problems == sorted(
        [
            f"{kind_name}: missing",
            "ids.npy: sha256 differs from the manifest",
            f"dense.npy: size 10, manifest says {_manifest_size(copy, 'dense.npy')}",
        ]
    )


def test_cli_lists_the_problems_and_exits_1(copy, built, capsys):
    _flip_last_byte(_gen(copy) / "ids.npy")
    with open(_gen(copy) / "dense.npy", "r+b") as f:
        f.truncate(1000)
    assert main(["index", "info", str(copy), "--verify"]) == 1
    out = capsys.readouterr()
    assert "is damaged" not in out.err
    lines = out.out.splitlines()
    assert any("verified: False" in line for line in lines)
    assert any(
        line.strip() == "problem: ids.npy: sha256 differs from the manifest" for line in lines
    )
    assert any(line.strip().startswith("problem: dense.npy: size 1000") for line in lines)
    assert main(["index", "info", str(copy), "--verify", "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] is False and len(info["problems"]) == 2
    assert any(p.startswith("dense.npy:") for p in info["problems"])
    # without --verify a damaged index is still refused, pointing at --verify
    assert main(["index", "info", str(copy)]) == 1
    assert "--verify" in capsys.readouterr().err
    # an intact index: exit 0, no problems
    assert main(["index", "info", str(built), "--verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == []
