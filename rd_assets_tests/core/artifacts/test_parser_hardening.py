"""Red-team findings on the config and parquet-footer parsers, each pinned by a payload built here.

Every hostile input must end in a result or a typed :class:`RdAssetsError` naming the file and cause, quickly
and in bounded memory: no hang, no untyped exception, no allocation the input merely claims.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rd_assets.core import errors
from rd_assets.core.artifacts import qlib_config
from rd_assets.core.artifacts.factor_order import (
    MAX_COLUMN_LABEL_CHARS,
    MAX_FOOTER_BYTES,
    PARQUET_NAME,
    FactorOrderError,
    decode_feature_columns,
    read_dynamic_factors,
    read_footer_schema,
    require_aligned,
    resolve_factor_order,
)
from rd_assets.core.artifacts.path_map import PathMap
from rd_assets.core.artifacts.qlib_config import (
    LOADER,
    MAX_CONFIG_CHARS,
    MAX_YAML_ALIASES,
    MAX_YAML_DEPTH,
    PURE_PYTHON_LOADER,
    ConfigDecision,
    neutralise_jinja,
    parse_config,
)
from rd_assets.core.artifacts.qlib_config import load_template_yaml as load
from rd_assets.core.errors import ConfigParseError, FactorParquetUnreadableError, RdAssetsError
from rd_assets.core.samples import SAMPLE_TASKS, SAMPLES_DIR
from rd_assets.core.session.access_log import AccessLog
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.task_reader import read_task
from rd_assets_tests.core.artifacts.test_factor_order import anchor_of
from rd_assets_tests.rdagent_fixtures import (
    WSL_WORKSPACE_PREFIX,
    ExperimentSpec,
    FactorSpec,
    default_yaml_files,
    workspace_dir,
    write_combined_factors_parquet,
)

LOADERS = pytest.mark.parametrize("loader", [LOADER, PURE_PYTHON_LOADER], ids=lambda c: c.__name__)
FAST = 2.0
"""Seconds: generous for linear work on 1 MB, hopeless for the quadratic scans these tests replaced."""


def load_or_error(text: str, loader: type = LOADER) -> Any:
    """The parse result, or the typed error itself; any other exception fails the calling test."""
    try:
        return load(text, path="conf.yaml", loader=loader)
    except RdAssetsError as exc:
        return exc


def timed(call: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------- finding 1: Jinja


_OLD_EXPR = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_OLD_TAG = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def old_neutralise(text: str, prefix: str) -> tuple[str, list[str]]:
    """The regex neutralisation this module replaced, kept as the oracle of identical results."""
    originals: list[str] = []

    def token(match: re.Match[str]) -> str:
        originals.append(match.group(0))
        return f"{prefix}{len(originals) - 1}__"

    return _OLD_TAG.sub("", _OLD_EXPR.sub(token, text)), originals


@pytest.mark.parametrize("opener", ["{{", "{%", "{#"])
@LOADERS
def test_jinja_scan_of_1mb_of_unclosed_openers_is_linear_and_typed(opener: str, loader: type) -> None:
    text = opener * 500_000
    result, seconds = timed(load_or_error, text, loader)
    assert seconds < FAST, f"{seconds:.2f}s for 1 MB of {opener!r}"
    assert isinstance(result, ConfigParseError) and result.code == "config_unparseable"
    assert result.path == "conf.yaml"


def test_jinja_scan_of_1mb_of_closed_placeholders_is_linear_and_restores_them() -> None:
    text = "a: " + "{{ x }}" * 150_000
    result, seconds = timed(load_or_error, text)
    assert seconds < FAST
    assert result == {"a": "{{ x }}" * 150_000}


_JINJA_ALPHABET = st.lists(st.sampled_from(["{", "}", "{{", "}}", "{%", "%}", "{#", "#}", "%", "#", "x", " ", "\n"]))


@settings(max_examples=400, deadline=None)
@given(_JINJA_ALPHABET.map("".join))
def test_jinja_scanner_matches_the_regex_it_replaces(text: str) -> None:
    neutral, prefix, originals = neutralise_jinja(text)
    assert (neutral, originals) == old_neutralise(text, prefix)


def test_a_token_like_string_in_the_text_is_not_taken_for_a_placeholder() -> None:
    assert load("a: __rd_jinja_7__\nb: {{ x }}\n") == {"a": "__rd_jinja_7__", "b": "{{ x }}"}


# ------------------------------------------------------------------------------------- finding 2: YAML


def alias_bomb(levels: int = 9, fan_out: int = 9) -> str:
    """Billion laughs: each level lists the previous one ``fan_out`` times (about 350 bytes, 9**9 leaves)."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = [f"a: &a [{','.join(['lol'] * fan_out)}]"]
    lines += [f"{name}: &{name} [{','.join([f'*{prev}'] * fan_out)}]" for prev, name in itertools.pairwise(names)]
    return "\n".join(lines) + "\n"


