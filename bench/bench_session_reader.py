"""Benchmark: choosing the snapshot of a large task (issue 2, section 7), against references from the same run.

Generates (outside the repo's tracked files, in ``bench/_work/session_reader/``) a task of ``--loops`` loops x
5 steps whose pickles carry genuine rdagent class paths (``rd_assets_tests/rdagent_fixtures.py``): a growing
``trace.hist``, accepted factor experiments holding ``--weights-mb`` of random weight bytes, a coder
knowledge base of many small objects (code, feedback texts), workspace file_dicts and per-loop outputs; the
last snapshots exceed ``--size-mb``. Then measures, page cache warm:

* raw read: plain ``open().read()`` of every snapshot (reference);
* naive: ``pickle.load`` of every snapshot with the rdagent classes importable (what existing scripts do);
* cold: ``read_task`` with an empty index (every snapshot unpickled by the restricted unpickler);
* warm: ``read_task`` again, nothing changed (target <= 50 ms);
* incremental: ``read_task`` after one new snapshot, against one cold read of that snapshot alone;
* peak RSS of a cold ``read_task`` in a fresh subprocess, against the largest snapshot.

Usage: ``.venv/bin/python bench/bench_session_reader.py [--loops 40] [--size-mb 60] [--weights-mb 5] [--keep]``
(scale down with e.g. ``--loops 8 --size-mb 12``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rd_assets.reader import read_task  # noqa: E402
from rd_assets.snapshot_index import SnapshotIndex  # noqa: E402
from rd_assets.trace import hist_of  # noqa: E402
from rd_assets.unpickler import load_session_file  # noqa: E402
from rd_assets_tests.rdagent_fixtures import (  # noqa: E402
    FACTOR_TASK,
    FACTOR_WORKSPACE,
    KNOWLEDGE_BASE,
    RDAGENT_1_STEPS,
    ExperimentSpec,
    FactorSpec,
    build_hist,
    build_loop,
    genuine_modules,
    make,
    snapshot_bytes,
)

TASK_ID = "2026-01-09_16-11-14-215581"
KNOWLEDGE_PER_LOOP = 60
KNOWLEDGE = "rdagent.components.coder.CoSTEER.knowledge_management.CoSTEERKnowledge"
SINGLE_FEEDBACK = "rdagent.components.coder.CoSTEER.evaluators.CoSTEERSingleFeedback"
WARM_REPEATS = 7
MB = 1 << 20


# ------------------------------------------------------------------------------------------------ generation


def _text(rng: random.Random, n_words: int) -> str:
    words = ("close", "volume", "rolling", "mean", "std", "factor", "return", "window", "rank", "ic", "alpha")
    return " ".join(rng.choice(words) + str(rng.randrange(100)) for _ in range(n_words))


def _knowledge(loop_idx: int) -> list[Any]:
    """One loop's worth of coder knowledge: small objects (tasks, code, feedback), as CoSTEER keeps them."""
    rng = random.Random(loop_idx)
    entries = []
    for k in range(KNOWLEDGE_PER_LOOP):
        name = f"K{loop_idx}_{k}_5D"
        task = make(FACTOR_TASK, factor_name=name, description=_text(rng, 30), factor_formulation=_text(rng, 8))
        code = f"def calculate_{name}():\n" + "".join(f"    x{i} = {_text(rng, 6)!r}\n" for i in range(25))
        workspace = make(FACTOR_WORKSPACE, file_dict={"factor.py": code}, workspace_path=None, target_task=task)
        feedback = make(
            SINGLE_FEEDBACK,
            execution=_text(rng, 40),
            return_checking=_text(rng, 20),
            code=_text(rng, 30),
            final_decision=rng.random() < 0.5,
        )
        entries.append(make(KNOWLEDGE, target_task=task, implementation=workspace, feedback=feedback))
    return entries


def _hist_specs(n: int, size_mb: int, weights_mb: int) -> list[ExperimentSpec]:
    """Enough accepted factor experiments (spread over the run) that the last snapshot exceeds ``size_mb``."""
    n_accepted = max(1, math.ceil(size_mb / weights_mb))
    last = max(0, n - 2)  # the last snapshot holds hist[: n - 1]
    accepted = {round(i * last / max(1, n_accepted - 1)) for i in range(n_accepted)}
    rng = random.Random(7)
    specs = []
    for i in range(n):
        if i % 7 == 6 and i not in accepted:
            specs.append(ExperimentSpec(kind="model", decision=False))
            continue
        factors = [FactorSpec(f"F{i}_{j}_{w}D") for j, w in enumerate((5, 10, 20)[: 1 + i % 3])]
        weights = {"model.pkl": rng.randbytes(weights_mb * MB)} if i in accepted else None
        specs.append(ExperimentSpec(factors=factors, decision=i in accepted, weights=weights, metrics={"IC": 0.01}))
    return specs


