"""Dataverse error responses in one place (docs/protocol-notes.md §2.2).

Every error is an :class:`~emulators.common.server.EmulatorHTTPError` rendered as
``{"error":{"code":"0x…","message":"…"}}``; :func:`error_annotations` adds the
``@Microsoft.PowerApps.CDS.*`` annotations when the client sent
``Prefer: odata.include-annotations="*"``. HTTP statuses follow the HRESULT → status map of
§2.2. Codes and texts marked *inferred* are not documented; the rest is documented or seen
in public code as cited in docs/protocol-notes.md.
"""

from __future__ import annotations

from typing import Any

from emulators.common.server import EmulatorHTTPError

from .schema import Table

# HRESULTs used by the emulator (§2.2).
INVALID_ARGUMENT = "0x80040203"
OBJECT_DOES_NOT_EXIST = "0x80040217"
DUPLICATE_RECORD = "0x80040237"
RECORD_NOT_FOUND_BY_KEY = "0x80060891"
CONCURRENCY_VERSION_MISMATCH = "0x80060882"
RESOURCE_NOT_FOUND = "0x80060888"
PAYLOAD_ERROR = "0x80048d19"
VALIDATION_MAX_LENGTH = "0x80044331"
VALUE_OUT_OF_RANGE = "0x8004431A"


def dataverse_error(status: int, code: str, message: str, **headers: str) -> EmulatorHTTPError:
    """The central constructor: raise the result from any request-handling code."""
    return EmulatorHTTPError(status, code, message, headers=headers or None)


def error_annotations(code: str, message: str) -> dict[str, Any]:
    """``@Microsoft.PowerApps.CDS.*`` error annotations (§2.2). The values for platform
    (non-plug-in) errors are inferred: OperationStatus 0, SubErrorCode = the generic
    .NET HRESULT."""
    hex_code = code[2:] if code.lower().startswith("0x") else code
    return {
        "@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus": "0",
        "@Microsoft.PowerApps.CDS.ErrorDetails.SubErrorCode": "-2146233088",
        "@Microsoft.PowerApps.CDS.HelpLink": (
            f"http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm.CrmException%3a{hex_code.lower()}&client=platform"
        ),
        "@Microsoft.PowerApps.CDS.TraceText": "",
        "@Microsoft.PowerApps.CDS.InnerError.Message": message,
    }


# -- 404 -------------------------------------------------------------------------------


def not_found_by_id(table: Table, row_id: str) -> EmulatorHTTPError:
    """§2.5 documented 404 text; code 0x80040217 (§2.2)."""
    return dataverse_error(404, OBJECT_DOES_NOT_EXIST, f"{table.logical_name} With Id = {row_id} Does Not Exist")


def not_found_by_key(table: Table) -> EmulatorHTTPError:
    """§2.6: a key (URL or ``@odata.bind``) that resolves to nothing."""
    return dataverse_error(
        404,
        RECORD_NOT_FOUND_BY_KEY,
        f"A record with the specified key values does not exist in {table.logical_name} entity",
    )


def resource_not_found(segment: str) -> EmulatorHTTPError:
    """Unknown entity set or path segment (§5.1)."""
    return dataverse_error(404, RESOURCE_NOT_FOUND, f"Resource not found for the segment '{segment}'.")


# -- 412 -------------------------------------------------------------------------------


def duplicate_record() -> EmulatorHTTPError:
    """§2.5: create-only upsert on an existing row, or a duplicate alternate key."""
    return dataverse_error(412, DUPLICATE_RECORD, "A record with matching key values already exists.")


def version_mismatch() -> EmulatorHTTPError:
    """§2.7: stale ``If-Match`` ETag."""
    return dataverse_error(
        412,
        CONCURRENCY_VERSION_MISMATCH,
        "The version of the existing record doesn't match the RowVersion property provided.",
    )


# -- 400 -------------------------------------------------------------------------------


def invalid_key(table: Table) -> EmulatorHTTPError:
    """§2.5 documented text; the code is inferred."""
    return dataverse_error(
        400,
        RESOURCE_NOT_FOUND,
        f"The key in the request URI is not valid for resource '{table.qualified_name}'. "
        f"Ensure that the names and number of key properties match the declared or alternate "
        f"key properties for the resource '{table.logical_name}'.",
    )


