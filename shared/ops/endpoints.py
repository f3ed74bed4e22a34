"""The operator endpoints under ``/api/ops`` (admin key): an Azure Functions Blueprint, one handler per action;
and the status page (``dashboard``, ``dashboard_action``: anonymous-level, see ``shared/ops/access.py``).

Each handler is served twice: at ``/api/ops/<route>`` with the host's master key (``x-functions-key``; scripts
and break-glass), and at ``/api/ops/entra/<route>`` to a signed-in operator: anonymous-level for the Functions
host, behind App Service Authentication, which validates the caller's Entra access token
(``api://<app-id>/.default``) and hands the app its principal; the app then checks the operators' app role or
group exactly as for the status page (``access.operator``). ``python -m shared.cli --remote`` uses either.

``function_app.py`` registers ``bp``. Each handler parses its request, makes one call into
``shared.ops.queries`` or ``shared.sync.operations`` and answers JSON. A template named in the route or in
the ``template`` query parameter must exist (404 listing the known ones otherwise). Routes may not start
with ``admin`` (reserved by the Functions host), hence ``ops/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.commerce.client import LegalEntitiesError
from shared.observability import correlation_scope
from shared.ops import access, dashboard, drift, queries
from shared.runtime import Runtime, get_runtime
from shared.state.queues import QueueKind
from shared.state.store import encode_key
from shared.sync import operations

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves its __init__ untyped

KEYS_ERROR = "keys must be a list of row keys or of key-part lists"
NOTHING_NAMED = "name the records with 'keys', or replay everything with 'all': true"


def _json(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def _unknown_template(runtime: Runtime, name: str | None) -> func.HttpResponse:
    return _json(404, {"error": f"unknown template {name!r}", "templates": sorted(queries.known_templates(runtime))})


@dataclass(frozen=True)
class OpsCall:
    """One request to an operator endpoint, its template (route or query, already checked) and correlation id."""

    runtime: Runtime
    req: func.HttpRequest
    template: str | None
    correlation_id: str

    @property
    def route_template(self) -> str:
        """The ``{template}`` of a route that has one."""
        assert self.template is not None
        return self.template


Handler = Callable[[OpsCall], func.HttpResponse]


SIGNED_IN_PREFIX = "ops/entra/"  # the routes served to a signed-in operator (Entra token) instead of the master key


def operator_endpoint(name: str, route: str, method: func.HttpMethod) -> Callable[[Handler], Handler]:
    """Register ``handler`` on the blueprint as function ``name`` (admin key) and as ``entra_<name>`` under
    ``ops/entra/`` (a signed-in operator: ``access.operator``), each inside a correlation scope."""
    def register(handler: Handler) -> Handler:
        def serve(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
            with correlation_scope(context.invocation_id) as cid:
                runtime = get_runtime()
                template = req.route_params.get("template") or req.params.get("template")
                if template is not None and not queries.is_known(runtime, template):
                    return _unknown_template(runtime, template)
                return handler(OpsCall(runtime, req, template, cid))

        @bp.function_name(name)
        @bp.route(route=route, methods=[method], auth_level=func.AuthLevel.ADMIN)
        def trigger(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
            problem = access.local_key_problem(req)  # under func start no host has checked the master key
            if problem is not None:
                return _json(401, {"error": problem})
            return serve(req, context)

        @bp.function_name(f"entra_{name}")
        @bp.route(route=SIGNED_IN_PREFIX + route.removeprefix("ops/"), methods=[method],
                  auth_level=func.AuthLevel.ANONYMOUS)
        def signed_in(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
            try:
                access.operator(req)
            except access.Denied as exc:
                if exc.login is not None:  # no principal: no token was sent, or App Service did not accept it
                    return _json(401, {"error": "sign in: send an Entra access token for the app "
                                                "(Authorization: Bearer, scope api://<app-id>/.default)"})
                return _json(403, {"error": exc.reason})
            return serve(req, context)

        return handler

    return register


class ReplayRequest(BaseModel):
    """The body of ``POST /api/ops/replay``: a template (else the ``template`` query parameter, else all
    templates), and the records: ``keys`` (row keys as ``parked`` lists them, or key-part lists) or ``all``."""

    template: str | None = None
    keys: list[str | list[str]] | None = None
    all: bool = False

    def row_keys(self) -> list[str] | None:
        """None: every parked record."""
        if self.keys is None:
            return None
        return [k if isinstance(k, str) else encode_key(tuple(k)) for k in self.keys]


@operator_endpoint("ops_status", "ops/status", func.HttpMethod.GET)
def status(call: OpsCall) -> func.HttpResponse:
    return _json(200, queries.status(call.runtime))


@operator_endpoint("ops_parked", "ops/parked", func.HttpMethod.GET)
def parked(call: OpsCall) -> func.HttpResponse:
    """Parked records (``?template=``, ``?error_class=``, ``?direction=outbound|inbound``)."""
    direction = call.req.params.get("direction")
    if direction is not None and direction not in queries.PARKED_DIRECTIONS:
        return _json(400, {"error": f"direction: one of {', '.join(queries.PARKED_DIRECTIONS)}",
                           "correlation_id": call.correlation_id})
    return _json(200, {"value": queries.parked(call.runtime, call.template, error_class=call.req.params.get(
        "error_class"), direction=direction)})


@operator_endpoint("ops_check", "ops/check", func.HttpMethod.GET)
def check(call: OpsCall) -> func.HttpResponse:
    """What ``python -m shared.cli check`` finds, checked afresh from the app (``?template=``)."""
    problems = queries.check(call.runtime, call.template)
    return _json(200, {"value": [{"subject": p.subject, "problem": p.detail, "transient": p.transient}
                                 for p in problems]})


@operator_endpoint("ops_conflicts", "ops/conflicts", func.HttpMethod.GET)
def conflicts(call: OpsCall) -> func.HttpResponse:
    return _json(200, {"value": queries.conflicts(call.runtime, call.template)})


@operator_endpoint("ops_parked_one", "ops/parked/{template}/{key}", func.HttpMethod.GET)
def parked_one(call: OpsCall) -> func.HttpResponse:
    entry = queries.parked_one(call.runtime, call.route_template, call.req.route_params.get("key", ""))
    if entry is None:
        return _json(404, {"error": "no parked record with that key", "correlation_id": call.correlation_id})
    return _json(200, entry)


@operator_endpoint("ops_replay", "ops/replay", func.HttpMethod.POST)
def replay(call: OpsCall) -> func.HttpResponse:
    cid = call.correlation_id
    raw = _object(call)
    if isinstance(raw, func.HttpResponse):
        return raw
    try:
        body = ReplayRequest.model_validate(raw)
    except ValidationError as exc:
        if exc.errors()[0]["loc"][:1] == ("keys",):
            return _json(400, {"error": KEYS_ERROR, "correlation_id": cid})
        return _invalid(call, exc)
    template = body.template if "template" in body.model_fields_set else call.template
    if template is not None and not queries.is_known(call.runtime, template):
        return _unknown_template(call.runtime, template)
    if body.keys is None and not body.all:
        return _json(400, {"error": NOTHING_NAMED, "correlation_id": cid})
    results = operations.replay(call.runtime, template, body.row_keys())
    return _json(200, {"value": [r.as_dict() for r in results], "correlation_id": cid})


@operator_endpoint("ops_poison", "ops/poison", func.HttpMethod.GET)
def poison(call: OpsCall) -> func.HttpResponse:
    """The poison messages (``?template=``, ``?queue=callbacks|pages``), at most the first 32 per poison queue,
    and every template's counts (``queues``)."""
    kind = _queue_kind(call)
    if isinstance(kind, func.HttpResponse):
        return kind
    return _json(200, {"value": [m.as_dict() for m in queries.poison(call.runtime, call.template, kind)],
                       "queues": queries.queues(call.runtime)})