def _loop_for(hist: list[Any], hist_len: int, loop_idx: int, knowledge: list[Any]) -> Any:
    loop = build_loop(hist[:hist_len], loop_idx=loop_idx)
    loop.__dict__["coder"].__dict__["knowledge_base"] = make(
        KNOWLEDGE_BASE, success_task_to_knowledge_dict={}, working_trace_knowledge=knowledge[:]
    )
    outputs: defaultdict[int, dict[str, Any]] = defaultdict(dict)
    for li in range(min(loop_idx, hist_len)):
        exp, fb = hist[li]
        outputs[li] = {"direct_exp_gen": exp, "coding": exp, "running": exp, "feedback": fb}
    loop.__dict__["loop_prev_out"] = outputs
    return loop


class Task:
    """The generated task and the one extra snapshot written later for the incremental measurement."""

    def __init__(self, work: Path, loops: int, size_mb: int, weights_mb: int) -> None:
        self.log_dir = work / TASK_ID
        self.hist = build_hist(_hist_specs(loops + 1, size_mb, weights_mb))
        self.loops = loops
        self.knowledge: list[Any] = []

    def write_all(self) -> None:
        shutil.rmtree(self.log_dir, ignore_errors=True)
        steps = len(RDAGENT_1_STEPS)
        for loop_idx in range(self.loops):
            self.knowledge += _knowledge(loop_idx)
            for step_idx, step in enumerate(RDAGENT_1_STEPS):
                hist_len = loop_idx + (1 if step_idx == steps - 1 else 0)
                self._write(loop_idx, step_idx, step, hist_len)

    def write_extra(self) -> Path:
        """rdagent starts loop ``loops``: its first step snapshot (the same hist length as the last record)."""
        return self._write(self.loops, 0, RDAGENT_1_STEPS[0], self.loops)

    def _write(self, loop_idx: int, step_idx: int, step: str, hist_len: int) -> Path:
        path = self.log_dir / "__session__" / str(loop_idx) / f"{step_idx}_{step}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(snapshot_bytes(_loop_for(self.hist, hist_len, loop_idx, self.knowledge)))
        return path


# ------------------------------------------------------------------------------------------------ measurements


def snapshot_files(log_dir: Path) -> list[Path]:
    return sorted(p for p in (log_dir / "__session__").glob("*/*") if p.is_file())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def raw_read(files: list[Path]) -> int:
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            total += len(fh.read())
    return total


def raw_readinto(files: list[Path]) -> int:
    """The copy floor: every snapshot read into one reused buffer (no allocation, no page faults)."""
    buffer = bytearray(max(p.stat().st_size for p in files))
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            total += fh.readinto(buffer)
    return total


def naive_load(files: list[Path]) -> int:
    """What existing scripts do: ``pickle.load`` every snapshot with rdagent importable, keep the longest."""
    best = -1
    with genuine_modules():
        for path in files:
            with open(path, "rb") as fh:
                loop = pickle.load(fh)
            best = max(best, len(loop.trace.hist))
            del loop
    return best


def cold_read(log_dir: Path, index_path: Path) -> Any:
    index = SnapshotIndex(index_path)
    try:
        return read_task(log_dir, index=index)
    finally:
        index.close()


