"""Read the ``state_dict`` of a pickled qlib torch model as numpy arrays without torch, and export safetensors.

A qlib torch wrapper (``GeneralPTNN``, ``DNNModelPytorch`` ...) pickles its ``nn.Module`` as plain state
(``_parameters``, ``_buffers``, ``_modules``) around tensors that are ``torch._utils._rebuild_tensor_v2``
calls on ``torch.storage._load_from_bytes(payload)``. The restricted unpickler keeps those calls as inert
stand-ins. ``_load_from_bytes`` is never called (it runs ``torch.load``, i.e. an unrestricted pickle):
its payload, a whole ``torch.save`` file (legacy or zip), is parsed here by a second unpickler that knows
only the typed storage classes and the exact storage persistent id, and each tensor is cut out of its
storage with a validated offset, size and stride, then copied so no view of the file's bytes escapes.

Every failure is a :class:`TorchWeightError` naming the tensor and what was wrong. Not reproduced (torch
would need to run code for them): ``_save_to_state_dict`` overrides, ``get_extra_state`` and state-dict hooks.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import save as save_safetensors  # numpy-only: never imports torch

from rd_assets.core.errors import TorchWeightError
from rd_assets.core.session.standins import StandIn, class_path
from rd_assets.core.trace.experiments import attr

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
"""First record of a legacy ``torch.save`` file."""
PROTOCOL_VERSION = 1001
MAX_ELEMENTS = 1 << 28
"""Elements over all tensors of one network (1 GiB of float32): a stride-0 tensor could inflate a few bytes."""
MAX_STORAGES = 1 << 14
MAX_TENSORS = 1 << 14
MAX_MODULES = 1 << 14
MAX_DEPTH = 64
MAX_DIMS = 64
MAX_ZIP_ENTRIES = 1 << 10
MAX_DATA_PKL_BYTES = 1 << 20

NETWORK_ATTR = "dnn_model"
"""Where ``GeneralPTNN`` and ``DNNModelPytorch`` keep their network; other wrappers are searched."""
LOAD_FROM_BYTES = "torch.storage._load_from_bytes"
REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2"
REBUILD_PARAMETERS = {"torch._utils._rebuild_parameter": 3, "torch._utils._rebuild_parameter_with_state": 4}
"""Parameter rebuild functions and their argument count; the tensor is always the first argument."""
FIRST_LAYER_SUFFIXES = ("weight", "weight_ih_l0")


@dataclass(frozen=True, slots=True)
class _StorageType:
    """What ``torch.FloatStorage`` & co. unpickle to: a description, not callable and not configurable."""

    name: str
    raw: np.dtype[Any]
    code: str


_STORAGE_TYPES: dict[str, _StorageType] = {
    name: _StorageType(name, np.dtype(raw), code)
    for name, raw, code in (
        ("FloatStorage", "<f4", "F32"),
        ("DoubleStorage", "<f8", "F64"),
        ("HalfStorage", "<f2", "F16"),
        ("LongStorage", "<i8", "I64"),
        ("IntStorage", "<i4", "I32"),
        ("ShortStorage", "<i2", "I16"),
        ("CharStorage", "i1", "I8"),
        ("ByteStorage", "u1", "U8"),
        ("BoolStorage", "u1", "BOOL"),  # read as bytes, normalised to 0/1 after the copy
    )
}


@dataclass(frozen=True, slots=True)
class _StorageRef:
    stype: _StorageType
    key: str
    numel: int


@dataclass(frozen=True, slots=True)
class _Storage:
    stype: _StorageType
    data: np.ndarray
    """1-D read-only view of ``numel`` raw elements over the payload bytes."""


@dataclass(frozen=True)
class TensorEntry:
    """One ``state_dict`` entry: its key, safetensors dtype code (``F32`` ...) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TorchState:
    """The network's ``state_dict`` as torch would build it, plus what the wrapper says about training."""

    wrapper_class: str | None
    network_class: str | None
    tensors: tuple[TensorEntry, ...]
    arrays: Mapping[str, np.ndarray]
    """Contiguous, owned, read-only arrays in ``state_dict`` order."""
    first_layer_key: str | None
    first_layer_shape: tuple[int, ...] | None
    feature_count: int | None
    feature_count_reason: str | None
    wrapper_kwargs: dict[str, Any]
    """Every wrapper attribute that is plain JSON data (``pt_model_kwargs``, ``lr``, ``n_epochs`` ...)."""


