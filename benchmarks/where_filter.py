"""How long a ``--where`` filter takes at 100,000 rows: the whole id set vs a candidates' check.

``lexlens.search`` checks a filter on the kind's best candidates first (``MetaDB.passing_ids``:
a few rows looked up by id) and reads the filter's whole id set (``MetaDB.select_ids``: a scan
of every row's JSON fields) only when few candidates pass. This times both on a metadata
database of ``--n`` rows with two user fields, and checks that they agree.

    python benchmarks/where_filter.py [--n 100000] [--candidates 40]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from lexlens.index.filters import parse_where, where_sql
from lexlens.index.store import ItemRow, MetaDB


def run(n: int, n_cand: int, folder: Path) -> list[str]:
    path = folder / "meta.sqlite"
    db = MetaDB(path, writable=True)
    rng = random.Random(0)
    db.insert(
        ItemRow(id=i, path=f"/x/{i:07d}.png", fields={"split": rng.choice("ab"), "n": i % 5})
        for i in range(n)
    )
    db._con().commit()
    db.close()
    db = MetaDB(path)
    lines = []
    for where in ("split=a AND n>2", "n=4"):
        sql, params = where_sql(parse_where(where))
        db.select_ids(sql, params)  # warm the page cache
        t = time.perf_counter()
        ids = db.select_ids(sql, params)
        whole = time.perf_counter() - t
        cand = np.random.default_rng(1).choice(n, n_cand, replace=False)
        t = time.perf_counter()
        for _ in range(100):
            got = db.passing_ids(cand, sql, params)
        check = (time.perf_counter() - t) / 100
        assert set(got.tolist()) == set(cand.tolist()) & set(ids.tolist())
        lines.append(
            f"{where!r} over {n:,} rows: whole id set {whole * 1e3:.1f} ms ({len(ids):,} ids); "
            f"{n_cand} candidates checked {check * 1e3:.3f} ms"
        )
    db.close()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=40)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(run(a.n, a.candidates, Path(tmp))))


if __name__ == "__main__":
    main()
