"""The status page (GET /api/ops/dashboard, POST .../actions/<action>) through the real app object, against the
emulators and Azurite: who may see it, cross-site posts refused, what it shows (escaped), what its actions do."""

from __future__ import annotations

import re
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import HttpResponseError

from devtools.functions_host import functions
from shared.runtime import Runtime
from shared.state.queues import QueueKind
from shared.state.store import encode_key
from shared.sync import operations
from tests.e2e.stores import Stores
from tests.shared.ops.dashboard_client import HOST, PAGE, Session, get, post, principal
from tests.shared.ops.poison_queues import poison_as_host
from tests.shared.sync.test_operations import add_currency, park_an_amount_point_in_unknown_currency

ROLE = "LoyaltySync.Operator"
GROUP = "5b6f1c2e-0d4a-4e2b-9a51-2f1d7c3e9b10"
SCRIPT_KEY = "<script>alert(1)</script>"
SCRIPT_REASON = '<img src=x onerror=alert("reason")>'


LOCAL_TOKEN = "a-local-token-of-32-characters-or-more"


@pytest.fixture()
def local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local mode with a known token; the client's requests carry the session cookie of a browser that opened the
    page once with it (``dashboard_client.signed_in``)."""
    monkeypatch.setenv("SYNC_DASHBOARD_AUTH", "local")
    monkeypatch.setenv("SYNC_DASHBOARD_TOKEN", LOCAL_TOKEN)
    monkeypatch.delenv("WEBSITE_SITE_NAME", raising=False)


@pytest.fixture()
def azure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings as the Bicep leaves them in Azure, with App Service Authentication on."""
    monkeypatch.delenv("SYNC_DASHBOARD_AUTH", raising=False)
    monkeypatch.setenv("WEBSITE_SITE_NAME", "loyaltysync-func-abc123")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setenv("SYNC_OPERATORS_ROLE", ROLE)
    monkeypatch.setenv("SYNC_OPERATORS_GROUP_ID", GROUP)


def text(response: func.HttpResponse) -> str:
    return response.get_body().decode()


# -- who may see it ---------------------------------------------------------------------------------------------


def test_the_page_functions_are_anonymous_level_and_the_json_endpoints_keep_the_admin_key() -> None:
    import function_app

    levels = {name: fn.get_trigger().auth_level for name, fn in functions(function_app.app).items()
              if name.startswith(("dashboard", "ops_"))}
    assert {levels["dashboard"], levels["dashboard_action"]} == {func.AuthLevel.ANONYMOUS}
    assert {level for name, level in levels.items() if name.startswith("ops_")} == {func.AuthLevel.ADMIN}


def test_local_mode_serves_the_page_on_a_loopback_host_without_sign_in(runtime: Runtime, local: None) -> None:
    response = get()
    assert response.status_code == 200 and "local operator" in text(response)


def test_local_mode_refuses_a_request_without_its_session_whatever_host_it_names(runtime: Runtime, local: None) -> None:
    """Another machine on the network sends ``Host: localhost:7071``: no session cookie, no page and no action."""
    page = get({"Host": "localhost:7071"}, url="http://localhost:7071/api/ops/dashboard", session=False)
    assert page.status_code == 403
    assert text(page).startswith("forbidden: SYNC_DASHBOARD_AUTH=local needs the token this app printed when it "
                                 "started: open /api/ops/dashboard?token=<token> once")
    action = post("pause", {"template": "loyalty_cards", "csrf": "x" * 43},
                  {"Origin": f"http://{HOST}", "Sec-Fetch-Site": "same-origin", "Cookie": f"ops_csrf={'x' * 43}"},
                  session=False)
    assert action.status_code == 403 and "needs the token" in text(action)
    assert not runtime.state.callbacks.is_paused("loyalty_cards")


def test_the_token_opens_a_session_in_an_httponly_samesite_strict_cookie_and_leaves_the_address_bar(
        runtime: Runtime, local: None) -> None:
    opened = get(url=f"{PAGE}?token={LOCAL_TOKEN}", session=False)
    assert (opened.status_code, opened.headers["Location"]) == (303, "/api/ops/dashboard")
    [cookie] = opened.headers.get_all("Set-Cookie")
    name, _, rest = cookie.partition("=")
    value = rest.split(";")[0]
    assert name == "ops_local" and LOCAL_TOKEN not in cookie
    assert "; HttpOnly" in cookie and "; SameSite=Strict" in cookie and "Path=/api/ops/dashboard" in cookie
    assert get({"Cookie": f"ops_local={value}"}, session=False).status_code == 200


