"""Loyalty activity on the Commerce emulator: the admin HTTP API and :class:`CommerceLoyaltyAdmin`, its client.

What a cashier, a call-centre agent or a batch job does in Commerce HQ, posted as transaction lines
(``RetailLoyaltyCardRewardPointTransactions``) with the rules of :mod:`emulators.commerce.loyalty_rules`, plus the
emulator clock and card tiers (``LoyaltyCardTiersV2``). No auth, JSON in and out. Changed lines and tier rows raise
the entity's business/data event as an OData write does (a ``data_event`` endpoint gets ``OnExternalCreated`` /
``OnExternalUpdated`` on ``mserp_retailloyaltycardrewardpointtransactionentity``, an inferred name).

HTTP API
--------
``GET  /_emulator/loyalty/clock`` -> ``{"now": "<iso>"}``
``POST /_emulator/loyalty/clock`` ``{"now": "<iso>"}`` or ``{"advance_days": <number>}`` -> ``{"now": "<iso>"}``.
    The clock is when an activity without ``at`` happens; it starts at the seed's ``as_of`` (midnight UTC). It
    does not change what reads return (F&O stores dates; "today" is the app's business).
``POST /_emulator/loyalty/activity`` one activity -> ``201 {"line": <row>, "changed": [<rows>]}``; ``409`` with the
    reason when Commerce would refuse it (redeeming more than is available, a "No tender"/"Blocked" card, a
    non-redeemable reward point), ``404`` for an unknown card, ``400`` for a malformed body. An activity::

        {"kind": "earn" | "redeem" | "return" | "adjust" | "refund", "card": "<CardNumber>",
         "points": <number: positive; signed for "adjust">, "reward_point": "<RewardPointId>" (default: the card's
         usual one), "at": "<iso datetime>" (default: the clock), "start_date": "<date>" and "expiration_date":
         "<date>" (earn/refund/adjust+; default from the reward point's vesting and expiration), "never_expires":
         true (earn: the never-expires value), "operating_unit": "<channel>"}

    ``changed`` holds the earlier lines whose ``Remaining`` the activity lowered (a redemption's consumed lines,
    on other cards of the customer too when the card is "As contact tender").
``POST /_emulator/loyalty/activities`` ``{"activities": [<activity>, ...]}`` -> ``201 {"value": [<result>, ...]}``,
    applied in order; on the first refusal ``409`` with ``applied`` (how many were applied before it).
``GET  /_emulator/loyalty/cards/<card>/lines`` -> ``{"value": [<rows in entry order>]}``
``GET  /_emulator/loyalty/cards/<card>/pool`` -> ``{"value": ["<card numbers a redemption may consume>"]}``
``PUT  /_emulator/loyalty/cards/<card>/tiers`` ``{"rows": [<LoyaltyCardTiersV2 row without LoyaltyCardNumber>]}``
    replaces the card's tier rows; ``POST`` to the same path adds rows -> ``200 {"value": [<the card's rows>]}``.
    Rows are validated as an OData POST (types, enum names; ``ValidTo`` defaults to the open value).
``POST /_emulator/reset`` takes ``lines`` (and ``as_of``, ``never_expires``, ``open_valid_to``) too.

Python client
-------------
``CommerceLoyaltyAdmin(base_url: str, *, session: requests.Session | None = None, timeout: float = 10.0)``:

* ``clock() -> datetime``; ``set_clock(now: datetime | str) -> datetime``; ``advance_clock(days: float) -> datetime``
* ``earn(card, points, *, reward_point=None, at=None, start_date=None, expiration_date=None, never_expires=False,
  operating_unit=None) -> LoyaltyActivityResult``
* ``redeem(card, points, *, reward_point=None, at=None) -> LoyaltyActivityResult``
* ``return_earned(card, points, *, reward_point=None, at=None) -> LoyaltyActivityResult``
* ``adjust(card, points, *, reward_point=None, at=None) -> LoyaltyActivityResult`` (points signed)
* ``refund(card, points, *, reward_point=None, at=None) -> LoyaltyActivityResult``
* ``post_activities(activities: Iterable[Mapping[str, Any]]) -> list[LoyaltyActivityResult]``
* ``card_lines(card) -> list[dict]``; ``card_pool(card) -> list[str]``
* ``set_card_tiers(card, rows) -> list[dict]`` (replace); ``add_card_tiers(card, rows) -> list[dict]``

``LoyaltyActivityResult(line: dict, changed: list[dict])``; a refusal raises :class:`LoyaltyActivityRefused`
(``status``, ``message``, ``applied`` for a batch). Dates and datetimes may be given as ``date``/``datetime`` or
ISO text.

Transaction lines are read through OData like any set: scan them by ``CardNumber`` ranges ordered by ``CardNumber``
(then any other properties), read recent ones by ``EntryDate``, re-read batches with ``CardNumber eq … or …``; these
are the fast paths of :mod:`emulators.commerce.loyalty_lines`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import requests
from pydantic import BaseModel, ConfigDict, ValidationError

from emulators.common.server import EmulatorHTTPError, Route

from .entities import LOYALTY_CARD_TIERS_V2 as TIERS
from .entities import RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS as LINES
from .entities import RETAIL_LOYALTY_REWARD_POINTS as REWARD_POINTS
from .loyalty_rules import Activity, ActivityError, RewardRule
from .store import DuplicateKeyError
from .validation import validate_create

if TYPE_CHECKING:
    from .server import CommerceRequestHandler

BASE = r"/_emulator/loyalty"


# -- the HTTP side --------------------------------------------------------------------------------------------------


class ActivityIn(BaseModel):
    """One activity as the admin API takes it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["earn", "redeem", "return", "adjust", "refund"]
    card: str
    points: float
    reward_point: str | None = None
    at: datetime | None = None
    start_date: date | None = None
    expiration_date: date | None = None
    never_expires: bool = False
    operating_unit: str | None = None


