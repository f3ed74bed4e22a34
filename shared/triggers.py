"""Thin Azure Functions triggers, registered by ``function_app.py``.

Per template file: a timer (Commerce -> Dataverse scan), a timer for the other direction (Dataverse
change tracking -> Commerce; an aggregate template, one-way, has its incremental pass instead), a callback route
(validate + enqueue) and a queue-triggered worker.
Once: a 404 for unknown templates, a timer that retries parked records, a timer that starts pending template
refreshes (coalesced scan requests from callbacks) and a timer that samples the backlog
for the telemetry gauges (the operator endpoints under ``/api/ops`` are a Blueprint in ``shared.ops.endpoints``).
Each run, key range and callback is a span (``shared.telemetry.tracing``). The bodies turn a trigger's input into one
call into ``shared.sync`` and its result into a response. No sync logic here.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.mapping.model import Template
from shared.messages import PageTask
from shared.messages.events import WorkItem, work_items
from shared.observability import correlation_scope, log
from shared.runtime import Runtime, get_runtime
from shared.state.queues import QueueKind, binding_queue_name, pages_binding_queue_name
from shared.sync import operations, worker
from shared.sync.aggregate import INCREMENTAL_SCOPE, AggregateSync
from shared.sync.callbacks import (
    SECRET_HEADER,
    SECRET_IN_URL,
    SECRET_QUERY_PARAMETER,
    CallbackAnswer,
    acknowledged,
    handle_callback,
    secret_check,
)
from shared.sync.runs import ALL, DIRECTION_IN, DIRECTION_OUT, is_recorded, record_unscoped_failure, scope_of
from shared.telemetry import metrics, sampling, tracing

logger = logging.getLogger("loyaltysync.triggers")
CALLBACK_ROUTE = "callbacks/{template}"
RETRY_SCHEDULE = "0 */5 * * * *"
REFRESH_SCHEDULE = "15 * * * * *"  # every minute: pending template refreshes that are due start (worker.run_pending_refreshes)
SAMPLE_SCHEDULE = "30 */5 * * * *"  # the telemetry gauges' storage sample, every 5 minutes (off the retry timer's beat)
STORAGE_CONNECTION = "AzureWebJobsStorage"


def _json(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def _answer(answer: CallbackAnswer) -> func.HttpResponse:
    return _json(answer.status, answer.body)


def record_failure(template: str, direction: str, scope: str, what: str, exc: BaseException) -> None:
    """A timer's or queue trigger's failure that no run recorded yet: the scope's row says failed with ``what``
    and the error, so ``status`` and the page show it (the caller raises on: the host logs it, a queue message
    is retried, then poisoned). Storage that cannot be reached records nothing: that is logged."""
    if is_recorded(exc):
        return
    reason = f"{what}: {type(exc).__name__}: {exc}"
    try:
        record_unscoped_failure(get_runtime().state, template, direction, scope, reason, exc)
    except Exception as record_exc:  # storage itself is down (or the app cannot start): the log is all there is
        log(logger, logging.ERROR, "trigger failed and the failure could not be recorded", template=template,
            direction=direction, scope=scope, error=reason, record_error=f"{type(record_exc).__name__}: {record_exc}")
        return
    log(logger, logging.ERROR, "trigger failed; recorded as a failed run", template=template, direction=direction,
        scope=scope, error=reason)


def run_timer(template: str, timer: func.TimerRequest, invocation_id: str) -> None:
    with correlation_scope(invocation_id):
        scope = ALL
        try:
            if timer.past_due:
                log(logger, logging.WARNING, "timer is past due", template=template)
            runtime = get_runtime()
            if worker.is_paused(runtime, template):
                log(logger, logging.INFO, "template paused; timer run skipped", template=template)
                return
            scan = runtime.scan(template)
            for company in scan.scopes(runtime.settings.legal_entities):  # one sync.run span per scope
                scope = scope_of(company)
                with tracing.run_span(template, DIRECTION_OUT, scope, fanned_out=runtime.settings.fan_out):
                    if runtime.settings.fan_out:  # the run goes on in the page workers: the span ends with the planning
                        tracing.annotate_run(status=scan.start(company).status.value)
                    else:
                        scan.run_scope(company)
        except Exception as exc:
            record_failure(template, DIRECTION_OUT, scope, "timer run", exc)
            raise


def _refused(template: str, kind: QueueKind, msg: func.QueueMessage, named: list[str]) -> None:
    """A message on ``template``'s queue that names another template: never run as either. It goes to the queue's
    poison queue unchanged, with its reason in the log."""
    runtime = get_runtime()
    poison = runtime.queues.refuse(template, kind, msg.get_body().decode("utf-8", "replace"))
    log(logger, logging.ERROR, "queue message refused: it names another template than its queue's; moved to the "
        "poison queue", template=template, queue_kind=kind.value, named=",".join(sorted(set(named))),
        message_id=msg.id, poison_queue=poison)
    metrics.record_work_item(template, kind.value, "refused")


def run_page(template: str, msg: func.QueueMessage, invocation_id: str) -> None:
    """One key range, or one delete check, of a fanned-out full scan (a bad message fails here: the host
    retries, then poisons it; one naming another template is refused at once). A failure is recorded on the run's
    scope (the run goes on: its lease is kept and the host delivers the task again)."""
    with correlation_scope(invocation_id):
        task = PageTask.model_validate_json(msg.get_body())
        if task.template != template:
            _refused(template, QueueKind.PAGES, msg, [task.template])
            return
        inbound = task.kind in ("inbound", "inbound_plan")
        try:
            with tracing.range_span(task.template, task.scope, task.run_id, task.index, task.kind) as span:
                span.set_attribute("outcome", worker.run_page_task(get_runtime(), task))
        except Exception as exc:
            record_failure(task.template, DIRECTION_IN if inbound else DIRECTION_OUT, task.scope,
                           f"{task.kind} task {task.index} of run {task.run_id}", exc)
            raise


def run_inbound(template: str, timer: func.TimerRequest, invocation_id: str) -> None:
    with correlation_scope(invocation_id):
        try:
            runtime = get_runtime()
            if not runtime.settings.two_way:
                return
            if worker.is_paused(runtime, template):
                log(logger, logging.INFO, "template paused; inbound run skipped", template=template)
                return
            with tracing.run_span(template, DIRECTION_IN, ALL):
                if runtime.settings.fan_out:  # a baseline's key ranges go to the pages queue
                    runtime.inbound(template).start(runtime.queues.send_page)
                else:
                    runtime.inbound(template).run()
        except Exception as exc:
            record_failure(template, DIRECTION_IN, ALL, "inbound timer run", exc)
            raise


def callback(template: str, req: func.HttpRequest, invocation_id: str) -> func.HttpResponse:
    started = time.monotonic()
    with correlation_scope(invocation_id) as cid, tracing.callback_span(template) as span:
        answer = _callback_answer(template, req, cid)
        acknowledged(template, answer, (time.monotonic() - started) * 1000.0, span)
        return _answer(answer)


def _callback_answer(template: str, req: func.HttpRequest, cid: str) -> CallbackAnswer:
    try:
        runtime = get_runtime()  # a cold start creates the tables and queues (bounded calls: see StateStore)
    except (AzureError, OSError) as exc:
        log(logger, logging.ERROR, "callback not accepted: storage unavailable at start-up", template=template,
            error=f"{type(exc).__name__}: {exc}")
        return CallbackAnswer(503, {"error": "could not queue the event; retry later", "correlation_id": cid})
    secret = runtime.settings.callback_secret
    check = secret_check(secret.get_secret_value() if secret else None, req.headers.get(SECRET_HEADER),
                         req.params.get(SECRET_QUERY_PARAMETER))
    if check is None:
        log(logger, logging.WARNING, "callback refused: missing or wrong shared secret", template=template)
        return CallbackAnswer(401, {"error": f"missing or wrong callback secret (header {SECRET_HEADER})",
                                    "correlation_id": cid})
    return handle_callback(runtime.catalog.plan(template), runtime.queues, req.get_body(), req.headers,
                           secret_in_url=check == SECRET_IN_URL and runtime.settings.callback_secret_in_url != "any",
                           clock=runtime.state.clock)


def work(template: str, msg: func.QueueMessage, invocation_id: str) -> None:
    """The work items of one message of ``template``'s callbacks queue (one item, or a group of callbacks that
    arrived together). A message naming another template (any of its items) is refused whole: its items run as no
    template (``_refused``). An outage raises (the host retries the message, then poisons it) and is recorded on the
    outbound row of the record's scope (``all`` when the item names no key), until a run of that scope succeeds."""
    with correlation_scope(invocation_id):
        scope, what = ALL, "callback work item"
        try:
            runtime = get_runtime()
            items = work_items(msg.get_body())
            others = [item.template for item in items if item.template != template]
            if others:
                _refused(template, QueueKind.CALLBACKS, msg, others)
                return
            for item in items:
                scope, what = _item_scope(runtime, item), f"callback work item {item.event_id or item.key or '-'}"
                worker.process(runtime, item)
        except Exception as exc:
            record_failure(template, DIRECTION_OUT, scope, what, exc)
            raise


