"""``rd-assets score BUNDLE --features FEATURES.parquet``: per-date ranked scores from the bundle's model.

Features are taken by NAME (alpha + dynamic, any column order); extra columns are ignored and listed; a missing
one is an error listing all of them (``missing_features``). A torch bundle needs ``--trust-model-code``: its network
is the run's own ``model.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rd_assets.cli.common import add_command, fail, print_json, print_lines
from rd_assets.core.errors import InvalidFeaturesError, RdAssetsError

if TYPE_CHECKING:
    import pandas as pd

    from rd_assets.consumer.bundle import Scores


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "score", "score a features parquet with a bundle's model, ranked per date")
    p.add_argument("bundle", type=Path, help="<mirror>/<task_id> or a version directory")
    p.add_argument("--features", type=Path, required=True, help="parquet: (datetime, instrument) rows, named columns")
    p.add_argument("--top-k", type=int, default=None, help="keep the N best-ranked instruments of each date")
    p.add_argument("--date", default=None, help="score only this date (YYYY-MM-DD)")
    p.add_argument("--out", type=Path, help="write the ranked scores as parquet")
    p.add_argument("--json", action="store_true", help="print the ScoreResult as JSON")
    p.add_argument("--trust-model-code", action="store_true", help="import a torch bundle's model.py (LLM-written)")
    p.add_argument("--allow-not-ready", action="store_true", help="also use a bundle that is not selection_ready")
    p.set_defaults(handler=run)


def _read_features(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InvalidFeaturesError(f"not a readable parquet file: {exc}", path=str(path)) from None


def render(scores: Scores, top: int = 10) -> list[str]:
    policy = scores.nan_policy
    lines = [f"scored {scores.rows} row(s) with {scores.model_kind}; {scores.unscored} without a score"]
    lines.append(f"  NaN policy  {policy.kind}" + (f" {policy.fill_value:g}" if policy.fill_value is not None else ""))
    lines.append(f"              {policy.source}")
    lines += [f"  not applied {p} (give features already processed so)" for p in policy.processors_not_applied]
    lines.append(f"  ignored     {', '.join(scores.ignored_columns) or '-'}")
    flat = scores.frame.reset_index()
    for date, group in flat.groupby("datetime", sort=True):
        lines.append(f"  {date}")
        best = group.head(top)[["instrument", "score", "rank"]].itertuples(index=False)
        lines += [f"    {rank!s:>4}  {inst}  {score:.6g}" for inst, score, rank in best]
    return lines


def run(args: argparse.Namespace) -> int:
    from rd_assets.consumer.bundle import load_bundle  # pandas and the models load only for this command
    from rd_assets.consumer.factor_compute import write_parquet

    try:
        bundle = load_bundle(args.bundle, trust_model_code=args.trust_model_code, allow_not_ready=args.allow_not_ready)
        scores = bundle.score(_read_features(args.features), top_k=args.top_k, date=args.date)
        if args.out is not None:
            write_parquet(scores.frame, args.out)
    except RdAssetsError as exc:
        return fail(exc)
    if args.json:
        print_json(bundle.score_result(scores, top_k=args.top_k))
    else:
        print_lines(render(scores))
    return 0
