"""``rd-assets`` command line: one module per subcommand, each exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rd_assets import __version__

SUBCOMMANDS = (
    "inspect_cmd",
    "extract_cmd",
    "verify_cmd",
    "schema_cmd",
    "serve_cmd",
    "pull_cmd",
    "compute_factors_cmd",
    "score_cmd",
)


DESCRIPTION = """\
Turn RD-Agent task log dirs into exact, verified bundles for a stock-selection system: the model weight of
the last accepted factor experiment, every SOTA factor with its code and metrics, the model's input order
and config, and a manifest saying where each byte came from. Nothing under a log dir is ever written, and
no byte of a pickle is ever executed."""

EPILOG = """\
examples:
  rd-assets inspect log/2026-01-09_16-11-14-215581
  rd-assets extract log/2026-01-09_16-11-14-215581 --store bundles \\
      --path-map /mnt/f/RD-Agent_workspace=/data/workspaces
  rd-assets verify bundles/2026-01-09_16-11-14-215581
  rd-assets serve --store bundles --port 8000
  rd-assets pull --api http://127.0.0.1:8000 2026-01-09_16-11-14-215581 --dest mirror
  rd-assets compute-factors mirror/2026-01-09_16-11-14-215581 --data daily_pv.h5 --out factors.parquet
  rd-assets score mirror/2026-01-09_16-11-14-215581 --features features.parquet --top-k 50

Every command takes --help; most take --json for scripts. Environment (RD_ASSETS_SIGNING_KEY,
RD_ASSETS_INDEX, reader limits ...) and exit codes: see README.md. Exit code 0 ok, 2 a typed error."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rd-assets",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rd-assets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"rd_assets.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rd_assets.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
