"""HTTP layer of the Dataverse Web API emulator (docs/protocol-notes.md §2, checklist §5.1).

``start_dataverse()`` starts a real HTTP server on 127.0.0.1; the Web API root is
``<url>/api/data/v9.2/``. Route table (later issues add ``$batch``, bulk actions, change
tracking and service protection as new routes / hooks):

=========================================  ==============================================
``GET  /api/data/v9.2/WhoAmI``             §5.1 WhoAmI (+ ``x-ms-dop-hint``)
``GET  .../EntityDefinitions(LogicalName='<t>')/Attributes``  §5.1 a table's attributes (shape inferred)
``POST EntityDefinitions``, ``…/Attributes``, ``…/Keys``, ``RelationshipDefinitions``  §2.14 (:mod:`.customization`)
``GET  EntityDefinitions(LogicalName='<t>')[/Keys]``  §2.14 a table's definition, its keys' index states
``POST /_emulator/keys``                   admin: set a key's index state (Active, Failed, ...)
``POST|DELETE /_emulator/solutions[/<n>]``  admin: make / remove a solution and its publisher's prefix
``POST /_emulator/metadata/reset``         admin: forget the app-owned tables, restore the seeded solutions
``GET|POST /api/data/v9.2/<set>``          §2.8 query + paging / §2.3 create
``GET|PATCH|DELETE /api/data/v9.2/<set>(<key>)``  §2.5/§2.7 retrieve, upsert, delete
``POST /_emulator/reset``                  admin: empty the msdyn_ tables (seeds kept)
``POST /_emulator/change-tracking/expire``  admin: expire every delta token issued so far
``GET  /_emulator/rows/<set>``             admin: dump a table (no auth)
``GET  /_emulator/stats``, ``POST /_emulator/stats/reset``  request counters (common)
``GET|DELETE /_emulator/requests``         admin: the last API requests (method, path, query, Prefer)
=========================================  ==============================================

Every ``/api/`` request needs ``Authorization: Bearer <non-empty>`` (§1.3, §5.1).
Change tracking (§2.11: ``Prefer: odata.track-changes``, deltaLinks) lives in
:mod:`emulators.dataverse.changetracking`.

Also: ``POST /api/data/v9.2/$batch`` (§2.9, :mod:`.batch`); ``POST <set>/Microsoft.Dynamics.CRM.
{Create,Update,Upsert}Multiple`` (§2.10, :mod:`.bulk`); service protection (§2.12,
:mod:`.protection`; off unless ``service_protection=ServiceProtection(...)``) with admin routes
``GET|POST|DELETE /_emulator/service-protection`` and ``POST /_emulator/service-protection/reset``;
fault injection ``GET|POST|DELETE /_emulator/faults`` (common, :mod:`emulators.common.faults`).
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from emulators.common.faults import FaultRule
from emulators.common.server import EmulatorHTTPError, EmulatorRequestHandler, EmulatorServer, Route
from emulators.common.throttling import ServiceProtection, ServiceProtectionTracker

from . import batch, bulk, changetracking, errors, operations, protection
from .customization import ENTITY_PROPERTIES, KEY_PROPERTIES, SOLUTION_HEADER, Customizations, parse_select
from .errors import error_annotations
from .metadata import ATTRIBUTES_PATTERN, attributes_body
from .query import (
    COUNT_LIMIT,
    MAX_PAGE_SIZE,
    decode_skiptoken,
    encode_skiptoken,
    parse_collection_query,
    parse_entity_select,
    select_rows,
    sort_spec,
    strip_skiptoken,
)
from .references import EntityRef, require_row, resolve_key, split_resource_path
from .schema import DEFAULT_COMPANIES, DEFAULT_CURRENCIES, DEFAULT_SOLUTIONS, TABLES, Table
from .store import Row, Store

API_PATH = "/api/data/v9.2/"
REQUEST_LOG_SIZE = 10_000
ODATA_JSON = "application/json; odata.metadata=minimal"

SeedRows = Iterable[str | tuple[str, str]]
ENTITY_PATTERN = r"/api/data/v9\.2/EntityDefinitions\(LogicalName='(?P<logical_name>[^']*)'\)"


class DataverseServer(EmulatorServer):
    """An :class:`EmulatorServer` holding the Dataverse :class:`Store` and settings."""

    def __init__(
        self,
        port: int = 0,
        *,
        page_size_cap: int = MAX_PAGE_SIZE,
        companies: SeedRows | None = None,
        currencies: SeedRows | None = None,
        dop_hint: int = 4,
        expire_after_s: float | None = None,
        service_protection: ServiceProtection | None = None,
        bulk_max_payload_bytes: int | None = None,
        solutions: Iterable[tuple[str, str]] | None = None,
        key_activation_polls: int = 2,
        verbose: bool = False,
    ) -> None:
        super().__init__(DataverseRequestHandler, port, name="dataverse", verbose=verbose)
        #: §2.12 limits (None = off); replace at run time via /_emulator/service-protection.
        self.service_protection: ServiceProtectionTracker | None = protection.make_tracker(service_protection)
        #: §2.10 payload ceiling of the bulk actions (None = unlimited) → 413.
        self.bulk_max_payload_bytes = bulk_max_payload_bytes
        self.store = Store(TABLES)
        #: The last API requests (method, decoded path, query options, Prefer), for tests that count requests by
        #: their query (``GET /_emulator/requests``; ``DELETE`` clears it).
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.change_tracker = changetracking.ChangeTracker(self.store, expire_after_s=expire_after_s)
        self.page_size_cap = max(1, page_size_cap)
        self.dop_hint = dop_hint
        self.tenant_id = str(uuid.uuid4())
        self.organization_id = str(uuid.uuid4())
        self.business_unit_id = str(uuid.uuid4())
        self.user_id = str(uuid.uuid4())
        self._seed("cdm_companies", "cdm_companycode", "cdm_name", companies or DEFAULT_COMPANIES)
        self._seed("transactioncurrencies", "isocurrencycode", "currencyname", currencies or DEFAULT_CURRENCIES)
        #: App-owned tables made through the metadata API (§2.14); a new key is Pending for that many reads of Keys.
        self.customizations = Customizations(self.store, key_activation_polls=key_activation_polls)
        self.initial_key_activation_polls = max(0, key_activation_polls)
        self.seed_solutions = tuple(DEFAULT_SOLUTIONS if solutions is None else solutions)
        for unique_name, prefix in self.seed_solutions:
            self.add_solution(unique_name, prefix)

    def add_solution(self, unique_name: str, prefix: str, *, seeded: bool = True) -> None:
        """A solution and its publisher (``<prefix>publisher``, customization prefix ``prefix``): what an
        administrator makes in the maker portal before provisioning. Replaces a solution of that name."""
        with self.store.lock:
            old = self.store.find_by_key("solutions", {"uniquename": unique_name})
            if old is not None:
                self.store.delete("solutions", old["solutionid"])
            publisher = self.store.find_by_key("publishers", {"uniquename": f"{prefix}publisher"})
            insert = self.store.seed if seeded else self.store.insert
            if publisher is None:
                publisher = insert("publishers", {"uniquename": f"{prefix}publisher", "friendlyname": f"{prefix} publisher",
                                                  "customizationprefix": prefix,
                                                  "customizationoptionvalueprefix": 10_000 + sum(map(ord, prefix))})
            insert("solutions", {"uniquename": unique_name, "friendlyname": unique_name, "version": "1.0.0.0",
                                 "_publisherid_value": publisher["publisherid"]})

    def remove_solution(self, unique_name: str) -> bool:
        with self.store.lock:
            old = self.store.find_by_key("solutions", {"uniquename": unique_name})
            return old is not None and self.store.delete("solutions", old["solutionid"])

    def reset_metadata(self) -> None:
        """Forget every app-owned table and restore the seeded solutions (admin)."""
        self.customizations.reset()
        self.customizations.key_activation_polls = self.initial_key_activation_polls
        self.store.reset(["solutions", "publishers"])
        for row in self.store.rows("solutions"):
            self.store.delete("solutions", row["solutionid"])
        for row in self.store.rows("publishers"):
            self.store.delete("publishers", row["publisherid"])
        for unique_name, prefix in self.seed_solutions:
            self.add_solution(unique_name, prefix)

    @property
    def api_url(self) -> str:
        """``<url>/api/data/v9.2/`` (with the trailing slash)."""
        return self.url + API_PATH

    def _seed(self, entity_set: str, code_column: str, name_column: str, rows: SeedRows) -> None:
        for item in rows:
            code, name = (item, item) if isinstance(item, str) else item
            self.store.seed(entity_set, {code_column: code, name_column: name})

    def reset(self) -> None:
        """Empty the msdyn_ tables; seeded reference rows are kept (their delta tokens expire)."""
        self.store.reset()

    def expire_delta_tokens(self) -> None:
        """Invalidate every change-tracking delta token issued so far (§2.11): following an
        older deltaLink then fails with the expired-token error and the client must re-baseline."""
        self.change_tracker.expire_all()


def start_dataverse(
    port: int = 0,
    *,
    page_size_cap: int = MAX_PAGE_SIZE,
    companies: SeedRows | None = None,
    currencies: SeedRows | None = None,
    dop_hint: int = 4,
    expire_after_s: float | None = None,
    service_protection: ServiceProtection | None = None,
    bulk_max_payload_bytes: int | None = None,
    solutions: Iterable[tuple[str, str]] | None = None,
    key_activation_polls: int = 2,
    verbose: bool = False,
) -> DataverseServer:
    """Build and start a Dataverse emulator; ``companies``/``currencies`` override the seeds
    (codes, or ``(code, name)`` pairs); ``expire_after_s`` expires change-tracking delta
    tokens that many seconds after they were issued (default: never); ``solutions``: ``(unique name, publisher
    prefix)`` pairs that exist (default ``LoyaltySync``/``lsync``); ``key_activation_polls``: how many reads of a
    table's Keys a new key stays Pending/InProgress (0: Active at once). Call ``.stop()`` when done."""
    server = DataverseServer(
        port,
        page_size_cap=page_size_cap,
        companies=companies,
        currencies=currencies,
        dop_hint=dop_hint,
        expire_after_s=expire_after_s,
        service_protection=service_protection,
        bulk_max_payload_bytes=bulk_max_payload_bytes,
        solutions=solutions,
        key_activation_polls=key_activation_polls,
        verbose=verbose,
    )
    return server.start()


