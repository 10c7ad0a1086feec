"""Snapshot discovery and selection on generated log dirs with genuine rdagent class paths."""

from __future__ import annotations

import gc
import io
import os
import pickle
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from rd_assets.core.errors import InvalidLogDirError, NoReadableSnapshotError, NoSnapshotError, UnreadableSnapshotError
from rd_assets.core.isolation import in_process
from rd_assets.core.samples import SAMPLES_DIR
from rd_assets.core.session import reading as session_reading
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.file_format import load_body
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.snapshots import TIE_RULE, discover, open_chosen, select_snapshot
from rd_assets.core.session.task_reader import read_task
from rd_assets.core.session.unpickler import RestrictedUnpickler
from rd_assets.core.trace.experiments import hist_of
from rd_assets_tests.rdagent_fixtures import (
    FACTOR_LOOP,
    MAIN_FACTOR_LOOP,
    MP_MAIN_FACTOR_LOOP,
    QUANT_LOOP,
    RDAGENT_1_STEPS,
    ExperimentSpec,
    FactorSpec,
    Snap,
    build_loop,
    genuine_modules,
    growing_timeline,
    loop_timeline,
    snapshot_bytes,
    write_task,
)

TASK = "2026-01-09_16-11-14-215581"


def accepted(*names: str, **kw: Any) -> ExperimentSpec:
    return ExperimentSpec(factors=[FactorSpec(n) for n in names], decision=True, **kw)


def rejected(*names: str, **kw: Any) -> ExperimentSpec:
    return ExperimentSpec(factors=[FactorSpec(n) for n in names], decision=False, **kw)


HIST = [accepted("Mom_10D"), rejected("Vol_5D"), accepted("Rev_5D"), accepted("Corr_10D")]


def by_relpath(reading_or_selection: Any) -> dict[str, Any]:
    sel = getattr(reading_or_selection, "selection", reading_or_selection)
    return {c.relpath: c for c in sel.candidates}


def snapshots_steps() -> list[str]:
    return ["0_direct_exp_gen", "1_coding", "2_running", "3_feedback"]


def test_resumed_run_with_shorter_hist_in_higher_loops(log_root: Path) -> None:
    """Real shape: hist lengths per loop folder 0, 0, 3, 3, 2, 2 -> the longest hist wins, not the last folder."""
    log_dir = write_task(log_root, TASK, loop_timeline([0, 0, 3, 3, 2, 2]), hist=HIST)
    reading = read_task(log_dir, index=SnapshotIndex(None))
    sel = reading.selection
    assert sel.hist_len == 3
    assert sel.chosen_snapshot == "__session__/3/3_feedback"
    assert (sel.chosen_loop_idx, sel.chosen_step_idx) == (3, 3)
    assert sel.tied_snapshots == [f"__session__/{loop}/{s}" for loop in (2, 3) for s in snapshots_steps()]
    assert sel.tie_rule == TIE_RULE
    assert len(sel.candidates) == 24
    assert {c.hist_len for c in sel.candidates if c.loop_idx >= 4} == {2}
    assert reading.anchor is not None
    assert reading.anchor.last_sota_factor_index == 2
    assert [f.name for f in reading.anchor.sota_factors] == ["Mom_10D", "Rev_5D"]


def test_ties_go_to_the_highest_loop_and_step(log_root: Path) -> None:
    timeline = [
        Snap(0, 0, "direct_exp_gen", 2),
        Snap(1, 4, "record", 2),
        Snap(1, 10, "late", 2),
        Snap(2, 1, "coding", 1),
    ]
    log_dir = write_task(log_root, TASK, timeline, hist=HIST)
    sel = select_snapshot(log_dir, index=SnapshotIndex(None)).selection
    assert sel.chosen_snapshot == "__session__/1/10_late"
    assert sel.tied_snapshots == ["__session__/0/0_direct_exp_gen", "__session__/1/4_record", "__session__/1/10_late"]


def test_step_order_is_numeric_not_lexical(log_root: Path) -> None:
    timeline = [Snap(2, 2, "running", 1), Snap(10, 0, "direct_exp_gen", 1), Snap(9, 11, "x", 1)]
    log_dir = write_task(log_root, TASK, timeline, hist=HIST)
    assert [s.relpath for s in discover(log_dir)] == [
        "__session__/2/2_running",
        "__session__/9/11_x",
        "__session__/10/0_direct_exp_gen",
    ]
    assert (
        select_snapshot(log_dir, index=SnapshotIndex(None)).selection.chosen_snapshot
        == "__session__/10/0_direct_exp_gen"
    )


