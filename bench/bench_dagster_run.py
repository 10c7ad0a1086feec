"""Wall time of one task's Dagster run against the CLI ``rd-assets extract`` of the same task, same run.

The reference is the whole CLI process (``rd-assets extract LOG_DIR --store ... --json``), which pays the
interpreter start, the imports, the isolated reader's start and the extraction. Against it:

* ``in-process run``: ``rd_task_job.execute_in_process`` in this process on a persistent SQLite instance
  (what the job itself costs once the code location is loaded; the isolated reader is already running);
* ``fresh-process run``: ``dg launch`` of the same job and partition in a new process with a SQLite
  ``DAGSTER_HOME`` and the run config the daemon resolves for it (like a run worker: interpreter, imports,
  code location, run, reader start).

Every variant reads the same sample task through a warm snapshot index (one warm-up run each, not timed) and
publishes into its own store, so each timed run is an unchanged-content republish, as a sensor re-run is.
Medians of ``--runs`` runs, variants alternating; the ratios are what to compare between machines.

Run: ``.venv/bin/python bench/bench_dagster_run.py [--task TASK_ID] [--runs 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance

from rd_assets.core.samples import PLAIN_TASK, SAMPLE_PATH_MAP, SAMPLE_SIGNING_KEY, SAMPLES_DIR
from rd_assets.definitions import build_definitions
from rd_assets.defs.jobs import RUN_CONFIG
from rd_assets.defs.partitions import RD_TASK_PARTITIONS_NAME
from rd_assets.defs.resources import BundleStore, RdLogRoot

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_RATIO = 3.0
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=PLAIN_TASK)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rd-assets-bench-run-"))
    log_root = SAMPLES_DIR / "log"
    env = {
        **os.environ,
        "RD_ASSETS_SIGNING_KEY": SAMPLE_SIGNING_KEY,
        "RD_ASSETS_ALLOW_UNSIGNED": "1",
        "RD_ASSETS_LOG_ROOT": str(log_root),
        "RD_ASSETS_PATH_MAP": SAMPLE_PATH_MAP,
        "RD_ASSETS_STORE": str(work / "subprocess_store"),
        "RD_ASSETS_INDEX": str(work / "subprocess_index.sqlite3"),
        "RD_ASSETS_KEEP_VERSIONS": "3",
        "DAGSTER_HOME": str(work / "dagster_home"),
    }
    for name in ("RD_ASSETS_SIGNING_KEY", "RD_ASSETS_ALLOW_UNSIGNED", "DAGSTER_HOME"):
        os.environ[name] = env[name]
    (work / "dagster_home").mkdir()
    shutil.copyfile(REPO / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
    with DagsterInstance.from_config(str(work / "dagster_home")) as home:  # what the sensor would have added
        home.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, [args.task])
    try:
        cli = [
            str(BIN / "rd-assets"),
            "extract",
            str(log_root / args.task),
            "--store",
            str(work / "cli_store"),
            "--path-map",
            SAMPLE_PATH_MAP,
            "--index",
            str(work / "cli_index.sqlite3"),
            "--json",
        ]

        def run_cli() -> None:
            proc = subprocess.run(cli, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not json.loads(proc.stdout)["ok"]:
                raise SystemExit(f"rd-assets extract failed: {proc.stdout}{proc.stderr}")

        fresh = [
            str(BIN / "dg"),
            "launch",
            "-m",
            "rd_assets.definitions",
            "--job",
            "rd_task_job",
            "--partition",
            args.task,
            "--config-json",
            json.dumps(RUN_CONFIG),  # what the daemon resolves for a partition run of rd_task_job
        ]

        def run_fresh() -> None:
            proc = subprocess.run(fresh, env=env, cwd=work, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"dg launch failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")

        defs = build_definitions(
            RdLogRoot(log_root=str(log_root), path_map=SAMPLE_PATH_MAP, index_path=str(work / "dg_index.sqlite3")),
            BundleStore(store_dir=str(work / "dg_store")),
        )
        job = defs.resolve_job_def("rd_task_job")
        (work / "instance").mkdir()
        with DagsterInstance.local_temp(str(work / "instance")) as instance:
            instance.add_dynamic_partitions(RD_TASK_PARTITIONS_NAME, [args.task])

            def run_in_process() -> None:
                result = job.execute_in_process(
                    run_config=QUIET, partition_key=args.task, instance=instance, raise_on_error=False
                )
                if not result.success:
                    raise SystemExit("the in-process run failed")

            variants = {
                "CLI rd-assets extract": run_cli,
                "in-process run": run_in_process,
                "fresh-process run": run_fresh,
            }
            for fn in variants.values():
                fn()  # warm-up: index filled, bundle published once
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.runs):
                for name, fn in variants.items():
                    times[name].append(timed(fn))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    reference = medians["CLI rd-assets extract"]
    print(f"task {args.task}, median of {args.runs} runs each (min-max in brackets)\n")
    print("| variant | wall time | x CLI |")
    print("|---|---:|---:|")
    for name, median in medians.items():
        spread = f"{min(times[name]) * 1000:,.0f}-{max(times[name]) * 1000:,.0f}"
        print(f"| {name} | {median * 1000:,.0f} ms ({spread}) | {median / reference:.2f}x |")
    worst = max(medians["fresh-process run"], medians["in-process run"]) / reference
    verdict = "met" if worst <= TARGET_RATIO else "missed"
    print(f"\ntarget <= {TARGET_RATIO:g}x the CLI: {verdict} ({worst:.2f}x)")


if __name__ == "__main__":
    main()
