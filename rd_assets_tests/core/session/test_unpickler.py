"""What the restricted unpickler must still read: data of every protocol, numpy arrays, stand-ins, both file
formats, pandas metrics of old and new pandas; and how it fails on broken files (typed, never a crash)."""

from __future__ import annotations

import collections
import datetime
import decimal
import pickle
import types
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rd_assets.core.errors import (
    SignatureMismatchError,
    UnreadableSnapshotError,
    UnsafePickleError,
    UnsignedSnapshotError,
)
from rd_assets.core.session.file_format import SIGNED_HEADER_LEN, FileFormat, SignatureStatus, load_session_file
from rd_assets.core.session.standins import StandIn, Subscripted, class_name, class_path
from rd_assets.core.session.unpickler import safe_loads
from rd_assets.core.trace.experiments import attr, hist_of
from rd_assets.core.trace.metrics import metrics_dict
from rd_assets_tests.conftest import PLAIN_TASK, SAMPLE_LOGS, SIGNED_TASK, expected_for
from rd_assets_tests.rdagent_fixtures import FEEDBACK, genuine_modules, make, pickled_path

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)
SIGNED_KEY: str = expected_for(SIGNED_TASK)["signing_key"]
SIGNED_FILE = SAMPLE_LOGS / SIGNED_TASK / "__session__" / "0" / "0_direct_exp_gen"
PLAIN_FILE = SAMPLE_LOGS / PLAIN_TASK / expected_for(PLAIN_TASK)["chosen_snapshot_relpath"]

