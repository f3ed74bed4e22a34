"""Checkpointed key-range scans: range filters, resume after a failure, fan-out through page tasks."""

from __future__ import annotations

from typing import Any

import pytest

from shared.messages import PageTask
from shared.runtime import Runtime
from shared.sync.scan import Scan, range_filter
from tests.clock import ManualClock
from tests.e2e.stores import Stores

CARDS = "loyalty_cards"  # 60 cards in the emulator's seed


def scan(runtime: Runtime, page_size: int = 25, tasks: list[PageTask] | None = None,
          delete_check_states: int = 100_000) -> Scan:
    """A scan of the cards in ranges of ``page_size``; with ``tasks`` it queues there (else it finalises in place)."""
    return Scan(runtime.outbound(CARDS), page_size=page_size, enqueue=tasks.append if tasks is not None else None,
                     delete_check_states=delete_check_states)


def test_a_single_key_range_is_an_open_or_closed_interval() -> None:
    assert range_filter(["CardNumber"], None, None) is None
    assert range_filter(["CardNumber"], ("A'1",), None) == "CardNumber gt 'A''1'"
    assert range_filter(["CardNumber"], ("A",), ("M",)) == "(CardNumber gt 'A') and (CardNumber le 'M')"


def test_a_composite_key_range_compares_as_a_tuple() -> None:
    assert range_filter(["Scheme", "Tier"], ("S1", "T1"), None) == "(Scheme gt 'S1') or (Scheme eq 'S1' and Tier gt 'T1')"
    assert range_filter(["Scheme", "Tier"], None, ("S2", 3)) == "(Scheme lt 'S2') or (Scheme eq 'S2' and Tier le 3)"


def test_an_in_place_scan_checkpoints_each_range_and_removes_the_checkpoints_when_done(runtime: Runtime,
                                                                                        stores: Stores) -> None:
    summary = scan(runtime).run_scope(None)

    assert (summary.seen, summary.written, summary.status) == (60, 60, "completed")
    assert stores.differences(CARDS) == []
    assert list(runtime.state.checkpoints.table.list_entities()) == []
    assert runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all").open_run == ""


def test_a_failed_scan_resumes_from_its_last_checkpoint(runtime: Runtime, stores: Stores,
                                                        commerce_emulator: Any) -> None:
    # The third read of the card set fails for good (past the client's retries): ranges 1 and 2 are done.
    commerce_emulator.faults.add(route="RetailLoyaltyCards", method="GET", kind="status", status=400, nth=3)
    with pytest.raises(Exception, match="400|Bad"):
        scan(runtime).run_scope(None)
    mark = runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all")
    assert mark.open_run and mark.last_status == "failed" and not mark.initial_completed_at
    commerce_emulator.faults.clear()
    before = stores.dataverse_writes()

    summary = scan(runtime).run_scope(None)

    assert summary.run_id == mark.open_run  # the same run, taken over
    assert (summary.seen, summary.written) == (60, 60)  # counts of the earlier ranges carried over
    assert stores.dataverse_writes() - before == 1  # only the last range's chunk was written now
    assert stores.differences(CARDS) == []
    assert runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all").open_run == ""


def test_a_fanned_out_scan_queues_one_task_per_range_and_the_last_worker_finalises(runtime: Runtime,
                                                                                  stores: Stores) -> None:
    tasks: list[PageTask] = []
    started = scan(runtime, tasks=tasks).start(None)
    assert started.status == "fanned_out"
    assert [t.index for t in tasks] == [0, 1, 2]
    assert stores.differences(CARDS) != []  # nothing written by the planner

    outcomes = [scan(runtime).run_page(task) for task in reversed(tasks)]  # any order

    assert outcomes == ["done", "done", "done"]
    assert stores.differences(CARDS) == []
    mark = runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all")
    assert mark.last_status == "completed" and mark.open_run == "" and mark.lease_owner == ""
    assert '"written": 60' in mark.last_counts
    assert list(runtime.state.checkpoints.table.list_entities()) == []


