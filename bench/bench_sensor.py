"""One ``rd_task_sensor`` tick over 1,000 task dirs with 50 snapshot files each (target: <= 2 s).

The sensor only lists directories and stats files, so the reference is a bare ``os.scandir`` walk of the
same tree that stats every snapshot file, measured in the same run: the ratio shows what the sensor adds on
top of the unavoidable filesystem work (fingerprints, cursor JSON, run requests, partition lookups).

Run: ``.venv/bin/python bench/bench_sensor.py [--tasks 1000] [--loops 10] [--steps 5]``
"""

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dagster import SensorResult, build_sensor_context, instance_for_test

from rd_assets.defs.resources import RdLogRoot
from rd_assets.defs.sensors import rd_task_sensor

STEPS = ("direct_exp_gen", "coding", "running", "feedback", "record")
TARGET_S = 2.0


def build_tree(root: Path, tasks: int, loops: int, steps: int) -> int:
    """``tasks`` log dirs of ``loops x steps`` tiny snapshot files, plus a few names the sensor must ignore."""
    files = 0
    for t in range(tasks):
        task = root / f"2026-01-{1 + t // 1000 % 28:02d}_10-00-00-{t:06d}"
        for loop in range(loops):
            folder = task / "__session__" / str(loop)
            folder.mkdir(parents=True)
            for step in range(steps):
                (folder / f"{step}_{STEPS[step % len(STEPS)]}").write_bytes(b"x" * (1 + (t + loop + step) % 97))
                files += 1
    for name in ("notes", "README.md", "2026-01-01_10-00-00"):
        (root / name).mkdir()
    return files


def scandir_walk(root: Path) -> int:
    """The reference: list the root, each __session__ and loop folder, and stat every snapshot file."""
    n = 0
    for task in os.scandir(root):
        session = os.path.join(task.path, "__session__")
        if not os.path.isdir(session):
            continue
        for loop in os.scandir(session):
            for snap in os.scandir(loop.path):
                snap.stat(follow_symlinks=False)
                n += 1
    return n


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--loops", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rd-assets-bench-sensor-"))
    try:
        root = work / "log"
        root.mkdir()
        files = build_tree(root, args.tasks, args.loops, args.steps)
        resources = {"rd_log_root": RdLogRoot(log_root=str(root), path_map="", index_path=None)}
        with instance_for_test() as instance:

            def tick(cursor: str | None) -> SensorResult:
                with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                    return rd_task_sensor(context)

            start = time.perf_counter()
            first = tick(None)
            first_s = time.perf_counter() - start
            for request in first.dynamic_partitions_requests:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            assert len(first.run_requests) == args.tasks, len(first.run_requests)

            cold_s, cold = best_of(args.repeats, lambda: tick(None))
            warm_s, warm = best_of(args.repeats, lambda: tick(first.cursor))
            assert not cold.dynamic_partitions_requests and len(cold.run_requests) == args.tasks
            assert not warm.run_requests

            grown = next(root.iterdir()) / "__session__" / str(args.loops) / "0_direct_exp_gen"
            grown.parent.mkdir()
            grown.write_bytes(b"new snapshot")
            start = time.perf_counter()
            changed = tick(first.cursor)
            changed_s = time.perf_counter() - start
            assert len(changed.run_requests) == 1

            ref_s, walked = best_of(args.repeats, lambda: scandir_walk(root))
            assert walked == files + 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("first tick (1,000 new partitions + runs)", first_s),
        ("tick, all runs requested (lost cursor)", cold_s),
        ("tick, nothing changed (skip)", warm_s),
        ("tick, one task grew (1 run)", changed_s),
        ("reference: bare os.scandir + stat walk", ref_s),
    ]
    print(f"rd_task_sensor tick: {args.tasks} task dirs x {args.loops * args.steps} snapshots = {files} files")
    print(f"{'measurement':<44} {'seconds':>9} {'x walk':>8}")
    for label, seconds in rows:
        print(f"{label:<44} {seconds:>9.3f} {seconds / ref_s:>8.1f}")
    worst = max(first_s, cold_s, warm_s, changed_s)
    verdict = "OK" if worst <= TARGET_S else "OVER TARGET"
    print(f"slowest tick {worst:.3f} s, target <= {TARGET_S:.1f} s: {verdict}")


if __name__ == "__main__":
    main()