def _body(handler: CommerceRequestHandler) -> dict[str, Any]:
    if not handler.body.strip():
        return {}
    body = handler.read_json()
    if not isinstance(body, dict):
        raise EmulatorHTTPError(400, "", "A JSON object is expected.")
    return body


def _activity(handler: CommerceRequestHandler, raw: Any) -> Activity:
    try:
        given = ActivityIn.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise EmulatorHTTPError(400, "", f"Invalid activity: {problems}") from None
    moment = (given.at or handler.server.clock)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    exp_day = 0 if given.never_expires else (given.expiration_date.toordinal() if given.expiration_date else None)
    return Activity(given.kind, given.card, given.points, moment.date().toordinal(),
                    moment.hour * 3600 + moment.minute * 60 + moment.second, given.reward_point,
                    given.start_date.toordinal() if given.start_date else None, exp_day, given.operating_unit)


def _apply(handler: CommerceRequestHandler, activity: Activity) -> dict[str, Any]:
    from .loyalty_odata import loyalty_card

    server = handler.server
    card = loyalty_card(handler, activity.card)
    if card is None:
        raise EmulatorHTTPError(404, "", f"The loyalty card '{activity.card}' does not exist.")
    if activity.reward_point:
        # The reward point's current definition (one created or edited after the seed counts as it now is).
        found = server.store.get(REWARD_POINTS, server.store.key_of(REWARD_POINTS, {"RewardPointId": activity.reward_point}))
        if found is not None:
            server.ledger.rules[str(found[0]["RewardPointId"])] = RewardRule.from_row(found[0])
            activity.reward_point = str(found[0]["RewardPointId"])
    try:
        line, changed = server.ledger.apply(activity)
    except ActivityError as exc:
        raise EmulatorHTTPError(409, "", str(exc)) from None
    rows = [server.lines.render(ln) for ln in changed]
    created = server.lines.render(line)
    handler._publish(LINES, created, "Created")
    for row in rows:
        handler._publish(LINES, row, "Updated")
    return {"line": created, "changed": rows}