def test_truncated_longest_snapshot_is_skipped_and_the_rest_still_count(log_root: Path) -> None:
    timeline = [*growing_timeline(3), Snap(3, 0, "direct_exp_gen", 4, truncate_to=5000)]
    log_dir = write_task(log_root, TASK, timeline, hist=HIST)
    reading = read_task(log_dir, index=SnapshotIndex(None))
    cands = by_relpath(reading)
    bad = cands["__session__/3/0_direct_exp_gen"]
    assert bad.hist_len is None
    assert bad.error is not None and bad.error.code == "unreadable_snapshot"
    assert bad.error.path == "__session__/3/0_direct_exp_gen"
    assert reading.selection.skipped == 1
    assert reading.selection.chosen_snapshot == "__session__/2/3_feedback"
    assert reading.selection.hist_len == 3
    assert reading.anchor is not None and reading.anchor.last_sota_factor_index == 2


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty file"),
        (b"RDAGENT_SIGNED_PICKLE_V1\n" + b"\0" * 10, "signed file truncated"),
        (b"this is not a pickle at all", "not a readable pickle"),
        (pickle.dumps({"trace": None}, protocol=4), "no trace.hist"),
    ],
)
def test_unreadable_files_are_skipped_with_their_reason(log_root: Path, raw: bytes, reason: str) -> None:
    timeline = [Snap(0, 3, "feedback", 1), Snap(1, 0, "direct_exp_gen", 0, raw=raw)]
    log_dir = write_task(log_root, TASK, timeline, hist=HIST)
    sel = select_snapshot(log_dir, index=SnapshotIndex(None)).selection
    bad = by_relpath(sel)["__session__/1/0_direct_exp_gen"]
    assert bad.error is not None and bad.error.code == "unreadable_snapshot"
    assert reason in bad.error.message
    assert sel.chosen_snapshot == "__session__/0/3_feedback"


def test_every_snapshot_unreadable_is_no_snapshot(log_root: Path) -> None:
    timeline = [Snap(0, 0, "direct_exp_gen", 0, raw=b""), Snap(0, 1, "coding", 1, truncate_to=100)]
    log_dir = write_task(log_root, TASK, timeline, hist=HIST)
    with pytest.raises(NoSnapshotError) as info:
        select_snapshot(log_dir, index=SnapshotIndex(None))
    assert info.value.code == "no_snapshot"
    assert "unreadable_snapshot" in info.value.message
    assert isinstance(info.value, NoReadableSnapshotError)
    assert [(c.relpath, c.error.code) for c in info.value.candidates] == [
        ("__session__/0/0_direct_exp_gen", "unreadable_snapshot"),
        ("__session__/0/1_coding", "unreadable_snapshot"),
    ]


def test_empty_session_dir_and_missing_log_dir(log_root: Path) -> None:
    empty = log_root / TASK
    (empty / "__session__").mkdir(parents=True)
    with pytest.raises(NoSnapshotError):
        select_snapshot(empty, index=SnapshotIndex(None))
    no_session = log_root / "2026-01-01_00-00-00-000000"
    no_session.mkdir()
    with pytest.raises(NoSnapshotError):
        select_snapshot(no_session, index=SnapshotIndex(None))
    with pytest.raises(InvalidLogDirError) as info:
        select_snapshot(log_root / "does-not-exist", index=SnapshotIndex(None))
    assert info.value.code == "invalid_log_dir"


def test_discover_considers_only_session_int_int_name_files(log_root: Path) -> None:
    log_dir = write_task(log_root, TASK, [Snap(0, 3, "feedback", 1)], hist=HIST)
    session = log_dir / "__session__"
    good = session / "0" / "3_feedback"
    (session / "0" / "notes.txt").write_text("x")
    (session / "0" / "feedback").write_bytes(good.read_bytes())
    (session / "0" / "4_dir").mkdir()
    (session / "0" / "5_link").symlink_to(good)
    (session / "abc").mkdir()
    (session / "abc" / "0_direct_exp_gen").write_bytes(good.read_bytes())
    (session / "7").write_text("a file, not a loop folder")
    (log_dir / "0_direct_exp_gen").write_bytes(good.read_bytes())
    (log_dir / "other_logs").mkdir()
    (log_dir / "other_logs" / "1_coding").write_bytes(good.read_bytes())
    assert [s.relpath for s in discover(log_dir)] == ["__session__/0/3_feedback"]


