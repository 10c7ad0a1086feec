"""The restricted unpickler against a corpus of hostile pickles: refused by name, canary never created.

Also: a hostile snapshot among good ones does not stop a task from resolving, genuine samples' globals are
never refused, allow-listed numpy globals cannot be turned into memory corruption, and no allowed constructor
turns a few bytes into gigabytes.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from rd_assets.core.errors import RdAssetsError, UnreadableSnapshotError, UnsafePickleError
from rd_assets.core.session.allow_list import ALLOWED_GLOBALS
from rd_assets.core.session.file_format import SIGNED_MAGIC, load_session_file
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.standins import StandIn, class_path
from rd_assets.core.session.task_reader import read_task
from rd_assets.core.session.unpickler import MAX_GLOBALS_PER_FILE, RestrictedUnpickler, safe_loads
from rd_assets_tests.conftest import PLAIN_TASK, REPO_ROOT, SAMPLES, SIGNED_TASK, VENV_PYTHON, expected_for
from rd_assets_tests.hostile_pickles import (
    AMPLIFIERS,
    MEMORY_GADGETS,
    NESTING_GADGETS,
    Call,
    Hostile,
    hostile_corpus,
    many_globals,
    register_extension,
)
from rd_assets_tests.rdagent_fixtures import (
    ExperimentSpec,
    FactorSpec,
    build_loop,
    growing_timeline,
    snapshot_bytes,
    write_task,
)

_CANARY_NAME = "canary"
_NAMES = [h.name for h in hostile_corpus(Path("/nonexistent") / _CANARY_NAME)]


def _payload(tmp_path: Path, name: str) -> tuple[Hostile, Path]:
    canary = tmp_path / _CANARY_NAME
    return next(h for h in hostile_corpus(canary) if h.name == name), canary


def test_corpus_is_large_and_covers_every_protocol() -> None:
    corpus = hostile_corpus(Path("/nonexistent/canary"))
    assert len(corpus) >= 30
    protocols = {h.data[1] if h.data[:1] == pickle.PROTO else 0 for h in corpus}
    assert protocols >= {0, 2, 3, 4, 5}


def _assert_refused(exc: UnsafePickleError, hostile: Hostile) -> None:
    assert exc.code == "unsafe_pickle"
    assert exc.global_name == hostile.refused
    assert repr(hostile.refused) in exc.message


@pytest.mark.parametrize("name", _NAMES)
def test_hostile_pickle_is_refused_by_name_and_never_acts(tmp_path: Path, name: str) -> None:
    hostile, canary = _payload(tmp_path, name)
    undo = register_extension(hostile.extension)
    try:
        with pytest.raises(UnsafePickleError) as info:
            safe_loads(hostile.data, path="hostile.pkl")
    finally:
        undo()
    _assert_refused(info.value, hostile)
    assert info.value.path == "hostile.pkl"
    assert not canary.exists()


@pytest.mark.parametrize("name", _NAMES)
def test_hostile_session_file_is_refused_plain_and_signed(tmp_path: Path, name: str) -> None:
    """Through ``load_session_file``: as a plain file and as a correctly signed rdagent 1.0 file."""
    hostile, canary = _payload(tmp_path, name)
    key = "rd-assets-test-key"
    mac = hmac.new(hashlib.sha256(key.encode()).digest(), hostile.data, hashlib.sha256).digest()
    plain, signed = tmp_path / "0_direct_exp_gen", tmp_path / "1_coding"
    plain.write_bytes(hostile.data)
    signed.write_bytes(SIGNED_MAGIC + mac + hostile.data)
    undo = register_extension(hostile.extension)
    try:
        for path, signing_key in ((plain, None), (signed, key), (signed, None)):
            with pytest.raises(UnsafePickleError) as info:
                load_session_file(path, signing_key=signing_key, display=path.name)
            _assert_refused(info.value, hostile)
            assert info.value.path == path.name
    finally:
        undo()
    assert not canary.exists()


@pytest.mark.parametrize("name", sorted(MEMORY_GADGETS))
def test_allow_listed_numpy_globals_cannot_corrupt_memory(name: str) -> None:
    """Forged dtype states / short object lists crash or read out of bounds in numpy itself: refused first.

    Run in a subprocess so that a regression shows as a failed test (signal), not as a dead test run.
    """
    data, refused = MEMORY_GADGETS[name]
    script = (
        "import sys\n"
        "from rd_assets.core.session.unpickler import safe_loads\n"
        "from rd_assets.core.errors import RdAssetsError, UnreadableSnapshotError, UnsafePickleError\n"
        "try:\n"
        "    obj = safe_loads(sys.stdin.buffer.read())\n"
        "    print('LOADED', getattr(obj, 'tolist', lambda: obj)())\n"
        "except UnsafePickleError as exc:\n"
        "    print('REFUSED', exc.global_name)\n"
    )
    done = subprocess.run(
        [str(VENV_PYTHON), "-c", script], input=data, capture_output=True, cwd=REPO_ROOT, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().strip() == f"REFUSED {refused}"


@pytest.mark.parametrize("name", sorted(NESTING_GADGETS))
def test_deeply_nested_allow_listed_objects_are_refused_or_freed_safely(name: str) -> None:
    """200k levels of deque/slice/generic alias: refused where built, or freed without overflowing the C stack.

    ``collections.deque`` frees its items recursively in C (no trashcan): the unguarded version segfaults.
    """
    script = (
        "import sys\n"
        "from rd_assets.core.session.unpickler import safe_loads\n"
        "from rd_assets.core.errors import UnsafePickleError\n"
        "try:\n"
        "    obj = safe_loads(sys.stdin.buffer.read())\n"
        "    del obj\n"
        "    print('FREED')\n"
        "except UnsafePickleError as exc:\n"
        "    print('REFUSED', exc.global_name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=NESTING_GADGETS[name],
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"signal {-done.returncode}: " + done.stderr.decode()[-2000:]
    assert done.stdout.decode().split()[0] in {"FREED", "REFUSED"}


def test_a_file_may_name_only_so_many_distinct_globals() -> None:
    """Every distinct global is a new class object (13 MiB of names once cost 2.3 GiB): capped per file."""
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(many_globals(MAX_GLOBALS_PER_FILE + 1))
    assert "distinct globals" in info.value.message
    assert len(safe_loads(many_globals(100))) == 100


def test_stand_in_classes_are_shared_between_files() -> None:
    """The same global read from two files is one class, so repeated reads do not grow memory."""
    first, second = safe_loads(many_globals(3)), safe_loads(many_globals(3))
    assert [id(c) for c in first] == [id(c) for c in second]


@pytest.mark.parametrize("name", sorted(AMPLIFIERS))
def test_a_few_bytes_never_allocate_gigabytes(name: str) -> None:
    data, refused = AMPLIFIERS[name]
    assert len(data) < 200
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(data)
    assert info.value.global_name == refused


def _stack_global(module: str, name: str) -> bytes:
    return b"".join(b"X" + len(s).to_bytes(4, "little") + s.encode() for s in (module, name)) + pickle.STACK_GLOBAL


def _trace_with_planted(keys: tuple[str, ...]) -> bytes:
    spy = _stack_global("rdagent.spy", "Spy")
    planted = b"}(" + b"".join(b"X" + len(k).to_bytes(4, "little") + k.encode() + spy for k in keys) + b"u"
    return (
        b"\x80\x04"
        + _stack_global("rdagent.core.proposal", "Trace")
        + b")\x81"  # NEWOBJ: an empty Trace stand-in
        + planted
        + b"b"  # BUILD: plant the hooks as state
        + b"}X\x04\x00\x00\x00hist]sb"  # BUILD again: must update state, not call Spy(state)
        + b"K\x01a"  # APPEND
        + b"(K\x02K\x03e"  # APPENDS
        + b"(K\x04\x90"  # ADDITEMS
        + b"."
    )


def test_planted_hooks_stay_data_and_are_never_called() -> None:
    """``BUILD`` can put ``append``/``extend``/``add`` into a stand-in's ``__dict__``; pickle's later look-ups
    must still find the stand-in's own recording hooks, not the planted object."""
    obj = safe_loads(_trace_with_planted(("append", "extend", "add")))
    assert class_path(obj) == "rdagent.core.proposal.Trace"
    state = obj.__dict__
    assert state["hist"] == []
    assert state["_rd_items"] == [1, 2, 3]
    assert state["_rd_set_items"] == [4]
    assert all(isinstance(state[k], type) and issubclass(state[k], StandIn) for k in ("append", "extend", "add"))


