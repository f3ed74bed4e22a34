"""Spans of runs and key ranges, through the real timer and queue triggers (``function_app``) against the
emulators and Azurite: ``sync.run`` per scope with its run id and correlation id, ``sync.range`` per key-range
task naming its run."""

from __future__ import annotations

import logging

import pytest
import requests

from devtools.functions_host import QueuePump, invoke_timer
from shared.runtime import Runtime
from shared.sync.runs import DIRECTION_OUT
from tests.configured import runtime_with
from tests.e2e.stores import Stores
from tests.otel import Telemetry


def timer(name: str) -> None:
    import function_app

    invoke_timer(function_app.app, name)


def test_a_timer_run_in_place_is_one_run_span_with_its_run_id(runtime: Runtime, telemetry: Telemetry,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = runtime_with(monkeypatch, SYNC_FAN_OUT="false")
    timer("timer_loyalty_cards")
    [span] = telemetry.spans("sync.run")
    mark = runtime.state.watermarks.get("loyalty_cards", DIRECTION_OUT, "all")
    assert span.attributes is not None
    assert {k: span.attributes[k] for k in ("template", "direction", "scope", "run_id", "status")} == {
        "template": "loyalty_cards", "direction": DIRECTION_OUT, "scope": "all", "run_id": mark.last_run_id,
        "status": "completed"}


def test_a_run_span_carries_the_correlation_id_of_the_run_s_log_lines(runtime: Runtime, telemetry: Telemetry,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    runtime_with(monkeypatch, SYNC_FAN_OUT="false")
    with caplog.at_level(logging.INFO, logger="loyaltysync.sync"):
        timer("timer_loyalty_cards")
    [span] = telemetry.spans("sync.run")
    [finished] = [r for r in caplog.records if r.getMessage().startswith("run finished")]
    assert (span.attributes or {})["correlation_id"] == finished.sync["correlation_id"]  # type: ignore[attr-defined]


def test_a_company_specific_template_runs_one_span_per_legal_entity(runtime: Runtime, telemetry: Telemetry,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = runtime_with(monkeypatch, SYNC_FAN_OUT="false")
    timer("timer_loyalty_levels")
    scopes = sorted(str((s.attributes or {})["scope"]) for s in telemetry.spans("sync.run"))
    assert scopes == sorted(m.scope for m in runtime.state.watermarks.all() if m.template == "loyalty_levels")
    assert len(scopes) > 1


def test_each_fanned_out_key_range_is_a_range_span_naming_its_run(runtime: Runtime, pump: QueuePump,
                                                                  telemetry: Telemetry) -> None:
    timer("timer_loyalty_cards")
    [run] = telemetry.spans("sync.run")
    assert run.attributes is not None and run.attributes["status"] != "failed"
    pump.drain()
    ranges = telemetry.spans("sync.range")
    assert ranges and {(s.attributes or {})["run_id"] for s in ranges} == {run.attributes["run_id"]}


def test_a_run_stopped_by_fail_fast_is_an_error_span(runtime: Runtime, stores: Stores, telemetry: Telemetry,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail fast ends the run as failed without raising: the span says so all the same."""
    from opentelemetry.trace import StatusCode

    runtime_with(monkeypatch, SYNC_FAN_OUT="false", SYNC_FAIL_FAST_RECORDS="5")
    refusal = {"kind": "status", "status": 400, "code": "0x80044331", "message": "A validation error occurred."}
    requests.post(f"{stores.dataverse_url}/_emulator/faults", timeout=10,
                  json={"rules": [{**refusal, "method": "POST"}, {**refusal, "method": "PATCH"}]}).raise_for_status()
    timer("timer_loyalty_cards")
    [span] = telemetry.spans("sync.run")
    assert ((span.attributes or {})["status"], span.status.status_code) == ("failed", StatusCode.ERROR)
