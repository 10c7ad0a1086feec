"""assemble_bundle: deterministic bytes, the manifest's bookkeeping, and when a bundle is selection_ready."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from rd_assets.core.artifacts.factor_code import FactorCodeSet
from rd_assets.core.bundle.assemble import content_hash, file_entries, sha256_hex
from rd_assets.core.bundle.extract import BundleParts
from rd_assets.core.contracts.artifact_models import FactorCodeIndex
from rd_assets.core.contracts.bundle_models import (
    EXTRACT_REPORT,
    FACTOR_ORDER,
    MANIFEST,
    MODEL_TXT,
    SOTA_FACTORS,
    ExtractReport,
    Manifest,
    SotaFactorsDoc,
)
from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets.core.errors import BundleStoreError
from rd_assets_tests.bundle_testkit import sample_parts
from rd_assets_tests.conftest import PLAIN_TASK, SAMPLE_TASKS, SIGNED_TASK, expected_for

STAMP = "2026-03-02T10:00:00.000000Z"


@pytest.fixture(scope="module")
def parts() -> dict[str, BundleParts]:
    return {task: sample_parts(task) for task in SAMPLE_TASKS}


def test_json_files_are_canonical(parts: dict[str, BundleParts]) -> None:
    content = parts[PLAIN_TASK].assemble(generated_at_utc=STAMP)
    for rel, data in content.files.items():
        if rel.endswith(".json"):
            doc = json.loads(data)
            assert data == (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode(), rel
            assert doc["schema_version"] == SCHEMA_VERSION, rel


def test_only_the_manifest_depends_on_the_time(parts: dict[str, BundleParts]) -> None:
    a = parts[PLAIN_TASK].assemble(generated_at_utc=STAMP)
    b = parts[PLAIN_TASK].assemble()
    assert {k: v for k, v in a.files.items() if k != MANIFEST} == {k: v for k, v in b.files.items() if k != MANIFEST}
    assert a.manifest.content_hash == b.manifest.content_hash
    assert a.manifest.model_copy(update={"generated_at_utc": b.manifest.generated_at_utc}) == b.manifest


def test_manifest_lists_every_file_but_itself_and_hashes_them(parts: dict[str, BundleParts]) -> None:
    content = parts[SIGNED_TASK].assemble(generated_at_utc=STAMP)
    manifest = Manifest.model_validate_json(content.files[MANIFEST])
    assert manifest == content.manifest
    assert set(manifest.files) == set(content.files) - {MANIFEST}
    for rel, entry in manifest.files.items():
        assert (entry.sha256, entry.size) == (sha256_hex(content.files[rel]), len(content.files[rel]))
    lines = "".join(f"{rel}\t{manifest.files[rel].sha256}\n" for rel in sorted(manifest.files))
    assert manifest.content_hash == sha256_hex(lines.encode()) == content_hash(file_entries(content.files))


def test_weight_bytes_keep_their_own_name(parts: dict[str, BundleParts]) -> None:
    for task, part in parts.items():
        content = part.assemble(generated_at_utc=STAMP)
        expected = expected_for(task)
        key = expected["weights_key"]
        assert sha256_hex(content.files[key]) == expected["weights_sha256"]
        other = "model.pkl" if key == "params.pkl" else "params.pkl"
        assert other not in content.files
        anchor = content.manifest.sota_factor_anchor
        assert (anchor.resolved_model_weight_key, anchor.resolved_model_weight_source) == (key, "factor_exp")
        assert content.manifest.primary_assets["model_weight"] == key
        if expected["model_txt_expected"]:
            assert content.manifest.primary_assets["model_txt"] == MODEL_TXT
            assert content.files[MODEL_TXT].startswith(b"tree\n")
            assert content.manifest.primary_assets["model_safetensors"] is None
        else:
            assert MODEL_TXT not in content.files and content.manifest.primary_assets["model_txt"] is None
            assert content.manifest.primary_assets["model_safetensors"] == "model.safetensors"
            assert content.manifest.primary_assets["model_py"] == "model.py"
            model_py = hashlib.sha256(content.files["model.py"]).hexdigest()
            assert model_py == expected["anchor_model_py_sha256"]


def test_sota_factors_point_at_code_files_instead_of_embedding_code(parts: dict[str, BundleParts]) -> None:
    content = parts[PLAIN_TASK].assemble(generated_at_utc=STAMP)
    doc = SotaFactorsDoc.model_validate_json(content.files[SOTA_FACTORS])
    assert [f.name for f in doc.factors] == expected_for(PLAIN_TASK)["sota_factor_names"]
    assert all(f.code is None and f.code_sha256 for f in doc.factors)
    for f in doc.factors:
        assert sha256_hex(content.files[doc.code_relpaths[f.name]]) == f.code_sha256


def test_run_counters_go_to_the_manifest_not_the_published_report(parts: dict[str, BundleParts]) -> None:
    part = parts[PLAIN_TASK]
    assert part.report.run is not None and part.report.run.unpickled_snapshots >= 1
    content = part.assemble(generated_at_utc=STAMP)
    assert ExtractReport.model_validate_json(content.files[EXTRACT_REPORT]).run is None
    assert content.manifest.extract_run == part.report.run
    busier = dataclasses.replace(
        part,
        report=part.report.model_copy(update={"run": part.report.run.model_copy(update={"unpickled_snapshots": 0})}),
    )
    assert busier.assemble(generated_at_utc=STAMP).manifest.content_hash == content.manifest.content_hash


def test_a_complete_sample_is_selection_ready(parts: dict[str, BundleParts]) -> None:
    for part in parts.values():
        manifest = part.assemble().manifest
        assert manifest.selection_ready and manifest.reasons == []


def test_each_gap_is_a_reason(parts: dict[str, BundleParts]) -> None:
    part = parts[SIGNED_TASK]
    incomplete_index = part.factor_code.index.model_copy(update={"incomplete": ["Momentum_10D"]})
    broken = dataclasses.replace(
        part,
        weight=None,
        model=None,
        factor_order=part.factor_order.model_copy(
            update={"is_aligned": False, "model_feature_count": None, "alignment_reason": "the model is unknown"}
        ),
        factor_code=FactorCodeSet(index=FactorCodeIndex.model_validate(incomplete_index), files=part.factor_code.files),
    )
    manifest = broken.assemble().manifest
    assert not manifest.selection_ready
    codes = [r.split(":")[0] for r in manifest.reasons]
    assert codes == ["weights_not_persisted", "factor_code_incomplete", "factor_order_not_aligned"]
    assert "Momentum_10D" in manifest.reasons[1] and "the model is unknown" in manifest.reasons[2]
    content = broken.assemble()
    assert "params.pkl" not in content.files and MODEL_TXT not in content.files
    assert manifest.sota_factor_anchor.resolved_model_weight_key is None
    assert manifest.primary_assets["model_weight"] is None and manifest.primary_assets["model_txt"] is None


def test_each_single_gap_alone_blocks_readiness(parts: dict[str, BundleParts]) -> None:
    part = parts[PLAIN_TASK]
    unaligned = dataclasses.replace(
        part, factor_order=part.factor_order.model_copy(update={"is_aligned": False, "alignment_reason": "x"})
    )
    assert unaligned.assemble().manifest.reasons == ["factor_order_not_aligned: x"]
    no_weight = dataclasses.replace(part, weight=None)
    assert [r.split(":")[0] for r in no_weight.assemble().manifest.reasons] == ["weights_not_persisted"]


def test_a_code_file_clashing_with_a_bundle_file_is_refused(parts: dict[str, BundleParts]) -> None:
    part = parts[PLAIN_TASK]
    clash = FactorCodeSet(index=part.factor_code.index, files={**part.factor_code.files, FACTOR_ORDER: b"{}"})
    with pytest.raises(BundleStoreError, match="two bundle files"):
        dataclasses.replace(part, factor_code=clash).assemble()
