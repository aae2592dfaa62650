"""Crash safety and a reference model of add/remove sequences.

* ``kill -9`` of a process in the middle of ``add``: the previous generation stays readable
  and complete; running ``add`` again finishes with every item exactly once, reusing the
  batches the killed run had checkpointed.
* hypothesis drives random add / modify / remove sequences and compares the index with a
  plain dict ``path -> vector`` after every step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEncoder, write_collection
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lexlens.index.index import Index
from lexlens.index.ingest import SourceItem
from lexlens.search import Query

HERE = Path(__file__).parent

_ADD_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from fakes import SlowFakeEncoder
    from lexlens.index.index import Index
    from lexlens.index.ingest import SourceItem
    paths = sys.argv[2:]
    idx = Index.open(sys.argv[1], model=SlowFakeEncoder())
    print(idx.add([SourceItem(p) for p in paths], workers=0, batch_size=4, progress=False), flush=True)
    """
)


def _run_add(idx: Path, paths: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", _ADD_SCRIPT.format(here=str(HERE)), str(idx), *paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


def test_kill_during_add_loses_nothing(tmp_path):
    src = tmp_path / "src"
    first = write_collection(src, 8)
    second = write_collection(src, 40, seed=1, start=8)
    enc = FakeEncoder()  # same vectors as SlowFakeEncoder, same name
    idx_dir = tmp_path / "idx"
    Index.build(
        [SourceItem(str(src / r["image"])) for r in first], enc, idx_dir, progress=False, workers=0
    )
    before = Index.open(idx_dir, model=enc)
    before_ids = before.search(Query(text="red"), k=50).ids.copy()

    paths = [str(src / r["image"]) for r in first + second]
    proc = _run_add(idx_dir, paths)
    pending = idx_dir / "pending"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(pending.glob("batch-*.json"))) < 3:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(pending.glob("batch-*.json"))) >= 3

    # the previous generation is what opens, intact
    after_crash = Index.open(idx_dir, model=enc)
    assert len(after_crash) == 8
    assert after_crash.info(verify=True)["verified"]
    np.testing.assert_array_equal(after_crash.search(Query(text="red"), k=50).ids, before_ids)

    # run again: the checkpointed batches are reused, every file is there exactly once
    rep = after_crash.add([SourceItem(p) for p in paths], workers=0, progress=False)
    assert rep["reused"] >= 12 and rep["added"] == 40 and rep["skipped"] == 8
    assert len(after_crash) == 48
    rows = after_crash.rows(range(100))
    assert sorted(r.path for r in rows.values()) == sorted(os.path.abspath(p) for p in paths)
    # vectors equal a fresh encoding of each file
    ids = sorted(rows)
    stored = after_crash.vectors(ids).dense
    np.testing.assert_allclose(stored, enc.encode_images([rows[i].path for i in ids]), atol=1e-6)
    assert not pending.exists()


def test_kill_leaves_no_half_written_generation(tmp_path):
    """Killing at many points of an add never yields an unreadable index."""
    src = tmp_path / "src"
    recs = write_collection(src, 30)
    enc = FakeEncoder()
    idx_dir = tmp_path / "idx"
    Index.build(
        [SourceItem(str(src / r["image"])) for r in recs[:2]],
        enc,
        idx_dir,
        progress=False,
        workers=0,
    )
    paths = [str(src / r["image"]) for r in recs]
    for delay in (0.3, 0.9, 1.6):
        proc = _run_add(idx_dir, paths)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        idx = Index.open(idx_dir)
        assert idx.info(verify=True)["verified"]
        assert len(idx) in (2, 30)
    final = Index.open(idx_dir, model=enc)
    final.add([SourceItem(p) for p in paths], workers=0, progress=False)
    assert len(final) == 30


# ----------------------------------------------------------------------------- reference model
POOL = 6


