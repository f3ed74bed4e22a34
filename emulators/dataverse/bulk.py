"""Bulk messages ``POST <set>/Microsoft.Dynamics.CRM.{CreateMultiple,UpdateMultiple,
UpsertMultiple}`` (docs/protocol-notes.md §2.10, checklist §5.1).

* Body ``{"Targets": [...]}``; ``@odata.type`` is mandatory on every target and must name the
  bound table (one table per request); ``@odata.bind`` works inside targets.
* Standard tables are all-or-nothing: the targets run in one :class:`Transaction`; the first
  failing target rolls everything back and its error is the response.
* ``CreateMultiple`` → ``200`` + ``{"@odata.context": "...#Microsoft.Dynamics.CRM.CreateMultipleResponse",
  "Ids": [...]}``; ``UpdateMultiple`` / ``UpsertMultiple`` → ``204`` with no per-item result.
* ``UpsertMultiple`` identifies a row by ``@odata.id`` (relative key URL, e.g.
  ``msdyn_loyaltycards(msdyn_cardnumber='X')``, absolute URLs accepted) or by the primary key
  in the body; key columns both in the body and in ``@odata.id`` fail on the create path with
  ``400 0x80040216 "An unexpected error occurred."`` (update path tolerates them; seen in
  public code, DVPY PR #127).
* ``DeleteMultiple`` on standard tables → ``DeleteMultiple has not yet been implemented.``.
* Optional payload ceiling (``bulk_max_payload_bytes``) → ``413`` ``0x8004418A``.
* One request for the request-count limit; each target processed adds a record for the
  execution-time accounting (``records_written``).

Texts and codes marked *inferred* below are not documented.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from emulators.common.server import EmulatorHTTPError

from . import errors, operations
from .payload import parse_payload
from .references import EntityRef, find_row, relative_entity_path, resolve_key, split_resource_path
from .schema import Table
from .store import Store
from .transactions import Transaction

if TYPE_CHECKING:
    from .server import DataverseRequestHandler

#: Route pattern (before the generic resource route).
BULK_PATTERN = r"/api/data/v9\.2/(?P<set>[A-Za-z0-9_]+)/Microsoft\.Dynamics\.CRM\.(?P<action>[A-Za-z]+Multiple)"
ACTIONS = ("CreateMultiple", "UpdateMultiple", "UpsertMultiple", "DeleteMultiple")

UNEXPECTED_ERROR = "0x80040216"
MESSAGE_TOO_LARGE = "0x8004418A"
_GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# -- errors ------------------------------------------------------------------------------


def unexpected_error() -> EmulatorHTTPError:
    """§2.10: UpsertMultiple create path with key columns in the body and in ``@odata.id``."""
    return errors.dataverse_error(400, UNEXPECTED_ERROR, "An unexpected error occurred.")


def payload_too_large(size: int) -> EmulatorHTTPError:
    """§2.2 413 / §2.10 message-size ceiling (text modelled on the documented sandbox
    message; the exact wording for the Web API is inferred)."""
    return errors.dataverse_error(
        413, MESSAGE_TOO_LARGE, f"Message size exceeded when sending context to Sandbox. Message size: {size / 1048576:.3f} Mb"
    )


def _target_error(index: int, text: str, code: str = errors.PAYLOAD_ERROR) -> EmulatorHTTPError:
    return errors.bad_request(f"{text} (Targets[{index}]).", code=code)  # wording inferred


# -- parsing -----------------------------------------------------------------------------


def parse_entity_url(store: Store, table: Table, url: str) -> EntityRef:
    """``set(key)``, ``/set(key)``, ``/api/data/v9.2/set(key)`` or an absolute URL → a ref
    into ``table`` (another table → 400, inferred wording)."""
    path = relative_entity_path(url)
    entity_set, key_text, rest = split_resource_path(path if path is not None else url.strip())
    if key_text is None or rest:
        raise errors.bad_request(f"The @odata.id value '{url}' is not a valid entity URL.", code=errors.PAYLOAD_ERROR)
    if entity_set != table.entity_set:
        raise errors.bad_request(
            f"The @odata.id value '{url}' does not address the entity set '{table.entity_set}'.", code=errors.PAYLOAD_ERROR
        )
    return resolve_key(table, key_text)


def _targets(body: Any) -> list[dict[str, Any]]:
    targets = body.get("Targets") if isinstance(body, dict) else None
    if not isinstance(targets, list) or not targets:
        raise errors.bad_request("The request must have a non-empty 'Targets' collection.", code=errors.PAYLOAD_ERROR)
    return targets


def _check_target(table: Table, target: Any, index: int) -> dict[str, Any]:
    """A target must be an object with ``@odata.type`` naming the bound table."""
    if not isinstance(target, dict):
        raise _target_error(index, "Each item of 'Targets' must be an entity object")
    odata_type = target.get("@odata.type")
    if odata_type is None:
        raise _target_error(index, "'@odata.type' is required on every entity in 'Targets'")
    name = odata_type.lstrip("#") if isinstance(odata_type, str) else ""
    if name != table.qualified_name and name.startswith("Microsoft.Dynamics.CRM."):
        raise _target_error(
            index,
            f"All entities in 'Targets' must be of type '{table.qualified_name}', not '{odata_type}'",
            code=errors.INVALID_ARGUMENT,
        )
    return target  # other unknown type names: the payload parser's "could not be resolved" 400


def _target_ref(store: Store, table: Table, target: dict[str, Any], index: int) -> EntityRef | None:
    """``@odata.id`` first, else the primary key in the body, else None."""
    odata_id = target.get("@odata.id")
    if odata_id is not None:
        if not isinstance(odata_id, str):
            raise _target_error(index, "'@odata.id' must be an entity URL string")
        return parse_entity_url(store, table, odata_id)
    row_id = target.get(table.primary_id)
    if row_id is None:
        return None
    if not isinstance(row_id, str) or not _GUID_RE.fullmatch(row_id):
        raise errors.conversion_error(row_id, "Edm.Guid")
    return EntityRef(table, row_id=row_id.lower())


# -- actions -----------------------------------------------------------------------------


def _create(store: Store, table: Table, target: dict[str, Any], index: int) -> str:
    row = operations.create(store, table, target)
    return str(row[table.primary_id])


def _update(store: Store, table: Table, target: dict[str, Any], index: int) -> None:
    ref = _target_ref(store, table, target, index)
    if ref is None:
        raise _target_error(index, f"UpdateMultiple needs '{table.primary_id}' or '@odata.id' on every target")
    if find_row(store, ref) is None:
        if ref.row_id is not None:
            # §2.10 troubleshooting text ("Contact With Ids = <guid> Do Not Exist").
            text = f"{table.logical_name} With Ids = {ref.row_id} Do Not Exist"
            raise errors.dataverse_error(404, errors.OBJECT_DOES_NOT_EXIST, text)
        raise errors.not_found_by_key(table)
    operations.upsert(store, ref, target, if_match="*")


def _upsert(store: Store, table: Table, target: dict[str, Any], index: int) -> None:
    ref = _target_ref(store, table, target, index)
    if ref is None:
        raise _target_error(index, f"UpsertMultiple needs '@odata.id' or '{table.primary_id}' on every target")
    if ref.by_key and find_row(store, ref) is None:
        payload = parse_payload(store, table, target)
        if any(name in payload.values for name in ref.key):
            raise unexpected_error()
    operations.upsert(store, ref, target)


def handle_bulk(handler: DataverseRequestHandler, match: re.Match[str]) -> None:
    """``POST <set>/Microsoft.Dynamics.CRM.<Action>``."""
    server = handler.server
    entity_set, action = match.group("set"), match.group("action")
    handler.route_name = f"{entity_set}/{action}"
    table = server.store.table(entity_set)
    if table is None:
        raise errors.resource_not_found(entity_set)
    if action not in ACTIONS:
        raise errors.resource_not_found(f"Microsoft.Dynamics.CRM.{action}")
    limit = server.bulk_max_payload_bytes
    if limit is not None and len(handler.body) > limit:
        raise payload_too_large(len(handler.body))
    if action == "DeleteMultiple":
        # §2.10: standard tables (code inferred).
        raise errors.bad_request("DeleteMultiple has not yet been implemented.", code=errors.INVALID_ARGUMENT)
    if not table.bulk_messages:
        # Inferred wording (the platform has no message processor for the table).
        raise errors.bad_request(
            f"The '{action}' method does not support entities of type '{table.logical_name}'.", code=errors.INVALID_ARGUMENT
        )
    targets = _targets(handler.read_json())
    ids: list[str] = []
    with Transaction(server.store):
        for index, raw in enumerate(targets):
            handler.records_written = index + 1
            target = _check_target(table, raw, index)
            if action == "CreateMultiple":
                ids.append(_create(server.store, table, target, index))
            elif action == "UpdateMultiple":
                _update(server.store, table, target, index)
            else:
                _upsert(server.store, table, target, index)
    if action == "CreateMultiple":
        context = f"{server.api_url}$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse"
        handler.send_json(200, {"@odata.context": context, "Ids": ids})
        return
    handler.send_empty(204, reason="NoContent")  # status line as documented (§2.10)
