"""The inbound baseline end to end, through the real emulators and Azurite: the same result as the row-by-row
change-feed comparison on a mixed data set, Commerce read page by page (no GET per row), exact request counts,
resume from the last checkpoint, fan-out through the pages queue, progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

import function_app
from devtools.functions_host import QueuePump, invoke_timer
from shared.messages import PageTask
from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings
from shared.state.store import encode_key
from shared.sync.baseline import Baseline
from shared.sync.runs import DIRECTION_IN, RunSummary
from tests.builders import card_row
from tests.conftest import SEED
from tests.e2e.stores import Stores

pytestmark = pytest.mark.two_way

CARDS, LEVELS = "loyalty_cards", "loyalty_levels"
DV_CARDS = "msdyn_loyaltycards"


def card_path(card: str) -> str:
    return f"{DV_CARDS}(msdyn_cardnumber='{card}')"


def naive_baseline(runtime: Runtime, template: str) -> RunSummary:
    """The comparison the baseline replaced: the tracked initial set row by row, each row through ``apply`` (a state
    read, a Commerce GET by key, ...)."""
    inbound = runtime.inbound(template)
    summary = RunSummary(template=template, scope="all", run_id="naive", direction=DIRECTION_IN)
    for entry in inbound.dataverse.changes(inbound.dv_entity_set, select=inbound.images.select):
        summary.seen += 1
        summary.count(inbound.apply(entry, source="change_feed"))
    return summary


def fresh(monkeypatch: pytest.MonkeyPatch, stores: Stores, prefix: str, **settings: str) -> tuple[Runtime, Stores]:
    """Both emulators back to their seed and a new set of tables: the same starting point again."""
    dv, fo = stores.dataverse_url, stores.commerce_url
    requests.post(f"{dv}/_emulator/reset", timeout=10).raise_for_status()
    requests.post(f"{fo}/_emulator/reset", json=SEED, timeout=10).raise_for_status()
    monkeypatch.setenv("SYNC_TABLE_PREFIX", prefix)
    monkeypatch.setenv("SYNC_QUEUE_PREFIX", prefix.lower())
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_runtime.cache_clear()
    runtime = get_runtime()
    return runtime, Stores(runtime, dv, fo, stores.token)


def small_ranges(runtime: Runtime, template: str, page_size: int) -> Baseline:
    """Key ranges of ``page_size`` rows (the setting's floor is 10), so a few dozen rows make several ranges."""
    inbound = runtime.inbound(template)
    inbound.baseline = Baseline(inbound, page_size)
    return inbound.baseline


def cards_mixed(runtime: Runtime, stores: Stores) -> dict[str, list[str]]:
    """Every kind of row a first inbound run meets, after an initial outbound sync."""
    runtime.scan(CARDS).run()  # Dataverse has every card; each state holds both hashes
    cards = sorted(str(r["CardNumber"]) for r in stores.commerce_rows(CARDS))
    synced = runtime.state.synced
    kinds: dict[str, list[str]] = {"no_history": cards[0:4], "edited": cards[10:14], "conflict": cards[20:22],
                                   "conflict_no_history": cards[30:31], "gone_from_commerce": cards[40:41],
                                   "dataverse_only": [f"DVONLY{n}" for n in range(3)] + ["DV-ONLY-3"],
                                   "commerce_only": [f"FOONLY{n}" for n in range(2)]}
    for card in kinds["no_history"] + kinds["conflict_no_history"]:  # equal on both sides, loaded before the app ran
        state = synced.get(CARDS, encode_key((card,)))
        assert state is not None
        synced.delete(CARDS, state)
    for n, card in enumerate(kinds["edited"]):  # an agent's edits since the last sync
        stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": f"AGENT-{n}", "msdyn_cardtendertype": 806380003})
    for card in kinds["conflict"]:  # both sides since the last sync
        stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "HQ-EDIT"})
        stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-EDIT"})
    stores.change_in_dataverse(card_path(kinds["conflict_no_history"][0]), {"msdyn_partynumber": "AGENT-NEW"})
    stores.delete_in_commerce(f"RetailLoyaltyCards('{kinds['gone_from_commerce'][0]}')")  # that delete wins
    for n, card in enumerate(kinds["dataverse_only"]):  # an agent's new cards: POSTed to Commerce
        stores.create_in_dataverse(DV_CARDS, {"msdyn_cardnumber": card, "msdyn_partynumber": f"NEW-{n}",
                                              "msdyn_cardtendertype": 806380000, "msdyn_operatingunitnumber": "052"})
    for card in kinds["commerce_only"]:  # not synced out yet: the outbound side's, nothing for this direction
        stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card).items()
                                                         if k != "ReplacementCardNumber"})
    return kinds


