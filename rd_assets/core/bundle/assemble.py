"""Assemble the consumer bundle (DESIGN.md section 4) in memory: every file as bytes plus its manifest.

Pure and deterministic: the same inputs give byte-identical files. JSON is written with sorted keys,
indent 2 and a trailing newline; the only time-dependent values (``generated_at_utc`` and the run's
counters) live in ``manifest.json``, which is excluded from the content hash. Publishing the result
atomically is :mod:`rd_assets.core.bundle.store`'s job.

Every text comes from an untrusted pickle, and a lone surrogate in it cannot be encoded as UTF-8: JSON
carries it as the literal escape ``\\ud800`` (:func:`json_bytes`), and text files holding one (``model.py``,
factor code) are not published but reported, because a consumer must read every file as UTF-8.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING

from pydantic import BaseModel

from rd_assets import __version__
from rd_assets.core.contracts.artifact_models import FactorOrder, ModelMeta
from rd_assets.core.contracts.bundle_models import (
    CONFIG_DIR,
    EXTRACT_REPORT,
    FACTOR_ENTRY,
    FACTOR_ORDER,
    MANIFEST,
    MODEL_META,
    MODEL_PY,
    MODEL_SAFETENSORS,
    MODEL_TXT,
    SELECTION_RELPATH_ROLES,
    SOTA_FACTORS,
    ExtractReport,
    FileEntry,
    Manifest,
    PrimaryAssets,
    SessionAnchor,
    SotaFactorAnchor,
    SotaFactorsDoc,
)
from rd_assets.core.contracts.models import SnapshotSelection, SotaFactorExperiment
from rd_assets.core.errors import BundleStoreError
from rd_assets.core.text_safety import jsonable, publishable_code

if TYPE_CHECKING:  # annotations only: the publisher and verifier stay free of numpy and the unpickler
    from rd_assets.core.artifacts.factor_code import FactorCodeSet
    from rd_assets.core.artifacts.model_introspection import ModelExport
    from rd_assets.core.artifacts.weights import ModelWeight

REASON_WEIGHTS = "weights_not_persisted"
REASON_FACTOR_CODE = "factor_code_incomplete"
REASON_ORDER = "factor_order_not_aligned"
REASON_MODEL_CODE = "model_code_missing"


@dataclass(frozen=True)
class BundleContent:
    """Everything one published version holds: ``files`` (relpath -> bytes) includes ``manifest.json``."""

    task_id: str
    files: dict[str, bytes]
    manifest: Manifest


def json_bytes(doc: BaseModel) -> bytes:
    """The one serialisation of every bundle JSON: sorted keys, indent 2, trailing newline, valid UTF-8.

    Non-finite floats are null (never a bare ``NaN``); lone surrogates are the literal text ``\\ud800``.
    """
    text = json.dumps(jsonable(doc), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entries(files: Mapping[str, bytes]) -> dict[str, FileEntry]:
    """relpath -> (sha256, size) of every file but the manifest (which cannot list its own hash)."""
    return {
        rel: FileEntry(sha256=sha256_hex(data), size=len(data))
        for rel, data in sorted(files.items())
        if rel != MANIFEST
    }


def content_hash(entries: Mapping[str, FileEntry]) -> str:
    """sha256 over the sorted ``relpath<TAB>sha256<LF>`` lines of every file but ``manifest.json``."""
    digest = hashlib.sha256()
    for rel in sorted(entries):
        if rel != MANIFEST:
            digest.update(f"{rel}\t{entries[rel].sha256}\n".encode())
    return digest.hexdigest()


def needs_model_py(model: ModelExport | None) -> bool:
    """A torch network defined by the run's own ``model.py`` (qlib imports it as module ``model``)."""
    network = model.introspection.network_class if model is not None else None
    return network is not None and network.split(".", 1)[0] == "model"


