"""The isolated reader process: a crash, a hang, a CPU spin or a memory blow-up on one input is a typed error
for that input, the parent lives on and the next call gets a fresh worker; the worker holds no secret, no
descriptor but its channel, and cannot write a byte."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rd_assets.core.errors import ReaderCrashedError, ReaderLimitExceededError
from rd_assets.core.isolation import IsolatedReader, ReaderLimits
from rd_assets_tests import isolation_probes as probes
from rd_assets_tests.conftest import REPO_ROOT
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec, growing_timeline, write_task

HIST = [ExperimentSpec(factors=[FactorSpec(name)], decision=True) for name in ("Mom_10D", "Rev_5D", "Corr_10D")]


@pytest.fixture
def reader(request: pytest.FixtureRequest) -> Iterator[IsolatedReader]:
    limits = getattr(request, "param", None) or ReaderLimits()
    made = IsolatedReader(limits)
    yield made
    made.close()


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGFPE, signal.SIGBUS, signal.SIGABRT])
def test_a_reader_killed_by_a_signal_is_a_typed_error_and_the_next_call_works(
    reader: IsolatedReader, sig: signal.Signals
) -> None:
    with pytest.raises(ReaderCrashedError, match=sig.name) as info:
        reader.run(probes.die_of, int(sig), path="__session__/3/4_record")
    assert info.value.path == "__session__/3/4_record"
    assert reader.run(probes.allocate, 1) == 1 << 20
    assert reader.started == 2


@pytest.mark.parametrize("reader", [ReaderLimits(timeout_seconds=1.0)], indirect=True)
def test_a_reader_that_hangs_is_stopped_after_its_wall_time(reader: IsolatedReader) -> None:
    started = time.monotonic()
    with pytest.raises(ReaderLimitExceededError, match="longer than 1 s"):
        reader.run(probes.sleep_for, 60.0)
    assert time.monotonic() - started < 10
    assert reader.pid is None  # killed, not left behind
    assert reader.run(probes.sleep_for, 0.0) == 0


@pytest.mark.parametrize("reader", [ReaderLimits(cpu_seconds=1, timeout_seconds=60.0)], indirect=True)
def test_a_reader_that_spins_hits_its_cpu_limit(reader: IsolatedReader) -> None:
    with pytest.raises(ReaderLimitExceededError, match="SIGXCPU"):
        reader.run(probes.spin)
    assert reader.run(probes.allocate, 1) == 1 << 20


@pytest.mark.parametrize("reader", [ReaderLimits(memory_mb=128)], indirect=True)
def test_a_reader_that_exhausts_its_memory_is_a_typed_limit_and_starts_afresh(reader: IsolatedReader) -> None:
    with pytest.raises(ReaderLimitExceededError, match="ran out of its 128 MiB"):
        reader.run(probes.allocate, 1024)
    assert reader.run(probes.allocate, 16) == 16 << 20
    assert reader.started == 2  # a MemoryError retires the worker: its heap may be unusable


def test_the_reader_inherits_no_secret(reader: IsolatedReader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RD_ASSETS_SIGNING_KEY", "parent-secret")
    monkeypatch.setenv("RD_ASSETS_API_TOKEN", "parent-token")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    assert reader.run(probes.environment) == ["LANG", "LC_ALL", "OMP_NUM_THREADS", "PATH"]


def test_the_reader_holds_no_descriptor_but_its_channel(reader: IsolatedReader, tmp_path: Path) -> None:
    with open(tmp_path / "parent-file", "wb"):  # a descriptor the parent holds while calling
        held = reader.run(probes.open_descriptors)
    assert all(p.startswith(("socket:", "/proc/")) for p in held), held
    assert sum(p.startswith("socket:") for p in held) == 1


def test_the_reader_can_never_gain_privileges_nor_be_traced(reader: IsolatedReader) -> None:
    status = reader.run(probes.process_status)
    assert status["NoNewPrivs"].strip() == "1"  # no setuid/capability gain through any exec
    assert status["Dumpable"] == "0"  # other processes of the same user cannot ptrace it or read its memory


def test_the_reader_cannot_write_a_byte(reader: IsolatedReader, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    assert reader.run(probes.write_bytes, str(target)) == "refused: File too large"
    assert target.read_bytes() == b""


def _memo_bomb() -> bytes:
    """``LONG_BINPUT 2**26``: CPython grows its memo table to 2**27 slots (1 GiB) for one opcode."""
    return b"\x80\x04N" + pickle.LONG_BINPUT + (1 << 26).to_bytes(4, "little") + b"."


def test_a_snapshot_over_the_memory_limit_is_skipped_and_the_task_still_resolves(log_root: Path) -> None:
    """End to end through the CLI: the newest snapshot exhausts the reader; it is skipped with a typed reason,
    the rest of the task resolves, and the parent process is unharmed."""
    log_dir = write_task(log_root, "2026-02-01_00-00-00-000001", growing_timeline(3), hist=HIST)
    bomb = log_dir / "__session__" / "9" / "0_direct_exp_gen"
    bomb.parent.mkdir()
    bomb.write_bytes(_memo_bomb())
    env = {**os.environ, "RD_ASSETS_READER_MEMORY_MB": "256"}
    done = subprocess.run(
        [sys.executable, "-m", "rd_assets.cli", "inspect", str(log_dir), "--json", "--no-index"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    skipped = {c["relpath"]: c["error"] for c in result["candidates"] if c["error"]}
    assert skipped["__session__/9/0_direct_exp_gen"]["code"] == "reader_limit_exceeded"
    assert result["ok"] and result["chosen_snapshot"] == "__session__/2/3_feedback"


def _crafted_model_strings() -> dict[str, str]:
    """A genuine LightGBM model string, then the two edits that kill LightGBM's C++ parser."""
    import lightgbm
    import numpy as np

    rng = np.random.default_rng(0)
    booster = lightgbm.train(
        {"verbose": -1, "num_leaves": 4}, lightgbm.Dataset(rng.random((200, 5)), rng.random(200)), num_boost_round=3
    )
    text = booster.model_to_string()
    return {
        "genuine": text,
        "num_tree_per_iteration=0 (SIGFPE)": text.replace("num_tree_per_iteration=1", "num_tree_per_iteration=0"),
        "negative tree_sizes (SIGABRT)": text.replace("tree_sizes=", "tree_sizes=-"),
    }