def test_a_wrong_token_opens_nothing(runtime: Runtime, local: None) -> None:
    response = get(url=f"{PAGE}?token={'x' * 40}", session=False)
    assert response.status_code == 403 and response.headers.get_all("Set-Cookie") == []


def test_without_a_token_setting_each_process_makes_one_and_logs_the_url_once(
        runtime: Runtime, local: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from shared.ops import access

    monkeypatch.delenv("SYNC_DASHBOARD_TOKEN")
    monkeypatch.setattr(access, "_made_token", [])
    with caplog.at_level("WARNING", logger="loyaltysync.ops"):
        access.announce_local_token()
        access.announce_local_token()
    [line] = [r.getMessage() for r in caplog.records if "status page in local mode" in r.getMessage()]
    token = re.search(r"token=([\w-]+)", line)
    assert token is not None and len(token.group(1)) >= 32
    opened = get(url=f"{PAGE}?token={token.group(1)}", session=False)
    assert opened.status_code == 303


@pytest.mark.parametrize("value", ["locale", "Easyauth ", "none"])
def test_a_misspelt_auth_setting_is_a_403_naming_the_setting_and_its_values(monkeypatch: pytest.MonkeyPatch,
                                                                             value: str) -> None:
    monkeypatch.setenv("SYNC_DASHBOARD_AUTH", value)
    response = get()
    assert response.status_code == 403
    assert text(response).startswith(f"forbidden: SYNC_DASHBOARD_AUTH is {value!r}: it must be one of easyauth, local")


def test_the_sample_settings_do_not_ship_local_mode() -> None:
    import json
    from pathlib import Path

    sample = json.loads((Path(__file__).resolve().parents[3] / "local.settings.json.sample").read_text())
    assert sample["Values"].get("SYNC_DASHBOARD_AUTH", "easyauth") != "local"


def test_local_mode_is_refused_where_website_site_name_says_azure(local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_SITE_NAME", "loyaltysync-func-abc123")
    response = get()
    assert response.status_code == 403
    assert "SYNC_DASHBOARD_AUTH=local is refused in Azure (WEBSITE_SITE_NAME is set)" in text(response)


def test_local_mode_refuses_a_host_name_that_is_not_loopback(local: None) -> None:
    response = get({"Host": "sync.contoso.com"}, url="http://sync.contoso.com/api/ops/dashboard")
    assert response.status_code == 403 and "loopback addresses only" in text(response)


def test_in_azure_a_request_without_a_principal_is_sent_to_sign_in(azure: None) -> None:
    response = get()
    assert response.status_code == 302
    assert response.headers["Location"] == "/.auth/login/aad?post_login_redirect_url=/api/ops/dashboard"


def test_a_principal_header_is_not_trusted_without_app_service_authentication(
        azure: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED")
    response = get({"X-MS-CLIENT-PRINCIPAL": principal(roles=[ROLE])})
    assert response.status_code == 403 and "WEBSITE_AUTH_ENABLED is not True" in text(response)


def test_a_principal_with_the_operators_app_role_is_served(runtime: Runtime, azure: None) -> None:
    response = get({"X-MS-CLIENT-PRINCIPAL": principal(roles=[ROLE]), "X-MS-CLIENT-PRINCIPAL-NAME": "ann@contoso.com"})
    assert response.status_code == 200 and 'id="operator"><bdi>ann@contoso.com</bdi><' in text(response)


def test_a_member_of_the_operators_group_is_served(runtime: Runtime, azure: None) -> None:
    assert get({"X-MS-CLIENT-PRINCIPAL": principal(groups=[GROUP.upper()])}).status_code == 200


def test_a_signed_in_user_without_the_role_or_the_group_is_refused_naming_both(azure: None) -> None:
    response = get({"X-MS-CLIENT-PRINCIPAL": principal(roles=["Reader"], groups=["another-group"])})
    assert response.status_code == 403
    assert f"the app role '{ROLE}' or membership of the group {GROUP}" in text(response)


def test_with_no_operators_group_or_role_configured_everyone_is_refused(azure: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_OPERATORS_ROLE", "")
    monkeypatch.setenv("SYNC_OPERATORS_GROUP_ID", "")
    response = get({"X-MS-CLIENT-PRINCIPAL": principal(roles=[ROLE])})
    assert response.status_code == 403 and "no operators are configured" in text(response)


def test_a_malformed_principal_header_is_refused(azure: None) -> None:
    response = get({"X-MS-CLIENT-PRINCIPAL": "not base64 json"})
    assert response.status_code == 403 and "not base64 JSON" in text(response)


def test_an_action_is_refused_to_a_user_who_is_not_an_operator(azure: None) -> None:
    response = post("pause", {"template": "loyalty_cards"}, {"X-MS-CLIENT-PRINCIPAL": principal(roles=["Reader"])})
    assert response.status_code == 403 and "not an operator" in text(response)


# -- cross-site posts ----------------------------------------------------------------------------------------------


def test_the_session_token_cookie_is_httponly_samesite_strict_and_secure_over_https(runtime: Runtime,
                                                                                     local: None) -> None:
    [plain] = get().headers.get_all("Set-Cookie")
    assert plain.startswith("ops_csrf=") and "HttpOnly" in plain and "SameSite=Strict" in plain
    assert "Secure" not in plain
    [tls] = get({"X-Forwarded-Proto": "https"}).headers.get_all("Set-Cookie")
    assert tls.endswith("; Secure")


def test_a_post_from_another_origin_is_refused_naming_it(runtime: Runtime, local: None) -> None:
    response = Session().post("pause", {"template": "loyalty_cards"}, headers={"Origin": "https://evil.example",
                                                                                "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 403
    assert text(response) == f"forbidden: cross-origin request refused (Origin https://evil.example is not {HOST})\n"
    assert not runtime.state.callbacks.is_paused("loyalty_cards")


@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site", "none"])
def test_a_post_the_browser_does_not_mark_same_origin_is_refused(runtime: Runtime, local: None, fetch_site: str) -> None:
    """``same-site`` is a sibling subdomain (another app under the same site), ``none`` a request no page made: only
    the page's own origin may post, whatever the Origin header says."""
    response = Session().post("pause", {"template": "loyalty_cards"}, headers={"Sec-Fetch-Site": fetch_site})
    assert response.status_code == 403 and f"Sec-Fetch-Site: {fetch_site}" in text(response)
    assert not runtime.state.callbacks.is_paused("loyalty_cards")


def test_a_post_without_origin_or_sec_fetch_site_is_refused(runtime: Runtime, local: None) -> None:
    session = Session()
    response = post("pause", {"template": "loyalty_cards", "csrf": session.token()},
                    {"Cookie": f"ops_csrf={session.cookies['ops_csrf']}"})
    assert response.status_code == 403 and "neither an Origin nor a Sec-Fetch-Site" in text(response)


def test_a_post_without_the_session_token_is_refused(runtime: Runtime, local: None) -> None:
    session = Session()
    session.get()
    response = session.post("pause", {"template": "loyalty_cards"}, token="")
    assert response.status_code == 403 and "CSRF token missing or not this session's" in text(response)


def test_a_post_with_another_sessions_token_is_refused(runtime: Runtime, local: None) -> None:
    other = Session().token()
    session = Session()
    session.get()
    response = session.post("pause", {"template": "loyalty_cards"}, token=other)
    assert response.status_code == 403 and "CSRF token missing or not this session's" in text(response)


def test_a_post_without_the_session_cookie_is_refused(runtime: Runtime, local: None) -> None:
    session = Session()
    token = session.token()
    session.cookies.clear()
    response = session.post("pause", {"template": "loyalty_cards"}, token=token)
    assert response.status_code == 403 and "CSRF cookie missing" in text(response)


# -- what it shows ---------------------------------------------------------------------------------------------------


def rows(html: str) -> list[tuple[str, str, str]]:
    return re.findall(r'<tr class="status-row[^"]*" data-template="([^"]+)" data-direction="([^"]+)" '
                      r'data-scope="([^"]+)">', html)


def test_there_is_one_row_per_template_direction_and_scope(runtime: Runtime, local: None) -> None:
    runtime.scan("loyalty_levels").run()
    companies = sorted(runtime.settings.legal_entities or ["demf", "usmf", "usrt"])
    listed = rows(Session().html())
    # never-run templates have one row each; the levels one row per company (templates in dependency order)
    assert listed == [("loyalty_cards", "-", "-"), ("loyalty_card_tiers", "-", "-"),
                      *[("loyalty_levels", "fo_to_dataverse", c) for c in companies],
                      ("loyalty_reward_points", "-", "-"), ("loyalty_card_balances", "-", "-")]


def test_a_parked_key_and_reason_are_shown_as_text_never_as_markup(runtime: Runtime, stores: Stores,
                                                                    local: None) -> None:
    runtime.state.parked.park("loyalty_cards", encode_key((SCRIPT_KEY,)), direction="fo_to_dataverse", error_class="validation",
                              error=SCRIPT_REASON, source="scan", correlation_id="c-1")
    html = Session().html()
    assert "<script" not in html and "<img" not in html
    assert "[&quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;]" in html
    assert "&lt;img src=x onerror=alert(&quot;reason&quot;)&gt;" in html


def test_a_paused_template_shows_who_paused_it_and_why(runtime: Runtime, local: None) -> None:
    runtime.state.callbacks.set_paused("loyalty_cards", True, by="auto-pause",
                                       reason="120 failures in 15 min; last: <b>503</b>")
    html = Session().html()
    assert '<div class="why pause-by">by <bdi>auto-pause</bdi> at 20' in html
    assert '<div class="why pause-reason"><bdi>120 failures in 15 min; last: &lt;b&gt;503&lt;/b&gt;</bdi></div>' in html


RTL_OVERRIDE = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: without isolation, the text after it on the line reads reversed


def test_free_text_is_shown_isolated_so_a_bidi_override_reorders_only_itself(runtime: Runtime, local: None) -> None:
    runtime.state.callbacks.set_paused("loyalty_cards", True, by=f"ops{RTL_OVERRIDE}", reason=f"why{RTL_OVERRIDE}")
    runtime.state.parked.park("loyalty_cards", encode_key((f"LC{RTL_OVERRIDE}1",)), direction="fo_to_dataverse",
                              error_class="validation", error=f"bad{RTL_OVERRIDE}value", source="scan",
                              correlation_id="c-1")
    html = Session().html()
    shown = re.findall(f"[^<>]*{RTL_OVERRIDE}[^<>]*", html)
    assert len(shown) == 3  # who, why and the error (the parked key is shown as JSON: \u202e, escaped)
    for text in shown:  # each piece of text holding the override is the whole content of a <bdi>
        assert f"<bdi>{text}</bdi>" in html, text
    assert "bdi{unicode-bidi:isolate}" in html


def test_a_failed_run_shows_its_reason_and_time(runtime: Runtime, stores: Stores, local: None) -> None:
    mark = runtime.state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    mark.last_status, mark.last_error, mark.last_failed_at = "failed", "Commerce answered 503", "2026-11-30T10:00:00+00:00"
    runtime.state.watermarks.save(mark)
    html = Session().html()
    assert '<span class="badge failed">failed</span>' in html
    assert "Commerce answered 503</bdi> <span class=\"at\">at 2026-11-30 10:00:00</span>" in html


def test_held_deletes_are_shown_with_the_run_that_held_them_and_how_to_approve_them(runtime: Runtime, local: None) -> None:
    mark = runtime.state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    mark.last_status, mark.held_deletes, mark.held_states, mark.held_run = "deletes_held", 700, 1000, "run-7"
    runtime.state.watermarks.save(mark)
    html = Session().html()
    assert "700 deletes of 1000 records held by run run-7" in html
    assert "approve: python -m shared.cli approve-deletes loyalty_cards</div>" in html


def test_parked_records_are_counted_by_error_class_on_their_row(runtime: Runtime, stores: Stores,
                                                                 local: None) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    html = Session().html()
    row = html[html.index('data-template="loyalty_reward_points" data-direction="fo_to_dataverse"'):]
    assert '<div class="parked-class"><b>1</b> lookup_missing</div>' in row[:row.index("</tr>")]


def test_poison_messages_are_counted_and_listed_with_their_body(runtime: Runtime, local: None) -> None:
    message_id = poison_as_host(runtime.queues, "loyalty_cards", QueueKind.CALLBACKS, {"key": "<LC-1>"})
    html = Session().html()
    assert 'poison <b class="poison">1</b>' in html and f'data-id="{message_id}"' in html
    assert "{&quot;key&quot;: &quot;&lt;LC-1&gt;&quot;}" in html


def test_the_page_runs_no_script_and_loads_nothing_from_elsewhere(runtime: Runtime, local: None) -> None:
    response = Session().get()
    html = text(response)
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


# -- what its actions do -------------------------------------------------------------------------------------------


def test_pause_records_the_operator_and_reason_and_redirects_back_with_a_message(runtime: Runtime,
                                                                                 local: None) -> None:
    session = Session()
    response = session.post("pause", {"template": "loyalty_cards", "reason": "Commerce upgrade tonight"})
    assert (response.status_code, response.headers["Location"]) == (303, "/api/ops/dashboard")
    record = runtime.state.callbacks.pause_record("loyalty_cards")
    assert record is not None and record["paused"]
    assert (record["changed_by"], record["reason"]) == ("local operator (status page)", "Commerce upgrade tonight")
    assert "loyalty_cards paused: its timers skip it and its callbacks are held" in session.html()


def test_the_message_after_an_action_is_shown_once(runtime: Runtime, local: None) -> None:
    session = Session()
    session.post("pause", {"template": "loyalty_cards"})
    assert 'id="flash"' in session.html()
    assert 'id="flash"' not in session.html()


def test_resume_puts_held_callbacks_back_on_the_queue(runtime: Runtime, local: None) -> None:
    operations.pause(runtime, "loyalty_cards", by="test")
    runtime.state.callbacks.hold("loyalty_cards", "0001", '{"template": "loyalty_cards", "key": {"CardNumber": '
                                 '"LC-1"}, "received_at": "2026-01-01T00:00:00+00:00"}')
    session = Session()
    session.post("resume", {"template": "loyalty_cards"})
    assert not runtime.state.callbacks.is_paused("loyalty_cards")
    assert runtime.queues.backlog("loyalty_cards")["callbacks"]["queued"] == 1
    assert "loyalty_cards resumed; 1 held callbacks back on the queue" in session.html()


def test_resume_of_a_template_paused_by_the_setting_says_it_stays_paused(runtime: Runtime, local: None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.configured import runtime_with

    runtime_with(monkeypatch, SYNC_PAUSED_TEMPLATES="loyalty_cards")
    session = Session()
    session.post("resume", {"template": "loyalty_cards"})
    assert "loyalty_cards stays paused: the app setting SYNC_PAUSED_TEMPLATES lists it" in session.html()


def test_replay_of_one_parked_record_lands_it(runtime: Runtime, stores: Stores, local: None) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    add_currency(stores, "XTS")
    session = Session()
    session.post("replay", {"template": "loyalty_reward_points", "row_key": "XTS-AMOUNT"})
    assert list(runtime.state.parked.all("loyalty_reward_points")) == []
    assert "loyalty_reward_points: replayed 1 parked: 1 written" in session.html()


def test_requeue_poison_puts_the_message_back_on_its_queue(runtime: Runtime, local: None) -> None:
    message_id = poison_as_host(runtime.queues, "loyalty_cards", QueueKind.PAGES, {"n": 1})
    session = Session()
    session.post("requeue-poison", {"template": "loyalty_cards", "message_id": message_id, "kind": "pages"})
    assert runtime.queues.backlog("loyalty_cards")["pages"] == {"queued": 1, "poison": 0}
    assert "loyalty_cards: 1 poison message requeued" in session.html()


def test_an_action_on_an_unknown_template_is_a_400(runtime: Runtime, local: None) -> None:
    response = Session().post("pause", {"template": "nope"})
    assert response.status_code == 400 and "unknown template 'nope'" in text(response)


def test_a_replay_refused_again_says_why_on_the_page(runtime: Runtime, stores: Stores, local: None) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)  # the currency is still missing
    session = Session()
    session.post("replay", {"template": "loyalty_reward_points", "row_key": "XTS-AMOUNT"})
    assert ("loyalty_reward_points: replayed 1 parked: 1 parked; XTS-AMOUNT still refused: Couldn&#x27;t resolve the "
            "guid for the field: isocurrencycode") in session.html()


# -- a part that cannot be read ----------------------------------------------------------------------------------


def refused(error: Exception) -> Any:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    return fail


def test_a_poison_queue_that_cannot_be_peeked_shows_its_error_in_place_and_the_rest_renders(
        runtime: Runtime, local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.queues, "peek_poison", refused(HttpResponseError("peek refused: 503 ServerBusy")))
    response = get()
    assert response.status_code == 200
    html = text(response)
    assert 'data-section="loyalty_cards.poison"' in html and "peek refused: 503 ServerBusy" in html
    assert html.count('class="status-row') >= 3 and 'id="no-parked"' in html


def test_a_throttled_table_shows_its_error_in_place_and_the_rest_renders(runtime: Runtime, local: None,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    busy = HttpResponseError("The server is busy. ErrorCode:ServerBusy")
    monkeypatch.setattr(runtime.state.parked, "all", refused(busy))
    monkeypatch.setattr(runtime.state.conflicts, "all", refused(busy))
    html = text(get())
    assert 'data-section="parked"' in html and 'data-section="conflicts"' in html and "ServerBusy" in html
    assert html.count('class="status-row') >= 3 and 'id="no-poison"' in html
