"""The members of each Dataverse identity's shared budget (``<prefix>budget``): one row per live process.

PartitionKey: the identity (a digest of service URL and client id, no secret); RowKey: the member (process id
and a random suffix). A member rewrites its row every heartbeat and deletes it when it goes idle; a crashed
process's row is ignored once its heartbeat is older than the TTL, and removed by the next member that sees
it. One partition query reads every member of an identity. See shared/http/budget.py for the rules.
"""

from __future__ import annotations

import contextlib
import hashlib

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.http.budget import MemberReport

#: Rows whose heartbeat is older than this are deleted by whoever reads them (seconds).
STALE_AFTER_S = 3600.0


def identity_key(service_url: str, client_id: str | None) -> str:
    """A stable partition key for one application user of one service (no secret in it)."""
    return hashlib.sha256(f"{service_url.rstrip('/').lower()}|{client_id or 'default'}".encode()).hexdigest()[:32]


class BudgetMembers:
    def __init__(self, table: TableClient) -> None:
        self.table = table
        self._ready = False

    @classmethod
    def for_service(cls, service: TableServiceClient, prefix: str) -> BudgetMembers:
        return cls(service.get_table_client(f"{prefix}budget"))

    def _ensure(self) -> None:
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self.table.create_table()
            self._ready = True

    def publish(self, identity: str, report: MemberReport) -> None:
        self._ensure()
        self.table.upsert_entity({"PartitionKey": identity, "RowKey": report.member, "heartbeat": report.heartbeat,
                                  "spent_s": report.spent_s, "requests": report.requests,
                                  "budget_s": report.budget_s, "max_requests": report.max_requests,
                                  "blocked_until": report.blocked_until, "wanting": report.wanting},
                                 mode=UpdateMode.REPLACE)

    def members(self, identity: str) -> list[MemberReport]:
        self._ensure()
        found: list[MemberReport] = []
        newest = 0.0
        for row in self.table.query_entities("PartitionKey eq @p", parameters={"p": identity}):
            report = MemberReport(str(row["RowKey"]), float(row.get("heartbeat", 0.0)), float(row.get("spent_s", 0.0)),
                                  int(row.get("requests", 0)), float(row.get("budget_s", 0.0)),
                                  int(row.get("max_requests", 0)), float(row.get("blocked_until", 0.0)),
                                  bool(row.get("wanting", True)))
            found.append(report)
            newest = max(newest, report.heartbeat)
        for report in found:  # crashed processes' rows: gone for good
            if newest - report.heartbeat > STALE_AFTER_S:
                self.leave(identity, report.member)
        return [r for r in found if newest - r.heartbeat <= STALE_AFTER_S]

    def leave(self, identity: str, member: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.table.delete_entity(identity, member)
