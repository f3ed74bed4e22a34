"""Thin Azure Functions triggers, registered by ``function_app.py``.

Per template file: a timer (Commerce -> Dataverse scan), a timer for the other direction (Dataverse
change tracking -> Commerce), a callback route (validate + enqueue) and a queue-triggered worker.
Once: a 404 for unknown templates, a timer that retries parked records, and the operator endpoints
under ``/api/ops`` (admin key). The bodies turn a trigger's input into one
call into ``shared.sync`` and its result into a response. No sync logic here.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared.mapping.model import Template
from shared.messages import PageTask
from shared.messages.events import work_items
from shared.observability import correlation_scope, log
from shared.runtime import Runtime, get_runtime
from shared.state.queues import binding_queue_name, pages_binding_queue_name
from shared.state.store import encode_key
from shared.sync import operations, worker
from shared.sync.callbacks import SECRET_HEADER, CallbackAnswer, handle_callback, secret_matches

logger = logging.getLogger("loyaltysync.triggers")
CALLBACK_ROUTE = "callbacks/{template}"
RETRY_SCHEDULE = "0 */5 * * * *"
STORAGE_CONNECTION = "AzureWebJobsStorage"


def _json(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def _answer(answer: CallbackAnswer) -> func.HttpResponse:
    return _json(answer.status, answer.body)


def run_timer(template: str, timer: func.TimerRequest, invocation_id: str) -> None:
    with correlation_scope(invocation_id):
        if timer.past_due:
            log(logger, logging.WARNING, "timer is past due", template=template)
        runtime = get_runtime()
        if worker.is_paused(runtime, template):
            log(logger, logging.INFO, "template paused; timer run skipped", template=template)
            return
        scan = runtime.scan(template)
        if not runtime.settings.fan_out:
            scan.run(runtime.settings.legal_entities)
            return
        for company in scan.scopes(runtime.settings.legal_entities):
            scan.start(company)


def run_page(msg: func.QueueMessage, invocation_id: str) -> None:
    """One key range, or one delete check, of a fanned-out full scan (a bad message fails here: the host
    retries, then poisons it)."""
    with correlation_scope(invocation_id):
        task = PageTask.model_validate_json(msg.get_body())
        get_runtime().scan(task.template).run_task(task)


def run_inbound(template: str, timer: func.TimerRequest, invocation_id: str) -> None:
    with correlation_scope(invocation_id):
        runtime = get_runtime()
        if not runtime.settings.two_way:
            return
        if worker.is_paused(runtime, template):
            log(logger, logging.INFO, "template paused; inbound run skipped", template=template)
            return
        runtime.inbound(template).run()


def callback(template: str, req: func.HttpRequest, invocation_id: str) -> func.HttpResponse:
    with correlation_scope(invocation_id) as cid:
        runtime = get_runtime()
        secret = runtime.settings.callback_secret
        provided = req.headers.get(SECRET_HEADER) or req.params.get("secret")
        if not secret_matches(secret.get_secret_value() if secret else None, provided):
            log(logger, logging.WARNING, "callback refused: missing or wrong shared secret", template=template)
            return _json(401, {"error": f"missing or wrong callback secret ({SECRET_HEADER})", "correlation_id": cid})
        return _answer(handle_callback(runtime.catalog.plan(template), runtime.queues, req.get_body(), runtime.state))


def work(msg: func.QueueMessage, invocation_id: str) -> None:
    with correlation_scope(invocation_id):
        runtime = get_runtime()
        for item in work_items(msg.get_body()):  # one item, or a group of callbacks that arrived together
            worker.process(runtime, item)


def unknown_template(req: func.HttpRequest, invocation_id: str) -> func.HttpResponse:
    with correlation_scope(invocation_id) as cid:
        name = req.route_params.get("template", "")
        known = sorted(t.name for t in get_runtime().catalog)
        return _json(404, {"error": f"unknown template {name!r}", "templates": known, "correlation_id": cid})


def retry_parked(invocation_id: str) -> None:
    with correlation_scope(invocation_id):
        operations.retry_parked(get_runtime())


# -- operator endpoints (admin key) ---------------------------------------------------------------


def _template_or_404(runtime: Runtime, name: str | None) -> func.HttpResponse | None:
    if name is not None and runtime.catalog.get(name) is None:
        return _json(404, {"error": f"unknown template {name!r}", "templates": sorted(t.name for t in runtime.catalog)})
    return None


def ops(action: str, req: func.HttpRequest, invocation_id: str) -> func.HttpResponse:
    with correlation_scope(invocation_id) as cid:
        runtime = get_runtime()
        template = req.route_params.get("template") or req.params.get("template")
        missing = _template_or_404(runtime, template)
        if missing is not None:
            return missing
        if action == "status":
            from shared.cli import status_rows

            return _json(200, {"watermarks": status_rows(runtime), "paused": {
                t.name: worker.is_paused(runtime, t.name) for t in runtime.catalog},
                "counters": {t.name: runtime.state.counters(t.name) for t in runtime.catalog}})
        if action == "conflicts":
            return _json(200, {"value": [dict(e) for e in runtime.state.list_conflicts(template)]})
        if action == "parked":
            return _json(200, {"value": [operations.parked_entry(e) for e in runtime.state.list_parked(template)]})
        if action == "parked_one":
            assert template is not None
            entity = runtime.state.get_parked(template, req.route_params.get("key", ""))
            if entity is None:
                return _json(404, {"error": "no parked record with that key", "correlation_id": cid})
            return _json(200, operations.parked_entry(entity))
        if action == "replay":
            try:
                body = req.get_json() if req.get_body() else {}
            except ValueError:
                return _json(400, {"error": "body is not valid JSON", "correlation_id": cid})
            if not isinstance(body, dict):
                return _json(400, {"error": "body must be a JSON object", "correlation_id": cid})
            template = body.get("template", template)
            missing = _template_or_404(runtime, template)
            if missing is not None:
                return missing
            keys = body.get("keys")
            if keys is not None and not (isinstance(keys, list) and all(isinstance(k, (str, list)) for k in keys)):
                return _json(400, {"error": "keys must be a list of row keys or of key-part lists", "correlation_id": cid})
            if keys is None and not body.get("all"):
                return _json(400, {"error": "name the records with 'keys', or replay everything with 'all': true",
                                   "correlation_id": cid})
            row_keys = None if keys is None else [k if isinstance(k, str) else encode_key(tuple(k)) for k in keys]
            results = operations.replay(runtime, template, row_keys)
            return _json(200, {"value": [r.as_dict() for r in results], "correlation_id": cid})
        if action in ("pause", "resume"):
            assert template is not None
            by = f"ops endpoint ({cid})"
            if action == "pause":
                operations.pause(runtime, template, by=by)
                return _json(200, {"template": template, "paused": True})
            requeued = operations.resume(runtime, template, by=by)
            return _json(200, {"template": template, "paused": False, "requeued": requeued})
        return _json(404, {"error": f"unknown action {action!r}"})  # pragma: no cover


# -- registration ---------------------------------------------------------------------------------


def register_template(app: func.FunctionApp, template: Template) -> None:
    name = template.name

    @app.function_name(f"timer_{name}")
    @app.timer_trigger(arg_name="timer", schedule=template.schedule, run_on_startup=False, use_monitor=True)
    def timer_trigger(timer: func.TimerRequest, context: func.Context) -> None:
        run_timer(name, timer, context.invocation_id)

    @app.function_name(f"timer_inbound_{name}")
    @app.timer_trigger(arg_name="timer", schedule=template.reverse_schedule, run_on_startup=False, use_monitor=True)
    def inbound_trigger(timer: func.TimerRequest, context: func.Context) -> None:
        run_inbound(name, timer, context.invocation_id)

    @app.function_name(f"callback_{name}")
    @app.route(route=f"callbacks/{name}", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
    def callback_trigger(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return callback(name, req, context.invocation_id)

    @app.function_name(f"pages_{name}")
    @app.queue_trigger(arg_name="msg", queue_name=pages_binding_queue_name(name), connection=STORAGE_CONNECTION)
    def pages_trigger(msg: func.QueueMessage, context: func.Context) -> None:
        run_page(msg, context.invocation_id)

    @app.function_name(f"worker_{name}")
    @app.queue_trigger(arg_name="msg", queue_name=binding_queue_name(name), connection=STORAGE_CONNECTION)
    def queue_trigger(msg: func.QueueMessage, context: func.Context) -> None:
        work(msg, context.invocation_id)


def register_shared(app: func.FunctionApp) -> None:
    @app.function_name("callback_unknown_template")
    @app.route(route=CALLBACK_ROUTE, methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
    def unknown_template_trigger(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return unknown_template(req, context.invocation_id)

    @app.function_name("timer_retry_parked")
    @app.timer_trigger(arg_name="timer", schedule=RETRY_SCHEDULE, run_on_startup=False, use_monitor=True)
    def retry_trigger(timer: func.TimerRequest, context: func.Context) -> None:
        retry_parked(context.invocation_id)

    # Routes may not start with "admin" (reserved by the Functions host): operator routes live under ops/.
    for action, route, method in (
        ("status", "ops/status", func.HttpMethod.GET),
        ("parked", "ops/parked", func.HttpMethod.GET),
        ("conflicts", "ops/conflicts", func.HttpMethod.GET),
        ("parked_one", "ops/parked/{template}/{key}", func.HttpMethod.GET),
        ("replay", "ops/replay", func.HttpMethod.POST),
        ("pause", "ops/templates/{template}/pause", func.HttpMethod.POST),
        ("resume", "ops/templates/{template}/resume", func.HttpMethod.POST),
    ):
        _register_ops(app, action, route, method)


def _register_ops(app: func.FunctionApp, action: str, route: str, method: func.HttpMethod) -> None:
    @app.function_name(f"ops_{action}")
    @app.route(route=route, methods=[method], auth_level=func.AuthLevel.ADMIN)
    def ops_trigger(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return ops(action, req, context.invocation_id)
