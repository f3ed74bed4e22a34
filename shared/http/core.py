"""The HTTP core shared by the Dataverse and Commerce clients.

One ``requests.Session`` per target host, a bearer token asked of the ``TokenCredential`` before
every attempt (azure-identity caches it), explicit timeouts, bounded retries for 429 and transient
failures, OData errors parsed into typed exceptions, ``@odata.nextLink`` paging, and a correlation
id on every request (``x-ms-client-request-id``) that also appears in the logs.

The retry loop is hand-written rather than urllib3's ``Retry``: that one cannot ask for a fresh
token per attempt, keep a total time budget, or log each retry with the correlation id, and the
loop is thirty lines.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from shared.http.errors import ApiError, CredentialError, ThrottledError, TransportError, error_from_response
from shared.http.gate import BURST_REMAINING_HEADER, ResumeGate
from shared.http.pools import pooled_session
from shared.observability import correlation_id, log
from shared.telemetry import metrics

logger = logging.getLogger("loyaltysync.http")

USER_AGENT = "loyalty-sync/0.1 (+azure-functions-python)"
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    read_s: float = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: at most ``max_attempts`` tries and ``budget_s`` seconds in all.

    429 waits exactly ``Retry-After``; without the header, ``throttle_fallback_s`` (F&O's documented
    30 s, docs/protocol-notes.md §3.5) or, when that is None, 2^n s. 502/503/504 and connection failures back off
    exponentially with jitter (docs/protocol-notes.md §6.1). A wait that would overrun the budget is not
    taken: the error is raised with ``retry_after`` so the caller can park the work instead.
    """

    max_attempts: int = 5
    budget_s: float = 120.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    throttle_fallback_s: float | None = None

    def backoff(self, attempt: int) -> float:
        return float(min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2))


Sleep = Callable[[float], None]

# Characters left as they are in query values. Everything else is percent-encoded, spaces as %20
# (never '+', which OData servers may read as a literal plus), and '&', '#', '+', '%' always.
_QUERY_SAFE = "$'(),:@/*=!;"


def encode_query(params: Mapping[str, str]) -> str:
    """``$filter=...&$select=...`` with OData-friendly percent-encoding."""
    return "&".join(f"{quote(name, safe='$')}={quote(value, safe=_QUERY_SAFE)}" for name, value in params.items())


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value is not None and value.strip().isdigit() else None


