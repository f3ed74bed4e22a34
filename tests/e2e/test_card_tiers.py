"""Card tiers end to end (Commerce ``LoyaltyCardTiersV2`` -> app-owned ``lsync_loyaltycardtier``): emulators over real
HTTP, Azurite for state, the table provisioned from the template's ``dataverse.table`` block, the real engine."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
import requests

from devtools.functions_host import LocalFunctionsHost, QueuePump
from emulators.commerce.loyalty_activity import CommerceLoyaltyAdmin
from shared.runtime import Runtime
from shared.state.store import encode_key
from tests.clock import ManualClock
from tests.e2e.stores import Stores

TEMPLATE = "loyalty_card_tiers"
TABLE = "lsync_loyaltycardtiers"
PROGRAM = "Contoso Rewards"  # the emulator's tiers: Basic 1, Silver 2, Gold 3, Platinum 4
CARD = "52100000001"  # any seeded card: its rows are replaced by each test that names it
TODAY = date(2026, 6, 15)


@pytest.fixture()
def tiers(runtime: Runtime, stores: Stores) -> Runtime:
    """The tier table provisioned (as ``python -m shared.cli provision`` does), the cards synced (the lookup's
    targets), and the app's clock on 2026-06-15."""
    stores.prepare(TEMPLATE)
    runtime.state.clock = ManualClock(datetime(2026, 6, 15, 9, 0, tzinfo=UTC))
    return runtime


def admin(stores: Stores) -> CommerceLoyaltyAdmin:
    return CommerceLoyaltyAdmin(stores.commerce_url)


def tier(tier_id: str, valid_from: str, valid_to: str = "1900-01-01") -> dict[str, Any]:
    return {"LoyaltyProgramName": PROGRAM, "LoyaltyTierAffiliationName": PROGRAM, "LoyaltyTierId": tier_id,
            "ValidFrom": f"{valid_from}T00:00:00Z", "ValidTo": f"{valid_to}T00:00:00Z", "AffiliationType": "Loyalty"}


def dv_rows(stores: Stores) -> dict[tuple[str, ...], dict[str, Any]]:
    """The tier table by its natural key (card, program, affiliation, tier, from, to)."""
    return {(r["lsync_cardnumber"], r["lsync_programname"], r["lsync_affiliationname"], r["lsync_tierid"],
             r["lsync_validfrom"], r["lsync_validto"]): r for r in stores.dataverse_rows(TABLE)}


def card_guid(stores: Stores, card: str) -> str:
    [row] = [r for r in stores.dataverse_rows("msdyn_loyaltycards") if r["msdyn_cardnumber"] == card]
    return str(row["msdyn_loyaltycardid"])


def current(stores: Stores, card: str) -> dict[str, bool]:
    return {key[3]: row["lsync_iscurrent"] for key, row in dv_rows(stores).items() if key[0] == card}


def test_every_tier_row_lands_with_its_card_bound_and_one_current_tier_per_card_and_program(
        tiers: Runtime, stores: Stores) -> None:
    [summary] = tiers.scan(TEMPLATE).run()
    every = stores.commerce_rows(TEMPLATE)
    commerce = [r for r in every if r["LoyaltyTierId"]]  # the source filter leaves out membership-only rows
    rows = dv_rows(stores)
    assert len(every) > len(commerce)
    assert summary.failed == 0 and summary.written == len(commerce) == len(rows) > 0
    assert stores.differences(TEMPLATE) == []
    for fo in commerce:
        row = rows[tiers.catalog.plan(TEMPLATE).key_of(fo)]
        assert row["_lsync_loyaltycardid_value"] == card_guid(stores, fo["LoyaltyCardNumber"])
        assert row["lsync_affiliationtype"] == {"General": 100000000, "Loyalty": 100000001}[fo["AffiliationType"]]
    per_group: dict[tuple[str, str], int] = {}
    for key, row in rows.items():
        per_group[(key[0], key[1])] = per_group.get((key[0], key[1]), 0) + bool(row["lsync_iscurrent"])
    assert set(per_group.values()) <= {0, 1} and 1 in per_group.values()


def test_the_highest_level_valid_today_is_current_and_the_rest_are_not(tiers: Runtime, stores: Stores) -> None:
    admin(stores).set_card_tiers(CARD, [tier("Silver", "2020-01-01"), tier("Gold", "2026-01-01", "2026-12-31"),
                                        tier("Platinum", "2026-07-01"), tier("Basic", "2019-01-01", "2019-12-31")])
    tiers.scan(TEMPLATE).run()
    assert current(stores, CARD) == {"Silver": False, "Gold": True, "Platinum": False, "Basic": False}


