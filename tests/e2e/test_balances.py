"""Points balances end to end: Commerce's transaction lines folded into lsync_loyaltycardbalance (the aggregate
template loyalty_card_balances), against both emulators and Azurite: the first build, the incremental pass after
redemptions, returns, vesting and expiry, pooled cards, a crash mid-build, deletes and the cost in requests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests

from devtools.functions_host import QueuePump, invoke_http, invoke_timer
from emulators.commerce.loyalty_activity import CommerceLoyaltyAdmin
from emulators.commerce.server import start_commerce
from shared.balances.fold import BalanceSettings, as_row
from shared.dataverse.metadata import MetadataClient
from shared.mapping.plan import LookupValue
from shared.provision import Provisioner, app_owned
from shared.runtime import Runtime
from shared.sync.aggregate import INCREMENTAL_SCOPE, AggregateSync
from shared.sync.compare import Finding
from shared.sync.reconcile import Reconciler
from shared.sync.runs import DIRECTION_OUT
from tests.builders import as_body
from tests.clock import ManualClock
from tests.conftest import SEED
from tests.data_events import data_event, webhook_request
from tests.e2e.stores import Stores

TEMPLATE = "loyalty_card_balances"
TABLE = "lsync_loyaltycardbalances"
AS_OF = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # the emulator's lines are generated up to its as_of, 2026-12-01


@pytest.fixture(scope="module")
def commerce_emulator() -> Iterator[object]:
    """F&O's own page size (10,000), so request counts are counts of queries, not of small test pages."""
    server = start_commerce(port=0, publisher_options={"retry_wait": 0.05, "timeout": 10.0}, cards=SEED["cards"],
                            reward_points=SEED["reward_points"], levels_per_company=SEED["levels_per_company"])
    yield server
    server.stop()


@pytest.fixture()
def clock(runtime: Runtime) -> ManualClock:
    clock = ManualClock(AS_OF)
    runtime.state.clock = clock
    return clock


@pytest.fixture()
def admin(stores: Stores) -> CommerceLoyaltyAdmin:
    return CommerceLoyaltyAdmin(stores.commerce_url)


@pytest.fixture()
def engine(runtime: Runtime, stores: Stores, clock: ManualClock) -> Iterator[AggregateSync]:
    """The balance table provisioned, cards and reward points synced (the lookups' targets), the engine."""
    provisioner = Provisioner(MetadataClient(runtime.dataverse.core), app_owned(runtime.catalog, [TEMPLATE]),
                              runtime.settings.dataverse_solution, clock=clock, sleep=clock.advance)
    outcome = provisioner.apply(provisioner.plan())
    assert outcome.problems == []
    runtime.scan("loyalty_cards").run()
    runtime.scan("loyalty_reward_points").run()
    engine = runtime.outbound(TEMPLATE)
    assert isinstance(engine, AggregateSync)
    yield engine


def build(runtime: Runtime) -> Any:
    [summary] = runtime.scan(TEMPLATE).run()
    return summary


def expected(stores: Stores, today: date) -> dict[tuple[str, ...], dict[str, Any]]:
    """What Dataverse should hold: Commerce's lines of each card folded as of ``today``, through the plan."""
    runtime = stores.runtime
    engine = runtime.outbound(TEMPLATE)
    assert isinstance(engine, AggregateSync)
    plan = runtime.catalog.plan(TEMPLATE)
    rows = sorted(runtime.commerce.iter_rows(plan.template.commerce.entity_set, select=list(plan.select_properties)),
                  key=lambda r: (r["CardNumber"], r["RewardPointId"]))
    result: dict[tuple[str, ...], dict[str, Any]] = {}
    for fold in engine.fold_cards(rows, today):
        for balance in fold.balances:
            record = plan.to_dataverse(as_row(balance))
            result[record.key] = {k: (v.match_value if isinstance(v, LookupValue) else v)
                                  for k, v in record.columns.items() if k != "lsync_asof"}
    return result


def actual(stores: Stores) -> dict[tuple[str, ...], dict[str, Any]]:
    return {key: {k: v for k, v in columns.items() if k != "lsync_asof"}
            for key, columns in stores.actual(TEMPLATE).items()}


def versions(stores: Stores) -> dict[tuple[str, str], Any]:
    """Each balance row's row version (Dataverse's ``versionnumber``, which every write of the row moves)."""
    return {(r["lsync_cardnumber"], r["lsync_rewardpointid"]): r["versionnumber"] for r in stores.dataverse_rows(TABLE)}


