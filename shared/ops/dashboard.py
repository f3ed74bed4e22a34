"""The status page: ``GET /api/ops/dashboard`` and its actions, ``POST /api/ops/dashboard/actions/<action>``.

Both are anonymous-level functions (no function key in a browser's URL): ``shared.ops.access`` decides who
may use them (Easy Auth's principal and the operators' group or role in Azure; ``SYNC_DASHBOARD_AUTH=local`` on
a loopback address locally) and refuses cross-site posts. The page reads everything through
``queries.overview`` and is rendered by ``shared.ops.page``. An action answers 303 back to the page, with its
outcome in a short-lived cookie shown once (a flash message): reload-safe, no resubmission.

Actions (form fields besides the session's ``csrf`` token):

- ``replay``: ``template``, and ``row_key`` (one parked record) or nothing (all of the template's);
- ``pause`` (``template``, ``reason`` optional) and ``resume`` (``template``: held callbacks go back to the
  queue; a template paused by ``SYNC_PAUSED_TEMPLATES`` stays paused, and the message says so);
- ``requeue-poison``: ``template``, and ``message_id`` (with ``kind``) or nothing (all of the template's).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.observability import correlation_scope, log
from shared.ops import access, page, queries
from shared.ops.access import Denied, Operator
from shared.runtime import Runtime, get_runtime
from shared.state.queues import QueueKind
from shared.sync import operations
from shared.sync.runs import Outcome

logger = logging.getLogger("loyaltysync.ops")

PAGE_PATH = "/api/ops/dashboard"
FLASH_COOKIE = "ops_flash"
FLASH_SECONDS = 60
MAX_FORM_BYTES = 8192
# No script runs on the page (none is needed), nothing is loaded from elsewhere, forms post only to this app,
# and no other site may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ActionForm(BaseModel):
    """A posted action's fields (unknown ones are refused)."""

    model_config = ConfigDict(extra="forbid")
    csrf: str = Field(max_length=200)
    template: str = Field(max_length=100)
    row_key: str | None = Field(default=None, max_length=1024)
    reason: str = Field(default="", max_length=300)
    message_id: str | None = Field(default=None, max_length=100)
    kind: QueueKind | None = None


Action = Callable[[Runtime, ActionForm, Operator], page.Flash]


