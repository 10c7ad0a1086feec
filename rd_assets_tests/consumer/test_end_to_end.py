"""The consumer kit end to end on the genuine samples: factors computed in the sandbox, features shuffled, scored.

Proof that scoring by name is exact: the scores equal the model's own predictions (LightGBM's ``Booster.predict``,
the torch network's forward pass) on the matrix assembled in training order, while the naive ``.values`` of the same
shuffled frame - what a caller who trusts column order gets - gives different scores. The factor values computed in
the sandbox equal what RD-Agent's ``python factor.py`` writes to ``result.h5`` for the same data.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pytest

from rd_assets.consumer import load_bundle
from rd_assets.consumer.bundle import Bundle
from rd_assets.core.contracts.consumer_models import ScoreResult
from rd_assets.core.errors import MissingFeaturesError
from rd_assets_tests.conftest import (
    FIRST_ANCHOR_TASK,
    PLAIN_TASK,
    RD_ASSETS,
    SAMPLE_TASKS,
    SIGNED_TASK,
    expected_for,
)

EXTRA = "turnover_not_a_model_input"


def features_for(bundle: Bundle, factors: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features in training order, the same shuffled with an extra column): synthetic alpha columns with NaNs."""
    rng = np.random.default_rng(seed)
    frame = factors.copy()
    for name in bundle.alpha158_factors:
        values = rng.standard_normal(len(frame))
        values[rng.random(len(frame)) < 0.05] = np.nan
        frame[name] = values
    ordered = frame[bundle.model_input_order]
    shuffled = frame.assign(**{EXTRA: rng.standard_normal(len(frame))})
    columns = list(shuffled.columns)
    while columns[: len(bundle.model_input_order)] == bundle.model_input_order:
        rng.shuffle(columns)
    return ordered, shuffled[columns]


def policy_applied(bundle: Bundle, matrix: np.ndarray) -> np.ndarray:
    policy = bundle.nan_policy
    return np.where(np.isnan(matrix), policy.fill_value, matrix) if policy.kind == "fill" else matrix


def lightgbm_reference(bundle: Bundle) -> lightgbm.Booster:
    return lightgbm.Booster(model_file=str(bundle.version_dir / "model.txt"))


