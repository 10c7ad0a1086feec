"""Which qlib config the anchor ran, and a YAML reader that tolerates rdagent's Jinja templates.

DESIGN.md section 1 gives the runner's rule (rdagent's ``QlibFactorRunner.develop``): ``conf_baseline.yaml``
only when ``based_experiments`` is EMPTY; ``conf_combined_factors_sota_model.yaml`` when an accepted model
experiment is among them; else ``conf_combined_factors_dynamic.yaml`` (the fork) or ``conf_combined_factors.yaml``
(upstream). The first accepted factor experiment (``based_experiments == [placeholder]``) therefore runs a
combined config on the alpha features plus its own parquet columns.

The persisted weight's class must be the one the chosen config declares (``task.model``). A contradiction
means the weight was not produced by that config; nothing else is guessed in its place: no config is
trusted and the reason names both.

The config texts come from an untrusted pickle, so :func:`load_template_yaml` bounds its work: a linear
placeholder scan, a text size cap, and a loader that refuses alias bombs, recursive aliases and deep nesting
before anything is expanded. Every refusal is a :class:`~rd_assets.core.errors.ConfigParseError`.
"""

from __future__ import annotations

import datetime
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import Mark
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rd_assets.core.contracts.models import MAX_JSON_DEPTH, SotaFactorExperiment
from rd_assets.core.errors import ConfigParseError
from rd_assets.core.isolation import isolated

BASELINE = "conf_baseline.yaml"
SOTA_MODEL = "conf_combined_factors_sota_model.yaml"
COMBINED_DYNAMIC = "conf_combined_factors_dynamic.yaml"
COMBINED_UPSTREAM = "conf_combined_factors.yaml"
HANDLER_KWARGS_PATH = "task.dataset.kwargs.handler.kwargs"

MAX_CONFIG_CHARS = 4 * 1024 * 1024
"""rdagent's qlib configs are a few KB; 4 Mi characters leaves room for any real one and bounds the parse."""
MAX_YAML_ALIASES = 100
"""A real config uses a handful (``*data_handler_config``, ``*port_analysis_config``); bombs need many."""
MAX_YAML_NODES = 200_000
"""Nodes of the document with every alias expanded: what the caller walks, however few bytes spelled it."""
MAX_YAML_SCALAR_CHARS = 8 * MAX_CONFIG_CHARS
"""Scalar characters with aliases expanded; 8x the text leaves room for the longer placeholder tokens."""
MAX_YAML_DEPTH = MAX_JSON_DEPTH
"""Real configs nest under 15 levels; a contract holds at most this depth (the config lands in ``model_meta``)."""
MAX_YAML_INT_CHARS = 4300
"""Python's own int-string limit, applied to sexagesimal ints too (``1:2:3...``), whose bignum folding is quadratic."""

_JINJA_EXPR = (("{{", "}}"),)
_JINJA_TAGS = (("{%", "%}"), ("{#", "#}"))


@dataclass(frozen=True)
class ConfigDecision:
    """The executed config's file name (``None`` when no config fits), why, and its text when present."""

    name: str | None
    reason: str
    yaml_text: str | None


def is_placeholder(value: Any) -> bool:
    """A value that is (or contains) an unrendered Jinja expression."""
    return isinstance(value, str) and "{{" in value and "}}" in value


def _replace_delimited(text: str, pairs: tuple[tuple[str, str], ...], replace: Callable[[str], str]) -> str:
    """``re.sub`` of ``open.*?close`` (DOTALL, alternatives in ``pairs``) in one linear pass of ``str.find``.

    The regex retries from every unclosed opener to the end of the text, which is quadratic on hostile input.
    Here an opener whose closer is missing retires its pair (no later opener can close either) and each search
    resumes where the previous one stopped, so every character is looked at a bounded number of times.
    """
    closers = dict(pairs)
    upcoming = {opener: text.find(opener) for opener in closers}
    out: list[str] = []
    pos = 0
    while live := [(at, opener) for opener, at in upcoming.items() if at >= 0]:
        start, opener = min(live)
        closer = closers[opener]
        end = text.find(closer, start + len(opener))
        if end < 0:
            upcoming[opener] = -1
            continue
        pos_before, pos = pos, end + len(closer)
        out += (text[pos_before:start], replace(text[start:pos]))
        for other, at in upcoming.items():
            if 0 <= at < pos:
                upcoming[other] = text.find(other, pos)
    out.append(text[pos:])
    return "".join(out)


