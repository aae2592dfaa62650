"""A bounded load test of ``lexlens serve`` on loopback: QPS and p50/p99 latency per route,
errors, and the server's memory (RSS) before and after.

    .venv/bin/python benchmarks/load_server.py demo/index --requests 2000 \\
        --concurrency 16,64 --json benchmarks/results/load_server.json

Starts ``lexlens serve IDX --host 127.0.0.1 --port 0`` in a child process (only loopback is
ever used), warms it up, then for each route and each concurrency sends ``--requests``
requests from ``concurrency`` asyncio workers (httpx), bounded by ``--time-limit`` seconds
per run. The routes: text search (queries cycle through the index's own captions), image
search (base64 JSON and multipart upload of indexed images), more-like-this by item id,
clip-retrieval ``/knn-service``, thumbnails, ``/health``. The server's RSS is read from
``/proc`` after the warm-up, after the first pass over all routes and after a second pass:
a flat memory shows as second-pass growth near zero. ``--setup MODULE_FILE:FUNCTION`` runs
a function in the server process before the CLI (to register a test model backend).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "run"]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _start_server(index: str, setup: str | None) -> tuple[subprocess.Popen, str]:
    boot = "import sys\n"
    if setup:
        path, func = setup.rsplit(":", 1)
        boot += (
            "import importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('load_setup', {path!r})\n"
            "mod = importlib.util.module_from_spec(spec)\n"
            f"sys.path.insert(0, {str(Path(path).resolve().parent)!r})\n"
            "spec.loader.exec_module(mod)\n"
            f"mod.{func}()\n"
        )
    boot += "from lexlens.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    cmd = [sys.executable, "-c", boot, "serve", index, "--name", "bench"]
    cmd += ["--host", "127.0.0.1", "--port", "0", "--json", "--log-level", "error"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.kill()
        raise SystemExit("the server did not start (see its error above)")
    return proc, json.loads(line)["url"]


def _requests(url: str, rows: list[dict[str, Any]], rng: random.Random) -> dict[str, Callable]:
    """Per route: a function ``i -> (method, url, kwargs)`` building the i-th request."""
    captions = [c for r in rows for c in r["captions"]] or ["a picture"]
    images = [r for r in rows if r.get("path")]
    blobs = [Path(r["path"]).read_bytes() for r in images[:64]]
    b64 = [base64.b64encode(b).decode() for b in blobs]
    ids = [r["id"] for r in rows]
    rng.shuffle(captions)
    return {
        "POST /search (text)": lambda i: (
            "POST",
            f"{url}/search",
            {"json": {"text": captions[i % len(captions)], "k": 10}},
        ),
        "POST /search (image, base64)": lambda i: (
            "POST",
            f"{url}/search",
            {"json": {"image": b64[i % len(b64)], "k": 10}},
        ),
        "POST /search/upload": lambda i: (
            "POST",
            f"{url}/search/upload",
            {
                "files": {"image": ("q.png", blobs[i % len(blobs)], "image/png")},
                "data": {"k": "10"},
            },
        ),
        "POST /search (item)": lambda i: (
            "POST",
            f"{url}/search",
            {"json": {"item": ids[i % len(ids)], "k": 10}},
        ),
        "POST /knn-service": lambda i: (
            "POST",
            f"{url}/knn-service",
            {
                "content": json.dumps(
                    {
                        "text": captions[i % len(captions)],
                        "num_images": 10,
                        "indice_name": "bench",
                        "modality": "image",
                    }
                )
            },
        ),
        "GET /thumb": lambda i: ("GET", f"{url}/thumb/bench/{ids[i % len(ids)]}", {}),
        "GET /health": lambda i: ("GET", f"{url}/health", {}),
    }


async def _load(make: Callable, n: int, concurrency: int, time_limit: float) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    counter = iter(range(n))
    deadline = time.perf_counter() + time_limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                method, u, kw = make(i)
                t = time.perf_counter()
                try:
                    r = await client.request(method, u, **kw)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text[:100]}")
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000.0
    return {
        "requests": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(wall, 3),
        "qps": round(len(lat) / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
    }


def run(
    index: str,
    requests: int = 2000,
    concurrency: tuple[int, ...] = (16, 64),
    time_limit: float = 60.0,
    setup: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the load test (see the module docstring); returns every measurement."""
    import httpx

    from lexlens.index.index import Index

    idx = Index.open(index)
    info = idx.info()
    # the first 500 live items (ids start at 0 and grow; a few removals leave gaps)
    found = idx.rows(range(min(2 * int(info["count"]) + 100, 30000)))
    rows = [r.to_dict() for r in list(found.values())[:500]]
    proc, url = _start_server(index, setup)
    try:
        makers = _requests(url, rows, random.Random(seed))
        for make in makers.values():  # warm-up: load the model, touch every route
            for i in range(5):
                method, u, kw = make(i)
                httpx.request(method, u, timeout=120, **kw).raise_for_status()
        rss = {"after_warmup_mb": round(_rss_mb(proc.pid), 1)}
        results = []
        for rnd in (1, 2):
            for route, make in makers.items():
                for c in concurrency:
                    res = asyncio.run(_load(make, requests, c, time_limit))
                    res.update(route=route, concurrency=c, round=rnd)
                    results.append(res)
                    if rnd == 1:
                        print(
                            f"{route:<30} c={c:<3} {res['requests']:>6} req {res['qps']:>8.1f} QPS "
                            f"p50 {res['p50_ms']:>7.2f} ms p99 {res['p99_ms']:>7.2f} ms "
                            f"errors {res['errors']}",
                            flush=True,
                        )
            rss[f"after_round{rnd}_mb"] = round(_rss_mb(proc.pid), 1)
            print(f"server RSS after round {rnd}: {rss[f'after_round{rnd}_mb']} MB", flush=True)
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stages = {
        ln.split("{")[1].split("}")[0]: float(ln.rsplit(" ", 1)[1])
        for ln in metrics.splitlines()
        if ln.startswith(("lexlens_stage_seconds_sum", "lexlens_stage_seconds_count"))
    }
    return {
        "index": {k: info[k] for k in ("path", "model", "spec", "count", "dim")},
        "requests_per_run": requests,
        "concurrency": list(concurrency),
        "results": results,
        "rss_mb": rss,
        "rss_growth_round2_mb": round(rss["after_round2_mb"] - rss["after_round1_mb"], 1),
        "stage_metrics": stages,
    }


