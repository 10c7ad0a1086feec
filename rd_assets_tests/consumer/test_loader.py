"""load_bundle: verified before use, files re-hashed after, torch code only when trusted, never a pickle."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rd_assets.consumer import load_bundle
from rd_assets.core.contracts.bundle_models import MANIFEST, MODEL_TXT
from rd_assets.core.errors import BundleIntegrityError, BundleNotReadyError, ModelCodeUntrustedError
from rd_assets_tests.bundle_testkit import tree_bytes
from rd_assets_tests.conftest import FIRST_ANCHOR_TASK, PLAIN_TASK, SIGNED_TASK, expected_for
from rd_assets_tests.consumer_testkit import republish_with


def test_what_a_bundle_exposes(sample_store: Path) -> None:
    bundle = load_bundle(sample_store / PLAIN_TASK)
    expected = expected_for(PLAIN_TASK)
    assert bundle.task_id == PLAIN_TASK and bundle.manifest.selection_ready
    assert bundle.model_input_order == expected["model_input_order"]
    assert bundle.alpha158_factors == expected["alpha158_factors"]
    assert bundle.dynamic_factors == expected["dynamic_factors"]
    assert [f.name for f in bundle.factors] == expected["sota_factor_names"]
    assert bundle.model.kind == "lightgbm" and bundle.model.num_features == expected["model_feature_count"]


def test_a_torch_network_needs_trust(sample_store: Path) -> None:
    untrusted = load_bundle(sample_store / SIGNED_TASK)
    assert untrusted.dynamic_factors == expected_for(SIGNED_TASK)["dynamic_factors"]  # usable without the model
    with pytest.raises(ModelCodeUntrustedError, match="trust_model_code"):
        _ = untrusted.model
    trusted = load_bundle(sample_store / SIGNED_TASK, trust_model_code=True)
    assert trusted.model.kind == "torch" and trusted.model.num_features == 23


def test_a_damaged_bundle_is_refused(tmp_path: Path, sample_store: Path) -> None:
    version = tmp_path / "v"
    for rel, data in tree_bytes(sample_store / PLAIN_TASK).items():
        (version / rel).parent.mkdir(parents=True, exist_ok=True)
        (version / rel).write_bytes(data)
    (version / "factors" / "Volatility_5D.py").write_text("import os\n")
    with pytest.raises(BundleIntegrityError, match=re.escape("factors/Volatility_5D.py: sha256/size")):
        load_bundle(version)


def test_a_file_swapped_after_verification_is_refused(tmp_path: Path, sample_store: Path) -> None:
    version = tmp_path / "v"
    for rel, data in tree_bytes(sample_store / FIRST_ANCHOR_TASK).items():
        (version / rel).parent.mkdir(parents=True, exist_ok=True)
        (version / rel).write_bytes(data)
    bundle = load_bundle(version)
    (version / MODEL_TXT).write_bytes((version / MODEL_TXT).read_bytes() + b"\n")
    with pytest.raises(BundleIntegrityError, match="no longer matches the manifest"):
        _ = bundle.model


def test_a_bundle_not_ready_is_refused_unless_asked(tmp_path: Path, sample_store: Path) -> None:
    manifest = json.loads((sample_store / PLAIN_TASK / MANIFEST).read_bytes())
    manifest.update(selection_ready=False, reasons=["factor_code_incomplete: a test says so"])
    path = republish_with(sample_store, PLAIN_TASK, {MANIFEST: json.dumps(manifest).encode()}, into=tmp_path / "s")
    with pytest.raises(BundleNotReadyError, match="factor_code_incomplete"):
        load_bundle(path)
    assert not load_bundle(path, allow_not_ready=True).manifest.selection_ready


def test_scoring_never_unpickles(sample_store: Path) -> None:
    """In a fresh interpreter an audit hook sees every pickle global lookup and a tripwire every ``torch.load``:
    loading and scoring a LightGBM and a torch bundle make none (the probe counts a ``pickle.loads`` as 1)."""
    probe = textwrap.dedent(
        """
        import sys
        found = []
        sys.addaudithook(lambda event, args: found.append(args) if event == "pickle.find_class" else None)
        import torch  # torch.load's weights-only unpickler is pure Python (no audit event): a tripwire instead
        torch.load = lambda *args, **kwargs: found.append("torch.load")
        import numpy as np, pandas as pd
        from rd_assets.consumer import load_bundle
        for path in sys.argv[1:]:
            bundle = load_bundle(path, trust_model_code=True)
            index = pd.MultiIndex.from_product([pd.to_datetime(["2024-01-02"]), ["A", "B"]],
                                               names=["datetime", "instrument"])
            features = pd.DataFrame(1.0, index=index, columns=bundle.model_input_order[::-1])
            assert len(bundle.score(features).frame) == 2
        print(len(found))
        """
    )
    paths = [str(sample_store / task) for task in (PLAIN_TASK, SIGNED_TASK)]
    done = subprocess.run([sys.executable, "-c", probe, *paths], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
