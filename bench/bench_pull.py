"""``rd-assets pull`` benchmark: the three sample bundles from a real ``rd-assets serve`` on loopback.

Per sample, in one run (medians):
* reference: the same bytes fetched raw - one GET for the manifest and one per file with one ``httpx.Client``,
  nothing checked or written (what the network part of a pull costs at least);
* cold pull into an empty mirror (``pull_bundle`` in this process; the isolated reader that ``verify`` uses for
  ``model.txt`` is already running after the first round), and two of its parts alone: ``verify_bundle`` on the
  result (checking) and ``publish_bundle`` of the same files into an empty mirror (writing with fsync, renaming);
* unchanged pull (the manifest's ETag answers 304; nothing else is requested);
* the CLI as a user runs it (``rd-assets pull``, a fresh interpreter each time), cold and unchanged.

Prints a markdown table. Usage: ``.venv/bin/python bench/bench_pull.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rd_assets.client import ResultsClient, pull_bundle
from rd_assets.core.bundle.assemble import BundleContent
from rd_assets.core.bundle.store import publish_bundle
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import Manifest
from rd_assets_tests.api.support import serving
from rd_assets_tests.bundle_testkit import tree_bytes
from rd_assets_tests.conftest import RD_ASSETS, SAMPLE_TASKS
from rd_assets_tests.consumer_testkit import build_sample_store


def median_ms(run: Callable[[], object], rounds: int, before: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(rounds):
        before()
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def raw_fetch(base_url: str, task: str) -> int:
    moved = 0
    with httpx.Client(base_url=base_url, timeout=60) as http:
        manifest_bytes = http.get(f"/tasks/{task}").content
        moved += len(manifest_bytes)
        for rel in Manifest.model_validate_json(manifest_bytes).files:
            moved += len(http.get(f"/tasks/{task}/asset_bytes", params={"key": rel}).content)
    return moved


def cli_pull(base_url: str, task: str, dest: Path) -> None:
    subprocess.run([str(RD_ASSETS), "pull", "--api", base_url, task, "--dest", str(dest)], check=True,
                   capture_output=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rounds = args.rounds
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    try:
        store = build_sample_store(work / "store")
        rows = []
        with serving(store) as server:
            for task in SAMPLE_TASKS:
                manifest = Manifest.model_validate_json((store / task / "manifest.json").read_bytes())
                size = sum(e.size for e in manifest.files.values())
                dest = work / "mirror"

                def empty(dest: Path = dest) -> None:
                    shutil.rmtree(dest, ignore_errors=True)

                def pull(task: str = task, dest: Path = dest) -> None:
                    with ResultsClient(server.base_url) as client:
                        pull_bundle(client, task, dest)

                raw = median_ms(lambda task=task: raw_fetch(server.base_url, task), rounds)
                cold = median_ms(pull, rounds, before=empty)
                check = median_ms(lambda task=task, dest=dest: verify_bundle(dest / task), rounds)
                content = BundleContent(task, tree_bytes(store / task), manifest)
                write = median_ms(lambda content=content, dest=dest: publish_bundle(dest, content), rounds, empty)
                warm = median_ms(pull, rounds * 3)
                cli_cold = median_ms(lambda task=task, dest=dest: cli_pull(server.base_url, task, dest), 3, empty)
                cli_warm = median_ms(lambda task=task, dest=dest: cli_pull(server.base_url, task, dest), 3)
                rows.append((task, len(manifest.files), size, raw, cold, check, write, warm, cli_cold, cli_warm))
        print("| task | files | bytes | raw GETs (reference) | cold pull | verify alone | publish alone "
              "| unchanged pull | cold / raw | unchanged / cold | CLI cold | CLI unchanged |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for task, files, size, raw, cold, check, write, warm, cli_cold, cli_warm in rows:
            print(
                f"| `{task}` | {files} | {size:,} | {raw:.1f} ms | {cold:.1f} ms | {check:.1f} ms | {write:.1f} ms "
                f"| {warm:.2f} ms | {cold / raw:.2f}x | {warm / cold:.3f}x | {cli_cold:.0f} ms | {cli_warm:.0f} ms |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
