"""Helpers shared by the bundle tests: sample extraction, generated tasks with real LightGBM weights, edits.

Generated tasks are written by :mod:`rd_assets_tests.rdagent_fixtures` (genuine rdagent class paths); their
weights are real ``lightgbm`` Boosters trained on random data, wrapped in a stand-in of qlib's ``LGBModel``
exactly as qlib pickles it (``LGBModel.model`` = the Booster), so the restricted unpickler sees what it sees
in a genuine session.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.bundle.assemble import BundleContent, content_hash, file_entries, json_bytes
from rd_assets.core.bundle.extract import BundleParts, ExtractOutcome, collect_parts, extract_task
from rd_assets.core.contracts.bundle_models import EXTRACT_REPORT, MANIFEST, ExtractReport, Manifest
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.index import SnapshotIndex
from rd_assets_tests.conftest import SAMPLE_LOGS, SAMPLES, expected_for
from rd_assets_tests.rdagent_fixtures import (
    RDAGENT_1_STEPS,
    WSL_WORKSPACE_PREFIX,
    ExperimentSpec,
    FactorSpec,
    genuine_modules,
    growing_timeline,
    make,
    workspace_dir,
    write_combined_factors_parquet,
    write_task,
)

SAMPLE_PATH_MAP = f"{WSL_WORKSPACE_PREFIX}={SAMPLES / 'workspaces'}"
LGB_MODEL = "qlib.contrib.model.gbdt.LGBModel"
GENERATED_TASK = "2026-01-09_16-11-14-215581"
ALPHA_COUNT = 20


def sample_signing_key(task_id: str) -> str | None:
    return expected_for(task_id).get("signing_key")


def sample_parts(task_id: str, *, index: SnapshotIndex | None = None, access: AccessLog | None = None) -> BundleParts:
    return collect_parts(
        SAMPLE_LOGS / task_id,
        path_map=PathMap.parse([SAMPLE_PATH_MAP]),
        index=index or SnapshotIndex(None),
        signing_key=sample_signing_key(task_id),
        access=access,
    )


def extract_sample(
    task_id: str,
    store: Path,
    *,
    log_dir: Path | None = None,
    index: SnapshotIndex | None = None,
    access: AccessLog | None = None,
    keep_versions: int = 3,
) -> ExtractOutcome:
    return extract_task(
        log_dir or SAMPLE_LOGS / task_id,
        store=store,
        path_map=PathMap.parse([SAMPLE_PATH_MAP]),
        index=index or SnapshotIndex(None),
        signing_key=sample_signing_key(task_id),
        keep_versions=keep_versions,
        access=access,
    )


def lgb_model_pickle(n_features: int, *, seed: int = 0) -> bytes:
    """A trained LightGBM Booster with ``n_features`` inputs inside qlib's ``LGBModel``, pickled like qlib does."""
    import lightgbm

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, n_features))
    y = x[:, 0] * 0.5 + rng.standard_normal(64) * 0.1
    params = {"objective": "regression", "verbose": -1, "num_leaves": 4, "min_data_in_leaf": 2, "num_threads": 1}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=3)
    wrapper = make(LGB_MODEL, params={"objective": "mse"}, early_stopping_rounds=50, num_boost_round=3, model=booster)
    with genuine_modules():
        return pickle.dumps(wrapper, protocol=4)


@dataclass
class GeneratedTask:
    log_dir: Path
    workspaces: Path
    path_map: PathMap
    factor_names: list[str]
    parquet: Path
    extra: dict[str, object] = field(default_factory=dict)


def generated_task(
    root: Path,
    *,
    task_id: str = GENERATED_TASK,
    anchor_factors: tuple[FactorSpec, ...] = (FactorSpec("Momentum_10D"), FactorSpec("Volatility_5D")),
    weights: bool = True,
    model_features: int | None = None,
    write_parquet: bool = True,
    yaml_files: dict[str, str] | None = None,
) -> GeneratedTask:
    """A two-experiment task: an accepted base factor experiment, then the accepted anchor (hist[1]).

    The anchor's parquet holds the SOTA factors in training order; the weight's feature count is 20 Alpha158
    + that many dynamic factors unless ``model_features`` says otherwise (a mismatch).
    """
    base = FactorSpec("PriceRange_20D")
    names = [base.name, *(f.name for f in anchor_factors)]
    n_features = model_features if model_features is not None else ALPHA_COUNT + len(names)
    weight = {"model.pkl": lgb_model_pickle(n_features)} if weights else None
    hist = [
        ExperimentSpec(factors=[base], decision=True, weights={"model.pkl": lgb_model_pickle(ALPHA_COUNT + 1)}),
        ExperimentSpec(factors=list(anchor_factors), decision=True, weights=weight, yaml_files=yaml_files),
    ]
    log_dir = write_task(root / "log", task_id, growing_timeline(2, RDAGENT_1_STEPS), hist=hist, task_run_id="run-1")
    workspaces = root / "workspaces"
    parquet = workspace_dir(workspaces, hist[1], 1) / "combined_factors_df.parquet"
    if write_parquet:
        write_combined_factors_parquet(parquet, names)
    path_map = PathMap.parse([f"{WSL_WORKSPACE_PREFIX}={workspaces}"])
    return GeneratedTask(log_dir, workspaces, path_map, names, parquet)


def with_note(content: BundleContent, note: str) -> BundleContent:
    """The same bundle with one more report note: a genuinely different content hash, still a valid bundle."""
    files = dict(content.files)
    report = ExtractReport.model_validate_json(files[EXTRACT_REPORT])
    files[EXTRACT_REPORT] = json_bytes(report.model_copy(update={"notes": [*report.notes, note]}))
    return rehashed(files)


def rehashed(files: dict[str, bytes]) -> BundleContent:
    """Recompute the manifest's file list and content hash after editing ``files`` (manifest included)."""
    manifest = Manifest.model_validate_json(files[MANIFEST])
    entries = file_entries(files)
    manifest = manifest.model_copy(update={"files": entries, "content_hash": content_hash(entries)})
    files = {**files, MANIFEST: json_bytes(manifest)}
    return BundleContent(task_id=manifest.task_id, files=files, manifest=manifest)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """relpath -> bytes of every regular file under ``root`` (following the top-level symlink only)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime_ns) of every path under ``root``: equal before and after = nothing was written."""
    out = {}
    for p in sorted([root, *root.rglob("*")]):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())