DATA: dict[str, Any] = {
    "containers": {"a": [1, (2, 3.5), {4, 5}, frozenset({6})], 7: None, "big": 2**100, "c": 1 + 2j},
    "bytes": [b"\x00\xff" * 10, bytearray(b"\x01\x02"), "text \u00e9"],
    "slices": [slice(1, 9, 2), range(3, 30, 3), True, False],
    "collections": [
        collections.OrderedDict(b=1, a=2),
        collections.defaultdict(list, {"x": [1]}),
        collections.deque([1, 2], maxlen=5),
        collections.Counter("abracadabra"),
    ],
    "time": [
        datetime.datetime(2026, 3, 2, 9, 15, 27, 118204, tzinfo=datetime.timezone(datetime.timedelta(hours=8), "CST")),
        datetime.date(2026, 3, 2),
        datetime.time(9, 15),
        datetime.timedelta(days=1, seconds=5),
    ],
    "numbers": [decimal.Decimal("3.14159"), uuid.UUID("12345678-1234-5678-1234-567812345678")],
    "namespace": types.SimpleNamespace(a=1, b=[2]),
    "generic": [list[int], dict[str, list[int]]],
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("key", sorted(DATA))
def test_plain_data_round_trips_in_every_protocol(protocol: int, key: str) -> None:
    assert safe_loads(pickle.dumps(DATA[key], protocol=protocol)) == DATA[key]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paths_become_pure_paths_of_their_flavour(protocol: int) -> None:
    with genuine_modules():
        data = pickle.dumps(
            [pickled_path(PurePosixPath("/mnt/f/ws/abc")), pickled_path(PureWindowsPath("F:/Dev/ws"))], protocol
        )
    posix, windows = safe_loads(data)
    assert type(posix) is PurePosixPath and str(posix) == "/mnt/f/ws/abc"
    assert type(windows) is PureWindowsPath and str(windows) == "F:\\Dev\\ws"
    assert not hasattr(posix, "write_text")


ARRAYS: dict[str, Any] = {
    "int": np.arange(7, dtype=np.int64),
    "float-2d-fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "object": np.array(["a", None, 3], dtype=object),
    "structured": np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", ">f8")]),
    "datetime64": np.array(["2024-01-02", "2024-01-03"], dtype="M8[ns]"),
    "subarray": np.zeros(2, dtype=("f4", (2, 2))),
    "unicode": np.array(["xy", "z"]),
    "bool": np.array([True, False]),
    "empty": np.zeros((0, 3)),
    "transposed-3d": np.arange(24).reshape(2, 3, 4).transpose(1, 0, 2),
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("key", sorted(ARRAYS))
def test_numpy_arrays_round_trip(protocol: int, key: str) -> None:
    original = ARRAYS[key]
    loaded = safe_loads(pickle.dumps(original, protocol=protocol))
    assert isinstance(loaded, np.ndarray)
    assert loaded.dtype == original.dtype and loaded.shape == original.shape
    assert loaded.tolist() == original.tolist()


@pytest.mark.parametrize("value", [np.float64(2.5), np.int32(-3), np.bool_(True), np.datetime64("2024-01-02")])
def test_numpy_scalars_round_trip(value: Any) -> None:
    loaded = safe_loads(pickle.dumps(value, protocol=4))
    assert loaded == value and type(loaded) is type(value)


def test_stand_ins_keep_class_path_and_every_piece_of_state() -> None:
    feedback = make(FEEDBACK, decision=True, reason="better IC")
    with genuine_modules():
        data = pickle.dumps({"fb": feedback}, protocol=4)
    loaded = safe_loads(data)["fb"]
    assert isinstance(loaded, StandIn)
    assert class_path(loaded) == FEEDBACK
    assert class_name(loaded) == "HypothesisFeedback"
    assert loaded.__dict__ == {"decision": True, "reason": "better IC"}
    assert class_path(object()) is None and class_name(3) is None


def _sg(module: str, name: str) -> bytes:
    return b"".join(b"X" + len(s).to_bytes(4, "little") + s.encode() for s in (module, name)) + pickle.STACK_GLOBAL


def test_stand_in_records_args_slots_items_and_generic_subscripts() -> None:
    trace = _sg("rdagent.core.proposal", "Trace")
    data = (
        b"\x80\x04"
        + trace
        + b"K\x01K\x02\x86R"  # Trace(1, 2)
        + b"}X\x01\x00\x00\x00aK\x01s}X\x01\x00\x00\x00bK\x02s\x86b"  # BUILD(({"a": 1}, {"b": 2}))
        + b"X\x01\x00\x00\x00kK\x03s"  # SETITEM
        + b"K\x04a"  # APPEND
        + _sg("_operator", "getitem")
        + trace
        + _sg("rdagent.core.scenario", "Scenario")
        + b"\x86R"  # operator.getitem(Trace, Scenario): Trace[Scenario]
        + b"\x86."
    )
    obj, alias = safe_loads(data)
    assert obj.__dict__ == {"_rd_args": (1, 2), "a": 1, "b": 2, "_rd_dictitems": {"k": 3}, "_rd_items": [4]}
    assert isinstance(alias, Subscripted) and alias.origin is type(obj)
    assert repr(obj) == "<stand-in rdagent.core.proposal.Trace>"
    with pytest.raises(TypeError):
        pickle.dumps(obj)


@pytest.mark.parametrize("rng", [np.random.RandomState(0), np.random.default_rng(0)])
def test_numpy_random_generators_are_recorded_not_built(rng: Any) -> None:
    loaded = safe_loads(pickle.dumps({"rng": rng}, protocol=4))["rng"]
    assert isinstance(loaded, StandIn)
    assert class_path(loaded).startswith("numpy.random._pickle.__")  # type: ignore[union-attr]


def test_main_module_loop_is_a_stand_in() -> None:
    data = b"\x80\x04" + _sg("__main__", "FactorRDLoop") + b")\x81."
    assert class_path(safe_loads(data)) == "__main__.FactorRDLoop"


def test_persistent_ids_are_refused() -> None:
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(b"Pnothing\n.")
    assert info.value.global_name == "persistent_load"


# ------------------------------------------------------------------------------------------ file formats


def test_signed_file_with_the_right_key_is_verified() -> None:
    loaded = load_session_file(SIGNED_FILE, signing_key=SIGNED_KEY)
    assert loaded.file_format is FileFormat.SIGNED
    assert loaded.signature is SignatureStatus.VERIFIED
    assert loaded.size == SIGNED_FILE.stat().st_size
    assert class_path(loaded.obj) == "rdagent.app.qlib_rd_loop.quant.QuantRDLoop"


def test_signed_file_without_a_key_is_read_but_not_verified() -> None:
    loaded = load_session_file(SIGNED_FILE)
    assert loaded.signature is SignatureStatus.NOT_VERIFIED
    assert loaded.signature.value == "signature not verified"


def test_signed_file_with_a_wrong_key_is_refused() -> None:
    with pytest.raises(SignatureMismatchError) as info:
        load_session_file(SIGNED_FILE, signing_key="wrong", display="0/0_direct_exp_gen")
    assert info.value.code == "signature_mismatch"
    assert info.value.path == "0/0_direct_exp_gen"


def test_tampered_signed_body_is_refused_with_the_key(tmp_path: Path) -> None:
    data = bytearray(SIGNED_FILE.read_bytes())
    data[-20] ^= 0x01
    path = tmp_path / "0_direct_exp_gen"
    path.write_bytes(bytes(data))
    with pytest.raises(SignatureMismatchError):
        load_session_file(path, signing_key=SIGNED_KEY)


def test_plain_file_reports_unsigned() -> None:
    loaded = load_session_file(PLAIN_FILE)
    assert (loaded.file_format, loaded.signature) == (FileFormat.PLAIN, SignatureStatus.UNSIGNED)
    assert len(hist_of(loaded.obj)) == expected_for(PLAIN_TASK)["hist_len"]


def test_plain_file_is_refused_when_a_key_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key means signed sessions are expected: a plain file is refused from its header unless opted out."""
    with pytest.raises(UnsignedSnapshotError, match="RD_ASSETS_ALLOW_UNSIGNED"):
        load_session_file(PLAIN_FILE, signing_key="configured")
    monkeypatch.setenv("RD_ASSETS_ALLOW_UNSIGNED", "1")
    loaded = load_session_file(PLAIN_FILE, signing_key="configured")
    assert loaded.signature == SignatureStatus.UNSIGNED


def _broken_files() -> dict[str, bytes]:
    signed = SIGNED_FILE.read_bytes()
    plain = PLAIN_FILE.read_bytes()
    return {
        "empty": b"",
        "garbage": b"this is not a pickle at all\n",
        "truncated-plain": plain[: len(plain) // 2],
        "truncated-in-a-bytes-opcode": b"\x80\x04B\x00\x00\x10\x00abc",
        "only-proto": b"\x80\x04",
        "truncated-signed-header": signed[: SIGNED_HEADER_LEN - 7],
        "signed-header-only": signed[:SIGNED_HEADER_LEN],
        "truncated-signed-body": signed[: SIGNED_HEADER_LEN + 100],
        "unknown-opcode": b"\x80\x04\xff.",
        "bad-memo-get": b"\x80\x04h\x05.",
    }


@pytest.mark.parametrize("name", sorted(_broken_files()))
def test_broken_files_are_unreadable_snapshots(tmp_path: Path, name: str) -> None:
    path = tmp_path / "3_feedback"
    path.write_bytes(_broken_files()[name])
    with pytest.raises(UnreadableSnapshotError) as info:
        load_session_file(path, display="__session__/0/3_feedback")
    assert info.value.code == "unreadable_snapshot"
    assert info.value.path == "__session__/0/3_feedback"


def test_missing_file_and_directory_are_unreadable(tmp_path: Path) -> None:
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises(UnreadableSnapshotError):
            load_session_file(path)


# ------------------------------------------------------------------------------------------ pandas metrics


def _experiment_results(loop: Any) -> list[Any]:
    results = []
    for exp, _ in hist_of(loop):
        running = attr(exp, "running_info")
        results.append(attr(running, "result") if running is not None else attr(exp, "result"))
    return [r for r in results if r is not None]


@pytest.mark.parametrize("task_id", [PLAIN_TASK, SIGNED_TASK])
def test_metrics_written_by_pandas_2_decode(task_id: str) -> None:
    exp = expected_for(task_id)
    key = SIGNED_KEY if task_id == SIGNED_TASK else None
    loop = load_session_file(SAMPLE_LOGS / task_id / exp["chosen_snapshot_relpath"], signing_key=key).obj
    results = _experiment_results(loop)
    assert results
    for result in results:
        metrics, reason = metrics_dict(result)
        assert reason is None and metrics
        assert all(isinstance(v, float | int) or v is None for v in metrics.values())
        assert "IC" in metrics


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_metrics_written_by_the_installed_pandas_decode(protocol: int) -> None:
    series = pd.Series({"IC": 0.031, "ICIR": 0.25, "1day.excess_return_with_cost.max_drawdown": -0.12})
    metrics, reason = metrics_dict(safe_loads(pickle.dumps(series, protocol=protocol)))
    assert reason is None
    assert metrics == {"IC": 0.031, "ICIR": 0.25, "1day.excess_return_with_cost.max_drawdown": -0.12}