class HttpCore:
    """Authenticated OData requests against one service root."""

    def __init__(
        self,
        base_url: str,
        credential: TokenCredential,
        scope: str,
        *,
        service: str,
        default_headers: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Sleep = time.sleep,
        window_s: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.credential = credential
        self.scope = scope
        self.service = service
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.session = session or pooled_session()
        self.session.headers.update({"User-Agent": USER_AGENT, **(default_headers or {})})
        self._sleep = sleep
        self.requests_sent = 0
        self.observers: list[Callable[[requests.Response], None]] = []
        # Retry-After holds every request of this identity, not only the one that was refused: Dataverse
        # lengthens the delay for a user who keeps sending while throttled (docs/protocol-notes.md §2.12). Then the gate
        # reopens gradually, a probe first (shared/http/gate.py).
        self.gate = ResumeGate(sleep, window_s=window_s)  # window_s: the service's window, when known

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + path.lstrip("/")

    def _token(self) -> str:
        try:
            return self.credential.get_token(self.scope).token
        except ClientAuthenticationError as exc:
            raise CredentialError(f"could not get a token for {self.scope}: {exc.message}") from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout_s: float | None = None,
    ) -> requests.Response:
        """Send one request with retries; return the 2xx/304 response or raise a typed ``ApiError``."""
        url = self.url(path)
        if params:
            url += ("&" if "?" in url else "?") + encode_query(params)
        if json is not None:
            # orjson: a bulk body of 1,000 records serialises several times faster than with the standard
            # library, and once, not again on every retry (measured: mapping + serialisation 53k -> 127k records/s).
            data, json = orjson.dumps(json), None
            headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            ticket = self.gate.enter()
            request_id = str(uuid.uuid4())
            all_headers = {
                "Authorization": f"Bearer {self._token()}",
                "x-ms-client-request-id": request_id,
                "x-ms-correlation-request-id": correlation_id(),
                **(headers or {}),
            }
            failure: ApiError
            retry_after: float | None = None  # a throttle's wait: the gate is blocked that long
            try:
                self.requests_sent += 1
                response = self.session.request(
                    method,
                    url,
                    data=data,
                    headers=all_headers,
                    timeout=(self.timeouts.connect_s, read_timeout_s or self.timeouts.read_s),
                )
            except requests.RequestException as exc:
                self.gate.done(ticket, success=False)
                failure = TransportError(
                    f"{type(exc).__name__}: {exc}", method=method, url=url, request_id=request_id
                )
                # A read timeout on a POST may have been applied: never resend a non-idempotent call.
                retryable = method in IDEMPOTENT or isinstance(exc, requests.ConnectTimeout)
            else:
                for observe in self.observers:
                    observe(response)
                metrics.record_response(self.service, response.status_code)  # loyaltysync.http.requests, .throttled
                if response.status_code < 400 or response.status_code == 304:
                    self.gate.done(ticket, success=True,
                                   burst_remaining=_int_header(response, BURST_REMAINING_HEADER))
                    log(logger, logging.DEBUG, "http ok", service=self.service, method=method, url=response.url,
                        status=response.status_code, request_id=request_id, attempt=attempt)
                    return response
                failure = error_from_response(response)
                retry_after = self._throttle_wait(failure)
                if retry_after is not None:
                    # The identity is blocked from now on: close the gate before this ticket is handed back, so
                    # no other thread slips a request in meanwhile (it would draw a 429 and lengthen the block),
                    # and whether or not this request is retried.
                    self.gate.block(retry_after)
                self.gate.done(ticket, success=False)
                retryable = response.status_code in RETRYABLE_STATUS and (
                    method in IDEMPOTENT or response.status_code in (429, 503)
                )
            elapsed = time.monotonic() - started
            if not retryable or attempt >= self.retry.max_attempts:
                raise failure
            wait = self.retry.backoff(attempt) if retry_after is None else retry_after
            if elapsed + wait > self.retry.budget_s:
                raise failure
            log(logger, logging.WARNING, "http retry", service=self.service, method=method, url=url,
                status=failure.status, code=failure.code, wait_s=round(wait, 2), attempt=attempt,
                request_id=request_id)
            metrics.record_retry_wait(self.service, wait)  # loyaltysync.http.retry_wait
            if retry_after is None:
                self._sleep(wait)
            # else the gate is blocked: the next attempt waits there, with every other request

    def _throttle_wait(self, failure: ApiError) -> float | None:
        """How long a throttled identity is blocked: ``Retry-After``, or for a 429 without it the fallback
        (F&O: 30 s, §3.5); None when ``failure`` is no throttle."""
        if isinstance(failure, ThrottledError) and failure.retry_after is not None:
            return failure.retry_after
        if failure.status == 429:
            return self.retry.throttle_fallback_s
        return None

    def get_json(self, path: str, *, params: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        body = self.request("GET", path, params=params, headers=headers).json()
        if not isinstance(body, dict):
            raise ApiError(f"expected a JSON object from {path}", method="GET", url=self.url(path))
        return body

    def iter_bodies(self, path: str, *, params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Yield each page's whole response body: ``path`` (with ``params``), then every
        ``@odata.nextLink`` followed verbatim with the same headers (docs/protocol-notes.md §2.8). The last body
        yielded is the one without a nextLink (where change tracking puts ``@odata.deltaLink``). A
        nextLink the server already gave is an ``ApiError``, not an endless loop. The one paging loop:
        ``iter_pages`` and the Dataverse change feed are built on it."""
        body = self.get_json(path, params=params, headers=headers)
        seen: set[str] = set()
        while True:
            yield body
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return
            if next_link in seen:
                raise ApiError(f"the server repeated a nextLink: {next_link}", method="GET", url=next_link)
            seen.add(next_link)
            body = self.get_json(next_link, headers=headers)

    def iter_pages(self, path: str, *, params: Mapping[str, str] | None = None,
                   headers: Mapping[str, str] | None = None,
                   on_first: Callable[[dict[str, Any]], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's ``value`` (``iter_bodies``). ``on_first`` sees the first response body
        (for ``@odata.count``)."""
        for index, body in enumerate(self.iter_bodies(path, params=params, headers=headers)):
            if index == 0 and on_first is not None:
                on_first(body)
            value = body.get("value")
            if not isinstance(value, list):
                raise ApiError(f"expected a 'value' array from {path}", method="GET", url=self.url(path))
            yield value