def readiness(
    *,
    weight: ModelWeight | None,
    model: ModelExport | None,
    anchor: SotaFactorExperiment,
    factor_code: FactorCodeSet,
    factor_order: FactorOrder,
    report: ExtractReport,
) -> list[str]:
    """Each gap that keeps the bundle from ``selection_ready`` (empty list = ready), as ``code: why``."""
    reasons = list(report.not_ready)
    if weight is None:
        why = report.weight_error.message if report.weight_error else "no model weight in the anchor experiment"
        reasons.append(f"{REASON_WEIGHTS}: {why}")
    if factor_code.index.incomplete:
        reasons.append(f"{REASON_FACTOR_CODE}: {'; '.join(factor_code.index.incomplete)}")
    if not factor_order.is_aligned or not factor_order.model_input_order:
        reasons.append(f"{REASON_ORDER}: {factor_order.alignment_reason or 'model_input_order unresolved'}")
    model_py, why = _model_py(anchor)
    if needs_model_py(model) and model_py is None:
        network = model.introspection.network_class if model is not None else None
        reasons.append(f"{REASON_MODEL_CODE}: the network {network} is defined by the run's model.py: {why}")
    return reasons


def _model_py(anchor: SotaFactorExperiment) -> tuple[str | None, str | None]:
    """The run's model.py when it can be published as UTF-8, else ``None`` and why not."""
    return publishable_code(anchor.model_py, anchor.model_py_problem or "no model.py in the session")


def config_relpath(config_name: str) -> str:
    """Where the executed config's YAML text is published (its name is one of the runner's fixed config names)."""
    return f"{CONFIG_DIR}/{config_name}"


def _executed_config(anchor: SotaFactorExperiment, factor_order: FactorOrder) -> tuple[str, bytes] | None:
    """(relpath, UTF-8 bytes) of the config qrun ran, exactly as the session holds it (Jinja and all), if known."""
    name = factor_order.config_name
    text = anchor.experiment_workspace_yaml.get(name) if name is not None else None
    code = publishable_code(text, "no config text")[0]
    if name is None or code is None:
        return None
    return config_relpath(name), code.encode("utf-8")


def selection_factor_order(
    factor_order: FactorOrder, *, selection: SnapshotSelection, anchor: SotaFactorExperiment
) -> FactorOrder:
    """``factor_order`` with the selection system's names filled in beside ours (same values, see the contract)."""
    source = factor_order.dynamic_source
    return factor_order.model_copy(
        update={
            "factor_order": factor_order.model_input_order,
            "dynamic_factor_count": factor_order.dynamic_count,
            "source_file": PurePath(source).name if source else None,
            "task_run_id": anchor.task_run_id,
            "loop_id": selection.chosen_loop_idx,
        }
    )


def primary_assets(files: Mapping[str, bytes], weight_key: str | None, config: str | None) -> PrimaryAssets:
    """Every role's relpath (None when absent), then the same under the selection system's ``*_relpath`` keys."""

    def present(relpath: str) -> str | None:
        return relpath if relpath in files else None

    ours: dict[str, str | None] = {
        "model_weight": weight_key,
        "model_txt": present(MODEL_TXT),
        "model_safetensors": present(MODEL_SAFETENSORS),
        "model_py": present(MODEL_PY),
        "sota_factors": SOTA_FACTORS,
        "factor_order": FACTOR_ORDER,
        "model_meta": MODEL_META,
        "factor_entry": present(FACTOR_ENTRY),
        "extract_report": EXTRACT_REPORT,
    }
    theirs = {key: ours[role] if role is not None else None for key, role in SELECTION_RELPATH_ROLES.items()}
    theirs["config_relpath"] = config
    return PrimaryAssets(**ours, **theirs)  # type: ignore[typeddict-item]


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _put(files: dict[str, bytes], relpath: str, data: bytes) -> None:
    if relpath in files:
        raise BundleStoreError(f"two bundle files claim the relpath {relpath!r}", path=relpath)
    files[relpath] = data


