"""``load_bundle(path)``: a verified bundle with its documents, its factor order and its model, ready to score.

The bundle is checked first with :func:`rd_assets.core.bundle.verify.verify_bundle` (every file re-hashed, every
document validated, the order re-derived, ``model.txt`` loaded in the isolated reader); any problem is a
:class:`BundleIntegrityError`. Every file read afterwards is read from that one version directory and re-hashed
against the manifest, so a file swapped after verification is refused too. The model is built on first use (a
torch network needs ``trust_model_code=True``), so a bundle can be inspected, and its factors computed, without it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pandas as pd
from pydantic import BaseModel

from rd_assets.consumer.features import model_input
from rd_assets.consumer.nan_policy import nan_policy
from rd_assets.consumer.predictors import Predictor, lightgbm_predictor, torch_predictor
from rd_assets.consumer.ranking import ranked
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.artifact_models import FactorOrder, ModelMeta
from rd_assets.core.contracts.bundle_models import (
    FACTOR_ORDER,
    MANIFEST,
    MODEL_META,
    MODEL_PY,
    MODEL_SAFETENSORS,
    MODEL_TXT,
    SOTA_FACTORS,
    Manifest,
    SotaFactorsDoc,
    VerifyReport,
)
from rd_assets.core.contracts.consumer_models import NanPolicy, ScoreResult, ScoreRow
from rd_assets.core.contracts.models import FactorRecord
from rd_assets.core.errors import BundleIntegrityError, BundleNotReadyError, ModelLoadError

if TYPE_CHECKING:
    import numpy as np

_Doc = TypeVar("_Doc", bound=BaseModel)


@dataclass(frozen=True)
class Scores:
    """Ranked scores of one feature frame and how the frame was read."""

    frame: pd.DataFrame
    """``score`` and ``rank`` per (datetime, instrument), by date then rank (see :mod:`rd_assets.consumer.ranking`)."""
    ignored_columns: list[str]
    nan_policy: NanPolicy
    model_kind: str
    rows: int
    unscored: int


class Bundle:
    """One verified bundle version. Build it with :func:`load_bundle`."""

    def __init__(self, path: Path, report: VerifyReport, *, trust_model_code: bool) -> None:
        if report.version_dir is None:
            raise BundleIntegrityError("verify resolved no version directory", path=str(path))
        self.path = path
        self.version_dir = Path(report.version_dir)
        self.verify_report = report
        self.trust_model_code = trust_model_code
        self.manifest = Manifest.model_validate_json(self.read_bytes(MANIFEST, check=False))
        if self.manifest.content_hash != report.content_hash:
            raise BundleIntegrityError("the manifest changed after verification", path=str(self.version_dir))
        self.factor_order: FactorOrder = self._document(FACTOR_ORDER, FactorOrder)
        self.sota_factors: SotaFactorsDoc = self._document(SOTA_FACTORS, SotaFactorsDoc)
        self.model_meta: ModelMeta = self._document(MODEL_META, ModelMeta)

    def read_bytes(self, relpath: str, *, check: bool = True) -> bytes:
        """A file of this version, refused unless it still hashes to the manifest (``check=False``: the manifest)."""
        data = (self.version_dir / relpath).read_bytes()
        if check:
            entry = self.manifest.files.get(relpath)
            if entry is None or entry.size != len(data) or entry.sha256 != hashlib.sha256(data).hexdigest():
                where = str(self.version_dir / relpath)
                raise BundleIntegrityError("the file no longer matches the manifest", path=where)
        return data

    def _document(self, relpath: str, model: type[_Doc]) -> _Doc:
        return model.model_validate_json(self.read_bytes(relpath))

    @property
    def task_id(self) -> str:
        return self.manifest.task_id

    @property
    def model_input_order(self) -> list[str]:
        """The feature names in the order the model was trained on (verify refused the bundle if unresolved)."""
        order = self.factor_order.model_input_order
        if order is None:
            raise BundleNotReadyError("the bundle has no model_input_order", path=str(self.path))
        return order

    @property
    def factors(self) -> list[FactorRecord]:
        """The SOTA factors (name, formulation, metrics, code relpath in ``sota_factors.code_relpaths``)."""
        return self.sota_factors.factors

    @property
    def alpha158_factors(self) -> list[str]:
        return self.factor_order.alpha158_factors or []

    @property
    def dynamic_factors(self) -> list[str]:
        """The factor columns the model needs from factor code (``factors/<name>.py``)."""
        return self.factor_order.dynamic_factors or []

    def factor_code(self, name: str) -> tuple[str, bytes] | None:
        """(relpath, source) of the factor's published code, None when the bundle has none for it."""
        relpath = self.sota_factors.code_relpaths.get(name)
        return (relpath, self.read_bytes(relpath)) if relpath is not None else None

    @functools.cached_property
    def nan_policy(self) -> NanPolicy:
        return nan_policy(self.model_meta)

    @functools.cached_property
    def model(self) -> Predictor:
        """The model, built on first use: LightGBM from model.txt, torch from model.safetensors + model.py."""
        assets = self.manifest.primary_assets
        count = len(self.model_input_order)
        if assets.get("model_txt"):
            return lightgbm_predictor(self.read_bytes(MODEL_TXT), count)
        if assets.get("model_safetensors") and assets.get("model_py"):
            return torch_predictor(
                self.read_bytes(MODEL_SAFETENSORS), self.read_bytes(MODEL_PY),
                filename=str(self.version_dir / MODEL_PY), meta=self.model_meta, num_features=count,
                trust_model_code=self.trust_model_code,
            )  # fmt: skip
        weight = self.manifest.sota_factor_anchor.resolved_model_weight_key
        raise ModelLoadError(
            f"no model export in the bundle (weight {weight}): rd-assets exports LightGBM as {MODEL_TXT} and qlib "
            f"torch models as {MODEL_SAFETENSORS} + {MODEL_PY}",
            path=str(self.path),
        )

    def predict(self, features: pd.DataFrame) -> tuple[np.ndarray, pd.MultiIndex, list[str]]:
        """Raw scores of ``features`` (by name, NaN policy applied), their rows and the ignored columns."""
        model = self.model
        taken = model_input(features, self.model_input_order, self.nan_policy)
        return model.predict(taken.matrix), taken.index, taken.ignored_columns

    def score(self, features: pd.DataFrame, *, top_k: int | None = None, date: str | None = None) -> Scores:
        """Per-date ranked scores of ``features`` (alpha + dynamic columns by name, any order, extras ignored)."""
        scores, index, ignored = self.predict(features)
        frame = ranked(index, scores, top_k=top_k, date=date)
        return Scores(
            frame=frame, ignored_columns=ignored, nan_policy=self.nan_policy, model_kind=self.model.kind,
            rows=len(scores), unscored=int(pd.isna(scores).sum()),
        )  # fmt: skip

    def score_result(self, scores: Scores, *, top_k: int | None = None) -> ScoreResult:
        """The JSON document of ``scores`` (``rd-assets score --json``)."""
        flat = scores.frame.reset_index()
        columns = zip(flat["datetime"], flat["instrument"], flat["score"], flat["rank"], strict=True)
        rows = [
            ScoreRow(datetime=_date_text(d), instrument=str(i), score=None if pd.isna(s) else float(s), rank=_rank(r))
            for d, i, s, r in columns
        ]
        return ScoreResult(
            task_id=self.task_id, content_hash=self.manifest.content_hash, model_kind=scores.model_kind,
            model_input_order=self.model_input_order, ignored_columns=scores.ignored_columns,
            nan_policy=scores.nan_policy, rows=scores.rows, unscored=scores.unscored,
            dates=sorted({r.datetime for r in rows}), top_k=top_k, scores=rows,
        )  # fmt: skip


def _rank(value: object) -> int | None:
    return None if pd.isna(value) else int(value)  # type: ignore[call-overload]


def _date_text(value: object) -> str:
    return value.date().isoformat() if isinstance(value, pd.Timestamp) and value == value.normalize() else str(value)


def load_bundle(path: Path | str, *, trust_model_code: bool = False, allow_not_ready: bool = False) -> Bundle:
    """Verify and open the bundle at ``path`` (``<store>/<task_id>`` or a version directory).

    Refused: a bundle with any verify problem (:class:`BundleIntegrityError`), and one that is not
    ``selection_ready`` unless ``allow_not_ready`` (:class:`BundleNotReadyError` with its reasons).
    """
    path = Path(path)
    report = verify_bundle(path)
    if not report.ok:
        raise BundleIntegrityError(f"{len(report.problems)} problem(s): {'; '.join(report.problems)}", path=str(path))
    bundle = Bundle(path, report, trust_model_code=trust_model_code)
    if not bundle.manifest.selection_ready and not allow_not_ready:
        raise BundleNotReadyError(f"not selection_ready: {'; '.join(bundle.manifest.reasons)}", path=str(path))
    return bundle