@LOADERS
def test_yaml_alias_bomb_is_refused_before_expansion(loader: type) -> None:
    bomb = alias_bomb()
    assert len(bomb) < 400
    result, seconds = timed(load_or_error, bomb, loader)
    assert seconds < FAST
    assert isinstance(result, ConfigParseError)
    assert "refused as hostile" in result.message and "nodes once aliases are expanded" in result.message


@LOADERS
def test_yaml_alias_uses_are_capped(loader: type) -> None:
    text = "a: &a x\nb: [" + ",".join(["*a"] * (MAX_YAML_ALIASES + 1)) + "]\n"
    result = load_or_error(text, loader)
    assert isinstance(result, ConfigParseError) and f"more than {MAX_YAML_ALIASES} alias uses" in result.message
    assert load_or_error(text.replace(",*a]", "]"), loader) == {"a": "x", "b": ["x"] * MAX_YAML_ALIASES}


@pytest.mark.parametrize("text", ["&a [*a]", "&a {k: *a}", "a: &a\n  b: [1, {c: *a}]\n"])
@LOADERS
def test_yaml_self_alias_is_refused_as_recursive(text: str, loader: type) -> None:
    result = load_or_error(text, loader)
    assert isinstance(result, ConfigParseError) and "recursive structure" in result.message


@LOADERS
def test_yaml_nesting_is_capped_also_through_aliases(loader: type) -> None:
    deep = "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1)
    assert "nesting deeper than" in load_or_error(deep, loader).message
    at_cap = "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH
    assert not isinstance(load_or_error(at_cap, loader), RdAssetsError)
    half = MAX_YAML_DEPTH // 2 + 1
    via_alias = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half + "\n"
    assert "once aliases are expanded" in load_or_error(via_alias, loader).message


def test_yaml_text_over_the_size_cap_is_refused_unparsed() -> None:
    result = load_or_error("#" * (MAX_CONFIG_CHARS + 1))
    assert isinstance(result, ConfigParseError) and "over the" in result.message


@pytest.mark.parametrize(
    "text",
    ["a: 2001-13-01", "!!bool maybe", "!!timestamp x", "!!int ''", "!!float x", "a: 1" + ":1" * 100_000, "\x00"],
)
def test_malformed_typed_scalars_are_typed_errors(text: str) -> None:
    result, seconds = timed(load_or_error, text)
    assert isinstance(result, ConfigParseError) and seconds < FAST


def test_config_parse_error_is_the_typed_error_and_callers_keep_their_fallbacks(tmp_path: Path) -> None:
    assert qlib_config.ConfigParseError is errors.ConfigParseError
    assert errors.error_classes()["config_unparseable"] is errors.ConfigParseError
    files = default_yaml_files()
    files["conf_combined_factors_dynamic.yaml"] = alias_bomb()
    anchor = anchor_of([ExperimentSpec(factors=[FactorSpec("Vol_5D")], yaml_files=files)])
    order = resolve_factor_order(
        anchor,
        model_feature_count=21,
        weight_class_path="qlib.contrib.model.gbdt.LGBModel",
        path_map=PathMap.parse([f"{WSL_WORKSPACE_PREFIX}={tmp_path}"]),
    )
    assert order.config_name == "conf_combined_factors_dynamic.yaml"
    assert "(None) cannot be checked" in order.config_reason
    assert order.unresolved_code == "config_unresolved"
    assert "conf_combined_factors_dynamic.yaml: YAML refused as hostile" in (order.alpha158_unresolved_reason or "")