@pytest.mark.parametrize("slots", [False, True])
def test_planting_setstate_is_refused(slots: bool) -> None:
    data = _trace_with_planted(("__setstate__",))
    if slots:  # BUILD((None, {"__setstate__": Spy})): the slot-state path
        data = data.replace(b")\x81}(", b")\x81N}(", 1).replace(b"ub", b"u\x86b", 1)
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(data)
    assert info.value.global_name == "StandIn.__setstate__"


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        (_stack_global("collections", "Counter"), "collections.Counter"),
        (_stack_global("numpy._core.numeric", "_frombuffer"), "numpy._core.numeric._frombuffer"),
        (_stack_global("pathlib", "PosixPath"), "pathlib.PosixPath"),
        (_stack_global("_operator", "getitem"), "_operator.getitem"),
    ],
)
def test_build_cannot_reconfigure_allowed_callables(target: bytes, refused: str) -> None:
    """``BUILD`` on a class or function object would set attributes on it for the whole process."""
    data = b"\x80\x04" + target + _SLOT_STATE + b"b."
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(data)
    assert info.value.global_name == refused


_SLOT_STATE = b"N}X\x0b\x00\x00\x00most_commonK\x01s\x86"  # (None, {"most_common": 1})


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "object"),
        ("builtins", "dict"),
        ("collections", "OrderedDict"),
        ("datetime", "datetime"),
        ("decimal", "Decimal"),
        ("uuid", "UUID"),
        ("types", "SimpleNamespace"),
    ],
)
def test_build_cannot_set_attributes_on_allowed_types(module: str, name: str) -> None:
    """Real types handed to the pickle are immutable or reject ``BUILD``: nothing leaks into the process."""
    data = b"\x80\x04" + _stack_global(module, name) + _SLOT_STATE + b"b."
    with pytest.raises(UnreadableSnapshotError):
        safe_loads(data)
    cls = RestrictedUnpickler(io.BytesIO(b"")).find_class(module, name)
    assert not hasattr(cls, "most_common")


