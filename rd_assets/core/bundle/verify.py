"""Check a published bundle from its bytes alone: hashes, schemas, alignment, and that model.txt loads.

Used by ``rd-assets verify``, by the Dagster ``bundle_integrity`` check and by the crash tests. It trusts
nothing in the bundle: every file is re-hashed against the manifest, every JSON is validated against its
pydantic model, and the facts that must agree across documents (counts, weight hash, readiness) are
recomputed. Every disagreement becomes one line in ``problems``; ``ok`` means there are none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePath

from pydantic import BaseModel, ValidationError

from rd_assets.core.artifacts.order_rules import combine_order
from rd_assets.core.bundle.assemble import config_relpath, content_hash, file_entries, sha256_hex
from rd_assets.core.bundle.store import current_version_dir
from rd_assets.core.contracts.artifact_models import FactorOrder, ModelMeta
from rd_assets.core.contracts.bundle_models import (
    EXTRACT_REPORT,
    FACTOR_ORDER,
    MANIFEST,
    MODEL_META,
    MODEL_SAFETENSORS,
    MODEL_TXT,
    SELECTION_RELPATH_ROLES,
    SOTA_FACTORS,
    ExtractReport,
    Manifest,
    SotaFactorsDoc,
    VerifyReport,
)
from rd_assets.core.errors import BundleIntegrityError, RdAssetsError
from rd_assets.core.isolation import isolated
from rd_assets.core.task_ids import is_task_id

DOCUMENTS: dict[str, type[BaseModel]] = {
    SOTA_FACTORS: SotaFactorsDoc,
    FACTOR_ORDER: FactorOrder,
    MODEL_META: ModelMeta,
    EXTRACT_REPORT: ExtractReport,
}


def _resolve(bundle_dir: Path) -> Path:
    """A ``<store>/<task_id>`` symlink is resolved once (and must follow the store layout); any other path is
    taken as a version directory."""
    if bundle_dir.is_symlink() and is_task_id(bundle_dir.name):
        version = current_version_dir(bundle_dir.parent, bundle_dir.name)
        if version is None:
            raise BundleIntegrityError("the bundle symlink points at no version directory", path=str(bundle_dir))
        return version
    if not bundle_dir.is_dir():
        raise BundleIntegrityError("not a bundle directory", path=str(bundle_dir))
    return bundle_dir.resolve()


def _read_tree(version: Path, problems: list[str]) -> dict[str, bytes]:
    """Every regular file under the version (relpath -> bytes); symlinks and specials are problems."""
    found: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(version):
        base = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            path = base / name
            rel = path.relative_to(version).as_posix()
            if path.is_symlink():
                problems.append(f"{rel}: a symlink inside a bundle")
            elif path.is_file():
                try:
                    found[rel] = path.read_bytes()
                except OSError as exc:
                    problems.append(f"{rel}: unreadable: {exc.strerror or exc}")
            elif not path.is_dir():
                problems.append(f"{rel}: not a regular file")
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
    return found


def _check_hashes(manifest: Manifest, found: dict[str, bytes], problems: list[str]) -> None:
    actual = file_entries(found)
    for rel in sorted(set(manifest.files) - set(actual)):
        problems.append(f"{rel}: listed in the manifest but missing")
    for rel in sorted(set(actual) - set(manifest.files)):
        problems.append(f"{rel}: present but not listed in the manifest")
    for rel in sorted(set(actual) & set(manifest.files)):
        want, got = manifest.files[rel], actual[rel]
        if (want.sha256, want.size) != (got.sha256, got.size):
            problems.append(
                f"{rel}: sha256/size {got.sha256[:12]}/{got.size} != manifest {want.sha256[:12]}/{want.size}"
            )
    recomputed = content_hash(manifest.files)
    if recomputed != manifest.content_hash:
        problems.append(f"{MANIFEST}: content_hash {manifest.content_hash[:12]} != hash of its files {recomputed[:12]}")


def _parse_documents(found: dict[str, bytes], problems: list[str]) -> dict[str, BaseModel]:
    docs: dict[str, BaseModel] = {}
    for rel, model in DOCUMENTS.items():
        if rel not in found:
            problems.append(f"{rel}: missing")
            continue
        try:
            docs[rel] = model.model_validate_json(found[rel])
        except ValidationError as exc:
            problems.append(f"{rel}: does not match {model.__name__}: {exc.error_count()} error(s): {exc.errors()[0]}")
    return docs


def _check_order(order: FactorOrder, report: ExtractReport | None, problems: list[str]) -> None:
    """Recompute the alignment from the lists themselves; never trust the stored flags."""
    alpha, dynamic, full = order.alpha158_factors, order.dynamic_factors, order.model_input_order
    rule = order.model_input_order_rule
    if full is not None and (
        alpha is None or dynamic is None or rule is None or full != combine_order(rule, alpha, dynamic)
    ):
        problems.append(f"{FACTOR_ORDER}: model_input_order is not what {rule} makes of alpha158 + dynamic factors")
    for label, values, count in (
        ("alpha158", alpha, order.alpha158_count),
        ("dynamic", dynamic, order.dynamic_count),
        ("model_input", full, order.model_input_count),
    ):
        if (len(values) if values is not None else None) != count:
            problems.append(f"{FACTOR_ORDER}: {label}_count {count} does not match its list")
    aligned = full is not None and order.model_feature_count is not None and len(full) == order.model_feature_count
    if aligned != order.is_aligned:
        problems.append(
            f"{FACTOR_ORDER}: is_aligned {order.is_aligned} but {0 if full is None else len(full)} names for "
            f"model_feature_count {order.model_feature_count}"
        )
    if full is not None and len(set(full)) != len(full):
        problems.append(f"{FACTOR_ORDER}: model_input_order has duplicate names")
    model = report.model if report else None
    if model is not None and model.feature_count != order.model_feature_count:
        problems.append(
            f"{FACTOR_ORDER}: model_feature_count {order.model_feature_count} != the model's {model.feature_count}"
        )


def _check_model_txt(found: dict[str, bytes], order: FactorOrder | None, report: ExtractReport | None) -> list[str]:
    model = report.model if report else None
    if model is not None and model.model_txt_sha256 != sha256_hex(found[MODEL_TXT]):
        return [f"{MODEL_TXT}: sha256 differs from the report's model_txt_sha256"]
    return []


def _check_safetensors(data: bytes, order: FactorOrder | None, report: ExtractReport | None) -> tuple[list[str], str]:
    """Parse ``model.safetensors`` with the safetensors library and compare it with the report and the order."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    model = report.model if report else None
    if model is None or model.safetensors_sha256 != sha256_hex(data):
        return [f"{MODEL_SAFETENSORS}: sha256 differs from the report's safetensors_sha256"], "safetensors not checked"
    try:
        arrays = load(data)
    except (SafetensorError, ValueError) as exc:
        return [f"{MODEL_SAFETENSORS}: safetensors cannot parse it: {exc}"], "safetensors parse failed"
    problems = []
    want = {t.name: t.shape for t in model.tensors or []}
    got = {name: list(array.shape) for name, array in arrays.items()}
    if got != want:
        problems.append(f"{MODEL_SAFETENSORS}: tensor names/shapes differ from the report's state_dict")
    first = got.get(model.first_layer_key or "")
    count = order.model_input_count if order else None
    if first is None or len(first) != 2 or (count is not None and first[1] != count):
        problems.append(
            f"{MODEL_SAFETENSORS}: first layer {model.first_layer_key} {first} does not take {count} inputs"
        )
    return problems, f"{MODEL_SAFETENSORS} parsed: {len(got)} tensors, first layer {model.first_layer_key} {first}"