def test_parse_config_reason_names_the_config_and_keeps_its_wording() -> None:
    config, reason = parse_config(ConfigDecision("conf_x.yaml", "rule", "a: [unclosed\n"))
    assert config is None
    assert (reason or "").startswith("conf_x.yaml: YAML does not parse even with Jinja placeholders neutralised: ")


def old_load(text: str) -> Any:
    """The loader before hardening (regex scan, ``yaml.safe_load``, recursive restore): the equality oracle."""
    neutral, originals = old_neutralise(text, "__rd_jinja_")

    def restore(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(restore(k)): restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        if isinstance(value, str):
            return re.sub(r"__rd_jinja_(\d+)__", lambda m: originals[int(m.group(1))], value)
        return value.isoformat() if isinstance(value, datetime.date) else value

    return restore(yaml.safe_load(neutral))


def genuine_configs() -> dict[str, str]:
    found = {f"fixture/{name}": text for name, text in default_yaml_files().items() if name.endswith(".yaml")}
    for task in SAMPLE_TASKS:
        anchor = read_task(SAMPLES_DIR / "log" / task, index=SnapshotIndex(None)).anchor
        assert anchor is not None
        found |= {f"{task}/{name}": text for name, text in anchor.experiment_workspace_yaml.items()}
    return found


@LOADERS
def test_genuine_configs_parse_exactly_as_before(loader: type) -> None:
    configs = genuine_configs()
    assert sum("&" in text and "*" in text for text in configs.values()) >= 3, "samples use anchors and aliases"
    for name, text in configs.items():
        assert load(text, loader=loader) == old_load(text), name


# ---------------------------------------------------------------------------------- finding 3: parquet file


def parquet_at(tmp_path: Path) -> Path:
    return write_combined_factors_parquet(tmp_path / "ws", ["Vol_5D", "Mom_10D"])


def read_part(parquet: Path) -> tuple[Any, AccessLog]:
    access = AccessLog()
    return read_dynamic_factors(parquet, access, origin=" (origin)"), access


def assert_unreadable(parquet: Path, *fragments: str) -> None:
    part, access = read_part(parquet)
    assert access.opened_paths == [str(parquet)], "the audit log records the open attempt"
    assert part.names is None and part.code == FactorParquetUnreadableError.code
    assert part.reason.startswith(str(parquet)) and part.reason.endswith(" (origin)")
    for fragment in fragments:
        assert fragment in part.reason


def test_parquet_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / PARQUET_NAME
    os.mkfifo(fifo)
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(read_part(fifo)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "reading a FIFO blocked"
    part, _ = outcome[0]
    assert part.code == FactorParquetUnreadableError.code and "is a FIFO, not a regular file" in part.reason


def test_parquet_symlink_is_not_followed(tmp_path: Path) -> None:
    link = tmp_path / "link" / PARQUET_NAME
    link.parent.mkdir()
    link.symlink_to(parquet_at(tmp_path))
    assert_unreadable(link, "is a symlink, which is not followed")
    dangling = tmp_path / "dangling" / PARQUET_NAME
    dangling.parent.mkdir()
    dangling.symlink_to(tmp_path / "nowhere")
    assert_unreadable(dangling, "is a symlink")


def test_parquet_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / PARQUET_NAME).mkdir()
    assert_unreadable(tmp_path / PARQUET_NAME, "is a directory, not a regular file")


def with_tail(parquet: Path, footer_len: int) -> None:
    raw = parquet.read_bytes()
    parquet.write_bytes(raw[:-8] + footer_len.to_bytes(4, "little") + b"PAR1")


def test_parquet_footer_claiming_gigabytes_is_refused_before_allocating(tmp_path: Path) -> None:
    parquet = parquet_at(tmp_path)
    with_tail(parquet, 3_400_000_000)
    assert_unreadable(parquet, "claims a 3400000000-byte footer")


def test_parquet_footer_over_the_cap_is_refused_even_in_a_file_that_large(tmp_path: Path) -> None:
    parquet = tmp_path / PARQUET_NAME
    claimed = MAX_FOOTER_BYTES + 1
    with parquet.open("wb") as fh:  # sparse: the size is claimed, not written
        fh.write(b"PAR1")
        fh.truncate(claimed + 12)
        fh.seek(claimed + 4)
        fh.write(claimed.to_bytes(4, "little") + b"PAR1")
    assert_unreadable(parquet, f"claims a {claimed}-byte footer", f"cap: {MAX_FOOTER_BYTES}")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda raw: raw[:-4] + b"PARE", "does not end with the parquet magic"),
        (lambda raw: b"PAR1", "too few for a parquet file"),
        (lambda raw: raw[:4] + b"\x00" * 64 + (64).to_bytes(4, "little") + b"PAR1", "no readable parquet footer"),
    ],
    ids=["encrypted_magic", "truncated", "garbage_footer"],
)
def test_parquet_footer_damage_is_a_typed_reason(tmp_path: Path, damage: Any, fragment: str) -> None:
    parquet = parquet_at(tmp_path)
    parquet.write_bytes(damage(parquet.read_bytes()))
    assert_unreadable(parquet, fragment)
    with pytest.raises(FactorParquetUnreadableError) as info:
        read_footer_schema(parquet)
    assert info.value.path == str(parquet)


