"""Crash safety of the publisher: SIGKILL at random instants never leaves a half bundle or loses the previous one.

A child process (the real publisher, real fsyncs, no test hooks) republishes two alternating versions of the
same task as fast as it can; the parent kills it at a random moment. After every kill the bundle at
``<store>/<task_id>`` must verify and be one of the two versions, every version directory must be complete,
and the next publish must clean up whatever the dead process left behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rd_assets.core.bundle.assemble import BundleContent
from rd_assets.core.bundle.store import (
    LINK_TMP_PREFIX,
    TMP_PREFIX,
    VERSIONS_DIR,
    current_version_dir,
    publish_bundle,
)
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets_tests.bundle_testkit import sample_parts, with_note, write_tree
from rd_assets_tests.conftest import PLAIN_TASK, REPO_ROOT, VENV_PYTHON

LANES = 3
TRIALS_PER_LANE = 20
MAX_DELAY_S = 0.08
"""One publish of the sample bundle takes ~15-30 ms here: kills land before, during and between publishes."""

SPAWNER = """
import os
import sys
from pathlib import Path
from rd_assets.core.bundle.assemble import BundleContent
from rd_assets.core.contracts.bundle_models import MANIFEST, Manifest
from rd_assets.core.bundle.store import publish_bundle

def load(root):
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = Manifest.model_validate_json(files[MANIFEST])
    return BundleContent(manifest.task_id, files, manifest)

store, a, b = Path(sys.argv[1]), load(Path(sys.argv[2])), load(Path(sys.argv[3]))
for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                for content in (b, a):
                    publish_bundle(store, content, keep_versions=2)
        finally:
            os._exit(1)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""
"""A single-threaded process that has imported the publisher forks one real publisher per trial, so a trial
costs no interpreter start-up; the forked publisher is the unmodified code path with real fsyncs."""


@pytest.fixture(scope="module")
def contents(tmp_path_factory: pytest.TempPathFactory) -> tuple[BundleContent, BundleContent, Path, Path]:
    a = sample_parts(PLAIN_TASK).assemble()
    b = with_note(a, "second version")
    root = tmp_path_factory.mktemp("crash-contents")
    write_tree(root / "a", a.files)
    write_tree(root / "b", b.files)
    return a, b, root / "a", root / "b"


def _check_store(store: Path, allowed_hashes: set[str]) -> None:
    """What a reader may observe right after a crash: one complete known version, nothing half-written."""
    current = current_version_dir(store, PLAIN_TASK)
    assert current is not None
    report = verify_bundle(store / PLAIN_TASK)
    assert report.ok, report.problems
    assert report.content_hash in allowed_hashes
    for entry in os.scandir(store):  # only the task link, the versions and (ignored) temp links are visible
        assert entry.name in {PLAIN_TASK, VERSIONS_DIR} or entry.name.startswith(LINK_TMP_PREFIX), entry.name
    for version in (store / VERSIONS_DIR / PLAIN_TASK).iterdir():
        if version.name.startswith("v"):  # a name without the temp prefix is always a complete bundle
            assert verify_bundle(version).ok, version


def _seq(store: Path) -> int:
    current = current_version_dir(store, PLAIN_TASK)
    assert current is not None
    return int(current.name[1:].split("-")[0])


def _lane(store: Path, a: Path, b: Path, hashes: set[str], seed: int, kills: list[tuple[int, bool]]) -> None:
    rng = random.Random(seed)
    spawner = subprocess.Popen(
        [str(VENV_PYTHON), "-c", SPAWNER, str(store), str(a), str(b)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert spawner.stdin is not None and spawner.stdout is not None
    try:
        for _ in range(TRIALS_PER_LANE):
            before = _seq(store)
            spawner.stdin.write("go\n")
            spawner.stdin.flush()
            pid = int(spawner.stdout.readline())
            time.sleep(rng.uniform(0, MAX_DELAY_S))
            os.kill(pid, signal.SIGKILL)
            status = int(spawner.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            _check_store(store, hashes)
            root = store / VERSIONS_DIR / PLAIN_TASK
            half_written = any(p.name.startswith(TMP_PREFIX) for p in root.iterdir())
            kills.append((_seq(store) - before, half_written))
    finally:
        spawner.stdin.close()
        spawner.wait(timeout=30)


def test_sigkill_at_random_moments_never_breaks_the_published_bundle(
    tmp_path: Path, contents: tuple[BundleContent, BundleContent, Path, Path]
) -> None:
    a, b, a_dir, b_dir = contents
    hashes = {a.manifest.content_hash, b.manifest.content_hash}
    stores = [tmp_path / f"store{i}" for i in range(LANES)]
    for store in stores:
        publish_bundle(store, a)  # the previous bundle every crash must preserve
    kills: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            _lane(stores[i], a_dir, b_dir, hashes, seed=i, kills=kills)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(LANES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(kills) == LANES * TRIALS_PER_LANE >= 50
    completed = [n for n, _ in kills]
    assert min(completed) == 0 and max(completed) >= 1  # kills hit the first publish of a trial and later ones
    assert sum(half for _, half in kills) >= 5  # many kills left a half-written version behind

    for store in stores:  # the next publish removes every leftover of the dead publishers
        publish_bundle(store, with_note(a, "after the crashes"))
        root = store / VERSIONS_DIR / PLAIN_TASK
        assert not [p for p in root.iterdir() if p.name.startswith(TMP_PREFIX)]
        assert not [p for p in store.iterdir() if p.name.startswith(LINK_TMP_PREFIX)]
        assert verify_bundle(store / PLAIN_TASK).ok


def test_readers_never_see_a_mix_while_versions_are_swapped(
    tmp_path: Path, contents: tuple[BundleContent, BundleContent, Path, Path]
) -> None:
    """A reader resolves the link once and reads inside that version: always one whole, verifiable bundle."""
    a, b, _, _ = contents
    store = tmp_path / "store"
    publish_bundle(store, a)
    stop = threading.Event()

    def publisher() -> None:
        while not stop.is_set():
            for content in (b, a):
                publish_bundle(store, content, keep_versions=50)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        seen: set[str | None] = set()
        start = time.monotonic()
        reads = 0
        while reads < 50 or len(seen) < 2:
            assert time.monotonic() - start < 30, f"the publisher made no progress: {seen}"
            reads += 1
            report = verify_bundle(store / PLAIN_TASK)
            assert report.ok, report.problems
            seen.add(report.content_hash)
    finally:
        stop.set()
        thread.join()
    assert seen == {a.manifest.content_hash, b.manifest.content_hash}
