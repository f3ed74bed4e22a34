"""Turn the Azure Monitor exporter on, once per process, only when Application Insights is configured.

Microsoft's Functions guidance (Use OpenTelemetry with Azure Functions): ``"telemetryMode": "OpenTelemetry"``
in host.json makes the host emit OpenTelemetry; ``APPLICATIONINSIGHTS_CONNECTION_STRING`` says where to; the
worker's own telemetry comes from ``configure_azure_monitor()`` in the app (``azure-monitor-opentelemetry``).
With Microsoft Entra ingestion the host and the worker are configured separately: the host reads
``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (``Authorization=AAD`` and, for a user-assigned identity,
``ClientId=<its client id>``); the worker gets the same managed identity here as a ``ManagedIdentityCredential``
(Microsoft Entra authentication for Application Insights). Without a connection string (locally, in tests)
nothing is exported and the instruments are OpenTelemetry's no-ops.

When the Python worker already installed an SDK provider (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``
makes it configure Azure Monitor itself, per the same article) it is used as it is: configuring a second one
would export everything twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from azure.core.credentials import TokenCredential
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.observability import log
from shared.telemetry import metrics, tracing

logger = logging.getLogger("loyaltysync.telemetry")

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
# The distro's automatic instrumentations this app has no use for (it runs none of these frameworks), and the
# Azure SDK's: every Table Storage call as a dependency would drown the sync's own spans (inferred: a volume
# choice, not a documented requirement). ``requests`` stays on: calls to Dataverse and Commerce become
# dependencies under the app's spans.
INSTRUMENTATIONS_OFF = ("azure_sdk", "django", "fastapi", "flask", "psycopg2")


AZURE_SDK_LOG_LEVEL = "SYNC_AZURE_SDK_LOG_LEVEL"
# The Azure SDK's loggers: ``azure`` is the parent of them all; the HTTP logging policy logs every request's URL
# and headers at INFO (a Table Storage URL holds the record's key: card numbers). Named too, in case a handler
# or the host set a level on it directly.
AZURE_SDK_LOGGERS = ("azure", "azure.core.pipeline.policies.http_logging_policy")
AZURE_SDK_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_AZURE_SDK_LOG_LEVEL = "WARNING"


class TelemetryError(ValueError):
    """A telemetry setting cannot be used (the message names it)."""


class EntraAuthentication(BaseModel):
    """``Authorization=AAD[;ClientId=<guid>]``: ingestion with the app's managed identity (system-assigned without
    a ClientId, else the user-assigned identity with that client id)."""

    model_config = ConfigDict(frozen=True)
    authorization: str
    client_id: str | None = Field(default=None, min_length=1)

    @field_validator("authorization")
    @classmethod
    def _aad(cls, value: str) -> str:
        if value.upper() != "AAD":
            raise ValueError("Authorization must be AAD (Microsoft Entra ID)")
        return "AAD"


def parse_authentication_string(text: str) -> EntraAuthentication:
    """``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` as Microsoft documents it: ``;``-separated ``name=value``
    pairs, names case-insensitive."""
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise TelemetryError(f"{AUTHENTICATION_STRING}: {part!r} is not name=value")
        pairs[name.strip().lower()] = value.strip()
    try:
        return EntraAuthentication(authorization=pairs.get("authorization", ""), client_id=pairs.get("clientid"))
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise TelemetryError(f"{AUTHENTICATION_STRING}: {problems} (expected Authorization=AAD;ClientId=<id>)") from None


class TelemetryConfig(BaseModel):
    """What ``configure`` needs, read from the app settings."""

    model_config = ConfigDict(frozen=True)
    connection_string: str | None = None
    authentication: EntraAuthentication | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> TelemetryConfig:
        connection = (environ.get(CONNECTION_STRING) or "").strip() or None
        auth_text = (environ.get(AUTHENTICATION_STRING) or "").strip()
        return cls(connection_string=connection,
                   authentication=parse_authentication_string(auth_text) if auth_text else None)

    @property
    def exports(self) -> bool:
        return self.connection_string is not None

    def credential(self) -> TokenCredential | None:
        if self.authentication is None:
            return None
        from azure.identity import ManagedIdentityCredential

        if self.authentication.client_id:
            return ManagedIdentityCredential(client_id=self.authentication.client_id)
        return ManagedIdentityCredential()

    def azure_monitor_options(self) -> dict[str, Any]:
        """The keyword arguments of ``configure_azure_monitor``."""
        options: dict[str, Any] = {
            "connection_string": self.connection_string,
            "instrumentation_options": {name: {"enabled": False} for name in INSTRUMENTATIONS_OFF},
            # The worker's log lines reach Application Insights through the host already (they would be doubled);
            # the distro takes records only from this logger, which nothing logs to.
            "logger_name": "loyaltysync.telemetry.exported",
        }
        credential = self.credential()
        if credential is not None:
            options["credential"] = credential
        return options


_lock = threading.Lock()
_configured: bool | None = None


def configure_azure_sdk_logging(environ: Mapping[str, str] | None = None) -> int:
    """Set the Azure SDK's loggers to ``SYNC_AZURE_SDK_LOG_LEVEL`` (default WARNING, as the command line does):
    at INFO its HTTP logging policy writes a line per storage request, each with a URL holding record keys
    (about 33,000 lines in 8 minutes of a demo). An unknown value keeps WARNING and says so in the log (a
    setting of the log must not stop the app from starting). Returns the level set."""
    import os

    env = os.environ if environ is None else environ
    text = (env.get(AZURE_SDK_LOG_LEVEL) or "").strip().upper() or DEFAULT_AZURE_SDK_LOG_LEVEL
    if text not in AZURE_SDK_LOG_LEVELS:
        log(logger, logging.WARNING, "unknown Azure SDK log level; WARNING is used", setting=AZURE_SDK_LOG_LEVEL,
            value=text[:40], allowed=",".join(AZURE_SDK_LOG_LEVELS))
        text = DEFAULT_AZURE_SDK_LOG_LEVEL
    level = logging.getLevelName(text)
    for name in AZURE_SDK_LOGGERS:
        logging.getLogger(name).setLevel(level)
    return int(level)


def _sdk_provider_installed() -> bool:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import MeterProvider

    return isinstance(otel_metrics.get_meter_provider(), MeterProvider)


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Once per process: export to Azure Monitor when a connection string is set. True when telemetry is exported
    (by this call, an earlier one, or the Functions worker); False when nothing is configured."""
    global _configured
    import os

    with _lock:
        if _configured is not None:
            return _configured
        config = TelemetryConfig.from_environ(os.environ if environ is None else environ)
        if not config.exports:
            _configured = False
            return False
        if not _sdk_provider_installed():
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure_azure_monitor(**config.azure_monitor_options())
        metrics.bind()
        tracing.bind()
        _configured = True
    log(logger, logging.INFO, "telemetry exported to Azure Monitor",
        authentication="entra" if config.authentication else "connection string")
    return True