def levels_mixed(runtime: Runtime, stores: Stores) -> None:
    """Levels (company-specific: the company lookup is part of the key) of every kind."""
    runtime.scan(LEVELS).run()
    levels = sorted((r["dataAreaId"], r["LevelPhrase"]) for r in stores.commerce_rows(LEVELS))
    usrt, demf = stores.company_id("USRT"), stores.company_id("DEMF")
    first = levels[0]
    state = runtime.state.synced.get(f"{LEVELS}.{first[0]}", encode_key(first))
    assert state is not None
    runtime.state.synced.delete(f"{LEVELS}.{first[0]}", state)  # no sync history, equal
    company, phrase = levels[4]
    guid = stores.company_id(company.upper())
    stores.change_in_dataverse(f"msdyn_loyaltylevels(msdyn_levelphrase='{phrase}',_msdyn_company_value={guid})",
                               {"msdyn_description": "edited by an agent"})
    stores.create_in_dataverse("msdyn_loyaltylevels", {"msdyn_levelphrase": "Diamond", "msdyn_description": "new",
                                                      "msdyn_company@odata.bind": f"/cdm_companies({usrt})"})
    stores.create_in_dataverse("msdyn_loyaltylevels", {"msdyn_levelphrase": "Aluminium", "msdyn_description": "new too",
                                                      "msdyn_company@odata.bind": f"/cdm_companies({demf})"})
    stores.create_in_dataverse("msdyn_loyaltylevels", {"msdyn_levelphrase": "Orphan", "msdyn_description": "no company"})


def result(runtime: Runtime, stores: Stores, template: str) -> dict[str, Any]:
    """Everything a run can change: both stores, the synced states, parked records and conflicts."""
    plan = runtime.catalog.plan(template)
    commerce = {plan.key_of(r): {k: v for k, v in r.items() if not k.startswith("@")}
                for r in stores.commerce_rows(template)}
    assert stores.duplicates(template) == {}
    dataverse = stores.actual(template) if not plan.company_specific else {
        (r.get("_msdyn_company_value"), r.get("msdyn_levelphrase")): r.get("msdyn_description")
        for r in stores.dataverse_rows(plan.template.dataverse.entity_set)}
    if plan.company_specific:  # company GUIDs are the seed's on both passes? codes are: key by code
        codes = stores.codes("cdm_companies", "cdm_companyid", "cdm_companycode")
        dataverse = {(codes.get(str(g)), p): d for (g, p), d in dataverse.items()}
    scopes = [f"{template}.{c}" for c in ("usmf", "usrt", "demf")] if plan.company_specific else [template]
    states = {s.row_key: (s.content_hash, s.shared, s.columns, s.control_number)
              for scope in scopes for s in runtime.state.synced.iter(scope)}
    parked = sorted(("dataverse-id:*" if e["RowKey"].startswith("%in%dataverse-id:") else e["RowKey"], e["error_class"])
                    for e in runtime.state.parked.all(template))
    conflicts = sorted((e["key"], e["winner"], e["detected_by"].split("/")[0]) for e in runtime.state.conflicts.all(template))
    return {"commerce": commerce, "dataverse": dataverse, "states": states, "parked": parked, "conflicts": conflicts}


