"""Helpers for the Dataverse emulator tests of $batch, bulk actions, faults and service
protection: a tiny Web API client, $batch body builders and a multipart response reader."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests

from emulators.common.multipart import boundary_of, parse_http_response, split_multipart
from emulators.dataverse.server import DataverseServer

CARD_TYPE = "Microsoft.Dynamics.CRM.msdyn_loyaltycard"
LEVEL_TYPE = "Microsoft.Dynamics.CRM.msdyn_loyaltylevel"
CASH = 806380000


class Api:
    """The §2.1 headers, a bearer token, paths relative to the Web API root."""

    def __init__(self, emulator: DataverseServer, token: str = "test-token") -> None:
        self.emulator = emulator
        self.root = emulator.api_url
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {token}", "Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
        )

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.root + path

    def get(self, path: str, **headers: str) -> requests.Response:
        return self.session.get(self.url(path), headers=headers, timeout=10)

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return self.session.post(self.url(path), json=body, headers=headers, timeout=10)

    def patch(self, path: str, body: Any, **headers: str) -> requests.Response:
        return self.session.patch(self.url(path), json=body, headers=headers, timeout=10)

    def delete(self, path: str, **headers: str) -> requests.Response:
        return self.session.delete(self.url(path), headers=headers, timeout=10)

    def bulk(self, action: str, targets: list[dict[str, Any]], entity_set: str = "msdyn_loyaltycards") -> requests.Response:
        return self.post(f"{entity_set}/Microsoft.Dynamics.CRM.{action}", {"Targets": targets})

    def batch(self, body: str, *, boundary: str = "batch_1", quoted: bool = True, **headers: str) -> requests.Response:
        value = f'"{boundary}"' if quoted else boundary
        return self.session.post(
            self.root + "$batch",
            data=body.encode("utf-8"),
            headers={"Content-Type": f"multipart/mixed; boundary={value}", **headers},
            timeout=10,
        )

    def rows(self, entity_set: str = "msdyn_loyaltycards") -> list[dict[str, Any]]:
        return list(requests.get(f"{self.emulator.url}/_emulator/rows/{entity_set}", timeout=5).json()["value"])

    def lookup_id(self, entity_set: str, key: str, id_column: str) -> str:
        return str(self.get(f"{entity_set}({key})?$select={id_column}").json()[id_column])

    def company_id(self, code: str = "USMF") -> str:
        return str(self.get(f"cdm_companies(cdm_companycode='{code}')?$select=cdm_companyid").json()["cdm_companyid"])


def card(number: str, **columns: Any) -> dict[str, Any]:
    return {"msdyn_cardnumber": number, "msdyn_cardtendertype": CASH, **columns}


# -- $batch builders ----------------------------------------------------------------------


def http_part(
    method: str, url: str, body: Any = None, *, content_id: str | None = None, headers: dict[str, str] | None = None
) -> str:
    """One application/http part (LF line ends; :func:`batch_body` can switch to CRLF)."""
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {url} HTTP/1.1"]
    if body is not None:
        lines.append("Content-Type: application/json; type=entry")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append("")
    lines.append(json.dumps(body) if body is not None else "")
    return "\n".join(lines) + "\n"


def changeset(boundary: str, *parts: str) -> str:
    body = "".join(f"--{boundary}\n{part}" for part in parts) + f"--{boundary}--\n"
    return f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n{body}'


def batch_body(*parts: str, boundary: str = "batch_1", crlf: bool = False) -> str:
    body = "".join(f"--{boundary}\n{part}" for part in parts) + f"--{boundary}--\n"
    return body.replace("\n", "\r\n") if crlf else body


# -- response reader ----------------------------------------------------------------------


@dataclass
class InnerResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None
    in_changeset: bool

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def read_batch(response: requests.Response) -> list[InnerResponse]:
    """Every inner response of a $batch response, change sets flattened, in order."""
    boundary = boundary_of(response.headers["Content-Type"])
    assert boundary is not None
    result: list[InnerResponse] = []
    for part in split_multipart(response.content, boundary):
        if part.content_type.startswith("multipart/mixed"):
            inner_boundary = boundary_of(part.content_type)
            assert inner_boundary is not None
            for inner in split_multipart(part.content, inner_boundary):
                result.append(_inner(inner.content, inner.header("Content-ID"), True))
        else:
            result.append(_inner(part.content, part.header("Content-ID"), False))
    return result


def _inner(content: bytes, content_id: str | None, in_changeset: bool) -> InnerResponse:
    message = parse_http_response(content)
    return InnerResponse(
        message.status, message.reason, dict(message.headers), message.body.rstrip(b"\r\n"), content_id, in_changeset
    )
