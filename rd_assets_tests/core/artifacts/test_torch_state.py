"""Torch weights read without torch, checked against real torch (in subprocesses) and against forged payloads.

Real torch only ever runs in a child interpreter: it unpickles the genuine sample, builds a qlib-shaped
``DNNModelPytorch`` fixture (legacy and zip storage payloads) and loads our ``model.safetensors`` into a
fresh ``model.Net``. Forged payloads are written opcode by opcode here, so no stored binary is trusted.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

from rd_assets.core.artifacts.model_introspection import introspect_model
from rd_assets.core.artifacts.torch_state import MAGIC_NUMBER, read_storage_payload, read_torch_state
from rd_assets.core.errors import TorchWeightError
from rd_assets.core.samples import SAMPLES_DIR
from rd_assets.core.session.unpickler import safe_loads

MODELS = SAMPLES_DIR / "models"
SAMPLE_WEIGHT = MODELS / "generalptnn_params.pkl"
TORCH_DTYPES = {
    "torch.float32": "F32",
    "torch.float64": "F64",
    "torch.float16": "F16",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.bool": "BOOL",
}

# ----------------------------------------------------------------------------------------------- real torch

TORCH_SCRIPT = r'''
import io, json, pickle, sys, types
from pathlib import Path

import numpy as np
import torch
from torch import nn

out, sample, exported, models_dir = (Path(a) for a in sys.argv[1:5])
result = {}


def stub(module_name, *class_names):
    """Throwaway qlib modules: only what pickle needs to name the classes."""
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
    home = sys.modules[module_name]
    for name in class_names:
        cls = type(name, (), {"__module__": module_name, "__qualname__": name})
        setattr(home, name, cls)
    return home


def dump_state(state, stem):
    np.savez(out / f"{stem}.npz", **{k: v.detach().numpy() for k, v in state.items()})
    return [[k, str(v.dtype), list(v.shape)] for k, v in state.items()]


# (A) the genuine GeneralPTNN sample, and our safetensors in a freshly built model.Net
stub("qlib.contrib.model.pytorch_general_nn", "GeneralPTNN")
stub("qlib.log", "QlibLogger")
sys.path.insert(0, str(models_dir))
wrapper = pickle.loads(sample.read_bytes())
net = wrapper.dnn_model
result["sample"] = dump_state(net.state_dict(), "sample")

import model
from safetensors.torch import load

fresh = model.Net(**wrapper.pt_model_kwargs)
fresh.load_state_dict(load(exported.read_bytes()), strict=True)
net.eval()
fresh.eval()
x = torch.randn(512, 23, generator=torch.Generator().manual_seed(7))
with torch.no_grad():
    expected, got = net(x), fresh(x)
result["outputs_equal"] = bool(torch.equal(expected, got))
result["max_abs_diff"] = float((expected - got).abs().max())

# (B) a qlib pytorch_nn.DNNModelPytorch fixture: BatchNorm buffers, a strided parameter, shared storage
home = stub("qlib.contrib.model.pytorch_nn")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(7, 5)
        self.bn = nn.BatchNorm1d(5)
        big = torch.randn(6, 10)
        self.proj = nn.Parameter(big[1:, 2:8].t())  # size (6, 5), stride (1, 10), offset 12 of 60
        self.register_parameter("unused", None)
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("steps", torch.arange(6, dtype=torch.int64)[2:5])
        self.register_buffer("scratch", torch.ones(3), persistent=False)
        self.seq = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 1).double())
        self.tied = self.fc


class DNNModelPytorch:
    pass


for cls in (Net, DNNModelPytorch):
    cls.__module__ = home.__name__
    cls.__qualname__ = cls.__name__
    setattr(home, cls.__name__, cls)

dnn = Net()
dnn.train()
for _ in range(2):  # real running statistics and num_batches_tracked == 2
    dnn.bn(torch.randn(16, 5))
dnn.eval()
wrapper = DNNModelPytorch()
wrapper.__dict__.update(
    lr=0.002,
    n_epochs=3,
    pt_model_uri="qlib.contrib.model.pytorch_nn.Net",
    pt_model_kwargs={"input_dim": 7, "layers": (5,)},
    device=torch.device("cpu"),
    fitted=True,
    dnn_model=dnn,
)
(out / "dnn_legacy.pkl").write_bytes(pickle.dumps(wrapper, protocol=4))
state = dnn.state_dict()
result["dnn"] = dump_state(state, "dnn")


def zip_reduce(self):
    buf = io.BytesIO()
    torch.save(self, buf, _use_new_zipfile_serialization=True)
    return (torch.storage._load_from_bytes, (buf.getvalue(),))


torch.storage.TypedStorage.__reduce__ = zip_reduce
zipped = pickle.dumps(wrapper, protocol=4)
(out / "dnn_zip.pkl").write_bytes(zipped)
reloaded = pickle.loads(zipped).dnn_model.state_dict()
result["zip_reloads_equal"] = list(reloaded) == list(state) and all(torch.equal(reloaded[k], state[k]) for k in state)
print(json.dumps(result))
'''


@pytest.fixture(scope="module")
def torch_truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Run real torch once in a clean child interpreter; return its output dir and findings."""
    out = tmp_path_factory.mktemp("torch-truth")
    export = introspect_model(SAMPLE_WEIGHT.read_bytes())
    assert export.safetensors is not None
    exported = out / "model.safetensors"
    exported.write_bytes(export.safetensors)
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_SCRIPT, str(out), str(SAMPLE_WEIGHT), str(exported), str(MODELS)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def assert_matches_torch(data: bytes, spec: list[list[Any]], reference: Path) -> None:
    """Our state equals torch's ``state_dict()``: names, order, dtypes, shapes and every value."""
    state = read_torch_state(safe_loads(data))
    assert state is not None
    assert [[t.name, t.dtype, list(t.shape)] for t in state.tensors] == [[k, TORCH_DTYPES[d], s] for k, d, s in spec]
    with np.load(reference) as ref:
        assert list(state.arrays) == [k for k, _, _ in spec]
        for name, array in state.arrays.items():
            assert array.dtype == ref[name].dtype, name
            np.testing.assert_array_equal(array, ref[name], err_msg=name)
            assert array.flags.c_contiguous and array.flags.owndata


