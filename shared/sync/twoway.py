"""What both sides hold of a record, in one comparable form (the "shared image").

Two-way sync needs to tell three things apart for a key: an echo of this app's own write, a change on
one side, and a change on both sides since the last sync (a conflict). The image is the set of
fields the map lets flow Dataverse -> F&O (``=``, ``><``, ``<``, ``<<``), in F&O terms, normalised
(empty is None, dates in UTC seconds, enum members as the map spells them, lookups by code). Its hash
is kept per key in the synced state as ``shared`` by whichever direction wrote last:

- a Dataverse change whose image hash equals ``shared`` is an echo (or touched nothing that flows
  back) and is dropped, so nothing ping-pongs;
- Commerce's image hash differing from ``shared`` means Commerce changed since the last sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.dataverse.client import DataverseClient
from shared.mapping.model import LookupSpec
from shared.mapping.plan import Plan, image_hash


class SharedImage:
    def __init__(self, plan: Plan, dataverse: DataverseClient) -> None:
        self.plan = plan
        self.dataverse = dataverse
        dv = plan.template.dataverse
        self.company = dv.company
        self.key_columns = {dv_col: prop for dv_col, prop in plan.dataverse_key_properties.items()}
        lookups = [row.lookup.navigation_property for row in plan.template.fields if row.lookup is not None]
        self.select = sorted({dv.primary_id, *self.key_columns, *(
            row.dataverse_column for row in plan.template.fields if row.lookup is None
        ), *(f"_{nav.lower()}_value" for nav in lookups),
            *([f"_{self.company.navigation_property.lower()}_value"] if self.company else [])})

    def lookup_code(self, spec: LookupSpec, guid: str) -> str | None:
        return self.dataverse.code_of(spec.entity_set, spec.primary_id, spec.match_column, guid)

    def from_commerce(self, fo_row: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        image = self.plan.image_from_commerce(fo_row)
        return image, image_hash(image)

    def from_dataverse(self, dv_row: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        image = self.plan.image_from_dataverse(dv_row, self.lookup_code)
        return image, image_hash(image)

    def fo_key(self, dv_row: Mapping[str, Any]) -> dict[str, str] | None:
        """The F&O key of a Dataverse row (company from its company lookup); None when incomplete."""
        key: dict[str, str] = {}
        for prop in self.plan.key_properties:
            if prop == "dataAreaId" and self.company is not None:
                guid = dv_row.get(f"_{self.company.navigation_property.lower()}_value")
                code = self.dataverse.code_of(self.company.entity_set, self.company.primary_id,
                                              self.company.match_column, str(guid)) if guid else None
                if not code:
                    return None
                key[prop] = code.lower()
                continue
            column = next((c for c, p in self.key_columns.items() if p == prop), None)
            value = dv_row.get(column) if column else None
            if not isinstance(value, str) or not value:
                return None
            key[prop] = value
        return key
