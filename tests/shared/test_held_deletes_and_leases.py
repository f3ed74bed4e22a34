"""Safe by default, through the command line and the real app object against the emulators and Azurite: no
mass delete without an operator's consent (in place and fanned out), a dead run's lease says whose it is and
can be broken, and ``status`` shows runs in progress, held deletes and failures with their time."""

from __future__ import annotations

import json
import re
from typing import Any

import azure.functions as func
import pytest
import requests

from devtools.functions_host import QueuePump, invoke_http, invoke_timer
from shared.cli import EXIT_DELETES_HELD, EXIT_SKIPPED, main
from shared.messages import PageTask
from shared.runtime import Runtime
from shared.state.checkpoints import CheckpointConflict, RunCheckpoint
from shared.state.store import Watermark
from shared.sync.runs import Run, RunSummary
from shared.sync.scan.finaliser import Finaliser
from shared.sync.scan.ranges import RangeWorker
from tests.configured import runtime_with
from tests.conftest import SEED
from tests.e2e.stores import Stores
from tests.shared.sync.test_scan import drain, expire_lease, scan

CARDS = "loyalty_cards"  # 60 cards in the emulator's seed


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run the command line with ``--json``: exit code, parsed output (None if none), stderr."""
    code = main(["--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def status_row(capsys: pytest.CaptureFixture[str], template: str = CARDS, scope: str = "all",
               direction: str = "fo_to_dataverse") -> dict[str, str]:
    _, rows, _ = cli(capsys, "status")
    [row] = [r for r in rows if (r["template"], r["scope"], r["direction"]) == (template, scope, direction)]
    return row  # type: ignore[no-any-return]


def reseed_commerce(stores: Stores, cards: int) -> None:
    """Commerce's card set replaced by one of ``cards`` cards (a data refresh, or a wrong environment)."""
    requests.post(f"{stores.commerce_url}/_emulator/reset", json={**SEED, "cards": cards}, timeout=10).raise_for_status()


def mark(runtime: Runtime, template: str = CARDS) -> Watermark:
    return runtime.state.watermarks.get(template, "fo_to_dataverse", "all")


def dataverse_cards(stores: Stores) -> int:
    return len(stores.dataverse_rows("msdyn_loyaltycards"))