@operator_endpoint("ops_poison_one", "ops/poison/{template}/{id}", func.HttpMethod.GET)
def poison_one(call: OpsCall) -> func.HttpResponse:
    message = queries.poison_one(call.runtime, call.route_template, call.req.route_params.get("id", ""))
    if message is None:
        return _json(404, {"error": "no poison message with that id", "correlation_id": call.correlation_id})
    return _json(200, message.as_dict())


class PoisonRequeueRequest(BaseModel):
    """The body of ``POST /api/ops/poison/requeue``: the template (else the ``template`` query parameter), the
    messages (``ids`` as listed) or ``all``, and optionally which poison queue (``callbacks`` or ``pages``)."""

    model_config = ConfigDict(extra="forbid")
    template: str | None = None
    ids: list[str] | None = Field(default=None, max_length=1000)
    all: bool = False
    queue: QueueKind | None = None


@operator_endpoint("ops_poison_requeue", "ops/poison/requeue", func.HttpMethod.POST)
def poison_requeue(call: OpsCall) -> func.HttpResponse:
    """Put poison messages back on the queue they came from (each deleted from the poison queue once sent);
    a message not there (any more) is ``not_found``: requeueing twice sends once."""
    cid = call.correlation_id
    body = _parsed(call, PoisonRequeueRequest)
    if isinstance(body, func.HttpResponse):
        return body
    template = body.template or call.template
    if template is None:
        return _json(400, {"error": "name the template", "correlation_id": cid})
    if not queries.is_known(call.runtime, template):
        return _unknown_template(call.runtime, template)
    if body.ids is None and not body.all:
        return _json(400, {"error": "name the messages with 'ids', or requeue every one with 'all': true",
                           "correlation_id": cid})
    results = queries.requeue_poison(call.runtime, template, None if body.all else body.ids,
                                     body.queue.value if body.queue else None)
    return _json(200, {"value": [r.as_dict() for r in results], "correlation_id": cid})