def test_a_fifo_anchor_parquet_fails_the_order_with_the_typed_error(tmp_path: Path) -> None:
    hist = [ExperimentSpec(factors=[FactorSpec("Vol_5D")]), ExperimentSpec(factors=[FactorSpec("Mom_10D")])]
    fifo = workspace_dir(tmp_path, hist[1], 1) / PARQUET_NAME
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    order = resolve_factor_order(
        anchor_of(hist),
        model_feature_count=22,
        weight_class_path="qlib.contrib.model.gbdt.LGBModel",
        path_map=PathMap.parse([f"{WSL_WORKSPACE_PREFIX}={tmp_path}"]),
    )
    with pytest.raises(FactorParquetUnreadableError) as info:
        require_aligned(order)
    assert info.value.path == str(fifo) and "FIFO" in info.value.message


def test_a_genuine_parquet_footer_still_decodes(tmp_path: Path) -> None:
    parquet = parquet_at(tmp_path)
    assert read_footer_schema(parquet).equals(pq.read_schema(parquet), check_metadata=True)
    assert read_part(parquet)[0].names == ["Vol_5D", "Mom_10D"]


# ----------------------------------------------------------------------------- finding 4: pandas metadata

SCHEMA = pa.schema([("('feature', 'a')", pa.float64()), ("datetime", pa.int64())])
GOOD_META = {
    "index_columns": ["datetime"],
    "column_indexes": [{"name": None}, {"name": None}],
    "columns": [{"field_name": "('feature', 'a')", "name": "('feature', 'a')"}],
}


def with_meta(meta: Any) -> pa.Schema:
    return SCHEMA.with_metadata({b"pandas": json.dumps(meta).encode()})


def decode_or_error(schema: pa.Schema) -> list[str] | RdAssetsError:
    try:
        return decode_feature_columns(schema)
    except RdAssetsError as exc:
        return exc


def labelled(label: str) -> dict[str, Any]:
    return {**GOOD_META, "columns": [{"field_name": "('feature', 'a')", "name": label}]}


@pytest.mark.parametrize(
    "meta",
    [
        labelled("(" * 1_000_000),
        labelled("-" * (MAX_COLUMN_LABEL_CHARS - 1) + "1"),
        labelled("[" * 3000 + "]" * 3000),
        labelled("{[1]: 2}"),
        labelled("9" * MAX_COLUMN_LABEL_CHARS),
        {**GOOD_META, "columns": 7},
        {**GOOD_META, "index_columns": "datetime"},
        {**GOOD_META, "column_indexes": {"a": 1, "b": 2}},
        [1, 2],
    ],
    ids=[
        "label_1mb_parens",
        "label_deep_unary",
        "label_deep_lists",
        "label_unhashable",
        "label_long_int",
        "columns_int",
        "index_columns_str",
        "column_indexes_dict",
        "meta_list",
    ],
)
def test_hostile_pandas_metadata_is_a_typed_error(meta: Any) -> None:
    result, seconds = timed(decode_or_error, with_meta(meta))
    assert isinstance(result, FactorOrderError) and result.code == "factor_parquet_unreadable"
    assert isinstance(result, ValueError) and seconds < FAST


