"""Duplicate detection over an index: exact copies and near duplicates.

* **exact**: items with the same decoded RGB pixels (``pixel_hash``; the same picture saved
  under another name or format) -- or, in a caption index, the same text;
* **near**: among one representative per exact group, connected components of the graph
  "cosine similarity >= threshold" (each item's nearest neighbours come from the index's
  own dense kind, or from an exact scan when the kind is not dense).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lexlens.errors import UsageError
from lexlens.index.base import SearchParams, Vectors
from lexlens.progress import progress_bar

if TYPE_CHECKING:
    from lexlens.index.index import Index

__all__ = ["DupGroup", "find_dups"]

#: neighbours looked at per item for near duplicates
NEIGHBOURS = 16
_BATCH = 1024


@dataclass
class DupGroup:
    """A group of duplicates: ``kind`` is ``"exact"`` or ``"near"``; ids ascending."""

    kind: str
    ids: list[int]
    paths: list[str | None] = field(default_factory=list)
    min_similarity: float = 1.0
    texts: list[str | None] = field(default_factory=list)  # a caption index's captions


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        root = a
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(a, a) != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_dups(index: Index, threshold: float, progress: bool = True) -> list[DupGroup]:
    """Exact groups first, then near groups; each list ordered by size (desc) then first id."""
    if not -1.0 <= threshold <= 1.0:
        raise UsageError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    st = index._state
    rows = {r.id: r for r in st.meta.all_rows()}
    key_of = (lambda r: r.text) if st.manifest.items == "texts" else (lambda r: r.pixel_hash)
    by_key: dict[str, list[int]] = {}
    for r in rows.values():
        key = key_of(r)
        if key is not None:
            by_key.setdefault(key, []).append(r.id)
    exact = [sorted(ids) for ids in by_key.values() if len(ids) > 1]
    copies = {i for g in exact for i in g[1:]}
    reps = np.asarray(sorted(set(rows) - copies), np.int64)
    near = _near_groups(index, reps, threshold, progress)

    def group(kind: str, g: list[int], sim: float) -> DupGroup:
        return DupGroup(kind, g, [rows[i].path for i in g], sim, [rows[i].text for i in g])

    out = [group("exact", g, 1.0) for g in exact]
    out.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    near_groups = [group("near", g, s) for g, s in near]
    near_groups.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    return out + near_groups


def _near_groups(
    index: Index, reps: np.ndarray, threshold: float, progress: bool
) -> list[tuple[list[int], float]]:
    from lexlens.index.dense import exact_search
    from lexlens.index.spec import spec_needs

    st = index._state
    if st.dense is None or len(reps) < 2:
        return []
    dense_kind = spec_needs(st.spec) == (True, False)
    rep_slots = st.slots(reps)
    rep_set = set(reps.tolist())
    x_reps = None if dense_kind else np.asarray(st.dense[rep_slots], np.float32)
    k = min(NEIGHBOURS + 1, len(reps))
    # exact copies (not representatives) also sit in the kind and come back as neighbours
    k_kind = k + min(len(st.ids) - len(reps), 4 * NEIGHBOURS)
    uf = _UnionFind()
    weakest: dict[tuple[int, int], float] = {}
    with progress_bar(
        total=len(reps), desc="near duplicates", unit="item", enabled=progress
    ) as bar:
        for a in range(0, len(reps), _BATCH):
            q = np.asarray(st.dense[rep_slots[a : a + _BATCH]], np.float32)
            if dense_kind:
                s, i = st.kind.search(
                    Vectors(dense=q), k_kind, SearchParams(ef_search=128, nprobe=32)
                )
            else:
                s, i = exact_search(q, x_reps, reps, k)
            for r in range(len(q)):
                me = int(reps[a + r])
                for score, other in zip(s[r], i[r], strict=True):
                    if other < 0 or score < threshold:
                        break
                    other = int(other)
                    if other != me and other in rep_set:
                        uf.union(me, other)
                        pair = (min(me, other), max(me, other))
                        weakest[pair] = float(score)
            bar.update(len(q))
    groups: dict[int, list[int]] = {}
    for me in {i for pair in weakest for i in pair}:
        groups.setdefault(uf.find(me), []).append(me)
    out = []
    for members in groups.values():
        if len(members) > 1:
            ms = set(members)
            sims = [v for (p, q2), v in weakest.items() if p in ms and q2 in ms]
            out.append((sorted(members), min(sims)))
    return out
