"""Asset values under the store: one file (or weight + sidecar) per asset and partition, atomic, exact."""

import hashlib
import json
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterType, build_input_context, build_output_context
from dagster._core.types.dagster_type import resolve_dagster_type

from rd_assets.core.artifacts.factor_code import FactorCodeSet
from rd_assets.core.artifacts.weights import ModelWeight
from rd_assets.core.contracts.artifact_models import FactorCodeFile, FactorCodeIndex, ModelWeightInfo
from rd_assets.core.contracts.models import ErrorInfo
from rd_assets.core.errors import InvalidLogDirError
from rd_assets.defs.io_managers import RdValueIOManager, StoredValueError
from rd_assets.defs.resources import BundleStore

TASK = "2026-01-09_16-11-14-215581"


@pytest.fixture
def manager(tmp_path: Path) -> RdValueIOManager:
    return RdValueIOManager(bundle_store=BundleStore(store_dir=str(tmp_path / "store")))


def _write(manager: RdValueIOManager, asset: str, value: object, task: str = TASK) -> None:
    manager.handle_output(build_output_context(asset_key=AssetKey(asset), partition_key=task), value)


def _read(manager: RdValueIOManager, asset: str, typ: type, task: str = TASK) -> object:
    dagster_type: DagsterType = resolve_dagster_type(typ)
    ctx = build_input_context(asset_key=AssetKey(asset), partition_key=task, dagster_type=dagster_type)
    return manager.load_input(ctx)


def _weight(data: bytes) -> ModelWeight:
    info = ModelWeightInfo(
        resolved_model_weight_key="params.pkl",
        hist_index=3,
        sub_workspace_index=0,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        location="trace.hist[3][0].sub_workspace_list[0].file_dict['params.pkl']",
    )
    return ModelWeight(info=info, data=data)


def test_pydantic_value_round_trips_as_its_own_json(manager: RdValueIOManager, tmp_path: Path) -> None:
    value = ErrorInfo(code="x", message="y", path=None)
    _write(manager, "some_asset", value)
    path = tmp_path / "store" / ".dagster_io" / "some_asset" / f"{TASK}.json"
    assert json.loads(path.read_text()) == value.model_dump()
    assert _read(manager, "some_asset", ErrorInfo) == value
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_weight_is_raw_bytes_plus_info_sidecar(manager: RdValueIOManager, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    _write(manager, "model_weight", _weight(data))
    base = tmp_path / "store" / ".dagster_io" / "model_weight" / TASK
    assert base.with_suffix(".bin").read_bytes() == data
    assert ModelWeightInfo.model_validate_json(base.with_suffix(".json").read_bytes()).size == len(data)
    loaded = _read(manager, "model_weight", ModelWeight)
    assert loaded == _weight(data)


def test_a_torn_weight_is_refused(manager: RdValueIOManager, tmp_path: Path) -> None:
    _write(manager, "model_weight", _weight(b"A" * 100))
    (tmp_path / "store" / ".dagster_io" / "model_weight" / f"{TASK}.bin").write_bytes(b"B" * 100)
    with pytest.raises(StoredValueError, match="sha256"):
        _read(manager, "model_weight", ModelWeight)


def test_factor_code_bytes_survive_exactly(manager: RdValueIOManager) -> None:
    files = {"factors/A.py": "def calculate_A():\n    return 'é'\n".encode(), "factor_entry.py": b"\x00\xff raw"}
    index = FactorCodeIndex(
        files=[
            FactorCodeFile(
                name="A", relpath="factors/A.py", file_dict_key="factor.py", sha256=None, defines_function=True
            )
        ],
        resolved_factor_entry_key="factor.py",
        factor_file_dict_keys=["factor.py"],
        based_factor_entries=[],
        incomplete=[],
    )
    _write(manager, "factor_code", FactorCodeSet(index=index, files=files))
    loaded = _read(manager, "factor_code", FactorCodeSet)
    assert loaded == FactorCodeSet(index=index, files=files)


def test_replacing_a_value_is_atomic_and_complete(manager: RdValueIOManager, tmp_path: Path) -> None:
    _write(manager, "a", ErrorInfo(code="old", message="1"))
    _write(manager, "a", ErrorInfo(code="new", message="2"))
    assert _read(manager, "a", ErrorInfo) == ErrorInfo(code="new", message="2")
    assert len(list((tmp_path / "store" / ".dagster_io" / "a").iterdir())) == 1


def test_missing_value_and_unknown_types_fail_loudly(manager: RdValueIOManager) -> None:
    with pytest.raises(StoredValueError, match="materialize it"):
        _read(manager, "never_written", ErrorInfo)
    with pytest.raises(StoredValueError, match="no file form"):
        _write(manager, "a", {"plain": "dict"})
    _write(manager, "a", ErrorInfo(code="c", message="m"))
    with pytest.raises(StoredValueError, match="annotate"):
        _read(manager, "a", dict)


def test_partition_keys_that_are_not_task_ids_never_reach_the_filesystem(manager: RdValueIOManager) -> None:
    with pytest.raises(InvalidLogDirError):
        _write(manager, "a", ErrorInfo(code="c", message="m"), task="../../etc")