def unaddressable_key(table: Table, value: str) -> EmulatorHTTPError:
    """Alternate-key data holding ``/ < > * % & : \\ ? +`` cannot be used to retrieve, update or upsert by key
    (docs/protocol-notes.md §2.5, define-alternate-keys-entity.md). The status, code and text of the failure are not
    documented: this 400 is inferred; what matters is that such a key URL never reaches a row."""
    return dataverse_error(
        400, RESOURCE_NOT_FOUND,
        f"The key value '{value}' of '{table.logical_name}' contains a character that cannot be used in a key URL "
        "(/ < > * % & : \\ ? +). Find the row with $filter and address it by its primary key.")


def invalid_property(table: Table, name: str) -> EmulatorHTTPError:
    """Unknown column in a payload (code seen in public code, §2.2)."""
    return dataverse_error(400, PAYLOAD_ERROR, f"Invalid property '{name}' was found in entity '{table.qualified_name}'.")


def undeclared_annotated_property(name: str) -> EmulatorHTTPError:
    """§2.6: ``@odata.bind`` on an unknown (e.g. wrongly cased) navigation property."""
    return dataverse_error(
        400,
        PAYLOAD_ERROR,
        f"An undeclared property '{name}' which only has property annotations in the payload but "
        f"no property value was found in the payload. In OData, only declared navigation "
        f"properties and declared named streams can be represented as properties without values.",
    )


def conversion_error(value: Any, edm_type: str) -> EmulatorHTTPError:
    """A JSON value of the wrong type or out of the Edm type's range (text and code
    inferred from Microsoft.OData's deserializer)."""
    literal = value if isinstance(value, str) else _json_literal(value)
    return dataverse_error(400, PAYLOAD_ERROR, f"Cannot convert the literal '{literal}' to the expected type '{edm_type}'.")


def max_length_exceeded(table: Table, column: str, max_length: int) -> EmulatorHTTPError:
    """§2.2 / §5.1 max-length validation error (text as in the brief, two spaces included)."""
    return dataverse_error(
        400,
        VALIDATION_MAX_LENGTH,
        f"A validation error occurred.  The length of the '{column}' attribute of the "
        f"'{table.logical_name}' entity exceeded the maximum allowed length of '{max_length}'.",
    )


def choice_out_of_range(table: Table, column: str, value: int, accepted: tuple[int, ...]) -> EmulatorHTTPError:
    """Picklist value outside the option set (code per §2.2, text inferred)."""
    return dataverse_error(
        400,
        VALUE_OUT_OF_RANGE,
        f"A validation error occurred. The value {value} of '{column}' on record of type "
        f"'{table.logical_name}' is outside the valid range. Accepted Values: "
        f"{','.join(str(v) for v in accepted)}",
    )


def value_out_of_range(table: Table, column: str, value: float, low: float | None, high: float | None) -> EmulatorHTTPError:
    """A number outside the column's MinValue..MaxValue (validation code 0x80044331 per §2.2; text inferred)."""
    return dataverse_error(
        400,
        VALIDATION_MAX_LENGTH,
        f"A validation error occurred. The value {value:g} of '{column}' on record of type '{table.logical_name}' is "
        f"outside the valid range({'' if low is None else f'{low:g}'} - {'' if high is None else f'{high:g}'}).",
    )


def required_missing(table: Table, column: str) -> EmulatorHTTPError:
    """Required column missing or nulled (InvalidArgument code per §2.2; text inferred)."""
    return dataverse_error(
        400,
        INVALID_ARGUMENT,
        f"The '{column}' attribute of the '{table.logical_name}' entity is required and cannot be null or empty.",
    )


def bad_request(message: str, code: str = RESOURCE_NOT_FOUND) -> EmulatorHTTPError:
    """Malformed URL or query option (code inferred: the generic OData URI error)."""
    return dataverse_error(400, code, message)


def method_not_allowed(method: str) -> EmulatorHTTPError:
    """§2.2: e.g. PATCH/DELETE on a collection (code inferred)."""
    return dataverse_error(405, RESOURCE_NOT_FOUND, f"The requested resource does not support http method '{method}'.")


def not_implemented(feature: str) -> EmulatorHTTPError:
    """A real Dataverse feature the emulator does not implement (yet); emulator-only, so
    the code is empty."""
    return dataverse_error(501, "", f"{feature} is not implemented by the Dataverse emulator.")


def _json_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "null"
    return str(value)