def _queue_kind(call: OpsCall) -> str | func.HttpResponse | None:
    kind: str | None = call.req.params.get("queue")
    if kind is not None and kind not in {k.value for k in QueueKind}:
        return _json(400, {"error": f"queue: one of {', '.join(k.value for k in QueueKind)}",
                           "correlation_id": call.correlation_id})
    return kind


@operator_endpoint("ops_pause", "ops/templates/{template}/pause", func.HttpMethod.POST)
def pause(call: OpsCall) -> func.HttpResponse:
    operations.pause(call.runtime, call.route_template, by=f"ops endpoint ({call.correlation_id})")
    return _json(200, {"template": call.route_template, "paused": True})


@operator_endpoint("ops_resume", "ops/templates/{template}/resume", func.HttpMethod.POST)
def resume(call: OpsCall) -> func.HttpResponse:
    by = f"ops endpoint ({call.correlation_id})"
    pause = queries.pause_state(call.runtime, call.route_template)
    if pause.by_setting:  # a pause by setting outlives any resume: say so (as the CLI does), held work stays held
        if pause.by_command:
            call.runtime.state.callbacks.set_paused(call.route_template, False, by=by)
        return _json(409, {"template": call.route_template, "paused": True, "requeued": 0,
                           "held_callbacks": queries.held_callbacks(call.runtime, call.route_template),
                           "error": queries.PAUSED_BY_SETTING})
    requeued = operations.resume(call.runtime, call.route_template, by=by)
    return _json(200, {"template": call.route_template, "paused": False, "requeued": requeued})


# -- drift: reconcile, a sync's dry run, resync (shared/ops/drift.py) ----------------------------------------

MAX_FINDINGS = 10_000  # listed in one answer at most; the summaries count every finding


class DriftRequest(BaseModel):
    """The body of ``POST /api/ops/reconcile`` and ``/api/ops/sync``: the template (else the ``template`` query
    parameter), the companies of a company-specific one (default: every legal entity), and how many findings
    to list (``limit``, default 1,000; the summaries count them all)."""

    template: str | None = None
    companies: list[str] = []
    limit: int = 1000


class ReconcileRequest(DriftRequest):
    repair: bool = False


class SyncRequest(DriftRequest):
    dry_run: bool = False


class ResyncRequest(BaseModel):
    """The body of ``POST /api/ops/resync``: the template and the record's F&O key (its parts in the template's
    key order, or the one part of a single-part key)."""

    template: str | None = None
    key: list[Any] | str


