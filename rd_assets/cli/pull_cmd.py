"""``rd-assets pull --api URL TASK_ID --dest DIR``: mirror a task's bundle from a Results API (``--list``: the tasks).

The token comes from ``--token`` or, better (``ps`` shows arguments), from ``RD_ASSETS_API_TOKEN``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rd_assets.cli.common import EXIT_ERROR, add_command, fail, print_json, print_lines
from rd_assets.core.contracts.consumer_models import PullResult
from rd_assets.core.contracts.models import ErrorInfo
from rd_assets.core.errors import RdAssetsError

if TYPE_CHECKING:
    from rd_assets.client import ResultsClient

TOKEN_ENV = "RD_ASSETS_API_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "pull", "download a task's bundle from a Results API into a local mirror")
    p.add_argument("task_id", nargs="?", help="the task to pull (omit with --list)")
    p.add_argument("--api", required=True, help="base URL of `rd-assets serve`, e.g. http://127.0.0.1:8765")
    p.add_argument("--token", default=None, help=f"bearer token (default ${TOKEN_ENV}; prefer the variable)")
    p.add_argument("--dest", type=Path, help="the local mirror (<dest>/<task_id> -> the current version)")
    p.add_argument("--list", action="store_true", help="list the published tasks and their readiness instead")
    p.add_argument("--allow-not-ready", action="store_true", help="also take a bundle that is not selection_ready")
    p.add_argument("--keep-versions", type=int, default=3, help="local versions kept per task (default 3)")
    p.add_argument("--retries", type=int, default=5, help="attempts per request on transient failures (default 5)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per network operation (default 30)")
    p.add_argument("--json", action="store_true", help="print the PullResult (or the task list) as JSON")
    p.set_defaults(handler=run)


def _client(args: argparse.Namespace) -> ResultsClient:
    from rd_assets.client import ResultsClient, RetryPolicy  # httpx loads only for this command

    token = args.token or os.environ.get(TOKEN_ENV) or None
    return ResultsClient(args.api, token=token, timeout=args.timeout, retry=RetryPolicy(attempts=max(1, args.retries)))


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tasks = client.list_tasks()
    if args.json:
        print_json({"tasks": [task.model_dump() for task in tasks]})
    else:
        lines = [f"{len(tasks)} task(s) at {args.api}"]
        lines += [
            f"  {t.task_id}  ready={str(t.selection_ready).lower():<5}  {t.version}  factors={t.factor_count}"
            for t in tasks
        ]
        print_lines(lines)
    return 0


def render(result: PullResult) -> list[str]:
    if result.not_modified:
        return [f"{result.task_id}: not modified (local {result.content_hash}), {result.requests} request(s)"]
    return [
        f"{result.task_id} -> {result.bundle_path}",
        f"  version  {result.version_dir}" + ("" if result.changed else "  (already current)"),
        f"  ready    {str(result.selection_ready).lower()}",
        f"  files    {len(result.downloaded_files)} downloaded ({result.downloaded_bytes} bytes), "
        f"{len(result.reused_files)} unchanged, {len(result.resumed_files)} resumed; {result.requests} request(s)",
    ]


def run(args: argparse.Namespace) -> int:
    try:
        if args.list:
            return _list(args)
        if args.task_id is None or args.dest is None:
            print_lines(["error: pull needs TASK_ID and --dest (or --list)"], sys.stderr)
            return EXIT_ERROR
        from rd_assets.client import pull_bundle

        with _client(args) as client:
            result = pull_bundle(
                client, args.task_id, args.dest, allow_not_ready=args.allow_not_ready, keep_versions=args.keep_versions
            )
    except RdAssetsError as exc:
        if args.json and not args.list:
            error = ErrorInfo(code=exc.code, message=exc.message, path=exc.path)
            print_json(PullResult(ok=False, task_id=args.task_id or "", api=args.api, dest=str(args.dest), error=error))
        return fail(exc)
    if args.json:
        print_json(result)
    else:
        print_lines(render(result))
    return 0