@pytest.mark.parametrize("template", [CARDS, LEVELS])
def test_the_baseline_equals_the_row_by_row_comparison_on_a_mixed_data_set(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, template: str) -> None:
    build: Callable[[Runtime, Stores], Any] = cards_mixed if template == CARDS else levels_mixed
    runtime, stores = fresh(monkeypatch, stores, runtime.settings.table_prefix + "n", SYNC_DATAVERSE_PAGE_SIZE="7")
    build(runtime, stores)
    naive = naive_baseline(runtime, template)
    expected = result(runtime, stores, template)

    runtime, stores = fresh(monkeypatch, stores, runtime.settings.table_prefix + "b", SYNC_DATAVERSE_PAGE_SIZE="7")
    build(runtime, stores)
    small_ranges(runtime, template, 4 if template == LEVELS else 10)
    summary = runtime.inbound(template).run()

    assert (summary.mode, summary.status) == ("baseline", "completed")
    assert summary.counts() == naive.counts()
    assert result(runtime, stores, template) == expected
    if template == CARDS:  # what the data set holds, as the row-by-row comparison counts it
        assert (naive.seen, naive.written, naive.conflicts, naive.failed) == (64, 8, 3, 0)
    mark = runtime.state.watermarks.get(template, DIRECTION_IN, "all")
    assert mark.delta_link and mark.open_run == "" and mark.last_status.startswith("completed")
    assert list(runtime.state.checkpoints.table.list_entities()) == []


def commerce_routes(stores: Stores) -> dict[str, int]:
    stats = requests.get(f"{stores.commerce_url}/_emulator/stats", timeout=10).json()
    return {k: v for k, v in stats["by_method_route"].items() if "Cards" in k}


def dataverse_requests(stores: Stores) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = requests.get(f"{stores.dataverse_url}/_emulator/requests", timeout=10).json()["value"]
    return log


def reset_counters(stores: Stores) -> None:
    requests.post(f"{stores.commerce_url}/_emulator/stats/reset", timeout=10).raise_for_status()
    requests.delete(f"{stores.dataverse_url}/_emulator/requests", timeout=10).raise_for_status()


def tracked(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if "odata.track-changes" in r["prefer"] or ("$skiptoken" in r["query"]
            and "istracking=\"True\"" in r["query"]["$skiptoken"])]


def test_equal_rows_cost_no_request_and_commerce_is_read_page_by_page(runtime: Runtime, stores: Stores) -> None:
    runtime.scan(CARDS).run()
    small_ranges(runtime, CARDS, 20)
    reset_counters(stores)

    summary = runtime.inbound(CARDS).run()

    assert (summary.seen, summary.unchanged, summary.written) == (60, 60, 0)
    # 60 cards in ranges of 20: three full ranges and the open-ended last one. Per range one Commerce read
    # (the emulator's pages hold 25 rows, a range's 20 fit in one), which in place also plans the range.
    assert commerce_routes(stores) == {"GET odata.RetailLoyaltyCards.get_collection": 4}
    log = [r for r in dataverse_requests(stores) if r["path"].endswith(DV_CARDS)]
    assert len(tracked(log)) == 1  # the token: 60 rows in one page
    planning = [r for r in log if r["query"].get("$top") == "20"]
    ranges = [r for r in log if "$top" not in r["query"] and r not in tracked(log)]
    assert len(planning) == 4
    assert len(ranges) == 5  # one read per range, and the first range's rows with a null key
    assert all(r["query"]["$orderby"] == "msdyn_cardnumber" and "odata.maxpagesize" in r["prefer"] for r in ranges)
    assert len(log) == 10


def test_a_mixed_baseline_reads_no_commerce_row_by_key(runtime: Runtime, stores: Stores) -> None:
    kinds = cards_mixed(runtime, stores)
    small_ranges(runtime, CARDS, 10)
    reset_counters(stores)
    stores.clear_commerce_write_log()

    summary = runtime.inbound(CARDS).run()

    routes = commerce_routes(stores)
    assert not any("get_entity" in route for route in routes), routes  # never one GET per row
    # 63 cards in ranges of 10: 7 range reads (in place they also plan), one read-back per range with PATCHes (the
    # edited cards lie in one range), and one look-up for the Dataverse-only key that is not plain (a hyphen).
    assert routes == {"GET odata.RetailLoyaltyCards.get_collection": 7 + 1 + 1,
                      "PATCH odata.RetailLoyaltyCards.patch_entity": len(kinds["edited"]),
                      "POST odata.RetailLoyaltyCards.post_collection": len(kinds["dataverse_only"])}
    writes = stores.commerce_write_log()
    assert sorted(w["method"] for w in writes) == ["PATCH"] * len(kinds["edited"]) + ["POST"] * 4
    # Each PATCH carries the ETag the range's page read returned: a change since then is refused (412), not lost.
    assert all(w["if_match"] and w["if_match"] != "*" for w in writes if w["method"] == "PATCH")
    assert summary.written == len(kinds["edited"]) + len(kinds["dataverse_only"])
    assert stores.commerce_row(f"RetailLoyaltyCards('{kinds['edited'][0]}')")["PartyNumber"] == "AGENT-0"


