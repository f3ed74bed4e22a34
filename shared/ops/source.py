"""Where the command line reads and acts: ``LocalSource`` (the app settings, Table Storage and both services, as
the Function App does) or ``RemoteSource`` (a deployed app's ``/api/ops`` endpoints, ``--remote``). Both answer
the same JSON-shaped data, so ``shared.cli`` renders one way whichever it is (the same tables, the same exit
codes).

Remote authentication, as Azure people expect it:

- an Entra access token for the app (``api://<app-id>/.default``, from ``DefaultAzureCredential``: ``az login``,
  a managed identity, environment credentials), sent as ``Authorization: Bearer`` to ``/api/ops/entra/...``;
  App Service Authentication validates it and the app requires the operators' app role (or group). The app id
  comes from ``--app-id`` or ``SYNC_REMOTE_APP_ID``; ``SYNC_REMOTE_TOKEN`` sends a token obtained otherwise
  (``az account get-access-token --scope api://<app-id>/.default``);
- or the host's master key (break-glass: ``az functionapp keys list -g <group> -n <app> --query masterKey -o
  tsv``), from ``SYNC_REMOTE_KEY``, sent as ``x-functions-key`` to ``/api/ops/...``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests

from shared.commerce.client import LegalEntitiesError
from shared.ops import drift, queries
from shared.runtime import Runtime
from shared.sync import operations
from shared.sync.compare import ColumnDiff, Finding

KEY_SETTING = "SYNC_REMOTE_KEY"
APP_ID_SETTING = "SYNC_REMOTE_APP_ID"
TOKEN_SETTING = "SYNC_REMOTE_TOKEN"
TIMEOUT_S = 240.0  # an HTTP-triggered function ends after 230 s: reconcile and dry runs take that long at most


class SourceError(Exception):
    """An expected failure of a source: one line for the operator (``usage``: the arguments are wrong, exit 2)."""

    def __init__(self, message: str, *, usage: bool = False, exit_code: int = 1) -> None:
        super().__init__(message)
        self.usage = usage
        self.exit_code = exit_code


class Refused(SourceError):
    """The app refused the action for a reason the operator must act on (a 409: nothing to do, paused by setting)."""

    def __init__(self, message: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.body = body


FindingSink = Callable[[Finding], None]


class Source(Protocol):
    """What the command line reads and does, as JSON-shaped data."""

    remote: bool

    def templates(self) -> list[str]: ...

    def status_rows(self) -> list[dict[str, Any]]: ...

    def refreshes(self) -> dict[str, dict[str, Any]]: ...

    def parked(self, template: str | None, error_class: str | None = None,
               direction: str | None = None) -> list[dict[str, Any]]: ...

    def conflicts(self, template: str | None) -> list[dict[str, Any]]: ...

    def replay(self, template: str | None, row_keys: list[str] | None) -> list[dict[str, Any]]: ...

    def pause(self, template: str, by: str) -> dict[str, Any]: ...

    def resume(self, template: str, by: str) -> dict[str, Any]: ...

    def approve_deletes(self, template: str, company: str | None, by: str) -> dict[str, Any]: ...

    def break_lease(self, template: str, company: str | None, direction: str, by: str) -> list[dict[str, Any]]: ...

    def poison(self, template: str | None, queue: str | None) -> list[dict[str, Any]]: ...

    def requeue_poison(self, template: str, ids: list[str] | None, queue: str | None) -> list[dict[str, Any]]: ...

    def check(self, template: str | None) -> list[dict[str, Any]]: ...

    def reconcile(self, template: str, companies: Sequence[str], repair: bool, sink: FindingSink,
                  progress: Any) -> list[dict[str, Any]]: ...

    def dry_run(self, template: str, companies: Sequence[str], sink: FindingSink,
                progress: Any) -> list[dict[str, Any]]: ...

    def resync(self, template: str, key_parts: list[str]) -> dict[str, Any]: ...


# -- remote: a deployed app's /api/ops endpoints -------------------------------------------------------------


@dataclass
class Credentials:
    """How to authenticate to the app: a bearer token (Entra) or the master key."""

    key: str | None = None
    app_id: str | None = None
    token: str | None = None

    @classmethod
    def from_environment(cls, app_id: str | None = None) -> Credentials:
        return cls(key=os.environ.get(KEY_SETTING) or None, app_id=app_id or os.environ.get(APP_ID_SETTING) or None,
                   token=os.environ.get(TOKEN_SETTING) or None)

    @property
    def signed_in(self) -> bool:
        """Entra (a token, or an app id to get one for) wins over the key: the key is for break-glass."""
        return bool(self.token or self.app_id)

    def headers(self) -> dict[str, str]:
        if not self.token and self.app_id:
            self.token = entra_token(self.app_id)  # once per command: a token lasts an hour or more
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.key:
            return {"x-functions-key": self.key}
        raise SourceError(f"--remote needs credentials: --app-id (or {APP_ID_SETTING}) for an Entra token of the "
                          f"app's operators' role, or the master key in {KEY_SETTING} (break-glass: az functionapp "
                          "keys list -g <group> -n <app> --query masterKey -o tsv)")


def entra_token(app_id: str) -> str:
    """An access token for the app registration ``app_id`` (``api://<app-id>/.default``)."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import DefaultAzureCredential

    audience = app_id if app_id.startswith("api://") else f"api://{app_id}"
    try:
        return str(DefaultAzureCredential().get_token(f"{audience}/.default").token)
    except ClientAuthenticationError as exc:
        first = " ".join(str(exc).split())[:300]
        raise SourceError(f"no Entra token for {audience}: {first}; sign in (az login) and check that the app "
                          "registration exposes an API that the Azure CLI may call") from None


@dataclass
class OpsClient:
    """JSON over HTTP to ``<app URL>/api/ops``: one line for every failure an operator can meet."""

    base_url: str
    credentials: Credentials
    timeout_s: float = TIMEOUT_S
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SourceError(f"--remote {self.base_url!r} is not the app's URL (https://<app>.azurewebsites.net)",
                              usage=True)
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.prefix = "/api/ops/entra/" if self.credentials.signed_in else "/api/ops/"

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None, ok: Sequence[int] = (200,)) -> tuple[int, Any]:
        url = self.base_url + self.prefix + path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.session.request(method, url, params=query, json=body, timeout=self.timeout_s,
                                            headers=self.credentials.headers())
        except requests.RequestException as exc:
            raise SourceError(f"cannot reach {self.base_url} ({type(exc).__name__}); check --remote (the app's "
                              "URL) and the network") from None
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {"error": response.text[:300]}
        error = data.get("error") if isinstance(data, dict) else None
        if response.status_code in ok:
            return response.status_code, data
        if response.status_code == 401:
            how = ("the token was not accepted: is App Service Authentication on, and the token's audience the app's "
                   "api://<app-id>?" if self.credentials.signed_in
                   else f"the master key in {KEY_SETTING} is not this app's (az functionapp keys list)")
            raise SourceError(f"{self.base_url} answered 401: {error or how}")
        if response.status_code == 403:
            raise SourceError(f"{self.base_url} answered 403: {error or 'forbidden'} (an app role assignment in Entra "
                              "gives an operator access: see docs/operations.md, remote mode)")
        if response.status_code == 404 and isinstance(data, dict) and "templates" in data:
            raise SourceError(f"{error}; known: {', '.join(data['templates'])}", usage=True)
        if response.status_code == 404 and not error:
            raise SourceError(f"{url} answered 404: is {self.base_url} this app, deployed with the ops endpoints?")
        if response.status_code == 400:
            raise SourceError(str(error or response.text[:300]), usage=True)
        if response.status_code == 409:
            raise Refused(str(error), data if isinstance(data, dict) else {})
        raise SourceError(f"{self.base_url} answered {response.status_code}: {error or response.text[:300]}")