def test_a_task_delivered_twice_is_not_processed_twice(runtime: Runtime, stores: Stores) -> None:
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks).start(None)
    assert scan(runtime).run_page(tasks[0]) == "done"
    writes = stores.dataverse_writes()

    assert scan(runtime).run_page(tasks[0]) == "duplicate"
    assert stores.dataverse_writes() == writes


def test_a_task_of_a_finalised_run_is_stale(runtime: Runtime) -> None:
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks).start(None)
    for task in tasks:
        scan(runtime).run_page(task)

    assert scan(runtime).run_page(tasks[1]) == "stale"


def test_a_fanned_out_scan_finds_deletes_across_ranges(runtime: Runtime, stores: Stores) -> None:
    scan(runtime).run_scope(None)
    gone = stores.commerce_rows(CARDS)[30]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{gone}')")
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks).start(None)

    for task in tasks:
        scan(runtime).run_page(task)

    mark = runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all")
    assert '"deleted": 1' in mark.last_counts and '"written": 0' in mark.last_counts
    assert stores.differences(CARDS) == []


def test_a_second_start_while_the_run_is_open_is_skipped(runtime: Runtime) -> None:
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks).start(None)

    again = scan(runtime, tasks=tasks).start(None)

    assert again.status == "skipped" and len(tasks) == 3


def drain(runtime: Runtime, tasks: list[PageTask], **options: Any) -> list[str]:
    """Run queued tasks, and the tasks they queue, in order, as the pages queue's workers would."""
    outcomes: list[str] = []
    while tasks:
        task = tasks.pop(0)
        outcomes.append(f"{task.kind}:{scan(runtime, tasks=tasks, **options).run_task(task)}")
    return outcomes


def expire_lease(runtime: Runtime) -> None:
    """The workers stopped and the lease ran out: time moves past it."""
    clock = ManualClock()
    clock.advance(runtime.outbound(CARDS).lease_s + 1)
    runtime.state.clock = clock


def test_a_fanned_out_delete_search_is_split_into_checks_of_whole_state_buckets(runtime: Runtime,
                                                                                stores: Stores) -> None:
    scan(runtime).run_scope(None)
    gone = stores.commerce_rows(CARDS)[30]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{gone}')")
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks, delete_check_states=20).start(None)

    outcomes = drain(runtime, tasks, delete_check_states=20)

    # 59 states seen, 20 a check; the one check that found the missing card gets a delete pass
    assert outcomes == ["page:done"] * 3 + ["deletes:done"] * 3 + ["delete_pass:done"]
    mark = runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all")
    assert mark.last_status == "completed" and mark.open_run == "" and mark.lease_owner == ""
    assert '"deleted": 1' in mark.last_counts and '"seen": 59' in mark.last_counts
    assert stores.differences(CARDS) == []
    assert list(runtime.state.checkpoints.table.list_entities()) == []


def test_the_delete_checks_cover_every_state_bucket_once(runtime: Runtime) -> None:
    scan(runtime).run_scope(None)
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks, delete_check_states=7).start(None)
    drain(runtime, [t for t in tasks if t.kind == "page"][:-1], delete_check_states=7)
    last: list[PageTask] = []
    scan(runtime, tasks=last, delete_check_states=7).run_task(tasks[-1])
    plan = runtime.state.checkpoints.get_plan(CARDS, "all", last[0].run_id)
    assert plan is not None

    checks = runtime.state.checkpoints.delete_checks(plan)

    assert len(checks) == min(runtime.state.buckets, 9)  # 60 states, 7 a check, at most one check a bucket
    assert [b for c in checks for b in c.buckets] == list(range(runtime.state.buckets))