@dataclass(frozen=True)
class LightGBMLoad:
    """What plain LightGBM made of ``model.txt``: its shape, or why it refused the text."""

    version: str | None
    num_feature: int | None = None
    num_trees: int | None = None
    refused: str | None = None


@isolated
def load_lightgbm_text(text: bytes) -> LightGBMLoad:
    """LightGBM's C++ parser on a model string from a pickle (it dies on crafted ones: hence isolated)."""
    try:
        import lightgbm
    except ImportError:
        return LightGBMLoad(version=None)
    try:
        booster = lightgbm.Booster(model_str=text.decode("utf-8"))
    except Exception as exc:  # lightgbm raises LightGBMError/ValueError on a corrupt string
        return LightGBMLoad(version=lightgbm.__version__, refused=f"{type(exc).__name__}: {exc}")
    return LightGBMLoad(lightgbm.__version__, booster.num_feature(), booster.num_trees())


def _load_model_txt(text: bytes, order: FactorOrder | None) -> tuple[list[str], str]:
    """Load ``model.txt`` with plain lightgbm (no qlib, no pickle) when it is installed: (problems, note)."""
    try:
        load = load_lightgbm_text(text)
    except RdAssetsError as exc:  # the reader crashed or hit a limit on this string
        return [f"{MODEL_TXT}: lightgbm cannot load it: {exc.code}: {exc.message}"], "lightgbm load failed"
    if load.version is None:
        return [], f"lightgbm is not installed: {MODEL_TXT} was hashed but not loaded"
    if load.refused is not None:
        return [f"{MODEL_TXT}: lightgbm cannot load it: {load.refused}"], "lightgbm load failed"
    want = order.model_feature_count if order else None
    problems = []
    if want is not None and load.num_feature != want:
        problems.append(f"{MODEL_TXT}: lightgbm sees {load.num_feature} features, factor order says {want}")
    loaded = f"{load.num_feature} features, {load.num_trees} trees"
    return problems, f"{MODEL_TXT} loaded with lightgbm {load.version}: {loaded}"