# ----------------------------------------------------------------------------------------------- storages


class _StorageUnpickler(pickle.Unpickler):
    """Knows the typed storage classes and, where allowed, the storage persistent id; refuses all else."""

    def __init__(self, file: io.BytesIO, *, who: str, pid_len: int | None) -> None:
        super().__init__(file)
        self._who = who
        self._pid_len = pid_len

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if module == "torch" and name == "BFloat16Storage":
            raise TorchWeightError(f"{self._who}: bfloat16 storage has no numpy dtype")
        raise TorchWeightError(f"{self._who}: refused global {module}.{name} (only typed torch storages)")

    def persistent_load(self, pid: Any) -> Any:
        if self._pid_len is None:
            raise TorchWeightError(f"{self._who}: persistent id outside the storage record")
        return _storage_ref(pid, self._pid_len, self._who)


def _storage_ref(pid: Any, pid_len: int, who: str) -> _StorageRef:
    """``('storage', <torch.XStorage>, key, location, numel[, view_metadata=None])`` and nothing else."""
    if not (type(pid) is tuple and len(pid) == pid_len and pid[0] == "storage"):
        raise TorchWeightError(f"{who}: persistent id is not a {pid_len}-tuple ('storage', type, key, location, numel)")
    _, stype, key, location, numel = pid[:5]
    if not isinstance(stype, _StorageType):
        raise TorchWeightError(f"{who}: persistent id names no typed storage")
    if type(key) is not str or not key or "/" in key or type(location) is not str:
        raise TorchWeightError(f"{who}: persistent id has a bad key or location")
    if type(numel) is not int or numel < 0:
        raise TorchWeightError(f"{who}: persistent id has a bad element count {numel!r}")
    if pid_len == 6 and pid[5] is not None:
        raise TorchWeightError(f"{who}: storage views (view_metadata) are not supported")
    return _StorageRef(stype, key, numel)


def _unpickle(file: io.BytesIO, who: str, pid_len: int | None = None) -> Any:
    try:
        return _StorageUnpickler(file, who=who, pid_len=pid_len).load()
    except TorchWeightError:
        raise
    except Exception as exc:  # truncated or corrupt records: the payload is not a torch.save file
        raise TorchWeightError(f"{who}: not a readable pickle record ({type(exc).__name__}: {exc})") from exc


def _raw_view(raw: bytes | memoryview, ref: _StorageRef, who: str) -> _Storage:
    expected = ref.numel * ref.stype.raw.itemsize
    if len(raw) != expected:
        raise TorchWeightError(
            f"{who}: storage {ref.key!r} carries {len(raw)} bytes, expected numel*itemsize = {expected}"
        )
    data = np.frombuffer(raw, dtype=ref.stype.raw, count=ref.numel)
    return _Storage(ref.stype, data)


def _read_legacy(payload: bytes, who: str) -> _Storage:
    """magic, protocol, sys_info, the storage (by persistent id), its key list, then int64 count + raw bytes."""
    f = io.BytesIO(payload)
    if _unpickle(f, who) != MAGIC_NUMBER:
        raise TorchWeightError(f"{who}: not a torch.save payload (bad magic number)")
    protocol = _unpickle(f, who)
    if protocol != PROTOCOL_VERSION or type(protocol) is not int:
        raise TorchWeightError(f"{who}: unsupported torch.save protocol {protocol!r}")
    sys_info = _unpickle(f, who)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise TorchWeightError(f"{who}: payload is not little-endian")
    ref = _unpickle(f, who, pid_len=6)
    if not isinstance(ref, _StorageRef):
        raise TorchWeightError(f"{who}: payload root is not a storage")
    keys = _unpickle(f, who)
    if keys != [ref.key]:
        raise TorchWeightError(f"{who}: storage key list {keys!r} does not name exactly storage {ref.key!r}")
    start = f.tell()
    head = payload[start : start + 8]
    if len(head) != 8:
        raise TorchWeightError(f"{who}: payload truncated before the element count of storage {ref.key!r}")
    count = int.from_bytes(head, "little", signed=True)
    if count != ref.numel:
        raise TorchWeightError(f"{who}: storage {ref.key!r} records {count} elements, its id says {ref.numel}")
    return _raw_view(memoryview(payload)[start + 8 :], ref, who)


