"""The API's environment in one typed object: ``RD_ASSETS_*`` variables, overridden by ``rd-assets serve`` flags.

Why one class: the store, the token, the listening address and every limit used to come from a mix of flags,
``os.environ`` lookups and defaults spread over the CLI and the app. :class:`ApiSettings` reads them once,
validates them once (a blank token or a zero limit stops the server before it binds), and is the only thing
:func:`rd_assets.api.app.create_app` takes. Variables: ``RD_ASSETS_STORE``, ``RD_ASSETS_API_TOKEN``,
``RD_ASSETS_HOST``, ``RD_ASSETS_PORT``, ``RD_ASSETS_LOG_LEVEL`` and ``RD_ASSETS_LIMITS__<LIMIT>`` (for example
``RD_ASSETS_LIMITS__MAX_CONNECTIONS=200``). The token is never a flag: ``ps`` would show it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rd_assets.api.limits import ApiLimits

ENV_PREFIX = "RD_ASSETS_"
NESTED_DELIMITER = "__"
TOKEN_ENV = f"{ENV_PREFIX}API_TOKEN"
LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class ApiSettings(BaseSettings):
    """Everything ``rd-assets serve`` needs; keyword arguments (the CLI's flags) win over the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    store: Path = Field(description="the bundle store written by `rd-assets extract` and the Dagster assets")
    api_token: SecretStr | None = Field(
        None, description="bearer token every route but /health requires; unset: no token (loopback use only)"
    )
    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(8765, ge=0, le=65535, description="TCP port (0: any free port)")
    log_level: LogLevel = Field("info", description="uvicorn's and the API's log level")
    limits: ApiLimits = Field(default_factory=ApiLimits, description="checked before the token and before any route")

    @field_validator("api_token")
    @classmethod
    def _plain_token(cls, token: SecretStr | None) -> SecretStr | None:
        """A token with spaces or an empty one is a configuration slip, never what someone meant to require."""
        if token is not None:
            value = token.get_secret_value()
            if not value or any(ch.isspace() for ch in value):
                raise ValueError(f"{TOKEN_ENV} must be a non-empty token without whitespace")
        return token


def env_name(loc: tuple[int | str, ...]) -> str:
    """The variable that sets the setting at ``loc`` (a validation error's location), for error messages."""
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part) for part in loc).upper()
