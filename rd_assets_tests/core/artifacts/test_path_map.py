"""Path mapping: whole-component prefixes, Windows and WSL forms as one location, no '..' escapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rd_assets.core.artifacts.path_map import PathMap, location_key
from rd_assets.core.errors import InvalidPathMapError
from rd_assets.core.samples import SAMPLE_PATH_MAP, SAMPLES_DIR

SAMPLE_RULE = SAMPLE_PATH_MAP


def test_sample_rule_maps_the_sample_workspace_to_its_existing_parquet() -> None:
    pickled = "/mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace/256379545672416fbd8f3a951aaac7b8"
    local = PathMap.parse([SAMPLE_RULE]).map(pickled)
    assert local == SAMPLES_DIR / "workspaces" / "256379545672416fbd8f3a951aaac7b8"
    assert (local / "combined_factors_df.parquet").is_file()


@pytest.mark.parametrize(
    "rule",
    [
        "/mnt/f/Dev/RD=/data/rd",
        "F:/Dev/RD=/data/rd",
        "F:\\Dev\\RD=/data/rd",
        "f:/Dev/RD/=/data/rd",
        "/mnt/F/Dev/RD=/data/rd",
    ],
)
@pytest.mark.parametrize(
    "pickled", ["/mnt/f/Dev/RD/ws/ab", "F:/Dev/RD/ws/ab", "F:\\Dev\\RD\\ws\\ab", "f:\\Dev/RD\\ws/ab"]
)
def test_windows_and_wsl_forms_are_one_location(rule: str, pickled: str) -> None:
    assert PathMap.parse([rule]).map(pickled) == Path("/data/rd/ws/ab")


def test_prefixes_match_whole_components_only() -> None:
    path_map = PathMap.parse(["/data/ws=/local/ws"])
    assert path_map.map("/data/ws/x") == Path("/local/ws/x")
    assert path_map.map("/data/ws") == Path("/local/ws")
    assert path_map.map("/data/ws2/x") == Path("/data/ws2/x")  # untouched: no rule covers it


def test_most_specific_rule_wins_then_the_first_given() -> None:
    path_map = PathMap.parse(["/a=/one", "/a/b=/two", "F:/a/b=/three"])
    assert path_map.map("/a/b/c") == Path("/two/c")
    assert path_map.map("/a/x") == Path("/one/x")
    assert path_map.map("/mnt/f/a/b/c") == Path("/three/c")


def test_unmapped_paths() -> None:
    path_map = PathMap.parse([SAMPLE_RULE])
    assert path_map.map("/srv/ws/1") == Path("/srv/ws/1")
    assert path_map.map("C:/Users/x/ws") is None
    assert "Windows path" in path_map.explain_unmapped("C:/Users/x/ws")
    assert path_map.map("relative/ws") is None
    assert "not an absolute path" in path_map.explain_unmapped("relative/ws")


@pytest.mark.parametrize(
    "pickled",
    [
        "/mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace/../../../etc",
        "F:\\Dev\\RD-Agent-main\\git_ignore_folder\\RD-Agent_workspace\\..\\x",
        "/srv/../etc",
    ],
)
def test_dot_dot_is_never_mapped(pickled: str) -> None:
    path_map = PathMap.parse([SAMPLE_RULE])
    assert path_map.map(pickled) is None
    assert "'..'" in path_map.explain_unmapped(pickled)


def test_a_relative_target_is_resolved_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path_map = PathMap.parse(["/x=relative/ws", "C:/y=."])
    assert path_map.map("/x/abc") == tmp_path / "relative" / "ws" / "abc"
    assert path_map.map("C:/y/abc") == tmp_path / "abc"
    assert [r.target.is_absolute() for r in path_map.rules] == [True, True]


def test_rules_matching_no_pickled_path_are_reported() -> None:
    path_map = PathMap.parse(["/mnt/f/Dev=/a", "/typo/ws=/b"])
    assert [r.source for r in path_map.unused_rules(["/mnt/f/Dev/x/ws1"])] == ["/typo/ws"]
    assert "no path-map rule matched" in path_map.explain_rule("/other/ws")
    assert path_map.explain_rule("/mnt/f/Dev/x") == "mapped by the path-map rule /mnt/f/Dev=/a"


@pytest.mark.parametrize("spec", ["no-equals-sign", "=/x", "/x=", "relative=/x"])
def test_malformed_rules_are_refused(spec: str) -> None:
    with pytest.raises(InvalidPathMapError) as info:
        PathMap.parse([spec])
    assert info.value.code == "invalid_path_map"


def test_location_key_unifies_drive_forms() -> None:
    assert (
        location_key("F:/Dev/x")
        == location_key("/mnt/f/Dev/x")
        == location_key("f:\\Dev\\x")
        == ("drive:f", "Dev", "x")
    )
    assert location_key("/mnt/data/x") == ("/", "mnt", "data", "x")
