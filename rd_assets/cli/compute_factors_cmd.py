"""``rd-assets compute-factors BUNDLE --data daily_pv.h5 --out factors.parquet``: the bundle's factors, sandboxed.

Exit 0 when every factor the model needs was computed; 2 when one failed (the others are still written, the report
says why each failed) or nothing could run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from rd_assets.cli.common import EXIT_ERROR, add_command, fail, print_json, print_lines
from rd_assets.consumer.sandbox_limits import SandboxLimits
from rd_assets.core.contracts.consumer_models import FactorComputeReport
from rd_assets.core.errors import RdAssetsError

_LIMIT_HELP = {
    "memory_mb": "address space per factor on top of the interpreter, MiB",
    "cpu_seconds": "CPU seconds per factor",
    "wall_seconds": "wall-clock seconds per factor",
    "file_mb": "largest file a factor may write, MiB",
    "open_files": "open descriptors per factor",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "compute-factors", "run a bundle's factor code on a daily_pv.h5, each in a sandbox")
    p.add_argument("bundle", type=Path, help="<mirror>/<task_id> or a version directory")
    p.add_argument("--data", type=Path, required=True, help="qlib daily_pv.h5 (key 'data', (datetime, instrument))")
    p.add_argument("--out", type=Path, required=True, help="parquet of the computed factors")
    p.add_argument("--report", type=Path, help="also write the FactorComputeReport JSON here")
    p.add_argument("--json", action="store_true", help="print the FactorComputeReport as JSON")
    p.add_argument("--allow-not-ready", action="store_true", help="also use a bundle that is not selection_ready")
    p.add_argument(
        "--allow-weaker-sandbox",
        action="store_true",
        help="run even without a network namespace or Landlock (the report lists what was missing)",
    )
    limits = p.add_argument_group("limits", "per factor process")
    for f in dataclasses.fields(SandboxLimits):
        limits.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=f.default,
            help=f"{_LIMIT_HELP[f.name]} (default %(default)s)",
        )  # fmt: skip
    p.set_defaults(handler=run)


def render(report: FactorComputeReport) -> list[str]:
    lines = [f"bundle {report.task_id}  ({report.rows} input rows)"]
    if report.sandbox is not None:
        s = report.sandbox
        lines.append(
            f"  sandbox  runner={s.runner} netns={s.network_namespace} landlock_abi={s.landlock_abi} "
            f"seccomp={'on' if s.seccomp_denied else 'off'} caps_dropped={s.capabilities_dropped}"
        )
        lines += [f"  MISSING  {m}" for m in s.missing]
    for run in report.factors:
        if run.ok:
            absent = f"{run.nan_values} NaN, {run.missing_rows} rows absent"
            lines.append(f"  ok    {run.name}  {run.seconds:.2f} s  ({absent})")
        else:
            lines.append(f"  FAIL  {run.name}  {run.code}: {run.message}")
    lines.append(f"  wrote  {report.out}  columns={report.columns}")
    return lines


def run(args: argparse.Namespace) -> int:
    from rd_assets.consumer.bundle import load_bundle  # pandas and the models load only for this command
    from rd_assets.consumer.factor_compute import compute_factors

    limits = SandboxLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SandboxLimits)})
    try:
        bundle = load_bundle(args.bundle, allow_not_ready=args.allow_not_ready)
        done = compute_factors(
            bundle, args.data, out=args.out, limits=limits, require_confinement=not args.allow_weaker_sandbox
        )
    except RdAssetsError as exc:
        return fail(exc)
    report = done.report
    if args.report is not None:
        args.report.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if args.json:
        print_json(report)
    else:
        print_lines(render(report))
    if not report.ok:
        print_lines([f"error: factors failed: {', '.join(report.failed)}"], sys.stderr)
        return EXIT_ERROR
    return 0
