"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rd_assets.errors import RdAssetsError
from rd_assets.snapshot_index import SnapshotIndex, default_index_path

EXIT_ERROR = 2


def add_index_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index",
        type=Path,
        default=None,
        help="snapshot summary index (SQLite); default $RD_ASSETS_INDEX or ~/.cache/rd-assets/",
    )
    parser.add_argument("--no-index", action="store_true", help="do not cache snapshot summaries")


def open_index(args: argparse.Namespace) -> SnapshotIndex:
    return SnapshotIndex(None if args.no_index else (args.index or default_index_path()))


def stderr_progress(enabled: bool):
    """A progress callback that draws one updating line on stderr for long scans."""

    def report(done: int, total: int, relpath: str) -> None:
        if enabled and total >= 20:
            end = "\n" if done == total else ""
            sys.stderr.write(f"\r  scanning snapshots {done}/{total}  {relpath:<40}{end}")
            sys.stderr.flush()

    return report


def print_json(payload: str | dict) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload, indent=2, sort_keys=True)
    sys.stdout.write(text + "\n")


def fail(exc: RdAssetsError) -> int:
    sys.stderr.write(f"error: {exc.code}: {exc.message}" + (f" [{exc.path}]" if exc.path else "") + "\n")
    return EXIT_ERROR