def child_peak_rss(log_dir: Path) -> dict[str, float]:
    """A cold ``read_task`` in a fresh interpreter: its peak RSS and its RSS after imports.

    ``VmHWM`` of the child's own address space is the figure: ``ru_maxrss`` of a child started by
    fork/vfork + exec starts at the parent's RSS (Linux carries the high-water mark across exec), so it
    is printed too but only meaningful when it exceeds the parent's.
    """
    code = (
        "import json, resource, sys, tempfile\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from rd_assets.reader import read_task\n"
        "from rd_assets.snapshot_index import SnapshotIndex\n"
        "def status(key):\n"
        "    line = next(x for x in open('/proc/self/status') if x.startswith(key + ':'))\n"
        "    return int(line.split()[1]) / 1024\n"
        "base = status('VmRSS')\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    index = SnapshotIndex(Path(tmp) / 'idx.sqlite')\n"
        f"    reading = read_task(Path({str(log_dir)!r}), index=index)\n"
        "    index.close()\n"
        "print(json.dumps({'base_mb': base, 'peak_mb': status('VmHWM'),\n"
        "    'ru_maxrss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=40)
    parser.add_argument("--size-mb", type=int, default=60, help="the last snapshots exceed this size")
    parser.add_argument("--weights-mb", type=int, default=5)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "_work" / "session_reader")
    parser.add_argument("--keep", action="store_true", help="keep the generated task")
    args = parser.parse_args()

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    task = Task(work, args.loops, args.size_mb, args.weights_mb)
    t_gen, _ = timed(task.write_all)
    files = snapshot_files(task.log_dir)
    sizes = [p.stat().st_size for p in files]
    total, largest = sum(sizes), max(sizes)
    print(f"generated {len(files)} snapshots, {total / MB:.0f} MB, largest {largest / MB:.1f} MB in {t_gen:.1f} s")

    raw_read(files)  # page cache warm for everything below
    t_raw = min(timed(lambda: raw_read(files))[0] for _ in range(3))
    t_floor = min(timed(lambda: raw_readinto(files))[0] for _ in range(3))
    t_naive, naive_hist = timed(lambda: naive_load(files))

    with tempfile.TemporaryDirectory() as tmp:
        index_path = Path(tmp) / "idx.sqlite"
        t_cold, reading = timed(lambda: cold_read(task.log_dir, index_path))
        assert reading.selection.hist_len == naive_hist == args.loops, (reading.selection.hist_len, naive_hist)
        assert reading.anchor is not None, reading.error
        warm = [timed(lambda: cold_read(task.log_dir, index_path))[0] for _ in range(WARM_REPEATS)]
        t_warm = statistics.median(warm)

        new_file = task.write_extra()
        new_size = new_file.stat().st_size
        raw_read([new_file])
        incremental = []
        for n in range(3):  # each repeat changes the new file's mtime: a changed file, read again
            if n:
                os.utime(new_file, ns=(time.time_ns(), time.time_ns()))
            t_incr, incr = timed(lambda: cold_read(task.log_dir, index_path))
            assert incr.unpickled == 1, incr.unpickled
            incremental.append(t_incr)
        t_incr = min(incremental)
        t_single = min(timed(lambda: hist_of(load_session_file(new_file).obj))[0] for _ in range(3))
        t_single_raw = min(timed(lambda: raw_read([new_file]))[0] for _ in range(3))

    rss = child_peak_rss(task.log_dir)
    largest = max(largest, new_size)
    rss_budget = 2 * largest / MB + 200

    rows = [
        ("snapshots / total / largest", f"{len(files)} / {total / MB:.0f} MB / {largest / MB:.1f} MB", ""),
        ("raw read of every snapshot (reference)", f"{t_raw * 1000:.0f} ms", f"{total / MB / t_raw:.0f} MB/s"),
        (
            "readinto one reused buffer (copy floor)",
            f"{t_floor * 1000:.0f} ms",
            f"{total / MB / t_floor:.0f} MB/s; cold = {t_cold / t_floor:.2f}x this",
        ),
        ("naive pickle.load of every snapshot", f"{t_naive * 1000:.0f} ms", f"{t_naive / t_raw:.2f}x raw read"),
        ("cold read_task (empty index)", f"{t_cold * 1000:.0f} ms", f"{t_cold / t_raw:.2f}x raw read (target <= 1.5x)"),
        ("cold vs naive", "", f"{t_cold / t_naive:.2f}x naive"),
        ("warm read_task (nothing changed)", f"{t_warm * 1000:.1f} ms", "target <= 50 ms"),
        (
            f"incremental read_task (+1 snapshot of {new_size / MB:.1f} MB)",
            f"{t_incr * 1000:.0f} ms",
            f"{t_incr / t_single:.2f}x one snapshot's cold read ({t_single * 1000:.0f} ms; raw "
            f"{t_single_raw * 1000:.0f} ms)",
        ),
        (
            "peak RSS, cold read_task in a fresh process",
            f"{rss['peak_mb']:.0f} MB VmHWM (imports {rss['base_mb']:.0f} MB, ru_maxrss {rss['ru_maxrss_mb']:.0f})",
            f"{rss['peak_mb'] / rss_budget:.2f}x budget 2 x largest + 200 MB = {rss_budget:.0f} MB",
        ),
    ]
    print("\n| measurement | value | ratio / target |\n|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    print(f"\n(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    if not args.keep:
        shutil.rmtree(task.log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
