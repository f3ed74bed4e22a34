"""Who may use the status page (``/api/ops/dashboard``), and whether a form post really comes from it.

**In Azure** App Service Authentication (Easy Auth) fronts the app: it signs people in with Entra ID and hands
the app the signed-in principal in the ``X-MS-CLIENT-PRINCIPAL`` header (base64 JSON: ``auth_typ``,
``claims`` [{``typ``, ``val``}], ``name_typ``, ``role_typ``), a header the platform strips from external
requests. The page's functions are anonymous-level (no function key in a browser URL); they serve only when

- ``WEBSITE_AUTH_ENABLED`` is ``True`` (App Service sets it while Easy Auth is on: without it anyone could
  send the header), and
- the principal holds the app role ``SYNC_OPERATORS_ROLE`` (a ``roles`` claim) or is a member of the group
  ``SYNC_OPERATORS_GROUP_ID`` (a ``groups`` claim, an object id); at least one of the two must be set.

A GET without a principal is sent to ``/.auth/login/aad`` (and back); anything else refused answers 403
naming the reason.

**Locally** ``SYNC_DASHBOARD_AUTH=local`` serves the page without sign-in, on a loopback host name only
(127.0.0.1, localhost, ::1). It is refused wherever ``WEBSITE_SITE_NAME`` is set (App Service sets it on
every app in Azure), so a copied setting cannot open the page there. ``devtools/functions_host.py``'s
``LocalFunctionsHost`` sets it for its own process.

**Cross-site requests**: every action is a POST form that carries a per-session token (a random value kept
in an HttpOnly, SameSite=Strict cookie, repeated in a hidden form field: a double-submit token another site can
neither read nor set), and the browser's ``Sec-Fetch-Site`` (when sent) must be ``same-origin`` and its
``Origin`` (when sent) this host; a post with neither is refused too (browsers send ``Origin`` on every form
post). The token needs no server secret, so it holds across instances.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Literal
from urllib.parse import quote, urlsplit

import azure.functions as func
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

AUTH_SETTING = "SYNC_DASHBOARD_AUTH"
GROUP_SETTING = "SYNC_OPERATORS_GROUP_ID"
ROLE_SETTING = "SYNC_OPERATORS_ROLE"
AZURE_SITE = "WEBSITE_SITE_NAME"  # set by App Service on every app in Azure
EASY_AUTH_ENABLED = "WEBSITE_AUTH_ENABLED"  # "True" while App Service Authentication is on
PRINCIPAL_HEADER = "x-ms-client-principal"
LOGIN_PATH = "/.auth/login/aad"
ROLE_CLAIMS = {"roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
GROUP_CLAIMS = {"groups", "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"}
NAME_CLAIMS = ("preferred_username", "name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
LOOPBACK_NAMES = {"localhost"}

CSRF_COOKIE = "ops_csrf"
CSRF_FIELD = "csrf"
COOKIE_PATH = "/api/ops/dashboard"


class AccessSettings(BaseSettings):
    """The page's settings (app settings / environment), read per request: they are few and cheap."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    mode: Literal["easyauth", "local"] = Field(default="easyauth", validation_alias=AUTH_SETTING)
    operators_group_id: str = Field(default="", validation_alias=GROUP_SETTING)
    operators_role: str = Field(default="", validation_alias=ROLE_SETTING)
    site_name: str = Field(default="", validation_alias=AZURE_SITE)
    easy_auth_enabled: str = Field(default="", validation_alias=EASY_AUTH_ENABLED)


@dataclass(frozen=True)
class Operator:
    """Who uses the page: recorded with what they do (``pause`` by ``ann@contoso.com (status page)``)."""

    name: str
    local: bool = False


