"""function_app.py: what it registers, and every function invoked through the real app object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ServiceRequestError

from devtools.functions_host import QueuePump, functions, invoke_http, invoke_timer
from shared.runtime import Runtime
from shared.state.queues import QueueKind
from tests.builders import activation_test_event, as_body, business_event
from tests.e2e.stores import Stores
from tests.otel import Telemetry

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = ["loyalty_card_tiers", "loyalty_cards", "loyalty_levels", "loyalty_reward_points"]
PER_TEMPLATE = ["timer", "timer_inbound", "callback", "worker", "pages"]
OPS = ["ops_status", "ops_parked", "ops_conflicts", "ops_parked_one", "ops_replay", "ops_pause", "ops_resume",
       "ops_reconcile", "ops_sync", "ops_resync", "ops_approve_deletes", "ops_break_lease", "ops_poison",
       "ops_poison_one", "ops_poison_requeue", "ops_check"]
AGGREGATES = ["loyalty_card_balances"]  # one-way: an incremental pass instead of the Dataverse -> Commerce timer
PER_AGGREGATE = ["timer", "timer_incremental", "callback", "worker", "pages"]
EXPECTED = sorted([f"{kind}_{t}" for t in TEMPLATES for kind in PER_TEMPLATE]
                  + [f"{kind}_{t}" for t in AGGREGATES for kind in PER_AGGREGATE]
                  + ["callback_unknown_template", "timer_retry_parked", "timer_refresh_pending", "timer_telemetry_sample",
                     *OPS, *(f"entra_{name}" for name in OPS), "dashboard", "dashboard_action"])


def app() -> func.FunctionApp:
    import function_app

    return function_app.app


def post(route: str, body: bytes, **route_params: str) -> func.HttpRequest:
    return func.HttpRequest("POST", f"http://localhost/api/{route}", body=body, route_params=route_params,
                            headers={"Content-Type": "application/json"})


def answer(response: func.HttpResponse) -> tuple[int, dict[str, object]]:
    return response.status_code, json.loads(response.get_body())


def raising(error: Exception) -> Any:
    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise error

    return fail


def test_a_fresh_interpreter_registers_exactly_the_expected_functions() -> None:
    code = ("import json, function_app; "
            "print(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env={})
    assert json.loads(out.stdout) == EXPECTED


def _sdk_log_levels(env: dict[str, str]) -> list[str]:
    """The effective levels of the Azure SDK's loggers in a fresh interpreter that loaded the app object after
    setting the root logger to INFO, as the Functions Python worker does."""
    code = ("import json, logging; logging.getLogger().setLevel(logging.INFO); import function_app; "
            "print(json.dumps([logging.getLevelName(logging.getLogger(n).getEffectiveLevel()) for n in "
            "('azure', 'azure.core.pipeline.policies.http_logging_policy', 'azure.data.tables')]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=env)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_inside_the_app_the_azure_sdk_http_logging_is_at_warning() -> None:
    """The Functions worker logs at INFO: the SDK's HTTP policy would write every storage URL (with its keys)."""
    assert _sdk_log_levels({}) == ["WARNING"] * 3


@pytest.mark.parametrize(("value", "level"), [("INFO", "INFO"), ("debug", "DEBUG"), ("loud", "WARNING")])
def test_sync_azure_sdk_log_level_turns_the_sdk_logging_up(value: str, level: str) -> None:
    assert _sdk_log_levels({"SYNC_AZURE_SDK_LOG_LEVEL": value}) == [level] * 3


