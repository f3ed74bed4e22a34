"""The Dataverse client against a scripted local HTTP server: the change feed's paging and delta link
(docs/protocol-notes.md §2.11), and ``$batch`` part errors reaching the caller (§2.9)."""

from __future__ import annotations

import pytest

from shared.dataverse.client import DataverseClient
from shared.http.core import HttpCore, RetryPolicy, Timeouts
from shared.http.errors import ApiError, NotFoundError
from tests.scripted_server import Answer, ScriptedServer, StaticCredential


def client_for(server: ScriptedServer) -> DataverseClient:
    core = HttpCore(f"{server.url}/api/data/v9.2", StaticCredential(), "https://org.crm.dynamics.com/.default",
                    service="dataverse", retry=RetryPolicy(max_attempts=1), timeouts=Timeouts(1, 2),
                    sleep=lambda _: None)
    return DataverseClient(core, page_size=2)


def test_the_baseline_pages_through_next_links_and_takes_the_delta_link_of_the_last_page(
        server: ScriptedServer) -> None:
    next_link = f"{server.url}/api/data/v9.2/accounts?$select=name&$skiptoken=%3Ccookie%20istracking=%22True%22%20/%3E"
    delta_link = f"{server.url}/api/data/v9.2/accounts?$select=name&$deltatoken=919042%2108%2f22%2f2017"
    server.script(Answer(200, {"value": [{"accountid": "1"}, {"accountid": "2"}], "@odata.nextLink": next_link}),
                  Answer(200, {"value": [{"accountid": "3"}], "@odata.deltaLink": delta_link}))
    feed = client_for(server).changes("accounts", select=["name"])
    rows = iter(feed)

    assert [next(rows), next(rows)] == [{"accountid": "1"}, {"accountid": "2"}]
    assert feed.delta_link is None  # not before the rows are exhausted
    assert list(rows) == [{"accountid": "3"}]
    assert feed.delta_link == delta_link
    assert [r.path for r in server.requests] == ["/api/data/v9.2/accounts?$select=name", next_link[len(server.url):]]
    assert {r.headers["Prefer"] for r in server.requests} == {"odata.track-changes,odata.maxpagesize=2"}


def test_a_delta_link_is_followed_verbatim_and_deletions_are_marked_removed(server: ScriptedServer) -> None:
    start = f"{server.url}/api/data/v9.2/accounts?$select=name&$deltatoken=1%212"
    deleted = {"@odata.context": f"{server.url}/api/data/v9.2/$metadata#accounts/$deletedEntity", "id": "9",
               "reason": "deleted"}
    server.script(Answer(200, {"value": [{"accountid": "1", "name": "a"}, deleted],
                               "@odata.deltaLink": f"{start}3"}))
    feed = client_for(server).changes("accounts", select=["name"], delta_link=start)

    assert list(feed) == [{"accountid": "1", "name": "a"}, {"@removed": True, "id": "9"}]
    assert (server.requests[0].path, feed.delta_link) == (start[len(server.url):], f"{start}3")


def test_a_last_page_without_a_delta_link_is_an_error(server: ScriptedServer) -> None:
    server.script(Answer(200, {"value": [{"accountid": "1"}]}))
    feed = client_for(server).changes("accounts", select=["name"])
    with pytest.raises(ApiError, match="without an @odata.deltaLink"):
        list(feed)
    assert feed.delta_link is None


def test_a_repeated_next_link_in_the_change_feed_is_an_error(server: ScriptedServer) -> None:
    loop = {"value": [{"accountid": "1"}], "@odata.nextLink": f"{server.url}/api/data/v9.2/accounts?$skiptoken=1"}
    server.script(Answer(200, loop), Answer(200, loop), Answer(200, {"value": [], "@odata.deltaLink": "d"}))
    with pytest.raises(ApiError, match="repeated a nextLink"):
        list(client_for(server).changes("accounts", select=["name"]))
    assert len(server.requests) == 2


def test_an_expired_delta_link_raises_the_servers_error(server: ScriptedServer) -> None:
    server.script(Answer(400, {"error": {"code": "0x80044352", "message": "Version stamp associated with the "
                                                                          "client has expired."}}))
    with pytest.raises(ApiError, match="expired") as caught:
        list(client_for(server).changes("accounts", select=["name"], delta_link=f"{server.url}/x?$deltatoken=1"))
    assert caught.value.code == "0x80044352"


def test_batch_upserts_return_each_parts_typed_error_in_order(server: ScriptedServer) -> None:
    boundary = "batchresponse_f27ef42d"
    raw = (f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
           "HTTP/1.1 404 Not Found\r\nREQ_ID: r-1\r\nContent-Type: application/json\r\n\r\n"
           '{"error":{"code":"0x80060891","message":"A record with the specified key values does not exist"}}\r\n'
           f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
           f"HTTP/1.1 204 No Content\r\n\r\n\r\n--{boundary}--\r\n").encode()
    server.script(Answer(200, raw=raw, headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}))

    errors = client_for(server).batch_upserts("accounts", [({"accountnumber": "A"}, {"name": "a"}),
                                                           ({"accountnumber": "B"}, {"name": "b"})], update_only=True)

    assert isinstance(errors[0], NotFoundError) and errors[1] is None
    assert (errors[0].code, errors[0].service_request_id) == ("0x80060891", "r-1")
    sent = server.requests[0]
    assert (sent.path, sent.headers["Prefer"]) == ("/api/data/v9.2/$batch", "odata.continue-on-error")
    assert sent.body.count(b"If-Match: *") == 2
