"""Typed failures of the core: every refusal carries a stable ``code``, the file it concerns and the cause.

Callers (CLI, Dagster checks, reports) show ``code`` to people and machines; they never parse messages.
"""

from __future__ import annotations


class RdAssetsError(Exception):
    """Base of every failure the core reports on purpose."""

    code: str = "rd_assets_error"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        where = f" [{self.path}]" if self.path else ""
        return f"{self.code}: {self.message}{where}"

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "path": self.path}


class UnsafePickleError(RdAssetsError):
    """The pickle references a global that could act (execute, import, touch files)."""

    code = "unsafe_pickle"

    def __init__(self, global_name: str, *, path: str | None = None, why: str = "") -> None:
        reason = f"refused global {global_name!r}" + (f": {why}" if why else "")
        super().__init__(reason, path=path)
        self.global_name = global_name


class UnreadableSnapshotError(RdAssetsError):
    """The file is truncated, corrupt, empty, or not a pickle at all."""

    code = "unreadable_snapshot"


class SignatureMismatchError(RdAssetsError):
    """A signed session file whose HMAC does not match the configured signing key."""

    code = "signature_mismatch"


class UnsignedSnapshotError(RdAssetsError):
    """``RD_ASSETS_REQUIRE_SIGNATURE`` is set and the session file is a plain (unsigned) pickle."""

    code = "unsigned_snapshot"


class SignatureUnverifiedError(RdAssetsError):
    """``RD_ASSETS_REQUIRE_SIGNATURE`` is set and a signed file cannot be verified (no signing key configured)."""

    code = "signature_unverified"


class NoSnapshotError(RdAssetsError):
    """The log dir has no readable ``__session__/<loop>/<step>_<name>`` snapshot."""

    code = "no_snapshot"


class NoSotaFactorExperimentError(RdAssetsError):
    """No accepted (``decision is True``) qlib factor experiment in the chosen trace."""

    code = "no_sota_factor_experiment"


class InvalidLogDirError(RdAssetsError):
    """The path given as a task log dir is missing or is not a directory."""

    code = "invalid_log_dir"


class WeightsNotPersistedError(RdAssetsError):
    """The anchor factor experiment carries no ``model.pkl`` / ``params.pkl`` in its sub-workspaces."""

    code = "weights_not_persisted"


class TorchWeightError(RdAssetsError):
    """A pickled torch network whose tensors cannot be rebuilt as plain data (forged, truncated, unsupported)."""

    code = "torch_weight_unreadable"


class FeatureCountMismatchError(RdAssetsError):
    """``model_input_order`` and the model's feature count disagree; nothing is padded or cut."""

    code = "feature_count_mismatch"


class FactorOrderUnresolvedError(FeatureCountMismatchError):
    """``model_input_order`` cannot be confirmed at all; subclasses name which part is missing."""

    code = "factor_order_unresolved"


class ConfigUnresolvedError(FactorOrderUnresolvedError):
    """No executed qlib config can be named (missing from the workspace, or contradicted by the weight)."""

    code = "config_unresolved"


class UnknownDataLoaderError(FactorOrderUnresolvedError):
    """The executed config's data loader is not one whose column order rd-assets knows."""

    code = "unknown_data_loader"


class AlphaNamesUnresolvedError(FactorOrderUnresolvedError):
    """No source names the alpha features: an unrendered template and no ``base_features`` in the session."""

    code = "alpha_names_unresolved"


class FactorParquetNotFoundError(FactorOrderUnresolvedError):
    """The anchor's ``combined_factors_df.parquet`` is not where the (mapped) workspace path says."""

    code = "factor_parquet_not_found"


class FactorParquetUnreadableError(FactorOrderUnresolvedError):
    """The anchor parquet exists but its footer does not name ``('feature', <name>)`` columns."""

    code = "factor_parquet_unreadable"


class ModelFeatureCountUnknownError(FactorOrderUnresolvedError):
    """The model's input feature count cannot be read from the weight, so the order cannot be confirmed."""

    code = "model_feature_count_unknown"


class BundleIntegrityError(RdAssetsError):
    """A published bundle does not re-hash to its manifest, or a JSON file breaks its schema."""

    code = "bundle_integrity"


class BundleStoreError(RdAssetsError):
    """The bundle store cannot take a publication (bad task id or relpath, a foreign file in the way)."""

    code = "bundle_store"


class TaskStatusError(RdAssetsError):
    """A task's status record in the store cannot be written, or is not a readable :class:`TaskFailure`."""

    code = "task_status_unreadable"


