"""The guards that keep data right when writes race, fail or are cut short, against the emulators and Azurite: a
chunk whose state went stale in flight is corrected by a re-read, a failed write is written again, a key Commerce
still has is never deleted, and a fanned-out run is never finalised before its planning ends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.http.errors import ApiError
from shared.mapping.plan import DataverseRecord
from shared.messages import PageTask
from shared.runtime import Runtime
from shared.sync.scan import Scan
from tests.configured import runtime_with
from tests.e2e.stores import Stores

CARDS = "loyalty_cards"  # 60 cards in the emulator's seed, 52100000001 to 52100000060


def worker_scan(runtime: Runtime, tasks: list[PageTask] | None = None) -> Scan:
    """A scan of the cards in ranges of 25, as the timer (``tasks``: its pages queue) or a pages-queue worker runs
    it; a worker with no queue finalises in place."""
    return Scan(runtime.outbound(CARDS), page_size=25, enqueue=tasks.append if tasks is not None else None)


def drain(runtime: Runtime, tasks: list[PageTask]) -> None:
    """The pages queue's workers take each queued task in turn (and the tasks those queue)."""
    while tasks:
        worker_scan(runtime, tasks).run_task(tasks.pop(0))


def timer_run(runtime: Runtime) -> None:
    """A timer run as the host runs it: fanned out, its tasks drained."""
    tasks: list[PageTask] = []
    worker_scan(runtime, tasks).start(None)
    drain(runtime, tasks)


def a_callback_syncs_an_hq_edit_while_the_chunk_is_in_flight(app: Runtime, stores: Stores,
                                                             monkeypatch: pytest.MonkeyPatch) -> str:
    """The timer's chunk holds a card as the timer read it. Before the chunk lands in Dataverse, the card is edited
    in HQ and a callback syncs that edit, recording newer state for the key (its ETag changes). Returns the card."""
    engine = app.outbound(CARDS)
    card = str(stores.commerce_rows(CARDS)[5]["CardNumber"])
    upsert_many = engine.writer.upsert_many
    raced: list[str] = []

    def after_a_callback(records: list[DataverseRecord], **options: Any) -> list[ApiError | None]:
        if not raced and any(record.key == (card,) for record in records):
            stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "NEWER"})
            raced.append(engine.sync_key({"CardNumber": card}))
            assert raced == ["written"]
        return upsert_many(records, **options)

    monkeypatch.setattr(engine.writer, "upsert_many", after_a_callback)
    return card


