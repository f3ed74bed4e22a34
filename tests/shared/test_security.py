"""Security: the optional callback secret, and no secret or token in any log line."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import azure.functions as func
import pytest

from devtools.azurite import ACCOUNT_KEY
from devtools.functions_host import QueuePump, invoke_http
from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings
from tests.builders import as_body, business_event
from tests.data_events import card_created, webhook_request
from tests.e2e.stores import Stores

TOKEN = f"token-{uuid.uuid4().hex}"
CALLBACK_SECRET = f"cb-secret-{uuid.uuid4().hex}"


@pytest.fixture()
def secured(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("SYNC_STATIC_TOKEN", TOKEN)
    monkeypatch.setenv("SYNC_CALLBACK_SECRET", CALLBACK_SECRET)
    get_settings.cache_clear()
    get_runtime.cache_clear()
    yield get_runtime()


def callback(card: str, *, headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> int:
    import function_app

    req = func.HttpRequest("POST", "http://localhost/api/callbacks/loyalty_cards", headers=headers or {},
                           params=params or {}, body=as_body(business_event(CardNumber=card)))
    return invoke_http(function_app.app, "callback_loyalty_cards", req).status_code


def test_without_the_secret_a_callback_is_refused(secured: Runtime, stores: Stores) -> None:
    assert callback("LC-1") == 401


def test_a_wrong_secret_is_refused(secured: Runtime) -> None:
    assert callback("LC-1", headers={"x-loyaltysync-secret": "guess"}) == 401


def test_the_secret_in_the_header_is_accepted(secured: Runtime) -> None:
    assert callback("LC-1", headers={"x-loyaltysync-secret": CALLBACK_SECRET}) == 202


def test_the_secret_as_a_query_parameter_is_accepted(secured: Runtime) -> None:
    assert callback("LC-1", params={"secret": CALLBACK_SECRET}) == 202


def data_event_callback(card: str, *, headers: dict[str, str] | None = None,
                        params: dict[str, str] | None = None) -> tuple[int, str]:
    """A data event as a Dataverse webhook posts it (docs/protocol-notes.md §4.5: HttpHeader authentication sends
    ``x-functions-key`` and the secret header; HttpQueryString puts the secret in the URL)."""
    import function_app

    base = webhook_request("loyalty_cards", as_body(card_created(card)), {"x-functions-key": "host-key", **(headers or {})})
    req = func.HttpRequest("POST", base.url, headers=dict(base.headers), params=params or {}, body=base.get_body())
    response = invoke_http(function_app.app, "callback_loyalty_cards", req)
    return response.status_code, response.get_body().decode()


def test_a_data_event_with_the_secret_in_the_header_is_accepted(secured: Runtime) -> None:
    assert data_event_callback("LC-1", headers={"x-loyaltysync-secret": CALLBACK_SECRET})[0] == 202


def test_a_data_event_with_a_wrong_secret_header_is_refused(secured: Runtime) -> None:
    assert data_event_callback("LC-1", headers={"x-loyaltysync-secret": "guess"})[0] == 401


def test_a_data_event_with_the_secret_only_in_the_url_is_refused_naming_the_header(secured: Runtime) -> None:
    """The URL form leaves the secret in every proxy log and registration next to the function key: a Dataverse
    webhook can send headers, so a data event must use the header."""
    status, body = data_event_callback("LC-1", params={"secret": CALLBACK_SECRET})
    assert status == 401 and "x-loyaltysync-secret header" in body
    assert secured.queues.client("loyalty_cards").get_queue_properties().approximate_message_count == 0


def test_sync_callback_secret_in_url_any_lets_a_data_event_carry_the_secret_in_the_url(
        secured: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """For a data-event webhook that can carry only its URL (an F&O HTTPS endpoint synced to Dataverse)."""
    monkeypatch.setattr(secured.settings, "callback_secret_in_url", "any")
    assert data_event_callback("LC-1", params={"secret": CALLBACK_SECRET})[0] == 202
    assert data_event_callback("LC-1", params={"secret": "guess"})[0] == 401


def test_a_wrong_secret_header_is_refused_even_with_the_right_secret_in_the_url(secured: Runtime) -> None:
    assert callback("LC-1", headers={"x-loyaltysync-secret": "guess"}, params={"secret": CALLBACK_SECRET}) == 401


def test_the_right_secret_header_is_accepted_whatever_the_url_holds(secured: Runtime) -> None:
    assert callback("LC-1", headers={"x-loyaltysync-secret": CALLBACK_SECRET}, params={"secret": "stale"}) == 202


def test_the_secret_is_compared_in_constant_time() -> None:
    """Both forms go through ``hmac.compare_digest`` (a timing-safe comparison), never ``==``."""
    import hmac
    from unittest import mock

    from shared.sync.callbacks import SECRET_IN_HEADER, SECRET_IN_URL, secret_check

    with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        assert secret_check("s3cret", "s3cret", None) == SECRET_IN_HEADER
        assert secret_check("s3cret", None, "s3cret") == SECRET_IN_URL
        assert secret_check("s3cret", None, "guess") is None
    assert compare.call_count == 3


def test_no_secret_or_token_appears_in_the_logs(secured: Runtime, stores: Stores, pump: QueuePump,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the Azure SDK's and urllib3's included
    stores.create_in_commerce("RetailLoyaltyRewardPoints", {
        "RewardPointId": "XTS-AMOUNT", "RewardPointType": "Amount", "RewardPointCurrency": "XTS", "Redeemable": "Yes",
        "RedeemRanking": 1, "ExpirationTimeValue": 0, "ExpirationTimeUnit": "Day", "VestingTimeValue": 0,
        "VestingTimeUnit": "Day", "MaximumLoyaltyRewardPoints": 0})
    secured.scan("loyalty_reward_points").run()  # includes a parked failure
    card = str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])
    callback(card, headers={"x-loyaltysync-secret": CALLBACK_SECRET})
    callback(card, headers={"x-loyaltysync-secret": "wrong"})
    assert pump.drain() == 1  # the refused callback queued nothing
    text = caplog.text + "".join(str(getattr(r, "sync", "")) for r in caplog.records)
    assert len(caplog.records) > 20  # the scan saw a real run's worth of logging
    for secret in (TOKEN, CALLBACK_SECRET, ACCOUNT_KEY):
        assert secret not in text
