"""Options and output helpers shared by the subcommands.

Every line the CLI prints goes out through :func:`print_lines`, :func:`print_json` or :func:`fail`: factor
names, paths and messages come from untrusted pickles and log dirs, and must never reach a terminal as raw
control sequences (see :mod:`rd_assets.core.text_safety`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from rd_assets.core.errors import RdAssetsError
from rd_assets.core.session.index import SnapshotIndex, default_index_path
from rd_assets.core.text_safety import jsonable, printable

EXIT_ERROR = 2


def add_command(sub: argparse._SubParsersAction, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line summary is both its entry in ``rd-assets --help`` and its own description."""
    return sub.add_parser(name, help=summary, description=summary)


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


def stderr_progress(enabled: bool) -> Callable[[int, int, str], None]:
    """A progress callback that draws one updating line on stderr for long scans."""

    def report(done: int, total: int, relpath: str) -> None:
        if enabled and total >= 20:
            end = "\n" if done == total else ""
            sys.stderr.write("\r" + printable(f"  scanning snapshots {done}/{total}  {relpath:<40}") + end)
            sys.stderr.flush()

    return report


def print_lines(lines: Iterable[str], stream: TextIO | None = None) -> None:
    """Human-readable output, each line escaped by :func:`printable` (no terminal control from untrusted text)."""
    (stream or sys.stdout).write("".join(printable(line) + "\n" for line in lines))


def print_json(doc: BaseModel | dict[str, Any], *, exclude: set[str] | None = None, sort_keys: bool = False) -> None:
    """One JSON document on stdout, ASCII only, so no control, bidi or C1 character reaches a terminal raw.

    Surrogates (unencodable) become the literal ``\\ud800`` text the bundle JSON carries too.
    """
    text = json.dumps(jsonable(doc, exclude=exclude), indent=2, sort_keys=sort_keys, ensure_ascii=True)
    sys.stdout.write(text + "\n")


def fail(exc: RdAssetsError) -> int:
    """Report a typed error on stderr (its message and path may quote untrusted text) and give the exit code."""
    print_lines([f"error: {exc.code}: {exc.message}" + (f" [{exc.path}]" if exc.path else "")], sys.stderr)
    return EXIT_ERROR
