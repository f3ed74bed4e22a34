"""Preflight: before a run writes anything, prove that both services answer and that each template fits them.

A wrong ``DATAVERSE_URL``, a token for another organisation or a misspelt column in a template would otherwise
let a run read every record from Commerce and park each one with the same error. The checks, per process:

* Dataverse: ``WhoAmI`` (the URL, the token, the application user);
* per template, Commerce: one read of its entity set (``$top=1``) with ``$select`` of the properties it maps
  (the entity set, every ``fo_property``, the F&O user's read right);
* per template, Dataverse: the table's attributes from ``EntityDefinitions(LogicalName='<table>')/Attributes``
  against every column the template names (the primary id, mapped columns, lookup and company attributes), one
  read of its entity set (``$top=1``), and one of each lookup's table with its match column;
* per template that declares an app-owned table (``dataverse.table``): the table, each column it declares and each
  alternate key, whose index must be ``Active`` (docs/protocol-notes.md §2.14); what is missing or not active is named
  with the command that fixes it, ``python -m shared.cli provision``;
* companies named by ``SYNC_LEGAL_ENTITIES`` (or ``--company``) against F&O's ``LegalEntities``.

A check that passed is trusted for ``SYNC_PREFLIGHT_CACHE_S`` seconds (a failure never is), so a timer that
fires every few minutes costs a handful of reads per template once in a while. Each problem is one ``Problem``:
what to fix (a setting, or a template and its row) and how.
"""

from __future__ import annotations

import difflib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from shared.commerce.client import CommerceClient, LegalEntitiesError
from shared.dataverse.client import DataverseClient
from shared.dataverse.metadata import ACTIVE, MetadataClient
from shared.http.errors import ApiError, AuthError, BadRequestError, CredentialError, NotFoundError, TransportError
from shared.mapping.catalog import Catalog
from shared.mapping.model import Template
from shared.observability import log
from shared.settings import Settings

logger = logging.getLogger("loyaltysync.preflight")
DATAVERSE_EXAMPLE = "https://<org>.crm.dynamics.com"
COMMERCE_EXAMPLE = "https://<env>.operations.dynamics.com"
_PROPERTY = re.compile(r"property named '([^']+)'", re.IGNORECASE)
PROVISION = "python -m shared.cli provision"


@dataclass(frozen=True)
class Problem:
    """One thing to fix: ``subject`` names it (a setting, or ``template <name>`` and the part of its file),
    ``detail`` says what is wrong and the fix."""

    subject: str
    detail: str
    # True when the setting may well be right and the service or the network is what failed (unreachable, 5xx):
    # ``check`` and ``sync`` exit 1 for these, 6 (a configuration error) for every other problem.
    transient: bool = False

    def __str__(self) -> str:
        return f"{self.subject}: {self.detail}"


