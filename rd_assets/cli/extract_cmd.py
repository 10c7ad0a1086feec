"""``rd-assets extract LOG_DIR --store DIR``: publish one task's bundle and say what went into it.

It also keeps the store's failure record of the task in step (:mod:`rd_assets.core.bundle.task_status`): a
failure caused by the session is recorded, a publication clears it, so the API can tell failed from never seen.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rd_assets.cli.common import add_command, add_index_options, fail, open_index, print_json, print_lines
from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.bundle.extract import ExtractOutcome, extract_task, record_task_failure, refuse_inside
from rd_assets.core.bundle.task_status import clear_failure
from rd_assets.core.contracts.artifact_models import FactorOrder
from rd_assets.core.contracts.bundle_models import FACTOR_ORDER, SOTA_FACTORS, ExtractResult, SotaFactorsDoc
from rd_assets.core.contracts.models import ErrorInfo
from rd_assets.core.errors import RdAssetsError
from rd_assets.core.session.index import default_index_path
from rd_assets.core.session.task_reader import signing_key_from_env
from rd_assets.core.task_ids import is_task_id


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (the current version is always kept)")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "extract", "extract a task's bundle and publish it atomically into a store")
    p.add_argument("log_dir", type=Path, help="a task log dir, e.g. log/2026-01-09_16-11-14-215581")
    p.add_argument("--store", type=Path, required=True, help="bundle store directory (outside the log dir)")
    p.add_argument(
        "--path-map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="rewrite a pickled workspace path prefix (repeatable; F:/x, F:\\x and /mnt/f/x are the same)",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="publish without weights or alignment; the bundle then says selection_ready: false",
    )
    p.add_argument(
        "--keep-versions", type=_positive, default=3, metavar="N", help="published versions to keep (default 3)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    add_index_options(p)
    p.set_defaults(handler=run)


def _order_line(order: FactorOrder) -> list[str]:
    counts = f"{order.alpha158_count} alpha + {order.dynamic_count} dynamic = {order.model_input_count}"
    if order.model_input_count is None:
        counts = "unresolved"
    lines = [
        f"  config     {order.config_name or 'unresolved'}",
        f"  order      {counts}  (rule {order.model_input_order_rule or 'unresolved'}; "
        f"alpha names from {order.alpha158_source_kind or 'nowhere'})",
    ]
    if order.dynamic_factors:
        lines.append(f"  dynamic    {', '.join(order.dynamic_factors)}")
    for label, reason in (("alpha158", order.alpha158_unresolved_reason), ("dynamic", order.dynamic_unresolved_reason)):
        if reason:
            lines.append(f"  {label:<10} unresolved: {reason}")
    if order.is_aligned:
        lines.append(f"  alignment  aligned with the model's {order.model_feature_count} features")
    else:
        lines.append(f"  alignment  NOT aligned: {order.alignment_reason}")
    return lines


def _once(lines: list[str]) -> list[str]:
    """Each long reason in full the first time only: later lines that repeat it say "(as above)".

    A missing parquet explains the dynamic names, the alignment and readiness alike; printing it three times
    pushes the summary off a terminal.
    """
    shown: list[str] = []
    out = []
    for line in lines:
        label, _, text = line.partition(": ")
        for reason in shown:
            if reason in text:
                text = text.replace(reason, "(as above)")
        if len(text) > 60:
            shown.append(text)
        out.append(f"{label}: {text}" if text else line)
    return out


def render_summary(outcome: ExtractOutcome) -> list[str]:
    """The human summary lines: anchor, factors, weight, order, alignment, readiness and where the bundle is."""
    manifest, report = outcome.content.manifest, outcome.report
    anchor, session = manifest.sota_factor_anchor, manifest.session_anchor
    sota = SotaFactorsDoc.model_validate_json(outcome.content.files[SOTA_FACTORS])
    lines = [
        f"task {manifest.task_id}",
        f"  snapshot   {session.chosen_session_file}  (hist_len {session.hist_len}, "
        f"{len(session.candidates)} candidates, {len(report.skipped_candidates)} skipped)",
        f"  anchor     trace.hist[{anchor.last_sota_factor_index}]  {anchor.anchor_class_path}",
        f"  factors    {len(sota.factors)}: {', '.join(f.name for f in sota.factors)}",
    ]
    if report.weight is not None:
        w = report.weight
        lines.append(
            f"  weight     {w.resolved_model_weight_key}  {w.size} bytes  sha256 {w.sha256[:16]}  {w.location}"
        )
    else:
        lines.append(f"  weight     none: {report.weight_error.message if report.weight_error else 'not resolved'}")
    if report.factor_code_incomplete:
        lines.append(f"  code       incomplete: {', '.join(report.factor_code_incomplete)}")
    if report.model is not None:
        m = report.model
        count = m.feature_count if m.feature_count is not None else f"unknown ({m.feature_count_reason})"
        shape = f"trees {m.num_trees}" if m.kind == "lightgbm" else f"network {m.network_class}  {m.first_layer_key}"
        lines.append(f"  model      {m.kind} {m.class_path}  features {count}  {shape}")
    lines += _order_line(FactorOrder.model_validate_json(outcome.content.files[FACTOR_ORDER]))
    ready = "true" if manifest.selection_ready else f"false: {'; '.join(manifest.reasons)}"
    state = "published" if outcome.publish.changed else "unchanged (identical content already current)"
    lines += [f"  warning    {w}" for w in manifest.warnings]
    lines += [
        f"  ready      {ready}",
        f"  bundle     {outcome.publish.bundle_path} -> {outcome.publish.version_dir.name}  {state}",
        f"  content    sha256 {outcome.publish.content_hash}",
    ]
    return _once(lines)


def _result(args: argparse.Namespace, outcome: ExtractOutcome | None, error: RdAssetsError | None) -> ExtractResult:
    log_dir = args.log_dir.resolve()
    if outcome is None:
        assert error is not None
        info = ErrorInfo(code=error.code, message=error.message, path=error.path)
        return ExtractResult(ok=False, task_id=log_dir.name, log_dir=str(log_dir), error=info)
    manifest = outcome.content.manifest
    return ExtractResult(
        ok=True,
        task_id=manifest.task_id,
        log_dir=str(log_dir),
        bundle_path=str(outcome.publish.bundle_path),
        version_dir=str(outcome.publish.version_dir),
        content_hash=outcome.publish.content_hash,
        changed=outcome.publish.changed,
        selection_ready=manifest.selection_ready,
        reasons=manifest.reasons,
        report=outcome.report,
    )


def _record_status(args: argparse.Namespace, outcome: ExtractOutcome | None, error: RdAssetsError | None) -> None:
    """Record a failure the session caused, or clear the record once the task published (raises if it cannot)."""
    if outcome is not None:
        clear_failure(args.store, outcome.content.task_id)
        return
    task_id = Path(os.path.abspath(args.log_dir)).name
    if error is not None and is_task_id(task_id):
        record_task_failure(args.store, task_id, error, log_dir=args.log_dir)


def run(args: argparse.Namespace) -> int:
    outcome, error = None, None
    index = None
    try:
        path_map = PathMap.parse(args.path_map)
        refuse_inside(args.log_dir, "bundle store", args.store)
        refuse_inside(args.log_dir, "snapshot index", None if args.no_index else (args.index or default_index_path()))
        index = open_index(args)
        outcome = extract_task(
            args.log_dir,
            store=args.store,
            path_map=path_map,
            index=index,
            signing_key=signing_key_from_env(),
            allow_incomplete=args.allow_incomplete,
            keep_versions=args.keep_versions,
        )
    except RdAssetsError as exc:
        error = exc
    finally:
        if index is not None:
            index.close()
    status_error = None
    try:
        _record_status(args, outcome, error)
    except RdAssetsError as exc:
        status_error = exc
    if args.json:
        print_json(_result(args, outcome, error))
    elif outcome is not None:
        print_lines(render_summary(outcome))
    codes = [fail(e) for e in (error, status_error) if e is not None]
    return codes[0] if codes else 0
