"""``rd-assets inspect LOG_DIR``: candidates, chosen snapshot, anchor and SOTA factors of one task."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rd_assets.cli.common import (
    EXIT_ERROR,
    add_command,
    add_index_options,
    open_index,
    print_json,
    print_lines,
    stderr_progress,
)
from rd_assets.core.contracts.models import InspectResult
from rd_assets.core.errors import RdAssetsError
from rd_assets.core.session.task_reader import inspect_result, read_task, signing_key_from_env


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "inspect", "show which snapshot and experiment a task resolves to")
    p.add_argument("log_dir", type=Path, help="a task log dir, e.g. log/2026-01-09_16-11-14-215581")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    add_index_options(p)
    p.set_defaults(handler=run)


def render_table(result: InspectResult) -> list[str]:
    """The human tables: candidates, the chosen snapshot, the anchor and its SOTA factors."""
    lines = [f"task {result.task_id}  ({result.log_dir})", "", "candidates:"]
    lines.append(f"  {'relpath':<32} {'size':>12}  {'hist':>5}  note")
    chosen = result.chosen_snapshot
    for c in result.candidates:
        note = f"{c.error.code}: {c.error.message}" if c.error else (c.file_format or "")
        mark = "*" if c.relpath == chosen else " "
        hist = "-" if c.hist_len is None else str(c.hist_len)
        lines.append(f"{mark} {c.relpath:<32} {c.size:>12}  {hist:>5}  {note}")
    if result.selection:
        sel = result.selection
        lines += ["", f"chosen snapshot: {sel.chosen_snapshot}  hist_len={sel.hist_len}  ({sel.tie_rule})"]
        if len(sel.tied_snapshots) > 1:
            lines.append(f"  tied: {', '.join(sel.tied_snapshots)}")
    if result.last_sota_factor_index is not None:
        lines += [
            "",
            f"last SOTA factor experiment: trace.hist[{result.last_sota_factor_index}]",
            "",
            "SOTA factors:",
        ]
        lines.append(f"  {'#':>2} {'name':<32} {'hist':>4}  {'code key':<28} code sha256")
        for i, f in enumerate(result.sota_factors):
            sha = (f.code_sha256 or "-")[:16]
            lines.append(f"  {i:>2} {f.name:<32} {f.hist_index!s:>4}  {f.file_dict_key:<28} {sha}")
    return lines


def run(args: argparse.Namespace) -> int:
    index = open_index(args)
    reading, error = None, None
    try:
        reading = read_task(
            args.log_dir,
            index=index,
            signing_key=signing_key_from_env(),
            progress=stderr_progress(sys.stderr.isatty()),
        )
    except RdAssetsError as exc:
        error = exc
    finally:
        index.close()
    result = inspect_result(args.log_dir, reading, error)
    if args.json:
        print_json(result, exclude={"selection"})
    elif result.candidates or result.error is None:  # a log dir that could not be listed has no table
        print_lines(render_table(result))
    if result.error:
        if not args.json:  # scripts read the error from the JSON; people get it once, on stderr
            where = f" [{result.error.path}]" if result.error.path else ""
            print_lines([f"error: {result.error.code}: {result.error.message}{where}"], sys.stderr)
        return EXIT_ERROR
    return 0