def written(stores: Stores, before: dict[tuple[str, str], Any]) -> set[tuple[str, str]]:
    """The balance rows written (created, updated or deleted) since ``before`` was taken."""
    after = versions(stores)
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def a_card_with_points(stores: Stores, *, tender: str = "AsCardTender") -> tuple[str, str]:
    """A card of that tender type with available points on a redeemable reward point."""
    today = AS_OF.date()
    for key, columns in sorted(expected(stores, today).items()):
        card = key[0]
        row = next(r for r in stores.commerce_rows("loyalty_cards") if r["CardNumber"] == card)
        if row["CardTenderType"] == tender and columns["lsync_available"] and columns["lsync_available"] >= 5:
            return key  # type: ignore[return-value]
    raise AssertionError(f"no {tender} card with points in the generated data")


# -- the first build ----------------------------------------------------------------------------------------------


def test_the_first_build_writes_one_row_per_card_and_reward_point_exactly(engine: AggregateSync, runtime: Runtime,
                                                                          stores: Stores) -> None:
    summary = build(runtime)
    want = expected(stores, AS_OF.date())
    got = actual(stores)
    print({k: {c: (got[k].get(c), w[c]) for c in w if got[k].get(c) != w[c]} for k, w in list(want.items())[:2]})
    assert actual(stores) == want
    assert (summary.written, summary.failed) == (len(want), 0) and len(want) > 0


def test_a_second_build_writes_nothing(engine: AggregateSync, runtime: Runtime, stores: Stores) -> None:
    build(runtime)
    before = stores.dataverse_writes()
    again = build(runtime)
    assert (stores.dataverse_writes(), again.written, again.unchanged) == (before, 0, again.seen)