def register(bp: func.Blueprint) -> None:
    """Add the page's two functions to the ``/api/ops`` Blueprint."""

    @bp.function_name("dashboard")
    @bp.route(route="ops/dashboard", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.ANONYMOUS)
    def dashboard(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        with correlation_scope(context.invocation_id):
            return show(req)

    @bp.function_name("dashboard_action")
    @bp.route(route="ops/dashboard/actions/{action}", methods=[func.HttpMethod.POST],
              auth_level=func.AuthLevel.ANONYMOUS)
    def dashboard_action(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        with correlation_scope(context.invocation_id):
            return act(req)


def _text(status: int, text: str) -> func.HttpResponse:
    return func.HttpResponse(text + "\n", status_code=status, mimetype="text/plain", headers=dict(SECURITY_HEADERS))


def _denied(req: func.HttpRequest, denied: Denied) -> func.HttpResponse:
    if denied.login and req.method.upper() == "GET":
        return func.HttpResponse("", status_code=302, headers={"Location": denied.login, **SECURITY_HEADERS})
    log(logger, logging.WARNING, "status page refused", reason=denied.reason)
    return _text(403, f"forbidden: {denied.reason}")


def show(req: func.HttpRequest) -> func.HttpResponse:
    try:
        who = access.operator(req)
    except Denied as denied:
        return _denied(req, denied)
    token, new = access.session_token(req)
    flash = read_flash(req)
    html = page.render(queries.overview(get_runtime()), who.name, token, flash, local=who.local)
    response = func.HttpResponse(html, status_code=200, mimetype="text/html", charset="utf-8",
                                 headers=dict(SECURITY_HEADERS))
    if new:
        response.headers.add("Set-Cookie", access.cookie(access.CSRF_COOKIE, token, req))
    if flash is not None:
        response.headers.add("Set-Cookie", access.cookie(FLASH_COOKIE, "", req, max_age=0))
    return response


def act(req: func.HttpRequest) -> func.HttpResponse:
    try:
        who = access.operator(req)
    except Denied as denied:
        return _denied(req, denied)
    body = req.get_body() or b""
    if len(body) > MAX_FORM_BYTES:
        return _text(413, "form too large")
    fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    problem = access.cross_site_problem(req, fields.get(access.CSRF_FIELD))
    if problem is not None:
        log(logger, logging.WARNING, "status page action refused", reason=problem)
        return _text(403, f"forbidden: {problem}")
    action = ACTIONS.get(req.route_params.get("action", ""))
    if action is None:
        return _text(404, f"unknown action; one of: {', '.join(sorted(ACTIONS))}")
    try:
        form = ActionForm.model_validate({k: v for k, v in fields.items() if v != "" or k == "reason"})
    except ValidationError as exc:
        problem_field = ".".join(str(p) for p in exc.errors()[0]["loc"])
        return _text(400, f"bad form: {problem_field}: {exc.errors()[0]['msg']}")
    runtime = get_runtime()
    if not queries.is_known(runtime, form.template):
        return _text(400, f"unknown template {form.template!r}")
    flash = action(runtime, form, who)
    log(logger, logging.WARNING, "status page action", action=req.route_params.get("action"), template=form.template,
        by=who.name, outcome=flash.text)
    response = func.HttpResponse("", status_code=303, headers={"Location": PAGE_PATH, **SECURITY_HEADERS})
    response.headers.add("Set-Cookie", access.cookie(FLASH_COOKIE, encode_flash(flash), req, max_age=FLASH_SECONDS))
    return response


# -- the flash message: the outcome of the last action, carried over the redirect ---------------------------


def encode_flash(flash: page.Flash) -> str:
    raw = json.dumps({"ok": flash.ok, "text": flash.text[:500]}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_flash(req: func.HttpRequest) -> page.Flash | None:
    value = access.read_cookie(req, FLASH_COOKIE)
    if not value:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return page.Flash(bool(data["ok"]), str(data["text"])[:500])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None


# -- the actions -------------------------------------------------------------------------------------------------


def _by(who: Operator) -> str:
    return f"{who.name} (status page)"


def replay(runtime: Runtime, form: ActionForm, who: Operator) -> page.Flash:
    results = operations.replay(runtime, form.template, [form.row_key] if form.row_key else None)
    if not results:
        return page.Flash(False, f"{form.template}: nothing parked to replay (replayed already?)")
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    told = ", ".join(f"{n} {outcome.replace('_', ' ')}" for outcome, n in outcomes.items())
    refused = [r for r in results if r.outcome == Outcome.PARKED]
    why = f"; {refused[0].key} {refused[0].detail}" if refused else ""  # the first one's reason (all: the list)
    return page.Flash(not refused, f"{form.template}: replayed {len(results)} parked: {told}{why}")


def pause(runtime: Runtime, form: ActionForm, who: Operator) -> page.Flash:
    runtime.state.callbacks.set_paused(form.template, True, by=_by(who), reason=form.reason.strip())
    log(logger, logging.WARNING, "template paused; callbacks are queued and held", template=form.template,
        by=_by(who), reason=form.reason)
    return page.Flash(True, f"{form.template} paused: its timers skip it and its callbacks are held")


def resume(runtime: Runtime, form: ActionForm, who: Operator) -> page.Flash:
    state = queries.pause_state(runtime, form.template)
    if state.by_setting:
        if state.by_command:
            runtime.state.callbacks.set_paused(form.template, False, by=_by(who))
        return page.Flash(False, f"{form.template} stays paused: the app setting {queries.PAUSE_SETTING} lists it; "
                                 "remove it from that setting to resume (held callbacks stay held until then)")
    requeued = operations.resume(runtime, form.template, by=_by(who))
    return page.Flash(True, f"{form.template} resumed; {requeued} held callbacks back on the queue")


def requeue_poison(runtime: Runtime, form: ActionForm, who: Operator) -> page.Flash:
    ids = [form.message_id] if form.message_id else None
    results = queries.requeue_poison(runtime, form.template, ids, form.kind.value if form.kind else None)
    requeued = [r for r in results if r.outcome == "requeued"]
    if ids and not requeued:
        return page.Flash(False, f"{form.template}: message {form.message_id} is not in the poison queue (any more)")
    return page.Flash(True, f"{form.template}: {len(requeued)} poison message{'s' if len(requeued) != 1 else ''} "
                            "requeued")


ACTIONS: dict[str, Action] = {"replay": replay, "pause": pause, "resume": resume, "requeue-poison": requeue_poison}
