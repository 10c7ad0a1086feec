"""Rule 5 proven by the interpreter itself: an audit hook sees every open/listdir/scandir of a real extraction.

Hooks cannot be removed once added, so the extraction runs in a subprocess. Under the samples tree the only
paths touched must be ``__session__`` (its loop folders and snapshot files) and the one anchor parquet, all
opened read-only; nothing anywhere under the samples tree is created, renamed, removed or chmod-ed. The
extraction's own ``paths_opened_outside_session`` (from its AccessLog) must name exactly what the hook saw.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from rd_assets_tests.bundle_testkit import sample_signing_key
from rd_assets_tests.conftest import REPO_ROOT, SAMPLE_LOGS, SAMPLE_TASKS, SAMPLES, VENV_PYTHON, expected_for

AUDITED = """
import json
import os
import sys
from pathlib import Path

WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink", "os.link",
                "os.chmod", "os.chown", "os.utime", "os.truncate", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
events = []

def text(value):
    return os.fsdecode(value) if isinstance(value, (str, bytes, os.PathLike)) else None

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        events.append({"event": event, "paths": [text(path)], "mode": mode, "flags": flags})
    elif event in ("os.listdir", "os.scandir") or event in WRITE_EVENTS:
        paths = [text(a) for a in args if text(a) is not None] or ["."]
        events.append({"event": event, "paths": paths, "mode": None, "flags": None})

store, tasks = Path(sys.argv[1]), json.loads(sys.argv[2])  # {task log dir: signing key}
from rd_assets.core.bundle.extract import extract_task
from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.session.index import SnapshotIndex
from rd_assets_tests.bundle_testkit import SAMPLE_PATH_MAP

reports = {}
sys.addaudithook(hook)
for log_dir, key in tasks.items():
    outcome = extract_task(Path(log_dir), store=store, path_map=PathMap.parse([SAMPLE_PATH_MAP]),
                           index=SnapshotIndex(None), signing_key=key)
    reports[Path(log_dir).name] = outcome.report.paths_opened_outside_session
print(json.dumps({"events": events, "reports": reports}))
"""

_SNAPSHOT = re.compile(r"^__session__/\d+/\d+_[^/]+$")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _run(tmp_path: Path) -> dict:
    keys = {str(SAMPLE_LOGS / task): sample_signing_key(task) for task in SAMPLE_TASKS}
    proc = subprocess.run(
        [str(VENV_PYTHON), "-c", AUDITED, str(tmp_path / "store"), json.dumps(keys)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _is_write(event: dict) -> bool:
    if event["event"] in ("os.listdir", "os.scandir"):
        return False
    if event["event"] != "open":
        return True
    mode, flags = event["mode"], event["flags"]
    return bool(
        (isinstance(mode, str) and set(mode) & set("wax+")) or (isinstance(flags, int) and flags & _WRITE_FLAGS)
    )


def _resolve_relative_opens(events: list[dict]) -> list[dict]:
    """Folders and snapshots are opened relative to their parent's descriptor (``dir_fd``), so the hook sees a
    bare name: a relative folder (``O_DIRECTORY``) belongs to the last absolute folder opened (``__session__``),
    a relative file to the last folder. Any other relative open stays as is and fails the test."""
    root: str | None = None
    folder: str | None = None
    out = []
    for event in events:
        path = event["paths"][0]
        is_dir = event["event"] == "open" and bool((event["flags"] or 0) & os.O_DIRECTORY)
        if event["event"] == "open" and path and os.path.isabs(path):
            root = folder = path if is_dir else root
        elif event["event"] == "open" and path:
            base = root if is_dir else folder
            if base is not None:
                event = {**event, "paths": [os.path.join(base, path)]}
            if is_dir:
                folder = event["paths"][0]
        out.append(event)
    return out


def test_only_session_files_and_the_anchor_parquet_are_touched(tmp_path: Path) -> None:
    result = _run(tmp_path)
    real_samples = SAMPLES.resolve()  # the samples folder may be reached through a symlink: compare real paths
    touched = [
        {**e, "path": os.path.realpath(p)}
        for e in _resolve_relative_opens(result["events"])
        for p in e["paths"]
        if p and os.path.realpath(p).startswith(f"{real_samples}/")
    ]
    assert touched, "the hook saw nothing: the audit itself is broken"
    store = str(tmp_path / "store")
    for kind in ("os.rename", "os.symlink", "os.mkdir"):  # the hook does see writes (into the store)
        assert any(e["event"] == kind and any(p.startswith(store) for p in e["paths"]) for e in result["events"])

    parquets = {str(real_samples / "workspaces" / expected_for(t)["anchor_parquet_relpath"]) for t in SAMPLE_TASKS}
    opened_outside: dict[str, set[str]] = {t: set() for t in SAMPLE_TASKS}
    session_opens = 0
    for event in touched:
        path = event["path"]
        assert not _is_write(event), event
        rel = os.path.relpath(path, real_samples / "log")
        task, _, inner = rel.partition("/")
        if task in SAMPLE_TASKS and inner.startswith("__session__"):
            if event["event"] == "open" and not (event["flags"] or 0) & os.O_DIRECTORY:
                assert _SNAPSHOT.match(inner), event
                session_opens += 1
            else:  # a listing, or a folder opened (O_DIRECTORY | O_NOFOLLOW) to walk down to a snapshot
                assert inner == "__session__" or re.fullmatch(r"__session__/\d+", inner), event
            continue
        assert event["event"] == "open" and path in parquets, f"touched outside __session__: {event}"
        owner = next(t for t in SAMPLE_TASKS if path.endswith(expected_for(t)["anchor_parquet_relpath"]))
        opened_outside[owner].add(path)

    assert session_opens >= 2 * 30  # every candidate of both tasks was read (no index)
    for task in SAMPLE_TASKS:
        relpath = expected_for(task)["anchor_parquet_relpath"]
        assert opened_outside[task] == {str(real_samples / "workspaces" / relpath)}
        # the report's list is the AccessLog's (paths as mapped, not resolved), and it is right
        assert result["reports"][task] == [str(SAMPLES / "workspaces" / relpath)]
