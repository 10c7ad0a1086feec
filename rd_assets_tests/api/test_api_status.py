"""``/tasks/{task_id}/status`` and ``/tasks?state=``: ready, published but not ready, failed (the record the real
``rd-assets extract`` wrote for a broken task dir), unknown; a failed task is no longer a plain 404."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rd_assets.core.bundle.assemble import BundleContent, json_bytes
from rd_assets.core.bundle.store import publish_bundle
from rd_assets.core.bundle.task_status import failure_path
from rd_assets.core.contracts.bundle_models import MANIFEST
from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets.core.samples import FIRST_ANCHOR_TASK
from rd_assets_tests.api.support import PLAIN_TASK, RD_ASSETS, SIGNED_TASK, app_for, extract_samples, with_weight

NEVER_PUBLISHED = "2026-04-01_00-00-00-000001"
UNKNOWN = "2020-01-01_00-00-00-000000"
NOT_READY_REASON = "weights_not_persisted: none in the session"


def broken_task(root: Path, task_id: str) -> Path:
    """A task log dir whose only snapshot is not a pickle at all."""
    log_dir = root / task_id
    (log_dir / "__session__" / "0").mkdir(parents=True)
    (log_dir / "__session__" / "0" / "0_direct_exp_gen").write_bytes(b"not a pickle at all")
    return log_dir


def extract_cli(log_dir: Path, store: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(RD_ASSETS), "extract", str(log_dir), "--store", str(store), "--no-index"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SIGNED ready; PLAIN republished not ready; FIRST_ANCHOR published, then its re-extraction failed;
    NEVER_PUBLISHED failed on its first extraction."""
    root = tmp_path_factory.mktemp("status")
    store = root / "store"
    contents = extract_samples(store)
    content = with_weight(contents[PLAIN_TASK], b"w", generated_at_utc="2030-01-01T00:00:00Z")
    manifest = content.manifest.model_copy(update={"selection_ready": False, "reasons": [NOT_READY_REASON]})
    files = {**content.files, MANIFEST: json_bytes(manifest)}
    publish_bundle(store, BundleContent(task_id=PLAIN_TASK, files=files, manifest=manifest))
    for task_id in (FIRST_ANCHOR_TASK, NEVER_PUBLISHED):
        done = extract_cli(broken_task(root / "log", task_id), store)
        assert done.returncode == 2 and done.stderr.startswith("error: no_snapshot: "), done.stderr
        assert failure_path(store, task_id).is_file()
    return store


@pytest.fixture(scope="module")
def client(store: Path) -> TestClient:
    return TestClient(app_for(store))


def status(client: TestClient, task_id: str) -> dict:
    r = client.get(f"/tasks/{task_id}/status")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["schema_version"] == SCHEMA_VERSION and body["task_id"] == task_id
    return body


def test_ready(client: TestClient) -> None:
    body = status(client, SIGNED_TASK)
    assert body["state"] == "ready" and body["selection_ready"] is True and body["failure"] is None
    manifest = client.get(f"/tasks/{SIGNED_TASK}").json()
    assert body["content_hash"] == manifest["content_hash"] and body["version"].startswith("v000001-")
    assert body["reasons"] == [] and body["corrupt_files"] == [] and body["factor_count"] == 3


def test_published_not_ready(client: TestClient) -> None:
    body = status(client, PLAIN_TASK)
    assert body["state"] == "published_not_ready" and body["selection_ready"] is False
    assert body["reasons"] == [NOT_READY_REASON] and body["failure"] is None and body["version"].startswith("v000002-")


def test_failed_never_published(client: TestClient, store: Path) -> None:
    body = status(client, NEVER_PUBLISHED)
    failure = body["failure"]
    assert body["state"] == "failed" and failure["code"] == "no_snapshot" and failure["task_id"] == NEVER_PUBLISHED
    assert "none of the 1 snapshots is readable" in failure["message"] and failure["path"].endswith(NEVER_PUBLISHED)
    assert re.fullmatch(r"1-19-\d+", failure["fingerprint"]) and failure["failed_at_utc"].endswith("Z")
    assert [body[k] for k in ("version", "content_hash", "generated_at_utc", "selection_ready")] == [None] * 4
    for route in ("", "/sota_factor_anchor", "/asset_bytes?key=model.pkl", "/bundle.tar"):
        r = client.get(f"/tasks/{NEVER_PUBLISHED}{route}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "task_failed", route
        assert "no_snapshot" in r.json()["error"]["message"]
    assert not (store / NEVER_PUBLISHED).exists() and not (store / ".versions" / NEVER_PUBLISHED).exists()


def test_failed_after_an_earlier_publication_still_serves_that_bundle(client: TestClient) -> None:
    body = status(client, FIRST_ANCHOR_TASK)
    assert body["state"] == "failed" and body["failure"]["code"] == "no_snapshot"
    assert body["version"].startswith("v000001-") and body["selection_ready"] is True
    assert client.get(f"/tasks/{FIRST_ANCHOR_TASK}/sota_factor_anchor").status_code == 200


def test_unknown_is_not_failed(client: TestClient) -> None:
    body = status(client, UNKNOWN)
    assert body["state"] == "unknown" and body["failure"] is None and body["version"] is None
    r = client.get(f"/tasks/{UNKNOWN}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
    assert client.get("/tasks/-bad/status").status_code == 422


def test_tasks_lists_states_and_filters(client: TestClient) -> None:
    everything = client.get("/tasks").json()
    states = {row["task_id"]: row["state"] for row in everything["tasks"]}
    assert states == {
        SIGNED_TASK: "ready",
        PLAIN_TASK: "published_not_ready",
        FIRST_ANCHOR_TASK: "failed",
        NEVER_PUBLISHED: "failed",
    }
    assert everything["total"] == 4 and everything["problems"] == []
    # newest first: PLAIN's bundle says 2030; a never-published task sorts by its failure time (after extraction)
    order = [PLAIN_TASK, NEVER_PUBLISHED, FIRST_ANCHOR_TASK, SIGNED_TASK]
    assert [row["task_id"] for row in everything["tasks"]] == order
    for state in ("ready", "published_not_ready", "failed"):
        page = client.get("/tasks", params={"state": state}).json()
        assert {row["task_id"] for row in page["tasks"]} == {t for t, s in states.items() if s == state}
        assert page["total"] == len(page["tasks"])
    failed = client.get("/tasks", params={"state": "failed", "limit": 1}).json()
    assert failed["total"] == 2 and len(failed["tasks"]) == 1 and failed["tasks"][0]["failure"]["code"] == "no_snapshot"
    r = client.get("/tasks", params={"state": "unknown"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