def _read_zip(payload: bytes, who: str) -> _Storage:
    """``<prefix>/data.pkl`` whose root is one storage id, raw bytes in ``<prefix>/data/<key>``."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise TorchWeightError(f"{who}: zip payload has {len(infos)} entries")
            pkls = [i for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
            if len(pkls) != 1:
                raise TorchWeightError(f"{who}: zip payload has {len(pkls)} <prefix>/data.pkl entries, expected 1")
            prefix = pkls[0].filename[: -len("data.pkl")]
            if pkls[0].file_size > MAX_DATA_PKL_BYTES:
                raise TorchWeightError(f"{who}: zip data.pkl of {pkls[0].file_size} bytes")
            names = set(zf.namelist())
            if f"{prefix}byteorder" in names:
                order_info = zf.getinfo(f"{prefix}byteorder")
                if order_info.file_size > 16 or zf.read(order_info) != b"little":
                    raise TorchWeightError(f"{who}: zip payload is not little-endian")
            ref = _unpickle(io.BytesIO(zf.read(pkls[0])), who, pid_len=5)
            if not isinstance(ref, _StorageRef):
                raise TorchWeightError(f"{who}: zip payload root is not a storage")
            entry = f"{prefix}data/{ref.key}"
            if entry not in names:
                raise TorchWeightError(f"{who}: zip payload has no data entry {entry!r}")
            info = zf.getinfo(entry)
            expected = ref.numel * ref.stype.raw.itemsize
            if info.file_size != expected:  # checked before reading: a compressed entry cannot inflate
                raise TorchWeightError(
                    f"{who}: storage {ref.key!r} carries {info.file_size} bytes, expected numel*itemsize = {expected}"
                )
            return _raw_view(zf.read(info), ref, who)
    except TorchWeightError:
        raise
    except Exception as exc:  # BadZipFile, CRC mismatch, encrypted or unsupported compression
        raise TorchWeightError(f"{who}: unreadable zip payload ({type(exc).__name__}: {exc})") from exc


def _read_payload(payload: bytes, who: str) -> _Storage:
    return _read_zip(payload, who) if payload[:2] == b"PK" else _read_legacy(payload, who)


def read_storage_payload(payload: bytes, *, who: str = "storage payload") -> np.ndarray:
    """The elements of one ``_load_from_bytes`` payload as a 1-D owned array (bool storages as 0/1 bools)."""
    storage = _read_payload(bytes(payload), who)
    data = storage.data.copy()
    return data != 0 if storage.stype.code == "BOOL" else data


# ----------------------------------------------------------------------------------------------- tensors


def _int_tuple(value: Any) -> bool:
    return type(value) is tuple and len(value) <= MAX_DIMS and all(type(n) is int and n >= 0 for n in value)


def _args(standin: Any, who: str, counts: tuple[int, ...]) -> tuple[Any, ...]:
    args = attr(standin, "_rd_args")
    if attr(standin, "_rd_kwargs") is not None or not (type(args) is tuple and len(args) in counts):
        raise TorchWeightError(f"{who}: {class_path(standin)} called with unexpected arguments")
    return args


class _StateReader:
    """One walk over a network: caches storages (tensors share them) and enforces the global caps."""

    def __init__(self) -> None:
        self._storages: dict[int, tuple[Any, _Storage]] = {}
        self._elements = 0
        self._modules = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.codes: dict[str, str] = {}

    def storage(self, standin: Any, who: str) -> _Storage:
        path = class_path(standin)
        if path != LOAD_FROM_BYTES:
            raise TorchWeightError(f"{who}: storage is {path or type(standin).__name__}, not {LOAD_FROM_BYTES}")
        cached = self._storages.get(id(standin))
        if cached is not None:
            return cached[1]
        if len(self._storages) >= MAX_STORAGES:
            raise TorchWeightError(f"{who}: more than {MAX_STORAGES} storage payloads")
        (payload,) = _args(standin, who, (1,))
        if not isinstance(payload, bytes | bytearray):
            raise TorchWeightError(f"{who}: storage payload is {type(payload).__name__}, not bytes")
        storage = _read_payload(bytes(payload), who)
        self._storages[id(standin)] = (standin, storage)  # the stand-in is kept so its id stays unique
        return storage

    def tensor(self, value: Any, who: str) -> tuple[np.ndarray, str]:
        path = class_path(value)
        if path in REBUILD_PARAMETERS:
            value = _args(value, who, (REBUILD_PARAMETERS[path],))[0]
            path = class_path(value)
        if path != REBUILD_TENSOR:
            raise TorchWeightError(f"{who}: unsupported tensor rebuild {path or type(value).__name__}")
        args = _args(value, who, (6, 7))
        storage_standin, offset, size, stride = args[:4]
        metadata = args[6] if len(args) == 7 else None
        if not (_int_tuple(size) and _int_tuple(stride) and len(size) == len(stride)):
            raise TorchWeightError(f"{who}: size {size!r} and stride {stride!r} are not equal-length non-negative ints")
        if type(offset) is not int or offset < 0:
            raise TorchWeightError(f"{who}: bad storage offset {offset!r}")
        count = math.prod(size)
        if count > MAX_ELEMENTS - self._elements:
            raise TorchWeightError(f"{who}: {count} elements exceed the cap of {MAX_ELEMENTS} per network")
        negate = self._metadata(metadata, who)
        storage = self.storage(storage_standin, who)
        numel = storage.data.shape[0]
        if count == 0:
            if offset > numel:
                raise TorchWeightError(f"{who}: storage offset {offset} exceeds storage numel {numel}")
            array = np.zeros(size, dtype=storage.stype.raw)
        else:
            extent = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
            if extent >= numel:
                raise TorchWeightError(f"{who}: storage offset+extent {extent} exceeds storage numel {numel}")
            itemsize = storage.stype.raw.itemsize
            strides = tuple(st * itemsize if s > 1 else 0 for s, st in zip(size, stride, strict=True))
            view = np.lib.stride_tricks.as_strided(storage.data[offset:], shape=size, strides=strides, writeable=False)
            array = np.array(view, order="C", copy=True)
        self._elements += count
        if storage.stype.code == "BOOL":
            array = array != 0
        elif negate:
            array = np.negative(array)
        array.flags.writeable = False
        return array, storage.stype.code

    @staticmethod
    def _metadata(metadata: Any, who: str) -> bool:
        """torch's tensor metadata is ``{'neg': bool, 'conj': bool}``; only the neg bit means anything for reals."""
        if metadata is None:
            return False
        if not isinstance(metadata, dict) or not set(metadata) <= {"neg", "conj"} or metadata.get("conj", False):
            raise TorchWeightError(f"{who}: unsupported tensor metadata {metadata!r}")
        return metadata.get("neg") is True

    def walk(self, module: Any, prefix: str, depth: int) -> None:
        """torch's ``state_dict()``: own parameters, persistent buffers, then children in registration order."""
        where = prefix.rstrip(".") or "<root>"
        if depth > MAX_DEPTH:
            raise TorchWeightError(f"module {where!r}: nested deeper than {MAX_DEPTH} modules")
        self._modules += 1
        if self._modules > MAX_MODULES:
            raise TorchWeightError(f"module {where!r}: more than {MAX_MODULES} modules")
        params, buffers, children = attr(module, "_parameters"), attr(module, "_buffers", {}), attr(module, "_modules")
        skipped = attr(module, "_non_persistent_buffers_set") or set()
        if not all(isinstance(d, dict) for d in (params, buffers, children)) or not isinstance(
            skipped, set | frozenset
        ):
            raise TorchWeightError(f"module {where!r}: _parameters/_buffers/_modules are not dicts")
        entries = [*params.items(), *((k, v) for k, v in buffers.items() if k not in skipped)]
        for key, value in entries:
            if type(key) is not str:
                raise TorchWeightError(f"module {where!r}: tensor key {key!r} is not a string")
            if value is None:
                continue
            name = prefix + key
            if len(self.arrays) >= MAX_TENSORS:
                raise TorchWeightError(f"tensor {name!r}: more than {MAX_TENSORS} tensors")
            self.arrays[name], self.codes[name] = self.tensor(value, f"tensor {name!r}")
        for key, child in children.items():
            if child is None:
                continue
            if type(key) is not str or not is_module(child):
                raise TorchWeightError(f"module {where!r}: child {key!r} is not an nn.Module state")
            self.walk(child, f"{prefix}{key}.", depth + 1)