def test_build_on_a_stand_in_class_fails_without_touching_it() -> None:
    data = b"\x80\x04" + _stack_global("rdagent.core.proposal", "Trace") + _SLOT_STATE + b"b."
    with pytest.raises(UnreadableSnapshotError):
        safe_loads(data)


def test_unknown_third_party_callables_are_inert_stand_ins(tmp_path: Path) -> None:
    """Not refused, but never imported: ``pandas.read_pickle``/``torch.load`` only record their arguments."""
    canary = tmp_path / "canary"
    for module, name in (("pandas", "read_pickle"), ("torch", "load"), ("pandas.core.frame", "DataFrame.to_csv")):
        data = b"\x80\x04" + _stack_global(module, name) + b"X" + len(str(canary)).to_bytes(4, "little")
        data += str(canary).encode() + b"\x85R."
        obj = safe_loads(data)
        assert class_path(obj) == f"{module}.{name}"
        assert obj.__dict__["_rd_args"] == (str(canary),)
    assert not canary.exists()


def test_deeply_nested_pickle_is_read_or_refused_without_crashing() -> None:
    depth = 200_000
    data = b"\x80\x04" + b"]" * depth + b"a" * (depth - 1) + b"."
    obj = safe_loads(data)
    for _ in range(depth - 1):
        obj = obj[0]
    assert obj == []