def _clock(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    server = handler.server
    if handler.method == "POST":
        body = _body(handler)
        try:
            if "now" in body:
                now = datetime.fromisoformat(str(body["now"]).replace("Z", "+00:00"))
                server.clock = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
            elif "advance_days" in body:
                server.clock += timedelta(days=float(body["advance_days"]))
            else:
                raise ValueError("Give 'now' (an ISO datetime) or 'advance_days' (a number).")
        except (TypeError, ValueError) as exc:
            raise EmulatorHTTPError(400, "", str(exc)) from None
    handler.send_json(200, {"now": _iso(server.clock)})


def _one(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    handler.send_json(201, _apply(handler, _activity(handler, _body(handler))))


def _many(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    given = _body(handler).get("activities")
    if not isinstance(given, list):
        raise EmulatorHTTPError(400, "", "'activities' (a list of activities) is required.")
    activities = [_activity(handler, raw) for raw in given]  # all well-formed before any is applied
    results: list[dict[str, Any]] = []
    for activity in activities:
        try:
            results.append(_apply(handler, activity))
        except EmulatorHTTPError as exc:
            exc.extra = {**exc.extra, "applied": len(results)}
            raise
    handler.send_json(201, {"value": results})


def _lines(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    card = handler.server.lines.card(match.group("card"))
    if card is None:
        raise EmulatorHTTPError(404, "", f"The loyalty card '{match.group('card')}' has no lines.")
    with handler.server.lines.lock:
        rows = [handler.server.lines.render(ln) for ln in card.lines]
    handler.send_json(200, {"value": rows})


def _pool(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    from .loyalty_odata import loyalty_card

    card = loyalty_card(handler, match.group("card"))
    if card is None:
        raise EmulatorHTTPError(404, "", f"The loyalty card '{match.group('card')}' does not exist.")
    handler.send_json(200, {"value": [c.card_number for c in handler.server.ledger.pool_of(card)]})


def card_tier_rows(handler: CommerceRequestHandler, card: str) -> list[tuple[dict[str, Any], str]]:
    folded = card.casefold()
    return [(row, etag) for row, etag in handler.server.store.rows(TIERS)
            if str(row["LoyaltyCardNumber"]).casefold() == folded]


def _tiers(handler: CommerceRequestHandler, match: re.Match[str]) -> None:
    from .loyalty_odata import loyalty_card

    server = handler.server
    number = match.group("card")
    card = loyalty_card(handler, number)
    if card is None:
        raise EmulatorHTTPError(404, "", f"The loyalty card '{number}' does not exist.")
    given = _body(handler).get("rows")
    if not isinstance(given, list):
        raise EmulatorHTTPError(400, "", "'rows' (a list of LoyaltyCardTiersV2 rows) is required.")
    rows = []
    for raw in given:
        if not isinstance(raw, dict):
            raise EmulatorHTTPError(400, "", "Each row is a JSON object.")
        row = {"ValidTo": server.seed_config.open_valid_to, **raw, "LoyaltyCardNumber": card.card_number}
        rows.append(validate_create(TIERS, row, default_company=server.default_company, companies=server.companies))
    removed = []
    if handler.method == "PUT":
        for row, _ in card_tier_rows(handler, card.card_number):
            removed.append(server.store.delete(TIERS, server.store.key_of(TIERS, row)))
    added = []
    for row in rows:
        try:
            added.append(server.store.insert(TIERS, row)[0])
        except DuplicateKeyError:
            raise EmulatorHTTPError(409, "", f"The card already has the tier row {row}.") from None
    for row in removed:
        handler._publish(TIERS, row, "Deleted")
    for row in added:
        handler._publish(TIERS, row, "Created")
    handler.send_json(200, {"value": [row for row, _ in card_tier_rows(handler, card.card_number)]})


def routes() -> list[Route]:
    def admin(methods: str | tuple[str, ...], pattern: str, name: str, fn: Any) -> Route:
        return Route.make(methods, pattern, f"admin.loyalty.{name}", fn, admin=True)

    card = r"/cards/(?P<card>[^/]+)"
    return [
        admin(("GET", "POST"), BASE + r"/clock", "clock", _clock),
        admin("POST", BASE + r"/activity", "activity", _one),
        admin("POST", BASE + r"/activities", "activities", _many),
        admin("GET", BASE + card + r"/lines", "lines", _lines),
        admin("GET", BASE + card + r"/pool", "pool", _pool),
        admin(("PUT", "POST"), BASE + card + r"/tiers", "tiers", _tiers),
    ]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- the client -----------------------------------------------------------------------------------------------------


class LoyaltyActivityRefused(Exception):
    """The emulator refused an activity (as Commerce would: 409), or the request was wrong (400/404)."""

    def __init__(self, status: int, message: str, applied: int | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.applied = applied


@dataclass(frozen=True)
class LoyaltyActivityResult:
    """The line an activity posted and the earlier lines whose ``Remaining`` it lowered."""

    line: dict[str, Any]
    changed: list[dict[str, Any]] = field(default_factory=list)


def _text(value: date | datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return _iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    return value.isoformat()


class CommerceLoyaltyAdmin:
    """Client of the loyalty admin API for tests, the demo and the bench (see this module's docstring)."""

    def __init__(self, base_url: str, *, session: requests.Session | None = None, timeout: float = 10.0) -> None:
        self.base = base_url.rstrip("/") + "/_emulator/loyalty"
        self.session = session or requests.Session()
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        response = self.session.request(method, self.base + path, json=body, timeout=self.timeout)
        if response.status_code >= 400:
            try:
                error = response.json().get("error", {})
            except ValueError:
                error = {"message": response.text}
            raise LoyaltyActivityRefused(response.status_code, str(error.get("message", "")), error.get("applied"))
        return response.json()

    # -- clock
    def clock(self) -> datetime:
        return datetime.fromisoformat(self._call("GET", "/clock")["now"].replace("Z", "+00:00"))

    def set_clock(self, now: datetime | str) -> datetime:
        return datetime.fromisoformat(self._call("POST", "/clock", {"now": _text(now)})["now"].replace("Z", "+00:00"))

    def advance_clock(self, days: float) -> datetime:
        return datetime.fromisoformat(self._call("POST", "/clock", {"advance_days": days})["now"].replace("Z", "+00:00"))

    # -- activities
    @staticmethod
    def activity(kind: str, card: str, points: float, *, reward_point: str | None = None,
                 at: datetime | str | None = None, start_date: date | str | None = None,
                 expiration_date: date | str | None = None, never_expires: bool = False,
                 operating_unit: str | None = None) -> dict[str, Any]:
        """The JSON of one activity (for :meth:`post_activities`)."""
        body: dict[str, Any] = {"kind": kind, "card": card, "points": points}
        optional = {"reward_point": reward_point, "at": _text(at), "start_date": _text(start_date),
                    "expiration_date": _text(expiration_date), "operating_unit": operating_unit}
        body.update({k: v for k, v in optional.items() if v is not None})
        if never_expires:
            body["never_expires"] = True
        return body

    def _post(self, body: dict[str, Any]) -> LoyaltyActivityResult:
        result = self._call("POST", "/activity", body)
        return LoyaltyActivityResult(result["line"], result["changed"])

    def earn(self, card: str, points: float, *, reward_point: str | None = None, at: datetime | str | None = None,
             start_date: date | str | None = None, expiration_date: date | str | None = None,
             never_expires: bool = False, operating_unit: str | None = None) -> LoyaltyActivityResult:
        return self._post(self.activity("earn", card, points, reward_point=reward_point, at=at, start_date=start_date,
                                        expiration_date=expiration_date, never_expires=never_expires,
                                        operating_unit=operating_unit))

    def redeem(self, card: str, points: float, *, reward_point: str | None = None,
               at: datetime | str | None = None) -> LoyaltyActivityResult:
        return self._post(self.activity("redeem", card, points, reward_point=reward_point, at=at))

    def return_earned(self, card: str, points: float, *, reward_point: str | None = None,
                      at: datetime | str | None = None) -> LoyaltyActivityResult:
        return self._post(self.activity("return", card, points, reward_point=reward_point, at=at))

    def adjust(self, card: str, points: float, *, reward_point: str | None = None,
               at: datetime | str | None = None) -> LoyaltyActivityResult:
        return self._post(self.activity("adjust", card, points, reward_point=reward_point, at=at))

    def refund(self, card: str, points: float, *, reward_point: str | None = None,
               at: datetime | str | None = None) -> LoyaltyActivityResult:
        return self._post(self.activity("refund", card, points, reward_point=reward_point, at=at))

    def post_activities(self, activities: Iterable[Mapping[str, Any]]) -> list[LoyaltyActivityResult]:
        result = self._call("POST", "/activities", {"activities": list(activities)})
        return [LoyaltyActivityResult(r["line"], r["changed"]) for r in result["value"]]

    # -- cards
    def card_lines(self, card: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/cards/{quote(card, safe='')}/lines")["value"])

    def card_pool(self, card: str) -> list[str]:
        return list(self._call("GET", f"/cards/{quote(card, safe='')}/pool")["value"])

    def set_card_tiers(self, card: str, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return list(self._call("PUT", f"/cards/{quote(card, safe='')}/tiers", {"rows": [dict(r) for r in rows]})["value"])

    def add_card_tiers(self, card: str, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return list(self._call("POST", f"/cards/{quote(card, safe='')}/tiers", {"rows": [dict(r) for r in rows]})["value"])
