"""Which qlib config the anchor ran, and a YAML reader that tolerates rdagent's Jinja templates.

DESIGN.md section 1 gives the runner's rule (rdagent's ``QlibFactorRunner.develop``): ``conf_baseline.yaml``
only when ``based_experiments`` is EMPTY; ``conf_combined_factors_sota_model.yaml`` when an accepted model
experiment is among them; else ``conf_combined_factors_dynamic.yaml`` (the fork) or ``conf_combined_factors.yaml``
(upstream). The first accepted factor experiment (``based_experiments == [placeholder]``) therefore runs a
combined config on the alpha features plus its own parquet columns.

The persisted weight's class must be the one the chosen config declares (``task.model``). A contradiction
means the weight was not produced by that config; nothing else is guessed in its place: no config is
trusted and the reason names both.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

import yaml

from rd_assets.models import SotaFactorExperiment

BASELINE = "conf_baseline.yaml"
SOTA_MODEL = "conf_combined_factors_sota_model.yaml"
COMBINED_DYNAMIC = "conf_combined_factors_dynamic.yaml"
COMBINED_UPSTREAM = "conf_combined_factors.yaml"
HANDLER_KWARGS_PATH = "task.dataset.kwargs.handler.kwargs"

_JINJA_EXPR = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_JINJA_TAG = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_TOKEN = re.compile(r"__rd_jinja_(\d+)__")


@dataclass(frozen=True)
class ConfigDecision:
    """The executed config's file name (``None`` when no config fits), why, and its text when present."""

    name: str | None
    reason: str
    yaml_text: str | None


class ConfigParseError(ValueError):
    """The YAML stays unparseable even with its Jinja expressions neutralised."""


def is_placeholder(value: Any) -> bool:
    """A value that is (or contains) an unrendered Jinja expression."""
    return isinstance(value, str) and "{{" in value and "}}" in value


def load_template_yaml(text: str) -> Any:
    """``yaml.safe_load`` of a possibly unrendered template; placeholders come back as ``"{{ expr }}"`` strings.

    Each ``{{ ... }}`` becomes an inert token (valid in any YAML context) and ``{% ... %}`` / ``{# ... #}`` tags
    are dropped before parsing; tokens are turned back into their original text afterwards, so a placeholder
    stays visible and is never mistaken for a value. Dates become ISO strings and keys strings (JSON-safe).
    """
    originals: list[str] = []

    def token(match: re.Match[str]) -> str:
        originals.append(match.group(0))
        return f"__rd_jinja_{len(originals) - 1}__"

    neutral = _JINJA_TAG.sub("", _JINJA_EXPR.sub(token, text))
    try:
        data = yaml.safe_load(neutral)
    except yaml.YAMLError as exc:
        raise ConfigParseError(f"YAML does not parse even with Jinja placeholders neutralised: {exc}") from exc
    return _restore(data, originals)


def _restore(value: Any, originals: list[str]) -> Any:
    if isinstance(value, dict):
        return {str(_restore(k, originals)): _restore(v, originals) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, originals) for v in value]
    if isinstance(value, str):
        return _TOKEN.sub(lambda m: originals[int(m.group(1))], value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def qualified(spec: Any) -> str | None:
    """``module_path.class`` of a qlib ``{class, module_path}`` spec (the class alone when no module is given)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        return None
    cls, module = spec["class"], spec.get("module_path")
    if is_placeholder(cls) or "." in cls or not isinstance(module, str) or not module:
        return cls
    return f"{module}.{cls}"


def declared_model_class(yaml_text: str) -> str | None:
    """``task.model`` class of a config as written (placeholder text included); ``None`` when unreadable."""
    try:
        data = load_template_yaml(yaml_text)
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
    declared = declared_model_class(text)
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
        data = load_template_yaml(decision.yaml_text)
    except ConfigParseError as exc:
        return None, f"{decision.name}: {exc}"
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