def test_a_delete_check_delivered_twice_is_not_counted_twice(runtime: Runtime, stores: Stores) -> None:
    scan(runtime).run_scope(None)
    gone = stores.commerce_rows(CARDS)[10]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{gone}')")
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks, delete_check_states=20).start(None)
    drain(runtime, [t for t in tasks if t.kind == "page"][:-1])
    checks: list[PageTask] = []
    scan(runtime, tasks=checks, delete_check_states=20).run_task(tasks[-1])

    outcomes = drain(runtime, [checks[0], *checks], delete_check_states=20)

    assert outcomes == ["deletes:done", "deletes:duplicate", "deletes:done", "deletes:done", "delete_pass:done"]
    assert '"deleted": 1' in runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all").last_counts


def test_a_run_stopped_during_its_delete_search_resumes_only_the_checks_not_done(runtime: Runtime) -> None:
    scan(runtime).run_scope(None)
    tasks: list[PageTask] = []
    run_id = scan(runtime, tasks=tasks, delete_check_states=20).start(None).run_id
    drain(runtime, [t for t in tasks if t.kind == "page"][:-1])
    checks: list[PageTask] = []
    scan(runtime, tasks=checks, delete_check_states=20).run_task(tasks[-1])
    assert scan(runtime).run_task(checks[0]) == "done"  # then the host stopped; the other two messages are lost
    expire_lease(runtime)

    again: list[PageTask] = []
    resumed = scan(runtime, tasks=again, delete_check_states=20).start(None)

    assert resumed.run_id == run_id and resumed.status == "fanned_out"
    assert [(t.kind, t.index) for t in again] == [("deletes", 1), ("deletes", 2)]
    assert drain(runtime, again) == ["deletes:done", "deletes:done"]
    mark = runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all")
    assert mark.last_run_id == run_id and mark.open_run == "" and mark.last_status == "completed"


def test_a_delete_check_of_a_closed_run_is_stale(runtime: Runtime) -> None:
    scan(runtime).run_scope(None)
    tasks: list[PageTask] = []
    run_id = scan(runtime, tasks=tasks).start(None).run_id
    assert drain(runtime, tasks)[-1] == "deletes:done"

    late = PageTask(kind="deletes", template=CARDS, scope="all", run_id=run_id, index=0)
    assert scan(runtime).run_task(late) == "stale"


# -- a first load: no state before it, so no delete candidate after it -------------------------------------------


def test_a_fanned_out_first_load_closes_without_a_delete_search(runtime: Runtime, stores: Stores) -> None:
    """Every state at its end was made during it: reading them all back for candidates found none, and cost a
    minute or more at a million records."""
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks, delete_check_states=20).start(None)

    assert drain(runtime, tasks, delete_check_states=20) == ["page:done"] * 3
    mark = runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all")
    assert mark.last_status == "completed" and mark.open_run == "" and '"written": 60' in mark.last_counts
    assert stores.differences(CARDS) == []
    assert list(runtime.state.checkpoints.table.list_entities()) == []


def test_an_in_place_first_load_skips_the_delete_search_and_says_so(runtime: Runtime,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="loyaltysync.sync"):
        summary = scan(runtime).run_scope(None)
    assert (summary.written, summary.status) == (60, "completed")
    assert any("delete search skipped" in r.getMessage() for r in caplog.records)


def test_a_resumed_first_load_still_skips_the_search_though_its_states_exist_now(runtime: Runtime) -> None:
    tasks: list[PageTask] = []
    run_id = scan(runtime, tasks=tasks, delete_check_states=20).start(None).run_id
    assert scan(runtime).run_page(tasks[0]) == "done"  # then the host stopped; the other messages are lost
    expire_lease(runtime)

    again: list[PageTask] = []
    resumed = scan(runtime, tasks=again, delete_check_states=20).start(None)

    assert resumed.run_id == run_id
    assert drain(runtime, again, delete_check_states=20) == ["page:done"] * 2


def test_a_run_that_began_with_states_searches_for_deletes(runtime: Runtime) -> None:
    scan(runtime).run_scope(None)
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks, delete_check_states=20).start(None)

    assert drain(runtime, tasks, delete_check_states=20) == ["page:done"] * 3 + ["deletes:done"] * 3
