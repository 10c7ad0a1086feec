"""``rd-assets extract`` / ``verify`` / ``schema`` as people and scripts use them: output, exit codes, JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rd_assets.cli import main
from rd_assets.core.bundle.task_status import read_failure
from rd_assets.core.contracts.bundle_models import ExtractResult, VerifyReport
from rd_assets.core.contracts.schemas import DOCUMENT_MODELS, SCHEMA_SUFFIX, schema_files
from rd_assets.core.session.fingerprint import session_fingerprint
from rd_assets_tests.bundle_testkit import GENERATED_TASK, SAMPLE_PATH_MAP, generated_task, tree_state
from rd_assets_tests.conftest import PLAIN_TASK, RD_ASSETS, REPO_ROOT, SAMPLE_LOGS, SIGNED_TASK, expected_for


def _extract_args(log_dir: Path, store: Path, *extra: str) -> list[str]:
    return ["extract", str(log_dir), "--store", str(store), "--no-index", *extra]


def test_extract_prints_a_summary_and_then_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RD_ASSETS_SIGNING_KEY", expected_for(SIGNED_TASK)["signing_key"])
    args = _extract_args(SAMPLE_LOGS / SIGNED_TASK, tmp_path / "store", "--path-map", SAMPLE_PATH_MAP)
    assert main(args) == 0
    out = capsys.readouterr().out
    expected = expected_for(SIGNED_TASK)
    assert "anchor     trace.hist[3]" in out
    assert f"factors    3: {', '.join(expected['sota_factor_names'])}" in out
    assert f"weight     params.pkl  {expected['weights_bytes']} bytes" in out
    assert "order      20 alpha + 3 dynamic = 23" in out
    assert "alignment  aligned with the model's 23 features" in out
    assert "ready      true" in out
    assert f"bundle     {tmp_path / 'store' / SIGNED_TASK} -> v000001-" in out and "published" in out

    assert main(args) == 0
    assert "unchanged (identical content already current)" in capsys.readouterr().out


def test_extract_json_is_an_extract_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _extract_args(SAMPLE_LOGS / PLAIN_TASK, tmp_path / "store", "--path-map", SAMPLE_PATH_MAP, "--json")
    assert main(args) == 0
    result = ExtractResult.model_validate_json(capsys.readouterr().out)
    assert result.ok and result.changed and result.selection_ready
    assert result.report is not None and result.report.run is not None and result.report.run.unpickled_snapshots == 30
    assert result.bundle_path == str(tmp_path / "store" / PLAIN_TASK)


def test_extract_failure_exits_non_zero_with_the_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = generated_task(tmp_path, weights=False)
    path_map = f"{task.path_map.rules[0].source}={task.path_map.rules[0].target}"
    args = _extract_args(task.log_dir, tmp_path / "store", "--path-map", path_map)
    assert main(args) != 0
    captured = capsys.readouterr()
    assert captured.err.startswith("error: weights_not_persisted: ") and captured.out == ""
    assert not (tmp_path / "store" / GENERATED_TASK).exists()

    assert main([*args, "--json"]) != 0
    result = ExtractResult.model_validate_json(capsys.readouterr().out)
    assert not result.ok and result.error is not None and result.error.code == "weights_not_persisted"

    assert main([*args, "--allow-incomplete"]) == 0
    out = capsys.readouterr().out
    assert (
        "weight     none: weights not persisted in session" in out and "ready      false: weights_not_persisted" in out
    )


def test_missing_path_map_is_factor_parquet_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_extract_args(SAMPLE_LOGS / PLAIN_TASK, tmp_path / "store")) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: factor_parquet_not_found: model_input_order cannot be confirmed")
    assert "not found (pickled workspace_path '/mnt/f/Dev/RD-Agent-main/" in err
    assert "no path-map rule matched (--path-map / RD_ASSETS_PATH_MAP: none given)" in err

    assert main([*_extract_args(SAMPLE_LOGS / PLAIN_TASK, tmp_path / "store"), "--allow-incomplete"]) == 0
    out = capsys.readouterr().out
    assert out.count("combined_factors_df.parquet not found") == 1, out
    assert "alignment  NOT aligned: model_input_order unresolved: (as above)" in out
    assert "ready      false: factor_order_not_aligned: model_input_order unresolved: (as above)" in out
    assert "None" not in out and "?" not in out


def test_bad_options_are_refused_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = generated_task(tmp_path)
    before = tree_state(task.log_dir)
    assert main(_extract_args(task.log_dir, tmp_path / "store", "--path-map", "relative=/x")) != 0
    assert "invalid_path_map" in capsys.readouterr().err
    index_inside = ["extract", str(task.log_dir), "--store", str(tmp_path / "s"), "--index", str(task.log_dir / "i.db")]
    assert main(index_inside) != 0
    assert "error: bundle_store: the snapshot index must not be inside the log dir" in capsys.readouterr().err
    assert main(_extract_args(task.log_dir, task.log_dir / "store")) != 0
    assert tree_state(task.log_dir) == before
    with pytest.raises(SystemExit):
        main([*_extract_args(task.log_dir, tmp_path / "store"), "--keep-versions", "0"])


def test_extract_records_a_failure_and_a_publication_clears_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task whose session fails is recorded in the store (never in the log dir); publishing removes the record."""
    store = tmp_path / "store"
    broken = tmp_path / "log" / PLAIN_TASK
    (broken / "__session__" / "0").mkdir(parents=True)
    (broken / "__session__" / "0" / "0_direct_exp_gen").write_bytes(b"not a pickle")
    before = tree_state(broken)
    assert main(_extract_args(broken, store)) != 0
    assert capsys.readouterr().err.startswith("error: no_snapshot: ")
    record = read_failure(store, PLAIN_TASK)
    assert record is not None and record.code == "no_snapshot" and record.path == str(broken)
    assert record.fingerprint == session_fingerprint(broken).token
    assert tree_state(broken) == before and not (store / PLAIN_TASK).exists()

    assert main(_extract_args(broken, store, "--path-map", "relative=/x")) != 0  # the options, not the task
    assert "invalid_path_map" in capsys.readouterr().err
    assert read_failure(store, PLAIN_TASK) == record

    assert main(_extract_args(SAMPLE_LOGS / PLAIN_TASK, store, "--path-map", SAMPLE_PATH_MAP)) == 0
    assert read_failure(store, PLAIN_TASK) is None and (store / PLAIN_TASK).is_symlink()


