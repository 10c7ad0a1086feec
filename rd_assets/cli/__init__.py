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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rd-assets", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rd-assets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
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