def test_sample_generalptnn_is_read_as_torch() -> None:
    export = introspect_model(SAMPLE_WEIGHT.read_bytes())
    info = export.introspection
    assert info.kind == "torch"
    assert info.class_path == "qlib.contrib.model.pytorch_general_nn.GeneralPTNN"
    assert info.network_class == "model.Net"
    assert info.feature_count == 23
    assert info.feature_count_reason is None
    assert info.first_layer_key == "input_layer.weight"
    assert info.first_layer_shape == [64, 23]
    assert info.wrapper_kwargs is not None
    assert info.wrapper_kwargs["pt_model_kwargs"] == {"num_features": 23}
    assert info.wrapper_kwargs["pt_model_uri"] == "model.model_cls"
    assert info.wrapper_kwargs["n_epochs"] == 100
    assert "dnn_model" not in info.wrapper_kwargs and "device" not in info.wrapper_kwargs
    assert export.model_txt is None
    assert export.safetensors is not None
    loaded = load_safetensors(export.safetensors)
    assert {k: [str(v.dtype), list(v.shape)] for k, v in loaded.items()} == {
        t.name: ["float32", t.shape] for t in info.tensors or []
    }


def test_safetensors_export_is_byte_identical_run_to_run() -> None:
    """Bundles are content-addressed: safetensors' own header puts ``__metadata__`` in hash order."""
    data = SAMPLE_WEIGHT.read_bytes()
    exports = [introspect_model(data) for _ in range(6)]
    assert len({e.safetensors for e in exports}) == 1
    assert len({e.introspection.safetensors_sha256 for e in exports}) == 1