def test_verify_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = generated_task(tmp_path)
    path_map = f"{task.path_map.rules[0].source}={task.path_map.rules[0].target}"
    assert main(_extract_args(task.log_dir, tmp_path / "store", "--path-map", path_map)) == 0
    bundle = tmp_path / "store" / GENERATED_TASK
    capsys.readouterr()
    assert main(["verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("OK") and "model.txt loaded with lightgbm" in out

    (bundle / "factor_entry.py").write_text("# tampered\n")
    assert main(["verify", str(bundle), "--json"]) != 0
    captured = capsys.readouterr()
    report = VerifyReport.model_validate_json(captured.out)
    assert not report.ok and report.problems[0].startswith("factor_entry.py: sha256/size")
    assert captured.err.startswith("error: bundle_integrity: 1 problem(s)")
    assert main(["verify", str(bundle)]) != 0
    assert "    - factor_entry.py: sha256/size" in capsys.readouterr().out


def test_the_console_script_runs_end_to_end(tmp_path: Path) -> None:
    store = tmp_path / "store"
    extract = subprocess.run(
        [str(RD_ASSETS), *_extract_args(SAMPLE_LOGS / PLAIN_TASK, store, "--path-map", SAMPLE_PATH_MAP)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert extract.returncode == 0, extract.stderr
    verify = subprocess.run(
        [str(RD_ASSETS), "verify", str(store / PLAIN_TASK)], capture_output=True, text=True, timeout=120, check=False
    )
    assert verify.returncode == 0 and verify.stdout.rstrip().endswith("OK"), verify.stdout + verify.stderr


def test_schema_cli_writes_one_file_per_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schemas"
    out.mkdir()
    (out / f"Retired{SCHEMA_SUFFIX}").write_text("{}")
    (out / "notes.txt").write_text("kept")
    assert main(["schema", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {f"{m.__name__}{SCHEMA_SUFFIX}" for m in DOCUMENT_MODELS} | {"notes.txt"}
    for model in DOCUMENT_MODELS:
        schema = json.loads((out / f"{model.__name__}{SCHEMA_SUFFIX}").read_text())
        assert schema["title"] == model.__name__ and schema["additionalProperties"] is False
        assert "schema_version" in schema["properties"]
    capsys.readouterr()
    assert main(["schema"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {f"{m.__name__}{SCHEMA_SUFFIX}" for m in DOCUMENT_MODELS}


def test_committed_schemas_equal_a_fresh_export() -> None:
    """``schemas/`` is what consumers validate against: regenerate with ``rd-assets schema --out schemas/``."""
    committed = {p.name: p.read_bytes() for p in (REPO_ROOT / "schemas").glob(f"*{SCHEMA_SUFFIX}")}
    assert committed == schema_files()