def test_a_failed_baseline_resumes_from_its_last_checkpoint(runtime: Runtime, stores: Stores,
                                                            dataverse_emulator: Any) -> None:
    runtime.scan(CARDS).run()
    small_ranges(runtime, CARDS, 10)
    card = sorted(str(r["CardNumber"]) for r in stores.commerce_rows(CARDS))[45]
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-LATE"})
    # Dataverse reads, in place: the token (1), then per range its planning read and its rows (the first range
    # also its rows with a null key). The read of range 3's rows fails for good: ranges 0-2 are done, 3 planned.
    dataverse_emulator.faults.add(route=DV_CARDS, method="GET", kind="status", status=400, nth=1 + 3 + 2 + 2 + 2)
    with pytest.raises(Exception, match="400|Bad"):
        runtime.inbound(CARDS).run()
    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    assert mark.open_run and mark.last_status == "failed" and not mark.delta_link
    plan = runtime.state.checkpoints.get_plan(CARDS, "all", mark.open_run)
    assert plan is not None and plan.token_done and plan.delta_link
    assert [(p.index, p.status) for p in runtime.state.checkpoints.pages(plan)] == [
        (0, "done"), (1, "done"), (2, "done"), (3, "planned")]
    dataverse_emulator.faults.clear()
    reset_counters(stores)

    summary = runtime.inbound(CARDS).run()

    assert summary.run_id == mark.open_run and summary.mode == "baseline"  # the same run, taken over
    assert (summary.seen, summary.written) == (60, 1)  # the earlier ranges' counts carried over
    log = [r for r in dataverse_requests(stores) if r["path"].endswith(DV_CARDS)]
    assert tracked(log) == []  # the token is not taken again
    range_reads = [r for r in log if "$top" not in r["query"]]
    planning = [r for r in log if "$top" in r["query"]]
    assert (len(range_reads), len(planning)) == (4, 3)  # ranges 3..6 read, 4..6 planned (60 cards in tens: 7 ranges)
    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    assert mark.delta_link == plan.delta_link and mark.open_run == "" and mark.last_status == "completed"
    assert list(runtime.state.checkpoints.table.list_entities()) == []
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "AGENT-LATE"
    assert runtime.inbound(CARDS).run().mode == "incremental"  # from now on the change feed