class PreflightError(RuntimeError):
    """A run's preflight found problems: the run fails with them instead of parking every record."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("preflight failed: " + "; ".join(str(p) for p in self.problems))

    @property
    def configuration(self) -> bool:
        """Whether a setting or a template is what must change (not only a service that failed for now)."""
        return any(not p.transient for p in self.problems)


def _reason(exc: ApiError) -> str:
    text = " ".join((exc.reason or str(exc)).split())
    return f"{exc.status} {exc.code}: {text}".replace("  ", " ") if exc.status else text


def _file(template: Template) -> str:
    return f"the template file {template.name}.json"


class Preflight:
    """The checks of one process (one runtime): Dataverse and Commerce clients, every template."""

    def __init__(self, settings: Settings, catalog: Catalog, commerce: CommerceClient, dataverse: DataverseClient,
                 *, cache_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.catalog = catalog
        self.commerce = commerce
        self.dataverse = dataverse
        self.cache_s = settings.preflight_cache_s if cache_s is None else cache_s
        self.clock = clock
        self._passed: dict[str, float] = {}  # check -> when it last passed (monotonic)
        self._companies: tuple[float, list[str]] | None = None
        self._lock = threading.Lock()

    # -- what runs and ``check`` call ----------------------------------------------------------------------

    def require(self, template: str, companies: Sequence[str] = (), *, source: str = "SYNC_LEGAL_ENTITIES") -> None:
        """Raise ``PreflightError`` unless ``template`` can run (``companies``: the legal entities it will run,
        named by ``source``, checked against F&O's ``LegalEntities`` when that can be read)."""
        problems = self.problems([template], companies, source=source)
        if problems:
            log(logger, logging.ERROR, "preflight failed; the run does not start", template=template,
                problems=" | ".join(str(p) for p in problems))
            raise PreflightError(problems)

    def problems(self, templates: Iterable[str] | None = None, companies: Sequence[str] = (), *,
                 source: str = "SYNC_LEGAL_ENTITIES", fresh: bool = False,
                 list_companies: bool = False) -> list[Problem]:
        """Every problem found for ``templates`` (default: all). ``fresh``: ignore what passed before (``check``).
        ``list_companies``: a company-specific template without ``companies`` needs ``LegalEntities`` readable."""
        names = list(templates) if templates is not None else [t.name for t in self.catalog]
        found: list[Problem] = []
        dataverse_up = self._cached("dataverse", fresh, found, self._identity)
        commerce_up = True
        for name in names:
            template = self.catalog.plan(name).template
            if commerce_up:
                commerce_up = self._cached(f"commerce:{name}", fresh, found, partial(self._commerce, template))
            if dataverse_up:
                self._cached(f"dataverse:{name}", fresh, found, partial(self._dataverse, template))
        if commerce_up and (companies or list_companies) and any(self.catalog.plan(n).company_specific for n in names):
            found += self._company_problems(companies, source, fresh)
        return found

    def known_companies(self, *, fresh: bool = False) -> list[str] | LegalEntitiesError:
        """F&O's legal entities (lower case; cached like a passed check), or why they cannot be read."""
        with self._lock:
            cached = self._companies
        if not fresh and cached is not None and self.clock() - cached[0] < self.cache_s:
            return cached[1]
        try:
            companies = self.commerce.legal_entities()
        except LegalEntitiesError as exc:
            return exc
        with self._lock:
            self._companies = (self.clock(), companies)
        return companies

    # -- the checks: each adds its problems to ``mine`` and says whether its service can be checked further --

    def _cached(self, check: str, fresh: bool, found: list[Problem], run: Callable[[list[Problem]], bool]) -> bool:
        """Run ``check`` unless it passed less than ``cache_s`` ago. ``run`` returns False when the service is
        unusable: the following templates are not checked against it (they would only repeat the problem)."""
        with self._lock:
            passed = self._passed.get(check)
        if not fresh and passed is not None and self.clock() - passed < self.cache_s:
            return True
        mine: list[Problem] = []
        usable = run(mine)
        if usable and not mine:
            with self._lock:
                self._passed[check] = self.clock()
        found += mine
        return usable

    def _identity(self, mine: list[Problem]) -> bool:
        try:
            self.dataverse.who_am_i()
        except ApiError as exc:
            mine.append(self._service_problem(exc, "DATAVERSE_URL", self.settings.dataverse_url, DATAVERSE_EXAMPLE,
                                              "Dataverse", "WhoAmI"))
            return False
        return True

    @staticmethod
    def _service_problem(exc: ApiError, setting: str, url: str, example: str, service: str, what: str) -> Problem:
        """A failure that every template would share (the URL, the network, the token, the service)."""
        scope = setting.replace("_URL", "_SCOPE")
        if isinstance(exc, CredentialError):
            return Problem("SYNC_CREDENTIAL", f"no token for {service}: {exc.reason}; sign in (az login) where the "
                           "CLI runs, or set AZURE_CLIENT_ID to the managed identity's client id")
        if isinstance(exc, TransportError):
            return Problem(setting, f"cannot reach {url} ({exc.reason}); check {setting} (e.g. {example}) and the "
                           "network", transient=True)
        if isinstance(exc, AuthError) and exc.status == 401:
            return Problem(setting, f"{service} refused the app's token ({_reason(exc)}); check that {setting} is "
                           f"the environment the app's identity is registered in (and {scope}, if set)")
        if isinstance(exc, AuthError):
            fix = ("add the identity as an application user with a security role on the loyalty tables"
                   if service == "Dataverse" else "register its client id in F&O under System administration > "
                   "Setup > Microsoft Entra applications, with a role that reads and writes the loyalty entities")
            return Problem(setting, f"{service} refused the app's identity ({_reason(exc)}): {fix}")
        if isinstance(exc, NotFoundError):
            return Problem(setting, f"{url} answered {what} with {_reason(exc)}: set {setting} to the service's "
                           f"root URL, e.g. {example}")
        return Problem(setting, f"{service} answered {what} with {_reason(exc)}; try again later, or check {setting}",
                       transient=True)

    def _commerce(self, template: Template, mine: list[Problem]) -> bool:
        plan = self.catalog.plan(template.name)
        entity_set = template.commerce.entity_set
        subject = f"template {template.name}"
        try:
            next(iter(self.commerce.iter_pages(entity_set, select=list(plan.select_properties), top=1,
                                               where=template.commerce.filter)), None)
        except AuthError as exc:
            if exc.status == 401:
                mine.append(self._commerce_down(exc, entity_set))
                return False
            mine.append(Problem(subject, f"F&O refused reading {entity_set} ({_reason(exc)}): give the app's F&O user "
                                f"a role that reads and writes {entity_set}"))
        except NotFoundError as exc:
            mine.append(Problem(f"{subject}: commerce.entity_set", f"F&O has no entity set {entity_set!r} "
                                f"({_reason(exc)}); fix commerce.entity_set in {_file(template)}, and check that "
                                f"COMMERCE_URL is the environment's root URL (e.g. {COMMERCE_EXAMPLE})"))
        except BadRequestError as exc:
            mine.append(self._unknown_property(template, exc))
        except ApiError as exc:  # unreachable, no token, or the service failing: every template would say the same
            mine.append(self._commerce_down(exc, entity_set))
            return False
        for name, spec in template.derived.items():  # a derived column's reference data (RetailLoyaltyTiers)
            levels = spec.levels
            try:
                next(iter(self.commerce.iter_pages(levels.entity_set, select=[levels.program, levels.tier, levels.level],
                                                   top=1)), None)
            except ApiError as exc:
                mine.append(Problem(f"{subject}: derived.{name}.levels", f"F&O refused reading {levels.entity_set} "
                                    f"with {levels.program}, {levels.tier}, {levels.level} ({_reason(exc)}); fix "
                                    f"derived.{name}.levels in {_file(template)}, or give the app's F&O user a role "
                                    f"that reads {levels.entity_set}"))
        return True

    def _commerce_down(self, exc: ApiError, entity_set: str) -> Problem:
        return self._service_problem(exc, "COMMERCE_URL", self.settings.commerce_url, COMMERCE_EXAMPLE, "F&O",
                                     entity_set)

    @staticmethod
    def _unknown_property(template: Template, exc: BadRequestError) -> Problem:
        entity_set = template.commerce.entity_set
        match = _PROPERTY.search(exc.reason or "")
        for i, row in enumerate(template.fields):
            if match and row.fo_property == match.group(1):
                return Problem(f"template {template.name}: fields[{i}] ({row.fo_field})",
                               f"F&O's {entity_set} has no property {row.fo_property!r} ({_reason(exc)}); fix "
                               f"fo_property in {_file(template)}")
        return Problem(f"template {template.name}", f"F&O refused reading {entity_set} with the template's "
                       f"properties ({_reason(exc)}); check fo_property and commerce.key in {_file(template)}")

    def _dataverse(self, template: Template, mine: list[Problem]) -> bool:
        dv = template.dataverse
        subject = f"template {template.name}"
        try:
            attributes = self.dataverse.attribute_names(dv.logical_name)
        except NotFoundError as exc:
            if dv.table is not None:
                mine.append(Problem(f"{subject}: dataverse.table", f"Dataverse has no table {dv.logical_name!r} yet "
                                    f"(the template declares it, app-owned): create it with {PROVISION}"))
                return True
            mine.append(Problem(f"{subject}: dataverse.logical_name", f"Dataverse has no table {dv.logical_name!r} "
                                f"({_reason(exc)}); fix dataverse.logical_name in {_file(template)}"))
            return True
        except ApiError as exc:
            mine.append(Problem(subject, f"reading the columns of Dataverse table {dv.logical_name!r} failed "
                                f"({_reason(exc)})", transient=True))
            return True
        if dv.table is not None:
            self._app_owned(template, attributes, mine)
        for where, column, setting in self._columns(template):
            if dv.table is not None and column.lower() in dv.table.column_types():
                continue  # named by _app_owned, with the fix
            if column.lower() not in attributes:
                close = difflib.get_close_matches(column.lower(), sorted(attributes), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                mine.append(Problem(f"{subject}: {where}", f"Dataverse table {dv.logical_name} has no column "
                                    f"{column!r}{hint}; fix {setting} in {_file(template)}"))
        reads = [("dataverse.entity_set", dv.entity_set, [dv.primary_id], "dataverse.entity_set")]
        reads += [(f"fields[{i}] ({row.fo_field})", row.lookup.entity_set,
                   [row.lookup.primary_id, row.lookup.match_column], "lookup.entity_set, primary_id and match_column")
                  for i, row in enumerate(template.fields) if row.lookup is not None]
        if dv.company is not None:
            reads.append(("dataverse.company", dv.company.entity_set, [dv.company.primary_id, dv.company.match_column],
                          "dataverse.company (entity_set, primary_id, match_column)"))
        for where, entity_set, select, setting in reads:
            self._probe(mine, f"{subject}: {where}", entity_set, select, f"fix {setting} in {_file(template)}")
        return True

    def _app_owned(self, template: Template, attributes: set[str], mine: list[Problem]) -> None:
        """An app-owned table: every column it declares exists, every key exists and its index is Active."""
        table = template.dataverse.table
        assert table is not None
        subject = f"template {template.name}: dataverse.table"
        missing = [name for name in table.column_types() if name not in attributes]
        if missing:
            mine.append(Problem(subject, f"Dataverse table {table.logical_name} lacks the column"
                                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} the template declares: add "
                                f"{'them' if len(missing) > 1 else 'it'} with {PROVISION}"))
        try:
            keys = MetadataClient(self.dataverse.core).keys(table.logical_name)
        except ApiError as exc:
            mine.append(Problem(subject, f"reading the keys of Dataverse table {table.logical_name} failed "
                                f"({_reason(exc)})"))
            return
        for key in table.keys:
            found = keys.get(key.schema_name.lower())
            if found is None:
                mine.append(Problem(subject, f"Dataverse table {table.logical_name} has no key {key.schema_name} "
                                    f"({', '.join(key.columns)}): create it with {PROVISION}"))
            elif found.status == "Failed":
                mine.append(Problem(subject, f"the index of key {key.schema_name} on {table.logical_name} failed to "
                                    "build (usually rows that share its values): remove the duplicates, reactivate the "
                                    "key (maker portal, Tables > Keys, or the ReactivateEntityKey message), then run "
                                    f"{PROVISION}"))
            elif found.status != ACTIVE:
                mine.append(Problem(subject, f"the index of key {key.schema_name} on {table.logical_name} is "
                                    f"{found.status or 'not reported'}, not Active: upserts by it fail until it is; "
                                    f"{PROVISION} waits for it"))

    @staticmethod
    def _columns(template: Template) -> list[tuple[str, str, str]]:
        """``(where, column, what to fix)`` for every Dataverse column the template names: the primary id, each
        row's column (a lookup by its attribute: the navigation property in lower case, inferred), the company."""
        dv = template.dataverse
        columns = [("dataverse.primary_id", dv.primary_id, "dataverse.primary_id")]
        for i, row in enumerate(template.fields):
            if row.lookup is not None:
                columns.append((f"fields[{i}] ({row.fo_field})", row.lookup.navigation_property.lower(),
                                "dataverse_column and lookup.navigation_property"))
            else:
                columns.append((f"fields[{i}] ({row.fo_field})", row.dataverse_column, "dataverse_column"))
        if dv.company is not None:
            columns.append(("dataverse.company", dv.company.navigation_property.lower(),
                            "dataverse.company.navigation_property"))
        return columns

    def _probe(self, mine: list[Problem], subject: str, entity_set: str, select: list[str], fix: str) -> None:
        try:
            self.dataverse.probe(entity_set, select)
        except AuthError as exc:
            mine.append(Problem(subject, f"the app's application user may not read {entity_set} ({_reason(exc)}): "
                                "give its security role read and write on the table"))
        except (NotFoundError, BadRequestError) as exc:
            mine.append(Problem(subject, f"Dataverse refused reading {entity_set} with {', '.join(select)} "
                                f"({_reason(exc)}); {fix}"))
        except ApiError as exc:
            mine.append(Problem(subject, f"reading {entity_set} failed ({_reason(exc)})", transient=True))

    def _company_problems(self, companies: Sequence[str], source: str, fresh: bool) -> list[Problem]:
        known = self.known_companies(fresh=fresh)
        if isinstance(known, LegalEntitiesError):
            # SYNC_LEGAL_ENTITIES is how a deployment whose F&O user may not read LegalEntities runs: not checked.
            return [] if companies else [Problem("SYNC_LEGAL_ENTITIES", str(known))]
        unknown = [c for c in companies if c.lower() not in known]
        if not unknown:
            return []
        return [Problem(source, f"{', '.join(repr(c) for c in unknown)} {'is' if len(unknown) == 1 else 'are'} not "
                        f"a legal entity in F&O (LegalEntities lists {', '.join(known)}); fix {source}")]
