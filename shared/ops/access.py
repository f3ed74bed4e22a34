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

**Locally** ``SYNC_DASHBOARD_AUTH=local`` serves the page without Entra ID sign-in, to a browser that proves it
was given the process's token: ``SYNC_DASHBOARD_TOKEN`` when set (at least 32 characters), else a random one made
when the app starts and logged once then (``func start`` prints it; ``devtools/functions_host.py``'s
``LocalFunctionsHost`` and the demo print the URL with it). The first visit opens ``/api/ops/dashboard?token=…``;
the page answers 303 to itself with the session in an HttpOnly, SameSite=Strict cookie (the token leaves the address
bar); every other request without that cookie gets 403 saying how to get in. No header decides it: a ``Host`` is
whatever the client sends, and ``func start`` listens on every interface, so anyone on the network could otherwise
use the page and its actions. The host name must be a loopback one as well (127.0.0.1, localhost, ::1). Local
mode is refused wherever ``WEBSITE_SITE_NAME`` is set (App Service sets it on every app in Azure), so a copied
setting cannot open the page there. Any other value of ``SYNC_DASHBOARD_AUTH`` is refused (403) naming the
allowed ones.

**Under Core Tools** (``func start``, which sets ``FUNCTIONS_CORETOOLS_ENVIRONMENT=true`` in the processes it runs)
the host checks no function keys at all, whatever a function's authorization level (Microsoft Learn, "Azure
Functions HTTP trigger", authorization level: running locally, authorization is disabled). So there the app itself asks
the admin-level ``/api/ops/<route>`` endpoints for a key: the same token, as ``x-functions-key`` (or ``?code=``),
which is what ``SYNC_REMOTE_KEY`` sends (``--remote http://localhost:7071``). And ``easyauth`` mode is refused
there: no App Service strips a forged ``X-MS-CLIENT-PRINCIPAL`` in front of ``func start``.

**Cross-site requests**: every action is a POST form that carries a per-session token (a random value kept
in an HttpOnly, SameSite=Strict cookie, repeated in a hidden form field: a double-submit token another site can
neither read nor set), and the browser's ``Sec-Fetch-Site`` (when sent) must be ``same-origin`` and its
``Origin`` (when sent) this host; a post with neither is refused too (browsers send ``Origin`` on every form
post). The token needs no server secret, so it holds across instances.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Literal
from urllib.parse import quote, urlsplit

import azure.functions as func
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.observability import log

logger = logging.getLogger("loyaltysync.ops")
AUTH_SETTING = "SYNC_DASHBOARD_AUTH"
AUTH_MODES = ("easyauth", "local")
TOKEN_SETTING = "SYNC_DASHBOARD_TOKEN"
TOKEN_PARAM = "token"
LOCAL_COOKIE = "ops_local"
MIN_TOKEN = 32
GROUP_SETTING = "SYNC_OPERATORS_GROUP_ID"
ROLE_SETTING = "SYNC_OPERATORS_ROLE"
AZURE_SITE = "WEBSITE_SITE_NAME"  # set by App Service on every app in Azure
EASY_AUTH_ENABLED = "WEBSITE_AUTH_ENABLED"  # "True" while App Service Authentication is on
CORE_TOOLS = "FUNCTIONS_CORETOOLS_ENVIRONMENT"  # "true" in the processes Core Tools (func start) runs
KEY_HEADER = "x-functions-key"
KEY_PARAM = "code"
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
    local_token: SecretStr | None = Field(default=None, min_length=MIN_TOKEN, validation_alias=TOKEN_SETTING)
    operators_group_id: str = Field(default="", validation_alias=GROUP_SETTING)
    operators_role: str = Field(default="", validation_alias=ROLE_SETTING)
    site_name: str = Field(default="", validation_alias=AZURE_SITE)
    easy_auth_enabled: str = Field(default="", validation_alias=EASY_AUTH_ENABLED)
    core_tools_flag: str = Field(default="", validation_alias=CORE_TOOLS)

    @property
    def core_tools(self) -> bool:
        return is_core_tools(self.core_tools_flag, self.site_name)


def is_core_tools(flag: str, site_name: str) -> bool:
    """Served by Core Tools (``func start``): no host enforces function keys or fronts the app with Easy Auth."""
    return flag.lower() == "true" and not site_name


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


def access_settings() -> AccessSettings:
    """The page's settings; ``Denied`` naming the setting and what it allows when one is not valid."""
    try:
        return AccessSettings()
    except ValidationError as exc:
        if any(AUTH_SETTING in str(e["loc"]) or "mode" in e["loc"] for e in exc.errors()):
            raise Denied(f"{AUTH_SETTING} is {os.environ.get(AUTH_SETTING, '')!r}: it must be one of "
                         f"{', '.join(AUTH_MODES)} (easyauth, the default: App Service Authentication in Azure; "
                         "local: this machine, with the token printed when the app started)") from None
        raise Denied(f"{TOKEN_SETTING} must be at least {MIN_TOKEN} characters (a random value, e.g. from "
                     "python -c \"import secrets; print(secrets.token_urlsafe(32))\")") from None


_made_token: list[str] = []  # the random token of this process (when SYNC_DASHBOARD_TOKEN is not set)
_token_lock = threading.Lock()


def local_token(settings: AccessSettings) -> str:
    """The token local mode asks for: ``SYNC_DASHBOARD_TOKEN``, else one random token per process, logged once."""
    if settings.local_token is not None:
        return settings.local_token.get_secret_value()
    with _token_lock:
        if not _made_token:
            _made_token.append(secrets.token_urlsafe(32))
            log(logger, logging.WARNING, "status page in local mode: open it once with this token (anyone with it "
                "can use the page and its actions)", url=f"{COOKIE_PATH}?{TOKEN_PARAM}={_made_token[0]}",
                setting=f"{TOKEN_SETTING} sets a token of your own (needed with several worker processes)",
                ops_key=f"under func start the /api/ops endpoints take this token as {KEY_HEADER}")
        return _made_token[0]


def announce_local_token() -> None:
    """At start-up: in local mode (not in Azure) or under Core Tools make the token now, so that ``func start``
    prints it once."""
    try:
        settings = AccessSettings()
    except ValidationError:
        return  # the page answers 403 naming the setting
    if (settings.mode == "local" and not settings.site_name) or settings.core_tools:
        local_token(settings)


def local_key_problem(req: func.HttpRequest) -> str | None:
    """Why an admin-level ``/api/ops`` request is refused under Core Tools (``None``: served). Elsewhere the
    Functions host has checked the master key before the app sees the request, and this answers ``None``."""
    if not is_core_tools(os.environ.get(CORE_TOOLS, ""), os.environ.get(AZURE_SITE, "")):
        return None  # not Core Tools: the status page's settings (a typo there) are no concern of the key here
    try:
        settings = access_settings()
    except Denied as exc:
        return exc.reason
    offered = req.headers.get(KEY_HEADER) or req.params.get(KEY_PARAM) or ""
    if offered and hmac.compare_digest(offered.encode(), local_token(settings).encode()):
        return None
    return (f"func start checks no function keys, so this app asks for its own: send the token it printed when it "
            f"started (or {TOKEN_SETTING}) as {KEY_HEADER}; python -m shared.cli --remote sends SYNC_REMOTE_KEY there")


def local_session(token: str) -> str:
    """The session cookie's value for ``token`` (derived: the cookie is not the token itself)."""
    return hmac.new(token.encode(), b"loyaltysync status page session", hashlib.sha256).hexdigest()


def local_sign_in(req: func.HttpRequest) -> str | None:
    """A first visit in local mode with the right ``?token=``: the session cookie's value to set (else None)."""
    offered = req.params.get(TOKEN_PARAM)
    if not offered:
        return None
    try:
        settings = access_settings()
    except Denied:
        return None
    if settings.mode != "local" or settings.site_name:
        return None
    token = local_token(settings)
    if not hmac.compare_digest(offered.encode(), token.encode()):
        return None
    return local_session(token)


def operator(req: func.HttpRequest, settings: AccessSettings | None = None) -> Operator:
    """The operator behind a request, or ``Denied`` with the reason."""
    settings = settings or access_settings()
    if settings.mode == "local":
        if settings.site_name:
            raise Denied(f"{AUTH_SETTING}=local is refused in Azure ({AZURE_SITE} is set): remove that app setting; "
                         "operators sign in through App Service Authentication")
        if not _is_loopback(_host(req)):
            raise Denied(f"{AUTH_SETTING}=local serves loopback addresses only (127.0.0.1, localhost), not "
                         f"{_host(req)}")
        session = read_cookie(req, LOCAL_COOKIE)
        if not session or not hmac.compare_digest(session.encode(), local_session(local_token(settings)).encode()):
            raise Denied(f"{AUTH_SETTING}=local needs the token this app printed when it started: open "
                         f"{COOKIE_PATH}?{TOKEN_PARAM}=<token> once (func start logs the URL; set {TOKEN_SETTING} to "
                         "choose the token)")
        return Operator("local operator", local=True)
    if settings.core_tools:
        raise Denied(f"{AUTH_SETTING}=easyauth cannot work under func start: no App Service Authentication fronts "
                     f"it, so any client could send an X-MS-CLIENT-PRINCIPAL header; set {AUTH_SETTING}=local and "
                     "open the page with the token the app printed when it started")
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