# ----------------------------------------------------------------------------------------------- network


def is_module(obj: Any) -> bool:
    """A stand-in carrying ``nn.Module`` state (``_modules`` and ``_parameters`` dicts)."""
    return (
        isinstance(obj, StandIn)
        and isinstance(attr(obj, "_modules"), dict)
        and isinstance(attr(obj, "_parameters"), dict)
    )


def find_network(obj: Any) -> Any | None:
    """The ``nn.Module`` of a wrapper: ``dnn_model``, else the first module-like attribute, or ``obj`` itself."""
    if is_module(obj):
        return obj
    inner = attr(obj, NETWORK_ATTR)
    if is_module(inner):
        return inner
    state = getattr(obj, "__dict__", None)
    if isinstance(obj, StandIn) and isinstance(state, dict):
        return next((value for value in state.values() if is_module(value)), None)
    return None


def _plain(value: Any, depth: int = 0) -> tuple[bool, Any]:
    """``(True, json_value)`` for plain JSON data (tuples become lists), ``(False, None)`` for anything else."""
    if depth > 16:
        return False, None
    if value is None or type(value) in (bool, int, str):
        return True, value
    if type(value) is float:
        return (True, value) if math.isfinite(value) else (False, None)
    if type(value) in (list, tuple):
        items = [_plain(v, depth + 1) for v in value]
        return (True, [v for _, v in items]) if all(ok for ok, _ in items) else (False, None)
    if isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
        pairs = {k: _plain(v, depth + 1) for k, v in value.items() if type(k) is str}
        if len(pairs) != len(value) or not all(ok for ok, _ in pairs.values()):
            return False, None
        return True, {k: v for k, (_, v) in pairs.items()}
    return False, None


