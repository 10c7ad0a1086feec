"""Benchmark: factor_order's footer-only parquet read vs ``pandas.read_parquet`` of the same file.

Writes a ``combined_factors_df.parquet`` of at least 400 MB in the genuine column scheme (``('feature', name)``
MultiIndex columns, ``datetime``/``instrument`` index) in chunks with pyarrow, and a small one of the same
scheme. Each measurement runs in a fresh subprocess, so the peak RSS delta (``VmHWM`` after minus ``VmRSS``
before) belongs to that read alone. Prints one table; target: footer read < 50 ms and constant in file size.

    .venv/bin/python bench/bench_factor_order.py [--mb 400] [--work bench/_work] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
N_FACTORS = 24
ROWS_PER_CHUNK = 500_000
FOOTER_REPEATS = 30


def factor_names() -> list[str]:
    return [f"Factor_{i:02d}_{w}D" for i, w in zip(range(N_FACTORS), [5, 10, 20, 60] * 6, strict=True)]


def _frame(rows: int, start: int, rng: np.random.Generator) -> pd.DataFrame:
    instruments = np.array([f"{600000 + i % 5000:06d}.SH" for i in range(5000)], dtype=object)
    n = np.arange(start, start + rows)
    index = pd.MultiIndex.from_arrays(
        [pd.Timestamp("2008-01-02") + pd.to_timedelta(n // 5000, unit="D"), instruments[n % 5000]],
        names=["datetime", "instrument"],
    )
    columns = pd.MultiIndex.from_tuples([("feature", name) for name in factor_names()])
    return pd.DataFrame(rng.standard_normal((rows, N_FACTORS)), index=index, columns=columns)


def write_parquet(path: Path, min_bytes: int) -> Path:
    """Append chunks of real pandas-converted rows until the file reaches ``min_bytes``."""
    rng = np.random.default_rng(0)
    first = pa.Table.from_pandas(_frame(ROWS_PER_CHUNK, 0, rng))
    written = 0
    with pq.ParquetWriter(path, first.schema) as writer:
        table = first
        while True:
            writer.write_table(table)
            written += ROWS_PER_CHUNK
            if written * N_FACTORS * 8 >= min_bytes * 1.02:
                break
            table = pa.Table.from_pandas(_frame(ROWS_PER_CHUNK, written, rng))
    return path


def write_small(path: Path) -> Path:
    _frame(1_000, 0, np.random.default_rng(1)).to_parquet(path)
    return path


def _status_kb(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process (``ru_maxrss`` would inherit the parent's peak across exec)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(f"{field}:"))


def worker(method: str, path: Path) -> None:
    """One measurement in a fresh process: seconds and peak RSS growth of the read."""
    from rd_assets.core.artifacts.factor_order import read_dynamic_factors

    before = _status_kb("VmRSS")
    if method == "footer":
        times = []
        for _ in range(FOOTER_REPEATS):
            t0 = time.perf_counter()
            part = read_dynamic_factors(path, None)
            times.append(time.perf_counter() - t0)
        assert part.names == factor_names(), part.reason
        seconds, first = statistics.median(times), times[0]
    else:
        t0 = time.perf_counter()
        frame = pd.read_parquet(path)
        seconds = first = time.perf_counter() - t0
        assert [name for _, name in frame.columns] == factor_names()
    peak = _status_kb("VmHWM")
    print(json.dumps({"seconds": seconds, "first": first, "peak_rss_delta_mb": max(peak - before, 0) / 1024}))


def measure(method: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", method, str(path)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=400, help="minimum size of the big parquet in MB")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "_work" / "factor_order")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        (args.work / "big").mkdir(exist_ok=True)
        big = write_parquet(args.work / "big" / "combined_factors_df.parquet", args.mb * 1_000_000)
        small = write_small(args.work / "small.parquet")
        print(f"generated {big.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
        rows = [
            ("footer read (factor_order)", small, measure("footer", small)),
            ("footer read (factor_order)", big, measure("footer", big)),
            ("pandas.read_parquet", big, measure("pandas", big)),
        ]
        footer_big, pandas_big = rows[1][2], rows[2][2]
        print("\n| method | file size | time (median) | first call | peak RSS delta |\n|---|---:|---:|---:|---:|")
        for name, path, m in rows:
            print(
                f"| {name} | {path.stat().st_size / 1e6:,.1f} MB | {m['seconds'] * 1000:,.2f} ms "
                f"| {m['first'] * 1000:,.2f} ms | {m['peak_rss_delta_mb']:,.1f} MB |"
            )
        print(
            f"\nfooter big/small time ratio: {footer_big['seconds'] / rows[0][2]['seconds']:.2f}x; "
            f"pandas/footer time: {pandas_big['seconds'] / footer_big['seconds']:,.0f}x; "
            f"target footer < 50 ms: {'met' if footer_big['seconds'] < 0.05 else 'MISSED'}"
        )
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