def ops(name: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    import function_app

    raw = b"" if body is None else json.dumps(body).encode()
    req = func.HttpRequest("POST" if body is not None else "GET", "http://localhost/api/ops", body=raw,
                           headers=headers or {})
    response = invoke_http(function_app.app, name, req)
    return response.status_code, json.loads(response.get_body())


def ops_status_row(template: str = CARDS) -> dict[str, str]:
    status, body = ops("ops_status")
    assert status == 200
    [row] = [r for r in body["watermarks"] if r["template"] == template and r["direction"] == "fo_to_dataverse"]
    return row  # type: ignore[no-any-return]


# -- 1. no mass delete without consent: in place (the command line) ---------------------------------------------


def test_a_reseed_to_fewer_records_holds_the_deletes_and_an_approval_lets_the_next_run_make_them(
        runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "sync", CARDS)[0] == 0
    reseed_commerce(stores, 20)

    code, [summary], err = cli(capsys, "sync", CARDS)

    assert code == EXIT_DELETES_HELD and summary["status"] == "deletes_held" and summary["deleted"] == 0
    assert "40 deletes held" in summary["detail"] and "SYNC_DELETE_THRESHOLD_SHARE=0.2 of 60" in summary["detail"]
    assert "python -m shared.cli approve-deletes loyalty_cards" in err
    assert dataverse_cards(stores) == 60  # nothing deleted
    row = status_row(capsys)
    assert row["status"] == "deletes_held" and row["held"].startswith("40 deletes of 60 records held by run ")
    assert row["approval"] == ""
    assert cli(capsys, "status")[0] == EXIT_DELETES_HELD  # status says so in its exit code too

    code, [approval], _ = cli(capsys, "approve-deletes", CARDS, "--by", "alice")
    assert code == 0 and (approval["scope"], approval["deletes"], approval["approved_by"]) == ("all", 40, "alice")
    assert approval["held_run"] == mark(runtime).held_run
    assert status_row(capsys)["approval"].startswith("40 deletes approved by alice at ")

    code, [summary], _ = cli(capsys, "sync", CARDS)

    assert code == 0 and (summary["status"], summary["deleted"]) == ("completed", 40)
    assert "40 deletes approved by alice" in summary["detail"]
    assert stores.differences(CARDS) == [] and dataverse_cards(stores) == 20
    row = status_row(capsys)
    assert (row["status"], row["held"]) == ("completed", "")
    assert f"used by run {mark(runtime).last_run_id}" in row["approval"]  # who and when stay on record


def test_deletes_up_to_the_threshold_go_through_and_one_more_is_held(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    runtime_with(monkeypatch, SYNC_DELETE_THRESHOLD="3", SYNC_DELETE_THRESHOLD_SHARE="1")
    cli(capsys, "sync", CARDS)
    cards = [str(r["CardNumber"]) for r in stores.commerce_rows(CARDS)]
    for card in cards[:3]:
        stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")

    code, [summary], _ = cli(capsys, "sync", CARDS)

    assert code == 0 and (summary["status"], summary["deleted"]) == ("completed", 3)
    assert dataverse_cards(stores) == 57
    for card in cards[3:7]:
        stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")

    code, [summary], _ = cli(capsys, "sync", CARDS)

    assert code == EXIT_DELETES_HELD and summary["deleted"] == 0
    assert "4 deletes held" in summary["detail"] and "SYNC_DELETE_THRESHOLD=3" in summary["detail"]
    assert dataverse_cards(stores) == 57


def test_the_source_coming_back_clears_the_hold(runtime: Runtime, stores: Stores,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "sync", CARDS)
    reseed_commerce(stores, 20)
    assert cli(capsys, "sync", CARDS)[0] == EXIT_DELETES_HELD
    reseed_commerce(stores, SEED["cards"])  # the right environment again

    code, [summary], _ = cli(capsys, "sync", CARDS)

    assert code == 0 and (summary["status"], summary["deleted"]) == ("completed", 0)
    assert stores.differences(CARDS) == [] and dataverse_cards(stores) == 60
    row = status_row(capsys)
    assert (row["status"], row["held"]) == ("completed", "")
    assert mark(runtime).held_deletes == 0


def test_approving_with_nothing_held_is_an_error_and_a_company_specific_template_needs_the_company(
        runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "approve-deletes", CARDS)
    assert code == 1 and "no deletes held for loyalty_cards/all" in err
    with pytest.raises(SystemExit) as caught:
        main(["approve-deletes", "loyalty_levels"])
    assert caught.value.code == 2 and "name the company" in capsys.readouterr().err


# -- 1. no mass delete without consent: fanned out (the timer and the pages queue of the real app) ----------------


def test_a_fanned_out_run_counts_first_holds_then_deletes_once_approved(runtime: Runtime, stores: Stores,
                                                                         pump: QueuePump) -> None:
    import function_app

    invoke_timer(function_app.app, "timer_loyalty_cards")
    pump.drain()
    reseed_commerce(stores, 20)

    invoke_timer(function_app.app, "timer_loyalty_cards")
    assert pump.drain() == 2  # the key range and the delete check: no delete pass

    assert dataverse_cards(stores) == 60
    held = mark(runtime)
    assert (held.last_status, held.held_deletes, held.held_states, held.open_run, held.lease_owner) == (
        "deletes_held", 40, 60, "", "")
    row = ops_status_row()
    assert row["status"] == "deletes_held" and row["held"].startswith("40 deletes of 60")

    status, approval = ops("ops_approve_deletes", {"template": CARDS},
                           headers={"x-ms-client-principal-name": "bob@contoso.com"})
    assert status == 200 and approval["deletes"] == 40 and approval["approved_by"].startswith("bob@contoso.com")

    invoke_timer(function_app.app, "timer_loyalty_cards")
    assert pump.drain() == 3  # the range, the delete check, and now a delete pass

    done = mark(runtime)
    assert (done.last_status, done.held_deletes, done.approval_spent_by) == ("completed", 0, done.last_run_id)
    assert json.loads(done.last_counts)["deleted"] == 40
    assert stores.differences(CARDS) == []


def test_fanned_out_deletes_below_the_threshold_go_through_as_before(runtime: Runtime, stores: Stores,
                                                                     pump: QueuePump) -> None:
    import function_app

    invoke_timer(function_app.app, "timer_loyalty_cards")
    pump.drain()
    gone = stores.commerce_rows(CARDS)[7]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{gone}')")

    invoke_timer(function_app.app, "timer_loyalty_cards")
    pump.drain()

    done = mark(runtime)
    assert done.last_status == "completed" and json.loads(done.last_counts)["deleted"] == 1
    assert stores.differences(CARDS) == []


def test_a_fanned_out_source_coming_back_clears_the_hold(runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    import function_app

    invoke_timer(function_app.app, "timer_loyalty_cards")
    pump.drain()
    reseed_commerce(stores, 20)
    invoke_timer(function_app.app, "timer_loyalty_cards")
    pump.drain()
    assert mark(runtime).held_deletes == 40
    reseed_commerce(stores, SEED["cards"])

    invoke_timer(function_app.app, "timer_loyalty_cards")
    pump.drain()

    done = mark(runtime)
    assert (done.last_status, done.held_deletes, done.held_run) == ("completed", 0, "")
    assert stores.differences(CARDS) == [] and dataverse_cards(stores) == 60


def test_when_the_last_checks_finish_together_exactly_one_worker_decides(runtime: Runtime, stores: Stores,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    scan(runtime).run_scope(None)
    for row in stores.commerce_rows(CARDS)[:5]:
        stores.delete_in_commerce(f"RetailLoyaltyCards('{row['CardNumber']}')")
    tasks: list[PageTask] = []
    scan(runtime, tasks=tasks, delete_check_states=20).start(None)
    with monkeypatch.context() as m:  # every check completes before any worker looks at the others
        m.setattr(Finaliser, "maybe_close", lambda self, plan: None)
        assert set(drain(runtime, tasks, delete_check_states=20)) == {"page:done", "deletes:done"}
    run_id = mark(runtime).open_run
    plan = runtime.state.checkpoints.get_plan(CARDS, "all", run_id)
    assert plan is not None and not plan.decision
    first: list[PageTask] = []
    second: list[PageTask] = []
    save_plan = runtime.state.checkpoints.save_plan
    raced: list[str] = []

    def the_other_worker_decides_first(p: RunCheckpoint) -> RunCheckpoint:
        if p.decision and not raced:  # worker one is about to write its decision
            raced.append("yes")
            scan(runtime, tasks=second, delete_check_states=20).finaliser.maybe_close(plan)
        return save_plan(p)

    monkeypatch.setattr(runtime.state.checkpoints, "save_plan", the_other_worker_decides_first)
    assert scan(runtime, tasks=first, delete_check_states=20).finaliser.maybe_close(plan) is None
    monkeypatch.undo()

    assert raced and first == [] and len(second) >= 2 and {t.kind for t in second} == {"delete_pass"}
    assert drain(runtime, [second[0], *second]) == [  # a pass delivered twice is made once
        "delete_pass:done", "delete_pass:duplicate", *(["delete_pass:done"] * (len(second) - 1))]
    done = mark(runtime)
    assert (done.last_status, done.run_seq, json.loads(done.last_counts)["deleted"]) == ("completed", 2, 5)
    assert stores.differences(CARDS) == []


def test_a_run_stopped_before_its_decision_decides_when_it_resumes(runtime: Runtime, stores: Stores,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    scan(runtime).run_scope(None)
    gone = stores.commerce_rows(CARDS)[12]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{gone}')")
    tasks: list[PageTask] = []
    run_id = scan(runtime, tasks=tasks, delete_check_states=20).start(None).run_id
    save_plan = runtime.state.checkpoints.save_plan

    def host_stops_at_the_decision(p: RunCheckpoint) -> RunCheckpoint:
        if p.decision:
            raise CheckpointConflict("the host stopped")  # the decision was never written
        return save_plan(p)

    with monkeypatch.context() as m:
        m.setattr(runtime.state.checkpoints, "save_plan", host_stops_at_the_decision)
        assert drain(runtime, tasks, delete_check_states=20)[-1] == "deletes:done"
    assert runtime.state.checkpoints.delete_passes(runtime.state.checkpoints.get_plan(CARDS, "all", run_id)) != []
    expire_lease(runtime)

    again: list[PageTask] = []
    resumed = scan(runtime, tasks=again, delete_check_states=20).start(None)

    assert resumed.run_id == run_id and [t.kind for t in again] == ["delete_pass"]
    assert drain(runtime, again) == ["delete_pass:done"]
    assert json.loads(mark(runtime).last_counts)["deleted"] == 1 and stores.differences(CARDS) == []


# -- 2. a crashed run does not silently block the next ---------------------------------------------------------------


class Killed(BaseException):
    """The process was killed (SIGKILL)."""


def killed_after_its_first_key_range(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> str:
    """An in-place scan (ranges of 25 of the 60 cards) whose process dies (SIGKILL: no failure handling runs)
    once its first range is checkpointed; returns its run id."""
    process = RangeWorker.process
    ranges: list[int] = []

    def die_at_the_second_range(self: RangeWorker, *args: Any, **kwargs: Any) -> None:
        ranges.append(1)
        if len(ranges) == 2:
            raise Killed
        process(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(RangeWorker, "process", die_at_the_second_range)
        m.setattr(Run, "fail", lambda self, exc: self.summary)  # nothing records the failure or frees the lease
        with pytest.raises(Killed):
            runtime.scan(CARDS).run()
    return mark(runtime).lease_owner


def test_a_run_skipped_by_a_dead_runs_lease_says_whose_and_exits_non_zero_until_an_operator_breaks_it(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    runtime = runtime_with(monkeypatch, SYNC_PAGE_SIZE="25")
    dead = killed_after_its_first_key_range(runtime, monkeypatch)
    until = mark(runtime).lease_until
    assert dead and mark(runtime).open_run == dead

    code, [summary], err = cli(capsys, "sync", CARDS)

    assert code == EXIT_SKIPPED and summary["status"] == "skipped"
    assert summary["detail"] == f"run {dead} holds the lease on this scope until {until}"
    assert f"run {dead} holds the lease" in err and "python -m shared.cli break-lease loyalty_cards" in err

    code, [broken], _ = cli(capsys, "break-lease", CARDS)

    assert code == 0 and (broken["broken"], broken["run"], broken["until"], broken["open_run"]) == (
        True, dead, until, dead)
    assert mark(runtime).lease_owner == "" and mark(runtime).open_run == dead
    writes = stores.dataverse_writes()

    code, [summary], _ = cli(capsys, "sync", CARDS)

    assert code == 0 and summary["status"] == "completed" and summary["seen"] == 60
    assert mark(runtime).last_run_id == dead  # the dead run was resumed from its checkpoints ...
    assert stores.dataverse_writes() - writes == 2  # ... so only its two last key ranges were written now
    assert stores.differences(CARDS) == []


def test_breaking_the_lease_through_the_endpoint_and_when_there_is_none(runtime: Runtime,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = runtime_with(monkeypatch, SYNC_PAGE_SIZE="25")
    dead = killed_after_its_first_key_range(runtime, monkeypatch)

    status, body = ops("ops_break_lease", {"template": CARDS, "direction": "both", "by": "carol"})

    assert status == 200
    assert [(r["direction"], r["broken"], r["run"], r["open_run"]) for r in body["value"]] == [
        ("fo_to_dataverse", True, dead, dead), ("dataverse_to_fo", False, "", "")]
    assert ops("ops_break_lease", {"template": CARDS})[1]["value"][0]["broken"] is False
    assert ops("ops_break_lease", {"template": "loyalty_levels"})[0] == 400  # which company?
    assert ops("ops_break_lease", {"template": CARDS, "direction": "sideways"})[0] == 400
    assert ops("ops_approve_deletes", {"template": CARDS})[0] == 409  # nothing held
    [summary] = runtime.scan(CARDS).run()
    assert (summary.run_id, summary.status) == (dead, "completed")


# -- 3. status: runs in progress, interrupted runs, failures with their time ----------------------------------------


def test_status_shows_a_fanned_out_run_in_progress_with_its_ranges_and_records(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, azurite: Any) -> None:
    import function_app

    runtime = runtime_with(monkeypatch, SYNC_PAGE_SIZE="25")
    pump = QueuePump(function_app.app, azurite.connection_string)
    invoke_timer(function_app.app, "timer_loyalty_cards")

    run_id = mark(runtime).open_run
    row = ops_status_row()
    assert (row["status"], row["progress"]) == ("running", "ranges 0/3, seen 0 of 60")
    assert row["run"] == f"{run_id} until {mark(runtime).lease_until}"
    assert pump.run_once(max_messages=2) == 2
    row = ops_status_row()
    assert (row["status"], row["progress"]) == ("running", "ranges 2/3, seen 50 of 60")
    pump.drain()
    row = ops_status_row()
    assert (row["status"], row["progress"], row["run"]) == ("completed", "", "")


def test_status_shows_an_interrupted_run_and_a_failed_one_with_its_reason_and_time(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    runtime = runtime_with(monkeypatch, SYNC_PAGE_SIZE="25")
    dead = killed_after_its_first_key_range(runtime, monkeypatch)
    row = status_row(capsys)
    assert (row["status"], row["progress"]) == ("running", "ranges 1/2+, seen 25 of 60")
    assert row["run"].startswith(f"{dead} until ")
    expire_lease(runtime)  # the app's clock moves past the dead run's lease
    row = ops_status_row()
    assert (row["status"], row["progress"]) == ("interrupted", "ranges 1/2+, seen 25 of 60")

    def commerce_fails(self: RangeWorker, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Commerce went away")

    with monkeypatch.context() as m:
        m.setattr(RangeWorker, "process", commerce_fails)
        with pytest.raises(RuntimeError):
            runtime.scan(CARDS).run()  # the next run resumes the interrupted one and fails

    row = status_row(capsys)
    assert (row["status"], row["reason"]) == ("failed", "RuntimeError: Commerce went away")
    assert row["failed_at"] == runtime.state.clock.now().isoformat()
    assert row["progress"] == "ranges 1/2+, seen 25 of 60"  # it failed in its second range again
    runtime.scan(CARDS).run()
    row = status_row(capsys)
    assert (row["status"], row["reason"], row["failed_at"], row["progress"]) == ("completed", "", "", "")


def test_a_summary_of_a_skipped_run_names_the_holder(runtime: Runtime) -> None:
    runtime.state.watermarks.acquire_lease(CARDS, "fo_to_dataverse", "all", "run-elsewhere", 600)
    [summary] = runtime.scan(CARDS).run()
    assert isinstance(summary, RunSummary) and summary.status == "skipped"
    assert re.fullmatch(r"run run-elsewhere holds the lease on this scope until \S+", summary.detail)
