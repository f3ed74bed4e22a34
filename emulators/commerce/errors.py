"""F&O OData error bodies (docs/protocol-notes.md §3.4, §5.2).

Validation failures use the ASP.NET Web API OData shape with the readable reason in
``innererror.message`` ("Write failed for table row of type '<Entity>'. Infolog: …"). The
``innererror.type`` string, the 404 text and the query-error text are inferred (§7 q.4).
"""

from __future__ import annotations

from collections.abc import Sequence

from emulators.common.server import EmulatorHTTPError

from .entities import EntitySet

WRITE_EXCEPTION_TYPE = "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"
GENERIC_MESSAGE = "An error has occurred."
QUERY_PREFIX = "The query specified in the URI is not valid."


def _inner(message: str, type_name: str) -> dict[str, object]:
    return {"innererror": {"message": message, "type": type_name, "stacktrace": ""}}


def write_failed(entity_set: EntitySet, errors: Sequence[str], *, status: int = 400) -> EmulatorHTTPError:
    """A validateWrite failure: ``Infolog: Error: …; Warning: validateWrite failed on data source …``."""
    source = f"{entity_set.table} ({entity_set.table})"
    infolog = "; ".join(
        [f"Error: {e}" for e in errors] + [f"Warning: validateWrite failed on data source '{source}'."]
    )
    message = f"Write failed for table row of type '{entity_set.data_entity}'. Infolog: {infolog}"
    return EmulatorHTTPError(status, "", GENERIC_MESSAGE, extra=_inner(message, WRITE_EXCEPTION_TYPE))


def duplicate_key(entity_set: EntitySet, key_text: str) -> EmulatorHTTPError:
    # The classic AX duplicate text: "Cannot create a record in <label> (<table>). <key>. The record already exists."
    return write_failed(
        entity_set,
        [f"Cannot create a record in {entity_set.table_label} ({entity_set.table}). {key_text}. "
         "The record already exists."],
    )


def update_conflict(entity_set: EntitySet) -> EmulatorHTTPError:
    """Stale ``If-Match`` → 412 with F&O's update-conflict Infolog text (status inferred, §3.3)."""
    message = (
        f"Write failed for table row of type '{entity_set.data_entity}'. Infolog: Error: Cannot edit a "
        f"record in {entity_set.table_label} ({entity_set.table}). An update conflict occurred due to "
        "another user process deleting the record or changing one or more fields in the record."
    )
    return EmulatorHTTPError(412, "", GENERIC_MESSAGE, extra=_inner(message, WRITE_EXCEPTION_TYPE))


def not_found(url: str) -> EmulatorHTTPError:
    """404 for a missing entity, unknown entity set or route (body text inferred)."""
    return EmulatorHTTPError(404, "", f"No HTTP resource was found that matches the request URI '{url}'.")


def bad_request(detail: str, *, query: bool = False) -> EmulatorHTTPError:
    """400 for malformed URLs, query options or payloads (text modelled on ASP.NET OData, inferred)."""
    message = detail
    if query and not detail.startswith(QUERY_PREFIX):
        message = f"{QUERY_PREFIX} {detail}"
    return EmulatorHTTPError(400, "", message,
                             extra=_inner(detail, "Microsoft.OData.ODataException"))


def unauthorized() -> EmulatorHTTPError:
    """401 without a bearer token; F&O documents no body (§1.3), so the message is inferred."""
    return EmulatorHTTPError(401, "", "Authorization has been denied for this request.",
                             headers={"WWW-Authenticate": "Bearer"})
