"""Every Results API route through the test client, over bundles the real pipeline extracted from the samples."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from rd_assets.api.app import create_app
from rd_assets.core.bundle.assemble import BundleContent, json_bytes
from rd_assets.core.bundle.store import publish_bundle
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import MANIFEST
from rd_assets.core.contracts.models import SCHEMA_VERSION
from rd_assets.core.errors import BundleIntegrityError
from rd_assets_tests.api.support import PLAIN_TASK, SAMPLE_TASKS, SIGNED_TASK, extract_samples, with_weight
from rd_assets_tests.conftest import expected_for

TASKS = SAMPLE_TASKS
ROUTES = (
    "/tasks",
    "/tasks/{t}",
    "/tasks/{t}/session_anchor",
    "/tasks/{t}/sota_factor_anchor",
    "/tasks/{t}/sota_factors",
    "/tasks/{t}/factor_order",
    "/tasks/{t}/model_meta",
    "/tasks/{t}/asset_bytes?key=factor.py",
    "/tasks/{t}/bundle.tar",
)
ANCHOR_FIELDS = {
    "ok",
    "task_id",
    "hist_len",
    "chosen_session_file",
    "source_session_dir_id",
    "last_sota_factor_index",
    "resolved_model_weight_key",
    "resolved_model_weight_source",
    "resolved_factor_entry_key",
    "factor_file_dict_keys",
    "based_factor_entries",
    "selection_ready",
    "reasons",
}


Published = tuple[Path, dict[str, BundleContent]]
"""The module's store and the content the real pipeline published into it, per task."""


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    store = tmp_path_factory.mktemp("store")
    return store, extract_samples(store)


@pytest.fixture(scope="module")
def client(published: Published) -> TestClient:
    return TestClient(create_app(published[0]))


def version_file(store: Path, task_id: str, relpath: str) -> bytes:
    return (store / task_id / relpath).read_bytes()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and body["error"]["code"] == code and body["error"]["message"]


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["ok"] is True


def test_tasks_newest_first_with_summaries_and_paging(client: TestClient, published: Published) -> None:
    store, contents = published
    body = client.get("/tasks").json()
    assert body["schema_version"] == SCHEMA_VERSION and body["total"] == len(SAMPLE_TASKS) and body["problems"] == []
    manifests = {t: json.loads(version_file(store, t, MANIFEST)) for t in TASKS}
    newest_first = sorted(TASKS, key=lambda t: (manifests[t]["generated_at_utc"], t), reverse=True)
    assert [row["task_id"] for row in body["tasks"]] == newest_first
    for row in body["tasks"]:
        manifest = manifests[row["task_id"]]
        assert row["generated_at_utc"] == manifest["generated_at_utc"]
        assert row["content_hash"] == manifest["content_hash"] == contents[row["task_id"]].manifest.content_hash
        assert row["selection_ready"] is True
        assert row["factor_count"] == len(expected_for(row["task_id"])["sota_factor_names"])
    second = client.get("/tasks", params={"limit": 1, "offset": 1}).json()
    assert [row["task_id"] for row in second["tasks"]] == newest_first[1:2] and second["total"] == len(TASKS)
    assert client.get("/tasks", params={"offset": 5}).json()["tasks"] == []
    assert_error(client.get("/tasks", params={"limit": 0}), 422, "invalid_request")
    assert_error(client.get("/tasks", params={"offset": "x"}), 422, "invalid_request")


def test_tasks_orders_by_generated_at_then_task_id(tmp_path: Path, published: Published) -> None:
    _, contents = published
    store = tmp_path / "store"
    publish_bundle(store, with_weight(contents[PLAIN_TASK], b"w1", generated_at_utc="2030-01-01T00:00:00Z"))
    publish_bundle(store, with_weight(contents[SIGNED_TASK], b"w2", generated_at_utc="2029-01-01T00:00:00Z"))
    rows = TestClient(create_app(store)).get("/tasks").json()["tasks"]
    assert [r["task_id"] for r in rows] == [PLAIN_TASK, SIGNED_TASK]


