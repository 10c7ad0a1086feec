"""Republishing while clients download: every response is one complete version whose ETag matches its bytes.

A real server process serves the store while this process republishes the task in a loop (four distinct
variants, ``keep_versions=2`` so versions being read are also pruned) through the real atomic publisher.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from rd_assets.api.bundle_reader import BundleReader, OpenFile, PinnedVersion
from rd_assets.api.routers.common import PIN_ATTEMPTS
from rd_assets.core.bundle.assemble import content_hash, file_entries
from rd_assets.core.bundle.store import publish_bundle
from rd_assets.core.contracts.bundle_models import MANIFEST, Manifest
from rd_assets_tests.api.support import PLAIN_TASK, app_for, extract_samples, serving, with_weight

DURATION_S = 3.0
CLIENTS = 8
VARIANTS = 4


def check_tar(data: bytes, etag: str, weights: dict[str, bytes]) -> str:
    """The tar is one whole version: files hash to its manifest, whose content hash is the ETag."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    manifest = Manifest.model_validate_json(files.pop(MANIFEST))
    assert file_entries(files) == manifest.files
    assert etag == f'"{manifest.content_hash}"' == f'"{content_hash(manifest.files)}"'
    assert files["model.pkl"] == weights[manifest.content_hash]
    return manifest.content_hash


def test_republish_while_downloading(tmp_path: Path) -> None:
    store = tmp_path / "store"
    base = extract_samples(store)[PLAIN_TASK]
    rng = random.Random(5)
    variants = [
        with_weight(base, rng.randbytes(256 * 1024 + i * 4099), generated_at_utc=f"2030-01-0{i + 1}T00:00:00Z")
        for i in range(VARIANTS)
    ]
    weights = {v.manifest.content_hash: v.files["model.pkl"] for v in variants}
    weights[base.manifest.content_hash] = base.files["model.pkl"]
    by_digest = {hashlib.sha256(w).hexdigest(): h for h, w in weights.items()}

    stop = threading.Event()
    errors: list[BaseException] = []
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    published = []

    def publisher() -> None:
        try:
            i = 0
            while not stop.is_set():
                result = publish_bundle(store, variants[i % VARIANTS], keep_versions=2)
                published.append(result.version_dir.name)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    def downloader(seed: int, base_url: str) -> None:
        pick = random.Random(seed)
        try:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                while not stop.is_set():
                    kind = pick.choice(["asset", "asset", "tar", "manifest"])
                    if kind == "asset":
                        r = client.get(f"/tasks/{PLAIN_TASK}/asset_bytes", params={"key": "model.pkl"})
                        assert r.status_code == 200, r.text
                        digest = hashlib.sha256(r.content).hexdigest()
                        assert r.headers["etag"] == f'"{digest}"'
                        version = by_digest[digest]
                        assert r.headers["x-rd-assets-content-hash"] == version
                    elif kind == "tar":
                        r = client.get(f"/tasks/{PLAIN_TASK}/bundle.tar")
                        assert r.status_code == 200, r.text
                        version = check_tar(r.content, r.headers["etag"], weights)
                    else:
                        r = client.get(f"/tasks/{PLAIN_TASK}")
                        assert r.status_code == 200, r.text
                        assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
                        version = json.loads(r.content)["content_hash"]
                        assert r.headers["x-rd-assets-content-hash"] == version
                    with lock:
                        seen[f"{kind}:{version}"] += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    with serving(store) as server:
        threads = [threading.Thread(target=publisher)]
        threads += [threading.Thread(target=downloader, args=(i, server.base_url)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(DURATION_S)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        open_fds = len(os.listdir(f"/proc/{server.pid}/fd"))
    assert not errors, errors[0]
    assert open_fds < 40, f"the server holds {open_fds} descriptors after the load: files are leaking"
    assert len(published) >= 10, published
    assert sum(seen.values()) >= 50, seen
    versions = {key.split(":", 1)[1] for key in seen}
    assert len(versions) >= 3, seen
    assert {key.split(":", 1)[0] for key in seen} == {"asset", "tar", "manifest"}


def test_version_pruned_between_pin_and_open_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pinned version disappears (real republish with keep_versions=1) before its file is opened:
    the request re-resolves and answers from the new version; if that keeps happening it answers 503."""
    store = tmp_path / "store"
    base = extract_samples(store)[PLAIN_TASK]
    variants = iter(with_weight(base, bytes([i]) * 1000, generated_at_utc=f"2031-01-01T00:00:0{i}Z") for i in range(9))
    original_open = BundleReader.open_file
    races = {"left": 1}

    def open_after_a_prune(self: BundleReader, pinned: PinnedVersion, relpath: str) -> OpenFile:
        if races["left"] > 0:
            races["left"] -= 1
            publish_bundle(store, next(variants), keep_versions=1)
        return original_open(self, pinned, relpath)

    monkeypatch.setattr(BundleReader, "open_file", open_after_a_prune)
    client = TestClient(app_for(store))
    first = client.get(f"/tasks/{PLAIN_TASK}/asset_bytes", params={"key": "model.pkl"})
    assert first.status_code == 200 and first.content == bytes([0]) * 1000
    assert first.headers["etag"] == f'"{hashlib.sha256(first.content).hexdigest()}"'

    races["left"] = PIN_ATTEMPTS
    gone = client.get(f"/tasks/{PLAIN_TASK}/asset_bytes", params={"key": "model.pkl"})
    assert gone.status_code == 503 and gone.headers["retry-after"] == "1"
    assert gone.json()["error"]["code"] == "bundle_version_gone"
    again = client.get(f"/tasks/{PLAIN_TASK}/asset_bytes", params={"key": "model.pkl"})
    assert again.status_code == 200 and again.content == bytes([PIN_ATTEMPTS]) * 1000
