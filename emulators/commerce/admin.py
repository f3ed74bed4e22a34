"""Admin routes of the Commerce emulator (no auth, JSON in and out).

* ``GET /_emulator/info``; ``POST /_emulator/reset`` (reseed; optional ``cards``,
  ``reward_points``, ``levels_per_company``, ``seed``, and for the loyalty lines and tiers ``lines``, ``as_of``,
  ``never_expires``, ``open_valid_to``: :mod:`emulators.commerce.loyalty_activity`); ``POST /_emulator/config``
  (``page_size``, ``default_company``, ``validation_failures``: see
  :mod:`emulators.commerce.write_failures`). Stats come from ``emulators.common``.
* Business events (docs/protocol-notes.md §4, §5.3) under ``/_emulator/business-events/``:
  ``endpoints`` (GET, POST = register + activate, DELETE = remove all),
  ``endpoints/<id>`` (DELETE), ``catalog``, ``config`` (GET/POST knobs), ``publish``,
  ``flush``, ``deliveries``, ``published``, ``errors``, ``errors/resend``, ``reset``. An endpoint registered
  with ``"format": "data_event"`` receives F&O data events as a Dataverse webhook delivers them (§4.4; knobs
  ``size_exceeded``, ``operation_id``, ``updated_carries_keys``, ``webhook_timeout``, ``duplicate_delivery``).
* ``GET /_emulator/writes``: the ``/data`` write requests received (method, path, ``If-Match``, body), oldest
  first; ``DELETE /_emulator/writes`` clears the log (a reset does too).
* ``POST /_emulator/rows/<Set>`` with ``{"key": {...}, "changes": {...}}`` or ``{"key": {...}, "delete": true}``:
  a user's edit in the HQ client, which no OData routing rule limits (a key holding ``/`` has no OData
  route, docs/protocol-notes.md §3.1); the business event is raised as for an OData write.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from emulators.common.server import EmulatorHTTPError, Route

from .entities import entity_set
from .publisher import ActivationError
from .store import NotFoundError

if TYPE_CHECKING:
    from .server import CommerceRequestHandler

BE = r"/_emulator/business-events"


def _optional_json(handler: CommerceRequestHandler) -> dict[str, Any]:
    if not handler.body.strip():
        return {}
    body = handler.read_json()
    if not isinstance(body, dict):
        raise EmulatorHTTPError(400, "", "A JSON object is expected.")
    return body


def _info(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    server = handler.server
    handler.send_json(200, {
        "service_root": f"{server.url}/data",
        "default_company": server.default_company,
        "companies": list(server.companies),
        "page_size": server.page_size,
        "seed": server.seed_config.__dict__ | {"companies": list(server.companies)},
        "counts": server.counts(),
        "loyalty_clock": server.clock.isoformat().replace("+00:00", "Z"),
    })


def _reset(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    body = _optional_json(handler)
    allowed = {"cards", "reward_points", "levels_per_company", "seed", "lines"}
    texts = {"as_of", "never_expires", "open_valid_to"}  # loyalty lines and tiers (emulators.commerce.loyalty_seed)
    unknown = set(body) - allowed - texts
    if unknown:
        raise EmulatorHTTPError(400, "", f"Unknown reset options: {sorted(unknown)}; "
                                         f"allowed: {sorted(allowed | texts)}.")
    try:
        counts = handler.server.reseed(**{k: str(v) if k in texts else int(v) for k, v in body.items()})
    except (TypeError, ValueError) as exc:
        raise EmulatorHTTPError(400, "", f"Invalid reset option: {exc}") from None
    handler.send_json(200, {"counts": counts})


def _config(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    body = _optional_json(handler)
    server = handler.server
    try:
        if "page_size" in body:
            server.set_page_size(int(body["page_size"]))
        if "default_company" in body:
            company = str(body["default_company"]).lower()
            if company not in server.companies:
                raise ValueError(f"Unknown company '{company}'.")
            server.default_company = company
            server.publisher.default_company = company
        if "validation_failures" in body:
            server.set_validation_failures(body["validation_failures"])
    except (TypeError, ValueError) as exc:
        raise EmulatorHTTPError(400, "", str(exc)) from None
    handler.send_json(200, {"page_size": server.page_size, "default_company": server.default_company,
                            "validation_failures": server.write_failures.as_json()})


def _endpoints_get(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.send_json(200, {"value": [e.as_json() for e in handler.server.publisher.endpoints()]})


def _endpoints_post(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    body = _optional_json(handler)
    if not isinstance(body.get("url"), str):
        raise EmulatorHTTPError(400, "", "'url' (string) is required.")
    sets = body.get("entity_sets")
    try:
        endpoint = handler.server.publisher.register_endpoint(
            body["url"], sets, body.get("legal_entity"),
            send_test_event=bool(body.get("send_test_event", True)),
            format=str(body.get("format") or "business_event"),
        )
    except ValueError as exc:
        raise EmulatorHTTPError(400, "", str(exc)) from None
    except ActivationError as exc:
        # F&O refuses to activate an endpoint that fails the test message (§4.1).
        raise EmulatorHTTPError(502, "", str(exc)) from None
    handler.send_json(201, endpoint.as_json())


def _endpoints_delete(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.server.publisher.clear_endpoints()
    handler.send_empty(204)


def _endpoint_delete(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    if not handler.server.publisher.remove_endpoint(int(match.group("id"))):
        raise EmulatorHTTPError(404, "", f"No endpoint with id {match.group('id')}.")
    handler.send_empty(204)


def _catalog(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.send_json(200, {"value": handler.server.publisher.event_catalog()})


def _be_config(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    publisher = handler.server.publisher
    if handler.method == "GET":
        handler.send_json(200, publisher.settings.as_json())
        return
    try:
        handler.send_json(200, publisher.configure(**_optional_json(handler)))
    except (TypeError, ValueError) as exc:
        raise EmulatorHTTPError(400, "", str(exc)) from None


def _publish(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    body = _optional_json(handler)
    key = body.get("key")
    if not isinstance(body.get("entity_set"), str) or not isinstance(key, dict):
        raise EmulatorHTTPError(400, "", "'entity_set' (string) and 'key' (object) are required.")
    try:
        row = body.get("row")
        events = handler.server.publisher.publish_change(
            body["entity_set"], key, str(body.get("change_type", "Updated")), body.get("legal_entity"),
            row=row if isinstance(row, dict) else None)
    except ValueError as exc:
        raise EmulatorHTTPError(400, "", str(exc)) from None
    handler.send_json(202, {"value": events})


def _flush(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    timeout = float(_optional_json(handler).get("timeout", 30))
    handler.send_json(200, {"drained": handler.server.publisher.flush(timeout)})


def _deliveries(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.send_json(200, {"value": handler.server.publisher.deliveries()})


def _published(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.send_json(200, {"value": handler.server.publisher.published()})


def _errors(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.send_json(200, {"value": handler.server.publisher.errors()})


def _resend(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    ids = _optional_json(handler).get("ids")
    count = handler.server.publisher.resend([int(i) for i in ids] if ids is not None else None)
    handler.send_json(202, {"resent": count})


def _be_reset(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.server.publisher.reset()
    handler.send_empty(204)


def _writes_get(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.send_json(200, {"value": handler.server.write_log()})


def _writes_delete(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.server.clear_writes()
    handler.send_empty(204)


def _hq_edit(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    eset = entity_set(match.group("set"))
    body = _optional_json(handler)
    if eset is None or not isinstance(body.get("key"), dict):
        raise EmulatorHTTPError(400, "", "Name an entity set in the path and its key as {'key': {...}}.")
    key = handler.server.store.key_of(eset, body["key"])
    if eset.name == "RetailLoyaltyCardRewardPointTransactions":
        from .loyalty_odata import hq_edit

        hq_edit(handler, key, body)
        return
    try:
        if body.get("delete"):
            handler._publish(eset, handler.server.store.delete(eset, key), "Deleted")
        else:
            stored, _ = handler.server.store.update(eset, key, dict(body.get("changes") or {}))
            handler._publish(eset, stored, "Updated")
    except NotFoundError:
        raise EmulatorHTTPError(404, "", f"No {eset.name} row has the key {body['key']}.") from None
    handler.send_json(200, {"ok": True})


def routes() -> list[Route]:
    def admin(methods: str | tuple[str, ...], pattern: str, name: str, fn: Any) -> Route:
        return Route.make(methods, pattern, f"admin.{name}", fn, admin=True)

    return [
        admin("GET", r"/_emulator/info", "info", _info),
        admin("POST", r"/_emulator/reset", "reset", _reset),
        admin("POST", r"/_emulator/config", "config", _config),
        admin("POST", r"/_emulator/rows/(?P<set>[A-Za-z]+)", "hq_edit", _hq_edit),
        admin("GET", r"/_emulator/writes", "writes", _writes_get),
        admin("DELETE", r"/_emulator/writes", "writes.clear", _writes_delete),
        admin("GET", BE + r"/endpoints", "be.endpoints", _endpoints_get),
        admin("POST", BE + r"/endpoints", "be.endpoints.add", _endpoints_post),
        admin("DELETE", BE + r"/endpoints", "be.endpoints.clear", _endpoints_delete),
        admin("DELETE", BE + r"/endpoints/(?P<id>\d+)", "be.endpoint.delete", _endpoint_delete),
        admin("GET", BE + r"/catalog", "be.catalog", _catalog),
        admin(("GET", "POST"), BE + r"/config", "be.config", _be_config),
        admin("POST", BE + r"/publish", "be.publish", _publish),
        admin("POST", BE + r"/flush", "be.flush", _flush),
        admin("GET", BE + r"/deliveries", "be.deliveries", _deliveries),
        admin("GET", BE + r"/published", "be.published", _published),
        admin("GET", BE + r"/errors", "be.errors", _errors),
        admin("POST", BE + r"/errors/resend", "be.errors.resend", _resend),
        admin("POST", BE + r"/reset", "be.reset", _be_reset),
    ]