def _check_consistency(manifest: Manifest, docs: dict[str, BaseModel], found: dict[str, bytes]) -> list[str]:
    problems = []
    for rel, doc in docs.items():
        if getattr(doc, "task_id", manifest.task_id) != manifest.task_id:
            problems.append(f"{rel}: task_id {getattr(doc, 'task_id', None)} != manifest {manifest.task_id}")
    for role, rel in manifest.primary_assets.items():
        if rel is not None and rel not in manifest.files:
            problems.append(f"{MANIFEST}: primary asset {role} -> {rel} is not a bundle file")
    sota = docs.get(SOTA_FACTORS)
    if isinstance(sota, SotaFactorsDoc):
        for name, rel in sota.code_relpaths.items():
            if rel not in found:
                problems.append(f"{SOTA_FACTORS}: code of {name} -> {rel} is missing")
    report = docs.get(EXTRACT_REPORT)
    key = manifest.sota_factor_anchor.resolved_model_weight_key
    if isinstance(report, ExtractReport):
        weight = report.weight
        if (weight.resolved_model_weight_key if weight else None) != key:
            problems.append(f"{EXTRACT_REPORT}: weight key differs from the manifest's {key}")
        elif weight is not None and key in manifest.files and manifest.files[key].sha256 != weight.sha256:
            problems.append(f"{key}: sha256 differs from the weight's recorded sha256")
    order = docs.get(FACTOR_ORDER)
    if manifest.selection_ready:
        if manifest.reasons:
            problems.append(f"{MANIFEST}: selection_ready with reasons {manifest.reasons}")
        if key is None or key not in found:
            problems.append(f"{MANIFEST}: selection_ready without a model weight file")
        if not (isinstance(order, FactorOrder) and order.is_aligned):
            problems.append(f"{MANIFEST}: selection_ready but the factor order is not aligned")
    elif not manifest.reasons:
        problems.append(f"{MANIFEST}: not selection_ready but no reasons given")
    return problems


