"""The HTTP core: tokens, correlation ids, retries within a budget, typed OData errors, paging."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared.http import (
    AuthError,
    BadRequestError,
    CredentialError,
    HttpCore,
    NotFoundError,
    RetryPolicy,
    ServerError,
    ThrottledError,
    TransportError,
)
from shared.http.core import Timeouts, encode_query
from shared.http.urls import key_segment
from tests.scripted_server import Answer, ScriptedServer


class CountingCredential:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken(f"token-{len(self.calls)}", 2**31)


class FailingCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ClientAuthenticationError(message="AADSTS700016: application not found")


@pytest.fixture()
def sleeps() -> list[float]:
    return []


def core_for(server: ScriptedServer, sleeps: list[float], credential: Any = None, **retry: Any) -> HttpCore:
    return HttpCore(server.url, credential or CountingCredential(), "https://org.crm.dynamics.com/.default",
                    service="test", retry=RetryPolicy(**{"max_attempts": 4, "budget_s": 60, **retry}),
                    timeouts=Timeouts(1, 2), sleep=sleeps.append)


def dataverse_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def test_every_attempt_asks_the_credential_for_a_token(server: ScriptedServer, sleeps: list[float]) -> None:
    credential = CountingCredential()
    server.script(Answer(503), Answer(204))
    core_for(server, sleeps, credential).request("PATCH", "x")
    assert credential.calls == [("https://org.crm.dynamics.com/.default",)] * 2
    assert [r.headers["Authorization"] for r in server.requests] == ["Bearer token-1", "Bearer token-2"]


def test_requests_carry_a_client_request_id_and_user_agent(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Answer(204))
    core_for(server, sleeps).request("GET", "x")
    headers = server.requests[0].headers
    assert len(headers["x-ms-client-request-id"]) == 36
    assert headers["User-Agent"].startswith("loyalty-sync/")


def test_429_waits_exactly_retry_after(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Answer(429, dataverse_error("0x80072322", "Number of requests exceeded the limit"),
                         {"Retry-After": "7"}), Answer(204))
    core_for(server, sleeps).request("PATCH", "x")
    assert sleeps == [pytest.approx(7.0, abs=0.05)]


def test_a_429_holds_the_identitys_next_request_until_retry_after(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Answer(429, dataverse_error("0x80072321", "Combined execution time of incoming requests exceeded"),
                         {"Retry-After": "5"}), Answer(204), Answer(204))
    core = core_for(server, sleeps)
    core.request("PATCH", "x")

    core.request("PATCH", "y")  # the fake sleep does not advance the clock: the identity is still held

    assert sleeps == [pytest.approx(5.0, abs=0.05), pytest.approx(5.0, abs=0.05)]
    assert len(server.requests) == 3


def test_503_backs_off_exponentially(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Answer(503), Answer(503), Answer(204))
    core_for(server, sleeps, backoff_base_s=1.0).request("GET", "x")
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_a_wait_beyond_the_budget_raises_throttled_with_retry_after(server: ScriptedServer,
                                                                   sleeps: list[float]) -> None:
    server.script(Answer(429, dataverse_error("0x80072321", "Combined execution time"), {"Retry-After": "300"}))
    with pytest.raises(ThrottledError) as caught:
        core_for(server, sleeps, budget_s=60).request("GET", "x")
    assert caught.value.retry_after == 300 and sleeps == []


def test_attempts_are_bounded(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(*[Answer(503)] * 5)
    with pytest.raises(ServerError):
        core_for(server, sleeps, max_attempts=3).request("GET", "x")
    assert len(server.requests) == 3


def test_a_post_is_not_retried_after_a_gateway_error(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Answer(502, raw=b"<html>Bad Gateway</html>"), Answer(204))
    with pytest.raises(ServerError, match="Bad Gateway"):
        core_for(server, sleeps).request("POST", "x", json={})
    assert len(server.requests) == 1


LOST_ANSWERS = [Answer(204, drop=True), Answer(204, delay_s=1.0)]


@pytest.mark.parametrize("lost", LOST_ANSWERS, ids=["connection dropped after the request", "read timeout"])
def test_a_post_whose_answer_was_lost_is_not_sent_again(server: ScriptedServer, sleeps: list[float],
                                                        lost: Answer) -> None:
    server.script(lost, Answer(201))
    with pytest.raises(TransportError):
        core_for(server, sleeps).request("POST", "x", json={}, read_timeout_s=0.3)
    assert len(server.requests) == 1  # it may have been applied: a second POST could create a second row


@pytest.mark.parametrize("lost", LOST_ANSWERS, ids=["connection dropped after the request", "read timeout"])
def test_a_patch_whose_answer_was_lost_is_sent_again(server: ScriptedServer, sleeps: list[float],
                                                     lost: Answer) -> None:
    server.script(lost, Answer(204))
    core_for(server, sleeps).request("PATCH", "x", json={}, read_timeout_s=0.3)
    assert len(server.requests) == 2


@pytest.mark.parametrize(("status", "error_type"), [(400, BadRequestError), (401, AuthError), (403, AuthError),
                                                     (404, NotFoundError)])
def test_client_errors_are_typed_and_not_retried(server: ScriptedServer, sleeps: list[float], status: int,
                                                 error_type: type[Exception]) -> None:
    server.script(Answer(status, dataverse_error("0x80044331", "A validation error occurred.")))
    with pytest.raises(error_type) as caught:
        core_for(server, sleeps).request("PATCH", "x", json={})
    assert caught.value.code == "0x80044331" and len(server.requests) == 1


def test_the_infolog_in_innererror_is_the_reason(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Answer(400, {"error": {"code": "", "message": "An error has occurred.", "innererror": {
        "message": "Write failed for table row of type 'RetailLoyaltyCardEntity'. Infolog: Error: Card exists."}}}))
    with pytest.raises(BadRequestError) as caught:
        core_for(server, sleeps).request("POST", "data/RetailLoyaltyCards", json={})
    assert caught.value.reason.startswith("Write failed for table row of type 'RetailLoyaltyCardEntity'")


def test_a_credential_failure_is_a_configuration_error(server: ScriptedServer, sleeps: list[float]) -> None:
    with pytest.raises(CredentialError, match="AADSTS700016"):
        core_for(server, sleeps, FailingCredential()).request("GET", "x")
    assert server.requests == []


def test_a_refused_connection_is_a_transport_error(sleeps: list[float]) -> None:
    dead = ScriptedServer()
    dead.stop()
    with pytest.raises(TransportError):
        core_for(dead, sleeps, max_attempts=2).request("GET", "x")


def test_paging_follows_next_link_verbatim_with_the_same_headers(server: ScriptedServer, sleeps: list[float]) -> None:
    next_link = f"{server.url}/set?$select=a&$skiptoken=%3Ccookie%20pagenumber=%222%22%20/%3E"
    server.script(Answer(200, {"value": [{"a": 1}], "@odata.nextLink": next_link}), Answer(200, {"value": [{"a": 2}]}))
    pages = list(core_for(server, sleeps).iter_pages("set", params={"$select": "a"},
                                                     headers={"Prefer": "odata.maxpagesize=1"}))
    assert pages == [[{"a": 1}], [{"a": 2}]]
    assert server.requests[1].path == "/set?$select=a&$skiptoken=%3Ccookie%20pagenumber=%222%22%20/%3E"
    assert server.requests[1].headers["Prefer"] == "odata.maxpagesize=1"


def test_a_repeated_next_link_stops_paging(server: ScriptedServer, sleeps: list[float]) -> None:
    loop = {"value": [], "@odata.nextLink": f"{server.url}/set?$skiptoken=1"}
    server.script(Answer(200, loop), Answer(200, loop))
    with pytest.raises(Exception, match="repeated a nextLink"):
        list(core_for(server, sleeps).iter_pages("set"))


def test_query_values_are_percent_encoded_for_odata() -> None:
    assert encode_query({"$filter": "name eq 'a b&c#d+e%'"}) == "$filter=name%20eq%20'a%20b%26c%23d%2Be%25'"


def test_key_segments_double_quotes_and_encode_slashes() -> None:
    assert key_segment("RetailLoyaltyCards", {"CardNumber": "O'Brien/1#"}, named=False) == "RetailLoyaltyCards('O''Brien%2F1%23')"


def test_iter_bodies_yields_whole_bodies_up_to_the_one_without_a_next_link(server: ScriptedServer,
                                                                          sleeps: list[float]) -> None:
    server.script(Answer(200, {"value": [1], "@odata.count": 2, "@odata.nextLink": f"{server.url}/set?$skiptoken=1"}),
                  Answer(200, {"value": [2], "@odata.deltaLink": "delta"}))
    bodies = list(core_for(server, sleeps).iter_bodies("set", params={"$select": "a"}, headers={"Prefer": "p"}))
    assert [(b["value"], b.get("@odata.deltaLink")) for b in bodies] == [([1], None), ([2], "delta")]
    assert [r.path for r in server.requests] == ["/set?$select=a", "/set?$skiptoken=1"]
    assert [r.headers["Prefer"] for r in server.requests] == ["p", "p"]


def test_on_first_sees_only_the_first_body(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Answer(200, {"value": [1], "@odata.count": 2, "@odata.nextLink": f"{server.url}/set?$skiptoken=1"}),
                  Answer(200, {"value": [2], "@odata.count": 99}))
    seen: list[int] = []
    pages = list(core_for(server, sleeps).iter_pages("set", on_first=lambda body: seen.append(body["@odata.count"])))
    assert (pages, seen) == ([[1], [2]], [2])


def test_a_page_without_a_value_array_is_an_error(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Answer(200, {"value": [1], "@odata.nextLink": f"{server.url}/set?$skiptoken=1"}),
                  Answer(200, {"value": {"a": 1}}))
    pages = core_for(server, sleeps).iter_pages("set")
    assert next(pages) == [1]
    with pytest.raises(Exception, match="expected a 'value' array"):
        next(pages)
