"""``rd-assets schema [--out DIR]``: the JSON Schema of every document rd-assets writes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rd_assets.cli.common import add_command, print_json, print_lines
from rd_assets.core.contracts.schemas import export_schemas, schema_files


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "schema", "write <Model>.schema.json for every bundle and CLI document")
    p.add_argument("--out", type=Path, default=None, help="directory to write into (default: print them as one JSON)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        print_json({name: json.loads(data) for name, data in schema_files().items()}, sort_keys=True)
        return 0
    print_lines(str(path) for path in export_schemas(args.out))
    return 0