def _good_task(log_root: Path, n_loops: int = 4) -> Path:
    hist = [ExperimentSpec(factors=[FactorSpec(f"F{i}_5D")], decision=i % 2 == 0) for i in range(n_loops)]
    return write_task(log_root, "2026-01-09_16-11-14-215581", growing_timeline(n_loops), hist=hist)


def test_task_with_a_hostile_snapshot_resolves_from_the_good_ones(tmp_path: Path, copy_sample) -> None:  # type: ignore[no-untyped-def]
    """One hostile file (not the longest) in a copy of the plain sample: the task still resolves as expected."""
    log_dir = copy_sample(PLAIN_TASK)
    canary = tmp_path / "canary"
    hostile = next(h for h in hostile_corpus(canary) if h.name == "legit-loop-with-buried-Popen")
    (log_dir / "__session__/2/2_running").write_bytes(hostile.data)
    reading = read_task(log_dir, index=SnapshotIndex(tmp_path / "idx.sqlite"))
    expected = expected_for(PLAIN_TASK)
    assert reading.error is None
    assert reading.selection.chosen_snapshot == expected["chosen_snapshot_relpath"]
    assert reading.anchor is not None
    assert reading.anchor.last_sota_factor_index == expected["last_sota_factor_index"]
    bad = {c.relpath: c for c in reading.selection.candidates}["__session__/2/2_running"]
    assert bad.error is not None and bad.error.code == "unsafe_pickle"
    assert "subprocess.Popen" in bad.error.message
    assert not canary.exists()


def test_hostile_would_be_longest_snapshot_is_skipped(tmp_path: Path) -> None:
    """The hostile file carries the longest hist of all: selection falls back to the longest good one."""
    log_dir = _good_task(tmp_path / "log")
    canary = tmp_path / "canary"
    specs = [ExperimentSpec(factors=[FactorSpec(f"F{i}_5D")], decision=True) for i in range(9)]
    specs[-1].weights = {"model.pkl": Call(subprocess.Popen, ["touch", str(canary)])}  # type: ignore[dict-item]
    hostile_path = log_dir / "__session__/9/3_feedback"
    hostile_path.parent.mkdir(parents=True)
    hostile_path.write_bytes(snapshot_bytes(build_loop(specs, loop_idx=9)))
    reading = read_task(log_dir, index=SnapshotIndex(None))
    assert reading.selection.chosen_snapshot == "__session__/3/3_feedback"
    assert reading.selection.hist_len == 4
    assert reading.anchor is not None and reading.anchor.last_sota_factor_index == 2
    bad = {c.relpath: c for c in reading.selection.candidates}["__session__/9/3_feedback"]
    assert bad.hist_len is None
    assert bad.error is not None and bad.error.code == "unsafe_pickle"
    assert not canary.exists()


def test_every_global_of_genuine_samples_is_allowed_or_a_stand_in() -> None:
    lines = (SAMPLES / "rdagent_globals.txt").read_text().split()
    assert len(lines) > 50
    unpickler = RestrictedUnpickler(io.BytesIO(b""))
    for line in lines:
        module, name = line.split(":")
        found = unpickler.find_class(module, name)
        assert found is not None, line
        if isinstance(found, type) and issubclass(found, StandIn):
            assert module.startswith(("rdagent.", "pandas.")), f"{line} should be allow-listed"