def _object(call: OpsCall) -> dict[str, Any] | func.HttpResponse:
    try:
        raw = call.req.get_json() if call.req.get_body() else {}
    except ValueError:
        return _json(400, {"error": "body is not valid JSON", "correlation_id": call.correlation_id})
    if not isinstance(raw, dict):
        return _json(400, {"error": "body must be a JSON object", "correlation_id": call.correlation_id})
    return raw


def _invalid(call: OpsCall, exc: ValidationError) -> func.HttpResponse:
    problem = exc.errors()[0]
    field = ".".join(str(p) for p in problem["loc"])
    return _json(400, {"error": f"{field}: {problem['msg']}", "correlation_id": call.correlation_id})


def _drift_template(call: OpsCall, named: str | None) -> str | func.HttpResponse:
    template = named or call.template
    if template is None:
        return _json(400, {"error": "name the template", "correlation_id": call.correlation_id})
    if not queries.is_known(call.runtime, template):
        return _unknown_template(call.runtime, template)
    return template


def _drift_answer(call: OpsCall, collected: drift.Collected, summaries: list[dict[str, Any]]) -> func.HttpResponse:
    return _json(200, {"findings": collected.items, "truncated": collected.truncated, "summary": summaries,
                       "correlation_id": call.correlation_id})


def _bad_limit(call: OpsCall, limit: int) -> func.HttpResponse | None:
    if 0 <= limit <= MAX_FINDINGS:
        return None
    return _json(400, {"error": f"limit: between 0 and {MAX_FINDINGS}", "correlation_id": call.correlation_id})


Model = TypeVar("Model", bound=BaseModel)


def _parsed(call: OpsCall, model: type[Model]) -> Model | func.HttpResponse:
    """The request body as ``model``, or the 400 that names what is wrong with it."""
    raw = _object(call)
    if isinstance(raw, func.HttpResponse):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        return _invalid(call, exc)


def _drift_request(call: OpsCall, model: type[Model]) -> tuple[Model, str] | func.HttpResponse:
    """The parsed body of a drift action and the known template it names (body, else query), or the 400/404."""
    body = _parsed(call, model)
    if isinstance(body, func.HttpResponse):
        return body
    template = _drift_template(call, getattr(body, "template", None))
    if isinstance(template, func.HttpResponse):
        return template
    return body, template


@operator_endpoint("ops_reconcile", "ops/reconcile", func.HttpMethod.POST)
def reconcile(call: OpsCall) -> func.HttpResponse:
    """Compare Commerce and Dataverse record by record (``repair``: fix what drifted). Runs within the request:
    for a large template use ``python -m shared.cli reconcile`` (an HTTP call ends after 230 s)."""
    request = _drift_request(call, ReconcileRequest)
    if isinstance(request, func.HttpResponse):
        return request
    body, template = request
    if (bad := _bad_limit(call, body.limit)) is not None:
        return bad
    collected = drift.Collected(body.limit)
    try:
        summaries = drift.reconcile(call.runtime, template, body.companies, repair=body.repair, sink=collected)
    except LegalEntitiesError as exc:
        return _json(502, {"error": str(exc), "correlation_id": call.correlation_id})
    return _drift_answer(call, collected, [s.as_dict() for s in summaries])


@operator_endpoint("ops_sync", "ops/sync", func.HttpMethod.POST)
def sync(call: OpsCall) -> func.HttpResponse:
    """A dry run of a template's sync (``?dry_run=true`` or ``{"dry_run": true}``): what it would write, writing
    nothing. A real sync runs on the template's timer, or with ``python -m shared.cli sync``."""
    request = _drift_request(call, SyncRequest)
    if isinstance(request, func.HttpResponse):
        return request
    body, template = request
    if not (body.dry_run or call.req.params.get("dry_run", "").lower() == "true"):
        return _json(400, {"error": "only dry runs are served here (dry_run=true); a sync runs on its timer or with "
                                    "python -m shared.cli sync", "correlation_id": call.correlation_id})
    if (bad := _bad_limit(call, body.limit)) is not None:
        return bad
    collected = drift.Collected(body.limit)
    try:
        summaries = drift.dry_run(call.runtime, template, body.companies, sink=collected)
    except LegalEntitiesError as exc:
        return _json(502, {"error": str(exc), "correlation_id": call.correlation_id})
    return _drift_answer(call, collected, [s.as_dict() for s in summaries])


