"""App settings, read from the environment (Function App settings / ``local.settings.json``).

Every setting, its default and whether it is secret is listed in docs/configuration.md (one table).
"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.once import build_once

logger = logging.getLogger("loyaltysync.settings")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("  # an app setting whose value App Service reads from Key Vault
# What an operator may paste by mistake after a service root: the app adds these itself.
DATAVERSE_API_PATH = re.compile(r"/api/data(?:/v\d+(?:\.\d+)?)?/?", re.IGNORECASE)
COMMERCE_API_PATH = re.compile(r"/data/?", re.IGNORECASE)


class ConfigError(ValueError):
    """A setting that is well formed but names something that does not exist (a template, a company): one line
    that names the setting and the fix."""


def root_url(value: str, setting: str, example: str, api_path: re.Pattern[str]) -> str:
    """A service's root URL (scheme and host, no path): ``api_path`` (what the app appends itself, e.g.
    ``/api/data/v9.2``) is stripped with a warning; any other path, a query or credentials are refused with a
    message that names ``setting`` and the fix."""
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.netloc or not parts.hostname:
        raise ValueError(f"{text!r} is not an absolute http(s) URL; set {setting} to {example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"the URL must not carry a user name or password; set {setting} to {example} "
                         "(the app authenticates with its identity)")
    root = f"{parts.scheme}://{parts.netloc}"
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"{text!r}: plain http is only allowed for loopback emulators; "
                         f"set {setting} to https://{parts.netloc}")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r} has a query or fragment (a browser address?); set {setting} to {root}")
    if parts.path.strip("/") and api_path.fullmatch(parts.path):
        logger.warning("%s=%s ends in %s, which the app adds itself; using %s (set %s=%s to silence this warning)",
                       setting, text, parts.path, root, setting, root)
    elif parts.path.strip("/"):
        raise ValueError(f"{text!r} has a path ({parts.path}); {setting} is the root URL of the service: set it to "
                         f"{root}")
    return root


def endpoint_url(value: str | None, setting: str, example: str) -> str | None:
    """A storage endpoint: an absolute http(s) URL (plain http only on loopback, for Azurite)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{text!r} is not an absolute http(s) URL; set {setting} to {example}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"{text!r}: plain http is only allowed for a loopback Azurite; set {setting} to {example}")
    return text.rstrip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    dataverse_url: str = Field(validation_alias="DATAVERSE_URL", description="https://<org>.crm.dynamics.com")
    dataverse_scope: str | None = Field(default=None, validation_alias="DATAVERSE_SCOPE")
    commerce_url: str = Field(validation_alias="COMMERCE_URL", description="https://<env>.operations.dynamics.com")
    commerce_scope: str | None = Field(default=None, validation_alias="COMMERCE_SCOPE")

    credential: Literal["default", "static"] = Field(default="default", validation_alias="SYNC_CREDENTIAL")
    static_token: SecretStr | None = Field(default=None, validation_alias="SYNC_STATIC_TOKEN")

    storage_connection: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SYNC_STORAGE_CONNECTION", "AzureWebJobsStorage")
    )
    storage_table_endpoint: str | None = Field(default=None, validation_alias="SYNC_STORAGE_TABLE_ENDPOINT")
    # validate_default: the check that some storage is set runs on this field (after the two above), so that it is
    # reported with every other missing setting at once (a model validator runs only once every field is valid).
    storage_queue_endpoint: str | None = Field(default=None, validation_alias="SYNC_STORAGE_QUEUE_ENDPOINT",
                                               validate_default=True)
    queue_prefix: str = Field(default="loyaltysync", validation_alias="SYNC_QUEUE_PREFIX", pattern=r"^[a-z0-9][a-z0-9-]{2,30}$")
    table_prefix: str = Field(default="loyaltysync", validation_alias="SYNC_TABLE_PREFIX", pattern=r"^[A-Za-z][A-Za-z0-9]{2,40}$")

    legal_entities: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="SYNC_LEGAL_ENTITIES")
    paused_templates: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="SYNC_PAUSED_TEMPLATES")
    callback_secret: SecretStr | None = Field(default=None, validation_alias="SYNC_CALLBACK_SECRET")
    # Where ``?secret=`` is taken: from business events only (F&O's endpoint takes a URL only; data events come through
    # a Dataverse webhook, which sends the x-loyaltysync-secret header), or from any callback (a data-event webhook
    # that can carry only its URL).
    callback_secret_in_url: Literal["business_events", "any"] = Field(default="business_events",
                                                                       validation_alias="SYNC_CALLBACK_SECRET_IN_URL")
    delete_policy: Literal["delete", "ignore"] = Field(default="delete", validation_alias="SYNC_DELETE_POLICY")
    # A full scan that would delete more than this many rows of a scope, or more than this share of the scope's
    # synced records (judged from ``MASS_DELETE_FLOOR`` deletes on), holds its deletes until an operator approves.
    delete_threshold: int = Field(default=500, ge=0, validation_alias="SYNC_DELETE_THRESHOLD")
    delete_threshold_share: float = Field(default=0.2, gt=0, le=1, validation_alias="SYNC_DELETE_THRESHOLD_SHARE")
    two_way: bool = Field(default=True, validation_alias="SYNC_TWO_WAY")
    conflict_policy: Literal["commerce_wins", "dataverse_wins"] = Field(default="commerce_wins",
                                                                         validation_alias="SYNC_CONFLICT_POLICY")
    reverse_delete_policy: Literal["ignore", "delete"] = Field(default="ignore",
                                                               validation_alias="SYNC_REVERSE_DELETE_POLICY")
    mappings_dir: Path | None = Field(default=None, validation_alias="SYNC_MAPPINGS_DIR")
    # The Dataverse solution ``provision`` creates app-owned tables in (its publisher's prefix must be the templates'
    # schema-name prefix, ``lsync`` in mappings/), and how long it waits for their alternate keys' indexes.
    dataverse_solution: str = Field(default="LoyaltySync", min_length=1, max_length=65, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    validation_alias="SYNC_DATAVERSE_SOLUTION")
    provision_wait_s: float = Field(default=1800.0, gt=0, validation_alias="SYNC_PROVISION_WAIT_S")

    http_connect_timeout_s: float = Field(default=5.0, gt=0, validation_alias="SYNC_HTTP_CONNECT_TIMEOUT_S")
    http_read_timeout_s: float = Field(default=30.0, gt=0, validation_alias="SYNC_HTTP_READ_TIMEOUT_S")
    http_max_attempts: int = Field(default=5, ge=1, le=20, validation_alias="SYNC_HTTP_MAX_ATTEMPTS")
    http_backoff_base_s: float = Field(default=0.5, gt=0, le=30, validation_alias="SYNC_HTTP_BACKOFF_BASE_S")
    http_retry_budget_s: float = Field(default=120.0, gt=0, validation_alias="SYNC_HTTP_RETRY_BUDGET_S")
    dataverse_client_ids: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                                 validation_alias="SYNC_DATAVERSE_CLIENT_IDS")
    dataverse_window_s: float = Field(default=300.0, gt=0, le=3600, validation_alias="SYNC_DATAVERSE_WINDOW_S")
    concurrency_start: int = Field(default=2, ge=1, le=52, validation_alias="SYNC_CONCURRENCY_START")
    max_concurrency: int = Field(default=52, ge=1, le=52, validation_alias="SYNC_MAX_CONCURRENCY")
    # Processes that use one Dataverse identity at the same time share its budget through Table Storage
    # (shared/http/budget.py): each takes 1/N. The heartbeat defaults to a twentieth of the window (15 s).
    shared_budget: bool = Field(default=True, validation_alias="SYNC_SHARED_BUDGET")
    shared_budget_heartbeat_s: float | None = Field(default=None, gt=0, le=300,
                                                    validation_alias="SYNC_SHARED_BUDGET_HEARTBEAT_S")
    bulk_size: int = Field(default=200, ge=1, le=1000, validation_alias="SYNC_BULK_SIZE")
    dataverse_page_size: int = Field(default=5000, ge=1, le=5000, validation_alias="SYNC_DATAVERSE_PAGE_SIZE")
    run_lease_s: int = Field(default=900, ge=5, validation_alias="SYNC_RUN_LEASE_S")
    # Keys per checkpointed range of a full scan, and whether the timer fans ranges out through the pages queue.
    page_size: int = Field(default=5000, ge=10, le=10_000, validation_alias="SYNC_PAGE_SIZE")
    fan_out: bool = Field(default=True, validation_alias="SYNC_FAN_OUT")
    # Hash buckets per scope for synced states; fix it before the first run (a change re-syncs once).
    state_buckets: int = Field(default=16, ge=1, le=256, validation_alias="SYNC_STATE_BUCKETS")
    # Guard rails: a full scan whose first N records all fail with the same error class stops as failed instead
    # of parking every record (0: park them all); a passed preflight is trusted this long per process.
    fail_fast_records: int = Field(default=20, ge=0, validation_alias="SYNC_FAIL_FAST_RECORDS")
    preflight_cache_s: float = Field(default=600.0, ge=0, validation_alias="SYNC_PREFLIGHT_CACHE_S")
    # Auto-pause: more than N application failures (parked records) of one template within M minutes pause it.
    auto_pause_failures: int = Field(default=100, ge=0, validation_alias="SYNC_AUTO_PAUSE_FAILURES")
    auto_pause_minutes: float = Field(default=15.0, gt=0, le=1440, validation_alias="SYNC_AUTO_PAUSE_MINUTES")
    # A template's refreshes (scans asked for by callbacks naming no record found) start at most once per this long.
    refresh_min_interval_s: float = Field(default=300.0, ge=0, le=86_400, validation_alias="SYNC_REFRESH_MIN_INTERVAL_S")

    # Points balances (aggregate templates, docs/domain-notes.md §11, inferred): the ExpirationDate a tenant stores for
    # "never expires" (besides the empty date 1900-01-01 and dates from 2154-12-31 on, which always count as never),
    # the time zone of "today", the expiring-soon horizon, the incremental pass's overlap (empty: the template's
    # overlap_minutes) and the longest or-ed $filter of a batched re-read.
    balance_never_expires: date = Field(default=date(1900, 1, 1), validation_alias="SYNC_BALANCE_NEVER_EXPIRES")
    balance_timezone: str = Field(default="UTC", validation_alias="SYNC_BALANCE_TIMEZONE")
    balance_horizon_days: int = Field(default=30, ge=0, le=3660, validation_alias="SYNC_BALANCE_HORIZON_DAYS")
    balance_overlap_minutes: int | None = Field(default=None, ge=0, le=10_080,
                                                validation_alias="SYNC_BALANCE_OVERLAP_MINUTES")
    balance_filter_chars: int = Field(default=1800, ge=200, le=30_000, validation_alias="SYNC_BALANCE_FILTER_CHARS")

    @field_validator("balance_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if value.strip().upper() == "UTC":
            return "UTC"
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is no IANA time zone; set SYNC_BALANCE_TIMEZONE to e.g. UTC or "
                             "Europe/Berlin") from None
        return value.strip()

    @field_validator("dataverse_client_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("legal_entities", "paused_templates", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("legal_entities")
    @classmethod
    def _company_ids(cls, value: list[str]) -> list[str]:
        """dataAreaIds: 1 to 4 letters or digits (whether F&O has them is checked by the preflight)."""
        for company in value:
            if not re.fullmatch(r"[a-z0-9]{1,4}", company):
                raise ValueError(f"{company!r} is not a legal entity id (1 to 4 letters or digits, e.g. usmf); set "
                                 "SYNC_LEGAL_ENTITIES to company ids separated by commas")
        return value

    @field_validator("dataverse_url")
    @classmethod
    def _dataverse_url(cls, value: str) -> str:
        return root_url(value, "DATAVERSE_URL", "https://<org>.crm.dynamics.com", DATAVERSE_API_PATH)

    @field_validator("commerce_url")
    @classmethod
    def _commerce_url(cls, value: str) -> str:
        return root_url(value, "COMMERCE_URL", "https://<env>.operations.dynamics.com", COMMERCE_API_PATH)

    @field_validator("storage_table_endpoint")
    @classmethod
    def _table_endpoint(cls, value: str | None) -> str | None:
        return endpoint_url(value, "SYNC_STORAGE_TABLE_ENDPOINT", "https://<account>.table.core.windows.net")

    @field_validator("storage_queue_endpoint")
    @classmethod
    def _queue_endpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "storage_connection" in info.data and info.data["storage_connection"] is None and (
                value is None or info.data.get("storage_table_endpoint") is None):
            raise ValueError(STORAGE_MISSING)
        return endpoint_url(value, "SYNC_STORAGE_QUEUE_ENDPOINT", "https://<account>.queue.core.windows.net")

    @field_validator("callback_secret", "static_token", "storage_connection")
    @classmethod
    def _key_vault_reference_resolved(cls, value: SecretStr | None) -> SecretStr | None:
        """App Service puts a Key Vault reference it could not resolve into the setting as it is: never use that
        text (it names the vault and the secret, it is no secret) as the value."""
        if value is not None and value.get_secret_value().lstrip().startswith(KEY_VAULT_REFERENCE):
            raise ValueError("a Key Vault reference App Service could not resolve: check that the secret exists in "
                             "the vault and that the app's identity has Key Vault Secrets User on it (the portal's "
                             "Environment variables blade shows the reference's status)")
        return value

    @model_validator(mode="after")
    def _static_only_on_loopback(self) -> Settings:
        if self.credential == "static":
            hosts = {urlsplit(self.dataverse_url).hostname, urlsplit(self.commerce_url).hostname}
            if not hosts <= LOOPBACK_HOSTS:
                raise ValueError("SYNC_CREDENTIAL=static is for the local emulators only (loopback URLs)")
            if self.static_token is None:
                raise ValueError("SYNC_CREDENTIAL=static needs SYNC_STATIC_TOKEN")
        return self

    @property
    def dataverse_token_scope(self) -> str:
        # Scope = resource URL + /.default, no slash before it (docs/protocol-notes.md §1.1).
        return self.dataverse_scope or f"{self.dataverse_url}/.default"

    @property
    def commerce_token_scope(self) -> str:
        return self.commerce_scope or f"{self.commerce_url}/.default"


STORAGE_MISSING = ("AzureWebJobsStorage: required; set it (or SYNC_STORAGE_CONNECTION) to the storage account's "
                   "connection string (UseDevelopmentStorage=true for Azurite), or set both SYNC_STORAGE_TABLE_ENDPOINT "
                   "and SYNC_STORAGE_QUEUE_ENDPOINT (managed identity)")
_SECRET_SETTINGS = {"SYNC_STATIC_TOKEN", "SYNC_STORAGE_CONNECTION", "AzureWebJobsStorage", "SYNC_CALLBACK_SECRET"}


def describe(exc: ValidationError) -> list[str]:
    """One line per invalid setting, ``<SETTING>: <what is wrong and the fix>``, never echoing a secret."""
    examples = {str(f.validation_alias): f.description for f in Settings.model_fields.values()
                if isinstance(f.validation_alias, str) and f.description}
    lines: list[str] = []
    for error in exc.errors():
        setting = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            example = examples.get(setting)
            message = f"required; set it{f' to {example}' if example else ''}"
        elif error["type"] != "value_error" and setting and setting not in _SECRET_SETTINGS:
            message = f"{message} (got {error['input']!r}); fix the setting"
        lines.append(message if message == STORAGE_MISSING or not setting else f"{setting}: {message}")
    return lines


@build_once
def get_settings() -> Settings:
    return Settings()  # type: ignore[call-arg]  # required values come from the environment
