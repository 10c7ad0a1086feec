"""``rd-assets serve --store DIR``: the read-only Results API under uvicorn.

The bearer token comes from ``RD_ASSETS_API_TOKEN`` (never from the command line, where ``ps`` would show it).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from rd_assets.cli.common import EXIT_ERROR, fail
from rd_assets.errors import RdAssetsError

DEFAULT_PORT = 8765


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve published bundles read-only over HTTP (FastAPI + uvicorn)")
    p.add_argument("--store", type=Path, required=True, help="the bundle store written by `rd-assets extract`")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from rd_assets.api.app import TOKEN_ENV, create_app

    token = os.environ.get(TOKEN_ENV)
    try:
        app = create_app(args.store, token=token)
    except RdAssetsError as exc:
        return fail(exc)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_ERROR
    if token is None and not _is_loopback(args.host):
        sys.stderr.write(f"warning: serving on {args.host} without {TOKEN_ENV}: anyone who can reach it can read\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, server_header=False)
    return 0