def _wrapper_kwargs(obj: Any, network: Any) -> dict[str, Any]:
    if obj is network:
        return {}
    kwargs: dict[str, Any] = {}
    for key, value in (getattr(obj, "__dict__", None) or {}).items():
        if type(key) is str and not key.startswith("_rd_"):
            ok, plain = _plain(value)
            if ok:
                kwargs[key] = plain
    return kwargs


def read_torch_state(obj: Any) -> TorchState | None:
    """The state of the torch network inside ``obj`` (a wrapper or a bare module), ``None`` when there is none."""
    network = find_network(obj)
    if network is None:
        return None
    reader = _StateReader()
    reader.walk(network, "", 0)
    tensors = tuple(TensorEntry(name, reader.codes[name], tuple(a.shape)) for name, a in reader.arrays.items())
    first = next(
        (t for t in tensors if len(t.shape) == 2 and t.name.endswith(FIRST_LAYER_SUFFIXES)),
        None,
    )
    reason = None if first is not None else "no 2-D '*weight' tensor in the state dict to read the input width from"
    return TorchState(
        wrapper_class=class_path(obj),
        network_class=class_path(network),
        tensors=tensors,
        arrays=reader.arrays,
        first_layer_key=first.name if first else None,
        first_layer_shape=first.shape if first else None,
        feature_count=first.shape[1] if first else None,
        feature_count_reason=reason,
        wrapper_kwargs=_wrapper_kwargs(obj, network),
    )


def _canonical_safetensors(blob: bytes) -> bytes:
    """Re-serialise the JSON header with sorted keys: safetensors writes ``__metadata__`` in hash order."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def export_safetensors(state: TorchState) -> bytes:
    """``model.safetensors``, byte-identical for the same state (bundles are content-addressed).

    It loads with ``safetensors.torch.load`` into a freshly built network (``load_state_dict(strict=True)``).
    """
    metadata = {"format": "pt"}
    if state.network_class:
        metadata["network_class"] = state.network_class
    if state.wrapper_class:
        metadata["wrapper_class"] = state.wrapper_class
    try:
        return _canonical_safetensors(save_safetensors(dict(state.arrays), metadata=metadata))
    except Exception as exc:  # safetensors refuses the arrays: report it like any other unreadable weight
        raise TorchWeightError(f"safetensors export failed ({type(exc).__name__}: {exc})") from exc
