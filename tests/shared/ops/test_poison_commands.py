"""Poison messages from the command line (``poison list|show|requeue``, ``status``) and the ops endpoints,
against the emulators and Azurite; one message poisoned by the host's retries end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
import requests

from devtools.azurite import Azurite
from devtools.functions_host import MAX_DEQUEUE_COUNT, QueuePump, invoke_http
from shared.cli import main
from shared.messages.events import WorkItem
from shared.runtime import Runtime
from shared.state.queues import QueueKind
from tests.configured import runtime_with
from tests.e2e.stores import Stores
from tests.shared.ops.poison_queues import poison_as_host

TEMPLATE = "loyalty_cards"
ITEM = {"template": TEMPLATE, "key": {"CardNumber": "LC-1"}, "event_id": "E-1"}


def cli(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> Any:
    assert main(["--json", *argv]) == code
    return json.loads(capsys.readouterr().out)


def call(name: str, method: str = "GET", body: Any = None, params: dict[str, str] | None = None,
         **route: str) -> tuple[int, Any]:
    import function_app

    raw = b"" if body is None else json.dumps(body).encode()
    req = func.HttpRequest(method, "http://localhost/api/ops", body=raw, params=params or {}, route_params=route)
    response = invoke_http(function_app.app, name, req)
    return response.status_code, json.loads(response.get_body())


def test_status_counts_each_templates_poison_messages(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    poison_as_host(runtime.queues, TEMPLATE, QueueKind.CALLBACKS, ITEM)
    poison_as_host(runtime.queues, TEMPLATE, QueueKind.PAGES, {"n": 1})
    rows = cli(capsys, "status")
    assert {r["template"]: r["poison"] for r in rows} == {"loyalty_cards": 2, "loyalty_levels": 0,
                                                          "loyalty_reward_points": 0, "loyalty_card_tiers": 0,
                                                          "loyalty_card_balances": 0}


def test_status_without_json_names_the_poison_messages_on_stderr(runtime: Runtime,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    poison_as_host(runtime.queues, TEMPLATE, QueueKind.CALLBACKS, ITEM)
    main(["status"])
    assert "poison messages: loyalty_cards 1; see python -m shared.cli poison list" in capsys.readouterr().err


def test_poison_list_shows_every_templates_messages_with_queue_and_body(runtime: Runtime,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    message_id = poison_as_host(runtime.queues, "loyalty_levels", QueueKind.PAGES, {"n": 1})
    [row] = cli(capsys, "poison", "list")
    assert (row["template"], row["queue"], row["id"], row["body"]) == ("loyalty_levels", "pages", message_id,
                                                                       '{"n": 1}')


def test_poison_list_of_one_queue_kind_leaves_the_other_out(runtime: Runtime,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    poison_as_host(runtime.queues, TEMPLATE, QueueKind.PAGES, {"n": 1})
    assert cli(capsys, "poison", "list", "--queue", "callbacks") == []


def test_poison_show_prints_the_decoded_body_insertion_time_and_dequeue_count(
        runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    message_id = poison_as_host(runtime.queues, TEMPLATE, QueueKind.CALLBACKS, ITEM)
    shown = cli(capsys, "poison", "show", TEMPLATE, message_id)
    assert shown["body"] == ITEM and shown["dequeue_count"] == 0 and shown["inserted_on"]


def test_poison_show_of_an_unknown_id_exits_1(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["poison", "show", TEMPLATE, "no-such-id"]) == 1
    assert "no poison message 'no-such-id'" in capsys.readouterr().err


def test_poison_requeue_by_id_finds_the_message_in_either_poison_queue(runtime: Runtime,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    message_id = poison_as_host(runtime.queues, TEMPLATE, QueueKind.PAGES, {"n": 1})
    [result] = cli(capsys, "poison", "requeue", TEMPLATE, message_id)
    assert (result["outcome"], result["kind"]) == ("requeued", "pages")
    assert runtime.queues.backlog(TEMPLATE)["pages"] == {"queued": 1, "poison": 0}


def test_poison_requeue_of_a_message_already_requeued_exits_1_and_sends_nothing(
        runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    message_id = poison_as_host(runtime.queues, TEMPLATE, QueueKind.CALLBACKS, ITEM)
    cli(capsys, "poison", "requeue", TEMPLATE, message_id)
    [result] = cli(capsys, "poison", "requeue", TEMPLATE, message_id, code=1)
    assert result["outcome"] == "not_found"
    assert runtime.queues.backlog(TEMPLATE)["callbacks"]["queued"] == 1


def test_poison_requeue_without_ids_or_all_is_a_usage_error(runtime: Runtime,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["poison", "requeue", TEMPLATE])
    assert exited.value.code == 2 and "--all" in capsys.readouterr().err


def test_the_endpoints_list_show_and_requeue_poison_messages(runtime: Runtime) -> None:
    message_id = poison_as_host(runtime.queues, TEMPLATE, QueueKind.CALLBACKS, ITEM)
    status, listed = call("ops_poison", params={"template": TEMPLATE})
    assert status == 200 and [m["id"] for m in listed["value"]] == [message_id]
    assert listed["queues"][TEMPLATE]["callbacks"]["poison"] == 1
    status, shown = call("ops_poison_one", template=TEMPLATE, id=message_id)
    assert status == 200 and json.loads(shown["body"]) == ITEM
    status, body = call("ops_poison_requeue", "POST", {"template": TEMPLATE, "ids": [message_id]})
    assert status == 200 and [r["outcome"] for r in body["value"]] == ["requeued"]
    assert call("ops_poison_one", template=TEMPLATE, id=message_id)[0] == 404


def test_the_requeue_endpoint_without_ids_or_all_is_a_400(runtime: Runtime) -> None:
    status, body = call("ops_poison_requeue", "POST", {"template": TEMPLATE})
    assert status == 400 and "'all': true" in body["error"]


def test_the_status_endpoint_counts_poison_messages_per_queue(runtime: Runtime) -> None:
    poison_as_host(runtime.queues, TEMPLATE, QueueKind.PAGES, {"n": 1})
    status, body = call("ops_status")
    assert status == 200 and body["queues"][TEMPLATE]["pages"] == {"queued": 0, "poison": 1}


@pytest.fixture()
def retrying_pump(runtime: Runtime, azurite: Azurite) -> Iterator[QueuePump]:
    """The host's queue listener, a failed message visible again after a second: poisoned in about five."""
    import function_app

    pump = QueuePump(function_app.app, azurite.connection_string, visibility_timeout_s=1)
    yield pump
    pump.stop()


