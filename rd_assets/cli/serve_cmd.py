"""``rd-assets serve [--store DIR]``: the read-only Results API under uvicorn.

Settings come from :class:`rd_assets.api.settings.ApiSettings` (``RD_ASSETS_*`` variables); a flag given on the
command line overrides its variable. The bearer token is only ever a variable (``RD_ASSETS_API_TOKEN``): on the
command line ``ps`` would show it. Every field of :class:`rd_assets.api.limits.ApiLimits` is a flag
(``max_head_bytes`` -> ``--max-head-bytes``).
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rd_assets.api.limits import ApiLimits
from rd_assets.api.settings import TOKEN_ENV, ApiSettings, env_name
from rd_assets.cli.common import EXIT_ERROR, add_command, fail
from rd_assets.core.errors import RdAssetsError

SERVER_FLAGS = ("store", "host", "port", "log_level")
"""Flags that set an :class:`ApiSettings` field of the same name."""


def register(sub: argparse._SubParsersAction) -> None:
    defaults = ApiSettings.model_fields
    p = add_command(sub, "serve", "serve published bundles read-only over HTTP (FastAPI + uvicorn)")
    p.add_argument("--store", type=Path, default=argparse.SUPPRESS, help="the bundle store (default $RD_ASSETS_STORE)")
    p.add_argument("--host", default=argparse.SUPPRESS, help=f"interface to bind (default {defaults['host'].default})")
    p.add_argument("--port", type=int, default=argparse.SUPPRESS, help=f"TCP port (default {defaults['port'].default})")
    p.add_argument("--log-level", default=argparse.SUPPRESS, choices=["critical", "error", "warning", "info", "debug"])
    _add_limit_flags(p.add_argument_group("limits", "checked before the bearer token and before any route"))
    p.set_defaults(handler=run)


def _add_limit_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per :class:`ApiLimits` field, so a new limit is a flag without touching this file."""
    for name, info in ApiLimits.model_fields.items():
        kind = info.annotation
        if kind not in (int, float):
            raise TypeError(f"limit {name} must be an int or a float to be a flag, not {kind}")
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind,
            default=argparse.SUPPRESS,
            metavar=kind.__name__.upper(),
            help=f"{info.description}; default {info.default}",
        )


def settings_from(args: argparse.Namespace) -> ApiSettings:
    """The environment's settings with every flag that was given on top (flags left out are not defaults)."""
    given = vars(args)
    overrides: dict[str, Any] = {name: given[name] for name in SERVER_FLAGS if name in given}
    limits = {name: given[name] for name in ApiLimits.model_fields if name in given}
    if limits:
        overrides["limits"] = limits
    return ApiSettings(**overrides)


def _flag(loc: tuple[int | str, ...]) -> str | None:
    if loc and loc[0] in SERVER_FLAGS:
        name = str(loc[0])
    elif len(loc) == 2 and loc[0] == "limits":
        name = str(loc[1])
    else:
        return None
    return f"--{name.replace('_', '-')}"


def _invalid(exc: ValidationError) -> str:
    """One line per problem, naming the setting, its variable and flag; never the value (it may be the token)."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        flag = _flag(loc)
        where = env_name(loc) + (f" or {flag}" if flag else "")
        lines.append(f"error: invalid setting {'.'.join(map(str, loc))} ({where}): {error['msg']}\n")
    return "".join(lines)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the API's own logger (one line per damaged file found) on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["rd_assets"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from rd_assets.api.app import create_app
    from rd_assets.api.protocol import uvicorn_options

    try:
        settings = settings_from(args)
        app = create_app(settings)
    except ValidationError as exc:
        sys.stderr.write(_invalid(exc))
        return EXIT_ERROR
    except RdAssetsError as exc:
        return fail(exc)
    if settings.api_token is None and not _is_loopback(settings.host):
        sys.stderr.write(f"warning: serving on {settings.host} without {TOKEN_ENV}: anyone who can reach it can read\n")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=_log_config(settings.log_level),
        server_header=False,
        **uvicorn_options(settings.limits),
    )
    return 0