def parse_prefer(values: Sequence[str]) -> dict[str, str]:
    """``Prefer`` preferences by lower-cased name (quotes removed), e.g.
    ``{"return": "representation", "odata.maxpagesize": "2"}`` (§2.1)."""
    prefs: dict[str, str] = {}
    for header in values:
        for part in re.findall(r'(?:[^,"]|"[^"]*")+', header):
            name, _, value = part.strip().partition("=")
            if name:
                prefs[name.strip().lower()] = value.strip().strip('"')
    return prefs


class DataverseRequestHandler(EmulatorRequestHandler):
    """Request handler of the Dataverse emulator."""

    server: DataverseServer
    json_content_type = ODATA_JSON

    # -- cross-cutting -------------------------------------------------------------------
    def default_headers(self, *, has_body: bool) -> dict[str, str]:
        return {"OData-Version": "4.0", "REQ_ID": str(uuid.uuid4())}

    def run_route(self, route: Route, match: re.Match[str]) -> None:
        """Every non-admin request is logged first (``GET /_emulator/requests``), faulted ones included."""
        self.server.request_log.append({"method": self.method, "path": self.path_only, "query": dict(self.query_items),
                                        "prefer": self.header("Prefer", "") or "", "route": route.name})
        super().run_route(route, match)

    def invoke_route(self, route: Route, match: re.Match[str]) -> None:
        """Service protection (§2.12) around every non-admin route when it is on."""
        protection.invoke_protected(self, route, match)

    def fault_error(self, rule: FaultRule) -> EmulatorHTTPError:
        """Injected faults in the Dataverse error shape (429 → 0x80072322, ...)."""
        return protection.fault_error(rule)

    def before_route(self, route: Route, match: re.Match[str]) -> None:
        self._authenticate()

    def _authenticate(self) -> None:
        """§1.3/§5.1: any non-empty bearer token is accepted; otherwise a bearer challenge.
        The 401 body text and empty code are inferred (the docs show no body)."""
        authorization = self.header("Authorization", "") or ""
        if re.fullmatch(r"Bearer\s+\S+", authorization, flags=re.IGNORECASE):
            return
        challenge = (
            f"Bearer authorization_uri=https://login.microsoftonline.com/{self.server.tenant_id}"
            f"/oauth2/authorize, resource_id={self.server.url}"
        )
        raise EmulatorHTTPError(
            401,
            "",
            "The request requires a bearer token: send 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": challenge},
        )

    def read_json(self) -> Any:
        """The JSON body; malformed JSON is a payload error (code inferred)."""
        try:
            return super().read_json()
        except EmulatorHTTPError as err:
            raise errors.bad_request(err.message, code=errors.PAYLOAD_ERROR) from err

    def prefer(self) -> dict[str, str]:
        return parse_prefer(self.headers.get_all("Prefer") or [])

    def send_error_response(self, err: EmulatorHTTPError) -> None:
        """``{"error":{"code","message"}}`` + CDS annotations on request (§2.2)."""
        error: dict[str, Any] = {"code": err.code, "message": err.message}
        annotations = self.prefer().get("odata.include-annotations", "")
        if err.status != 401 and (annotations == "*" or "Microsoft.PowerApps.CDS" in annotations):
            error.update(error_annotations(err.code, err.message))
        error.update(err.extra)
        self.send_json(err.status, {"error": error}, headers=err.headers)

    def handle_unmatched(self, method: str) -> None:
        if self.path_only.startswith("/api/"):
            self._authenticate()
            segment = self.path_only.rstrip("/").rsplit("/", 1)[-1]
            raise errors.resource_not_found(segment)
        super().handle_unmatched(method)

    # -- rendering -------------------------------------------------------------------------
    def context_url(self, table: Table, select: Sequence[str] | None, *, entity: bool) -> str:
        selected = f"({','.join(select)})" if select else ""
        suffix = "/$entity" if entity else ""
        return f"{self.server.api_url}$metadata#{table.entity_set}{selected}{suffix}"

    @staticmethod
    def represent(table: Table, row: Row, select: Sequence[str] | None) -> dict[str, Any]:
        """A row as the Web API returns it: ``@odata.etag``, the selected (or all)
        properties, lookups as ``_<attr>_value``, and always the primary id."""
        body: dict[str, Any] = {"@odata.etag": operations.etag_of(row)}
        for name in select or table.readable_properties():
            body[name] = row.get(name)
        body.setdefault(table.primary_id, row[table.primary_id])
        return body

    def send_entity(self, status: int, table: Table, row: Row, select: Sequence[str] | None, **headers: str) -> None:
        body = {"@odata.context": self.context_url(table, select, entity=True)}
        body.update(self.represent(table, row, select))
        self.send_json(status, body, headers={"ETag": operations.etag_of(row), **headers})

    # -- routes ----------------------------------------------------------------------------
    def whoami(self, match: re.Match[str]) -> None:
        """§5.1 WhoAmI, with the ``x-ms-dop-hint`` header (§2.12)."""
        self.send_json(
            200,
            {
                "@odata.context": f"{self.server.api_url}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self.server.business_unit_id,
                "UserId": self.server.user_id,
                "OrganizationId": self.server.organization_id,
            },
            headers={"x-ms-dop-hint": str(self.server.dop_hint)},
        )

    def metadata(self, match: re.Match[str]) -> None:
        raise errors.not_implemented("$metadata")

    def entity_attributes(self, match: re.Match[str]) -> None:
        """A table's attributes (:mod:`.metadata`; the response shape is inferred)."""
        self.send_json(200, attributes_body(self.server.api_url, match.group("logical_name"), self.query_items,
                                            self.server.customizations))

    # -- metadata creates and reads (docs/protocol-notes.md §2.14, :mod:`.customization`) --------------------------
    def _solution(self) -> str:
        return self.server.customizations.solution(self.header(SOLUTION_HEADER))

    def _created(self, path: str) -> None:
        self.send_empty(204, headers={"OData-EntityId": self.server.api_url + path})

    def create_entity(self, match: re.Match[str]) -> None:
        solution = self._solution()
        entity = self.server.customizations.create_entity(self.read_json(), solution)
        self._created(f"EntityDefinitions({entity.metadata_id})")

    def create_attribute(self, match: re.Match[str]) -> None:
        self._solution()
        entity, attribute = self.server.customizations.create_attribute(match.group("logical_name"), self.read_json())
        self._created(f"EntityDefinitions({entity.metadata_id})/Attributes({attribute.metadata_id})")

    def create_relationship(self, match: re.Match[str]) -> None:
        self._solution()
        _, attribute = self.server.customizations.create_relationship(self.read_json())
        self._created(f"RelationshipDefinitions({attribute.metadata_id})")

    def create_key(self, match: re.Match[str]) -> None:
        self._solution()
        entity, key = self.server.customizations.create_key(match.group("logical_name"), self.read_json())
        self._created(f"EntityDefinitions({entity.metadata_id})/Keys({key.metadata_id})")

    def entity_definition(self, match: re.Match[str]) -> None:
        logical_name = match.group("logical_name")
        select = parse_select(self.query_items, ENTITY_PROPERTIES, "EntityMetadata")
        body = {"@odata.context": f"{self.server.api_url}$metadata#EntityDefinitions({','.join(select)})/$entity",
                **self.server.customizations.entity_body(logical_name, select)}
        self.send_json(200, body)

    def entity_keys(self, match: re.Match[str]) -> None:
        logical_name = match.group("logical_name")
        select = parse_select(self.query_items, KEY_PROPERTIES, "EntityKeyMetadata")
        self.send_json(200, {"@odata.context": f"{self.server.api_url}$metadata#EntityDefinitions('{logical_name}')/"
                                               f"Keys({','.join(select)})",
                             "value": self.server.customizations.keys_body(logical_name, select)})

    def resource(self, match: re.Match[str]) -> None:
        """``<set>`` or ``<set>(<key>)``: dispatch on method and addressing."""
        entity_set, key_text, rest = split_resource_path(match.group("rest"))
        table = self.server.store.table(entity_set)
        if table is None:
            self.route_name = "unknown"
            raise errors.resource_not_found(entity_set)
        if rest:
            raise errors.resource_not_found(rest.split("/", 1)[0])
        if key_text is None:
            self.route_name = entity_set
            if self.method == "GET":
                return self.get_collection(table)
            if self.method == "POST":
                return self.post_collection(table)
            raise errors.method_not_allowed(self.method)
        self.route_name = f"{entity_set}(key)"
        ref = resolve_key(table, key_text)
        if self.method == "GET":
            return self.get_entity(ref)
        if self.method == "PATCH":
            return self.patch_entity(ref)
        if self.method == "DELETE":
            return self.delete_entity(ref)
        raise errors.method_not_allowed(self.method)

    def get_collection(self, table: Table) -> None:
        """§2.8: filter, order (+ primary id), count, keyset paging with nextLink last."""
        if changetracking.is_tracking_request(self):
            return changetracking.get_tracked_collection(self, table)
        query = parse_collection_query(table, self.query_items)
        prefs = self.prefer()
        spec = sort_spec(table, query.orderby)
        page_number = 1
        cookie = None
        if query.skiptoken is not None:
            cookie = decode_skiptoken(table, spec, query.skiptoken)
            page_number = cookie.page_number

        cap = self.server.page_size_cap
        headers: dict[str, str] = {}
        max_page = _positive_int(prefs.get("odata.maxpagesize"))
        if max_page is not None:  # $top is ignored when maxpagesize is present
            page_size = min(max_page, cap)
            headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
            limit = None
        else:
            page_size = cap
            limit = min(query.top, cap) if query.top is not None else None
        rows, total = select_rows(self.server.store, table, query, spec, cookie.last if cookie else None,
                                  want=(limit if limit is not None else page_size + 1))
        if limit is not None:
            rows = rows[:limit]
        page = rows[:page_size]

        body: dict[str, Any] = {"@odata.context": self.context_url(table, query.select, entity=False)}
        if query.count:
            body["@odata.count"] = min(total, COUNT_LIMIT)
        body["value"] = [self.represent(table, row, query.select) for row in page]
        if len(rows) > page_size:
            token = encode_skiptoken(table, spec, page[0], page[-1], page_number + 1)
            kept = strip_skiptoken(self.raw_query)
            separator = "&" if kept else ""
            body["@odata.nextLink"] = f"{self.server.api_url}{table.entity_set}?{kept}{separator}$skiptoken={token}"
        self.send_json(200, body, headers=headers)

    def get_entity(self, ref: EntityRef) -> None:
        """§2.5/§2.7: single row with ETag; ``If-None-Match`` → 304 when unchanged."""
        select = parse_entity_select(ref.table, self.query_items)
        row = require_row(self.server.store, ref)
        if_none_match = operations.precondition(self.header("If-None-Match"))
        if (
            if_none_match is not None
            and if_none_match != "*"
            and "odata.include-annotations" not in self.prefer()
            and operations.etag_matches(if_none_match, row)
        ):
            self.send_empty(304, headers={"ETag": operations.etag_of(row)})
            return
        self.send_entity(200, ref.table, row, select)

    def post_collection(self, table: Table) -> None:
        """§2.3: 204 + ``OData-EntityId``; ``return=representation`` → 201 + body."""
        select = parse_entity_select(table, self.query_items)
        row = operations.create(self.server.store, table, self.read_json())
        if self.prefer().get("return") == "representation":
            self.send_entity(201, table, row, select, **{"Preference-Applied": "return=representation"})
            return
        entity_id = f"{self.server.api_url}{table.entity_set}({row[table.primary_id]})"
        self.send_empty(204, headers={"OData-EntityId": entity_id})

    def patch_entity(self, ref: EntityRef) -> None:
        """§2.4/§2.5: upsert; 204 + ``OData-EntityId`` in the addressed form, or
        201/200 + body with ``return=representation``."""
        select = parse_entity_select(ref.table, self.query_items)
        result = operations.upsert(
            self.server.store,
            ref,
            self.read_json(),
            if_match=self.header("If-Match"),
            if_none_match=self.header("If-None-Match"),
        )
        if self.prefer().get("return") == "representation":
            status = 201 if result.created else 200
            self.send_entity(status, ref.table, result.row, select, **{"Preference-Applied": "return=representation"})
            return
        self.send_empty(204, headers={"OData-EntityId": self.server.api_url + ref.segment()})

    def delete_entity(self, ref: EntityRef) -> None:
        """§2.4: 204; 404 when missing; ``If-Match`` honoured (412 when stale)."""
        operations.delete(self.server.store, ref, if_match=self.header("If-Match"))
        self.send_empty(204)

    # -- admin -----------------------------------------------------------------------------
    def admin_reset(self, match: re.Match[str]) -> None:
        self.server.reset()
        self.send_empty(204)

    def admin_expire_delta_tokens(self, match: re.Match[str]) -> None:
        self.server.expire_delta_tokens()
        self.send_empty(204)

    def admin_requests(self, match: re.Match[str]) -> None:
        self.send_json(200, {"value": list(self.server.request_log)})

    def admin_requests_clear(self, match: re.Match[str]) -> None:
        self.server.request_log.clear()
        self.send_empty(204)

    def admin_keys(self, match: re.Match[str]) -> None:
        """``POST /_emulator/keys`` ``{"table": "<logical name>", "key": "<key logical name>" (optional: every key),
        "status": "Active"|"Failed"|"Pending"|"InProgress"}``: set a key's index state now;
        ``{"activation_polls": N}``: how many reads of Keys a key created from now on stays Pending/InProgress."""
        body = self.read_json()
        if isinstance(body, dict) and isinstance(body.get("activation_polls"), int) and "table" not in body:
            previous = self.server.customizations.key_activation_polls
            self.server.customizations.key_activation_polls = max(0, body["activation_polls"])
            self.send_json(200, {"activation_polls": self.server.customizations.key_activation_polls,
                                 "previous": previous})
            return
        if not isinstance(body, dict) or not isinstance(body.get("table"), str):
            raise errors.bad_request("send {\"table\": ..., \"key\": ..., \"status\": ...}")
        names = self.server.customizations.set_key_status(body["table"], body.get("key"), str(body.get("status")))
        self.send_json(200, {"keys": names})

    def admin_solutions(self, match: re.Match[str]) -> None:
        """``POST /_emulator/solutions`` ``{"unique_name": ..., "prefix": ...}`` makes (or replaces) a solution and
        its publisher; ``DELETE /_emulator/solutions/<name>`` removes one."""
        if self.method == "DELETE":
            found = self.server.remove_solution(match.group("name") or "")
            self.send_empty(204 if found else 404)
            return
        body = self.read_json()
        if not isinstance(body, dict) or not isinstance(body.get("unique_name"), str) or not isinstance(
                body.get("prefix"), str):
            raise errors.bad_request("send {\"unique_name\": ..., \"prefix\": ...}")
        self.server.add_solution(body["unique_name"], body["prefix"], seeded=False)
        self.send_empty(204)

    def admin_metadata_reset(self, match: re.Match[str]) -> None:
        self.server.reset_metadata()
        self.send_empty(204)

    def admin_rows(self, match: re.Match[str]) -> None:
        entity_set = match.group("set")
        if self.server.store.table(entity_set) is None:
            raise errors.resource_not_found(entity_set)
        self.send_json(200, {"value": self.server.store.rows(entity_set)})

    routes = [
        Route.make("GET", r"/api/data/v9\.2/WhoAmI(?:\(\))?", "WhoAmI", whoami),
        Route.make("GET", r"/api/data/v9\.2/\$metadata", "$metadata", metadata),
        Route.make("GET", ATTRIBUTES_PATTERN, "EntityDefinitions", entity_attributes),
        Route.make("POST", ATTRIBUTES_PATTERN, "EntityDefinitions.Attributes", create_attribute),
        Route.make("GET", ENTITY_PATTERN + "/Keys", "EntityDefinitions.Keys", entity_keys),
        Route.make("POST", ENTITY_PATTERN + "/Keys", "EntityDefinitions.Keys", create_key),
        Route.make("GET", ENTITY_PATTERN, "EntityDefinitions", entity_definition),
        Route.make("POST", r"/api/data/v9\.2/EntityDefinitions", "EntityDefinitions", create_entity),
        Route.make("POST", r"/api/data/v9\.2/RelationshipDefinitions", "RelationshipDefinitions", create_relationship),
        Route.make("POST", batch.BATCH_PATTERN, "$batch", batch.handle_batch),
        Route.make("POST", bulk.BULK_PATTERN, "bulk", bulk.handle_bulk),
        Route.make(("GET", "POST", "PATCH", "PUT", "DELETE"), r"/api/data/v9\.2/(?P<rest>.+)", "resource", resource),
        Route.make("POST", r"/_emulator/reset", "admin.reset", admin_reset, admin=True),
        Route.make(
            "POST", r"/_emulator/change-tracking/expire", "admin.change-tracking.expire", admin_expire_delta_tokens, admin=True
        ),
        Route.make("GET", r"/_emulator/rows/(?P<set>[A-Za-z0-9_]+)", "admin.rows", admin_rows, admin=True),
        Route.make("POST", r"/_emulator/keys", "admin.keys", admin_keys, admin=True),
        Route.make(("POST", "DELETE"), r"/_emulator/solutions(?:/(?P<name>[^/]+))?", "admin.solutions", admin_solutions,
                   admin=True),
        Route.make("POST", r"/_emulator/metadata/reset", "admin.metadata.reset", admin_metadata_reset, admin=True),
        Route.make("GET", r"/_emulator/requests", "admin.requests", admin_requests, admin=True),
        Route.make("DELETE", r"/_emulator/requests", "admin.requests.clear", admin_requests_clear, admin=True),
        *protection.admin_routes(),
    ]


def _positive_int(text: str | None) -> int | None:
    if text is None or not text.isdigit() or int(text) <= 0:
        return None
    return int(text)