@pytest.mark.parametrize("task_id", [PLAIN_TASK, SIGNED_TASK])
def test_every_sample_snapshot_loads_without_refusal(task_id: str) -> None:
    key = expected_for(task_id).get("signing_key")
    paths = sorted((SAMPLES / "log" / task_id / "__session__").glob("*/*"))
    assert paths
    for path in paths:
        assert class_path(load_session_file(path, signing_key=key).obj).endswith("RDLoop")


def test_loading_the_corpus_imports_none_of_its_modules(tmp_path: Path) -> None:
    gadgets = {"timeit", "cProfile", "runpy", "ctypes", "dill", "torch", "numpy.testing", "shutil", "socket"}
    before = set(sys.modules)
    for hostile in hostile_corpus(tmp_path / "canary"):
        with pytest.raises(RdAssetsError):
            safe_loads(hostile.data)
    assert not (gadgets - before) & set(sys.modules)


_LIVE_SCRIPT = """
import copyreg, json, pathlib, pickle, sys, time
from rd_assets_tests.hostile_pickles import hostile_corpus, register_extension
from rd_assets_tests.rdagent_fixtures import genuine_modules

root = pathlib.Path(sys.argv[1])
names = [h.name for h in hostile_corpus(root / "unused")]
outcome = {}
for i, name in enumerate(names):
    canary = root / str(i) / "canary"
    canary.parent.mkdir()
    hostile = next(h for h in hostile_corpus(canary) if h.name == name)
    for (module, attr), code in list(copyreg._extension_registry.items()):  # left by an obeyed add_extension
        copyreg.remove_extension(module, attr, code)
    register_extension(hostile.extension)
    status = "no canary"
    with genuine_modules():
        try:
            pickle.loads(hostile.data)
        except ModuleNotFoundError as exc:
            status = f"module missing: {exc.name}"
        except Exception:
            pass
    outcome[name] = (status, str(canary))
deadline = time.monotonic() + 15  # posix_spawn / Popen children finish their touch asynchronously
pending = [pathlib.Path(c) for s, c in outcome.values() if s == "no canary"]
while time.monotonic() < deadline and not all(p.exists() for p in pending):
    time.sleep(0.05)
print(json.dumps({n: "canary" if pathlib.Path(c).exists() else s for n, (s, c) in outcome.items()}))
"""


def test_every_payload_is_live_against_the_real_unpickler(tmp_path: Path) -> None:
    """The corpus is not a straw man: a plain ``pickle.loads`` (rdagent classes importable) obeys each payload
    and creates its canary. Run in a throwaway subprocess inside ``tmp_path``; only payloads whose module is
    not installed here (``joblib``, Python 3.13's ``pathlib._local``) cannot act."""
    done = subprocess.run(
        [str(VENV_PYTHON), "-c", _LIVE_SCRIPT, str(tmp_path)],
        capture_output=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    outcome: dict[str, str] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert set(outcome) == set(_NAMES)
    inert = {n: s for n, s in outcome.items() if s != "canary"}
    assert all(s.startswith("module missing") for s in inert.values()), inert
    assert len(inert) <= 3, inert


def test_signed_sample_with_a_correctly_signed_hostile_longest_snapshot(tmp_path: Path, copy_sample) -> None:  # type: ignore[no-untyped-def]
    """A copy of the signed sample gains a validly signed file whose hist is longer than any genuine one but
    which hides an ``exec``: the signature verifies, the content is refused, the genuine answer stands."""
    log_dir = copy_sample(SIGNED_TASK)
    expected = expected_for(SIGNED_TASK)
    canary = tmp_path / "canary"
    specs = [ExperimentSpec(factors=[FactorSpec(f"F{i}_5D")], decision=True) for i in range(expected["hist_len"] + 3)]
    specs[0].weights = {"params.pkl": Call(exec, f"open({str(canary)!r}, 'w')")}  # type: ignore[dict-item]
    hostile = log_dir / "__session__" / "99" / "4_record"
    hostile.parent.mkdir()
    hostile.write_bytes(snapshot_bytes(build_loop(specs, loop_idx=99), signing_key=expected["signing_key"]))
    reading = read_task(log_dir, index=SnapshotIndex(None), signing_key=expected["signing_key"])
    assert reading.selection.chosen_snapshot == expected["chosen_snapshot_relpath"]
    assert reading.selection.hist_len == expected["hist_len"]
    assert reading.anchor is not None
    assert reading.anchor.last_sota_factor_index == expected["last_sota_factor_index"]
    bad = {c.relpath: c for c in reading.selection.candidates}["__session__/99/4_record"]
    assert bad.error is not None and bad.error.code == "unsafe_pickle" and "builtins.exec" in bad.error.message
    assert not canary.exists()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("params.pkl", "qlib.contrib.model.gbdt.LGBModel"), ("booster.pkl", "lightgbm.basic.Booster")],
)
def test_genuine_model_pickles_are_stand_ins_not_refusals(name: str, expected: str) -> None:
    """Weights carried in sessions (qlib LGBModel, bare LightGBM Booster) read without importing either."""
    before = set(sys.modules)
    assert class_path(safe_loads((SAMPLES / "models" / name).read_bytes())) == expected
    assert not {m.split(".")[0] for m in set(sys.modules) - before} & {"qlib", "lightgbm", "torch"}