class Denied(Exception):
    """The page is not served: ``status`` 403 with ``reason``, or a redirect to sign in (``login``)."""

    def __init__(self, reason: str, *, login: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.login = login


class Claim(BaseModel):
    typ: str
    val: str


class ClientPrincipal(BaseModel):
    """The decoded ``X-MS-CLIENT-PRINCIPAL`` header."""

    auth_typ: str = ""
    claims: list[Claim] = []
    name_typ: str = ""
    role_typ: str = ""

    def values(self, types: set[str]) -> set[str]:
        return {c.val for c in self.claims if c.typ in types}

    def first(self, types: tuple[str, ...]) -> str:
        return next((c.val for t in types for c in self.claims if c.typ == t), "")


def _host(req: func.HttpRequest) -> str:
    """The host (and port) the request was sent to, as the browser saw it."""
    host: str = req.headers.get("host") or urlsplit(req.url).netloc
    return host


def _is_loopback(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def operator(req: func.HttpRequest, settings: AccessSettings | None = None) -> Operator:
    """The operator behind a request, or ``Denied`` with the reason."""
    settings = settings or AccessSettings()
    if settings.mode == "local":
        if settings.site_name:
            raise Denied(f"{AUTH_SETTING}=local is refused in Azure ({AZURE_SITE} is set): remove that app setting; "
                         "operators sign in through App Service Authentication")
        if not _is_loopback(_host(req)):
            raise Denied(f"{AUTH_SETTING}=local serves loopback addresses only (127.0.0.1, localhost), not "
                         f"{_host(req)}")
        return Operator("local operator", local=True)
    if settings.easy_auth_enabled.lower() != "true":
        raise Denied(f"App Service Authentication is not enabled on this app ({EASY_AUTH_ENABLED} is not True): "
                     "enable it (the Bicep's authsettingsV2), or run locally with "
                     f"{AUTH_SETTING}=local")
    header = req.headers.get(PRINCIPAL_HEADER)
    if not header:
        target = urlsplit(req.url).path or COOKIE_PATH
        raise Denied("sign in first", login=f"{LOGIN_PATH}?post_login_redirect_url={quote(target, safe='/')}")
    try:
        principal = ClientPrincipal.model_validate(json.loads(base64.b64decode(header, validate=True)))
    except (binascii.Error, ValueError, ValidationError):
        raise Denied("the X-MS-CLIENT-PRINCIPAL header is not base64 JSON of a client principal") from None
    if not settings.operators_group_id and not settings.operators_role:
        raise Denied(f"no operators are configured: set {GROUP_SETTING} (an Entra group's object id) or "
                     f"{ROLE_SETTING} (an app role's value)")
    name = (req.headers.get("x-ms-client-principal-name") or principal.first(NAME_CLAIMS)
            or req.headers.get("x-ms-client-principal-id") or principal.first(ID_CLAIMS) or "signed-in user")
    roles = principal.values(ROLE_CLAIMS | ({principal.role_typ} if principal.role_typ else set()))
    groups = {g.lower() for g in principal.values(GROUP_CLAIMS)}
    if settings.operators_role and settings.operators_role in roles:
        return Operator(name)
    if settings.operators_group_id and settings.operators_group_id.lower() in groups:
        return Operator(name)
    wanted = " or ".join(([f"the app role {settings.operators_role!r}"] if settings.operators_role else [])
                         + ([f"membership of the group {settings.operators_group_id}"]
                            if settings.operators_group_id else []))
    raise Denied(f"{name} is signed in but is not an operator: the page needs {wanted}")


# -- cross-site request checks ---------------------------------------------------------------------------------


def session_token(req: func.HttpRequest) -> tuple[str, bool]:
    """The session's form token from its cookie, or a new one (``True``: set the cookie)."""
    token = read_cookie(req, CSRF_COOKIE)
    if token and len(token) >= 32:
        return token, False
    return secrets.token_urlsafe(32), True


def read_cookie(req: func.HttpRequest, name: str) -> str:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(req.headers.get("cookie") or "")
    except CookieError:
        return ""
    morsel = jar.get(name)
    return morsel.value if morsel is not None else ""


def is_https(req: func.HttpRequest) -> bool:
    """Whether the browser used https (App Service ends TLS in front of the app and says so)."""
    forwarded = (req.headers.get("x-forwarded-proto") or "").lower()
    return urlsplit(req.url).scheme == "https" or forwarded == "https" or bool(req.headers.get("x-arr-ssl"))


def cookie(name: str, value: str, req: func.HttpRequest, *, max_age: int | None = None) -> str:
    """A Set-Cookie value: the page's path only, HttpOnly, SameSite=Strict, Secure over https."""
    parts = [f"{name}={value}", f"Path={COOKIE_PATH}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if is_https(req):
        parts.append("Secure")
    return "; ".join(parts)


def cross_site_problem(req: func.HttpRequest, form_token: str | None) -> str | None:
    """Why a form post is refused as a possible cross-site request (``None``: it is the page's own)."""
    fetch_site = req.headers.get("sec-fetch-site")
    origin = req.headers.get("origin")
    if fetch_site is not None and fetch_site != "same-origin":
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != _host(req)):
        return f"cross-origin request refused (Origin {origin} is not {_host(req)})"
    if fetch_site is None and origin is None:
        return ("request refused: it has neither an Origin nor a Sec-Fetch-Site header (a browser sends them; "
                "scripts use the /api/ops JSON endpoints with a function key)")
    cookie_token = read_cookie(req, CSRF_COOKIE)
    if not cookie_token:
        return "CSRF cookie missing: reload the status page and try again"
    if not form_token or not hmac.compare_digest(cookie_token.encode(), form_token.encode()):
        return "CSRF token missing or not this session's: reload the status page and try again"
    return None
