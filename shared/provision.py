"""Provisioning: create the app-owned Dataverse tables the templates declare (``dataverse.table``), idempotently.

``python -m shared.cli provision [--dry-run]``. For every template with a ``table`` block the plan reads what exists
(``EntityDefinitions(LogicalName='<t>')``, its ``Attributes`` and ``Keys``) and sends only the missing creates, in
the order Dataverse needs them (docs/protocol-notes.md §2.14): the table with its primary-name column, each column,
each lookup (``RelationshipDefinitions`` with its ``Lookup``), each alternate key; every create carries
``MSCRM.SolutionUniqueName``. Then it reads the entity set name back and waits, polling, until every key's index is
``Active`` (an upsert by a key that is not active fails). A second run reads and sends no metadata write; a column
added to a template file is added by the next run.

The solution (``SYNC_DATAVERSE_SOLUTION``) must belong to a publisher whose customization prefix is the templates'
schema-name prefix. A solution that does not exist is created, with a publisher of that prefix when there is none
(``--dry-run`` lists both requests). One whose publisher has another prefix is a problem: nothing is written.

What provisioning cannot do safely it reports instead (nothing is written then): a column that exists with another
type, a key that exists with other columns, an entity set name other than the template's ``dataverse.entity_set``.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.clock import SYSTEM_CLOCK, Clock
from shared.dataverse.metadata import ACTIVE, KeyInfo, MetadataClient
from shared.mapping.catalog import Catalog
from shared.mapping.model import TableColumn, TableKey, TableLookup, TableSpec, Template
from shared.observability import log

logger = logging.getLogger("loyaltysync.provision")
CRM = "Microsoft.Dynamics.CRM."
LANGUAGE = 1033
FIX = "python -m shared.cli provision"
FAILED = "Failed"
# AttributeType as the metadata API reports each column type of a table block.
ATTRIBUTE_TYPES: dict[str, str] = {"string": "String", "integer": "Integer", "bigint": "BigInt", "decimal": "Decimal",
                                   "money": "Money", "datetime": "DateTime", "date": "DateTime", "boolean": "Boolean",
                                   "choice": "Picklist", "lookup": "Lookup"}


class ProvisionError(RuntimeError):
    """Provisioning stopped: the message says what is wrong and what to do."""


def label(text: str) -> dict[str, Any]:
    """A ``Microsoft.Dynamics.CRM.Label`` in English (LanguageCode 1033; §2.14)."""
    return {"@odata.type": f"{CRM}Label",
            "LocalizedLabels": [{"@odata.type": f"{CRM}LocalizedLabel", "Label": text, "LanguageCode": LANGUAGE}]}


def _required(required: bool) -> dict[str, Any]:
    return {"Value": "ApplicationRequired" if required else "None", "CanBeChanged": True,
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"}


def _described(body: dict[str, Any], description: str) -> dict[str, Any]:
    return {**body, "Description": label(description)} if description else body


# -- request bodies, from the template's table block --------------------------------------------------------------


def table_body(table: TableSpec) -> dict[str, Any]:
    """``EntityMetadata`` with its one primary-name ``StringAttributeMetadata`` (§2.14)."""
    primary = table.primary_name
    name = _described({"@odata.type": f"{CRM}StringAttributeMetadata", "SchemaName": primary.schema_name,
                       "DisplayName": label(primary.display_name), "RequiredLevel": _required(primary.required),
                       "MaxLength": primary.max_length, "FormatName": {"Value": "Text"}, "IsPrimaryName": True},
                      primary.description)
    return _described({"@odata.type": f"{CRM}EntityMetadata", "SchemaName": table.schema_name,
                       "DisplayName": label(table.display_name),
                       "DisplayCollectionName": label(table.display_collection_name),
                       "OwnershipType": table.ownership, "IsActivity": False, "HasActivities": table.has_activities,
                       "HasNotes": table.has_notes, "ChangeTrackingEnabled": table.change_tracking,
                       "Attributes": [name]}, table.description)


def column_body(column: TableColumn) -> dict[str, Any]:
    """The typed attribute metadata of one column (§2.14)."""
    base: dict[str, Any] = {"SchemaName": column.schema_name, "DisplayName": label(column.display_name),
                            "RequiredLevel": _required(column.required)}
    kind = column.type
    if kind == "string":
        body = {"@odata.type": f"{CRM}StringAttributeMetadata", **base, "MaxLength": column.max_length,
                "FormatName": {"Value": "Text"}}
    elif kind in ("integer", "bigint"):
        body = {"@odata.type": f"{CRM}{'Integer' if kind == 'integer' else 'BigInt'}AttributeMetadata", **base,
                "MinValue": int(column.minimum), "MaxValue": int(column.maximum)}
        if kind == "integer":
            body["Format"] = "None"
    elif kind in ("decimal", "money"):
        body = {"@odata.type": f"{CRM}{'Decimal' if kind == 'decimal' else 'Money'}AttributeMetadata", **base,
                "Precision": column.scale, "MinValue": column.minimum, "MaxValue": column.maximum}
        if kind == "money":
            body["PrecisionSource"] = 0  # the column's own Precision (not the organisation's or the currency's)
    elif kind in ("datetime", "date"):
        date_only = kind == "date"
        body = {"@odata.type": f"{CRM}DateTimeAttributeMetadata", **base,
                "Format": "DateOnly" if date_only else "DateAndTime",
                "DateTimeBehavior": {"Value": "DateOnly" if date_only else "UserLocal"}}
    elif kind == "boolean":
        body = {"@odata.type": f"{CRM}BooleanAttributeMetadata", **base, "DefaultValue": False, "OptionSet": {
            "@odata.type": f"{CRM}BooleanOptionSetMetadata", "OptionSetType": "Boolean",
            "TrueOption": {"Value": 1, "Label": label(column.true_label)},
            "FalseOption": {"Value": 0, "Label": label(column.false_label)}}}
    else:  # choice
        body = {"@odata.type": f"{CRM}PicklistAttributeMetadata", **base, "OptionSet": {
            "@odata.type": f"{CRM}OptionSetMetadata", "IsGlobal": False, "OptionSetType": "Picklist",
            "Options": [{"Value": o.value, "Label": label(o.label)} for o in column.options]}}
    return _described(body, column.description)


def relationship_body(table: TableSpec, lookup: TableLookup) -> dict[str, Any]:
    """``OneToManyRelationshipMetadata`` whose ``Lookup`` is the new column (§2.14)."""
    cascade = {"Assign": "NoCascade", "Delete": lookup.on_delete, "Merge": "NoCascade", "Reparent": "NoCascade",
               "Share": "NoCascade", "Unshare": "NoCascade"}
    column = _described({"@odata.type": f"{CRM}LookupAttributeMetadata", "AttributeType": "Lookup",
                         "AttributeTypeName": {"Value": "LookupType"}, "SchemaName": lookup.schema_name,
                         "DisplayName": label(lookup.display_name), "RequiredLevel": _required(lookup.required)},
                        lookup.description)
    return {"@odata.type": f"{CRM}OneToManyRelationshipMetadata", "SchemaName": lookup.relationship_schema_name,
            "ReferencedEntity": lookup.referenced_entity, "ReferencedAttribute": lookup.referenced_attribute,
            "ReferencingEntity": table.logical_name, "CascadeConfiguration": cascade, "Lookup": column}


def key_body(key: TableKey) -> dict[str, Any]:
    """``EntityKeyMetadata`` (§2.14; the shape is seen in public code)."""
    return {"@odata.type": f"{CRM}EntityKeyMetadata", "SchemaName": key.schema_name,
            "DisplayName": label(key.display_name), "KeyAttributes": list(key.columns)}


def option_value_prefix(prefix: str) -> int:
    """A publisher's choice-value prefix, 10000-99999 (Dataverse's range), derived from the customization prefix so
    that two runs pick the same one."""
    return 10_000 + zlib.crc32(prefix.encode()) % 90_000


# -- the plan ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetadataRequest:
    """One metadata write: ``method path`` with ``body``; ``solution``: the ``MSCRM.SolutionUniqueName`` it carries."""

    method: str
    path: str
    body: dict[str, Any]
    what: str  # "table lsync_cardsnapshot", "column lsync_cardsnapshot.lsync_cardnumber", ...
    solution: str | None

    def facts(self) -> str:
        """The body's key facts, for ``--dry-run`` and the log."""
        b = self.body
        kind = str(b.get("@odata.type", "")).removeprefix(CRM)
        parts = [kind] if kind else []
        for name in ("SchemaName", "uniquename", "customizationprefix", "MaxLength", "Precision", "MinValue",
                     "MaxValue", "Format", "OwnershipType", "ReferencedEntity", "ReferencingEntity"):
            if name in b:
                parts.append(f"{name}={b[name]}")
        if "Attributes" in b:
            parts.append("primary name " + ", ".join(a["SchemaName"] for a in b["Attributes"]))
        if "Lookup" in b:
            parts.append(f"Lookup={b['Lookup']['SchemaName']}")
        if "KeyAttributes" in b:
            parts.append("KeyAttributes=" + ",".join(b["KeyAttributes"]))
        options = b.get("OptionSet", {}).get("Options")
        if options:
            parts.append("Options=" + ",".join(str(o["Value"]) for o in options))
        if "publisherid@odata.bind" in b:
            parts.append(f"publisherid@odata.bind={b['publisherid@odata.bind']}")
        return " ".join(parts)

    def as_row(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "solution": self.solution or "", "what": self.what,
                "body": self.facts()}