def test_a_callback_the_host_poisoned_is_requeued_and_lands_once_the_cause_is_gone(
        runtime: Runtime, stores: Stores, retrying_pump: QueuePump, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    runtime = runtime_with(monkeypatch, SYNC_HTTP_MAX_ATTEMPTS="1")
    card = str(stores.commerce_rows(TEMPLATE)[0]["CardNumber"])
    requests.post(f"{stores.commerce_url}/_emulator/faults", timeout=10, json={"rules": [
        {"route": "odata.resource", "method": "GET", "kind": "status", "status": 503,
         "times": MAX_DEQUEUE_COUNT}]}).raise_for_status()
    runtime.queues.send(WorkItem(template=TEMPLATE, key={"CardNumber": card}, event_id="E-9", control_number=0,
                                 business_event_id="RetailLoyaltyCardChangedBusinessEvent",
                                 received_at="2026-01-01T00:00:00+00:00", correlation_id="c-9"))
    retrying_pump.drain(allow_failures=True)
    [listed] = cli(capsys, "poison", "list")
    assert json.loads(listed["body"])["key"] == {"CardNumber": card} and stores.dataverse_writes() == 0
    cli(capsys, "poison", "requeue", TEMPLATE, "--all")
    assert retrying_pump.drain() == 1
    assert stores.dataverse_writes() == 1 and runtime.queues.backlog(TEMPLATE)["callbacks"]["poison"] == 0