def test_sample_state_equals_torch_and_safetensors_predict_identically(
    torch_truth: tuple[Path, dict[str, Any]],
) -> None:
    out, truth = torch_truth
    assert_matches_torch(SAMPLE_WEIGHT.read_bytes(), truth["sample"], out / "sample.npz")
    assert truth["outputs_equal"], truth["max_abs_diff"]
    assert truth["max_abs_diff"] == 0.0


def test_dnn_fixture_legacy_and_zip_payloads_equal_torch_state(torch_truth: tuple[Path, dict[str, Any]]) -> None:
    out, truth = torch_truth
    assert truth["zip_reloads_equal"]
    names = [k for k, _, _ in truth["dnn"]]
    assert names[:3] == ["proj", "mask", "steps"] and "scratch" not in names and "unused" not in names
    assert "bn.num_batches_tracked" in names and "tied.weight" in names
    legacy = (out / "dnn_legacy.pkl").read_bytes()
    zipped = (out / "dnn_zip.pkl").read_bytes()
    for data in (legacy, zipped):
        assert_matches_torch(data, truth["dnn"], out / "dnn.npz")

    proj = safe_loads(legacy).dnn_model._parameters["proj"]._rd_args[0]._rd_args  # the fixture is really strided
    assert proj[1:4] == (12, (6, 5), (1, 10))
    state = read_torch_state(safe_loads(legacy))
    assert state is not None
    assert state.arrays["bn.num_batches_tracked"].dtype == np.int64
    assert int(state.arrays["bn.num_batches_tracked"]) == 2
    assert state.first_layer_key == "fc.weight" and state.feature_count == 7
    assert state.wrapper_class == "qlib.contrib.model.pytorch_nn.DNNModelPytorch"
    assert state.network_class == "qlib.contrib.model.pytorch_nn.Net"
    assert state.wrapper_kwargs == {
        "lr": 0.002,
        "n_epochs": 3,
        "pt_model_uri": "qlib.contrib.model.pytorch_nn.Net",
        "pt_model_kwargs": {"input_dim": 7, "layers": [5]},
        "fitted": True,
    }
    export = introspect_model(zipped)
    assert export.introspection.kind == "torch" and export.safetensors is not None
    loaded = load_safetensors(export.safetensors)
    assert set(loaded) == set(state.arrays)
    for name, array in state.arrays.items():
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
        assert loaded[name].dtype == array.dtype


def test_sample_introspection_imports_no_torch() -> None:
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from rd_assets.core.artifacts.model_introspection import introspect_model\n"
        f"assert introspect_model(Path({str(SAMPLE_WEIGHT)!r}).read_bytes()).introspection.feature_count == 23\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'qlib', 'lightgbm')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------------- forged input


class _Global:
    """A global written by name (``GLOBAL module name``) without importing it: torch is never loaded here."""

    def __init__(self, path: str) -> None:
        self.module, _, self.name = path.rpartition(".")

    def __call__(self, *args: Any) -> Any:
        raise AssertionError("only ever pickled")


class _Call:
    """Pickles as ``path(*args)`` followed by ``BUILD state`` when a state is given."""

    def __init__(self, path: str, *args: Any, state: Any = None) -> None:
        self.path, self.args, self.state = path, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Global(self.path), self.args) if self.state is None else (_Global(self.path), self.args, self.state)


class _NamePickler(pickle._Pickler):  # type: ignore[misc,name-defined]
    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)


def fake_dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _NamePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


FLOAT_STORAGE = b"ctorch\nFloatStorage\n"


def pid_record(*item_ops: bytes) -> bytes:
    """A protocol-2 record whose root is ``BINPERSID`` of a tuple of the given items."""
    return b"\x80\x02(" + b"".join(item_ops) + b"tQ."