def test_the_app_indexes_the_templates_of_sync_mappings_dir(tmp_path: Path) -> None:
    """A fourth template is a file: copied under another name into SYNC_MAPPINGS_DIR, it gets its triggers."""
    card = json.loads((REPO / "mappings" / "loyalty_cards.json").read_text(encoding="utf-8"))
    (tmp_path / "gift_cards.json").write_text(json.dumps({**card, "name": "gift_cards"}), encoding="utf-8")
    code = ("import json, function_app; "
            "print(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"SYNC_MAPPINGS_DIR": str(tmp_path)})
    names = set(json.loads(out.stdout))
    assert {"timer_gift_cards", "callback_gift_cards", "worker_gift_cards"} <= names
    assert not any(name.endswith("loyalty_cards") for name in names)


def test_each_template_has_a_timer_on_its_schedule_and_a_post_route() -> None:
    registered = functions(app())
    assert registered["timer_loyalty_cards"].get_trigger().schedule == "0 */15 * * * *"
    trigger = registered["callback_loyalty_levels"].get_trigger()
    assert (trigger.route, trigger.auth_level) == ("callbacks/loyalty_levels", func.AuthLevel.FUNCTION)


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_timer_fans_its_template_out_and_the_page_workers_finish_it(runtime: Runtime, stores: Stores,
                                                                         pump: QueuePump, template: str) -> None:
    stores.prepare(template)  # the tier table provisioned and the cards it looks up synced
    invoke_timer(app(), f"timer_{template}")
    assert stores.differences(template) != []  # the timer only planned and queued key ranges

    assert pump.drain() >= 1

    marks = [m for m in runtime.state.watermarks.all() if m.template == template]
    assert marks and all(m.run_seq == 1 and m.last_status == "completed" and not m.open_run for m in marks)
    assert stores.differences(template) == []


def test_without_fan_out_the_timer_runs_the_scan_in_place(runtime: Runtime, stores: Stores,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.settings, "fan_out", False)
    invoke_timer(app(), "timer_loyalty_cards")
    assert stores.differences("loyalty_cards") == []


@pytest.mark.parametrize(("template", "key"), [
    ("loyalty_cards", {}), ("loyalty_levels", {"LevelPhrase": "Gold"}), ("loyalty_reward_points", {})])
def test_every_callback_queues_and_its_worker_writes_the_record(runtime: Runtime, stores: Stores, pump: QueuePump,
                                                                 template: str, key: dict[str, str],
                                                                 telemetry: Telemetry) -> None:
    row = stores.commerce_rows(template)[0]
    key = key or {p: row[p] for p in runtime.catalog.plan(template).key_properties}
    status, body = answer(invoke_http(app(), f"callback_{template}",
                                      post(f"callbacks/{template}", as_body(business_event(**key)))))
    assert (status, body["status"]) == (202, "queued")
    assert stores.actual(template) == {}
    assert pump.drain() == 1
    assert len(stores.actual(template)) == 1
    assert telemetry.work_items(template) == {"written": 1}


def test_the_payload_is_not_trusted_for_content(runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    card = stores.commerce_rows("loyalty_cards")[0]
    event = business_event(CardNumber=card["CardNumber"], PartyNumber="FORGED", CardTenderType="Blocked")
    invoke_http(app(), "callback_loyalty_cards", post("callbacks/loyalty_cards", as_body(event)))
    assert pump.drain() == 1
    assert stores.actual("loyalty_cards")[(card["CardNumber"],)]["msdyn_partynumber"] == (card["PartyNumber"] or None)


def test_the_activation_test_event_is_accepted_and_ignored(runtime: Runtime, stores: Stores) -> None:
    status, body = answer(invoke_http(app(), "callback_loyalty_cards",
                                      post("callbacks/loyalty_cards", as_body(activation_test_event()))))
    assert (status, body["status"]) == (200, "ignored")
    assert stores.dataverse_writes() == 0


def test_a_callback_for_a_record_gone_from_commerce_and_never_synced_changes_nothing(runtime: Runtime,
                                                                                     stores: Stores, pump: QueuePump,
                                                                                     telemetry: Telemetry) -> None:
    event = business_event(CardNumber="NO-SUCH-CARD")
    invoke_http(app(), "callback_loyalty_cards", post("callbacks/loyalty_cards", as_body(event)))
    assert pump.drain() == 1
    assert telemetry.work_items("loyalty_cards") == {"unchanged": 1}
    assert stores.dataverse_writes() == 0


@pytest.mark.parametrize(("body", "problem"), [
    (b"{not json", "body is not valid JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (as_body({"EventId": "x"}), "BusinessEventId: Field required"),
    (as_body(business_event(CardNumber="LC-1", ControlNumber="many")), "ControlNumber"),
    (as_body(business_event(CardNumber="LC-1", EventTime="2024-01-01")), "EventTime must be a WCF date"),
    (as_body(business_event(CardNumber="LC-1", ControlNumber=2**63)), "ControlNumber"),
    (as_body(business_event(CardNumber="A\ud800")), "key field CardNumber holds a lone surrogate"),
    (as_body(business_event(CardNumber=42)), "key field CardNumber must be a string"),
    (b"\xff\xfe", "body is not valid JSON"),
])
def test_a_malformed_callback_gets_400_naming_the_problem(runtime: Runtime, body: bytes, problem: str) -> None:
    status, answer_body = answer(invoke_http(app(), "callback_loyalty_cards", post("callbacks/loyalty_cards", body)))
    assert status == 400
    assert problem in str(answer_body["error"])


def test_an_event_naming_no_record_of_the_template_is_acknowledged_200_ignored(runtime: Runtime,
                                                                              stores: Stores, telemetry: Telemetry) -> None:
    event = business_event(BusinessEventId="SalesInvoicePostedBusinessEvent", InvoiceId="INV-1")
    status, body = answer(invoke_http(app(), "callback_loyalty_cards", post("callbacks/loyalty_cards", as_body(event))))
    assert (status, body["status"]) == (200, "ignored")
    assert telemetry.callbacks("loyalty_cards") == {"ignored": 1}


def test_a_callback_that_cannot_reach_the_queue_gets_503(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.queues, "send", raising(ServiceRequestError("connection refused")))
    request = post("callbacks/loyalty_cards", as_body(business_event(CardNumber="LC-1")))
    status, _ = answer(invoke_http(app(), "callback_loyalty_cards", request))
    assert status == 503


def test_a_failure_that_is_not_storage_is_not_reported_as_an_unreachable_queue(runtime: Runtime,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.queues, "send", raising(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate")))
    request = post("callbacks/loyalty_cards", as_body(business_event(CardNumber="LC-1")))
    status, body = answer(invoke_http(app(), "callback_loyalty_cards", request))
    assert status == 500 and "queue" not in str(body["error"])


def test_an_oversized_callback_gets_413(runtime: Runtime) -> None:
    body = as_body(business_event(CardNumber="LC-1", Padding="x" * 70_000))
    status, _ = answer(invoke_http(app(), "callback_loyalty_cards", post("callbacks/loyalty_cards", body)))
    assert status == 413


def test_an_unknown_template_gets_404_listing_the_known_ones(runtime: Runtime) -> None:
    status, body = answer(invoke_http(app(), "callback_unknown_template",
                                      post("callbacks/loyalty_vouchers", as_body(business_event()),
                                           template="loyalty_vouchers")))
    assert status == 404
    assert body["templates"] == sorted(TEMPLATES + AGGREGATES) and "loyalty_vouchers" in str(body["error"])


def test_a_callback_whose_record_cannot_be_written_is_parked_with_its_correlation_id(runtime: Runtime, stores: Stores,
                                                                                    pump: QueuePump) -> None:
    card = stores.commerce_rows("loyalty_cards")[0]["CardNumber"]
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "9" * 41})
    _, body = answer(invoke_http(app(), "callback_loyalty_cards",
                                      post("callbacks/loyalty_cards", as_body(business_event(CardNumber=card)))))
    assert pump.drain() == 1
    [parked] = list(runtime.state.parked.all("loyalty_cards"))
    assert parked["source"] == "callback" and parked["correlation_id"] == body["correlation_id"]


def test_concurrent_callbacks_are_all_acknowledged_queued_and_written(runtime: Runtime, stores: Stores,
                                                                       pump: QueuePump, telemetry: Telemetry) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cards = [row["CardNumber"] for row in stores.commerce_rows("loyalty_cards")[:30]]

    def call(card: str) -> int:
        request = post("callbacks/loyalty_cards", as_body(business_event(CardNumber=card)))
        return answer(invoke_http(app(), "callback_loyalty_cards", request))[0]

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(call, cards))

    assert statuses == [202] * 30
    assert 1 <= pump.drain() <= 30  # callbacks that arrive together share a message
    assert set(stores.actual("loyalty_cards")) == {(card,) for card in cards}
    assert telemetry.work_items("loyalty_cards") == {"written": 30}


# -- a queue message is its queue's template's, or refused ------------------------------------------------------


def levels_item_on_the_cards_queue(runtime: Runtime, stores: Stores) -> dict[str, Any]:
    """A work item naming loyalty_levels put on loyalty_cards' queue (by hand, as a forged or misrouted message)."""
    level = stores.commerce_rows("loyalty_levels")[0]
    item = {"template": "loyalty_levels", "kind": "business_event",
            "key": {"dataAreaId": level["dataAreaId"], "LevelPhrase": level["LevelPhrase"]},
            "received_at": "2026-01-01T00:00:00+00:00", "correlation_id": "misrouted-1"}
    runtime.queues.client("loyalty_cards").send_message(json.dumps(item))
    return item


def test_a_work_item_naming_another_template_than_its_queue_is_refused_and_poisoned(
        runtime: Runtime, stores: Stores, pump: QueuePump, telemetry: Telemetry,
        caplog: pytest.LogCaptureFixture) -> None:
    item = levels_item_on_the_cards_queue(runtime, stores)
    assert pump.drain() == 1  # finished at once: not retried five times
    assert stores.actual("loyalty_levels") == {} and stores.actual("loyalty_cards") == {}  # run as neither
    [poisoned] = runtime.queues.peek_poison("loyalty_cards", QueueKind.CALLBACKS)
    assert json.loads(poisoned.body) == item  # kept as it came, for an operator to read
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.levelname == "ERROR"
    assert "template=loyalty_cards" in record.getMessage() and "named=loyalty_levels" in record.getMessage()
    assert telemetry.work_items("loyalty_cards") == {"refused": 1}


def test_a_group_message_with_one_item_of_another_template_runs_none_of_them(
        runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    card = stores.commerce_rows("loyalty_cards")[0]["CardNumber"]
    level = stores.commerce_rows("loyalty_levels")[0]
    items = [{"template": "loyalty_cards", "key": {"CardNumber": card}, "received_at": "2026-01-01T00:00:00+00:00"},
             {"template": "loyalty_levels", "key": {"dataAreaId": level["dataAreaId"], "LevelPhrase": level["LevelPhrase"]},
              "received_at": "2026-01-01T00:00:00+00:00"}]
    runtime.queues.client("loyalty_cards").send_message(json.dumps({"items": items}))
    assert pump.drain() == 1
    assert stores.actual("loyalty_cards") == {} and stores.actual("loyalty_levels") == {}
    assert len(runtime.queues.peek_poison("loyalty_cards", QueueKind.CALLBACKS)) == 1


def test_a_key_range_task_naming_another_template_than_its_queue_is_refused(runtime: Runtime, stores: Stores,
                                                                           pump: QueuePump) -> None:
    task = {"kind": "page", "template": "loyalty_levels", "scope": "usmf", "run_id": "r-1", "index": 0}
    runtime.queues.client("loyalty_cards", pages=True).send_message(json.dumps(task))
    assert pump.drain() == 1
    [poisoned] = runtime.queues.peek_poison("loyalty_cards", QueueKind.PAGES)
    assert json.loads(poisoned.body)["template"] == "loyalty_levels"
