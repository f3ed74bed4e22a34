"""Thin Azure Functions triggers: one timer and one callback route per template file.

``function_app.py`` calls ``register_template`` for every file in ``mappings/``; the bodies here turn
a trigger's input into a call to the engine and its answer into an HTTP response. No sync logic.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.mapping.model import Template
from shared.observability import correlation_scope, log
from shared.runtime import get_runtime
from shared.sync.callbacks import CallbackAnswer, handle_callback

logger = logging.getLogger("loyaltysync.triggers")
CALLBACK_ROUTE = "callbacks/{template}"


def _json(answer: CallbackAnswer) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(answer.body), status_code=answer.status, mimetype="application/json")


def run_timer(template: str, timer: func.TimerRequest, invocation_id: str) -> None:
    with correlation_scope(invocation_id):
        if timer.past_due:
            log(logger, logging.WARNING, "timer is past due", template=template)
        runtime = get_runtime()
        runtime.outbound(template).run(runtime.settings.legal_entities)


def callback(template: str, req: func.HttpRequest, invocation_id: str) -> func.HttpResponse:
    with correlation_scope(invocation_id):
        runtime = get_runtime()
        engine = runtime.outbound(template)
        return _json(handle_callback(engine, req.get_body(), budget_s=runtime.settings.callback_budget_s))


def unknown_template(req: func.HttpRequest, invocation_id: str) -> func.HttpResponse:
    with correlation_scope(invocation_id) as cid:
        name = req.route_params.get("template", "")
        known = sorted(t.name for t in get_runtime().catalog)
        body = {"error": f"unknown template {name!r}", "templates": known, "correlation_id": cid}
        return func.HttpResponse(json.dumps(body), status_code=404, mimetype="application/json")


def register_template(app: func.FunctionApp, template: Template) -> None:
    name = template.name

    @app.function_name(f"timer_{name}")
    @app.timer_trigger(arg_name="timer", schedule=template.schedule, run_on_startup=False, use_monitor=True)
    def timer_trigger(timer: func.TimerRequest, context: func.Context) -> None:
        run_timer(name, timer, context.invocation_id)

    @app.function_name(f"callback_{name}")
    @app.route(route=f"callbacks/{name}", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
    def callback_trigger(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return callback(name, req, context.invocation_id)


def register_fallbacks(app: func.FunctionApp) -> None:
    @app.function_name("callback_unknown_template")
    @app.route(route=CALLBACK_ROUTE, methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
    def unknown_template_trigger(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return unknown_template(req, context.invocation_id)