def legacy_pid(numel: int, storage: bytes = FLOAT_STORAGE) -> bytes:
    return pid_record(_str("storage"), storage, _str("0"), _str("cpu"), _int(numel), b"N")


def legacy_payload(
    values: Any,
    *,
    numel: int | None = None,
    root: bytes | None = None,
    keys: Any = ("0",),
    count: int | None = None,
    little_endian: bool = True,
    magic: int = MAGIC_NUMBER,
) -> bytes:
    """torch's legacy ``torch.save`` of one float32 storage, every part overridable."""
    raw = np.asarray(values, dtype="<f4").tobytes()
    numel = len(raw) // 4 if numel is None else numel
    sys_info = {"protocol_version": 1001, "little_endian": little_endian, "type_sizes": {"short": 2, "int": 4}}
    return b"".join(
        [
            pickle.dumps(magic, protocol=2),
            pickle.dumps(1001, protocol=2),
            pickle.dumps(sys_info, protocol=2),
            legacy_pid(numel) if root is None else root,
            pickle.dumps(list(keys), protocol=2),
            struct.pack("<q", numel if count is None else count),
            raw,
        ]
    )


def zip_payload(values: Any, *, root: bytes | None = None, data_name: str | None = "archive/data/0") -> bytes:
    raw = np.asarray(values, dtype="<f4").tobytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(
            "archive/data.pkl",
            root or pid_record(_str("storage"), FLOAT_STORAGE, _str("0"), _str("cpu"), _int(len(raw) // 4)),
        )
        zf.writestr("archive/byteorder", "little")
        if data_name is not None:
            zf.writestr(data_name, raw)
    return buf.getvalue()


def tensor(payload: Any, offset: Any = 0, size: Any = (2, 3), stride: Any = (3, 1), *extra: Any) -> _Call:
    storage = _Call("torch.storage._load_from_bytes", payload)
    return _Call(
        "torch._utils._rebuild_tensor_v2", storage, offset, size, stride, False, collections.OrderedDict(), *extra
    )


def parameter(value: _Call) -> _Call:
    return _Call("torch._utils._rebuild_parameter", value, True, collections.OrderedDict())


def module(path: str, params: dict[str, Any] | None = None, children: dict[str, Any] | None = None) -> _Call:
    state = {
        "training": False,
        "_parameters": params or {},
        "_buffers": {},
        "_non_persistent_buffers_set": set(),
        "_modules": children or {},
    }
    return _Call(path, state=state)


def weight_pickle(weight: Any, bias: Any = None) -> bytes:
    """``GeneralPTNN(dnn_model=model.Net(input_layer=Linear(weight, bias)))`` as the restricted unpickler sees it."""
    linear = module("torch.nn.modules.linear.Linear", {"weight": weight, "bias": bias})
    net = module("model.Net", children={"input_layer": linear})
    return fake_dumps(_Call("qlib.contrib.model.pytorch_general_nn.GeneralPTNN", state={"dnn_model": net, "lr": 0.1}))


def cyclic_network() -> bytes:
    net = module("model.Net")
    net.state["_modules"]["again"] = net
    return fake_dumps(_Call("qlib.contrib.model.pytorch_general_nn.GeneralPTNN", state={"dnn_model": net}))


SIX = np.arange(6, dtype=np.float32)


def test_handmade_legacy_and_zip_payloads_are_read() -> None:
    """The forged cases below differ from these working payloads in exactly one point."""
    for payload in (legacy_payload(SIX), zip_payload(SIX)):
        np.testing.assert_array_equal(read_storage_payload(payload), SIX)
        transposed = parameter(tensor(payload, 1, (2, 2), (1, 3)))  # a strided view with an offset
        state = read_torch_state(safe_loads(weight_pickle(transposed, tensor(payload, 0, (2,), (1,)))))
        assert state is not None
        np.testing.assert_array_equal(state.arrays["input_layer.weight"], [[1, 4], [2, 5]])
        assert state.feature_count == 2 and state.first_layer_key == "input_layer.weight"
        assert [t.name for t in state.tensors] == ["input_layer.weight", "input_layer.bias"]


def _hostile_root(canary: Path) -> bytes:
    return b"\x80\x02cos\nsystem\n" + _str(f"touch {canary}") + b"\x85R."


def _eval_root(canary: Path) -> bytes:
    return b"\x80\x02cbuiltins\neval\n" + _str(f"open({str(canary)!r}, 'w')") + b"\x85R."


FORGED: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "size_stride_lengths_differ": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX), 0, (2, 3), (1,))),
        "are not equal-length non-negative ints",
    ),
    "negative_size": (lambda c: weight_pickle(tensor(legacy_payload(SIX), 0, (-1, 3))), "non-negative ints"),
    "size_not_a_tuple": (lambda c: weight_pickle(tensor(legacy_payload(SIX), 0, [2, 3])), "non-negative ints"),
    "offset_past_the_storage": (
        lambda c: weight_pickle(parameter(tensor(legacy_payload(np.zeros(1472)), 8528, (64, 23), (23, 1)))),
        "tensor 'input_layer.weight': storage offset+extent 9999 exceeds storage numel 1472",
    ),
    "negative_offset": (lambda c: weight_pickle(tensor(legacy_payload(SIX), -1)), "bad storage offset -1"),
    "huge_shape": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX), 0, (1 << 20, 1 << 20), (0, 0))),
        "elements exceed the cap",
    ),
    "stride_overflow": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX), 0, (2, 2), (10**30, 1))),
        "exceeds storage numel 6",
    ),
    "bytes_short_of_numel": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX[:5], numel=6))),
        "carries 20 bytes, expected numel*itemsize = 24",
    ),
    "bytes_beyond_numel": (
        lambda c: weight_pickle(tensor(legacy_payload(np.arange(7), numel=6))),
        "carries 28 bytes, expected numel*itemsize = 24",
    ),
    "element_count_disagrees": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX, count=7))),
        "records 7 elements, its id says 6",
    ),
    "truncated_inside_a_record": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX)[:40])),
        "not a readable pickle record",
    ),
    "truncated_before_the_count": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX)[: -(8 + 24)])),
        "truncated before the element count",
    ),
    "bad_magic": (lambda c: weight_pickle(tensor(legacy_payload(SIX, magic=42))), "bad magic number"),
    "big_endian": (lambda c: weight_pickle(tensor(legacy_payload(SIX, little_endian=False))), "not little-endian"),
    "key_list_disagrees": (lambda c: weight_pickle(tensor(legacy_payload(SIX, keys=("1",)))), "storage key list"),
    "nested_os_system": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX, root=_hostile_root(c)))),
        "refused global os.system",
    ),
    "nested_builtins_eval": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX, root=_eval_root(c)))),
        "refused global builtins.eval",
    ),
    "nested_os_system_in_zip": (
        lambda c: weight_pickle(tensor(zip_payload(SIX, root=_hostile_root(c)))),
        "refused global os.system",
    ),
    "storage_type_called": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX, root=b"\x80\x02" + FLOAT_STORAGE + b")R."))),
        "not a readable pickle record",
    ),
    "foreign_storage_global": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX, root=legacy_pid(6, b"ctorch\nload\n")))),
        "refused global torch.load",
    ),
    "bfloat16_storage": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX, root=legacy_pid(6, b"ctorch\nBFloat16Storage\n")))),
        "bfloat16 storage has no numpy dtype",
    ),
    "pid_of_zip_shape_in_legacy": (
        lambda c: weight_pickle(
            tensor(
                legacy_payload(SIX, root=pid_record(_str("storage"), FLOAT_STORAGE, _str("0"), _str("cpu"), _int(6)))
            )
        ),
        "persistent id is not a 6-tuple",
    ),
    "pid_wrong_tag": (
        lambda c: weight_pickle(
            tensor(
                legacy_payload(
                    SIX, root=pid_record(_str("module"), FLOAT_STORAGE, _str("0"), _str("cpu"), _int(6), b"N")
                )
            )
        ),
        "persistent id is not a 6-tuple",
    ),
    "pid_negative_numel": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX, root=legacy_pid(-6)))),
        "bad element count -6",
    ),
    "pid_without_storage_type": (
        lambda c: weight_pickle(
            tensor(
                legacy_payload(SIX, root=pid_record(_str("storage"), _int(1), _str("0"), _str("cpu"), _int(6), b"N"))
            )
        ),
        "names no typed storage",
    ),
    "pid_with_view_metadata": (
        lambda c: weight_pickle(
            tensor(
                legacy_payload(
                    SIX, root=pid_record(_str("storage"), FLOAT_STORAGE, _str("0"), _str("cpu"), _int(6), _int(1))
                )
            )
        ),
        "view_metadata",
    ),
    "zip_missing_data_entry": (
        lambda c: weight_pickle(tensor(zip_payload(SIX, data_name=None))),
        "zip payload has no data entry 'archive/data/0'",
    ),
    "zip_pid_of_legacy_shape": (
        lambda c: weight_pickle(tensor(zip_payload(SIX, root=legacy_pid(6)))),
        "persistent id is not a 5-tuple",
    ),
    "zip_data_entry_wrong_size": (
        lambda c: weight_pickle(
            tensor(zip_payload(SIX, root=pid_record(_str("storage"), FLOAT_STORAGE, _str("0"), _str("cpu"), _int(7))))
        ),
        "carries 24 bytes, expected numel*itemsize = 28",
    ),
    "zip_corrupt": (lambda c: weight_pickle(tensor(b"PK\x03\x04" + b"\x00" * 40)), "unreadable zip payload"),
    "storage_not_load_from_bytes": (
        lambda c: weight_pickle(
            _Call("torch._utils._rebuild_tensor_v2", _Call("torch.UntypedStorage", 24), 0, (2,), (1,), False, {})
        ),
        "storage is torch.UntypedStorage",
    ),
    "payload_not_bytes": (lambda c: weight_pickle(tensor("not bytes")), "storage payload is str, not bytes"),
    "unknown_rebuild": (
        lambda c: weight_pickle(_Call("torch._utils._rebuild_qtensor", legacy_payload(SIX))),
        "unsupported tensor rebuild torch._utils._rebuild_qtensor",
    ),
    "conjugate_metadata": (
        lambda c: weight_pickle(tensor(legacy_payload(SIX), 0, (2, 3), (3, 1), {"conj": True})),
        "unsupported tensor metadata",
    ),
    "module_cycle": (lambda c: cyclic_network(), "nested deeper than 64 modules"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_payload_is_a_typed_error_and_runs_nothing(case: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    build, fragment = FORGED[case]
    data = build(canary)
    with pytest.raises(TorchWeightError) as raised:
        read_torch_state(safe_loads(data))
    assert raised.value.code == "torch_weight_unreadable"
    assert fragment in raised.value.message
    info = introspect_model(data).introspection
    assert info.kind == "unreadable"
    assert info.feature_count is None
    assert info.feature_count_reason is not None
    assert info.feature_count_reason.startswith("torch_weight_unreadable: ") and fragment in info.feature_count_reason
    assert not canary.exists()


def test_wrapper_without_network_stays_other() -> None:
    data = fake_dumps(_Call("qlib.contrib.model.pytorch_nn.DNNModelPytorch", state={"lr": 0.1, "fitted": False}))
    assert read_torch_state(safe_loads(data)) is None
    assert introspect_model(data).introspection.kind == "other"
