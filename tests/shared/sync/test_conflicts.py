"""Conflict verdicts: pure functions of the hashes and the policy, no servers."""

from __future__ import annotations

import pytest

from shared.sync.conflicts import Policy, Verdict, inbound_verdict, outbound_verdict

LAST, COMMERCE, DATAVERSE = "h-last", "h-commerce", "h-dataverse"


@pytest.mark.parametrize("policy", list(Policy))
def test_outbound_no_dataverse_row_is_no_conflict(policy: Policy) -> None:
    assert outbound_verdict(None, COMMERCE, LAST, policy) is Verdict.NO_CONFLICT


@pytest.mark.parametrize("policy", list(Policy))
def test_outbound_dataverse_unchanged_since_the_last_sync_is_no_conflict(policy: Policy) -> None:
    assert outbound_verdict(LAST, COMMERCE, LAST, policy) is Verdict.NO_CONFLICT


@pytest.mark.parametrize("policy", list(Policy))
def test_outbound_dataverse_already_holding_commerces_image_is_no_conflict(policy: Policy) -> None:
    assert outbound_verdict(COMMERCE, COMMERCE, LAST, policy) is Verdict.NO_CONFLICT


def test_outbound_both_changed_follows_the_policy() -> None:
    assert outbound_verdict(DATAVERSE, COMMERCE, LAST, Policy.COMMERCE_WINS) is Verdict.COMMERCE_WINS
    assert outbound_verdict(DATAVERSE, COMMERCE, LAST, Policy.DATAVERSE_WINS) is Verdict.DATAVERSE_WINS


@pytest.mark.parametrize("policy", list(Policy))
def test_inbound_commerce_unchanged_since_the_last_sync_is_no_conflict(policy: Policy) -> None:
    assert inbound_verdict(LAST, DATAVERSE, LAST, policy) is Verdict.NO_CONFLICT


@pytest.mark.parametrize("policy", list(Policy))
def test_inbound_both_sides_equal_is_no_conflict(policy: Policy) -> None:
    assert inbound_verdict(DATAVERSE, DATAVERSE, LAST, policy) is Verdict.NO_CONFLICT


def test_inbound_both_changed_follows_the_policy() -> None:
    assert inbound_verdict(COMMERCE, DATAVERSE, LAST, Policy.COMMERCE_WINS) is Verdict.COMMERCE_WINS
    assert inbound_verdict(COMMERCE, DATAVERSE, LAST, Policy.DATAVERSE_WINS) is Verdict.DATAVERSE_WINS


@pytest.mark.parametrize("last", [None, ""])
def test_inbound_a_record_with_no_sync_history_whose_sides_differ_is_a_conflict(last: str | None) -> None:
    assert inbound_verdict(COMMERCE, DATAVERSE, last, Policy.COMMERCE_WINS) is Verdict.COMMERCE_WINS


@pytest.mark.parametrize("policy", list(Policy))
def test_outbound_dataverse_holding_an_image_this_app_just_wrote_is_no_conflict(policy: Policy) -> None:
    assert outbound_verdict(DATAVERSE, COMMERCE, LAST, policy, ours=frozenset({DATAVERSE})) is Verdict.NO_CONFLICT
