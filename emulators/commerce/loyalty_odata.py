"""OData routes of ``RetailLoyaltyCardRewardPointTransactions`` over the line store (:mod:`.loyalty_lines`).

Same wire behaviour as the other sets (server.py): collection reads with the query options and server paging,
keyed GET / PATCH / DELETE, POST with validation (unknown property, wrong type or a null key string refused; a null
string stored as ""). Whether F&O accepts writes to this entity is not documented (inferred: allowed, like the
other loyalty entities); reads are what the app uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from . import errors, query
from .entities import RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS as LINES
from .loyalty_lines import ENTRY_TYPES, TRANSACTION_TYPES, CardInfo, Line, cents, day_of
from .store import etag_matches, no_null_strings
from .validation import validate_create, validate_update

if TYPE_CHECKING:
    from .server import CommerceRequestHandler

#: Properties a write changes in a line's slots (the rest are kept as written, in Line.extra).
_SLOTS = {"Remaining", "RewardPointAmountQty", "StartDate", "ExpirationDate", "EntryDate", "RewardPointId",
          "EntryTime"}


def get_collection(handler: CommerceRequestHandler) -> None:
    from .server import ODATA_JSON

    options = query.parse_query_options(LINES, handler.query_items)
    result = handler.server.lines.query(options, handler.server.page_size)
    # The store renders rows as a read sends them (@odata.etag first, properties in metadata order).
    if options.select:
        wanted = [name for name in LINES.property_names if name in set(options.select)]
        value = [row if len(row) == len(wanted) + 1 else
                 {"@odata.etag": etag, **{name: row[name] for name in wanted}} for row, etag in result.rows]
    else:
        value = [row for row, _ in result.rows]
    body = handler.page_body(LINES, options, result, value)
    # orjson: a page of 10,000 lines is the hot path of a balance build (same JSON as json.dumps would write).
    handler.send_bytes(200, orjson.dumps(body), content_type=ODATA_JSON)


def _find(handler: CommerceRequestHandler, key: tuple[Any, ...]) -> Line:
    line = handler.server.lines.find(key)
    if line is None:
        raise errors.not_found(f"{handler.base_url}{handler.raw_path}")
    return line


def get_entity(handler: CommerceRequestHandler, key: tuple[Any, ...], prop: str | None) -> None:
    from .server import format_key

    line = _find(handler, key)
    row = handler.server.lines.render(line)
    if prop is None:
        handler.send_odata(200, handler._entity_body(LINES, row, line.etag), headers={"ETag": line.etag})
        return
    if LINES.prop(prop) is None:
        raise errors.not_found(f"{handler.base_url}{handler.raw_path}")
    handler.send_odata(200, {
        "@odata.context": f"{handler.service_root}/$metadata#{LINES.name}({format_key(LINES, row)})/{prop}",
        "value": row.get(prop),
    })


def apply_changes(handler: CommerceRequestHandler, line: Line, changes: Mapping[str, Any]) -> None:
    """Write validated property values into a line (slots where the rules read them, else ``extra``)."""
    never = handler.server.seed_config.never_expires
    for name, value in changes.items():
        if name == "Remaining":
            line.remaining = cents(value)
        elif name == "RewardPointAmountQty":
            line.qty = cents(value)
        elif name == "EntryDate":
            line.entry_day = day_of(value)
        elif name == "StartDate":
            line.start_day = day_of(value)
        elif name == "ExpirationDate":
            line.exp_day = 0 if value == never or str(value).startswith("1900-01-01") else day_of(value)
        elif name == "RewardPointId":
            line.reward = str(value)
        elif name == "EntryTime":
            line.entry_time = int(value)
    extra = {k: v for k, v in changes.items() if k not in _SLOTS}
    if extra:
        line.extra = {**(line.extra or {}), **extra}


def post(handler: CommerceRequestHandler) -> None:
    server = handler.server
    row = dict(no_null_strings(LINES, validate_create(LINES, handler.read_json(), default_company=server.default_company,
                                                     companies=server.companies)))
    card = _card(handler, str(row["CardNumber"]))
    key = tuple(v.casefold() if isinstance(v, str) else v for v in (row[k] for k in LINES.keys))
    server.write_failures.check(LINES, key)
    with server.lines.lock:
        if server.lines.find(key) is not None:
            key_text = ", ".join(f"{p.label or p.name}: {row[p.name]}" for p in LINES.key_properties)
            raise errors.duplicate_key(LINES, key_text)
        entry_type = ENTRY_TYPES.index(row["EntryType"]) if row.get("EntryType") in ENTRY_TYPES else 0
        trans_type = (TRANSACTION_TYPES.index(row["LoyaltyTransactionType"])
                      if row.get("LoyaltyTransactionType") in TRANSACTION_TYPES else 0)
        line = Line(card, server.lines.next_rec_id(), entry_type, trans_type, 0, 0, 0, 0, 0, 0, 0, "")
        apply_changes(handler, line, row)
        line.extra = {k: v for k, v in row.items() if k not in _SLOTS}
        server.lines.append(line)
    stored = server.lines.render(line)
    handler._publish(LINES, stored, "Created")
    handler.send_odata(201, handler._entity_body(LINES, stored, line.etag),
                       headers={"Location": handler._location(LINES, stored), "ETag": line.etag})


def _card(handler: CommerceRequestHandler, number: str) -> CardInfo:
    """The line store's card, registered from RetailLoyaltyCards when it is new there (a card posted later)."""
    found = handler.server.lines.card(number)
    if found is not None:
        return found
    card = loyalty_card(handler, number)
    if card is None:
        raise errors.write_failed(LINES, [f"The loyalty card '{number}' does not exist."])  # text inferred
    return card