def _check_selection_names(manifest: Manifest, order: FactorOrder | None) -> list[str]:
    """The selection system's field names (schema 1.2) must repeat our facts exactly; 1.1 bundles have none."""
    if manifest.schema_version == "1.1":
        return []
    problems = []
    assets = manifest.primary_assets
    for key, role in SELECTION_RELPATH_ROLES.items():
        if key not in assets:
            problems.append(f"{MANIFEST}: primary_assets.{key} is missing")
        elif role is not None and assets.get(key) != assets.get(role):
            problems.append(f"{MANIFEST}: primary_assets.{key} {assets.get(key)} != {role} {assets.get(role)}")
    loop = manifest.session_anchor.loop_idx
    if manifest.loop_id != loop:
        problems.append(f"{MANIFEST}: loop_id {manifest.loop_id} != session_anchor.loop_idx {loop}")
    if order is None:  # an unreadable factor_order.json is a problem of its own already
        return problems
    config = assets.get("config_relpath")
    if config is not None and (order.config_name is None or config != config_relpath(order.config_name)):
        problems.append(f"{MANIFEST}: config_relpath {config} is not the executed config {order.config_name}")
    source = PurePath(order.dynamic_source).name if order.dynamic_source else None
    expected = {
        "factor_order": (order.factor_order, order.model_input_order, "model_input_order"),
        "dynamic_factor_count": (order.dynamic_factor_count, order.dynamic_count, "dynamic_count"),
        "source_file": (order.source_file, source, "the file name of dynamic_source"),
        "task_run_id": (order.task_run_id, manifest.task_run_id, "the manifest's task_run_id"),
        "loop_id": (order.loop_id, loop, "session_anchor.loop_idx"),
    }
    for name, (got, want, what) in expected.items():
        if got != want:
            problems.append(f"{FACTOR_ORDER}: {name} {got!r} != {what} {want!r}")
    return problems


def verify_bundle(bundle_dir: Path) -> VerifyReport:
    """Every problem of the bundle at ``bundle_dir`` (``<store>/<task_id>`` or a version dir)."""
    problems: list[str] = []
    notes: list[str] = []
    try:
        version = _resolve(bundle_dir)
    except RdAssetsError as exc:
        return VerifyReport(
            bundle_dir=str(bundle_dir), version_dir=None, task_id=None, content_hash=None, ok=False,
            problems=[str(exc)], checked_files=0,
        )  # fmt: skip
    found = _read_tree(version, problems)
    manifest: Manifest | None = None
    if MANIFEST not in found:
        problems.append(f"{MANIFEST}: missing")
    else:
        try:
            manifest = Manifest.model_validate_json(found[MANIFEST])
        except ValidationError as exc:
            problems.append(f"{MANIFEST}: does not match Manifest: {exc.errors()[0]}")
    if manifest is not None:
        _check_hashes(manifest, {k: v for k, v in found.items() if k != MANIFEST}, problems)
        docs = _parse_documents(found, problems)
        problems += _check_consistency(manifest, docs, found)
        order = docs.get(FACTOR_ORDER)
        report = docs.get(EXTRACT_REPORT)
        order = order if isinstance(order, FactorOrder) else None
        report = report if isinstance(report, ExtractReport) else None
        if order is not None:
            _check_order(order, report, problems)
        problems += _check_selection_names(manifest, order)
        if MODEL_TXT in found:
            problems += _check_model_txt(found, order, report)
            load_problems, note = _load_model_txt(found[MODEL_TXT], order)
            problems += load_problems
            notes.append(note)
        if MODEL_SAFETENSORS in found:
            st_problems, note = _check_safetensors(found[MODEL_SAFETENSORS], order, report)
            problems += st_problems
            notes.append(note)
    return VerifyReport(
        bundle_dir=str(bundle_dir),
        version_dir=str(version),
        task_id=manifest.task_id if manifest else None,
        content_hash=manifest.content_hash if manifest else None,
        ok=not problems,
        problems=problems,
        checked_files=len(found),
        notes=notes,
    )