@pytest.mark.parametrize("policy", ["commerce_wins", "dataverse_wins"])
def test_a_bulk_chunk_whose_state_went_stale_in_flight_is_corrected_by_a_re_read(
        stores: Stores, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    app = runtime_with(monkeypatch, SYNC_CONFLICT_POLICY=policy)
    card = a_callback_syncs_an_hq_edit_while_the_chunk_is_in_flight(app, stores, monkeypatch)

    timer_run(app)  # the initial sync: each key range's 25 cards in one chunk, through UpsertMultiple

    assert stores.actual(CARDS)[(card,)]["msdyn_partynumber"] == "NEWER"
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "NEWER"


def test_the_re_read_after_a_stale_bulk_chunk_records_no_conflict(runtime: Runtime, stores: Stores,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    a_callback_syncs_an_hq_edit_while_the_chunk_is_in_flight(runtime, stores, monkeypatch)

    timer_run(runtime)

    assert list(runtime.state.conflicts.all(CARDS)) == []


def a_single_write_rejected_by_dataverse(runtime: Runtime, stores: Stores, dataverse_emulator: Any) -> tuple[str, ...]:
    """The initial sync, with UpsertMultiple and $batch refused so that each card is written alone, and one of
    those writes rejected by Dataverse: every other card lands. Returns the key of the one that did not."""
    dataverse_emulator.faults.add(route="bulk", kind="status", status=500, times=1)
    dataverse_emulator.faults.add(route="$batch", kind="status", status=500, times=1)
    dataverse_emulator.faults.add(route="resource", method="PATCH", kind="status", status=400, nth=5, times=1)
    timer_run(runtime)
    [missing] = stores.expected(CARDS).keys() - stores.actual(CARDS).keys()
    return missing


def changed_in_hq(stores: Stores, key: tuple[str, ...]) -> None:
    """A validation refusal waits for the record to change in Commerce (or a replay): it changes."""
    stores.change_in_commerce(f"RetailLoyaltyCards('{key[0]}')", {"PartyNumber": "EDITED"})


def test_a_record_whose_single_write_failed_is_written_by_the_next_scan_once_it_changed(
        runtime: Runtime, stores: Stores, dataverse_emulator: Any) -> None:
    changed_in_hq(stores, a_single_write_rejected_by_dataverse(runtime, stores, dataverse_emulator))

    timer_run(runtime)

    assert stores.differences(CARDS) == []


def test_a_parked_record_leaves_the_parked_table_once_the_next_scan_writes_it(runtime: Runtime, stores: Stores,
                                                                              dataverse_emulator: Any) -> None:
    key = a_single_write_rejected_by_dataverse(runtime, stores, dataverse_emulator)
    assert [json.loads(parked["key"]) for parked in runtime.state.parked.all(CARDS)] == [list(key)]
    changed_in_hq(stores, key)

    timer_run(runtime)

    assert list(runtime.state.parked.all(CARDS)) == []


def test_the_delete_search_keeps_a_key_the_scan_did_not_see_but_commerce_has(runtime: Runtime,
                                                                              stores: Stores) -> None:
    runtime.scan(CARDS).run()
    tasks: list[PageTask] = []
    worker_scan(runtime, tasks).start(None)
    assert worker_scan(runtime, tasks).run_task(tasks.pop(0)) == "done"  # the first key range
    # A card created in HQ behind the scan (its key sorts into the range just read), synced by a callback.
    stores.create_in_commerce("RetailLoyaltyCards", {
        "CardNumber": "52100000001A", "CardTenderType": "AsCardTender", "PartyNumber": "BEHIND-THE-SCAN",
        "OmOperatingUnitNumber": "052", "LoyaltyEnrollmentDate": "2026-01-05T00:00:00Z",
        "LoyaltyEnrollmentDateLocal": "2026-01-05T00:00:00Z"})
    assert runtime.outbound(CARDS).sync_key({"CardNumber": "52100000001A"}) == "written"

    drain(runtime, tasks)  # the other ranges, then the delete search

    mark = runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all")
    assert mark.last_status == "completed" and '"deleted": 0' in mark.last_counts
    assert stores.actual(CARDS)[("52100000001A",)]["msdyn_partynumber"] == "BEHIND-THE-SCAN"
    assert stores.differences(CARDS) == []


def test_a_fanned_out_run_is_not_finalised_before_its_planning_ends(runtime: Runtime, stores: Stores) -> None:
    runtime.scan(CARDS).run()
    last = str(stores.commerce_rows(CARDS)[-1]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{last}')", {"PartyNumber": "IN-THE-LAST-RANGE"})
    outcomes: list[str] = []

    def a_worker_takes_it_at_once(task: PageTask) -> None:
        # Workers run each range as soon as it is queued, while the planner is still planning the next ones.
        outcomes.append(worker_scan(runtime).run_task(task))

    Scan(runtime.outbound(CARDS), page_size=25, enqueue=a_worker_takes_it_at_once).start(None)

    assert outcomes == ["done", "done", "done"]
    mark = runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all")
    assert mark.last_status == "completed" and mark.open_run == ""
    counts = json.loads(mark.last_counts)
    assert (counts["seen"], counts["written"], counts["deleted"]) == (60, 1, 0)
    assert stores.actual(CARDS)[(last,)]["msdyn_partynumber"] == "IN-THE-LAST-RANGE"


def test_a_changed_record_whose_state_a_callback_rewrote_while_the_chunk_was_written_keeps_the_newer_state(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunk replaces states it read (ETag-guarded), not only creates new ones: a key synced before, changed in
    HQ, and synced again by a callback while the timer's chunk is in flight ends with the callback's newer data."""
    timer_run(runtime)  # every card synced: the next run's chunk replaces existing states
    card = str(stores.commerce_rows(CARDS)[5]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "MIDDLE"})
    assert a_callback_syncs_an_hq_edit_while_the_chunk_is_in_flight(runtime, stores, monkeypatch) == card

    timer_run(runtime)  # its chunk holds the card as MIDDLE; the callback wrote NEWER meanwhile

    assert stores.actual(CARDS)[(card,)]["msdyn_partynumber"] == "NEWER"
