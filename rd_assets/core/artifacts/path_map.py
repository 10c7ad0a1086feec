"""Map workspace paths recorded inside pickles (often another machine's) to paths readable here.

A rule ``FROM=TO`` rewrites a path prefix. Prefixes match whole path components, never raw string
prefixes (``/data/ws`` does not match ``/data/ws2``). Windows ``F:/x`` / ``F:\\x`` and WSL ``/mnt/f/x`` name
the same location, so a rule written in either form applies to both (drive letters compare
case-insensitively, the rest case-sensitively). The most specific rule (longest ``FROM``) wins; among equal
ones the first given. A path no rule covers is used as is when it is a POSIX (or WSL) path, and is unmappable
(``None``) when it is a Windows path. A path with ``..`` components is never mapped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rd_assets.core.errors import InvalidPathMapError

_WINDOWS = re.compile(r"^([A-Za-z]):(?:[\\/]|$)")
_WSL = re.compile(r"^/mnt/([A-Za-z])(?:/|$)")


def location_key(text: str) -> tuple[str, ...] | None:
    """Components of a path with Windows and WSL drive forms unified: ``("drive:f", "Dev", ...)``.

    ``None`` for relative paths, which name no location on their own.
    """
    win = _WINDOWS.match(text)
    wsl = _WSL.match(text)
    if win or wsl:
        drive = (win or wsl).group(1).lower()
        rest = text[(win or wsl).end() :]
        parts = [p for p in re.split(r"[\\/]", rest) if p not in ("", ".")]
        return (f"drive:{drive}", *parts)
    if text.startswith("/"):
        return ("/", *[p for p in text.split("/") if p not in ("", ".")])
    return None


@dataclass(frozen=True)
class PathRule:
    source: str
    target: Path
    key: tuple[str, ...]


@dataclass(frozen=True)
class PathMap:
    rules: tuple[PathRule, ...] = ()

    @classmethod
    def parse(cls, specs: list[str]) -> PathMap:
        """Rules from ``["FROM=TO", ...]`` (split at the first ``=``); FROM must be absolute, a relative TO is
        resolved against the current directory (so ``--path-map X=./workspaces`` means what it says)."""
        rules = []
        for spec in specs:
            source, sep, target = spec.partition("=")
            key = location_key(source.strip())
            if not sep or key is None or not target.strip():
                raise InvalidPathMapError(f"path map rule {spec!r} is not FROM=TO with an absolute FROM")
            rules.append(PathRule(source.strip(), Path(target.strip()).absolute(), key))
        return cls(tuple(rules))

    def _match(self, pickled_path_text: str) -> tuple[tuple[str, ...] | None, PathRule | None]:
        """The path's location key (``None`` when never mappable) and the longest rule matching it."""
        key = location_key(pickled_path_text)
        if key is None or ".." in key:
            return None, None
        best: PathRule | None = None
        for rule in self.rules:
            if key[: len(rule.key)] == rule.key and (best is None or len(rule.key) > len(best.key)):
                best = rule
        return key, best

    def rule_for(self, pickled_path_text: str) -> PathRule | None:
        """The rule :meth:`map` applies to ``pickled_path_text`` (the longest matching FROM), if any."""
        return self._match(pickled_path_text)[1]

    def explain_rule(self, pickled_path_text: str) -> str:
        """Which rule mapped the path, or that none matched (for a not-found reason)."""
        rule = self.rule_for(pickled_path_text)
        if rule is not None:
            return f"mapped by the path-map rule {rule.source}={rule.target}"
        given = ", ".join(f"{r.source}={r.target}" for r in self.rules) or "none given"
        return f"no path-map rule matched (--path-map / RD_ASSETS_PATH_MAP: {given}), so the path was used as is"

    def unused_rules(self, pickled_paths: list[str]) -> list[PathRule]:
        """Rules that match none of ``pickled_paths`` (a typo in FROM is the usual cause)."""
        used = {id(rule) for p in pickled_paths if (rule := self.rule_for(p)) is not None}
        return [rule for rule in self.rules if id(rule) not in used]

    def map(self, pickled_path_text: str) -> Path | None:
        """Where ``pickled_path_text`` is on this machine, or ``None`` when no rule can say."""
        key, best = self._match(pickled_path_text)
        if key is None:
            return None
        if best is not None:
            return best.target.joinpath(*key[len(best.key) :])
        if pickled_path_text.startswith("/"):
            return Path(pickled_path_text)
        return None

    def explain_unmapped(self, pickled_path_text: str) -> str:
        """Why :meth:`map` gave ``None``, for reports."""
        key = location_key(pickled_path_text)
        if key is None:
            return f"{pickled_path_text!r} is not an absolute path"
        if ".." in key:
            return f"{pickled_path_text!r} contains '..' components and is never mapped"
        return f"no --path-map rule covers the Windows path {pickled_path_text!r}"
