"""Weight introspection through the restricted unpickler, checked against the real lightgbm package."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import lightgbm
import numpy as np
import pytest

from rd_assets.core.artifacts.model_introspection import introspect_model
from rd_assets.core.artifacts.weights import resolve_model_weight
from rd_assets.core.samples import SAMPLE_TASKS, SAMPLES_DIR
from rd_assets.core.session.file_format import load_session_file
from rd_assets.core.trace.experiments import anchor_experiment
from rd_assets_tests.rdagent_fixtures import make, snapshot_bytes

SAMPLES = SAMPLES_DIR
MODELS = SAMPLES / "models"


def reference_booster() -> lightgbm.Booster:
    """The bare Booster rebuilt by lightgbm itself (trusted test input, never done by the product)."""
    return pickle.loads((MODELS / "booster.pkl").read_bytes())


def test_qlib_lgbmodel_is_exported_and_predicts_like_the_pickled_booster(tmp_path: Path) -> None:
    export = introspect_model((MODELS / "params.pkl").read_bytes())
    info = export.introspection
    assert info.class_path == "qlib.contrib.model.gbdt.LGBModel"
    assert info.kind == "lightgbm"
    assert info.feature_count == 24
    assert info.feature_names == [f"Column_{i}" for i in range(24)]
    assert info.objective == "regression"
    assert export.model_txt is not None

    reference = reference_booster()
    assert info.num_trees == reference.num_trees()
    x = np.random.default_rng(7).standard_normal((64, 24))
    from_string = lightgbm.Booster(model_str=export.model_txt)
    model_file = tmp_path / "model.txt"
    model_file.write_text(export.model_txt, encoding="utf-8")
    from_file = lightgbm.Booster(model_file=str(model_file))
    np.testing.assert_array_equal(from_string.predict(x), reference.predict(x))
    np.testing.assert_array_equal(from_file.predict(x), reference.predict(x))
    assert from_file.num_feature() == info.feature_count


def test_bare_booster_gives_the_same_model_text() -> None:
    bare = introspect_model((MODELS / "booster.pkl").read_bytes())
    wrapped = introspect_model((MODELS / "params.pkl").read_bytes())
    assert bare.introspection.class_path == "lightgbm.basic.Booster"
    assert bare.model_txt == wrapped.model_txt
    assert bare.introspection.model_txt_sha256 == wrapped.introspection.model_txt_sha256


@pytest.mark.parametrize("task_id", SAMPLE_TASKS)
def test_session_weights_have_the_expected_feature_count(task_id: str) -> None:
    expected = json.loads((SAMPLES / "expected" / f"{task_id}.expected.json").read_text())
    loaded = load_session_file(SAMPLES / "log" / task_id / expected["chosen_snapshot_relpath"])
    hist_index, exp = anchor_experiment(loaded.obj)
    export = introspect_model(resolve_model_weight(exp, hist_index=hist_index).data)

    info = export.introspection
    assert info.feature_count == expected["model_feature_count"]
    assert info.class_path == expected["model_class"]
    if not expected["model_txt_expected"]:  # torch: the count is the first 2-D layer's shape[1]
        assert export.model_txt is None and export.safetensors is not None
        assert (info.kind, info.network_class) == ("torch", expected["model_network_class"])
        assert info.first_layer_key == expected["model_first_layer_key"]
        assert info.first_layer_shape == expected["model_first_layer_shape"]
        assert (info.wrapper_kwargs or {})["pt_model_kwargs"] == expected["model_pt_model_kwargs"]
        return
    assert export.model_txt is not None and info.num_trees == expected["model_booster_num_trees"]
    assert lightgbm.Booster(model_str=export.model_txt).num_feature() == expected["model_booster_num_feature"]


def test_introspection_imports_no_model_library() -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from rd_assets.core.artifacts.model_introspection import introspect_model\n"
        f"for name in ('params.pkl', 'booster.pkl'):\n"
        f"    export = introspect_model(Path({str(MODELS)!r}, name).read_bytes())\n"
        "    assert export.introspection.feature_count == 24\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('qlib', 'lightgbm', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_non_lightgbm_model_records_its_class_and_why_the_count_is_unknown() -> None:
    torch_like = make("qlib.contrib.model.pytorch_general_nn.GeneralPTNN", n_epochs=10, fitted=True)
    export = introspect_model(snapshot_bytes(torch_like))
    info = export.introspection
    assert info.kind == "other"
    assert info.class_path == "qlib.contrib.model.pytorch_general_nn.GeneralPTNN"
    assert info.feature_count is None
    assert "not LightGBM" in (info.feature_count_reason or "")
    assert export.model_txt is None


class _Boom:
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.canary}",)


def test_hostile_weight_is_unreadable_and_never_runs(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    export = introspect_model(pickle.dumps(_Boom(str(canary))))
    assert export.introspection.kind == "unreadable"
    assert "unsafe_pickle" in (export.introspection.feature_count_reason or "")
    assert not canary.exists()


def test_truncated_weight_is_unreadable() -> None:
    data = (MODELS / "params.pkl").read_bytes()
    export = introspect_model(data[: len(data) // 2])
    assert export.introspection.kind == "unreadable"
    assert export.introspection.feature_count is None
    assert "unreadable_snapshot" in (export.introspection.feature_count_reason or "")


def test_inconsistent_model_string_gives_no_count_but_a_reason() -> None:
    """Legacy ``handle`` state key; a header whose feature_names disagree with max_feature_idx."""
    text = "tree\nversion=v4\nmax_feature_idx=3\nobjective=binary sigmoid:1\nfeature_names=a b c\n\nTree=0\n"
    export = introspect_model(snapshot_bytes(make("lightgbm.basic.Booster", handle=text)))
    info = export.introspection
    assert info.kind == "lightgbm"
    assert info.feature_count is None
    assert info.feature_count_reason == "max_feature_idx+1 = 4 but feature_names lists 3 names"
    assert info.objective == "binary sigmoid:1"
    assert info.num_trees == 1


def test_booster_without_model_string_is_reported() -> None:
    export = introspect_model(snapshot_bytes(make("lightgbm.basic.Booster", _handle=None)))
    assert export.introspection.kind == "lightgbm"
    assert export.model_txt is None
    assert "no LightGBM model string" in (export.introspection.feature_count_reason or "")