def test_the_flag_flips_when_the_clock_passes_valid_to_and_only_the_flipped_rows_are_written(
        tiers: Runtime, stores: Stores) -> None:
    admin(stores).set_card_tiers(CARD, [tier("Silver", "2020-01-01"), tier("Gold", "2026-01-01", "2026-06-15")])
    tiers.scan(TEMPLATE).run()
    assert current(stores, CARD) == {"Silver": False, "Gold": True}
    versions = {key: row["versionnumber"] for key, row in dv_rows(stores).items()}
    tiers.state.clock = ManualClock(datetime(2026, 6, 16, 0, 5, tzinfo=UTC))  # the day after Gold's last day
    [summary] = tiers.scan(TEMPLATE).run()
    assert current(stores, CARD) == {"Silver": True, "Gold": False}
    assert summary.written == 2 and summary.unchanged == summary.seen - 2
    rewritten = {key for key, row in dv_rows(stores).items() if row["versionnumber"] != versions[key]}
    assert {key[3] for key in rewritten} == {"Silver", "Gold"} and {key[0] for key in rewritten} == {CARD}


def test_a_tier_added_in_commerce_arrives_by_callback_and_flips_the_cards_other_row(tiers: Runtime,
                                                                                    stores: Stores) -> None:
    admin(stores).set_card_tiers(CARD, [tier("Silver", "2020-01-01")])
    tiers.scan(TEMPLATE).run()
    admin(stores).add_card_tiers(CARD, [tier("Platinum", "2026-06-01")])
    key = {"LoyaltyCardNumber": CARD, "LoyaltyProgramName": PROGRAM, "LoyaltyTierAffiliationName": PROGRAM,
           "LoyaltyTierId": "Platinum", "ValidFrom": "2026-06-01T00:00:00Z", "ValidTo": "1900-01-01T00:00:00Z"}
    assert tiers.outbound(TEMPLATE).sync_key(key) == "written"
    assert current(stores, CARD) == {"Silver": False, "Platinum": True}


def test_a_tier_row_deleted_in_commerce_is_deleted_in_dataverse_by_its_date_key(tiers: Runtime,
                                                                                stores: Stores) -> None:
    admin(stores).set_card_tiers(CARD, [tier("Silver", "2020-01-01"), tier("Gold", "2026-01-01", "2026-12-31")])
    tiers.scan(TEMPLATE).run()
    admin(stores).set_card_tiers(CARD, [tier("Silver", "2020-01-01")])
    [summary] = tiers.scan(TEMPLATE).run()
    assert summary.deleted == 1
    assert current(stores, CARD) == {"Silver": True}
    row_key = encode_key((CARD, PROGRAM, PROGRAM, "Gold", "2026-01-01", "2026-12-31"))
    assert tiers.state.synced.get(TEMPLATE, row_key) is None


def test_a_rerun_writes_nothing(tiers: Runtime, stores: Stores) -> None:
    tiers.scan(TEMPLATE).run()
    writes = stores.dataverse_writes()
    [again] = tiers.scan(TEMPLATE).run()
    assert (again.written, again.deleted, again.failed) == (0, 0, 0) and again.unchanged == again.seen > 0
    assert stores.dataverse_writes() == writes


def test_the_reverse_direction_has_nothing_to_do_for_a_one_way_template(tiers: Runtime, stores: Stores) -> None:
    tiers.scan(TEMPLATE).run()
    requests.delete(f"{stores.dataverse_url}/_emulator/requests", timeout=10).raise_for_status()
    summary = tiers.inbound(TEMPLATE).run()
    assert summary.status == "skipped" and "one-way" in summary.detail
    assert requests.get(f"{stores.dataverse_url}/_emulator/requests", timeout=10).json()["value"] == []


def test_small_key_ranges_that_cut_a_cards_rows_still_flag_the_cards_current_tier(tiers: Runtime,
                                                                                   stores: Stores) -> None:
    from shared.mapping.derive import current_tier_flags
    from shared.sync.scan import Scan

    admin(stores).set_card_tiers(CARD, [tier("Basic", "2019-01-01"), tier("Silver", "2020-01-01"),
                                        tier("Gold", "2021-01-01"), tier("Platinum", "2026-01-01", "2026-12-31")])
    engine = tiers.outbound(TEMPLATE)
    [summary] = Scan(engine, page_size=3).run()  # ranges of 3 keys: the card's four rows span two of them
    assert summary.failed == 0
    commerce = [r for r in stores.commerce_rows(TEMPLATE) if r["LoyaltyTierId"]]
    levels = engine.deriver.levels(engine.plan.derived["current_tier"])
    expected = current_tier_flags(commerce, engine.plan.derived["current_tier"], levels, TODAY)
    rows = dv_rows(stores)
    assert {engine.plan.key_of(r): flag for r, flag in zip(commerce, expected, strict=True)} == {
        key: row["lsync_iscurrent"] for key, row in rows.items()}
    assert current(stores, CARD) == {"Basic": False, "Silver": False, "Gold": False, "Platinum": True}


