"""Thin Azure Functions triggers, registered by ``function_app.py``.

Per template file: a timer (Commerce -> Dataverse scan), a timer for the other direction (Dataverse
change tracking -> Commerce), a callback route (validate + enqueue) and a queue-triggered worker.
Once: a 404 for unknown templates and a timer that retries parked records (the operator endpoints under
``/api/ops`` are a Blueprint in ``shared.ops.endpoints``). The bodies turn a trigger's input into one
call into ``shared.sync`` and its result into a response. No sync logic here.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.mapping.model import Template
from shared.messages import PageTask
from shared.messages.events import work_items
from shared.observability import correlation_scope, log
from shared.runtime import get_runtime
from shared.state.queues import binding_queue_name, pages_binding_queue_name
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
        try:
            runtime = get_runtime()  # a cold start creates the tables and queues (bounded calls: see StateStore)
        except (AzureError, OSError) as exc:
            log(logger, logging.ERROR, "callback not accepted: storage unavailable at start-up", template=template,
                error=f"{type(exc).__name__}: {exc}")
            return _json(503, {"error": "could not queue the event; retry later", "correlation_id": cid})
        secret = runtime.settings.callback_secret
        provided = req.headers.get(SECRET_HEADER) or req.params.get("secret")
        if not secret_matches(secret.get_secret_value() if secret else None, provided):
            log(logger, logging.WARNING, "callback refused: missing or wrong shared secret", template=template)
            return _json(401, {"error": f"missing or wrong callback secret ({SECRET_HEADER})", "correlation_id": cid})
        return _answer(handle_callback(runtime.catalog.plan(template), runtime.queues, req.get_body(), runtime.state,
                                       req.headers))


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