def finding_of(item: dict[str, Any]) -> Finding:
    """A finding as the endpoints list it (``Finding.as_dict``), back as the writers take it."""
    return Finding(template=item["template"], scope=item["scope"], kind=item["kind"], key=tuple(item["key"]),
                   columns=[ColumnDiff(c["column"], c.get("commerce"), c.get("dataverse")) for c in item["columns"]],
                   detail=item.get("detail", ""), repair=item.get("repair", ""))


class RemoteSource:
    """The CLI's reads and actions through a deployed app's ``/api/ops`` endpoints."""

    remote = True

    def __init__(self, client: OpsClient) -> None:
        self.client = client
        self._status: dict[str, Any] | None = None

    def _get(self, path: str, **params: Any) -> Any:
        return self.client.call("GET", path, params=params)[1]

    def _post(self, path: str, body: dict[str, Any], ok: Sequence[int] = (200,)) -> Any:
        return self.client.call("POST", path, body=body, ok=ok)[1]

    def _read_status(self) -> dict[str, Any]:
        if self._status is None:
            self._status = self._get("status")
        return self._status

    def templates(self) -> list[str]:
        return list(self._read_status()["paused"])

    def status_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._read_status()["watermarks"]
        return rows

    def refreshes(self) -> dict[str, dict[str, Any]]:
        value: dict[str, dict[str, Any]] = self._read_status().get("refreshes", {})
        return value

    def parked(self, template: str | None, error_class: str | None = None,
               direction: str | None = None) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self._get("parked", template=template, error_class=error_class,
                                                direction=direction)["value"]
        return value

    def conflicts(self, template: str | None) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self._get("conflicts", template=template)["value"]
        return value

    def replay(self, template: str | None, row_keys: list[str] | None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"template": template}
        body.update({"all": True} if row_keys is None else {"keys": row_keys})
        value: list[dict[str, Any]] = self._post("replay", body)["value"]
        return value

    def pause(self, template: str, by: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._post(f"templates/{quote(template)}/pause", {})
        return answer

    def resume(self, template: str, by: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._post(f"templates/{quote(template)}/resume", {})
        return answer

    def approve_deletes(self, template: str, company: str | None, by: str) -> dict[str, Any]:
        answer = self._post("approve-deletes", {"template": template, "company": company, "by": by})
        return {k: v for k, v in answer.items() if k != "correlation_id"}

    def break_lease(self, template: str, company: str | None, direction: str, by: str) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self._post("break-lease", {"template": template, "company": company,
                                                                 "direction": direction, "by": by})["value"]
        return value

    def poison(self, template: str | None, queue: str | None) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self._get("poison", template=template, queue=queue)["value"]
        return value

    def requeue_poison(self, template: str, ids: list[str] | None, queue: str | None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"template": template, "queue": queue}
        body.update({"all": True} if ids is None else {"ids": ids})
        value: list[dict[str, Any]] = self._post("poison/requeue", body)["value"]
        return value

    def check(self, template: str | None) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self._get("check", template=template)["value"]
        return value

    def _drift(self, path: str, body: dict[str, Any], sink: FindingSink) -> list[dict[str, Any]]:
        answer = self._post(path, {**body, "limit": 10_000})
        for item in answer["findings"]:
            sink(finding_of(item))
        summaries: list[dict[str, Any]] = answer["summary"]
        if answer.get("truncated"):
            raise SourceError("more than 10,000 findings: the endpoint lists no more (run the CLI where the app's "
                              "settings are, without --remote, for every one)")
        return summaries

    def reconcile(self, template: str, companies: Sequence[str], repair: bool, sink: FindingSink,
                  progress: Any) -> list[dict[str, Any]]:
        return self._drift("reconcile", {"template": template, "companies": list(companies), "repair": repair}, sink)

    def dry_run(self, template: str, companies: Sequence[str], sink: FindingSink,
                progress: Any) -> list[dict[str, Any]]:
        return self._drift("sync", {"template": template, "companies": list(companies), "dry_run": True}, sink)

    def resync(self, template: str, key_parts: list[str]) -> dict[str, Any]:
        answer = self._post("resync", {"template": template, "key": key_parts})
        return {k: v for k, v in answer.items() if k != "correlation_id"}



# -- local: the app's own settings, storage and services ----------------------------------------------------


class LocalSource:
    """The CLI's reads and actions run here, with the app settings of this process (as the Function App does)."""

    remote = False

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def templates(self) -> list[str]:
        return queries.known_templates(self.runtime)

    def status_rows(self) -> list[dict[str, Any]]:
        return queries.status_rows(self.runtime)

    def refreshes(self) -> dict[str, dict[str, Any]]:
        return queries.refreshes(self.runtime)

    def parked(self, template: str | None, error_class: str | None = None,
               direction: str | None = None) -> list[dict[str, Any]]:
        return queries.parked(self.runtime, template, error_class=error_class, direction=direction)

    def conflicts(self, template: str | None) -> list[dict[str, Any]]:
        return queries.conflicts(self.runtime, template)

    def replay(self, template: str | None, row_keys: list[str] | None) -> list[dict[str, Any]]:
        return [r.as_dict() for r in operations.replay(self.runtime, template, row_keys)]

    def pause(self, template: str, by: str) -> dict[str, Any]:
        operations.pause(self.runtime, template, by=by)
        return {"template": template, "paused": True}

    def resume(self, template: str, by: str) -> dict[str, Any]:
        """As ``POST /api/ops/templates/<t>/resume``: ``Refused`` (409) while the setting pauses it."""
        pause = queries.pause_state(self.runtime, template)
        if pause.by_setting:
            if pause.by_command:
                self.runtime.state.callbacks.set_paused(template, False, by=by)
            body = {"template": template, "paused": True, "requeued": 0,
                    "held_callbacks": queries.held_callbacks(self.runtime, template),
                    "error": queries.PAUSED_BY_SETTING}
            raise Refused(queries.PAUSED_BY_SETTING, body)
        requeued = operations.resume(self.runtime, template, by=by)
        return {"template": template, "paused": False, "requeued": requeued}

    def approve_deletes(self, template: str, company: str | None, by: str) -> dict[str, Any]:
        try:
            return operations.approve_deletes(self.runtime, template, company, by=by).as_dict()
        except operations.OperatorError as exc:
            raise SourceError(str(exc), usage=True) from None
        except operations.NothingToDo as exc:
            raise Refused(str(exc), {}) from None

    def break_lease(self, template: str, company: str | None, direction: str, by: str) -> list[dict[str, Any]]:
        try:
            results = operations.break_lease(self.runtime, template, company, operations.DIRECTIONS[direction],
                                             by=by)
        except operations.OperatorError as exc:
            raise SourceError(str(exc), usage=True) from None
        return [r.as_dict() for r in results]

    def poison(self, template: str | None, queue: str | None) -> list[dict[str, Any]]:
        return [m.as_dict() for m in queries.poison(self.runtime, template, queue)]

    def requeue_poison(self, template: str, ids: list[str] | None, queue: str | None) -> list[dict[str, Any]]:
        return [r.as_dict() for r in queries.requeue_poison(self.runtime, template, ids, queue)]

    def check(self, template: str | None) -> list[dict[str, Any]]:
        return [{"subject": p.subject, "problem": p.detail, "transient": p.transient}
                for p in queries.check(self.runtime, template)]

    def reconcile(self, template: str, companies: Sequence[str], repair: bool, sink: FindingSink,
                  progress: Any) -> list[dict[str, Any]]:
        try:
            return [s.as_dict() for s in drift.reconcile(self.runtime, template, companies, repair=repair, sink=sink,
                                                         progress=progress)]
        except LegalEntitiesError as exc:
            raise SourceError(str(exc)) from None

    def dry_run(self, template: str, companies: Sequence[str], sink: FindingSink,
                progress: Any) -> list[dict[str, Any]]:
        try:
            return [s.as_dict() for s in drift.dry_run(self.runtime, template, companies, sink=sink,
                                                       progress=progress)]
        except LegalEntitiesError as exc:
            raise SourceError(str(exc)) from None

    def resync(self, template: str, key_parts: list[str]) -> dict[str, Any]:
        problem = drift.key_parts_problem(self.runtime, template, key_parts)
        if problem:
            raise SourceError(problem, usage=True)
        return drift.resync(self.runtime, template, key_parts).as_dict()