@pytest.mark.parametrize("loop_path", [FACTOR_LOOP, QUANT_LOOP, MAIN_FACTOR_LOOP, MP_MAIN_FACTOR_LOOP])
def test_loop_class_variants(log_root: Path, loop_path: str) -> None:
    log_dir = write_task(log_root, TASK, growing_timeline(2), hist=HIST, loop_path=loop_path)
    reading = read_task(log_dir, index=SnapshotIndex(None))
    assert reading.selection.loop_class == loop_path
    assert reading.anchor is not None and reading.anchor.last_sota_factor_index == 0


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_pickle_protocols_with_weights_and_metrics(log_root: Path, protocol: int) -> None:
    """Protocols 0-2 encode bytes as ``_codecs.encode(str, 'latin1')``: weights and metrics must still load."""
    hist = [accepted("Mom_10D", weights={"model.pkl": b"\x80\x04weights\xff"}, metrics={"IC": 0.5}), *HIST[1:]]
    log_dir = write_task(log_root, TASK, growing_timeline(3), hist=hist, protocol=protocol)
    reading = read_task(log_dir, index=SnapshotIndex(None))
    assert reading.selection.hist_len == 3
    assert reading.anchor is not None and [f.name for f in reading.anchor.sota_factors] == ["Mom_10D", "Rev_5D"]
    assert reading.anchor.sota_factors[0].metrics == {"IC": 0.5}
    assert reading.anchor.based_experiments[1].hist_index == 0


def test_signed_generated_task(log_root: Path) -> None:
    log_dir = write_task(log_root, TASK, growing_timeline(3, RDAGENT_1_STEPS), hist=HIST, signing_key="k1")
    good = read_task(log_dir, index=SnapshotIndex(None), signing_key="k1")
    assert good.selection.signature == "verified" and good.selection.file_format == "signed"
    assert good.selection.chosen_snapshot == "__session__/2/4_record"
    unverified = read_task(log_dir, index=SnapshotIndex(None))
    assert unverified.selection.signature == "signature not verified"
    with pytest.raises(NoSnapshotError, match="signature_mismatch"):
        read_task(log_dir, index=SnapshotIndex(None), signing_key="k2")


def test_tampered_signed_snapshot_is_skipped_others_resolve(log_root: Path) -> None:
    log_dir = write_task(log_root, TASK, growing_timeline(3), hist=HIST, signing_key="k1")
    target = log_dir / "__session__" / "2" / "3_feedback"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    sel = read_task(log_dir, index=SnapshotIndex(None), signing_key="k1").selection
    assert by_relpath(sel)["__session__/2/3_feedback"].error.code == "signature_mismatch"
    assert sel.chosen_snapshot == "__session__/2/2_running"
    assert sel.hist_len == 2