def test_reconcile_compares_the_tier_table_and_finds_an_agents_edit_of_the_current_flag(
        tiers: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.e2e.test_drift import cli

    admin(stores).set_card_tiers(CARD, [tier("Silver", "2020-01-01")])
    tiers.scan(TEMPLATE).run()
    code, report = cli(capsys, "reconcile", TEMPLATE, "--format", "json")
    assert code == 0 and report["summary"][0]["found"] == 0 and report["summary"][0]["equal"] > 0
    [row] = [r for k, r in dv_rows(stores).items() if k[0] == CARD]
    stores.change_in_dataverse(f"{TABLE}({row['lsync_loyaltycardtierid']})", {"lsync_iscurrent": False})
    code, report = cli(capsys, "reconcile", TEMPLATE, "--format", "json")
    [finding] = report["findings"]
    assert code == 1 and finding["kind"] == "different" and finding["key"][0] == CARD
    assert finding["columns"] == [{"column": "lsync_iscurrent", "commerce": True, "dataverse": False}]


def test_status_lists_the_tier_template_with_its_run(tiers: Runtime, stores: Stores) -> None:
    from shared.ops.queries import status_rows

    tiers.scan(TEMPLATE).run()
    [row] = [r for r in status_rows(tiers) if r["template"] == TEMPLATE]
    assert (row["direction"], row["scope"], row["status"]) == ("fo_to_dataverse", "all", "completed")
    assert row["counts"]["written"] > 0


def test_a_tier_added_in_commerce_arrives_as_a_data_event_with_its_date_keys(
        tiers: Runtime, stores: Stores, pump: QueuePump, commerce_emulator: Any) -> None:
    """Through the emulator's publisher (a data event on the virtual table, dates as /Date(ms)/, the open ValidTo
    dropped as a null date), the real callback trigger, queue and worker."""
    import function_app

    admin(stores).set_card_tiers(CARD, [tier("Silver", "2020-01-01")])
    tiers.scan(TEMPLATE).run()
    host = LocalFunctionsHost(function_app.app).start()
    try:
        requests.post(f"{stores.commerce_url}/_emulator/business-events/endpoints", timeout=10, json={
            "url": f"{host.url}/api/callbacks/{TEMPLATE}", "entity_sets": ["LoyaltyCardTiersV2"],
            "format": "data_event"}).raise_for_status()
        admin(stores).add_card_tiers(CARD, [tier("Platinum", "2026-06-01")])
        assert commerce_emulator.publisher.flush(30)
        assert pump.drain(60) >= 1
    finally:
        host.stop()
    deliveries = requests.get(f"{stores.commerce_url}/_emulator/business-events/deliveries", timeout=10).json()["value"]
    assert deliveries and all(d["ok"] for d in deliveries)
    assert current(stores, CARD) == {"Silver": False, "Platinum": True}
    assert list(tiers.state.parked.all()) == []


def test_a_tier_whose_card_is_not_in_dataverse_is_parked_with_the_reason_and_lands_once_the_card_does(
        tiers: Runtime, stores: Stores) -> None:
    admin(stores).set_card_tiers(CARD, [tier("Silver", "2020-01-01")])
    stores.delete_in_dataverse(f"msdyn_loyaltycards({card_guid(stores, CARD)})")
    [summary] = tiers.scan(TEMPLATE).run()
    parked = [p for p in tiers.state.parked.all(TEMPLATE) if CARD in str(p.get("key") or p["RowKey"])]
    assert summary.failed == 1 and len(parked) == 1 and parked[0]["error"], parked
    assert [key for key in dv_rows(stores) if key[0] == CARD] == []
    assert parked[0]["error_class"] == "lookup_missing"
    stores.create_in_dataverse("msdyn_loyaltycards", {"msdyn_cardnumber": CARD})  # the card is back in Dataverse
    tiers.scan(TEMPLATE).run()  # the parked row is retried by the next scan
    assert current(stores, CARD) == {"Silver": True}
    assert not [p for p in tiers.state.parked.all(TEMPLATE) if CARD in str(p.get("key") or p["RowKey"])]


def test_the_first_build_binds_each_card_by_its_card_number_with_no_read_per_card(
        tiers: Runtime, stores: Stores) -> None:
    requests.post(f"{stores.dataverse_url}/_emulator/stats/reset", timeout=10).raise_for_status()
    [summary] = tiers.scan(TEMPLATE).run()
    stats = requests.get(f"{stores.dataverse_url}/_emulator/stats", timeout=10).json()
    card_reads = {route: n for route, n in stats["by_method_route"].items()
                  if route.startswith("GET") and "msdyn_loyaltycards" in route}
    assert summary.written > 0 and sum(card_reads.values()) <= 1  # the preflight's look at the card table, no more
