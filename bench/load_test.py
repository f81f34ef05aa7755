"""Bounded load test of ``fervid serve`` on this machine (loopback only).

Sends N ``POST /v1/predict`` requests with one image, at most C at a time, and reports
throughput, latency percentiles and errors. Either point it at a running server
(``--url http://127.0.0.1:8000``) or let it start one (``--model``, the default: the bundled
model) on a free loopback port and stop it afterwards.

    nice -n 10 python -m bench.load_test --model path/to/model.onnx              # 1000 requests, 16 at a time
    nice -n 10 python -m bench.load_test --url http://127.0.0.1:8000 --quick     # smoke test: 50 at 4

Requests go to 127.0.0.1 / localhost / ::1 only: this is a benchmark, not a tool to load
someone else's server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "fervid" / "assets" / "sample.jpg"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 256


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


async def run_load(url: str, body: bytes, content_type: str, requests: int, concurrency: int,
                   timeout: float, warmup: int = 5) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": content_type}
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        for _ in range(warmup):  # first requests pay for lazy initialisation; not counted
            await client.post(f"{url}/v1/predict", content=body, headers=headers)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        faces: set[int] = set()
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests:
                next_index += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{url}/v1/predict", content=body, headers=headers)
                    ok = r.status_code == 200
                    key = f"HTTP {r.status_code}"
                    if ok:
                        faces.add(len(r.json()["faces"]))
                except httpx.HTTPError as e:
                    ok, key = False, type(e).__name__
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {"requests": requests, "concurrency": concurrency, "seconds": round(wall, 3),
            "requests_per_s": round(requests / wall, 2), "ok": len(latencies),
            "errors": sum(errors.values()), "error_kinds": errors, "faces_per_response": sorted(faces),
            "latency_ms": {name: round(1000 * percentile(latencies, q), 2)
                           for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, workers: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    """``fervid serve`` in a subprocess on a free loopback port; returns it once /healthz answers."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "fervid", "serve", "--port", str(port), "--workers", str(workers),
           "--log-level", "warning"]
    if model:
        cmd += ["--model", model]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"load_test: the server did not start:\n{proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    sys.exit("load_test: the server did not answer /healthz within 120 s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server on this machine (default: start one)")
    ap.add_argument("--model", help="model for the server this script starts (default: the bundled one)")
    ap.add_argument("--workers", type=int, default=1, help="--workers of the started server (default: 1)")
    ap.add_argument("--threads", type=int, help="--threads of the started server (default: its own)")
    ap.add_argument("--image", default=str(SAMPLE), help="image to send (default: fervid/assets/sample.jpg)")
    ap.add_argument("--requests", type=int, default=1000, help="requests to send (default: 1000)")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default: 16)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 50 requests, 4 at a time")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default: 60)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency = 50, 4
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= MAX_CONCURRENCY:
        ap.error(f"--requests must be 1..{MAX_REQUESTS} and --concurrency 1..{MAX_CONCURRENCY}")
    image = Path(args.image)
    if not image.is_file():
        ap.error(f"{image}: no such image")
    body = image.read_bytes()
    ctype = {".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp"}.get(image.suffix.lower(), "image/jpeg")

    proc = None
    if args.url:
        url = args.url.rstrip("/")
        if urlsplit(url).hostname not in LOOPBACK:
            ap.error(f"{url}: only loopback servers (127.0.0.1, localhost, ::1) may be load-tested")
    else:
        proc, url = start_server(args.model, args.workers, args.threads)
    try:
        res = asyncio.run(run_load(url, body, ctype, args.requests, args.concurrency, args.timeout))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    res.update(url=url, image=str(image), image_bytes=len(body), cpus=os.cpu_count())
    lat = res["latency_ms"]
    print(f"{res['requests']} requests, {res['concurrency']} concurrent, {res['seconds']:.1f} s: "
          f"{res['requests_per_s']:.1f} requests/s; latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, "
          f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms; errors {res['errors']}"
          + (f" {res['error_kinds']}" if res["errors"] else "") + f"; faces/response {res['faces_per_response']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
