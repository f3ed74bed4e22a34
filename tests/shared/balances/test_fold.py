"""The points-balance fold, rule by rule as docs/domain-notes.md §11 states them (the formulas are inferred)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from shared.balances.fold import Balance, BalanceSettings, EntryType, Line, as_row, fold
from shared.balances.lines import LineError, line_of
from tests.builders import transaction_line

TODAY = date(2026, 6, 15)
SETTINGS = BalanceSettings()


def line(**overrides: object) -> Line:
    return line_of(transaction_line(**overrides))


def earn(amount: float, *, remaining: float | None = None, start: str = "2026-01-01",
         expires: str = "2027-01-01", entered: str = "2026-01-01") -> Line:
    return line(EntryType="Earn", RewardPointAmountQty=amount, Remaining=amount if remaining is None else remaining,
                StartDate=f"{start}T00:00:00Z", ExpirationDate=f"{expires}T00:00:00Z", EntryDate=f"{entered}T00:00:00Z")


def spend(entry_type: str, amount: float, *, entered: str = "2026-02-01") -> Line:
    return line(EntryType=entry_type, RewardPointAmountQty=amount, Remaining=0, StartDate="1900-01-01T00:00:00Z",
                ExpirationDate="1900-01-01T00:00:00Z", EntryDate=f"{entered}T00:00:00Z")


def balance_of(*lines: Line, today: date = TODAY, settings: BalanceSettings = SETTINGS) -> Balance:
    return fold(lines, today, settings)


# -- available ---------------------------------------------------------------------------------------------


def test_available_sums_remaining_of_vested_unexpired_lines() -> None:
    assert balance_of(earn(100), earn(50, remaining=20)).available == Decimal(120)


def test_a_line_is_available_on_its_start_date() -> None:
    assert balance_of(earn(100, start="2026-06-15")).available == 100


def test_a_line_is_available_on_its_expiration_date() -> None:
    assert balance_of(earn(100, expires="2026-06-15")).available == 100


def test_a_never_expiring_vested_line_is_available() -> None:
    assert balance_of(earn(100, expires="1900-01-01")).available == 100


def test_lines_with_nothing_remaining_add_nothing_to_available() -> None:
    assert balance_of(earn(100, remaining=0)).available == 0


# -- unvested ----------------------------------------------------------------------------------------------


def test_unvested_sums_remaining_of_lines_starting_after_today() -> None:
    balance = balance_of(earn(100, start="2026-06-16"), earn(30))
    assert (balance.unvested, balance.available) == (Decimal(100), Decimal(30))


def test_an_empty_start_date_counts_as_vested() -> None:
    assert balance_of(earn(100, start="1900-01-01")).unvested == 0


# -- expired -----------------------------------------------------------------------------------------------


def test_expired_sums_remaining_of_lines_whose_expiration_date_has_passed() -> None:
    balance = balance_of(earn(100, remaining=40, expires="2026-06-14"), earn(10))
    assert (balance.expired, balance.available) == (Decimal(40), Decimal(10))


def test_the_empty_date_never_expires() -> None:
    assert balance_of(earn(100, start="2000-01-01", expires="1900-01-01"), today=date(2150, 1, 1)).expired == 0


@pytest.mark.parametrize("far", ["2154-12-31", "2200-01-01", "9999-12-31"])
def test_dates_from_fo_largest_date_on_never_expire(far: str) -> None:
    balance = balance_of(earn(100, expires=far))
    assert (balance.available, balance.next_change_date, balance.expiring_soon) == (Decimal(100), None, Decimal(0))


def test_the_configured_never_expires_date_never_expires() -> None:
    settings = BalanceSettings(never_expires=date(2099, 12, 31))
    balance = balance_of(earn(100, expires="2099-12-31"), today=date(2100, 1, 1), settings=settings)
    assert (balance.expired, balance.available) == (Decimal(0), Decimal(100))


def test_an_expired_line_is_not_unvested_even_if_it_starts_later() -> None:
    balance = balance_of(earn(100, start="2026-07-01", expires="2026-06-01"))
    assert (balance.expired, balance.unvested) == (Decimal(100), Decimal(0))


# -- issued and used ---------------------------------------------------------------------------------------


def test_issued_sums_positive_amounts_whatever_remains() -> None:
    assert balance_of(earn(100, remaining=0), earn(25), line(EntryType="Adjust", RewardPointAmountQty=5,
                                                             Remaining=5)).issued == 130


@pytest.mark.parametrize("entry_type", ["Redeem", "ReturnEarned", "Adjust"])
def test_used_sums_negative_amounts_of_redeem_return_and_adjust_lines(entry_type: str) -> None:
    assert balance_of(earn(100), spend(entry_type, -30), spend(entry_type, -5)).used == 35


def test_a_negative_refund_line_is_not_used() -> None:
    assert balance_of(earn(100), spend("Refund", -30)).used == 0


def test_negative_amounts_are_not_issued() -> None:
    assert balance_of(earn(100), spend("Redeem", -30)).issued == 100


# -- expiring soon -----------------------------------------------------------------------------------------


def test_expiring_soon_sums_available_lines_expiring_within_the_horizon_with_the_earliest_date() -> None:
    balance = balance_of(earn(10, expires="2026-07-15"), earn(5, expires="2026-06-20"), earn(7, expires="2026-07-16"))
    assert (balance.expiring_soon, balance.expiring_soon_date) == (Decimal(15), date(2026, 6, 20))


def test_the_horizon_is_a_setting() -> None:
    balance = balance_of(earn(10, expires="2026-07-16"), settings=BalanceSettings(horizon_days=31))
    assert balance.expiring_soon == 10


def test_unvested_lines_are_not_expiring_soon() -> None:
    balance = balance_of(earn(10, start="2026-06-20", expires="2026-07-01"))
    assert (balance.expiring_soon, balance.expiring_soon_date) == (Decimal(0), None)


def test_nothing_expiring_soon_has_no_date() -> None:
    assert balance_of(earn(10)).expiring_soon_date is None


# -- when the balance changes by itself -------------------------------------------------------------------


def test_next_change_is_the_earliest_future_vesting_date() -> None:
    assert balance_of(earn(10, start="2026-07-01"), earn(5, start="2026-06-20")).next_change_date == date(2026, 6, 20)


def test_next_change_is_the_day_after_the_earliest_expiration_date() -> None:
    assert balance_of(earn(10, expires="2026-06-15"), earn(5, expires="2026-09-01")).next_change_date == date(2026, 6, 16)


def test_lines_with_nothing_remaining_do_not_change_the_balance() -> None:
    assert balance_of(earn(10, remaining=0, start="2026-07-01"), earn(5, expires="1900-01-01")).next_change_date is None


def test_a_card_is_folded_again_when_a_line_enters_the_expiring_soon_horizon() -> None:
    balance = balance_of(earn(10, expires="2026-08-01"))
    assert (balance.next_change_date, balance.recompute_on) == (date(2026, 8, 2), date(2026, 7, 2))


def test_the_balance_on_its_next_change_date_differs() -> None:
    lines = (earn(10, expires="2026-06-20"), earn(5))
    before = balance_of(*lines)
    assert before.next_change_date is not None
    after = balance_of(*lines, today=before.next_change_date)
    assert (before.available, after.available, after.expired) == (Decimal(15), Decimal(5), Decimal(10))


# -- dates -------------------------------------------------------------------------------------------------


def test_last_transaction_date_is_the_latest_entry_date() -> None:
    assert balance_of(earn(1, entered="2026-03-01"), spend("Redeem", -1, entered="2026-05-02"),
                      earn(1, entered="2026-04-01")).last_transaction_date == date(2026, 5, 2)


def test_the_balance_is_as_of_today() -> None:
    assert balance_of(earn(1)).as_of == TODAY


def test_today_is_taken_in_the_configured_time_zone() -> None:
    late_evening_utc = datetime(2026, 6, 15, 23, 30, tzinfo=UTC)
    assert (BalanceSettings().today(late_evening_utc), BalanceSettings(timezone="Europe/Berlin").today(late_evening_utc)) \
        == (date(2026, 6, 15), date(2026, 6, 16))


# -- the group ---------------------------------------------------------------------------------------------


def test_a_fold_takes_its_group_from_the_lines() -> None:
    assert balance_of(earn(1)).key == ("LC-000123", "POINTS")


def test_a_line_of_another_group_is_refused() -> None:
    with pytest.raises(ValueError, match="LC-000999/POINTS"):
        balance_of(earn(1), line(CardNumber="LC-000999"))


def test_the_balance_row_carries_numbers_and_midnight_dates() -> None:
    row = as_row(balance_of(earn(10.5, expires="2026-06-20")))
    assert (row["AvailablePoints"], row["ExpiringSoonDate"], row["IssuedPoints"]) == (10.5, "2026-06-20T00:00:00Z", 10.5)


# -- reading lines -----------------------------------------------------------------------------------------


def test_entry_types_are_read_as_member_names_or_numbers() -> None:
    assert (line(EntryType="ReturnEarned").entry_type, line(EntryType=4).entry_type) == (EntryType.RETURN_EARNED,
                                                                                         EntryType.ADJUST)


def test_an_unknown_entry_type_is_refused_naming_the_property() -> None:
    with pytest.raises(LineError, match="EntryType: 'Expire' is not an entry type"):
        line(EntryType="Expire")


def test_a_line_without_a_card_number_is_refused() -> None:
    with pytest.raises(LineError, match="CardNumber"):
        line(CardNumber="")