def loyalty_card(handler: CommerceRequestHandler, number: str) -> CardInfo | None:
    """The card in the line store, refreshed from its ``RetailLoyaltyCards`` row (tender type, party: a card edited
    after the seed pools as it now says); None when no such card exists."""
    from .entities import RETAIL_LOYALTY_CARDS
    from .loyalty_seed import customer_account

    server = handler.server
    found = server.store.get(RETAIL_LOYALTY_CARDS, server.store.key_of(RETAIL_LOYALTY_CARDS, {"CardNumber": number}))
    existing = server.lines.card(number)
    if found is None:
        return existing
    row, _ = found
    party = str(row.get("PartyNumber") or "")
    if existing is None:
        existing = server.ledger.register(CardInfo(
            str(row["CardNumber"]), party=party, customer=customer_account(party) if party else "",
            company=server.default_company, tender=str(row.get("CardTenderType") or "AsCardTender"),
            program="", tier=""))
        return existing
    server.ledger.refresh(existing, party=party, customer=customer_account(party) if party else "",
                          tender=str(row.get("CardTenderType") or "AsCardTender"))
    return existing


def patch(handler: CommerceRequestHandler, key: tuple[Any, ...]) -> None:
    server = handler.server
    with server.lines.lock:
        line = _find(handler, key)
        changes = validate_update(LINES, handler.read_json(), server.lines.render(line))
        server.write_failures.check(LINES, key)
        if_match = handler.header("If-Match")
        if if_match is not None and not etag_matches(if_match, line.etag):
            raise errors.update_conflict(LINES)
        apply_changes(handler, line, no_null_strings(LINES, changes, fill_missing=False))
        line.rec_version += 1
        stored = server.lines.render(line)
    handler._publish(LINES, stored, "Updated")
    handler.send_empty(204, headers={"ETag": line.etag})


def delete(handler: CommerceRequestHandler, key: tuple[Any, ...]) -> None:
    server = handler.server
    with server.lines.lock:
        line = _find(handler, key)
        if_match = handler.header("If-Match")
        if if_match is not None and not etag_matches(if_match, line.etag):
            raise errors.update_conflict(LINES)
        removed = server.lines.render(line)
        server.lines.remove(line)
    handler._publish(LINES, removed, "Deleted")
    handler.send_empty(204)


def hq_edit(handler: CommerceRequestHandler, key: tuple[Any, ...], body: Mapping[str, Any]) -> None:
    """``POST /_emulator/rows/RetailLoyaltyCardRewardPointTransactions``: a user's edit of a line in HQ (no OData
    validation; the event is raised as for an OData write)."""
    from emulators.common.server import EmulatorHTTPError

    server = handler.server
    with server.lines.lock:
        line = server.lines.find(key)
        if line is None:
            raise EmulatorHTTPError(404, "", f"No {LINES.name} row has the key {body['key']}.")
        if body.get("delete"):
            removed = server.lines.render(line)
            server.lines.remove(line)
        else:
            apply_changes(handler, line, dict(body.get("changes") or {}))
            line.rec_version += 1
            stored = server.lines.render(line)
    if body.get("delete"):
        handler._publish(LINES, removed, "Deleted")
    else:
        handler._publish(LINES, stored, "Updated")
    handler.send_json(200, {"ok": True})
