"""Configured validation failures of the Commerce emulator (a test knob; docs/protocol-notes.md §3.4, §5.2).

Makes creates (POST) and updates (PATCH) of chosen rows fail the way F&O's validateWrite does,
so that a client's per-record error surfacing can be tested. Configure it with
``POST /_emulator/config`` (or :meth:`CommerceEmulator.set_validation_failures`)::

    {"validation_failures": {
        "RetailLoyaltyCards": ["LC-BAD", {"CardNumber": "LC-ODD", "message": "Custom Infolog text."}],
        "LoyaltyLevels": [{"dataAreaId": "usrt", "LevelPhrase": "Gold"}]
    }}

An entry is the key of a single-key entity set as a string, or an object with every key
field (case-insensitive, like the store's keys) and an optional ``message`` (the Infolog error
text; default ``"<Noun> <key> is blocked for updates."``). Each POST replaces the whole
configuration (``{}`` clears it); ``POST /_emulator/reset`` keeps it, like ``page_size``.
A write to a listed key answers 400 with the Infolog in ``innererror`` (shape of §3.4)::

    {"error": {"code": "", "message": "An error has occurred.", "innererror": {
        "message": "Write failed for table row of type 'RetailLoyaltyCardEntity'. Infolog: Error: Card
                    LC-BAD is blocked for updates.; Warning: validateWrite failed on data source
                    'RetailLoyaltyCard (RetailLoyaltyCard)'.",
        "type": "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException",
        "stacktrace": ""}}}

DELETE is not affected. The failure texts are the emulator's own (inferred); the Infolog
framing follows the errors module.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import errors
from .entities import EntitySet, entity_set
from .store import Key, normalize_key_value

#: Noun used in the default Infolog text, per entity set (emulator's own wording).
_NOUNS = {"RetailLoyaltyCards": "Card", "RetailLoyaltyRewardPoints": "Reward point", "LoyaltyLevels": "Loyalty level"}


@dataclass(frozen=True)
class WriteFailure:
    key: Key
    message: str
    entry: Any  # the entry as configured, echoed by the admin route


def _key(eset: EntitySet, values: Mapping[str, Any]) -> Key:
    return tuple(normalize_key_value(values.get(name)) for name in eset.keys)


def _default_message(eset: EntitySet, values: Mapping[str, Any]) -> str:
    natural = [str(values[name]) for name in eset.keys if name != "dataAreaId"]
    noun = _NOUNS.get(eset.name, eset.table_label)
    return f"{noun} {', '.join(natural)} is blocked for updates."


def _parse_entry(eset: EntitySet, entry: Any) -> WriteFailure:
    if isinstance(entry, str):
        if len(eset.keys) != 1:
            raise ValueError(f"{eset.name} has a composite key {list(eset.keys)}: give an object with every key field.")
        values: dict[str, Any] = {eset.keys[0]: entry}
        message = None
    elif isinstance(entry, Mapping):
        values = {name: entry[name] for name in eset.keys if name in entry}
        missing = [name for name in eset.keys if not isinstance(values.get(name), str) or not values[name]]
        unknown = sorted(set(entry) - set(eset.keys) - {"message"})
        if missing or unknown:
            raise ValueError(
                f"A {eset.name} entry needs every key field {list(eset.keys)} as a string and may add "
                f"'message'; missing {missing}, unknown {unknown}."
            )
        message = entry.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("'message' must be a string.")
    else:
        raise ValueError(f"A {eset.name} entry must be a key string or an object with the key fields.")
    return WriteFailure(_key(eset, values), message or _default_message(eset, values), entry)


class WriteFailures:
    """The configured failures by entity-set name, then normalised key (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_set: dict[str, dict[Key, WriteFailure]] = {}

    def configure(self, config: Any) -> None:
        """Replace the configuration; raises ValueError (nothing changes) when it is invalid."""
        if not isinstance(config, Mapping):
            raise ValueError("'validation_failures' must be an object: {\"<EntitySet>\": [<key or key object>, ...]}.")
        parsed: dict[str, dict[Key, WriteFailure]] = {}
        for name, entries in config.items():
            eset = entity_set(str(name))
            if eset is None or not eset.writable:
                raise ValueError(f"Unknown or read-only entity set '{name}'.")
            if not isinstance(entries, list):
                raise ValueError(f"'validation_failures.{name}' must be a list.")
            failures = [_parse_entry(eset, entry) for entry in entries]
            parsed[eset.name] = {failure.key: failure for failure in failures}
        with self._lock:
            self._by_set = parsed

    def as_json(self) -> dict[str, list[Any]]:
        with self._lock:
            return {name: [f.entry for f in failures.values()] for name, failures in self._by_set.items()}

    def check(self, eset: EntitySet, key: Key) -> None:
        """Raise the configured Infolog write error when ``key`` is listed for ``eset``."""
        with self._lock:
            failure = self._by_set.get(eset.name, {}).get(key)
        if failure is not None:
            raise errors.write_failed(eset, [failure.message])