def markdown(report: dict[str, Any]) -> str:
    """The first round as a markdown table, plus memory."""
    lines = [
        "| route | concurrency | requests | QPS | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        if r["round"] == 1:
            lines.append(
                f"| {r['route']} | {r['concurrency']} | {r['requests']} | {r['qps']} | "
                f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
            )
    rss = report["rss_mb"]
    lines.append(
        f"\nServer RSS: {rss['after_warmup_mb']} MB after warm-up, {rss['after_round1_mb']} MB "
        f"after round 1, {rss['after_round2_mb']} MB after round 2 (same load again)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("index", help="index folder to serve")
    p.add_argument("--requests", type=int, default=2000, help="requests per route and concurrency")
    p.add_argument("--concurrency", default="16,64", help="comma-separated client concurrencies")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per run at most")
    p.add_argument("--setup", help="MODULE_FILE:FUNCTION run in the server before the CLI")
    p.add_argument("--json", help="write the report here")
    a = p.parse_args(argv)
    conc = tuple(int(c) for c in a.concurrency.split(","))
    if a.requests <= 0 or a.requests > 100_000 or any(not 1 <= c <= 256 for c in conc):
        p.error("--requests is 1..100000 and each concurrency 1..256")
    report = run(a.index, a.requests, conc, a.time_limit, a.setup)
    print()
    print(markdown(report))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=2))
    errors = sum(r["errors"] for r in report["results"])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
