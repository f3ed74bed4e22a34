"""loyalty-sync: keeps Dynamics 365 Commerce loyalty data in sync with Dataverse.

The package behind the Azure Functions app (``function_app.py``). Modules, by what they hold:

- ``settings``: app settings (pydantic-settings), read once per process.
- ``mapping``: template files in ``mappings/`` (pydantic models) compiled into plans.
- ``http``: the one HTTP core under both API clients (tokens, retries, OData errors, paging).
- ``dataverse`` / ``commerce``: the two API clients.
- ``state``: watermarks, last-synced hashes and parked records in Azure Table Storage.
- ``sync``: the engine that moves records, and the business-event payload model.
- ``triggers``: the thin Azure Functions trigger bodies registered by ``function_app.py``.
"""
