"""Resuming, retrying and refusing, against the Range-capable look-alike server (``range_server.py``).

``rd-assets serve`` does not answer ``Range`` yet; these tests prove the client side against the HTTP standard
(RFC 9110: ``Range``, ``If-Range``, ``206`` with ``Content-Range``) with a server process that cuts bodies short,
answers 503, corrupts a file or claims another bundle version on command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rd_assets.client import ResultsClient, RetryPolicy, pull_bundle
from rd_assets.client.mirror import PARTIAL_DIR, VERSION_ATTEMPTS
from rd_assets.core.bundle.store import current_version_dir
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import EXTRACT_REPORT, MANIFEST, Manifest
from rd_assets.core.errors import ApiUnreachableError, DownloadIntegrityError
from rd_assets_tests.bundle_testkit import tree_bytes
from rd_assets_tests.client.conftest import range_server
from rd_assets_tests.conftest import FIRST_ANCHOR_TASK, SIGNED_TASK
from rd_assets_tests.consumer_testkit import republish_with

FAST = RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.05)
ONCE = RetryPolicy(attempts=1)
WEIGHT = "params.pkl"  # the torch sample's largest file (78 KB)
CUT = 20_000


def _asset_requests(log: list[dict], relpath: str) -> list[dict]:
    return [r for r in log if "asset_bytes" in r["path"] and r["path"].endswith(f"key={relpath}")]


def test_a_cut_download_is_resumed_with_range(tmp_path: Path, sample_store: Path) -> None:
    dest = tmp_path / "mirror"
    with range_server(sample_store, tmp_path / "srv", cut={WEIGHT: CUT}) as server:
        with ResultsClient(server.base_url, retry=FAST) as client:
            result = pull_bundle(client, SIGNED_TASK, dest)
        log = _asset_requests(server.requests(), WEIGHT)
    assert [(r["status"], r["range"]) for r in log] == [(200, None), (206, f"bytes={CUT}-")]
    assert log[0]["cut"] == CUT
    assert result.resumed_files == [WEIGHT] and WEIGHT in result.downloaded_files
    manifest = Manifest.model_validate_json((sample_store / SIGNED_TASK / MANIFEST).read_bytes())
    unique = {entry.sha256: entry.size for entry in manifest.files.values()}
    assert result.downloaded_bytes == sum(unique.values())  # every byte crossed once: the cut part was kept
    assert tree_bytes(dest / SIGNED_TASK) == tree_bytes(sample_store / SIGNED_TASK)
    assert verify_bundle(dest / SIGNED_TASK).ok


def test_a_pull_that_gave_up_is_resumed_by_the_next_one(tmp_path: Path, sample_store: Path) -> None:
    dest = tmp_path / "mirror"
    sha = Manifest.model_validate_json((sample_store / SIGNED_TASK / MANIFEST).read_bytes()).files[WEIGHT].sha256
    part = dest / PARTIAL_DIR / SIGNED_TASK / f"{sha}.part"
    with range_server(sample_store, tmp_path / "srv", cut={WEIGHT: CUT}) as server:
        with ResultsClient(server.base_url, retry=ONCE) as client, pytest.raises(ApiUnreachableError):
            pull_bundle(client, SIGNED_TASK, dest)
        assert not (dest / SIGNED_TASK).exists() and part.stat().st_size == CUT
        with ResultsClient(server.base_url, retry=ONCE) as client:
            result = pull_bundle(client, SIGNED_TASK, dest)
        log = _asset_requests(server.requests(), WEIGHT)
    assert [r["range"] for r in log] == [None, f"bytes={CUT}-"] and result.resumed_files == [WEIGHT]
    assert not part.exists() and verify_bundle(dest / SIGNED_TASK).ok


def test_a_server_that_ignores_range_is_read_whole(tmp_path: Path, sample_store: Path) -> None:
    dest = tmp_path / "mirror"
    with range_server(sample_store, tmp_path / "srv", cut={WEIGHT: CUT}, ignore_range=True) as server:
        with ResultsClient(server.base_url, retry=FAST) as client:
            result = pull_bundle(client, SIGNED_TASK, dest)
        log = _asset_requests(server.requests(), WEIGHT)
    assert [(r["status"], r["range"]) for r in log] == [(200, None), (200, f"bytes={CUT}-")]
    assert result.resumed_files == [] and verify_bundle(dest / SIGNED_TASK).ok


def test_busy_answers_are_retried(tmp_path: Path, sample_store: Path) -> None:
    with range_server(sample_store, tmp_path / "srv", fail_first=2) as server:
        with ResultsClient(server.base_url, retry=FAST) as client:
            result = pull_bundle(client, FIRST_ANCHOR_TASK, tmp_path / "mirror")
        statuses = [r["status"] for r in server.requests()]
    assert statuses[:3] == [503, 503, 200] and result.requests == len(statuses)


def test_a_corrupt_file_is_refused_and_the_current_version_stays(tmp_path: Path, sample_store: Path) -> None:
    store = tmp_path / "server"
    shutil.copytree(sample_store, store, symlinks=True)
    dest = tmp_path / "mirror"
    with range_server(store, tmp_path / "srv") as server, ResultsClient(server.base_url, retry=FAST) as client:
        first = pull_bundle(client, FIRST_ANCHOR_TASK, dest)
    report = json.loads((store / FIRST_ANCHOR_TASK / EXTRACT_REPORT).read_bytes())
    report["notes"].append("a newer version")
    republish_with(store, FIRST_ANCHOR_TASK, {EXTRACT_REPORT: json.dumps(report).encode()}, into=store)
    corrupting = range_server(store, tmp_path / "srv2", corrupt=[EXTRACT_REPORT])
    refused = pytest.raises(DownloadIntegrityError, match=EXTRACT_REPORT)
    with corrupting as server, ResultsClient(server.base_url, retry=FAST) as client, refused:
        pull_bundle(client, FIRST_ANCHOR_TASK, dest)
    assert current_version_dir(dest, FIRST_ANCHOR_TASK) == Path(first.version_dir or "")
    assert verify_bundle(dest / FIRST_ANCHOR_TASK).ok


def test_a_bundle_that_keeps_changing_is_refused(tmp_path: Path, sample_store: Path) -> None:
    with range_server(sample_store, tmp_path / "srv", stale_hash=True) as server:
        with (
            ResultsClient(server.base_url, retry=FAST) as client,
            pytest.raises(
                DownloadIntegrityError, match=f"changed on the server during each of {VERSION_ATTEMPTS} attempts"
            ),
        ):
            pull_bundle(client, FIRST_ANCHOR_TASK, tmp_path / "mirror")
        manifests = [r for r in server.requests() if r["path"] == f"/tasks/{FIRST_ANCHOR_TASK}"]
    assert len(manifests) == VERSION_ATTEMPTS and not (tmp_path / "mirror" / FIRST_ANCHOR_TASK).exists()
