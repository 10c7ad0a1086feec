"""``--help`` is written for a user: what the tool does, its commands, examples; no developer docstring."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from rd_assets.cli import SUBCOMMANDS, build_parser


def _help(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rd_assets.cli", *args, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_top_level_help_explains_the_tool_and_shows_examples() -> None:
    text = _help()
    assert "RD-Agent task log dirs" in text and "examples:" in text
    for command in _commands():
        assert f"rd-assets {command}" in text or f"    {command} " in text
    assert "``" not in text and "register(" not in text


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._subparsers._group_actions if a.dest == "command"]  # type: ignore[union-attr]
    return dict(actions[0].choices)


def test_every_subcommand_module_registers_a_command() -> None:
    assert len(_commands()) == len(SUBCOMMANDS)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_has_a_description(command: str) -> None:
    sub = _commands()[command]
    assert sub.description and "``" not in sub.description
    assert "usage: rd-assets " + command in _help(command)