def test_a_crafted_model_string_cannot_kill_verify() -> None:
    """``model.txt`` is the pickled Booster's string verbatim; LightGBM dies on crafted ones, the reader does."""
    from rd_assets.core.bundle.verify import _load_model_txt

    strings = _crafted_model_strings()
    problems, note = _load_model_txt(strings["genuine"].encode(), None)
    assert problems == [] and "5 features, 3 trees" in note
    for name, text in strings.items():
        if name == "genuine":
            continue
        problems, note = _load_model_txt(text.encode(), None)
        assert note == "lightgbm load failed", name
        assert "reader_crashed" in problems[0] and name.split("(")[1].rstrip(")") in problems[0], problems


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("-" * 1_000_000 + "1", "reader_limit_exceeded"),
        ("a." * 1_000_000 + "b", "reader_limit_exceeded"),
        ("def calculate_F(:\n", "syntax error at line 1"),
    ],
)
def test_hostile_factor_code_cannot_exhaust_the_parser(code: str, expected: str) -> None:
    """``ast.parse`` of a pickle's code runs in the reader: parser exhaustion is a reason, not a traceback."""
    from rd_assets.core.artifacts.factor_code import code_problem

    problem = code_problem("F", code, None)
    assert problem is not None and expected in problem


_FAKE_WORKER = """
import json, os, socket, struct, sys, time
sock = socket.socket(fileno=int(sys.argv[2]))
MODE = {mode!r}
data = sock.recv(65536)
request = json.loads(data[8:])
def send(payload, fds=()):
    frame = struct.pack("<Q", len(payload)) + payload
    socket.send_fds(sock, [frame], list(fds)) if fds else sock.sendall(frame)
ok = {{"ok": True, "id": request["id"]}}
if MODE == "list_status":
    send(b"[1, 2]\\n")
elif MODE == "wrong_id":
    send(json.dumps({{"ok": True, "id": -1}}).encode() + b"\\n0")
elif MODE == "error_not_text":
    send(json.dumps({{"ok": False, "id": request["id"], "error": [1]}}).encode())
elif MODE == "wrong_type":
    send(json.dumps(ok).encode() + b"\\n" + b'"many"')
elif MODE == "huge":
    sock.sendall(struct.pack("<Q", 3 << 30) + b"x" * 1024)
    time.sleep(30)
elif MODE == "fds":
    send(json.dumps(ok).encode() + b"\\n0", fds=[os.open("/dev/null", os.O_RDONLY) for _ in range(4)])
elif MODE == "trickle":
    for _ in range(100):
        sock.sendall(b"\\x00")
        time.sleep(0.5)
elif MODE == "hang_up_alive":
    sock.shutdown(socket.SHUT_RDWR)
    time.sleep(60)
time.sleep(60)
"""


class _Misbehaving(IsolatedReader):
    def __init__(self, mode: str) -> None:
        super().__init__(ReaderLimits(timeout_seconds=2.0))
        self.boot = _FAKE_WORKER.format(mode=mode)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("list_status", ReaderCrashedError),
        ("wrong_id", ReaderCrashedError),
        ("error_not_text", ReaderCrashedError),
        ("wrong_type", ReaderCrashedError),
        ("huge", ReaderCrashedError),
        ("fds", ReaderCrashedError),
        ("trickle", ReaderLimitExceededError),
        ("hang_up_alive", ReaderCrashedError),
    ],
)
def test_a_worker_that_breaks_the_channel_is_a_typed_error_and_is_retired(mode: str, error: type) -> None:
    """Found by the red-team pass: the parent must not trust the worker's answer (shape, id, size, descriptors,
    pace) any more than the worker trusts the file."""
    reader = _Misbehaving(mode)
    fds_before = _open_fds()
    started = time.monotonic()
    try:
        with pytest.raises(error):
            reader.run(probes.allocate, 1)
        assert time.monotonic() - started < 10  # one deadline per call, however the bytes trickle
        assert reader.pid is None  # retired: a channel in an unknown state is never asked again
    finally:
        reader.close()
    assert _open_fds() <= fds_before


def test_an_interrupted_call_never_leaves_its_answer_for_the_next_one(reader: IsolatedReader) -> None:
    """Red-team finding: Ctrl-C during a call left the answer queued; the next call read it as its own."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(KeyboardInterrupt):
            reader.run(probes.sleep_for, 1.5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(1.5)
    assert reader.run(probes.allocate, 2) == 2 << 20
    assert reader.run(probes.environment) == ["LANG", "LC_ALL", "OMP_NUM_THREADS", "PATH"]
