"""Requests to the status page's functions through the real app object, as a browser would send them."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit

import azure.functions as func

from devtools.functions_host import invoke_http
from shared.ops.access import LOCAL_COOKIE, local_session

HOST = "127.0.0.1:7071"
PAGE = f"http://{HOST}/api/ops/dashboard"


def principal(*, roles: Sequence[str] = (), groups: Sequence[str] = (), name: str = "ann@contoso.com") -> str:
    """An ``X-MS-CLIENT-PRINCIPAL`` header as App Service Authentication injects it for an Entra ID sign-in."""
    claims = ([{"typ": "preferred_username", "val": name}, {"typ": "name", "val": "Ann"}]
              + [{"typ": "roles", "val": r} for r in roles] + [{"typ": "groups", "val": g} for g in groups])
    body = {"auth_typ": "aad", "claims": claims, "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
    return base64.b64encode(json.dumps(body).encode()).decode()


def signed_in(headers: dict[str, str] | None) -> dict[str, str]:
    """``headers`` with local mode's session cookie added, as a browser has it after opening the page once with the
    token (only in local mode with ``SYNC_DASHBOARD_TOKEN`` set, as the tests' ``local`` fixture does)."""
    headers = dict(headers or {})
    token = os.environ.get("SYNC_DASHBOARD_TOKEN")
    if os.environ.get("SYNC_DASHBOARD_AUTH") != "local" or not token:
        return headers
    session = f"{LOCAL_COOKIE}={local_session(token)}"
    headers["Cookie"] = f"{headers['Cookie']}; {session}" if headers.get("Cookie") else session
    return headers


def get(headers: dict[str, str] | None = None, *, url: str = PAGE, session: bool = True) -> func.HttpResponse:
    """A GET of the page (``session``: with local mode's session cookie, when the test runs in local mode)."""
    import function_app

    sent = signed_in(headers) if session else dict(headers or {})
    req = func.HttpRequest("GET", url, headers={"Host": HOST, **sent}, body=b"",
                           params=dict(parse_qsl(urlsplit(url).query)))
    return invoke_http(function_app.app, "dashboard", req)


def post(action: str, fields: dict[str, str], headers: dict[str, str] | None = None, *,
         session: bool = True) -> func.HttpResponse:
    import function_app

    sent = signed_in(headers) if session else dict(headers or {})
    req = func.HttpRequest("POST", f"{PAGE}/actions/{action}", route_params={"action": action},
                           headers={"Host": HOST, "Content-Type": "application/x-www-form-urlencoded",
                                    **sent}, body=urlencode(fields).encode())
    return invoke_http(function_app.app, "dashboard_action", req)


class Session:
    """A browser session: it keeps the page's cookies, sends Origin and Sec-Fetch-Site as Chromium does, and posts
    forms with the token the page gave it."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = headers or {}
        self.cookies: dict[str, str] = {}

    def _cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def _keep(self, response: func.HttpResponse) -> None:
        for value in response.headers.get_all("Set-Cookie"):
            name, _, rest = value.partition("=")
            content = rest.split(";")[0]
            if "Max-Age=0" in value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = content

    def get(self) -> func.HttpResponse:
        response = get({**self.headers, **self._cookie_header()})
        self._keep(response)
        return response

    def html(self) -> str:
        response = self.get()
        assert response.status_code == 200, response.get_body()
        return response.get_body().decode()

    def token(self) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.html())
        assert match, "no form on the page"
        return match.group(1)

    def post(self, action: str, fields: dict[str, str], *, token: str | None = None,
             headers: dict[str, str] | None = None) -> func.HttpResponse:
        sent = {"csrf": token if token is not None else self.token(), **fields}
        browser = {"Origin": f"http://{HOST}", "Sec-Fetch-Site": "same-origin"}
        response = post(action, sent, {**self.headers, **browser, **self._cookie_header(), **(headers or {})})
        self._keep(response)
        return response
