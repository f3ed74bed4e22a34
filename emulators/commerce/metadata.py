"""CSDL ``$metadata`` document of the emulated ``/data`` service.

Shape follows a real F&O ``$metadata`` excerpt (docs/protocol-notes.md §3.1 and §5.2;
``ntrtd/d365-agent/.../retail_trimmed_metadata.xml``, seen in public code): one schema
``Microsoft.Dynamics.DataEntities`` with EnumTypes, EntityTypes whose Key includes ``dataAreaId``
for company-specific entities, and an EntityContainer named ``Resources``.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import quoteattr

from .entities import ENTITY_SETS, ENUM_TYPES, NAMESPACE, EntitySet, EnumType, Property

_LABEL_TERM = "Microsoft.Dynamics.OData.Core.V1.LabelId"


def _enum_xml(enum: EnumType) -> list[str]:
    lines = [f"      <EnumType Name={quoteattr(enum.name)}>"]
    lines += [f"        <Member Name={quoteattr(n)} Value=\"{v}\" />" for n, v in enum.members]
    lines.append("      </EnumType>")
    return lines


def _property_xml(prop: Property) -> list[str]:
    nullable = "" if prop.nullable else ' Nullable="false"'
    head = f"        <Property Name={quoteattr(prop.name)} Type={quoteattr(prop.type_name)}{nullable}"
    if not prop.label:
        return [head + " />"]
    return [
        head + ">",
        f"          <Annotation Term=\"{_LABEL_TERM}\" String={quoteattr(prop.label)} />",
        "        </Property>",
    ]


def _entity_type_xml(entity_set: EntitySet) -> list[str]:
    lines = [f"      <EntityType Name={quoteattr(entity_set.entity_type)}>", "        <Key>"]
    lines += [f"          <PropertyRef Name={quoteattr(k)} />" for k in entity_set.keys]
    lines.append("        </Key>")
    for prop in entity_set.properties:
        lines += _property_xml(prop)
    lines.append("      </EntityType>")
    return lines


def build_metadata(entity_sets: Iterable[EntitySet] = ENTITY_SETS,
                   enum_types: Iterable[EnumType] = ENUM_TYPES) -> str:
    """The whole CSDL document as a string."""
    sets = list(entity_sets)
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        "  <edmx:DataServices>",
        f'    <Schema Namespace="{NAMESPACE}" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
    ]
    for enum in enum_types:
        lines += _enum_xml(enum)
    for entity_set in sets:
        lines += _entity_type_xml(entity_set)
    lines.append('      <EntityContainer Name="Resources">')
    lines += [
        f"        <EntitySet Name={quoteattr(s.name)} EntityType={quoteattr(s.full_type_name)} />"
        for s in sets
    ]
    lines += ["      </EntityContainer>", "    </Schema>", "  </edmx:DataServices>", "</edmx:Edmx>", ""]
    return "\n".join(lines)
