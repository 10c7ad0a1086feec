"""``pull`` against a real ``rd-assets serve``: cold, unchanged (304), one changed file, readiness, token, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rd_assets.client import ResultsClient, RetryPolicy, pull_bundle
from rd_assets.client.mirror import PARTIAL_DIR
from rd_assets.core.bundle.assemble import sha256_hex
from rd_assets.core.bundle.store import current_version_dir
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import EXTRACT_REPORT, MANIFEST, Manifest
from rd_assets.core.contracts.consumer_models import PullResult
from rd_assets.core.errors import ApiRequestError, ApiUnreachableError, BundleNotReadyError
from rd_assets_tests.api.support import Server, free_port, serving
from rd_assets_tests.bundle_testkit import tree_bytes
from rd_assets_tests.conftest import PLAIN_TASK, RD_ASSETS, SAMPLE_TASKS, SIGNED_TASK
from rd_assets_tests.consumer_testkit import republish_with

FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)


def server_files(store: Path, task: str) -> dict[str, bytes]:
    version = current_version_dir(store, task)
    assert version is not None
    return tree_bytes(version)


def test_list_tasks(api: Server, sample_store: Path) -> None:
    with ResultsClient(api.base_url) as client:
        tasks = {t.task_id: t for t in client.list_tasks(page=2)}  # two pages
    assert sorted(tasks) == sorted(SAMPLE_TASKS)
    for task, remote in tasks.items():
        manifest = Manifest.model_validate_json(server_files(sample_store, task)[MANIFEST])
        assert remote.selection_ready and remote.content_hash == manifest.content_hash


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_cold_pull_then_unchanged(tmp_path: Path, api: Server, sample_store: Path, task: str) -> None:
    dest = tmp_path / "mirror"
    with ResultsClient(api.base_url) as client:
        cold = pull_bundle(client, task, dest)
        warm = pull_bundle(client, task, dest)
    files = server_files(sample_store, task)
    assert cold.changed and not cold.not_modified and cold.reused_files == []
    assert cold.downloaded_files == sorted(set(files) - {MANIFEST})
    unique = {sha256_hex(data): len(data) for rel, data in files.items() if rel != MANIFEST}
    assert cold.downloaded_bytes == sum(unique.values())  # a file twice in the bundle (same sha256) crosses once
    assert cold.requests == 1 + len(unique)
    assert tree_bytes(dest / task) == files
    assert verify_bundle(dest / task).ok
    assert (dest / task).is_symlink() and Path(cold.version_dir or "").parent.parent.name == ".versions"

    assert warm.not_modified and not warm.changed and warm.requests == 1 and warm.downloaded_bytes == 0
    assert warm.version_dir == cold.version_dir and warm.downloaded_files == []
    assert not (dest / PARTIAL_DIR / task).exists()


def test_only_changed_files_cross_the_network(tmp_path: Path, sample_store: Path) -> None:
    store = tmp_path / "server"
    shutil.copytree(sample_store, store, symlinks=True)
    dest = tmp_path / "mirror"
    with serving(store) as server, ResultsClient(server.base_url) as client:
        first = pull_bundle(client, PLAIN_TASK, dest)
        report = json.loads(server_files(store, PLAIN_TASK)[EXTRACT_REPORT])
        report["notes"].append("republished with one more note")
        changed = (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()
        republish_with(store, PLAIN_TASK, {EXTRACT_REPORT: changed}, into=store)
        second = pull_bundle(client, PLAIN_TASK, dest)
    assert second.changed and second.downloaded_files == [EXTRACT_REPORT]
    assert second.downloaded_bytes == len(changed)
    assert sorted([*second.reused_files, EXTRACT_REPORT]) == first.downloaded_files
    assert second.requests == 2  # the manifest and the one changed file
    assert second.version_dir != first.version_dir
    assert tree_bytes(dest / PLAIN_TASK) == server_files(store, PLAIN_TASK)


def test_a_bundle_not_ready_is_refused_unless_asked(tmp_path: Path, sample_store: Path) -> None:
    store = tmp_path / "server"
    files = server_files(sample_store, SIGNED_TASK)
    manifest = json.loads(files[MANIFEST])
    manifest.update(selection_ready=False, reasons=["newer_snapshot_unreadable: a test says so"])
    republish_with(sample_store, SIGNED_TASK, {MANIFEST: json.dumps(manifest).encode()}, into=store)
    dest = tmp_path / "mirror"
    with serving(store) as server, ResultsClient(server.base_url) as client:
        with pytest.raises(BundleNotReadyError, match="newer_snapshot_unreadable"):
            pull_bundle(client, SIGNED_TASK, dest)
        assert client.requests == 1 and not (dest / SIGNED_TASK).exists()
        taken = pull_bundle(client, SIGNED_TASK, dest, allow_not_ready=True)
    assert taken.selection_ready is False and verify_bundle(dest / SIGNED_TASK).ok


def test_typed_errors(tmp_path: Path, api: Server) -> None:
    with ResultsClient(api.base_url, retry=FAST) as client, pytest.raises(ApiRequestError) as raised:
        pull_bundle(client, "2020-01-01_00-00-00-000000", tmp_path / "mirror")
    assert raised.value.status == 404 and raised.value.api_code == "task_not_found"
    closed = f"http://127.0.0.1:{free_port()}"
    with ResultsClient(closed, retry=FAST) as client, pytest.raises(ApiUnreachableError, match="after 3 attempts"):
        client.list_tasks()
    assert client.requests == 3


def test_a_damaged_partial_file_is_fetched_again(tmp_path: Path, api: Server, sample_store: Path) -> None:
    """A ``.part`` left by someone else holds wrong bytes: the server may resume it (Range) or not; either way the
    file is checked against the manifest and fetched whole once more, never published wrong."""
    files = server_files(sample_store, PLAIN_TASK)
    entry = Manifest.model_validate_json(files[MANIFEST]).files["model.pkl"]
    dest = tmp_path / "mirror"
    partial = dest / PARTIAL_DIR / PLAIN_TASK
    partial.mkdir(parents=True)
    (partial / f"{entry.sha256}.part").write_bytes(b"\0" * 100)
    with ResultsClient(api.base_url) as client:
        result = pull_bundle(client, PLAIN_TASK, dest)
    assert tree_bytes(dest / PLAIN_TASK) == files and "model.pkl" in result.downloaded_files


def _pull_cli(api: str, dest: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RD_ASSETS), "pull", "--api", api, PLAIN_TASK, "--dest", str(dest), "--retries", "2", *extra],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_pull_cli_with_a_token(tmp_path: Path, sample_store: Path) -> None:
    dest = tmp_path / "mirror"
    env = {k: v for k, v in os.environ.items() if k != "RD_ASSETS_API_TOKEN"}
    with serving(sample_store, token="s3cret") as server:
        refused = _pull_cli(server.base_url, dest, "--json", env=env)
        assert refused.returncode == 2 and "api_error" in refused.stderr and "unauthorized" in refused.stderr
        assert PullResult.model_validate_json(refused.stdout).error is not None
        done = _pull_cli(server.base_url, dest, "--token", "s3cret", "--json", env=env)
        assert done.returncode == 0, done.stderr
        result = PullResult.model_validate_json(done.stdout)
        assert result.ok and result.changed and verify_bundle(dest / PLAIN_TASK).ok
        again = _pull_cli(server.base_url, dest, env={**env, "RD_ASSETS_API_TOKEN": "s3cret"})
        assert again.returncode == 0 and "not modified" in again.stdout
        listed = subprocess.run(
            [str(RD_ASSETS), "pull", "--api", server.base_url, "--list"], capture_output=True, text=True,
            env={**env, "RD_ASSETS_API_TOKEN": "s3cret"}, timeout=60,
        )  # fmt: skip
        assert listed.returncode == 0 and all(task in listed.stdout for task in SAMPLE_TASKS)