_WILDCARD_PROBES = ("system", "run", "Popen", "call", "load", "loads", "open", "exec", "eval", "main", "__import__")
"""Names tried in a module picklescan refuses as a whole ("*")."""


def test_no_global_picklescan_calls_dangerous_comes_back_as_a_real_callable() -> None:
    """An oracle we did not write: picklescan's own list of dangerous globals, fed through ``find_class``.

    Each must be refused or become an inert stand-in class; none may be imported while deciding.
    """
    from picklescan.scanner import _unsafe_globals

    before = set(sys.modules)
    probe = RestrictedUnpickler(io.BytesIO(b""))
    checked = 0
    for module, names in _unsafe_globals.items():
        for name in sorted(names) if names != "*" else _WILDCARD_PROBES:
            checked += 1
            try:
                got = probe.find_class(module, name)
            except UnsafePickleError:
                continue
            assert isinstance(got, type) and issubclass(got, StandIn), (module, name, got)
    assert checked > 300
    imported = {m.split(".")[0] for m in set(sys.modules) - before}
    assert not imported & {m.split(".")[0] for m in _unsafe_globals}, imported


def test_every_allow_listed_global_says_why_it_is_safe() -> None:
    from rd_assets.core.session.allow_list import ALLOW_LIST, ALLOWED_GLOBALS

    assert set(ALLOW_LIST) == set(ALLOWED_GLOBALS)
    for key, (_obj, why) in ALLOW_LIST.items():
        assert why and "\n" not in why and len(why) > 20, key


def _build_on_class(module: str, name: str) -> bytes:
    """``BUILD(module.name, (None, {'__new__': list}))``: a pickle trying to re-configure an allowed class."""
    slots = b"}" + _bin_str("__new__") + _stack_global("builtins", "list") + b"s"
    return b"\x80\x04" + _stack_global(module, name) + b"(N" + slots + b"tb."


def _bin_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


@pytest.mark.parametrize(
    "key",
    sorted(k for k, v in ALLOWED_GLOBALS.items() if isinstance(v, type)),
)
def test_no_allow_listed_class_can_be_reconfigured_by_a_pickle(key: tuple[str, str]) -> None:
    """One file must not change how another is parsed: BUILD on an allowed class object is refused or fails,
    and the class is unchanged afterwards (a deque subclass once took ``__new__ = list`` for the process)."""
    cls = ALLOWED_GLOBALS[key]
    before = dict(vars(cls))
    with pytest.raises((UnsafePickleError, UnreadableSnapshotError)):
        safe_loads(_build_on_class(*key))
    assert dict(vars(cls)) == before
