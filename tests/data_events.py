"""Builders of F&O data events as a Dataverse webhook delivers them (docs/protocol-notes.md §4.4): a ``RemoteExecutionContext``
shaped like the F&O 10.0.48 capture, written here independently of the Commerce emulator's publisher."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import azure.functions as func

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
CARDS_TABLE = "mserp_retailloyaltycardentity"
LEVELS_TABLE = "mserp_smmloyaltylevelentity"
POINTS_TABLE = "mserp_retailloyaltyrewardpointentity"
TABLES = {"loyalty_cards": CARDS_TABLE, "loyalty_levels": LEVELS_TABLE, "loyalty_reward_points": POINTS_TABLE}
_REC_IDS = itertools.count(5_637_151_326)


def target_id(rec_id: int | None = None, entity_id: int = 0x4951) -> str:
    """A ``Target.Id``: the entity id in the first 4 bytes, the RecId (little-endian) in the last 8."""
    rec = (rec_id if rec_id is not None else next(_REC_IDS)).to_bytes(8, "little").hex()
    return f"{entity_id:08x}-0000-0000-{rec[:4]}-{rec[4:]}"


def option_set(value: int) -> dict[str, Any]:
    return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}


def pairs(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": column, "value": value} for column, value in attributes.items()]


def data_event(message: str = "OnExternalCreated", *, table: str = CARDS_TABLE,
               attributes: dict[str, Any] | list[Any] | None = None, target: str | None = None,
               operation_id: str | None = None, created_on: str = "/Date(1784051293000+0000)/",
               **overrides: Any) -> dict[str, Any]:
    """One data event; ``attributes`` by column (or the raw pair list); a fresh ``Target.Id`` unless given."""
    entity = {"__type": f"Entity:{CONTRACTS}",
              "Attributes": pairs(attributes or {}) if not isinstance(attributes, list) else attributes,
              "EntityState": None, "FormattedValues": [], "Id": target or target_id(), "KeyAttributes": [],
              "LogicalName": table, "RelatedEntities": [], "RowVersion": None}
    event: dict[str, Any] = {
        "BusinessUnitId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "CorrelationId": str(uuid.uuid4()),
        "Depth": 1,
        "InitiatingUserAzureActiveDirectoryObjectId": "e3a96d5d-8187-498c-88e7-4448cc8e57fa",
        "InitiatingUserId": "11111111-2222-3333-4444-555555555555",
        "InputParameters": [{"key": "Target", "value": entity}],
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 1,
        "MessageName": message,
        "Mode": 1,
        "OperationCreatedOn": created_on,
        "OrganizationId": "99999999-8888-7777-6666-555555555555",
        "OrganizationName": "unq0000000000000000000000000000",
        "OutputParameters": [],
        "OwningExtension": None,
        "ParentContext": None,
        "PostEntityImages": [],
        "PreEntityImages": [],
        "PrimaryEntityId": "00000000-0000-0000-0000-000000000000",
        "PrimaryEntityName": table,
        "RequestId": str(uuid.uuid4()),
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 40,
        "UserId": "11111111-2222-3333-4444-555555555555",
    }
    if operation_id is not None:
        event["OperationId"] = operation_id
    event.update(overrides)
    return event


def card_created(card: Any, **kwargs: Any) -> dict[str, Any]:
    return data_event("OnExternalCreated", attributes={"mserp_cardnumber": card, "mserp_partynumber": "004512",
                                                      "mserp_cardtendertype": option_set(200000000)}, **kwargs)


def card_updated(card: Any, **kwargs: Any) -> dict[str, Any]:
    return data_event("OnExternalUpdated", attributes={"mserp_cardnumber": card, "mserp_partynumber": "004513"},
                      **kwargs)


def deleted(target: str, table: str = CARDS_TABLE, **kwargs: Any) -> dict[str, Any]:
    """A Deleted event: only ``Target.Id`` (documented)."""
    return data_event("OnExternalDeleted", table=table, attributes={}, target=target, **kwargs)


def without_target(event: dict[str, Any]) -> dict[str, Any]:
    """The body Dataverse sends above 256 KB: no InputParameters, images or ParentContext."""
    return {k: v for k, v in event.items()
            if k not in ("InputParameters", "PreEntityImages", "PostEntityImages", "ParentContext")}


SIZE_EXCEEDED = {"x-ms-dynamics-msg-size-exceeded": "true"}


def webhook_request(template: str, body: bytes, headers: dict[str, str] | None = None) -> func.HttpRequest:
    """The POST a Dataverse webhook makes (its headers as use-webhooks.md lists them), to the callback route."""
    return func.HttpRequest("POST", f"http://localhost/api/callbacks/{template}", body=body,
                            headers={"Content-Type": "application/json", "x-ms-dynamics-organization": "contoso",
                                     "x-ms-dynamics-entity-name": TABLES.get(template, ""),
                                     "x-ms-correlation-request-id": str(uuid.uuid4()), **(headers or {})})
