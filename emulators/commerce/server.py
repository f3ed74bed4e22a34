"""HTTP server of the Commerce / F&O OData emulator (docs/protocol-notes.md §3, checklist §5.2).

Routes (all ``/data`` routes need ``Authorization: Bearer <token>``, any non-empty token):

* ``GET /data/`` service document, ``GET /data/$metadata`` CSDL.
* ``GET|POST /data/<Set>``, ``GET|PATCH|DELETE /data/<Set>(<key>)``, ``GET /data/<Set>(<key>)/<Property>``.
* Every ``/data`` write request the OData routes receive (method, path, ``If-Match``, JSON body; an injected
  fault answers before them) is kept in a log that tests read at ``GET /_emulator/writes`` (cleared by
  ``DELETE /_emulator/writes`` and by a reset).
* Admin routes (no auth) live in :mod:`emulators.commerce.admin`; fault injection
  (``/_emulator/faults``, common) and user-based throttling (``/_emulator/service-protection``,
  :mod:`emulators.commerce.throttling`, off by default) apply to every ``/data`` route.

Use :func:`start_commerce` from tests and the demo.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar, cast
from urllib.parse import quote, unquote

from emulators.common.faults import FaultRule
from emulators.common.odata import ODataQueryError, parse_key_segment
from emulators.common.server import EmulatorHTTPError, EmulatorRequestHandler, EmulatorServer, Route, RouteHandler
from emulators.common.throttling import ServiceProtection, ServiceProtectionTracker

from . import admin, errors, loyalty_activity, loyalty_odata, query, throttling
from .entities import (
    EMPTY_DATE_MIDNIGHT,
    ENTITY_SETS,
    LOYALTY_CARD_TIERS_V2,
    RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS,
    RETAIL_LOYALTY_TIERS,
    EntitySet,
    entity_set,
)
from .loyalty_lines import LineStore
from .loyalty_rules import Ledger
from .loyalty_seed import build_loyalty
from .metadata import build_metadata
from .publisher import BusinessEventPublisher
from .seed import SeedConfig, build_seed
from .store import DuplicateKeyError, EntityStore, ETagMismatchError, Key, NotFoundError
from .validation import format_datetime, validate_create, validate_update
from .write_failures import WriteFailures

#: JSON content type of F&O OData responses (the streaming/IEEE754 parameters are inferred).
ODATA_JSON = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
XML = "application/xml; charset=utf-8"


class CommerceEmulator(EmulatorServer):
    """The emulator: seeded row store, settings and the business-events publisher."""

    def __init__(
        self,
        port: int = 0,
        *,
        cards: int = 200,
        reward_points: int = 20,
        levels_per_company: int = 4,
        companies: Sequence[str] = ("usmf", "usrt", "demf"),
        default_company: str = "usmf",
        page_size: int = query.MAX_PAGE_SIZE,
        seed: int = 42,
        publisher_options: Mapping[str, Any] | None = None,
        service_protection: ServiceProtection | None = None,
        verbose: bool = False,
        lines: int = -1,
        as_of: str = "2026-12-01",
        never_expires: str = EMPTY_DATE_MIDNIGHT,
        open_valid_to: str = EMPTY_DATE_MIDNIGHT,
    ) -> None:
        super().__init__(CommerceRequestHandler, port, name="commerce", verbose=verbose)
        #: §3.5 user-based limits (None = off; see :mod:`emulators.commerce.throttling`).
        self.service_protection: ServiceProtectionTracker | None = throttling.make_tracker(service_protection)
        companies = tuple(c.lower() for c in companies)
        if default_company.lower() not in companies:
            raise ValueError(f"default_company '{default_company}' is not one of {companies}")
        self.seed_config = SeedConfig(cards, reward_points, levels_per_company, companies, seed, lines, as_of,
                                      never_expires, open_valid_to)
        self.default_company = default_company.lower()
        self.page_size = _page_size(page_size)
        self.store = EntityStore(ENTITY_SETS)
        #: Configured validateWrite failures (:mod:`emulators.commerce.write_failures`).
        self.write_failures = WriteFailures()
        self.publisher = BusinessEventPublisher(
            default_company=self.default_company, seed=seed, **dict(publisher_options or {})
        )
        #: The write requests received on ``/data``, oldest first (``GET /_emulator/writes``).
        self.writes: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._writes_lock = threading.Lock()
        #: Transaction lines (their own compact store) and the rules that post to them (set by reseed).
        self.ledger: Ledger
        self.lines: LineStore
        #: The emulator clock: when an admin activity without a time happens (starts at the seed's as_of).
        self.clock: datetime
        self.reseed()

    @property
    def companies(self) -> tuple[str, ...]:
        return self.seed_config.companies

    def reseed(self, **overrides: Any) -> dict[str, int]:
        """Reload deterministic seed data (optionally with new sizes); returns row counts."""
        config = self.seed_config
        if overrides:
            fields = {**self.seed_config.__dict__, **overrides}
            fields["companies"] = tuple(c.lower() for c in fields["companies"])
            config = SeedConfig(**fields)
        for name in ("never_expires", "open_valid_to"):
            value = getattr(config, name)
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", value):
                raise ValueError(f"{name} must be a UTC date and time such as 1900-01-01T00:00:00Z, not {value!r}")
        date.fromisoformat(config.as_of)  # a bad as_of fails before anything is replaced
        self.seed_config = config
        rows = build_seed(config)
        loyalty = build_loyalty(rows["RetailLoyaltyCards"], rows["RetailLoyaltyRewardPoints"], lines=config.line_count,
                                as_of=date.fromisoformat(config.as_of), seed=config.seed, company=self.default_company,
                                never_expires=config.never_expires, open_valid_to=config.open_valid_to)
        rows[RETAIL_LOYALTY_TIERS.name] = loyalty.tiers
        rows[LOYALTY_CARD_TIERS_V2.name] = loyalty.card_tiers
        self.store.load(rows)
        self.ledger = loyalty.ledger
        self.lines = loyalty.ledger.store
        self.clock = datetime.fromisoformat(config.as_of).replace(tzinfo=UTC)
        self.clear_writes()
        return self.counts()

    def log_write(self, method: str, path: str, if_match: str | None, body: bytes) -> None:
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", errors="replace")
        with self._writes_lock:
            self.writes.append({"method": method, "path": path, "if_match": if_match, "body": parsed})

    def write_log(self) -> list[dict[str, Any]]:
        with self._writes_lock:
            return list(self.writes)

    def clear_writes(self) -> None:
        with self._writes_lock:
            self.writes.clear()

    def counts(self) -> dict[str, int]:
        return {s.name: self.lines.count if s is LINES else self.store.count(s) for s in ENTITY_SETS}

    def set_page_size(self, page_size: int) -> None:
        self.page_size = _page_size(page_size)

    def set_validation_failures(self, config: Mapping[str, Any]) -> None:
        """Make POST/PATCH of the listed keys fail with an Infolog validation error, e.g.
        ``{"RetailLoyaltyCards": ["LC-BAD"]}``; ``{}`` clears (see :mod:`.write_failures`)."""
        self.write_failures.configure(config)

    def stop(self) -> None:
        self.publisher.close()
        super().stop()


def _page_size(value: int) -> int:
    if value < 1:
        raise ValueError("page_size must be at least 1")
    return min(int(value), query.MAX_PAGE_SIZE)


def start_commerce(
    port: int = 0,
    cards: int = 200,
    reward_points: int = 20,
    levels_per_company: int = 4,
    companies: Sequence[str] = ("usmf", "usrt", "demf"),
    default_company: str = "usmf",
    page_size: int = query.MAX_PAGE_SIZE,
    seed: int = 42,
    *,
    publisher_options: Mapping[str, Any] | None = None,
    service_protection: ServiceProtection | None = None,
    verbose: bool = False,
    lines: int = -1,
    as_of: str = "2026-12-01",
    never_expires: str = EMPTY_DATE_MIDNIGHT,
    open_valid_to: str = EMPTY_DATE_MIDNIGHT,
) -> CommerceEmulator:
    """Build and start the emulator on 127.0.0.1 (port 0 = a free port); call ``.stop()`` when done.

    ``publisher_options`` go to :class:`BusinessEventPublisher` (``timeout``, ``retries``,
    ``retry_wait``, ``duplicate_delivery``, ``out_of_order``, ``initiating_user``).
    ``service_protection`` turns on the §3.5 user-based 429 limits (off by default). ``lines`` transaction lines
    (-1: eight per card) are generated up to ``as_of``; ``never_expires`` is the ``ExpirationDate`` of points that
    never expire and ``open_valid_to`` the ``ValidTo`` of an open card tier (both inferred: set them as the app's
    settings say). See :mod:`emulators.commerce.loyalty_activity` for the loyalty admin API.
    """
    server = CommerceEmulator(
        port, cards=cards, reward_points=reward_points, levels_per_company=levels_per_company,
        companies=companies, default_company=default_company, page_size=page_size, seed=seed,
        publisher_options=publisher_options, service_protection=service_protection, verbose=verbose,
        lines=lines, as_of=as_of, never_expires=never_expires, open_valid_to=open_valid_to,
    )
    server.start()
    return server


LINES = RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS


def format_key(entity_set: EntitySet, row: Mapping[str, Any]) -> str:
    """URL key segment: ``'X'`` for single keys, ``dataAreaId='usmf',LevelPhrase='Gold'`` otherwise; numbers and
    DateTimeOffset values bare (``ValidFrom=2024-01-01T00:00:00Z``, docs/protocol-notes.md §3.8)."""
    def literal(name: str) -> str:
        value = row[name]
        prop = entity_set.prop(name)
        if prop is not None and prop.edm_type in ("Edm.DateTimeOffset", "Edm.Decimal", "Edm.Int32", "Edm.Int64"):
            return quote(str(value), safe=":")
        return "'" + quote(str(value).replace("'", "''"), safe="'") + "'"

    if len(entity_set.keys) == 1:
        return literal(entity_set.keys[0])
    return ",".join(f"{k}={literal(k)}" for k in entity_set.keys)


def _split_resource(path: str) -> tuple[str, str | None, str | None]:
    """``Set(key)/Prop`` (percent-decoded) → (set, key text or None, property or None)."""
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)", path)
    if not match:
        raise errors.not_found(path)
    name, pos = match.group(1), match.end()
    key_text = None
    if pos < len(path) and path[pos] == "(":
        in_quote, i = False, pos + 1
        while i < len(path):
            ch = path[i]
            if ch == "'":
                in_quote = not in_quote  # a doubled '' toggles twice: still balanced
            elif ch == ")" and not in_quote:
                break
            i += 1
        if i >= len(path):
            raise errors.bad_request(f"Bad Request - Error in query syntax: unbalanced key segment in '{path}'.")
        key_text, pos = path[pos + 1:i], i + 1
    rest = path[pos:]
    if rest in ("", "/"):
        return name, key_text, None
    if key_text is not None and re.fullmatch(r"/[A-Za-z_][A-Za-z0-9_]*", rest):
        return name, key_text, rest[1:]
    raise errors.not_found(path)


def _key_value(eset: EntitySet, name: str, value: Any) -> Any:
    """A key part of the URL as the store keys it: strings as sent (quoted literals), a DateTimeOffset bare with
    its offset (as an F&O Location header writes one, ``…,ValidFrom=2020-12-31T23:00:00Z)``, seen in public code),
    a number bare. The refusal texts are inferred."""
    prop = eset.prop(name)
    edm = prop.edm_type if prop is not None else "Edm.String"
    if edm == "Edm.DateTimeOffset":
        if not isinstance(value, datetime):
            raise errors.bad_request(f"The key value for '{name}' must be an Edm.DateTimeOffset literal such as "
                                     "2024-01-01T00:00:00Z (unquoted).")
        return format_datetime(value)
    if edm in ("Edm.Decimal", "Edm.Int32", "Edm.Int64"):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise errors.bad_request(f"The key value for '{name}' must be an {edm} literal such as 1 (unquoted).")
        return value
    if not isinstance(value, str):
        raise errors.bad_request(f"The key value for '{name}' must be a string literal such as '{value}'.")
    return value


class CommerceRequestHandler(EmulatorRequestHandler):
    """Routes of the F&O ``/data`` service plus the emulator's admin routes."""

    server: CommerceEmulator
    routes: ClassVar[list[Route]] = []

    # -- hooks --------------------------------------------------------------------------------
    def _is_odata(self) -> bool:
        return getattr(self, "path_only", "").startswith("/data")

    def before_route(self, route: Route, match: re.Match[str]) -> None:
        """Every ``/data`` request needs a bearer token (docs/protocol-notes.md §1.3, §5.2)."""
        if self._is_odata():
            scheme, _, token = (self.header("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.unauthorized()

    def default_headers(self, *, has_body: bool) -> dict[str, str]:
        return {"OData-Version": "4.0"} if self._is_odata() else {}

    def invoke_route(self, route: Route, match: re.Match[str]) -> None:
        """User-based throttling (§3.5) around every ``/data`` route when it is on."""
        throttling.invoke_protected(self, route, match)

    def fault_error(self, rule: FaultRule) -> EmulatorHTTPError:
        """Injected faults with the §3.5 throttling messages (see :mod:`.throttling`)."""
        return throttling.fault_error(rule)

    def send_error_response(self, err: EmulatorHTTPError) -> None:
        body = {"error": {"code": err.code, "message": err.message, **err.extra}}
        self.send_json(err.status, body, headers=err.headers,
                       content_type=ODATA_JSON if self._is_odata() else "application/json")

    # -- helpers ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host = self.header("Host") or f"127.0.0.1:{self.server.port}"
        return f"http://{host}"

    @property
    def service_root(self) -> str:
        return f"{self.base_url}/data"

    def send_odata(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        self.send_json(status, body, headers=headers, content_type=ODATA_JSON)

    def _entity_set(self, name: str) -> EntitySet:
        found = entity_set(name)
        if found is None:
            raise errors.not_found(f"{self.service_root}/{name}")
        return found

    def _key(self, eset: EntitySet, key_text: str) -> Key:
        """Parse ``(…)``; every key part is required (docs/protocol-notes.md §3.1)."""
        try:
            pairs = parse_key_segment(key_text)
        except ODataQueryError as exc:
            raise errors.bad_request(str(exc)) from None
        mismatch = errors.bad_request(
            "The number of keys specified in the URI does not match number of key properties for "
            f"the resource '{eset.full_type_name}'."
        )
        if len(pairs) == 1 and pairs[0][0] is None:
            if len(eset.keys) != 1:
                raise mismatch
            values = {eset.keys[0]: pairs[0][1]}
        else:
            values = {name: value for name, value in pairs if name is not None}
            if set(values) != set(eset.keys) or len(pairs) != len(eset.keys):
                raise mismatch
        for name, value in values.items():
            values[name] = _key_value(eset, name, value)
        return self.server.store.key_of(eset, values)

    def _entity_body(self, eset: EntitySet, row: Mapping[str, Any], etag: str) -> dict[str, Any]:
        return {"@odata.context": f"{self.service_root}/$metadata#{eset.name}/$entity",
                **query.project(eset, row, etag)}

    def _location(self, eset: EntitySet, row: Mapping[str, Any]) -> str:
        return f"{self.service_root}/{eset.name}({format_key(eset, row)})"

    def _publish(self, eset: EntitySet, row: Mapping[str, Any], change_type: str) -> None:
        """Raise the entity's business event after the write committed (§4.1)."""
        publisher = self.server.publisher
        if eset.business_event_id and publisher.has_subscribers(eset.name):
            publisher.publish_change(eset.name, {k: row.get(k) for k in eset.keys}, change_type, row=row)

    # -- /data routes -------------------------------------------------------------------------
    def handle_service_document(self, match: re.Match[str]) -> None:
        self.route_name = "odata.service"
        self.send_odata(200, {
            "@odata.context": f"{self.service_root}/$metadata",
            "value": [{"name": s.name, "kind": "EntitySet", "url": s.name} for s in ENTITY_SETS],
        })

    def handle_metadata(self, match: re.Match[str]) -> None:
        self.route_name = "odata.metadata"
        self.send_bytes(200, build_metadata().encode("utf-8"), content_type=XML)

    def handle_resource(self, match: re.Match[str]) -> None:
        if self.method != "GET":
            self.server.log_write(self.method, self.raw_path, self.header("If-Match"), self.body)
        raw = self.raw_path[len("/data/"):]
        name, key_text, prop = _split_resource(unquote(raw))
        if key_text is not None and ("/" in key_text or "\\" in key_text):
            # F&O decodes the path before routing (IIS turns a backslash into '/'): a key holding either is no route
            # (docs/protocol-notes.md §3.1; a third-party report, not in Microsoft's docs). Read such keys with $filter.
            raise EmulatorHTTPError(404, "", "No route data was found for this request.")
        eset = self._entity_set(name)
        unsupported = EmulatorHTTPError(
            405, "", f"The requested resource does not support http method '{self.method}'.")
        if self.method != "GET" and not eset.writable:
            raise EmulatorHTTPError(405, "", f"The entity set '{eset.name}' is read-only in the emulator.")
        if key_text is None:
            collection_ops = {"GET": self._get_collection, "POST": self._post}
            if self.method not in collection_ops:
                raise unsupported
            self.route_name = f"odata.{eset.name}.{self.method.lower()}_collection"
            collection_ops[self.method](eset)
            return
        entity_ops = {"GET": self._get_entity, "PATCH": self._patch, "DELETE": self._delete}
        if self.method not in entity_ops or (prop is not None and self.method != "GET"):
            raise unsupported
        self.route_name = f"odata.{eset.name}.{self.method.lower()}_entity"
        entity_ops[self.method](eset, self._key(eset, key_text), prop)

    def _get_collection(self, eset: EntitySet) -> None:
        if eset is LINES:
            loyalty_odata.get_collection(self)
            return
        options = query.parse_query_options(eset, self.query_items)
        cross = query.is_cross_company(self.query)
        result = query.run_query(eset, self.server.store.rows(eset), options, default_company=self.server.default_company,
                                 cross_company=cross, page_size=self.server.page_size)
        self.send_odata(200, self.page_body(eset, options, result,
                                            [query.project(eset, row, etag, options.select) for row, etag in result.rows]))

    def page_body(self, eset: EntitySet, options: Any, result: Any, value: list[dict[str, Any]]) -> dict[str, Any]:
        """One page of a collection read: context (with its $select), $count, the rows, the server-driven nextLink."""
        context = f"{self.service_root}/$metadata#{eset.name}"
        if options.select:
            context += f"({','.join(options.select)})"
        body: dict[str, Any] = {"@odata.context": context}
        if options.count:
            body["@odata.count"] = result.count
        body["value"] = value
        if result.next_skip is not None and result.next_top is not None:
            body["@odata.nextLink"] = query.next_link(
                f"{self.base_url}{self.raw_path}", self.raw_query, result.next_skip, result.next_top)
        return body

    def _find(self, eset: EntitySet, key: Key) -> tuple[dict[str, Any], str]:
        found = self.server.store.get(eset, key)
        if found is None:
            raise errors.not_found(f"{self.base_url}{self.raw_path}")
        return found

    def _get_entity(self, eset: EntitySet, key: Key, prop: str | None) -> None:
        # Addressing by key reaches any company named in the key (inferred; §3.1 only says
        # that collection reads default to the caller's company).
        if eset is LINES:
            loyalty_odata.get_entity(self, key, prop)
            return
        row, etag = self._find(eset, key)
        if prop is None:
            self.send_odata(200, self._entity_body(eset, row, etag), headers={"ETag": etag})
            return
        if eset.prop(prop) is None:
            raise errors.not_found(f"{self.base_url}{self.raw_path}")
        self.send_odata(200, {
            "@odata.context": f"{self.service_root}/$metadata#{eset.name}({format_key(eset, row)})/{prop}",
            "value": row.get(prop),
        })

    def _post(self, eset: EntitySet) -> None:
        if eset is LINES:
            loyalty_odata.post(self)
            return
        row = validate_create(eset, self.read_json(), default_company=self.server.default_company,
                              companies=self.server.companies)
        self.server.write_failures.check(eset, self.server.store.key_of(eset, row))
        try:
            stored, etag = self.server.store.insert(eset, row)
        except DuplicateKeyError:
            key_text = ", ".join(f"{p.label or p.name}: {row[p.name]}" for p in eset.key_properties)
            raise errors.duplicate_key(eset, key_text) from None
        self._publish(eset, stored, "Created")
        self.send_odata(201, self._entity_body(eset, stored, etag),
                        headers={"Location": self._location(eset, stored), "ETag": etag})

    def _patch(self, eset: EntitySet, key: Key, prop: str | None) -> None:
        if eset is LINES:
            loyalty_odata.patch(self, key)
            return
        current, _ = self._find(eset, key)
        changes = validate_update(eset, self.read_json(), current)
        self.server.write_failures.check(eset, key)
        try:
            stored, etag = self.server.store.update(eset, key, changes, self.header("If-Match"))
        except NotFoundError:
            raise errors.not_found(f"{self.base_url}{self.raw_path}") from None
        except ETagMismatchError:
            raise errors.update_conflict(eset) from None
        self._publish(eset, stored, "Updated")
        self.send_empty(204, headers={"ETag": etag})

    def _delete(self, eset: EntitySet, key: Key, prop: str | None) -> None:
        if eset is LINES:
            loyalty_odata.delete(self, key)
            return
        try:
            removed = self.server.store.delete(eset, key, self.header("If-Match"))
        except NotFoundError:
            raise errors.not_found(f"{self.base_url}{self.raw_path}") from None
        except ETagMismatchError:
            raise errors.update_conflict(eset) from None
        self._publish(eset, removed, "Deleted")
        self.send_empty(204)


def _handler(method: Callable[[CommerceRequestHandler, re.Match[str]], None]) -> RouteHandler:
    """Adapt a CommerceRequestHandler method to the base class's route-handler type."""
    def route(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
        method(cast(CommerceRequestHandler, handler), match)
    return route


CommerceRequestHandler.routes = [
    *admin.routes(),
    *loyalty_activity.routes(),
    *throttling.admin_routes(),
    Route.make("GET", r"/data/?", "odata.service", _handler(CommerceRequestHandler.handle_service_document)),
    Route.make("GET", r"/data/\$metadata", "odata.metadata", _handler(CommerceRequestHandler.handle_metadata)),
    Route.make(("GET", "POST", "PATCH", "DELETE", "PUT"), r"/data/.+", "odata.resource",
               _handler(CommerceRequestHandler.handle_resource)),
]
