"""JSON Schemas of every document rd-assets writes or prints, as published under ``schemas/``.

Consumers validate bundles against these files without Python; a test keeps the committed files equal to
a fresh export, so a contract change cannot ship without its schema.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from rd_assets.core.contracts.artifact_models import FactorOrder, ModelMeta
from rd_assets.core.contracts.bundle_models import ExtractReport, ExtractResult, Manifest, SotaFactorsDoc, VerifyReport
from rd_assets.core.contracts.consumer_models import FactorComputeReport, PullResult, ScoreResult
from rd_assets.core.contracts.models import InspectResult, SnapshotSelection, SotaFactorExperiment
from rd_assets.core.contracts.status_models import TaskFailure

SCHEMA_SUFFIX = ".schema.json"

DOCUMENT_MODELS: tuple[type[BaseModel], ...] = (
    Manifest,
    SotaFactorsDoc,
    FactorOrder,
    ModelMeta,
    ExtractReport,
    ExtractResult,
    VerifyReport,
    SnapshotSelection,
    SotaFactorExperiment,
    InspectResult,
    TaskFailure,
    PullResult,
    FactorComputeReport,
    ScoreResult,
)


def schema_bytes(model: type[BaseModel]) -> bytes:
    """The schema of one model, serialised the same way every time (sorted keys, indent 2, newline)."""
    schema = model.model_json_schema(mode="serialization")
    return (json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def schema_files() -> dict[str, bytes]:
    """``<Model>.schema.json`` -> bytes for every document model."""
    return {f"{model.__name__}{SCHEMA_SUFFIX}": schema_bytes(model) for model in DOCUMENT_MODELS}


def export_schemas(out: Path) -> list[Path]:
    """Write every schema into ``out`` and remove schema files of models that no longer exist."""
    out.mkdir(parents=True, exist_ok=True)
    files = schema_files()
    for stale in out.glob(f"*{SCHEMA_SUFFIX}"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, data in files.items():
        path = out / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written