@operator_endpoint("ops_resync", "ops/resync", func.HttpMethod.POST)
def resync(call: OpsCall) -> func.HttpResponse:
    """Re-sync one record from Commerce whatever its hash says."""
    request = _drift_request(call, ResyncRequest)
    if isinstance(request, func.HttpResponse):
        return request
    body, template = request
    parts = [body.key] if isinstance(body.key, str) else body.key
    problem = drift.key_parts_problem(call.runtime, template, parts)
    if problem:
        return _json(400, {"error": problem, "correlation_id": call.correlation_id})
    result = drift.resync(call.runtime, template, parts)
    return _json(200, {**result.as_dict(), "correlation_id": call.correlation_id})


class ScopeRequest(BaseModel):
    """The body of an action on one scope: the template (else the ``template`` query parameter), the company of
    a company-specific one, and optionally who asks (recorded; App Service authentication's principal wins)."""

    model_config = ConfigDict(extra="forbid")
    template: str | None = None
    company: str | None = Field(default=None, max_length=10)
    by: str | None = Field(default=None, max_length=200)


class BreakLeaseRequest(ScopeRequest):
    direction: Literal["outbound", "inbound", "both"] = "outbound"


Body = TypeVar("Body", bound=ScopeRequest)


def _scope_request(call: OpsCall, model: type[Body]) -> Body | func.HttpResponse:
    """The parsed body with a known template, or the 400/404 answer."""
    cid = call.correlation_id
    body = _parsed(call, model)
    if isinstance(body, func.HttpResponse):
        return body
    body.template = body.template or call.template
    if body.template is None:
        return _json(400, {"error": "name the template", "correlation_id": cid})
    if not queries.is_known(call.runtime, body.template):
        return _unknown_template(call.runtime, body.template)
    return body


def _who(call: OpsCall, body: ScopeRequest) -> str:
    principal = call.req.headers.get("x-ms-client-principal-name") or body.by or "admin key"
    return f"{principal} (ops endpoint, {call.correlation_id})"


@operator_endpoint("ops_approve_deletes", "ops/approve-deletes", func.HttpMethod.POST)
def approve_deletes(call: OpsCall) -> func.HttpResponse:
    """Consent to the deletes a scope's last run held back; the next run of the scope makes them."""
    body = _scope_request(call, ScopeRequest)
    if isinstance(body, func.HttpResponse):
        return body
    assert body.template is not None
    try:
        approval = operations.approve_deletes(call.runtime, body.template, body.company, by=_who(call, body))
    except operations.OperatorError as exc:
        return _json(400, {"error": str(exc), "correlation_id": call.correlation_id})
    except operations.NothingToDo as exc:
        return _json(409, {"error": str(exc), "correlation_id": call.correlation_id})
    return _json(200, {**approval.as_dict(), "correlation_id": call.correlation_id})


@operator_endpoint("ops_break_lease", "ops/break-lease", func.HttpMethod.POST)
def break_lease(call: OpsCall) -> func.HttpResponse:
    """Release the lease a dead run left on a scope; its open run stays resumable."""
    body = _scope_request(call, BreakLeaseRequest)
    if isinstance(body, func.HttpResponse):
        return body
    assert body.template is not None
    try:
        results = operations.break_lease(call.runtime, body.template, body.company,
                                         operations.DIRECTIONS[body.direction], by=_who(call, body))
    except operations.OperatorError as exc:
        return _json(400, {"error": str(exc), "correlation_id": call.correlation_id})
    return _json(200, {"value": [r.as_dict() for r in results], "correlation_id": call.correlation_id})


# -- the status page (shared/ops/dashboard.py): anonymous-level, behind App Service Authentication ------------

dashboard.register(bp)