def neutralise_jinja(text: str) -> tuple[str, str, list[str]]:
    """``text`` with each ``{{ ... }}`` as an inert token and ``{% ... %}`` / ``{# ... #}`` dropped.

    Returns ``(neutral text, token prefix, original expressions)``. The prefix carries a random nonce so a
    token-like string already in the (untrusted) text can never be mistaken for one of ours.
    """
    prefix = f"__rd_jinja_{secrets.token_hex(8)}_"
    originals: list[str] = []

    def token(expression: str) -> str:
        originals.append(expression)
        return f"{prefix}{len(originals) - 1}__"

    neutral = _replace_delimited(_replace_delimited(text, _JINJA_EXPR, token), _JINJA_TAGS, lambda _: "")
    return neutral, prefix, originals


class _BoundedLoading(Composer, SafeConstructor):
    """Python composition with limits over either event source, and constructors that restore placeholders.

    Aliases share one node, so the size, scalar characters and height of a node's expansion are recorded
    when it completes and charged again at every alias use; an alias to a node still being composed is a
    recursive structure and is refused. Everything is checked while composing, before anything is built.
    """

    _base: type

    def __init__(self, stream: str, restore: Callable[[str], str], path: str | None) -> None:
        self._base.__init__(self, stream)
        Composer.__init__(self)
        self._restore_tokens = restore
        self._path = path
        self._aliases = 0
        self._depth = 0
        self._nodes = 0
        self._chars = 0
        self._expanded: dict[int, tuple[int, int, int]] = {}
        """``id(node)`` -> (nodes, scalar characters, height) of its expansion, once complete."""

    def _refuse(self, why: str, mark: Mark) -> ConfigParseError:
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return ConfigParseError(f"YAML refused as hostile: {why} ({where})", path=self._path)

    def _charge(self, nodes: int, chars: int, mark: Mark) -> None:
        self._nodes += nodes
        self._chars += chars
        if self._nodes > MAX_YAML_NODES:
            raise self._refuse(f"more than {MAX_YAML_NODES} nodes once aliases are expanded", mark)
        if self._chars > MAX_YAML_SCALAR_CHARS:
            raise self._refuse(f"more than {MAX_YAML_SCALAR_CHARS} scalar characters once aliases are expanded", mark)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            return self._compose_alias(event, parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise self._refuse(f"nesting deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        nodes_before, chars_before = self._nodes, self._chars
        self._charge(1, 0, event.start_mark)
        node = super().compose_node(parent, index)
        if isinstance(node, ScalarNode):
            self._charge(0, len(node.value), event.start_mark)
        height = 1 + max((self._expanded[id(child)][2] for child in _children(node)), default=0)
        if self._depth - 1 + height > MAX_YAML_DEPTH:
            raise self._refuse(
                f"nesting deeper than {MAX_YAML_DEPTH} levels once aliases are expanded", event.start_mark
            )
        self._expanded[id(node)] = (self._nodes - nodes_before, self._chars - chars_before, height)
        self._depth -= 1
        return node

    def _compose_alias(self, event: AliasEvent, parent: Node | None, index: Any) -> Node:
        self._aliases += 1
        if self._aliases > MAX_YAML_ALIASES:
            raise self._refuse(f"more than {MAX_YAML_ALIASES} alias uses", event.start_mark)
        target = self.anchors.get(event.anchor)
        if target is not None:
            expanded = self._expanded.get(id(target))
            if expanded is None:
                why = f"alias *{event.anchor} refers to a node that contains it (a recursive structure)"
                raise self._refuse(why, event.start_mark)
            self._charge(expanded[0], expanded[1], event.start_mark)
        return super().compose_node(parent, index)  # the anchored node, or PyYAML's "undefined alias" error

    def construct_restored_str(self, node: ScalarNode) -> str:
        """Strings get their placeholders back here, once per node, so aliased strings stay shared."""
        return self._restore_tokens(self.construct_scalar(node))

    def construct_bounded_int(self, node: ScalarNode) -> int:
        if isinstance(node.value, str) and len(node.value) > MAX_YAML_INT_CHARS:
            raise ConstructorError(None, None, f"an integer of {len(node.value)} characters", node.start_mark)
        return self.construct_yaml_int(node)


_BoundedLoading.add_constructor("tag:yaml.org,2002:str", _BoundedLoading.construct_restored_str)
_BoundedLoading.add_constructor("tag:yaml.org,2002:int", _BoundedLoading.construct_bounded_int)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _bounded(base: type) -> type[_BoundedLoading]:
    """``base`` (``SafeLoader`` or ``CSafeLoader``) reading its events through :class:`_BoundedLoading`."""
    return type(f"Bounded{base.__name__}", (_BoundedLoading, base), {"_base": base})


PURE_PYTHON_LOADER = _bounded(yaml.SafeLoader)
LOADER = _bounded(yaml.CSafeLoader) if yaml.__with_libyaml__ else PURE_PYTHON_LOADER
"""What :func:`load_template_yaml` uses: libyaml scans and parses when PyYAML has it (much faster); the
composer, and so every limit, is the Python one either way."""

_PYYAML_PLAIN_ERRORS = (ValueError, LookupError, AttributeError, TypeError, ArithmeticError)
"""What PyYAML's safe constructors let escape on malformed typed scalars (``2001-13-01``, ``!!bool x``...)."""


def load_template_yaml(text: str, *, path: str | None = None, loader: type[_BoundedLoading] = LOADER) -> Any:
    """A bounded ``yaml.safe_load`` of a possibly unrendered template, parsed in the isolated reader.

    See :func:`parse_template_yaml`; ``loader`` other than the default parses in this process (tests compare
    the pure-Python loader with libyaml).
    """
    if loader is LOADER:
        return _isolated_template_yaml(text, path)
    return parse_template_yaml(text, path=path, loader=loader)


@isolated
def _isolated_template_yaml(text: str, path: str | None) -> Any:
    return parse_template_yaml(text, path=path)


def parse_template_yaml(text: str, *, path: str | None = None, loader: type[_BoundedLoading] = LOADER) -> Any:
    """A bounded ``yaml.safe_load`` of a possibly unrendered template; placeholders stay ``"{{ expr }}"`` strings.

    Each ``{{ ... }}`` becomes an inert token (valid in any YAML context) and ``{% ... %}`` / ``{# ... #}`` tags
    are dropped before parsing; tokens are turned back into their original text afterwards, so a placeholder
    stays visible and is never mistaken for a value. Dates become ISO strings and keys strings (JSON-safe).
    ``path`` names the config in errors. Any failure or refusal (size, alias bomb, recursion, nesting) is a
    :class:`ConfigParseError`.
    """
    if not isinstance(text, str):
        raise ConfigParseError(f"the config is a {type(text).__name__}, not text", path=path)
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigParseError(f"the config has {len(text)} characters, over the {MAX_CONFIG_CHARS} cap", path=path)
    neutral, prefix, originals = neutralise_jinja(text)
    token = re.compile(re.escape(prefix) + r"(\d+)__")

    def restore(value: str) -> str:
        return token.sub(lambda m: originals[int(m.group(1))], value) if originals else value

    try:
        data = _single_document(loader(neutral, restore, path))  # the pure-Python reader checks characters early
    except (yaml.YAMLError, *_PYYAML_PLAIN_ERRORS) as exc:
        why = str(exc) if isinstance(exc, yaml.YAMLError) else f"{type(exc).__name__}: {exc}"
        raise ConfigParseError(
            f"YAML does not parse even with Jinja placeholders neutralised: {why}", path=path
        ) from exc
    return _json_safe(data)


def _single_document(bounded: _BoundedLoading) -> Any:
    try:
        return bounded.get_single_data()
    finally:
        bounded.dispose()


def _json_safe(value: Any) -> Any:
    """String keys, ISO dates, and shared (aliased) parts copied: the expansion is bounded by the loader."""
    if isinstance(value, dict):
        return {str(_json_safe(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):  # !!set, !!omap pairs: JSON knows lists only
        return (
            [_json_safe(v) for v in sorted(value, key=repr)]
            if isinstance(value, set | frozenset)
            else [_json_safe(v) for v in value]
        )
    if isinstance(value, bytes):  # !!binary: no qlib config holds bytes; keep the text JSON can carry
        return value.decode("latin-1")
    return value


def qualified(spec: Any) -> str | None:
    """``module_path.class`` of a qlib ``{class, module_path}`` spec (the class alone when no module is given)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        return None
    cls, module = spec["class"], spec.get("module_path")
    if is_placeholder(cls) or "." in cls or not isinstance(module, str) or not module:
        return cls
    return f"{module}.{cls}"


def declared_model_class(yaml_text: str, *, path: str | None = None) -> str | None:
    """``task.model`` class of a config as written (placeholder text included); ``None`` when unreadable."""
    try:
        data = load_template_yaml(yaml_text, path=path)
    except ConfigParseError:
        return None
    task = data.get("task") if isinstance(data, dict) else None
    return qualified(task.get("model")) if isinstance(task, dict) else None


def _model_matches(declared: str, weight_class_path: str) -> bool:
    if "." in declared:
        return declared == weight_class_path
    return declared == weight_class_path.rsplit(".", 1)[-1]


def _rule_choice(anchor: SotaFactorExperiment) -> tuple[str, str]:
    kinds = [b.kind for b in anchor.based_experiments]
    listed = ", ".join(f"[{b.based_index}] {b.kind}" for b in anchor.based_experiments) or "none"
    if not kinds:
        return BASELINE, "based_experiments is empty (the placeholder's own baseline run)"
    if "model" in kinds:
        return SOTA_MODEL, f"an accepted model experiment is among based_experiments ({listed})"
    return _combined_family(anchor), f"based_experiments hold no model experiment ({listed})"


def _combined_family(anchor: SotaFactorExperiment) -> str:
    return COMBINED_DYNAMIC if COMBINED_DYNAMIC in anchor.experiment_workspace_yaml else COMBINED_UPSTREAM


def decide_config(anchor: SotaFactorExperiment, *, weight_class_path: str | None) -> ConfigDecision:
    """Apply the runner's rule, then confirm it with the persisted weight's class (see module docstring)."""
    files = anchor.experiment_workspace_yaml
    name, why = _rule_choice(anchor)
    reason = f"rule: {name} because {why}"
    text = files.get(name)
    if text is None:
        return ConfigDecision(None, f"{reason}; but {name} is not in experiment_workspace.file_dict", None)
    if weight_class_path is None:
        return ConfigDecision(name, f"{reason}; no persisted weight to check it against", text)
    declared = declared_model_class(text, path=name)
    if declared is None or is_placeholder(declared):
        return ConfigDecision(name, f"{reason}; its task.model class ({declared}) cannot be checked", text)
    if _model_matches(declared, weight_class_path):
        return ConfigDecision(name, f"{reason}; it declares {declared}, matching the weight", text)
    return ConfigDecision(
        None,
        f"{reason}; but {name} declares task.model {declared} while the persisted weight is {weight_class_path}: "
        "the weight was not trained by that config, so no config is trusted",
        None,
    )


def parse_config(decision: ConfigDecision) -> tuple[dict[str, Any] | None, str | None]:
    """The executed config as a mapping, or ``None`` with the reason it is unavailable."""
    if decision.name is None or decision.yaml_text is None:
        return None, f"no executed config: {decision.reason}"
    try:
        data = load_template_yaml(decision.yaml_text, path=decision.name)
    except ConfigParseError as exc:
        return None, f"{decision.name}: {exc.message}"
    if not isinstance(data, dict):
        return None, f"{decision.name} is not a YAML mapping"
    return data, None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def spec_kwargs(spec: Any) -> dict[str, Any]:
    """``kwargs`` of a qlib ``{class, module_path, kwargs}`` spec; ``{}`` for anything malformed."""
    return _mapping(_mapping(spec).get("kwargs"))


def dataset_spec(config: dict[str, Any]) -> dict[str, Any]:
    return _mapping(_mapping(config.get("task")).get("dataset"))


def handler_spec(config: dict[str, Any]) -> dict[str, Any]:
    """``task.dataset.kwargs.handler`` (its kwargs are the ``data_handler_config`` anchor in rdagent's configs)."""
    return _mapping(spec_kwargs(dataset_spec(config)).get("handler"))


def handler_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return spec_kwargs(handler_spec(config)) or _mapping(config.get("data_handler_config"))