def assemble_bundle(
    *,
    selection: SnapshotSelection,
    anchor: SotaFactorExperiment,
    weight: ModelWeight | None,
    model: ModelExport | None,
    factor_order: FactorOrder,
    factor_code: FactorCodeSet,
    model_meta: ModelMeta,
    report: ExtractReport,
    generated_at_utc: str | None = None,
) -> BundleContent:
    """Every bundle file and the manifest describing them; ``selection_ready`` and ``reasons`` decided here."""
    files: dict[str, bytes] = {}
    weight_key = weight.info.resolved_model_weight_key if weight else None
    if weight is not None:
        _put(files, weight.info.resolved_model_weight_key, weight.data)
    model_txt = model.model_txt if model is not None else None
    if model_txt is not None:
        _put(files, MODEL_TXT, model_txt.encode("utf-8"))
    if model is not None and model.safetensors is not None:
        _put(files, MODEL_SAFETENSORS, model.safetensors)
    model_py = _model_py(anchor)[0]
    if needs_model_py(model) and model_py is not None:
        _put(files, MODEL_PY, model_py.encode("utf-8"))
    code_relpaths = {f.name: f.relpath for f in factor_code.index.files if f.relpath in factor_code.files}
    sota = SotaFactorsDoc(
        task_id=anchor.task_id,
        last_sota_factor_index=anchor.last_sota_factor_index,
        factors=[f.model_copy(update={"code": None}) for f in anchor.sota_factors],
        code_relpaths=code_relpaths,
    )
    _put(files, SOTA_FACTORS, json_bytes(sota))
    _put(files, FACTOR_ORDER, json_bytes(selection_factor_order(factor_order, selection=selection, anchor=anchor)))
    config = _executed_config(anchor, factor_order)
    if config is not None:
        _put(files, *config)
    _put(files, MODEL_META, json_bytes(model_meta))
    _put(files, EXTRACT_REPORT, json_bytes(report.model_copy(update={"run": None})))
    for relpath, data in sorted(factor_code.files.items()):
        _put(files, relpath, data)

    reasons = readiness(
        weight=weight, model=model, anchor=anchor, factor_code=factor_code, factor_order=factor_order, report=report
    )
    entries = file_entries(files)
    index = factor_code.index
    manifest = Manifest(
        task_id=anchor.task_id,
        task_run_id=anchor.task_run_id,
        generated_at_utc=generated_at_utc or _utc_now(),
        tool_version=__version__,
        content_hash=content_hash(entries),
        session_anchor=SessionAnchor(
            chosen_session_file=selection.chosen_snapshot,
            source_session_dir_id=str(selection.chosen_loop_idx),
            loop_idx=selection.chosen_loop_idx,
            step_idx=selection.chosen_step_idx,
            hist_len=selection.hist_len,
            tie_rule=selection.tie_rule,
            tied_snapshots=selection.tied_snapshots,
            candidates=selection.candidates,
        ),
        sota_factor_anchor=SotaFactorAnchor(
            last_sota_factor_index=anchor.last_sota_factor_index,
            anchor_class_path=anchor.anchor_class_path,
            resolved_model_weight_key=weight_key,
            resolved_model_weight_source=weight.info.resolved_model_weight_source if weight else None,
            resolved_factor_entry_key=index.resolved_factor_entry_key,
            factor_file_dict_keys=index.factor_file_dict_keys,
            based_factor_entries=index.based_factor_entries,
        ),
        loop_id=selection.chosen_loop_idx,
        primary_assets=primary_assets(files, weight_key, config[0] if config is not None else None),
        files=entries,
        selection_ready=not reasons,
        reasons=reasons,
        warnings=report.warnings,
        extract_run=report.run,
    )
    files[MANIFEST] = json_bytes(manifest)
    # read back, so the manifest in hand is exactly what consumers read (escaped text included)
    return BundleContent(task_id=anchor.task_id, files=files, manifest=Manifest.model_validate_json(files[MANIFEST]))
