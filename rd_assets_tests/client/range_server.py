"""A tiny Results-API look-alike with HTTP Range support and scripted faults, run as its own process in tests.

``rd-assets serve`` does not answer ``Range`` yet, so resuming is proven against this server: it serves a bundle
store's current versions on the API's routes (``/tasks``, ``/tasks/{id}``, ``/tasks/{id}/asset_bytes?key=``) with the
same ETags and ``x-rd-assets-content-hash``, honours ``Range: bytes=a-[b]`` and ``If-Range`` (RFC 9110), and can be
told to misbehave: cut a body short once per file, answer 503 a few times, serve a corrupted file, ignore Range,
claim another bundle version on every file (``stale_hash``).

Run: ``python range_server.py CONFIG_JSON``; it prints its port on the first line of stdout, appends one JSON line
per request to ``config["log"]`` and listens on 127.0.0.1 until it is sent SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    config: dict[str, Any] = {}
    lock = threading.Lock()
    cut_done: set[str] = set()
    failures_left = [0]

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the JSON log is the record
        return

    def _log(self, status: int, **extra: Any) -> None:
        entry = {"path": self.path, "status": status, "range": self.headers.get("range"),
                 "if_none_match": self.headers.get("if-none-match"), **extra}  # fmt: skip
        with self.lock, open(self.config["log"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._log(status)

    def _version(self, task_id: str) -> Path | None:
        link = Path(self.config["store"]) / task_id
        return link.resolve() if link.is_symlink() else None

    def do_GET(self) -> None:
        with self.lock:
            failing = self.failures_left[0] > 0
            self.failures_left[0] -= failing
        if failing:
            self._send(503, b'{"ok": false, "error": {"code": "over_capacity", "message": "busy"}}',
                       {"retry-after": "0", "content-type": "application/json"})  # fmt: skip
            return
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if parts == ["tasks"]:
            self._send(200, json.dumps({"total": 0, "tasks": []}).encode(), {"content-type": "application/json"})
        elif len(parts) == 2 and parts[0] == "tasks" and (version := self._version(parts[1])):
            data = (version / "manifest.json").read_bytes()
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            if self.headers.get("if-none-match") == etag:
                self._send(304, b"", {"etag": etag})
            else:
                self._send(200, data, {"etag": etag, "content-type": "application/json"})
        elif len(parts) == 3 and parts[2] == "asset_bytes" and (version := self._version(parts[1])):
            key = parse_qs(url.query).get("key", [""])[0]
            self._asset(version, key)
        else:
            self._send(404, b'{"ok": false, "error": {"code": "not_found", "message": "no such route"}}')

    def _asset(self, version: Path, key: str) -> None:
        manifest = json.loads((version / "manifest.json").read_bytes())
        entry = manifest["files"].get(key)
        if entry is None:
            self._send(404, b'{"ok": false, "error": {"code": "asset_not_found", "message": "no such key"}}')
            return
        data = (version / key).read_bytes()
        if key in self.config.get("corrupt", []):
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        etag = f'"{entry["sha256"]}"'
        served_hash = "0" * 64 if self.config.get("stale_hash") else manifest["content_hash"]
        headers = {"etag": etag, "x-rd-assets-content-hash": served_hash, "accept-ranges": "bytes",
                   "content-type": "application/octet-stream"}  # fmt: skip
        status, body = 200, data
        match = RANGE.match(self.headers.get("range", ""))
        if_range = self.headers.get("if-range")
        if match and not self.config.get("ignore_range") and (if_range is None or if_range == etag):
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) else len(data) - 1
            if first >= len(data):
                self._send(416, b"", {"content-range": f"bytes */{len(data)}"})
                return
            status, body = 206, data[first : last + 1]
            headers["content-range"] = f"bytes {first}-{last}/{len(data)}"
        cut = self.config.get("cut", {}).get(key)
        with self.lock:
            cutting = cut is not None and key not in self.cut_done
            if cutting:
                self.cut_done.add(key)
        if not cutting:
            self._send(status, body, headers)
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self._log(status, cut=cut)
        self.close_connection = True
        self.connection.shutdown(2)


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    Handler.config = config
    Handler.failures_left[0] = int(config.get("fail_first", 0))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(server.server_address[1], flush=True)
    server.serve_forever()
    os._exit(0)


if __name__ == "__main__":
    main()
