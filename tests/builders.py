"""Builders for F&O rows, Dataverse rows and business events: one realistic default, overridable."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

# Event ids from a seeded generator: unique within a process, and the same sequence in every process, so a test
# parametrized with a built event has the same id on every pytest-xdist worker (they must collect alike).
_EVENT_IDS = random.Random(21)


def event_id() -> uuid.UUID:
    return uuid.UUID(int=_EVENT_IDS.getrandbits(128), version=4)


def card_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "CardNumber": "LC-000123",
        "CardTenderType": "AsContactTender",
        "PartyNumber": "004512",
        "ReplacementCardNumber": "LC-000987",
        "OmOperatingUnitNumber": "052",
        "LoyaltyEnrollmentDate": "2024-03-01T00:00:00Z",
        "LoyaltyEnrollmentDateLocal": "2024-02-29T00:00:00Z",
        "LoyaltyEnrollmentTime": 36000,
        "LoyaltyEnrollmentTimeLocal": 7200,
    }
    row.update(overrides)
    return row


def level_row(**overrides: Any) -> dict[str, Any]:
    row = {"dataAreaId": "usmf", "LevelPhrase": "Gold", "LevelDescription": "Gold members: 5% off"}
    row.update(overrides)
    return row


def reward_point_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "RewardPointId": "USD-AMOUNT",
        "RewardPointType": "Amount",
        "RewardPointCurrency": "USD",
        "Redeemable": "Yes",
        "RedeemRanking": 2,
        "ExpirationTimeValue": 12,
        "ExpirationTimeUnit": "Month",
        "VestingTimeValue": 14,
        "VestingTimeUnit": "Day",
        "MaximumLoyaltyRewardPoints": 5_000_000_000,
    }
    row.update(overrides)
    return row


def card_tier_row(**overrides: Any) -> dict[str, Any]:
    """A ``LoyaltyCardTiersV2`` row: card LC-000123 in the Gold tier of program CRM, open-ended since 2024-01-01."""
    row = {
        "LoyaltyCardNumber": "LC-000123",
        "LoyaltyProgramName": "CRM",
        "LoyaltyTierAffiliationName": "CRM",
        "LoyaltyTierId": "GOLD",
        "ValidFrom": "2024-01-01T00:00:00Z",
        "ValidTo": "1900-01-01T00:00:00Z",  # F&O's empty date: open-ended (inferred)
        "AffiliationType": "Loyalty",
    }
    row.update(overrides)
    return row


def business_event(**overrides: Any) -> dict[str, Any]:
    event = {
        "BusinessEventId": "RetailLoyaltyCardChangedBusinessEvent",
        "BusinessEventLegalEntity": "USMF",
        "ContextRecordSubject": "",
        "ControlNumber": 5637611083,
        "EventId": str(event_id()).upper(),
        "EventTime": "/Date(1672408275000)/",
        "EventTimeIso8601": "2022-12-30T13:51:15.2942742Z",
        "InitiatingUserAADObjectId": "{410A2690-5EC2-42EE-9F2A-E75B4E324930}",
        "MajorVersion": 0,
        "MinorVersion": 0,
        "ParentContextRecordSubjects": [],
    }
    event.update(overrides)
    return event


def business_event_without(*fields: str, **overrides: Any) -> dict[str, Any]:
    """A business event lacking ``fields`` (base contract fields or key fields)."""
    event = business_event(**overrides)
    for name in fields:
        event.pop(name, None)
    return event


def activation_test_event(**overrides: Any) -> dict[str, Any]:
    return business_event(BusinessEventId="BusinessEventsTestEndpointContract", **overrides)


def as_body(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def transaction_line(**overrides: Any) -> dict[str, Any]:
    """A line of RetailLoyaltyCardRewardPointTransactions: an earn of 100 points, vested, expiring in a year."""
    row = {
        "CardNumber": "LC-000123",
        "RewardPointId": "POINTS",
        "EntryType": "Earn",
        "RewardPointAmountQty": 100,
        "Remaining": 100,
        "StartDate": "2026-01-01T00:00:00Z",
        "ExpirationDate": "2027-01-01T00:00:00Z",
        "EntryDate": "2026-01-01T00:00:00Z",
        "EntryTime": 36000,
        "CardTenderType": "AsCardTender",
        "CustomerAccount": "004512",
        "LoyaltyTransactionLineNumber": 1,
        "OperatingUnitNumber": "052",
        "Terminal": "T1",
        "TransactionNumber": "TR-1",
        "LoyaltyTransactionCompany": "usrt",
        "SalesOrderId": "",
        "AdjustmentId": "",
    }
    row.update(overrides)
    return row
