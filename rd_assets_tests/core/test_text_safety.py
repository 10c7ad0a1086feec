"""Red-team findings on untrusted text: terminal control in CLI output, lone surrogates, hostile file names.

Factor names and code come from pickles an attacker may have written; each test builds its payload here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rd_assets.cli import main
from rd_assets.cli.common import fail, print_json, print_lines, stderr_progress
from rd_assets.core.artifacts.factor_code import STEM_MAX, build_factor_code, factor_relpaths, safe_file_stem
from rd_assets.core.bundle.extract import collect_parts, extract_task
from rd_assets.core.bundle.store import RELPART_RE, check_relpath, publish_bundle
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import MANIFEST, SOTA_FACTORS, ExtractResult, Manifest, SotaFactorsDoc
from rd_assets.core.contracts.models import ErrorInfo, FactorRecord
from rd_assets.core.errors import RdAssetsError
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.text_safety import encodable, printable
from rd_assets_tests.bundle_testkit import GENERATED_TASK, GeneratedTask, generated_task, tree_bytes
from rd_assets_tests.core.artifacts.test_factor_order import anchor_of
from rd_assets_tests.rdagent_fixtures import ExperimentSpec, FactorSpec

OSC_TITLE = "Mom\x1b]0;pwned\x07_10D"
CLEAR_SCREEN = "Vol\x1b[2J_5D"
C1_AND_BIDI = "Rev\x9b31m\x7f\u202egpj.exe\u2066_5D"
UNSAFE_CHARS = [
    *(chr(c) for c in range(0x20)),
    "\x7f",
    *(chr(c) for c in range(0x80, 0xA0)),
    "\u061c",
    "\u200e",
    "\u200f",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
    "\u2028",
    "\u2029",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
]


def _inert(text: str) -> None:
    """Nothing a terminal could act on: every line is already what :func:`printable` makes of it."""
    assert "\x1b" not in text and "\x07" not in text
    assert all(printable(line) == line for line in text.split("\n"))


def _path_map(task: GeneratedTask) -> str:
    rule = task.path_map.rules[0]
    return f"{rule.source}={rule.target}"


# ----------------------------------------------------------------------------- finding 1: terminal control


@pytest.mark.parametrize("char", UNSAFE_CHARS, ids=lambda c: f"U+{ord(c):04X}")
def test_printable_escapes_every_control_bidi_and_surrogate_character(char: str) -> None:
    code = ord(char)
    escaped = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    assert printable(f"a{char}b") == f"a{escaped}b"
    assert printable(printable(f"a{char}b")) == f"a{escaped}b"


def test_printable_leaves_ordinary_text_alone() -> None:
    text = "Mom_10D 动量因子 é ñ 😀 F:\\Dev\\x1b (a literal backslash) ~!@#$%^&*()"
    assert printable(text) == text


def test_finding_1_factor_names_with_escape_sequences_reach_no_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = generated_task(
        tmp_path, anchor_factors=(FactorSpec(OSC_TITLE), FactorSpec(CLEAR_SCREEN), FactorSpec(C1_AND_BIDI))
    )
    store = tmp_path / "store"
    extract = ["extract", str(task.log_dir), "--store", str(store), "--no-index", "--path-map", _path_map(task)]

    assert main(extract) == 0
    out = capsys.readouterr()
    _inert(out.out + out.err)
    assert f"factors    4: PriceRange_20D, {printable(OSC_TITLE)}, {printable(CLEAR_SCREEN)}" in out.out
    assert "Mom\\x1b]0;pwned\\x07_10D" in out.out and "Rev\\x9b31m\\x7f\\u202egpj.exe\\u2066_5D" in out.out

    assert main(["inspect", str(task.log_dir), "--no-index"]) == 0
    out = capsys.readouterr()
    _inert(out.out + out.err)
    assert printable(OSC_TITLE) in out.out

    bundle = store / GENERATED_TASK
    sota = SotaFactorsDoc.model_validate_json((bundle / SOTA_FACTORS).read_bytes())
    (bundle / sota.code_relpaths[OSC_TITLE]).unlink()
    assert main(["verify", str(bundle)]) != 0
    out = capsys.readouterr()
    _inert(out.out + out.err)
    assert f"code of {printable(OSC_TITLE)} -> " in out.out


def test_finding_1_json_output_is_ascii_and_carries_the_names_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = generated_task(tmp_path, anchor_factors=(FactorSpec(OSC_TITLE), FactorSpec(C1_AND_BIDI)))
    args = ["extract", str(task.log_dir), "--store", str(tmp_path / "s"), "--no-index", "--path-map", _path_map(task)]
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii()
    _inert(out)
    result = ExtractResult.model_validate_json(out)
    assert result.report is not None and any(OSC_TITLE in line for line in result.report.factor_code_incomplete)

    assert main(["inspect", str(task.log_dir), "--no-index", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and C1_AND_BIDI in [f["name"] for f in json.loads(out)["sota_factors"]]


def test_finding_1_error_messages_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile_dir = tmp_path / f"x{OSC_TITLE}" / GENERATED_TASK
    assert main(["extract", str(hostile_dir), "--store", str(tmp_path / "s"), "--no-index"]) != 0
    err = capsys.readouterr().err
    _inert(err)
    assert err.startswith("error: invalid_log_dir: ") and printable(str(hostile_dir)) in err

    assert main(["inspect", str(hostile_dir), "--no-index"]) != 0
    out = capsys.readouterr()
    _inert(out.out + out.err)


def test_finding_1_the_scan_progress_line_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    report = stderr_progress(True)
    report(20, 20, f"__session__/{CLEAR_SCREEN}")
    err = capsys.readouterr().err
    assert err.startswith("\r") and err.endswith("\n")
    _inert(err[1:])
    assert printable(CLEAR_SCREEN) in err


def test_finding_1_the_console_streams_get_no_raw_escape_bytes(tmp_path: Path) -> None:
    task = generated_task(tmp_path, anchor_factors=(FactorSpec(OSC_TITLE), FactorSpec(CLEAR_SCREEN)))
    args = ["extract", str(task.log_dir), "--store", str(tmp_path / "s"), "--no-index", "--path-map", _path_map(task)]
    done = subprocess.run([sys.executable, "-m", "rd_assets.cli", *args], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert b"\x1b" not in stream and b"\x07" not in stream
        _inert(stream.decode("utf-8"))
    assert b"Vol\\x1b[2J_5D" in done.stdout


# ----------------------------------------------------------------------------- finding 2: lone surrogates


def _with_code(record: FactorRecord, code: str) -> FactorRecord:
    return record.model_copy(update={"code": code, "code_sha256": None})


def test_finding_2_code_with_a_lone_surrogate_is_refused_with_its_offset() -> None:
    anchor = anchor_of([ExperimentSpec(factors=[FactorSpec("A_5D"), FactorSpec("B_5D")])])
    bad = "def calculate_B_5D():\n    return '\ud800'\n"
    factors = [anchor.sota_factors[0], _with_code(anchor.sota_factors[1], bad)]
    code = build_factor_code(anchor.model_copy(update={"sota_factors": factors}))

    reason = f"code is not valid UTF-8 text (lone surrogate at offset {bad.index(chr(0xD800))})"
    assert f"B_5D: {reason}" in code.index.incomplete
    entry = next(f for f in code.index.files if f.name == "B_5D")
    assert entry.relpath is None and entry.sha256 is None and entry.missing_reason == reason
    assert set(code.files) == {"factor_entry.py", "factors/A_5D.py"}
    assert code.index.factor_file_dict_keys == ["factor.py"]

    entry_bad = [_with_code(anchor.sota_factors[0], "\udcff"), anchor.sota_factors[1]]
    code = build_factor_code(anchor.model_copy(update={"sota_factors": entry_bad}))
    assert "factor_entry.py" not in code.files and code.index.resolved_factor_entry_key is None
    assert "factor_entry.py: code is not valid UTF-8 text (lone surrogate at offset 0)" in code.index.incomplete


def test_finding_2_lone_surrogates_in_names_and_code_publish_without_a_traceback(tmp_path: Path) -> None:
    task = generated_task(tmp_path)
    parts = collect_parts(task.log_dir, path_map=task.path_map, index=SnapshotIndex(None), signing_key=None)
    first, second, *rest = parts.anchor.sota_factors
    hostile = [
        first.model_copy(update={"name": "Price\ud800Range", "description": "text \udcff"}),
        _with_code(second, "def calculate_Momentum_10D():\n    return '\udfff'\n"),
        *rest,
    ]
    anchor = parts.anchor.model_copy(update={"sota_factors": hostile})
    code = build_factor_code(anchor)
    report = parts.report.model_copy(update={"factor_code_incomplete": code.index.incomplete})
    content = dataclasses.replace(parts, anchor=anchor, factor_code=code, report=report).assemble()

    result = publish_bundle(tmp_path / "store", content)
    assert verify_bundle(result.bundle_path).ok
    for relpath, data in tree_bytes(result.bundle_path).items():
        if relpath.endswith((".json", ".py", ".txt")):
            data.decode("utf-8")  # every text file, JSON and code, is valid UTF-8
    sota = SotaFactorsDoc.model_validate_json((result.bundle_path / SOTA_FACTORS).read_bytes())
    assert sota.factors[0].name == "Price\\ud800Range" and sota.factors[0].description == "text \\udcff"
    assert sota.code_relpaths["Price\\ud800Range"] == "factors/Price_Range.py"
    assert "Momentum_10D" not in sota.code_relpaths
    manifest = Manifest.model_validate_json((result.bundle_path / MANIFEST).read_bytes())
    assert manifest == content.manifest
    assert any("Momentum_10D: code is not valid UTF-8 text (lone surrogate at offset " in r for r in manifest.reasons)


def test_finding_2_cli_output_of_lone_surrogates_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    info = ErrorInfo(code="x", message="name Mom\ud800 in \x1b[2J", path="/tmp/\udcff")
    print_json(info)
    print_lines([f"factor {info.message}"])
    out = capsys.readouterr().out
    assert out.isascii()
    assert json.loads(out[: out.index("}") + 1])["message"] == "name Mom\\ud800 in \x1b[2J"
    assert out.endswith("factor name Mom\\ud800 in \\x1b[2J\n")
    assert encodable({"k\ud800": ["v\udfff", 1, None]}) == {"k\\ud800": ["v\\udfff", 1, None]}


def test_finding_2_fail_escapes_untrusted_messages(capsys: pytest.CaptureFixture[str]) -> None:
    assert fail(RdAssetsError("bad \ud800\x1b]0;t\x07", path="/x/\x9b")) != 0
    err = capsys.readouterr().err
    assert err == "error: rd_assets_error: bad \\ud800\\x1b]0;t\\x07 [/x/\\x9b]\n"


# ----------------------------------------------------------------------------- finding 3: factor file names

LONG = "A" * 1000
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"{d}{i}" for d in ("COM", "LPT") for i in range(10))}
HOSTILE_NAMES = [LONG, "A" * 999 + "B", "A" * STEM_MAX + "tail", "-rf", "--help", "CON", "con.py", "Lpt9", "COM1.x"]
HOSTILE_NAMES += ["", ".", "..", "Mom", "MOM", "mom", "_CON", "trailing.", "x" * 300 + ".", "\ud800", "动量"]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n[:12]))
def test_finding_3_every_name_gets_a_portable_file_stem(name: str) -> None:
    stem = safe_file_stem(name)
    assert RELPART_RE.fullmatch(stem) and stem[0] not in ".-"
    assert len(stem) <= STEM_MAX + 13
    assert stem.split(".", 1)[0].upper() not in WINDOWS_DEVICES
    check_relpath(f"factors/{stem}.py")
    assert safe_file_stem(name) == stem


def test_finding_3_safe_file_stem_examples() -> None:
    assert safe_file_stem("-rf") == "_rf"
    assert safe_file_stem("CON") == "_CON" and safe_file_stem("nul.tar.gz") == "_nul.tar.gz"
    assert safe_file_stem("CONSOLE") == "CONSOLE"
    assert safe_file_stem("") == "_" and safe_file_stem("..") == "_."
    assert safe_file_stem(LONG).startswith("A" * STEM_MAX + "-") and len(safe_file_stem(LONG)) == STEM_MAX + 13
    assert safe_file_stem("A" * STEM_MAX) == "A" * STEM_MAX


def test_finding_3_distinct_names_stay_distinct_files() -> None:
    relpaths = factor_relpaths(HOSTILE_NAMES)
    assert len({r.lower() for r in relpaths.values()}) == len(HOSTILE_NAMES)
    assert relpaths[LONG] != relpaths["A" * 999 + "B"]
    assert all(len(r.split("/")[1]) <= 255 for r in relpaths.values())


def test_finding_3_publishing_factors_with_hostile_names_succeeds(tmp_path: Path) -> None:
    long_names = ["A" * 199, "A" * 198 + "B"]  # the reader refuses names over 200 characters; the stem cuts at 100
    names = [*long_names, "-Mom_10D", "CON", "..", "Vol_5D", "VOL_5D"]
    task = generated_task(tmp_path, anchor_factors=tuple(FactorSpec(n) for n in names))
    outcome = extract_task(
        task.log_dir, store=tmp_path / "store", path_map=task.path_map, index=SnapshotIndex(None), signing_key=None
    )
    bundle = outcome.publish.bundle_path
    assert verify_bundle(bundle).ok
    sota = SotaFactorsDoc.model_validate_json((bundle / SOTA_FACTORS).read_bytes())
    assert [f.name for f in sota.factors] == task.factor_names  # the original names, untouched
    assert set(sota.code_relpaths) == set(task.factor_names)
    assert len({r.lower() for r in sota.code_relpaths.values()}) == len(task.factor_names)
    for name, relpath in sota.code_relpaths.items():
        assert (bundle / relpath).read_text() == FactorSpec(name).factor_py()
    assert sota.code_relpaths["-Mom_10D"] == "factors/_Mom_10D.py" and sota.code_relpaths["CON"] == "factors/_CON.py"
    assert all(len(sota.code_relpaths[n]) < len("factors/") + STEM_MAX + 20 for n in long_names)