def _item_scope(runtime: Runtime, item: WorkItem) -> str:
    try:
        plan = runtime.catalog.plan(item.template)
        return scope_of(plan.company_of(plan.key_of(item.key))) if item.key else ALL
    except Exception:  # a key the plan cannot read: its failure is the item's own
        return ALL


def refresh_pending(invocation_id: str) -> None:
    """Start the templates' pending refreshes that are due (``worker.run_pending_refreshes``)."""
    with correlation_scope(invocation_id):
        worker.run_pending_refreshes(get_runtime())


def unknown_template(req: func.HttpRequest, invocation_id: str) -> func.HttpResponse:
    with correlation_scope(invocation_id) as cid:
        name = req.route_params.get("template", "")
        known = sorted(t.name for t in get_runtime().catalog)
        return _json(404, {"error": f"unknown template {name!r}", "templates": known, "correlation_id": cid})


def retry_parked(invocation_id: str) -> None:
    """The retriable parked records of every template; a template whose retry fails is recorded as a failed
    outbound run (scope ``all``) and the others still run; the timer then fails with the first error."""
    with correlation_scope(invocation_id):
        runtime = get_runtime()
        failures: list[Exception] = []
        for template in [t.name for t in runtime.catalog]:
            try:
                operations.replay(runtime, template, error_classes=operations.RETRIABLE)
            except Exception as exc:
                record_failure(template, DIRECTION_OUT, ALL, "retry of parked records", exc)
                failures.append(exc)
        if failures:
            raise failures[0]