class AddRemoveMachine(RuleBasedStateMachine):
    """Random sequences of add (some files rewritten), remove and reopen vs a dict."""

    @initialize()
    def setup(self) -> None:
        import tempfile

        from PIL import Image

        self.tmp = Path(tempfile.mkdtemp(prefix="lexlens-sm-"))
        self.src = self.tmp / "src"
        self.src.mkdir()
        self.enc = FakeEncoder()
        self.version = {}
        for i in range(POOL):
            self._write(i, 0)
        self.ref: dict[str, np.ndarray] = {}
        self.idx = Index.build([], self.enc, self.tmp / "idx", progress=False, workers=0)
        self.Image = Image

    def _path(self, i: int) -> str:
        return os.path.abspath(self.src / f"f{i}.png")

    def _write(self, i: int, version: int) -> None:
        from PIL import Image

        rng = np.random.default_rng(1000 * i + version)
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(self._path(i))
        self.version[i] = version

    @rule(which=st.sets(st.integers(0, POOL - 1), min_size=1))
    def add(self, which: set[int]) -> None:
        rep = self.idx.add(
            [SourceItem(self._path(i)) for i in sorted(which)], workers=0, progress=False
        )
        new = [i for i in which if self._path(i) not in self.ref]
        assert rep["added"] == len(new)
        for i in which:
            self.ref[self._path(i)] = self.enc.encode_images([self._path(i)])[0]

    @rule(i=st.integers(0, POOL - 1))
    def rewrite(self, i: int) -> None:
        self._write(i, self.version[i] + 1)

    @rule(which=st.sets(st.integers(0, POOL - 1)))
    def remove(self, which: set[int]) -> None:
        paths = [self._path(i) for i in which]
        n = self.idx.remove(paths)
        assert n == sum(p in self.ref for p in paths)
        for p in paths:
            self.ref.pop(p, None)

    @rule()
    def reopen(self) -> None:
        self.idx = Index.open(self.tmp / "idx", model=self.enc)

    @invariant()
    def matches_reference(self) -> None:
        if not hasattr(self, "idx"):
            return
        assert len(self.idx) == len(self.ref)
        rows = self.idx.rows(range(10_000))
        assert sorted(r.path for r in rows.values()) == sorted(self.ref)
        if rows:
            ids = sorted(rows)
            stored = self.idx.vectors(ids).dense
            for i, v in zip(ids, stored, strict=True):
                np.testing.assert_allclose(v, self.ref[rows[i].path], atol=1e-6)
            q = self.enc.encode_texts(["red"])[0]
            res = self.idx.search(Query(embedding=q), k=POOL)
            found = [rows[int(i)].path for i in res.ids[0] if i >= 0]
            assert sorted(found) == sorted(self.ref)

    def teardown(self) -> None:
        import shutil

        shutil.rmtree(getattr(self, "tmp", "/nonexistent"), ignore_errors=True)


AddRemoveMachine.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_add_remove_sequences = pytest.mark.filterwarnings("ignore")(AddRemoveMachine.TestCase)


def test_interrupt_at_the_swap_keeps_the_previous_generation(tmp_path, monkeypatch):
    """Ctrl-C exactly between writing the new generation and swapping CURRENT."""
    import lexlens.index.store as store

    src = tmp_path / "src"
    recs = write_collection(src, 12)
    enc = FakeEncoder()
    items = [SourceItem(str(src / r["image"])) for r in recs]
    idx = Index.build(items[:4], enc, tmp_path / "idx", progress=False, workers=0)
    real_replace = os.replace

    def interrupted(a, b):
        if Path(b).name == "CURRENT":
            raise KeyboardInterrupt
        return real_replace(a, b)

    monkeypatch.setattr(store.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        idx.add(items, workers=0, batch_size=4, progress=False)
    monkeypatch.setattr(store.os, "replace", real_replace)
    again = Index.open(tmp_path / "idx", model=enc)
    assert len(again) == 4 and again.info(verify=True)["verified"]
    rep = again.add(items, workers=0, progress=False)
    assert (rep["added"], rep["reused"], len(again)) == (8, 8, 12)
