"""Templates as data: pydantic models of ``mappings/*.json`` and their compiled plans."""

from shared.mapping.catalog import Catalog, MappingFileError, load_catalog
from shared.mapping.model import Direction, MapType, Template
from shared.mapping.plan import MappingError, Plan

__all__ = [
    "Catalog",
    "Direction",
    "MapType",
    "MappingError",
    "MappingFileError",
    "Plan",
    "Template",
    "load_catalog",
]