def torch_reference(bundle: Bundle) -> Any:
    """The network built by hand: the published model.py imported as module ``model``, weights from safetensors."""
    import torch  # noqa: F401 - the network module needs it
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("model", bundle.version_dir / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kwargs = bundle.model_meta.trained_model_kwargs["pt_model_kwargs"]
    network = module.model_cls(**kwargs)
    network.load_state_dict(load_file(bundle.version_dir / "model.safetensors"))
    return network.eval()


def reference_scores(bundle: Bundle, matrix: np.ndarray) -> np.ndarray:
    if bundle.manifest.primary_assets["model_txt"]:
        return lightgbm_reference(bundle).predict(matrix)
    import torch

    with torch.no_grad():
        return torch_reference(bundle)(torch.from_numpy(matrix.astype(np.float32))).numpy().astype("float64")


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_scores_equal_the_models_own_predictions_in_training_order(
    sample_store: Path, computed: dict[str, pd.DataFrame], task: str
) -> None:
    bundle = load_bundle(sample_store / task, trust_model_code=True)
    assert bundle.model_input_order == expected_for(task)["model_input_order"]
    ordered, shuffled = features_for(bundle, computed[task], seed=len(task))

    scores = bundle.score(shuffled)
    assert scores.ignored_columns == [EXTRA]
    assert scores.model_kind == ("lightgbm" if expected_for(task)["model_txt_expected"] else "torch")
    got = scores.frame["score"].reindex(ordered.index).to_numpy()

    expected = reference_scores(bundle, policy_applied(bundle, ordered.to_numpy(dtype="float64")))
    assert np.array_equal(got, expected), np.abs(got - expected).max()

    naive_matrix = policy_applied(bundle, shuffled.drop(columns=EXTRA).to_numpy(dtype="float64"))
    naive = reference_scores(bundle, naive_matrix)
    assert not np.allclose(naive, expected), "a shuffled frame's .values must not score like the training order"
    assert np.abs(naive - expected).max() > 1e-3

    ranks = scores.frame.reset_index()
    assert ranks.groupby("datetime")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    best = ranks[ranks["rank"] == 1].set_index("datetime")["score"]
    assert (best == ranks.groupby("datetime")["score"].max()).all()


def test_nan_policy_follows_the_executed_config(sample_store: Path) -> None:
    policies = {task: load_bundle(sample_store / task).nan_policy for task in SAMPLE_TASKS}
    assert policies[PLAIN_TASK].kind == "fill" and policies[PLAIN_TASK].fill_value == 0.0
    assert "RobustZScoreNorm" in policies[PLAIN_TASK].processors_not_applied[0]
    assert policies[SIGNED_TASK].kind == "fill"
    first_anchor = policies[FIRST_ANCHOR_TASK]
    assert first_anchor.kind == "keep" and first_anchor.processors_not_applied == []


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_sandboxed_factors_equal_rdagents_own_run(
    tmp_path: Path, sample_store: Path, market: tuple[Path, pd.DataFrame], computed: dict[str, pd.DataFrame], task: str
) -> None:
    """``python factor.py`` next to daily_pv.h5, then ``pd.read_hdf('result.h5')``: RD-Agent's execution (the
    task's first factor; every factor's column is checked for shape and content)."""
    bundle = load_bundle(sample_store / task)
    data, frame = market
    assert list(computed[task].columns) == bundle.dynamic_factors
    assert computed[task].index.equals(frame.index)
    for name in bundle.dynamic_factors:
        assert np.isfinite(computed[task][name]).sum() > len(frame) / 3, name
    name = bundle.dynamic_factors[0]
    shutil.copyfile(data, tmp_path / "daily_pv.h5")
    relpath, code = bundle.factor_code(name) or ("", b"")
    (tmp_path / "factor.py").write_bytes(code)
    subprocess.run([sys.executable, "factor.py"], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    direct = pd.read_hdf(tmp_path / "result.h5")[name].reindex(frame.index).to_numpy()
    assert np.array_equal(direct, computed[task][name].to_numpy(), equal_nan=True), relpath


def test_missing_features_are_refused_by_name(sample_store: Path, computed: dict[str, pd.DataFrame]) -> None:
    bundle = load_bundle(sample_store / PLAIN_TASK)
    _, shuffled = features_for(bundle, computed[PLAIN_TASK], seed=1)
    dropped = [bundle.dynamic_factors[0], bundle.alpha158_factors[3]]
    with pytest.raises(MissingFeaturesError) as raised:
        bundle.score(shuffled.drop(columns=dropped))
    assert raised.value.missing == [n for n in bundle.model_input_order if n in dropped]
    assert raised.value.code == "missing_features"


def test_the_three_commands(
    tmp_path: Path, sample_store: Path, market: tuple[Path, pd.DataFrame], computed: dict[str, pd.DataFrame]
) -> None:
    """compute-factors and score as a user runs them (pull has its own tests against a live server)."""
    task = FIRST_ANCHOR_TASK
    bundle_dir = sample_store / task
    out = tmp_path / "factors.parquet"
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [str(RD_ASSETS), "compute-factors", str(bundle_dir), "--data", str(market[0]), "--out", str(out),
         "--report", str(report_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["sandbox"]["network_namespace"] and report["sandbox"]["landlock_abi"]
    factors = pd.read_parquet(out)
    pd.testing.assert_frame_equal(factors, computed[task])

    bundle = load_bundle(bundle_dir)
    _, shuffled = features_for(bundle, factors, seed=5)
    features = tmp_path / "features.parquet"
    shuffled.to_parquet(features)
    date = str(shuffled.index.get_level_values("datetime")[-1].date())
    done = subprocess.run(
        [str(RD_ASSETS), "score", str(bundle_dir), "--features", str(features), "--top-k", "3", "--date", date,
         "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = ScoreResult.model_validate_json(done.stdout)
    assert result.ignored_columns == [EXTRA] and result.dates == [date] and len(result.scores) == 3
    expected = bundle.score(shuffled, top_k=3, date=date).frame.reset_index()
    assert [r.instrument for r in result.scores] == list(expected["instrument"])
    assert [r.score for r in result.scores] == list(expected["score"])

    missing = tmp_path / "missing.parquet"
    shuffled.drop(columns=[bundle.dynamic_factors[0]]).to_parquet(missing)
    done = subprocess.run(
        [str(RD_ASSETS), "score", str(bundle_dir), "--features", str(missing)], capture_output=True, text=True
    )
    assert done.returncode == 2 and f"missing_features: 1 model input(s) missing: {bundle.dynamic_factors[0]}" in (
        done.stderr
    )
