"""Red-team findings about session files, one regression test each (issue 9 items 2, 4, 6 and 7).

Signatures: a configured key means signed sessions; a MAC is checked over the whole file before one byte is
unpickled; a newer snapshot that fails verification makes the bundle not ready. Files: nothing is followed
through a symlink, nothing waits on a FIFO, ``__session__`` and its loop folders must be real folders.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from rd_assets.core.bundle.extract import ExtractOutcome, extract_task
from rd_assets.core.contracts.models import SnapshotSelection
from rd_assets.core.errors import InvalidLogDirError, NoReadableSnapshotError, UnreadableSnapshotError
from rd_assets.core.session.file_format import SIGNED_HEADER_LEN, load_session_file
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.snapshots import discover, open_chosen, select_snapshot
from rd_assets_tests.bundle_testkit import GeneratedTask, generated_task
from rd_assets_tests.hostile_pickles import NESTING_GADGETS
from rd_assets_tests.rdagent_fixtures import (
    RDAGENT_1_STEPS,
    ExperimentSpec,
    FactorSpec,
    build_loop,
    growing_timeline,
    snapshot_bytes,
    write_task,
)

KEY = "red-team-key"
HIST = [
    ExperimentSpec(factors=[FactorSpec("PriceRange_20D")], decision=True),
    ExperimentSpec(factors=[FactorSpec("Momentum_10D"), FactorSpec("Volatility_5D")], decision=True),
]


def signed_task(tmp_path: Path) -> GeneratedTask:
    task = generated_task(tmp_path)
    shutil.rmtree(task.log_dir)
    write_task(tmp_path / "log", task.log_dir.name, growing_timeline(2, RDAGENT_1_STEPS), hist=HIST, signing_key=KEY)
    return task


def extract(task: GeneratedTask, store: Path, **kwargs: object) -> ExtractOutcome:
    return extract_task(task.log_dir, store=store, index=SnapshotIndex(None), path_map=task.path_map, **kwargs)  # type: ignore[arg-type]


def _selection(log_dir: Path, key: str | None) -> SnapshotSelection:
    outcome = select_snapshot(log_dir, index=SnapshotIndex(None), signing_key=key)
    if outcome.body is not None:
        outcome.body.close()
    return outcome.selection


def test_a_plain_file_with_a_longer_hist_is_not_chosen_when_a_key_is_configured(tmp_path: Path) -> None:
    task = signed_task(tmp_path)
    longer = [*HIST, ExperimentSpec(factors=[FactorSpec("Forged_1D")], decision=True)]
    forged = task.log_dir / "__session__" / "9" / "4_record"
    forged.parent.mkdir()
    forged.write_bytes(snapshot_bytes(build_loop(longer, loop_idx=9)))  # plain: no MAC to check
    manifest = extract(task, tmp_path / "store", signing_key=KEY, allow_incomplete=True).content.manifest
    assert manifest.session_anchor.chosen_session_file != "__session__/9/4_record"
    skipped = {c.relpath: c.error.code for c in manifest.session_anchor.candidates if c.error}
    assert skipped["__session__/9/4_record"] == "unsigned_snapshot"
    assert not manifest.selection_ready  # a newer file failed the policy: the chosen state may be stale
    assert manifest.reasons[0].startswith("newer_snapshot_unreadable: __session__/9/4_record")


def test_a_signed_file_with_a_bad_mac_is_never_unpickled(tmp_path: Path) -> None:
    """The payload would segfault the old reader on deallocation; with a garbage MAC it is not even parsed."""
    body = NESTING_GADGETS["nested-deque"]
    path = tmp_path / "0_direct_exp_gen"
    path.write_bytes(b"RDAGENT_SIGNED_PICKLE_V1\n" + b"\x00" * 32 + body)
    with pytest.raises(Exception) as info:
        load_session_file(path, signing_key=KEY)
    assert getattr(info.value, "code", None) == "signature_mismatch"


def test_one_flipped_byte_in_the_newest_signed_snapshot_makes_the_bundle_not_ready(tmp_path: Path) -> None:
    task = signed_task(tmp_path)
    store = tmp_path / "store"
    first = extract(task, store, signing_key=KEY, allow_incomplete=True).content.manifest
    newest = task.log_dir / first.session_anchor.chosen_session_file
    data = bytearray(newest.read_bytes())
    data[SIGNED_HEADER_LEN + 10] ^= 0x01
    newest.write_bytes(bytes(data))
    again = extract(task, store, signing_key=KEY, allow_incomplete=True).content.manifest
    assert not again.selection_ready
    assert again.session_anchor.chosen_session_file != first.session_anchor.chosen_session_file
    assert any(r.startswith("newer_snapshot_unreadable") and "signature_mismatch" in r for r in again.reasons)


def test_a_snapshot_swapped_for_a_fifo_after_discovery_is_refused_without_waiting(log_root: Path) -> None:
    log_dir = write_task(log_root, "2026-02-02_00-00-00-000001", growing_timeline(2), hist=HIST)
    selection = _selection(log_dir, None)
    chosen = log_dir / selection.chosen_snapshot
    chosen.unlink()
    os.mkfifo(chosen)
    outcome: list[BaseException] = []

    def reopen() -> None:
        try:
            open_chosen(log_dir, selection.chosen_snapshot)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=reopen, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "opening a FIFO snapshot blocked"
    assert isinstance(outcome[0], UnreadableSnapshotError) and "FIFO" in outcome[0].message


def test_a_snapshot_swapped_for_a_symlink_is_never_followed(log_root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the log dir")
    log_dir = write_task(log_root, "2026-02-02_00-00-00-000002", growing_timeline(2), hist=HIST)
    selection = _selection(log_dir, None)
    chosen = log_dir / selection.chosen_snapshot
    chosen.unlink()
    chosen.symlink_to(secret)
    with pytest.raises(UnreadableSnapshotError, match="symlink"):
        open_chosen(log_dir, selection.chosen_snapshot)


def test_a_loop_folder_swapped_for_a_symlink_is_never_followed(log_root: Path, tmp_path: Path) -> None:
    log_dir = write_task(log_root, "2026-02-02_00-00-00-000003", growing_timeline(2), hist=HIST)
    selection = _selection(log_dir, None)
    loop = (log_dir / selection.chosen_snapshot).parent
    elsewhere = tmp_path / "elsewhere"
    shutil.move(loop, elsewhere)
    loop.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnreadableSnapshotError, match="symlink"):
        open_chosen(log_dir, selection.chosen_snapshot)


def test_a_session_folder_that_is_a_symlink_is_refused(log_root: Path, tmp_path: Path) -> None:
    log_dir = write_task(log_root, "2026-02-02_00-00-00-000004", growing_timeline(2), hist=HIST)
    real = tmp_path / "real_session"
    shutil.move(log_dir / "__session__", real)
    (log_dir / "__session__").symlink_to(real, target_is_directory=True)
    with pytest.raises(InvalidLogDirError, match="symlink"):
        discover(log_dir)


def test_a_loop_folder_named_with_a_non_ascii_digit_is_ignored(log_root: Path) -> None:
    log_dir = write_task(log_root, "2026-02-02_00-00-00-000005", growing_timeline(2), hist=HIST)
    odd = log_dir / "__session__" / "³"
    odd.mkdir()
    shutil.copyfile(log_dir / _selection(log_dir, None).chosen_snapshot, odd / "0_direct_exp_gen")
    assert all("³" not in f.relpath for f in discover(log_dir))


def test_a_file_name_that_is_not_utf8_is_listed_as_skipped(log_root: Path) -> None:
    log_dir = write_task(log_root, "2026-02-02_00-00-00-000006", growing_timeline(2), hist=HIST)
    loop = log_dir / "__session__" / "1"
    raw = os.fsencode(loop) + b"/9_rec\xffrd"
    with open(raw, "wb") as fh:
        fh.write(b"never opened")
    selection = _selection(log_dir, None)
    [odd] = [c for c in selection.candidates if c.step_idx == 9]
    assert odd.error is not None and "not valid UTF-8" in odd.error.message
    assert odd.relpath == "__session__/1/9_rec\\xffrd"
    selection.model_dump_json()  # the whole selection stays encodable


def test_a_loop_folder_that_cannot_be_listed_fails_the_task_loudly(tmp_path: Path) -> None:
    """A folder that cannot be listed may hold the newest snapshot: never choose without it."""
    from rd_assets.core.session.snapshots import _listing

    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    fd = os.open(not_a_folder, os.O_RDONLY)
    try:
        with pytest.raises(InvalidLogDirError, match="newest snapshot may be inside"):
            _listing(fd, not_a_folder, None)
    finally:
        os.close(fd)


def test_a_loop_folder_swapped_for_a_symlink_during_discovery_never_lists_outside(
    log_root: Path, tmp_path: Path
) -> None:
    """Red-team race: ``__session__/0`` flips between a real folder and a symlink to a private folder while
    snapshots are discovered; nothing of the private folder may ever appear among the candidates."""
    log_dir = write_task(log_root, "2026-02-02_00-00-00-000007", growing_timeline(2), hist=HIST)
    private = tmp_path / "private"
    private.mkdir()
    (private / "7_private_payroll").write_bytes(b"secret")
    loop = log_dir / "__session__" / "0"
    real, link = log_dir / "real0", log_dir / "link0"
    shutil.move(loop, real)
    link.symlink_to(private, target_is_directory=True)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for source in (real, link):
                os.rename(source, loop)
                os.rename(loop, source)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    seen: set[str] = set()
    try:
        for _ in range(400):
            try:
                seen |= {f.step_name for f in discover(log_dir)}
            except InvalidLogDirError:
                continue  # the swap was caught: refused, loudly
    finally:
        stop.set()
        flipper.join(5)
    assert "private_payroll" not in seen


def test_every_snapshot_refused_under_a_key_is_no_readable_snapshot(tmp_path: Path) -> None:
    plain = generated_task(tmp_path)
    with pytest.raises(NoReadableSnapshotError, match="unsigned_snapshot"):
        extract(plain, tmp_path / "store", signing_key=KEY)


def test_a_same_size_file_swapped_in_with_its_mtime_restored_is_read_again(tmp_path: Path) -> None:
    """Red-team finding: the index kept a signed file's 'verified' summary for a plain file of the same size
    whose mtime was set back. The file's inode and ctime are part of its identity now."""
    task = signed_task(tmp_path)
    index = SnapshotIndex(tmp_path / "index.sqlite")
    try:
        first = select_snapshot(task.log_dir, index=index, signing_key=KEY)
        if first.body is not None:
            first.body.close()
        chosen = task.log_dir / first.selection.chosen_snapshot
        st = chosen.stat()
        plain = snapshot_bytes(build_loop(HIST, loop_idx=1))
        chosen.write_bytes(plain[: st.st_size].ljust(st.st_size, b"\x00"))
        os.utime(chosen, ns=(st.st_atime_ns, st.st_mtime_ns))
        again = select_snapshot(task.log_dir, index=index, signing_key=KEY)
        if again.body is not None:
            again.body.close()
    finally:
        index.close()
    swapped = next(c for c in again.selection.candidates if c.relpath == first.selection.chosen_snapshot)
    assert swapped.error is not None and swapped.error.code == "unsigned_snapshot"
    assert again.unpickled >= 1