def test_selection_holds_at_most_one_unpickled_snapshot_besides_the_one_being_read(
    log_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streaming: before each new unpickle, only the current best may still be alive (in the reader's memory)."""
    log_dir = write_task(log_root, TASK, loop_timeline([1, 3, 2, 4, 0]), hist=HIST)
    alive: list[weakref.ref[Any]] = []
    peak = 0
    real_load = session_reading.load_body

    def tracking_load(*args: Any, **kwargs: Any) -> Any:
        nonlocal peak
        gc.collect()
        peak = max(peak, sum(1 for ref in alive if ref() is not None))
        obj = real_load(*args, **kwargs)
        alive.append(weakref.ref(obj))
        return obj

    monkeypatch.setattr(session_reading, "load_body", tracking_load)
    with in_process():
        outcome = select_snapshot(log_dir, index=SnapshotIndex(None))
    assert len(alive) == 20
    assert peak == 1
    assert outcome.selection.chosen_snapshot == "__session__/3/3_feedback"


def test_candidates_report_size_and_mtime(log_root: Path) -> None:
    log_dir = write_task(log_root, TASK, growing_timeline(2), hist=HIST)
    for cand in select_snapshot(log_dir, index=SnapshotIndex(None)).selection.candidates:
        st = os.stat(log_dir / cand.relpath)
        assert (cand.size, cand.mtime_ns) == (st.st_size, st.st_mtime_ns)
        assert cand.file_format == "plain" and cand.signature == "unsigned"


def test_snapshot_bytes_are_deterministic() -> None:
    """Same specs -> same bytes: generated fixtures are reproducible across runs."""
    assert snapshot_bytes(build_loop(HIST)) == snapshot_bytes(build_loop(HIST))


def test_fixture_globals_are_genuine_rdagent_globals() -> None:
    """Every rdagent global a generated snapshot references is one the real rdagent writes (samples' list)."""
    genuine = set((SAMPLES_DIR / "rdagent_globals.txt").read_text().split())
    seen: set[str] = set()

    class Recording(RestrictedUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            seen.add(f"{module}:{name}")
            return super().find_class(module, name)

    hist = [accepted("A", "B", metrics={"IC": 0.1}), ExperimentSpec(kind="model", decision=True), rejected("C")]
    for loop_path in (FACTOR_LOOP, QUANT_LOOP):
        Recording(io.BytesIO(snapshot_bytes(build_loop(hist, loop_path=loop_path, task_run_id="r")))).load()
    rdagent = {g for g in seen if g.startswith("rdagent.")}
    assert len(rdagent) >= 12
    assert rdagent <= genuine, rdagent - genuine


def test_fixture_leaves_no_module_behind(log_root: Path) -> None:
    mp_main_before = sys.modules.get("__mp_main__")  # importing multiprocessing.spawn (dagster does) aliases __main__
    write_task(log_root, TASK, growing_timeline(1), hist=HIST, loop_path=MAIN_FACTOR_LOOP)
    write_task(log_root, TASK + "1", growing_timeline(1), hist=HIST, loop_path=MP_MAIN_FACTOR_LOOP)
    assert not any(name == "rdagent" or name.startswith("rdagent.") for name in sys.modules)
    assert "__mp_main__" not in sys.modules or not hasattr(sys.modules["__mp_main__"], "FactorRDLoop")
    assert not hasattr(sys.modules["__main__"], "FactorRDLoop")
    with genuine_modules():  # nested use (a benchmark's naive baseline) still pickles and loads genuinely
        data = snapshot_bytes(build_loop(HIST, loop_path=MP_MAIN_FACTOR_LOOP))
        assert type(pickle.loads(data)).__module__ == "__mp_main__"
    assert "rdagent" not in sys.modules and sys.modules.get("__mp_main__") is mp_main_before


def test_open_chosen_stats_only_the_chosen_file(log_root: Path) -> None:
    """Re-reading the chosen snapshot must not re-list ``__session__`` (slow mounts) nor follow odd paths."""
    log_dir = write_task(log_root, TASK, growing_timeline(3), hist=HIST)
    access = AccessLog()
    with open_chosen(log_dir, "__session__/2/3_feedback", access=access) as body:
        assert len(hist_of(load_body(body))) == 3
    assert access.listed_paths == []
    assert access.opened_paths == [str(log_dir.resolve() / "__session__/2/3_feedback")]


@pytest.mark.parametrize(
    "relpath",
    ["__session__/../__session__/2/3_feedback", "other/2/3_feedback", "__session__/2/feedback", "/etc/passwd"],
)
def test_open_chosen_refuses_other_paths(log_root: Path, relpath: str) -> None:
    log_dir = write_task(log_root, TASK, growing_timeline(3), hist=HIST)
    with pytest.raises(UnreadableSnapshotError, match="relpath"):
        open_chosen(log_dir, relpath)


def test_open_chosen_refuses_symlinks_and_vanished_files(log_root: Path) -> None:
    log_dir = write_task(log_root, TASK, growing_timeline(2), hist=HIST)
    session = log_dir / "__session__"
    (session / "1" / "9_link").symlink_to(session / "1" / "3_feedback")
    (session / "7").symlink_to(session / "1", target_is_directory=True)
    for relpath in ("__session__/1/9_link", "__session__/7/3_feedback"):
        with pytest.raises(UnreadableSnapshotError, match="symlink"):
            open_chosen(log_dir, relpath)
    with pytest.raises(UnreadableSnapshotError, match="No such file"):
        open_chosen(log_dir, "__session__/5/3_feedback")
