"""``Range`` on asset bytes (one range: 206 + Content-Range; unsatisfiable: 416; the rest ignored: 200) and the
content types of bundle files, through the in-process client over bundles the real pipeline published."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from rd_assets.core.bundle.store import publish_bundle
from rd_assets.core.contracts.bundle_models import MANIFEST, Manifest
from rd_assets_tests.api.support import PLAIN_TASK, SIGNED_TASK, app_for, extract_samples, with_weight

SIZE = 3 * 1024 * 1024 + 17
"""Over three of the server's 1 MiB read chunks, so ranges start, end and cross inside and between them."""
MiB = 1024 * 1024
URL = f"/tasks/{PLAIN_TASK}/asset_bytes"
KEY = {"key": "model.pkl"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, bytes, Path]:
    store = tmp_path_factory.mktemp("ranges") / "store"
    contents = extract_samples(store)
    weight = random.Random(11).randbytes(SIZE)
    publish_bundle(store, with_weight(contents[PLAIN_TASK], weight, generated_at_utc="2030-01-01T00:00:00Z"))
    return TestClient(app_for(store)), weight, store


def get(client: TestClient, headers: dict[str, str]) -> httpx.Response:
    return client.get(URL, params=KEY, headers=headers)


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-9", 0, 9),
        ("bytes=10-", 10, SIZE - 1),
        ("bytes=-5", SIZE - 5, SIZE - 1),
        (f"bytes={MiB - 3}-{MiB + 3}", MiB - 3, MiB + 3),
        (f"bytes={MiB}-{3 * MiB - 1}", MiB, 3 * MiB - 1),
        (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
        ("bytes=5-999999999999", 5, SIZE - 1),
        ("bytes=-999999999999", 0, SIZE - 1),
        ("BYTES=2-3", 2, 3),
    ],
)
def test_one_range_is_206_with_content_range(
    served: tuple[TestClient, bytes, Path], spec: str, start: int, end: int
) -> None:
    client, weight, _ = served
    r = get(client, {"Range": spec})
    assert r.status_code == 206, r.text
    assert r.content == weight[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert int(r.headers["content-length"]) == end - start + 1
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["etag"] == get(client, {}).headers["etag"]
    head = client.head(URL, params=KEY, headers={"Range": spec})
    assert (
        head.status_code == 206 and head.content == b"" and head.headers["content-range"] == r.headers["content-range"]
    )


@pytest.mark.parametrize("spec", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
def test_a_range_past_the_end_is_416(served: tuple[TestClient, bytes, Path], spec: str) -> None:
    r = get(served[0], {"Range": spec})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{SIZE}"
    assert r.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "spec", ["bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=abc", "bytes=-", "bytes 0-1", f"bytes={'9' * 19}-"]
)
def test_ranges_we_do_not_serve_get_the_whole_file(served: tuple[TestClient, bytes, Path], spec: str) -> None:
    client, weight, _ = served
    r = get(client, {"Range": spec})
    assert r.status_code == 200 and r.content == weight and "content-range" not in r.headers


def test_if_range_and_if_none_match(served: tuple[TestClient, bytes, Path]) -> None:
    client, weight, _ = served
    etag = get(client, {}).headers["etag"]
    assert get(client, {"Range": "bytes=0-3", "If-Range": etag}).content == weight[:4]
    for stale in ('"0000"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        r = get(client, {"Range": "bytes=0-3", "If-Range": stale})
        assert r.status_code == 200 and r.content == weight, stale
    r = get(client, {"Range": "bytes=0-3", "If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""


def test_a_range_of_an_empty_file_is_416(tmp_path: Path) -> None:
    store = tmp_path / "store"
    base = extract_samples(store)[SIGNED_TASK]
    publish_bundle(store, with_weight(base, b"", generated_at_utc="2030-01-01T00:00:00Z"))
    client = TestClient(app_for(store))
    url = f"/tasks/{SIGNED_TASK}/asset_bytes"
    assert client.get(url, params={"key": "params.pkl"}).content == b""
    for spec in ("bytes=0-", "bytes=-1"):
        r = client.get(url, params={"key": "params.pkl"}, headers={"Range": spec})
        assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"


EXPECTED_TYPES = {
    ".py": "text/x-python; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".yaml": "application/yaml",
    ".pkl": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}


@pytest.mark.parametrize("task_id", [PLAIN_TASK, SIGNED_TASK])
def test_content_types_of_bundle_files(served: tuple[TestClient, bytes, Path], task_id: str) -> None:
    client, _, store = served
    manifest = Manifest.model_validate_json((store / task_id / MANIFEST).read_bytes())
    seen = set()
    for relpath in manifest.files:
        suffix = Path(relpath).suffix
        r = client.get(f"/tasks/{task_id}/asset_bytes", params={"key": relpath})
        assert r.status_code == 200 and r.headers["content-type"] == EXPECTED_TYPES[suffix], relpath
        seen.add(suffix)
    assert {".py", ".json"} <= seen
    assert (".txt" if task_id == PLAIN_TASK else ".safetensors") in seen
    factor = client.get(f"/tasks/{task_id}/asset_bytes", params={"key": "factor.py"})
    assert factor.headers["content-type"] == "text/x-python; charset=utf-8"
