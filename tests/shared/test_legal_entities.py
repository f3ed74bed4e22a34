"""Company-specific templates when F&O's LegalEntities cannot be read and SYNC_LEGAL_ENTITIES is not set: one
clear error naming both, recorded as a failed run that ``status`` shows (the CLI side is in test_cli.py)."""

from __future__ import annotations

import azure.functions as func
import pytest
import requests

from devtools.functions_host import invoke_timer
from shared.commerce.client import CommerceClient, LegalEntitiesError
from shared.http import HttpCore, RetryPolicy
from shared.runtime import Runtime
from tests.e2e.stores import Stores
from tests.scripted_server import Answer, ScriptedServer, StaticCredential


def app() -> func.FunctionApp:
    import function_app

    return function_app.app


def fail_legal_entities_read(stores: Stores) -> None:
    rule = {"route": "LegalEntities", "kind": "status", "status": 403}
    requests.post(f"{stores.commerce_url}/_emulator/faults", json={"rules": [rule]}, timeout=10).raise_for_status()


def assert_names_the_entity_set_and_the_setting(text: str) -> None:
    assert "LegalEntities" in text and "SYNC_LEGAL_ENTITIES" in text


@pytest.mark.parametrize("fan_out", [True, False])
def test_the_timer_fails_with_the_clear_error_and_records_the_failed_run(runtime: Runtime, stores: Stores,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        fan_out: bool) -> None:
    monkeypatch.setattr(runtime.settings, "fan_out", fan_out)
    fail_legal_entities_read(stores)
    with pytest.raises(LegalEntitiesError) as caught:
        invoke_timer(app(), "timer_loyalty_levels")
    assert_names_the_entity_set_and_the_setting(str(caught.value))
    mark = runtime.state.watermarks.get("loyalty_levels", "fo_to_dataverse", "all")
    assert (mark.last_status, mark.last_error, mark.run_seq) == ("failed", str(caught.value), 0)


def test_a_template_that_is_not_company_specific_never_reads_legal_entities(runtime: Runtime, stores: Stores) -> None:
    fail_legal_entities_read(stores)
    [summary] = runtime.scan("loyalty_cards").run()
    assert summary.status == "completed"


def test_legal_entities_that_list_no_company_are_the_same_clear_error(server: ScriptedServer) -> None:
    server.answers.append(Answer(200, {"value": []}))
    core = HttpCore(server.url, StaticCredential(), "https://fo.example/.default", service="commerce",
                    retry=RetryPolicy(max_attempts=1, budget_s=1))
    with pytest.raises(LegalEntitiesError) as caught:
        CommerceClient(core).legal_entities()
    assert_names_the_entity_set_and_the_setting(str(caught.value))
    assert "listed no companies" in str(caught.value)