def test_the_timer_fans_the_build_out_and_the_page_workers_finish_it(engine: AggregateSync, runtime: Runtime,
                                                                     stores: Stores, pump: QueuePump,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import function_app

    monkeypatch.setattr(runtime.settings, "fan_out", True)
    monkeypatch.setattr(engine, "page_size", 100)  # several key ranges of whole cards
    invoke_timer(function_app.app, f"timer_{TEMPLATE}")
    assert actual(stores) == {}  # the timer only planned and queued the key ranges
    assert pump.drain() > 1
    mark = runtime.state.watermarks.get(TEMPLATE, DIRECTION_OUT, "all")
    assert (mark.last_status, mark.open_run) == ("completed", "")
    assert actual(stores) == expected(stores, AS_OF.date())


def test_the_rows_look_up_their_card_and_reward_point(engine: AggregateSync, runtime: Runtime, stores: Stores) -> None:
    build(runtime)
    cards = stores.codes("msdyn_loyaltycards", "msdyn_loyaltycardid", "msdyn_cardnumber")
    points = stores.codes("msdyn_loyaltyrewardpoints", "msdyn_loyaltyrewardpointid", "msdyn_rewardpointid")
    rows = stores.dataverse_rows(TABLE)
    assert rows and all(cards[r["_lsync_card_value"]] == r["lsync_cardnumber"]
                        and points[r["_lsync_rewardpoint_value"]] == r["lsync_rewardpointid"] for r in rows)


# -- the incremental pass ---------------------------------------------------------------------------------------


def test_a_redemption_changes_exactly_that_cards_balance_row(engine: AggregateSync, runtime: Runtime, stores: Stores,
                                                             admin: CommerceLoyaltyAdmin, clock: ManualClock) -> None:
    build(runtime)
    card, point = a_card_with_points(stores)
    admin.redeem(card, 5, reward_point=point, at=AS_OF + timedelta(hours=1))
    clock.advance(3600)
    before = versions(stores)
    summary = engine.incremental()
    assert written(stores, before) == {(card, point)}
    assert summary.written == 1
    assert actual(stores) == expected(stores, AS_OF.date())


def test_a_return_changes_exactly_that_cards_balance_row(engine: AggregateSync, runtime: Runtime, stores: Stores,
                                                         admin: CommerceLoyaltyAdmin, clock: ManualClock) -> None:
    build(runtime)
    card, point = a_card_with_points(stores)
    admin.return_earned(card, 3, reward_point=point, at=AS_OF + timedelta(hours=1))
    before = versions(stores)
    engine.incremental()
    assert written(stores, before) == {(card, point)}
    assert actual(stores) == expected(stores, AS_OF.date())


def test_a_redemption_on_a_pooled_card_recomputes_every_card_of_the_customer(
        engine: AggregateSync, runtime: Runtime, stores: Stores, admin: CommerceLoyaltyAdmin) -> None:
    build(runtime)
    card, point = a_card_with_points(stores, tender="AsContactTender")
    pool = set(admin.card_pool(card))
    result = admin.redeem(card, 5, reward_point=point, at=AS_OF + timedelta(hours=1))
    consumed = {(line["CardNumber"], line["RewardPointId"]) for line in result.changed}
    before = versions(stores)
    engine.incremental()
    assert consumed <= written(stores, before)
    assert {c for c, _ in written(stores, before)} <= pool | {card}
    assert actual(stores) == expected(stores, AS_OF.date())


def test_a_vesting_date_passing_changes_exactly_the_rows_due_that_day(engine: AggregateSync, runtime: Runtime,
                                                                       stores: Stores, clock: ManualClock) -> None:
    build(runtime)
    rows = actual(stores)
    first = min(columns["lsync_nextchangedate"] for columns in rows.values() if columns["lsync_nextchangedate"])
    day = date.fromisoformat(first[:10])
    clock.advance((datetime(day.year, day.month, day.day, 9, tzinfo=UTC) - clock.now()).total_seconds())
    want = expected(stores, day)
    changed = {key for key, columns in want.items() if columns != rows.get(key)}
    before = versions(stores)
    engine.incremental()
    assert changed and written(stores, before) == changed
    assert actual(stores) == want


def test_an_expiry_moves_points_from_available_to_expired(engine: AggregateSync, runtime: Runtime, stores: Stores,
                                                          admin: CommerceLoyaltyAdmin, clock: ManualClock) -> None:
    build(runtime)
    card, point = a_card_with_points(stores)
    expires = AS_OF.date() + timedelta(days=2)
    admin.earn(card, 40, reward_point=point, at=AS_OF + timedelta(hours=1), start_date=AS_OF.date(),
               expiration_date=expires)
    engine.incremental()
    earlier = actual(stores)[(card, point)]
    clock.advance(3 * 86_400)  # the day after the expiration date
    before = versions(stores)
    engine.incremental()
    later = actual(stores)[(card, point)]
    assert (card, point) in written(stores, before)
    assert later["lsync_expired"] - earlier["lsync_expired"] >= 40
    assert actual(stores) == expected(stores, clock.now().date())


def test_an_incremental_pass_with_nothing_new_writes_nothing(engine: AggregateSync, runtime: Runtime,
                                                             stores: Stores) -> None:
    build(runtime)
    engine.incremental()
    before = stores.dataverse_writes()
    summary = engine.incremental()
    assert (stores.dataverse_writes(), summary.written) == (before, 0)


def test_the_incremental_pass_reads_few_commerce_pages(engine: AggregateSync, runtime: Runtime, stores: Stores,
                                                       admin: CommerceLoyaltyAdmin) -> None:
    build(runtime)
    engine.incremental()
    cards = sorted({k[0] for k in actual(stores)})[:30]
    admin.post_activities([{"kind": "earn", "card": c, "points": 7, "at": (AS_OF + timedelta(hours=2)).isoformat()}
                           for c in cards])
    requests.post(f"{stores.commerce_url}/_emulator/stats/reset", timeout=10).raise_for_status()
    engine.incremental()
    stats = requests.get(f"{stores.commerce_url}/_emulator/stats", timeout=10).json()
    # the recent lines, the pooled customers' cards, the 30 cards' lines (one or-ed read)
    assert stats["by_method"].get("GET", 0) <= 3


def test_an_incremental_pass_before_any_build_is_skipped(engine: AggregateSync) -> None:
    summary = engine.incremental()
    assert summary.status == "skipped"


def test_a_data_event_on_the_transactions_virtual_table_recomputes_its_card(
        engine: AggregateSync, runtime: Runtime, stores: Stores, admin: CommerceLoyaltyAdmin, pump: QueuePump) -> None:
    import function_app

    build(runtime)
    card, point = a_card_with_points(stores)
    line = admin.redeem(card, 2, reward_point=point, at=AS_OF + timedelta(hours=1)).line
    spec = engine.plan.template.data_event
    assert spec is not None
    attributes = {column: line[prop] for prop, column in spec.key_columns.items()}
    event = data_event(table=spec.virtual_table, attributes=attributes)
    before = versions(stores)
    response = invoke_http(function_app.app, f"callback_{TEMPLATE}", webhook_request(TEMPLATE, as_body(event)))
    assert response.status_code == 202
    assert pump.drain() == 1
    assert written(stores, before) == {(card, point)}
    assert actual(stores) == expected(stores, AS_OF.date())


# -- deletes, agents' edits, crashes ----------------------------------------------------------------------------


def test_a_card_whose_lines_are_gone_loses_its_rows_through_the_delete_guard(engine: AggregateSync, runtime: Runtime,
                                                                             stores: Stores) -> None:
    build(runtime)
    card, _ = sorted(actual(stores))[0]
    for line in CommerceLoyaltyAdmin(stores.commerce_url).card_lines(card):
        assert runtime.commerce.delete(engine.entity_set, {p: line[p] for p in engine.spec.line_key})
    summary = build(runtime)
    assert summary.deleted >= 1 and not any(k[0] == card for k in actual(stores))
    assert actual(stores) == expected(stores, AS_OF.date())


def test_an_agents_edit_is_overwritten_by_the_next_pass_and_logged(engine: AggregateSync, runtime: Runtime,
                                                                   stores: Stores,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    build(runtime)
    engine.incremental()  # takes the change-tracking link
    card, point = a_card_with_points(stores)
    stores.change_in_dataverse(f"{TABLE}(lsync_cardnumber='{card}',lsync_rewardpointid='{point}')",
                               {"lsync_available": 999999})
    before = versions(stores)
    with caplog.at_level("WARNING", logger="loyaltysync.sync"):
        engine.incremental()
    assert written(stores, before) == {(card, point)}
    assert actual(stores)[(card, point)] == expected(stores, AS_OF.date())[(card, point)]
    assert any("edited in Dataverse" in r.getMessage() and card in r.getMessage() for r in caplog.records)


def test_the_apps_own_writes_are_not_taken_for_edits(engine: AggregateSync, runtime: Runtime, stores: Stores,
                                                     admin: CommerceLoyaltyAdmin) -> None:
    build(runtime)
    engine.incremental()
    card, point = a_card_with_points(stores)
    admin.redeem(card, 1, reward_point=point, at=AS_OF + timedelta(hours=1))
    assert engine.incremental().written == 1
    before = versions(stores)
    summary = engine.incremental()
    assert (summary.written, written(stores, before)) == (0, set())


def test_a_build_that_crashed_mid_way_resumes_without_rewriting_what_it_wrote(engine: AggregateSync, runtime: Runtime,
                                                                             stores: Stores,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    scan = runtime.scan(TEMPLATE)
    scan.reader.page_size = 100  # several key ranges
    ranges = 0
    process = scan.ranges.process

    def crash_on_the_third(*args: Any, **kwargs: Any) -> None:
        nonlocal ranges
        ranges += 1
        if ranges == 3:
            raise ConnectionError("worker lost")
        process(*args, **kwargs)

    monkeypatch.setattr(scan.ranges, "process", crash_on_the_third)
    with pytest.raises(ConnectionError):
        scan.run()
    before = versions(stores)
    assert before  # the first ranges were written before the crash
    monkeypatch.setattr(scan.ranges, "process", process)
    mark = runtime.state.watermarks.get(TEMPLATE, DIRECTION_OUT, "all")
    runtime.state.watermarks.save(type(mark)(**{**mark.__dict__, "lease_owner": "", "lease_until": ""}))
    [summary] = scan.run()
    want = expected(stores, AS_OF.date())
    assert written(stores, before) == set(want) - set(before)  # the ranges done before the crash are not redone
    assert (summary.written, actual(stores)) == (len(want), want)


def test_reconcile_finds_an_edited_and_a_deleted_balance_row_and_repairs_them(engine: AggregateSync,
                                                                            runtime: Runtime, stores: Stores) -> None:
    build(runtime)
    (card, point), (gone_card, gone_point) = sorted(actual(stores))[:2]
    stores.change_in_dataverse(f"{TABLE}(lsync_cardnumber='{card}',lsync_rewardpointid='{point}')",
                               {"lsync_issued": 1})
    stores.delete_in_dataverse(f"{TABLE}(lsync_cardnumber='{gone_card}',lsync_rewardpointid='{gone_point}')")
    findings: list[Finding] = []
    summary = Reconciler(engine).run(None, findings.append)
    assert sorted((f.kind, f.key, [c.column for c in f.columns]) for f in findings) == [
        ("different", (card, point), ["lsync_issued"]), ("missing", (gone_card, gone_point), [])]
    assert summary.equal == len(expected(stores, AS_OF.date())) - 2  # the as-of date is not compared
    Reconciler(engine).run(None, findings.append, repair=True)
    assert actual(stores) == expected(stores, AS_OF.date())


def test_the_incremental_pass_has_its_own_status_row(engine: AggregateSync, runtime: Runtime) -> None:
    build(runtime)
    engine.incremental()
    mark = runtime.state.watermarks.get(TEMPLATE, DIRECTION_OUT, INCREMENTAL_SCOPE)
    assert mark.last_status == "completed" and mark.run_seq == 1


def test_today_follows_the_configured_time_zone(engine: AggregateSync, clock: ManualClock) -> None:
    clock.advance(15 * 3600)  # 2026-12-02 00:00 UTC
    engine.balance_settings = BalanceSettings(timezone="America/New_York")
    assert engine.today() == date(2026, 12, 1)
