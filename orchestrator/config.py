"""One Settings object: environment over config.yaml over defaults; built once, passed down."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orchestrator.durations import parse_duration
from orchestrator.errors import ConfigError

DEFAULT_BASE_URL = "https://legitsms.com/wp-json/legitsms/v2"
CONFIG_ENV = "ORCHESTRATOR_CONFIG"
DEFAULT_MAX_JOB_FILE_BYTES = 1_000_000
DEFAULT_MAX_NUMBERS_PER_JOB = 10_000

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class Settings(BaseSettings):
    """Every knob of the orchestrator; see config.example.yaml for what each one does."""

    model_config = SettingsConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    api_key: SecretStr | None = Field(None, validation_alias="LEGITSMS_API_KEY")
    base_url: str = Field(DEFAULT_BASE_URL, validation_alias="LEGITSMS_BASE_URL")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(
        Path("~/.local/share/legitsms-orchestrator"),
        validation_alias="ORCHESTRATOR_DATA_DIR",
    )

    rate_limit: float = Field(0.5, ge=0, validation_alias="ORCHESTRATOR_RATE_LIMIT")
    poll_interval: Seconds = Field(5.0, validation_alias="ORCHESTRATOR_POLL_INTERVAL")
    cancel_min_age: Seconds = Field(120.0, validation_alias="ORCHESTRATOR_CANCEL_MIN_AGE")
    provider_expiry: Seconds = Field(1200.0, validation_alias="ORCHESTRATOR_PROVIDER_EXPIRY")
    expiry_margin: Seconds = Field(90.0, validation_alias="ORCHESTRATOR_EXPIRY_MARGIN")
    claim_lease: Seconds = Field(60.0, validation_alias="ORCHESTRATOR_CLAIM_LEASE")
    sweep_interval: Seconds = Field(20.0, validation_alias="ORCHESTRATOR_SWEEP_INTERVAL")
    price_cache_ttl: Seconds = Field(30.0, validation_alias="ORCHESTRATOR_PRICE_CACHE_TTL")
    connect_timeout: Seconds = Field(5.0, validation_alias="ORCHESTRATOR_CONNECT_TIMEOUT")
    read_timeout: Seconds = Field(15.0, validation_alias="ORCHESTRATOR_READ_TIMEOUT")
    retry_after_cap: Seconds = Field(120.0, validation_alias="ORCHESTRATOR_RETRY_AFTER_CAP")
    worker_processes: int = Field(1, ge=1, validation_alias="ORCHESTRATOR_WORKER_PROCESSES")
    worker_threads: int = Field(8, ge=1, validation_alias="ORCHESTRATOR_WORKER_THREADS")
    log_level: str = Field("info", validation_alias="ORCHESTRATOR_LOG_LEVEL")
    max_job_file_bytes: int = Field(
        DEFAULT_MAX_JOB_FILE_BYTES, ge=1, validation_alias="ORCHESTRATOR_MAX_JOB_FILE_BYTES"
    )
    max_numbers_per_job: int = Field(
        DEFAULT_MAX_NUMBERS_PER_JOB, ge=1, validation_alias="ORCHESTRATOR_MAX_NUMBERS_PER_JOB"
    )

    @model_validator(mode="after")
    def _cancels_fit_before_expiry(self) -> Settings:
        # A lost cancel nudge is re-sent by the sweep up to two intervals late.
        if self.expiry_margin < 2 * self.sweep_interval:
            raise ValueError(
                f"expiry_margin ({self.expiry_margin:g}s) must be at least twice sweep_interval "
                f"({self.sweep_interval:g}s), so a lost cancel is re-sent before expiry"
            )
        if self.cancel_min_age >= self.provider_expiry - self.expiry_margin:
            raise ValueError(
                "cancel_min_age must be below provider_expiry - expiry_margin: "
                "otherwise no cancel can be sent in time"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; listing env first makes it win over them.
        return (env_settings, init_settings)

    @property
    def data_path(self) -> Path:
        """The data folder, with ``~`` expanded."""
        return self.data_dir.expanduser()

    @property
    def effective_database_url(self) -> str:
        """DATABASE_URL, or an SQLite file in the data folder."""
        return self.database_url or f"sqlite:///{self.data_path / 'orchestrator.db'}"

    @property
    def cancel_deadline(self) -> float:
        """Seconds after purchase by which a code-less order must be cancelled."""
        return max(self.cancel_min_age, self.provider_expiry - self.expiry_margin)

    def require_api_key(self) -> str:
        """The API key, or a ConfigError saying how to set it."""
        if self.api_key is None or not self.api_key.get_secret_value():
            raise ConfigError("no API key: set LEGITSMS_API_KEY or api_key in config.yaml")
        return self.api_key.get_secret_value()


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the Settings from ``config_file`` (or $ORCHESTRATOR_CONFIG, or ./config.yaml)."""
    explicit = config_file is not None or CONFIG_ENV in os.environ
    path = config_file or Path(os.environ.get(CONFIG_ENV, "config.yaml"))
    values: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        values = loaded or {}
    elif explicit:
        raise ConfigError(f"{path}: no such config file")
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(path, err) for err in exc.errors())) from None


def _problem(path: Path, error: ErrorDetails) -> str:
    """One bad setting as "where: what is wrong", blaming the environment when the value is its."""
    name = ".".join(str(part) for part in error["loc"])
    field = Settings.model_fields.get(name)
    # The environment's values arrive under their variable's name, except when the file also
    # sets that field: then the error carries the field's name, and the environment's value won.
    variable = field.validation_alias if field is not None else name
    from_env = isinstance(variable, str) and variable.upper() in {k.upper() for k in os.environ}
    if from_env and error["type"] != "extra_forbidden":  # only the file can hold unknown keys
        where = f"environment variable {variable}"
    else:
        where = f"{path}: {name}"
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(name, list(Settings.model_fields), n=1)
        hint = (
            f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(Settings.model_fields)
        )
        return f"{where}: is not a known setting; {hint}"
    if error["type"] == "value_error":
        return f"{where}: {error['ctx']['error']}"
    return f"{where}: {error['msg']}"