def test_column_entries_that_name_no_field_are_ignored_not_hashed() -> None:
    meta = {**GOOD_META, "columns": [{"field_name": ["unhashable"], "name": "x"}, 3, *GOOD_META["columns"]]}
    assert decode_or_error(with_meta(meta)) == ["a"]


def test_pandas_metadata_that_is_not_json_is_a_typed_error() -> None:
    for raw in (b"\xff\xfe", b"[" * 100_000):
        assert isinstance(decode_or_error(SCHEMA.with_metadata({b"pandas": raw})), FactorOrderError)


def test_hostile_label_in_a_real_file_is_an_unreadable_reason(tmp_path: Path) -> None:
    parquet = tmp_path / PARQUET_NAME
    pq.write_table(
        pa.table({"('feature', 'a')": [1.0], "datetime": [1]}, schema=with_meta(labelled("(" * 5000))), parquet
    )
    assert_unreadable(parquet, "a column label of 5000 characters")


# ------------------------------------------------------------------------------- finding 5: properties

_YAML_FRAGMENTS = st.sampled_from(
    [
        "a", ": ", "- ", "\n", "  ", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "<<: ", "!!str ", "!!int ",
        "!!bool ", "!!timestamp ", "!!set ", "!!omap ", "!!binary ", "!!python/object ", "? ", "|", ">", "'", '"',
        "#", "%YAML 1.1\n", "---\n", "...\n", "1:2:3", "2001-13-01", "0x", "0o7", ".inf", "~", "{{ x }}", "{{",
        "}}", "{% if t %}", "{%", "%}", "{# c #}", "__rd_jinja_0__", "\t", "\x00", "\ufeff",
    ]
)  # fmt: skip
_FIXTURE_CONFIGS = [text for name, text in default_yaml_files().items() if name.endswith(".yaml")]
_SPLICED = st.builds(
    lambda text, at, inserted: text[:at] + inserted + text[at:],
    st.sampled_from(_FIXTURE_CONFIGS),
    st.integers(0, max(map(len, _FIXTURE_CONFIGS))),
    st.lists(_YAML_FRAGMENTS, max_size=6).map("".join),
)
"""A genuine config with hostile fragments spliced in, to reach the constructors and restore past the parser."""
_YAML_TEXT = st.one_of(st.text(max_size=200), st.lists(_YAML_FRAGMENTS, max_size=40).map("".join), _SPLICED)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_YAML_TEXT, st.sampled_from([LOADER, PURE_PYTHON_LOADER]))
def test_property_load_template_yaml_returns_or_raises_a_typed_error(text: str, loader: type) -> None:
    result = load_or_error(text, loader)
    if isinstance(result, RdAssetsError):
        assert result.code == "config_unparseable" and result.path == "conf.yaml"


_KEYS = st.sampled_from(["index_columns", "column_indexes", "columns", "field_name", "name", "kind"]) | st.text(
    max_size=8
)
_LABELS = st.sampled_from(["('feature', 'a')", "('feature', 1)", "datetime", "('a',)", "(", "{[1]: 2}"]) | st.text(
    max_size=30
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _LABELS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)
_COLUMN = st.fixed_dictionaries({"field_name": st.sampled_from(SCHEMA.names) | _JSON, "name": _LABELS | _JSON})
_META = st.fixed_dictionaries(
    {},
    optional={
        "index_columns": st.lists(st.sampled_from(SCHEMA.names) | _JSON, max_size=3) | _JSON,
        "column_indexes": st.lists(_JSON, min_size=2, max_size=2) | _JSON,
        "columns": st.lists(_COLUMN | _JSON, max_size=3) | _JSON,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_META | st.dictionaries(_KEYS, _JSON, max_size=5))
def test_property_decode_feature_columns_returns_names_or_a_typed_error(meta: dict[str, Any]) -> None:
    result = decode_or_error(with_meta(meta))
    assert isinstance(result, FactorOrderError) or (
        isinstance(result, list) and all(isinstance(n, str) for n in result)
    )