def test_a_token_pass_stopped_half_way_goes_on_from_its_last_page(runtime: Runtime, stores: Stores,
                                                                   dataverse_emulator: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, stores = fresh(monkeypatch, stores, runtime.settings.table_prefix + "t", SYNC_DATAVERSE_PAGE_SIZE="7")
    runtime.scan(CARDS).run()
    dataverse_emulator.faults.add(route=DV_CARDS, method="GET", kind="status", status=400, nth=4)  # tracked page 4
    with pytest.raises(Exception, match="400|Bad"):
        runtime.inbound(CARDS).run()
    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    plan = runtime.state.checkpoints.get_plan(CARDS, "all", mark.open_run)
    assert plan is not None and not plan.token_done and plan.total == 21 and plan.token_next
    dataverse_emulator.faults.clear()
    reset_counters(stores)

    summary = runtime.inbound(CARDS).run()

    pages = tracked([r for r in dataverse_requests(stores) if r["path"].endswith(DV_CARDS)])
    assert len(pages) == 9 - 3 and "$skiptoken" in pages[0]["query"]  # pages 4..9 of 60 rows in sevens
    assert (summary.seen, summary.unchanged) == (60, 60)
    assert runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all").delta_link


def test_a_token_pass_whose_nextlink_no_longer_holds_starts_again(runtime: Runtime, stores: Stores,
                                                                  dataverse_emulator: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, stores = fresh(monkeypatch, stores, runtime.settings.table_prefix + "r", SYNC_DATAVERSE_PAGE_SIZE="7")
    runtime.scan(CARDS).run()
    dataverse_emulator.faults.add(route=DV_CARDS, method="GET", kind="status", status=400, nth=4)
    with pytest.raises(Exception, match="400|Bad"):
        runtime.inbound(CARDS).run()
    dataverse_emulator.faults.clear()
    checkpoints = runtime.state.checkpoints
    plan = checkpoints.get_plan(CARDS, "all", runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all").open_run)
    assert plan is not None and plan.token_next
    plan.token_next = plan.token_next.split("$skiptoken=")[0] + "$skiptoken=%3Cnot-a-cookie%3E"  # expired, say
    checkpoints.save_plan(plan)
    reset_counters(stores)

    summary = runtime.inbound(CARDS).run()

    pages = tracked([r for r in dataverse_requests(stores) if r["path"].endswith(DV_CARDS)])
    assert len(pages) == 1 + 9  # the refused nextLink, then the whole pass again
    assert (summary.seen, summary.unchanged) == (60, 60)
    assert runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all").delta_link


def test_progress_reports_rows_compared_out_of_the_token_count(runtime: Runtime, stores: Stores,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    runtime.scan(CARDS).run()
    small_ranges(runtime, CARDS, 25)
    seen: list[tuple[int, int | None]] = []
    with caplog.at_level("INFO", logger="loyaltysync.inbound"):
        runtime.inbound(CARDS).run(progress=lambda s, total: seen.append((s.seen, total)))
    assert [s for s, _ in seen] == list(range(1, 61)) and {t for _, t in seen} == {60}
    lines = [r.getMessage() for r in caplog.records if "inbound range done" in r.getMessage()]
    assert len(lines) == 3
    assert all(f"{field}=" in lines[-1] for field in ("done", "total", "rate_per_s", "eta_s"))
    assert "done=60" in lines[-1] and "total=60" in lines[-1] and "eta_s=0" in lines[-1]


# -- fanned out: the timer plans, the pages queue carries the ranges ---------------------------------------


@pytest.fixture()
def fanned(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("SYNC_PAGE_SIZE", "10")
    get_settings.cache_clear()
    get_runtime.cache_clear()
    yield get_runtime()


def pages_queue(runtime: Runtime) -> Any:
    return runtime.queues.client(CARDS, pages=True)


def test_the_inbound_timer_fans_the_baseline_out_and_the_page_workers_close_it(fanned: Runtime, stores: Stores,
                                                                             pump: QueuePump) -> None:
    runtime = fanned
    runtime.scan(CARDS).run()
    card = sorted(str(r["CardNumber"]) for r in stores.commerce_rows(CARDS))[33]
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-FAN"})

    invoke_timer(function_app.app, f"timer_inbound_{CARDS}")

    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    assert mark.open_run and mark.lease_owner == mark.open_run and not mark.delta_link  # fanned out, open
    queued = [json.loads(m.content) for m in pages_queue(runtime).peek_messages(max_messages=32)]
    assert [(m["kind"], m["index"]) for m in queued] == [("inbound", n) for n in range(7)]
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] != "AGENT-FAN"  # the timer compares nothing

    assert pump.drain() == 7

    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    assert mark.last_status == "completed" and mark.open_run == "" and mark.lease_owner == "" and mark.delta_link
    assert json.loads(mark.last_counts)["seen"] == 60 and json.loads(mark.last_counts)["written"] == 1
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "AGENT-FAN"
    assert list(runtime.state.checkpoints.table.list_entities()) == []
    # The next timer run follows the deltaLink: an edit made now arrives, in the timer itself (nothing queued).
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-DELTA"})
    invoke_timer(function_app.app, f"timer_inbound_{CARDS}")
    assert pump.drain() == 0
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "AGENT-DELTA"


def test_what_the_timer_cannot_finish_in_its_budget_goes_on_in_planning_tasks(fanned: Runtime, stores: Stores,
                                                                             pump: QueuePump,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_DATAVERSE_PAGE_SIZE", "7")
    get_settings.cache_clear()
    get_runtime.cache_clear()
    runtime = get_runtime()
    runtime.scan(CARDS).run()
    runtime.inbound(CARDS).baseline.plan_budget_s = 0  # one token page, or one range, per invocation

    invoke_timer(function_app.app, f"timer_inbound_{CARDS}")

    [task] = [json.loads(m.content) for m in pages_queue(runtime).peek_messages(max_messages=32)]
    assert task["kind"] == "inbound_plan"
    plan = runtime.state.checkpoints.get_plan(CARDS, "all", task["run_id"])
    assert plan is not None and not plan.token_done and plan.total == 7  # the timer took one page of the token
    # 8 more token pages (60 rows in sevens), one per task, the last of which also plans the first range; then one
    # range planned per task (7 ranges of 10): 8 + 6 planning tasks, and 7 ranges compared.
    assert pump.drain(120) == 8 + 6 + 7
    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    assert mark.last_status == "completed" and mark.open_run == "" and mark.delta_link
    assert json.loads(mark.last_counts)["seen"] == 60


def test_a_fanned_out_baseline_stopped_in_the_middle_redoes_only_the_ranges_not_done(fanned: Runtime, stores: Stores,
                                                                                    pump: QueuePump) -> None:
    runtime = fanned
    runtime.scan(CARDS).run()
    invoke_timer(function_app.app, f"timer_inbound_{CARDS}")
    assert pump.run_once(max_messages=3) == 3  # three ranges compared, then every worker dies
    pages_queue(runtime).clear_messages()  # ... and the messages of the others are lost with them
    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    run_id = mark.open_run
    plan = runtime.state.checkpoints.get_plan(CARDS, "all", run_id)
    assert plan is not None
    assert sum(p.status == "done" for p in runtime.state.checkpoints.pages(plan)) == 3
    invoke_timer(function_app.app, f"timer_inbound_{CARDS}")  # the lease is still held: skipped
    assert list(pages_queue(runtime).peek_messages(max_messages=32)) == []
    runtime.state.watermarks.break_lease(CARDS, DIRECTION_IN, "all")  # the run is dead (or its lease expired)
    reset_counters(stores)

    invoke_timer(function_app.app, f"timer_inbound_{CARDS}")

    queued = [json.loads(m.content)["index"] for m in pages_queue(runtime).peek_messages(max_messages=32)]
    assert len(queued) == 4 and all(m["run_id"] == run_id for m in
                                     (json.loads(x.content) for x in pages_queue(runtime).peek_messages(max_messages=32)))
    assert tracked(dataverse_requests(stores)) == []  # no second token pass, no second planning
    assert pump.drain() == 4
    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    assert mark.last_run_id == run_id and mark.last_status == "completed" and mark.delta_link == plan.delta_link
    assert json.loads(mark.last_counts)["seen"] == 60


def test_a_task_delivered_twice_is_a_duplicate_and_one_of_a_closed_run_is_stale(fanned: Runtime, stores: Stores,
                                                                                pump: QueuePump) -> None:
    runtime = fanned
    runtime.scan(CARDS).run()
    invoke_timer(function_app.app, f"timer_inbound_{CARDS}")
    messages = list(pages_queue(runtime).peek_messages(max_messages=32))
    first = PageTask.model_validate_json(messages[0].content)
    assert runtime.inbound(CARDS).run_task(first) == "done"
    assert runtime.inbound(CARDS).run_task(first) == "duplicate"
    assert pump.drain() == 7
    assert runtime.inbound(CARDS).run_task(first) == "stale"


def test_a_sync_killed_in_the_middle_of_a_baseline_is_resumed_by_the_next_run(fanned: Runtime, stores: Stores,
                                                                               dataverse_emulator: Any) -> None:
    """``sync --direction inbound`` in its own process, killed (SIGKILL) once some ranges are checkpointed: the next
    run takes the same run over, compares only the ranges not done, and ends with the token the first one took."""
    runtime = fanned  # ranges of 10 cards, in the killed process (same settings) and here
    runtime.scan(CARDS).run()
    dataverse_emulator.faults.add(route=DV_CARDS, method="GET", kind="delay", delay_s=0.4)  # slow enough to land inside
    process = subprocess.Popen([sys.executable, "-m", "shared.cli", "sync", CARDS, "--direction", "inbound"],
                               env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = runtime.state.checkpoints
    deadline = time.monotonic() + 60
    plan = None
    while time.monotonic() < deadline:
        run_id = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all").open_run
        plan = checkpoints.get_plan(CARDS, "all", run_id) if run_id else None
        if plan is not None and sum(p.status == "done" for p in checkpoints.pages(plan)) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    dataverse_emulator.faults.clear()
    assert plan is not None and plan.token_done
    done = {p.index for p in checkpoints.pages(plan) if p.status == "done"}
    assert 2 <= len(done) < 7
    runtime.state.watermarks.break_lease(CARDS, DIRECTION_IN, "all")  # the killed run's lease (or wait it out)
    reset_counters(stores)

    summary = runtime.inbound(CARDS).run()

    assert summary.run_id == plan.run_id and (summary.seen, summary.unchanged) == (60, 60)
    log = [r for r in dataverse_requests(stores) if r["path"].endswith(DV_CARDS)]
    assert tracked(log) == []
    assert len([r for r in log if "$top" not in r["query"]]) == 7 - len(done)  # only the ranges not done
    mark = runtime.state.watermarks.get(CARDS, DIRECTION_IN, "all")
    assert mark.delta_link == plan.delta_link and mark.last_run_id == plan.run_id
    assert mark.open_run == "" and mark.last_status == "completed"


def test_a_dataverse_key_spelt_in_another_case_than_commerces_is_decided_under_commerces_spelling(
        runtime: Runtime, stores: Stores) -> None:
    """Both services match keys case-insensitively: Dataverse's ``cczz`` is Commerce's CCZZ, synced before. The
    baseline decides it under Commerce's spelling: its state is found (no false conflict) and no second state is
    made under Dataverse's spelling."""
    create = {k: v for k, v in card_row(CardNumber="CCZZ").items() if k != "ReplacementCardNumber"}
    stores.create_in_commerce("RetailLoyaltyCards", create)
    runtime.scan(CARDS).run()
    [row] = [r for r in stores.dataverse_rows(DV_CARDS) if r["msdyn_cardnumber"] == "CCZZ"]
    stores.change_in_dataverse(f"{DV_CARDS}({row['msdyn_loyaltycardid']})", {"msdyn_cardnumber": "cczz"})

    summary = runtime.inbound(CARDS).run()

    assert summary.conflicts == 0 and list(runtime.state.conflicts.all(CARDS)) == []
    keys = [s.row_key for s in runtime.state.synced.iter(CARDS) if s.row_key.casefold() == "cczz"]
    assert keys == [encode_key(("CCZZ",))]


def test_a_key_in_another_case_found_only_by_the_look_up_is_decided_under_commerces_spelling(
        runtime: Runtime, stores: Stores) -> None:
    """The same key, where Commerce's collation put CCZZ beyond what the range's read returned (the emulators collate
    alike, so the range is handed that read): the look-up finds it, and it goes the change feed's way, under
    Commerce's spelling: no false conflict, no second state."""
    create = {k: v for k, v in card_row(CardNumber="CCZZ").items() if k != "ReplacementCardNumber"}
    stores.create_in_commerce("RetailLoyaltyCards", create)
    runtime.scan(CARDS).run()
    [row] = [r for r in stores.dataverse_rows(DV_CARDS) if r["msdyn_cardnumber"] == "CCZZ"]
    stores.change_in_dataverse(f"{DV_CARDS}({row['msdyn_loyaltycardid']})", {"msdyn_cardnumber": "cczz"})
    summary = RunSummary(template=CARDS, scope="all", run_id="range", direction=DIRECTION_IN)

    small_ranges(runtime, CARDS, 10).compare.process(None, None, first=True, summary=summary,
                                                     commerce=([], ("0",)))  # a read complete through "0" only

    assert summary.conflicts == 0 and list(runtime.state.conflicts.all(CARDS)) == []
    keys = [s.row_key for s in runtime.state.synced.iter(CARDS) if s.row_key.casefold() == "cczz"]
    assert keys == [encode_key(("CCZZ",))]