class InvalidPathMapError(RdAssetsError):
    """A ``--path-map`` rule is not ``FROM=TO`` with two absolute paths."""

    code = "invalid_path_map"


class WorkspaceTraversalError(RdAssetsError):
    """The run opened or listed a path outside ``__session__`` other than the anchor parquet (rule 5)."""

    code = "workspace_traversal"


class NoReadableSnapshotError(NoSnapshotError):
    """Snapshots exist but every one was skipped; ``candidates`` keeps each one's reason for the audit."""

    def __init__(self, message: str, *, path: str | None = None, candidates: list[object] | None = None) -> None:
        super().__init__(message, path=path)
        self.candidates = list(candidates or [])


class SessionChangedError(RdAssetsError):
    """The chosen snapshot changed between selection and a later read; values would not belong together."""

    code = "session_changed"


class ReaderCrashedError(RdAssetsError):
    """The isolated reader process died on this input (a signal, or it closed the channel mid-answer)."""

    code = "reader_crashed"


class ReaderLimitExceededError(RdAssetsError):
    """The isolated reader hit a hard limit on this input (memory, CPU time, wall time, a size cap)."""

    code = "reader_limit_exceeded"


class ConfigParseError(RdAssetsError):
    """A config text from the session does not parse as YAML, or is refused as hostile (alias bomb, nesting)."""

    code = "config_unparseable"


# ------------------------------------------------------------------ consumer kit (client, loader, sandbox, scoring)


class ApiUnreachableError(RdAssetsError):
    """The Results API did not answer (connection refused, reset, timeout) after every retry."""

    code = "api_unreachable"


class ApiRequestError(RdAssetsError):
    """The Results API refused a request; ``api_code`` is its own error code (``task_not_found``, ``unauthorized``)."""

    code = "api_error"

    def __init__(self, message: str, *, path: str | None = None, status: int = 0, api_code: str = "") -> None:
        super().__init__(message, path=path)
        self.status = status
        self.api_code = api_code


class DownloadIntegrityError(RdAssetsError):
    """A downloaded file does not hash to the manifest, or the bundle changed on the server during the pull."""

    code = "download_integrity"


class BundleNotReadyError(RdAssetsError):
    """The bundle says ``selection_ready: false``; it is used only when the caller asks for it explicitly."""

    code = "bundle_not_ready"


class ModelCodeUntrustedError(RdAssetsError):
    """The torch network is the run's own (LLM-written) ``model.py``; it is imported only with ``trust_model_code``."""

    code = "model_code_untrusted"


class ModelLoadError(RdAssetsError):
    """The bundle's model cannot be built (library missing, tensors not matching the network, unknown kind)."""

    code = "model_unloadable"


class MissingFeaturesError(RdAssetsError):
    """Features the model was trained on are absent from the frame; nothing is padded. ``missing`` lists them."""

    code = "missing_features"

    def __init__(self, missing: list[str], *, path: str | None = None) -> None:
        super().__init__(f"{len(missing)} model input(s) missing: {', '.join(missing)}", path=path)
        self.missing = list(missing)


class InvalidFeaturesError(RdAssetsError):
    """A feature frame that cannot be scored: no (datetime, instrument) rows, duplicate names or rows, non-numbers."""

    code = "invalid_features"


class FactorDataError(RdAssetsError):
    """The ``daily_pv.h5`` given to compute factors is unreadable or not qlib's (datetime, instrument) frame."""

    code = "factor_data_invalid"


class SandboxUnavailableError(RdAssetsError):
    """The factor sandbox cannot confine code here (no network namespace or Landlock); nothing was run."""

    code = "sandbox_unavailable"


def error_classes() -> dict[str, type[RdAssetsError]]:
    """Every typed error by its code, so an error that crossed a process boundary comes back as its own class."""
    found: dict[str, type[RdAssetsError]] = {}
    pending: list[type[RdAssetsError]] = [RdAssetsError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def rebuild_error(code: str, message: str, path: str | None) -> RdAssetsError:
    """The typed error recorded as ``code`` (in the index, or by the isolated reader), as its own class.

    Built through the base constructor, so subclasses with extra constructor arguments come back with their
    code, message and path only; an unknown code stays a base error carrying that code.
    """
    cls = error_classes().get(code)
    if cls is None:
        err = RdAssetsError(message, path=path)
        err.code = code
        return err
    err = cls.__new__(cls)
    RdAssetsError.__init__(err, message, path=path)
    return err