@dataclass
class TablePlan:
    template: Template
    table: TableSpec
    exists: bool
    entity_set: str | None  # as Dataverse reports it (None: the table is still to be created)
    requests: list[MetadataRequest] = field(default_factory=list)
    keys: dict[str, KeyInfo] = field(default_factory=dict)  # what exists, by lower-cased schema name


@dataclass
class Plan:
    solution: str
    prefix: str | None
    solution_requests: list[MetadataRequest] = field(default_factory=list)
    tables: list[TablePlan] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def requests(self) -> list[MetadataRequest]:
        return [*self.solution_requests, *(r for t in self.tables for r in t.requests)]


@dataclass(frozen=True)
class KeyProgress:
    """What the key wait reports after each poll."""

    active: int
    total: int
    waiting: list[str]  # "<table>.<key> Pending", ...


@dataclass
class Outcome:
    sent: list[MetadataRequest]
    tables: list[dict[str, Any]]
    problems: list[str]


def app_owned(catalog: Catalog, names: Iterable[str] | None = None) -> list[Template]:
    """The templates (all, or ``names``) that declare an app-owned table."""
    wanted = set(names) if names is not None else None
    return [t for t in catalog if t.dataverse.table is not None and (wanted is None or t.name in wanted)]


class Provisioner:
    """Plans and applies the metadata creates of the app-owned tables; waits for their keys."""

    def __init__(self, client: MetadataClient, templates: Sequence[Template], solution: str, *,
                 clock: Clock = SYSTEM_CLOCK, sleep: Callable[[float], None] = time.sleep, poll_s: float = 10.0,
                 wait_s: float = 1800.0, say: Callable[[str], None] | None = None,
                 progress: Callable[[KeyProgress], None] | None = None) -> None:
        self.client = client
        self.templates = list(templates)
        self.solution = solution
        self.clock = clock
        self.sleep = sleep
        self.poll_s = poll_s
        self.wait_s = wait_s
        self.say = say or (lambda line: None)
        #: Called after each poll of the keys (the CLI draws a bar); by default one line through ``say``.
        self.on_progress: Callable[[KeyProgress], None] = progress or self._say_progress

    # -- reading what exists ---------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        prefixes = sorted({t.dataverse.table.prefix for t in self.templates if t.dataverse.table is not None})
        plan = Plan(self.solution, prefixes[0] if len(prefixes) == 1 else None)
        if len(prefixes) > 1:
            plan.problems.append(f"the templates' tables use the schema-name prefixes {', '.join(prefixes)}: one "
                                 "solution has one publisher and one prefix; give every dataverse.table the same one")
            return plan
        if not prefixes:
            return plan
        self._plan_solution(plan, prefixes[0])
        for template in self.templates:
            plan.tables.append(self._plan_table(template, plan.problems))
        return plan

    def _plan_solution(self, plan: Plan, prefix: str) -> None:
        found = self.client.solution(self.solution)
        if found is not None:
            publisher = self.client.publisher(found.publisher_id) if found.publisher_id else None
            if publisher is None:
                plan.problems.append(f"solution {self.solution}: its publisher cannot be read; check the app user's "
                                     "read access to publishers")
            elif publisher.prefix.lower() != prefix.lower():
                plan.problems.append(
                    f"SYNC_DATAVERSE_SOLUTION: solution {self.solution!r} belongs to publisher "
                    f"{publisher.unique_name!r} whose customization prefix is {publisher.prefix!r}, but the templates' "
                    f"schema names start with {prefix + '_'!r}. Either set SYNC_DATAVERSE_SOLUTION to a solution of a "
                    f"publisher with prefix {prefix!r} (or a new name: provision creates it), or change the schema "
                    f"names in the templates' dataverse.table blocks to start with {publisher.prefix + '_'!r}")
            return
        publisher = self.client.publisher_with_prefix(prefix)
        if publisher is None:
            unique = f"{prefix}publisher"
            plan.solution_requests.append(MetadataRequest("POST", "publishers", {
                "uniquename": unique, "friendlyname": f"{self.solution} publisher", "customizationprefix": prefix,
                "customizationoptionvalueprefix": option_value_prefix(prefix),
                "description": "Publisher of the loyalty sync's app-owned tables (created by provision)"},
                f"publisher {unique} (prefix {prefix})", None))
            bind = "/publishers(<the publisher created above>)"
        else:
            bind = f"/publishers({publisher.publisher_id})"
        plan.solution_requests.append(MetadataRequest("POST", "solutions", {
            "uniquename": self.solution, "friendlyname": self.solution, "version": "1.0.0.0",
            "publisherid@odata.bind": bind,
            "description": "The loyalty sync's app-owned tables (created by provision)"},
            f"solution {self.solution}", None))

    def _plan_table(self, template: Template, problems: list[str]) -> TablePlan:
        table = template.dataverse.table
        assert table is not None
        entity_path = f"EntityDefinitions(LogicalName='{table.logical_name}')"
        info = self.client.entity(table.logical_name)
        plan = TablePlan(template, table, exists=info is not None, entity_set=info.entity_set if info else None)
        where = f"template {template.name}: table {table.logical_name}"
        if info is None:
            plan.requests.append(MetadataRequest("POST", "EntityDefinitions", table_body(table),
                                                 f"table {table.logical_name}", self.solution))
            existing: dict[str, str | None] = {table.primary_name.logical_name: "String"}
        else:
            if info.entity_set and info.entity_set != template.dataverse.entity_set:
                problems.append(f"{where}: Dataverse names its entity set {info.entity_set!r}; set "
                                f"dataverse.entity_set to it in the template file {template.name}.json")
            existing = {name: a.attribute_type for name, a in self.client.attributes(table.logical_name).items()}
        for column in table.columns:
            self._column(plan, entity_path, column.logical_name, ATTRIBUTE_TYPES[column.type], existing, problems,
                         MetadataRequest("POST", f"{entity_path}/Attributes", column_body(column),
                                         f"column {table.logical_name}.{column.logical_name}", self.solution))
        for lookup in table.lookups:
            self._column(plan, entity_path, lookup.logical_name, "Lookup", existing, problems,
                         MetadataRequest("POST", "RelationshipDefinitions", relationship_body(table, lookup),
                                         f"lookup {table.logical_name}.{lookup.schema_name} -> "
                                         f"{lookup.referenced_entity}", self.solution))
        plan.keys = self.client.keys(table.logical_name) if info is not None else {}
        for key in table.keys:
            found = plan.keys.get(key.schema_name.lower())
            if found is None:
                plan.requests.append(MetadataRequest("POST", f"{entity_path}/Keys", key_body(key),
                                                     f"key {table.logical_name}.{key.schema_name} "
                                                     f"({', '.join(key.columns)})", self.solution))
            elif sorted(a.lower() for a in found.key_attributes) != sorted(key.columns):
                problems.append(f"{where}: key {key.schema_name} exists on {', '.join(found.key_attributes)}, the "
                                f"template declares {', '.join(key.columns)}; a key cannot be changed: delete it in "
                                f"the maker portal (Tables > {table.logical_name} > Keys) and run {FIX} again")
        return plan

    @staticmethod
    def _column(plan: TablePlan, entity_path: str, name: str, attribute_type: str, existing: dict[str, str | None],
                problems: list[str], request: MetadataRequest) -> None:
        if name not in existing:
            plan.requests.append(request)
        elif existing[name] is not None and existing[name] != attribute_type:
            problems.append(f"template {plan.template.name}: column {plan.table.logical_name}.{name} exists as "
                            f"{existing[name]}, the template declares {attribute_type}; a column's type cannot be "
                            "changed: fix the template, or delete the column in the maker portal and provision again")

    # -- writing ---------------------------------------------------------------------------------------------------
    def apply(self, plan: Plan) -> Outcome:
        """Send the plan's requests, read the entity set names back, wait for the keys. Nothing is sent when the plan
        has problems."""
        if plan.problems:
            return Outcome([], [], list(plan.problems))
        sent: list[MetadataRequest] = []
        publisher_id: str | None = None
        for request in plan.solution_requests:
            body = request.body
            if request.path == "solutions" and publisher_id is not None:
                body = {**body, "publisherid@odata.bind": f"/publishers({publisher_id})"}
            created = self._send(MetadataRequest(request.method, request.path, body, request.what, None))
            sent.append(request)
            if request.path == "publishers":
                publisher_id = created
        problems: list[str] = []
        for table_plan in plan.tables:
            for request in table_plan.requests:
                self._send(request)
                sent.append(request)
            if not table_plan.exists:
                info = self.client.entity(table_plan.table.logical_name)
                table_plan.entity_set = info.entity_set if info else None
                wanted = table_plan.template.dataverse.entity_set
                if table_plan.entity_set != wanted:
                    problems.append(f"template {table_plan.template.name}: Dataverse named the new table's entity set "
                                    f"{table_plan.entity_set!r}; set dataverse.entity_set to it in the template file "
                                    f"{table_plan.template.name}.json (the template says {wanted!r})")
        states = self.wait_for_keys(plan.tables)
        rows = [{"template": t.template.name, "table": t.table.logical_name, "entity_set": t.entity_set,
                 "created": "yes" if not t.exists else "no",
                 "added": sum(1 for r in t.requests if r.path != "EntityDefinitions"),
                 "keys": ", ".join(f"{k.schema_name} {states.get((t.table.logical_name, k.schema_name.lower()), '?')}"
                                   for k in t.table.keys)} for t in plan.tables]
        return Outcome(sent, rows, problems)

    def _send(self, request: MetadataRequest) -> str | None:
        self.say(f"{request.method} {request.path}  {request.facts()}")
        log(logger, logging.INFO, "metadata create", what=request.what, path=request.path, solution=request.solution)
        return self.client.post(request.path, request.body, solution=request.solution)

    def wait_for_keys(self, tables: Sequence[TablePlan],
                      progress: Callable[[KeyProgress], None] | None = None) -> dict[tuple[str, str], str]:
        """Poll every table's keys until each declared key is ``Active``; ``Failed`` or ``wait_s`` passing raises
        ``ProvisionError``. Returns the last state of each ``(table, key)``."""
        progress = progress or self.on_progress
        wanted = {(t.table.logical_name, k.schema_name.lower()): k.schema_name for t in tables for k in t.table.keys}
        states: dict[tuple[str, str], str] = {}
        for t in tables:  # what the plan read already
            for name, info in t.keys.items():
                states[(t.table.logical_name, name)] = info.status
        deadline = self.clock.monotonic() + self.wait_s
        while True:
            for table in sorted({table for (table, key) in wanted if states.get((table, key)) != ACTIVE}):
                for name, info in self.client.keys(table).items():
                    states[(table, name)] = info.status
            failed = [(t, k) for (t, k) in wanted if states.get((t, k)) == FAILED]
            if failed:
                table, key = failed[0]
                raise ProvisionError(
                    f"the index of key {wanted[(table, key)]} on table {table} failed to build (EntityKeyIndexStatus "
                    "Failed), usually because rows share the key's values: remove the duplicates, then reactivate the "
                    f"key (maker portal: Tables > {table} > Keys, or the ReactivateEntityKey message) and run {FIX} "
                    "again")
            waiting = [f"{t}.{wanted[(t, k)]} {states.get((t, k), 'missing')}" for (t, k) in wanted
                       if states.get((t, k)) != ACTIVE]
            progress(KeyProgress(len(wanted) - len(waiting), len(wanted), waiting))
            if not waiting:
                return states
            if self.clock.monotonic() + self.poll_s > deadline:
                raise ProvisionError(
                    f"after {self.wait_s:g} s these key indexes are not Active yet: {'; '.join(waiting)}. Dataverse "
                    f"builds them in the background; run {FIX} again later (it sends nothing new and waits), or raise "
                    "SYNC_PROVISION_WAIT_S. Upserts by a key fail until it is Active")
            self.sleep(self.poll_s)

    def _say_progress(self, report: KeyProgress) -> None:
        if report.waiting:
            self.say(f"keys active {report.active}/{report.total}; waiting: {', '.join(report.waiting)}")
