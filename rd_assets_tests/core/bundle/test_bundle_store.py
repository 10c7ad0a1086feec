"""The versioned, symlink-swapped bundle store: no-op republish, pruning, leftovers, refusals, concurrency."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.bundle.assemble import BundleContent
from rd_assets.core.bundle.extract import extract_task
from rd_assets.core.bundle.store import (
    LINK_TMP_PREFIX,
    TMP_PREFIX,
    VERSIONS_DIR,
    check_relpath,
    current_version_dir,
    extraction_lock,
    publish_bundle,
)
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import MANIFEST
from rd_assets.core.errors import BundleStoreError, InvalidLogDirError
from rd_assets.core.samples import SAMPLE_PATH_MAP, SAMPLES_DIR
from rd_assets.core.session.index import SnapshotIndex
from rd_assets_tests.bundle_testkit import rehashed, sample_parts, tree_bytes, with_note
from rd_assets_tests.conftest import PLAIN_TASK


@pytest.fixture(scope="module")
def content() -> BundleContent:
    return sample_parts(PLAIN_TASK).assemble(generated_at_utc="2026-03-02T10:00:00.000000Z")


def _versions(store: Path) -> list[str]:
    return sorted(p.name for p in (store / VERSIONS_DIR / PLAIN_TASK).iterdir() if p.name.startswith("v"))


def test_publish_writes_a_version_and_points_a_relative_symlink_at_it(tmp_path: Path, content: BundleContent) -> None:
    store = tmp_path / "store"
    result = publish_bundle(store, content)
    link = store / PLAIN_TASK
    assert result.changed and result.bundle_path == link
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert current_version_dir(store, PLAIN_TASK) == result.version_dir
    assert result.version_dir.name.startswith("v000001-") and result.content_hash == content.manifest.content_hash
    assert tree_bytes(link) == content.files
    assert verify_bundle(link).ok


def test_identical_content_is_a_no_op(tmp_path: Path, content: BundleContent) -> None:
    store = tmp_path / "store"
    first = publish_bundle(store, content)
    later = sample_parts(PLAIN_TASK).assemble(generated_at_utc="2027-01-01T00:00:00.000000Z")
    assert later.manifest.generated_at_utc != content.manifest.generated_at_utc
    again = publish_bundle(store, later)
    assert not again.changed and again.version_dir == first.version_dir
    assert _versions(store) == [first.version_dir.name]
    assert (store / PLAIN_TASK / MANIFEST).read_bytes() == content.files[MANIFEST]  # the old manifest stays


def test_new_content_swaps_and_old_versions_are_pruned(tmp_path: Path, content: BundleContent) -> None:
    store = tmp_path / "store"
    results = [publish_bundle(store, with_note(content, f"n{i}"), keep_versions=2) for i in range(5)]
    assert all(r.changed for r in results)
    assert [r.version_dir.name[:7] for r in results] == [f"v00000{i}" for i in range(1, 6)]
    assert _versions(store) == [results[3].version_dir.name, results[4].version_dir.name]
    assert current_version_dir(store, PLAIN_TASK) == results[4].version_dir
    assert verify_bundle(results[3].version_dir).ok  # the previous version stays readable


def test_republishing_an_older_content_makes_it_current_again(tmp_path: Path, content: BundleContent) -> None:
    store = tmp_path / "store"
    a = publish_bundle(store, content)
    b = publish_bundle(store, with_note(content, "b"))
    a_again = publish_bundle(store, content)
    assert a_again.changed and a_again.content_hash == a.content_hash != b.content_hash
    assert current_version_dir(store, PLAIN_TASK) == a_again.version_dir


def test_a_damaged_current_version_is_not_mistaken_for_identical_content(
    tmp_path: Path, content: BundleContent
) -> None:
    store = tmp_path / "store"
    first = publish_bundle(store, content)
    (first.version_dir / "factor_entry.py").write_text("# edited by hand\n")
    assert not verify_bundle(store / PLAIN_TASK).ok
    again = publish_bundle(store, content)
    assert again.changed and again.version_dir != first.version_dir
    assert verify_bundle(store / PLAIN_TASK).ok


def test_leftovers_of_a_crashed_publisher_are_removed(tmp_path: Path, content: BundleContent) -> None:
    store = tmp_path / "store"
    publish_bundle(store, content)
    root = store / VERSIONS_DIR / PLAIN_TASK
    half = root / f"{TMP_PREFIX}v000002-abc-123"
    (half / "factors").mkdir(parents=True)
    (half / "model.pkl").write_bytes(b"half")
    stale_link = store / f"{LINK_TMP_PREFIX}{PLAIN_TASK}-dead"
    stale_link.symlink_to(f"{VERSIONS_DIR}/{PLAIN_TASK}/v000002-abc")
    publish_bundle(store, with_note(content, "next"))
    assert not half.exists() and not stale_link.is_symlink()
    assert not [p for p in root.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("relpath", ["../x.py", "/abs.py", "a\\b.py", ".hidden", "factors/../../x", "", "a//b", "x\0y"])
def test_unsafe_relpaths_are_refused(tmp_path: Path, content: BundleContent, relpath: str) -> None:
    with pytest.raises(BundleStoreError):
        check_relpath(relpath)
    files = {**content.files, relpath: b"x"}
    with pytest.raises(BundleStoreError):
        publish_bundle(tmp_path / "store", BundleContent(content.task_id, files, content.manifest))
    assert not (tmp_path / "store").exists()


def test_a_manifest_that_does_not_describe_the_files_is_refused(tmp_path: Path, content: BundleContent) -> None:
    files = {**content.files, "factor_entry.py": b"# other\n"}
    with pytest.raises(BundleStoreError, match="manifest does not describe"):
        publish_bundle(tmp_path / "store", BundleContent(content.task_id, files, content.manifest))
    fixed = rehashed(files)
    assert publish_bundle(tmp_path / "store", fixed).changed


@pytest.mark.parametrize("task_id", ["..", "../etc", "-rf", "x" * 129, ".versions", "2026-03-02_09-15-27-118204/x"])
def test_bad_task_ids_are_refused(tmp_path: Path, content: BundleContent, task_id: str) -> None:
    with pytest.raises(BundleStoreError):
        publish_bundle(tmp_path / "store", BundleContent(task_id, content.files, content.manifest))
    with pytest.raises(BundleStoreError):
        current_version_dir(tmp_path / "store", task_id)


def test_a_foreign_directory_in_the_way_is_never_replaced(tmp_path: Path, content: BundleContent) -> None:
    store = tmp_path / "store"
    (store / PLAIN_TASK).mkdir(parents=True)
    (store / PLAIN_TASK / "keep.txt").write_text("mine")
    with pytest.raises(BundleStoreError, match="not a bundle symlink"):
        publish_bundle(store, content)
    assert (store / PLAIN_TASK / "keep.txt").read_text() == "mine"


def test_current_version_dir_refuses_a_link_outside_the_versions(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    assert current_version_dir(store, PLAIN_TASK) is None
    (store / PLAIN_TASK).symlink_to("/etc")
    with pytest.raises(BundleStoreError, match="outside its versions"):
        current_version_dir(store, PLAIN_TASK)


def test_concurrent_publishers_serialise(tmp_path: Path, content: BundleContent) -> None:
    store = tmp_path / "store"
    variants = [with_note(content, f"t{i}") for i in range(6)]
    errors: list[BaseException] = []

    def publish(c: BundleContent) -> None:
        try:
            publish_bundle(store, c, keep_versions=10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(c,)) for c in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(_versions(store)) == 6 and len({v.split("-")[0] for v in _versions(store)}) == 6
    report = verify_bundle(store / PLAIN_TASK)
    assert report.ok and report.content_hash in {c.manifest.content_hash for c in variants}


def test_keep_versions_must_keep_the_current_one(tmp_path: Path, content: BundleContent) -> None:
    with pytest.raises(ValueError):
        publish_bundle(tmp_path / "store", content, keep_versions=0)


def test_an_unusable_store_is_a_typed_error(tmp_path: Path, content: BundleContent) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(BundleStoreError, match="cannot publish into the store: Not a directory") as under_a_file:
        publish_bundle(tmp_path / "file" / "store", content)
    assert under_a_file.value.path == str(tmp_path / "file" / "store")
    with pytest.raises(BundleStoreError, match="the store path exists and is not a directory") as is_a_file:
        publish_bundle(tmp_path / "file", content)
    assert is_a_file.value.message == "the store path exists and is not a directory"
    assert is_a_file.value.path == str(tmp_path / "file")


def test_manifest_bytes_must_be_the_manifest(tmp_path: Path, content: BundleContent) -> None:
    other = with_note(content, "x")
    files = {**content.files, MANIFEST: other.files[MANIFEST]}
    with pytest.raises(BundleStoreError):
        publish_bundle(tmp_path / "store", BundleContent(content.task_id, files, content.manifest))


def test_an_extraction_waits_for_the_task_lock_and_publishes_after_its_holder(tmp_path: Path) -> None:
    """A second extraction of a task (another run, the CLI) cannot read or publish while the first holds the lock."""
    store, finished = tmp_path / "store", threading.Event()
    errors: list[BaseException] = []

    def extract() -> None:
        try:
            extract_task(
                SAMPLES_DIR / "log" / PLAIN_TASK,
                store=store,
                path_map=PathMap.parse([SAMPLE_PATH_MAP]),
                index=SnapshotIndex(None),
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            finished.set()

    with extraction_lock(store, PLAIN_TASK):
        worker = threading.Thread(target=extract)
        worker.start()
        assert not finished.wait(3.0), "the extraction ran while another held the task's lock"
        assert current_version_dir(store, PLAIN_TASK) is None
    assert finished.wait(120.0) and not errors, errors
    worker.join()
    assert verify_bundle(store / PLAIN_TASK).ok
    other = "2026-01-01_00-00-00-000000"
    with extraction_lock(store, other):  # another task is never held up by it
        pass
    assert not (store / VERSIONS_DIR / other).exists(), "a task that never published leaves no trace in .versions"


def test_the_extraction_lock_refuses_what_is_not_a_task_or_a_store(tmp_path: Path) -> None:
    with pytest.raises(BundleStoreError, match="not a safe task id"), extraction_lock(tmp_path / "store", "../x"):
        pass
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(BundleStoreError, match="not a directory"), extraction_lock(tmp_path / "file", PLAIN_TASK):
        pass
    assert not (tmp_path / "store").exists()


def test_a_log_dir_that_is_not_a_task_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for log_dir, why in ((tmp_path / "missing", "does not exist"), (tmp_path / "not a task", "not a safe task id")):
        if why != "does not exist":
            log_dir.mkdir()
        with pytest.raises(InvalidLogDirError, match=why):
            extract_task(log_dir, store=store, path_map=PathMap.parse([]), index=SnapshotIndex(None))
    assert not store.exists()


def test_the_extraction_lock_never_follows_a_symlinked_locks_folder(tmp_path: Path) -> None:
    """A ``.locks`` planted as a symlink (say, into a log dir) is refused, and nothing is created where it points."""
    store, elsewhere = tmp_path / "store", tmp_path / "log" / PLAIN_TASK / "__session__"
    store.mkdir()
    elsewhere.mkdir(parents=True)
    (store / ".locks").symlink_to(elsewhere)
    with pytest.raises(BundleStoreError, match="cannot lock the task"), extraction_lock(store, PLAIN_TASK):
        pass
    assert list(elsewhere.iterdir()) == []