def sample_telemetry(invocation_id: str) -> None:
    """Read the backlog, parked counts and watermark ages once for the telemetry gauges (this instance reports them)."""
    with correlation_scope(invocation_id):
        runtime = get_runtime()
        sampling.sample(runtime.state, runtime.queues, [t.name for t in runtime.catalog])


# -- registration ---------------------------------------------------------------------------------


def run_incremental(template: str, timer: func.TimerRequest, invocation_id: str) -> None:
    """An aggregate template's incremental pass: recent lines and due cards (``AggregateSync.incremental``)."""
    with correlation_scope(invocation_id):
        runtime = get_runtime()
        if worker.is_paused(runtime, template):
            log(logger, logging.INFO, "template paused; incremental pass skipped", template=template)
            return
        engine = runtime.outbound(template)
        assert isinstance(engine, AggregateSync), f"{template} is no aggregate template"
        with tracing.run_span(template, DIRECTION_OUT, INCREMENTAL_SCOPE):
            tracing.annotate_run(status=engine.incremental().status.value)


def register_template(app: func.FunctionApp, template: Template) -> None:
    name = template.name

    @app.function_name(f"timer_{name}")
    @app.timer_trigger(arg_name="timer", schedule=template.schedule, run_on_startup=False, use_monitor=True)
    def timer_trigger(timer: func.TimerRequest, context: func.Context) -> None:
        run_timer(name, timer, context.invocation_id)

    if template.aggregate is not None:  # one-way: no Dataverse -> Commerce timer; an incremental pass instead
        @app.function_name(f"timer_incremental_{name}")
        @app.timer_trigger(arg_name="timer", schedule=template.aggregate.incremental_schedule, run_on_startup=False,
                           use_monitor=True)
        def incremental_trigger(timer: func.TimerRequest, context: func.Context) -> None:
            run_incremental(name, timer, context.invocation_id)
    else:
        @app.function_name(f"timer_inbound_{name}")
        @app.timer_trigger(arg_name="timer", schedule=template.reverse_schedule, run_on_startup=False,
                           use_monitor=True)
        def inbound_trigger(timer: func.TimerRequest, context: func.Context) -> None:
            run_inbound(name, timer, context.invocation_id)

    @app.function_name(f"callback_{name}")
    @app.route(route=f"callbacks/{name}", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
    def callback_trigger(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return callback(name, req, context.invocation_id)

    @app.function_name(f"pages_{name}")
    @app.queue_trigger(arg_name="msg", queue_name=pages_binding_queue_name(name), connection=STORAGE_CONNECTION)
    def pages_trigger(msg: func.QueueMessage, context: func.Context) -> None:
        run_page(name, msg, context.invocation_id)

    @app.function_name(f"worker_{name}")
    @app.queue_trigger(arg_name="msg", queue_name=binding_queue_name(name), connection=STORAGE_CONNECTION)
    def queue_trigger(msg: func.QueueMessage, context: func.Context) -> None:
        work(name, msg, context.invocation_id)


def register_shared(app: func.FunctionApp) -> None:
    @app.function_name("callback_unknown_template")
    @app.route(route=CALLBACK_ROUTE, methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
    def unknown_template_trigger(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return unknown_template(req, context.invocation_id)

    @app.function_name("timer_retry_parked")
    @app.timer_trigger(arg_name="timer", schedule=RETRY_SCHEDULE, run_on_startup=False, use_monitor=True)
    def retry_trigger(timer: func.TimerRequest, context: func.Context) -> None:
        retry_parked(context.invocation_id)

    @app.function_name("timer_refresh_pending")
    @app.timer_trigger(arg_name="timer", schedule=REFRESH_SCHEDULE, run_on_startup=False, use_monitor=True)
    def refresh_trigger(timer: func.TimerRequest, context: func.Context) -> None:
        refresh_pending(context.invocation_id)

    @app.function_name("timer_telemetry_sample")
    @app.timer_trigger(arg_name="timer", schedule=SAMPLE_SCHEDULE, run_on_startup=False, use_monitor=True)
    def sample_trigger(timer: func.TimerRequest, context: func.Context) -> None:
        sample_telemetry(context.invocation_id)
