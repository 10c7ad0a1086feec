"""Results API benchmark: a real ``rd-assets serve`` on loopback, 16 concurrent httpx clients.

Measures, in one run:
* ``sota_factor_anchor``: requests/s, p50/p99 latency (target p99 < 20 ms) and the server's own CPU time per request;
* a 5 MB ``asset_bytes`` download: throughput against reading the same file locally with the same
  concurrency (target: HTTP within 2x of the local read), plus the raw-TCP loopback floor of this machine
  (plain sockets, no HTTP) so the ratio can be read against what the kernel allows.

The 16 clients are threads with one ``httpx.Client`` each, spread over ``--procs`` load-generator processes
so the generator's own GIL does not dominate the latencies. The bundle is the genuine plain sample extracted by
the real pipeline, republished with a 5 MB weight. Prints a markdown table.
Usage: ``.venv/bin/python bench/bench_api.py [--requests N] [--downloads N] [--procs N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rd_assets.core.bundle.store import publish_bundle
from rd_assets_tests.api.support import PLAIN_TASK, extract_samples, serving, with_weight

CLIENTS = 16
ASSET_SIZE = 5 * 1024 * 1024
MB = 1024 * 1024
ANCHOR_URL = f"/tasks/{PLAIN_TASK}/sota_factor_anchor"
ASSET_URL = f"/tasks/{PLAIN_TASK}/asset_bytes?key=model.pkl"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_process(base_url: str, url: str, threads: int, per_client: int, start_at: float, out: mp.Queue) -> None:
    """``threads`` clients, each sending ``per_client`` sequential GETs from ``start_at`` on."""
    latencies: list[float] = []
    moved = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal moved
        own: list[float] = []
        got = 0
        with httpx.Client(base_url=base_url, timeout=60) as http:
            http.get(url).raise_for_status()  # connect and warm before the clock starts
            while time.time() < start_at:
                time.sleep(0.0005)
            for _ in range(per_client):
                t0 = time.perf_counter()
                response = http.get(url)
                own.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise RuntimeError(f"{url} answered {response.status_code}")
                got += len(response.content)
        with lock:
            latencies.extend(own)
            moved += got

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((latencies, moved, time.time()))


def run_load(base_url: str, url: str, per_client: int, procs: int) -> tuple[list[float], int, float]:
    """16 clients over ``procs`` processes; returns (latencies, bytes moved, wall seconds)."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 3.0
    workers = [
        ctx.Process(target=load_process, args=(base_url, url, CLIENTS // procs, per_client, start_at, out))
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    latencies = [lat for r in results for lat in r[0]]
    return latencies, sum(r[1] for r in results), max(r[2] for r in results) - start_at


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``), to show what the server itself spends."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_read(path: Path, per_client: int, threads: int) -> tuple[int, float]:
    """The same file read ``per_client`` times by each of ``threads`` threads (page cache warm, like the server)."""
    path.read_bytes()

    def worker(_: int) -> int:
        return sum(len(path.read_bytes()) for _ in range(per_client))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        total = sum(pool.map(worker, range(threads)))
    return total, time.perf_counter() - start


def _tcp_sender(port_out: mp.Queue, rounds: int) -> None:
    data = bytes(ASSET_SIZE)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port_out.put(server.getsockname()[1])
        conn, _ = server.accept()
        with conn:
            for _ in range(rounds):
                conn.recv(1)
                conn.sendall(data)


def tcp_floor(rounds: int) -> float:
    """MB/s of 5 MB transfers between two processes over loopback with plain sockets (no HTTP, no files)."""
    ctx = mp.get_context("spawn")
    port_out: mp.Queue = ctx.Queue()
    sender = ctx.Process(target=_tcp_sender, args=(port_out, rounds + 2))
    sender.start()
    buf = bytearray(ASSET_SIZE)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port_out.get())) as conn:

        def one() -> None:
            conn.sendall(b"x")
            got = 0
            while got < ASSET_SIZE:
                got += conn.recv_into(view[got:])

        one(), one()
        start = time.perf_counter()
        for _ in range(rounds):
            one()
        wall = time.perf_counter() - start
    sender.join()
    return rounds * ASSET_SIZE / MB / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=250, help="anchor requests per client (16 clients)")
    parser.add_argument("--downloads", type=int, default=8, help="5 MB downloads per client (16 clients)")
    parser.add_argument("--procs", type=int, default=4, choices=[1, 2, 4, 8, 16], help="load-generator processes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rd-assets-bench-api-") as tmp:
        store = Path(tmp) / "store"
        base = extract_samples(store)[PLAIN_TASK]
        weight = random.Random(0).randbytes(ASSET_SIZE)
        weight_path = publish_bundle(store, with_weight(base, weight)).version_dir / "model.pkl"

        with serving(store) as server:
            check = httpx.get(server.base_url + ASSET_URL, timeout=60)
            if hashlib.sha256(check.content).digest() != hashlib.sha256(weight).digest():
                raise RuntimeError("the served asset does not match the published bytes")
            cpu_before = cpu_seconds(server.pid)
            latencies, _, anchor_wall = run_load(server.base_url, ANCHOR_URL, args.requests, args.procs)
            server_cpu_us = (cpu_seconds(server.pid) - cpu_before) / (len(latencies) + CLIENTS) * 1e6
            cpu_before = cpu_seconds(server.pid)
            _, http_bytes, http_wall = run_load(server.base_url, ASSET_URL, args.downloads, args.procs)
            server_ms_per_download = (cpu_seconds(server.pid) - cpu_before) / (http_bytes / ASSET_SIZE + CLIENTS) * 1e3
        local16_bytes, local16_wall = local_read(weight_path, args.downloads, CLIENTS)
        local1_bytes, local1_wall = local_read(weight_path, args.downloads, 1)
        floor_mbs = tcp_floor(rounds=40)

    p50, p99 = percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000
    http_mbs = http_bytes / MB / http_wall
    local16_mbs = local16_bytes / MB / local16_wall
    local1_mbs = local1_bytes / MB / local1_wall
    ratio = local16_mbs / http_mbs
    rows = [
        ("sota_factor_anchor requests (16 clients)", f"{len(latencies)}", f"{args.procs} generator processes"),
        ("sota_factor_anchor requests/s", f"{len(latencies) / anchor_wall:,.0f}", ""),
        ("sota_factor_anchor latency p50", f"{p50:.2f} ms", ""),
        ("sota_factor_anchor latency mean", f"{statistics.fmean(latencies) * 1000:.2f} ms", ""),
        ("sota_factor_anchor latency p99", f"{p99:.2f} ms", f"target < 20 ms: {'met' if p99 < 20 else 'MISSED'}"),
        ("server CPU per anchor request", f"{server_cpu_us:,.0f} us", "uvicorn + FastAPI + reader, /proc"),
        ("asset_bytes 5 MB over HTTP (16 clients)", f"{http_mbs:,.0f} MB/s", f"{http_bytes // MB} MB moved"),
        ("server CPU per 5 MB download", f"{server_ms_per_download:.2f} ms", "read + send (hash once per file)"),
        ("local read of the same file (16 threads)", f"{local16_mbs:,.0f} MB/s", "reference, same run"),
        ("local read of the same file (1 thread)", f"{local1_mbs:,.0f} MB/s", "reference, same run"),
        ("raw TCP loopback, 5 MB, plain sockets", f"{floor_mbs:,.0f} MB/s", "floor of any HTTP transfer here"),
        ("local (16 threads) / HTTP", f"{ratio:.1f}x", f"target <= 2x: {'met' if ratio <= 2 else 'MISSED'}"),
        ("raw TCP loopback / HTTP", f"{floor_mbs / http_mbs:.1f}x", "HTTP stack overhead over the wire floor"),
    ]
    print("| measure | value | note |")
    print("|---|---|---|")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