@pytest.mark.parametrize("task_id", TASKS)
def test_manifest_is_the_published_file(client: TestClient, published: Published, task_id: str) -> None:
    store, _ = published
    r = client.get(f"/tasks/{task_id}")
    data = version_file(store, task_id, MANIFEST)
    assert r.status_code == 200 and r.content == data
    assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert r.headers["x-rd-assets-content-hash"] == json.loads(data)["content_hash"]
    assert client.get(f"/tasks/{task_id}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304


@pytest.mark.parametrize("task_id", TASKS)
def test_session_anchor(client: TestClient, task_id: str) -> None:
    body = client.get(f"/tasks/{task_id}/session_anchor").json()
    expected = expected_for(task_id)
    assert body["ok"] is True and body["task_id"] == task_id
    assert body["chosen_session_file"] == expected["chosen_snapshot_relpath"]
    assert body["hist_len"] == expected["hist_len"]
    assert body["source_session_dir_id"] == expected["chosen_snapshot_relpath"].split("/")[1]
    assert {c["relpath"] for c in body["candidates"]} >= set(expected["chosen_snapshot_relpaths"])


@pytest.mark.parametrize("task_id", TASKS)
def test_sota_factor_anchor_keeps_consumer_field_names(client: TestClient, task_id: str) -> None:
    body = client.get(f"/tasks/{task_id}/sota_factor_anchor").json()
    expected = expected_for(task_id)
    assert set(body) >= ANCHOR_FIELDS
    assert body["last_sota_factor_index"] == expected["last_sota_factor_index"]
    assert body["hist_len"] == expected["hist_len"]
    assert body["chosen_session_file"] == expected["chosen_snapshot_relpath"]
    assert body["resolved_model_weight_key"] == expected["weights_key"]
    assert body["resolved_model_weight_source"] == "factor_exp"
    assert body["resolved_factor_entry_key"] == "factor.py"
    assert body["selection_ready"] is True and body["reasons"] == []
    for entry in body["based_factor_entries"]:
        assert {"based_index", "resolved_factor_entry_key", "factor_file_dict_keys"} <= set(entry)


@pytest.mark.parametrize("task_id", TASKS)
def test_documents_are_byte_identical(client: TestClient, published: Published, task_id: str) -> None:
    store, _ = published
    for route, relpath in (
        ("sota_factors", "sota_factors.json"),
        ("factor_order", "factor_order.json"),
        ("model_meta", "model_meta.json"),
    ):
        r = client.get(f"/tasks/{task_id}/{route}")
        data = version_file(store, task_id, relpath)
        assert r.status_code == 200 and r.content == data
        assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert client.get(f"/tasks/{task_id}/{route}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    expected = expected_for(task_id)
    order = client.get(f"/tasks/{task_id}/factor_order").json()
    assert order["model_input_order"] == expected["model_input_order"]
    assert order["model_feature_count"] == expected["model_feature_count"]
    names = [f["name"] for f in client.get(f"/tasks/{task_id}/sota_factors").json()["factors"]]
    assert names == expected["sota_factor_names"]


@pytest.mark.parametrize("task_id", TASKS)
def test_asset_bytes_by_consumer_key(client: TestClient, published: Published, task_id: str) -> None:
    store, _ = published
    expected = expected_for(task_id)
    weight = client.get(f"/tasks/{task_id}/asset_bytes", params={"key": expected["weights_key"]})
    assert weight.status_code == 200 and weight.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(weight.content).hexdigest() == expected["weights_sha256"]
    assert weight.headers["etag"] == f'"{expected["weights_sha256"]}"'
    assert int(weight.headers["content-length"]) == expected["weights_bytes"] == len(weight.content)
    other = "params.pkl" if expected["weights_key"] == "model.pkl" else "model.pkl"
    assert_error(client.get(f"/tasks/{task_id}/asset_bytes", params={"key": other}), 404, "asset_not_found")

    anchor = client.get(f"/tasks/{task_id}/sota_factor_anchor").json()
    keys = {"factor.py", "factor_entry.py", *anchor["factor_file_dict_keys"]}
    for entry in anchor["based_factor_entries"]:
        keys |= {entry["resolved_factor_entry_key"], *entry["factor_file_dict_keys"]}
    sha_by_name = {f["name"]: f["factor_py_sha256"] for f in expected["factors"]}
    factors = client.get(f"/tasks/{task_id}/sota_factors").json()
    key_to_name = {f["file_dict_key"]: f["name"] for f in factors["factors"]}
    if expected["last_sota_factor_index"] > 0:  # the first-anchor sample has only the placeholder before it
        assert "based_factor_1/factor.py" in keys
    for key in sorted(keys):
        r = client.get(f"/tasks/{task_id}/asset_bytes", params={"key": key})
        assert r.status_code == 200, (key, r.text)
        digest = hashlib.sha256(r.content).hexdigest()
        assert r.headers["etag"] == f'"{digest}"'
        if key in key_to_name:
            assert digest == sha_by_name[key_to_name[key]], key
    entry = client.get(f"/tasks/{task_id}/asset_bytes", params={"key": "factor_entry.py"})
    assert entry.content == version_file(store, task_id, "factor_entry.py")
    assert client.get(f"/tasks/{task_id}/asset_bytes", params={"key": "factor.py"}).content == entry.content


@pytest.mark.parametrize("task_id", TASKS)
def test_asset_bytes_by_manifest_relpath_and_etags(client: TestClient, published: Published, task_id: str) -> None:
    store, _ = published
    manifest = json.loads(version_file(store, task_id, MANIFEST))
    assert len(manifest["files"]) >= 8
    for relpath, entry in manifest["files"].items():
        r = client.get(f"/tasks/{task_id}/asset_bytes", params={"key": relpath})
        assert r.status_code == 200 and r.content == version_file(store, task_id, relpath), relpath
        assert r.headers["etag"] == f'"{entry["sha256"]}"' and int(r.headers["content-length"]) == entry["size"]
    relpath, entry = next(iter(manifest["files"].items()))
    url = f"/tasks/{task_id}/asset_bytes"
    tag = f'"{entry["sha256"]}"'
    for header in (tag, f"W/{tag}", f'"nope", {tag}', "*"):
        r = client.get(url, params={"key": relpath}, headers={"If-None-Match": header})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag, header
    assert client.get(url, params={"key": relpath}, headers={"If-None-Match": '"nope"'}).status_code == 200


@pytest.mark.parametrize("task_id", TASKS)
def test_bundle_tar_is_deterministic_and_verifies(
    client: TestClient, published: Published, tmp_path: Path, task_id: str
) -> None:
    store, contents = published
    first = client.get(f"/tasks/{task_id}/bundle.tar")
    second = client.get(f"/tasks/{task_id}/bundle.tar")
    assert first.status_code == 200 and first.content == second.content
    assert first.headers["content-type"] == "application/x-tar"
    assert int(first.headers["content-length"]) == len(first.content)
    assert first.headers["etag"] == f'"{contents[task_id].manifest.content_hash}"'
    with tarfile.open(fileobj=io.BytesIO(first.content)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert (
            names
            == sorted(names)
            == sorted(f"{task_id}/{rel}" for rel in [MANIFEST, *contents[task_id].manifest.files])
        )
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
        for m in members:
            data = tar.extractfile(m).read()
            assert data == version_file(store, task_id, m.name.split("/", 1)[1]), m.name
        tar.extractall(tmp_path, filter="data")
    report = verify_bundle(tmp_path / task_id)
    assert report.ok, report.problems
    assert (
        client.get(f"/tasks/{task_id}/bundle.tar", headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    )


@pytest.mark.parametrize("route", ROUTES)
def test_head_matches_get_without_body(client: TestClient, route: str) -> None:
    url = route.format(t=PLAIN_TASK)
    get, head = client.get(url), client.head(url)
    assert head.status_code == get.status_code == 200 and head.content == b""
    for name in ("etag", "content-length", "content-type"):
        assert head.headers.get(name) == get.headers.get(name), name


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("route", [*ROUTES, "/health"])
def test_no_route_writes(client: TestClient, method: str, route: str) -> None:
    r = client.request(method, route.format(t=PLAIN_TASK))
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"


def test_unknown_tasks_and_ids(client: TestClient) -> None:
    assert_error(client.get("/tasks/2020-01-01_00-00-00-000000"), 404, "task_not_found")
    assert_error(client.get("/tasks/2020-01-01_00-00-00-000000/asset_bytes?key=model.pkl"), 404, "task_not_found")
    assert_error(client.get("/tasks/not-a-task/sota_factors"), 404, "task_not_found")  # a safe name, never seen
    assert_error(client.get("/tasks/-not-a-task/sota_factors"), 422, "invalid_request")
    assert_error(client.get("/tasks/.versions/sota_factors"), 422, "invalid_request")
    assert_error(client.get(f"/tasks/{PLAIN_TASK}/asset_bytes"), 422, "invalid_request")
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_incomplete_bundle_served_with_reasons(tmp_path: Path, published: Published) -> None:
    """A bundle published with ``selection_ready: false`` is served as such, reasons included."""
    _, contents = published
    content = with_weight(contents[PLAIN_TASK], b"x")
    manifest = content.manifest.model_copy(update={"selection_ready": False, "reasons": ["weights_not_persisted: x"]})
    files = {**content.files, MANIFEST: json_bytes(manifest)}
    store = tmp_path / "store"
    publish_bundle(store, BundleContent(task_id=PLAIN_TASK, files=files, manifest=manifest))
    body = TestClient(create_app(store)).get(f"/tasks/{PLAIN_TASK}/sota_factor_anchor").json()
    assert body["selection_ready"] is False and body["reasons"] == ["weights_not_persisted: x"]


def test_tampered_file_is_never_served_as_valid(tmp_path: Path, published: Published) -> None:
    """Bytes that no longer hash to the manifest: documents fail with bundle_integrity, streams are cut short.

    The files are first served intact (so the reader's per-file and per-manifest memos are warm): a later
    rewrite must still be caught, because any write changes the identity those memos are keyed on.
    """
    store = tmp_path / "store"
    shutil.copytree(published[0], store, symlinks=True)
    version = (store / PLAIN_TASK).resolve()
    client = TestClient(create_app(store))
    url = f"/tasks/{PLAIN_TASK}/asset_bytes"
    assert client.get(f"/tasks/{PLAIN_TASK}/factor_order").status_code == 200
    assert client.get(url, params={"key": "model.pkl"}).status_code == 200

    order = version / "factor_order.json"
    order.write_bytes(order.read_bytes().replace(f'"{SCHEMA_VERSION}"'.encode(), b'"9.9"', 1))
    weight = version / "model.pkl"
    data = bytearray(weight.read_bytes())
    data[100] ^= 0xFF
    weight.write_bytes(bytes(data))
    assert_error(client.get(f"/tasks/{PLAIN_TASK}/factor_order"), 500, "bundle_integrity")
    with pytest.raises(RuntimeError, match="response already started") as raised:  # the stream is cut short
        client.get(url, params={"key": "model.pkl"})
    assert isinstance(raised.value.__cause__, BundleIntegrityError)
    weight.write_bytes(bytes(data[:-1]))
    assert_error(client.get(url, params={"key": "model.pkl"}), 500, "bundle_integrity")
    assert client.get(f"/tasks/{SIGNED_TASK}/factor_order").status_code == 200

    manifest_path = version / MANIFEST
    manifest = json.loads(manifest_path.read_bytes())
    manifest["reasons"], manifest["selection_ready"] = ["edited on disk"], False
    manifest_path.write_text(json.dumps(manifest))
    assert client.get(f"/tasks/{PLAIN_TASK}/sota_factor_anchor").json()["reasons"] == ["edited on disk"]
