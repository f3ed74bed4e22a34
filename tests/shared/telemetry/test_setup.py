"""Exporter set-up: nothing is exported without a connection string; the Entra authentication string Microsoft
documents becomes the managed identity the exporter signs in with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from azure.identity import ManagedIdentityCredential

from shared.telemetry.setup import TelemetryConfig, TelemetryError, parse_authentication_string

CONNECTION = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://example.invalid/"


def test_without_a_connection_string_nothing_is_exported() -> None:
    assert TelemetryConfig.from_environ({}).exports is False


def test_a_connection_string_turns_the_exporter_on_without_a_credential() -> None:
    options = TelemetryConfig.from_environ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION}).azure_monitor_options()
    assert options["connection_string"] == CONNECTION
    assert "credential" not in options


@pytest.mark.parametrize("text", ["Authorization=AAD;ClientId=abc-123", "ClientId=abc-123;Authorization=AAD"])
def test_an_entra_authentication_string_with_a_client_id_signs_in_as_that_managed_identity(text: str) -> None:
    """In either order: Microsoft's documentation writes Authorization first, infra/main.bicep ClientId first."""
    config = TelemetryConfig.from_environ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION,
                                           "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": text})
    assert config.authentication is not None and config.authentication.client_id == "abc-123"
    assert isinstance(config.azure_monitor_options()["credential"], ManagedIdentityCredential)


def test_an_entra_authentication_string_without_a_client_id_is_the_system_assigned_identity() -> None:
    auth = parse_authentication_string("authorization=aad")
    assert (auth.authorization, auth.client_id) == ("AAD", None)


@pytest.mark.parametrize("text", ["Authorization=Key", "ClientId=abc", "Authorization"])
def test_an_authentication_string_that_is_not_entra_is_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(TelemetryError, match="APPLICATIONINSIGHTS_AUTHENTICATION_STRING"):
        parse_authentication_string(text)


def test_the_instrumentations_the_app_does_not_use_are_off() -> None:
    options = TelemetryConfig(connection_string=CONNECTION).azure_monitor_options()
    assert options["instrumentation_options"]["azure_sdk"] == {"enabled": False}
    assert "requests" not in options["instrumentation_options"]  # calls to Dataverse and Commerce stay traced


def test_the_functions_host_emits_opentelemetry() -> None:
    """host.json's root ``telemetryMode`` (Microsoft: Use OpenTelemetry with Azure Functions)."""
    host = json.loads((Path(__file__).resolve().parents[3] / "host.json").read_text(encoding="utf-8"))
    assert host["telemetryMode"] == "OpenTelemetry"


def test_with_a_connection_string_the_process_exports_through_the_azure_monitor_distro() -> None:
    """In a fresh interpreter (a real set-up installs process-wide providers): configure() turns the exporter on,
    and the app's instruments record through the SDK it installed."""
    code = ("from opentelemetry import metrics; from opentelemetry.sdk.metrics import MeterProvider; "
            "from shared.telemetry import setup; "
            "print(setup.configure(), setup.configure(), isinstance(metrics.get_meter_provider(), MeterProvider))")
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION, "PATH": os.environ.get("PATH", ""),
           "TMPDIR": tempfile.gettempdir()}
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "True", "True"]


def test_without_a_connection_string_the_process_installs_no_provider() -> None:
    code = ("from opentelemetry import metrics; from opentelemetry.sdk.metrics import MeterProvider; "
            "from shared.telemetry import setup; "
            "print(setup.configure(), isinstance(metrics.get_meter_provider(), MeterProvider))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3],
                         env={"PATH": os.environ.get("PATH", "")}, capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.split() == ["False", "False"]
