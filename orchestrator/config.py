"""One Settings object: environment over config.yaml over defaults; built once, passed down."""

from __future__ import annotations

import difflib
import importlib.util
import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orchestrator.durations import parse_duration
from orchestrator.errors import ConfigError

DEFAULT_BASE_URL = "https://legitsms.com/wp-json/legitsms/v2"
CONFIG_ENV = "ORCHESTRATOR_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_RATE_LIMIT = 0.001  # one request in about 17 minutes: anything slower is a typo
DEFAULT_MAX_JOB_FILE_BYTES = 1_000_000
DEFAULT_MAX_NUMBERS_PER_JOB = 10_000
MAX_BREAKER_FAILURES = 1000  # a breaker that needs more code-less orders in a row is a typo
# A settings file is a screenful; reading more than this is a mistake (--config /dev/zero).
MAX_CONFIG_FILE_BYTES = 1_000_000
DATABASE_BACKENDS = ("sqlite", "postgresql")
REDIS_SCHEMES = ("redis", "rediss", "unix")
_WHITESPACE_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", " ": "a space"}

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

    rate_limit: float = Field(
        0.5, ge=0, allow_inf_nan=False, validation_alias="ORCHESTRATOR_RATE_LIMIT"
    )
    poll_interval: Seconds = Field(5.0, validation_alias="ORCHESTRATOR_POLL_INTERVAL")
    cancel_min_age: Seconds = Field(120.0, validation_alias="ORCHESTRATOR_CANCEL_MIN_AGE")
    provider_expiry: Seconds = Field(1200.0, validation_alias="ORCHESTRATOR_PROVIDER_EXPIRY")
    expiry_margin: Seconds = Field(90.0, validation_alias="ORCHESTRATOR_EXPIRY_MARGIN")
    claim_lease: Seconds = Field(60.0, validation_alias="ORCHESTRATOR_CLAIM_LEASE")
    sweep_interval: Seconds = Field(20.0, validation_alias="ORCHESTRATOR_SWEEP_INTERVAL")
    price_cache_ttl: Seconds = Field(30.0, validation_alias="ORCHESTRATOR_PRICE_CACHE_TTL")
    breaker_failures: int = Field(
        5, ge=1, le=MAX_BREAKER_FAILURES, validation_alias="ORCHESTRATOR_BREAKER_FAILURES"
    )
    breaker_cooldown: Seconds = Field(1800.0, validation_alias="ORCHESTRATOR_BREAKER_COOLDOWN")
    connect_timeout: Seconds = Field(5.0, validation_alias="ORCHESTRATOR_CONNECT_TIMEOUT")
    read_timeout: Seconds = Field(15.0, validation_alias="ORCHESTRATOR_READ_TIMEOUT")
    retry_after_cap: Seconds = Field(120.0, validation_alias="ORCHESTRATOR_RETRY_AFTER_CAP")
    cli_patience: Seconds = Field(60.0, validation_alias="ORCHESTRATOR_CLI_PATIENCE")
    funds_pause: Seconds = Field(300.0, validation_alias="ORCHESTRATOR_FUNDS_PAUSE")
    min_balance: Decimal | None = Field(
        None, ge=0, allow_inf_nan=False, validation_alias="ORCHESTRATOR_MIN_BALANCE"
    )
    # No one else spends on the API key: a wallet checkpoint may settle in-doubt purchases
    # from the balance (lifecycle/checkpoint.py). False: `audit` only reports.
    exclusive_key: bool = Field(False, validation_alias="ORCHESTRATOR_EXCLUSIVE_KEY")
    # A checkpoint at least this often while jobs are active (and at each job's start and end).
    checkpoint_interval: Seconds = Field(600.0, validation_alias="ORCHESTRATOR_CHECKPOINT_INTERVAL")
    # An in-doubt purchase is set against the wallet only this long after it was sent: a slow
    # provider may still be charging it.
    in_doubt_grace: Seconds = Field(60.0, validation_alias="ORCHESTRATOR_IN_DOUBT_GRACE")
    max_response_bytes: int = Field(
        1024 * 1024, ge=1024, validation_alias="ORCHESTRATOR_MAX_RESPONSE_BYTES"
    )
    worker_processes: int = Field(1, ge=1, validation_alias="ORCHESTRATOR_WORKER_PROCESSES")
    worker_threads: int = Field(8, ge=1, validation_alias="ORCHESTRATOR_WORKER_THREADS")
    log_level: str = Field("info", validation_alias="ORCHESTRATOR_LOG_LEVEL")
    max_job_file_bytes: int = Field(
        DEFAULT_MAX_JOB_FILE_BYTES, ge=1, validation_alias="ORCHESTRATOR_MAX_JOB_FILE_BYTES"
    )
    max_numbers_per_job: int = Field(
        DEFAULT_MAX_NUMBERS_PER_JOB, ge=1, validation_alias="ORCHESTRATOR_MAX_NUMBERS_PER_JOB"
    )

    @field_validator("api_key")
    @classmethod
    def _key_is_one_printable_word(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (problem := key_problem(value.get_secret_value())):
            raise ValueError(problem)
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if problem := base_url_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_redis(cls, value: str | None) -> str | None:
        if value and (problem := redis_url_problem(value)):
            raise ValueError(problem)
        return value or None

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str | None) -> str | None:
        if value and (problem := database_url_problem(value)):
            raise ValueError(problem)
        return value or None

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_is_off_or_sane(cls, value: float) -> float:
        if 0 < value < MIN_RATE_LIMIT:
            raise ValueError(
                f"must be 0 (no limit of our own) or at least {MIN_RATE_LIMIT:g} requests per "
                f"second, got {value:g}"
            )
        return value

    @field_validator("funds_pause")
    @classmethod
    def _funds_pause_is_positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a positive duration, like 5m (buying pauses this long)")
        return value

    @field_validator("min_balance")
    @classmethod
    def _min_balance_is_money(cls, value: Decimal | None) -> Decimal | None:
        exponent = value.as_tuple().exponent if value is not None else 0
        if isinstance(exponent, int) and exponent < -6:
            raise ValueError(f"has more than 6 decimals: {value}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_is_known(cls, value: object) -> object:
        if isinstance(value, str) and (problem := log_level_problem(value)):
            raise ValueError(problem)
        return value.lower() if isinstance(value, str) else value

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


def _shown(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def key_problem(key: str) -> str | None:
    """What makes ``key`` unusable as an API key (printable ASCII, no whitespace), or None.

    Nothing is stripped silently: a key pasted with its newline is refused, saying so. The
    message never quotes the key.
    """
    for index, char in enumerate(key):
        if index == len(key) - 1 and index > 0:
            where = "at the end"
        elif index == 0:
            where = "at the start"
        else:
            where = f"at character {index + 1}"
        if char in _WHITESPACE_NAMES:
            what = _WHITESPACE_NAMES[char]
        elif not char.isascii():
            what = "a character that is not ASCII"
        elif not char.isprintable():
            what = f"a control character (code {ord(char)})"
        else:
            continue
        return (
            f"contains {what} ({where}); an API key is printable ASCII without spaces "
            "(the key is not shown here)"
        )
    return None


def base_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as the provider's root URL, or None."""
    example = f"an http:// or https:// URL like {DEFAULT_BASE_URL}"
    if any(char.isspace() or not char.isprintable() for char in url):
        return f"must be {example}, without spaces, got {_shown(url)}"
    parts = urlsplit(url)
    if not parts.scheme:
        return f"must be {example}, got {_shown(url)}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"must be {example}; {parts.scheme!r} is not http or https"
    if not parts.hostname:
        return f"must be {example}, with a host; got {_shown(url)}"
    if problem := _port_problem(parts):
        return problem
    return None


def redis_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as REDIS_URL, or None; the URL (it may hold a password)
    is never quoted."""
    example = "a URL like redis://host:6379/0 (or rediss:// for TLS, unix:///path/to/socket)"
    if any(char.isspace() or not char.isprintable() for char in url):
        return f"must be {example}, without spaces"
    parts = urlsplit(url)
    if not parts.scheme or "://" not in url:
        return f"must be {example}"
    if parts.scheme.lower() not in REDIS_SCHEMES:
        return f"must be {example}; {parts.scheme!r} is not redis, rediss or unix"
    if problem := _port_problem(parts):
        return problem
    number = parts.path.strip("/")
    if parts.scheme.lower() != "unix" and number and not number.isdigit():
        return "names a database that is not a number (redis://host:6379/0: database 0)"
    if parts.scheme.lower() == "unix" and not parts.path:
        return "must name the socket's path, like unix:///run/redis.sock"
    return None


def database_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as DATABASE_URL, or None; the URL (it may hold a
    password) is never quoted."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "a URL like postgresql+psycopg://user:password@host:5432/db or sqlite:///path/file.db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"must be {example}"
    except ValueError:  # the only part make_url converts is the port
        return "has a port that is not a number"
    backend = parsed.get_backend_name()
    if backend not in DATABASE_BACKENDS:
        return f"uses {backend!r}, which is not supported; use sqlite or postgresql ({example})"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"has a port out of range (1-65535): {parsed.port}"
    try:
        dialect = parsed.get_dialect()
    except ArgumentError:
        return f"names a driver SQLAlchemy does not know: {parsed.get_driver_name()!r}"
    if getattr(dialect, "is_async", False):
        return f"names an asynchronous driver ({dialect.driver!r}); use {backend}+psycopg"
    module = "sqlite3" if dialect.driver == "pysqlite" else dialect.driver
    if importlib.util.find_spec(module) is None:
        return f"needs the driver {module!r}, which is not installed; use postgresql+psycopg://"
    return None


def _port_problem(parts: Any) -> str | None:
    try:
        parts.port  # noqa: B018  (urlsplit checks the port when it is read)
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    return None


def log_level_problem(level: str) -> str | None:
    """Why ``level`` is not a log level, or None."""
    if level.lower() in LOG_LEVELS:
        return None
    return f"must be debug, info, warning or error, got {_shown(level)}"


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the Settings from ``config_file`` (or $ORCHESTRATOR_CONFIG, or ./config.yaml)."""
    explicit = config_file is not None or CONFIG_ENV in os.environ
    path = config_file or Path(os.environ.get(CONFIG_ENV, "config.yaml"))
    values: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(_read_config(path))
        except yaml.YAMLError as exc:
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


def _read_config(path: Path) -> str:
    """The settings file's text: UTF-8, and at most MAX_CONFIG_FILE_BYTES."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(
            f"{path}: is larger than {MAX_CONFIG_FILE_BYTES} bytes; not a settings file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
        ) from None


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
    elif name:
        where = f"{path}: {name}"
    else:  # a rule between settings: its message names them
        where = str(path)
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(name, list(Settings.model_fields), n=1)
        hint = (
            f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(Settings.model_fields)
        )
        return f"{where}: is not a known setting; {hint}"
    if error["type"] == "value_error":
        return f"{where}: {error['ctx']['error']}"
    return f"{where}: {error['msg']}"
