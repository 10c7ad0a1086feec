"""The Results API refuses traversal, never writes, never unpickles, honours its bearer token and has no CORS.

The traversal corpus is sent over a raw socket to a real ``rd-assets serve`` process that runs under a Python audit
hook: whatever the request, the process opens nothing outside the store (a canary file sits right next to it),
performs no write-like operation and never looks up a pickle global.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from rd_assets.api.app import create_app
from rd_assets.api.limits import ApiLimits
from rd_assets.api.security import SCHEME_NAME
from rd_assets.api.settings import ApiSettings
from rd_assets.core.contracts.bundle_models import MANIFEST
from rd_assets_tests.api.support import PLAIN_TASK, SAMPLE_TASKS, SIGNED_TASK, app_for, extract_samples, free_port, stop

CANARY = "canary-secret-7f3a9c"
ROUTES = (
    "/tasks",
    f"/tasks/{PLAIN_TASK}",
    f"/tasks/{PLAIN_TASK}/session_anchor",
    f"/tasks/{PLAIN_TASK}/sota_factor_anchor",
    f"/tasks/{PLAIN_TASK}/sota_factors",
    f"/tasks/{PLAIN_TASK}/factor_order",
    f"/tasks/{PLAIN_TASK}/model_meta",
    f"/tasks/{PLAIN_TASK}/asset_bytes?key=model.pkl",
    f"/tasks/{PLAIN_TASK}/bundle.tar",
    "/tasks/2020-01-01_00-00-00-000000",
    "/openapi.json",
    "/docs",
    "/nowhere",
)

ROUTE_TEMPLATES = (
    "/tasks/{task_id}",
    "/tasks/{task_id}/session_anchor",
    "/tasks/{task_id}/sota_factor_anchor",
    "/tasks/{task_id}/sota_factors",
    "/tasks/{task_id}/factor_order",
    "/tasks/{task_id}/model_meta",
    "/tasks/{task_id}/asset_bytes",
    "/tasks/{task_id}/bundle.tar",
)

# Query values exactly as they travel on the wire (percent-encoding included on purpose).
HOSTILE_KEYS = [
    "../canary.txt",
    "..%2Fcanary.txt",
    "..%2F..%2Fcanary.txt",
    "%2e%2e%2fcanary.txt",
    "%2E%2E/%2E%2E/canary.txt",
    "%252e%252e%252fcanary.txt",
    "..%252fcanary.txt",
    "....%2F%2Fcanary.txt",
    "..;/canary.txt",
    "..",
    ".",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "//etc/passwd",
    "%2F%2Fetc%2Fpasswd",
    "..%5Ccanary.txt",
    "%5Cetc%5Cpasswd",
    "factors%5C..%5C..%5Ccanary.txt",
    "C:%5CWindows%5Cwin.ini",
    "C:/Windows/win.ini",
    "file:///etc/passwd",
    "factors/../../canary.txt",
    "factors/../model.pkl",
    "./model.pkl",
    "model.pkl%00",
    "model.pkl%00.txt",
    "%00",
    "%00../canary.txt",
    "~/.ssh/id_rsa",
    "~root",
    f".versions/{PLAIN_TASK}/manifest.json",
    f"../.versions/{PLAIN_TASK}",
    f"../{SIGNED_TASK}/params.pkl",
    ".lock",
    "model.pkl/",
    "model.pkl/..",
    "factors",
    "%E2%80%A5/canary.txt",
    "%EF%BC%8E%EF%BC%8E/canary.txt",
    "..%E2%88%95canary.txt",
    "%C0%AE%C0%AE/canary.txt",
    "%20model.pkl",
    "MODEL.PKL",
    "manifest.json%0A",
    "a" * 600,
    "",
]
HOSTILE_TASK_IDS = [
    "..",
    "%2e%2e",
    "%252e%252e",
    "..%2F..%2Fcanary.txt",
    "%2F..%2F..%2Fcanary.txt",
    ".versions",
    f".tmp-link-{PLAIN_TASK}-0",
    f"{PLAIN_TASK}%2F..",
    f"{PLAIN_TASK}%2F..%2F..%2Fcanary.txt",
    f"{PLAIN_TASK}%00",
    f"{PLAIN_TASK}%5C..",
    f"{PLAIN_TASK}%20",
    f"{PLAIN_TASK}.",
    f"{PLAIN_TASK}%0A",
    PLAIN_TASK[:-1],
    PLAIN_TASK + "0",
    "~",
    "%7E",
    "%D9%A2%D9%A0%D9%A2%D9%A6-03-02_09-15-27-118204",
]
HOSTILE_PATHS = [
    f"/tasks/{PLAIN_TASK}/../../canary.txt",
    f"/tasks/{PLAIN_TASK}/..%2F..%2Fcanary.txt",
    f"/tasks/{PLAIN_TASK}/model.pkl",
    f"/tasks/{PLAIN_TASK}/factors/../model.pkl",
    f"/tasks/{PLAIN_TASK}/asset_bytes/../../../canary.txt",
    "/tasks/%2e%2e/%2e%2e/canary.txt",
    "/..%2f..%2fcanary.txt",
    "//canary.txt",
    "/canary.txt",
    "/tasks/../canary.txt",
]

AUDITED_SERVER = textwrap.dedent(
    """
    import json, os, sys
    log_fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    WATCHED = {"open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink",
               "os.link", "os.truncate", "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.move",
               "shutil.copyfile", "pickle.find_class", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn"}

    def hook(event, args):
        if event in WATCHED:
            path = args[0] if args else None
            rest = [a if isinstance(a, (int, str, type(None))) else repr(a) for a in args[1:3]]
            line = json.dumps([event, path if isinstance(path, (str, int, type(None))) else repr(path), *rest])
            os.write(log_fd, line.encode() + b"\\n")

    sys.addaudithook(hook)
    from rd_assets.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sec")
    (root / "canary.txt").write_text(CANARY)
    store = root / "store"
    extract_samples(store)
    return store


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """One HTTP/1.1 request with the target exactly as given (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1"))
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def corpus() -> list[str]:
    targets = [f"/tasks/{PLAIN_TASK}/asset_bytes?key={key}" for key in HOSTILE_KEYS]
    for tid in HOSTILE_TASK_IDS:
        targets += [f"/tasks/{tid}", f"/tasks/{tid}/asset_bytes?key=model.pkl", f"/tasks/{tid}/bundle.tar"]
    return targets + HOSTILE_PATHS


def audit_events(log: Path, start: int) -> list[list]:
    with log.open("rb") as fh:
        fh.seek(start)
        return [json.loads(line) for line in fh.read().splitlines()]


def test_traversal_corpus_against_audited_server(store: Path, tmp_path: Path) -> None:
    assert len(HOSTILE_KEYS) + len(HOSTILE_TASK_IDS) >= 40
    script, log, port = tmp_path / "audited_server.py", tmp_path / "audit.jsonl", free_port()
    script.write_text(AUDITED_SERVER)
    cmd = [sys.executable, str(script), str(log), "serve", "--store", str(store), "--port", str(port)]
    errors = tmp_path / "server.err"
    with errors.open("wb") as err:
        proc = subprocess.Popen([*cmd, "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, errors.read_text()
            try:
                if raw_get(port, "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "audited server did not start"
            time.sleep(0.05)
        warm = [*ROUTES, f"/tasks/{PLAIN_TASK}/asset_bytes?key=..", "/tasks/x/bundle.tar"]
        for target in warm:  # first use imports lazily; audit only what follows
            raw_get(port, target)
        start = log.stat().st_size

        results = {target: raw_get(port, target) for target in corpus()}
        legit = {target: raw_get(port, target)[0] for target in ROUTES[:9]}
        events = audit_events(log, start)
        whole_log = audit_events(log, 0)
    finally:
        stop(proc)

    bad = {t: s for t, (s, _) in results.items() if s not in (404, 422)}
    assert not bad, bad
    for target, (_, body) in results.items():
        assert CANARY.encode() not in body, target
        error = json.loads(body)
        assert error["ok"] is False and error["error"]["code"], target
    assert set(legit.values()) == {200}, legit

    real_store = os.path.realpath(store)
    outside = [e for e in events if e[0] in ("open", "os.listdir", "os.scandir") and isinstance(e[1], str)]
    outside = [e for e in outside if not (os.path.realpath(e[1]) + os.sep).startswith(real_store + os.sep)]
    assert outside == [], outside
    assert any(e[0] == "open" and str(e[1]).endswith("/model.pkl") for e in events), "the audit saw no bundle read"
    writes = [e for e in events if e[0] != "open" and e[0] not in ("os.listdir", "os.scandir")]
    writes += [e for e in events if e[0] == "open" and isinstance(e[3], int) and e[3] & WRITE_FLAGS]
    writes += [e for e in events if e[0] == "open" and isinstance(e[2], str) and set(e[2]) & set("wax+")]
    assert writes == [], writes
    assert not [e for e in whole_log if "canary" in str(e[1])], "the canary was touched"
    assert not [e for e in whole_log if e[0] == "pickle.find_class"], "the API unpickled something"


def test_only_get_routes_exist(store: Path) -> None:
    app = app_for(store)
    methods = set()
    for route in app.routes:
        methods |= set(getattr(route, "methods", None) or ())
    assert methods <= {"GET", "HEAD"}
    assert all(route.methods == {"GET"} for route in app.routes if isinstance(route, APIRoute))


def test_no_cors_by_default(store: Path) -> None:
    client = TestClient(app_for(store))
    origin = {"Origin": "https://evil.example"}
    preflight = client.options(f"/tasks/{PLAIN_TASK}", headers={**origin, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 405
    simple = client.get(f"/tasks/{PLAIN_TASK}", headers=origin)
    assert simple.status_code == 200
    for response in (preflight, simple):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_bearer_token_guards_every_route_but_health(store: Path) -> None:
    client = TestClient(app_for(store, token="s3cret-token"))
    assert client.get("/health").status_code == 200
    for route in ROUTES:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer s3cret-token-and-more"},
            {"Authorization": "Bearer s3cret-toke"},
            {"Authorization": "Basic s3cret-token"},
            {"Authorization": "s3cret-token"},
            {"X-Token": "s3cret-token"},
        ):
            r = client.get(route, headers=headers)
            assert r.status_code == 401, (route, headers)
            assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        assert client.head(route).status_code == 401
        assert client.post(route).status_code == 401
    good = {"Authorization": "Bearer s3cret-token"}
    assert client.get(f"/tasks/{PLAIN_TASK}/sota_factor_anchor", headers=good).status_code == 200
    assert client.get(
        f"/tasks/{PLAIN_TASK}/sota_factor_anchor", headers={"Authorization": "bearer s3cret-token"}
    ).is_success
    two = httpx.Headers([("Authorization", "Bearer s3cret-token"), ("Authorization", "Bearer s3cret-token")])
    assert client.get("/tasks", headers=two).status_code == 401


@pytest.mark.parametrize("token", ["", " ", "a b", "tok\n"])
def test_blank_or_spaced_tokens_are_refused(store: Path, token: str) -> None:
    with pytest.raises(ValueError, match="RD_ASSETS_API_TOKEN"):
        app_for(store, token=token)


def copy_store(store: Path, tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "store"
    shutil.copytree(store, target, symlinks=True)
    (tmp_path / "canary.txt").write_text(CANARY)
    return target, (target / PLAIN_TASK).resolve()


def assert_refused(client: TestClient, url: str, code: str) -> None:
    r = client.get(url)
    assert r.status_code == 500 and r.json()["error"]["code"] == code, r.text
    assert CANARY not in r.text


def test_task_link_pointing_outside_the_store_is_refused(store: Path, tmp_path: Path) -> None:
    copy, version = copy_store(store, tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(version, outside)
    (copy / PLAIN_TASK).unlink()
    (copy / PLAIN_TASK).symlink_to(outside)
    client = TestClient(app_for(copy))
    for url in (f"/tasks/{PLAIN_TASK}", f"/tasks/{PLAIN_TASK}/asset_bytes?key=model.pkl"):
        assert_refused(client, url, "bundle_integrity")
    listing = client.get("/tasks").json()
    assert sorted(t["task_id"] for t in listing["tasks"]) == sorted(set(SAMPLE_TASKS) - {PLAIN_TASK})
    assert [p["task_id"] for p in listing["problems"]] == [PLAIN_TASK]


def test_version_dir_symlinked_elsewhere_is_refused(store: Path, tmp_path: Path) -> None:
    copy, version = copy_store(store, tmp_path)
    outside = tmp_path / "outside"
    shutil.move(version, outside)
    version.symlink_to(outside)
    assert_refused(TestClient(app_for(copy)), f"/tasks/{PLAIN_TASK}/sota_factor_anchor", "bundle_integrity")


def test_symlinked_file_inside_a_version_is_not_followed(store: Path, tmp_path: Path) -> None:
    copy, version = copy_store(store, tmp_path)
    victim = version / "factors" / "Volatility_5D.py"
    victim.unlink()
    victim.symlink_to(tmp_path / "canary.txt")
    client = TestClient(app_for(copy))
    assert_refused(client, f"/tasks/{PLAIN_TASK}/asset_bytes?key=factors/Volatility_5D.py", "bundle_integrity")
    assert_refused(client, f"/tasks/{PLAIN_TASK}/bundle.tar", "bundle_integrity")


def test_manifest_listing_a_traversing_relpath_is_refused(store: Path, tmp_path: Path) -> None:
    copy, version = copy_store(store, tmp_path)
    manifest = json.loads((version / MANIFEST).read_text())
    manifest["files"]["../../../canary.txt"] = {"sha256": "0" * 64, "size": len(CANARY)}
    (version / MANIFEST).write_text(json.dumps(manifest))
    client = TestClient(app_for(copy))
    r = client.get(f"/tasks/{PLAIN_TASK}/asset_bytes", params={"key": "../../../canary.txt"})
    assert r.status_code == 422 and CANARY not in r.text
    assert_refused(client, f"/tasks/{PLAIN_TASK}/bundle.tar", "bundle_store")


def test_openapi_declares_the_bearer_scheme_on_every_protected_route(store: Path) -> None:
    good = {"Authorization": "Bearer s3cret-token"}
    client = TestClient(app_for(store, token="s3cret-token"))
    assert client.get("/openapi.json").status_code == 401
    spec = client.get("/openapi.json", headers=good).json()
    schemes = spec["components"]["securitySchemes"]
    assert list(schemes) == [SCHEME_NAME] and schemes[SCHEME_NAME]["type"] == "http"
    assert schemes[SCHEME_NAME]["scheme"] == "bearer"
    operations = {(path, method): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert {path for path, _ in operations} >= {"/health", "/tasks", "/tasks/{task_id}/status", *ROUTE_TEMPLATES}
    for (path, _), op in operations.items():
        if path == "/health":
            assert "security" not in op
        else:
            assert op["security"] == [{SCHEME_NAME: []}], path
            assert "401" in op["responses"], path
    unguarded = TestClient(app_for(store)).get("/openapi.json").json()
    assert "securitySchemes" not in unguarded.get("components", {})
    assert not [op for ops in unguarded["paths"].values() for op in ops.values() if "security" in op]


def test_limits_are_checked_before_the_token(store: Path) -> None:
    limits = ApiLimits(max_header_count=8, max_url_bytes=256)
    client = TestClient(create_app(ApiSettings(store=store, api_token="s3cret-token", limits=limits)))
    many = {f"X-H{i}": "v" for i in range(10)}
    r = client.get("/tasks", headers=many)
    assert r.status_code == 431 and r.json()["error"]["code"] == "too_many_headers"
    r = client.get("/tasks?pad=" + "u" * 300)
    assert r.status_code == 414 and r.json()["error"]["code"] == "uri_too_long"
    assert client.get("/tasks").status_code == 401
    assert client.get("/tasks", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
