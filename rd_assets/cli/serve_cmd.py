"""``rd-assets serve --store DIR``: the read-only Results API under uvicorn.

The bearer token comes from ``RD_ASSETS_API_TOKEN`` (never from the command line, where ``ps`` would show it).
Every field of :class:`rd_assets.api.limits.ApiLimits` is a flag (``max_head_bytes`` -> ``--max-head-bytes``).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import sys
import typing
from pathlib import Path

from rd_assets.api.limits import WHY, ApiLimits
from rd_assets.cli.common import EXIT_ERROR, add_command, fail
from rd_assets.core.errors import RdAssetsError

DEFAULT_PORT = 8765


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "serve", "serve published bundles read-only over HTTP (FastAPI + uvicorn)")
    p.add_argument("--store", type=Path, required=True, help="the bundle store written by `rd-assets extract`")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_limit_flags(p.add_argument_group("limits", "checked before the bearer token and before any route"))
    p.set_defaults(handler=run)


def _add_limit_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per :class:`ApiLimits` field, so a new limit is a flag without touching this file."""
    types = typing.get_type_hints(ApiLimits)
    for f in dataclasses.fields(ApiLimits):
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=types[f.name],
            default=f.default,
            metavar=types[f.name].__name__.upper(),
            help=f"{f.metadata[WHY]}; default %(default)s",
        )


def _limits(args: argparse.Namespace) -> ApiLimits:
    return ApiLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ApiLimits)})


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
    from rd_assets.api.protocol import uvicorn_options

    token = os.environ.get(TOKEN_ENV)
    try:
        limits = _limits(args)
        app = create_app(args.store, token=token, limits=limits)
    except RdAssetsError as exc:
        return fail(exc)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_ERROR
    if token is None and not _is_loopback(args.host):
        sys.stderr.write(f"warning: serving on {args.host} without {TOKEN_ENV}: anyone who can reach it can read\n")
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, server_header=False, **uvicorn_options(limits)
    )
    return 0
