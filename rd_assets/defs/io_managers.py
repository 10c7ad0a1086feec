"""Keep each asset's value per partition under the bundle store, as files a person can open.

Layout: ``<store>/.dagster_io/<asset>/<task_id>.json`` (pydantic models, as their own JSON), plus
``<task_id>.bin`` beside the JSON for the model weight (raw bytes; the JSON is its ``ModelWeightInfo``).
Every file is replaced atomically. Values are written by their Python type and read back by the type the
consuming function annotates, so a value of an unexpected type fails loudly instead of being guessed.
"""

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import BaseModel, Field

from rd_assets.core.artifacts.factor_code import FactorCodeSet
from rd_assets.core.artifacts.weights import ModelWeight
from rd_assets.core.contracts.artifact_models import FactorCodeIndex, ModelWeightInfo
from rd_assets.core.contracts.models import Document
from rd_assets.core.errors import RdAssetsError
from rd_assets.defs.resources import BundleStore, task_path, write_atomic


class StoredValueError(RdAssetsError):
    """An asset value cannot be stored or loaded (missing, torn, or of a type with no file form)."""

    code = "stored_value"


class StoredFactorCodeSet(Document):
    """A :class:`FactorCodeSet` as JSON: the index plus every code file's exact bytes (base64)."""

    index: FactorCodeIndex
    files: dict[str, str] = Field(description="bundle relpath -> base64 of the exact file bytes")

    @classmethod
    def of(cls, code: FactorCodeSet) -> "StoredFactorCodeSet":
        return cls(index=code.index, files={k: base64.b64encode(v).decode("ascii") for k, v in code.files.items()})

    def value(self) -> FactorCodeSet:
        try:
            files = {k: base64.b64decode(v, validate=True) for k, v in self.files.items()}
        except binascii.Error as exc:
            raise StoredValueError(f"stored factor code is not valid base64: {exc}") from exc
        return FactorCodeSet(index=self.index, files=files)


def _json(model: BaseModel) -> bytes:
    return (model.model_dump_json(indent=2) + "\n").encode("utf-8")


class RdValueIOManager(ConfigurableIOManager):
    """Per-asset, per-partition files under the store; see the module docstring for the layout."""

    bundle_store: BundleStore

    def _base(self, context: InputContext | OutputContext) -> Path:
        key = context.asset_key
        if not context.has_asset_partitions:
            raise StoredValueError(f"asset {key.to_user_string()} is not partitioned by task id")
        task_id = context.asset_partition_key
        return task_path(self.bundle_store.io_dir.joinpath(*key.path), task_id)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        base = self._base(context)
        if isinstance(obj, ModelWeight):
            write_atomic(base.with_suffix(".bin"), obj.data)
            write_atomic(base.with_suffix(".json"), _json(obj.info))
        elif isinstance(obj, FactorCodeSet):
            write_atomic(base.with_suffix(".json"), _json(StoredFactorCodeSet.of(obj)))
        elif isinstance(obj, BaseModel):
            write_atomic(base.with_suffix(".json"), _json(obj))
        else:
            raise StoredValueError(f"no file form for a value of type {type(obj).__name__}", path=str(base))

    def load_input(self, context: InputContext) -> Any:
        base = self._base(context)
        wanted = context.dagster_type.typing_type
        path = base.with_suffix(".json")
        try:
            raw = path.read_bytes()
            if wanted is ModelWeight:
                info = ModelWeightInfo.model_validate_json(raw)
                data = base.with_suffix(".bin").read_bytes()
                if len(data) != info.size or hashlib.sha256(data).hexdigest() != info.sha256:
                    raise StoredValueError("stored weight bytes do not match their recorded sha256", path=str(base))
                return ModelWeight(info=info, data=data)
            if wanted is FactorCodeSet:
                return StoredFactorCodeSet.model_validate_json(raw).value()
        except FileNotFoundError as exc:
            raise StoredValueError(
                f"no stored value of {context.asset_key.to_user_string()}: materialize it for this partition first",
                path=str(exc.filename),
            ) from exc
        if isinstance(wanted, type) and issubclass(wanted, BaseModel):
            return wanted.model_validate_json(raw)
        raise StoredValueError(f"cannot load a value as {wanted!r}: annotate the input with its type", path=str(path))
